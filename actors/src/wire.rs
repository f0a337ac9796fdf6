//! Server messages the actors send: broadcasts, replies, closes, errors, `system` notices.
//!
//! All are built here so their shapes (Supabase's) are defined once.

use locus_protocol::{encode_message, encode_user_broadcast, OutFrame, PayloadEncoding, Vsn};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::broker::Body;
use crate::refusal::Refusal;

/// Turns an already-serialized JSON string into a payload for [`encode_message`].
pub fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).expect("callers pass serde_json output")
}

/// `phx_reply` with `{"status": status, "response": response}`.
pub fn reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    ok: bool,
    response: &RawValue,
) -> OutFrame {
    #[derive(Serialize)]
    struct Reply<'a> {
        status: &'static str,
        response: &'a RawValue,
    }
    let payload = serde_json::to_string(&Reply {
        status: if ok { "ok" } else { "error" },
        response,
    })
    .expect("reply serializes");
    encode_message(vsn, join_ref, msg_ref, topic, "phx_reply", &raw(payload))
}

/// `phx_reply` ok with an empty response.
pub fn reply_ok(vsn: Vsn, join_ref: Option<&str>, msg_ref: Option<&str>, topic: &str) -> OutFrame {
    reply(vsn, join_ref, msg_ref, topic, true, &raw("{}".into()))
}

/// `phx_reply` error with `{"reason": "<Code>: <detail>"}`, Supabase's error shape.
pub fn reply_error(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    refusal: &Refusal,
) -> OutFrame {
    let response = serde_json::json!({ "reason": refusal.to_string() }).to_string();
    reply(vsn, join_ref, msg_ref, topic, false, &raw(response))
}

/// `phx_close` for the channel `join_ref` of `topic`.
pub fn close(vsn: Vsn, join_ref: Option<&str>, topic: &str) -> OutFrame {
    encode_message(
        vsn,
        join_ref,
        join_ref,
        topic,
        "phx_close",
        &raw("{}".into()),
    )
}

/// `phx_error` for the channel `join_ref` of `topic`: the channel failed and should rejoin.
pub fn channel_error(vsn: Vsn, join_ref: Option<&str>, topic: &str) -> OutFrame {
    encode_message(
        vsn,
        join_ref,
        join_ref,
        topic,
        "phx_error",
        &raw("{}".into()),
    )
}

/// `system` message `{"message","status","extension","channel"}` on `topic`.
pub fn system(vsn: Vsn, topic: &str, ok: bool, extension: &str, message: &str) -> OutFrame {
    let channel = topic
        .strip_prefix(crate::topic::TOPIC_PREFIX)
        .unwrap_or(topic);
    let payload = serde_json::json!({
        "message": message,
        "status": if ok { "ok" } else { "error" },
        "extension": extension,
        "channel": channel,
    })
    .to_string();
    encode_message(vsn, None, None, topic, "system", &raw(payload))
}

/// Encodes a user broadcast for one protocol version, with the durable `meta` when given.
///
/// vsn 1.0.0 gets `{"type":"broadcast","event","payload","meta"?}` in a JSON frame; an opaque
/// binary payload cannot be expressed there and yields `None`. vsn 2.0.0 gets the binary type-4
/// frame (meta in its metadata field) when the publication came in binary, and the JSON array
/// frame otherwise.
pub fn encode_broadcast(
    vsn: Vsn,
    topic: &str,
    event: &str,
    body: &Body,
    meta: Option<&str>,
) -> Option<OutFrame> {
    let json_payload = |payload: &str| {
        let mut s =
            String::with_capacity(64 + event.len() + payload.len() + meta.map_or(0, str::len));
        s.push_str(r#"{"type":"broadcast","event":"#);
        s.push_str(&serde_json::to_string(event).expect("string serializes"));
        s.push_str(r#","payload":"#);
        s.push_str(payload);
        if let Some(meta) = meta {
            s.push_str(r#","meta":"#);
            s.push_str(meta);
        }
        s.push('}');
        encode_message(vsn, None, None, topic, "broadcast", &raw(s))
    };
    match (vsn, body) {
        (_, Body::Event(payload)) => Some(encode_message(vsn, None, None, topic, event, payload)),
        (_, Body::Json(payload)) => Some(json_payload(payload.get())),
        (Vsn::V2, Body::Binary { encoding, data }) => {
            let metadata = meta.unwrap_or("").as_bytes();
            encode_user_broadcast(topic, event, metadata, *encoding, data).or_else(
                || match encoding {
                    PayloadEncoding::Json => std::str::from_utf8(data).ok().map(json_payload),
                    PayloadEncoding::Binary => None,
                },
            )
        }
        (
            Vsn::V1,
            Body::Binary {
                encoding: PayloadEncoding::Json,
                data,
            },
        ) => std::str::from_utf8(data).ok().map(json_payload),
        (
            Vsn::V1,
            Body::Binary {
                encoding: PayloadEncoding::Binary,
                ..
            },
        ) => None,
    }
}
