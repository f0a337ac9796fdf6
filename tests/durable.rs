//! Durable topics end to end: acknowledgement after commit with offsets, delivery with
//! `meta`, recovery of exactly the missed publications (from memory and from the database),
//! refused recoveries, idempotent client ids, replay, and the history API.

mod common;

use std::time::Duration;

use common::{http_get, http_post, Client, Msg, TestServer, Vsn};
use serde_json::{json, Value};

const TOPIC: &str = "realtime:room:lobby";

async fn publish(c: &mut Client, join_ref: &str, n: u64) -> Msg {
    let r = c
        .push(
            Some(join_ref),
            TOPIC,
            "broadcast",
            json!({"type": "broadcast", "event": "msg", "payload": {"n": n}}),
        )
        .await;
    c.reply_to(&r).await
}

fn offsets(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m.payload["meta"]["offset"].as_u64().unwrap())
        .collect()
}

async fn collect(c: &mut Client, n: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.next_event("broadcast").await);
    }
    out
}

/// Acks arrive after commit carrying `{offset, epoch}`; members get the broadcast with the same
/// `meta`; the history API lists the publications in order.
#[tokio::test]
async fn durable_broadcasts_are_acked_with_offsets_and_listed_in_history() {
    let server = TestServer::start();
    let mut rx = server.client(Vsn::V1).await;
    rx.join(TOPIC, json!({})).await;
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let mut epoch = Value::Null;
    for n in 1..=5 {
        let ack = publish(&mut tx, &tj, n).await;
        assert_eq!(ack.payload["status"], "ok");
        assert_eq!(ack.payload["response"]["offset"], n);
        epoch = ack.payload["response"]["epoch"].clone();
        assert!(epoch.is_string());
    }
    let got = collect(&mut rx, 5).await;
    assert_eq!(offsets(&got), vec![1, 2, 3, 4, 5]);
    assert!(got.iter().all(|m| m.payload["meta"]["epoch"] == epoch));
    assert_eq!(got[2].payload["payload"], json!({"n": 3}));

    let (status, body) =
        http_get(&server.http("/api/channels/room:lobby/history?since_offset=2&limit=2")).await;
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["epoch"], epoch);
    assert_eq!(h["next_offset"], 6);
    let listed: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![3, 4]);
    assert_eq!(h["messages"][0]["payload"], json!({"n": 3}));
    assert!(h["messages"][0]["created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let (status, _) = http_get(&server.http("/api/channels/lobby/history")).await;
    assert_eq!(status, 404, "ephemeral topics keep no history");
    let (status, _) = http_get(&server.http("/api/channels/room:lobby/history?limit=0")).await;
    assert_eq!(status, 400);
}

async fn recover_scenario(server: &TestServer) {
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let mut rx = server.client(Vsn::V1).await;
    rx.join(TOPIC, json!({})).await;
    for n in 1..=3 {
        publish(&mut tx, &tj, n).await;
    }
    let seen = collect(&mut rx, 3).await;
    let last = seen.last().unwrap().payload["meta"].clone();
    rx.close().await;

    for n in 4..=7 {
        publish(&mut tx, &tj, n).await;
    }
    let mut back = server.client(Vsn::V1).await;
    let reply = back
        .join_raw(
            "9",
            TOPIC,
            json!({"recover": {"epoch": last["epoch"], "offset": last["offset"]}}),
        )
        .await;
    assert_eq!(reply.payload["response"]["recovered"], true, "{reply:?}");
    let missed = collect(&mut back, 4).await;
    assert_eq!(offsets(&missed), vec![4, 5, 6, 7]);
    assert_eq!(missed[0].payload["payload"], json!({"n": 4}));
    publish(&mut tx, &tj, 8).await;
    assert_eq!(offsets(&collect(&mut back, 1).await), vec![8]);
    back.assert_none(Duration::from_millis(300), |m| m.event == "broadcast")
        .await;
}

/// A client that missed publications gets exactly those on rejoin, in order, then live ones,
/// each once — served from the in-memory window.
#[tokio::test]
async fn recovery_sends_exactly_the_missed_publications() {
    recover_scenario(&TestServer::start()).await;
}

/// The same when the window is too small and the gap is read from the database.
#[tokio::test]
async fn recovery_reads_the_database_beyond_the_window() {
    recover_scenario(&TestServer::start_with(|c| {
        c.storage.history_window_size = 2
    }))
    .await;
}

/// A changed epoch, a gap over `recover_publications_max`, or an ephemeral topic answer
/// `recovered: false` and replay nothing.
#[tokio::test]
async fn impossible_recoveries_answer_false() {
    let server = TestServer::start_with(|c| {
        c.storage.history_window_size = 1;
        c.storage.recover_publications_max = 2;
    });
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let mut epoch = Value::Null;
    for n in 1..=5 {
        epoch = publish(&mut tx, &tj, n).await.payload["response"]["epoch"].clone();
    }
    for (topic, recover) in [
        (TOPIC, json!({"epoch": "not-the-epoch", "offset": 4})),
        (TOPIC, json!({"epoch": epoch, "offset": 1})),
        ("realtime:lobby", json!({"epoch": epoch, "offset": 1})),
    ] {
        let mut c = server.client(Vsn::V1).await;
        let reply = c.join_raw("1", topic, json!({"recover": recover})).await;
        assert_eq!(reply.payload["status"], "ok");
        assert_eq!(
            reply.payload["response"]["recovered"], false,
            "{topic} {recover}"
        );
        c.assert_none(Duration::from_millis(200), |m| m.event == "broadcast")
            .await;
    }
    let mut c = server.client(Vsn::V1).await;
    let reply = c
        .join_raw(
            "1",
            TOPIC,
            json!({"recover": {"epoch": epoch, "offset": 3}}),
        )
        .await;
    assert_eq!(reply.payload["response"]["recovered"], true);
    assert_eq!(offsets(&collect(&mut c, 2).await), vec![4, 5]);
}

/// Re-sending a durable broadcast with the same client `id` returns the original offset and is
/// delivered once.
#[tokio::test]
async fn client_ids_make_durable_broadcasts_idempotent() {
    let server = TestServer::start();
    let mut rx = server.client(Vsn::V2).await;
    rx.join(TOPIC, json!({})).await;
    let mut tx = server.client(Vsn::V1).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let body = json!({"type": "broadcast", "event": "msg", "payload": {"text": "hi"}, "id": "c-1"});
    let r1 = tx.push(Some(&tj), TOPIC, "broadcast", body.clone()).await;
    let a1 = tx.reply_to(&r1).await;
    let r2 = tx.push(Some(&tj), TOPIC, "broadcast", body).await;
    let a2 = tx.reply_to(&r2).await;
    assert_eq!(a1.payload["response"], a2.payload["response"]);
    let got = rx.next_event("broadcast").await;
    assert_eq!(got.payload["meta"]["id"], "c-1");
    rx.assert_none(Duration::from_millis(300), |m| m.event == "broadcast")
        .await;
}

/// `broadcast.replay {since, limit}` sends stored publications marked `meta.replayed`.
#[tokio::test]
async fn replay_sends_stored_publications_since_a_time() {
    let server = TestServer::start();
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    for n in 1..=3 {
        publish(&mut tx, &tj, n).await;
    }
    let mut c = server.client(Vsn::V2).await;
    let reply = c
        .join_raw(
            "1",
            TOPIC,
            json!({"broadcast": {"replay": {"since": 0, "limit": 2}}}),
        )
        .await;
    assert_eq!(reply.payload["status"], "ok");
    let got = collect(&mut c, 2).await;
    assert_eq!(offsets(&got), vec![1, 2]);
    assert!(got.iter().all(|m| m.payload["meta"]["replayed"] == true));
}

/// The REST broadcast on a durable topic answers after commit and lands in the history.
#[tokio::test]
async fn rest_broadcast_on_a_durable_topic_is_stored() {
    let server = TestServer::start();
    let body =
        json!({"messages": [{"topic": "room:lobby", "event": "e", "payload": {"via": "rest"}}]});
    let (status, _) = http_post(&server.http("/api/broadcast"), &body.to_string()).await;
    assert_eq!(status, 202);
    let (_, body) = http_get(&server.http("/api/channels/room:lobby/history")).await;
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["messages"][0]["payload"], json!({"via": "rest"}));
    let (_, health) = http_get(&server.http("/api/health")).await;
    let v: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(v["storage"]["status"], "ok");
    assert_eq!(v["storage"]["backend"], "sqlite");
}
