//! Locus: a realtime engine speaking the Supabase Realtime / Phoenix protocol.
//!
//! # Layout
//! - [`config`]: `config.toml` plus `LOCUS_*` environment overrides.
//! - [`socket`]: the WebSocket endpoint and the per-connection writer task.
//! - [`http`]: REST broadcast, jobs and webhooks, health, metrics, and the HTTP error shape.
//! - [`telemetry`]: the Prometheus recorder and metric descriptions.
//! - [`sign_in`]: wallet sign-in proofs and the tokens issued for them.
//! - [`retention`]: the periodic removal of expired history.
//! - [`server`]: wiring everything into an HTTP server, and the ordered shutdown.
//!
//! Sessions, rooms and the broker live in the `locus-actors` crate; the wire format in
//! `locus-protocol`.

pub mod config;
pub mod http;
pub mod retention;
pub mod server;
pub mod sign_in;
pub mod socket;
pub mod telemetry;

pub use config::Config;
pub use server::{run, start, RunningServer, ServerControl};

/// State shared by every HTTP worker.
pub struct AppState {
    pub engine: locus_actors::Engine,
    pub config: Config,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    pub sign_in: std::sync::Arc<sign_in::SignIn>,
    pub jobs: locus_actors::jobs::Jobs,
    pub limits: std::sync::Arc<http::limits::HttpLimiters>,
}
