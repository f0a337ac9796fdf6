//! The engine handle: the registries, the broker, storage and the limits every session shares.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use locus_storage::AnyStore;

use crate::auth::{AuthConfig, Authenticator};
use crate::batch_writer::InflightBytes;
use crate::broker::Body;
use crate::broker::{Broker, InProcessBroker};
use crate::cell::CellRegistry;
use crate::config::{GeoLimits, RoomLimits, SessionLimits, StorageLimits};
use crate::geo_writer::{GeoSink, GeoWriter};
use crate::history::{HistoryCache, WindowLimits};
use crate::rate_limit::{RateLimitConfig, UserLimiter};
use crate::registry::{RoomRegistry, SessionRegistry};
use crate::slots::SlotCounter;
use crate::storage_writer::{Append, DurableError, DurableSink, StorageHealth, StorageWriter};
use crate::SessionId;
use locus_protocol::PayloadEncoding;

/// Durable topics: the store, its writer actor and the in-memory history window.
#[derive(Clone)]
pub struct StorageHandle {
    /// The writers; a topic's publications all go to `writers[hash(topic) % len]`.
    pub writers: Arc<[Addr<StorageWriter>]>,
    /// Each writer's in-flight bytes (`inflight_bytes_max`), by the same index.
    pub inflight: Arc<[InflightBytes]>,
    pub store: AnyStore,
    pub cache: HistoryCache,
    pub limits: Arc<StorageLimits>,
    pub health: StorageHealth,
}

/// Authentication, authorization and rate limits, shared by every session.
pub struct Security {
    pub auth: Authenticator,
    pub rate_limits: RateLimitConfig,
    /// Per-user buckets; `None` when `user_messages_per_s` is 0.
    pub users: Option<Arc<UserLimiter>>,
    /// Open connections per user (`session.connections_per_user_max`).
    pub user_slots: Arc<SlotCounter<Arc<str>>>,
    /// Open connections per client IP (`server.connections_per_ip_max`).
    pub ip_slots: Arc<SlotCounter<IpAddr>>,
    /// Open connections of the whole server (`server.connections_max`).
    pub server_slots: Arc<SlotCounter<()>>,
}

impl Security {
    pub fn new(auth: Authenticator, rate_limits: RateLimitConfig) -> Security {
        Security {
            users: crate::rate_limit::user_limiter(&rate_limits),
            auth,
            rate_limits,
            user_slots: Arc::default(),
            ip_slots: Arc::default(),
            server_slots: Arc::default(),
        }
    }

    /// Forgets the per-user buckets that are full again (idle users), so the keyed map holds
    /// only users active within the last bucket period. Run on a timer.
    pub fn prune_limiters(&self) {
        if let Some(users) = &self.users {
            crate::rate_limit::prune_keyed(users);
        }
    }
}

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct Engine {
    pub rooms: RoomRegistry,
    pub sessions: SessionRegistry,
    pub broker: Arc<dyn Broker>,
    pub session_limits: Arc<SessionLimits>,
    /// `None` runs the engine without durable topics (every topic ephemeral).
    pub storage: Option<StorageHandle>,
    /// Active geohash cells of the nearby subscription.
    pub cells: CellRegistry,
    /// Stores geo messages; `None` without storage (posts are then refused).
    pub geo_writer: Option<Addr<GeoWriter>>,
    pub security: Arc<Security>,
    next_session: Arc<AtomicU64>,
}

impl Engine {
    /// An engine on the in-process broker; with `storage`, starts the storage writer on the
    /// current arbiter. Must run inside an actix system.
    pub fn start(
        session_limits: SessionLimits,
        room_limits: RoomLimits,
        geo_limits: GeoLimits,
        storage: Option<(AnyStore, StorageLimits)>,
    ) -> Self {
        let cache = storage.as_ref().map(|(_, l)| {
            HistoryCache::new(WindowLimits {
                size: l.history_window_size,
                topics_max: l.history_window_topics_max,
                topic_bytes_max: l.history_window_topic_bytes_max,
                bytes_max: l.history_window_bytes_max,
            })
        });
        let rooms = RoomRegistry::new(room_limits, cache.clone());
        let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new(rooms.clone()));
        let storage = storage.zip(cache).map(|((store, limits), cache)| {
            let health = StorageHealth::default();
            let writers: Vec<_> = (0..limits.writers)
                .map(|_| {
                    let writer = StorageWriter::new(
                        store.clone(),
                        limits.clone(),
                        health.clone(),
                        DurableSink::new(broker.clone(), cache.clone()),
                    );
                    writer.start()
                })
                .collect();
            let inflight: Vec<_> = (0..limits.writers)
                .map(|_| InflightBytes::new(limits.inflight_bytes_max))
                .collect();
            StorageHandle {
                writers: writers.into(),
                inflight: inflight.into(),
                store,
                cache,
                limits: Arc::new(limits),
                health,
            }
        });
        let geo_writer = storage.as_ref().map(|s| {
            GeoWriter::new(
                s.store.clone(),
                (*s.limits).clone(),
                s.health.clone(),
                GeoSink,
            )
            .start()
        });
        Engine {
            rooms,
            sessions: SessionRegistry::default(),
            cells: CellRegistry::new(geo_limits),
            geo_writer,
            broker,
            session_limits: Arc::new(session_limits),
            storage,
            security: Arc::new(Security::new(
                Authenticator::new(AuthConfig::default()).expect("the default auth config loads"),
                RateLimitConfig::default(),
            )),
            next_session: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The engine with these authentication and rate-limit settings (before any session).
    pub fn with_security(mut self, security: Security) -> Engine {
        self.security = Arc::new(security);
        self
    }

    /// A new session id, unique for this engine's lifetime.
    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The storage handle when `topic` is durable.
    pub fn durable(&self, topic: &str) -> Option<&StorageHandle> {
        self.storage.as_ref().filter(|s| s.limits.is_durable(topic))
    }
}

impl StorageHandle {
    /// The writer that owns `topic`.
    pub fn writer_for(&self, topic: &str) -> &Addr<StorageWriter> {
        &self.writers[self.writer_index(topic)]
    }

    fn writer_index(&self, topic: &str) -> usize {
        use std::hash::BuildHasher;
        // A fixed-key hasher: the same topic must map to the same writer for the process's life.
        let hash =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(topic);
        (hash % self.writers.len() as u64) as usize
    }

    /// Hands a publication of a durable topic to the storage writer without waiting. The
    /// receiver completes after commit (the publication is then delivered with its offset), or
    /// with the reason it was not stored. `client_id` makes re-sends by the same user
    /// idempotent. Refused with `StorageBusy` when the writer holds `inflight_publications_max`
    /// publications or `inflight_bytes_max` bytes.
    pub fn append(
        &self,
        publication: crate::broker::Publication,
        user_id: Option<&str>,
        client_id: Option<String>,
    ) -> Result<
        tokio::sync::oneshot::Receiver<Result<locus_storage::Appended, DurableError>>,
        DurableError,
    > {
        // The record shares the payload's buffer with the delivery instead of copying it.
        let (encoding, payload) = match &publication.body {
            Body::Json(p) | Body::Event(p) => (
                locus_storage::Encoding::Json,
                Bytes::from_owner(JsonBytes(p.clone())),
            ),
            Body::Binary {
                encoding: PayloadEncoding::Json,
                data,
            } => (locus_storage::Encoding::Json, data.clone()),
            Body::Binary {
                encoding: PayloadEncoding::Binary,
                data,
            } => (locus_storage::Encoding::Binary, data.clone()),
        };
        let idem_key = match (&client_id, user_id) {
            (Some(id), user) => format!("u:{}:{id}", user.unwrap_or("")),
            (None, _) => format!("s:{}", crate::presence::generated_key()),
        };
        let record = locus_storage::NewPublication {
            topic: publication.topic.to_string(),
            event: publication.event.clone(),
            encoding,
            payload,
            user_id: user_id.map(str::to_owned),
            client_id,
            idem_key,
            created_at_ms: locus_storage::now_ms(),
        };
        let writer = self.writer_index(&publication.topic);
        let Some(permit) = self.inflight[writer].admit(record.size_bytes()) else {
            crate::metrics::storage_refused("inflight_bytes");
            return Err(DurableError::Busy);
        };
        let (done, completion) = tokio::sync::oneshot::channel();
        self.writers[writer]
            .try_send(Append {
                record,
                delivery: publication,
                done,
                permit,
            })
            .map_err(|_| {
                crate::metrics::storage_refused("inflight_publications");
                DurableError::Busy
            })?;
        crate::metrics::storage_queue_depth().increment(1.0);
        Ok(completion)
    }
}

/// A JSON payload's text as the bytes of a stored record, without copying it.
struct JsonBytes(Arc<serde_json::value::RawValue>);

impl AsRef<[u8]> for JsonBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.get().as_bytes()
    }
}
