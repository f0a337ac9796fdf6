//! `GET /api/health`: the state of each part. 200 while the engine serves — `"status":
//! "degraded"` when storage is failing (ephemeral traffic still flows) — and 503 when the
//! broker cannot deliver.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::AppState;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let h = state.engine.health().await;
    let storage_status = if h.storage_reachable && !h.storage_degraded {
        "ok"
    } else {
        "degraded"
    };
    let storage_ok = storage_status == "ok";
    let body = json!({
        "status": if !h.broker_ok { "down" } else if storage_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "broker": { "name": h.broker_name, "status": if h.broker_ok { "ok" } else { "down" } },
        "storage": {
            "status": storage_status,
            "backend": h.storage_backend,
            "reachable": h.storage_reachable,
        },
        "connections": h.connections,
        "rooms": h.rooms,
        "jobs": state.jobs.provider_health(),
    });
    if h.broker_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
