//! The broker boundary between publishers and the rooms that deliver.
//!
//! Every publication — a client `broadcast`, a REST broadcast — goes through a [`Broker`]. The
//! broker's job is to get it to the room of its topic on every node that has one; the room then
//! fans out to its local members. [`InProcessBroker`] is the single-node implementation; a
//! multi-node broker (NATS, Redis, Postgres) implements the same trait and the room logic does
//! not change.
//!
//! Guarantee: at most once, in publish order per topic per publisher. A publication that cannot
//! be accepted is refused with an error (never dropped silently).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use locus_protocol::PayloadEncoding;
use serde_json::value::RawValue;

use crate::metrics::{self as m, DropReason};
use crate::registry::RoomRegistry;
use crate::room::Deliver;
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
    /// The full topic, `realtime:<name>`.
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

/// Why a publication was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The room's mailbox is full: the room is overloaded.
    #[error("RoomBusy: the room is overloaded, retry later")]
    RoomBusy,
}

/// Delivers publications to the rooms of their topic.
pub trait Broker: Send + Sync + 'static {
    /// Hands `publication` to the rooms of its topic without waiting on any member.
    /// `Ok` means accepted: delivery to members is then at most once.
    fn publish(&self, publication: Publication) -> Result<(), PublishError>;

    /// Whether the broker can currently deliver (for `/api/health`).
    fn is_healthy(&self) -> bool;

    /// Short name for health output and logs.
    fn name(&self) -> &'static str;
}

/// Single-node broker: looks the room up in the local registry.
pub struct InProcessBroker {
    rooms: RoomRegistry,
}

impl InProcessBroker {
    pub fn new(rooms: RoomRegistry) -> Self {
        InProcessBroker { rooms }
    }
}

impl Broker for InProcessBroker {
    fn publish(&self, publication: Publication) -> Result<(), PublishError> {
        let Some(room) = self.rooms.get(&publication.topic) else {
            // No room means no member on this node: nothing to deliver.
            return Ok(());
        };
        match room.try_send(Deliver(Arc::new(publication))) {
            Ok(()) => Ok(()),
            Err(actix::prelude::SendError::Full(_)) => {
                m::dropped(DropReason::RoomMailboxFull);
                Err(PublishError::RoomBusy)
            }
            // The room stopped since the lookup: it had no members left.
            Err(actix::prelude::SendError::Closed(_)) => Ok(()),
        }
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "in_process"
    }
}
