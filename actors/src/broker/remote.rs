//! What crosses nodes about a room besides publications: the presence entries of each node, their
//! deltas and snapshots, node departures and typing; and the [`RoomLink`] a room subscribes with.
//!
//! A presence entry keeps its `phx_ref` on every node, so a leave announced by one node removes
//! exactly the meta clients were shown (realtime-js matches metas by `phx_ref`).

use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Deliver;
use crate::SessionId;

/// One process of a node: random at start, so a node restarted under the same id is another
/// incarnation and the presences of the old one can be told apart (and removed). 0 is this node.
pub type NodeRef = u64;

/// This node, in presence owners.
pub const LOCAL_NODE: NodeRef = 0;

/// One session's presence under a key, as it crosses nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    #[serde(rename = "s")]
    pub session: SessionId,
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "r")]
    pub phx_ref: String,
    #[serde(rename = "m")]
    pub meta: Map<String, Value>,
}

/// A session's presence that left, as it crosses nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceLeave {
    #[serde(rename = "s")]
    pub session: SessionId,
    #[serde(rename = "k")]
    pub key: String,
}

/// What changed in one node's presence of a room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceDelta {
    pub joins: Vec<PresenceEntry>,
    pub leaves: Vec<PresenceLeave>,
}

impl PresenceDelta {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// An event about a room from (or about) another node.
#[derive(Debug)]
pub enum RemoteEvent {
    /// `node`'s presence in the room changed.
    Presence { node: NodeRef, delta: PresenceDelta },
    /// `node`'s whole presence in the room: replaces what the room held for it.
    Snapshot {
        node: NodeRef,
        entries: Vec<PresenceEntry>,
    },
    /// `node` is dead or shut down: its presences leave.
    NodeGone { node: NodeRef },
    /// A user is (not) typing in the room on another node (already throttled there).
    Typing { user: Arc<str>, typing: bool },
    /// NATS came back: what crossed meanwhile may be lost, so a durable room compares its
    /// position with the database's.
    Reconnected,
    /// Send this node's presence in the room to the other nodes (after NATS came back or a
    /// peer appeared). The room sends it itself, so it stays in order with its deltas.
    Announce,
}

/// A [`RemoteEvent`] for a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote(pub Arc<RemoteEvent>);

/// Asks a room for the presence of its local members (another node syncing).
#[derive(Message)]
#[rtype(result = "Vec<PresenceEntry>")]
pub struct LocalPresence;

/// How a broker reaches one room.
#[derive(Clone)]
pub struct RoomLink {
    pub deliver: Recipient<Deliver>,
    pub remote: Recipient<Remote>,
    pub local_presence: Recipient<LocalPresence>,
}

impl PartialEq for RoomLink {
    fn eq(&self, other: &Self) -> bool {
        self.deliver == other.deliver
    }
}
