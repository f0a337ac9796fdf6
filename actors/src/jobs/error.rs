//! `JobError`: why a job request, cancel or webhook was refused. The HTTP layer
//! (src/http/jobs.rs) turns each variant into a status and a stable code.

use locus_storage::StoreError;

use super::webhook::WebhookError;

/// Longest `Idempotency-Key`, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

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
