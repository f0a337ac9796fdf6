//! `GET /api/health`: the state of each part. 200 while the engine serves — `"status":
//! "degraded"` when storage is failing (ephemeral traffic still flows) — and 503 when the
//! broker cannot deliver.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use locus_storage::Storage;
use serde_json::json;

use crate::AppState;

/// A store that does not answer within this long is reported down.
const STORAGE_PING_TIMEOUT_MS: u64 = 1_000;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let broker = &state.engine.broker;
    let broker_ok = broker.is_healthy();
    let storage = match &state.engine.storage {
        None => json!({ "status": "off" }),
        Some(s) => {
            let ping = tokio::time::timeout(
                Duration::from_millis(STORAGE_PING_TIMEOUT_MS),
                s.store.ping(),
            )
            .await;
            let reachable = matches!(ping, Ok(Ok(())));
            let status = if reachable && !s.health.is_degraded() {
                "ok"
            } else {
                "degraded"
            };
            json!({ "status": status, "backend": s.store.backend(), "reachable": reachable })
        }
    };
    let storage_ok = storage["status"] != "degraded";
    let body = json!({
        "status": if !broker_ok { "down" } else if storage_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "broker": { "name": broker.name(), "status": if broker_ok { "ok" } else { "down" } },
        "storage": storage,
        "connections": state.engine.sessions.len(),
        "rooms": state.engine.rooms.len(),
        "jobs": state.jobs.provider_health(),
    });
    if broker_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
