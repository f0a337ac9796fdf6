//! Interest routing: the NATS subscriptions of this node, and what arrives on them.
//!
//! One task owns every subscription, so subscribing and unsubscribing a topic never race: a
//! room's topic is subscribed while a room of it runs here, an area's prefixes while a cell
//! under them runs here (counted, since neighbouring cells share prefixes). One reader task per
//! subscription hands what arrives to the room, the cells, or the node registry.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::broker::{self, decode_publication, room_subject, PresenceHeader, TypingHeader};
use super::envelope::{Envelope, Kind};
use super::nodes::{Bye, Change, Heartbeat, Resync};
use super::{geo, Shared, NEAR_SUBJECT, NODES_SUBJECT, SYNC_SUBJECT};
use crate::broker::{Remote, RemoteEvent};
use crate::metrics::{self as m, DropReason};

/// Longest wait for NATS to confirm a new subscription before a room is let go on, in
/// milliseconds (it is then confirmed in the background).
const SUBSCRIBE_CONFIRM_MS: u64 = 2_000;
/// Requests to this subject (never served) prove a round trip to the server.
const CONFIRM_SUBJECT_PREFIX: &str = "locus.confirm";

/// A change of this node's interest.
pub(super) enum Interest {
    /// A room of `topic` runs here; `ready` is told once NATS has the subscription.
    Room {
        topic: Arc<str>,
        ready: Option<oneshot::Sender<()>>,
    },
    /// The room of a topic stopped (a newer one may run already).
    RoomGone(Arc<str>),
    /// A cell started (`true`) or stopped here.
    Cell(String, bool),
}

/// Queues `cmd` for the interest task without waiting (a full queue hands it to a task).
pub(super) fn request(shared: &Arc<Shared>, cmd: Interest) {
    if let Err(mpsc::error::TrySendError::Full(cmd)) = shared.interest.try_send(cmd) {
        let tx = shared.interest.clone();
        tokio::spawn(async move {
            let _ = tx.send(cmd).await;
        });
    }
}

/// The interest task: owns every subscription of this node.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Interest>) {
    let mut rooms: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    let mut areas: HashMap<String, (i64, Option<JoinHandle<()>>)> = HashMap::new();
    let mut control = Vec::new();
    for subject in [NODES_SUBJECT, SYNC_SUBJECT, NEAR_SUBJECT] {
        match shared.client.subscribe(subject).await {
            Ok(sub) => control.push(tokio::spawn(read(shared.clone(), sub))),
            Err(e) => tracing::error!(subject, error = %e, "cluster: cannot subscribe"),
        }
    }
    m::cluster_subscriptions().set(control.len() as f64);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Interest::Room { topic, ready } => {
                // A room already gone (its `RoomGone` overtook this command) needs nothing.
                if shared.local.room(&topic).is_some() {
                    if let Entry::Vacant(vacant) = rooms.entry(topic) {
                        let subject = room_subject(vacant.key());
                        if let Some(reader) = subscribe(&shared, subject).await {
                            vacant.insert(reader);
                        }
                    }
                }
                if let Some(ready) = ready {
                    confirm(&shared, ready);
                }
            }
            Interest::RoomGone(topic) => {
                if shared.local.room(&topic).is_none() {
                    if let Some(reader) = rooms.remove(&topic) {
                        reader.abort();
                    }
                }
            }
            Interest::Cell(cell, up) => {
                for subject in geo::area_subjects(&cell) {
                    // Counted up and down per cell actor; a stop may overtake its start (a
                    // command handed to a task when the queue was full), so counts may dip
                    // below zero and the subscription follows the count, not the order.
                    let area = areas.entry(subject.clone()).or_insert((0, None));
                    area.0 += if up { 1 } else { -1 };
                    if area.0 > 0 && area.1.is_none() {
                        area.1 = subscribe(&shared, subject.clone()).await;
                    } else if area.0 <= 0 {
                        if let Some(reader) = area.1.take() {
                            reader.abort();
                        }
                    }
                    if area.0 == 0 {
                        areas.remove(&subject);
                    }
                }
            }
        }
        let areas_held = areas.values().filter(|a| a.1.is_some()).count();
        m::cluster_subscriptions().set((rooms.len() + areas_held + control.len()) as f64);
    }
}

/// Subscribes `subject` and starts its reader; `None` when the client is closed.
async fn subscribe(shared: &Arc<Shared>, subject: String) -> Option<JoinHandle<()>> {
    match shared.client.subscribe(subject.clone()).await {
        Ok(sub) => Some(tokio::spawn(read(shared.clone(), sub))),
        Err(e) => {
            tracing::error!(subject, error = %e, "cluster: cannot subscribe");
            None
        }
    }
}

/// Tells `ready` once NATS has processed every subscription sent so far, without holding up
/// the interest task. The proof is a round trip behind them on the same connection: a request
/// to a subject nobody serves, which the server answers at once with "no responders" (a
/// client flush only writes the socket).
fn confirm(shared: &Arc<Shared>, ready: oneshot::Sender<()>) {
    let client = shared.client.clone();
    let subject = format!("{CONFIRM_SUBJECT_PREFIX}.{:x}", shared.me);
    tokio::spawn(async move {
        let wait = Duration::from_millis(SUBSCRIBE_CONFIRM_MS);
        let _ = tokio::time::timeout(wait, client.request(subject, bytes::Bytes::new())).await;
        let _ = ready.send(());
    });
}

/// Reads one subscription until it is dropped (aborting the task unsubscribes).
async fn read(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let reply = msg.reply.map(|r| r.to_string());
        match Envelope::decode(msg.payload) {
            Ok(env) if env.origin == shared.me => {}
            Ok(env) => {
                m::cluster_message("in", env.kind.label());
                dispatch(&shared, env, reply);
            }
            Err(e) => {
                m::dropped(DropReason::ClusterMalformed);
                tracing::warn!(error = %e, "cluster: malformed message");
            }
        }
    }
}

fn dispatch(shared: &Arc<Shared>, env: Envelope, reply: Option<String>) {
    match env.kind {
        Kind::Publication => match decode_publication(&env) {
            Ok(p) => {
                let _ = shared.local.deliver(Arc::new(p));
            }
            Err(e) => malformed(&e),
        },
        Kind::Presence | Kind::Snapshot if !shared.nodes().is_live(env.origin) => {
            // Kept, it would outlive its node: nothing removes presence of an untracked node.
            m::dropped(DropReason::ClusterUnknownNode);
        }
        Kind::Presence | Kind::Snapshot => {
            let Ok(h) = env.header::<PresenceHeader>() else {
                return malformed("presence header");
            };
            let Some(room) = shared.local.room(&h.topic) else {
                return;
            };
            let node = env.origin;
            let event = match env.kind {
                Kind::Presence => RemoteEvent::Presence {
                    node,
                    delta: h.delta,
                },
                _ => RemoteEvent::Snapshot {
                    node,
                    entries: h.entries,
                },
            };
            // A room too busy to take it misses it until the next snapshot of that node.
            if room.remote.try_send(Remote(Arc::new(event))).is_err() {
                m::dropped(DropReason::RoomMailboxFull);
            }
        }
        Kind::Typing => {
            let Ok(h) = env.header::<TypingHeader>() else {
                return malformed("typing header");
            };
            if let Some(room) = shared.local.room(&h.topic) {
                let event = RemoteEvent::Typing {
                    user: h.user,
                    typing: h.typing,
                };
                // Typing is best effort: a full mailbox drops it like a local room would.
                let _ = room.remote.try_send(Remote(Arc::new(event)));
            }
        }
        Kind::GeoPost => geo::post_arrived(shared, &env),
        Kind::Beacons => geo::beacons_arrived(shared, &env),
        Kind::Heartbeat => {
            let Ok(hb) = env.header::<Heartbeat>() else {
                return malformed("heartbeat");
            };
            let changes = shared.nodes().heard(env.origin, hb, Instant::now());
            match changes {
                Some(changes) => node_changes(shared, changes),
                None => tracing::warn!("cluster: more peers than cluster.nodes_max; ignored"),
            }
        }
        Kind::Bye => {
            if env.header::<Bye>().is_err() {
                return malformed("bye");
            }
            let change = shared.nodes().bye(env.origin);
            node_changes(shared, change.into_iter().collect());
        }
        Kind::Resync => match env.header::<Resync>() {
            Ok(r) if r.to.is_none_or(|to| to == shared.me) => broker::announce_all(shared),
            Ok(_) => {}
            Err(_) => malformed("resync"),
        },
        Kind::Sync => match reply {
            Some(reply) => broker::answer_sync(shared, &env, reply),
            None => malformed("sync without a reply subject"),
        },
        Kind::Near => match reply {
            Some(reply) => geo::answer_near(shared, &env, reply),
            None => malformed("near without a reply subject"),
        },
    }
}

fn node_changes(shared: &Arc<Shared>, changes: Vec<Change>) {
    let mut appeared = Vec::new();
    for change in changes {
        match change {
            Change::Up(node) => {
                tracing::info!(node, "cluster: node up");
                appeared.push(node);
            }
            Change::Gone(node) => {
                tracing::info!(node, "cluster: node gone, its presences leave");
                broker::node_gone(shared, node);
            }
        }
    }
    if !appeared.is_empty() {
        // A peer that had given this node up (or never knew it) learns its presence again,
        // and is asked for its own: it may not have given this node up (a one-sided sweep).
        broker::announce_all(shared);
    }
    for node in appeared {
        super::request_resync(shared, Some(node));
    }
}

fn malformed(what: &str) {
    m::dropped(DropReason::ClusterMalformed);
    tracing::warn!(what, "cluster: malformed message");
}
