//! The Phoenix / Supabase Realtime wire format, free of any I/O or actor code.
//!
//! # Layout
//! - [`frame`]: decoding client frames — vsn 1.0.0 JSON objects, vsn 2.0.0 JSON arrays and the
//!   vsn 2.0.0 binary user-broadcast push (type 3).
//! - [`encode`]: encoding server frames for either version, including the binary user
//!   broadcast (type 4), so a room can encode a message once per version and share the bytes.
//!
//! Keeping this crate pure lets the decoder be fuzzed and benchmarked on its own.

pub mod encode;
pub mod frame;

pub use encode::{encode_message, encode_user_broadcast, OutFrame};
pub use frame::{
    decode_binary, decode_text, salvage_binary_target, salvage_target, DecodeError, InboundFrame,
    Payload, PayloadEncoding, UserBroadcast,
};

/// Protocol version negotiated by the `vsn` query parameter of the socket URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `1.0.0`: every frame is a JSON object (the default when `vsn` is absent).
    V1,
    /// `2.0.0`: JSON arrays, plus binary frames for user broadcasts.
    V2,
}

impl Vsn {
    /// Parses the `vsn` query value; `None` for versions this engine does not speak.
    pub fn parse(value: Option<&str>) -> Option<Vsn> {
        match value {
            None | Some("1.0.0") | Some("1") => Some(Vsn::V1),
            Some("2.0.0") | Some("2") => Some(Vsn::V2),
            Some(_) => None,
        }
    }

    /// Index of this version in per-version arrays (`[V1, V2]`).
    pub fn index(self) -> usize {
        match self {
            Vsn::V1 => 0,
            Vsn::V2 => 1,
        }
    }

    /// Both versions, in [`Vsn::index`] order.
    pub const ALL: [Vsn; 2] = [Vsn::V1, Vsn::V2];
}

/// The topic of socket-level messages (heartbeats).
pub const PHOENIX_TOPIC: &str = "phoenix";
