//! The JSON shapes of what clients push (join config, broadcast, presence, typing, token),
//! parsed with serde; binary frames carry only broadcasts.

use locus_protocol::Payload;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::publish::recovery::{RecoverConfig, ReplayConfig};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct JoinPayload {
    pub config: JoinConfig,
    pub access_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct JoinConfig {
    pub broadcast: BroadcastConfig,
    pub presence: PresenceConfig,
    pub recover: Option<RecoverConfig>,
    pub private: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct BroadcastConfig {
    #[serde(rename = "self")]
    pub self_broadcast: bool,
    pub ack: bool,
    pub replay: Option<ReplayConfig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PresenceConfig {
    pub key: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct BroadcastPayload {
    pub event: String,
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// A client id making a durable broadcast idempotent.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PresencePayload {
    pub event: String,
    #[serde(default)]
    pub payload: Option<Value>,
}

/// `{"typing": b}`, or realtime-js's `send({type: "typing", payload: {typing: b}})`.
#[derive(Deserialize)]
pub(super) struct TypingPayload {
    pub typing: Option<bool>,
    #[serde(default)]
    pub payload: Option<Box<TypingPayload>>,
}

impl TypingPayload {
    pub fn typing(&self) -> Option<bool> {
        self.typing
            .or_else(|| self.payload.as_ref().and_then(|p| p.typing))
    }
}

#[derive(Deserialize)]
pub(super) struct TokenPayload {
    pub access_token: Option<String>,
}

/// Parses a JSON payload into `T`; binary payloads are refused.
pub(super) fn json_payload<T: for<'de> Deserialize<'de>>(payload: &Payload) -> Result<T, String> {
    match payload {
        Payload::Json(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
        Payload::UserBroadcast(_) => Err("a binary frame is only accepted for broadcast".into()),
    }
}
