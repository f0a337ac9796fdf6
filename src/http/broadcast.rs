//! `POST /api/broadcast` (also `/realtime/v1/api/broadcast`): Supabase's REST broadcast.
//!
//! Body `{"messages": [{"topic", "event", "payload", "private"?}]}` with topics given without
//! the `realtime:` prefix (a prefixed topic is accepted as is). Answers 202 when every message
//! was accepted by the broker. The request is validated whole before anything is published, so
//! a bad message publishes nothing.
//!
//! The caller's token (`Authorization: Bearer` or `apikey`) is checked like a socket's: the
//! topic rules and policies apply to each message (`private` included); a `service_role`
//! token, Supabase's server key, may publish anywhere.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use locus_actors::auth::{Action, Identity};
use locus_actors::broker::{Body, Publication};
use locus_actors::engine::{Author, Outgoing};
use locus_actors::topic::{Kind, Topic};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::http::error::ApiError;
use crate::http::limits::Caller;
use crate::AppState;

#[derive(Deserialize)]
pub struct BroadcastRequest {
    messages: Vec<BroadcastMessage>,
}

#[derive(Deserialize)]
struct BroadcastMessage {
    topic: String,
    event: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    /// A private channel: the caller's token must be allowed to broadcast on it.
    #[serde(default)]
    private: bool,
}

/// The caller's identity from `Authorization: Bearer <jwt>` or the `apikey` header, with the
/// same rules as a WebSocket connection.
pub(crate) fn caller(req: &actix_web::HttpRequest, state: &AppState) -> Result<Identity, ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let token = header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header("apikey"));
    Ok(state.engine.identify(token, Arc::from("anon-http"))?)
}

/// A REST topic (`realtime:` optional), bounded like a socket's. `realtime:nearby` is not a
/// channel: it takes `post` over the socket.
pub(crate) fn rest_topic(state: &AppState, topic: &str) -> Result<Topic, ApiError> {
    let topic = Topic::parse_unprefixed(topic, state.engine.session_limits().topic_bytes_max)?;
    if *topic.kind() == Kind::Nearby {
        return Err(ApiError::bad_request(
            "InvalidTopic",
            "realtime:nearby is not a channel; post to it over the socket",
        ));
    }
    Ok(topic)
}

pub async fn broadcast(
    req: actix_web::HttpRequest,
    body: web::Json<BroadcastRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &state)?;
    let limited = Caller::of(&req, &who);
    let messages = body.into_inner().messages;
    let max = state.config.http.broadcast_messages_max;
    if messages.is_empty() || messages.len() > max {
        return Err(ApiError::bad_request(
            "InvalidMessages",
            &format!("messages must hold 1..={max} entries"),
        ));
    }
    state.limits.messages(&limited, messages.len())?;
    let mut publications = Vec::with_capacity(messages.len());
    for (i, msg) in messages.into_iter().enumerate() {
        let topic = rest_topic(&state, &msg.topic)
            .and_then(|t| {
                state
                    .engine
                    .authorize(&who, &t, msg.private, Action::Broadcast)?;
                Ok(t)
            })
            .map_err(|e| ApiError {
                message: format!("messages[{i}]: {}", e.message),
                ..e
            })?;
        let payload: Arc<RawValue> = match msg.payload {
            Some(p) => Arc::from(p),
            None => Arc::from(locus_actors::wire::raw("{}".into())),
        };
        check_payload(&state, &msg.event, payload.get().len()).map_err(|e| ApiError {
            message: format!("messages[{i}]: {}", e.message),
            ..e
        })?;
        state.limits.topic(&limited, topic.as_str())?;
        publications.push(Publication {
            topic: topic.room_key(msg.private),
            event: msg.event,
            body: Body::Json(payload),
            sender: None,
            accepted_at: Instant::now(),
            durable: None,
        });
    }
    let total = publications.len();
    let results =
        futures_util::future::join_all(publications.into_iter().map(|p| publish(&state, p))).await;
    let refused: Vec<ApiError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = refused.first() {
        return Err(ApiError::new(
            first.status,
            first.code,
            &format!(
                "{} of {total} messages were refused ({}); retry them",
                refused.len(),
                first.message
            ),
        ));
    }
    Ok(HttpResponse::Accepted().finish())
}

/// Publishes one message through the engine, answering once it is accepted (after commit on
/// a durable topic).
async fn publish(state: &AppState, publication: Publication) -> Result<(), ApiError> {
    let outgoing = Outgoing::Channel {
        publication,
        author: Author::default(),
    };
    state.engine.publish(outgoing)?.wait().await?;
    Ok(())
}

/// `?private=true`: realtime-js's `httpSend` on a private channel.
#[derive(Deserialize)]
pub struct EventQuery {
    #[serde(default)]
    private: bool,
}

#[derive(Deserialize)]
pub struct EventPath {
    topic: String,
    event: String,
}

/// `POST /api/broadcast/<topic>/events/<event>`: realtime-js's `httpSend`. The body is the
/// payload itself: JSON, or opaque bytes with `Content-Type: application/octet-stream` (then
/// delivered to vsn 2.0.0 members as a binary broadcast). Answers 202.
pub async fn broadcast_event(
    path: web::Path<EventPath>,
    query: web::Query<EventQuery>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &state)?;
    let limited = Caller::of(&req, &who);
    let EventPath { topic, event } = path.into_inner();
    let topic = rest_topic(&state, &topic)?;
    state
        .engine
        .authorize(&who, &topic, query.private, Action::Broadcast)?;
    check_payload(&state, &event, body.len())?;
    state.limits.messages(&limited, 1)?;
    state.limits.topic(&limited, topic.as_str())?;
    let binary = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let body = if binary {
        Body::Binary {
            encoding: locus_protocol::PayloadEncoding::Binary,
            data: body,
        }
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("MalformedBody", "body is not UTF-8 JSON"))?;
        let payload = RawValue::from_string(text.to_owned())
            .map_err(|e| ApiError::bad_request("MalformedBody", &e.to_string()))?;
        Body::Json(Arc::from(payload))
    };
    let publication = Publication {
        topic: topic.room_key(query.private),
        event,
        body,
        sender: None,
        accepted_at: Instant::now(),
        durable: None,
    };
    publish(&state, publication).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// A REST publication is bounded like a socket one: its event and payload together by
/// `session.payload_bytes_max` (a socket broadcast's payload holds both), so one request can
/// never build a frame that no member queue can take.
fn check_payload(state: &AppState, event: &str, payload_bytes: usize) -> Result<(), ApiError> {
    let max = state.engine.session_limits().payload_bytes_max;
    if event.len() + payload_bytes > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            &format!("payloads are at most {max} bytes (session.payload_bytes_max)"),
        ));
    }
    Ok(())
}
