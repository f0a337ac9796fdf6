//! [`AnyStore`]: the backend a `storage.url` names, dispatching both store traits to it.

use crate::{
    postgres, sqlite, Appended, GeoAppended, History, JobCreated, JobRecord, JobStatus, JobStore,
    JobUpdate, NearbyHit, NearbyQuery, NewGeoMessage, NewJob, NewPublication, Storage, StoreError,
    TopicMeta,
};

/// The backend named by a URL: `sqlite://…` or `postgres://…`.
#[derive(Clone)]
pub enum AnyStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl AnyStore {
    /// Connects (creating the SQLite file and its directory if needed) and applies migrations.
    pub async fn connect(url: &str, pool_connections_max: u32) -> Result<AnyStore, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(AnyStore::Sqlite(
                sqlite::SqliteStore::connect(url, pool_connections_max).await?,
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(AnyStore::Postgres(
                postgres::PgStore::connect(url, pool_connections_max).await?,
            ))
        } else {
            Err(StoreError::Config(format!(
                "storage.url must start with sqlite: or postgres:, got {url:?}"
            )))
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call.await,
            AnyStore::Postgres($s) => $call.await,
        }
    };
}

impl Storage for AnyStore {
    async fn append(&self, batch: &[NewPublication]) -> Result<Vec<Appended>, StoreError> {
        delegate!(self, s => s.append(batch))
    }

    async fn history(
        &self,
        topic: &str,
        after_offset: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<History, StoreError> {
        delegate!(self, s => s.history(topic, after_offset, limit, bytes_max))
    }

    async fn topic_meta(&self, topic: &str) -> Result<TopicMeta, StoreError> {
        delegate!(self, s => s.topic_meta(topic))
    }

    async fn history_since(
        &self,
        topic: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<History, StoreError> {
        delegate!(self, s => s.history_since(topic, since_ms, limit))
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge_before(cutoff_ms))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping())
    }

    async fn append_geo(&self, batch: &[NewGeoMessage]) -> Result<Vec<GeoAppended>, StoreError> {
        delegate!(self, s => s.append_geo(batch))
    }

    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyHit>, StoreError> {
        delegate!(self, s => s.nearby(query))
    }
}

impl JobStore for AnyStore {
    async fn create_job(&self, job: &NewJob) -> Result<JobCreated, StoreError> {
        delegate!(self, s => s.create_job(job))
    }

    async fn job_by_key(
        &self,
        owner: &str,
        idempotency_key: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        delegate!(self, s => s.job_by_key(owner, idempotency_key))
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        delegate!(self, s => s.get_job(id))
    }

    async fn list_jobs(
        &self,
        owner: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        delegate!(self, s => s.list_jobs(owner, status, limit))
    }

    async fn update_jobs(&self, batch: &[JobUpdate]) -> Result<(), StoreError> {
        delegate!(self, s => s.update_jobs(batch))
    }

    async fn claim_stalled_jobs(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        delegate!(self, s => s.claim_stalled_jobs(now_ms, lease_until_ms, limit))
    }

    async fn renew_job_leases(
        &self,
        ids: &[String],
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.renew_job_leases(ids, lease_until_ms))
    }
}
