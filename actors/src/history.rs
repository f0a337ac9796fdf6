//! The in-memory window of recent durable publications per topic, so that a reconnect storm's
//! recoveries are served from memory instead of the database.
//!
//! Filled by the storage writer after each commit, in offset order. Bounded: at most
//! `history_window_size` publications per topic and `history_window_topics_max` topics (a new
//! topic past the bound evicts another; its history stays in the database).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::broker::Body;

/// A committed durable publication, as kept in memory and replayed.
#[derive(Debug)]
pub struct CachedPublication {
    pub offset: u64,
    pub event: String,
    pub body: Body,
    pub client_id: Option<Arc<str>>,
    pub created_at_ms: i64,
}

struct Window {
    epoch: Arc<str>,
    entries: VecDeque<Arc<CachedPublication>>,
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
    topics: Arc<DashMap<Arc<str>, Mutex<Window>>>,
    size: usize,
    topics_max: usize,
}

impl HistoryCache {
    pub fn new(size: usize, topics_max: usize) -> Self {
        HistoryCache {
            topics: Arc::new(DashMap::new()),
            size: size.max(1),
            topics_max: topics_max.max(1),
        }
    }

    /// Appends a committed publication (offsets must rise per topic).
    pub fn push(&self, topic: &Arc<str>, epoch: &Arc<str>, publication: Arc<CachedPublication>) {
        if !self.topics.contains_key(topic) && self.topics.len() >= self.topics_max {
            let victim = self.topics.iter().next().map(|e| e.key().clone());
            if let Some(v) = victim {
                self.topics.remove(&v);
            }
        }
        let entry = self.topics.entry(topic.clone()).or_insert_with(|| {
            Mutex::new(Window {
                epoch: epoch.clone(),
                entries: VecDeque::new(),
            })
        });
        let mut w = entry.lock().expect("history window lock is never poisoned");
        if w.epoch != *epoch {
            w.epoch = epoch.clone();
            w.entries.clear();
        }
        debug_assert!(w
            .entries
            .back()
            .is_none_or(|last| last.offset < publication.offset));
        if w.entries.len() >= self.size {
            w.entries.pop_front();
        }
        w.entries.push_back(publication);
    }

    /// Publications of `topic` after `after_offset` in `epoch`, if the window covers them.
    pub fn after(&self, topic: &str, epoch: &str, after_offset: u64) -> Coverage {
        let Some(entry) = self.topics.get(topic) else {
            return Coverage::Unknown;
        };
        let w = entry.lock().expect("history window lock is never poisoned");
        if &*w.epoch != epoch {
            return Coverage::Gap;
        }
        match w.entries.front() {
            Some(first) if first.offset > after_offset + 1 => Coverage::Gap,
            _ => Coverage::Covered(
                w.entries
                    .iter()
                    .filter(|p| p.offset > after_offset)
                    .cloned()
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64) -> Arc<CachedPublication> {
        Arc::new(CachedPublication {
            offset,
            event: "e".into(),
            body: Body::Json(Arc::from(crate::wire::raw("{}".into()))),
            client_id: None,
            created_at_ms: 0,
        })
    }

    #[test]
    fn window_serves_what_it_covers_and_reports_gaps() {
        let cache = HistoryCache::new(3, 10);
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

    #[test]
    fn topic_bound_evicts_another_topic() {
        let cache = HistoryCache::new(3, 2);
        let e: Arc<str> = "e".into();
        for name in ["a", "b", "c"] {
            cache.push(&Arc::from(name), &e, publication(1));
        }
        assert_eq!(cache.topics.len(), 2);
        assert!(matches!(cache.after("c", "e", 0), Coverage::Covered(_)));
    }
}
