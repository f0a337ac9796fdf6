//! Asking every live peer and collecting their answers: a request on a control subject with a
//! reply inbox, answered by every node (an empty answer counts), awaited until each peer known to
//! be alive has answered or one heartbeat period has passed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use super::envelope::{self, Envelope, Kind};
use super::Shared;
use crate::broker::NodeRef;
use crate::metrics as m;

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
    let inbox = shared.client.new_inbox();
    let Ok(mut replies) = shared.client.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    let request = envelope::encode(kind, shared.me, header, &[]);
    if (shared
        .client
        .publish_with_reply(subject, inbox, request)
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
            msg = replies.next() => {
                let Some(msg) = msg else { break };
                let Ok(env) = Envelope::decode(msg.payload) else { continue };
                if waiting.remove(&env.origin) {
                    out.push(env);
                }
            }
            _ = &mut deadline => break,
        }
    }
    out
}

/// Answers a request: `kind` with `header`, to the asker's inbox.
pub(super) async fn answer(
    shared: &Arc<Shared>,
    reply: String,
    kind: Kind,
    header: &impl Serialize,
) {
    let msg = envelope::encode(kind, shared.me, header, &[]);
    if shared.client.publish(reply, msg).await.is_ok() {
        m::cluster_message("out", kind.label());
    }
}
