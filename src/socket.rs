//! The WebSocket endpoint: upgrades the request, starts a session actor fed by the socket's read
//! side, and runs the writer task that drains the session's outbox into the socket.
//!
//! The writer is the only place that touches the socket's write side. When the outbox turns
//! slow it abandons whatever send is blocked, drops the queued frames, sends a `system` notice
//! and closes with 4008 — bounded by `session.close_grace_ms`, so a client that never reads
//! again cannot hold the connection's resources.

use std::time::Duration;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use locus_actors::auth::{AuthError, Identity};
use locus_actors::close_code::CloseCode;
use locus_actors::metrics as m;
use locus_actors::outbox::{outbox, OutboxReceiver, Outgoing};
use locus_actors::slots::ConnectionSlots;
use locus_actors::user_session::{anon_name, SocketEvent, UserSession, WriterFinished};
use locus_actors::wire;
use locus_protocol::{OutFrame, Vsn, PHOENIX_TOPIC};
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::AppState;

#[derive(Deserialize)]
pub struct SocketQuery {
    vsn: Option<String>,
    /// The client's JWT (supabase-js sends the anon or user key here).
    apikey: Option<String>,
}

/// `GET /socket/websocket` and `GET /realtime/v1/websocket`.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<SocketQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vsn = Vsn::parse(query.vsn.as_deref())
        .ok_or_else(|| ApiError::bad_request("UnsupportedVersion", "vsn must be 1.0.0 or 2.0.0"))?;
    let limits = state.engine.session_limits.clone();
    let engine = state.engine.clone();
    let id = engine.next_session_id();
    let security = engine.security.clone();
    let identity = security
        .auth
        .connect(query.apikey.as_deref(), anon_name(id))
        .map_err(|e| {
            m::auth_failure(e.code());
            ApiError::new(StatusCode::UNAUTHORIZED, e.code(), &e.to_string())
        })?;
    let slots = admit(&req, &state, &identity)?;
    let (response, ws, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad_request("NotAWebSocket", &e.to_string()))?;
    let events = stream
        .max_frame_size(limits.frame_bytes_max)
        .aggregate_continuations()
        .max_continuation_size(limits.frame_bytes_max)
        .filter_map(|item| std::future::ready(socket_event(item)));
    let (tx, rx) = outbox(limits.outbound_queue_bytes_max);
    let session = UserSession::create(move |ctx| {
        ctx.add_stream(events);
        UserSession::new(id, identity, vsn, tx, engine).holding(slots)
    });
    metrics::counter!(m::CONNECTIONS_OPENED).increment(1);
    let grace = Duration::from_millis(limits.close_grace_ms);
    actix_web::rt::spawn(write_loop(ws, rx, vsn, session, grace));
    Ok(response)
}

/// Takes the connection's slots: the server's (`server.connections_max`), its IP's
/// (`server.connections_per_ip_max`) and its user's (`session.connections_per_user_max`).
/// Refused before the upgrade: 503 when the server is full, 429 for the IP or the user.
fn admit(
    req: &HttpRequest,
    state: &AppState,
    identity: &Identity,
) -> Result<ConnectionSlots, ApiError> {
    let security = &state.engine.security;
    let server = &state.config.server;
    let refuse = |status, code: &'static str, message: String| {
        m::auth_failure(code);
        ApiError::new(status, code, &message)
    };
    let refuse_user = |e: AuthError| {
        m::auth_failure(e.code());
        ApiError::coded(StatusCode::TOO_MANY_REQUESTS, e.code(), &e)
    };
    let mut slots = ConnectionSlots {
        server: Some(
            security
                .server_slots
                .take((), server.connections_max)
                .ok_or_else(|| {
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServerFull",
                        format!(
                            "this server holds server.connections_max = {} connections",
                            server.connections_max
                        ),
                    )
                })?,
        ),
        ..ConnectionSlots::default()
    };
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        let max = server.connections_per_ip_max;
        slots.ip = Some(security.ip_slots.take(ip, max).ok_or_else(|| {
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "IpConnectionLimitReached",
                format!("at most {max} connections per client IP (server.connections_per_ip_max)"),
            )
        })?);
    }
    if identity.is_user() {
        let max = state.engine.session_limits.connections_per_user_max;
        slots.user = Some(
            security
                .user_slots
                .take(identity.user_id.clone(), max)
                .ok_or_else(|| refuse_user(AuthError::ConnectionLimitReached(max)))?,
        );
    }
    Ok(slots)
}

fn socket_event(
    item: Result<actix_ws::AggregatedMessage, actix_ws::ProtocolError>,
) -> Option<SocketEvent> {
    use actix_ws::AggregatedMessage as M;
    Some(match item {
        Ok(M::Text(text)) => SocketEvent::Text(text.to_string()),
        Ok(M::Binary(data)) => SocketEvent::Binary(data),
        Ok(M::Ping(data)) => SocketEvent::Ping(data),
        Ok(M::Pong(_)) => return None,
        Ok(M::Close(_)) => SocketEvent::Close,
        Err(actix_ws::ProtocolError::Overflow) => SocketEvent::FrameTooBig,
        // The connection went away (reset or EOF mid-frame): a disconnect, not bad input.
        Err(actix_ws::ProtocolError::Io(_)) => SocketEvent::Close,
        Err(e) => SocketEvent::ProtocolError(e.to_string()),
    })
}

/// Drains the outbox into the socket until a close, a dead socket, or a slow consumer.
async fn write_loop(
    mut ws: actix_ws::Session,
    mut rx: OutboxReceiver,
    vsn: Vsn,
    session: Addr<UserSession>,
    grace: Duration,
) {
    let slow = rx.slow_watch();
    // One wait for the connection's life, polled by every select: creating a fresh `Notified`
    // per frame (register, then deregister on drop) was ~7 % of a fan-out profile.
    let slow_wait = slow.wait();
    tokio::pin!(slow_wait);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut slow_wait => break close_slow(ws, &mut rx, vsn, grace).await,
            item = rx.recv() => item,
        };
        // Every send races the slow signal: a socket that takes nothing must not hold the
        // writer (pongs included: their queue is bounded like frames).
        let sent = match item {
            Some(Outgoing::Frame(frame)) => tokio::select! {
                biased;
                _ = &mut slow_wait => break close_slow(ws, &mut rx, vsn, grace).await,
                sent = send_frame(&mut ws, frame) => sent,
            },
            Some(Outgoing::Pong(data)) => tokio::select! {
                biased;
                _ = &mut slow_wait => break close_slow(ws, &mut rx, vsn, grace).await,
                sent = ws.pong(&data) => sent.is_ok(),
            },
            Some(Outgoing::Close(code)) => break close(ws, code, grace).await,
            // Every producer is gone: the session ended.
            None => break close(ws, CloseCode::Normal, grace).await,
        };
        if !sent {
            break;
        }
    }
    // Bounded: sent once per connection, when its writer ends.
    session.do_send(WriterFinished);
}

async fn send_frame(ws: &mut actix_ws::Session, frame: OutFrame) -> bool {
    if frame.binary {
        ws.binary(frame.data).await.is_ok()
    } else {
        // SAFETY: text frames are built by locus-protocol from serde_json output and &str
        // pieces only, so they are valid UTF-8; re-validating every copy of a fanned-out frame
        // for every member would cost a pass over each frame per recipient.
        let text = unsafe { bytestring::ByteString::from_bytes_unchecked(frame.data) };
        ws.text(text).await.is_ok()
    }
}

async fn close(ws: actix_ws::Session, code: CloseCode, grace: Duration) {
    let reason = actix_ws::CloseReason {
        code: actix_ws::CloseCode::Other(code.code()),
        description: Some(code.reason().to_owned()),
    };
    let reason = if code == CloseCode::Normal {
        actix_ws::CloseReason {
            code: actix_ws::CloseCode::Normal,
            description: None,
        }
    } else {
        reason
    };
    let _ = tokio::time::timeout(grace, ws.close(Some(reason))).await;
}

/// The slow-consumer path: drop what is queued, tell the client why, close with 4008.
async fn close_slow(mut ws: actix_ws::Session, rx: &mut OutboxReceiver, vsn: Vsn, grace: Duration) {
    rx.discard_queued();
    m::disconnect(CloseCode::SlowConsumer.name());
    let notice = wire::system(
        vsn,
        PHOENIX_TOPIC,
        false,
        "system",
        &format!(
            "{}: {}",
            CloseCode::SlowConsumer.name(),
            CloseCode::SlowConsumer.reason()
        ),
    );
    let _ = tokio::time::timeout(grace, async {
        if send_frame(&mut ws, notice).await {
            close(ws, CloseCode::SlowConsumer, grace).await;
        }
    })
    .await;
}
