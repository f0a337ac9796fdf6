//! The engine handle: the registries, the broker and the limits every session shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::broker::{Broker, InProcessBroker};
use crate::config::{RoomLimits, SessionLimits};
use crate::registry::{RoomRegistry, SessionRegistry};
use crate::SessionId;

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct Engine {
    pub rooms: RoomRegistry,
    pub sessions: SessionRegistry,
    pub broker: Arc<dyn Broker>,
    pub session_limits: Arc<SessionLimits>,
    next_session: Arc<AtomicU64>,
}

impl Engine {
    /// An engine on the in-process broker.
    pub fn new(session_limits: SessionLimits, room_limits: RoomLimits) -> Self {
        let rooms = RoomRegistry::new(room_limits);
        let broker = Arc::new(InProcessBroker::new(rooms.clone()));
        Engine {
            rooms,
            sessions: SessionRegistry::default(),
            broker,
            session_limits: Arc::new(session_limits),
            next_session: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A new session id, unique for this engine's lifetime.
    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
