//! Connection slots: how many connections a key (the server, a client IP, a user) holds, with a
//! cap per key. A [`Slot`] is taken when a connection is admitted and given back when it drops,
//! so no path that ends a session can forget to release it.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;

/// Open connections per key. Bounded: a key is present only while it holds a slot, so the map
/// never holds more keys than there are connections.
pub struct SlotCounter<K: Eq + Hash + Clone> {
    held: DashMap<K, usize>,
}

impl<K: Eq + Hash + Clone> Default for SlotCounter<K> {
    fn default() -> Self {
        SlotCounter {
            held: DashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> SlotCounter<K> {
    /// Takes a slot for `key`, or `None` when it already holds `max` (0 = no cap).
    pub fn take(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut n = self.held.entry(key.clone()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(Slot {
            counter: self.clone(),
            key,
        })
    }

    /// Slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.held.get(key).map_or(0, |n| *n)
    }

    fn give_back(&self, key: &K) {
        if let dashmap::Entry::Occupied(mut e) = self.held.entry(key.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// One held slot; released on drop.
pub struct Slot<K: Eq + Hash + Clone> {
    counter: Arc<SlotCounter<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.counter.give_back(&self.key);
    }
}

/// The slots one connection holds: the server's, its IP's, and its user's once it has one.
#[derive(Default)]
pub struct ConnectionSlots {
    pub server: Option<Slot<()>>,
    pub ip: Option<Slot<std::net::IpAddr>>,
    pub user: Option<Slot<Arc<str>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key holds at most `max` slots, and dropping a slot frees it (and the key's entry).
    #[test]
    fn slots_are_capped_per_key_and_released_on_drop() {
        let c: Arc<SlotCounter<&str>> = Arc::default();
        let a = c.take("ip", 2).unwrap();
        let b = c.take("ip", 2).unwrap();
        assert!(c.take("ip", 2).is_none());
        assert!(c.take("other", 2).is_some());
        drop(a);
        assert_eq!(c.held(&"ip"), 1);
        let _c = c.take("ip", 2).unwrap();
        drop(b);
        assert_eq!(c.held(&"ip"), 1);
        assert!(c.take("x", 0).is_some(), "0 means no cap");
        assert_eq!(c.held.len(), 1, "released keys leave the map");
    }
}
