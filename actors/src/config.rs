//! Limits of sessions and rooms, as they appear under `[session]` and `[room]` in config.toml.
//!
//! Each field states its unit in its name and its default in its doc.
//!
//! Over 400 lines: one struct per config section with a `///` line per key (unit and default) and
//! its cross-limit checks; splitting would scatter the one place the limits are documented.

use serde::Deserialize;

/// Bytes a server frame adds around a payload besides its topic: refs, event, the durable
/// `meta` and JSON punctuation (an upper bound used to check limits against each other).
pub const FRAME_ENVELOPE_BYTES: usize = 1024;

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
    /// Largest payload of one `broadcast`, `presence` or `post`, in bytes. Default 65,536.
    pub payload_bytes_max: usize,
    /// Largest presence meta (the tracked JSON), in bytes. Default 4,096.
    pub presence_meta_bytes_max: usize,
    /// Connections one authenticated user may hold at once. Default 20.
    pub connections_per_user_max: usize,
    /// Longest `ref` and `join_ref` of a client frame, in bytes; a frame with a longer one gets
    /// a `system` error (its refs are not echoed). Default 64.
    pub ref_bytes_max: usize,
    /// Longest `config.presence.key` of a join, in bytes. Default 256.
    pub presence_key_bytes_max: usize,
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
            payload_bytes_max: 64 * 1024,
            presence_meta_bytes_max: 4 * 1024,
            connections_per_user_max: 20,
            ref_bytes_max: 64,
            presence_key_bytes_max: 256,
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
    /// Metas one presence key may hold in a room (one per device). A track past it is refused
    /// with `PresenceLimitReached`. Default 32.
    pub presence_metas_per_key_max: usize,
    /// Metas one room may hold across its keys. Default 10,000.
    pub presence_metas_max: usize,
    /// Largest encoded `presence_state` of a room, in bytes: a track that would pass it is
    /// refused, so a joiner's state always fits its outbound queue. Default 524,288 (512 KiB).
    pub presence_state_bytes_max: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            mailbox_capacity: 4096,
            typing_ttl_ms: 6_000,
            typing_throttle_ms: 1_500,
            presence_metas_per_key_max: 32,
            presence_metas_max: 10_000,
            presence_state_bytes_max: 512 * 1024,
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
        // A publication of the largest payload must fit an empty member queue, or it would
        // shed every member of the room it reaches as a slow consumer.
        if self.payload_bytes_max + self.topic_bytes_max + FRAME_ENVELOPE_BYTES
            > self.outbound_queue_bytes_max
        {
            return err("session.payload_bytes_max + topic_bytes_max + the frame envelope must fit session.outbound_queue_bytes_max");
        }
        if self.ref_bytes_max == 0 || self.presence_key_bytes_max == 0 {
            return err("session.ref_bytes_max and presence_key_bytes_max must be positive");
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
        if self.presence_metas_per_key_max == 0 || self.presence_metas_max == 0 {
            return Err(LimitsError(
                "room.presence_metas_per_key_max and presence_metas_max must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Checks the room's limits against a member's: the largest presence state must fit an
    /// empty outbound queue beside the join reply.
    pub fn validate_against(&self, session: &SessionLimits) -> Result<(), LimitsError> {
        if self.presence_state_bytes_max + session.topic_bytes_max + FRAME_ENVELOPE_BYTES
            > session.outbound_queue_bytes_max
        {
            return Err(LimitsError(
                "room.presence_state_bytes_max + the frame envelope must fit session.outbound_queue_bytes_max".into(),
            ));
        }
        Ok(())
    }
}

/// `[storage]`: durable topics and the storage actors.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageLimits {
    /// `sqlite://path` (the embedded default, created on first start) or `postgres://…`.
    /// Default `sqlite://data/locus.db`.
    pub url: String,
    /// Topic patterns (without the `realtime:` prefix, `*` matches any run of characters) whose
    /// broadcasts are stored, offset and recoverable. Geo messages are always durable.
    /// Default `["room:*"]`.
    pub durable_topics: Vec<String>,
    /// A batch is written when it holds this many publications… Default 1,000.
    pub batch_rows_max: usize,
    /// …or this long after its first publication, whichever comes first. Default 2.
    pub flush_interval_ms: u64,
    /// Durable publications accepted but not yet committed; past it, new ones are refused with
    /// `StorageBusy`. Default 20,000.
    pub inflight_publications_max: usize,
    /// Bytes of durable publications (payload and text fields) one storage writer holds
    /// accepted but not yet committed; past it, new ones are refused with `StorageBusy`. A
    /// publication alone larger than this is accepted only by an idle writer. Default
    /// 67,108,864 (64 MiB).
    pub inflight_bytes_max: usize,
    /// Backoff between retries of a batch that failed transiently: from… Default 50.
    pub retry_delay_ms_min: u64,
    /// …up to (with jitter). Default 2,000.
    pub retry_delay_ms_max: u64,
    /// A batch still failing after this long is failed (its publishers get an error, nothing
    /// is acknowledged). Default 30,000.
    pub retry_window_ms: u64,
    /// Recent publications kept in memory per topic to serve recoveries without the database.
    /// Default 1,000.
    pub history_window_size: usize,
    /// Topics whose recent publications are kept in memory. Default 10,000.
    pub history_window_topics_max: usize,
    /// Bytes one topic's window may hold (payloads, text fields and per-entry overhead); its
    /// oldest publications leave first, and one larger than this is not kept at all.
    /// Default 1,048,576 (1 MiB).
    pub history_window_topic_bytes_max: usize,
    /// Bytes all windows together may hold; past it, the topics written least recently leave
    /// whole. At least `history_window_topic_bytes_max`. Default 268,435,456 (256 MiB).
    pub history_window_bytes_max: usize,
    /// Most publications one recovery replays; a larger gap answers `recovered: false`.
    /// Default 1,000.
    pub recover_publications_max: usize,
    /// Most payload bytes one recovery replays; a larger gap answers `recovered: false` (the
    /// client then pages the history API). Keep it well under
    /// `session.outbound_queue_bytes_max`, which the replay must fit in. Default 524,288.
    pub recover_bytes_max: usize,
    /// Most publications one `broadcast.replay` returns (Supabase caps it at 25). Default 25.
    pub replay_publications_max: usize,
    /// Largest page of `GET /api/channels/<topic>/history`. Default 1,000.
    pub history_page_max: usize,
    /// Most payload bytes in one history page; a page stops before the publication that would
    /// pass it (but always holds one) and names the `next_since_offset`. Default 1,048,576.
    pub history_page_bytes_max: usize,
    /// Publications older than this are removed (whole days on Postgres). Default 30.
    pub retention_days: u32,
    /// How often retention runs. Default 3,600,000 (hourly).
    pub retention_check_interval_ms: u64,
    /// Database connections in the pool. Default 8.
    pub pool_connections_max: u32,
    /// Storage writer actors. A topic always goes to the same writer (so its offsets and
    /// deliveries stay in order); several writers commit batches of different topics in
    /// parallel. Default 2.
    pub writers: usize,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            url: "sqlite://data/locus.db".into(),
            durable_topics: vec!["room:*".into()],
            batch_rows_max: 1_000,
            flush_interval_ms: 2,
            inflight_publications_max: 20_000,
            inflight_bytes_max: 64 * 1024 * 1024,
            retry_delay_ms_min: 50,
            retry_delay_ms_max: 2_000,
            retry_window_ms: 30_000,
            history_window_size: 1_000,
            history_window_topics_max: 10_000,
            history_window_topic_bytes_max: 1024 * 1024,
            history_window_bytes_max: 256 * 1024 * 1024,
            recover_publications_max: 1_000,
            recover_bytes_max: 512 * 1024,
            replay_publications_max: 25,
            history_page_max: 1_000,
            history_page_bytes_max: 1024 * 1024,
            retention_days: 30,
            retention_check_interval_ms: 3_600_000,
            pool_connections_max: 8,
            writers: 2,
        }
    }
}

impl StorageLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |s: &str| Err(LimitsError(s.to_owned()));
        if self.batch_rows_max == 0 || self.inflight_publications_max < self.batch_rows_max {
            return err("storage.batch_rows_max must be positive and at most storage.inflight_publications_max");
        }
        if self.retry_delay_ms_min == 0 || self.retry_delay_ms_min > self.retry_delay_ms_max {
            return err("storage.retry_delay_ms_min must be in 1..=storage.retry_delay_ms_max");
        }
        if self.writers == 0 || self.writers as u32 > self.pool_connections_max {
            return err("storage.writers must be in 1..=storage.pool_connections_max");
        }
        if self.history_window_size == 0 || self.history_page_max == 0 || self.retention_days == 0 {
            return err(
                "storage.history_window_size, history_page_max and retention_days must be positive",
            );
        }
        if self.inflight_bytes_max == 0
            || self.history_page_bytes_max == 0
            || self.recover_bytes_max == 0
            || self.history_window_topic_bytes_max == 0
        {
            return err("storage.inflight_bytes_max, history_page_bytes_max, recover_bytes_max and history_window_topic_bytes_max must be positive");
        }
        if self.history_window_bytes_max < self.history_window_topic_bytes_max {
            return err("storage.history_window_bytes_max must be at least storage.history_window_topic_bytes_max");
        }
        Ok(())
    }

    /// Whether `topic` (with or without the `realtime:` prefix, or a private room key) is
    /// durable.
    pub fn is_durable(&self, topic: &str) -> bool {
        let topic = crate::topic::wire_topic(topic);
        let name = topic
            .strip_prefix(crate::topic::TOPIC_PREFIX)
            .unwrap_or(topic);
        self.durable_topics.iter().any(|p| glob_match(p, name))
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_match_topics() {
        assert!(glob_match("room:*", "room:1"));
        assert!(glob_match("room:*", "room:"));
        assert!(!glob_match("room:*", "rooms"));
        assert!(glob_match("*:chat", "a:b:chat"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXc"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        let s = StorageLimits::default();
        assert!(s.is_durable("realtime:room:42"));
        assert!(!s.is_durable("realtime:lobby"));
    }

    /// F2/F5: limits under which one publication or one presence state would not fit an empty
    /// member queue are refused at start.
    #[test]
    fn payloads_and_presence_states_larger_than_a_queue_are_refused() {
        assert_eq!(SessionLimits::default().validate(), Ok(()));
        let session = SessionLimits {
            outbound_queue_bytes_max: 64 * 1024,
            frame_bytes_max: 64 * 1024,
            payload_bytes_max: 64 * 1024,
            ..SessionLimits::default()
        };
        assert!(session.validate().is_err());
        let room = RoomLimits::default();
        assert_eq!(room.validate_against(&SessionLimits::default()), Ok(()));
        let small = SessionLimits {
            outbound_queue_bytes_max: 256 * 1024,
            frame_bytes_max: 128 * 1024,
            ..SessionLimits::default()
        };
        assert!(room.validate_against(&small).is_err());
    }
}

/// `[geo]`: cell actors, the nearby subscription, beacons and geo messages.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeoLimits {
    /// Geohash length of the cells members live in (6: about 1.2 km × 0.6 km). Default 6.
    pub cell_len: usize,
    /// A member re-homes to another cell only once it is this far outside its current cell,
    /// so one jittering on an edge does not churn. Default 25.
    pub rehome_hysteresis_m: f64,
    /// Subscription radius when the join gives none. Default 1,000.
    pub radius_m_default: f64,
    /// Smallest radius accepted (subscriptions and posts). Default 1.
    pub radius_m_min: f64,
    /// Largest radius accepted (subscriptions and posts). Default 50,000.
    pub radius_m_max: f64,
    /// A member's beacon reaches each subscriber at most once per this period (the latest
    /// position wins). Default 1,000.
    pub beacon_interval_ms: u64,
    /// A member whose last location is older than this is no longer listed nearby. Default 30,000.
    pub beacon_ttl_ms: u64,
    /// Most members listed in a `realtime:nearby` presence state, closest first. Default 50.
    pub presence_members_max: usize,
    /// Most cells one cover lists (coarser cells are used past it). Default 64.
    pub cover_cells_max: usize,
    /// Capacity of a cell actor's mailbox, in messages. Default 4,096.
    pub cell_mailbox_capacity: usize,
    /// Largest geo message content, in bytes. Default 4,096.
    pub content_bytes_max: usize,
    /// Largest `limit` of `GET /api/nearby`. Default 500.
    pub nearby_limit_max: usize,
    /// Most cells one beacon flush sends its batch to, nearest first; the farther ones miss
    /// that batch (counted as `locus_geo_fanout_capped_total{reason="beacon_cells_max"}`).
    /// Default 256.
    pub beacon_cells_max: usize,
    /// Most cells one nearby presence list asks, nearest first (`presence_cells_max`).
    /// Default 64.
    pub presence_cells_max: usize,
    /// Most member distance checks a cell makes for one beacon batch (a batch of B beacons
    /// checks at most this / B members) or one presence list; the members left out get the
    /// next batch first (`beacon_checks_max`, `presence_checks_max`). Default 65,536.
    pub cell_checks_max: usize,
    /// Geohash length to which the positions shown to anonymous subscribers (`location`
    /// beacons, nearby `presence_state`) are coarsened: snapped to that cell's centre
    /// (6: about 1.2 km x 0.6 km, so off by up to ~680 m; 0: no coarsening). Authenticated
    /// subscribers get exact positions. Default 6.
    pub anonymous_cell_len: usize,
}

impl Default for GeoLimits {
    fn default() -> Self {
        GeoLimits {
            cell_len: 6,
            rehome_hysteresis_m: 25.0,
            radius_m_default: 1_000.0,
            radius_m_min: 1.0,
            radius_m_max: 50_000.0,
            beacon_interval_ms: 1_000,
            beacon_ttl_ms: 30_000,
            presence_members_max: 50,
            cover_cells_max: 64,
            cell_mailbox_capacity: 4_096,
            content_bytes_max: 4_096,
            nearby_limit_max: 500,
            beacon_cells_max: 256,
            presence_cells_max: 64,
            cell_checks_max: 65_536,
            anonymous_cell_len: 6,
        }
    }
}

impl GeoLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |s: &str| Err(LimitsError(s.to_owned()));
        if !(1..=crate::topic::GEO_ROOM_LEN_MAX).contains(&self.cell_len) {
            return err("geo.cell_len must be in 1..=9 (topic::GEO_ROOM_LEN_MAX)");
        }
        if !(self.radius_m_min > 0.0
            && self.radius_m_min <= self.radius_m_default
            && self.radius_m_default <= self.radius_m_max)
        {
            return err(
                "geo radii must satisfy 0 < radius_m_min <= radius_m_default <= radius_m_max",
            );
        }
        if self.cover_cells_max < 32 {
            return err("geo.cover_cells_max must be at least 32 (the cells of length 1)");
        }
        if self.beacon_interval_ms == 0
            || self.beacon_ttl_ms < self.beacon_interval_ms
            || self.rehome_hysteresis_m < 0.0
        {
            return err("geo.beacon_interval_ms must be positive and at most geo.beacon_ttl_ms; hysteresis >= 0");
        }
        if self.beacon_cells_max == 0 || self.presence_cells_max == 0 || self.cell_checks_max == 0 {
            return err(
                "geo.beacon_cells_max, presence_cells_max and cell_checks_max must be positive",
            );
        }
        if self.anonymous_cell_len > locus_geo::CELL_LEN_MAX {
            return err("geo.anonymous_cell_len must be in 0..=12 (0: exact for everyone)");
        }
        Ok(())
    }
}
