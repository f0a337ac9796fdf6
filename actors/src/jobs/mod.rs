//! AI generation jobs: one actor per live job takes it through the providers of its kind,
//! persists each state change and pushes `job` events to the owner's `realtime:user:<id>`.
//!
//! # Layout
//! - [`service`]: the front the HTTP API calls (create with idempotency keys and per-user
//!   limits, get, list, cancel, webhooks) and the state shared with the actors.
//! - [`job_actor`]: the actor per live job.
//! - [`supervisor`]: starts job actors, renews their leases, picks up stalled jobs.
//! - [`provider`]: the provider trait, the prediction shape, failure classes.
//! - [`replicate`]: the adapter for Replicate-style HTTP prediction APIs.
//! - [`attempt`]: one provider call with retries (backoff, `Retry-After`, breaker).
//! - [`breaker`]: the circuit breaker per provider.
//! - [`webhook`]: Standard Webhooks verification and deduplication.
//! - [`writer`]: the batched writer of job state.
//! - [`view`]: the JSON shapes of a job (API object, `job` event).
//! - [`config`]: the `jobs` section of the configuration.

pub mod attempt;
pub mod breaker;
pub mod config;
pub mod job_actor;
pub mod provider;
pub mod replicate;
pub mod service;
pub mod supervisor;
pub mod view;
pub mod webhook;
pub mod writer;

pub use config::{JobsConfig, ProviderConfig};
pub use service::{Created, JobError, Jobs, WebhookOutcome};
