//! The `idle` scenario: N connections, each joined to one room, held for a duration. Reports
//! how many stayed connected and what they cost the server in resident memory.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::common::{self, Errors, TargetArgs};

/// Time allowed for the server's memory to settle after the last join.
const SETTLE_MS: u64 = 2_000;
/// Time allowed for each connection to close cleanly at the end.
const CLOSE_MS: u64 = 2_000;

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Rooms the connections are spread over (round-robin).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Holding time in seconds, after the last connection joined.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
}

pub async fn run(args: IdleArgs) -> Value {
    let ep = args.target.endpoint().await;
    let errors = Errors::new();
    let rss_before = args.target.server_rss_bytes();
    let started = tokio::time::Instant::now();
    let conns = common::connect_all(
        &args.target,
        |_| &ep,
        args.clients,
        |i| vec![format!("realtime:idle-{}", i % args.rooms.max(1))],
        &errors,
        "idle",
    )
    .await;
    let ramp_s = started.elapsed().as_secs_f64();
    let connected = conns.iter().flatten().count();
    let (stop_tx, stop_rx) = watch::channel(false);
    let holders: Vec<_> = conns
        .into_iter()
        .flatten()
        .map(|conn| {
            let (errors, stop) = (errors.clone(), stop_rx.clone());
            tokio::spawn(async move {
                match common::hold(conn, stop, &errors, None).await {
                    Some(conn) => {
                        conn.close(Duration::from_millis(CLOSE_MS)).await;
                        true
                    }
                    None => false,
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    let rss_connected = args.target.server_rss_bytes();
    let bar = common::progress(args.duration_s, "holding");
    for _ in 0..args.duration_s {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rss_end = args.target.server_rss_bytes();
    let _ = stop_tx.send(true);
    let mut held = 0;
    for h in holders {
        held += usize::from(h.await.unwrap_or(false));
    }
    let per_conn = |rss: Option<f64>| match (rss, rss_before) {
        (Some(after), Some(before)) if connected > 0 => Some((after - before) / connected as f64),
        _ => None,
    };
    json!({
        "scenario": "idle",
        "target": args.target.target.name(),
        "url": args.target.url,
        "clients": args.clients,
        "rooms": args.rooms,
        "duration_s": args.duration_s,
        "connected": connected,
        "held_to_the_end": held,
        "errors": errors.to_json(),
        "ramp_s": ramp_s,
        "connections_per_s": connected as f64 / ramp_s.max(f64::EPSILON),
        "server_rss_bytes_before": rss_before,
        "server_rss_bytes": rss_connected,
        "server_rss_bytes_end": rss_end,
        "server_rss_per_connection_bytes": per_conn(rss_connected),
    })
}
