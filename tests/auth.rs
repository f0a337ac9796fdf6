//! Auth and abuse over real sockets: tokens at connect, in `phx_join` and in `access_token`;
//! personal and private topics and policies; token expiry; rate limits and flooding; input
//! limits.

mod common;

use std::time::Duration;

use common::auth_kit::{
    auth_server, connect_with, now_s, reason, refused_handshake, token, token_for, SECRET,
};
use common::{Received, TestServer, Vsn};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use locus_actors::auth::{Action, TopicPolicy};
use locus_actors::rate_limit::RateLimitConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_missing_expired_and_tampered_tokens() {
    let server = auth_server(false, vec![]);
    let base = server.ws_url("2.0.0");
    let (status, body) = refused_handshake(&base).await;
    assert_eq!(status, 401);
    assert!(body.contains("AnonymousNotAllowed"), "{body}");
    let expired = token_for("u1", now_s() - 30, SECRET);
    let (status, body) = refused_handshake(&format!("{base}&apikey={expired}")).await;
    assert_eq!(status, 401);
    assert!(body.contains("InvalidJWTExpiration"), "{body}");
    let forged = token_for("u1", now_s() + 60, "someone-else's-secret-entirely!!");
    let (status, body) = refused_handshake(&format!("{base}&apikey={forged}")).await;
    assert!(
        status == 401 && body.contains("InvalidJWT"),
        "{status} {body}"
    );
    let mut c = connect_with(&server, &token("u1")).await;
    c.join("realtime:lobby", json!({})).await;
    assert!(
        server
            .metric("locus_auth_failures_total{reason=\"InvalidJWT\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_topics_are_for_their_user_only() {
    let server = auth_server(true, vec![]);
    let mut u1 = connect_with(&server, &token("u1")).await;
    u1.join("realtime:user:u1", json!({})).await;
    let denied = u1.join_raw("9", "realtime:user:u2", json!({})).await;
    assert_eq!(denied.payload["status"], "error");
    assert_eq!(
        reason(&denied),
        "Unauthorized: You do not have permissions to read from this Channel topic: realtime:user:u2"
    );
    let mut anon = server.client(Vsn::V2).await;
    let denied = anon.join_raw("3", "realtime:user:u1", json!({})).await;
    assert!(reason(&denied).starts_with("Unauthorized"), "{denied:?}");
    // The connection stays usable.
    anon.join("realtime:lobby", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_need_a_user_and_a_policy() {
    let policy = TopicPolicy {
        topic: "realtime:team-*".into(),
        roles: vec!["authenticated".into()],
        actions: vec![Action::Join, Action::Presence],
    };
    let server = auth_server(true, vec![policy]);
    let mut anon = server.client(Vsn::V2).await;
    let denied = anon
        .join_raw("2", "realtime:team-a", json!({"private": true}))
        .await;
    assert!(reason(&denied).starts_with("Unauthorized"), "{denied:?}");
    let mut u1 = connect_with(&server, &token("u1")).await;
    let denied = u1
        .join_raw("2", "realtime:other", json!({"private": true}))
        .await;
    assert!(
        reason(&denied).starts_with("Unauthorized"),
        "no policy: {denied:?}"
    );
    let join_ref = u1.join("realtime:team-a", json!({"private": true})).await;
    // The policy grants join and presence, not broadcast.
    let r = u1
        .push(
            Some(&join_ref),
            "realtime:team-a",
            "broadcast",
            json!({"type": "broadcast", "event": "m", "payload": {}}),
        )
        .await;
    let reply = u1.reply_to(&r).await;
    assert!(
        reason(&reply).contains("write to this Channel topic"),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_join_or_access_token_upgrades_and_a_bad_one_closes_the_channel() {
    let server = auth_server(true, vec![]);
    let mut c = server.client(Vsn::V2).await;
    let r = c
        .push(
            Some("5"),
            "realtime:user:u7",
            "phx_join",
            json!({"config": {}, "access_token": token("u7")}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
    // Refreshing with a valid token: no reply, channel stays.
    c.push(
        Some("5"),
        "realtime:user:u7",
        "access_token",
        json!({"access_token": token("u7")}),
    )
    .await;
    assert_eq!(c.heartbeat().await.payload["status"], "ok");
    // A tampered token: system error, then the channel closes.
    let mut bad = token("u7");
    bad.push('x');
    c.push(
        Some("5"),
        "realtime:user:u7",
        "access_token",
        json!({"access_token": bad}),
    )
    .await;
    let system = c.next_event("system").await;
    assert_eq!(system.payload["status"], "error");
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .starts_with("InvalidJWT"),
        "{system:?}"
    );
    let close = c.next_event("phx_close").await;
    assert_eq!(close.topic, "realtime:user:u7");
    // Another user's token cannot take over the connection.
    let r = c
        .push(
            Some("6"),
            "realtime:user:u8",
            "phx_join",
            json!({"config": {}, "access_token": token("u8")}),
        )
        .await;
    assert!(reason(&c.reply_to(&r).await).starts_with("InvalidJWT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_in_the_far_future_is_accepted() {
    let server = auth_server(false, vec![]);
    let mut c = connect_with(&server, &token_for("u1", u64::MAX / 2, SECRET)).await;
    c.join("realtime:user:u1", json!({})).await;
    assert_eq!(c.heartbeat().await.payload["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_channels_with_a_system_message() {
    let server = auth_server(true, vec![]);
    let mut c = connect_with(&server, &token_for("u1", now_s() + 2, SECRET)).await;
    c.join("realtime:user:u1", json!({})).await;
    let system = c.next_event("system").await;
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .starts_with("Token has expired"),
        "{system:?}"
    );
    assert_eq!(c.next_event("phx_close").await.topic, "realtime:user:u1");
    // Still connected; an expired identity cannot rejoin a personal topic.
    let denied = c.join_raw("8", "realtime:user:u1", json!({})).await;
    assert!(reason(&denied).starts_with("Unauthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_then_recover_and_a_flood_is_disconnected_alone() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = RateLimitConfig {
            messages_per_s: 5,
            flood_rejections_max: 30,
            ..RateLimitConfig::default()
        };
    });
    let mut calm = server.client(Vsn::V2).await;
    calm.join("realtime:room", json!({})).await;
    let mut c = server.client(Vsn::V2).await;
    let join_ref = c
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    let mut refs = Vec::new();
    for _ in 0..8 {
        refs.push(
            c.push(
                Some(&join_ref),
                "realtime:room",
                "broadcast",
                json!({"type": "broadcast", "event": "m", "payload": {}}),
            )
            .await,
        );
    }
    let mut refused = 0;
    for r in &refs {
        let reply = c.reply_to(r).await;
        if reason(&reply) == "RateLimited: Too many messages per second" {
            refused += 1;
        }
    }
    assert!(refused >= 2, "refused {refused} of 8");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = c
        .push(
            Some(&join_ref),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "m", "payload": {}}),
        )
        .await;
    assert_eq!(
        c.reply_to(&r).await.payload["status"],
        "ok",
        "usable below the limit"
    );
    // Flood: far past the limit, the connection is closed with 4029.
    for _ in 0..100 {
        c.push(
            Some(&join_ref),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "m", "payload": {}}),
        )
        .await;
    }
    let (code, _) = c.until_closed(Duration::from_secs(5)).await;
    assert_eq!(code, Some(4029));
    assert_eq!(calm.heartbeat().await.payload["status"], "ok");
    assert!(
        server
            .metric("locus_rate_limited_total{reason=\"messages\"}")
            .await
            >= 30.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_limits_get_clear_errors_and_the_connection_stays_usable() {
    let server = TestServer::start_with(|c| {
        c.session.payload_bytes_max = 200;
        c.session.presence_meta_bytes_max = 50;
        c.session.channels_per_connection_max = 2;
        c.session.connections_per_user_max = 1;
        c.auth.jwt_secret = SECRET.into();
    });
    let mut c = server.client(Vsn::V2).await;
    let jr = c
        .join("realtime:a", json!({"broadcast": {"ack": true}}))
        .await;
    let big = "x".repeat(300);
    let r = c
        .push(
            Some(&jr),
            "realtime:a",
            "broadcast",
            json!({"type": "broadcast", "event": "m", "payload": {"b": big}}),
        )
        .await;
    assert!(reason(&c.reply_to(&r).await).starts_with("PayloadTooLarge"));
    let r = c
        .push(
            Some(&jr),
            "realtime:a",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"m": "y".repeat(60)}}),
        )
        .await;
    assert!(reason(&c.reply_to(&r).await).starts_with("PresenceMetaTooLarge"));
    c.join("realtime:b", json!({})).await;
    let third = c.join_raw("9", "realtime:c", json!({})).await;
    assert!(reason(&third).starts_with("TopicLimitReached"));
    let r = c
        .push(
            Some(&jr),
            "realtime:a",
            "broadcast",
            json!({"type": "broadcast", "event": "m", "payload": {}}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
    // One connection per user here: the second is refused at the handshake.
    let _first = connect_with(&server, &token("u1")).await;
    let url = format!("{}&apikey={}", server.ws_url("2.0.0"), token("u1"));
    let (status, body) = refused_handshake(&url).await;
    assert!(
        status == 429 && body.contains("ConnectionLimitReached"),
        "{status} {body}"
    );
    assert!(matches!(
        c.recv(Duration::from_millis(50)).await,
        Received::Timeout | Received::Msg(_)
    ));
}

/// A throwaway P-256 key pair (generated with openssl for this test): the private key signs
/// as an identity provider would, the JWKS holds its public half.
const ES256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgf6lwdagXzaa0x+4Z
mqdcQMxM1+yXzKkrXAb14iGIuPmhRANCAATaP3a1WthIQou/WzjnDoLjicdoyRvO
ws/fQcjCDKgQmfC98SD269xSkCCzv/8eoTsw1lcmPqx0c0dh3ZRWOglJ
-----END PRIVATE KEY-----
";
const ES256_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"test-es256","use":"sig","alg":"ES256","x":"2j92tVrYSEKLv1s45w6C44nHaMkbzsLP30HIwgyoEJk","y":"8L3xIPbr3FKQILO__x6hOzDWVyY-rHRzR2HdlFY6CUk"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_against_the_jwks_file_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, ES256_JWKS).unwrap();
    let jwks_path = jwks.display().to_string();
    let server = TestServer::start_with(move |c| {
        c.auth.jwks_file = jwks_path;
        c.auth.allow_anonymous = false;
    });
    let key = EncodingKey::from_ec_pem(ES256_PEM.as_bytes()).unwrap();
    let sign = |kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        encode(&header, &json!({"sub": "u-es", "exp": now_s() + 600}), &key).unwrap()
    };
    let mut c = connect_with(&server, &sign("test-es256")).await;
    c.join("realtime:user:u-es", json!({})).await;
    let base = server.ws_url("2.0.0");
    let (status, body) = refused_handshake(&format!("{base}&apikey={}", sign("unknown-kid"))).await;
    assert!(
        status == 401 && body.contains("InvalidJWT"),
        "{status} {body}"
    );
    // HS256 is refused when only a JWKS is configured.
    let (status, _) = refused_handshake(&format!("{base}&apikey={}", token("u-es"))).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_broadcast_applies_the_topic_rules_to_the_callers_token() {
    let server = auth_server(true, vec![]);
    let url = server.http("/api/broadcast");
    let to = |topic: &str, private: bool| {
        json!({"messages": [{"topic": topic, "event": "e", "payload": {}, "private": private}]})
            .to_string()
    };
    let (status, body) = common::http_post(&url, &to("user:u1", false)).await;
    assert!(
        status == 403 && body.contains("Unauthorized"),
        "{status} {body}"
    );
    let bearer = format!("Bearer {}", token("u1"));
    let (status, _) =
        common::http_post_with(&url, &to("user:u1", false), &[("authorization", &bearer)]).await;
    assert_eq!(status, 202);
    let (status, _) = common::http_post(&url, &to("lobby", true)).await;
    assert_eq!(status, 403, "private needs a user (and a policy)");
    let (status, _) = common::http_post(&url, &to("lobby", false)).await;
    assert_eq!(status, 202, "public topics stay open");
    let service = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "backend", "role": "service_role", "exp": now_s() + 60}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (status, _) =
        common::http_post_with(&url, &to("user:u1", true), &[("apikey", &service)]).await;
    assert_eq!(status, 202, "the service role publishes anywhere");
    let closed = auth_server(false, vec![]);
    let (status, body) =
        common::http_post(&closed.http("/api/broadcast"), &to("lobby", false)).await;
    assert!(
        status == 401 && body.contains("AnonymousNotAllowed"),
        "{status} {body}"
    );
}
