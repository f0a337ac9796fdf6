//! The topic model: what a channel topic is, parsed once. Every prefix, length rule and geohash
//! bound of a topic lives here; the WebSocket join, the REST broadcast, the history endpoint,
//! the jobs and the geo fan-out all build a [`Topic`] and never look at the string again.
//!
//! Kinds: a public room (`realtime:<name>`), a personal topic (`realtime:user:<id>`, only its
//! user may use it), a geo cell room (`realtime:geo:<geohash>`, 1..=[`GEO_ROOM_LEN_MAX`]
//! lower-case characters) and the nearby subscription (`realtime:nearby`, not a room).
//! A private join of a topic gets its own room, keyed apart by [`PRIVATE_ROOM_PREFIX`].

use std::sync::Arc;

use crate::refusal::{Code, Refusal};

/// The prefix every channel topic carries.
pub const TOPIC_PREFIX: &str = "realtime:";
/// A personal topic: `realtime:user:<user id>`.
pub const USER_TOPIC_PREFIX: &str = "realtime:user:";
/// A geo cell room: `realtime:geo:<geohash>`.
pub const GEO_TOPIC_PREFIX: &str = "realtime:geo:";
/// The moving nearby subscription (location, post, nearby presence); not a room.
pub const NEARBY_TOPIC: &str = "realtime:nearby";
/// The prefix of a private channel's room key. No channel topic starts with it (they start with
/// `realtime:`), so a private room can never be confused with a public one.
pub const PRIVATE_ROOM_PREFIX: &str = "private:";
/// Longest geohash of a geo room: the geohash length stored with each geo message, so every
/// room a post can reach is one of its point's prefixes.
pub const GEO_ROOM_LEN_MAX: usize = locus_storage::GEO_INDEX_LEN;

/// What kind of topic a [`Topic`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `realtime:<name>`: a room anyone may use unless a policy says otherwise.
    Public,
    /// `realtime:user:<id>`: only its user (and `service_role`) may use it.
    Personal { user_id: Arc<str> },
    /// `realtime:geo:<geohash>`: the room of one geohash cell.
    Geo { cell: Arc<str> },
    /// `realtime:nearby`.
    Nearby,
}

/// A validated channel topic (`realtime:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    name: Arc<str>,
    kind: Kind,
}

impl Topic {
    /// A topic as a socket client names it: with its `realtime:` prefix, at most `bytes_max`
    /// bytes (`session.topic_bytes_max`).
    pub fn parse(topic: &str, bytes_max: usize) -> Result<Topic, Refusal> {
        if topic.len() > bytes_max {
            return Err(Refusal::new(
                Code::TopicTooLong,
                format!("topics are at most {bytes_max} bytes"),
            ));
        }
        let name = match topic.strip_prefix(TOPIC_PREFIX) {
            Some(name) if !name.is_empty() => name,
            _ => {
                return Err(Refusal::new(
                    Code::InvalidTopic,
                    "topics are realtime:<name>",
                ))
            }
        };
        let kind = if topic == NEARBY_TOPIC {
            Kind::Nearby
        } else if let Some(cell) = topic.strip_prefix(GEO_TOPIC_PREFIX) {
            match locus_geo::cell::parse(cell) {
                Ok(c) if c == cell && c.len() <= GEO_ROOM_LEN_MAX => Kind::Geo {
                    cell: Arc::from(cell),
                },
                _ => {
                    return Err(Refusal::new(
                        Code::InvalidTopic,
                        format!("geo rooms are realtime:geo:<geohash of 1..={GEO_ROOM_LEN_MAX} lower-case characters>"),
                    ))
                }
            }
        } else if let Some(user_id) = topic.strip_prefix(USER_TOPIC_PREFIX) {
            Kind::Personal {
                user_id: Arc::from(user_id),
            }
        } else {
            debug_assert!(!name.is_empty());
            Kind::Public
        };
        Ok(Topic {
            name: Arc::from(topic),
            kind,
        })
    }

    /// A topic as Supabase's REST API takes it: the `realtime:` prefix is optional. The length
    /// bound counts the prefix.
    pub fn parse_unprefixed(topic: &str, bytes_max: usize) -> Result<Topic, Refusal> {
        if topic.starts_with(TOPIC_PREFIX) {
            Topic::parse(topic, bytes_max)
        } else {
            Topic::parse(&format!("{TOPIC_PREFIX}{topic}"), bytes_max)
        }
    }

    /// The personal topic of `user_id` (where its jobs, balances and server events go).
    pub fn personal(user_id: &str) -> Topic {
        Topic {
            name: Arc::from(format!("{USER_TOPIC_PREFIX}{user_id}")),
            kind: Kind::Personal {
                user_id: Arc::from(user_id),
            },
        }
    }

    /// The geo room of `cell` (a valid geohash of at most [`GEO_ROOM_LEN_MAX`] characters).
    pub fn geo(cell: &str) -> Topic {
        debug_assert!(cell.len() <= GEO_ROOM_LEN_MAX && locus_geo::cell::parse(cell).is_ok());
        Topic {
            name: Arc::from(format!("{GEO_TOPIC_PREFIX}{cell}")),
            kind: Kind::Geo {
                cell: Arc::from(cell),
            },
        }
    }

    /// The full topic, `realtime:…`, as clients see it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The name after `realtime:` (what durable-topic patterns and policies match).
    pub fn name(&self) -> &str {
        &self.name[TOPIC_PREFIX.len()..]
    }

    /// The room (and stored history) a channel of this topic joined with `private` belongs to.
    /// Private and public joins of one topic are kept apart, as Supabase keeps them, so an
    /// anonymous public member never receives what private members broadcast. Personal topics
    /// are the exception: only their user may join them either way, so one room serves both
    /// (and the server's events to the user reach them however they joined).
    pub fn room_key(&self, private: bool) -> Arc<str> {
        if private && !matches!(self.kind, Kind::Personal { .. }) {
            Arc::from(format!("{PRIVATE_ROOM_PREFIX}{}", self.name))
        } else {
            self.name.clone()
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The channel topic clients see for a room key (see [`Topic::room_key`]).
pub fn wire_topic(key: &str) -> &str {
    key.strip_prefix(PRIVATE_ROOM_PREFIX).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    /// Each kind is recognised from its prefix, and bad topics are refused with their code.
    #[test]
    fn topics_parse_into_their_kind_or_are_refused() {
        let kind = |t: &str| Topic::parse(t, MAX).map(|t| t.kind().clone());
        assert_eq!(kind("realtime:lobby"), Ok(Kind::Public));
        assert_eq!(
            kind("realtime:user:u1"),
            Ok(Kind::Personal {
                user_id: Arc::from("u1")
            })
        );
        assert_eq!(
            kind("realtime:geo:u4pru"),
            Ok(Kind::Geo {
                cell: Arc::from("u4pru")
            })
        );
        assert_eq!(kind("realtime:nearby"), Ok(Kind::Nearby));
        let code = |t: &str| Topic::parse(t, MAX).map_err(|r| r.code);
        assert_eq!(code("lobby"), Err(Code::InvalidTopic));
        assert_eq!(code("realtime:"), Err(Code::InvalidTopic));
        assert_eq!(code("realtime:geo:U4PRU"), Err(Code::InvalidTopic));
        assert_eq!(code("realtime:geo:u4pruydqqvj"), Err(Code::InvalidTopic));
        assert_eq!(code("realtime:geo:"), Err(Code::InvalidTopic));
        assert_eq!(
            code(&format!("realtime:{}", "a".repeat(MAX))),
            Err(Code::TopicTooLong)
        );
    }

    /// The REST form may omit the prefix; the bound still counts it.
    #[test]
    fn unprefixed_topics_get_the_prefix_and_the_bound_counts_it() {
        let t = Topic::parse_unprefixed("lobby", MAX).unwrap();
        assert_eq!(t.as_str(), "realtime:lobby");
        assert_eq!(t.name(), "lobby");
        assert_eq!(Topic::parse_unprefixed("realtime:lobby", MAX).unwrap(), t);
        let long = "a".repeat(MAX - TOPIC_PREFIX.len() + 1);
        assert_eq!(
            Topic::parse_unprefixed(&long, MAX).map_err(|r| r.code),
            Err(Code::TopicTooLong)
        );
        assert_eq!(
            Topic::parse_unprefixed("", MAX).map_err(|r| r.code),
            Err(Code::InvalidTopic)
        );
    }

    /// F21: a private join gets its own room key, except on personal topics.
    #[test]
    fn private_and_public_joins_get_different_rooms_except_personal_topics() {
        let t = |s: &str| Topic::parse(s, MAX).unwrap();
        assert_eq!(&*t("realtime:a").room_key(false), "realtime:a");
        assert_eq!(&*t("realtime:a").room_key(true), "private:realtime:a");
        assert_eq!(wire_topic("private:realtime:a"), "realtime:a");
        assert_eq!(wire_topic("realtime:a"), "realtime:a");
        assert_eq!(&*t("realtime:user:u1").room_key(true), "realtime:user:u1");
        assert_eq!(Topic::personal("u1"), t("realtime:user:u1"));
        assert_eq!(Topic::geo("u4pru"), t("realtime:geo:u4pru"));
    }
}
