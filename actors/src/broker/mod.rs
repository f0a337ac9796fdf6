//! The broker boundary between publishers and the rooms that deliver.
//!
//! Every publication reaches rooms through a [`Broker`], and only from the engine's publish
//! path (`Engine::publish`, and the storage writers' after-commit delivery it sets up). The
//! broker's job is to get it to the room of its topic on every node that has one; the room then
//! fans out to its local members. [`InProcessBroker`] is the single-node implementation; a
//! multi-node broker (NATS) implements the same trait and the room logic does not change.
//!
//! Guarantee: at most once, in publish order per topic per publisher. A publication that cannot
//! be accepted is refused with an error (never dropped silently).
//!
//! [`remote`] holds what else crosses nodes about a room: presence entries, deltas, snapshots and
//! node departures, and the [`RoomLink`] a room subscribes with.

pub mod remote;

pub use remote::{
    LocalPresence, NodeRef, PresenceDelta, PresenceEntry, PresenceLeave, Remote, RemoteEvent,
    RoomLink, LOCAL_NODE,
};

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;

use actix::prelude::*;
use bytes::Bytes;
use dashmap::DashMap;
use locus_protocol::PayloadEncoding;
use serde_json::value::RawValue;

use crate::metrics::{self as m, DropReason};
use crate::SessionId;

/// The body of a user broadcast.
#[derive(Debug, Clone)]
pub enum Body {
    /// A JSON payload, already serialized.
    Json(Arc<RawValue>),
    /// A payload from a binary frame (vsn 2.0.0), JSON-encoded or opaque bytes.
    Binary {
        encoding: PayloadEncoding,
        data: Bytes,
    },
    /// A server event: sent as the publication's `event` itself (e.g. `geo_message`) with this
    /// payload, not wrapped as a user broadcast.
    Event(Arc<RawValue>),
}

/// One user broadcast on one topic.
#[derive(Debug)]
pub struct Publication {
    /// The room key: the topic, `private:`-prefixed for a private channel's room
    /// ([`crate::topic::Topic::room_key`]).
    pub topic: Arc<str>,
    /// The user event name.
    pub event: String,
    pub body: Body,
    /// The publishing session, so rooms can honour `broadcast.self = false`; `None` from REST.
    pub sender: Option<SessionId>,
    /// When the engine accepted it; fan-out latency is measured from here.
    pub accepted_at: Instant,
    /// Set for publications of durable topics, once stored.
    pub durable: Option<Durable>,
}

/// Where a durable publication sits in its topic's history.
#[derive(Debug, Clone)]
pub struct Durable {
    pub offset: u64,
    pub epoch: Arc<str>,
    /// The client's id, echoed in `meta.id`.
    pub client_id: Option<Arc<str>>,
    /// Sent again on a join's `broadcast.replay` (`meta.replayed`).
    pub replayed: bool,
    /// When it was committed (a replay's `since` compares with it).
    pub created_at_ms: i64,
}

impl Durable {
    /// The `meta` object delivered with the broadcast: `{"offset","epoch","id"?,"replayed"?}`.
    pub fn meta_json(&self) -> String {
        let mut meta = serde_json::json!({ "offset": self.offset, "epoch": &*self.epoch });
        if let Some(id) = &self.client_id {
            meta["id"] = serde_json::Value::from(&**id);
        }
        if self.replayed {
            meta["replayed"] = serde_json::Value::Bool(true);
        }
        meta.to_string()
    }
}

/// A publication to fan out to a room's local members.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub publication: Arc<Publication>,
}

/// Why the broker refused a publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The room's mailbox is full: the room is overloaded.
    #[error("the room is overloaded, retry later")]
    RoomBusy,
}

/// Delivers publications to the rooms of their topic, on every node that has one.
///
/// Interest: a node's room registry subscribes a topic while the node has local members of it
/// (its room runs) and unsubscribes when the last one leaves, so a multi-node broker forwards a
/// topic only to the nodes that have members. Durable publications arrive already stored,
/// carrying their `{offset, epoch}` ([`Publication::durable`]), so every node delivers them in
/// offset order and members can recover gaps on any node.
pub trait Broker: Send + Sync + 'static {
    /// Hands `publication` to the rooms of its topic without waiting on any member.
    /// `Ok` means accepted: delivery to members is then at most once.
    fn publish(&self, publication: Publication) -> Result<(), BrokerError>;

    /// This node has local members of `topic` now: deliver its publications to `room`. The
    /// future resolves once publications made anywhere in the cluster reach the room (or at
    /// once when the cluster is unreachable), with the other nodes' presence in the room; the
    /// room answers no join before.
    fn subscribe(&self, topic: Arc<str>, room: RoomLink) -> BoxFuture<'static, Vec<RemoteEvent>>;

    /// The last local member of `topic` left `room`: stop delivering to it (a newer room of the
    /// same topic keeps its subscription).
    fn unsubscribe(&self, topic: &str, room: &RoomLink);

    /// A room's local presence changed: tell the rooms of `topic` on the other nodes.
    fn publish_presence(&self, _topic: &Arc<str>, _delta: PresenceDelta) {}

    /// A room's whole local presence, which the other nodes put in place of what they held for
    /// this node.
    fn publish_snapshot(&self, _topic: &Arc<str>, _entries: Vec<PresenceEntry>) {}

    /// A user of this node is (not) typing in `topic`: tell the rooms on the other nodes.
    fn publish_typing(&self, _topic: &Arc<str>, _user: &str, _typing: bool) {}

    /// Whether presence and durable order must be kept across nodes (a room then sequences
    /// durable publications and shares its presence).
    fn is_clustered(&self) -> bool {
        false
    }

    /// Whether the broker can currently deliver (for `/api/health`).
    fn is_healthy(&self) -> bool;

    /// Short name for health output and logs.
    fn name(&self) -> &'static str;
}

/// Single-node broker: its subscriptions are the node's own rooms. A cluster broker delivers
/// to this node's rooms through one too.
#[derive(Default)]
pub struct InProcessBroker {
    /// Topic (room key) → the room delivering it; one entry per running room, so bounded by
    /// the rooms the node's sessions hold (`session.channels_per_connection_max` each).
    rooms: DashMap<Arc<str>, RoomLink>,
}

impl InProcessBroker {
    /// The room of `topic` on this node, if one runs.
    pub fn room(&self, topic: &str) -> Option<RoomLink> {
        self.rooms.get(topic).map(|r| r.clone())
    }

    /// Every room running on this node, with its topic.
    pub fn rooms(&self) -> Vec<(Arc<str>, RoomLink)> {
        (self.rooms.iter())
            .map(|r| (r.key().clone(), r.value().clone()))
            .collect()
    }

    /// Hands `publication` to this node's room of its topic, if any.
    pub fn deliver(&self, publication: Arc<Publication>) -> Result<(), BrokerError> {
        let Some(room) = self.room(&publication.topic) else {
            // No room means no member on this node: nothing to deliver.
            return Ok(());
        };
        match room.deliver.try_send(Deliver { publication }) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => {
                m::dropped(DropReason::RoomMailboxFull);
                Err(BrokerError::RoomBusy)
            }
            // The room stopped since the lookup: it had no members left.
            Err(SendError::Closed(_)) => Ok(()),
        }
    }

    /// Makes `room` the room of `topic` on this node.
    pub fn insert(&self, topic: Arc<str>, room: RoomLink) {
        self.rooms.insert(topic, room);
    }

    /// Removes `room` as the room of `topic`; false when another room holds the topic.
    pub fn remove(&self, topic: &str, room: &RoomLink) -> bool {
        self.rooms.remove_if(topic, |_, r| r == room).is_some()
    }
}

impl Broker for InProcessBroker {
    fn publish(&self, publication: Publication) -> Result<(), BrokerError> {
        self.deliver(Arc::new(publication))
    }

    fn subscribe(&self, topic: Arc<str>, room: RoomLink) -> BoxFuture<'static, Vec<RemoteEvent>> {
        self.insert(topic, room);
        Box::pin(futures_util::future::ready(Vec::new()))
    }

    fn unsubscribe(&self, topic: &str, room: &RoomLink) {
        self.remove(topic, room);
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "in_process"
    }
}
