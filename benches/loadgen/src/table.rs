//! `table`: turns a directory of run summaries (`<target>-<run>.json`, written by
//! benches/compare.sh) into the comparison table (markdown, ratios Locus ÷ peer, goals) and a
//! bar chart (SVG).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use crate::plot;

/// Targets in table order; Locus first, it is what the ratios are about.
const TARGETS: [&str; 4] = ["locus", "socketio", "nats", "bare"];
/// Goals from the load-generator issue.
const GOAL_VS_SOCKETIO: f64 = 3.0;
const GOAL_VS_BARE: f64 = 0.6;
const GOAL_IDLE_BYTES_PER_CONN: f64 = 8.0 * 1024.0;
const GOAL_P99_MS: f64 = 5.0;

#[derive(Args, Clone, Debug)]
pub struct TableArgs {
    /// Directory holding `<target>-fanout.json`, `<target>-latency.json`, `<target>-idle.json`.
    #[arg(long)]
    pub results: PathBuf,
    /// Where to write the markdown table.
    #[arg(long)]
    pub markdown: PathBuf,
    /// Where to write the SVG chart.
    #[arg(long)]
    pub svg: PathBuf,
}

fn load(dir: &Path, target: &str, run: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{target}-{run}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

struct Row {
    name: &'static str,
    values: Vec<Option<f64>>,
    /// Higher is better (ratios read "Locus is N× better" either way).
    higher_better: bool,
    fmt: fn(f64) -> String,
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn two(v: f64) -> String {
    format!("{v:.2}")
}

fn rows(dir: &Path) -> Vec<Row> {
    let pick = |run: &str, f: &dyn Fn(&Value) -> Option<f64>| -> Vec<Option<f64>> {
        TARGETS
            .iter()
            .map(|t| load(dir, t, run).as_ref().and_then(f))
            .collect()
    };
    vec![
        Row {
            name: "fan-out peak, delivered msgs/s",
            values: pick("fanout", &|v| v["delivered_per_s"].as_f64()),
            higher_better: true,
            fmt: thousands,
        },
        Row {
            name: "latency p50 at half peak, ms",
            values: pick("latency", &|v| v["latency_ms"]["p50"].as_f64()),
            higher_better: false,
            fmt: two,
        },
        Row {
            name: "latency p99 at half peak, ms",
            values: pick("latency", &|v| v["latency_ms"]["p99"].as_f64()),
            higher_better: false,
            fmt: two,
        },
        Row {
            name: "idle RSS per connection, KB",
            values: pick("idle", &|v| {
                v["server_rss_per_connection_bytes"]
                    .as_f64()
                    .map(|b| b / 1024.0)
            }),
            higher_better: false,
            fmt: two,
        },
        Row {
            name: "idle connections held",
            values: pick("idle", &|v| v["held_to_the_end"].as_f64()),
            higher_better: true,
            fmt: thousands,
        },
    ]
}

pub fn run(args: TableArgs) {
    let rows = rows(&args.results);
    let mut md = String::new();
    md.push_str("| | ");
    md.push_str(&TARGETS.join(" | "));
    md.push_str(" | Locus ÷ Socket.IO | Locus ÷ NATS | Locus ÷ bare |\n|---|");
    md.push_str(&"---|".repeat(TARGETS.len() + 3));
    md.push('\n');
    for r in &rows {
        md.push_str(&format!("| {} |", r.name));
        for v in &r.values {
            md.push_str(&format!(" {} |", v.map_or("—".to_owned(), r.fmt)));
        }
        for peer in &r.values[1..] {
            let ratio = match (r.values[0], *peer) {
                (Some(l), Some(p)) if p > 0.0 && l > 0.0 => {
                    Some(if r.higher_better { l / p } else { p / l })
                }
                _ => None,
            };
            md.push_str(&format!(
                " {} |",
                ratio.map_or("—".to_owned(), |x| format!("{x:.2}×"))
            ));
        }
        md.push('\n');
    }
    md.push_str("\nRatios read \"how many times better Locus is\": throughput and connections held are Locus ÷ peer, latency and memory are peer ÷ Locus.\n\n");
    md.push_str(&goals(&rows));
    std::fs::write(&args.markdown, md).expect("markdown written");
    let groups: Vec<(String, Vec<Option<f64>>)> = rows
        .iter()
        .filter(|r| r.name != "idle connections held")
        .map(|r| (r.name.to_owned(), r.values.clone()))
        .collect();
    std::fs::write(&args.svg, plot::bars_svg(&TARGETS, &groups)).expect("svg written");
}

fn goals(rows: &[Row]) -> String {
    let v = |row: usize, t: usize| rows[row].values[t];
    let check = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    };
    let ratio = |t: usize| v(0, 0).zip(v(0, t)).map(|(l, p)| l / p);
    format!(
        "Goals: fan-out ≥ {GOAL_VS_SOCKETIO}× Socket.IO: {} ({}); ≥ {GOAL_VS_BARE}× bare: {} ({}); \
         idle ≤ {} KB per connection: {}; p99 at half peak ≤ {GOAL_P99_MS} ms: {}.\n",
        check(ratio(1).map(|r| r >= GOAL_VS_SOCKETIO)),
        ratio(1).map_or("—".into(), |r| format!("{r:.2}×")),
        check(ratio(3).map(|r| r >= GOAL_VS_BARE)),
        ratio(3).map_or("—".into(), |r| format!("{r:.2}×")),
        GOAL_IDLE_BYTES_PER_CONN / 1024.0,
        check(v(3, 0).map(|kb| kb * 1024.0 <= GOAL_IDLE_BYTES_PER_CONN)),
        check(v(2, 0).map(|ms| ms <= GOAL_P99_MS)),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(1_234_567.4), "1,234,567");
        assert_eq!(super::thousands(999.0), "999");
    }
}
