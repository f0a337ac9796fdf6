//! Sign-in endpoints: a verified wallet proof in, a Locus JWT out
//! (`{"access_token","expires_in","user_id"}`).
//!
//! - `GET /api/auth/evm/nonce` → `{"nonce","expires_in"}` (single use).
//! - `POST /api/auth/evm` `{"message","signature"}`: an EIP-4361-shaped message naming an
//!   allowed domain and the nonce, signed with `personal_sign`.
//! - `POST /api/auth/telegram` `{"init_data"}`: a Mini App's `initData`.
//! - `GET /api/auth/ton/payload` → `{"payload","expires_in"}` (single use);
//!   `POST /api/auth/ton` `{"ton_addr":{…},"ton_proof":{"proof":{…}}}`: TON Connect's items as
//!   the wallet returned them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::http::error::ApiError;
use crate::sign_in::{SignInError, TonDomain, TonProof};
use crate::AppState;

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        locus_actors::metrics::auth_failure(e.code());
        let status = match e {
            SignInError::Disabled | SignInError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            SignInError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            SignInError::Malformed(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.code(), &e.to_string())
    }
}

fn client_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// A fresh single-use nonce under `field` (`nonce` for EVM, `payload` for TON).
fn issue_nonce(req: &HttpRequest, state: &AppState, field: &str) -> Result<HttpResponse, ApiError> {
    state.sign_in.attempt(client_ip(req))?;
    let nonce = state.sign_in.issue_nonce()?;
    Ok(HttpResponse::Ok().json(json!({
        field: nonce,
        "expires_in": state.sign_in.config().nonce_ttl_s,
    })))
}

/// `GET /api/auth/evm/nonce`.
pub async fn evm_nonce(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    issue_nonce(&req, &state, "nonce")
}

#[derive(Deserialize)]
pub struct EvmSignIn {
    message: String,
    signature: String,
}

/// `POST /api/auth/evm`.
pub async fn evm(
    req: HttpRequest,
    body: web::Json<EvmSignIn>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.sign_in.attempt(client_ip(&req))?;
    let issued = state.sign_in.verify_evm(&body.message, &body.signature)?;
    Ok(HttpResponse::Ok().json(issued))
}

#[derive(Deserialize)]
pub struct TelegramSignIn {
    init_data: String,
}

/// `POST /api/auth/telegram`.
pub async fn telegram(
    req: HttpRequest,
    body: web::Json<TelegramSignIn>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.sign_in.attempt(client_ip(&req))?;
    let issued = state.sign_in.verify_telegram(&body.init_data)?;
    Ok(HttpResponse::Ok().json(issued))
}

/// `GET /api/auth/ton/payload`.
pub async fn ton_payload(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    issue_nonce(&req, &state, "payload")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TonAddrItem {
    address: String,
    public_key: Option<String>,
    wallet_state_init: String,
}

#[derive(Deserialize)]
pub struct TonProofItem {
    proof: TonProofBody,
}

#[derive(Deserialize)]
pub struct TonProofBody {
    /// A string in the spec, a number in the SDK: both are accepted.
    timestamp: serde_json::Value,
    domain: TonDomain,
    signature: String,
    payload: String,
}

#[derive(Deserialize)]
pub struct TonSignIn {
    ton_addr: TonAddrItem,
    ton_proof: TonProofItem,
}

/// `POST /api/auth/ton`.
pub async fn ton(
    req: HttpRequest,
    body: web::Json<TonSignIn>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.sign_in.attempt(client_ip(&req))?;
    let body = body.into_inner();
    let p = body.ton_proof.proof;
    let timestamp = match &p.timestamp {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| SignInError::Malformed("proof.timestamp must be unix seconds".into()))?;
    let proof = TonProof {
        address: body.ton_addr.address,
        public_key: body.ton_addr.public_key,
        wallet_state_init: body.ton_addr.wallet_state_init,
        timestamp,
        domain: p.domain,
        signature: p.signature,
        payload: p.payload,
    };
    Ok(HttpResponse::Ok().json(state.sign_in.verify_ton(&proof)?))
}
