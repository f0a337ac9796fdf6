//! A cluster for one test: a real `nats-server` on a free loopback port (installed by the test
//! command) and `locus` nodes joined to it, with short heartbeats so node death is quick to see.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::http_get;
use super::process::{free_port, wait_healthy, LocusProcess};

/// Heartbeat period of test nodes, in milliseconds.
pub const HEARTBEAT_MS: u64 = 200;
/// A test node silent this long is dead, in milliseconds.
pub const NODE_DOWN_MS: u64 = 1_500;
/// How long a cluster condition may take to hold.
const SETTLE_MS: u64 = 15_000;

/// A `nats-server` bound to 127.0.0.1, killed when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_on(free_port())
    }

    /// Starts on `port` (again, after [`Nats::stop`]).
    pub fn start_on(port: u16) -> Nats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (the test command installs it)");
        let deadline = Instant::now() + Duration::from_millis(SETTLE_MS);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `locus` node of the cluster.
pub struct Node {
    pub process: LocusProcess,
    pub id: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts node `id` on NATS `nats_url`, SQLite without durable topics unless `env` says
    /// otherwise (later entries win), and waits until it answers health.
    pub async fn start(id: &str, nats_url: &str, env: &[(&str, &str)]) -> Node {
        Node::start_on(id, nats_url, free_port(), env).await
    }

    pub async fn start_on(id: &str, nats_url: &str, port: u16, env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/locus.db", dir.path().display());
        let process = LocusProcess::spawn(|c| {
            c.env("LOCUS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .env("LOCUS_STORAGE__URL", db)
                .env("LOCUS_STORAGE__DURABLE_TOPICS", "[]")
                .env("LOCUS_CLUSTER__NATS_URL", nats_url)
                .env("LOCUS_CLUSTER__NODE_ID", id)
                .env("LOCUS_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
                .env("LOCUS_CLUSTER__NODE_DOWN_MS", NODE_DOWN_MS.to_string())
                .env("LOCUS_RATE_LIMITS__MESSAGES_PER_S", "0")
                .env("LOCUS_RATE_LIMITS__USER_MESSAGES_PER_S", "0")
                .env("RUST_LOG", "warn");
            for (k, v) in env {
                c.env(k, v);
            }
        });
        let node = Node {
            process,
            id: id.to_owned(),
            port,
            _dir: dir,
        };
        wait_healthy(&node.http("")).await;
        node
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0", self.port)
    }

    pub async fn health(&self) -> Value {
        let (_, body) = http_get(&self.http("/api/health")).await;
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// The ids of the nodes this node sees alive (itself included).
    pub async fn sees(&self) -> Vec<String> {
        let h = self.health().await;
        let mut ids: Vec<String> = (h["cluster"]["nodes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// A counter's value from `/metrics` for the series whose labels contain every `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (_, text) = http_get(&self.http("/metrics")).await;
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Waits until `cond` holds (checked every 50 ms), failing with `what` after a while.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_millis(SETTLE_MS);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node sees exactly `ids`.
pub async fn wait_formed(nodes: &[&Node], ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    for n in nodes {
        let want = want.clone();
        eventually(&format!("{} sees {want:?}", n.id), || async {
            n.sees().await == want
        })
        .await;
    }
}
