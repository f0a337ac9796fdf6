//! The process-wide Prometheus recorder, its histogram buckets, and the help text of each metric.

use std::sync::OnceLock;

use locus_actors::metrics as m;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
/// Publications per storage batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// Recipients per fan-out.
const RECIPIENT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
];

/// Installs the recorder once per process and returns its handle. Must run before any actor
/// starts, since actors cache metric handles.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(m::FANOUT_RECIPIENTS.into()),
                        RECIPIENT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(m::STORAGE_BATCH_ROWS.into()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(m::CELL_MEMBERS.into()),
                        RECIPIENT_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process");
            describe();
            handle
        })
        .clone()
}

/// What a metric is: the type Prometheus shows and the docs' metrics table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The name Prometheus and docs/OPERATIONS.md use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric's HELP line, with its type and unit.
pub struct Help {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub text: &'static str,
}

impl Help {
    const fn counter(name: &'static str, text: &'static str) -> Help {
        Help {
            name,
            kind: Kind::Counter,
            unit: None,
            text,
        }
    }

    const fn gauge(name: &'static str, text: &'static str) -> Help {
        Help {
            kind: Kind::Gauge,
            ..Help::counter(name, text)
        }
    }

    const fn histogram(name: &'static str, text: &'static str) -> Help {
        Help {
            kind: Kind::Histogram,
            ..Help::counter(name, text)
        }
    }

    const fn in_unit(self, unit: Unit) -> Help {
        Help {
            unit: Some(unit),
            ..self
        }
    }
}

/// The HELP text of every metric Locus declares (a test keeps it complete).
pub const HELP: &[Help] = &[
    Help::gauge(m::CONNECTIONS, "Open WebSocket connections."),
    Help::counter(m::CONNECTIONS_OPENED, "WebSocket connections accepted."),
    Help::counter(
        m::DISCONNECTS,
        "Server-initiated closes, by close code name.",
    ),
    Help::counter(m::JOINS, "Channel joins, by result."),
    Help::gauge(
        m::ROOMS,
        "Running room actors (one per topic with members).",
    ),
    Help::counter(m::MESSAGES_IN, "Client messages received, by event."),
    Help::counter(m::MESSAGES_OUT, "Messages queued to clients, by event."),
    Help::counter(m::MESSAGES_DROPPED, "Messages not delivered, by reason."),
    Help::counter(m::PROTOCOL_ERRORS, "Client pushes refused, by error code."),
    Help::gauge(m::OUTBOUND_QUEUE_BYTES, "Bytes queued in all outboxes.").in_unit(Unit::Bytes),
    Help::histogram(
        m::FANOUT_LATENCY,
        "From publication accepted to queued for every member.",
    )
    .in_unit(Unit::Seconds),
    Help::histogram(
        m::FANOUT_RECIPIENTS,
        "Members one publication was queued for.",
    ),
    Help::counter(
        m::RATE_LIMITED,
        "Frames and requests refused by a rate limit, by limit.",
    ),
    Help::counter(
        m::AUTH_FAILURES,
        "Refused tokens, actions, connections and sign-ins, by code.",
    ),
    Help::histogram(m::STORAGE_BATCH_ROWS, "Publications per storage batch."),
    Help::histogram(
        m::STORAGE_COMMIT_LATENCY,
        "Write and commit time of one storage batch.",
    )
    .in_unit(Unit::Seconds),
    Help::counter(
        m::STORAGE_RETRIES,
        "Storage batch retries after transient failures.",
    ),
    Help::counter(m::STORAGE_FAILURES, "Failed storage batches, by reason."),
    Help::gauge(
        m::STORAGE_QUEUE_DEPTH,
        "Durable publications accepted and not yet committed.",
    ),
    Help::counter(
        m::STORAGE_REFUSED,
        "Durable publications refused at a writer's admission, by reason.",
    ),
    Help::counter(m::RECOVERIES, "Join recoveries and replays, by result."),
    Help::gauge(
        m::HISTORY_WINDOW_BYTES,
        "Payload bytes held by the in-memory history window.",
    )
    .in_unit(Unit::Bytes),
    Help::counter(
        m::HISTORY_WINDOW_EVICTIONS,
        "Publications evicted from the history window, by reason.",
    ),
    Help::gauge(m::CELLS, "Running geohash cell actors."),
    Help::histogram(m::CELL_MEMBERS, "Members of a cell when one enters."),
    Help::counter(
        m::BEACONS,
        "Location beacons, by stage: received, coalesced, sent.",
    ),
    Help::histogram(
        m::GEO_FANOUT_LATENCY,
        "From a geo post or beacon accepted to queued for every nearby member.",
    )
    .in_unit(Unit::Seconds),
    Help::counter(
        m::GEO_FANOUT_CAPPED,
        "Geo fan-out steps cut short by a cap, by cap.",
    ),
    Help::counter(m::JOBS_CREATED, "AI jobs created, by kind."),
    Help::counter(m::JOBS_FINISHED, "AI jobs that reached a final status."),
    Help::gauge(m::JOBS_LIVE, "Job actors running on this instance."),
    Help::counter(
        m::JOB_ATTEMPTS,
        "Provider attempts of jobs, by provider and outcome.",
    ),
    Help::counter(m::JOB_WRITE_FAILURES, "Job state writes that failed."),
    Help::counter(
        m::PROVIDER_CALLS,
        "HTTP calls to providers, by provider, operation and outcome.",
    ),
    Help::gauge(
        m::BREAKER_STATE,
        "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
    ),
    Help::counter(
        m::BREAKER_TRANSITIONS,
        "Circuit breaker changes, by provider and new state.",
    ),
    Help::counter(
        m::WEBHOOKS,
        "Provider webhooks, by configured provider (or unknown) and outcome.",
    ),
    Help::counter(
        m::CLUSTER_MESSAGES,
        "Messages sent to or received from NATS, by direction and kind.",
    ),
    Help::gauge(
        m::CLUSTER_NODES,
        "Live cluster nodes seen, this one included.",
    ),
    Help::gauge(
        m::CLUSTER_SUBSCRIPTIONS,
        "NATS subscriptions held (rooms and geo areas with local members).",
    ),
    Help::counter(
        m::CLUSTER_GAP_FILLS,
        "Offset gaps of durable rooms read from the database, by outcome.",
    ),
    Help::gauge(
        crate::http::metrics::PROCESS_RSS,
        "Resident set size of the process.",
    )
    .in_unit(Unit::Bytes),
    Help::gauge(
        crate::http::metrics::PROCESS_CPU,
        "User plus system CPU time of the process.",
    )
    .in_unit(Unit::Seconds),
];

/// Every metric name Locus declares: the actors crate's and the server's.
pub fn declared() -> impl Iterator<Item = &'static str> {
    m::ALL.iter().chain(crate::http::metrics::ALL).copied()
}

/// Hands every HELP line to the installed recorder.
fn describe() {
    metrics::with_recorder(|recorder| {
        for h in HELP {
            let (name, text) = (h.name.into(), h.text.into());
            match h.kind {
                Kind::Counter => recorder.describe_counter(name, h.unit, text),
                Kind::Gauge => recorder.describe_gauge(name, h.unit, text),
                Kind::Histogram => recorder.describe_histogram(name, h.unit, text),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// docs/OPERATIONS.md's metrics table: series name → (type, the whole row).
    fn documented() -> BTreeMap<String, (String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md");
        let doc = std::fs::read_to_string(path).expect("docs/OPERATIONS.md is readable");
        let mut rows = BTreeMap::new();
        for line in doc.lines().filter(|l| l.starts_with("| `locus_")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let series = cells[1].trim_matches('`');
            let name = series.split('{').next().unwrap_or(series).to_owned();
            let kind = cells.get(2).copied().unwrap_or_default().to_owned();
            let again = rows.insert(name.clone(), (kind, line.to_owned()));
            assert!(again.is_none(), "{name} has two rows in docs/OPERATIONS.md");
        }
        rows
    }

    /// Every metric Locus declares has one HELP line, and no HELP line names anything else.
    #[test]
    fn every_declared_metric_has_help_text() {
        let declared: BTreeSet<&str> = declared().collect();
        let described: BTreeSet<&str> = HELP.iter().map(|h| h.name).collect();
        assert_eq!(described.len(), HELP.len(), "a metric has two HELP lines");
        assert_eq!(
            declared, described,
            "declared metrics and HELP lines differ"
        );
        for h in HELP {
            assert!(
                h.text.ends_with('.') && h.text.len() > 10,
                "{}: {:?}",
                h.name,
                h.text
            );
        }
    }

    /// docs/OPERATIONS.md's metrics table lists exactly the declared metrics, each with the
    /// type its HELP line registers.
    #[test]
    fn the_metrics_table_lists_every_declared_metric_with_its_type() {
        let rows = documented();
        let declared: BTreeSet<&str> = declared().collect();
        let listed: BTreeSet<&str> = rows.keys().map(String::as_str).collect();
        let missing: Vec<_> = declared.difference(&listed).collect();
        let unknown: Vec<_> = listed.difference(&declared).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "docs/OPERATIONS.md misses {missing:?} and lists undeclared {unknown:?}"
        );
        for h in HELP {
            assert_eq!(
                rows[h.name].0,
                h.kind.name(),
                "type of {} in the docs",
                h.name
            );
        }
    }

    /// Every reason the code can count as a dropped message, a history-window eviction or a
    /// capped geo fan-out is named in its metric's row of the docs.
    #[test]
    fn the_metrics_table_names_every_reason_label() {
        let rows = documented();
        let labels: [(&str, Vec<&str>); 3] = [
            (
                m::MESSAGES_DROPPED,
                m::DropReason::ALL.iter().map(|r| r.label()).collect(),
            ),
            (
                m::HISTORY_WINDOW_EVICTIONS,
                m::WindowEviction::ALL.iter().map(|r| r.label()).collect(),
            ),
            (
                m::GEO_FANOUT_CAPPED,
                m::GeoCap::ALL.iter().map(|r| r.label()).collect(),
            ),
        ];
        for (metric, labels) in labels {
            let row = &rows[metric].1;
            for label in labels {
                assert!(
                    row.contains(&format!("`{label}`")),
                    "docs/OPERATIONS.md: the {metric} row does not name `{label}`"
                );
            }
        }
    }
}
