//! Tokens and servers for the auth tests: HS256 tokens signed with the test secret, servers
//! with that secret and given policies, and reading refused handshakes and error replies.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use locus_actors::auth::{AuthConfig, TopicPolicy};
use serde_json::{json, Value};

use super::{Client, TestServer, Vsn};

pub const SECRET: &str = "locus-test-secret-of-a-decent-length";

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token_for(sub: &str, exp: u64, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp, "role": "authenticated"}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn token(sub: &str) -> String {
    token_for(sub, now_s() + 3_600, SECRET)
}

pub fn auth_server(allow_anonymous: bool, policies: Vec<TopicPolicy>) -> TestServer {
    TestServer::start_with(move |c| {
        c.auth = AuthConfig {
            jwt_secret: SECRET.into(),
            allow_anonymous,
            policies,
            ..AuthConfig::default()
        };
    })
}

pub async fn connect_with(server: &TestServer, token: &str) -> Client {
    let url = format!("{}&apikey={token}", server.ws_url("2.0.0"));
    Client::connect(&url, Vsn::V2).await
}

/// The HTTP status and body of a refused WebSocket handshake.
pub async fn refused_handshake(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("handshake to {url} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("unexpected handshake error {e}"),
    }
}

pub fn reason(m: &super::Msg) -> String {
    m.payload["response"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A token with exactly these claims, signed with the test secret.
pub fn token_with(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}
