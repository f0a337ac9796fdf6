//! The room registry: room key → room actor.
//!
//! Rooms start on the first join and remove themselves when their last member leaves. Lookups
//! are lock-free reads of a sharded map (dashmap), so publishing from many sessions and HTTP
//! workers does not contend on one lock.

use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;

use crate::broker::Broker;
use crate::config::RoomLimits;
use crate::metrics as m;
use crate::publish::history::HistoryCache;
use crate::room::Room;

/// Room key (see [`crate::topic::Topic::room_key`]) → room actor. A running room is subscribed
/// to its topic at the broker; it unsubscribes as it stops.
#[derive(Clone)]
pub struct RoomRegistry {
    rooms: Arc<DashMap<Arc<str>, Addr<Room>>>,
    limits: RoomLimits,
    cache: Option<HistoryCache>,
    broker: Arc<dyn Broker>,
}

impl RoomRegistry {
    pub fn new(limits: RoomLimits, cache: Option<HistoryCache>, broker: Arc<dyn Broker>) -> Self {
        RoomRegistry {
            rooms: Arc::new(DashMap::new()),
            limits,
            cache,
            broker,
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
        let key: Arc<str> = Arc::from(topic);
        let room = Room::new(key.clone(), self.clone(), self.limits.clone()).start();
        self.broker.subscribe(key, room.clone().recipient());
        room
    }

    /// Removes `topic` if it still maps to `room` (a newer room for the topic is left alone).
    pub fn remove(&self, topic: &str, room: &Addr<Room>) {
        if self.rooms.remove_if(topic, |_, r| r == room).is_some() {
            self.broker.unsubscribe(topic, &room.clone().recipient());
        }
    }

    /// Number of running rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}
