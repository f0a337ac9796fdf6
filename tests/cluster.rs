//! Several nodes as one engine: real `nats-server` and `locus` processes on loopback. Broadcasts,
//! presence, geo and REST publications across nodes; node death and graceful stop; NATS lost and
//! back under traffic.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{eventually, wait_formed, Nats, Node, NODE_DOWN_MS};
use common::{http_post, Client, Msg, Received, Vsn};
use serde_json::{json, Value};

const ROOM: &str = "realtime:room:cluster";

async fn connect(node: &Node) -> Client {
    Client::connect(&node.ws(), Vsn::V2).await
}

async fn send(c: &mut Client, jr: &str, topic: &str, n: u64) {
    c.push(
        Some(jr),
        topic,
        "broadcast",
        json!({"type": "broadcast", "event": "m", "payload": {"n": n}}),
    )
    .await;
}

fn n_of(m: &Msg) -> Option<u64> {
    (m.event == "broadcast").then(|| m.payload["payload"]["n"].as_u64())?
}

/// Every broadcast `n` that arrives within `quiet` of the last one.
async fn drain_ns(c: &mut Client, quiet: Duration) -> Vec<u64> {
    let mut out = Vec::new();
    while let Received::Msg(m) = c.recv(quiet).await {
        out.extend(n_of(&m));
    }
    out
}

/// The presence keys of a `presence_state` / `presence_diff` part.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map_or(Vec::new(), |o| o.keys().cloned().collect());
    k.sort();
    k
}

/// A broadcast from a member on one node reaches the members on the others exactly once and
/// in the publisher's order; `self: true` gives the sender its own copy once and `self: false`
/// none, across nodes; a REST broadcast on a third node reaches both; and the third node, with
/// no member of the topic, receives none of its publications (interest routing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_cross_nodes_exactly_once_in_order_with_self_both_ways() {
    let nats = Nats::start();
    let a = Node::start("a", &nats.url(), &[]).await;
    let b = Node::start("b", &nats.url(), &[]).await;
    let c = Node::start("c", &nats.url(), &[]).await;
    wait_formed(&[&a, &b, &c], &["a", "b", "c"]).await;

    let mut x = connect(&a).await;
    let xj = x.join(ROOM, json!({"broadcast": {"self": false}})).await;
    let mut y = connect(&b).await;
    let yj = y.join(ROOM, json!({"broadcast": {"self": true}})).await;

    for n in 1..=50 {
        send(&mut y, &yj, ROOM, n).await;
    }
    let want: Vec<u64> = (1..=50).collect();
    assert_eq!(drain_ns(&mut x, Duration::from_millis(700)).await, want);
    assert_eq!(drain_ns(&mut y, Duration::from_millis(300)).await, want);

    send(&mut x, &xj, ROOM, 99).await;
    assert_eq!(drain_ns(&mut y, Duration::from_millis(700)).await, vec![99]);
    assert!(drain_ns(&mut x, Duration::from_millis(300))
        .await
        .is_empty());

    let body = json!({"messages": [{"topic": "room:cluster", "event": "m", "payload": {"n": 7}}]});
    let (status, _) = http_post(&c.http("/api/broadcast"), &body.to_string()).await;
    assert_eq!(status, 202);
    assert_eq!(drain_ns(&mut x, Duration::from_millis(700)).await, vec![7]);
    assert_eq!(drain_ns(&mut y, Duration::from_millis(300)).await, vec![7]);

    let received_on_c = c
        .metric(
            "locus_cluster_messages_total",
            &["direction=\"in\"", "kind=\"publication\""],
        )
        .await;
    assert_eq!(received_on_c, 0.0, "c has no member of the topic");
    let received_on_a = a
        .metric(
            "locus_cluster_messages_total",
            &["direction=\"in\"", "kind=\"publication\""],
        )
        .await;
    assert!(received_on_a >= 51.0, "{received_on_a}");
}

/// A member joining on one node gets a `presence_state` listing the members tracked on the
/// other; diffs flow both ways; a leave on one node reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_merges_across_nodes_and_diffs_flow_both_ways() {
    let nats = Nats::start();
    let a = Node::start("a", &nats.url(), &[]).await;
    let b = Node::start("b", &nats.url(), &[]).await;
    wait_formed(&[&a, &b], &["a", "b"]).await;

    let mut x = connect(&a).await;
    let xj = x.join(ROOM, json!({"presence": {"key": "x"}})).await;
    x.push(
        Some(&xj),
        ROOM,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"at": "a"}}),
    )
    .await;
    x.next_where(|m| m.event == "presence_diff" && keys(&m.payload["joins"]) == ["x"])
        .await;

    let mut y = connect(&b).await;
    let yj = y.join(ROOM, json!({"presence": {"key": "y"}})).await;
    let state = y.next_event("presence_state").await;
    assert_eq!(keys(&state.payload), ["x"], "{state:?}");
    assert_eq!(state.payload["x"]["metas"][0]["at"], "a");

    y.push(
        Some(&yj),
        ROOM,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"at": "b"}}),
    )
    .await;
    let diff = x
        .next_where(|m| m.event == "presence_diff" && keys(&m.payload["joins"]) == ["y"])
        .await;
    assert_eq!(diff.payload["joins"]["y"]["metas"][0]["at"], "b");

    y.push(Some(&yj), ROOM, "phx_leave", json!({})).await;
    x.next_where(|m| m.event == "presence_diff" && keys(&m.payload["leaves"]) == ["y"])
        .await;
}

/// Tracks presence `key` on `node` and returns the connection (kept open by the caller).
async fn tracked(node: &Node, key: &str) -> Client {
    let mut c = connect(node).await;
    let jr = c.join(ROOM, json!({"presence": {"key": key}})).await;
    c.push(
        Some(&jr),
        ROOM,
        "presence",
        json!({"type": "presence", "event": "track", "payload": {}}),
    )
    .await;
    c.next_where(|m| {
        m.event == "presence_diff" && keys(&m.payload["joins"]).contains(&key.to_owned())
    })
    .await;
    c
}

/// A node killed with SIGKILL: its presences leave on the others within `node_down_ms` + 1 s.
/// Restarted under the same id, it leaves no ghost: a new joiner sees only the live members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_presences_leave_and_its_restart_leaves_no_ghosts() {
    let nats = Nats::start();
    let a = Node::start("a", &nats.url(), &[]).await;
    let mut b = Node::start("b", &nats.url(), &[]).await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    let mut x = tracked(&a, "x").await;
    let _y = tracked(&b, "y").await;
    x.next_where(|m| m.event == "presence_diff" && keys(&m.payload["joins"]) == ["y"])
        .await;

    b.process.kill();
    let killed = Instant::now();
    let wait = Duration::from_millis(NODE_DOWN_MS + 1_000);
    loop {
        match x.recv(wait.saturating_sub(killed.elapsed())).await {
            Received::Msg(m)
                if m.event == "presence_diff" && keys(&m.payload["leaves"]) == ["y"] =>
            {
                break
            }
            Received::Msg(_) => continue,
            other => panic!("no leave of y within {wait:?}: {other:?}"),
        }
    }

    let b2 = Node::start_on("b", &nats.url(), b.port, &[]).await;
    wait_formed(&[&a, &b2], &["a", "b"]).await;
    let _z = tracked(&b2, "z").await;
    let mut w = connect(&a).await;
    w.join(ROOM, json!({"presence": {"key": "w"}})).await;
    let state = w.next_event("presence_state").await;
    assert_eq!(keys(&state.payload), ["x", "z"], "{state:?}");
}

/// A node stopped with SIGTERM says goodbye: its presences leave on the others at once
/// (within 2 s, far sooner than `node_down_ms` would take).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_node_presences_leave_at_once() {
    let nats = Nats::start();
    let a = Node::start(
        "a",
        &nats.url(),
        &[("LOCUS_CLUSTER__NODE_DOWN_MS", "30000")],
    )
    .await;
    let mut b = Node::start(
        "b",
        &nats.url(),
        &[("LOCUS_CLUSTER__NODE_DOWN_MS", "30000")],
    )
    .await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    let mut x = tracked(&a, "x").await;
    let _y = tracked(&b, "y").await;
    x.next_where(|m| m.event == "presence_diff" && keys(&m.payload["joins"]) == ["y"])
        .await;

    let stopping = Instant::now();
    assert_eq!(b.process.terminate(Duration::from_secs(10)), Some(true));
    x.next_where(|m| m.event == "presence_diff" && keys(&m.payload["leaves"]) == ["y"])
        .await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    eventually("a forgets b", || async { a.sees().await == ["a"] }).await;
}

/// NATS stopped under traffic: each node keeps delivering to its own members and says
/// `degraded`; NATS back on the same port: the nodes resubscribe by themselves and cross-node
/// delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_delivery_survives_nats_loss_and_cross_node_delivery_resumes() {
    let mut nats = Nats::start();
    let a = Node::start("a", &nats.url(), &[]).await;
    let b = Node::start("b", &nats.url(), &[]).await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    let mut x = connect(&a).await;
    let xj = x.join(ROOM, json!({"broadcast": {"self": true}})).await;
    let mut y = connect(&b).await;
    y.join(ROOM, json!({})).await;
    send(&mut x, &xj, ROOM, 1).await;
    assert_eq!(drain_ns(&mut y, Duration::from_millis(500)).await, vec![1]);
    assert_eq!(drain_ns(&mut x, Duration::from_millis(100)).await, vec![1]);

    let port = nats.port;
    nats.stop();
    eventually("a says degraded", || async {
        let h = a.health().await;
        h["status"] == "degraded" && h["cluster"]["broker"]["status"] == "degraded"
    })
    .await;
    for n in 2..=5 {
        send(&mut x, &xj, ROOM, n).await;
    }
    assert_eq!(
        drain_ns(&mut x, Duration::from_millis(500)).await,
        vec![2, 3, 4, 5],
        "local delivery goes on"
    );

    let _nats = Nats::start_on(port);
    eventually("a is ok again", || async {
        a.health().await["status"] == "ok"
    })
    .await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    // Resubscription is confirmed by traffic: publish until one crosses.
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 100.. {
        send(&mut x, &xj, ROOM, n).await;
        if !drain_ns(&mut y, Duration::from_millis(200))
            .await
            .is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cross-node delivery never resumed"
        );
    }
}
