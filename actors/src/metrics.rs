//! Every metric the actors emit, declared in one place: `locus_<subsystem>_<name>_<unit>`.
//!
//! Label values are bounded sets (event kinds, drop reasons), never a user, topic or geohash.
//! Hot-path handles are fetched once and cached; the recorder must be installed before the
//! first actor starts (the server does this in `run`).
//!
//! Over 400 lines: every metric the engine emits is declared here, in one place, by design (names,
//! label sets, cached handles).

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

pub const CONNECTIONS: &str = "locus_ws_connections";
pub const CONNECTIONS_OPENED: &str = "locus_ws_connections_opened_total";
pub const JOINS: &str = "locus_channel_joins_total";
pub const ROOMS: &str = "locus_rooms_active";
pub const MESSAGES_IN: &str = "locus_messages_in_total";
pub const MESSAGES_OUT: &str = "locus_messages_out_total";
pub const MESSAGES_DROPPED: &str = "locus_messages_dropped_total";
pub const OUTBOUND_QUEUE_BYTES: &str = "locus_outbound_queue_bytes";
pub const FANOUT_LATENCY: &str = "locus_fanout_latency_seconds";
pub const FANOUT_RECIPIENTS: &str = "locus_fanout_recipients";
pub const DISCONNECTS: &str = "locus_ws_disconnects_total";
pub const PROTOCOL_ERRORS: &str = "locus_protocol_errors_total";
pub const RATE_LIMITED: &str = "locus_rate_limited_total";
pub const AUTH_FAILURES: &str = "locus_auth_failures_total";

pub const CLUSTER_MESSAGES: &str = "locus_cluster_messages_total";
pub const CLUSTER_NODES: &str = "locus_cluster_nodes";
pub const CLUSTER_SUBSCRIPTIONS: &str = "locus_cluster_subscriptions";
pub const CLUSTER_GAP_FILLS: &str = "locus_cluster_gap_fills_total";

/// Counts one message sent to (`"out"`) or received from (`"in"`) NATS, by kind.
pub fn cluster_message(direction: &'static str, kind: &'static str) {
    counter!(CLUSTER_MESSAGES, "direction" => direction, "kind" => kind).increment(1);
}

/// Live nodes this node sees, itself included.
pub fn cluster_nodes() -> Gauge {
    gauge!(CLUSTER_NODES)
}

/// NATS subscriptions this node holds (rooms and geo areas with local members).
pub fn cluster_subscriptions() -> Gauge {
    gauge!(CLUSTER_SUBSCRIPTIONS)
}

/// Counts a durable room reading a gap in its offsets from the database (`outcome`: `filled`,
/// `failed`).
pub fn cluster_gap_fill(outcome: &'static str) {
    counter!(CLUSTER_GAP_FILLS, "outcome" => outcome).increment(1);
}

/// Why a message was not delivered (the `reason` label of `locus_messages_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A member's outbound queue overflowed; the member is disconnected.
    SlowConsumer,
    /// A room's mailbox was full when a publication arrived.
    RoomMailboxFull,
    /// The recipient was already closing.
    RecipientClosed,
    /// A binary payload cannot be expressed to a vsn 1.0.0 (JSON-only) member.
    BinaryToJsonMember,
    /// A typing update inside the per-user throttle window.
    TypingThrottled,
    /// A cell's mailbox was full when a post or beacon batch arrived.
    CellMailboxFull,
    /// Another node's presence join would take a room past its presence bounds here.
    PresenceRemoteFull,
    /// The queue to NATS (`cluster.outbound_queue_bytes_max`), or of requests waiting on other
    /// nodes, was full: other nodes miss it.
    ClusterQueueFull,
    /// NATS was unreachable: other nodes miss it (durable ones they read from the database).
    ClusterDisconnected,
    /// A message from NATS that this node cannot decode.
    ClusterMalformed,
    /// Presence from a node this node does not track (gone, or past `cluster.nodes_max`).
    ClusterUnknownNode,
    /// A message NATS delivered that the client dropped: this node's subscription held
    /// `cluster.subscription_messages_max` messages already.
    ClusterSlowConsumer,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::RoomMailboxFull => "room_mailbox_full",
            DropReason::RecipientClosed => "recipient_closed",
            DropReason::BinaryToJsonMember => "binary_to_json_member",
            DropReason::TypingThrottled => "typing_throttled",
            DropReason::CellMailboxFull => "cell_mailbox_full",
            DropReason::PresenceRemoteFull => "presence_remote_full",
            DropReason::ClusterQueueFull => "cluster_queue_full",
            DropReason::ClusterDisconnected => "cluster_disconnected",
            DropReason::ClusterMalformed => "cluster_malformed",
            DropReason::ClusterUnknownNode => "cluster_unknown_node",
            DropReason::ClusterSlowConsumer => "cluster_slow_consumer",
        }
    }
}

/// Counts one dropped message.
pub fn dropped(reason: DropReason) {
    counter!(MESSAGES_DROPPED, "reason" => reason.label()).increment(1);
}

/// Maps a client event to its bounded label.
pub fn event_label(event: &str) -> &'static str {
    match event {
        "phx_join" => "phx_join",
        "phx_leave" => "phx_leave",
        "heartbeat" => "heartbeat",
        "broadcast" => "broadcast",
        "presence" => "presence",
        "typing" => "typing",
        "access_token" => "access_token",
        "phx_reply" => "phx_reply",
        "presence_state" => "presence_state",
        "presence_diff" => "presence_diff",
        "system" => "system",
        "phx_close" => "phx_close",
        "phx_error" => "phx_error",
        _ => "other",
    }
}

pub fn message_in(event: &str) {
    counter!(MESSAGES_IN, "event" => event_label(event)).increment(1);
}

pub fn messages_out(event: &str, n: u64) {
    counter!(MESSAGES_OUT, "event" => event_label(event)).increment(n);
}

macro_rules! cached {
    ($name:ident, $ty:ty, $make:expr) => {
        pub fn $name() -> &'static $ty {
            static H: OnceLock<$ty> = OnceLock::new();
            H.get_or_init(|| $make)
        }
    };
}

cached!(outbound_queue_bytes, Gauge, gauge!(OUTBOUND_QUEUE_BYTES));
cached!(connections, Gauge, gauge!(CONNECTIONS));
cached!(rooms, Gauge, gauge!(ROOMS));
cached!(fanout_latency, Histogram, histogram!(FANOUT_LATENCY));
cached!(fanout_recipients, Histogram, histogram!(FANOUT_RECIPIENTS));
cached!(
    broadcast_out,
    Counter,
    counter!(MESSAGES_OUT, "event" => "broadcast")
);

/// Counts a client push refused with a stable code (`MalformedMessage`, `UnmatchedTopic`, …).
/// Counts a frame refused by a rate limit (`reason`: messages, joins, presence, posts, beacons,
/// user_messages, sign_in).
pub fn rate_limited(reason: &'static str) {
    counter!(RATE_LIMITED, "reason" => reason).increment(1);
}

/// Counts a refused token or action (`reason`: InvalidJWT, MalformedJWT, InvalidJWTExpiration,
/// AnonymousNotAllowed, Unauthorized, ConnectionLimitReached, or a sign-in failure code).
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub fn protocol_error(code: &'static str) {
    counter!(PROTOCOL_ERRORS, "code" => code).increment(1);
}

/// Counts a channel join by outcome (`ok` or `error`).
pub fn join(result: &'static str) {
    counter!(JOINS, "result" => result).increment(1);
}

/// Counts a server-initiated close by its close-code name.
pub fn disconnect(code: &'static str) {
    counter!(DISCONNECTS, "code" => code).increment(1);
}

pub const STORAGE_BATCH_ROWS: &str = "locus_storage_batch_rows";
pub const STORAGE_COMMIT_LATENCY: &str = "locus_storage_commit_latency_seconds";
pub const STORAGE_RETRIES: &str = "locus_storage_retries_total";
pub const STORAGE_FAILURES: &str = "locus_storage_failures_total";
pub const STORAGE_QUEUE_DEPTH: &str = "locus_storage_queue_depth";
pub const RECOVERIES: &str = "locus_recoveries_total";

cached!(
    storage_batch_rows,
    Histogram,
    histogram!(STORAGE_BATCH_ROWS)
);
cached!(
    storage_commit_latency,
    Histogram,
    histogram!(STORAGE_COMMIT_LATENCY)
);
cached!(storage_queue_depth, Gauge, gauge!(STORAGE_QUEUE_DEPTH));

pub fn storage_retry() {
    counter!(STORAGE_RETRIES).increment(1);
}

/// Counts a failed batch by reason (`transient`, `permanent`, `retries_exhausted`, …).
pub fn storage_failure(reason: &'static str) {
    counter!(STORAGE_FAILURES, "reason" => reason).increment(1);
}

/// Counts a durable publication or geo message refused at a writer's door with `StorageBusy`
/// (`reason`: `inflight_publications`, `inflight_bytes`).
pub fn storage_refused(reason: &'static str) {
    counter!(STORAGE_REFUSED, "reason" => reason).increment(1);
}

pub const STORAGE_REFUSED: &str = "locus_storage_refused_total";
pub const HISTORY_WINDOW_BYTES: &str = "locus_history_window_bytes";
pub const HISTORY_WINDOW_EVICTIONS: &str = "locus_history_window_evictions_total";

cached!(history_window_bytes, Gauge, gauge!(HISTORY_WINDOW_BYTES));

/// Why publications left the history window (the `reason` label of
/// `locus_history_window_evictions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEviction {
    /// The topic's window held `history_window_size` publications.
    TopicSize,
    /// The topic's window passed `history_window_topic_bytes_max`.
    TopicBytes,
    /// All windows together passed `history_window_bytes_max`: a least recently written topic
    /// left whole.
    WindowBytes,
    /// `history_window_topics_max` topics were kept: a least recently written topic left whole.
    TopicsMax,
    /// The topic's epoch changed, so its window started over.
    EpochChanged,
    /// In a cluster, the topic's room stopped on this node: the window would go stale.
    Unwatched,
}

impl WindowEviction {
    pub fn label(self) -> &'static str {
        match self {
            WindowEviction::TopicSize => "topic_size",
            WindowEviction::TopicBytes => "topic_bytes",
            WindowEviction::WindowBytes => "window_bytes",
            WindowEviction::TopicsMax => "topics_max",
            WindowEviction::EpochChanged => "epoch_changed",
            WindowEviction::Unwatched => "unwatched",
        }
    }
}

/// Counts `n` publications that left the history window (they stay in the database).
pub fn window_evicted(reason: WindowEviction, n: usize) {
    if n > 0 {
        counter!(HISTORY_WINDOW_EVICTIONS, "reason" => reason.label()).increment(n as u64);
    }
}

/// Counts a recovery or replay on join by result (`recovered`, `not_recovered`, `replayed`).
pub fn recovery(result: &'static str) {
    counter!(RECOVERIES, "result" => result).increment(1);
}

pub const CELLS: &str = "locus_geo_cells_active";
pub const CELL_MEMBERS: &str = "locus_geo_cell_members";
pub const BEACONS: &str = "locus_geo_beacons_total";
pub const GEO_FANOUT_LATENCY: &str = "locus_geo_fanout_latency_seconds";

cached!(cells, Gauge, gauge!(CELLS));
cached!(cell_members, Histogram, histogram!(CELL_MEMBERS));
cached!(
    geo_fanout_latency,
    Histogram,
    histogram!(GEO_FANOUT_LATENCY)
);

/// Counts beacons by stage: `in` (received), `coalesced` (replaced before sending), `out`.
pub fn beacon(stage: &'static str) {
    counter!(BEACONS, "stage" => stage).increment(1);
}

pub fn beacons_out(n: u64) {
    counter!(BEACONS, "stage" => "out").increment(n);
}

pub const GEO_FANOUT_CAPPED: &str = "locus_geo_fanout_capped_total";

/// Which geo fan-out cap stopped a step (the `reason` label of `locus_geo_fanout_capped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoCap {
    /// A beacon flush had more target cells than `geo.beacon_cells_max`.
    BeaconCells,
    /// A presence list had more cells to ask than `geo.presence_cells_max`.
    PresenceCells,
    /// A cell had more members to check against a beacon batch than `geo.cell_checks_max`.
    BeaconChecks,
    /// A cell had more members to check for a presence list than `geo.cell_checks_max`.
    PresenceChecks,
}

impl GeoCap {
    pub fn label(self) -> &'static str {
        match self {
            GeoCap::BeaconCells => "beacon_cells_max",
            GeoCap::PresenceCells => "presence_cells_max",
            GeoCap::BeaconChecks => "beacon_checks_max",
            GeoCap::PresenceChecks => "presence_checks_max",
        }
    }
}

/// Counts one geo fan-out step (a flush, a presence list, a cell's scan) cut short by a cap;
/// what it left out is the farthest cells, or the members whose turn comes next.
pub fn geo_capped(cap: GeoCap) {
    counter!(GEO_FANOUT_CAPPED, "reason" => cap.label()).increment(1);
}

pub const JOBS_CREATED: &str = "locus_jobs_created_total";
pub const JOBS_FINISHED: &str = "locus_jobs_finished_total";
pub const JOBS_LIVE: &str = "locus_jobs_live";
pub const JOB_ATTEMPTS: &str = "locus_job_attempts_total";
pub const JOB_WRITE_FAILURES: &str = "locus_job_write_failures_total";
pub const PROVIDER_CALLS: &str = "locus_provider_calls_total";
pub const BREAKER_STATE: &str = "locus_provider_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "locus_provider_breaker_transitions_total";
pub const WEBHOOKS: &str = "locus_webhooks_total";

cached!(jobs_live, Gauge, gauge!(JOBS_LIVE));

/// Counts a job created, by kind.
pub fn job_created(kind: &str) {
    counter!(JOBS_CREATED, "kind" => kind.to_owned()).increment(1);
}

/// Counts a job reaching a terminal status (`succeeded`, `failed`, `canceled`).
pub fn job_finished(status: &'static str) {
    counter!(JOBS_FINISHED, "status" => status).increment(1);
}

/// Counts a provider attempt of a job by outcome (`accepted`, `failed`, `skipped`, `refused`,
/// `cancel_failed`, `recovered`).
pub fn job_attempt(provider: &str, outcome: &str) {
    counter!(JOB_ATTEMPTS, "provider" => provider.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
}

pub fn job_write_failed() {
    counter!(JOB_WRITE_FAILURES).increment(1);
}

/// Counts one HTTP call to a provider (`op`: create, get, cancel) by outcome (`ok`, or the
/// failure class: timeout, connect, server_error, rate_limited, refused, bad_response,
/// circuit_open).
pub fn provider_call(provider: &str, op: &'static str, outcome: &'static str) {
    counter!(PROVIDER_CALLS, "provider" => provider.to_owned(), "op" => op, "outcome" => outcome)
        .increment(1);
}

/// Sets a provider's breaker gauge: 0 closed, 1 half-open, 2 open.
pub fn breaker_state(provider: &str, value: f64) {
    gauge!(BREAKER_STATE, "provider" => provider.to_owned()).set(value);
}

pub fn breaker_transition(provider: &str, to: &'static str) {
    counter!(BREAKER_TRANSITIONS, "provider" => provider.to_owned(), "to" => to).increment(1);
}

/// The `provider` label of a webhook for a provider that is not configured.
pub const UNKNOWN_PROVIDER_LABEL: &str = "unknown";

/// Counts a provider webhook by outcome (`applied`, `duplicate`, `unknown_prediction`, or why
/// it was refused).
pub fn webhook(provider: &str, outcome: &'static str) {
    counter!(WEBHOOKS, "provider" => provider.to_owned(), "outcome" => outcome).increment(1);
}

/// Every metric name this crate declares, for the docs and HELP checks (the server adds its
/// own process metrics). A `pub const …: &str = "locus_…"` above must be listed here: the test
/// below reads this file to make sure.
pub const ALL: &[&str] = &[
    CONNECTIONS,
    CONNECTIONS_OPENED,
    JOINS,
    ROOMS,
    MESSAGES_IN,
    MESSAGES_OUT,
    MESSAGES_DROPPED,
    OUTBOUND_QUEUE_BYTES,
    FANOUT_LATENCY,
    FANOUT_RECIPIENTS,
    DISCONNECTS,
    PROTOCOL_ERRORS,
    RATE_LIMITED,
    AUTH_FAILURES,
    STORAGE_BATCH_ROWS,
    STORAGE_COMMIT_LATENCY,
    STORAGE_RETRIES,
    STORAGE_FAILURES,
    STORAGE_QUEUE_DEPTH,
    STORAGE_REFUSED,
    RECOVERIES,
    HISTORY_WINDOW_BYTES,
    HISTORY_WINDOW_EVICTIONS,
    CELLS,
    CELL_MEMBERS,
    BEACONS,
    GEO_FANOUT_LATENCY,
    GEO_FANOUT_CAPPED,
    JOBS_CREATED,
    JOBS_FINISHED,
    JOBS_LIVE,
    JOB_ATTEMPTS,
    JOB_WRITE_FAILURES,
    PROVIDER_CALLS,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    WEBHOOKS,
    CLUSTER_MESSAGES,
    CLUSTER_NODES,
    CLUSTER_SUBSCRIPTIONS,
    CLUSTER_GAP_FILLS,
];

impl DropReason {
    /// Every reason, for the docs check (the test below keeps it complete).
    pub const ALL: &'static [DropReason] = &[
        DropReason::SlowConsumer,
        DropReason::RoomMailboxFull,
        DropReason::RecipientClosed,
        DropReason::BinaryToJsonMember,
        DropReason::TypingThrottled,
        DropReason::CellMailboxFull,
        DropReason::PresenceRemoteFull,
        DropReason::ClusterQueueFull,
        DropReason::ClusterDisconnected,
        DropReason::ClusterMalformed,
        DropReason::ClusterUnknownNode,
        DropReason::ClusterSlowConsumer,
    ];
}

impl WindowEviction {
    /// Every reason, for the docs check (the test below keeps it complete).
    pub const ALL: &'static [WindowEviction] = &[
        WindowEviction::TopicSize,
        WindowEviction::TopicBytes,
        WindowEviction::WindowBytes,
        WindowEviction::TopicsMax,
        WindowEviction::EpochChanged,
        WindowEviction::Unwatched,
    ];
}

impl GeoCap {
    /// Every cap, for the docs check (the test below keeps it complete).
    pub const ALL: &'static [GeoCap] = &[
        GeoCap::BeaconCells,
        GeoCap::PresenceCells,
        GeoCap::BeaconChecks,
        GeoCap::PresenceChecks,
    ];
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    const SOURCE: &str = include_str!("metrics.rs");

    /// The metric names declared in this file as `pub const NAME: &str = "locus_…";`.
    fn declared_names() -> BTreeSet<&'static str> {
        SOURCE
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"locus_"))
            .filter_map(|l| l.split('"').nth(1))
            .collect()
    }

    /// The variants of `pub enum <name>` in this file, in order.
    fn variants(name: &str) -> Vec<&'static str> {
        let start = SOURCE
            .find(&format!("pub enum {name} {{"))
            .expect("the enum is here");
        SOURCE[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.trim() != "}")
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
            .filter_map(|l| l.strip_suffix(','))
            .collect()
    }

    /// `ALL` lists every metric name this file declares, once each.
    #[test]
    fn all_lists_every_declared_metric_once() {
        let listed: BTreeSet<&str> = super::ALL.iter().copied().collect();
        assert_eq!(listed.len(), super::ALL.len(), "a name is listed twice");
        let declared = declared_names();
        assert!(declared.len() > 30, "the scan found {declared:?}");
        let unlisted: Vec<_> = declared.difference(&listed).collect();
        let undeclared: Vec<_> = listed.difference(&declared).collect();
        assert!(
            unlisted.is_empty() && undeclared.is_empty(),
            "declared but not in ALL: {unlisted:?}; in ALL but not declared: {undeclared:?}"
        );
    }

    /// Each reason enum's `ALL` holds every variant, so the docs check sees every label.
    #[test]
    fn every_label_enum_lists_all_its_variants() {
        fn names<T: std::fmt::Debug>(all: &[T]) -> Vec<String> {
            all.iter().map(|v| format!("{v:?}")).collect()
        }
        assert_eq!(names(super::DropReason::ALL), variants("DropReason"));
        assert_eq!(
            names(super::WindowEviction::ALL),
            variants("WindowEviction")
        );
        assert_eq!(names(super::GeoCap::ALL), variants("GeoCap"));
    }
}
