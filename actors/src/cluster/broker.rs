//! [`NatsBroker`]: the broker of a cluster. A publication reaches this node's room at once and
//! the other nodes through NATS (only those subscribed to its topic receive it); a starting room
//! subscribes, waits until NATS has the subscription, then asks every live node for its presence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::envelope::{self, Envelope, Kind};
use super::interest::Interest;
use super::{Shared, SYNC_SUBJECT};
use crate::broker::{
    Body, Broker, BrokerError, Durable, LocalPresence, NodeRef, PresenceDelta, PresenceEntry,
    Publication, Remote, RemoteEvent, RoomLink,
};
use locus_protocol::PayloadEncoding;

/// The subject of a room's topic: its key in base64url, since topics may hold `.`, `*`, `>` or
/// spaces, which NATS reads as structure.
pub(super) fn room_subject(topic: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(topic);
    format!("locus.t.{b64}")
}

/// A publication's header.
#[derive(Serialize, Deserialize)]
struct PublicationHeader {
    #[serde(rename = "t")]
    topic: Arc<str>,
    #[serde(rename = "e")]
    event: String,
    /// 0 JSON, 1 server event, 2 binary, 3 binary JSON.
    #[serde(rename = "b")]
    body: u8,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    durable: Option<DurableHeader>,
}

#[derive(Serialize, Deserialize)]
struct DurableHeader {
    #[serde(rename = "o")]
    offset: u64,
    #[serde(rename = "p")]
    epoch: Arc<str>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    client_id: Option<Arc<str>>,
    #[serde(rename = "a")]
    created_at_ms: i64,
}

/// A presence delta's or snapshot's header (no body).
#[derive(Serialize, Deserialize)]
pub(super) struct PresenceHeader {
    #[serde(rename = "t")]
    pub topic: Arc<str>,
    #[serde(default)]
    pub delta: PresenceDelta,
    #[serde(default)]
    pub entries: Vec<PresenceEntry>,
}

/// A typing announcement's header.
#[derive(Serialize, Deserialize)]
pub(super) struct TypingHeader {
    #[serde(rename = "t")]
    pub topic: Arc<str>,
    #[serde(rename = "u")]
    pub user: Arc<str>,
    #[serde(rename = "y")]
    pub typing: bool,
}

impl PresenceHeader {
    /// A node's whole presence in `topic`.
    pub fn snapshot(topic: &Arc<str>, entries: Vec<PresenceEntry>) -> Self {
        PresenceHeader {
            topic: topic.clone(),
            delta: PresenceDelta::default(),
            entries,
        }
    }
}

/// A presence request of a room starting on some node.
#[derive(Serialize, Deserialize)]
pub(super) struct SyncHeader {
    #[serde(rename = "t")]
    pub topic: Arc<str>,
}

fn encode_publication(me: NodeRef, p: &Publication) -> bytes::Bytes {
    let (kind, body): (u8, &[u8]) = match &p.body {
        Body::Json(v) => (0, v.get().as_bytes()),
        Body::Event(v) => (1, v.get().as_bytes()),
        Body::Binary {
            encoding: PayloadEncoding::Binary,
            data,
        } => (2, data),
        Body::Binary {
            encoding: PayloadEncoding::Json,
            data,
        } => (3, data),
    };
    let header = PublicationHeader {
        topic: p.topic.clone(),
        event: p.event.clone(),
        body: kind,
        durable: p.durable.as_ref().map(|d| DurableHeader {
            offset: d.offset,
            epoch: d.epoch.clone(),
            client_id: d.client_id.clone(),
            created_at_ms: d.created_at_ms,
        }),
    };
    envelope::encode(Kind::Publication, me, &header, body)
}

/// A publication from another node, as this node's rooms take it (no sender: session ids are
/// per node, so `self: false` was already applied where the publisher is).
pub(super) fn decode_publication(env: &Envelope) -> Result<Publication, String> {
    let h: PublicationHeader = env.header().map_err(|e| e.to_string())?;
    let json = || -> Result<Arc<RawValue>, String> {
        let text = String::from_utf8(env.body.to_vec()).map_err(|e| e.to_string())?;
        RawValue::from_string(text)
            .map(Arc::from)
            .map_err(|e| e.to_string())
    };
    let body = match h.body {
        0 => Body::Json(json()?),
        1 => Body::Event(json()?),
        2 | 3 => Body::Binary {
            encoding: if h.body == 2 {
                PayloadEncoding::Binary
            } else {
                PayloadEncoding::Json
            },
            data: env.body.clone(),
        },
        other => return Err(format!("unknown body kind {other}")),
    };
    Ok(Publication {
        topic: h.topic,
        event: h.event,
        body,
        sender: None,
        accepted_at: Instant::now(),
        durable: h.durable.map(|d| Durable {
            offset: d.offset,
            epoch: d.epoch,
            client_id: d.client_id,
            replayed: false,
            created_at_ms: d.created_at_ms,
        }),
    })
}

/// The broker of a cluster.
pub struct NatsBroker {
    shared: Arc<Shared>,
}

impl NatsBroker {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        NatsBroker { shared }
    }

    /// Sends a body-less message about `topic` to the other nodes' rooms of it.
    fn to_room(&self, topic: &str, kind: Kind, header: &impl Serialize) {
        let s = &self.shared;
        s.send(
            room_subject(topic),
            kind,
            envelope::encode(kind, s.me, header, &[]),
        );
    }
}

impl Broker for NatsBroker {
    fn publish(&self, publication: Publication) -> Result<(), BrokerError> {
        let s = &self.shared;
        let publication = Arc::new(publication);
        // Refused here (the room is busy) is refused everywhere: the publisher retries, and a
        // copy already on its way to other nodes would then arrive twice.
        s.local.deliver(publication.clone())?;
        let msg = encode_publication(s.me, &publication);
        s.send(room_subject(&publication.topic), Kind::Publication, msg);
        Ok(())
    }

    fn subscribe(&self, topic: Arc<str>, room: RoomLink) -> BoxFuture<'static, Vec<RemoteEvent>> {
        self.shared.local.insert(topic.clone(), room);
        let shared = self.shared.clone();
        Box::pin(async move {
            if !shared.connected() {
                // Serve local members now; the subscription is made when NATS returns.
                super::interest::request(&shared, Interest::Room { topic, ready: None });
                return Vec::new();
            }
            let wait = Duration::from_millis(shared.config.node_down_ms);
            let (ready, subscribed) = tokio::sync::oneshot::channel();
            let cmd = Interest::Room {
                topic: topic.clone(),
                ready: Some(ready),
            };
            super::interest::request(&shared, cmd);
            // Bounded: a room whose subscription NATS cannot confirm in time serves its local
            // members anyway (the subscription is still made).
            let _ = tokio::time::timeout(wait, subscribed).await;
            (tokio::time::timeout(wait, sync(&shared, &topic)).await).unwrap_or_default()
        })
    }

    fn unsubscribe(&self, topic: &str, room: &RoomLink) {
        if self.shared.local.remove(topic, room) {
            super::interest::request(&self.shared, Interest::RoomGone(Arc::from(topic)));
        }
    }

    fn publish_presence(&self, topic: &Arc<str>, delta: PresenceDelta) {
        let header = PresenceHeader {
            topic: topic.clone(),
            delta,
            entries: Vec::new(),
        };
        self.to_room(topic, Kind::Presence, &header);
    }

    fn publish_snapshot(&self, topic: &Arc<str>, entries: Vec<PresenceEntry>) {
        self.to_room(
            topic,
            Kind::Snapshot,
            &PresenceHeader::snapshot(topic, entries),
        );
    }

    fn publish_typing(&self, topic: &Arc<str>, user: &str, typing: bool) {
        let header = TypingHeader {
            topic: topic.clone(),
            user: Arc::from(user),
            typing,
        };
        self.to_room(topic, Kind::Typing, &header);
    }

    fn is_clustered(&self) -> bool {
        true
    }

    fn is_healthy(&self) -> bool {
        // Local members are served even while NATS is away (health says `degraded` then).
        true
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}

/// Asks every live peer for its presence in `topic` (at most one heartbeat period).
async fn sync(shared: &Arc<Shared>, topic: &Arc<str>) -> Vec<RemoteEvent> {
    let header = SyncHeader {
        topic: topic.clone(),
    };
    let answers = super::ask::ask_peers(shared, SYNC_SUBJECT, Kind::Sync, &header).await;
    (answers.into_iter())
        .filter_map(|env| {
            let h = env.header::<PresenceHeader>().ok()?;
            Some(RemoteEvent::Snapshot {
                node: env.origin,
                entries: h.entries,
            })
        })
        .collect()
}

/// Answers another node's presence request for a topic: this node's entries (none without a
/// room).
pub(super) fn answer_sync(shared: &Arc<Shared>, env: &Envelope, reply: String) {
    let Ok(h) = env.header::<SyncHeader>() else {
        return;
    };
    let room = shared.local.room(&h.topic);
    let shared = shared.clone();
    tokio::spawn(async move {
        let entries = match room {
            Some(r) => r
                .local_presence
                .send(LocalPresence)
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let header = PresenceHeader::snapshot(&h.topic, entries);
        super::ask::answer(&shared, reply, Kind::Snapshot, &header).await;
    });
}

/// Every room of this node announces its presence to the other nodes (after NATS reconnects
/// or a peer appears): they replace what they held for this node.
pub(super) fn announce_all(shared: &Arc<Shared>) {
    tell_rooms(shared, RemoteEvent::Announce);
}

/// `node` is gone: every room here drops its presences.
pub(super) fn node_gone(shared: &Arc<Shared>, node: NodeRef) {
    tell_rooms(shared, RemoteEvent::NodeGone { node });
}

/// Hands `event` to every room of this node.
pub(super) fn tell_rooms(shared: &Arc<Shared>, event: RemoteEvent) {
    let event = Arc::new(event);
    for (_, room) in shared.local.rooms() {
        // Unbounded on purpose: one per room per cluster event (a departed node, a reconnect),
        // and a presence leave must not be lost.
        room.remote.do_send(Remote(event.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(body: Body) -> Publication {
        Publication {
            topic: Arc::from("realtime:a.b c"),
            event: "m".into(),
            body,
            sender: Some(3),
            accepted_at: Instant::now(),
            durable: Some(Durable {
                offset: 9,
                epoch: Arc::from("ep"),
                client_id: Some(Arc::from("c1")),
                replayed: false,
                created_at_ms: 1_700_000_000_000,
            }),
        }
    }

    /// Every kind of body crosses nodes byte for byte with its durable position; the sender
    /// does not (session ids are per node, so `self: false` was applied at the origin).
    #[test]
    fn publications_cross_nodes_unchanged_but_without_their_sender() {
        let json: Arc<RawValue> = Arc::from(RawValue::from_string(r#"{"n":1}"#.into()).unwrap());
        let bodies = [
            Body::Json(json.clone()),
            Body::Event(json),
            Body::Binary {
                encoding: PayloadEncoding::Binary,
                data: bytes::Bytes::from_static(&[0, 255, 7]),
            },
            Body::Binary {
                encoding: PayloadEncoding::Json,
                data: bytes::Bytes::from_static(b"[1]"),
            },
        ];
        for body in bodies {
            let sent = publication(body);
            let env = Envelope::decode(encode_publication(5, &sent)).unwrap();
            assert_eq!((env.kind, env.origin), (Kind::Publication, 5));
            let got = decode_publication(&env).unwrap();
            assert_eq!(got.topic, sent.topic);
            assert_eq!(got.sender, None);
            assert_eq!(format!("{:?}", got.body), format!("{:?}", sent.body));
            let (g, s) = (got.durable.unwrap(), sent.durable.unwrap());
            assert_eq!(
                (g.offset, g.epoch, g.client_id),
                (s.offset, s.epoch, s.client_id)
            );
            assert_eq!(g.created_at_ms, s.created_at_ms);
        }
        assert!(room_subject("realtime:a.b c")
            .trim_start_matches("locus.t.")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
