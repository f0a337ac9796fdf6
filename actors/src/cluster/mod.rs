//! Several nodes as one engine over NATS (core pub/sub, no JetStream): publications, presence,
//! geo posts and beacons, heartbeats. Off when `cluster.nats_url` is empty.
//!
//! # Layout
//! - [`config`]: the `[cluster]` keys.
//! - [`envelope`]: the bytes of one message between nodes.
//! - [`broker`]: [`NatsBroker`], the [`Broker`](crate::broker::Broker) of a cluster: local rooms
//!   at once, other nodes through NATS, presence synced on a room's start.
//! - [`interest`]: the NATS subscriptions, held only while this node has local members of a
//!   topic or cells in an area (interest routing), and what arrives on them.
//! - [`nodes`]: the live peers, heartbeats and death.
//! - [`geo`]: posts, beacons and who-is-nearby across nodes.
//! - [`ask`]: asking every live peer and collecting the answers (one reply inbox per node).
//!
//! # Subjects
//! `locus.t.<topic, base64url>` a room's publications, presence deltas, snapshots and typing;
//! `locus.g.<geohash prefix>` posts and beacons for an area (a node subscribes every prefix of
//! each of its cells); `locus.nodes` heartbeats, goodbyes and resync requests; `locus.sync`
//! presence requests of a room starting on some node; `locus.near` who-is-nearby requests of a
//! `realtime:nearby` subscriber; `locus.confirm.<node>` (never served) round trips that confirm
//! new subscriptions.
//!
//! # Guarantees
//! At most once between nodes, in order per publishing node. A durable topic's publications carry
//! their offsets, and a room that sees a gap reads it from the database (see
//! `room::sequence`), so durable delivery is in offset order and complete. Presence converges:
//! deltas as they happen, a snapshot from every live node when a room starts, snapshots both ways
//! after NATS reconnects, the client drops messages, or a peer (re)appears, and a dead node's
//! presences leave everywhere after `cluster.node_down_ms`.

mod ask;
pub mod broker;
pub mod config;
mod envelope;
pub mod geo;
mod interest;
pub mod nodes;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use broker::NatsBroker;
pub use config::ClusterConfig;
pub use nodes::NodeView;

use crate::broker::{InProcessBroker, NodeRef, RemoteEvent};
use crate::geo::CellRegistry;
use crate::metrics::{self as m, DropReason};
use envelope::Kind;
use interest::Interest;
use nodes::NodeRegistry;

/// Messages waiting to go out to NATS, at most (besides `cluster.outbound_queue_bytes_max`).
const OUTBOUND_MESSAGES_MAX: usize = 65_536;
/// Subscription changes waiting for the interest task, at most (past it a change is handed to a
/// task of its own).
const INTEREST_COMMANDS_MAX: usize = 4_096;
/// Longest wait between reconnection attempts to NATS, in milliseconds.
const RECONNECT_DELAY_MS_MAX: u64 = 1_000;
/// How long a goodbye may take to reach NATS at shutdown, in milliseconds.
const BYE_FLUSH_MS: u64 = 1_000;
/// Shortest ping interval to NATS, in milliseconds (it follows `cluster.heartbeat_ms`).
const PING_INTERVAL_MS_MIN: u64 = 500;

const NODES_SUBJECT: &str = "locus.nodes";
const SYNC_SUBJECT: &str = "locus.sync";
const NEAR_SUBJECT: &str = "locus.near";

/// This node in a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    /// This process's incarnation: how other nodes tell its messages and presences apart.
    me: NodeRef,
    id: String,
    config: ClusterConfig,
    /// This node's rooms; remote publications are delivered through it.
    local: Arc<InProcessBroker>,
    nodes: Mutex<NodeRegistry>,
    outbound: mpsc::Sender<(String, Kind, Bytes)>,
    outbound_bytes: AtomicUsize,
    interest: mpsc::Sender<Interest>,
    /// Requests to every peer waiting for their answers.
    asks: ask::Asks,
    /// This node's cells, for posts and beacons from other nodes.
    cells: OnceLock<CellRegistry>,
    /// Open connections of this node, for heartbeats.
    connections: OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
    /// Said goodbye: no more heartbeats.
    leaving: AtomicBool,
}

/// The cluster as `/api/health` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: String,
    /// Live nodes, this one first.
    pub nodes: Vec<NodeView>,
    /// NATS is connected.
    pub connected: bool,
}

/// Why the cluster could not be joined at start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.nats_url {url}: {reason}")]
    Connect { url: String, reason: String },
}

impl Cluster {
    /// Connects to NATS when `cluster.nats_url` is set (`None`: one node alone). An unreachable
    /// NATS is not an error: the node starts, serves its own members and joins once NATS
    /// answers. Must run inside the engine's runtime; the tasks start in [`Cluster::attach`].
    pub async fn connect(config: &ClusterConfig) -> Result<Option<Cluster>, ClusterError> {
        if !config.enabled() {
            return Ok(None);
        }
        let me = incarnation();
        let id = if config.node_id.is_empty() {
            format!("node-{:08x}", me as u32)
        } else {
            config.node_id.clone()
        };
        let (events_tx, events_rx) = mpsc::channel::<async_nats::Event>(64);
        let client = async_nats::ConnectOptions::new()
            .name(format!("locus-{id}"))
            // Our own publications are delivered locally already.
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(config.subscription_messages_max)
            // A half-open connection is noticed within two pings, not minutes (the default
            // ping interval is 60 s).
            .ping_interval(Duration::from_millis(
                config.heartbeat_ms.max(PING_INTERVAL_MS_MIN),
            ))
            .reconnect_delay_callback(|attempts| {
                let ms = 50u64.saturating_mul(1 << attempts.min(5));
                Duration::from_millis(ms.min(RECONNECT_DELAY_MS_MAX))
            })
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.try_send(event);
                }
            })
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ClusterError::Connect {
                url: config.nats_url.clone(),
                reason: e.to_string(),
            })?;
        let inbox = client.new_inbox();
        let answers = (client.subscribe(ask::answers_subject(&inbox)).await).map_err(|e| {
            ClusterError::Connect {
                url: config.nats_url.clone(),
                reason: e.to_string(),
            }
        })?;
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_MESSAGES_MAX);
        let (interest, interest_rx) = mpsc::channel(INTEREST_COMMANDS_MAX);
        let cluster = Cluster {
            shared: Arc::new(Shared {
                client,
                me,
                id,
                config: config.clone(),
                local: Arc::default(),
                nodes: Mutex::new(NodeRegistry::new(config.nodes_max)),
                outbound,
                outbound_bytes: AtomicUsize::new(0),
                interest,
                asks: ask::Asks::new(inbox),
                cells: OnceLock::new(),
                connections: OnceLock::new(),
                leaving: AtomicBool::new(false),
            }),
        };
        tokio::spawn(publish_loop(cluster.shared.clone(), outbound_rx));
        tokio::spawn(interest::run(cluster.shared.clone(), interest_rx));
        tokio::spawn(events_loop(cluster.shared.clone(), events_rx));
        tokio::spawn(heartbeat_loop(cluster.shared.clone()));
        tokio::spawn(ask::route_answers(cluster.shared.clone(), answers));
        tracing::info!(node = %cluster.shared.id, url = %config.nats_url, "cluster: joining over NATS");
        Ok(Some(cluster))
    }

    /// The broker the engine publishes through.
    pub fn broker(&self) -> NatsBroker {
        NatsBroker::new(self.shared.clone())
    }

    /// Hands the cluster this node's cells and connection count (once, at engine start).
    pub fn attach(&self, cells: CellRegistry, connections: Box<dyn Fn() -> usize + Send + Sync>) {
        cells.set_remote(Arc::new(geo::GeoRoutes::new(self.shared.clone())));
        let _ = self.shared.cells.set(cells);
        let _ = self.shared.connections.set(connections);
    }

    pub fn node_id(&self) -> &str {
        &self.shared.id
    }

    pub fn view(&self) -> ClusterView {
        let s = &self.shared;
        let mut nodes = vec![NodeView {
            id: s.id.clone(),
            connections: s.connection_count(),
            last_seen_ms: 0,
        }];
        nodes.extend(s.nodes().view(Instant::now()));
        ClusterView {
            node_id: s.id.clone(),
            nodes,
            connected: s.connected(),
        }
    }

    /// Tells the other nodes this one is leaving, so its presences leave at once (bounded in
    /// time: NATS may be away).
    pub async fn leave(&self) {
        let s = &self.shared;
        s.leaving.store(true, Ordering::Release);
        if !s.connected() {
            return;
        }
        let bye = envelope::encode(Kind::Bye, s.me, &nodes::Bye { id: s.id.clone() }, &[]);
        let said = async {
            s.publish_now(NODES_SUBJECT.to_owned(), Kind::Bye, bye)
                .await;
            let _ = s.client.flush().await;
        };
        let _ = tokio::time::timeout(Duration::from_millis(BYE_FLUSH_MS), said).await;
    }
}

impl Shared {
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, NodeRegistry> {
        self.nodes
            .lock()
            .expect("node registry lock is never poisoned")
    }

    fn connection_count(&self) -> usize {
        self.connections.get().map_or(0, |f| f())
    }

    /// Publishes `msg` at once, past the outbound queue (answers, heartbeats, the goodbye), and
    /// counts it when it went out.
    async fn publish_now(&self, subject: String, kind: Kind, msg: Bytes) {
        if self.client.publish(subject, msg).await.is_ok() {
            m::cluster_message("out", kind.label());
        }
    }

    /// Queues `msg` for NATS; dropped (and counted) when NATS is unreachable or the queue is
    /// full, never waiting: this node's own members are served either way.
    fn send(&self, subject: String, kind: Kind, msg: Bytes) {
        if !self.connected() {
            m::dropped(DropReason::ClusterDisconnected);
            return;
        }
        let len = msg.len();
        let max = self.config.outbound_queue_bytes_max;
        if self.outbound_bytes.fetch_add(len, Ordering::AcqRel) + len > max {
            self.outbound_bytes.fetch_sub(len, Ordering::AcqRel);
            m::dropped(DropReason::ClusterQueueFull);
            return;
        }
        if self.outbound.try_send((subject, kind, msg)).is_err() {
            self.outbound_bytes.fetch_sub(len, Ordering::AcqRel);
            m::dropped(DropReason::ClusterQueueFull);
        }
    }
}

/// A random incarnation, never [`crate::broker::LOCAL_NODE`].
fn incarnation() -> NodeRef {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS has randomness");
    u64::from_le_bytes(b).max(1)
}

/// Drains the outbound queue into NATS, in order (one publisher, so per-node order holds).
async fn publish_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<(String, Kind, Bytes)>) {
    while let Some((subject, kind, msg)) = rx.recv().await {
        shared.outbound_bytes.fetch_sub(msg.len(), Ordering::AcqRel);
        match shared.client.publish(subject, msg).await {
            Ok(()) => m::cluster_message("out", kind.label()),
            Err(_) => m::dropped(DropReason::ClusterDisconnected),
        }
    }
}

/// NATS connection events. After a reconnect, or messages lost to a full subscription, what
/// crossed meanwhile may be lost: every room announces its presence again, every peer is asked
/// to announce its own, and durable rooms compare their position with the database's.
///
/// The client reports each message it drops: they are counted one by one, but resynced at most
/// once per `heartbeat_ms` (with one more at the end of a burst).
async fn events_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<async_nats::Event>) {
    let period = Duration::from_millis(shared.config.heartbeat_ms);
    let mut tick = tokio::time::interval(period);
    let mut last_resync: Option<Instant> = None;
    let mut pending = false;
    loop {
        let event = tokio::select! {
            event = rx.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = tick.tick() => {
                if pending {
                    pending = false;
                    last_resync = Some(Instant::now());
                    resync(&shared);
                }
                continue;
            }
        };
        match event {
            async_nats::Event::Connected => {
                tracing::info!("cluster: NATS connected");
                last_resync = Some(Instant::now());
                resync(&shared);
            }
            async_nats::Event::SlowConsumer(_) => {
                m::dropped(DropReason::ClusterSlowConsumer);
                if last_resync.is_some_and(|t| t.elapsed() < period) {
                    pending = true;
                } else {
                    tracing::warn!("cluster: messages lost to a full subscription; resyncing");
                    last_resync = Some(Instant::now());
                    resync(&shared);
                }
            }
            async_nats::Event::Disconnected => tracing::warn!("cluster: NATS disconnected"),
            other => tracing::debug!(event = %other, "cluster: NATS event"),
        }
    }
}

fn resync(shared: &Arc<Shared>) {
    broker::announce_all(shared);
    request_resync(shared, None);
    broker::tell_rooms(shared, RemoteEvent::Reconnected);
}

/// Asks the peers (or the one named) to announce their presence again.
fn request_resync(shared: &Arc<Shared>, to: Option<NodeRef>) {
    let msg = envelope::encode(Kind::Resync, shared.me, &nodes::Resync { to }, &[]);
    shared.send(NODES_SUBJECT.to_owned(), Kind::Resync, msg);
}

/// Announces this node every `cluster.heartbeat_ms` and gives up on silent peers.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let period = Duration::from_millis(shared.config.heartbeat_ms);
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let down = Duration::from_millis(shared.config.node_down_ms);
    loop {
        every.tick().await;
        if shared.leaving.load(Ordering::Acquire) {
            return;
        }
        let hb = nodes::Heartbeat {
            id: shared.id.clone(),
            connections: shared.connection_count(),
            reach_m: shared.cells.get().map_or(0.0, |c| c.reach_m()),
        };
        let msg = envelope::encode(Kind::Heartbeat, shared.me, &hb, &[]);
        if shared.connected() {
            // Straight to the client, not through the queue that drops under load: a missed
            // heartbeat makes peers give this node up.
            let beat = shared.publish_now(NODES_SUBJECT.to_owned(), Kind::Heartbeat, msg);
            let _ = tokio::time::timeout(period, beat).await;
        }
        let dead = shared.nodes().sweep(Instant::now(), down);
        for node in dead {
            tracing::warn!(
                node,
                "cluster: node silent past node_down_ms, its presences leave"
            );
            broker::node_gone(&shared, node);
        }
        m::cluster_nodes().set((shared.nodes().peers().len() + 1) as f64);
    }
}
