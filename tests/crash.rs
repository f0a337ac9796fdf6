//! Durability across a crash: a client publishes with ack under load, the server process is
//! killed with SIGKILL, restarted on the same database, and every acknowledged publication is
//! in the history, in order, once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::process::{free_port, wait_healthy, LocusProcess};
use common::{full_history, http_get, Client, Vsn};
use serde_json::json;

const TOPIC: &str = "realtime:room:crash";
/// Publications kept in flight (sent, not yet acknowledged) by the client.
const WINDOW: usize = 64;
/// Acknowledgements to collect before the kill.
const ACKS_BEFORE_KILL: usize = 3_000;

fn spawn_server(port: u16, db_url: &str) -> LocusProcess {
    LocusProcess::spawn(|c| {
        c.env("LOCUS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("LOCUS_STORAGE__URL", db_url)
            // A durable writer test: one connection publishes far past the default rate limits.
            .env("LOCUS_RATE_LIMITS__MESSAGES_PER_S", "0")
            .env("LOCUS_RATE_LIMITS__USER_MESSAGES_PER_S", "0")
            .env("RUST_LOG", "warn");
    })
}

/// Every acknowledged publication survives SIGKILL, in order and without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_publications_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/locus.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(port, &db_url);
    wait_healthy(&base).await;

    let mut c = Client::connect(
        &format!("ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"),
        Vsn::V2,
    )
    .await;
    let join_ref = c.join(TOPIC, json!({"broadcast": {"ack": true}})).await;
    let mut acked: HashMap<u64, u64> = HashMap::new(); // n -> offset
    let mut n = 0u64;
    while acked.len() < ACKS_BEFORE_KILL {
        let mut refs = HashMap::new();
        for _ in 0..WINDOW {
            n += 1;
            let r = c
                .push(
                    Some(&join_ref),
                    TOPIC,
                    "broadcast",
                    json!({"type": "broadcast", "event": "m", "payload": {"n": n}}),
                )
                .await;
            refs.insert(r, n);
        }
        for (r, reply) in c.replies(WINDOW, Duration::from_secs(10)).await {
            assert_eq!(reply.payload["status"], "ok", "{reply:?}");
            acked.insert(
                refs[&r],
                reply.payload["response"]["offset"].as_u64().unwrap(),
            );
        }
    }
    // One more window in flight at the moment of the kill: some of it may be stored, none of
    // it was acknowledged, and none of it may appear twice.
    for _ in 0..WINDOW {
        n += 1;
        c.push(
            Some(&join_ref),
            TOPIC,
            "broadcast",
            json!({"type": "broadcast", "event": "m", "payload": {"n": n}}),
        )
        .await;
    }
    server.kill();

    let mut server = spawn_server(port, &db_url);
    wait_healthy(&base).await;
    let history = full_history(&base, "room:crash").await;
    assert!(history.len() >= acked.len() && acked.len() >= ACKS_BEFORE_KILL);
    let offsets: Vec<u64> = history.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "offsets are dense and ordered"
    );
    let stored: HashMap<u64, u64> = history
        .iter()
        .map(|(o, p)| (p["n"].as_u64().unwrap(), *o))
        .collect();
    assert_eq!(
        stored.len(),
        history.len(),
        "no publication is stored twice"
    );
    for (n, offset) in &acked {
        assert_eq!(
            stored.get(n),
            Some(offset),
            "acknowledged publication {n} is in the history at its offset"
        );
    }
    let (status, _) = http_get(&format!("{base}/api/health")).await;
    assert_eq!(status, 200);
    server.kill();
}
