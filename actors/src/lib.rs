//! Locus actors: everything that runs per connection and per topic.
//!
//! # Layout
//! - [`user_session`]: the actor per connected client; decodes frames and routes them.
//! - [`room`]: the actor per topic; members, presence, typing and fan-out.
//! - [`cell`]: the actor per active geohash cell; nearby members, geo messages, beacons.
//! - [`batch_writer`]: the batching actor both storage writers are built on.
//! - [`geo_writer`]: the storage actor batching geo messages.
//! - [`jobs`]: AI generation jobs: an actor per live job, providers, breakers, webhooks.
//! - [`nearby`]: the session's side of `realtime:nearby` (location, post, nearby presence).
//! - [`auth`]: JWT verification, personal and private topics, topic policies.
//! - [`rate_limit`]: per-connection and per-user token buckets, the flood rule.
//! - [`slots`]: connection slots per server, client IP and user (the connection caps).
//! - [`outbox`]: a connection's outbound queue, bounded in bytes (the backpressure point).
//! - [`broker`]: the boundary between publishers and rooms; in-process implementation.
//! - [`storage_writer`]: the storage actor batching durable publications into transactions.
//! - [`history`]: the in-memory window of recent durable publications per topic.
//! - [`recovery`]: what a rejoining client missed, from the window or the database.
//! - [`registry`]: topic → room and session id → session maps.
//! - [`presence`], [`typing`]: pure state of a room's presence and typing indicators.
//! - [`wire`]: server message shapes (replies, closes, `system`).
//! - [`close_code`], [`config`], [`metrics`]: close codes, limits, metric names.
//! - [`engine`]: the handle bundling registries, broker and limits.

pub mod auth;
pub mod batch_writer;
pub mod broker;
pub mod cell;
pub mod close_code;
pub mod config;
pub mod engine;
pub mod geo_writer;
pub mod history;
pub mod jobs;
pub mod metrics;
pub mod nearby;
pub mod outbox;
pub mod presence;
pub mod rate_limit;
pub mod recovery;
pub mod registry;
pub mod room;
pub mod slots;
pub mod storage_writer;
pub mod typing;
pub mod user_session;
pub mod wire;

/// Identifies one connection for the lifetime of the engine.
pub type SessionId = u64;

pub use close_code::CloseCode;
pub use engine::Engine;
