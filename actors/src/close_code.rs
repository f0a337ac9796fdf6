//! The one list of WebSocket close codes Locus uses, with the reason text sent in the close frame.
//!
//! 4000–4499: the client should reconnect (after a backoff). 4500–4999: terminal, do not retry
//! without changing something. Reasons stay well under the 123-byte close-frame limit.

/// A close code and its short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: a normal close (client asked, or a clean shutdown of one socket).
    Normal,
    /// 1009: a frame larger than `session.frame_bytes_max`.
    MessageTooBig,
    /// 4001: the server is shutting down; reconnect elsewhere or later.
    ServerShutdown,
    /// 4002: nothing heard from the client for `client_timeout_ms`.
    HeartbeatTimeout,
    /// 4008: the outbound queue passed `outbound_queue_bytes_max`; queued messages were dropped.
    SlowConsumer,
    /// 4029: the client kept sending past its rate limits (`rate_limits.flood_rejections_max`).
    Flooding,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::MessageTooBig => 1009,
            CloseCode::ServerShutdown => 4001,
            CloseCode::HeartbeatTimeout => 4002,
            CloseCode::SlowConsumer => 4008,
            CloseCode::Flooding => 4029,
        }
    }

    /// The stable CamelCase code used in `system` messages, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "Normal",
            CloseCode::MessageTooBig => "MessageTooBig",
            CloseCode::ServerShutdown => "ServerShutdown",
            CloseCode::HeartbeatTimeout => "HeartbeatTimeout",
            CloseCode::SlowConsumer => "SlowConsumer",
            CloseCode::Flooding => "Flooding",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal close",
            CloseCode::MessageTooBig => "frame larger than session.frame_bytes_max",
            CloseCode::ServerShutdown => "server shutting down",
            CloseCode::HeartbeatTimeout => "no message within client_timeout_ms",
            CloseCode::SlowConsumer => "slow consumer: outbound queue full",
            CloseCode::Flooding => "too many messages past the rate limits",
        }
    }

    /// Whether a well-behaved client should reconnect after this close.
    pub fn should_reconnect(self) -> bool {
        (4000..4500).contains(&self.code()) || self == CloseCode::MessageTooBig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_a_close_frame() {
        for c in [
            CloseCode::Normal,
            CloseCode::MessageTooBig,
            CloseCode::ServerShutdown,
            CloseCode::HeartbeatTimeout,
            CloseCode::SlowConsumer,
            CloseCode::Flooding,
        ] {
            assert!(c.reason().len() <= 123, "{c:?}");
        }
        assert!(CloseCode::SlowConsumer.should_reconnect());
    }
}
