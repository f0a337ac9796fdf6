//! Room behaviour over real WebSockets: presence (several devices per key, in-place updates,
//! leaves), typing (stamped, throttled, expiring), and backpressure (a slow consumer is cut off
//! while the rest of the room keeps receiving).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{http_post, Client, Msg, Received, TestServer, Vsn};
use serde_json::{json, Value};

/// realtime-js's `syncState`/`syncDiff`, reduced to key → phx_ref → meta.
#[derive(Default, Debug)]
struct PresenceView(HashMap<String, HashMap<String, Value>>);

impl PresenceView {
    fn apply(&mut self, m: &Msg) {
        match m.event.as_str() {
            "presence_state" => {
                self.0.clear();
                self.add(&m.payload);
            }
            "presence_diff" => {
                self.add(&m.payload["joins"]);
                for (key, v) in m.payload["leaves"].as_object().unwrap() {
                    if let Some(metas) = self.0.get_mut(key) {
                        for meta in v["metas"].as_array().unwrap() {
                            metas.remove(meta["phx_ref"].as_str().unwrap());
                        }
                        if metas.is_empty() {
                            self.0.remove(key);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn add(&mut self, joins: &Value) {
        for (key, v) in joins.as_object().unwrap() {
            for meta in v["metas"].as_array().unwrap() {
                let r = meta["phx_ref"].as_str().unwrap().to_owned();
                self.0
                    .entry(key.clone())
                    .or_default()
                    .insert(r, meta.clone());
            }
        }
    }
}

async fn track(c: &mut Client, join_ref: &str, topic: &str, meta: Value) {
    let r = c
        .push(
            Some(join_ref),
            topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": meta}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
}

/// Two devices tracked under one key show as two metas; re-tracking one updates it in place
/// (same phx_ref, nothing under `leaves`); a disconnect is a leave of that device only.
#[tokio::test]
async fn presence_two_devices_one_key_and_in_place_update() {
    let server = TestServer::start();
    let topic = "realtime:presence";
    let config = json!({"presence": {"key": "alice", "enabled": true}});
    let mut observer = server.client(Vsn::V1).await;
    observer
        .join(topic, json!({"presence": {"key": "bob", "enabled": true}}))
        .await;
    let mut view = PresenceView::default();
    view.apply(&observer.next_event("presence_state").await);

    let mut phone = server.client(Vsn::V2).await;
    let phone_join = phone.join(topic, config.clone()).await;
    track(
        &mut phone,
        &phone_join,
        topic,
        json!({"device": "phone", "status": "online"}),
    )
    .await;
    let mut laptop = server.client(Vsn::V1).await;
    let laptop_join = laptop.join(topic, config).await;
    // The late joiner's state already holds the phone.
    let state = laptop.next_event("presence_state").await;
    assert_eq!(state.payload["alice"]["metas"].as_array().unwrap().len(), 1);
    track(
        &mut laptop,
        &laptop_join,
        topic,
        json!({"device": "laptop", "status": "online"}),
    )
    .await;

    for _ in 0..2 {
        view.apply(&observer.next_event("presence_diff").await);
    }
    assert_eq!(view.0["alice"].len(), 2, "{view:?}");

    track(
        &mut phone,
        &phone_join,
        topic,
        json!({"device": "phone", "status": "idle"}),
    )
    .await;
    let diff = observer.next_event("presence_diff").await;
    assert_eq!(
        diff.payload["leaves"],
        json!({}),
        "an update is not a leave: {diff:?}"
    );
    let metas = diff.payload["joins"]["alice"]["metas"].as_array().unwrap();
    assert_eq!(metas.len(), 1);
    view.apply(&diff);
    let phone_metas: Vec<&Value> = view.0["alice"]
        .values()
        .filter(|m| m["device"] == "phone")
        .collect();
    assert_eq!(
        phone_metas.len(),
        1,
        "exactly one meta for the phone after the update"
    );
    assert_eq!(phone_metas[0]["status"], "idle");
    assert_eq!(view.0["alice"].len(), 2);

    drop(phone);
    let diff = observer.next_event("presence_diff").await;
    view.apply(&diff);
    assert_eq!(
        diff.payload["leaves"]["alice"]["metas"][0]["device"],
        "phone"
    );
    assert_eq!(view.0["alice"].len(), 1);
    assert_eq!(view.0["alice"].values().next().unwrap()["device"], "laptop");
}

/// `untrack` removes the member's meta; members with presence disabled get no presence events.
#[tokio::test]
async fn untrack_and_presence_disabled_members() {
    let server = TestServer::start();
    let topic = "realtime:untrack";
    let mut quiet = server.client(Vsn::V2).await;
    quiet
        .join(topic, json!({"presence": {"enabled": false}}))
        .await;
    let mut watcher = server.client(Vsn::V2).await;
    watcher
        .join(topic, json!({"presence": {"enabled": true}}))
        .await;
    watcher.next_event("presence_state").await;
    let mut a = server.client(Vsn::V1).await;
    let aj = a.join(topic, json!({"presence": {"key": "a"}})).await;
    track(&mut a, &aj, topic, json!({"x": 1})).await;
    assert!(watcher.next_event("presence_diff").await.payload["joins"]["a"].is_object());
    let r = a
        .push(
            Some(&aj),
            topic,
            "presence",
            json!({"type": "presence", "event": "untrack"}),
        )
        .await;
    assert_eq!(a.reply_to(&r).await.payload["status"], "ok");
    assert!(watcher.next_event("presence_diff").await.payload["leaves"]["a"].is_object());
    quiet
        .assert_none(Duration::from_millis(300), |m| {
            m.event.starts_with("presence")
        })
        .await;
    let r = a
        .push(
            Some(&aj),
            topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": [1]}),
        )
        .await;
    assert_eq!(a.reply_to(&r).await.payload["status"], "error");
}

/// Typing is stamped with the user id, re-announced at most once per throttle period, and
/// expires to `typing: false` after the TTL.
#[tokio::test]
async fn typing_is_stamped_throttled_and_expires() {
    let server = TestServer::start_with(|c| {
        c.room.typing_ttl_ms = 600;
        c.room.typing_throttle_ms = 300;
    });
    let topic = "realtime:typing";
    let mut typist = server.client(Vsn::V2).await;
    let tj = typist.join(topic, json!({})).await;
    let mut reader = server.client(Vsn::V1).await;
    reader.join(topic, json!({})).await;

    let r = typist
        .push(Some(&tj), topic, "typing", json!({"typing": true}))
        .await;
    assert_eq!(typist.reply_to(&r).await.payload["status"], "ok");
    let t = reader.next_event("typing").await;
    assert_eq!(t.payload["typing"], true);
    let user = t.payload["user_id"].as_str().unwrap().to_owned();
    assert!(!user.is_empty());

    // Inside the throttle window: absorbed (still refreshes the TTL).
    let r = typist
        .push(Some(&tj), topic, "typing", json!({"typing": true}))
        .await;
    typist.reply_to(&r).await;
    reader
        .assert_none(Duration::from_millis(200), |m| m.event == "typing")
        .await;

    let started = std::time::Instant::now();
    let t = reader.next_event("typing").await;
    assert_eq!(t.payload, json!({"user_id": user, "typing": false}));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "expired too early"
    );
    typist
        .assert_none(Duration::from_millis(100), |m| m.event == "typing")
        .await;

    // realtime-js shape: send({type: "typing", payload: {typing: true}}) then an explicit stop.
    typist
        .push(
            Some(&tj),
            topic,
            "typing",
            json!({"type": "typing", "payload": {"typing": true}}),
        )
        .await;
    assert_eq!(reader.next_event("typing").await.payload["typing"], true);
    typist
        .push(Some(&tj), topic, "typing", json!({"typing": false}))
        .await;
    assert_eq!(reader.next_event("typing").await.payload["typing"], false);
    let r = typist
        .push(Some(&tj), topic, "typing", json!({"typing": "yes"}))
        .await;
    assert_eq!(typist.reply_to(&r).await.payload["status"], "error");
}

/// A member that stops reading is disconnected (system message, then close 4008) once its
/// outbound queue passes the bound, and counted; the room's other members receive everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_others_keep_receiving() {
    const MESSAGES: usize = 4_000;
    const PAYLOAD_BYTES: usize = 4_096;
    const BATCH: usize = 10;
    let server = TestServer::start_with(|c| {
        c.session.outbound_queue_bytes_max = 256 * 1024;
        c.session.frame_bytes_max = 16 * 1024;
        c.session.close_grace_ms = 30_000;
    });
    let topic = "realtime:firehose";
    let dropped_before = server
        .metric(r#"locus_messages_dropped_total{reason="slow_consumer"}"#)
        .await;

    let mut slow = server.client(Vsn::V1).await;
    slow.join(topic, json!({})).await;
    let mut fast = server.client(Vsn::V2).await;
    fast.join(topic, json!({})).await;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < MESSAGES {
            match fast.recv(Duration::from_secs(10)).await {
                Received::Msg(m) if m.event == "broadcast" => got += 1,
                Received::Msg(_) => {}
                other => panic!("fast member lost its stream after {got}: {other:?}"),
            }
        }
        got
    });

    // Publish over REST so the publisher is not a member. Each request (40 KiB) fits the fast
    // member's 256 KiB outbox with room to spare; the 16 MiB in all fill the slow member's kernel
    // buffers and then its outbox.
    let text = "x".repeat(PAYLOAD_BYTES);
    for batch in 0..MESSAGES / BATCH {
        let messages: Vec<Value> = (0..BATCH)
            .map(|i| json!({"topic": "firehose", "event": "m", "payload": {"i": batch * BATCH + i, "text": text}}))
            .collect();
        let (status, body) = http_post(
            &server.http("/api/broadcast"),
            &json!({"messages": messages}).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(
        reader.await.unwrap(),
        MESSAGES,
        "the fast member received every message"
    );
    let dropped_after = server
        .metric(r#"locus_messages_dropped_total{reason="slow_consumer"}"#)
        .await;
    assert!(
        dropped_after > dropped_before,
        "the slow consumer was counted"
    );

    // Reading again, the slow member finds the notice and the 4008 close after what was buffered.
    let (code, seen) = slow.until_closed(Duration::from_secs(20)).await;
    assert_eq!(code, Some(4008));
    let notice = seen
        .iter()
        .rev()
        .find(|m| m.event == "system")
        .expect("a system notice before the close");
    assert!(notice.payload["message"]
        .as_str()
        .unwrap()
        .starts_with("SlowConsumer"));
    let delivered = seen.iter().filter(|m| m.event == "broadcast").count();
    assert!(
        delivered < MESSAGES,
        "the slow member was cut off, not served everything"
    );
}
