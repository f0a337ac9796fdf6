//! HTTP errors: `{"error": {"code", "message"}}` with the right status, mapped in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An error returned by an HTTP handler.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable CamelCase code.
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a refused caller may retry, sent as `Retry-After`.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        ApiError {
            status,
            code,
            message: message.to_owned(),
            retry_after_s: None,
        }
    }

    /// 429 `RateLimited`, retry after `retry_after_s`.
    pub fn rate_limited(message: &str, retry_after_s: u64) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "RateLimited", message)
        }
    }

    /// From an error whose text is `"<Code>: <message>"` (the protocol's shape): the message
    /// without the code it repeats.
    pub fn coded(status: StatusCode, code: &'static str, error: &impl std::fmt::Display) -> Self {
        let text = error.to_string();
        let message = text.split_once(": ").map_or(text.as_str(), |(_, m)| m);
        Self::new(status, code, message)
    }

    pub fn bad_request(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<locus_storage::StoreError> for ApiError {
    /// A store that is down or overloaded is 503 (retry); anything else is the server's fault.
    fn from(e: locus_storage::StoreError) -> Self {
        if e.is_transient() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "StorageUnavailable",
                &e.to_string(),
            )
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "StorageError",
                &e.to_string(),
            )
        }
    }
}

impl From<locus_actors::storage_writer::DurableError> for ApiError {
    /// A record that cannot be stored as sent is the caller's (422, retrying will not help);
    /// a busy or unreachable store is 503 (retry); anything else is the server's fault.
    fn from(e: locus_actors::storage_writer::DurableError) -> Self {
        use locus_actors::storage_writer::DurableError as D;
        let status = match &e {
            D::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            D::Busy | D::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            D::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::coded(status, e.code(), &e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, s));
        }
        response.json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}

/// Maps actix-web's JSON extractor failures (bad JSON, too large, wrong content type) to
/// [`ApiError`] so every error body has the same shape.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BodyTooLarge",
            &err.to_string(),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "send Content-Type: application/json",
        ),
        _ => ApiError::bad_request("MalformedBody", &err.to_string()),
    };
    api.into()
}
