//! Encoding of server frames for either protocol version.
//!
//! Payloads arrive already serialized (`&RawValue`), so a room serializes a message's payload once
//! and wraps it once per protocol version; the resulting [`OutFrame`] is shared (a cheap `Bytes`
//! clone) by every member speaking that version.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::frame::PayloadEncoding;
use crate::Vsn;

/// Binary frame type of a server user broadcast (Supabase's `USER_BROADCAST`).
pub const BINARY_USER_BROADCAST: u8 = 4;
/// Each variable field of a binary frame has a one-byte length.
pub const BINARY_FIELD_BYTES_MAX: usize = 255;

/// One encoded server frame, ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    pub data: Bytes,
    /// Binary WebSocket frame (vsn 2.0.0 user broadcast) rather than text.
    pub binary: bool,
}

impl OutFrame {
    /// Bytes this frame holds in an outbound queue.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("string serialization is infallible");
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Encodes `{join_ref, ref, topic, event, payload}` as a text frame of the given version.
pub fn encode_message(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &RawValue,
) -> OutFrame {
    let mut out = Vec::with_capacity(48 + topic.len() + event.len() + payload.get().len());
    match vsn {
        Vsn::V1 => {
            out.extend_from_slice(b"{\"join_ref\":");
            push_opt_str(&mut out, join_ref);
            out.extend_from_slice(b",\"ref\":");
            push_opt_str(&mut out, msg_ref);
            out.extend_from_slice(b",\"topic\":");
            push_json_str(&mut out, topic);
            out.extend_from_slice(b",\"event\":");
            push_json_str(&mut out, event);
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(payload.get().as_bytes());
            out.push(b'}');
        }
        Vsn::V2 => {
            out.push(b'[');
            push_opt_str(&mut out, join_ref);
            out.push(b',');
            push_opt_str(&mut out, msg_ref);
            out.push(b',');
            push_json_str(&mut out, topic);
            out.push(b',');
            push_json_str(&mut out, event);
            out.push(b',');
            out.extend_from_slice(payload.get().as_bytes());
            out.push(b']');
        }
    }
    OutFrame {
        data: Bytes::from(out),
        binary: false,
    }
}

/// Encodes a vsn 2.0.0 binary user broadcast (type 4):
/// `type | topic_len | event_len | metadata_len | encoding | topic | event | metadata | payload`.
///
/// Returns `None` when a field does not fit its one-byte length; the caller then falls back to a
/// JSON frame.
pub fn encode_user_broadcast(
    topic: &str,
    event: &str,
    metadata: &[u8],
    encoding: PayloadEncoding,
    payload: &[u8],
) -> Option<OutFrame> {
    let lens = [topic.len(), event.len(), metadata.len()];
    if lens.iter().any(|&l| l > BINARY_FIELD_BYTES_MAX) {
        return None;
    }
    let mut out = Vec::with_capacity(5 + lens.iter().sum::<usize>() + payload.len());
    out.push(BINARY_USER_BROADCAST);
    out.extend(lens.iter().map(|&l| l as u8));
    out.push(encoding as u8);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(metadata);
    out.extend_from_slice(payload);
    Some(OutFrame {
        data: Bytes::from(out),
        binary: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_text;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip_through_the_decoder() {
        let payload = raw(r#"{"status":"ok","response":{}}"#);
        for vsn in Vsn::ALL {
            let f = encode_message(
                vsn,
                Some("1"),
                Some("2"),
                "realtime:\"q\"",
                "phx_reply",
                &payload,
            );
            let back = decode_text(std::str::from_utf8(&f.data).unwrap()).unwrap();
            assert_eq!(back.topic, "realtime:\"q\"");
            assert_eq!(back.join_ref.as_deref(), Some("1"));
            assert_eq!(back.msg_ref.as_deref(), Some("2"));
        }
    }

    #[test]
    fn v2_layout_is_a_five_element_array_with_nulls() {
        let f = encode_message(Vsn::V2, None, None, "realtime:a", "broadcast", &raw("{}"));
        assert_eq!(&f.data[..], br#"[null,null,"realtime:a","broadcast",{}]"#);
    }

    #[test]
    fn user_broadcast_layout_matches_type_4() {
        let f = encode_user_broadcast("t", "ev", b"{}", PayloadEncoding::Json, b"[1]").unwrap();
        assert!(f.binary);
        assert_eq!(&f.data[..], b"\x04\x01\x02\x02\x01tev{}[1]");
        assert!(
            encode_user_broadcast(&"x".repeat(256), "e", b"", PayloadEncoding::Binary, b"")
                .is_none()
        );
    }
}
