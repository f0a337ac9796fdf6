//! Wallet sign-in over real HTTP: a nonce, a signed SIWE-style message, a Locus JWT that opens
//! the user's personal topic; replays, foreign domains, forged signatures and floods refused.

mod common;

use common::{http_get, http_post, Client, TestServer, Vsn};
use k256::ecdsa::SigningKey;
use locus::sign_in::evm::eip191_digest;
use serde_json::{json, Value};

const SECRET: &str = "locus-sign-in-test-secret-0123456789";
/// Anvil's account #0 (domain.md §4.4).
const ANVIL_0_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ANVIL_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn server(attempts_per_min: u32) -> TestServer {
    TestServer::start_with(move |c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.domains = vec!["lo.example".into()];
        c.sign_in.attempts_per_ip_per_min = attempts_per_min;
    })
}

fn message(domain: &str, nonce: &str) -> String {
    format!(
        "{domain} wants you to sign in with your Ethereum account:\n{ANVIL_0}\n\nSign in to Lo.\n\n\
         URI: https://{domain}\nVersion: 1\nChain ID: 1\nNonce: {nonce}\nIssued At: 2026-11-24T10:00:00Z"
    )
}

/// `personal_sign` as a wallet does it: r ‖ s ‖ v with v = 27 + recovery id.
fn personal_sign(message: &str) -> String {
    let key = SigningKey::from_slice(&hex::decode(ANVIL_0_KEY).unwrap()).unwrap();
    let (sig, recid) = key
        .sign_prehash_recoverable(&eip191_digest(message.as_bytes()))
        .unwrap();
    format!(
        "0x{}{:02x}",
        hex::encode(sig.to_bytes()),
        27 + recid.to_byte()
    )
}

async fn nonce(s: &TestServer) -> String {
    let (status, body) = http_get(&s.http("/api/auth/evm/nonce")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["nonce"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn sign_in(s: &TestServer, message: &str, signature: &str) -> (u16, Value) {
    let body = json!({"message": message, "signature": signature}).to_string();
    let (status, body) = http_post(&s.http("/api/auth/evm"), &body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_message_gets_a_token_for_the_wallets_personal_topic() {
    let s = server(100);
    let m = message("lo.example", &nonce(&s).await);
    let (status, issued) = sign_in(&s, &m, &personal_sign(&m)).await;
    assert_eq!(status, 200, "{issued}");
    let user = format!("eth:{}", ANVIL_0.to_lowercase());
    assert_eq!(issued["user_id"], user.as_str());
    assert_eq!(issued["expires_in"], 3600);
    let token = issued["access_token"].as_str().unwrap();
    let url = format!("{}&apikey={token}", s.ws_url("2.0.0"));
    let mut c = Client::connect(&url, Vsn::V2).await;
    c.join(&format!("realtime:user:{user}"), json!({})).await;
    // The nonce was used up.
    let (status, err) = sign_in(&s, &m, &personal_sign(&m)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("NonceInvalid"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_domains_forged_signatures_and_garbage_are_refused() {
    let s = server(100);
    let n = nonce(&s).await;
    let foreign = message("evil.example", &n);
    let (status, err) = sign_in(&s, &foreign, &personal_sign(&foreign)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("DomainNotAllowed"))
    );
    // A signature over another text: refused, and the nonce is not burned by it.
    let m = message("lo.example", &n);
    let (status, err) = sign_in(&s, &m, &personal_sign("something else")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("InvalidSignature"))
    );
    let (status, _) = sign_in(&s, &m, &personal_sign(&m)).await;
    assert_eq!(status, 200);
    let (status, err) = sign_in(&s, "hello", "0x00").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("MalformedSignIn"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_limited_per_ip() {
    let s = server(2);
    nonce(&s).await;
    nonce(&s).await;
    let (status, body) = http_get(&s.http("/api/auth/evm/nonce")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("TooManyAttempts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_sign_in_answers_503() {
    let s = TestServer::start();
    let (status, body) = http_get(&s.http("/api/auth/evm/nonce")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("SignInDisabled"));
}
