//! The actors' hot paths, without an actix system.
//!
//! Fan-out: one publication to a room of 1,000 members, through the room's real `Deliver`
//! handler, called directly on a `Room` with a detached `Context` (members joined through its
//! real `Join` handler): encode once per protocol version in use (`encode_broadcast`), then
//! `push_batched` of the shared bytes into each member's byte-bounded outbox, plus the metric
//! calls (no recorder is installed, so they cost their no-op). Only the handler is timed; between
//! iterations the outboxes are drained, standing in for the members' socket writers.
//!
//! Presence: the pure `PresenceState` of a room with 1,000 present members: a re-track (meta
//! update) and a join then leave, each with its `presence_diff` JSON; and the full
//! `presence_state` frame a joining member receives.
//!
//! Run: `cargo bench -p locus-actors --bench hot_paths`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Context, Handler};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use locus_actors::broker::{Body, Deliver, InProcessBroker, Publication};
use locus_actors::config::RoomLimits;
use locus_actors::connection::outbox::{outbox, OutboxReceiver};
use locus_actors::room::presence::PresenceState;
use locus_actors::room::registry::RoomRegistry;
use locus_actors::room::{Join, Room};
use locus_actors::{wire::raw, SessionId};
use locus_protocol::{encode_message, PayloadEncoding, Vsn};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// Members of the room.
/// A fan-out case: its name, the publication body, and each member's protocol version.
type FanOutCase = (&'static str, Body, fn(usize) -> Vsn);

const MEMBERS: usize = 1_000;
/// Each member's outbox bound: the `session.outbound_queue_bytes_max` default.
const OUTBOUND_BYTES_MAX: usize = 1024 * 1024;
const TOPIC: &str = "realtime:room-1";
const EVENT: &str = "message";
/// The user payload: 101 bytes of JSON.
const PAYLOAD: &str = r#"{"t":1732450000000,"user":"u-42","text":"hello from the load generator, about a hundred bytes","n":7}"#;
/// The publisher is member 0; with `broadcast.self` off it does not get its own broadcast.
const SENDER: SessionId = 0;
/// The `online_at` realtime-js puts in tracked metas.
const ONLINE_AT: &str = "2026-11-24T12:00:00.000Z";

fn key(i: usize) -> String {
    format!("u-{i}")
}

fn drain(receivers: &mut [OutboxReceiver]) {
    for r in receivers {
        black_box(r.discard_queued());
    }
}

/// A room of `MEMBERS` members, member `i` speaking `vsn(i)`, with their join replies drained.
fn room_of_members(vsn: fn(usize) -> Vsn) -> (Room, Context<Room>, Vec<OutboxReceiver>) {
    let broker = Arc::new(InProcessBroker::default());
    let registry = RoomRegistry::new(RoomLimits::default(), None, broker);
    let mut room = Room::new(Arc::from(TOPIC), registry, RoomLimits::default());
    let mut ctx = Context::<Room>::new();
    let mut receivers = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let (tx, rx) = outbox(OUTBOUND_BYTES_MAX);
        let join = Join {
            session: i as SessionId,
            user_id: Arc::from(key(i)),
            outbox: tx,
            vsn: vsn(i),
            join_ref: Some("1".to_owned()),
            msg_ref: Some("1".to_owned()),
            self_broadcast: false,
            presence_enabled: false,
            presence_key: key(i),
            recovery: None,
        };
        <Room as Handler<Join>>::handle(&mut room, join, &mut ctx);
        receivers.push(rx);
    }
    drain(&mut receivers);
    (room, ctx, receivers)
}

fn fan_out(c: &mut Criterion) {
    let json = Body::Json(Arc::from(
        RawValue::from_string(PAYLOAD.to_owned()).expect("JSON"),
    ));
    let data = Bytes::from_static(PAYLOAD.as_bytes());
    let binary = Body::Binary {
        encoding: PayloadEncoding::Json,
        data,
    };
    let cases: [FanOutCase; 3] = [
        ("json_to_v2", json.clone(), |_| Vsn::V2),
        ("binary_to_v2", binary, |_| Vsn::V2),
        ("json_to_v1_and_v2", json, |i| Vsn::ALL[i % Vsn::ALL.len()]),
    ];
    let mut group = c.benchmark_group("fan_out_1000_members");
    group.throughput(Throughput::Elements((MEMBERS - 1) as u64)); // all but the sender
    for (name, body, vsn) in cases {
        let (mut room, mut ctx, mut receivers) = room_of_members(vsn);
        let publication = Arc::new(Publication {
            topic: Arc::from(TOPIC),
            event: EVENT.to_owned(),
            body,
            sender: Some(SENDER),
            accepted_at: Instant::now(),
            durable: None,
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let deliver = Deliver {
                        publication: publication.clone(),
                    };
                    let start = Instant::now();
                    <Room as Handler<Deliver>>::handle(&mut room, deliver, &mut ctx);
                    timed += start.elapsed();
                    drain(&mut receivers);
                }
                timed
            })
        });
    }
    group.finish();
}

/// A tracked meta as realtime-js clients send it.
fn meta(i: usize, status: &str) -> Map<String, Value> {
    let meta = json!({"user_id": key(i), "status": status, "online_at": ONLINE_AT});
    let Value::Object(fields) = meta else {
        unreachable!("an object literal")
    };
    fields
}

fn presence(c: &mut Criterion) {
    let mut state = PresenceState::default();
    for i in 0..MEMBERS {
        state.track(i as SessionId, &key(i), meta(i, "online"));
    }
    let mut group = c.benchmark_group("presence_1000_members");
    let mut next = 0;
    group.bench_function("retrack_diff", |b| {
        b.iter_batched(
            || {
                next = (next + 1) % MEMBERS;
                (next, key(next), meta(next, "away"))
            },
            |(i, key, fields)| state.track(i as SessionId, &key, fields).to_json(),
            BatchSize::SmallInput,
        )
    });
    let newcomer = MEMBERS;
    group.bench_function("join_then_leave_diffs", |b| {
        b.iter_batched(
            || (key(newcomer), meta(newcomer, "online")),
            |(key, fields)| {
                let join = state.track(newcomer as SessionId, &key, fields).to_json();
                (join, state.untrack(newcomer as SessionId, &key).to_json())
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("presence_state_frame", |b| {
        b.iter(|| {
            let payload = raw(black_box(&state).state_json());
            encode_message(Vsn::V2, Some("1"), None, TOPIC, "presence_state", &payload)
        })
    });
    group.finish();
}

criterion_group!(benches, fan_out, presence);
criterion_main!(benches);
