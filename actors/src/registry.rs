//! The registries: topic → room actor, and session id → session actor.
//!
//! Rooms start on the first join and remove themselves when their last member leaves. Lookups
//! are lock-free reads of a sharded map (dashmap), so publishing from many sessions and HTTP
//! workers does not contend on one lock.

use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;

use crate::config::RoomLimits;
use crate::history::HistoryCache;
use crate::metrics as m;
use crate::room::Room;
use crate::user_session::{Shutdown, UserSession};
use crate::SessionId;

/// The prefix of a private channel's room key. No channel topic starts with it (they start with
/// `realtime:`), so a private room can never be confused with a public one.
pub const PRIVATE_ROOM_PREFIX: &str = "private:";

/// The room (and stored history) a channel of `topic` joined with `private` belongs to. Private
/// and public joins of one topic are kept apart, as Supabase keeps them, so an anonymous public
/// member never receives what private members broadcast. Personal topics are the exception:
/// only their user may join them either way, so one room serves both (and the server's events
/// to the user reach them however they joined).
pub fn room_key(topic: &str, private: bool) -> Arc<str> {
    if private && !topic.starts_with(crate::auth::USER_TOPIC_PREFIX) {
        Arc::from(format!("{PRIVATE_ROOM_PREFIX}{topic}"))
    } else {
        Arc::from(topic)
    }
}

/// The channel topic clients see for a room key.
pub fn wire_topic(key: &str) -> &str {
    key.strip_prefix(PRIVATE_ROOM_PREFIX).unwrap_or(key)
}

/// Room key (see [`room_key`]) → room actor.
#[derive(Clone)]
pub struct RoomRegistry {
    rooms: Arc<DashMap<Arc<str>, Addr<Room>>>,
    limits: RoomLimits,
    cache: Option<HistoryCache>,
}

impl RoomRegistry {
    pub fn new(limits: RoomLimits, cache: Option<HistoryCache>) -> Self {
        RoomRegistry {
            rooms: Arc::new(DashMap::new()),
            limits,
            cache,
        }
    }

    /// The durable history window, when storage is on.
    pub fn cache(&self) -> Option<&HistoryCache> {
        self.cache.as_ref()
    }

    /// The room of `topic`, if it runs.
    pub fn get(&self, topic: &str) -> Option<Addr<Room>> {
        self.rooms.get(topic).map(|r| r.clone())
    }

    /// The room of `topic`, started on the current arbiter if it does not run (or has stopped).
    pub fn get_or_start(&self, topic: &str) -> Addr<Room> {
        if let Some(room) = self.rooms.get(topic) {
            if room.connected() {
                return room.clone();
            }
        }
        let mut entry = self
            .rooms
            .entry(Arc::from(topic))
            .or_insert_with(|| self.start(topic));
        if !entry.connected() {
            *entry = self.start(topic);
        }
        entry.clone()
    }

    fn start(&self, topic: &str) -> Addr<Room> {
        m::rooms().increment(1.0);
        Room::new(Arc::from(topic), self.clone(), self.limits.clone()).start()
    }

    /// Removes `topic` if it still maps to `room` (a newer room for the topic is left alone).
    pub fn remove(&self, topic: &str, room: &Addr<Room>) {
        self.rooms.remove_if(topic, |_, r| r == room);
    }

    /// Number of running rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

/// Session id → session actor, for shutdown and connection counts.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    sessions: Arc<DashMap<SessionId, Addr<UserSession>>>,
}

impl SessionRegistry {
    pub fn insert(&self, id: SessionId, addr: Addr<UserSession>) {
        self.sessions.insert(id, addr);
    }

    pub fn remove(&self, id: SessionId) {
        self.sessions.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Asks every session to close with `ServerShutdown`.
    pub fn shutdown_all(&self) {
        for s in self.sessions.iter() {
            // Bounded: one lifecycle message per session, sent once at shutdown.
            s.value().do_send(Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F21: a private join gets its own room key, except on personal topics.
    #[test]
    fn private_and_public_joins_get_different_rooms_except_personal_topics() {
        assert_eq!(&*room_key("realtime:a", false), "realtime:a");
        assert_eq!(&*room_key("realtime:a", true), "private:realtime:a");
        assert_eq!(wire_topic("private:realtime:a"), "realtime:a");
        assert_eq!(wire_topic("realtime:a"), "realtime:a");
        assert_eq!(&*room_key("realtime:user:u1", true), "realtime:user:u1");
    }
}
