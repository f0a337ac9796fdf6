//! Which providers a job may use: `ProviderInfo` (a provider that is on, with its breaker and
//! slots), the route of a kind (or the one provider asked for, with a hint when none is on),
//! and the webhook URL a provider is given.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::breaker::Breaker;
use super::config::{JobsConfig, ProviderConfig};
use super::error::JobError;
use super::service::JobShared;

/// A provider that is on (it has a token): its settings, breaker and slots.
pub struct ProviderInfo {
    pub name: String,
    pub config: ProviderConfig,
    pub breaker: Breaker,
    /// Jobs running at the provider (`concurrency`).
    pub permits: Arc<Semaphore>,
    pub webhook_secret: Option<String>,
}

/// The providers of `config` that are on (they have a token), by name; the others are logged.
pub fn providers_on(config: &JobsConfig) -> BTreeMap<String, Arc<ProviderInfo>> {
    let mut providers = BTreeMap::new();
    for (name, pc) in &config.providers {
        let Some(_) = pc.resolved_token() else {
            tracing::warn!(provider = %name, token_env = %pc.token_env, "job provider off: no token");
            continue;
        };
        providers.insert(
            name.clone(),
            Arc::new(ProviderInfo {
                name: name.clone(),
                config: pc.clone(),
                breaker: Breaker::new(
                    name,
                    config.breaker_failures,
                    Duration::from_millis(config.breaker_window_ms),
                    Duration::from_millis(config.breaker_cooldown_ms),
                ),
                permits: Arc::new(Semaphore::new(pc.concurrency.max(1))),
                webhook_secret: pc.resolved_webhook_secret(),
            }),
        );
    }
    providers
}

impl JobShared {
    /// The providers to try for `kind`, in order: the requested one alone, or the kind's route.
    pub fn route(
        &self,
        kind: &str,
        requested: Option<&str>,
    ) -> Result<Vec<Arc<ProviderInfo>>, JobError> {
        let Some(route) = self.config.routes.get(kind) else {
            let kinds: Vec<&str> = self.config.routes.keys().map(String::as_str).collect();
            return Err(JobError::UnknownKind(kind.into(), kinds.join(", ")));
        };
        let names: Vec<&str> = match requested {
            Some(p)
                if self
                    .config
                    .providers
                    .get(p)
                    .is_some_and(|c| c.models.contains_key(kind)) =>
            {
                vec![p]
            }
            Some(p) => return Err(JobError::UnknownProvider(p.into(), kind.into())),
            None => route.iter().map(String::as_str).collect(),
        };
        let on: Vec<Arc<ProviderInfo>> = names
            .iter()
            .filter_map(|n| self.providers.get(*n))
            .filter(|p| p.config.models.contains_key(kind))
            .cloned()
            .collect();
        if on.is_empty() {
            let hint = if names.is_empty() {
                format!("add providers to jobs.routes.{kind}")
            } else {
                let tokens: Vec<String> = names
                    .iter()
                    .map(|n| {
                        let env = self
                            .config
                            .providers
                            .get(*n)
                            .map_or("", |c| c.token_env.as_str());
                        format!(
                            "{n} (token from {})",
                            if env.is_empty() {
                                "jobs.providers"
                            } else {
                                env
                            }
                        )
                    })
                    .collect();
                format!("set a token for {}", tokens.join(" or "))
            };
            return Err(JobError::NoProvider {
                kind: kind.into(),
                hint,
            });
        }
        Ok(on)
    }

    pub fn webhooks_on(&self, provider: &str) -> bool {
        !self.config.public_url.is_empty()
            && self
                .providers
                .get(provider)
                .is_some_and(|p| p.webhook_secret.is_some())
    }

    /// The webhook URL to give `provider`, when webhooks are on.
    pub fn webhook_url(&self, provider: &ProviderInfo) -> Option<String> {
        self.webhooks_on(&provider.name).then(|| {
            format!(
                "{}/api/webhooks/{}",
                self.config.public_url.trim_end_matches('/'),
                provider.name
            )
        })
    }
}
