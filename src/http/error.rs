//! HTTP errors: `{"error": {"code", "message"}}` with the right status, mapped in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use locus_actors::auth::AuthError;
use locus_actors::engine::{PublishError, ReadError};
use locus_actors::refusal::{Code, Refusal};
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

impl From<Refusal> for ApiError {
    /// A refusal from the engine: 403 for the access check, 503 when something is full or
    /// down (retry), 422 for a record that cannot be stored as sent, 500 for a storage fault,
    /// 400 for the rest (the request itself is wrong).
    fn from(r: Refusal) -> Self {
        let status = match r.code {
            Code::Unauthorized => StatusCode::FORBIDDEN,
            Code::InvalidJwt
            | Code::InvalidJwtExpiration
            | Code::MalformedJwt
            | Code::AnonymousNotAllowed => StatusCode::UNAUTHORIZED,
            Code::RoomBusy | Code::StorageBusy | Code::StorageUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Code::InvalidPayload | Code::ClientIdTooLong => StatusCode::UNPROCESSABLE_ENTITY,
            Code::StorageError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RateLimited | Code::ConnectionLimitReached => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, r.code.as_str(), &r.detail)
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        Refusal::from(e).into()
    }
}

impl From<AuthError> for ApiError {
    /// A token refused at the edge (401), counted.
    fn from(e: AuthError) -> Self {
        locus_actors::metrics::auth_failure(e.code());
        Refusal::from(e).into()
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Refused(r) => r.into(),
            ReadError::NotDurable => Self::new(
                StatusCode::NOT_FOUND,
                "NotDurable",
                &ReadError::NotDurable.to_string(),
            ),
            e @ ReadError::InvalidLimit(_) => Self::bad_request("InvalidLimit", &e.to_string()),
            ReadError::Store(e) => e.into(),
        }
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
