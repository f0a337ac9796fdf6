//! The jobs API (docs/API.md, "AI jobs"): `POST /api/jobs` (with `Idempotency-Key`), `GET /api/jobs/<id>`,
//! `GET /api/jobs?status=&limit=`, `POST /api/jobs/<id>/cancel`, and provider webhooks at
//! `POST /api/webhooks/<provider>`. Job errors become HTTP errors here, and only here.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use locus_actors::jobs::view::job_json;
use locus_actors::jobs::webhook::WebhookHeaders;
use locus_actors::jobs::{JobError, WebhookOutcome};
use locus_storage::JobStatus;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::broadcast::caller;
use crate::http::error::ApiError;
use crate::AppState;

/// `GET /api/jobs` without `limit`.
const LIST_LIMIT_DEFAULT: usize = 20;

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        use JobError as E;
        let (status, code) = match &e {
            E::IdempotencyKeyRequired => (StatusCode::BAD_REQUEST, "IdempotencyKeyRequired"),
            E::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused"),
            E::IdempotencyKeyInUse => (StatusCode::CONFLICT, "IdempotencyKeyInUse"),
            E::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "InvalidJobRequest"),
            E::UnknownKind(..) => (StatusCode::UNPROCESSABLE_ENTITY, "UnknownKind"),
            E::UnknownProvider(..) => (StatusCode::UNPROCESSABLE_ENTITY, "UnknownProvider"),
            E::NoProvider { .. } => (StatusCode::SERVICE_UNAVAILABLE, "NoProvider"),
            E::TooManyJobs(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyJobs"),
            E::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "JobRateLimited"),
            E::NotFound => (StatusCode::NOT_FOUND, "JobNotFound"),
            E::UnknownWebhookProvider => (StatusCode::NOT_FOUND, "UnknownProvider"),
            E::Webhook(_) => (StatusCode::UNAUTHORIZED, "InvalidWebhook"),
            E::MalformedWebhook(_) => (StatusCode::BAD_REQUEST, "MalformedWebhook"),
            E::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "JobsUnavailable"),
            E::Store(_) => {
                let JobError::Store(s) = e else {
                    unreachable!()
                };
                return s.into();
            }
        };
        ApiError::new(status, code, &e.to_string())
    }
}

/// The caller's user id: jobs belong to a signed-in user.
fn owner(req: &HttpRequest, state: &AppState) -> Result<String, ApiError> {
    let who = caller(req, state)?;
    if !who.is_user() {
        locus_actors::metrics::auth_failure("AuthenticationRequired");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequired",
            "jobs need a user's access token (Authorization: Bearer <jwt>)",
        ));
    }
    Ok(who.user_id.to_string())
}

/// An error answer, with `Retry-After` when the refusal says when to come back.
fn refused(e: JobError) -> HttpResponse {
    let retry_after = match &e {
        JobError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
        _ => None,
    };
    let api = ApiError::from(e);
    let mut response = actix_web::ResponseError::error_response(&api);
    if let Some(s) = retry_after {
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(s),
        );
    }
    response
}

pub async fn create(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&req, &state)?;
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    match state.jobs.create(&owner, key, &body).await {
        Ok(created) if created.new => Ok(HttpResponse::Created().json(job_json(&created.job))),
        Ok(created) => Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(job_json(&created.job))),
        Err(e) => Ok(refused(e)),
    }
}

pub async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&req, &state)?;
    let job = state.jobs.get(&owner, &id).await?;
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&req, &state)?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "InvalidStatus",
                "status must be queued, starting, processing, succeeded, failed or canceled",
            )
        })?),
    };
    let limit = query.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    let jobs = state.jobs.list(&owner, status, limit).await?;
    let results: Vec<Value> = jobs.iter().map(job_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

pub async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let owner = owner(&req, &state)?;
    let job = state.jobs.cancel(&owner, &id).await?;
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

/// A provider's webhook: verified against the raw body, so it is read as bytes.
pub async fn webhook(
    req: HttpRequest,
    provider: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = WebhookHeaders {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    let outcome = state.jobs.webhook(&provider, &headers, &body)?;
    let outcome = match outcome {
        WebhookOutcome::Applied => "applied",
        WebhookOutcome::Duplicate => "duplicate",
        WebhookOutcome::Unknown => "unknown_prediction",
    };
    Ok(HttpResponse::Ok().json(json!({ "outcome": outcome })))
}
