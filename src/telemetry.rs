//! The process-wide Prometheus recorder, its histogram buckets, and the help text of each metric.

use std::sync::OnceLock;

use locus_actors::metrics as m;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
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

fn describe() {
    describe_gauge!(m::CONNECTIONS, "Open WebSocket connections.");
    describe_counter!(m::CONNECTIONS_OPENED, "WebSocket connections accepted.");
    describe_counter!(
        m::DISCONNECTS,
        "Server-initiated closes, by close code name."
    );
    describe_counter!(m::JOINS, "Channel joins, by result.");
    describe_gauge!(
        m::ROOMS,
        "Running room actors (one per topic with members)."
    );
    describe_counter!(m::MESSAGES_IN, "Client messages received, by event.");
    describe_counter!(m::MESSAGES_OUT, "Messages queued to clients, by event.");
    describe_counter!(m::MESSAGES_DROPPED, "Messages not delivered, by reason.");
    describe_counter!(m::PROTOCOL_ERRORS, "Client pushes refused, by error code.");
    describe_gauge!(
        m::OUTBOUND_QUEUE_BYTES,
        Unit::Bytes,
        "Bytes queued in all outboxes."
    );
    describe_histogram!(
        m::FANOUT_LATENCY,
        Unit::Seconds,
        "From publication accepted to queued for every member."
    );
    describe_histogram!(
        m::FANOUT_RECIPIENTS,
        "Members one publication was queued for."
    );
    describe_counter!(
        m::RATE_LIMITED,
        "Frames and requests refused by a rate limit, by limit."
    );
    describe_counter!(
        m::AUTH_FAILURES,
        "Refused tokens, actions, connections and sign-ins, by code."
    );
    describe_histogram!(
        m::STORAGE_COMMIT_LATENCY,
        Unit::Seconds,
        "Write and commit time of one storage batch."
    );
    describe_counter!(
        m::STORAGE_RETRIES,
        "Storage batch retries after transient failures."
    );
    describe_counter!(m::STORAGE_FAILURES, "Failed storage batches, by reason.");
    describe_gauge!(
        m::STORAGE_QUEUE_DEPTH,
        "Durable publications accepted and not yet committed."
    );
    describe_counter!(m::RECOVERIES, "Join recoveries and replays, by result.");
    describe_counter!(
        m::STORAGE_REFUSED,
        "Durable publications refused at a writer's admission, by reason."
    );
    describe_gauge!(
        m::HISTORY_WINDOW_BYTES,
        Unit::Bytes,
        "Payload bytes held by the in-memory history window."
    );
    describe_counter!(
        m::HISTORY_WINDOW_EVICTIONS,
        "Publications evicted from the history window, by reason."
    );
    describe_gauge!(m::CELLS, "Running geohash cell actors.");
    describe_counter!(m::BEACONS, "Location beacons fanned out.");
    describe_histogram!(
        m::GEO_FANOUT_LATENCY,
        Unit::Seconds,
        "From a geo post or beacon accepted to queued for every nearby member."
    );
    describe_counter!(
        m::GEO_FANOUT_CAPPED,
        "Geo fan-out steps cut short by a cap, by cap."
    );
    describe_counter!(m::JOBS_CREATED, "AI jobs created, by kind.");
    describe_counter!(m::JOBS_FINISHED, "AI jobs that reached a final status.");
    describe_gauge!(m::JOBS_LIVE, "Job actors running on this instance.");
    describe_counter!(
        m::JOB_ATTEMPTS,
        "Provider attempts of jobs, by provider and outcome."
    );
    describe_counter!(m::JOB_WRITE_FAILURES, "Job state writes that failed.");
    describe_counter!(
        m::PROVIDER_CALLS,
        "HTTP calls to providers, by provider, operation and outcome."
    );
    describe_gauge!(
        m::BREAKER_STATE,
        "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        m::BREAKER_TRANSITIONS,
        "Circuit breaker changes, by provider and new state."
    );
    describe_counter!(
        m::WEBHOOKS,
        "Provider webhooks, by configured provider (or unknown) and outcome."
    );
    describe_gauge!(
        crate::http::metrics::PROCESS_RSS,
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_gauge!(
        crate::http::metrics::PROCESS_CPU,
        Unit::Seconds,
        "User plus system CPU time of the process."
    );
}
