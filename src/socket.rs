//! The WebSocket endpoint: admits the connection through the engine (token, connection
//! slots), upgrades the request, and hands the socket to its session
//! ([`UserSession::serve`]), which owns it from there (reader, outbox, writer task).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use locus_actors::engine::ConnectError;
use locus_actors::session::UserSession;
use locus_protocol::Vsn;
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::AppState;

#[derive(Deserialize)]
pub struct SocketQuery {
    vsn: Option<String>,
    /// The client's JWT (supabase-js sends the anon or user key here).
    apikey: Option<String>,
}

/// `GET /socket/websocket` and `GET /realtime/v1/websocket`. Refused before the upgrade: 401
/// for a bad token, 503 when the server is full, 429 for the IP or the user.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<SocketQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vsn = Vsn::parse(query.vsn.as_deref())
        .ok_or_else(|| ApiError::bad_request("UnsupportedVersion", "vsn must be 1.0.0 or 2.0.0"))?;
    let permit = state
        .engine
        .connect(query.apikey.as_deref(), req.peer_addr().map(|a| a.ip()))
        .map_err(refused)?;
    let (response, ws, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad_request("NotAWebSocket", &e.to_string()))?;
    UserSession::serve(state.engine.clone(), permit, vsn, ws, stream);
    Ok(response)
}

fn refused(e: ConnectError) -> ApiError {
    let status = match &e {
        ConnectError::Auth(locus_actors::auth::AuthError::ConnectionLimitReached(_))
        | ConnectError::IpLimit(_) => StatusCode::TOO_MANY_REQUESTS,
        ConnectError::Auth(_) => StatusCode::UNAUTHORIZED,
        ConnectError::ServerFull(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.code(), &e.detail())
}
