//! The bytes of one message between nodes: a kind, the sending node, a small JSON header and an
//! opaque body (a publication's payload as it came, never re-encoded).
//!
//! Layout: `[kind: u8][origin: u64 LE][header length: u32 LE][header JSON][body]`. JSON for the
//! header keeps it readable with `nats sub` and versionable by field; the payload is raw bytes
//! so a broadcast costs one copy into the message, not a JSON round trip.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::broker::NodeRef;

/// Bytes before the header: kind, origin and the header length.
const PREFIX_BYTES: usize = 1 + 8 + 4;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Publication = 1,
    Presence = 2,
    Snapshot = 3,
    GeoPost = 4,
    Beacons = 5,
    Heartbeat = 6,
    Bye = 7,
    Sync = 8,
    Typing = 9,
    Near = 10,
    Resync = 11,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Publication,
        Kind::Presence,
        Kind::Snapshot,
        Kind::GeoPost,
        Kind::Beacons,
        Kind::Heartbeat,
        Kind::Bye,
        Kind::Sync,
        Kind::Typing,
        Kind::Near,
        Kind::Resync,
    ];

    /// The `kind` label of `locus_cluster_messages_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Publication => "publication",
            Kind::Presence => "presence",
            Kind::Snapshot => "snapshot",
            Kind::GeoPost => "geo_post",
            Kind::Beacons => "beacons",
            Kind::Heartbeat => "heartbeat",
            Kind::Bye => "bye",
            Kind::Sync => "sync",
            Kind::Typing => "typing",
            Kind::Near => "near",
            Kind::Resync => "resync",
        }
    }
}

/// Why a message from NATS was not understood.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message shorter than its prefix or header")]
    Truncated,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("bad header: {0}")]
    Header(#[from] serde_json::Error),
}

/// A decoded message: the header still to be read as its kind's type.
#[derive(Debug)]
pub struct Envelope {
    pub kind: Kind,
    pub origin: NodeRef,
    header: Bytes,
    pub body: Bytes,
}

impl Envelope {
    pub fn decode(mut bytes: Bytes) -> Result<Envelope, EnvelopeError> {
        if bytes.len() < PREFIX_BYTES {
            return Err(EnvelopeError::Truncated);
        }
        let kind = Kind::ALL
            .into_iter()
            .find(|k| *k as u8 == bytes[0])
            .ok_or(EnvelopeError::UnknownKind(bytes[0]))?;
        let origin = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let header_len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
        if bytes.len() < PREFIX_BYTES + header_len {
            return Err(EnvelopeError::Truncated);
        }
        let _ = bytes.split_to(PREFIX_BYTES);
        let header = bytes.split_to(header_len);
        Ok(Envelope {
            kind,
            origin,
            header,
            body: bytes,
        })
    }

    /// The header as `T`.
    pub fn header<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        Ok(serde_json::from_slice(&self.header)?)
    }
}

/// One message of `kind` from `origin`.
pub fn encode(kind: Kind, origin: NodeRef, header: &impl Serialize, body: &[u8]) -> Bytes {
    let header = serde_json::to_vec(header).expect("cluster headers serialize");
    let mut out = BytesMut::with_capacity(PREFIX_BYTES + header.len() + body.len());
    out.put_u8(kind as u8);
    out.put_u64_le(origin);
    out.put_u32_le(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message decodes to the kind, origin, header and body it was encoded with, and
    /// anything shorter or of an unknown kind is an error rather than a panic.
    #[test]
    fn messages_round_trip_and_bad_bytes_are_errors() {
        let bytes = encode(
            Kind::Publication,
            42,
            &serde_json::json!({"t": "a"}),
            b"xyz",
        );
        let e = Envelope::decode(bytes.clone()).unwrap();
        assert_eq!((e.kind, e.origin), (Kind::Publication, 42));
        assert_eq!(e.header::<serde_json::Value>().unwrap()["t"], "a");
        assert_eq!(&e.body[..], b"xyz");
        for cut in 0..bytes.len() - 3 {
            assert!(
                Envelope::decode(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut unknown = bytes.to_vec();
        unknown[0] = 99;
        assert!(matches!(
            Envelope::decode(Bytes::from(unknown)),
            Err(EnvelopeError::UnknownKind(99))
        ));
    }
}
