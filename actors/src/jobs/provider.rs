//! The provider boundary: what a generation backend can do (create, get, cancel a
//! prediction), the prediction shape every adapter normalises to (Replicate's), and how a
//! failure classifies (retry, fall back, or fail the job).

use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde_json::Value;

/// A prediction's state at the provider (Replicate's state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionStatus {
    Starting,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl PredictionStatus {
    pub fn parse(s: &str) -> Option<PredictionStatus> {
        Some(match s {
            "starting" => PredictionStatus::Starting,
            "processing" => PredictionStatus::Processing,
            "succeeded" => PredictionStatus::Succeeded,
            "failed" => PredictionStatus::Failed,
            // Replicate reports predictions stopped by a deadline as `aborted`.
            "canceled" | "aborted" => PredictionStatus::Canceled,
            _ => return None,
        })
    }
}

/// A provider's view of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub status: PredictionStatus,
    /// 0 to 1, when the provider says (a `progress` field, or the last `NN%` of its logs).
    pub progress: Option<f64>,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Seconds of compute, for the actual cost.
    pub predict_time_s: Option<f64>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub model: String,
    pub input: Value,
    /// Where the provider should send webhooks, if anywhere.
    pub webhook: Option<String>,
}

/// A failed provider call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    /// 5xx.
    #[error("provider error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// 429; `retry_after` from its `Retry-After` header.
    #[error("rate limited by the provider (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    /// Any other 4xx: the request itself is refused (validation, content policy, auth).
    #[error("refused by the provider (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// A 2xx whose body is not a prediction.
    #[error("unreadable provider response: {0}")]
    BadResponse(String),
}

impl ProviderError {
    /// Timeouts, connection failures, 5xx, 429 and garbled answers may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProviderError::Refused { .. })
    }

    /// Whether the failure says the provider is unhealthy (counted by its circuit breaker).
    /// A 429 or a refusal comes from a provider that is up.
    pub fn is_provider_fault(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout(_)
                | ProviderError::Connect(_)
                | ProviderError::Server { .. }
                | ProviderError::BadResponse(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Connect(_) => "connect",
            ProviderError::Server { .. } => "server_error",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Refused { .. } => "refused",
            ProviderError::BadResponse(_) => "bad_response",
        }
    }
}

/// A generation backend. Adapters hold a per-thread HTTP client, so calls are `!Send` and run
/// on the job actors' arbiter.
pub trait Provider {
    fn create(
        &self,
        request: CreateRequest,
    ) -> LocalBoxFuture<'_, Result<Prediction, ProviderError>>;
    fn get(&self, id: &str) -> LocalBoxFuture<'_, Result<Prediction, ProviderError>>;
    fn cancel(&self, id: &str) -> LocalBoxFuture<'_, Result<Prediction, ProviderError>>;
}
