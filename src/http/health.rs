//! `GET /api/health`: 200 with the state of each part, 503 when a part is down.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::AppState;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let broker = &state.engine.broker;
    let healthy = broker.is_healthy();
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "broker": { "name": broker.name(), "status": if healthy { "ok" } else { "down" } },
        "connections": state.engine.sessions.len(),
        "rooms": state.engine.rooms.len(),
    });
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
