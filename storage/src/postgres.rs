//! The Postgres backend: batches are written with `UNNEST` arrays (one statement per batch, not
//! per row), topics are locked in name order so concurrent writers cannot deadlock, and
//! messages live in daily partitions that retention drops whole.

mod jobs;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::SqlSafeStr;

use crate::{
    new_epoch, Appended, Encoding, GeoAppended, History, NearbyHit, NearbyQuery, NearbyScan,
    NewGeoMessage, NewPublication, Storage, StoreError, Stored, TopicMeta, GEO_INDEX_LEN,
};

/// How long a caller waits for a pooled connection before the attempt fails (transient), so an
/// outage surfaces as retryable errors instead of hanging the writer.
const ACQUIRE_TIMEOUT_MS: u64 = 2_000;
/// Daily partitions kept ready behind and ahead of today.
const PARTITION_DAYS_BACK: i32 = 2;
const PARTITION_DAYS_AHEAD: i32 = 7;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("geo"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0002_geo.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("geohash_collation"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0003_geohash_collation.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("jobs"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0004_jobs.sql").into_sql_str(),
            false,
        ),
    ])
}

type Row = (
    i64,
    String,
    i16,
    Vec<u8>,
    Option<String>,
    Option<String>,
    i64,
);

const SELECT_COLUMNS: &str = "msg_offset, event, encoding, payload, user_id, client_id, \
     (extract(epoch from created_at) * 1000)::bigint";

fn stored(r: Row) -> Stored {
    Stored {
        offset: r.0 as u64,
        event: r.1,
        encoding: Encoding::from_i64(r.2 as i64),
        payload: r.3,
        user_id: r.4,
        client_id: r.5,
        created_at_ms: r.6,
    }
}

impl PgStore {
    pub async fn connect(url: &str, pool_connections_max: u32) -> Result<PgStore, StoreError> {
        // No connection-wide `plan_cache_mode = force_custom_plan` (the nearby scan gets its
        // custom plans on its own, see `nearby_scan`): forced on every statement, it planned the
        // append's idempotency lookup for the 1,000 keys of each batch as a parallel sequential
        // scan and sort of every partition of `messages` (235 ms on 140k rows, growing with the
        // table) instead of 1,000 index probes (13 ms), and cut acknowledged durable
        // publications 4×, to ~10,000/s (BENCHMARKS.md, "The 4× regression and its fix").
        let pool = PgPoolOptions::new()
            .max_connections(pool_connections_max.max(1))
            .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
            .connect(url)
            .await?;
        migrator().run(&pool).await?;
        let store = PgStore { pool };
        store.ensure_partitions().await?;
        Ok(store)
    }

    /// Creates the daily partitions around today that do not exist yet.
    pub async fn ensure_partitions(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT locus_ensure_partitions($1, $2)")
            .bind(PARTITION_DAYS_BACK)
            .bind(PARTITION_DAYS_AHEAD)
            .execute(&self.pool)
            .await?;
        Ok(())
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
            "SELECT msg_offset, octet_length(payload)::bigint FROM messages WHERE topic = $1 AND msg_offset > $2 \
             ORDER BY msg_offset LIMIT $3",
        )
        .bind(topic)
        .bind(after_offset as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Storage for PgStore {
    async fn append(&self, batch: &[NewPublication]) -> Result<Vec<Appended>, StoreError> {
        let mut names: Vec<&str> = batch.iter().map(|p| p.topic.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let epochs: Vec<String> = names.iter().map(|_| new_epoch()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO topics (topic, epoch, next_offset) SELECT t, e, 1 FROM UNNEST($1::text[], $2::text[]) AS u(t, e) \
             ON CONFLICT (topic) DO NOTHING",
        )
        .bind(&names)
        .bind(&epochs)
        .execute(&mut *tx)
        .await?;
        let metas: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT topic, epoch, next_offset FROM topics WHERE topic = ANY($1) ORDER BY topic FOR UPDATE")
                .bind(&names)
                .fetch_all(&mut *tx)
                .await?;
        let mut topics: HashMap<&str, (String, i64)> = HashMap::with_capacity(metas.len());
        for (topic, epoch, next) in &metas {
            topics.insert(topic.as_str(), (epoch.clone(), *next));
        }
        let key_topics: Vec<&str> = batch.iter().map(|p| p.topic.as_str()).collect();
        let key_keys: Vec<&str> = batch.iter().map(|p| p.idem_key.as_str()).collect();
        let found: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT m.topic, m.idem_key, m.msg_offset, (extract(epoch from m.created_at) * 1000)::bigint \
             FROM messages m JOIN UNNEST($1::text[], $2::text[]) AS k(topic, idem_key) \
             ON m.topic = k.topic AND m.idem_key = k.idem_key",
        )
        .bind(&key_topics)
        .bind(&key_keys)
        .fetch_all(&mut *tx)
        .await?;
        let existing: HashMap<(String, String), (i64, i64)> = found
            .into_iter()
            .map(|(t, k, o, c)| ((t, k), (o, c)))
            .collect();
        let (outcomes, rows) = crate::assign_offsets(batch, &mut topics, &existing);
        if !rows.is_empty() {
            let done = sqlx::query(
                "INSERT INTO messages (topic, msg_offset, event, encoding, payload, user_id, client_id, idem_key, created_at) \
                 SELECT t, o, e, enc, p, u, c, k, to_timestamp(ms::double precision / 1000) \
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::smallint[], $5::bytea[], $6::text[], $7::text[], \
                 $8::text[], $9::bigint[]) AS r(t, o, e, enc, p, u, c, k, ms)",
            )
            .bind(rows.iter().map(|(p, _)| p.topic.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, o)| *o).collect::<Vec<i64>>())
            .bind(rows.iter().map(|(p, _)| p.event.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(p, _)| p.encoding as i16).collect::<Vec<i16>>())
            .bind(rows.iter().map(|(p, _)| p.payload.as_ref()).collect::<Vec<&[u8]>>())
            .bind(rows.iter().map(|(p, _)| p.user_id.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(rows.iter().map(|(p, _)| p.client_id.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(rows.iter().map(|(p, _)| p.idem_key.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(p, _)| p.created_at_ms).collect::<Vec<i64>>())
            .execute(&mut *tx)
            .await?;
            debug_assert_eq!(done.rows_affected() as usize, rows.len());
        }
        let (names, nexts): (Vec<&str>, Vec<i64>) =
            topics.iter().map(|(t, (_, n))| (*t, *n)).unzip();
        sqlx::query("UPDATE topics SET next_offset = u.n FROM UNNEST($1::text[], $2::bigint[]) AS u(t, n) WHERE topics.topic = u.t")
            .bind(&names)
            .bind(&nexts)
            .execute(&mut *tx)
            .await?;
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
            Some(through) => {
                let sql = format!(
                    "SELECT {SELECT_COLUMNS} FROM messages WHERE topic = $1 AND msg_offset > $2 \
                     AND msg_offset <= $3 ORDER BY msg_offset LIMIT $4"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(topic)
                    .bind(after_offset as i64)
                    .bind(through)
                    .bind(n as i64)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        self.with_meta(topic, rows).await
    }

    async fn topic_meta(&self, topic: &str) -> Result<TopicMeta, StoreError> {
        let meta: Option<(String, i64)> =
            sqlx::query_as("SELECT epoch, next_offset FROM topics WHERE topic = $1")
                .bind(topic)
                .fetch_optional(&self.pool)
                .await?;
        let first: (Option<i64>,) =
            sqlx::query_as("SELECT MIN(msg_offset) FROM messages WHERE topic = $1")
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
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM messages WHERE topic = $1 \
             AND created_at >= to_timestamp($2::double precision / 1000) ORDER BY msg_offset LIMIT $3"
        );
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(topic)
            .bind(since_ms)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        self.with_meta(topic, rows).await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let (dropped,): (i32,) = sqlx::query_as(
            "SELECT locus_drop_partitions_before(to_timestamp($1::double precision / 1000))",
        )
        .bind(cutoff_ms)
        .fetch_one(&self.pool)
        .await?;
        self.ensure_partitions().await?;
        Ok(dropped as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn append_geo(&self, batch: &[NewGeoMessage]) -> Result<Vec<GeoAppended>, StoreError> {
        let repeats = crate::first_occurrences(batch);
        let firsts: Vec<&NewGeoMessage> = batch
            .iter()
            .zip(&repeats)
            .filter(|(_, r)| r.is_none())
            .map(|(m, _)| m)
            .collect();
        let mut tx = self.pool.begin().await?;
        let inserted: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO geo_messages (id, user_id, content, lat, lng, radius_m, geohash, created_at) \
             SELECT i, u, c, la, ln, r, g, to_timestamp(ms::double precision / 1000) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::text[], $8::bigint[]) \
             AS x(i, u, c, la, ln, r, g, ms) ON CONFLICT (user_id, id) DO NOTHING RETURNING user_id, id",
        )
        .bind(firsts.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.content.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.point.lat).collect::<Vec<f64>>())
        .bind(firsts.iter().map(|m| m.point.lng).collect::<Vec<f64>>())
        .bind(firsts.iter().map(|m| m.radius_m).collect::<Vec<f64>>())
        .bind(firsts.iter().map(|m| locus_geo::encode(m.point, GEO_INDEX_LEN)).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.created_at_ms).collect::<Vec<i64>>())
        .fetch_all(&mut *tx)
        .await?;
        let new: std::collections::HashSet<(String, String)> = inserted.into_iter().collect();
        let existing_keys: Vec<&&NewGeoMessage> = firsts
            .iter()
            .filter(|m| !new.contains(&(m.user_id.clone(), m.id.clone())))
            .collect();
        let originals: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT g.user_id, g.id, (extract(epoch from g.created_at) * 1000)::bigint FROM geo_messages g \
             JOIN UNNEST($1::text[], $2::text[]) AS k(u, i) ON g.user_id = k.u AND g.id = k.i",
        )
        .bind(existing_keys.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
        .bind(existing_keys.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let original: HashMap<(String, String), i64> =
            originals.into_iter().map(|(u, i, c)| ((u, i), c)).collect();
        let mut out: Vec<GeoAppended> = Vec::with_capacity(batch.len());
        for (m, repeat) in batch.iter().zip(&repeats) {
            let outcome = match repeat {
                Some(first) => GeoAppended {
                    created_at_ms: out[*first].created_at_ms,
                    duplicate: true,
                },
                None => match original.get(&(m.user_id.clone(), m.id.clone())) {
                    Some(&created) => GeoAppended {
                        created_at_ms: created,
                        duplicate: true,
                    },
                    None => GeoAppended {
                        created_at_ms: m.created_at_ms,
                        duplicate: false,
                    },
                },
            };
            out.push(outcome);
        }
        Ok(out)
    }

    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyHit>, StoreError> {
        query.search(|scan| self.nearby_scan(scan)).await
    }
}

impl PgStore {
    /// One ring of a nearby search: a range scan of the geohash index per covering cell, all
    /// in one statement, with the bounding box applied before rows leave Postgres.
    ///
    /// The ranges are spelled out as an OR of literal-parameter ranges, not joined from an
    /// array: the planner then sees each range (a bitmap OR of index scans), whereas with an
    /// array join it guessed from the bounding box that a parallel sequential scan was cheap
    /// (58 ms instead of 0.4 ms on 1M rows).
    async fn nearby_scan(&self, scan: NearbyScan) -> Result<Vec<NewGeoMessage>, StoreError> {
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "SELECT id, user_id, content, lat, lng, radius_m, \
             (extract(epoch from created_at) * 1000)::bigint FROM geo_messages WHERE (",
        );
        for (i, (lo, hi)) in scan.ranges.iter().enumerate() {
            if i > 0 {
                q.push(" OR ");
            }
            q.push("(geohash >= ")
                .push_bind(lo.clone())
                .push(" AND geohash < ")
                .push_bind(hi.clone())
                .push(")");
        }
        q.push(") AND created_at >= to_timestamp(")
            .push_bind(scan.since_ms.max(0) as f64 / 1000.0)
            .push(") AND lat BETWEEN ")
            .push_bind(scan.lat.0)
            .push(" AND ")
            .push_bind(scan.lat.1)
            .push(" AND (lng BETWEEN ")
            .push_bind(scan.lng[0].0)
            .push(" AND ")
            .push_bind(scan.lng[0].1)
            .push(" OR lng BETWEEN ")
            .push_bind(scan.lng[1].0)
            .push(" AND ")
            .push_bind(scan.lng[1].1)
            .push(")");
        // Not a prepared statement: Postgres plans an unnamed statement for its parameters on
        // every execution, whereas a cached one may switch to a generic plan after five runs,
        // which cannot see the ranges and bounding box, guesses they select almost nothing, and
        // drives the scan from the created_at index through every row (270 ms instead of
        // 0.4 ms on 1M rows). Scoped to this query: custom plans for every statement of the
        // connection cost the append path 4× (see `connect`).
        let rows: Vec<GeoRow> = q
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().filter_map(geo_message).collect())
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
