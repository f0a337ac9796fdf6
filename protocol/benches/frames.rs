//! Frame decode and encode, both protocol versions: a join with config, a broadcast with a
//! ~100-byte payload and a heartbeat (text), the binary user broadcast push (type 3, decode)
//! and server broadcast (type 4, encode).
//!
//! Run: `cargo bench -p locus-protocol --bench frames`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use locus_protocol::{
    decode_binary, decode_text, encode_message, encode_user_broadcast, PayloadEncoding, Vsn,
};
use serde_json::value::RawValue;

/// The broadcast payload used throughout: about 100 bytes of JSON.
const PAYLOAD: &str =
    r#"{"t":1732450000000,"user":"u-42","text":"hello from the load generator, 100 bytes","n":7}"#;

fn text_frames() -> [(&'static str, String); 6] {
    let join_cfg = r#"{"config":{"broadcast":{"self":false,"ack":true},"presence":{"key":"u-42"},"private":false}}"#;
    let bcast = format!(r#"{{"type":"broadcast","event":"m","payload":{PAYLOAD}}}"#);
    [
        (
            "v1_join",
            format!(
                r#"{{"join_ref":"1","ref":"1","topic":"realtime:room","event":"phx_join","payload":{join_cfg}}}"#
            ),
        ),
        (
            "v1_broadcast",
            format!(
                r#"{{"join_ref":"1","ref":"2","topic":"realtime:room","event":"broadcast","payload":{bcast}}}"#
            ),
        ),
        (
            "v1_heartbeat",
            r#"{"join_ref":null,"ref":"3","topic":"phoenix","event":"heartbeat","payload":{}}"#
                .to_owned(),
        ),
        (
            "v2_join",
            format!(r#"["1","1","realtime:room","phx_join",{join_cfg}]"#),
        ),
        (
            "v2_broadcast",
            format!(r#"["1","2","realtime:room","broadcast",{bcast}]"#),
        ),
        (
            "v2_heartbeat",
            r#"[null,"3","phoenix","heartbeat",{}]"#.to_owned(),
        ),
    ]
}

/// A type 3 push: header, join_ref, ref, topic, event, no metadata, JSON payload.
fn binary_push() -> Vec<u8> {
    let (join_ref, msg_ref, topic, event) = ("1", "2", "realtime:room", "m");
    let mut out = vec![
        3,
        join_ref.len() as u8,
        msg_ref.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        PayloadEncoding::Json as u8,
    ];
    for part in [join_ref, msg_ref, topic, event, PAYLOAD] {
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn frames(c: &mut Criterion) {
    let mut decode = c.benchmark_group("decode");
    for (name, text) in text_frames() {
        decode.bench_function(name, |b| b.iter(|| decode_text(black_box(&text)).unwrap()));
    }
    let push = binary_push();
    decode.bench_function("v2_binary_push", |b| {
        b.iter(|| decode_binary(black_box(&push)).unwrap())
    });
    decode.finish();

    let payload = RawValue::from_string(PAYLOAD.to_owned()).unwrap();
    let mut encode = c.benchmark_group("encode");
    for (name, vsn) in [("v1_broadcast", Vsn::V1), ("v2_broadcast", Vsn::V2)] {
        encode.bench_function(name, |b| {
            b.iter(|| {
                encode_message(
                    vsn,
                    None,
                    None,
                    "realtime:room",
                    "broadcast",
                    black_box(&payload),
                )
            })
        });
    }
    encode.bench_function("v2_binary_broadcast", |b| {
        b.iter(|| {
            encode_user_broadcast(
                "realtime:room",
                "m",
                b"",
                PayloadEncoding::Json,
                black_box(PAYLOAD.as_bytes()),
            )
        })
    });
    encode.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
