//! Asking every live peer and collecting their answers: a request on a control subject with a
//! reply subject, answered by every node (an empty answer counts), awaited until each peer known
//! to be alive has answered or one heartbeat period has passed.
//!
//! Replies come back on one subscription for the whole node (`<inbox>.<request id>`, routed
//! here by id) rather than a subscription per request: a room start or a nearby list then
//! costs NATS one request and its answers, not a subscribe and an unsubscribe too.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use super::envelope::{self, Envelope, Kind};
use super::Shared;
use crate::broker::NodeRef;
use crate::metrics::{self as m, DropReason};

/// Requests waiting for answers at once, at most; past it a request goes unasked (its caller
/// gets this node's part only) and is counted.
const ASKS_MAX: usize = 4_096;

/// The requests this node is waiting on, by id.
pub(super) struct Asks {
    /// This node's reply prefix: `<inbox>`; replies go to `<inbox>.<id>`.
    inbox: String,
    next: AtomicU64,
    waiting: DashMap<u64, mpsc::Sender<Envelope>>,
}

impl Asks {
    pub(super) fn new(inbox: String) -> Self {
        Asks {
            inbox,
            next: AtomicU64::new(1),
            waiting: DashMap::new(),
        }
    }
}

/// The subject every answer to this node's requests arrives on.
pub(super) fn answers_subject(inbox: &str) -> String {
    format!("{inbox}.*")
}

/// Reads every answer to this node's requests and hands it to the request waiting for it.
pub(super) async fn route_answers(shared: Arc<Shared>, mut answers: async_nats::Subscriber) {
    while let Some(msg) = answers.next().await {
        let id = msg.subject.rsplit('.').next().and_then(|t| t.parse().ok());
        let (Some(id), Ok(env)) = (id, Envelope::decode(msg.payload)) else {
            m::dropped(DropReason::ClusterMalformed);
            continue;
        };
        m::cluster_message("in", env.kind.label());
        if let Some(waiting) = shared.asks.waiting.get(&id) {
            // Each peer answers once: the channel holds one answer per peer.
            let _ = waiting.try_send(env);
        }
    }
}

/// The answers of the live peers to a `kind` request on `subject` (none without peers or NATS).
pub(super) async fn ask_peers(
    shared: &Arc<Shared>,
    subject: &'static str,
    kind: Kind,
    header: &impl Serialize,
) -> Vec<Envelope> {
    let mut waiting: HashSet<NodeRef> = shared.nodes().peers().into_iter().collect();
    if waiting.is_empty() || !shared.connected() {
        return Vec::new();
    }
    let asks = &shared.asks;
    if asks.waiting.len() >= ASKS_MAX {
        m::dropped(DropReason::ClusterQueueFull);
        return Vec::new();
    }
    let id = asks.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut answers) = mpsc::channel(waiting.len());
    asks.waiting.insert(id, tx);
    let _forget = Forget(asks, id);
    let request = envelope::encode(kind, shared.me, header, &[]);
    let reply = format!("{}.{id}", asks.inbox);
    if (shared
        .client
        .publish_with_reply(subject, reply, request)
        .await)
        .is_err()
    {
        return Vec::new();
    }
    m::cluster_message("out", kind.label());
    let mut out = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_millis(shared.config.heartbeat_ms));
    tokio::pin!(deadline);
    while !waiting.is_empty() {
        tokio::select! {
            env = answers.recv() => {
                let Some(env) = env else { break };
                if waiting.remove(&env.origin) {
                    out.push(env);
                }
            }
            _ = &mut deadline => break,
        }
    }
    out
}

/// Stops routing answers to a request that is done (or whose caller went away).
struct Forget<'a>(&'a Asks, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.waiting.remove(&self.1);
    }
}

/// Answers a request: `kind` with `header`, to the asker's reply subject.
pub(super) async fn answer(
    shared: &Arc<Shared>,
    reply: String,
    kind: Kind,
    header: &impl Serialize,
) {
    let msg = envelope::encode(kind, shared.me, header, &[]);
    shared.publish_now(reply, kind, msg).await;
}
