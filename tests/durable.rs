//! Durable topics end to end: acknowledgement after commit with offsets, delivery with
//! `meta`, recovery of exactly the missed publications (from memory and from the database),
//! refused recoveries, idempotent client ids, replay, and the history API.
//!
//! Over 400 lines: one file per feature, each test a scenario (publish, miss, recover); the harness
//! lives in tests/common.

mod common;
#[path = "common/pg.rs"]
mod pg;

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

/// A recover offset past the topic's newest publication (one never assigned, or u64::MAX,
/// whose `+ 1` must not wrap) answers `recovered: false` and replays nothing; before, the next
/// offset answered `recovered: true` and its publication was then skipped as "already seen".
#[tokio::test]
async fn a_recover_offset_past_the_newest_answers_false() {
    let server = TestServer::start();
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let mut epoch = Value::Null;
    for n in 1..=3 {
        epoch = publish(&mut tx, &tj, n).await.payload["response"]["epoch"].clone();
    }
    for offset in [4, u64::MAX] {
        let mut c = server.client(Vsn::V1).await;
        let reply = c
            .join_raw(
                "1",
                TOPIC,
                json!({"recover": {"epoch": epoch, "offset": offset}}),
            )
            .await;
        assert_eq!(reply.payload["status"], "ok");
        assert_eq!(
            reply.payload["response"]["recovered"], false,
            "offset {offset}"
        );
        c.assert_none(Duration::from_millis(200), |m| m.event == "broadcast")
            .await;
    }
}

/// A history page stops before the message that would take it past
/// `history_page_bytes_max` and names the `since_offset` of the next page, so a client reads
/// everything, in order, in bounded pages.
#[tokio::test]
async fn history_pages_stop_at_history_page_bytes_max_and_say_where_to_continue() {
    let server = TestServer::start_with(|c| c.storage.history_page_bytes_max = 250);
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let pad = "x".repeat(90);
    for n in 1..=5 {
        let r = tx
            .push(
                Some(&tj),
                TOPIC,
                "broadcast",
                json!({"type": "broadcast", "event": "msg", "payload": {"n": n, "pad": pad}}),
            )
            .await;
        assert_eq!(tx.reply_to(&r).await.payload["status"], "ok");
    }
    let mut pages = Vec::new();
    let mut since = Some(0);
    while let Some(s) = since {
        let (status, body) = http_get(&server.http(&format!(
            "/api/channels/room:lobby/history?since_offset={s}"
        )))
        .await;
        assert_eq!(status, 200, "{body}");
        let h: Value = serde_json::from_str(&body).unwrap();
        let page: Vec<u64> = h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        since = h["next_since_offset"].as_u64();
        assert_eq!(since.is_some(), page.last() != Some(&5), "{body}");
        pages.push(page);
    }
    assert_eq!(pages, vec![vec![1, 2], vec![3, 4], vec![5]]);
}

/// A storage writer holding `inflight_bytes_max` bytes of uncommitted publications refuses
/// the next one with `StorageBusy` (not only past a count), and accepts again once its batch
/// committed.
#[tokio::test]
async fn a_writer_refuses_publications_past_inflight_bytes_max() {
    let server = TestServer::start_with(|c| {
        c.storage.inflight_bytes_max = 10_000;
        // The first publication stays in flight long enough for the second to meet it.
        c.storage.flush_interval_ms = 1_000;
    });
    let mut tx = server.client(Vsn::V2).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let big = json!({"type": "broadcast", "event": "msg", "payload": {"pad": "x".repeat(6_000)}});
    let first = tx.push(Some(&tj), TOPIC, "broadcast", big.clone()).await;
    let second = tx.push(Some(&tj), TOPIC, "broadcast", big.clone()).await;
    let replies = tx.replies(2, common::RECV_TIMEOUT).await;
    assert_eq!(replies[&first].payload["status"], "ok", "{replies:?}");
    assert_eq!(replies[&second].payload["status"], "error");
    let reason = replies[&second].payload["response"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.starts_with("StorageBusy: "), "{reason}");
    let third = tx.push(Some(&tj), TOPIC, "broadcast", big).await;
    let reply = tx.reply_to(&third).await;
    assert_eq!(reply.payload["status"], "ok", "{reply:?}");
    assert_eq!(reply.payload["response"]["offset"], 2);
}

/// `count` characters that do not compress (Postgres would otherwise compress a long index
/// entry under its size limit).
fn incompressible(count: usize) -> String {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect()
}

fn stored_row(event: &str, idem_key: &str) -> locus_storage::NewPublication {
    locus_storage::NewPublication {
        topic: "realtime:room:poison".into(),
        event: event.into(),
        encoding: locus_storage::Encoding::Json,
        payload: bytes::Bytes::from_static(b"{}"),
        user_id: None,
        client_id: None,
        idem_key: idem_key.into(),
        created_at_ms: locus_storage::now_ms(),
    }
}

/// On Postgres, a batch holding rows the database refuses (a NUL in the event, an index entry
/// over 2.7 KB) — injected past the writers' checks — commits every other row, in order, and
/// fails only the refused ones; the same for geo messages.
#[tokio::test]
async fn a_batch_with_rows_postgres_refuses_commits_the_other_rows() {
    use locus_storage::Storage;
    let cluster = pg::PgCluster::start();
    let store = locus_storage::AnyStore::connect(&cluster.url(), 4)
        .await
        .unwrap();
    let limits = locus_actors::config::StorageLimits::default();
    let health = locus_actors::publish::batch_writer::StorageHealth::default();
    let batch = vec![
        stored_row("a", "k1"),
        stored_row("e\0", "k2"),
        stored_row("b", "k3"),
        stored_row("c", &incompressible(3_000)),
        stored_row("d", "k5"),
    ];
    let results =
        locus_actors::publish::batch_writer::write_batch(&store, &batch, &limits, &health).await;
    let outcome: Vec<Option<u64>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|a| a.offset))
        .collect();
    assert_eq!(outcome, vec![Some(1), None, Some(2), None, Some(3)]);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, locus_storage::StoreError::Rejected(_))));
    let h = store
        .history("realtime:room:poison", 0, 10, usize::MAX)
        .await
        .unwrap();
    let events: Vec<&str> = h.publications.iter().map(|p| p.event.as_str()).collect();
    assert_eq!(events, vec!["a", "b", "d"]);

    let geo = |id: &str, content: &str| locus_storage::NewGeoMessage {
        id: id.into(),
        user_id: "u".into(),
        content: content.into(),
        point: locus_geo::Point::new(1.0, 2.0).unwrap(),
        radius_m: 10.0,
        created_at_ms: locus_storage::now_ms(),
    };
    let posts = vec![
        geo("g1", "fine"),
        geo("g2", "nul \0 here"),
        geo("g3", "fine"),
    ];
    let results =
        locus_actors::publish::batch_writer::write_batch(&store, &posts, &limits, &health).await;
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, vec![true, false, true]);
}

/// On Postgres, durable broadcasts with a NUL in the event or a client id over 128 bytes are
/// refused alone with `InvalidPayload` / `ClientIdTooLong`, while a good broadcast sent in the
/// same batch window is stored and acknowledged.
#[tokio::test]
async fn poisonous_broadcasts_are_refused_alone_on_postgres() {
    let cluster = pg::PgCluster::start();
    let url = cluster.url();
    let server = TestServer::start_with(move |c| {
        c.storage.url = url;
        // Wide enough that the three pushes share one batch.
        c.storage.flush_interval_ms = 200;
    });
    let mut tx = server.client(Vsn::V1).await;
    let tj = tx.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let nul = tx
        .push(
            Some(&tj),
            TOPIC,
            "broadcast",
            json!({"type": "broadcast", "event": "e\0", "payload": {}}),
        )
        .await;
    let good = tx
        .push(
            Some(&tj),
            TOPIC,
            "broadcast",
            json!({"type": "broadcast", "event": "e", "payload": {"ok": true}}),
        )
        .await;
    let long_id = tx
        .push(
            Some(&tj),
            TOPIC,
            "broadcast",
            json!({"type": "broadcast", "event": "e", "payload": {}, "id": incompressible(3_000)}),
        )
        .await;
    let replies = tx.replies(3, common::RECV_TIMEOUT).await;
    let reason = |r: &str| {
        replies[r].payload["response"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason(&nul).starts_with("InvalidPayload: "), "{replies:?}");
    assert!(
        reason(&long_id).starts_with("ClientIdTooLong: "),
        "{replies:?}"
    );
    assert_eq!(replies[&good].payload["status"], "ok", "{replies:?}");
    assert_eq!(replies[&good].payload["response"]["offset"], 1);
    let (_, body) = http_get(&server.http("/api/channels/room:lobby/history")).await;
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["messages"].as_array().unwrap().len(), 1, "{body}");
}
