//! Who is in the cluster: the peers this node has heard from, their heartbeats, and which of them
//! are dead. Pure state; the cluster's heartbeat task feeds it and acts on its answers.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::broker::NodeRef;

/// What a node announces every `cluster.heartbeat_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub connections: usize,
    /// The widest `realtime:nearby` radius its members hold, in metres: how far beacons from
    /// other nodes must travel to reach them.
    pub reach_m: f64,
}

/// A node shutting down on purpose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bye {
    pub id: String,
}

/// A change in the set of live peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A peer heard for the first time (or again after it was given up).
    Up(NodeRef),
    /// A peer is gone: dead, shut down, or replaced by a new incarnation of its id.
    Gone(NodeRef),
}

/// One live peer as health shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub id: String,
    pub connections: usize,
    pub last_seen_ms: u64,
}

struct Peer {
    id: String,
    connections: usize,
    reach_m: f64,
    last_seen: Instant,
}

/// The live peers, by incarnation; at most `nodes_max`.
pub struct NodeRegistry {
    peers: HashMap<NodeRef, Peer>,
    /// Incarnations that said goodbye (the last `nodes_max`): a heartbeat of theirs still on
    /// its way must not bring them back.
    departed: VecDeque<NodeRef>,
    nodes_max: usize,
}

impl NodeRegistry {
    pub fn new(nodes_max: usize) -> Self {
        NodeRegistry {
            peers: HashMap::new(),
            departed: VecDeque::new(),
            nodes_max,
        }
    }

    /// A heartbeat from `node`: refreshes it; a new incarnation of a known id replaces the old
    /// one (whose presences must leave). `None` when the registry is full.
    pub fn heard(&mut self, node: NodeRef, hb: Heartbeat, now: Instant) -> Option<Vec<Change>> {
        if let Some(p) = self.peers.get_mut(&node) {
            p.connections = hb.connections;
            p.reach_m = hb.reach_m;
            p.last_seen = now;
            return Some(Vec::new());
        }
        if self.departed.contains(&node) {
            return Some(Vec::new());
        }
        let mut changes: Vec<Change> = (self.peers.iter())
            .filter(|(_, p)| p.id == hb.id)
            .map(|(n, _)| Change::Gone(*n))
            .collect();
        for c in &changes {
            if let Change::Gone(n) = c {
                self.peers.remove(n);
            }
        }
        if self.peers.len() >= self.nodes_max {
            return None;
        }
        self.peers.insert(
            node,
            Peer {
                id: hb.id,
                connections: hb.connections,
                reach_m: hb.reach_m,
                last_seen: now,
            },
        );
        changes.push(Change::Up(node));
        Some(changes)
    }

    /// `node` said goodbye.
    pub fn bye(&mut self, node: NodeRef) -> Option<Change> {
        if self.departed.len() >= self.nodes_max {
            self.departed.pop_front();
        }
        self.departed.push_back(node);
        self.peers.remove(&node).map(|_| Change::Gone(node))
    }

    /// The peers not heard from for `down`: removed and returned.
    pub fn sweep(&mut self, now: Instant, down: Duration) -> Vec<NodeRef> {
        let dead: Vec<NodeRef> = (self.peers.iter())
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) >= down)
            .map(|(n, _)| *n)
            .collect();
        for n in &dead {
            self.peers.remove(n);
        }
        dead
    }

    /// Every peer (not this node).
    pub fn peers(&self) -> Vec<NodeRef> {
        self.peers.keys().copied().collect()
    }

    /// The widest reach of any peer, in metres.
    pub fn reach_m(&self) -> f64 {
        self.peers.values().map(|p| p.reach_m).fold(0.0, f64::max)
    }

    pub fn view(&self, now: Instant) -> Vec<NodeView> {
        let mut out: Vec<NodeView> = (self.peers.values())
            .map(|p| NodeView {
                id: p.id.clone(),
                connections: p.connections,
                last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            connections: 1,
            reach_m: 10.0,
        }
    }

    /// A node restarted under the same id replaces its old incarnation (which is gone), a
    /// silent node is swept after the down period, and a bye removes a node at once.
    #[test]
    fn incarnations_silence_and_goodbyes_end_a_peer() {
        let t0 = Instant::now();
        let mut r = NodeRegistry::new(8);
        assert_eq!(r.heard(1, hb("a"), t0), Some(vec![Change::Up(1)]));
        assert_eq!(r.heard(1, hb("a"), t0), Some(vec![]));
        assert_eq!(
            r.heard(2, hb("a"), t0),
            Some(vec![Change::Gone(1), Change::Up(2)])
        );
        r.heard(3, hb("b"), t0);
        let later = t0 + Duration::from_millis(600);
        r.heard(3, hb("b"), later);
        assert_eq!(r.sweep(later, Duration::from_millis(500)), vec![2]);
        assert_eq!(r.bye(3), Some(Change::Gone(3)));
        assert!(r.peers().is_empty());
        assert_eq!(
            r.heard(3, hb("b"), later),
            Some(vec![]),
            "a late heartbeat after a bye"
        );
        assert!(r.peers().is_empty());
    }

    /// Heartbeats past `nodes_max` peers are ignored rather than grow the registry.
    #[test]
    fn the_registry_is_bounded() {
        let mut r = NodeRegistry::new(1);
        let now = Instant::now();
        assert!(r.heard(1, hb("a"), now).is_some());
        assert!(r.heard(2, hb("b"), now).is_none());
        assert_eq!(r.peers(), vec![1]);
    }
}
