//! The jobs front the HTTP API calls — start, shutdown, create (idempotency key, per-user
//! limits), get, list, cancel — and the state it shares with the job actors (live jobs,
//! predictions followed, per-owner quotas, the `job` event). Routing is in routing.rs, webhooks
//! in webhook.rs, the health JSON in view.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use locus_storage::{
    now_ms, AnyStore, JobCreated, JobRecord, JobStatus, JobStore, JobUpdate, NewJob,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::config::JobsConfig;
use super::error::{JobError, IDEMPOTENCY_KEY_BYTES_MAX};
use super::job_actor::{CancelJob, JobActor};
use super::machine::update_of;
use super::request::{new_job_id, JobRequest};
use super::routing::{providers_on, ProviderInfo};
use super::supervisor::{JobSupervisor, Launch, Shutdown};
use super::view::event_json;
use super::webhook::SeenWebhooks;
use super::writer::{JobSink, JobWriter};
use crate::broker::{Body, Publication};
use crate::engine::{Author, Outgoing};
use crate::metrics as m;
use crate::topic::Topic;
use crate::Engine;

/// How long shutdown waits for the job actors to stop.
const SHUTDOWN_WAIT_MS: u64 = 1_000;
/// How long a cancel waits for the job's actor to finish it.
const CANCEL_WAIT_MS: u64 = 30_000;

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
    pub(super) seen_webhooks: SeenWebhooks,
}

impl JobShared {
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
    pub(super) shared: Arc<JobShared>,
    supervisor: Addr<JobSupervisor>,
}

/// What `create` came to.
pub struct Created {
    pub job: JobRecord,
    /// False when the key had been used with the same request: this is the original job.
    pub new: bool,
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
        let providers = providers_on(&config);
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
        self.shared
            .store
            .update_jobs(&[JobUpdate {
                status: JobStatus::Canceled,
                error: None,
                cost_actual: None,
                updated_at_ms: now_ms(),
                ..update_of(&job)
            }])
            .await?;
        let job = self.get(owner, id).await?;
        m::job_finished(job.status.as_str());
        self.shared.publish_event(&job);
        Ok(job)
    }
}
