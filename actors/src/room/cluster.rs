//! What a room does for the cluster: the other nodes' presence (taken at start, then their
//! deltas, snapshots and departures), this node's presence for them, and a durable topic's
//! offset order across nodes, with gaps read from the database.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::registry::DurableStart;
use super::sequence::{self, Sequence};
use super::Room;
use crate::broker::{LocalPresence, Publication, Remote, RemoteEvent};
use crate::metrics as m;

/// How often a durable room asks the database for its position again after NATS came back,
/// while the database does not answer, in milliseconds…
const POSITION_RETRY_MS: u64 = 1_000;
/// …and how many times at most.
const POSITION_CHECKS_MAX: u32 = 30;

/// Most bytes one read of an offset gap from the database may return (the rest is read next).
const GAP_READ_BYTES_MAX: usize = 4 * 1024 * 1024;

impl Room {
    /// The broker has the room's subscription: take the other nodes' presence and, for a
    /// durable topic in a cluster, the offset from which to deliver in order.
    pub(super) fn ready(
        &mut self,
        events: Vec<RemoteEvent>,
        start: Option<DurableStart>,
        ctx: &mut Context<Self>,
    ) {
        for event in events {
            self.apply_remote(&event, ctx);
        }
        if let Some(start) = start {
            if let Some(cache) = self.registry.cache() {
                for p in start.recent {
                    cache.push(&self.key, &start.epoch, p);
                }
            }
            self.sequence = Some(Sequence::new(start.next_offset));
        }
    }

    fn apply_remote(&mut self, event: &RemoteEvent, ctx: &mut Context<Self>) {
        let bounds = self.presence_bounds();
        let diff = match event {
            RemoteEvent::Presence { node, delta } => {
                self.presence.apply_remote(*node, delta, &bounds)
            }
            RemoteEvent::Snapshot { node, entries } => {
                self.presence.replace_node(*node, entries, &bounds)
            }
            RemoteEvent::NodeGone { node } => self.presence.remove_node(*node),
            RemoteEvent::Typing { user, typing } => {
                return self.announce_typing_here(user, *typing)
            }
            RemoteEvent::Reconnected => return self.check_position(ctx),
            RemoteEvent::Announce => {
                let entries = self.presence.local_entries();
                return self.registry.broker().publish_snapshot(&self.key, entries);
            }
        };
        self.send_presence_diff(&diff);
    }

    /// In a cluster, the history window is fed by the room, in offset order: only a running
    /// room sees every publication of its topic.
    pub(super) fn remember(&self, p: &Publication) {
        if let Some(cache) = self.registry.cache() {
            cache.remember(p);
        }
    }

    /// Asks the database how far the topic has gone; what this room never received below it
    /// is read as a gap.
    fn check_position(&mut self, ctx: &mut Context<Self>) {
        self.check_position_within(POSITION_CHECKS_MAX, ctx);
    }

    /// [`check_position`](Self::check_position), tried again (every `POSITION_RETRY_MS`) while
    /// the database does not answer, `attempts` times at most.
    fn check_position_within(&mut self, attempts: u32, ctx: &mut Context<Self>) {
        let (Some(_), Some(sequencing)) = (&self.sequence, self.registry.sequencing()) else {
            return;
        };
        let (store, key) = (sequencing.store.clone(), self.key.clone());
        let read = async move {
            use locus_storage::Storage;
            store.topic_meta(&key).await
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(read).map(move |meta, room, ctx| {
                match (meta, room.sequence.as_mut()) {
                    (Ok(meta), Some(seq)) => seq.stored_up_to(meta.next_offset),
                    (Err(_), Some(_)) if attempts > 1 => {
                        let retry = Duration::from_millis(POSITION_RETRY_MS);
                        ctx.run_later(retry, move |room, ctx| {
                            room.check_position_within(attempts - 1, ctx)
                        });
                    }
                    _ => {}
                }
                room.watch_gap(ctx);
            }),
        );
    }

    /// Waits `cluster.gap_wait_ms` on an open offset gap, then reads it from the database.
    pub(super) fn watch_gap(&mut self, ctx: &mut Context<Self>) {
        let (Some(seq), Some(sequencing)) = (&self.sequence, self.registry.sequencing()) else {
            return;
        };
        if self.gap_pending || seq.gap().is_none() {
            return;
        }
        self.gap_pending = true;
        ctx.run_later(sequencing.gap_wait, |room, ctx| room.read_gap(ctx));
    }

    fn read_gap(&mut self, ctx: &mut Context<Self>) {
        let (Some(seq), Some(sequencing)) = (&self.sequence, self.registry.sequencing()) else {
            return;
        };
        let Some((from, to)) = seq.gap() else {
            self.gap_pending = false;
            return;
        };
        let (store, key) = (sequencing.store.clone(), self.key.clone());
        let limit = ((to - from) as usize).min(sequence::HELD_MAX);
        let read = async move {
            use locus_storage::Storage;
            store
                .history(&key, from - 1, limit, GAP_READ_BYTES_MAX)
                .await
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(read).map(|read, room, ctx| {
                room.gap_pending = false;
                let ready = match (read, room.sequence.as_mut()) {
                    (Ok(h), Some(seq)) if !h.publications.is_empty() => {
                        m::cluster_gap_fill("filled");
                        let epoch: Arc<str> = Arc::from(h.epoch.unwrap_or_default());
                        let found = (h.publications.into_iter())
                            .map(|p| {
                                let p = crate::publish::recovery::cached(p);
                                Arc::new(p.to_publication(room.key.clone(), epoch.clone()))
                            })
                            .collect();
                        seq.fill(found)
                    }
                    (_, Some(seq)) => {
                        m::cluster_gap_fill("failed");
                        seq.skip_gap()
                    }
                    (_, None) => Vec::new(),
                };
                for p in ready {
                    room.fan_out(&p);
                }
                room.watch_gap(ctx);
                room.stop_if_empty(ctx);
            }),
        );
    }
}

impl Handler<Remote> for Room {
    type Result = ();

    /// Applies another node's presence change (or departure) and tells the members.
    fn handle(&mut self, Remote(event): Remote, ctx: &mut Self::Context) {
        self.apply_remote(&event, ctx);
    }
}

impl Handler<LocalPresence> for Room {
    type Result = MessageResult<LocalPresence>;

    /// This node's presence in the room, for another node syncing it.
    fn handle(&mut self, _: LocalPresence, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.presence.local_entries())
    }
}
