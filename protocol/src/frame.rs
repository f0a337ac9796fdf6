//! Decoding of client frames: vsn 1.0.0 objects, vsn 2.0.0 arrays and binary pushes (type 3).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Binary frame type of a client user-broadcast push (Supabase's `USER_BROADCAST_PUSH`).
pub const BINARY_USER_BROADCAST_PUSH: u8 = 3;
/// Length of the fixed header of a type-3 frame: type and six one-byte lengths/flags.
const PUSH_HEADER_BYTES: usize = 7;

/// One decoded client message.
#[derive(Debug)]
pub struct InboundFrame {
    /// The `join_ref` of the channel join this message belongs to.
    pub join_ref: Option<String>,
    /// The client's message reference, echoed in the reply.
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Payload,
}

/// A decoded payload: raw JSON (parsed later by whoever handles the event) or a binary broadcast.
#[derive(Debug)]
pub enum Payload {
    Json(Box<RawValue>),
    UserBroadcast(UserBroadcast),
}

/// How the payload bytes of a binary broadcast are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    Binary = 0,
    Json = 1,
}

/// A user broadcast carried in a binary frame.
#[derive(Debug, Clone)]
pub struct UserBroadcast {
    /// The user event name (`channel.send({event})`).
    pub event: String,
    pub encoding: PayloadEncoding,
    pub payload: Bytes,
}

/// Why a frame could not be decoded. Each variant maps to a stable reason sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    #[error("frame does not have the shape of a Phoenix message: {0}")]
    BadShape(String),
    #[error("binary frame is truncated")]
    Truncated,
    #[error("binary frame type {0} is not accepted from clients")]
    UnknownBinaryType(u8),
    #[error("binary frame payload encoding {0} is unknown")]
    UnknownEncoding(u8),
    #[error("a binary frame field is not UTF-8")]
    NotUtf8,
    #[error("binary broadcast metadata is not a JSON object")]
    BadMetadata,
}

/// A reference as clients send it: Phoenix sends strings, some clients numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Ref {
    Str(String),
    Num(serde_json::Number),
}

impl Ref {
    fn into_string(self) -> String {
        match self {
            Ref::Str(s) => s,
            Ref::Num(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct V1Frame {
    topic: String,
    event: String,
    payload: Box<RawValue>,
    #[serde(rename = "ref", default)]
    msg_ref: Option<Ref>,
    #[serde(default)]
    join_ref: Option<Ref>,
}

type V2Frame = (Option<Ref>, Option<Ref>, String, String, Box<RawValue>);

/// Decodes a text frame: a JSON object for vsn 1.0.0, a JSON array for vsn 2.0.0.
///
/// Either shape is accepted on either version: the shape is unambiguous, and being lenient here
/// costs nothing while sparing clients that mix them.
pub fn decode_text(text: &str) -> Result<InboundFrame, DecodeError> {
    let first = text.trim_start().as_bytes().first().copied();
    match first {
        Some(b'{') => {
            let f: V1Frame =
                serde_json::from_str(text).map_err(|e| classify_json_error(&e, text))?;
            Ok(InboundFrame {
                join_ref: f.join_ref.map(Ref::into_string),
                msg_ref: f.msg_ref.map(Ref::into_string),
                topic: f.topic,
                event: f.event,
                payload: Payload::Json(f.payload),
            })
        }
        Some(b'[') => {
            let (join_ref, msg_ref, topic, event, payload): V2Frame =
                serde_json::from_str(text).map_err(|e| classify_json_error(&e, text))?;
            Ok(InboundFrame {
                join_ref: join_ref.map(Ref::into_string),
                msg_ref: msg_ref.map(Ref::into_string),
                topic,
                event,
                payload: Payload::Json(payload),
            })
        }
        _ => Err(DecodeError::NotJson(
            "expected a JSON object or array".into(),
        )),
    }
}

fn classify_json_error(e: &serde_json::Error, text: &str) -> DecodeError {
    if e.is_syntax() || e.is_eof() || serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        DecodeError::NotJson(e.to_string())
    } else {
        DecodeError::BadShape(e.to_string())
    }
}

/// Decodes a binary frame. Clients may only send the user-broadcast push (type 3):
/// `type | join_ref_len | ref_len | topic_len | event_len | metadata_len | encoding |
///  join_ref | ref | topic | event | metadata | payload`.
pub fn decode_binary(data: &[u8]) -> Result<InboundFrame, DecodeError> {
    let (encoding, fields, rest) = binary_fields(data)?;
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8)
    };
    let opt = |b: &[u8]| -> Result<Option<String>, DecodeError> {
        if b.is_empty() {
            Ok(None)
        } else {
            text(b).map(Some)
        }
    };
    // The metadata is the client's JSON object (realtime-js sends `{}` or nothing); anything
    // else is a malformed push, answered rather than ignored.
    let metadata = fields[4];
    if !metadata.is_empty()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(metadata).is_err()
    {
        return Err(DecodeError::BadMetadata);
    }
    if encoding == PayloadEncoding::Json
        && serde_json::from_slice::<serde::de::IgnoredAny>(rest).is_err()
    {
        return Err(DecodeError::NotJson(
            "binary broadcast payload marked JSON is not JSON".into(),
        ));
    }
    Ok(InboundFrame {
        join_ref: opt(fields[0])?,
        msg_ref: opt(fields[1])?,
        topic: text(fields[2])?,
        event: "broadcast".to_owned(),
        payload: Payload::UserBroadcast(UserBroadcast {
            event: text(fields[3])?,
            encoding,
            payload: Bytes::copy_from_slice(rest),
        }),
    })
}

/// A binary push split up: its encoding, its five length-prefixed fields (join_ref, ref, topic,
/// event, metadata) and the payload after them.
type BinaryFields<'a> = (PayloadEncoding, [&'a [u8]; 5], &'a [u8]);

/// Splits the header and fields of a binary push.
fn binary_fields(data: &[u8]) -> Result<BinaryFields<'_>, DecodeError> {
    let (&kind, _) = data.split_first().ok_or(DecodeError::Truncated)?;
    if kind != BINARY_USER_BROADCAST_PUSH {
        return Err(DecodeError::UnknownBinaryType(kind));
    }
    if data.len() < PUSH_HEADER_BYTES {
        return Err(DecodeError::Truncated);
    }
    let lens = [data[1], data[2], data[3], data[4], data[5]].map(usize::from);
    let encoding = match data[6] {
        0 => PayloadEncoding::Binary,
        1 => PayloadEncoding::Json,
        other => return Err(DecodeError::UnknownEncoding(other)),
    };
    let mut rest = &data[PUSH_HEADER_BYTES..];
    let mut fields: [&[u8]; 5] = [&[]; 5];
    for (field, len) in fields.iter_mut().zip(lens) {
        if rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = rest.split_at(len);
        *field = head;
        rest = tail;
    }
    Ok((encoding, fields, rest))
}

/// Where to send an error reply for a binary push that failed to decode:
/// `(join_ref, ref, topic)` when its header and those fields are readable.
pub fn salvage_binary_target(data: &[u8]) -> Option<(Option<String>, Option<String>, String)> {
    let (_, fields, _) = binary_fields(data).ok()?;
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let opt = |b: &[u8]| {
        if b.is_empty() {
            Some(None)
        } else {
            text(b).map(Some)
        }
    };
    Some((opt(fields[0])?, opt(fields[1])?, text(fields[2])?))
}

/// Best effort to find where to send an error reply for a frame that failed to decode:
/// `(join_ref, ref, topic)` when the frame is JSON with a recognisable envelope.
pub fn salvage_target(text: &str) -> Option<(Option<String>, Option<String>, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let as_ref = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match &v {
        serde_json::Value::Object(m) => {
            let topic = m.get("topic")?.as_str()?.to_owned();
            Some((as_ref(m.get("join_ref")), as_ref(m.get("ref")), topic))
        }
        serde_json::Value::Array(a) => {
            let topic = a.get(2)?.as_str()?.to_owned();
            Some((as_ref(a.first()), as_ref(a.get(1)), topic))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v1_object_with_string_refs() {
        let f = decode_text(r#"{"topic":"realtime:a","event":"phx_join","payload":{"x":1},"ref":"1","join_ref":"1"}"#).unwrap();
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
}
