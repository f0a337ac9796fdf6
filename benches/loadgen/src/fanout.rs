//! The `fanout` scenario: subscribers spread over rooms, publishers at a target rate, for any
//! target (Locus, Socket.IO, NATS, bare). Several `--rate`s run as a ladder of steps on the
//! same connections, stopping at the first step that loses deliveries or queues (p99 over
//! `--max-p99-ms`); the best step that kept up is the peak.
//!
//! `--subscriber-url` spreads the subscribers over several servers (the nodes of a cluster)
//! while the publishers stay on `--url`; each step then also reports what each server's
//! subscribers received against what they should have.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::common::{self, Errors, TargetArgs};
use crate::conn::{Conn, Endpoint, Target};
use crate::recorder::Recorder;
use crate::{plot, report};

/// Time given to in-flight messages after each step's publishing stops.
const DRAIN_MS: u64 = 2_000;
/// Publishers send in ticks of this length.
const PUBLISH_TICK_MS: u64 = 1;
/// Bytes of a payload besides the padding (`{"t":…,"pad":""}`).
const PAYLOAD_OVERHEAD_BYTES: usize = 24;

#[derive(Args, Clone, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Subscribing connections.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Rooms the subscribers are spread over (round-robin).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Servers the subscribers are spread over (comma-separated or repeated; each room's
    /// members round-robin over them), e.g. the nodes of a cluster. Empty: `--url`, where the
    /// publishers always connect.
    #[arg(long, value_delimiter = ',')]
    pub subscriber_url: Vec<String>,
    /// Publishing connections (each publishes round-robin over the rooms).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second per publisher; a comma-separated list runs one step per rate.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rate: Vec<u64>,
    /// Payload size in bytes (padding included).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Publishing time per step in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// A step delivering less than this share of what it should is overloaded: the ladder
    /// stops there and the step does not count for the peak.
    #[arg(long, default_value_t = 0.99)]
    pub min_delivered_ratio: f64,
    /// A step whose p99 latency exceeds this is queueing rather than keeping up: the ladder
    /// stops there and the step does not count for the peak.
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
}

fn room(i: usize) -> String {
    format!("realtime:load-{i}")
}

/// The servers the subscribers are on, and what each one's subscribers received.
struct Servers {
    urls: Vec<String>,
    /// Connected subscribers per server, per room.
    members: Vec<Vec<u64>>,
    /// Deliveries to each server's subscribers so far.
    delivered: Vec<Arc<AtomicU64>>,
}

impl Servers {
    /// The server of subscriber `i` (in room `i % rooms`): a room's members take turns, so
    /// every room has members on every server once it has as many members as servers.
    fn of(&self, i: usize, rooms: usize) -> usize {
        (i / rooms.max(1)) % self.urls.len()
    }

    /// Connected subscribers per room, all servers together.
    fn members_per_room(&self) -> Vec<u64> {
        let rooms = self.members.first().map_or(0, Vec::len);
        (0..rooms)
            .map(|r| self.members.iter().map(|m| m[r]).sum())
            .collect()
    }

    fn delivered_now(&self) -> Vec<u64> {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect()
    }
}

pub async fn run(args: FanoutArgs) -> Value {
    let ep = args.target.endpoint().await;
    let urls = if args.subscriber_url.is_empty() {
        vec![args.target.url.clone()]
    } else {
        args.subscriber_url.clone()
    };
    let mut subscriber_eps: Vec<Endpoint> = Vec::with_capacity(urls.len());
    for url in &urls {
        subscriber_eps.push(args.target.endpoint_at(url).await);
    }
    let mut servers = Servers {
        delivered: urls.iter().map(|_| Arc::default()).collect(),
        members: vec![vec![0; args.rooms]; urls.len()],
        urls,
    };
    let errors = Errors::new();
    let recorder = Recorder::new();
    report::epoch();

    let subscribers = common::connect_all(
        &args.target,
        |i| &subscriber_eps[servers.of(i, args.rooms)],
        args.clients,
        |i| vec![room(i % args.rooms)],
        &errors,
        "subscribers",
    )
    .await;
    for (i, _) in subscribers.iter().enumerate().filter(|(_, c)| c.is_some()) {
        let s = servers.of(i, args.rooms);
        servers.members[s][i % args.rooms] += 1;
    }
    let members = servers.members_per_room();
    // Phoenix needs a join before a broadcast; the other protocols publish to any room.
    let all_rooms: Vec<String> = (0..args.rooms).map(room).collect();
    let publisher_rooms = |_| match args.target.target {
        Target::Locus => all_rooms.clone(),
        _ => Vec::new(),
    };
    let mut publishers: Vec<Conn> = common::connect_all(
        &args.target,
        |_| &ep,
        args.publishers,
        publisher_rooms,
        &errors,
        "publishers",
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    let connected = members.iter().sum::<u64>() + publishers.len() as u64;
    let rss_idle = args.target.server_rss_bytes();

    let (stop_tx, stop_rx) = watch::channel(false);
    let readers: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .map(|(i, c)| {
            let group = servers.delivered[servers.of(i, args.rooms)].clone();
            let local = recorder.local_in(i, group);
            let (errors, stop) = (errors.clone(), stop_rx.clone());
            tokio::spawn(async move {
                if let Some(conn) = common::hold(c, stop, &errors, Some(local)).await {
                    conn.close(Duration::from_millis(DRAIN_MS)).await;
                }
            })
        })
        .collect();

    let mut steps = Vec::new();
    let mut rss_peak = rss_idle;
    for &rate in &args.rate {
        let step = run_step(&args, rate, &mut publishers, &servers, &recorder, &errors).await;
        if let Some(now) = args.target.server_rss_bytes() {
            rss_peak = Some(rss_peak.map_or(now, |p: f64| p.max(now)));
        }
        let overloaded = !keeps_up(&args, &step);
        steps.push(step);
        if overloaded || publishers.is_empty() {
            break;
        }
    }
    let _ = stop_tx.send(true);
    for r in readers {
        let _ = r.await;
    }
    for p in publishers {
        p.close(Duration::from_millis(DRAIN_MS)).await;
    }

    let ok = |s: &&Value| keeps_up(&args, s);
    let by_rate = |a: &&Value, b: &&Value| {
        let d = |s: &&Value| s["delivered_per_s"].as_f64().unwrap_or(0.0);
        d(a).total_cmp(&d(b))
    };
    let peak = steps
        .iter()
        .filter(ok)
        .max_by(by_rate)
        .or_else(|| steps.iter().max_by(by_rate))
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(path) = &args.target.plot {
        write_plot(
            path,
            &format!("{} fanout", args.target.target.name()),
            &recorder,
        );
    }
    json!({
        "scenario": "fanout",
        "target": args.target.target.name(),
        "url": args.target.url,
        "clients": args.clients,
        "rooms": args.rooms,
        "subscriber_urls": servers.urls,
        "publishers": args.publishers,
        "payload_bytes": args.payload_bytes,
        "duration_s": args.duration_s,
        "connected": connected,
        "errors": errors.to_json(),
        "rate_per_publisher": peak["rate_per_publisher"],
        "sent": peak["sent"],
        "sent_per_s": peak["sent_per_s"],
        "delivered": peak["delivered"],
        "expected": peak["expected"],
        "delivered_per_s": peak["delivered_per_s"],
        "delivered_ratio": peak["delivered_ratio"],
        "latency_ms": peak["latency_ms"],
        "peak_ok": steps.iter().any(|s| ok(&s)),
        "steps": steps,
        "server_rss_bytes": rss_peak,
        "server_rss_bytes_connected_idle": rss_idle,
        "server_rss_per_connection_bytes": rss_idle.map(|r| r / connected.max(1) as f64),
    })
}

/// Whether a step delivered (almost) everything without queueing.
fn keeps_up(args: &FanoutArgs, step: &Value) -> bool {
    step["delivered_ratio"].as_f64().unwrap_or(0.0) >= args.min_delivered_ratio
        && step["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX) <= args.max_p99_ms
}

/// One publishing step at `rate` per publisher; the publishers come back for the next step.
async fn run_step(
    args: &FanoutArgs,
    rate: u64,
    publishers: &mut Vec<Conn>,
    servers: &Servers,
    recorder: &Arc<Recorder>,
    errors: &Arc<Errors>,
) -> Value {
    let delivered_before = servers.delivered_now();
    let first_second = (report::now_us() / 1_000_000) as usize;
    let started = tokio::time::Instant::now();
    let bar = common::progress(args.duration_s, &format!("{rate}/s"));
    let tasks: Vec<_> = std::mem::take(publishers)
        .into_iter()
        .map(|p| tokio::spawn(publish(p, args.clone(), rate, errors.clone())))
        .collect();
    let ticker = {
        let (bar, recorder) = (bar.clone(), recorder.clone());
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            t.tick().await;
            loop {
                t.tick().await;
                bar.inc(1);
                bar.set_message(format!(
                    "delivered {}",
                    recorder
                        .delivered
                        .load(std::sync::atomic::Ordering::Relaxed)
                ));
            }
        })
    };
    let mut sent_per_room = vec![0u64; args.rooms];
    for t in tasks {
        if let Ok((conn, sent)) = t.await {
            for (r, n) in sent_per_room.iter_mut().enumerate() {
                // Publisher messages go round-robin over the rooms, starting at room 0.
                *n += sent / args.rooms as u64 + u64::from((r as u64) < sent % args.rooms as u64);
            }
            publishers.extend(conn);
        }
    }
    let publish_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(DRAIN_MS)).await;
    ticker.abort();
    bar.finish_and_clear();
    let last_second = (report::now_us() / 1_000_000) as usize + 1;
    let hist = recorder.window(first_second, last_second);
    let sent: u64 = sent_per_room.iter().sum();
    let expected_of =
        |members: &[u64]| -> u64 { sent_per_room.iter().zip(members).map(|(s, m)| s * m).sum() };
    let expected = expected_of(&servers.members_per_room());
    let delivered = hist.len();
    // Counted from the step's start to the end of its drain, whenever received.
    let by_server: Vec<Value> = servers
        .delivered_now()
        .iter()
        .zip(&delivered_before)
        .enumerate()
        .map(|(s, (now, before))| {
            json!({
                "url": servers.urls[s],
                "subscribers": servers.members[s].iter().sum::<u64>(),
                "delivered": now - before,
                "expected": expected_of(&servers.members[s]),
            })
        })
        .collect();
    json!({
        "rate_per_publisher": rate,
        "sent": sent,
        "sent_per_s": sent as f64 / publish_s,
        "delivered": delivered,
        "expected": expected,
        "delivered_ratio": if expected == 0 { 0.0 } else { delivered as f64 / expected as f64 },
        "delivered_per_s": delivered as f64 / publish_s,
        "latency_ms": report::latency_ms(&hist),
        "by_server": by_server,
    })
}

async fn publish(
    mut conn: Conn,
    args: FanoutArgs,
    rate: u64,
    errors: Arc<Errors>,
) -> (Option<Conn>, u64) {
    let pad = "x".repeat(args.payload_bytes.saturating_sub(PAYLOAD_OVERHEAD_BYTES));
    let rooms: Vec<String> = (0..args.rooms).map(room).collect();
    let started = tokio::time::Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(PUBLISH_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tokio::time::Instant::now() < until {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            // Only protocol chatter (pings to answer) reaches a publisher.
            ev = conn.next_event() => {
                if let Err(e) = ev {
                    errors.count(e);
                    return (None, sent);
                }
                continue;
            }
        }
        // A publisher starved of CPU may wake past the step's end: it still sends no more than
        // the step's share, so that `sent` is always at most rate × duration.
        let publishing_s = started.elapsed().as_secs_f64().min(args.duration_s as f64);
        let due = (publishing_s * rate as f64) as u64;
        while sent < due {
            let payload = format!(r#"{{"t":{},"pad":"{pad}"}}"#, report::now_us());
            let room = &rooms[sent as usize % rooms.len()];
            if let Err(e) = conn.feed_publish(room, &payload).await {
                errors.count(e);
                return (None, sent);
            }
            sent += 1;
        }
        if let Err(e) = conn.flush().await {
            errors.count(e);
            return (None, sent);
        }
    }
    (Some(conn), sent)
}

pub fn write_plot(path: &std::path::Path, title: &str, recorder: &Recorder) {
    let seconds = recorder.seconds();
    let first = (0..seconds)
        .find(|&s| !recorder.window(s, s + 1).is_empty())
        .unwrap_or(0);
    let series: Vec<(f64, hdrhistogram::Histogram<u64>)> = (first..seconds)
        .map(|s| ((s - first) as f64, recorder.window(s, s + 1)))
        .collect();
    let svg = plot::latency_svg(title, &series, &recorder.total());
    if let Err(e) = std::fs::write(path, svg) {
        eprintln!("locus-loadgen: cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize, rooms: usize) -> Servers {
        Servers {
            urls: (0..n)
                .map(|i| format!("ws://127.0.0.1:{}/", 4000 + i))
                .collect(),
            members: vec![vec![0; rooms]; n],
            delivered: (0..n).map(|_| Arc::default()).collect(),
        }
    }

    /// Each room's members take turns over the servers, so every server has members of every
    /// room (subscriber `i` is in room `i % rooms`).
    #[test]
    fn every_room_is_split_evenly_over_the_servers() {
        let (rooms, clients) = (3, 60);
        let mut s = servers(2, rooms);
        for i in 0..clients {
            let server = s.of(i, rooms);
            s.members[server][i % rooms] += 1;
        }
        assert_eq!(s.members, vec![vec![10, 10, 10], vec![10, 10, 10]]);
        assert_eq!(s.members_per_room(), vec![20, 20, 20]);
    }

    /// One server (no `--subscriber-url`) holds every subscriber, as before.
    #[test]
    fn one_server_holds_every_subscriber() {
        let s = servers(1, 4);
        assert!((0..100).all(|i| s.of(i, 4) == 0));
    }
}
