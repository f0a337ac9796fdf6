//! Why a push, join or request was refused: a stable [`Code`] and a human detail, kept apart
//! from the start so the reply (`"reason": "<Code>: <detail>"`), the log line, the HTTP error
//! and the `code` metric label all use them as they are — nothing re-parses a message.
//!
//! The codes are Supabase Realtime's where it has one (`Unauthorized`, `TopicLimitReached`,
//! `ClientJoinRateLimitReached`, `InvalidJWTExpiration`, …); the rest name Locus's own limits.
//! A leaf module: the errors of other modules convert into a [`Refusal`] where they are defined.

/// A stable CamelCase refusal code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // The frame itself.
    MalformedMessage,
    MalformedJoin,
    MalformedBroadcast,
    MalformedPresence,
    MalformedTyping,
    UnknownEvent,
    UnmatchedTopic,
    PayloadTooLarge,
    // Topics and channels.
    InvalidTopic,
    TopicTooLong,
    TopicLimitReached,
    RoomBusy,
    RoomUnavailable,
    // Presence.
    PresenceKeyTooLong,
    PresenceMetaTooLarge,
    PresenceStateTooLarge,
    PresenceLimitReached,
    // Access.
    Unauthorized,
    InvalidJwtExpiration,
    MalformedJwt,
    InvalidJwt,
    AnonymousNotAllowed,
    ConnectionLimitReached,
    // Rate limits.
    RateLimited,
    ClientJoinRateLimitReached,
    // Durable writes.
    StorageBusy,
    StorageUnavailable,
    StorageError,
    InvalidPayload,
    ClientIdTooLong,
    // Geo.
    InvalidLocation,
    InvalidPost,
    InvalidRadius,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            MalformedMessage => "MalformedMessage",
            MalformedJoin => "MalformedJoin",
            MalformedBroadcast => "MalformedBroadcast",
            MalformedPresence => "MalformedPresence",
            MalformedTyping => "MalformedTyping",
            UnknownEvent => "UnknownEvent",
            UnmatchedTopic => "UnmatchedTopic",
            PayloadTooLarge => "PayloadTooLarge",
            InvalidTopic => "InvalidTopic",
            TopicTooLong => "TopicTooLong",
            TopicLimitReached => "TopicLimitReached",
            RoomBusy => "RoomBusy",
            RoomUnavailable => "RoomUnavailable",
            PresenceKeyTooLong => "PresenceKeyTooLong",
            PresenceMetaTooLarge => "PresenceMetaTooLarge",
            PresenceStateTooLarge => "PresenceStateTooLarge",
            PresenceLimitReached => "PresenceLimitReached",
            Unauthorized => "Unauthorized",
            InvalidJwtExpiration => "InvalidJWTExpiration",
            MalformedJwt => "MalformedJWT",
            InvalidJwt => "InvalidJWT",
            AnonymousNotAllowed => "AnonymousNotAllowed",
            ConnectionLimitReached => "ConnectionLimitReached",
            RateLimited => "RateLimited",
            ClientJoinRateLimitReached => "ClientJoinRateLimitReached",
            StorageBusy => "StorageBusy",
            StorageUnavailable => "StorageUnavailable",
            StorageError => "StorageError",
            InvalidPayload => "InvalidPayload",
            ClientIdTooLong => "ClientIdTooLong",
            InvalidLocation => "InvalidLocation",
            InvalidPost => "InvalidPost",
            InvalidRadius => "InvalidRadius",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: what the client is told, the log says and the metric counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Refusal {
    pub code: Code,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: Code, detail: impl Into<String>) -> Refusal {
        Refusal {
            code,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply text is the code, a colon and the detail, as the protocol has always sent it.
    #[test]
    fn a_refusal_reads_code_colon_detail() {
        let r = Refusal::new(
            Code::InvalidJwtExpiration,
            "Token has expired 3 seconds ago",
        );
        assert_eq!(
            r.to_string(),
            "InvalidJWTExpiration: Token has expired 3 seconds ago"
        );
    }
}
