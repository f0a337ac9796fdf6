//! A bounded set of single-use keys, each remembered until its deadline: the sign-in nonces
//! issued, and the Telegram `initData` already used.
//!
//! Full of live keys, the set refuses a new one rather than forget a live one: forgetting an
//! issued nonce breaks someone's sign-in half-way, and forgetting a used `initData` lets it be
//! replayed. Expired keys leave in deadline order from a heap, a little on each insert, so no
//! call scans or sorts the whole set; every call is O(log n) amortised.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

/// Why a key was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key is live already.
    Present,
    /// `len_max` live keys: wait for some to expire or be taken.
    Full,
}

/// Keys with deadlines, on a clock the caller picks (the same for every call on one set).
pub struct SingleUse<K> {
    inner: Mutex<Inner<K>>,
    len_max: usize,
}

struct Inner<K> {
    /// Live keys and their deadlines.
    live: HashMap<K, u64>,
    /// Every key added and not yet expired, earliest deadline on top; a taken key stays here
    /// until its deadline or the next compaction.
    by_deadline: BinaryHeap<Reverse<(u64, K)>>,
}

impl<K: Hash + Eq + Ord + Clone> SingleUse<K> {
    /// A set of at most `len_max` live keys.
    pub fn new(len_max: usize) -> SingleUse<K> {
        SingleUse {
            inner: Mutex::new(Inner {
                live: HashMap::new(),
                by_deadline: BinaryHeap::new(),
            }),
            len_max,
        }
    }

    /// Remembers `key` until `deadline` (exclusive), after dropping the keys expired at `now`.
    pub fn insert(&self, key: K, deadline: u64, now: u64) -> Result<(), Refused> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.expire(now);
        if inner.live.contains_key(&key) {
            return Err(Refused::Present);
        }
        if inner.live.len() >= self.len_max {
            return Err(Refused::Full);
        }
        inner.live.insert(key.clone(), deadline);
        inner.by_deadline.push(Reverse((deadline, key)));
        inner.compact(self.len_max);
        Ok(())
    }

    /// Forgets `key`: true if it was live at `now`.
    pub fn take<Q>(&self, key: &Q, now: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .live
            .remove(key)
            .is_some_and(|deadline| deadline > now)
    }

    /// Live keys (some may have expired since the last insert).
    pub fn live_count(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.live.len()
    }
}

impl<K: Hash + Eq + Ord + Clone> Inner<K> {
    /// Drops the keys whose deadline is `now` or earlier.
    fn expire(&mut self, now: u64) {
        while self
            .by_deadline
            .peek()
            .is_some_and(|Reverse((deadline, _))| *deadline <= now)
        {
            let Some(Reverse((deadline, key))) = self.by_deadline.pop() else {
                break;
            };
            // A key taken and added again has a later deadline: that one stays.
            if self.live.get(&key) == Some(&deadline) {
                self.live.remove(&key);
            }
        }
    }

    /// Rebuilds the heap from the live keys once taken keys make it twice the bound. After a
    /// rebuild it holds at most `len_max`, so at least `len_max` inserts pass before the next:
    /// O(1) amortised, and the heap never outgrows `2 * len_max + 1`.
    fn compact(&mut self, len_max: usize) {
        if self.by_deadline.len() > 2 * len_max {
            self.by_deadline = self
                .live
                .iter()
                .map(|(key, deadline)| Reverse((*deadline, key.clone())))
                .collect();
        }
        debug_assert!(self.live.len() <= self.by_deadline.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_single_use_until_their_deadline() {
        let s = SingleUse::new(10);
        assert_eq!(s.insert("a".to_owned(), 100, 0), Ok(()));
        assert_eq!(s.insert("a".to_owned(), 100, 0), Err(Refused::Present));
        assert!(s.take("a", 50));
        assert!(!s.take("a", 50), "single use");
        assert_eq!(s.insert("b".to_owned(), 100, 0), Ok(()));
        assert!(!s.take("b", 100), "expired at its deadline");
        assert!(!s.take("never", 0));
    }

    /// F25: full of live keys, the set refuses new ones and keeps the live ones; once some
    /// expire (or are taken), new ones fit again.
    #[test]
    fn a_full_set_refuses_new_keys_and_keeps_the_live_ones() {
        let s = SingleUse::new(3);
        for (i, deadline) in [(0, 10), (1, 20), (2, 30)] {
            assert_eq!(s.insert(i, deadline, 0), Ok(()));
        }
        assert_eq!(s.insert(3, 40, 5), Err(Refused::Full));
        assert_eq!(s.live_count(), 3);
        // At 10 key 0 has expired: its place goes to the new key, the others stay.
        assert_eq!(s.insert(3, 40, 10), Ok(()));
        assert!(s.take(&1, 10) && s.take(&2, 10) && s.take(&3, 10));
        assert!(!s.take(&0, 10));
    }

    /// Keys taken before their deadline leave heap entries behind; compaction keeps the heap
    /// within twice the bound however many keys come and go.
    #[test]
    fn taken_keys_do_not_grow_the_heap() {
        let s = SingleUse::new(4);
        for i in 0..10_000u64 {
            assert_eq!(s.insert(i, u64::MAX, 0), Ok(()));
            assert!(s.take(&i, 0));
        }
        let inner = s.inner.lock().unwrap();
        assert!(inner.by_deadline.len() <= 2 * 4 + 1);
        assert!(inner.live.is_empty());
    }

    /// A key taken and added again keeps its new deadline when the old one passes.
    #[test]
    fn a_key_added_again_keeps_its_new_deadline() {
        let s = SingleUse::new(4);
        assert_eq!(s.insert(1, 10, 0), Ok(()));
        assert!(s.take(&1, 0));
        assert_eq!(s.insert(1, 50, 0), Ok(()));
        assert_eq!(s.insert(2, 60, 20), Ok(()));
        assert!(s.take(&1, 20));
    }
}
