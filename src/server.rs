//! Wires the engine into an actix-web server, and runs the ordered shutdown: stop accepting →
//! the engine's shutdown (sessions get close code 4001 → rooms drain → jobs stop → storage
//! writers flush and stop) → the HTTP server stops.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use locus_actors::engine::{ConnectionCaps, EngineConfig};
use locus_actors::Engine;
use locus_storage::AnyStore;

use crate::http::{broadcast, error, health, history, jobs, metrics, nearby, sign_in};
use crate::{retention, socket, telemetry, AppState, Config};

/// How often the keyed rate limiters forget callers whose buckets are full again.
const LIMITER_PRUNE_INTERVAL_MS: u64 = 10_000;

/// A bound, running server.
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    server: actix_web::dev::Server,
    control: ServerControl,
}

/// A handle to stop a running server from anywhere (it is `Send + Clone`).
#[derive(Clone)]
pub struct ServerControl {
    handle: ServerHandle,
    engine: Engine,
    jobs: locus_actors::jobs::Jobs,
    timeout: Duration,
}

/// Binds and starts serving on the current actix system.
pub async fn start(config: Config) -> io::Result<RunningServer> {
    let prometheus = telemetry::recorder();
    let store = AnyStore::connect(&config.storage.url, config.storage.pool_connections_max)
        .await
        .map_err(|e| io::Error::other(format!("storage {}: {e}", config.storage.url)))?;
    tracing::info!(backend = store.backend(), "storage ready");
    let cluster = locus_actors::cluster::Cluster::connect(&config.cluster)
        .await
        .map_err(io::Error::other)?;
    let engine_config = EngineConfig {
        session: config.session.clone(),
        room: config.room.clone(),
        geo: config.geo.clone(),
        storage: config.storage.clone(),
        auth: config.auth.clone(),
        rate_limits: config.rate_limits.clone(),
        connections: ConnectionCaps {
            server_max: config.server.connections_max,
            per_ip_max: config.server.connections_per_ip_max,
        },
        cluster,
        gap_wait_ms: config.cluster.gap_wait_ms,
    };
    let engine = Engine::start(engine_config, store).map_err(io::Error::other)?;
    retention::spawn(&engine);
    let jobs = locus_actors::jobs::Jobs::start(config.jobs.clone(), engine.clone());
    let timeout = Duration::from_millis(config.server.shutdown_timeout_ms);
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let state = web::Data::new(AppState {
        engine: engine.clone(),
        config: config.clone(),
        prometheus,
        sign_in: std::sync::Arc::new(crate::sign_in::SignIn::new(
            config.sign_in.clone(),
            &config.auth.jwt_secret,
        )),
        jobs: jobs.clone(),
        limits: std::sync::Arc::new(crate::http::limits::HttpLimiters::new(&config.rate_limits)),
    });
    spawn_limiter_pruning(&state);
    let body_max = config.http.body_bytes_max;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(body_max))
            .app_data(
                web::JsonConfig::default()
                    .limit(body_max)
                    .error_handler(error::json_error),
            )
            .route("/socket/websocket", web::get().to(socket::websocket))
            .route("/realtime/v1/websocket", web::get().to(socket::websocket))
            .route("/api/broadcast", web::post().to(broadcast::broadcast))
            .route(
                "/realtime/v1/api/broadcast",
                web::post().to(broadcast::broadcast),
            )
            .route(
                "/api/broadcast/{topic}/events/{event}",
                web::post().to(broadcast::broadcast_event),
            )
            .route(
                "/realtime/v1/api/broadcast/{topic}/events/{event}",
                web::post().to(broadcast::broadcast_event),
            )
            .route("/api/health", web::get().to(health::health))
            .route(
                "/api/channels/{topic}/history",
                web::get().to(history::history),
            )
            .route("/api/nearby", web::get().to(nearby::nearby))
            .route("/api/auth/evm/nonce", web::get().to(sign_in::evm_nonce))
            .route("/api/auth/evm", web::post().to(sign_in::evm))
            .route("/api/auth/telegram", web::post().to(sign_in::telegram))
            .route("/api/auth/ton/payload", web::get().to(sign_in::ton_payload))
            .route("/api/auth/ton", web::post().to(sign_in::ton))
            .route("/api/jobs", web::post().to(jobs::create))
            .route("/api/jobs", web::get().to(jobs::list))
            .route("/api/jobs/{id}", web::get().to(jobs::get))
            .route("/api/jobs/{id}/cancel", web::post().to(jobs::cancel))
            .route("/api/webhooks/{provider}", web::post().to(jobs::webhook))
            .route("/metrics", web::get().to(metrics::metrics))
    })
    .workers(workers)
    // Realtime frames are small and latency-bound: Nagle would hold them for the peer's
    // delayed ACK (up to 40 ms).
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(timeout.as_secs().max(1))
    .bind(&config.server.listen)?;
    let addr = *server
        .addrs()
        .first()
        .ok_or_else(|| io::Error::other("bound no address"))?;
    let server = server.run();
    let control = ServerControl {
        handle: server.handle(),
        engine,
        jobs,
        timeout,
    };
    tracing::info!(%addr, "locus listening");
    Ok(RunningServer {
        addr,
        server,
        control,
    })
}

/// Prunes every keyed rate limiter on a timer, so one key per caller, anonymous connection or
/// job owner seen once does not stay for the life of the process.
fn spawn_limiter_pruning(state: &web::Data<AppState>) {
    let state = state.clone();
    actix_web::rt::spawn(async move {
        let mut every =
            actix_web::rt::time::interval(Duration::from_millis(LIMITER_PRUNE_INTERVAL_MS));
        loop {
            every.tick().await;
            state.engine.prune_limiters();
            state.limits.prune();
            state.jobs.prune_limiters();
        }
    });
}

impl RunningServer {
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }

    /// Serves until the server is stopped (by [`ServerControl::shutdown`]).
    pub async fn wait(self) -> io::Result<()> {
        self.server.await
    }
}

impl ServerControl {
    /// The ordered shutdown. Returns once the server has stopped and the storage writers
    /// wrote what they held.
    pub async fn shutdown(&self) {
        self.handle.pause().await;
        self.engine
            .shutdown(self.timeout, self.jobs.shutdown())
            .await;
        self.handle.stop(true).await;
    }
}

/// Starts Locus and serves until SIGINT or SIGTERM, then shuts down in order.
pub async fn run(config: Config) -> io::Result<()> {
    let running = start(config).await?;
    let control = running.control();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        control.shutdown().await;
    });
    running.wait().await
}

async fn wait_for_signal() {
    let mut term = match actix_web::rt::signal::unix::signal(
        actix_web::rt::signal::unix::SignalKind::terminate(),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = actix_web::rt::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = actix_web::rt::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
