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
mod tests;
