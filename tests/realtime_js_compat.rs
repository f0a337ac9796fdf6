//! Compatibility with the official `@supabase/realtime-js` client, unchanged, under Node:
//! subscribe, broadcast with ack, binary broadcast, presence with an in-place update, REST
//! broadcast (`httpSend` and the `send()` fallback), on both protocol versions.
//!
//! Needs `node` and `tests/compat/node_modules` (the README's test command installs them).

mod common;

use std::path::Path;
use std::process::Command;

use common::TestServer;

fn run_client(server: &TestServer, vsn: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    assert!(
        dir.join("node_modules/@supabase/realtime-js").exists(),
        "run `npm ci --prefix tests/compat` first (scripts/test.sh does)"
    );
    let out = Command::new("node")
        .arg(dir.join("realtime_js.cjs"))
        .arg(format!("http://{}", server.addr))
        .arg(vsn)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "realtime-js failed on vsn {vsn}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// realtime-js speaking vsn 2.0.0 (its default, with binary broadcast frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_js_works_unchanged_on_vsn_2() {
    let server = TestServer::start();
    tokio::task::spawn_blocking(move || run_client(&server, "2.0.0"))
        .await
        .unwrap();
}

/// realtime-js speaking vsn 1.0.0 (JSON objects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_js_works_unchanged_on_vsn_1() {
    let server = TestServer::start();
    tokio::task::spawn_blocking(move || run_client(&server, "1.0.0"))
        .await
        .unwrap();
}
