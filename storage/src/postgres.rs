//! The Postgres backend: batches are written with `UNNEST` arrays (one statement per batch, not
//! per row), topics are locked in name order so concurrent writers cannot deadlock, and
//! messages live in daily partitions that retention drops whole.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::SqlSafeStr;

use crate::{new_epoch, Appended, Encoding, History, NewPublication, Storage, StoreError, Stored};

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
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0001_init.sql").into_sql_str(),
        false,
    )])
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

    async fn topic_meta(
        &self,
        topic: &str,
    ) -> Result<(Option<String>, u64, Option<u64>), StoreError> {
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
        let (epoch, next) = match meta {
            Some((e, n)) => (Some(e), n as u64),
            None => (None, 1),
        };
        Ok((epoch, next, first.0.map(|o| o as u64)))
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
            .bind(rows.iter().map(|(p, _)| p.payload.as_slice()).collect::<Vec<&[u8]>>())
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
    ) -> Result<History, StoreError> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM messages WHERE topic = $1 AND msg_offset > $2 ORDER BY msg_offset LIMIT $3"
        );
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(topic)
            .bind(after_offset as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let (epoch, next_offset, first_offset) = self.topic_meta(topic).await?;
        Ok(History {
            epoch,
            first_offset,
            next_offset,
            publications: rows.into_iter().map(stored).collect(),
        })
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
        let (epoch, next_offset, first_offset) = self.topic_meta(topic).await?;
        Ok(History {
            epoch,
            first_offset,
            next_offset,
            publications: rows.into_iter().map(stored).collect(),
        })
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
}
