//! `GET /api/health`: the state of each part. 200 while the engine serves — `"status":
//! "degraded"` when storage is failing (ephemeral traffic still flows) or NATS is out of reach
//! (local members are still served) — and 503 when the broker cannot deliver. In a cluster,
//! `cluster` lists the live nodes.

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
    let cluster = state.engine.cluster();
    // Without NATS a node still serves its local members: degraded, not down.
    let cluster_ok = cluster.as_ref().is_none_or(|c| c.connected);
    let status = match (h.broker_ok, storage_status == "ok" && cluster_ok) {
        (false, _) => "down",
        (true, true) => "ok",
        (true, false) => "degraded",
    };
    let mut body = json!({
        "status": status,
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
    if let Some(c) = cluster {
        body["cluster"] = json!({
            "node_id": c.node_id,
            "nodes": c.nodes,
            "broker": { "status": if c.connected { "ok" } else { "degraded" } },
        });
    }
    if h.broker_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
