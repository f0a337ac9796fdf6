//! Locus actors: everything that runs per connection and per topic.
//!
//! # Layout
//! - [`engine`]: the façade the server holds: connect, publish (the only way in), the one
//!   access check, history and nearby reads, health, the ordered shutdown.
//! - [`session`]: the actor per connected client; one guard chain per frame, then channels,
//!   broadcasts, presence and typing, token lifecycle, `realtime:nearby`.
//! - [`connection`]: a socket below its session: outbox (bounded in bytes), writer task and
//!   slow-consumer policy, connection slots.
//! - [`room`], [`registry`], [`presence`], [`typing`], [`sequence`]: the actor per topic, the room
//!   map, and the pure state of presence, typing and (in a cluster) durable offset order.
//! - [`cell`]: the actor per active geohash cell; nearby members, geo messages, beacons.
//! - [`broker`]: publications to the rooms of a topic, with interest per topic; in-process, and
//!   what else crosses nodes about a room ([`remote`]).
//! - [`cluster`]: several nodes as one engine over NATS: the cluster's broker, interest routing,
//!   heartbeats and node death, geo across nodes.
//! - [`delivery`]: what the engine does with a publication it let out (now, or after commit).
//! - [`batch_writer`], [`storage_writer`], [`geo_writer`]: the storage actors writing batches.
//! - [`history`], [`recovery`]: the in-memory window and what a rejoining client missed.
//! - [`jobs`]: AI generation jobs: an actor per live job, providers, breakers, webhooks.
//! - [`topic`]: the topic model (prefixes, kinds, room keys). [`refusal`]: refusal codes.
//! - [`auth`]: JWT verification and topic policies. [`rate_limit`]: token buckets.
//! - [`ids`]: process-unique refs and keys.
//! - [`wire`]: server message shapes (replies, closes, `system`).
//! - [`close_code`], [`config`], [`metrics`]: close codes, limits, metric names.

pub mod auth;
pub mod broker;
pub mod close_code;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod engine;
pub mod geo;
pub mod ids;
pub mod jobs;
#[cfg(test)]
mod layout;
pub mod metrics;
pub mod publish;
pub mod rate_limit;
pub mod refusal;
pub mod room;
pub mod session;
pub mod topic;
pub mod wire;

/// Identifies one connection for the lifetime of the engine.
pub type SessionId = u64;

pub use close_code::CloseCode;
pub use engine::Engine;
