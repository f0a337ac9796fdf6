//! `GET /api/channels/<topic>/history?since_offset=&limit=`: a durable topic's history, for
//! clients whose recovery answered `recovered: false`.
//!
//! Answers `{"topic","epoch","first_offset","next_offset","next_since_offset","messages":[{"offset",
//! "event","payload","id","user_id","created_at"}]}`; binary payloads come as `payload_base64`.
//! A page holds at most `limit` messages and `storage.history_page_bytes_max` payload bytes
//! (always at least one message); `next_since_offset` is the `since_offset` of the next page,
//! `null` once the page reaches the newest message.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use locus_actors::auth::Action;
use locus_actors::registry::room_key;
use locus_storage::{Encoding, Storage};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::broadcast::{authorize_action, caller, full_topic};
use crate::http::error::ApiError;
use crate::http::limits::Caller;
use crate::AppState;

#[derive(Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    since_offset: u64,
    limit: Option<usize>,
    /// Read as a private channel would (`config.private` of a join).
    #[serde(default)]
    private: bool,
}

/// Reading history is reading the channel: the caller's token (`Authorization: Bearer` or
/// `apikey`) must be allowed to join the topic (401 without an acceptable token, 403 when a
/// rule refuses), and reads are rate-limited per caller.
pub async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &state)?;
    let topic = full_topic(
        path.into_inner(),
        state.engine.session_limits.topic_bytes_max,
    )?;
    authorize_action(&state, &who, &topic, query.private, Action::Join)?;
    state.limits.read(&Caller::of(&req, &who))?;
    // A private channel's history is its own (private and public joins are kept apart).
    let key = room_key(&topic, query.private);
    let storage = state.engine.durable(&key).ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "NotDurable",
            "this topic keeps no history",
        )
    })?;
    let max = storage.limits.history_page_max;
    let limit = query.limit.unwrap_or(max);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "InvalidLimit",
            &format!("limit must be 1..={max}"),
        ));
    }
    let h = storage
        .store
        .history(
            &key,
            query.since_offset,
            limit,
            storage.limits.history_page_bytes_max,
        )
        .await?;
    let next_since_offset = h
        .publications
        .last()
        .map(|p| p.offset)
        .filter(|&last| last.saturating_add(1) < h.next_offset);
    let messages: Vec<Value> = h
        .publications
        .into_iter()
        .map(|p| {
            let mut m = json!({
                "offset": p.offset,
                "event": p.event,
                "id": p.client_id,
                "user_id": p.user_id,
                "created_at": locus_storage::time::rfc3339_ms(p.created_at_ms),
            });
            match p.encoding {
                Encoding::Json => {
                    m["payload"] = serde_json::from_slice(&p.payload).unwrap_or(Value::Null)
                }
                Encoding::Binary => {
                    m["payload_base64"] =
                        Value::from(base64::engine::general_purpose::STANDARD.encode(&p.payload))
                }
            }
            m
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "topic": topic,
        "epoch": h.epoch,
        "first_offset": h.first_offset,
        "next_offset": h.next_offset,
        "next_since_offset": next_since_offset,
        "messages": messages,
    })))
}
