//! The SQLite backend: the embedded default (`sqlite://data/locus.db`), one file, WAL journal,
//! `synchronous = FULL` so a committed (acknowledged) batch survives a crash.

mod jobs;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, SqlSafeStr, Sqlite};

use crate::{
    new_epoch, Appended, Encoding, GeoAppended, History, NearbyHit, NearbyQuery, NearbyScan,
    NewGeoMessage, NewPublication, Storage, StoreError, Stored, TopicMeta, GEO_INDEX_LEN,
};

/// How long a connection waits on a locked database before failing (transient).
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Rows per multi-row INSERT: 9 parameters each keeps statements far below SQLite's limit.
const INSERT_ROWS_MAX: usize = 500;
/// Keys per `IN (…)` lookup of existing idempotency keys.
const LOOKUP_KEYS_MAX: usize = 500;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("geo"),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0002_geo.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("jobs"),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0003_jobs.sql").into_sql_str(),
            false,
        ),
    ])
}

type Row = (
    i64,
    String,
    i64,
    Vec<u8>,
    Option<String>,
    Option<String>,
    i64,
);

fn stored(r: Row) -> Stored {
    Stored {
        offset: r.0 as u64,
        event: r.1,
        encoding: Encoding::from_i64(r.2),
        payload: r.3,
        user_id: r.4,
        client_id: r.5,
        created_at_ms: r.6,
    }
}

impl SqliteStore {
    pub async fn connect(url: &str, pool_connections_max: u32) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_connections_max.max(1))
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// A history page: `rows` with the topic's epoch and offset bounds.
    async fn with_meta(&self, topic: &str, rows: Vec<Row>) -> Result<History, StoreError> {
        let meta = self.topic_meta(topic).await?;
        Ok(History {
            epoch: meta.epoch,
            first_offset: meta.first_offset,
            next_offset: meta.next_offset,
            publications: rows.into_iter().map(stored).collect(),
        })
    }

    /// The offsets and payload sizes of the next `limit` publications after `after_offset`.
    /// No payload is loaded to measure it (SQLite reads the record header, Postgres the TOAST
    /// pointer), so a page never loads more payload than it returns.
    async fn page_sizes(
        &self,
        topic: &str,
        after_offset: u64,
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT msg_offset, length(payload) FROM messages WHERE topic = ?1 AND msg_offset > ?2 \
             ORDER BY msg_offset LIMIT ?3",
        )
        .bind(topic)
        .bind(after_offset as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Storage for SqliteStore {
    async fn append(&self, batch: &[NewPublication]) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut topics: HashMap<&str, (String, i64)> = HashMap::new();
        let mut keys_by_topic: HashMap<&str, Vec<&str>> = HashMap::new();
        for p in batch {
            keys_by_topic.entry(&p.topic).or_default().push(&p.idem_key);
            if topics.contains_key(p.topic.as_str()) {
                continue;
            }
            sqlx::query("INSERT INTO topics (topic, epoch, next_offset) VALUES (?1, ?2, 1) ON CONFLICT (topic) DO NOTHING")
                .bind(&p.topic)
                .bind(new_epoch())
                .execute(&mut *tx)
                .await?;
            let meta: (String, i64) =
                sqlx::query_as("SELECT epoch, next_offset FROM topics WHERE topic = ?1")
                    .bind(&p.topic)
                    .fetch_one(&mut *tx)
                    .await?;
            topics.insert(&p.topic, meta);
        }
        let mut existing: HashMap<(String, String), (i64, i64)> = HashMap::new();
        for (topic, keys) in &keys_by_topic {
            for chunk in keys.chunks(LOOKUP_KEYS_MAX) {
                let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                    "SELECT idem_key, msg_offset, created_at FROM messages WHERE topic = ",
                );
                qb.push_bind(*topic).push(" AND idem_key IN (");
                let mut sep = qb.separated(", ");
                for k in chunk {
                    sep.push_bind(*k);
                }
                qb.push(")");
                let found: Vec<(String, i64, i64)> =
                    qb.build_query_as().fetch_all(&mut *tx).await?;
                for (k, o, c) in found {
                    existing.insert((topic.to_string(), k), (o, c));
                }
            }
        }
        let (outcomes, rows) = crate::assign_offsets(batch, &mut topics, &existing);
        for chunk in rows.chunks(INSERT_ROWS_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO messages (topic, msg_offset, event, encoding, payload, user_id, client_id, idem_key, created_at) ",
            );
            qb.push_values(chunk, |mut b, (p, offset)| {
                b.push_bind(&p.topic)
                    .push_bind(*offset)
                    .push_bind(&p.event)
                    .push_bind(p.encoding as i64)
                    .push_bind(p.payload.as_ref())
                    .push_bind(&p.user_id)
                    .push_bind(&p.client_id)
                    .push_bind(&p.idem_key)
                    .push_bind(p.created_at_ms);
            });
            let done = qb.build().execute(&mut *tx).await?;
            debug_assert_eq!(done.rows_affected() as usize, chunk.len());
        }
        for (topic, (_, next)) in &topics {
            sqlx::query("UPDATE topics SET next_offset = ?2 WHERE topic = ?1")
                .bind(*topic)
                .bind(*next)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn history(
        &self,
        topic: &str,
        after_offset: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<History, StoreError> {
        let sizes = self.page_sizes(topic, after_offset, limit).await?;
        let sizes_only: Vec<i64> = sizes.iter().map(|s| s.1).collect();
        let n = crate::rows_within_bytes(&sizes_only, bytes_max);
        let rows: Vec<Row> = match n.checked_sub(1).map(|last| sizes[last].0) {
            None => Vec::new(),
            Some(through) => sqlx::query_as(
                "SELECT msg_offset, event, encoding, payload, user_id, client_id, created_at FROM messages \
                 WHERE topic = ?1 AND msg_offset > ?2 AND msg_offset <= ?3 ORDER BY msg_offset LIMIT ?4",
            )
            .bind(topic)
            .bind(after_offset as i64)
            .bind(through)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await?,
        };
        self.with_meta(topic, rows).await
    }

    async fn topic_meta(&self, topic: &str) -> Result<TopicMeta, StoreError> {
        let meta: Option<(String, i64)> =
            sqlx::query_as("SELECT epoch, next_offset FROM topics WHERE topic = ?1")
                .bind(topic)
                .fetch_optional(&self.pool)
                .await?;
        let first: (Option<i64>,) =
            sqlx::query_as("SELECT MIN(msg_offset) FROM messages WHERE topic = ?1")
                .bind(topic)
                .fetch_one(&self.pool)
                .await?;
        Ok(TopicMeta::from_rows(meta, first.0))
    }

    async fn history_since(
        &self,
        topic: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<History, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT msg_offset, event, encoding, payload, user_id, client_id, created_at FROM messages \
             WHERE topic = ?1 AND created_at >= ?2 ORDER BY msg_offset LIMIT ?3",
        )
        .bind(topic)
        .bind(since_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        self.with_meta(topic, rows).await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM messages WHERE created_at < ?1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn append_geo(&self, batch: &[NewGeoMessage]) -> Result<Vec<GeoAppended>, StoreError> {
        let repeats = crate::first_occurrences(batch);
        let mut tx = self.pool.begin().await?;
        let mut out: Vec<GeoAppended> = Vec::with_capacity(batch.len());
        for (m, repeat) in batch.iter().zip(&repeats) {
            if let Some(first) = repeat {
                let original = out[*first].created_at_ms;
                out.push(GeoAppended {
                    created_at_ms: original,
                    duplicate: true,
                });
                continue;
            }
            let done = sqlx::query(
                "INSERT INTO geo_messages (id, user_id, content, lat, lng, radius_m, geohash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (user_id, id) DO NOTHING",
            )
            .bind(&m.id)
            .bind(&m.user_id)
            .bind(&m.content)
            .bind(m.point.lat)
            .bind(m.point.lng)
            .bind(m.radius_m)
            .bind(locus_geo::encode(m.point, GEO_INDEX_LEN))
            .bind(m.created_at_ms)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                out.push(GeoAppended {
                    created_at_ms: m.created_at_ms,
                    duplicate: false,
                });
            } else {
                let (created,): (i64,) = sqlx::query_as(
                    "SELECT created_at FROM geo_messages WHERE user_id = ?1 AND id = ?2",
                )
                .bind(&m.user_id)
                .bind(&m.id)
                .fetch_one(&mut *tx)
                .await?;
                out.push(GeoAppended {
                    created_at_ms: created,
                    duplicate: true,
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyHit>, StoreError> {
        query.search(|scan| self.nearby_scan(scan)).await
    }
}

impl SqliteStore {
    /// One ring of a nearby search: a range scan of the geohash primary key per covering cell,
    /// with the bounding box applied before rows leave SQLite.
    async fn nearby_scan(&self, scan: NearbyScan) -> Result<Vec<NewGeoMessage>, StoreError> {
        let mut candidates = Vec::new();
        for (lo, hi) in &scan.ranges {
            let rows: Vec<GeoRow> = sqlx::query_as(
                "SELECT id, user_id, content, lat, lng, radius_m, created_at FROM geo_messages \
                 WHERE geohash >= ?1 AND geohash < ?2 AND created_at >= ?3 \
                 AND lat BETWEEN ?4 AND ?5 \
                 AND (lng BETWEEN ?6 AND ?7 OR lng BETWEEN ?8 AND ?9)",
            )
            .bind(lo)
            .bind(hi)
            .bind(scan.since_ms)
            .bind(scan.lat.0)
            .bind(scan.lat.1)
            .bind(scan.lng[0].0)
            .bind(scan.lng[0].1)
            .bind(scan.lng[1].0)
            .bind(scan.lng[1].1)
            .fetch_all(&self.pool)
            .await?;
            candidates.extend(rows.into_iter().filter_map(geo_message));
        }
        Ok(candidates)
    }
}

type GeoRow = (String, String, String, f64, f64, f64, i64);

fn geo_message(r: GeoRow) -> Option<NewGeoMessage> {
    Some(NewGeoMessage {
        id: r.0,
        user_id: r.1,
        content: r.2,
        point: locus_geo::Point::new(r.3, r.4).ok()?,
        radius_m: r.5,
        created_at_ms: r.6,
    })
}
