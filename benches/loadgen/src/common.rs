//! What every multi-peer scenario shares: the target options, ramping connections up from
//! several loopback source addresses, the progress bar, error counts and the server's RSS.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::conn::{Conn, Endpoint, ErrorKind, Event, Target};
use crate::metrics_probe;
use crate::recorder::LocalRecorder;

/// How often the progress bar redraws.
const PROGRESS_TICK_MS: u64 = 200;
/// Phoenix servers close connections silent for 60 s; held connections heartbeat this often.
const KEEPALIVE_MS: u64 = 25_000;
/// Readers hand their buffered samples to the recorder at least this often, so a step's
/// figures are complete once its drain time has passed.
const RECORDER_FLUSH_MS: u64 = 250;

#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// What the server speaks.
    #[arg(long, value_enum, default_value = "locus")]
    pub target: Target,
    /// Server URL: ws://host:port/path (Locus, bare), ws://host:port (Socket.IO), nats://host:port.
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub url: String,
    /// Phoenix protocol version (Locus only).
    #[arg(long, default_value = "2.0.0")]
    pub vsn: String,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N); each
    /// has its own ~28k ephemeral ports. 1 lets the OS choose.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2_000)]
    pub ramp_per_s: u64,
    /// Connection handshakes in flight at once while ramping up.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// The server's pid, to read its RSS from /proc (peers without a /metrics endpoint).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write an SVG of latency over time and the latency distribution here.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

impl TargetArgs {
    pub async fn endpoint(&self) -> Endpoint {
        self.endpoint_at(&self.url).await
    }

    /// The endpoint of another server of the same kind (another node of a cluster).
    pub async fn endpoint_at(&self, url: &str) -> Endpoint {
        Endpoint::resolve(self.target, url, &self.vsn)
            .await
            .unwrap_or_else(|e| {
                eprintln!("locus-loadgen: {e}");
                std::process::exit(2)
            })
    }

    /// The source address of connection `i`.
    fn source(&self, i: usize) -> Option<IpAddr> {
        (self.source_ips > 1).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % self.source_ips as usize) as u8,
            ))
        })
    }

    /// The server's resident memory: from /proc when `--server-pid` is given, else from its
    /// Prometheus endpoint (Locus).
    pub fn server_rss_bytes(&self) -> Option<f64> {
        if let Some(pid) = self.server_pid {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            return Some(kb * 1024.0);
        }
        if self.target != Target::Locus {
            return None;
        }
        metrics_probe::fetch(&self.url)
            .and_then(|b| metrics_probe::sample(&b, "locus_process_resident_memory_bytes"))
    }
}

/// Errors by kind, shared by every task of a run.
#[derive(Default)]
pub struct Errors(BTreeMap<&'static str, AtomicU64>);

impl Errors {
    pub fn new() -> Arc<Errors> {
        Arc::new(Errors(
            ErrorKind::ALL
                .iter()
                .map(|k| (k.name(), AtomicU64::new(0)))
                .collect(),
        ))
    }

    pub fn count(&self, kind: ErrorKind) {
        self.0[kind.name()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v.load(Ordering::Relaxed))))
                .collect(),
        )
    }
}

/// A bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(PROGRESS_TICK_MS));
    bar
}

/// Opens `n` connections at `--ramp-per-s`, connection `i` to `endpoint(i)` joining
/// `rooms(i)`. Failed ones are `None` and counted in `errors`.
pub async fn connect_all<'e>(
    args: &TargetArgs,
    endpoint: impl Fn(usize) -> &'e Endpoint,
    n: usize,
    rooms: impl Fn(usize) -> Vec<String>,
    errors: &Arc<Errors>,
    label: &str,
) -> Vec<Option<Conn>> {
    let bar = progress(n as u64, label);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let start = tokio::time::Instant::now();
    let per_conn = Duration::from_secs_f64(1.0 / args.ramp_per_s.max(1) as f64);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let ep = endpoint(i).clone();
        let (gate, errors, bar) = (gate.clone(), errors.clone(), bar.clone());
        let rooms = rooms(i);
        let src = args.source(i);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + per_conn * i as u32).await;
            let _permit = gate.acquire().await.expect("never closed");
            let result = async {
                let mut conn = Conn::open(&ep, src).await?;
                for room in &rooms {
                    conn.join(room).await?;
                }
                Ok::<_, ErrorKind>(conn)
            }
            .await;
            bar.inc(1);
            result.map_err(|e| errors.count(e)).ok()
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        conns.push(t.await.ok().flatten());
    }
    bar.finish_and_clear();
    conns
}

/// Reads `conn` until `stop` fires, heartbeating where the protocol needs it and recording
/// every timed delivery in `recorder`. Returns the connection, or `None` once it failed (the
/// failure counted in `errors`).
pub async fn hold(
    mut conn: Conn,
    mut stop: tokio::sync::watch::Receiver<bool>,
    errors: &Errors,
    mut recorder: Option<LocalRecorder>,
) -> Option<Conn> {
    let mut keepalive = tokio::time::interval(Duration::from_millis(KEEPALIVE_MS));
    keepalive.tick().await;
    let mut flush = tokio::time::interval(Duration::from_millis(RECORDER_FLUSH_MS));
    loop {
        tokio::select! {
            _ = stop.changed() => return Some(conn),
            _ = flush.tick() => {
                if let Some(r) = &mut recorder {
                    r.flush();
                }
            }
            _ = keepalive.tick() => {
                if let Err(e) = conn.keepalive().await {
                    errors.count(e);
                    return None;
                }
            }
            ev = conn.next_event() => match ev {
                Ok(Event::Delivery(Some(t))) => {
                    if let Some(r) = &mut recorder {
                        r.record(t);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    errors.count(e);
                    return None;
                }
            },
        }
    }
}
