//! The `geo` scenario: `--subscribers` idle members of `realtime:nearby` at random positions in
//! an area, and `--movers` members walking and sending `location` as fast as their window
//! allows. Reports beacons ingested per second (acknowledged `location` pushes) and beacons
//! delivered to subscribers, so runs with and without subscribers show what fan-out costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::report;

/// Connections opened at once while ramping up.
const CONNECT_CONCURRENCY: usize = 200;

#[derive(Args, Clone)]
pub struct GeoArgs {
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub url: String,
    /// Idle `realtime:nearby` members receiving beacons.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// Members sending `location` continuously.
    #[arg(long, default_value_t = 4)]
    pub movers: usize,
    /// `location` pushes in flight per mover.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Centre of the area (lat,lng) and its half-size in degrees.
    #[arg(long, default_value_t = 48.85)]
    pub lat: f64,
    #[arg(long, default_value_t = 2.35)]
    pub lng: f64,
    #[arg(long, default_value_t = 0.5)]
    pub spread_deg: f64,
    /// Subscription radius of every member, in metres.
    #[arg(long, default_value_t = 1_000.0)]
    pub radius_m: f64,
    /// Measuring time in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    errors: AtomicU64,
    acked: AtomicU64,
    beacons_received: AtomicU64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join_at(url: &str, args: &GeoArgs, lat: f64, lng: f64) -> Option<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .ok()?;
    let join = json!(["1", "1", "realtime:nearby", "phx_join", {"config": {"nearby": {"radius_m": args.radius_m}}}]);
    ws.send(Message::text(join.to_string())).await.ok()?;
    let loc = json!(["1", "2", "realtime:nearby", "location", {"lat": lat, "lng": lng}]);
    ws.send(Message::text(loc.to_string())).await.ok()?;
    let mut replies = 0;
    while replies < 2 {
        match ws.next().await? {
            Ok(Message::Text(t)) if t.contains("phx_reply") => {
                if !t.contains("\"ok\"") {
                    return None;
                }
                replies += 1;
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    Some(ws)
}

pub async fn run(args: GeoArgs) -> Value {
    let url = format!("{}?vsn=2.0.0", args.url);
    report::epoch();
    let c = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut subs = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let (lat, lng) = (
            args.lat + (rng.next() * 2.0 - 1.0) * args.spread_deg,
            args.lng + (rng.next() * 2.0 - 1.0) * args.spread_deg,
        );
        let (url, args2, c2, gate) = (url.clone(), args.clone(), c.clone(), gate.clone());
        subs.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore open");
            let ws = join_at(&url, &args2, lat, lng).await;
            drop(permit);
            match &ws {
                Some(_) => c2.connected.fetch_add(1, Ordering::Relaxed),
                None => c2.errors.fetch_add(1, Ordering::Relaxed),
            };
            ws
        }));
    }
    let mut ready = Vec::with_capacity(subs.len());
    for s in subs {
        if let Ok(Some(ws)) = s.await {
            ready.push(ws);
        }
    }
    eprintln!("geo: {} subscribers connected", ready.len());
    let until = tokio::time::Instant::now() + Duration::from_secs(args.duration_s);
    let readers: Vec<_> = ready
        .into_iter()
        .map(|mut ws| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut got = 0;
                while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
                    if let Message::Text(t) = m {
                        if t.contains("\"location\",") {
                            got += 1;
                        }
                    }
                }
                c.beacons_received.fetch_add(got, Ordering::Relaxed);
                let _ = ws.close(None).await;
            })
        })
        .collect();
    let started = tokio::time::Instant::now();
    let movers: Vec<_> = (0..args.movers)
        .map(|i| {
            tokio::spawn(mover(
                url.clone(),
                args.clone(),
                c.clone(),
                i as u64 + 1,
                until,
            ))
        })
        .collect();
    let mut hist = report::histogram();
    for m in movers {
        if let Ok(h) = m.await {
            hist.add(h).expect("same bounds");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for r in readers {
        let _ = r.await;
    }
    let acked = c.acked.load(Ordering::Relaxed);
    json!({
        "scenario": "geo",
        "subscribers": args.subscribers,
        "movers": args.movers,
        "window": args.window,
        "radius_m": args.radius_m,
        "spread_deg": args.spread_deg,
        "duration_s": args.duration_s,
        "connected": c.connected.load(Ordering::Relaxed),
        "errors": c.errors.load(Ordering::Relaxed),
        "beacons_ingested": acked,
        "beacons_ingested_per_s": acked as f64 / elapsed,
        "beacons_received": c.beacons_received.load(Ordering::Relaxed),
        "location_ack_latency_ms": report::latency_ms(&hist),
    })
}

async fn mover(
    url: String,
    args: GeoArgs,
    c: Arc<Counters>,
    seed: u64,
    until: tokio::time::Instant,
) -> hdrhistogram::Histogram<u64> {
    let mut hist = report::histogram();
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let (mut lat, mut lng) = (args.lat, args.lng);
    let Some(mut ws) = join_at(&url, &args, lat, lng).await else {
        c.errors.fetch_add(1, Ordering::Relaxed);
        return hist;
    };
    let mut in_flight = std::collections::HashMap::new();
    let mut next_ref = 3u64;
    loop {
        let running = tokio::time::Instant::now() < until;
        if running {
            while in_flight.len() < args.window {
                // A walk of up to ~10 m per step, kept inside the area.
                lat = (lat + (rng.next() - 0.5) * 1e-4)
                    .clamp(args.lat - args.spread_deg, args.lat + args.spread_deg);
                lng = (lng + (rng.next() - 0.5) * 1e-4)
                    .clamp(args.lng - args.spread_deg, args.lng + args.spread_deg);
                let frame = format!(
                    r#"["1","{next_ref}","realtime:nearby","location",{{"lat":{lat},"lng":{lng}}}]"#
                );
                if ws.feed(Message::text(frame)).await.is_err() {
                    return hist;
                }
                in_flight.insert(next_ref, report::now_us());
                next_ref += 1;
            }
            if ws.flush().await.is_err() {
                return hist;
            }
        } else if in_flight.is_empty() {
            break;
        }
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            break;
        };
        if !t.contains("phx_reply") {
            continue;
        }
        let r: u64 = t
            .split('"')
            .nth(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(sent) = in_flight.remove(&r) {
            c.acked.fetch_add(1, Ordering::Relaxed);
            report::record(&mut hist, report::now_us().saturating_sub(sent));
        }
    }
    let _ = ws.close(None).await;
    hist
}
