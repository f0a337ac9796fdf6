//! `locus` as a separate process, for the tests that kill it with SIGKILL and restart it: a
//! free loopback port, the child (killed when dropped, so a failing test leaves no server
//! behind to hold `cargo test` open), and waiting until it answers `/api/health`.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http_request;

/// How long a started server gets to answer `/api/health`.
const HEALTHY_WAIT_MS: u64 = 10_000;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `locus` binary.
pub struct LocusProcess(Child);

impl LocusProcess {
    /// Starts `locus` after `configure` set its arguments and environment; stdout is dropped,
    /// stderr shared with the test.
    pub fn spawn(configure: impl FnOnce(&mut Command)) -> LocusProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_locus"));
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
        configure(&mut command);
        LocusProcess(command.spawn().expect("locus starts"))
    }

    /// SIGKILL: no shutdown, no last writes.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl LocusProcess {
    /// SIGTERM, then waits (at most `wait`) for the process to exit; `Some(true)` when it
    /// exited with success, `None` when it was still running (it is then killed).
    pub fn terminate(&mut self, wait: Duration) -> Option<bool> {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("wait on locus") {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }
}

impl Drop for LocusProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the server at `base` answers `/api/health` with 200.
pub async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_millis(HEALTHY_WAIT_MS);
    let url = format!("{base}/api/health");
    while !matches!(http_request("GET", &url, &[], None).await, Ok((200, ..))) {
        assert!(
            Instant::now() < deadline,
            "server at {base} never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
