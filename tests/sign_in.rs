//! Wallet sign-in over real HTTP: a nonce, a signed SIWE-style message, a Locus JWT that opens
//! the user's personal topic; replays, foreign domains, forged signatures and floods refused,
//! and hostile inputs (a state init of shared cells, a full nonce map) answered without harm.
//!
//! Over 400 lines: one file per feature, a scenario per sign-in method and per attack, each
//! method's signing helpers beside its tests.

mod common;

use common::{http_get, http_post, Client, TestServer, Vsn};
use k256::ecdsa::SigningKey;
use locus::sign_in::evm::eip191_digest;
use serde_json::{json, Value};

const SECRET: &str = "locus-sign-in-test-secret-0123456789";
/// Anvil's account #0 (the key of viem's signMessage example).
const ANVIL_0_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ANVIL_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn server(attempts_per_min: u32) -> TestServer {
    TestServer::start_with(move |c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.domains = vec!["lo.example".into()];
        c.sign_in.attempts_per_ip_per_min = attempts_per_min;
    })
}

/// How long a request refused on its inputs may take; a parser gone exponential takes hours.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
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

/// F25: with `nonces_max` unexpired nonces out, a new nonce is refused (503 SignInBusy) and
/// the issued ones keep working; using one makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_nonce_map_refuses_new_nonces_and_keeps_the_issued_ones() {
    let s = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.domains = vec!["lo.example".into()];
        c.sign_in.nonces_max = 2;
    });
    let first = nonce(&s).await;
    let second = nonce(&s).await;
    let (status, body) = http_get(&s.http("/api/auth/evm/nonce")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("SignInBusy"), "{body}");
    for n in [&first, &second] {
        let m = message("lo.example", n);
        let (status, issued) = sign_in(&s, &m, &personal_sign(&m)).await;
        assert_eq!(status, 200, "an issued nonce was dropped: {issued}");
    }
    nonce(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_sign_in_answers_503() {
    let s = TestServer::start();
    let (status, body) = http_get(&s.http("/api/auth/evm/nonce")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("SignInDisabled"));
}

/// The Telegram docs' example initData (valid first-party with this token and
/// third-party with this bot id; from 2024, so only a very wide window accepts it).
const TG_V2_TOKEN: &str = "7342037359:AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J4";
const TG_V2: &str = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733509682&signature=TYJxVcisqbWjtodPepiJ6ghziUL94-KNpG8Pau-X7oNNLNBM72APCpi_RKiUlBvcqo5L-LAxIc3dnTzcZX_PDg&hash=a433d8f9847bd6addcc563bff7cc82c89e97ea0d90c11fe5729cae6796a36d73";

/// A server validating the V2 vector's bot first-party, whatever the vector's age.
fn first_party_telegram_server() -> TestServer {
    TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.telegram_bot_tokens = vec![TG_V2_TOKEN.into()];
        c.sign_in.telegram_max_age_s = i64::MAX / 2;
    })
}

async fn telegram(s: &TestServer, init_data: &str) -> (u16, Value) {
    let body = json!({ "init_data": init_data }).to_string();
    let (status, body) = http_post(&s.http("/api/auth/telegram"), &body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_init_data_signs_in_first_and_third_party_within_the_window() {
    let first = first_party_telegram_server();
    let (status, issued) = telegram(&first, TG_V2).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["user_id"], "tg:279058397");
    let token = issued["access_token"].as_str().unwrap();
    let mut c = Client::connect(
        &format!("{}&apikey={token}", first.ws_url("2.0.0")),
        Vsn::V2,
    )
    .await;
    c.join("realtime:user:tg:279058397", json!({})).await;
    let tampered = TG_V2.replace("chat_type=private", "chat_type=sender");
    let (status, err) = telegram(&first, &tampered).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("InvalidSignature"))
    );
    let (status, err) = telegram(&first, "here comes something wrong;").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("MalformedSignIn"))
    );

    let third = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.telegram_bot_ids = vec![7342037359];
        c.sign_in.telegram_max_age_s = i64::MAX / 2;
    });
    let (status, issued) = telegram(&third, TG_V2).await;
    assert_eq!(
        (status, issued["user_id"].as_str()),
        (200, Some("tg:279058397"))
    );

    // The default window (five minutes) refuses the 2024 vector as expired.
    let strict = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.telegram_bot_tokens = vec![TG_V2_TOKEN.into()];
    });
    let (status, err) = telegram(&strict, TG_V2).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("Expired"))
    );
}

/// F14: one `initData` signs in once: presented again, with its hash re-spelt, or (third
/// party, where the hash is not signed) with another hash, it is refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_init_data_signs_in_once() {
    let first = first_party_telegram_server();
    let (status, issued) = telegram(&first, TG_V2).await;
    assert_eq!(status, 200, "{issued}");
    let upper_hash = TG_V2.replace("hash=a433d8f9", "hash=A433D8F9");
    for replay in [TG_V2, upper_hash.as_str()] {
        let (status, err) = telegram(&first, replay).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (401, Some("ReplayedSignIn")),
            "{err}"
        );
    }
    let third = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.sign_in.telegram_bot_ids = vec![7342037359];
        c.sign_in.telegram_max_age_s = i64::MAX / 2;
    });
    let (status, _) = telegram(&third, TG_V2).await;
    assert_eq!(status, 200);
    let other_hash = TG_V2.replace("hash=a433d8f9", "hash=00000000");
    let (status, err) = telegram(&third, &other_hash).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("ReplayedSignIn")),
        "{err}"
    );
}

/// ton4j's v3 wallet of the TON Connect test vector: its seed, address and state init as the
/// wallet sends it (standard base64 BOC).
const TON_SEED: &str = "f182111193f30d79d517f2339a1ba7c25fdf6c52142f0f2c1d960a1f1d65e1e4";
const TON_ADDRESS: &str = "0:2d29bfa071c8c62fa3398b661a842e60f04cb8a915fb3e749ef7c6c41343e16c";
const TON_PUBKEY: &str = "82a0b2543d06fec0aac952e9ec738be56ab1b6027fc0c1aa817ae14b4d1ed2fb";
const TON_STATE_INIT: &str = "te6ccgECAwEAAKAAAgE0AQIA3v8AIN0gggFMl7ohggEznLqxn3Gw7UTQ0x/THzHXC//jBOCk8mCDCNcYINMf0x/TH/gjE7vyY+1E0NMf0x/T/9FRMrryoVFEuvKiBPkBVBBV+RDyo/gAkyDXSpbTB9QC+wDo0QGkyMsfyx/L/8ntVABQAAAAAAAAACqCoLJUPQb+wKrJUunsc4vlarG2An/AwaqBeuFLTR7S+w==";

/// The wallet's side of TON Connect: sign the proof for `domain`, `timestamp` and `payload`,
/// writing `length_bytes` as the domain length it claims.
fn ton_items(domain: &str, length_bytes: usize, timestamp: u64, payload: &str) -> Value {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let (wc, hash) = locus::sign_in::ton::parse_address(TON_ADDRESS).unwrap();
    let digest = locus::sign_in::ton::proof_digest(wc, &hash, domain, timestamp, payload);
    let seed: [u8; 32] = hex::decode(TON_SEED).unwrap().try_into().unwrap();
    let signature = ed25519_dalek::SigningKey::from_bytes(&seed).sign(&digest);
    json!({
        "ton_addr": {"name": "ton_addr", "address": TON_ADDRESS, "network": "-239",
                     "publicKey": TON_PUBKEY, "walletStateInit": TON_STATE_INIT},
        "ton_proof": {"name": "ton_proof", "proof": {
            "timestamp": timestamp.to_string(),
            "domain": {"lengthBytes": length_bytes, "value": domain},
            "signature": base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
            "payload": payload}}
    })
}

async fn ton_payload(s: &TestServer) -> String {
    let (status, body) = http_get(&s.http("/api/auth/ton/payload")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["payload"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn ton(s: &TestServer, items: &Value) -> (u16, Value) {
    let (status, body) = http_post(&s.http("/api/auth/ton"), &items.to_string()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ton_connect_proof_signs_in_and_its_pitfalls_are_refused() {
    let s = server(100);
    let now = now_s();
    let payload = ton_payload(&s).await;
    let (status, issued) = ton(&s, &ton_items("lo.example", 10, now, &payload)).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["user_id"], format!("ton:{TON_ADDRESS}").as_str());
    // The payload is single use.
    let (status, err) = ton(&s, &ton_items("lo.example", 10, now, &payload)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("NonceInvalid"))
    );
    let payload = ton_payload(&s).await;
    // ton4j's pitfall: a wrong lengthBytes signed as given must be refused, not trusted.
    let (status, err) = ton(&s, &ton_items("lo.example", 16, now, &payload)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("MalformedSignIn"))
    );
    let (status, err) = ton(&s, &ton_items("evil.example", 12, now, &payload)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("DomainNotAllowed"))
    );
    let (status, err) = ton(&s, &ton_items("lo.example", 10, now - 3_600, &payload)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("Expired"))
    );
    let (status, err) = ton(&s, &ton_items("lo.example", 10, now + 3_600, &payload)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("Expired"))
    );
    // Signed for another payload than the one presented.
    let mut forged = ton_items("lo.example", 10, now, "another-payload");
    forged["ton_proof"]["proof"]["payload"] = json!(payload);
    let (status, err) = ton(&s, &forged).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("InvalidSignature"))
    );
    // A state init that is not this address's.
    let mut other = ton_items("lo.example", 10, now, &payload);
    other["ton_addr"]["address"] = json!(TON_ADDRESS.replace("2d29", "2d2a"));
    let (status, err) = ton(&s, &other).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("InvalidSignature"))
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("hash to the address"));
    // The payload survived the refusals and still works once.
    let (status, _) = ton(&s, &ton_items("lo.example", 10, now, &payload)).await;
    assert_eq!(status, 200);
}

/// F20: one user id per wallet: the hex in either case gives `ton:0:<lower hex>`, and other
/// spellings of the workchain (`+0`, `00`, `-0`) are refused instead of naming new users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ton_wallet_has_one_user_id_whatever_the_address_spelling() {
    let s = server(100);
    let now = now_s();
    let (_, hex) = TON_ADDRESS.split_once(':').unwrap();
    for wc in ["+0", "00", "-0"] {
        let payload = ton_payload(&s).await;
        let mut items = ton_items("lo.example", 10, now, &payload);
        items["ton_addr"]["address"] = json!(format!("{wc}:{hex}"));
        let (status, body) = ton(&s, &items).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("MalformedSignIn")),
            "{wc}: {body}"
        );
    }
    let payload = ton_payload(&s).await;
    let mut items = ton_items("lo.example", 10, now, &payload);
    items["ton_addr"]["address"] = json!(format!("0:{}", hex.to_uppercase()));
    let (status, issued) = ton(&s, &items).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["user_id"], format!("ton:{TON_ADDRESS}").as_str());
}

/// The audit's F1 state init: `cells` cells, each but the last referencing the next four
/// times (4^63 cells once unfolded, in about 400 bytes).
fn shared_cells_boc(cells: u8) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..cells - 1 {
        body.extend_from_slice(&[4, 0, i + 1, i + 1, i + 1, i + 1]);
    }
    body.extend_from_slice(&[0, 0]);
    let mut boc = vec![0xb5, 0xee, 0x9c, 0x72, 0x01, 0x02, cells, 1, 0];
    boc.extend_from_slice(&(body.len() as u16).to_be_bytes());
    boc.push(0);
    boc.extend_from_slice(&body);
    boc
}

/// F1: one unauthenticated request carrying a 64-cell state init whose cells share
/// references is answered at once (401, it hashes to no claimed address) instead of
/// unfolding the cells until the process runs out of memory; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ton_state_init_of_shared_cells_is_refused_at_once() {
    use base64::Engine;
    let s = server(100);
    let state_init = base64::engine::general_purpose::STANDARD.encode(shared_cells_boc(64));
    let items = json!({
        "ton_addr": {"address": format!("0:{}", "0".repeat(64)), "walletStateInit": state_init},
        "ton_proof": {"proof": {
            "timestamp": now_s(),
            "domain": {"lengthBytes": 10, "value": "lo.example"},
            "signature": "A".repeat(88),
            "payload": "x"}}
    });
    let (status, err) = tokio::time::timeout(ANSWER_TIMEOUT, ton(&s, &items))
        .await
        .expect("the state init must be refused at once, not unfolded");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("InvalidSignature")),
        "{err}"
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("hash to the address"));
    tokio::time::timeout(ANSWER_TIMEOUT, ton_payload(&s))
        .await
        .expect("the server still answers");
}
