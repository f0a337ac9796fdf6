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
use locus_storage::Encoding;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::broadcast::{caller, rest_topic};
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
    let topic = rest_topic(&state, &path)?;
    state.limits.read(&Caller::of(&req, &who))?;
    let page = state
        .engine
        .history_page(&who, &topic, query.private, query.since_offset, query.limit)
        .await?;
    let (h, next_since_offset) = (page.history, page.next_since_offset);
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
        "topic": topic.as_str(),
        "epoch": h.epoch,
        "first_offset": h.first_offset,
        "next_offset": h.next_offset,
        "next_since_offset": next_since_offset,
        "messages": messages,
    })))
}
