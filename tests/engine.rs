//! The engine's publish path and shutdown, end to end: a geo post is fanned out by the engine
//! after its commit (not by the poster's session), and a publication the server accepted is
//! written before the process exits on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::process::{free_port, wait_healthy, LocusProcess};
use common::{http_get, Client, TestServer, Vsn};
use locus_storage::{AnyStore, Storage};
use serde_json::json;

const NEARBY: &str = "realtime:nearby";
/// Long enough that a post or publication certainly waits in its writer's batch while the test
/// acts (disconnects, sends SIGTERM); the writer flushes on this deadline or on stop.
const SLOW_FLUSH_MS: u64 = 1_500;

/// A post whose author disconnects before the commit is still delivered: the engine fans it
/// out after commit, whoever is still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_geo_post_whose_author_disconnects_before_the_commit_is_still_delivered() {
    let server = TestServer::start_with(|c| {
        c.storage.flush_interval_ms = SLOW_FLUSH_MS;
        c.storage.batch_rows_max = 1_000;
    });
    let at = json!({"lat": 48.8566, "lng": 2.3522});
    let mut reader = server.client(Vsn::V2).await;
    let jr = reader
        .join(NEARBY, json!({"nearby": {"radius_m": 500}}))
        .await;
    let r = reader.push(Some(&jr), NEARBY, "location", at.clone()).await;
    assert_eq!(reader.reply_to(&r).await.payload["status"], "ok");

    let mut author = server.client(Vsn::V2).await;
    let ja = author
        .join(NEARBY, json!({"nearby": {"radius_m": 500}}))
        .await;
    let post = json!({"id": "gone-1", "content": "left before the commit", "lat": 48.8567, "lng": 2.3523, "radius_m": 300});
    author.push(Some(&ja), NEARBY, "post", post).await;
    let sent_at = Instant::now();
    author.close().await;

    let m = reader.next_event("geo_message").await;
    assert_eq!(m.payload["id"], "gone-1");
    assert_eq!(m.payload["content"], "left before the commit");
    assert!(
        sent_at.elapsed() >= Duration::from_millis(SLOW_FLUSH_MS / 2),
        "the post was delivered before its batch could have committed"
    );
    server.shutdown().await;
}

/// A publication the server accepted just before SIGTERM is in the database after the
/// process exits: shutdown closes the sessions, then the storage writers write what they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_accepted_just_before_sigterm_is_in_the_database_after_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/locus.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = LocusProcess::spawn(|c| {
        c.env("LOCUS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("LOCUS_STORAGE__URL", &db_url)
            .env(
                "LOCUS_STORAGE__FLUSH_INTERVAL_MS",
                SLOW_FLUSH_MS.to_string(),
            )
            .env("RUST_LOG", "warn");
    });
    wait_healthy(&base).await;
    let mut c = Client::connect(
        &format!("ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"),
        Vsn::V2,
    )
    .await;
    let topic = "realtime:room:sigterm";
    let jr = c.join(topic, json!({"broadcast": {"ack": true}})).await;
    c.push(
        Some(&jr),
        topic,
        "broadcast",
        json!({"type": "broadcast", "event": "last", "payload": {"n": 1}}),
    )
    .await;
    // Accepted: the writer holds it (waiting for its flush deadline), not yet committed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http_get(&format!("{base}/metrics")).await.1;
        if metrics
            .lines()
            .any(|l| l.starts_with("locus_storage_queue_depth ") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the publication never reached the writer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.terminate(Duration::from_secs(10)),
        Some(true),
        "locus exits cleanly on SIGTERM"
    );

    let store = AnyStore::connect(&db_url, 1).await.unwrap();
    let h = store.history(topic, 0, 10, 1 << 20).await.unwrap();
    assert_eq!(
        h.publications.len(),
        1,
        "the accepted publication was written"
    );
    assert_eq!(h.publications[0].event, "last");
}
