//! Recovery on join: what a rejoining client missed (`config.recover`) or asked to replay
//! (`config.broadcast.replay`), read from the history window or the database before the join
//! reaches the room.
//!
//! A recovery is bounded before anything is read: the window answers from memory, and
//! otherwise the topic's epoch and offset bounds (no publication) decide whether the gap can be
//! filled at all; only then are at most `recover_publications_max` publications and
//! `recover_bytes_max` payload bytes read.
//!
//! Over 400 lines: about half is unit tests against a counting store (what is read, and when
//! nothing may be).

use std::sync::Arc;

use bytes::Bytes;
use locus_storage::{AnyStore, Storage, TopicMeta};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::broker::Body;
use crate::config::StorageLimits;
use crate::publish::history::{CachedPublication, Coverage, HistoryCache};
use crate::wire::raw;

/// `config.recover`: the last publication the client saw.
#[derive(Deserialize, Clone)]
pub(crate) struct RecoverConfig {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
}

/// `config.broadcast.replay` (Supabase): publications since a time, in milliseconds.
#[derive(Deserialize, Clone)]
pub(crate) struct ReplayConfig {
    pub(crate) since: i64,
    #[serde(default)]
    pub(crate) limit: Option<usize>,
}

/// What a join asked to get back.
pub(crate) enum Wanted {
    Recover(RecoverConfig),
    Replay(ReplayConfig),
}

/// A stored publication as kept in memory and replayed.
pub(crate) fn cached(p: locus_storage::Stored) -> Arc<CachedPublication> {
    let body = match p.encoding {
        locus_storage::Encoding::Json => match String::from_utf8(p.payload)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
        {
            Some(json) => Body::Json(Arc::from(json)),
            None => Body::Json(Arc::from(raw("null".into()))),
        },
        locus_storage::Encoding::Binary => Body::Binary {
            encoding: locus_protocol::PayloadEncoding::Binary,
            data: Bytes::from(p.payload),
        },
    };
    Arc::new(CachedPublication {
        offset: p.offset,
        event: p.event,
        body,
        client_id: p.client_id.map(Arc::from),
        created_at_ms: p.created_at_ms,
    })
}

/// What a joining member missed, as prepared by its session (which read the database when the
/// in-memory window did not cover the gap).
#[derive(Clone, Debug)]
pub struct Recovery {
    /// `false`: the gap cannot be filled (epoch changed, too old, too large).
    pub possible: bool,
    /// The topic's epoch, when known.
    pub epoch: Option<Arc<str>>,
    /// The client's last offset; entries are after it, oldest first.
    pub after_offset: u64,
    pub entries: Vec<Arc<CachedPublication>>,
    /// A `broadcast.replay` (entries marked `meta.replayed`, reply without `recovered`).
    pub replay: bool,
}

/// Reads what a joining client missed: from the history window when it covers the gap, else
/// from the database. The room adds what was committed after this read.
pub(crate) async fn prepare_recovery(
    durable: Option<(&AnyStore, &HistoryCache, &StorageLimits)>,
    topic: &str,
    wanted: Wanted,
) -> Recovery {
    let Some((store, window, limits)) = durable else {
        // Only durable topics have a history.
        return not_possible(matches!(wanted, Wanted::Replay(_)));
    };
    match wanted {
        Wanted::Recover(r) => recover(store, window, limits, topic, r).await,
        Wanted::Replay(r) => replay(store, limits, topic, r).await,
    }
}

fn not_possible(replay: bool) -> Recovery {
    Recovery {
        possible: false,
        epoch: None,
        after_offset: 0,
        entries: Vec::new(),
        replay,
    }
}

/// `config.recover`: the publications after the client's offset, when they can all be sent
/// (same epoch, still retained, at most `recover_publications_max` and `recover_bytes_max`).
/// The topic's bounds are checked before any publication is read, so a wrong epoch or a gap
/// too large costs two index lookups, not a page of payloads.
async fn recover<S: Storage>(
    store: &S,
    cache: &HistoryCache,
    limits: &StorageLimits,
    topic: &str,
    r: RecoverConfig,
) -> Recovery {
    let possible = |entries: Vec<Arc<CachedPublication>>| Recovery {
        possible: true,
        epoch: Some(Arc::from(r.epoch.as_str())),
        after_offset: r.offset,
        entries,
        replay: false,
    };
    if let Coverage::Covered(entries) = cache.after_seen(topic, &r.epoch, r.offset) {
        return if fits(&entries, limits) {
            possible(entries)
        } else {
            not_possible(false)
        };
    }
    let Ok(meta) = store.topic_meta(topic).await else {
        return not_possible(false);
    };
    let Some(missed) = missed(&meta, &r, limits.recover_publications_max) else {
        return not_possible(false);
    };
    if missed == 0 {
        return possible(Vec::new());
    }
    let (max, bytes_max) = (limits.recover_publications_max, limits.recover_bytes_max);
    let Ok(h) = store.history(topic, r.offset, max + 1, bytes_max).await else {
        return not_possible(false);
    };
    let entries: Vec<_> = h.publications.into_iter().map(cached).collect();
    // Rows committed since the bounds were read may add to the gap; retention may have taken
    // its start; the byte bound may have cut the page short.
    let starts_at_gap = entries
        .first()
        .is_some_and(|p| Some(p.offset) == r.offset.checked_add(1));
    if !starts_at_gap || (entries.len() as u64) < missed || !fits(&entries, limits) {
        return not_possible(false);
    }
    possible(entries)
}

/// How many publications a client that saw `r.offset` in `r.epoch` missed, when the database
/// still holds them all and they are at most `max`; `None` when the gap cannot be filled: the
/// epoch differs, the client claims an offset never assigned, or retention took part of it.
fn missed(meta: &TopicMeta, r: &RecoverConfig, max: usize) -> Option<u64> {
    if meta.epoch.as_deref() != Some(r.epoch.as_str()) {
        return None;
    }
    // Checked: the offset comes from the client, and u64::MAX + 1 must not wrap to 0.
    let first_missing = r.offset.checked_add(1)?;
    let missed = meta.next_offset.checked_sub(first_missing)?;
    let retained = missed == 0
        || meta
            .first_offset
            .is_some_and(|first| first <= first_missing);
    (retained && missed <= max as u64).then_some(missed)
}

/// Whether `entries` fit one recovery: at most `recover_publications_max` and
/// `recover_bytes_max` payload bytes.
fn fits(entries: &[Arc<CachedPublication>], limits: &StorageLimits) -> bool {
    let bytes: usize = entries.iter().map(|p| p.payload_bytes()).sum();
    entries.len() <= limits.recover_publications_max && bytes <= limits.recover_bytes_max
}

/// `config.broadcast.replay`: stored publications since a time, at most
/// `replay_publications_max`.
async fn replay<S: Storage>(
    store: &S,
    limits: &StorageLimits,
    topic: &str,
    r: ReplayConfig,
) -> Recovery {
    let max = limits.replay_publications_max;
    let limit = r.limit.unwrap_or(max).min(max);
    match store.history_since(topic, r.since, limit).await {
        Ok(h) => {
            let mut entries: Vec<_> = h.publications.into_iter().map(cached).collect();
            keep_newest_within(&mut entries, limits.recover_bytes_max);
            let after_offset = entries.first().map_or(0, |p| p.offset.saturating_sub(1));
            Recovery {
                possible: true,
                epoch: h.epoch.map(Arc::from),
                after_offset,
                entries,
                replay: true,
            }
        }
        Err(_) => not_possible(true),
    }
}

/// Drops the oldest of `entries` (oldest first) until their payloads hold at most `bytes_max`:
/// a replay is best effort, and one larger than the joiner's queue would shed the joiner.
fn keep_newest_within(entries: &mut Vec<Arc<CachedPublication>>, bytes_max: usize) {
    let mut bytes: usize = entries.iter().map(|p| p.payload_bytes()).sum();
    let mut drop = 0;
    while bytes > bytes_max && drop < entries.len() {
        bytes -= entries[drop].payload_bytes();
        drop += 1;
    }
    entries.drain(..drop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use locus_storage::sqlite::SqliteStore;
    use locus_storage::{
        Appended, Encoding, GeoAppended, History, NearbyHit, NearbyQuery, NewGeoMessage,
        NewPublication, StoreError,
    };

    use crate::publish::history::WindowLimits;

    const TOPIC: &str = "realtime:room:r";

    /// SQLite in memory, counting the publications it reads.
    struct Counting {
        inner: SqliteStore,
        rows_read: AtomicUsize,
    }

    impl Counting {
        fn read(&self, h: History) -> History {
            self.rows_read
                .fetch_add(h.publications.len(), Ordering::Relaxed);
            h
        }

        fn rows_read(&self) -> usize {
            self.rows_read.load(Ordering::Relaxed)
        }
    }

    impl Storage for Counting {
        async fn append(&self, batch: &[NewPublication]) -> Result<Vec<Appended>, StoreError> {
            self.inner.append(batch).await
        }
        async fn history(
            &self,
            topic: &str,
            after_offset: u64,
            limit: usize,
            bytes_max: usize,
        ) -> Result<History, StoreError> {
            let h = self
                .inner
                .history(topic, after_offset, limit, bytes_max)
                .await?;
            Ok(self.read(h))
        }
        async fn topic_meta(&self, topic: &str) -> Result<TopicMeta, StoreError> {
            self.inner.topic_meta(topic).await
        }
        async fn history_since(
            &self,
            topic: &str,
            since_ms: i64,
            limit: usize,
        ) -> Result<History, StoreError> {
            let h = self.inner.history_since(topic, since_ms, limit).await?;
            Ok(self.read(h))
        }
        async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
            self.inner.purge_before(cutoff_ms).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        async fn append_geo(
            &self,
            batch: &[NewGeoMessage],
        ) -> Result<Vec<GeoAppended>, StoreError> {
            self.inner.append_geo(batch).await
        }
        async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyHit>, StoreError> {
            self.inner.nearby(query).await
        }
    }

    /// A store holding offsets 1..=5 of `TOPIC`, each with a 100-byte payload; its epoch.
    async fn store_with_five() -> (Counting, String) {
        let store = Counting {
            inner: SqliteStore::connect("sqlite::memory:", 1).await.unwrap(),
            rows_read: AtomicUsize::new(0),
        };
        let batch: Vec<_> = (1..=5)
            .map(|i| NewPublication {
                topic: TOPIC.into(),
                event: "e".into(),
                encoding: Encoding::Binary,
                payload: bytes::Bytes::from(vec![b'x'; 100]),
                user_id: None,
                client_id: None,
                idem_key: format!("k{i}"),
                created_at_ms: 0,
            })
            .collect();
        let out = store.append(&batch).await.unwrap();
        (store, out[0].epoch.clone())
    }

    fn empty_window() -> HistoryCache {
        HistoryCache::new(WindowLimits {
            size: 1_000,
            topics_max: 10,
            topic_bytes_max: 1 << 20,
            bytes_max: 1 << 20,
        })
    }

    fn at(epoch: &str, offset: u64) -> RecoverConfig {
        RecoverConfig {
            epoch: epoch.into(),
            offset,
        }
    }

    /// A recover join with a wrong epoch, a gap over `recover_publications_max`, or an offset
    /// never assigned (u64::MAX included) is refused from the topic's bounds alone: not one
    /// publication is read. The same store counts the rows of a recovery that is possible.
    #[tokio::test]
    async fn impossible_recoveries_read_no_publication() {
        let (store, epoch) = store_with_five().await;
        let cache = empty_window();
        let limits = StorageLimits {
            recover_publications_max: 2,
            ..StorageLimits::default()
        };
        for r in [
            at("bogus", 4),
            at(&epoch, 0),
            at(&epoch, 6),
            at(&epoch, u64::MAX),
        ] {
            let offset = r.offset;
            let rec = recover(&store, &cache, &limits, TOPIC, r).await;
            assert!(!rec.possible, "offset {offset}");
            assert_eq!(store.rows_read(), 0, "offset {offset}");
        }
        let rec = recover(&store, &cache, &limits, TOPIC, at(&epoch, 3)).await;
        assert!(rec.possible);
        let offsets: Vec<u64> = rec.entries.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![4, 5]);
        assert_eq!(store.rows_read(), 2);
        let caught_up = recover(&store, &cache, &limits, TOPIC, at(&epoch, 5)).await;
        assert!(caught_up.possible && caught_up.entries.is_empty());
        assert_eq!(store.rows_read(), 2);
    }

    /// A gap whose payloads pass `recover_bytes_max` is refused, from the database (which
    /// stops reading at the budget) and from the window alike.
    #[tokio::test]
    async fn recoveries_past_the_byte_budget_are_refused() {
        let (store, epoch) = store_with_five().await;
        let limits = StorageLimits {
            recover_bytes_max: 250,
            ..StorageLimits::default()
        };
        let cache = empty_window();
        assert!(
            recover(&store, &cache, &limits, TOPIC, at(&epoch, 3))
                .await
                .possible
        );
        store.rows_read.store(0, Ordering::Relaxed);
        let rec = recover(&store, &cache, &limits, TOPIC, at(&epoch, 1)).await;
        assert!(!rec.possible, "4 × 100 bytes > 250");
        assert_eq!(store.rows_read(), 2, "the page stops at the budget");

        let (topic, e): (Arc<str>, Arc<str>) = (TOPIC.into(), epoch.as_str().into());
        for h in store
            .inner
            .history(TOPIC, 0, 10, usize::MAX)
            .await
            .unwrap()
            .publications
        {
            cache.push(&topic, &e, cached(h));
        }
        assert!(
            recover(&store, &cache, &limits, TOPIC, at(&epoch, 3))
                .await
                .possible
        );
        store.rows_read.store(0, Ordering::Relaxed);
        assert!(
            !recover(&store, &cache, &limits, TOPIC, at(&epoch, 1))
                .await
                .possible
        );
        assert_eq!(store.rows_read(), 0, "served (and refused) from the window");
    }

    /// A replay keeps its newest publications within `recover_bytes_max`, so it never
    /// overflows the joiner's queue (25 × 64 KiB would).
    #[test]
    fn replays_keep_their_newest_publications_within_the_byte_budget() {
        let entry = |offset: u64, n: usize| {
            Arc::new(CachedPublication {
                offset,
                event: "e".into(),
                body: Body::Json(Arc::from(crate::wire::raw(format!(
                    "\"{}\"",
                    "x".repeat(n)
                )))),
                client_id: None,
                created_at_ms: 0,
            })
        };
        let mut entries: Vec<_> = (1..=5).map(|o| entry(o, 98)).collect();
        keep_newest_within(&mut entries, 250);
        let offsets: Vec<u64> = entries.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [4, 5]);
        keep_newest_within(&mut entries, 10);
        assert!(entries.is_empty());
    }
}
