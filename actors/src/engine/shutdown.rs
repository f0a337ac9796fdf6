//! The ordered shutdown, inside the runtime: every session is told to close with 4001 (the
//! server stopped accepting before this is called) → rooms and cells stop as their last
//! members leave, and the caller's own parts (jobs) stop → the storage writers write what they
//! hold and stop, awaited → in a cluster, a goodbye, so the other nodes drop this node's
//! presences at once. A publication accepted before the call is in the database when it
//! returns.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{Engine, Shutdown};
use crate::publish::writer::stop_all;

/// How often shutdown checks whether every session has gone.
const SHUTDOWN_POLL_MS: u64 = 20;

impl Engine {
    /// Closes every session (waiting at most `timeout` for them to go), runs `then` (the
    /// server stops its jobs there), and flushes and stops the storage writers.
    pub async fn shutdown(&self, timeout: Duration, then: impl Future<Output = ()>) {
        tracing::info!(
            sessions = self.connections(),
            "shutting down: closing sessions"
        );
        for s in self.inner.sessions.iter() {
            // Bounded: one lifecycle message per session, sent once at shutdown.
            s.value().do_send(Shutdown);
        }
        let deadline = Instant::now() + timeout;
        while self.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        tracing::info!(
            left = self.connections(),
            rooms = self.rooms_running(),
            "sessions closed; stopping jobs"
        );
        then.await;
        let storage = &self.inner.storage;
        storage.writers.stop().await;
        stop_all([storage.geo_writer.clone().recipient()]).await;
        tracing::info!("storage writers flushed and stopped");
        if let Some(cluster) = &self.inner.cluster {
            // Last: what the writers just delivered has gone out before the goodbye.
            cluster.leave().await;
            tracing::info!("left the cluster");
        }
    }
}
