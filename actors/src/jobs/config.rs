//! `[jobs]`: per-user limits, leases, retries, circuit breakers, the providers and which
//! providers serve each kind of job.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::LimitsError;

/// `[jobs]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// The URL providers reach this server at, e.g. `https://locus.example.com`. When set,
    /// predictions are created with a webhook to `<public_url>/api/webhooks/<provider>` and
    /// polling only covers silences; when empty, jobs are followed by polling alone.
    pub public_url: String,
    /// How long an instance owns a live job without renewing it; a job whose lease passed is
    /// stalled and picked up again. Default 30,000.
    pub lease_ms: u64,
    /// A job picked up after a stall more often than this fails. Default 3.
    pub recoveries_max: i64,
    /// A job not finished this long after its creation fails (and is canceled at the
    /// provider). Default 3,600,000.
    pub job_timeout_ms: u64,
    /// How often a live job asks its provider for its state when webhooks are off or silent.
    /// Default 1,000.
    pub poll_interval_ms: u64,
    /// With webhooks on, a job polls only after this long without a webhook. Default 10,000.
    pub webhook_grace_ms: u64,
    /// Progress events (and progress writes) of one job at most once per this. Default 500.
    pub progress_interval_ms: u64,
    /// Live jobs one user may have. Default 4.
    pub concurrent_per_user_max: usize,
    /// Jobs one user may create per minute; 0 = off. Default 20.
    pub per_user_per_min: u32,
    /// Largest `limit` of `GET /api/jobs`. Default 100.
    pub list_limit_max: usize,
    /// Retries of one provider call after its first try, for retryable failures. Default 3.
    pub retries_max: usize,
    /// Backoff between retries, with full jitter, from this... Default 500.
    pub retry_delay_ms_min: u64,
    /// ...up to this. Default 30,000.
    pub retry_delay_ms_max: u64,
    /// A provider's `Retry-After` is honoured up to this. Default 60,000.
    pub retry_after_ms_max: u64,
    /// A provider's breaker opens after this many failures... Default 5.
    pub breaker_failures: usize,
    /// ...within this window. Default 30,000.
    pub breaker_window_ms: u64,
    /// An open breaker lets one probe through after this. Default 30,000.
    pub breaker_cooldown_ms: u64,
    /// A webhook whose `webhook-timestamp` is further than this from now is refused.
    /// Default 300.
    pub webhook_tolerance_s: u64,
    /// `webhook-id`s remembered for deduplication. Default 100,000.
    pub webhook_ids_max: usize,
    /// Kind → providers to try, in order (the first whose breaker is closed takes the job).
    pub routes: BTreeMap<String, Vec<String>>,
    /// Name → provider.
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        let kinds = ["image", "music", "video"];
        JobsConfig {
            public_url: String::new(),
            lease_ms: 30_000,
            recoveries_max: 3,
            job_timeout_ms: 3_600_000,
            poll_interval_ms: 1_000,
            webhook_grace_ms: 10_000,
            progress_interval_ms: 500,
            concurrent_per_user_max: 4,
            per_user_per_min: 20,
            list_limit_max: 100,
            retries_max: 3,
            retry_delay_ms_min: 500,
            retry_delay_ms_max: 30_000,
            retry_after_ms_max: 60_000,
            breaker_failures: 5,
            breaker_window_ms: 30_000,
            breaker_cooldown_ms: 30_000,
            webhook_tolerance_s: 300,
            webhook_ids_max: 100_000,
            routes: kinds
                .iter()
                .map(|k| (k.to_string(), vec!["replicate".to_string()]))
                .collect(),
            providers: BTreeMap::from([("replicate".to_string(), ProviderConfig::default())]),
        }
    }
}

impl JobsConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |s: String| Err(LimitsError(s));
        if self.lease_ms < 3 || self.poll_interval_ms == 0 || self.progress_interval_ms == 0 {
            return err(
                "jobs.lease_ms, poll_interval_ms and progress_interval_ms must be positive".into(),
            );
        }
        for (kind, providers) in &self.routes {
            for p in providers {
                match self.providers.get(p) {
                    None => {
                        return err(format!(
                            "jobs.routes.{kind} names {p:?}, which is not in jobs.providers"
                        ))
                    }
                    Some(c) if !c.models.contains_key(kind) => {
                        return err(format!("jobs.providers.{p}.models has no model for {kind}"))
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some((name, _)) = self.providers.iter().find(|(_, c)| c.concurrency == 0) {
            return err(format!(
                "jobs.providers.{name}.concurrency must be positive"
            ));
        }
        Ok(())
    }
}

/// `[jobs.providers.<name>]`: a Replicate-style prediction API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Default `https://api.replicate.com`.
    pub base_url: String,
    /// The API token. Prefer `token_env`, or `LOCUS_JOBS__PROVIDERS__<NAME>__TOKEN`.
    pub token: String,
    /// Environment variable holding the token when `token` is empty. Default
    /// `REPLICATE_API_TOKEN`. A provider without a token is off.
    pub token_env: String,
    /// Standard Webhooks secret (`whsec_…`) the provider signs webhooks with.
    pub webhook_secret: String,
    /// Environment variable holding it when `webhook_secret` is empty. Default
    /// `REPLICATE_WEBHOOK_SECRET`.
    pub webhook_secret_env: String,
    /// Kind → model (sent as the prediction's `version`).
    pub models: BTreeMap<String, String>,
    /// Kind → estimated cost of one job, in tokens.
    pub cost_estimate: BTreeMap<String, f64>,
    /// Tokens per second of `metrics.predict_time`; 0 charges the estimate.
    pub cost_per_predict_s: f64,
    /// One HTTP call to the provider. Default 10,000.
    pub request_timeout_ms: u64,
    /// Jobs running at this provider at once; more wait as `queued`. Default 16.
    pub concurrency: usize,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            base_url: "https://api.replicate.com".into(),
            token: String::new(),
            token_env: "REPLICATE_API_TOKEN".into(),
            webhook_secret: String::new(),
            webhook_secret_env: "REPLICATE_WEBHOOK_SECRET".into(),
            models: BTreeMap::from([
                ("image".into(), "black-forest-labs/flux-schnell".into()),
                ("music".into(), "meta/musicgen".into()),
                ("video".into(), "google/veo-3".into()),
            ]),
            cost_estimate: BTreeMap::from([
                ("image".into(), 1.0),
                ("music".into(), 4.0),
                ("video".into(), 40.0),
            ]),
            cost_per_predict_s: 0.0,
            request_timeout_ms: 10_000,
            concurrency: 16,
        }
    }
}

impl ProviderConfig {
    /// `value`, or else the environment variable `env`; `None` when both are empty.
    fn secret(value: &str, env: &str) -> Option<String> {
        if !value.is_empty() {
            return Some(value.to_owned());
        }
        if env.is_empty() {
            return None;
        }
        std::env::var(env).ok().filter(|v| !v.is_empty())
    }

    pub fn resolved_token(&self) -> Option<String> {
        Self::secret(&self.token, &self.token_env)
    }

    pub fn resolved_webhook_secret(&self) -> Option<String> {
        Self::secret(&self.webhook_secret, &self.webhook_secret_env)
    }
}
