//! Retention: every `storage.retention_check_interval_ms`, removes publications older than
//! `storage.retention_days` (whole daily partitions on Postgres, which also keeps the next
//! days' partitions created).

use std::time::Duration;

use locus_actors::Engine;
use locus_storage::Storage;

const DAY_MS: i64 = 86_400_000;

/// Starts the retention loop on the current arbiter.
pub fn spawn(engine: &Engine) {
    let engine = engine.clone();
    actix_web::rt::spawn(async move {
        let limits = engine.storage_limits().clone();
        let every = Duration::from_millis(limits.retention_check_interval_ms);
        loop {
            let cutoff = locus_storage::now_ms() - i64::from(limits.retention_days) * DAY_MS;
            match engine.store().purge_before(cutoff).await {
                Ok(removed) => tracing::info!(
                    removed,
                    retention_days = limits.retention_days,
                    "retention ran"
                ),
                Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
            }
            actix_web::rt::time::sleep(every).await;
        }
    });
}
