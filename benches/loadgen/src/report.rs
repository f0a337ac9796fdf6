//! Latency histograms and the JSON summary.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Instant;

/// Highest latency recorded, in microseconds (60 s); larger values are clamped.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// The process-wide time origin that payload timestamps are relative to.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, latency_us: u64) {
    h.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
}

/// `{p50, p95, p99, max}` in milliseconds.
pub fn latency_ms(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64) / 1000.0;
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p95": ms(h.value_at_quantile(0.95)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "samples": h.len(),
    })
}

/// Finds `"t":<digits>` in a frame without parsing the JSON: the load generator shares the
/// machine with the server, so its per-message cost must stay small.
pub fn extract_t(frame: &[u8]) -> Option<u64> {
    let key = b"\"t\":";
    let at = frame.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn extracts_timestamp_from_text_and_binary_frames() {
        assert_eq!(
            super::extract_t(br#"[null,null,"t","broadcast",{"payload":{"t":12345,"p":"x"}}]"#),
            Some(12345)
        );
        assert_eq!(
            super::extract_t(b"\x04\x01\x01\x00\x01tm{\"t\":7}"),
            Some(7)
        );
        assert_eq!(super::extract_t(b"{}"), None);
    }
}
