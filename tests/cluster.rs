//! Several nodes as one engine: real `nats-server` and `locus` processes on loopback. Broadcasts,
//! presence, geo and REST publications across nodes; durable offsets with publishers on two
//! nodes (real Postgres); node death and graceful stop; NATS lost and back under traffic;
//! realtime-js with its two clients on different nodes.
//!
//! Over 400 lines: one scenario per behaviour of the cluster, all sharing the helpers at the top.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::cluster::{eventually, wait_formed, Nats, Node, NODE_DOWN_MS};
use common::compat::run_node;
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

    // A member on c makes c subscribe; once it leaves, c unsubscribes and receives nothing more.
    let idle = c.metric("locus_cluster_subscriptions", &[]).await;
    let mut w = connect(&c).await;
    let wj = w.join(ROOM, json!({})).await;
    send(&mut y, &yj, ROOM, 200).await;
    assert_eq!(
        drain_ns(&mut w, Duration::from_millis(500)).await,
        vec![200]
    );
    w.push(Some(&wj), ROOM, "phx_leave", json!({})).await;
    eventually("c unsubscribes", || async {
        c.metric("locus_cluster_subscriptions", &[]).await == idle
    })
    .await;
    let in_publication = ["direction=\"in\"", "kind=\"publication\""];
    let before = c
        .metric("locus_cluster_messages_total", &in_publication)
        .await;
    for n in 201..=210 {
        send(&mut y, &yj, ROOM, n).await;
    }
    assert_eq!(
        drain_ns(&mut x, Duration::from_millis(700)).await.len(),
        10 + 1
    );
    let after = c
        .metric("locus_cluster_messages_total", &in_publication)
        .await;
    assert_eq!(after, before, "c left the topic");
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
/// `degraded`, and once the nodes give each other up their presences leave; NATS back on the
/// same port: the nodes resubscribe by themselves, cross-node delivery resumes and the presences
/// come back.
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
    let mut px = tracked(&a, "px").await;
    let _py = tracked(&b, "py").await;
    px.next_where(|m| m.event == "presence_diff" && keys(&m.payload["joins"]) == ["py"])
        .await;

    let port = nats.port;
    nats.stop();
    px.next_where(|m| m.event == "presence_diff" && keys(&m.payload["leaves"]) == ["py"])
        .await;
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
    px.next_where(|m| m.event == "presence_diff" && keys(&m.payload["joins"]) == ["py"])
        .await;
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

/// Nodes `a` and `b` on `nats`, storing `room:*` topics in `pg`, once they see each other.
async fn durable_pair(pg: &pg::PgCluster, nats: &Nats) -> (Node, Node) {
    let url = pg.url();
    let env = [
        ("LOCUS_STORAGE__URL", url.as_str()),
        ("LOCUS_STORAGE__DURABLE_TOPICS", "[\"room:*\"]"),
    ];
    let a = Node::start("a", &nats.url(), &env).await;
    let b = Node::start("b", &nats.url(), &env).await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    (a, b)
}

/// Two publishers on two nodes writing one durable topic (Postgres) get dense, unique offsets;
/// the members on both nodes receive every publication once, in the same offset order; and a
/// member rejoining on the other node recovers exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_offsets_are_dense_and_in_one_order_on_every_node() {
    const PER_PUBLISHER: u64 = 200;
    const WINDOW: u64 = 20;
    let pg = pg::PgCluster::start();
    let nats = Nats::start();
    let (a, b) = durable_pair(&pg, &nats).await;

    let mut s1 = connect(&a).await;
    s1.join(ROOM, json!({})).await;
    let mut s2 = connect(&b).await;
    s2.join(ROOM, json!({})).await;
    let mut p1 = connect(&a).await;
    let j1 = p1.join(ROOM, json!({"broadcast": {"ack": true}})).await;
    let mut p2 = connect(&b).await;
    let j2 = p2.join(ROOM, json!({"broadcast": {"ack": true}})).await;

    let mut acked = Vec::new();
    let mut epoch = Value::Null;
    for round in 0..PER_PUBLISHER / WINDOW {
        for i in 0..WINDOW {
            let n = round * WINDOW + i;
            send(&mut p1, &j1, ROOM, n).await;
            send(&mut p2, &j2, ROOM, 10_000 + n).await;
        }
        for p in [&mut p1, &mut p2] {
            for (_, reply) in p.replies(WINDOW as usize, Duration::from_secs(10)).await {
                assert_eq!(reply.payload["status"], "ok", "{reply:?}");
                acked.push(reply.payload["response"]["offset"].as_u64().unwrap());
                epoch = reply.payload["response"]["epoch"].clone();
            }
        }
    }
    acked.sort_unstable();
    let all: Vec<u64> = (1..=2 * PER_PUBLISHER).collect();
    assert_eq!(acked, all, "dense and unique");

    let mut orders = Vec::new();
    for s in [&mut s1, &mut s2] {
        let mut seen = Vec::new();
        while seen.len() < all.len() {
            let m = s.next_event("broadcast").await;
            seen.push(m.payload["meta"]["offset"].as_u64().unwrap());
        }
        orders.push(seen);
    }
    assert_eq!(orders[0], all, "offset order on a");
    assert_eq!(orders[1], all, "offset order on b");

    let mut late = connect(&b).await;
    let reply = late
        .join_raw(
            "1",
            ROOM,
            json!({"recover": {"epoch": epoch, "offset": 350}}),
        )
        .await;
    assert_eq!(reply.payload["response"]["recovered"], true, "{reply:?}");
    let mut recovered = Vec::new();
    while recovered.len() < 50 {
        let m = late.next_event("broadcast").await;
        recovered.push(m.payload["meta"]["offset"].as_u64().unwrap());
    }
    assert_eq!(recovered, (351..=400).collect::<Vec<_>>());
}

/// A durable publication that cannot cross while NATS is away is not lost to the other node's
/// members: when NATS is back the room compares its position with the database's and reads what
/// it missed, and later publications follow in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_publication_missed_during_an_outage_is_read_from_the_database_in_order() {
    let pg = pg::PgCluster::start();
    let mut nats = Nats::start();
    let (a, b) = durable_pair(&pg, &nats).await;
    let mut x = connect(&a).await;
    let xj = x.join(ROOM, json!({"broadcast": {"ack": true}})).await;
    let mut y = connect(&b).await;
    y.join(ROOM, json!({})).await;
    send(&mut x, &xj, ROOM, 1).await;
    assert_eq!(y.next_event("broadcast").await.payload["meta"]["offset"], 1);

    let port = nats.port;
    nats.stop();
    eventually("a notices", || async {
        a.health().await["cluster"]["broker"]["status"] == "degraded"
    })
    .await;
    send(&mut x, &xj, ROOM, 2).await;
    let acked = x.replies(2, Duration::from_secs(10)).await;
    assert!(acked.values().all(|r| r.payload["status"] == "ok"));

    let _nats = Nats::start_on(port);
    for node in [&a, &b] {
        eventually("NATS is back", || async {
            node.health().await["status"] == "ok"
        })
        .await;
    }
    let missed = y.next_event("broadcast").await;
    assert_eq!(
        missed.payload["meta"]["offset"], 2,
        "read after the reconnect"
    );
    send(&mut x, &xj, ROOM, 3).await;
    assert_eq!(y.next_event("broadcast").await.payload["meta"]["offset"], 3);
    let fills = b
        .metric("locus_cluster_gap_fills_total", &["outcome=\"filled\""])
        .await;
    assert!(fills >= 1.0, "the gap was read from the database: {fills}");
}

const NEARBY: &str = "realtime:nearby";

async fn nearby(node: &Node, lat: f64, lng: f64, radius_m: f64) -> (Client, String) {
    let mut c = connect(node).await;
    let jr = c.join_nearby(lat, lng, radius_m).await;
    (c, jr)
}

/// A post on one node reaches a nearby member on another node within its radius exactly once
/// (and not one outside it); a `realtime:geo:<cell>` room on the other node receives it; the
/// nearby `presence_state` lists members of other nodes; and beacons cross nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_posts_rooms_and_beacons_cross_nodes_once() {
    let nats = Nats::start();
    let a = Node::start("a", &nats.url(), &[]).await;
    let b = Node::start("b", &nats.url(), &[]).await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    let (lat, lng) = (52.5200, 13.4050);
    let subscriptions_before = b.metric("locus_cluster_subscriptions", &[]).await;
    let (mut near, _) = nearby(&b, lat + 0.001, lng, 1_000.0).await;
    let (mut far, _) = nearby(&b, lat + 0.2, lng, 1_000.0).await;
    // Each member's cell subscribes its area's prefixes on b; wait until NATS has them.
    eventually("b listens to the area", || async {
        b.metric("locus_cluster_subscriptions", &[]).await > subscriptions_before
    })
    .await;
    let cell = locus_geo::encode(locus_geo::Point { lat, lng }, 6);
    let mut room = connect(&b).await;
    room.join(&format!("realtime:geo:{cell}"), json!({})).await;

    let (mut poster, pj) = nearby(&a, lat, lng, 1_000.0).await;
    // Who is nearby spans nodes: the poster's list holds b's member in range, not the far one.
    let state = poster.next_event("presence_state").await;
    let listed = keys(&state.payload);
    assert_eq!(listed.len(), 1, "{state:?}");
    assert!(listed[0].starts_with("anon-b-"), "{listed:?}");
    let body = json!({"id": "p1", "content": "hello", "lat": lat, "lng": lng, "radius_m": 500});
    let r = poster.push(Some(&pj), NEARBY, "post", body).await;
    assert_eq!(poster.reply_to(&r).await.payload["status"], "ok");

    let got = near.next_event("geo_message").await;
    assert_eq!(got.payload["id"], "p1");
    assert!(got.payload["distance_m"].as_f64().unwrap() < 200.0);
    near.assert_none(Duration::from_millis(500), |m| m.event == "geo_message")
        .await;
    far.assert_none(Duration::from_millis(100), |m| m.event == "geo_message")
        .await;
    assert_eq!(room.next_event("geo_message").await.payload["id"], "p1");

    // The poster's own beacon reaches `near` once b's heartbeat told a how far b's members see.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut step = 0.0;
    loop {
        step += 0.00001;
        let r = poster
            .push(
                Some(&pj),
                NEARBY,
                "location",
                json!({"lat": lat + step, "lng": lng}),
            )
            .await;
        poster.reply_to(&r).await;
        if let Received::Msg(m) = near.recv(Duration::from_millis(300)).await {
            if m.event == "location" {
                assert!(m.payload["distance_m"].as_f64().unwrap() < 1_000.0, "{m:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no beacon crossed nodes");
    }
}

/// realtime-js, unchanged, with its two clients on two nodes: broadcast with ack, binary,
/// presence with an in-place update, typing and REST all cross nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_js_clients_on_different_nodes_see_each_other() {
    let nats = Nats::start();
    let a = Node::start("a", &nats.url(), &[]).await;
    let b = Node::start("b", &nats.url(), &[]).await;
    wait_formed(&[&a, &b], &["a", "b"]).await;
    let args = vec![a.http(""), "2.0.0".to_owned(), b.http("")];
    tokio::task::spawn_blocking(move || run_node("realtime_js.cjs", &args))
        .await
        .unwrap();
}
