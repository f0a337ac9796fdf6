//! A job survives its server: the process is killed with SIGKILL while the provider is
//! processing, a new process on the same database picks the job up when its lease passes,
//! follows the same prediction (no second create) and finishes it, announcing the result on
//! the owner's topic.

mod common;

use std::time::Duration;

use common::fake_provider::{FakeProvider, TOKEN};
use common::jobs_kit::*;
use common::process::{free_port, wait_healthy, LocusProcess};
use common::{Client, Vsn};
use serde_json::json;

fn write_config(dir: &std::path::Path, port: u16, provider: &FakeProvider) -> std::path::PathBuf {
    let path = dir.join("locus.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
log = "warn"

[storage]
url = "sqlite://{db}/locus.db"

[auth]
jwt_secret = "{SECRET}"

[jobs]
# Short leases: a restarted server sees the dead one's jobs as stalled within a second.
lease_ms = 1000
poll_interval_ms = 100
retry_delay_ms_min = 10
retry_delay_ms_max = 50

[jobs.routes]
image = ["fake"]

[jobs.providers.fake]
base_url = "{base}"
token = "{TOKEN}"
token_env = ""
models = {{ image = "fake/image-model" }}
cost_estimate = {{ image = 2.0 }}
"#,
        db = dir.display(),
        base = provider.base_url(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn locus_with(config: &std::path::Path) -> LocusProcess {
    LocusProcess::spawn(|c| {
        c.arg("--config").arg(config);
    })
}

/// The server dies mid-job; after a restart the job finishes on the same prediction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_run_finishes_after_a_restart() {
    let fake = FakeProvider::start("fake", Duration::from_secs(6), WEBHOOK_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &fake);
    let base = format!("http://127.0.0.1:{port}");

    let mut first = locus_with(&config);
    wait_healthy(&base).await;
    let (status, _, job) = create_job(&base, "alice", "survivor", &image_job("persist")).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_job(&base, "alice", &id, Duration::from_secs(10), |j| {
        j["status"] == "processing"
    })
    .await;
    first.kill();

    let _second = locus_with(&config);
    wait_healthy(&base).await;
    let url = format!(
        "ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0&apikey={}",
        token("alice")
    );
    let mut alice = Client::connect(&url, Vsn::V2).await;
    alice.join("realtime:user:alice", json!({})).await;

    let done = wait_for_job(&base, "alice", &id, Duration::from_secs(20), |j| {
        matches!(
            j["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        )
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["output"][0]
        .as_str()
        .unwrap()
        .starts_with("https://fake.example/"));
    assert_eq!(
        fake.creates().len(),
        1,
        "the same prediction was followed, not a new one"
    );
    let outcomes: Vec<&str> = done["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["accepted", "recovered"], "{done}");
    let last = job_events_until_final(&mut alice, &id)
        .await
        .pop()
        .unwrap()
        .1;
    assert_eq!(last["status"], "succeeded");
}
