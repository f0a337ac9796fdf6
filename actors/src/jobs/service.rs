//! The jobs front the HTTP API calls — create (idempotency key, per-user limits, routing),
//! get, list, cancel, webhooks — and the state it shares with the job actors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use locus_storage::{
    now_ms, AnyStore, JobCreated, JobRecord, JobStatus, JobStore, JobUpdate, NewJob, StoreError,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Semaphore};

use super::breaker::{Breaker, BreakerState};
use super::config::{JobsConfig, ProviderConfig};
use super::job_actor::{CancelJob, JobActor, ProviderUpdate};
use super::replicate::parse_prediction;
use super::supervisor::{JobSupervisor, Launch, Shutdown};
use super::view::event_json;
use super::webhook::{verify, SeenWebhooks, WebhookError, WebhookHeaders};
use super::writer::{JobSink, JobWriter};
use crate::broker::{Body, Publication};
use crate::engine::{Author, Outgoing};
use crate::metrics as m;
use crate::topic::Topic;
use crate::Engine;

/// Longest `Idempotency-Key`, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// How long shutdown waits for the job actors to stop.
const SHUTDOWN_WAIT_MS: u64 = 1_000;
/// How long a cancel waits for the job's actor to finish it.
const CANCEL_WAIT_MS: u64 = 30_000;

/// Why a job request was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the Idempotency-Key header is required (1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes)")]
    IdempotencyKeyRequired,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyKeyInUse,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("unknown kind {0:?}; kinds: {1}")]
    UnknownKind(String, String),
    #[error("unknown provider {0:?} for {1} jobs")]
    UnknownProvider(String, String),
    #[error("no provider is configured for {kind} jobs: {hint}")]
    NoProvider { kind: String, hint: String },
    #[error("at most {0} live jobs per user")]
    TooManyJobs(usize),
    #[error("at most {per_min} jobs per user per minute")]
    RateLimited { per_min: u32, retry_after_s: u64 },
    #[error("no such job")]
    NotFound,
    #[error("no such provider")]
    UnknownWebhookProvider,
    #[error("webhook refused: {0}")]
    Webhook(#[from] WebhookError),
    #[error("webhook body is not a prediction: {0}")]
    MalformedWebhook(String),
    #[error("the job service is not running")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A provider that is on (it has a token): its settings, breaker and slots.
pub struct ProviderInfo {
    pub name: String,
    pub config: ProviderConfig,
    pub breaker: Breaker,
    /// Jobs running at the provider (`concurrency`).
    pub permits: Arc<Semaphore>,
    pub webhook_secret: Option<String>,
}

/// What the job actors and the front share.
pub struct JobShared {
    pub config: JobsConfig,
    pub store: AnyStore,
    pub engine: Engine,
    pub writer: Addr<JobWriter>,
    /// Providers that are on, by name.
    pub providers: BTreeMap<String, Arc<ProviderInfo>>,
    /// Live jobs of this instance.
    pub live: DashMap<String, Addr<JobActor>>,
    /// (provider, prediction id) → job id, for webhooks.
    pub predictions: DashMap<(String, String), String>,
    live_per_owner: DashMap<String, usize>,
    /// (owner, idempotency key) of creates in progress.
    creating: DashMap<(String, String), ()>,
    per_minute: Option<DefaultKeyedRateLimiter<String>>,
    seen_webhooks: SeenWebhooks,
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

    /// Pushes the job's state to its owner's `realtime:user:<id>` as event `job`, through the
    /// engine's publish path (stored first when personal topics are durable).
    pub fn publish_event(&self, job: &JobRecord) {
        let topic = Topic::personal(&job.owner);
        let payload = crate::wire::raw(event_json(job).to_string());
        let publication = Publication {
            topic: topic.room_key(false),
            event: "job".into(),
            body: Body::Json(Arc::from(payload)),
            sender: None,
            accepted_at: std::time::Instant::now(),
            durable: None,
        };
        let outgoing = Outgoing::Channel {
            publication,
            author: Author::default(),
        };
        if let Err(e) = self.engine.publish(outgoing) {
            tracing::warn!(job = %job.id, error = %e, "job event not delivered");
        }
    }

    /// Counts a live job of `owner` unless they hold `max` already (`None`: no limit).
    fn reserve(&self, owner: &str, max: Option<usize>) -> bool {
        let mut n = self.live_per_owner.entry(owner.to_owned()).or_insert(0);
        if max.is_some_and(|max| *n >= max) {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, owner: &str) {
        if let dashmap::Entry::Occupied(mut e) = self.live_per_owner.entry(owner.to_owned()) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Counts a recovered job against its owner (recoveries are not refused).
    pub(super) fn adopt(&self, owner: &str) {
        self.reserve(owner, None);
    }

    /// A job actor stopped: it is no longer live here.
    pub(super) fn forget(&self, job: &JobRecord) {
        self.live.remove(&job.id);
        if let (Some(p), Some(id)) = (&job.provider, &job.provider_job_id) {
            self.predictions.remove(&(p.clone(), id.clone()));
        }
        self.release(&job.owner);
        m::jobs_live().decrement(1.0);
    }
}

/// Releases a `creating` entry when the create ends, however it ends.
struct CreatingGuard<'a>(&'a JobShared, (String, String));

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        self.0.creating.remove(&self.1);
    }
}

/// The handle the HTTP API holds.
#[derive(Clone)]
pub struct Jobs {
    shared: Arc<JobShared>,
    supervisor: Addr<JobSupervisor>,
}

/// What `create` came to.
pub struct Created {
    pub job: JobRecord,
    /// False when the key had been used with the same request: this is the original job.
    pub new: bool,
}

/// What a webhook came to.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied,
    /// The `webhook-id` was seen before: not applied again.
    Duplicate,
    /// No live job here follows that prediction (polling covers it).
    Unknown,
}

impl Jobs {
    /// Forgets the per-owner job buckets that are full again, so the keyed map holds only
    /// owners active within the last minute. Run on a timer.
    pub fn prune_limiters(&self) {
        if let Some(limiter) = &self.shared.per_minute {
            crate::rate_limit::prune_keyed(limiter);
        }
    }

    /// Starts the job writer and supervisor on the current arbiter (the provider clients are
    /// built here and stay on it) and picks up stalled jobs.
    pub fn start(config: JobsConfig, engine: Engine) -> Jobs {
        let store = engine.store().clone();
        let writer = JobWriter::new(
            store.clone(),
            engine.storage_limits().clone(),
            engine.storage_health().clone(),
            JobSink,
        )
        .start();
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
        let per_minute = std::num::NonZeroU32::new(config.per_user_per_min)
            .map(|n| RateLimiter::dashmap(Quota::per_minute(n)));
        let seen_webhooks = SeenWebhooks::new(
            Duration::from_secs(config.webhook_tolerance_s * 2),
            config.webhook_ids_max,
        );
        let shared = Arc::new(JobShared {
            config,
            store,
            engine,
            writer,
            providers,
            live: DashMap::new(),
            predictions: DashMap::new(),
            live_per_owner: DashMap::new(),
            creating: DashMap::new(),
            per_minute,
            seen_webhooks,
        });
        let supervisor = JobSupervisor::new(shared.clone()).start();
        Jobs { shared, supervisor }
    }

    /// Stops the job actors and the supervisor of this instance (server shutdown). Live jobs
    /// stay live in storage and resume on the next instance once their leases pass.
    pub async fn shutdown(&self) {
        let _ = self.supervisor.send(Shutdown).await;
        let deadline = std::time::Instant::now() + Duration::from_millis(SHUTDOWN_WAIT_MS);
        while !self.shared.live.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn config(&self) -> &JobsConfig {
        &self.shared.config
    }

    /// Creates a job, or returns the one created before with the same key and request.
    pub async fn create(
        &self,
        owner: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<Created, JobError> {
        let key = key
            .filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_BYTES_MAX)
            .ok_or(JobError::IdempotencyKeyRequired)?;
        let request = JobRequest::parse(body)?;
        let hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
        let shared = &*self.shared;
        let slot = (owner.to_owned(), key.to_owned());
        if shared.creating.insert(slot.clone(), ()).is_some() {
            return Err(JobError::IdempotencyKeyInUse);
        }
        let _guard = CreatingGuard(shared, slot);
        if let Some(existing) = shared.store.job_by_key(owner, key).await? {
            return if existing.request_hash == hash {
                Ok(Created {
                    job: existing,
                    new: false,
                })
            } else {
                Err(JobError::IdempotencyKeyReused)
            };
        }
        let route = shared.route(&request.kind, request.provider.as_deref())?;
        if let Some(limiter) = &shared.per_minute {
            if let Err(not_until) = limiter.check_key(&owner.to_owned()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(JobError::RateLimited {
                    per_min: shared.config.per_user_per_min,
                    retry_after_s: wait.as_secs().max(1),
                });
            }
        }
        if !shared.reserve(owner, Some(shared.config.concurrent_per_user_max)) {
            return Err(JobError::TooManyJobs(shared.config.concurrent_per_user_max));
        }
        let now = now_ms();
        let new_job = NewJob {
            id: new_job_id(),
            owner: owner.to_owned(),
            kind: request.kind.clone(),
            input: request.input.to_string(),
            requested_provider: request.provider.clone(),
            idempotency_key: key.to_owned(),
            request_hash: hash,
            cost_estimate: route[0].config.cost_estimate.get(&request.kind).copied(),
            lease_until_ms: now + shared.config.lease_ms as i64,
            created_at_ms: now,
        };
        let outcome = match shared.store.create_job(&new_job).await {
            Ok(o) => o,
            Err(e) => {
                shared.release(owner);
                return Err(e.into());
            }
        };
        match outcome {
            JobCreated::Created(job) => {
                m::job_created(&job.kind);
                if self.supervisor.send(Launch(job.clone())).await.is_err() {
                    shared.release(owner);
                    return Err(JobError::Unavailable);
                }
                shared.publish_event(&job);
                Ok(Created { job, new: true })
            }
            // Another instance created it between our lookup and insert.
            JobCreated::Existing(job) => {
                shared.release(owner);
                Ok(Created { job, new: false })
            }
            JobCreated::Conflict(_) => {
                shared.release(owner);
                Err(JobError::IdempotencyKeyReused)
            }
        }
    }

    /// The owner's job `id`.
    pub async fn get(&self, owner: &str, id: &str) -> Result<JobRecord, JobError> {
        match self.shared.store.get_job(id).await? {
            Some(job) if job.owner == owner => Ok(job),
            _ => Err(JobError::NotFound),
        }
    }

    pub async fn list(
        &self,
        owner: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        let limit = limit.clamp(1, self.shared.config.list_limit_max);
        Ok(self.shared.store.list_jobs(owner, status, limit).await?)
    }

    /// Cancels the owner's job: at the provider when it runs there. A finished job is returned
    /// as it is.
    pub async fn cancel(&self, owner: &str, id: &str) -> Result<JobRecord, JobError> {
        let job = self.get(owner, id).await?;
        if job.status.is_terminal() {
            return Ok(job);
        }
        let actor = self.shared.live.get(id).map(|a| a.clone());
        if let Some(actor) = actor {
            let (done, finished) = oneshot::channel();
            if actor.send(CancelJob { done }).await.is_ok() {
                if let Ok(Ok(job)) =
                    tokio::time::timeout(Duration::from_millis(CANCEL_WAIT_MS), finished).await
                {
                    return Ok(job);
                }
            }
            // The actor stopped on its own meanwhile: the stored job says how it ended.
            return self.get(owner, id).await;
        }
        // Not live here (awaiting pickup after a stall): cancel the record itself.
        let now = now_ms();
        self.shared
            .store
            .update_jobs(&[JobUpdate {
                id: job.id.clone(),
                status: JobStatus::Canceled,
                progress: job.progress,
                output: job.output.clone(),
                error: None,
                provider: job.provider.clone(),
                provider_job_id: job.provider_job_id.clone(),
                attempts: job.attempts.clone(),
                cost_actual: None,
                lease_until_ms: job.lease_until_ms,
                updated_at_ms: now,
            }])
            .await?;
        let job = self.get(owner, id).await?;
        m::job_finished(job.status.as_str());
        self.shared.publish_event(&job);
        Ok(job)
    }

    /// A provider webhook: verified, deduplicated by `webhook-id`, then handed to the job.
    pub fn webhook(
        &self,
        provider: &str,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
    ) -> Result<WebhookOutcome, JobError> {
        let Some(info) = self.shared.providers.get(provider) else {
            // The path is the caller's: labelled with one fixed value, never with the name
            // (each distinct name would be a permanent series).
            m::webhook(m::UNKNOWN_PROVIDER_LABEL, "unknown_provider");
            return Err(JobError::UnknownWebhookProvider);
        };
        // A configured provider's name: a bounded label.
        let label = |outcome: &'static str| m::webhook(&info.name, outcome);
        let secret = info
            .webhook_secret
            .as_deref()
            .ok_or(WebhookError::NotConfigured);
        let verified = secret.and_then(|s| {
            verify(
                s,
                headers,
                body,
                crate::auth::now_s(),
                self.shared.config.webhook_tolerance_s,
            )
        });
        if let Err(e) = verified {
            label(e.label());
            return Err(e.into());
        }
        let id = headers.id.unwrap_or_default();
        if !self.shared.seen_webhooks.first_time(id) {
            label("duplicate");
            return Ok(WebhookOutcome::Duplicate);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| JobError::MalformedWebhook(e.to_string()))?;
        let prediction =
            parse_prediction(&value).map_err(|e| JobError::MalformedWebhook(e.to_string()))?;
        let job_id = self
            .shared
            .predictions
            .get(&(provider.to_owned(), prediction.id.clone()))
            .map(|j| j.clone());
        let actor = job_id.and_then(|j| self.shared.live.get(&j).map(|a| a.clone()));
        match actor {
            Some(actor) => {
                actor.do_send(ProviderUpdate(prediction));
                label("applied");
                Ok(WebhookOutcome::Applied)
            }
            None => {
                label("unknown_prediction");
                Ok(WebhookOutcome::Unknown)
            }
        }
    }

    /// Each provider's breaker state, for `/api/health`.
    pub fn provider_health(&self) -> Value {
        let providers: serde_json::Map<String, Value> = self
            .shared
            .config
            .providers
            .keys()
            .map(|name| {
                let state = match self.shared.providers.get(name) {
                    Some(p) => {
                        let breaker = p.breaker.state();
                        serde_json::json!({
                            "status": if breaker == BreakerState::Closed { "ok" } else { "degraded" },
                            "breaker": breaker.as_str(),
                            "running": p.config.concurrency - p.permits.available_permits(),
                            "webhooks": self.shared.webhooks_on(name),
                        })
                    }
                    None => serde_json::json!({ "status": "off", "reason": "no token" }),
                };
                (name.clone(), state)
            })
            .collect();
        serde_json::json!({ "live": self.shared.live.len(), "providers": providers })
    }
}

/// The body of `POST /api/jobs`.
struct JobRequest {
    kind: String,
    provider: Option<String>,
    input: Value,
}

impl JobRequest {
    fn parse(body: &Value) -> Result<JobRequest, JobError> {
        let invalid = |m: &str| JobError::InvalidRequest(m.into());
        let obj = body
            .as_object()
            .ok_or_else(|| invalid("the body must be a JSON object"))?;
        if let Some(extra) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "kind" | "provider" | "input"))
        {
            return Err(invalid(&format!(
                "unknown field {extra:?}; fields: kind, provider, input"
            )));
        }
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("kind is required: \"image\", \"music\" or \"video\""))?;
        let provider = match obj.get("provider") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(invalid("provider must be a string")),
        };
        let input = obj
            .get("input")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        if !input.is_object() {
            return Err(invalid("input must be a JSON object"));
        }
        Ok(JobRequest {
            kind: kind.to_owned(),
            provider,
            input,
        })
    }
}

/// A new job id: 16 random bytes as 32 lowercase hex digits.
fn new_job_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}
