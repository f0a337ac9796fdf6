//! Unit tests of frame decoding: both JSON versions, binary pushes, reply-target salvage, and
//! properties that any input decodes without panicking, in bounded time and memory.

use super::*;

#[test]
fn decodes_v1_object_with_string_refs() {
    let f = decode_text(
        r#"{"topic":"realtime:a","event":"phx_join","payload":{"x":1},"ref":"1","join_ref":"1"}"#,
    )
    .unwrap();
    assert_eq!(f.topic, "realtime:a");
    assert_eq!(f.event, "phx_join");
    assert_eq!(f.msg_ref.as_deref(), Some("1"));
    assert!(matches!(f.payload, Payload::Json(ref p) if p.get() == r#"{"x":1}"#));
}

#[test]
fn decodes_v2_array_with_null_join_ref_and_numeric_ref() {
    let f = decode_text(r#"[null,26,"phoenix","heartbeat",{}]"#).unwrap();
    assert_eq!(f.join_ref, None);
    assert_eq!(f.msg_ref.as_deref(), Some("26"));
    assert_eq!(f.topic, "phoenix");
}

#[test]
fn rejects_non_json_and_wrong_shapes_with_distinct_errors() {
    assert!(matches!(decode_text("hello"), Err(DecodeError::NotJson(_))));
    assert!(matches!(
        decode_text("{\"topic\":"),
        Err(DecodeError::NotJson(_))
    ));
    assert!(matches!(
        decode_text(r#"{"topic":1}"#),
        Err(DecodeError::BadShape(_))
    ));
    assert!(matches!(
        decode_text(r#"[1,2]"#),
        Err(DecodeError::BadShape(_))
    ));
}

#[test]
fn decodes_binary_user_broadcast_push() {
    let mut frame = vec![3, 1, 1, 10, 4, 0, 1];
    frame.extend_from_slice(b"12realtime:ahey!");
    frame.extend_from_slice(br#"{"a":1}"#);
    let f = decode_binary(&frame).unwrap();
    assert_eq!(f.join_ref.as_deref(), Some("1"));
    assert_eq!(f.msg_ref.as_deref(), Some("2"));
    assert_eq!(f.topic, "realtime:a");
    let Payload::UserBroadcast(b) = f.payload else {
        panic!("not a broadcast")
    };
    assert_eq!(b.event, "hey!");
    assert_eq!(b.encoding, PayloadEncoding::Json);
    assert_eq!(&b.payload[..], br#"{"a":1}"#);
}

#[test]
fn rejects_truncated_and_unknown_binary_frames() {
    assert_eq!(decode_binary(&[]).unwrap_err(), DecodeError::Truncated);
    assert_eq!(
        decode_binary(&[3, 1, 1]).unwrap_err(),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_binary(&[3, 9, 0, 0, 0, 0, 1, b'x']).unwrap_err(),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_binary(&[4, 0, 0, 0, 0, 0, 0]).unwrap_err(),
        DecodeError::UnknownBinaryType(4)
    );
    assert_eq!(
        decode_binary(&[3, 0, 0, 0, 0, 0, 7]).unwrap_err(),
        DecodeError::UnknownEncoding(7)
    );
}

/// A binary push whose metadata is not a JSON object is refused, with its reply target
/// still readable so the client gets an error reply.
#[test]
fn binary_metadata_must_be_a_json_object() {
    let push = |metadata: &[u8]| {
        let mut frame = vec![3, 1, 1, 10, 4, metadata.len() as u8, 1];
        frame.extend_from_slice(b"12realtime:ahey!");
        frame.extend_from_slice(metadata);
        frame.extend_from_slice(br#"{"a":1}"#);
        frame
    };
    assert!(decode_binary(&push(b"")).is_ok());
    assert!(decode_binary(&push(b"{}")).is_ok());
    for bad in [&b"[1]"[..], b"nope", b"7", b"{"] {
        assert_eq!(
            decode_binary(&push(bad)).unwrap_err(),
            DecodeError::BadMetadata
        );
        assert_eq!(
            salvage_binary_target(&push(bad)),
            Some((Some("1".into()), Some("2".into()), "realtime:a".into()))
        );
    }
}

#[test]
fn salvages_reply_target_from_bad_payload() {
    let t = salvage_target(r#"{"topic":"realtime:a","event":5,"ref":"9"}"#).unwrap();
    assert_eq!(t, (None, Some("9".into()), "realtime:a".into()));
    assert!(salvage_target("nope").is_none());
}

/// Time one decode may take: the decoder is linear in its input, so anything near this
/// is a blow-up, not a slow machine.
const CASE_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes a decoded frame holds: never more than its input plus the fixed event name.
fn held_bytes(f: &InboundFrame) -> usize {
    let payload = match &f.payload {
        Payload::Json(raw) => raw.get().len(),
        Payload::UserBroadcast(b) => b.event.len() + b.payload.len(),
    };
    f.topic.len()
        + f.event.len()
        + f.join_ref.as_ref().map_or(0, String::len)
        + f.msg_ref.as_ref().map_or(0, String::len)
        + payload
}

/// Decodes `data` every way a client frame is decoded, within the time bound, and checks
/// that what a decoded frame holds is bounded by what came in (no amplification).
fn decode_bounded(data: &[u8]) {
    let started = std::time::Instant::now();
    if let Ok(f) = decode_binary(data) {
        assert!(held_bytes(&f) <= data.len() + "broadcast".len());
    }
    let _ = salvage_binary_target(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(f) = decode_text(text) {
            // Numeric refs are re-rendered as text (`1e5` → `100000.0`): a little slack.
            assert!(held_bytes(&f) <= text.len() + 64);
        }
        let _ = salvage_target(text);
    }
    assert!(
        started.elapsed() < CASE_TIME_MAX,
        "took {:?}",
        started.elapsed()
    );
}

proptest::proptest! {
    /// No input, text or binary, makes the decoder panic, take long or hold more than it
    /// was given.
    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        decode_bounded(&data);
    }

    /// Structured-looking binary pushes with arbitrary lengths never panic either.
    #[test]
    fn binary_push_with_random_lengths_never_panics(
        lens in proptest::collection::vec(0u8..=255, 6),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        let mut frame = vec![3u8];
        frame.extend_from_slice(&lens);
        frame.extend_from_slice(&body);
        decode_bounded(&frame);
    }

    /// Phoenix-shaped text frames with arbitrary fields (deep nesting included) decode
    /// within the bounds.
    #[test]
    fn phoenix_shaped_text_frames_stay_bounded(
        refs in proptest::collection::vec(proptest::option::of("[0-9a-z]{0,80}"), 2),
        topic in ".{0,300}",
        event in "[a-z_]{0,20}",
        depth in 0usize..200,
    ) {
        let payload = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let text = serde_json::json!([refs[0], refs[1], topic, event, null]).to_string();
        let text = text.replacen("null", &payload, 1);
        decode_bounded(text.as_bytes());
    }
}
