//! Frame decode and encode, both protocol versions (vsn 1.0.0 JSON objects, vsn 2.0.0 JSON
//! arrays). Decoded: a client's `phx_join` (realtime-js config and access token), a `broadcast`
//! with a ~100-byte payload and a heartbeat, plus the binary user-broadcast push (type 3).
//! Encoded: the server's join reply, the user broadcast and the heartbeat reply (named after the
//! push they answer), plus the binary server broadcast (type 4).
//!
//! Run: `cargo bench -p locus-protocol --bench frames`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use locus_protocol::frame::BINARY_USER_BROADCAST_PUSH;
use locus_protocol::{
    decode_binary, decode_text, encode_message, encode_user_broadcast, OutFrame, PayloadEncoding,
    Vsn, PHOENIX_TOPIC,
};
use serde_json::value::RawValue;

/// The channel every frame but the heartbeat is on.
const TOPIC: &str = "realtime:room-1";
/// The user event name of the broadcast.
const EVENT: &str = "message";
/// The user payload: 101 bytes of JSON.
const PAYLOAD: &str = r#"{"t":1732450000000,"user":"u-42","text":"hello from the load generator, about a hundred bytes","n":7}"#;
/// An anon-key-shaped JWT (header.claims.signature), as realtime-js sends it in `phx_join`.
const ACCESS_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6ImFiY2RlZmdoaWprbG1ub3BxcnN0Iiwicm9sZSI6ImFub24iLCJpYXQiOjE3MzI0NTAwMDAsImV4cCI6MjA0NzgxMDAwMH0.c2lnbmF0dXJlLW9mLXRoZS1hbm9uLWtleS0zMmJ5dGU";
/// The channel's `join_ref` (also the join's `ref`), the broadcast's and the heartbeat's `ref`.
const JOIN_REF: Ref = Some("1");
const BROADCAST_REF: Ref = Some("2");
const PING_REF: Ref = Some("3");

/// A frame's envelope: bench name, join_ref, ref, topic, event. A reply is named after the push
/// it answers.
type Env = (&'static str, Ref, Ref, &'static str, &'static str);
type Ref = Option<&'static str>;

/// What a client sends.
const JOIN: Env = ("phx_join", JOIN_REF, JOIN_REF, TOPIC, "phx_join");
const BROADCAST: Env = ("broadcast", JOIN_REF, BROADCAST_REF, TOPIC, "broadcast");
const HEARTBEAT: Env = ("heartbeat", None, PING_REF, PHOENIX_TOPIC, "heartbeat");
/// What the server sends.
const JOIN_REPLY: Env = ("phx_join", JOIN_REF, JOIN_REF, TOPIC, "phx_reply");
const BROADCAST_OUT: Env = ("broadcast", None, None, TOPIC, "broadcast");
const HEARTBEAT_REPLY: Env = ("heartbeat", None, PING_REF, PHOENIX_TOPIC, "phx_reply");

/// The join payload realtime-js sends, up to its access token.
const JOIN_CONFIG: &str = r#"{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"u-42","enabled":true},"postgres_changes":[],"private":false},"access_token":"#;
const JOIN_OK: &str = r#"{"status":"ok","response":{"postgres_changes":[]}}"#;
const HEARTBEAT_OK: &str = r#"{"status":"ok","response":{}}"#;

fn frame(vsn: Vsn, (_, join_ref, msg_ref, topic, event): Env, payload: &RawValue) -> OutFrame {
    encode_message(vsn, join_ref, msg_ref, topic, event, payload)
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).expect("valid JSON")
}

fn client_pushes() -> [(Env, Box<RawValue>); 3] {
    let join = format!(r#"{JOIN_CONFIG}"{ACCESS_TOKEN}"}}"#);
    let broadcast = format!(r#"{{"type":"broadcast","event":"{EVENT}","payload":{PAYLOAD}}}"#);
    [
        (JOIN, raw(join)),
        (BROADCAST, raw(broadcast)),
        (HEARTBEAT, raw("{}".to_owned())),
    ]
}

/// The server's frames; its broadcast payload is the client's, unchanged.
fn server_frames() -> [(Env, Box<RawValue>); 3] {
    let [_, (_, broadcast), _] = client_pushes();
    [
        (JOIN_REPLY, raw(JOIN_OK.to_owned())),
        (BROADCAST_OUT, broadcast),
        (HEARTBEAT_REPLY, raw(HEARTBEAT_OK.to_owned())),
    ]
}

/// A type-3 push: type, five one-byte lengths, encoding, then join_ref, ref, topic, event,
/// (empty) metadata and the payload.
fn binary_push() -> Vec<u8> {
    let fields = [JOIN_REF.unwrap(), BROADCAST_REF.unwrap(), TOPIC, EVENT, ""];
    let mut out = vec![BINARY_USER_BROADCAST_PUSH];
    out.extend(
        fields
            .iter()
            .map(|f| u8::try_from(f.len()).expect("fits one byte")),
    );
    out.push(PayloadEncoding::Json as u8);
    for f in fields {
        out.extend_from_slice(f.as_bytes());
    }
    out.extend_from_slice(PAYLOAD.as_bytes());
    out
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (env, payload) in client_pushes() {
        for vsn in Vsn::ALL {
            // The encoder writes exactly the client shapes: the object (v1) and the array (v2).
            let text = String::from_utf8(frame(vsn, env, &payload).data.to_vec()).expect("UTF-8");
            group.bench_function(BenchmarkId::new(env.0, format!("{vsn:?}")), |b| {
                b.iter(|| decode_text(black_box(&text)).expect("decodes"))
            });
        }
    }
    let push = binary_push();
    group.bench_function(BenchmarkId::new("broadcast", "V2_binary_type3"), |b| {
        b.iter(|| decode_binary(black_box(&push)).expect("decodes"))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (env, payload) in server_frames() {
        for vsn in Vsn::ALL {
            group.bench_function(BenchmarkId::new(env.0, format!("{vsn:?}")), |b| {
                b.iter(|| frame(vsn, env, black_box(&*payload)))
            });
        }
    }
    let payload = PAYLOAD.as_bytes();
    group.bench_function(BenchmarkId::new("broadcast", "V2_binary_type4"), |b| {
        b.iter(|| {
            encode_user_broadcast(TOPIC, EVENT, b"", PayloadEncoding::Json, black_box(payload))
                .expect("fields fit their one-byte lengths")
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
