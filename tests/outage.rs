//! A database outage under load: Postgres is stopped for several seconds while a client keeps
//! publishing with ack, then started again. Nothing acknowledged is lost, ephemeral traffic
//! keeps flowing meanwhile, health reports the store degraded and then ok, and the engine
//! recovers by itself.

mod common;

#[path = "common/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{full_history, http_get, TestServer, Vsn};
use serde_json::{json, Value};

const TOPIC: &str = "realtime:room:outage";
const WINDOW: usize = 16;
const OUTAGE: Duration = Duration::from_secs(4);

async fn storage_status(server: &TestServer) -> String {
    let (_, body) = http_get(&server.http("/api/health")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["storage"]["status"].as_str().unwrap().to_owned()
}

/// Stop Postgres for several seconds under load: no acknowledged publication is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing_acknowledged() {
    let cluster = pg::PgCluster::start();
    let url = cluster.url();
    let server = TestServer::start_with(move |c| {
        c.storage.url = url;
        c.storage.retry_delay_ms_max = 300;
    });
    let mut publisher = server.client(Vsn::V2).await;
    let pj = publisher
        .join(TOPIC, json!({"broadcast": {"ack": true}}))
        .await;
    let mut chat_a = server.client(Vsn::V1).await;
    let aj = chat_a.join("realtime:lobby", json!({})).await;
    let mut chat_b = server.client(Vsn::V1).await;
    chat_b.join("realtime:lobby", json!({})).await;

    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut refused = 0usize;
    let mut n = 0u64;
    let mut outage: Option<tokio::task::JoinHandle<bool>> = None;
    let cluster = std::sync::Arc::new(cluster);
    let health_url = server.http("/api/health");
    while outage.as_ref().is_none_or(|o| !o.is_finished()) || acked.len() < 1_500 {
        let mut refs = HashMap::new();
        for _ in 0..WINDOW {
            n += 1;
            let body = json!({"type": "broadcast", "event": "m", "payload": {"n": n}});
            refs.insert(publisher.push(Some(&pj), TOPIC, "broadcast", body).await, n);
        }
        for (r, reply) in publisher.replies(WINDOW, Duration::from_secs(40)).await {
            if reply.payload["status"] == "ok" {
                acked.insert(
                    refs[&r],
                    reply.payload["response"]["offset"].as_u64().unwrap(),
                );
            } else {
                refused += 1;
            }
        }
        if outage.is_none() && acked.len() >= 500 {
            let c = cluster.clone();
            tokio::task::block_in_place(|| c.stop_server());
            // Ephemeral traffic is served while the store is down.
            chat_a
                .push(
                    Some(&aj),
                    "realtime:lobby",
                    "broadcast",
                    json!({"type": "broadcast", "event": "hi", "payload": {}}),
                )
                .await;
            assert_eq!(chat_b.next_event("broadcast").await.payload["event"], "hi");
            // Watch health during the outage, then bring Postgres back.
            let url = health_url.clone();
            outage = Some(tokio::spawn(async move {
                let started = Instant::now();
                let mut saw_degraded = false;
                while started.elapsed() < OUTAGE {
                    let (_, body) = http_get(&url).await;
                    let v: Value = serde_json::from_str(&body).unwrap();
                    saw_degraded |= v["storage"]["status"] == "degraded";
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::task::spawn_blocking(move || c.start_server())
                    .await
                    .unwrap();
                saw_degraded
            }));
        }
    }
    let saw_degraded = outage.unwrap().await.unwrap();
    assert!(
        saw_degraded,
        "health reported the store as degraded during the outage"
    );
    let mut status = storage_status(&server).await;
    for _ in 0..50 {
        if status == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = storage_status(&server).await;
    }
    assert_eq!(status, "ok", "storage health recovers by itself");

    let history = full_history(&format!("http://{}", server.addr), "room:outage").await;
    let stored: HashMap<u64, u64> = history
        .iter()
        .map(|(o, p)| (p["n"].as_u64().unwrap(), *o))
        .collect();
    assert_eq!(
        stored.len(),
        history.len(),
        "no publication is stored twice"
    );
    let offsets: Vec<u64> = history.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (1..=history.len() as u64).collect::<Vec<_>>());
    for (n, offset) in &acked {
        assert_eq!(
            stored.get(n),
            Some(offset),
            "acknowledged publication {n} survived the outage"
        );
    }
    eprintln!(
        "acked {}, refused {refused}, stored {}",
        acked.len(),
        history.len()
    );
}
