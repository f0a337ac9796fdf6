//! The `durable` scenario: connections publishing acknowledged broadcasts on durable topics,
//! each keeping `--window` publications in flight; reports acknowledgements per second and
//! the publish → ack latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::report;

#[derive(Args, Clone)]
pub struct DurableArgs {
    /// Server WebSocket URL, without query.
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub url: String,
    /// Publishing connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Durable topics (`realtime:<prefix><i>`), spread over the publishers.
    #[arg(long, default_value_t = 4)]
    pub topics: usize,
    /// Topic name prefix; must match the server's `storage.durable_topics`.
    #[arg(long, default_value = "room:bench-")]
    pub topic_prefix: String,
    /// Publications in flight per connection.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Publishing time in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    refused: AtomicU64,
    socket_errors: AtomicU64,
}

pub async fn run(args: DurableArgs) -> Value {
    let url = format!("{}?vsn=2.0.0", args.url);
    report::epoch();
    let counters = Arc::new(Counters::default());
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..args.publishers)
        .map(|i| {
            let topic = format!("realtime:{}{}", args.topic_prefix, i % args.topics.max(1));
            tokio::spawn(publisher(
                url.clone(),
                topic,
                args.clone(),
                counters.clone(),
            ))
        })
        .collect();
    let mut hist = report::histogram();
    for t in tasks {
        if let Ok(h) = t.await {
            hist.add(h).expect("same bounds");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acked = counters.acked.load(Ordering::Relaxed);
    json!({
        "scenario": "durable",
        "url": args.url,
        "publishers": args.publishers,
        "topics": args.topics,
        "window": args.window,
        "payload_bytes": args.payload_bytes,
        "duration_s": args.duration_s,
        "acked": acked,
        "acked_per_s": acked as f64 / elapsed,
        "errors": {
            "refused": counters.refused.load(Ordering::Relaxed),
            "socket": counters.socket_errors.load(Ordering::Relaxed),
        },
        "ack_latency_ms": report::latency_ms(&hist),
    })
}

async fn publisher(
    url: String,
    topic: String,
    args: DurableArgs,
    c: Arc<Counters>,
) -> hdrhistogram::Histogram<u64> {
    let mut hist = report::histogram();
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async_with_config(&url, None, true).await
    else {
        c.socket_errors.fetch_add(1, Ordering::Relaxed);
        return hist;
    };
    let join = json!(["1", "1", topic, "phx_join", {"config": {"broadcast": {"ack": true, "self": false}}}]);
    if ws.send(Message::text(join.to_string())).await.is_err() {
        c.socket_errors.fetch_add(1, Ordering::Relaxed);
        return hist;
    }
    let pad = "x".repeat(args.payload_bytes.saturating_sub(16));
    let until = tokio::time::Instant::now() + Duration::from_secs(args.duration_s);
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut next_ref = 2u64;
    let mut joined = false;
    loop {
        let publishing = tokio::time::Instant::now() < until;
        if joined && publishing {
            while in_flight.len() < args.window {
                let r = next_ref;
                next_ref += 1;
                let frame = format!(
                    r#"["1","{r}","{topic}","broadcast",{{"type":"broadcast","event":"m","payload":{{"p":"{pad}"}}}}]"#
                );
                if ws.feed(Message::text(frame)).await.is_err() {
                    c.socket_errors.fetch_add(1, Ordering::Relaxed);
                    return hist;
                }
                in_flight.insert(r, report::now_us());
            }
            if ws.flush().await.is_err() {
                c.socket_errors.fetch_add(1, Ordering::Relaxed);
                return hist;
            }
        }
        if !publishing && in_flight.is_empty() {
            break;
        }
        let msg = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            _ => {
                c.socket_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        // Replies are `["1","<ref>","<topic>","phx_reply",{"status":…}]`: read the ref and status
        // without a full parse, which would cost the server's shared cores more than the reply.
        let Some((r, ok)) = reply_ref_status(&msg) else {
            continue;
        };
        if r == 1 {
            joined = true;
            continue;
        }
        if let Some(sent) = in_flight.remove(&r) {
            if ok {
                c.acked.fetch_add(1, Ordering::Relaxed);
                report::record(&mut hist, report::now_us().saturating_sub(sent));
            } else {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = ws.close(None).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {}
    hist
}

/// `(ref, status == "ok")` of a vsn 2.0.0 `phx_reply` frame.
fn reply_ref_status(frame: &str) -> Option<(u64, bool)> {
    if !frame.contains("\"phx_reply\"") {
        return None;
    }
    let mut parts = frame.splitn(3, '"');
    parts.next()?;
    let _join_ref = parts.next()?;
    let rest = parts.next()?;
    let r: u64 = rest.split('"').nth(1)?.parse().ok()?;
    Some((r, frame.contains("\"status\":\"ok\"")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_ref_and_status_of_replies() {
        let ok =
            r#"["1","42","realtime:room:x","phx_reply",{"status":"ok","response":{"offset":3}}]"#;
        assert_eq!(super::reply_ref_status(ok), Some((42, true)));
        let err = r#"["1","7","realtime:room:x","phx_reply",{"status":"error","response":{}}]"#;
        assert_eq!(super::reply_ref_status(err), Some((7, false)));
        assert_eq!(
            super::reply_ref_status(r#"[null,null,"t","broadcast",{}]"#),
            None
        );
    }
}
