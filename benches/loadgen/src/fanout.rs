//! The `fanout` scenario: subscribers in rooms, publishers at a target rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::{metrics_probe, report};

/// Time given to in-flight messages after publishing stops.
const DRAIN_MS: u64 = 2_000;
/// Publishers send in ticks of this length.
const PUBLISH_TICK_MS: u64 = 1;

#[derive(Args, Clone)]
pub struct FanoutArgs {
    /// Server WebSocket URL, without query.
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub url: String,
    /// Protocol version to speak.
    #[arg(long, default_value = "2.0.0")]
    pub vsn: String,
    /// Subscribing connections.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Rooms the subscribers are spread over (round-robin).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishing connections (each publishes round-robin over the rooms).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Payload size in bytes (padding included).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Publishing time in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connect_errors: AtomicU64,
    join_errors: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
    socket_errors: AtomicU64,
}

fn room(i: usize) -> String {
    format!("realtime:load-{i}")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_and_join(url: &str, topics: &[String], c: &Counters) -> Option<Ws> {
    // Nagle off, as on the server: small frames must not wait for delayed ACKs.
    let mut ws = match tokio_tungstenite::connect_async_with_config(url, None, true).await {
        Ok((ws, _)) => ws,
        Err(_) => {
            c.connect_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    for (i, topic) in topics.iter().enumerate() {
        let join = json!([i.to_string(), i.to_string(), topic, "phx_join", {"config": {"broadcast": {"self": false}}}]);
        if ws.send(Message::text(join.to_string())).await.is_err() {
            c.join_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Wait for the join reply before counting the connection as ready.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("phx_reply") => {
                    if !t.contains("\"ok\"") {
                        c.join_errors.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                _ => {
                    c.join_errors.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
    }
    c.connected.fetch_add(1, Ordering::Relaxed);
    Some(ws)
}

pub async fn run(args: FanoutArgs) -> Value {
    let url = format!("{}?vsn={}", args.url, args.vsn);
    let counters = Arc::new(Counters::default());
    report::epoch();

    let mut subscribers = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let ws = connect_and_join(&url, &[room(i % args.rooms)], &counters).await;
        subscribers.push(ws);
    }
    let mut publishers = Vec::with_capacity(args.publishers);
    let all_rooms: Vec<String> = (0..args.rooms).map(room).collect();
    for _ in 0..args.publishers {
        publishers.push(connect_and_join(&url, &all_rooms, &counters).await);
    }
    let rss_before = metrics_probe::fetch(&args.url)
        .and_then(|b| metrics_probe::sample(&b, "locus_process_resident_memory_bytes"));

    let publish_for = Duration::from_secs(args.duration_s);
    let stop_at = tokio::time::Instant::now() + publish_for + Duration::from_millis(DRAIN_MS);
    let readers: Vec<_> = subscribers
        .into_iter()
        .flatten()
        .map(|ws| tokio::spawn(read_until(ws, stop_at, counters.clone())))
        .collect();
    let started = tokio::time::Instant::now();
    let writers: Vec<_> = publishers
        .into_iter()
        .flatten()
        .map(|ws| {
            tokio::spawn(publish(
                ws,
                args.clone(),
                all_rooms.clone(),
                counters.clone(),
            ))
        })
        .collect();
    for w in writers {
        let _ = w.await;
    }
    let publish_elapsed = started.elapsed().as_secs_f64();
    let rss_after = metrics_probe::fetch(&args.url)
        .and_then(|b| metrics_probe::sample(&b, "locus_process_resident_memory_bytes"));
    let mut hist = report::histogram();
    for r in readers {
        if let Ok(h) = r.await {
            hist.add(h).expect("same histogram bounds");
        }
    }
    let c = &counters;
    let delivered = c.delivered.load(Ordering::Relaxed);
    let sent = c.sent.load(Ordering::Relaxed);
    let members_per_room = args.clients as f64 / args.rooms as f64;
    json!({
        "scenario": "fanout",
        "url": args.url,
        "vsn": args.vsn,
        "clients": args.clients,
        "rooms": args.rooms,
        "publishers": args.publishers,
        "rate_per_publisher": args.rate,
        "payload_bytes": args.payload_bytes,
        "duration_s": args.duration_s,
        "connected": c.connected.load(Ordering::Relaxed),
        "errors": {
            "connect": c.connect_errors.load(Ordering::Relaxed),
            "join": c.join_errors.load(Ordering::Relaxed),
            "socket": c.socket_errors.load(Ordering::Relaxed),
        },
        "sent": sent,
        "sent_per_s": sent as f64 / publish_elapsed,
        "delivered": delivered,
        "expected": (sent as f64 * members_per_room).round(),
        "delivered_per_s": delivered as f64 / publish_elapsed,
        "latency_ms": report::latency_ms(&hist),
        "server_rss_bytes": rss_after,
        "server_rss_bytes_before_publishing": rss_before,
        "server_rss_per_connection_bytes": rss_after.map(|r| r / (c.connected.load(Ordering::Relaxed).max(1) as f64)),
    })
}

async fn read_until(
    mut ws: Ws,
    stop_at: tokio::time::Instant,
    c: Arc<Counters>,
) -> hdrhistogram::Histogram<u64> {
    let mut hist = report::histogram();
    let mut delivered = 0u64;
    loop {
        let msg = match tokio::time::timeout_at(stop_at, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                c.socket_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let bytes: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => continue,
        };
        if let Some(t) = report::extract_t(bytes) {
            report::record(&mut hist, report::now_us().saturating_sub(t));
            delivered += 1;
        }
    }
    c.delivered.fetch_add(delivered, Ordering::Relaxed);
    close_cleanly(ws).await;
    hist
}

async fn publish(ws: Ws, args: FanoutArgs, rooms: Vec<String>, c: Arc<Counters>) {
    let pad = "x".repeat(args.payload_bytes.saturating_sub(24));
    let started = tokio::time::Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(PUBLISH_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Publishing without ack, the server sends this connection nothing to read.
    let mut sink = ws;
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while sent < due {
            let join_ref = sent as usize % rooms.len();
            let topic = &rooms[join_ref];
            let frame = format!(
                r#"["{join_ref}",null,"{topic}","broadcast",{{"type":"broadcast","event":"m","payload":{{"t":{},"pad":"{pad}"}}}}]"#,
                report::now_us()
            );
            if sink.feed(Message::text(frame)).await.is_err() {
                c.socket_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            sent += 1;
        }
        if sink.flush().await.is_err() {
            c.socket_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    c.sent.fetch_add(sent, Ordering::Relaxed);
    close_cleanly(sink).await;
}

/// Sends a close frame and reads until the server closes: dropping a socket with unread data
/// makes the kernel reset it, and a reset discards whatever the server had not read yet.
async fn close_cleanly(mut ws: Ws) {
    let _ = ws.close(None).await;
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_millis(DRAIN_MS), drain).await;
}
