//! Server messages the actors send besides broadcasts: replies, closes, errors, `system` notices.
//!
//! All are built here so their shapes (Supabase's) are defined once.

use locus_protocol::{encode_message, OutFrame, Vsn};
use serde::Serialize;
use serde_json::value::RawValue;

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

/// `phx_reply` error with `{"reason": "<Code>: <message>"}`, Supabase's error shape.
pub fn reply_error(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    code: &str,
    message: &str,
) -> OutFrame {
    let response = serde_json::json!({ "reason": format!("{code}: {message}") }).to_string();
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
