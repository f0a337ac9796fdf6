//! One provider call with retries: full-jitter exponential backoff (backon's schedule) for
//! retryable failures, a 429's `Retry-After` honoured (capped), every try gated and counted by
//! the provider's circuit breaker.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::breaker::Breaker;
use super::config::JobsConfig;
use super::provider::ProviderError;
use crate::metrics as m;

/// Why a call with retries gave up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttemptError {
    /// The breaker refused the call: the provider is considered down.
    #[error("circuit open")]
    CircuitOpen,
    /// Retryable failures, `tries` of them, the last one this.
    #[error("{last} (after {tries} tries)")]
    Exhausted { last: ProviderError, tries: u32 },
    /// A failure retrying cannot fix.
    #[error("{0}")]
    Refused(ProviderError),
}

/// The retry schedule of provider calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub retries_max: usize,
    pub delay_min: Duration,
    pub delay_max: Duration,
    pub retry_after_max: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &JobsConfig) -> RetryPolicy {
        RetryPolicy {
            retries_max: c.retries_max,
            delay_min: Duration::from_millis(c.retry_delay_ms_min),
            delay_max: Duration::from_millis(c.retry_delay_ms_max),
            retry_after_max: Duration::from_millis(c.retry_after_ms_max),
        }
    }
}

/// Runs `call` until it succeeds, fails for good, runs out of retries or the breaker opens.
/// Returns the value and the number of tries it took.
pub async fn with_retries<T, F, Fut>(
    provider: &str,
    op: &'static str,
    breaker: &Breaker,
    policy: RetryPolicy,
    mut call: F,
) -> Result<(T, u32), AttemptError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(policy.delay_min)
        .with_max_delay(policy.delay_max)
        .with_max_times(policy.retries_max)
        .build();
    let mut tries = 0;
    loop {
        if !breaker.allow() {
            m::provider_call(provider, op, "circuit_open");
            return Err(AttemptError::CircuitOpen);
        }
        tries += 1;
        let err = match call().await {
            Ok(v) => {
                breaker.success();
                m::provider_call(provider, op, "ok");
                return Ok((v, tries));
            }
            Err(e) => e,
        };
        m::provider_call(provider, op, err.label());
        if err.is_provider_fault() {
            breaker.failure();
        } else {
            breaker.success();
        }
        if !err.is_retryable() {
            return Err(AttemptError::Refused(err));
        }
        let Some(backoff) = delays.next() else {
            return Err(AttemptError::Exhausted { last: err, tries });
        };
        let wait = match err.retry_after() {
            Some(asked) => asked.min(policy.retry_after_max).max(backoff),
            None => backoff,
        };
        tracing::debug!(provider, op, error = %err, retry_in_ms = wait.as_millis() as u64, "provider call failed; retrying");
        tokio::time::sleep(wait).await;
    }
}
