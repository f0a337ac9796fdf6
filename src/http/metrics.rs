//! `GET /metrics`: the Prometheus text exposition, with process RSS and CPU read at scrape time.

use actix_web::{web, HttpResponse};

use crate::AppState;

pub const PROCESS_RSS: &str = "locus_process_resident_memory_bytes";
pub const PROCESS_CPU: &str = "locus_process_cpu_seconds_total";
/// The metric names this module declares (the actors crate declares the rest).
pub const ALL: &[&str] = &[PROCESS_RSS, PROCESS_CPU];

/// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, 100 on every Linux ABI Locus
/// targets (it is fixed by the kernel ABI, unlike CONFIG_HZ).
const USER_HZ: f64 = 100.0;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    record_process_metrics();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.prometheus.render())
}

fn record_process_metrics() {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!(PROCESS_RSS).set(rss as f64);
    }
    if let Some(cpu) = cpu_seconds() {
        // Exported as a gauge holding a monotonic total: the kernel owns the count.
        metrics::gauge!(PROCESS_CPU).set(cpu);
    }
}

/// `VmRSS` of this process, from /proc/self/status.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time of this process, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_readings_are_plausible() {
        assert!(super::resident_bytes().unwrap() > 1024 * 1024);
        assert!(super::cpu_seconds().unwrap() >= 0.0);
    }
}
