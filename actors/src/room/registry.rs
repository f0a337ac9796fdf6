//! The room registry: room key → room actor.
//!
//! Rooms start on the first join and remove themselves when their last member leaves. Lookups
//! are lock-free reads of a sharded map (dashmap), so publishing from many sessions and HTTP
//! workers does not contend on one lock.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use locus_storage::{AnyStore, Storage};

use crate::broker::{Broker, RoomLink};
use crate::config::{RoomLimits, StorageLimits};
use crate::metrics as m;
use crate::publish::history::{CachedPublication, HistoryCache};
use crate::publish::recovery::cached;
use crate::room::Room;

/// How much fewer publications a durable room's start reads again when the page of recent
/// ones was cut short by `storage.history_window_topic_bytes_max`.
const PRELOAD_SHRINK: usize = 4;

/// Where a durable room in a cluster starts: the next offset, and the publications before it
/// (oldest first) for the history window.
pub(super) struct DurableStart {
    pub next_offset: u64,
    pub epoch: Arc<str>,
    pub recent: Vec<Arc<CachedPublication>>,
}

/// In a cluster, how durable rooms keep offset order: the store to read gaps from and which
/// topics are durable.
#[derive(Clone)]
pub struct Sequencing {
    pub store: AnyStore,
    pub storage: StorageLimits,
    pub gap_wait: Duration,
}

/// Room key (see [`crate::topic::Topic::room_key`]) → room actor. A running room is subscribed
/// to its topic at the broker; it unsubscribes as it stops.
#[derive(Clone)]
pub struct RoomRegistry {
    rooms: Arc<DashMap<Arc<str>, Addr<Room>>>,
    limits: RoomLimits,
    cache: Option<HistoryCache>,
    broker: Arc<dyn Broker>,
    sequencing: Option<Sequencing>,
}

impl RoomRegistry {
    pub fn new(limits: RoomLimits, cache: Option<HistoryCache>, broker: Arc<dyn Broker>) -> Self {
        RoomRegistry {
            rooms: Arc::new(DashMap::new()),
            limits,
            cache,
            broker,
            sequencing: None,
        }
    }

    /// Durable rooms sequence their publications by offset (a cluster).
    pub fn with_sequencing(mut self, sequencing: Sequencing) -> Self {
        self.sequencing = Some(sequencing);
        self
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub(super) fn sequencing(&self) -> Option<&Sequencing> {
        self.sequencing.as_ref()
    }

    /// For a durable topic's room in a cluster, read once the room's subscription is live (so
    /// every later publication reaches the room): the offset its next publication gets, and the
    /// publications just before it. Those fill the history window, so a joiner whose recovery
    /// read the database before the room started gets what was committed in between.
    fn durable_start(&self, key: &Arc<str>) -> Option<BoxFuture<'static, Option<DurableStart>>> {
        let seq = self.sequencing.as_ref()?;
        if !seq.storage.is_durable(key) {
            return None;
        }
        let (store, key) = (seq.store.clone(), key.clone());
        let (count, bytes) = (
            seq.storage.history_window_size,
            seq.storage.history_window_topic_bytes_max,
        );
        Some(Box::pin(async move {
            let read = async {
                let meta = store.topic_meta(&key).await?;
                let next = meta.next_offset;
                // The window must end at the newest publication: a page cut short by bytes
                // is read again with fewer publications.
                let mut want = count;
                let recent = loop {
                    let after = next.saturating_sub(want as u64 + 1);
                    let h = store.history(&key, after, want, bytes).await?;
                    let ends = h.publications.last().is_none_or(|p| p.offset + 1 == next);
                    if ends || want <= 1 {
                        break if ends { h } else { Default::default() };
                    }
                    want /= PRELOAD_SHRINK;
                };
                Ok::<_, locus_storage::StoreError>((next, recent))
            };
            match read.await {
                Ok((next_offset, h)) => Some(DurableStart {
                    next_offset,
                    epoch: Arc::from(h.epoch.unwrap_or_default()),
                    recent: h.publications.into_iter().map(cached).collect(),
                }),
                Err(e) => {
                    tracing::warn!(topic = %key, error = %e, "room: topic offsets unreadable; delivering unsequenced");
                    None
                }
            }
        }))
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

    /// Starts the room of `topic`. It answers no message (no join) until the broker has its
    /// subscription live and, in a cluster, the other nodes' presence and the topic's next
    /// offset are known.
    fn start(&self, topic: &str) -> Addr<Room> {
        m::rooms().increment(1.0);
        let key: Arc<str> = Arc::from(topic);
        let registry = self.clone();
        Room::create(move |ctx| {
            let subscribed = registry.broker.subscribe(key.clone(), link(&ctx.address()));
            let durable = registry.durable_start(&key);
            let ready = async move {
                let events = subscribed.await;
                let start = match durable {
                    Some(read) => read.await,
                    None => None,
                };
                (events, start)
            };
            ctx.wait(
                actix::fut::wrap_future::<_, Room>(ready)
                    .map(|(events, start), room, ctx| room.ready(events, start, ctx)),
            );
            Room::new(key, registry.clone(), registry.limits.clone())
        })
    }

    /// Removes `topic` if it still maps to `room` (a newer room for the topic is left alone).
    pub fn remove(&self, topic: &str, room: &Addr<Room>) {
        if self.rooms.remove_if(topic, |_, r| r == room).is_some() {
            self.broker.unsubscribe(topic, &link(room));
            if self.broker.is_clustered() {
                if let Some(cache) = &self.cache {
                    cache.forget(topic);
                }
            }
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

fn link(room: &Addr<Room>) -> RoomLink {
    RoomLink {
        deliver: room.clone().recipient(),
        remote: room.clone().recipient(),
        local_presence: room.clone().recipient(),
    }
}
