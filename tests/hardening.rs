//! The security audit's findings, each as the behaviour that protects against it: bounded
//! input at every edge, pongs inside the outbound bound, rate limits on every frame and REST
//! call, connection caps, the topic rules on every read and write, and tokens that lose their
//! powers when they expire. Each test names the finding (F<n>) of the security audit (issue 13)
//! it closes.
//!
//! Over 400 lines: one scenario per audit finding, kept in one file so the audit maps onto it; the
//! harness lives in tests/common.

mod common;

use std::time::{Duration, Instant};

use common::auth_kit::{
    auth_server, connect_with, now_s, reason, refused_handshake, token, token_for, token_with,
    SECRET,
};
use common::{TestServer, Vsn};
use futures_util::SinkExt;
use locus_actors::auth::{Action, TopicPolicy};
use locus_actors::rate_limit::RateLimitConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn policy(topic: &str, roles: &[&str], actions: &[Action]) -> TopicPolicy {
    TopicPolicy {
        topic: topic.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        actions: actions.to_vec(),
    }
}

/// Polls `probe` until it holds or `within` passes; the condition tests wait on.
async fn eventually<F, Fut>(within: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// F2: a REST publication larger than `session.payload_bytes_max` is refused with 413 before
/// it reaches the room, and the room's members stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_payload_over_the_socket_bound_is_refused_and_members_stay() {
    let server = TestServer::start();
    let mut member = server.client(Vsn::V2).await;
    member.join("realtime:lobby", json!({})).await;
    let big = format!("\"{}\"", "A".repeat(70 * 1024));
    let (status, body) =
        common::http_post(&server.http("/api/broadcast/lobby/events/e"), &big).await;
    assert!(
        status == 413 && body.contains("PayloadTooLarge"),
        "{status} {body}"
    );
    let batch = json!({"messages": [{"topic": "lobby", "event": "e", "payload": {"x": "A".repeat(70 * 1024)}}]});
    let (status, body) =
        common::http_post(&server.http("/api/broadcast"), &batch.to_string()).await;
    assert!(
        status == 413 && body.contains("messages[0]"),
        "{status} {body}"
    );
    let (status, _) =
        common::http_post(&server.http("/api/broadcast/lobby/events/e"), "{\"ok\":1}").await;
    assert_eq!(status, 202);
    assert_eq!(
        member.next_event("broadcast").await.payload["payload"]["ok"],
        1
    );
    assert_eq!(member.heartbeat().await.payload["status"], "ok");
}

/// F3: a client that floods pings and never reads fills its outbound queue with pongs and is
/// closed as a slow consumer, instead of growing the server's memory for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_and_never_reads_is_closed_as_slow() {
    let server = TestServer::start_with(|c| {
        c.session.outbound_queue_bytes_max = 64 * 1024;
        c.session.frame_bytes_max = 16 * 1024;
        c.session.payload_bytes_max = 16 * 1024;
        c.room.presence_state_bytes_max = 32 * 1024;
    });
    let series = "locus_ws_disconnects_total{code=\"SlowConsumer\"}";
    let before = server.metric(series).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url("2.0.0"), stream)
        .await
        .unwrap();
    let ping = Message::Ping(vec![b'p'; 125].into());
    let mut closed = false;
    // ~25 MB of pings at most: far more than the kernel buffers and the 64 KiB queue hold.
    for i in 0..200_000 {
        if ws.send(ping.clone()).await.is_err() {
            closed = true;
            break;
        }
        if i % 5_000 == 4_999 && server.metric(series).await > before {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the server never closed a client that reads nothing"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric(series).await > before
        })
        .await,
        "the close was not counted as a slow consumer"
    );
}

/// F4/F7: reading a durable topic's history is reading the channel: refused without an
/// acceptable token (401) or against the topic rules (403), served to who may join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_needs_the_right_to_join_the_topic() {
    let server = auth_server(
        true,
        vec![policy(
            "realtime:room:secret-*",
            &["authenticated"],
            &[Action::Join, Action::Broadcast],
        )],
    );
    let bearer = format!("Bearer {}", token("u1"));
    let (status, _) = common::http_post_with(
        &server.http("/api/broadcast/room:secret-1/events/e"),
        "{\"s\":1}",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 202);
    let url = server.http("/api/channels/room:secret-1/history?since_offset=0&limit=10");
    let (status, body) = common::http_get(&url).await;
    assert!(
        status == 403 && body.contains("Unauthorized"),
        "{status} {body}"
    );
    let (status, _, _) =
        common::http_request("GET", &url, &[("authorization", "Bearer nope")], None)
            .await
            .unwrap();
    assert_eq!(status, 401);
    let (status, _, body) = common::http_request("GET", &url, &[("authorization", &bearer)], None)
        .await
        .unwrap();
    assert!(status == 200 && body.contains("\"s\":1"), "{status} {body}");
    let private = server.http("/api/channels/room:open/history?private=true");
    let (status, _) = common::http_get(&private).await;
    assert_eq!(status, 403, "a private read needs a user and a policy");
}

/// F5/F11: presence keys are bounded, and tracks past the room's presence bounds are refused
/// with a reason, so the room stays joinable and every joiner gets its `presence_state`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_keys_and_the_presence_state_are_bounded() {
    let server = TestServer::start_with(|c| {
        c.room.presence_state_bytes_max = 8 * 1024;
        c.room.presence_metas_per_key_max = 2;
    });
    let mut a = server.client(Vsn::V2).await;
    let long_key = a
        .join_raw(
            "1",
            "realtime:p",
            json!({"presence": {"key": "k".repeat(300)}}),
        )
        .await;
    assert!(
        reason(&long_key).starts_with("PresenceKeyTooLong"),
        "{long_key:?}"
    );
    let mut refused = 0;
    let mut attackers = Vec::new();
    for i in 0..6 {
        let mut c = server.client(Vsn::V2).await;
        let jr = c
            .join("realtime:p", json!({"presence": {"key": format!("k{i}")}}))
            .await;
        let r = c
            .push(
                Some(&jr),
                "realtime:p",
                "presence",
                json!({"event": "track", "payload": {"blob": "x".repeat(2_000)}}),
            )
            .await;
        let reply = c.reply_to(&r).await;
        if reply.payload["status"] == "error" {
            assert!(
                reason(&reply).starts_with("PresenceLimitReached"),
                "{reply:?}"
            );
            refused += 1;
        }
        attackers.push(c);
    }
    assert!(
        refused >= 2,
        "8 KiB holds at most 3 metas of 2 KB; {refused} refused"
    );
    let mut victim = server.client(Vsn::V2).await;
    victim.join("realtime:p", json!({})).await;
    let state = victim.next_event("presence_state").await;
    assert!(state.payload.as_object().unwrap().len() <= 4);
    assert_eq!(victim.heartbeat().await.payload["status"], "ok");
    // One key holds at most presence_metas_per_key_max metas (one per device).
    let mut devices = Vec::new();
    let mut per_key_refused = false;
    for _ in 0..3 {
        let mut c = server.client(Vsn::V2).await;
        let jr = c
            .join("realtime:p2", json!({"presence": {"key": "alice"}}))
            .await;
        let r = c
            .push(
                Some(&jr),
                "realtime:p2",
                "presence",
                json!({"event": "track", "payload": {}}),
            )
            .await;
        per_key_refused |= c.reply_to(&r).await.payload["status"] == "error";
        devices.push(c);
    }
    assert!(per_key_refused, "a third device under one key is refused");
}

/// F9: when a token expires its role goes with it: the connection cannot rejoin a topic its
/// role was granted, nor broadcast there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_cannot_rejoin_what_its_role_was_granted() {
    let server = auth_server(
        true,
        vec![policy(
            "realtime:team-*",
            &["authenticated"],
            &[Action::Join, Action::Broadcast],
        )],
    );
    let mut c = connect_with(&server, &token_for("u1", now_s() + 2, SECRET)).await;
    c.join("realtime:team-a", json!({})).await;
    let system = c.next_where(|m| m.event == "system").await;
    assert!(system.payload["message"]
        .as_str()
        .unwrap()
        .starts_with("Token has expired"));
    c.next_event("phx_close").await;
    let denied = c.join_raw("9", "realtime:team-a", json!({})).await;
    assert!(reason(&denied).starts_with("Unauthorized"), "{denied:?}");
    // A fresh token for the same user restores it.
    let r = c
        .push(
            Some("10"),
            "realtime:team-a",
            "phx_join",
            json!({"config": {}, "access_token": token("u1")}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
}

/// F11: a frame whose ref or join_ref exceeds `session.ref_bytes_max` gets a `system` error
/// (the oversized ref is not echoed) and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_refs_get_a_system_error_and_are_not_echoed() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V2).await;
    let huge = "r".repeat(10_000);
    c.send_text(&json!([huge, "1", "realtime:a", "phx_join", {"config": {}}]).to_string())
        .await;
    let system = c.next_event("system").await;
    let message = system.payload["message"].as_str().unwrap();
    assert!(
        message.contains("ref_bytes_max") && !message.contains(&huge),
        "{message}"
    );
    assert_eq!(system.topic, "phoenix");
    assert_eq!(c.heartbeat().await.payload["status"], "ok");
}

/// F13: REST broadcasts are rate-limited per caller and per topic (429 with Retry-After);
/// `service_role` is exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_broadcasts_are_rate_limited_per_caller_and_per_topic() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.rate_limits.rest_messages_per_s = 5;
        c.rate_limits.rest_topic_messages_per_s = 3;
    });
    let post = |topic: &str| server.http(&format!("/api/broadcast/{topic}/events/e"));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(common::http_post(&post("t1"), "{}").await.0);
    }
    assert_eq!(statuses, [202, 202, 202, 429], "the topic bucket holds 3");
    let (status, _) = common::http_post(&post("t2"), "{}").await;
    assert_eq!(status, 202);
    let (status, headers, body) = common::http_request("POST", &post("t3"), &[], Some("{}"))
        .await
        .unwrap();
    assert!(
        status == 429 && body.contains("RateLimited"),
        "{status} {body}; the caller bucket holds 5"
    );
    assert_eq!(
        headers.get("retry-after").map(String::as_str),
        Some("1"),
        "{headers:?}"
    );
    let service = token_with(json!({"role": "service_role", "exp": now_s() + 60}));
    for _ in 0..10 {
        let (status, _) = common::http_post_with(&post("t1"), "{}", &[("apikey", &service)]).await;
        assert_eq!(status, 202, "service_role is exempt");
    }
}

/// F22: past `server.connections_max` an upgrade is refused with 503, past
/// `server.connections_per_ip_max` with 429; a closed connection gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_upgrades_and_free_slots_on_close() {
    let server = TestServer::start_with(|c| c.server.connections_max = 2);
    let a = server.client(Vsn::V2).await;
    let _b = server.client(Vsn::V2).await;
    let (status, body) = refused_handshake(&server.ws_url("2.0.0")).await;
    assert!(
        status == 503 && body.contains("ServerFull"),
        "{status} {body}"
    );
    a.close().await;
    let url = server.ws_url("2.0.0");
    assert!(
        eventually(Duration::from_secs(5), || {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(&url).await.is_ok() }
        })
        .await,
        "the closed connection's slot came back"
    );
    let per_ip = TestServer::start_with(|c| c.server.connections_per_ip_max = 1);
    let _one = per_ip.client(Vsn::V2).await;
    let (status, body) = refused_handshake(&per_ip.ws_url("2.0.0")).await;
    assert!(
        status == 429 && body.contains("IpConnectionLimitReached"),
        "{status} {body}"
    );
}

/// F16: every frame on `phoenix` except `heartbeat` takes a rate-limit token (and malformed
/// frames too), so a flood of them ends in 4029; heartbeats are never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_on_phoenix_other_than_heartbeat_are_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = RateLimitConfig {
            messages_per_s: 5,
            flood_rejections_max: 10,
            ..RateLimitConfig::unlimited()
        };
    });
    let mut calm = server.client(Vsn::V2).await;
    for _ in 0..30 {
        assert_eq!(calm.heartbeat().await.payload["status"], "ok");
    }
    let mut flood = server.client(Vsn::V2).await;
    for _ in 0..20 {
        flood
            .push(
                None,
                "phoenix",
                "access_token",
                json!({"access_token": "x"}),
            )
            .await;
    }
    for _ in 0..20 {
        flood.send_text("not json at all").await;
    }
    let (code, _) = flood.until_closed(Duration::from_secs(5)).await;
    assert_eq!(code, Some(4029));
    assert_eq!(calm.heartbeat().await.payload["status"], "ok");
}

/// F17: typing writes to a channel: refused where the member may only read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_refused_on_a_read_only_channel() {
    let server = auth_server(true, vec![policy("realtime:ro-*", &["*"], &[Action::Join])]);
    let mut c = server.client(Vsn::V2).await;
    let jr = c.join("realtime:ro-news", json!({})).await;
    let r = c
        .push(
            Some(&jr),
            "realtime:ro-news",
            "typing",
            json!({"typing": true}),
        )
        .await;
    assert!(reason(&c.reply_to(&r).await).starts_with("Unauthorized"));
}

/// F18: a token adopted in `phx_join` by an anonymous connection takes one of the user's
/// connection slots, so `connections_per_user_max` holds however the token arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_adopted_in_a_join_counts_against_the_users_connections() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.session.connections_per_user_max = 1;
    });
    let mut first = connect_with(&server, &token("u1")).await;
    first.join("realtime:user:u1", json!({})).await;
    let mut second = server.client(Vsn::V2).await;
    let r = second
        .push(
            Some("1"),
            "realtime:user:u1",
            "phx_join",
            json!({"config": {}, "access_token": token("u1")}),
        )
        .await;
    let reply = second.reply_to(&r).await;
    assert!(
        reason(&reply).starts_with("ConnectionLimitReached"),
        "{reply:?}"
    );
    first.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let joined = loop {
        let r = second
            .push(
                Some("2"),
                "realtime:user:u1",
                "phx_join",
                json!({"config": {}, "access_token": token("u1")}),
            )
            .await;
        if second.reply_to(&r).await.payload["status"] == "ok" {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        joined,
        "the slot freed by the first connection is taken by the second"
    );
}

/// F23: Supabase's anon key (a `role` and no `sub`) opens a connection and a REST broadcast;
/// the connection takes on the user of the first user token it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supabase_anon_key_connects_and_takes_on_the_signed_in_user() {
    let server = auth_server(false, vec![]);
    let anon_key = token_with(json!({"iss": "supabase", "role": "anon", "exp": now_s() + 3_600}));
    let mut c = connect_with(&server, &anon_key).await;
    c.join("realtime:lobby", json!({})).await;
    let denied = c.join_raw("7", "realtime:user:u1", json!({})).await;
    assert!(reason(&denied).starts_with("Unauthorized"));
    let r = c
        .push(
            Some("8"),
            "realtime:user:u1",
            "phx_join",
            json!({"config": {}, "access_token": token("u1")}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
    let (status, body) = common::http_post_with(
        &server.http("/api/broadcast/lobby/events/e"),
        "{}",
        &[("apikey", &anon_key)],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // A project key is no user: it cannot own jobs (they would all share one owner).
    let (status, body) = common::http_post_with(
        &server.http("/api/jobs"),
        "{\"kind\":\"image\",\"input\":{}}",
        &[("apikey", &anon_key), ("idempotency-key", "k1")],
    )
    .await;
    assert!(
        status == 401 && body.contains("AuthenticationRequired"),
        "{status} {body}"
    );
    let early = token_with(json!({"sub": "u2", "exp": now_s() + 60, "nbf": now_s() + 600}));
    let (status, _) =
        refused_handshake(&format!("{}&apikey={early}", server.ws_url("2.0.0"))).await;
    assert_eq!(status, 401, "nbf in the future");
}

/// Every malformed frame is answered: a binary frame on vsn 1.0.0, and a vsn 2.0.0 binary
/// broadcast whose metadata is not a JSON object (an error reply to its ref).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_binary_frames_get_an_answer() {
    let server = TestServer::start();
    let mut v1 = server.client(Vsn::V1).await;
    v1.send_binary(common::binary_push(
        "1",
        "2",
        "realtime:a",
        "e",
        true,
        br#"{"a":1}"#,
    ))
    .await;
    let system = v1.next_event("system").await;
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .contains("vsn=2.0.0"),
        "{system:?}"
    );
    let mut v2 = server.client(Vsn::V2).await;
    let jr = v2.join("realtime:a", json!({})).await;
    let mut frame = vec![3, jr.len() as u8, 2, 10, 1, 3, 1];
    frame.extend_from_slice(jr.as_bytes());
    frame.extend_from_slice(b"99realtime:ae[1]{}");
    v2.send_binary(frame).await;
    let reply = v2.reply_to("99").await;
    assert!(reason(&reply).starts_with("MalformedMessage"), "{reply:?}");
    assert_eq!(v2.heartbeat().await.payload["status"], "ok");
}

/// F10: webhooks for unknown providers are counted under one fixed label, never under the
/// caller's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_webhook_providers_share_one_metric_label() {
    let server = TestServer::start();
    for i in 0..3 {
        let (status, _) =
            common::http_post(&server.http(&format!("/api/webhooks/attacker-{i}")), "{}").await;
        assert_eq!(status, 404);
    }
    let metrics = common::http_get(&server.http("/metrics")).await.1;
    assert!(
        !metrics.contains("attacker-"),
        "a caller-chosen label leaked into /metrics"
    );
    assert!(metrics.contains("provider=\"unknown\""));
}

/// F21: private and public joins of one topic are different channels: what private members
/// broadcast never reaches a public (here anonymous) member, and a REST broadcast reaches the
/// side its `private` flag names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_broadcasts_never_reach_public_members_of_the_same_topic() {
    let server = auth_server(
        true,
        vec![policy(
            "realtime:shared-*",
            &["*"],
            &[Action::Join, Action::Broadcast],
        )],
    );
    let mut public = server.client(Vsn::V2).await;
    public.join("realtime:shared-1", json!({})).await;
    let mut alice = connect_with(&server, &token("alice")).await;
    let jr = alice
        .join("realtime:shared-1", json!({"private": true}))
        .await;
    let mut bob = connect_with(&server, &token("bob")).await;
    bob.join("realtime:shared-1", json!({"private": true}))
        .await;
    alice
        .push(
            Some(&jr),
            "realtime:shared-1",
            "broadcast",
            json!({"event": "secret", "payload": {}}),
        )
        .await;
    assert_eq!(bob.next_event("broadcast").await.payload["event"], "secret");
    let bearer = format!("Bearer {}", token("carol"));
    let (status, _) = common::http_post_with(
        &server.http("/api/broadcast/shared-1/events/open"),
        "{}",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 202);
    // The room delivers in order: had the private broadcast reached the public member, it
    // would have come first.
    assert_eq!(
        public.next_event("broadcast").await.payload["event"],
        "open"
    );
    let (status, _) = common::http_post_with(
        &server.http("/api/broadcast/shared-1/events/to-private?private=true"),
        "{}",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        bob.next_event("broadcast").await.payload["event"],
        "to-private"
    );
}

/// F12: a NUL byte (here in a REST event name) cannot reach a stored row: the publication is
/// refused with 422 `InvalidPayload` on its own, and the topic keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_durable_publication_is_refused_alone() {
    let server = TestServer::start();
    let url = |event: &str| server.http(&format!("/api/broadcast/room:nul/events/{event}"));
    let (status, body) = common::http_post(&url("e%00vil"), "{}").await;
    assert!(
        status == 422 && body.contains("InvalidPayload"),
        "{status} {body}"
    );
    let (status, body) = common::http_post(&url("fine"), "{}").await;
    assert_eq!(status, 202, "{body}");
}
