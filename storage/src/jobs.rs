//! AI generation jobs as stored rows: their types and the [`JobStore`] trait both backends
//! implement.
//!
//! Guarantees every backend gives (checked by the conformance suite):
//! - `(owner, idempotency_key)` is unique: creating a job again with the same key returns the
//!   stored job, marked [`JobCreated::Existing`] when the request hash matches and
//!   [`JobCreated::Conflict`] when it does not.
//! - a terminal job (succeeded, failed, canceled) is final: later updates of it are ignored.
//! - a live job is claimed by one caller at a time: `claim_stalled_jobs` takes only jobs whose
//!   lease has passed, and moves their lease forward in the same statement.

use std::future::Future;

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::StoreError;

/// Replicate's prediction states, with `queued` in front for jobs waiting for a provider slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    Starting,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Starting,
        JobStatus::Processing,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Starting => "starting",
            JobStatus::Processing => "processing",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Succeeded, failed and canceled jobs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub owner: String,
    pub kind: String,
    /// JSON text.
    pub input: String,
    /// The provider the caller asked for, if any.
    pub requested_provider: Option<String>,
    pub idempotency_key: String,
    /// A digest of the request body: the same key with another body is a conflict.
    pub request_hash: String,
    pub cost_estimate: Option<f64>,
    /// The creating instance drives the job until then (and renews the lease while it does).
    pub lease_until_ms: i64,
    pub created_at_ms: i64,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub owner: String,
    pub kind: String,
    pub status: JobStatus,
    /// JSON text.
    pub input: String,
    /// JSON text.
    pub output: Option<String>,
    pub error: Option<String>,
    /// 0 to 1.
    pub progress: f64,
    pub requested_provider: Option<String>,
    /// The provider currently (or last) running the job.
    pub provider: Option<String>,
    /// The provider's id for the job (a Replicate prediction id).
    pub provider_job_id: Option<String>,
    /// JSON array of attempts, one per provider tried.
    pub attempts: String,
    /// How many times the job was picked up again after its lease passed.
    pub recoveries: i64,
    pub cost_estimate: Option<f64>,
    pub cost_actual: Option<f64>,
    pub idempotency_key: String,
    pub request_hash: String,
    pub lease_until_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What creating a job with an idempotency key came to.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCreated {
    /// A new job.
    Created(JobRecord),
    /// The key was used before with the same request: the original job.
    Existing(JobRecord),
    /// The key was used before with another request: the original job, not to be returned.
    Conflict(JobRecord),
}

/// The mutable state of a job, written whole.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub id: String,
    pub status: JobStatus,
    pub progress: f64,
    pub output: Option<String>,
    pub error: Option<String>,
    pub provider: Option<String>,
    pub provider_job_id: Option<String>,
    pub attempts: String,
    pub cost_actual: Option<f64>,
    pub lease_until_ms: i64,
    pub updated_at_ms: i64,
}

/// Durable AI jobs.
pub trait JobStore: Send + Sync + 'static {
    /// Creates `job` unless its `(owner, idempotency_key)` exists already.
    fn create_job(
        &self,
        job: &NewJob,
    ) -> impl Future<Output = Result<JobCreated, StoreError>> + Send;

    /// The owner's job created with `idempotency_key`, if any.
    fn job_by_key(
        &self,
        owner: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Option<JobRecord>, StoreError>> + Send;

    fn get_job(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<JobRecord>, StoreError>> + Send;

    /// The owner's jobs, newest first, optionally of one status.
    fn list_jobs(
        &self,
        owner: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send;

    /// Writes a batch of updates in one transaction, in order; updates of terminal jobs are
    /// ignored.
    fn update_jobs(
        &self,
        batch: &[JobUpdate],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes up to `limit` live jobs whose lease passed before `now_ms`, oldest first: their
    /// lease moves to `lease_until_ms` and their `recoveries` count rises by one.
    fn claim_stalled_jobs(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send;

    /// Moves the lease of the given live jobs to `lease_until_ms`.
    fn renew_job_leases(
        &self,
        ids: &[String],
        lease_until_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The columns every job query selects, in [`job_from_row`]'s names. Postgres reads its JSONB
/// columns as text so both backends hand back the same shape.
pub(crate) fn job_columns(json_as_text: bool) -> String {
    let json = |c: &str| {
        if json_as_text {
            format!("{c}::text AS {c}")
        } else {
            c.to_string()
        }
    };
    format!(
        "id, owner, kind, status, {}, {}, error, progress, requested_provider, provider, \
         provider_job_id, {}, recoveries, cost_estimate, cost_actual, idempotency_key, \
         request_hash, lease_until_ms, created_at_ms, updated_at_ms",
        json("input"),
        json("output"),
        json("attempts"),
    )
}

/// Maps a row selected with [`job_columns`], for either backend.
pub(crate) fn job_from_row<R>(row: &R) -> Result<JobRecord, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<f64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let status: String = row.try_get("status")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        kind: row.try_get("kind")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Permanent(format!("unknown job status {status:?}")))?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        progress: row.try_get("progress")?,
        requested_provider: row.try_get("requested_provider")?,
        provider: row.try_get("provider")?,
        provider_job_id: row.try_get("provider_job_id")?,
        attempts: row.try_get("attempts")?,
        recoveries: row.try_get("recoveries")?,
        cost_estimate: row.try_get("cost_estimate")?,
        cost_actual: row.try_get("cost_actual")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// Sorts out a create that inserted nothing: the key exists, with this or another request.
pub(crate) fn existing_outcome(job: &NewJob, stored: JobRecord) -> JobCreated {
    if stored.request_hash == job.request_hash {
        JobCreated::Existing(stored)
    } else {
        JobCreated::Conflict(stored)
    }
}

/// The SQL list of live statuses, for `status IN (…)`.
pub(crate) const LIVE_STATUSES_SQL: &str = "('queued', 'starting', 'processing')";
/// The SQL list of terminal statuses.
pub(crate) const TERMINAL_STATUSES_SQL: &str = "('succeeded', 'failed', 'canceled')";
