//! Test harness: starts the real server on 127.0.0.1:0 in its own actix system, and speaks the
//! real protocol over loopback WebSockets (both versions) and HTTP.
//!
//! - this file: [`TestServer`], one server per test.
//! - `client.rs`: the raw-protocol WebSocket [`Client`] and the frames it reads and writes.
//! - `http.rs`: HTTP requests over loopback and the history pager.
//! - `auth_kit`, `cluster`, `compat`, `fake_provider`, `jobs_kit`, `process`: kits for one feature's tests each.
//! - `pg.rs`: a throwaway Postgres, included by `#[path]` in the tests that need one.
#![allow(dead_code)]

pub mod auth_kit;
mod client;
pub mod cluster;
pub mod compat;
pub mod fake_provider;
mod http;
pub mod jobs_kit;
pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

// Every test crate compiles this harness and uses only part of it (hence `dead_code` above).
#[allow(unused_imports)]
pub use client::{binary_push, Client, Msg, Received, Vsn};
#[allow(unused_imports)]
pub use http::{full_history, http_get, http_post, http_post_with, http_request, HttpAnswer};

/// How long a test waits for an expected message before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A server running for one test.
pub struct TestServer {
    pub addr: SocketAddr,
    control: locus::ServerControl,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Holds the SQLite file of this server (unless the test chose another store).
    _data: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the default config, adjusted by `adjust`.
    pub fn start_with(adjust: impl FnOnce(&mut locus::Config) + Send + 'static) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let data = tempfile::tempdir().expect("temp dir");
        let sqlite_url = format!("sqlite://{}/locus.db", data.path().display());
        let thread = std::thread::spawn(move || {
            let mut config = locus::Config::default();
            config.storage.url = sqlite_url;
            config.server.listen = "127.0.0.1:0".into();
            config.server.workers = 2;
            config.server.shutdown_timeout_ms = 1_000;
            // Most tests push frames far faster than a person; the rate-limit tests set theirs.
            config.rate_limits = locus_actors::rate_limit::RateLimitConfig::unlimited();
            adjust(&mut config);
            actix_web::rt::System::new().block_on(async move {
                let running = locus::start(config).await.expect("server starts");
                tx.send((running.addr, running.control())).unwrap();
                running.wait().await.unwrap();
            });
        });
        let (addr, control) = rx.recv().expect("server reports its address");
        TestServer {
            addr,
            control,
            thread: Some(thread),
            _data: data,
        }
    }

    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn ws_url(&self, vsn: &str) -> String {
        format!("ws://{}/socket/websocket?vsn={vsn}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn client(&self, vsn: Vsn) -> Client {
        Client::connect(&self.ws_url(vsn.as_str()), vsn).await
    }

    /// The current value of a metric series (first line starting with `series`), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let body = http_get(&self.http("/metrics")).await.1;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn shutdown(mut self) {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || {
            actix_web::rt::System::new().block_on(control.shutdown())
        })
        .await
        .unwrap();
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
        }
    }
}
