//! A connection end to end, below the session: what the socket's read side hands the session
//! ([`SocketEvent`]), the outbound queue bounded in bytes ([`outbox`]), the writer task that
//! drains it into the socket with the slow-consumer policy ([`writer`]), and the connection
//! slots it holds ([`slots`]). The server crate only upgrades the HTTP request.

pub mod outbox;
pub mod slots;
pub mod writer;

use bytes::Bytes;

/// What the socket reader hands the session.
#[derive(Debug)]
pub enum SocketEvent {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    /// The client sent a close frame.
    Close,
    /// A frame over `session.frame_bytes_max`.
    FrameTooBig,
    /// The WebSocket framing itself was broken.
    ProtocolError(String),
}

impl SocketEvent {
    /// Maps one item of actix-ws's aggregated stream (`None`: nothing for the session).
    pub fn from_ws(
        item: Result<actix_ws::AggregatedMessage, actix_ws::ProtocolError>,
    ) -> Option<SocketEvent> {
        use actix_ws::AggregatedMessage as M;
        Some(match item {
            Ok(M::Text(text)) => SocketEvent::Text(text.to_string()),
            Ok(M::Binary(data)) => SocketEvent::Binary(data),
            Ok(M::Ping(data)) => SocketEvent::Ping(data),
            Ok(M::Pong(_)) => return None,
            Ok(M::Close(_)) => SocketEvent::Close,
            Err(actix_ws::ProtocolError::Overflow) => SocketEvent::FrameTooBig,
            // The connection went away (reset or EOF mid-frame): a disconnect, not bad input.
            Err(actix_ws::ProtocolError::Io(_)) => SocketEvent::Close,
            Err(e) => SocketEvent::ProtocolError(e.to_string()),
        })
    }
}
