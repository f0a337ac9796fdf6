//! The Phoenix / Supabase Realtime protocol over real loopback WebSockets, on both versions:
//! heartbeats, joins, leaves, broadcast (self, ack, binary), REST broadcast, malformed input.
//!
//! Over 400 lines: one file per feature (the wire protocol), each test one exchange over a real
//! socket; the harness lives in tests/common.

mod common;

use std::time::Duration;

use common::{binary_push, http_get, http_post, TestServer, Vsn};
use serde_json::json;

const BOTH: [Vsn; 2] = [Vsn::V1, Vsn::V2];

/// A heartbeat on topic `phoenix` is answered with an ok reply carrying its ref.
#[tokio::test]
async fn heartbeat_is_answered_on_both_versions() {
    let server = TestServer::start();
    for vsn in BOTH {
        let mut c = server.client(vsn).await;
        let reply = c.heartbeat().await;
        assert_eq!(reply.topic, "phoenix");
        assert_eq!(reply.payload, json!({"status": "ok", "response": {}}));
    }
}

/// The join reply has Supabase's shape, which realtime-js waits for.
#[tokio::test]
async fn join_reply_has_supabase_shape() {
    let server = TestServer::start();
    for vsn in BOTH {
        let mut c = server.client(vsn).await;
        let reply = c
            .join_raw("1", "realtime:room", json!({"broadcast": {"self": false}}))
            .await;
        assert_eq!(
            reply.payload,
            json!({"status": "ok", "response": {"postgres_changes": []}})
        );
        assert_eq!(reply.join_ref, json!("1"));
        assert_eq!(reply.topic, "realtime:room");
    }
}

/// Topics outside `realtime:<name>` and over the length limit are refused with a reason.
#[tokio::test]
async fn invalid_topics_are_refused() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V1).await;
    for topic in [
        "room",
        "realtime:",
        &format!("realtime:{}", "x".repeat(300)),
    ] {
        let reply = c.join_raw("1", topic, json!({})).await;
        assert_eq!(reply.payload["status"], "error", "{topic}");
        assert!(reply.payload["response"]["reason"]
            .as_str()
            .unwrap()
            .contains(':'));
    }
    c.heartbeat().await;
}

/// A broadcast reaches every other member on both versions; the sender gets it only with
/// `self: true`; `ack: true` yields an ok reply.
#[tokio::test]
async fn broadcast_reaches_members_with_self_and_ack() {
    let server = TestServer::start();
    let topic = "realtime:chat";
    let mut sender = server.client(Vsn::V2).await;
    let sender_join = sender
        .join(topic, json!({"broadcast": {"self": false, "ack": true}}))
        .await;
    let mut v1 = server.client(Vsn::V1).await;
    v1.join(topic, json!({})).await;
    let mut v2_self = server.client(Vsn::V2).await;
    let self_join = v2_self
        .join(topic, json!({"broadcast": {"self": true}}))
        .await;

    let payload = json!({"type": "broadcast", "event": "msg", "payload": {"text": "héllo \"q\""}});
    let r = sender
        .push(Some(&sender_join), topic, "broadcast", payload.clone())
        .await;
    let ack = sender.reply_to(&r).await;
    assert_eq!(ack.payload["status"], "ok");

    for c in [&mut v1, &mut v2_self] {
        let m = c.next_event("broadcast").await;
        assert_eq!(m.topic, topic);
        assert_eq!(m.payload, payload);
    }
    sender
        .assert_none(Duration::from_millis(300), |m| m.event == "broadcast")
        .await;

    // A self-broadcasting member receives its own message; without ack there is no reply.
    let r = v2_self
        .push(Some(&self_join), topic, "broadcast", payload.clone())
        .await;
    let own = v2_self.next_event("broadcast").await;
    assert_eq!(own.payload, payload);
    v2_self
        .assert_none(Duration::from_millis(200), |m| m.msg_ref == json!(r))
        .await;
}

/// vsn 2.0.0 binary pushes (type 3) reach vsn 2.0.0 members as binary type 4 frames with the
/// same bytes, and vsn 1.0.0 members as JSON when the payload is JSON.
#[tokio::test]
async fn binary_broadcast_reaches_both_versions() {
    let server = TestServer::start();
    let topic = "realtime:bin";
    let mut sender = server.client(Vsn::V2).await;
    let join_ref = sender
        .join(topic, json!({"broadcast": {"ack": true}}))
        .await;
    let mut v1 = server.client(Vsn::V1).await;
    v1.join(topic, json!({})).await;
    let mut v2 = server.client(Vsn::V2).await;
    v2.join(topic, json!({})).await;

    sender
        .send_binary(binary_push(
            &join_ref,
            "77",
            topic,
            "pos",
            true,
            br#"{"x":1}"#,
        ))
        .await;
    assert_eq!(sender.reply_to("77").await.payload["status"], "ok");
    let m = v2.next_event("broadcast").await;
    assert_eq!(m.binary_payload.as_deref(), Some(&br#"{"x":1}"#[..]));
    assert_eq!(m.payload["event"], "pos");
    let m = v1.next_event("broadcast").await;
    assert_eq!(
        m.payload,
        json!({"type": "broadcast", "event": "pos", "payload": {"x": 1}})
    );

    // Opaque bytes go to vsn 2.0.0 members only.
    sender
        .send_binary(binary_push(
            &join_ref,
            "78",
            topic,
            "raw",
            false,
            &[0, 159, 146, 150],
        ))
        .await;
    let m = v2.next_event("broadcast").await;
    assert_eq!(m.binary_payload.as_deref(), Some(&[0u8, 159, 146, 150][..]));
    v1.assert_none(Duration::from_millis(300), |m| m.event == "broadcast")
        .await;
}

/// `phx_leave` is replied to and followed by `phx_close`; the member then receives nothing.
#[tokio::test]
async fn leave_replies_closes_and_stops_delivery() {
    let server = TestServer::start();
    let topic = "realtime:leave";
    for vsn in BOTH {
        let mut a = server.client(vsn).await;
        let a_join = a.join(topic, json!({})).await;
        let mut b = server.client(Vsn::V1).await;
        let b_join = b.join(topic, json!({})).await;
        let r = a.push(Some(&a_join), topic, "phx_leave", json!({})).await;
        assert_eq!(a.reply_to(&r).await.payload["status"], "ok");
        let close = a.next_event("phx_close").await;
        assert_eq!(close.join_ref, json!(a_join));
        b.push(
            Some(&b_join),
            topic,
            "broadcast",
            json!({"type": "broadcast", "event": "e", "payload": {}}),
        )
        .await;
        a.assert_none(Duration::from_millis(300), |m| m.event == "broadcast")
            .await;
        // Pushing to the left topic is an error, and the socket stays usable.
        let r = a
            .push(
                Some(&a_join),
                topic,
                "broadcast",
                json!({"type": "broadcast", "event": "e", "payload": {}}),
            )
            .await;
        let err = a.reply_to(&r).await;
        assert_eq!(err.payload["status"], "error");
        assert!(err.payload["response"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("UnmatchedTopic"));
    }
}

/// Joining a topic again replaces the old channel: the old join ref gets `phx_close`.
#[tokio::test]
async fn rejoin_closes_the_previous_channel() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V2).await;
    let first = c.join("realtime:re", json!({})).await;
    let reply = c.join_raw("900", "realtime:re", json!({})).await;
    assert_eq!(reply.payload["status"], "ok");
    // The close for the first join precedes the second reply.
    let mut b = server.client(Vsn::V2).await;
    let bj = b.join("realtime:re", json!({})).await;
    b.push(
        Some(&bj),
        "realtime:re",
        "broadcast",
        json!({"type": "broadcast", "event": "once", "payload": {}}),
    )
    .await;
    let got = c.next_event("broadcast").await;
    assert_eq!(got.payload["event"], "once");
    c.assert_none(Duration::from_millis(300), |m| m.event == "broadcast")
        .await;
    let _ = first;
}

/// The REST broadcast (both paths) reaches members, and bad bodies get the JSON error shape.
#[tokio::test]
async fn rest_broadcast_reaches_members_and_rejects_bad_bodies() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V1).await;
    c.join("realtime:news", json!({})).await;
    for path in ["/api/broadcast", "/realtime/v1/api/broadcast"] {
        let body =
            json!({"messages": [{"topic": "news", "event": "headline", "payload": {"n": path}}]});
        let (status, _) = http_post(&server.http(path), &body.to_string()).await;
        assert_eq!(status, 202);
        let m = c.next_event("broadcast").await;
        assert_eq!(
            m.payload,
            json!({"type": "broadcast", "event": "headline", "payload": {"n": path}})
        );
    }
    for bad in [
        "not json",
        r#"{"messages": []}"#,
        r#"{"messages": [{"topic": "", "event": "e"}]}"#,
        r#"{"messages": [{"event": "e"}]}"#,
    ] {
        let (status, body) = http_post(&server.http("/api/broadcast"), bad).await;
        assert_eq!(status, 400, "{bad}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{body}"
        );
    }
}

/// Malformed frames get an error reply (when they name a topic and ref) or a `system`
/// message, and the connection keeps working.
#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start();
    for vsn in BOTH {
        let mut c = server.client(vsn).await;
        c.send_text("definitely not json").await;
        let sys = c.next_event("system").await;
        assert_eq!(sys.payload["status"], "error");
        assert!(sys.payload["message"]
            .as_str()
            .unwrap()
            .starts_with("MalformedMessage"));

        c.send_text(r#"{"topic":"realtime:a","event":"phx_join","ref":"5"}"#)
            .await;
        let err = c.reply_to("5").await;
        assert_eq!(err.payload["status"], "error");

        c.send_text(r#"["1","6","realtime:a","phx_join",{"config":{"broadcast":"yes"}}]"#)
            .await;
        assert_eq!(c.reply_to("6").await.payload["status"], "error");

        c.send_binary(vec![9, 9, 9]).await;
        assert_eq!(c.next_event("system").await.payload["status"], "error");
        c.send_binary(vec![3, 200, 0, 0, 0, 0, 1]).await;
        assert_eq!(c.next_event("system").await.payload["status"], "error");

        let r = c.push(None, "realtime:a", "no_such_event", json!({})).await;
        assert!(c.reply_to(&r).await.payload["response"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("UnknownEvent"));

        let join_ref = c.join("realtime:a", json!({})).await;
        let r = c
            .push(
                Some(&join_ref),
                "realtime:a",
                "broadcast",
                json!({"no_event": 1}),
            )
            .await;
        assert_eq!(c.reply_to(&r).await.payload["status"], "error");
        c.heartbeat().await;
    }
}

/// A frame over `frame_bytes_max` closes the socket with 1009; the server keeps serving.
#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let server = TestServer::start_with(|c| c.session.frame_bytes_max = 1024);
    let mut c = server.client(Vsn::V1).await;
    c.send_text(&format!(
        r#"{{"topic":"phoenix","event":"heartbeat","payload":{{"p":"{}"}},"ref":"1"}}"#,
        "x".repeat(4096)
    ))
    .await;
    let (code, _) = c.until_closed(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1009));
    server.client(Vsn::V1).await.heartbeat().await;
}

/// A connection that sends nothing for `client_timeout_ms` is closed with 4002; one that
/// heartbeats stays open.
#[tokio::test]
async fn silent_connections_are_closed_after_the_client_timeout() {
    let server = TestServer::start_with(|c| {
        c.session.client_timeout_ms = 400;
        c.session.timeout_check_interval_ms = 50;
    });
    let mut silent = server.client(Vsn::V2).await;
    let mut alive = server.client(Vsn::V2).await;
    let started = std::time::Instant::now();
    let closer = tokio::spawn(async move { silent.until_closed(Duration::from_secs(5)).await.0 });
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive.heartbeat().await;
    }
    assert_eq!(closer.await.unwrap(), Some(4002));
    assert!(started.elapsed() >= Duration::from_millis(400));
    alive.heartbeat().await;
}

/// An unsupported `vsn` is refused at the handshake with the JSON error shape.
#[tokio::test]
async fn unsupported_version_is_refused() {
    let server = TestServer::start();
    let (status, body) = http_get(&server.http("/socket/websocket?vsn=9.9.9")).await;
    assert_eq!(status, 400);
    assert!(body.contains("UnsupportedVersion"), "{body}");
}

/// Health answers ok with the broker's state, and /metrics exposes the engine's series.
#[tokio::test]
async fn health_and_metrics_are_served() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V1).await;
    c.join("realtime:m", json!({})).await;
    let (status, body) = http_get(&server.http("/api/health")).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["broker"]["status"], "ok");
    assert!(v["connections"].as_u64().unwrap() >= 1);
    let (status, text) = http_get(&server.http("/metrics")).await;
    assert_eq!(status, 200);
    for series in [
        "locus_ws_connections",
        "locus_channel_joins_total",
        "locus_rooms_active",
        "locus_messages_in_total",
        "locus_process_resident_memory_bytes",
        "locus_process_cpu_seconds_total",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

/// Shutdown closes every session with 4001 (reconnect) before the server stops.
#[tokio::test]
async fn shutdown_closes_sessions_with_4001() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V1).await;
    c.join("realtime:bye", json!({})).await;
    let waiter = tokio::spawn(async move { c.until_closed(Duration::from_secs(5)).await.0 });
    server.shutdown().await;
    assert_eq!(waiter.await.unwrap(), Some(4001));
}

/// A client that disconnects frees its session, and its room stops once empty.
#[tokio::test]
async fn client_disconnect_frees_session_and_room() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V1).await;
    c.join("realtime:x", json!({})).await;
    drop(c);
    // The server notices the disconnect and the room empties.
    let mut tries = 0;
    loop {
        let (_, body) = http_get(&server.http("/api/health")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["connections"] == 0 && v["rooms"] == 0 {
            break;
        }
        tries += 1;
        assert!(tries < 100, "session and room never went away: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every broadcast a client sent before closing its socket is delivered: a close does not
/// cut off frames that were already on the wire.
#[tokio::test]
async fn frames_sent_before_a_close_are_all_delivered() {
    const N: usize = 2_000;
    let server = TestServer::start();
    let topic = "realtime:closing";
    let mut rx = server.client(Vsn::V2).await;
    rx.join(topic, json!({})).await;
    let mut tx = server.client(Vsn::V2).await;
    let join_ref = tx.join(topic, json!({})).await;
    for i in 0..N {
        tx.push(
            Some(&join_ref),
            topic,
            "broadcast",
            json!({"type": "broadcast", "event": "n", "payload": {"i": i}}),
        )
        .await;
    }
    tx.close().await;
    for i in 0..N {
        let m = rx.next_event("broadcast").await;
        assert_eq!(m.payload["payload"]["i"], i);
    }
}
