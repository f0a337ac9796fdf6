//! The Postgres side of [`JobStore`]: JSON columns are JSONB, and a claim locks the rows it
//! takes with `FOR UPDATE SKIP LOCKED`, so instances sharing the database never take the same
//! stalled job.

use super::PgStore;
use crate::jobs::{
    existing_outcome, job_columns, job_from_row, JobCreated, JobRecord, JobStatus, JobStore,
    JobUpdate, NewJob, LIVE_STATUSES_SQL, TERMINAL_STATUSES_SQL,
};
use crate::StoreError;

impl JobStore for PgStore {
    async fn create_job(&self, job: &NewJob) -> Result<JobCreated, StoreError> {
        let sql = format!(
            "INSERT INTO jobs (id, owner, kind, status, input, requested_provider, \
             idempotency_key, request_hash, cost_estimate, lease_until_ms, created_at_ms, \
             updated_at_ms) VALUES ($1, $2, $3, 'queued', $4::jsonb, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING {}",
            job_columns(true)
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&job.id)
            .bind(&job.owner)
            .bind(&job.kind)
            .bind(&job.input)
            .bind(&job.requested_provider)
            .bind(&job.idempotency_key)
            .bind(&job.request_hash)
            .bind(job.cost_estimate)
            .bind(job.lease_until_ms)
            .bind(job.created_at_ms)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = inserted {
            return Ok(JobCreated::Created(job_from_row(&row)?));
        }
        let stored = self
            .job_by_key(&job.owner, &job.idempotency_key)
            .await?
            .ok_or_else(|| StoreError::Transient("job key vanished during create".into()))?;
        Ok(existing_outcome(job, stored))
    }

    async fn job_by_key(
        &self,
        owner: &str,
        idempotency_key: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE owner = $1 AND idempotency_key = $2",
            job_columns(true)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(owner)
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {} FROM jobs WHERE id = $1", job_columns(true));
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(
        &self,
        owner: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE owner = $1 AND ($2::text IS NULL OR status = $2) \
             ORDER BY created_at_ms DESC, id DESC LIMIT $3",
            job_columns(true)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(owner)
            .bind(status.map(JobStatus::as_str))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn update_jobs(&self, batch: &[JobUpdate]) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = $2, progress = $3, output = $4::jsonb, error = $5, \
             provider = $6, provider_job_id = $7, attempts = $8::jsonb, cost_actual = $9, \
             lease_until_ms = $10, updated_at_ms = $11 \
             WHERE id = $1 AND status NOT IN {TERMINAL_STATUSES_SQL}"
        );
        let mut tx = self.pool.begin().await?;
        for u in batch {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&u.id)
                .bind(u.status.as_str())
                .bind(u.progress)
                .bind(&u.output)
                .bind(&u.error)
                .bind(&u.provider)
                .bind(&u.provider_job_id)
                .bind(&u.attempts)
                .bind(u.cost_actual)
                .bind(u.lease_until_ms)
                .bind(u.updated_at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_stalled_jobs(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET lease_until_ms = $1, recoveries = recoveries + 1 WHERE id IN \
             (SELECT id FROM jobs WHERE status IN {LIVE_STATUSES_SQL} AND lease_until_ms < $2 \
             ORDER BY created_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {}",
            job_columns(true)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| j.created_at_ms);
        Ok(jobs)
    }

    async fn renew_job_leases(
        &self,
        ids: &[String],
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET lease_until_ms = $1 WHERE status IN {LIVE_STATUSES_SQL} \
             AND id = ANY($2)"
        )))
        .bind(lease_until_ms)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
