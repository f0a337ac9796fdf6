//! The in-memory window of recent durable publications per topic, so that a reconnect storm's
//! recoveries are served from memory instead of the database.
//!
//! Filled by the storage writer after each commit, in offset order. Bounded in count and in
//! bytes: per topic at most `history_window_size` publications and
//! `history_window_topic_bytes_max` bytes (the oldest leave first); in all at most
//! `history_window_topics_max` topics and `history_window_bytes_max` bytes (the topics written
//! least recently leave whole). What leaves is counted by reason and stays in the database.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hashlink::LinkedHashMap;

use std::time::Instant;

use crate::broker::{Body, Durable, Publication};
use crate::metrics::{self as m, WindowEviction};

/// What one cached publication costs beyond its payload and text: the struct, its `Arc`, the
/// deque slot and the body's allocation headers, rounded up.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// A committed durable publication, as kept in memory and replayed.
#[derive(Debug)]
pub struct CachedPublication {
    pub offset: u64,
    pub event: String,
    pub body: Body,
    pub client_id: Option<Arc<str>>,
    pub created_at_ms: i64,
}

impl CachedPublication {
    /// Its position as a delivered publication carries it, in `epoch`.
    pub fn durable(&self, epoch: Arc<str>, replayed: bool) -> Durable {
        Durable {
            offset: self.offset,
            epoch,
            client_id: self.client_id.clone(),
            replayed,
            created_at_ms: self.created_at_ms,
        }
    }

    /// Back into a publication of `topic` for the room to deliver (from no session).
    pub fn to_publication(&self, topic: Arc<str>, epoch: Arc<str>) -> Publication {
        Publication {
            topic,
            event: self.event.clone(),
            body: self.body.clone(),
            sender: None,
            accepted_at: Instant::now(),
            durable: Some(self.durable(epoch, false)),
        }
    }

    /// The payload's length in bytes.
    pub fn payload_bytes(&self) -> usize {
        match &self.body {
            Body::Json(p) | Body::Event(p) => p.get().len(),
            Body::Binary { data, .. } => data.len(),
        }
    }

    /// What keeping it in memory costs, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.payload_bytes()
            + self.event.len()
            + self.client_id.as_ref().map_or(0, |c| c.len())
            + ENTRY_OVERHEAD_BYTES
    }
}

/// The bounds of the window (the `history_window_*` keys of `[storage]`).
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    pub size: usize,
    pub topics_max: usize,
    pub topic_bytes_max: usize,
    pub bytes_max: usize,
}

/// One topic's recent publications: contiguous offsets ending at the newest committed one,
/// never empty while it is in the map.
struct Window {
    epoch: Arc<str>,
    entries: VecDeque<Arc<CachedPublication>>,
    bytes: usize,
}

impl Window {
    /// Removes the oldest publication; returns its size.
    fn pop_oldest(&mut self) -> usize {
        let size = self.entries.pop_front().map_or(0, |p| p.size_bytes());
        self.bytes -= size;
        size
    }
}

/// Every topic's window, least recently written first, with their total size.
#[derive(Default)]
struct Windows {
    topics: LinkedHashMap<Arc<str>, Window>,
    bytes: usize,
}

impl Windows {
    /// Removes the least recently written topic; counts its publications under `reason`.
    fn evict_oldest_topic(&mut self, reason: WindowEviction) {
        if let Some((_, w)) = self.topics.pop_front() {
            self.bytes -= w.bytes;
            m::history_window_bytes().decrement(w.bytes as f64);
            m::window_evicted(reason, w.entries.len());
        }
    }

    /// Removes `topic`'s window; counts its publications under `reason`.
    fn remove(&mut self, topic: &str, reason: WindowEviction) {
        if let Some(w) = self.topics.remove(topic) {
            self.bytes -= w.bytes;
            m::history_window_bytes().decrement(w.bytes as f64);
            m::window_evicted(reason, w.entries.len());
        }
    }
}

/// What the window knows about a topic after some offset.
#[derive(Debug)]
pub enum Coverage {
    /// Every publication after the offset (possibly none).
    Covered(Vec<Arc<CachedPublication>>),
    /// The window starts later than the offset, or the epoch differs: ask the database.
    Gap,
    /// Nothing is cached for the topic.
    Unknown,
}

#[derive(Clone)]
pub struct HistoryCache {
    windows: Arc<Mutex<Windows>>,
    limits: WindowLimits,
}

impl HistoryCache {
    pub fn new(limits: WindowLimits) -> Self {
        HistoryCache {
            windows: Arc::default(),
            limits: WindowLimits {
                size: limits.size.max(1),
                topics_max: limits.topics_max.max(1),
                topic_bytes_max: limits.topic_bytes_max,
                bytes_max: limits.bytes_max.max(limits.topic_bytes_max),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows
            .lock()
            .expect("history window lock is never poisoned")
    }

    /// Bytes held by every window together.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Appends a committed publication (offsets must rise per topic), then evicts down to the
    /// bounds.
    pub fn push(&self, topic: &Arc<str>, epoch: &Arc<str>, publication: Arc<CachedPublication>) {
        let size = publication.size_bytes();
        let mut all = self.lock();
        if size > self.limits.topic_bytes_max {
            // Too large to keep: the window must still end at the newest publication, so the
            // topic leaves whole and its recoveries read the database.
            all.remove(topic, WindowEviction::TopicBytes);
            m::window_evicted(WindowEviction::TopicBytes, 1);
            return;
        }
        if all.topics.get(topic).is_some_and(|w| w.epoch != *epoch) {
            all.remove(topic, WindowEviction::EpochChanged);
        }
        if !all.topics.contains_key(topic) && all.topics.len() >= self.limits.topics_max {
            all.evict_oldest_topic(WindowEviction::TopicsMax);
        }
        let evicted = {
            // Most recently written last: a new topic is inserted at the back.
            if all.topics.to_back(topic).is_none() {
                let w = Window {
                    epoch: epoch.clone(),
                    entries: VecDeque::new(),
                    bytes: 0,
                };
                all.topics.insert(topic.clone(), w);
            }
            let w = all.topics.get_mut(topic).expect("inserted above");
            debug_assert!(w
                .entries
                .back()
                .is_none_or(|last| last.offset < publication.offset));
            let mut evicted = 0;
            if w.entries.len() >= self.limits.size {
                evicted += w.pop_oldest();
                m::window_evicted(WindowEviction::TopicSize, 1);
            }
            w.entries.push_back(publication);
            w.bytes += size;
            let mut over = 0;
            while w.bytes > self.limits.topic_bytes_max {
                evicted += w.pop_oldest();
                over += 1;
            }
            m::window_evicted(WindowEviction::TopicBytes, over);
            debug_assert!(!w.entries.is_empty());
            evicted
        };
        all.bytes = all.bytes + size - evicted;
        m::history_window_bytes().increment(size as f64 - evicted as f64);
        while all.bytes > self.limits.bytes_max {
            // Never the topic just written: it is at the back, and alone it fits.
            all.evict_oldest_topic(WindowEviction::WindowBytes);
        }
    }

    /// Keeps a durable publication (one without a position is not kept) in its topic's window.
    pub fn remember(&self, p: &Publication) {
        if let Some(d) = &p.durable {
            let cached = CachedPublication {
                offset: d.offset,
                event: p.event.clone(),
                body: p.body.clone(),
                client_id: d.client_id.clone(),
                created_at_ms: d.created_at_ms,
            };
            self.push(&p.topic, &d.epoch, Arc::new(cached));
        }
    }

    /// Forgets `topic`'s window: in a cluster only a running room sees every publication of its
    /// topic, so the window of a topic whose room stopped would go stale.
    pub fn forget(&self, topic: &str) {
        self.lock().remove(topic, WindowEviction::Unwatched);
    }

    /// Publications of `topic` after `after_offset` in `epoch`, if the window covers them.
    pub fn after(&self, topic: &str, epoch: &str, after_offset: u64) -> Coverage {
        self.covering(topic, epoch, after_offset, false)
    }

    /// Like [`after`](Self::after), for an offset a client says it has seen: one past the
    /// newest publication is a `Gap` too (no client can have seen it; the database decides).
    pub fn after_seen(&self, topic: &str, epoch: &str, seen_offset: u64) -> Coverage {
        self.covering(topic, epoch, seen_offset, true)
    }

    fn covering(&self, topic: &str, epoch: &str, after_offset: u64, seen: bool) -> Coverage {
        let all = self.lock();
        let Some(w) = all.topics.get(topic) else {
            return Coverage::Unknown;
        };
        if &*w.epoch != epoch {
            return Coverage::Gap;
        }
        let (Some(first), Some(last)) = (w.entries.front(), w.entries.back()) else {
            return Coverage::Unknown;
        };
        // Saturating: the offset comes from a client, and u64::MAX + 1 must not wrap to 0.
        if first.offset > after_offset.saturating_add(1) || (seen && after_offset > last.offset) {
            return Coverage::Gap;
        }
        let from = w.entries.partition_point(|p| p.offset <= after_offset);
        Coverage::Covered(w.entries.range(from..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: usize, topics_max: usize) -> WindowLimits {
        WindowLimits {
            size,
            topics_max,
            topic_bytes_max: usize::MAX / 2,
            bytes_max: usize::MAX / 2,
        }
    }

    fn publication(offset: u64) -> Arc<CachedPublication> {
        sized(offset, 2)
    }

    fn sized(offset: u64, payload_bytes: usize) -> Arc<CachedPublication> {
        Arc::new(CachedPublication {
            offset,
            event: "e".into(),
            body: Body::Binary {
                encoding: locus_protocol::PayloadEncoding::Binary,
                data: bytes::Bytes::from(vec![b'x'; payload_bytes]),
            },
            client_id: None,
            created_at_ms: 0,
        })
    }

    #[test]
    fn window_serves_what_it_covers_and_reports_gaps() {
        let cache = HistoryCache::new(limits(3, 10));
        let (t, e): (Arc<str>, Arc<str>) = ("t".into(), "e1".into());
        assert!(matches!(cache.after("t", "e1", 0), Coverage::Unknown));
        for o in 1..=5 {
            cache.push(&t, &e, publication(o));
        }
        // Holds 3, 4, 5.
        assert!(matches!(cache.after("t", "e1", 1), Coverage::Gap));
        let Coverage::Covered(v) = cache.after("t", "e1", 2) else {
            panic!()
        };
        assert_eq!(
            v.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let Coverage::Covered(v) = cache.after("t", "e1", 5) else {
            panic!()
        };
        assert!(v.is_empty());
        assert!(matches!(cache.after("t", "other-epoch", 4), Coverage::Gap));
    }

    /// A client offset past the newest publication, u64::MAX included, is never "covered"
    /// (and `after_offset + 1` does not overflow).
    #[test]
    fn a_seen_offset_past_the_newest_is_a_gap() {
        let cache = HistoryCache::new(limits(3, 10));
        let (t, e): (Arc<str>, Arc<str>) = ("t".into(), "e".into());
        for o in 1..=5 {
            cache.push(&t, &e, publication(o));
        }
        assert!(matches!(cache.after_seen("t", "e", 5), Coverage::Covered(v) if v.is_empty()));
        assert!(matches!(cache.after_seen("t", "e", 6), Coverage::Gap));
        assert!(matches!(
            cache.after_seen("t", "e", u64::MAX),
            Coverage::Gap
        ));
        assert!(matches!(cache.after("t", "e", u64::MAX), Coverage::Covered(v) if v.is_empty()));
    }

    #[test]
    fn topic_bound_evicts_the_least_recently_written_topic() {
        let cache = HistoryCache::new(limits(3, 2));
        let e: Arc<str> = "e".into();
        cache.push(&Arc::from("a"), &e, publication(1));
        cache.push(&Arc::from("b"), &e, publication(1));
        cache.push(&Arc::from("a"), &e, publication(2));
        cache.push(&Arc::from("c"), &e, publication(1));
        assert_eq!(cache.lock().topics.len(), 2);
        assert!(matches!(cache.after("b", "e", 0), Coverage::Unknown));
        assert!(matches!(cache.after("a", "e", 0), Coverage::Covered(_)));
        assert!(matches!(cache.after("c", "e", 0), Coverage::Covered(_)));
    }

    /// Many large publications on many topics never take the window past its byte budgets, per
    /// topic or in all; what stays is each topic's newest, contiguous up to the newest offset.
    #[test]
    fn window_bytes_stay_under_budget_after_many_large_publications() {
        let payload = 64 * 1024;
        let entry = sized(1, payload).size_bytes();
        let cache = HistoryCache::new(WindowLimits {
            size: 1_000,
            topics_max: 10_000,
            topic_bytes_max: 4 * entry,
            bytes_max: 10 * entry,
        });
        let e: Arc<str> = "e".into();
        for round in 1..=50u64 {
            for t in 0..20 {
                cache.push(&Arc::from(format!("t{t}")), &e, sized(round, payload));
                let all = cache.lock();
                assert!(all.bytes <= 10 * entry, "{} > {}", all.bytes, 10 * entry);
                assert!(all.topics.values().all(|w| w.bytes <= 4 * entry));
                assert_eq!(
                    all.bytes,
                    all.topics.values().map(|w| w.bytes).sum::<usize>()
                );
            }
        }
        // Twenty topics in turn over a ten-entry budget: each left before its next write.
        assert!(matches!(cache.after("t0", "e", 49), Coverage::Unknown));
        assert!(matches!(cache.after("t19", "e", 49), Coverage::Covered(v) if v.len() == 1));
        let solo: Arc<str> = "solo".into();
        for offset in 1..=10 {
            cache.push(&solo, &e, sized(offset, payload));
        }
        assert!(cache.bytes() <= 10 * entry);
        let Coverage::Covered(v) = cache.after("solo", "e", 6) else {
            panic!("a topic keeps its newest publications")
        };
        assert_eq!(
            v.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        assert!(matches!(cache.after("solo", "e", 5), Coverage::Gap));
        // One publication larger than a topic's budget is not kept, and its topic's older
        // entries leave with it so that the window never skips it.
        cache.push(&solo, &e, sized(11, 5 * entry));
        assert!(matches!(cache.after("solo", "e", 10), Coverage::Unknown));
    }
}
