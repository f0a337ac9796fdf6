//! AI generation jobs: one actor per live job takes it through the providers of its kind,
//! persists each state change and pushes `job` events to the owner's `realtime:user:<id>`.
//!
//! # Layout
//! - [`service`]: the front the HTTP API calls (start, shutdown, create with idempotency keys
//!   and per-user limits, get, list, cancel) and the state shared with the actors.
//! - [`error`]: `JobError`, why a request was refused.
//! - [`request`]: the body of a create, and job ids.
//! - [`routing`]: the providers that are on, the route of a kind, webhook URLs.
//! - [`job_actor`]: the actor per live job.
//! - [`machine`]: the pure decisions of the job actor (status order, cost, throttling).
//! - [`attempt_log`]: the job's log of providers tried.
//! - [`supervisor`]: starts job actors, renews their leases, picks up stalled jobs.
//! - [`provider`]: the provider trait, the prediction shape, failure classes.
//! - [`replicate`]: the adapter for Replicate-style HTTP prediction APIs.
//! - [`attempt`]: one provider call with retries (backoff, `Retry-After`, breaker).
//! - [`breaker`]: the circuit breaker per provider.
//! - [`webhook`]: provider webhooks: Standard Webhooks verification, deduplication, dispatch.
//! - [`writer`]: the batched writer of job state.
//! - [`view`]: the JSON shapes of a job (API object, `job` event) and of the jobs health.
//! - [`config`]: the `jobs` section of the configuration.

pub mod attempt;
pub mod attempt_log;
pub mod breaker;
pub mod config;
pub mod error;
pub mod job_actor;
pub mod machine;
pub mod provider;
pub mod replicate;
pub mod request;
pub mod routing;
pub mod service;
pub mod supervisor;
pub mod view;
pub mod webhook;
pub mod writer;

pub use config::{JobsConfig, ProviderConfig};
pub use error::JobError;
pub use service::{Created, Jobs};
pub use webhook::WebhookOutcome;
