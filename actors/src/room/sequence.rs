//! The offset order of a durable topic's room in a cluster. Publications of one topic are
//! committed on several nodes and reach this node over different paths, so offset 7 may arrive
//! before 6; and one may be lost while NATS is away. The room delivers in offset order: it holds
//! what comes early, and a gap that stays open for `cluster.gap_wait_ms` is read from the
//! database (the store is the truth; NATS is only the fast path).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::Publication;

/// Publications held while a gap is open, at most; past it the oldest gap is given up (the
/// fill still reads it from the database).
pub const HELD_MAX: usize = 4_096;

/// One topic's next offset and the publications that came early.
#[derive(Debug)]
pub struct Sequence {
    next: u64,
    held: BTreeMap<u64, Arc<Publication>>,
    /// The database's next offset when last asked: everything below it exists.
    stored_next: u64,
}

impl Sequence {
    /// Starts at `next`: the offset the topic's next publication gets (read at subscription).
    pub fn new(next: u64) -> Self {
        Sequence {
            next,
            held: BTreeMap::new(),
            stored_next: next,
        }
    }

    /// Takes a publication; answers those now deliverable, in offset order. One already
    /// delivered (a duplicate, or older than the subscription) is dropped.
    pub fn offer(&mut self, p: Arc<Publication>) -> Vec<Arc<Publication>> {
        let Some(offset) = p.durable.as_ref().map(|d| d.offset) else {
            return vec![p];
        };
        if offset < self.next {
            return Vec::new();
        }
        self.held.insert(offset, p);
        if self.held.len() > HELD_MAX {
            // Too far behind: skip to the oldest held publication.
            let first = *self.held.keys().next().expect("not empty");
            self.next = first;
        }
        self.drain()
    }

    /// The database's next offset is `stored_next` (asked after NATS came back): what lies
    /// below it and was never received is a gap too, even with nothing after it.
    pub fn stored_up_to(&mut self, stored_next: u64) {
        self.stored_next = self.stored_next.max(stored_next);
    }

    /// The open gap `[from, to)`: offsets missing before the first held publication, or below
    /// the database's next offset.
    pub fn gap(&self) -> Option<(u64, u64)> {
        let to = match self.held.keys().next() {
            Some(&first) => first,
            None => self.stored_next,
        };
        (to > self.next).then_some((self.next, to))
    }

    /// Publications read from the database for the gap (any order); answers what is now
    /// deliverable.
    pub fn fill(&mut self, found: Vec<Arc<Publication>>) -> Vec<Arc<Publication>> {
        for p in found {
            if let Some(offset) = p.durable.as_ref().map(|d| d.offset) {
                if offset >= self.next {
                    self.held.entry(offset).or_insert(p);
                }
            }
        }
        self.drain()
    }

    /// Gives the open gap up (the database could not be read): delivery goes on from the first
    /// held publication.
    pub fn skip_gap(&mut self) -> Vec<Arc<Publication>> {
        if let Some((_, to)) = self.gap() {
            self.next = to;
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<Arc<Publication>> {
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            out.push(entry.remove());
            self.next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Body, Durable};
    use std::time::Instant;

    fn p(offset: u64) -> Arc<Publication> {
        Arc::new(Publication {
            topic: Arc::from("realtime:room:a"),
            event: "e".into(),
            body: Body::Json(Arc::from(crate::wire::raw("1".into()))),
            sender: None,
            accepted_at: Instant::now(),
            durable: Some(Durable {
                offset,
                epoch: Arc::from("ep"),
                client_id: None,
                replayed: false,
                created_at_ms: 0,
            }),
        })
    }

    fn offsets(v: Vec<Arc<Publication>>) -> Vec<u64> {
        v.iter()
            .map(|p| p.durable.as_ref().unwrap().offset)
            .collect()
    }

    /// Publications arriving out of order come out in offset order, duplicates and ones older
    /// than the start never come out, and a gap is reported until it is filled.
    #[test]
    fn early_publications_wait_for_the_gap_and_duplicates_are_dropped() {
        let mut s = Sequence::new(5);
        assert!(s.offer(p(4)).is_empty(), "older than the subscription");
        assert_eq!(offsets(s.offer(p(5))), vec![5]);
        assert!(s.offer(p(7)).is_empty());
        assert!(s.offer(p(8)).is_empty());
        assert_eq!(s.gap(), Some((6, 7)));
        assert_eq!(offsets(s.offer(p(6))), vec![6, 7, 8]);
        assert!(s.offer(p(7)).is_empty(), "a duplicate");
        assert_eq!(s.gap(), None);
    }

    /// A gap is closed by what the database holds, or given up when it cannot be read.
    #[test]
    fn gaps_are_filled_from_the_database_or_skipped() {
        let mut s = Sequence::new(1);
        s.offer(p(4));
        assert_eq!(offsets(s.fill(vec![p(3), p(1), p(2)])), vec![1, 2, 3, 4]);
        s.offer(p(9));
        assert_eq!(offsets(s.skip_gap()), vec![9]);
        assert_eq!(offsets(s.offer(p(10))), vec![10]);
    }

    /// Publications the database holds but that never arrived (lost while NATS was away, with
    /// nothing after them) are a gap once the database's position is known.
    #[test]
    fn a_lost_tail_is_a_gap_once_the_stored_position_is_known() {
        let mut s = Sequence::new(3);
        assert_eq!(s.gap(), None);
        s.stored_up_to(6);
        assert_eq!(s.gap(), Some((3, 6)));
        assert_eq!(offsets(s.fill(vec![p(3), p(4), p(5)])), vec![3, 4, 5]);
        assert_eq!(s.gap(), None);
    }
}
