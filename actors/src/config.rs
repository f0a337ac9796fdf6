//! Limits of sessions and rooms, as they appear under `[session]` and `[room]` in config.toml.
//!
//! Each field states its unit in its name and its default in its doc.

use serde::Deserialize;

/// `[session]`: one connected client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLimits {
    /// Bytes of encoded frames a connection may have queued before it is a slow consumer and is
    /// disconnected with 4008. Default 1,048,576 (1 MiB).
    pub outbound_queue_bytes_max: usize,
    /// A connection silent (no frame, not even a heartbeat) for this long is closed with 4002.
    /// Default 60,000.
    pub client_timeout_ms: u64,
    /// How often a session checks its silence against `client_timeout_ms`. Default 5,000.
    pub timeout_check_interval_ms: u64,
    /// Largest WebSocket frame accepted from a client; larger frames close the socket with 1009.
    /// Default 262,144 (256 KiB).
    pub frame_bytes_max: usize,
    /// Channels one connection may have joined at once. Default 100.
    pub channels_per_connection_max: usize,
    /// Longest topic accepted, in bytes (binary frames cannot carry more than 255). Default 255.
    pub topic_bytes_max: usize,
    /// How long a closing connection gets to deliver its close frame before it is dropped.
    /// Default 2,000.
    pub close_grace_ms: u64,
    /// Capacity of the session actor's mailbox, in messages. Default 64.
    pub mailbox_capacity: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            outbound_queue_bytes_max: 1024 * 1024,
            client_timeout_ms: 60_000,
            timeout_check_interval_ms: 5_000,
            frame_bytes_max: 256 * 1024,
            channels_per_connection_max: 100,
            topic_bytes_max: 255,
            close_grace_ms: 2_000,
            mailbox_capacity: 64,
        }
    }
}

/// `[room]`: one topic's actor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomLimits {
    /// Capacity of a room's mailbox, in messages. A publication arriving when it is full is
    /// refused with `RoomBusy` and counted as `room_mailbox_full`. Default 4,096.
    pub mailbox_capacity: usize,
    /// A `typing: true` expires this long after its last refresh. Default 6,000.
    pub typing_ttl_ms: u64,
    /// A user's repeated `typing: true` is re-announced at most once per this period.
    /// Default 1,500.
    pub typing_throttle_ms: u64,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            mailbox_capacity: 4096,
            typing_ttl_ms: 6_000,
            typing_throttle_ms: 1_500,
        }
    }
}

/// A cross-limit that does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid limits: {0}")]
pub struct LimitsError(pub String);

impl SessionLimits {
    /// Checks the limits against each other.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |s: &str| Err(LimitsError(s.to_owned()));
        if self.timeout_check_interval_ms == 0
            || self.timeout_check_interval_ms > self.client_timeout_ms
        {
            return err(
                "session.timeout_check_interval_ms must be in 1..=session.client_timeout_ms",
            );
        }
        if self.frame_bytes_max > self.outbound_queue_bytes_max {
            return err("session.frame_bytes_max must not exceed session.outbound_queue_bytes_max");
        }
        if self.mailbox_capacity == 0
            || self.channels_per_connection_max == 0
            || self.topic_bytes_max == 0
        {
            return err("session.mailbox_capacity, channels_per_connection_max and topic_bytes_max must be positive");
        }
        Ok(())
    }
}

impl RoomLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.mailbox_capacity == 0 {
            return Err(LimitsError("room.mailbox_capacity must be positive".into()));
        }
        if self.typing_throttle_ms >= self.typing_ttl_ms {
            return Err(LimitsError(
                "room.typing_throttle_ms must be below room.typing_ttl_ms".into(),
            ));
        }
        Ok(())
    }
}
