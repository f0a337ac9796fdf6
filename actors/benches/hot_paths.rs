//! The actors' hot paths without an actix system: one fan-out of a broadcast to 1,000 members
//! (what the room's `Deliver` handler does: encode once per version with `encode_broadcast`,
//! then push the shared bytes into each member's byte-bounded outbox; the members' writers are
//! stood in for by draining the outboxes), and presence (a re-track's diff in a room of 1,000
//! present members, and the full `presence_state`).
//!
//! Run: `cargo bench -p locus-actors --bench hot_paths`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use locus_actors::broker::Body;
use locus_actors::outbox::{outbox, Outbox, OutboxReceiver};
use locus_actors::presence::PresenceState;
use locus_actors::room::encode_broadcast;
use locus_protocol::Vsn;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

const MEMBERS: usize = 1_000;
/// Each member's outbox bound, as `session.outbound_queue_bytes_max` defaults.
const OUTBOUND_BYTES_MAX: usize = 1024 * 1024;
const PAYLOAD: &str =
    r#"{"t":1732450000000,"user":"u-42","text":"hello from the load generator, 100 bytes","n":7}"#;

fn fan_out(c: &mut Criterion) {
    let (outboxes, mut receivers): (Vec<Outbox>, Vec<OutboxReceiver>) =
        (0..MEMBERS).map(|_| outbox(OUTBOUND_BYTES_MAX)).unzip();
    let body = Body::Json(Arc::from(
        RawValue::from_string(PAYLOAD.to_owned()).unwrap(),
    ));
    c.bench_function("fan_out_1000_members", |b| {
        b.iter(|| {
            let frame = encode_broadcast(Vsn::V2, "realtime:room", "m", black_box(&body), None)
                .expect("a JSON body always encodes");
            for o in &outboxes {
                o.push(frame.clone()).expect("room for one frame");
            }
            for r in &mut receivers {
                black_box(r.discard_queued());
            }
        })
    });
}

fn meta(i: usize) -> Map<String, Value> {
    match json!({"user_id": format!("u-{i}"), "status": "online", "online_at": 1_732_450_000}) {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

fn presence(c: &mut Criterion) {
    let mut state = PresenceState::default();
    for i in 0..MEMBERS {
        state.track(i as u64, &format!("u-{i}"), meta(i));
    }
    let mut n = 0usize;
    c.bench_function("presence_retrack_diff_in_1000", |b| {
        b.iter(|| {
            n = (n + 1) % MEMBERS;
            let mut fields = meta(n);
            fields.insert("status".into(), json!("idle"));
            state.track(n as u64, &format!("u-{n}"), fields).to_json()
        })
    });
    c.bench_function("presence_state_1000", |b| {
        b.iter(|| black_box(&state).state_json())
    });
}

criterion_group!(benches, fan_out, presence);
criterion_main!(benches);
