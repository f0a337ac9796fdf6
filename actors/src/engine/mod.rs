//! The engine: the one handle the server holds. A façade — its parts are private, and what the
//! server needs is a method: [`Engine::connect`] (a connection permit, released on drop),
//! [`Engine::publish`] (the only way a publication enters), [`Engine::authorize`] (the one
//! access check), history and nearby reads, [`Engine::health`] and [`Engine::shutdown`].
//!
//! # Layout
//! - [`publish`]: the publish entry: durability decided once, one completion type.
//! - [`connect`]: admitting a connection (token, server/IP/user slots) into a permit.
//! - [`reads`]: history pages, nearby queries, health.
//! - [`shutdown`]: the ordered shutdown.

mod connect;
mod publish;
mod reads;
mod shutdown;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use locus_storage::AnyStore;

pub use connect::{ConnectError, ConnectionCaps, ConnectionPermit};
pub use publish::{Author, OnStored, Outgoing, Pending, PublishError, Published};
pub use reads::{Health, HistoryPage, ReadError};

use crate::auth::{Action, AuthConfig, AuthError, Authenticator, Identity};
use crate::broker::{Broker, InProcessBroker};
use crate::cluster::{Cluster, ClusterView};
use crate::config::{GeoLimits, RoomLimits, SessionLimits, StorageLimits};
use crate::connection::slots::SlotCounter;
use crate::geo::CellRegistry;
use crate::publish::delivery::Delivery;
use crate::publish::geo_writer::{GeoSink, GeoWriter};
use crate::publish::history::{HistoryCache, WindowLimits};
use crate::publish::writer::{DurableWriters, StorageHealth};
use crate::rate_limit::{RateLimitConfig, UserLimiter};
use crate::refusal::Refusal;
use crate::room::registry::{RoomRegistry, Sequencing};
use crate::topic::Topic;
use crate::SessionId;

/// What the engine is built from (the matching sections of config.toml).
#[derive(Clone, Default)]
pub struct EngineConfig {
    pub session: SessionLimits,
    pub room: RoomLimits,
    pub geo: GeoLimits,
    pub storage: StorageLimits,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub connections: ConnectionCaps,
    /// The cluster this node joined (`None`: one node alone).
    pub cluster: Option<Cluster>,
    /// `cluster.gap_wait_ms`: how long a durable room waits on an offset gap.
    pub gap_wait_ms: u64,
}

/// Close the connection: the server is shutting down (the session closes with 4001).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Cheap to clone (one `Arc`); one per server.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: RoomRegistry,
    /// Session id → its shutdown recipient; one entry per open connection (bounded by
    /// `server.connections_max`).
    sessions: DashMap<SessionId, Recipient<Shutdown>>,
    cells: CellRegistry,
    delivery: Delivery,
    session_limits: SessionLimits,
    storage: Storage,
    security: Security,
    caps: ConnectionCaps,
    next_session: AtomicU64,
    cluster: Option<Cluster>,
}

/// Durable topics and geo messages: the store, its writers and the history window.
struct Storage {
    store: AnyStore,
    writers: DurableWriters,
    geo_writer: Addr<GeoWriter>,
    cache: HistoryCache,
    limits: StorageLimits,
    health: StorageHealth,
}

/// Authentication, rate limits and connection slots, shared by every session.
pub(crate) struct Security {
    pub(crate) auth: Authenticator,
    pub(crate) rate_limits: RateLimitConfig,
    /// Per-user buckets; `None` when `user_messages_per_s` is 0.
    pub(crate) users: Option<Arc<UserLimiter>>,
    /// Open connections per user (`session.connections_per_user_max`).
    pub(crate) user_slots: Arc<SlotCounter<Arc<str>>>,
    /// Open connections per client IP (`server.connections_per_ip_max`).
    pub(crate) ip_slots: Arc<SlotCounter<std::net::IpAddr>>,
    /// Open connections of the whole server (`server.connections_max`).
    pub(crate) server_slots: Arc<SlotCounter<()>>,
}

impl Engine {
    /// Starts the engine on the current arbiter: the broker, the storage writers and the
    /// registries. Must run inside an actix system. Fails on an unusable auth configuration.
    pub fn start(config: EngineConfig, store: AnyStore) -> Result<Engine, String> {
        let auth = Authenticator::new(config.auth)?;
        let limits = config.storage;
        let cache = HistoryCache::new(WindowLimits {
            size: limits.history_window_size,
            topics_max: limits.history_window_topics_max,
            topic_bytes_max: limits.history_window_topic_bytes_max,
            bytes_max: limits.history_window_bytes_max,
        });
        let broker: Arc<dyn Broker> = match &config.cluster {
            Some(cluster) => Arc::new(cluster.broker()),
            None => Arc::new(InProcessBroker::default()),
        };
        let mut rooms = RoomRegistry::new(config.room, Some(cache.clone()), broker.clone());
        if config.cluster.is_some() {
            rooms = rooms.with_sequencing(Sequencing {
                store: store.clone(),
                storage: limits.clone(),
                gap_wait: std::time::Duration::from_millis(config.gap_wait_ms),
            });
        }
        let cells = CellRegistry::new(config.geo);
        let delivery = Delivery::new(broker, Some(cache.clone()), cells.clone());
        let health = StorageHealth::default();
        let writers = DurableWriters::start(&store, &limits, &health, &delivery);
        let geo_writer = GeoWriter::new(
            store.clone(),
            limits.clone(),
            health.clone(),
            GeoSink::new(delivery.clone()),
        )
        .start();
        let security = Security {
            users: crate::rate_limit::user_limiter(&config.rate_limits),
            auth,
            rate_limits: config.rate_limits,
            user_slots: Arc::default(),
            ip_slots: Arc::default(),
            server_slots: Arc::default(),
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                rooms,
                sessions: DashMap::new(),
                cells,
                delivery,
                session_limits: config.session,
                storage: Storage {
                    store,
                    writers,
                    geo_writer,
                    cache,
                    limits,
                    health,
                },
                security,
                caps: config.connections,
                next_session: AtomicU64::new(1),
                cluster: config.cluster,
            }),
        };
        if let Some(cluster) = &engine.inner.cluster {
            let weak = Arc::downgrade(&engine.inner);
            let connections = move || weak.upgrade().map_or(0, |i| i.sessions.len());
            cluster.attach(engine.inner.cells.clone(), Box::new(connections));
        }
        Ok(engine)
    }

    /// The cluster as this node sees it (`None`: one node alone).
    pub fn cluster(&self) -> Option<ClusterView> {
        self.inner.cluster.as_ref().map(Cluster::view)
    }

    /// The one access check: whether `who` may do `action` on `topic`, joined `private` or
    /// not. Refusals are counted (`locus_auth_failures_total{reason="Unauthorized"}`).
    pub fn authorize(
        &self,
        who: &Identity,
        topic: &Topic,
        private: bool,
        action: Action,
    ) -> Result<(), Refusal> {
        self.inner
            .security
            .auth
            .authorize(who, topic, private, action)
    }

    /// The name of an anonymous connection (and of one opened with a key without `sub`):
    /// `anon-<session>`, or `anon-<node>-<session>` in a cluster, where session ids repeat
    /// across nodes and the name must tell users apart (typing, beacons).
    pub fn anon_name(&self, id: SessionId) -> Arc<str> {
        match &self.inner.cluster {
            Some(c) => Arc::from(format!("anon-{}-{id}", c.node_id())),
            None => Arc::from(format!("anon-{id}")),
        }
    }

    /// The identity behind a token (`None`: anonymous, named [`Engine::anon_name`]), or why it
    /// is refused.
    pub fn identify(
        &self,
        token: Option<&str>,
        anon_name: Arc<str>,
    ) -> Result<Identity, AuthError> {
        self.inner.security.auth.connect(token, anon_name)
    }

    pub fn session_limits(&self) -> &SessionLimits {
        &self.inner.session_limits
    }

    pub fn geo_limits(&self) -> &GeoLimits {
        self.inner.cells.limits()
    }

    pub fn storage_limits(&self) -> &StorageLimits {
        &self.inner.storage.limits
    }

    /// The store, for the parts that own their own tables (jobs, retention).
    pub fn store(&self) -> &AnyStore {
        &self.inner.storage.store
    }

    /// Whether the last storage write failed; shared with the jobs' writer.
    pub fn storage_health(&self) -> &StorageHealth {
        &self.inner.storage.health
    }

    /// Whether publications of the room `key` are stored first (`storage.durable_topics`).
    pub fn is_durable(&self, key: &str) -> bool {
        self.inner.storage.limits.is_durable(key)
    }

    /// Forgets the per-user buckets that are full again (idle users), so the keyed map holds
    /// only users active within the last bucket period. Run on a timer.
    pub fn prune_limiters(&self) {
        if let Some(users) = &self.inner.security.users {
            crate::rate_limit::prune_keyed(users);
        }
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Running rooms.
    pub fn rooms_running(&self) -> usize {
        self.inner.rooms.len()
    }

    pub(crate) fn rooms(&self) -> &RoomRegistry {
        &self.inner.rooms
    }

    pub(crate) fn cells(&self) -> &CellRegistry {
        &self.inner.cells
    }

    pub(crate) fn security(&self) -> &Security {
        &self.inner.security
    }

    pub(crate) fn history_window(&self) -> &HistoryCache {
        &self.inner.storage.cache
    }

    /// A new session id, unique for this engine's lifetime.
    fn next_session_id(&self) -> SessionId {
        self.inner.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A session started: shutdown reaches it through `shutdown`.
    pub(crate) fn session_started(&self, id: SessionId, shutdown: Recipient<Shutdown>) {
        self.inner.sessions.insert(id, shutdown);
    }

    pub(crate) fn session_stopped(&self, id: SessionId) {
        self.inner.sessions.remove(&id);
    }
}
