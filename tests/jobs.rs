//! AI jobs end to end: real Locus, real WebSocket clients, and scripted Replicate-style
//! providers on loopback (`common/fake_provider.rs`) that Locus reaches over HTTP.
//!
//! Over 400 lines: one file per feature, each test one job's life against a scripted provider; the
//! kits live in tests/common.

mod common;

use std::time::{Duration, Instant};

use common::fake_provider::{sign, FakeProvider, Reply};
use common::jobs_kit::*;
use common::process::free_port;
use common::{Client, TestServer, Vsn};
use serde_json::{json, Value};

const FINAL_WAIT: Duration = Duration::from_secs(15);

/// A server whose image jobs go to `providers` in order; `adjust` tweaks the config after.
fn jobs_server(
    providers: &[(&str, &FakeProvider)],
    adjust: impl FnOnce(&mut locus::Config) + Send + 'static,
) -> TestServer {
    let jobs = jobs_config(providers);
    TestServer::start_with(move |c| {
        c.auth.jwt_secret = SECRET.into();
        c.jobs = jobs;
        adjust(c);
    })
}

/// A client of `user` joined to their personal topic, where job events arrive.
async fn owner_client(server: &TestServer, user: &str) -> Client {
    let url = format!("{}&apikey={}", server.ws_url("2.0.0"), token(user));
    let mut c = Client::connect(&url, Vsn::V2).await;
    c.join(&format!("realtime:user:{user}"), json!({})).await;
    c
}

fn rank(status: &str) -> u8 {
    match status {
        "queued" => 0,
        "starting" => 1,
        "processing" => 2,
        _ => 3,
    }
}

async fn breaker_of(server: &TestServer, provider: &str) -> String {
    let (_, _, health) = call("GET", &server.http("/api/health"), None, &[], None).await;
    health["jobs"]["providers"][provider]["breaker"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn attempts(job: &Value) -> Vec<(String, String)> {
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A job goes queued → starting → processing → succeeded; every change reaches the owner's
/// topic, progress rises and is sent at most every 500 ms, and the stored job has the output,
/// the attempt and the cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_succeeds_with_throttled_progress_events_for_its_owner() {
    let fake = FakeProvider::start("a", Duration::from_millis(3_000), WEBHOOK_SECRET);
    let server = jobs_server(&[("a", &fake)], |_| {});
    let base = server.http("");
    let mut alice = owner_client(&server, "alice").await;

    let (status, _, job) = create_job(&base, "alice", "k1", &image_job("a fox")).await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["cost"]["estimate"], 2.0);
    let id = job["id"].as_str().unwrap().to_owned();

    let events = job_events_until_final(&mut alice, &id).await;
    let statuses: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{statuses:?}");
    assert!(statuses.contains(&"processing"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"succeeded"));
    assert!(
        statuses.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "statuses never go back: {statuses:?}"
    );
    let progress: Vec<f64> = events
        .iter()
        .map(|(_, e)| e["progress"].as_f64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let partial = progress.iter().filter(|p| **p > 0.0 && **p < 1.0).count();
    assert!(partial >= 2, "progress arrives along the way: {progress:?}");
    // Progress-only events (same status as the one before) are emitted at least 500 ms apart.
    // Measured on the server's clock (`updated_at` is set when the event is emitted): arrival
    // times also carry each commit's latency, which varies under load.
    let emitted_ms = |e: &Value| {
        locus_storage::time::parse_rfc3339_ms(e["updated_at"].as_str().unwrap()).unwrap()
    };
    for w in events.windows(2) {
        let ((_, e0), (_, e1)) = (&w[0], &w[1]);
        if e0["status"] == e1["status"] {
            let gap_ms = emitted_ms(e1) - emitted_ms(e0);
            assert!(
                gap_ms >= 500 - 1,
                "progress events emitted {gap_ms} ms apart"
            );
        }
    }
    let last = &events.last().unwrap().1;
    assert_eq!(last["progress"], 1.0);
    let output = last["output"][0].as_str().unwrap();
    assert!(output.starts_with("https://fake.example/a-pred-"), "{last}");

    let (status, stored) = get_job(&base, "alice", &id).await;
    assert_eq!(status, 200);
    assert_eq!(stored["status"], "succeeded");
    assert_eq!(stored["output"][0], output);
    assert_eq!(stored["provider"], "a");
    assert_eq!(
        stored["cost"]["actual"], 4.5,
        "1.5 tokens per predict second × 3 s"
    );
    assert_eq!(attempts(&stored), vec![("a".into(), "accepted".into())]);

    let (status, _, list) = call(
        "GET",
        &format!("{base}/api/jobs?status=succeeded&limit=5"),
        Some(&token("alice")),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["results"][0]["id"], id.as_str());
    assert_eq!(get_job(&base, "bob", &id).await.0, 404, "owner only");
    assert!(
        server
            .metric("locus_jobs_finished_total{status=\"succeeded\"}")
            .await
            >= 1.0
    );
}

/// 5xx answers are retried with backoff; the third try is accepted and the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_then_the_job_succeeds() {
    let fake = FakeProvider::start("a", Duration::from_millis(300), WEBHOOK_SECRET);
    fake.script(&[Reply::Fail(503), Reply::Fail(502)]);
    let server = jobs_server(&[("a", &fake)], |_| {});
    let base = server.http("");
    let (_, _, job) = create_job(&base, "alice", "k", &image_job("retry")).await;
    let id = job["id"].as_str().unwrap();
    let done = wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    assert_eq!(fake.creates().len(), 3);
    assert_eq!(done["attempts"][0]["outcome"], "accepted");
    assert_eq!(done["attempts"][0]["tries"], 3);
}

/// A 429 is retried no sooner than its Retry-After says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after() {
    let fake = FakeProvider::start("a", Duration::from_millis(300), WEBHOOK_SECRET);
    fake.script(&[Reply::RateLimited(1)]);
    let server = jobs_server(&[("a", &fake)], |_| {});
    let base = server.http("");
    let (_, _, job) = create_job(&base, "alice", "k", &image_job("busy")).await;
    let id = job["id"].as_str().unwrap();
    wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    let creates = fake.creates();
    assert_eq!(creates.len(), 2);
    let gap = creates[1].at.duration_since(creates[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, asked 1 s"
    );
    let rate_limited =
        "locus_provider_calls_total{provider=\"a\",op=\"create\",outcome=\"rate_limited\"}";
    assert_eq!(server.metric(rate_limited).await, 1.0);
}

/// A refusal (4xx: validation, content policy) fails the job at once with the provider's
/// reason; nothing is retried and no other provider is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_fails_at_once_with_the_providers_reason() {
    let a = FakeProvider::start("a", Duration::from_millis(300), WEBHOOK_SECRET);
    let b = FakeProvider::start("b", Duration::from_millis(300), WEBHOOK_SECRET);
    a.script(&[Reply::Refuse(422, "NSFW content detected")]);
    let server = jobs_server(&[("a", &a), ("b", &b)], |_| {});
    let base = server.http("");
    let mut alice = owner_client(&server, "alice").await;
    let (_, _, job) = create_job(&base, "alice", "k", &image_job("nope")).await;
    let id = job["id"].as_str().unwrap();
    let events = job_events_until_final(&mut alice, id).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last["status"], "failed");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("NSFW content detected"),
        "{last}"
    );
    assert_eq!(a.creates().len(), 1);
    assert!(b.creates().is_empty());
}

/// Provider `a` is down: the first job's retries open its breaker and the job falls back to
/// `b`; the next job skips `a` without calling it; after the cool-down the breaker is
/// half-open, and once `a` is back a job goes to it again and closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_provider_opens_its_breaker_jobs_fall_back_and_it_half_opens_later() {
    let a = FakeProvider::start("a", Duration::from_millis(200), WEBHOOK_SECRET);
    let b = FakeProvider::start("b", Duration::from_millis(200), WEBHOOK_SECRET);
    a.set_down(true);
    let server = jobs_server(&[("a", &a), ("b", &b)], |c| {
        c.jobs.breaker_failures = 3;
        c.jobs.breaker_cooldown_ms = 1_500;
    });
    let base = server.http("");

    let (_, _, job) = create_job(&base, "alice", "j1", &image_job("one")).await;
    let id = job["id"].as_str().unwrap();
    let first = wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    assert_eq!(first["provider"], "b");
    assert_eq!(
        attempts(&first),
        vec![
            ("a".into(), "failed".into()),
            ("b".into(), "accepted".into())
        ]
    );
    assert_eq!(first["attempts"][0]["tries"], 3);
    let opened_at = Instant::now();
    assert_eq!(breaker_of(&server, "a").await, "open");
    assert_eq!(breaker_of(&server, "b").await, "closed");
    assert_eq!(
        server
            .metric("locus_provider_breaker_state{provider=\"a\"}")
            .await,
        2.0
    );

    let calls_to_a = a.calls().len();
    let (_, _, job) = create_job(&base, "alice", "j2", &image_job("two")).await;
    let id = job["id"].as_str().unwrap();
    let second = wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    assert_eq!(
        attempts(&second),
        vec![
            ("a".into(), "skipped".into()),
            ("b".into(), "accepted".into())
        ]
    );
    assert_eq!(
        a.calls().len(),
        calls_to_a,
        "an open breaker sends nothing to a"
    );

    while breaker_of(&server, "a").await != "half_open" {
        assert!(
            opened_at.elapsed() < Duration::from_secs(5),
            "breaker never half-opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.set_down(false);
    let (_, _, job) = create_job(&base, "alice", "j3", &image_job("three")).await;
    let id = job["id"].as_str().unwrap();
    let third = wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    assert_eq!(third["provider"], "a", "the half-open probe went to a");
    assert_eq!(breaker_of(&server, "a").await, "closed");
}

/// Cancel while the provider is processing: the prediction is canceled at the provider, the
/// owner gets the `canceled` event, and cancelling again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_processing_cancels_at_the_provider() {
    let fake = FakeProvider::start("a", Duration::from_secs(20), WEBHOOK_SECRET);
    let server = jobs_server(&[("a", &fake)], |_| {});
    let base = server.http("");
    let mut alice = owner_client(&server, "alice").await;
    let (_, _, job) = create_job(&base, "alice", "k", &image_job("long")).await;
    let id = job["id"].as_str().unwrap().to_owned();
    loop {
        let e = next_job_event(&mut alice, &id).await;
        if e["status"] == "processing" {
            break;
        }
    }
    let cancel_url = format!("{base}/api/jobs/{id}/cancel");
    let (status, _, canceled) = call("POST", &cancel_url, Some(&token("alice")), &[], None).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(fake.count("POST", "/cancel"), 1);
    let last = job_events_until_final(&mut alice, &id)
        .await
        .pop()
        .unwrap()
        .1;
    assert_eq!(last["status"], "canceled");
    let (status, _, again) = call("POST", &cancel_url, Some(&token("alice")), &[], None).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("canceled")));
    assert_eq!(
        fake.count("POST", "/cancel"),
        1,
        "a finished job is not canceled twice"
    );
    let (status, _, _) = call("POST", &cancel_url, Some(&token("bob")), &[], None).await;
    assert_eq!(status, 404, "only the owner cancels");
}

/// With webhooks on, the provider's signed webhooks drive the job (no polling needed); a
/// replayed webhook is recognised by its id and not applied twice; a forged, stale or unsigned
/// one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_deduplicated_and_drive_the_job() {
    let fake = FakeProvider::start("a", Duration::from_millis(1_500), WEBHOOK_SECRET);
    fake.send_webhooks(true);
    let port = free_port();
    let server = jobs_server(&[("a", &fake)], move |c| {
        c.server.listen = format!("127.0.0.1:{port}");
        c.jobs.public_url = format!("http://127.0.0.1:{port}");
        // Polling only after a minute of silence: the job can finish by webhook alone.
        c.jobs.webhook_grace_ms = 60_000;
    });
    let base = server.http("");
    let (_, _, job) = create_job(&base, "alice", "k", &image_job("hooked")).await;
    let id = job["id"].as_str().unwrap();
    let done = wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    let prediction = done["attempts"][0]["prediction_id"].as_str().unwrap();
    assert_eq!(
        fake.count("GET", prediction),
        0,
        "finished by webhooks, not polling"
    );
    let applied = "locus_webhooks_total{provider=\"a\",outcome=\"applied\"}";
    assert!(server.metric(applied).await >= 2.0);

    let url = format!("{base}/api/webhooks/a");
    let sent = fake.sent_webhooks().pop().unwrap();
    assert_eq!(sent.url, url);
    let replay = [
        ("webhook-id", sent.id.as_str()),
        ("webhook-timestamp", sent.timestamp.as_str()),
        ("webhook-signature", sent.signature.as_str()),
    ];
    let (status, _, body) = call("POST", &url, None, &replay, Some(&sent.body)).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")));

    let forged = sign(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "msg_forged",
        &sent.timestamp,
        &sent.body,
    );
    let headers = [
        ("webhook-id", "msg_forged"),
        ("webhook-timestamp", sent.timestamp.as_str()),
        ("webhook-signature", forged.as_str()),
    ];
    let (status, _, body) = call("POST", &url, None, &headers, Some(&sent.body)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "InvalidWebhook");

    let old = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 600)
        .to_string();
    let stale = sign(WEBHOOK_SECRET, "msg_old", &old, &sent.body);
    let headers = [
        ("webhook-id", "msg_old"),
        ("webhook-timestamp", old.as_str()),
        ("webhook-signature", stale.as_str()),
    ];
    let (status, _, _) = call("POST", &url, None, &headers, Some(&sent.body)).await;
    assert_eq!(status, 401, "a timestamp 10 minutes old is refused");
    let (status, _, _) = call("POST", &url, None, &[], Some(&sent.body)).await;
    assert_eq!(status, 401, "unsigned");
    let (status, _, _) = call(
        "POST",
        &format!("{base}/api/webhooks/nobody"),
        None,
        &replay,
        Some(&sent.body),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        server
            .metric("locus_webhooks_total{provider=\"a\",outcome=\"duplicate\"}")
            .await
            >= 1.0
    );
    assert!(
        server
            .metric("locus_webhooks_total{provider=\"a\",outcome=\"bad_signature\"}")
            .await
            >= 1.0
    );
}

/// With webhooks on but none arriving, polling finishes the job after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_finishes_a_job_whose_webhooks_never_come() {
    let fake = FakeProvider::start("a", Duration::from_millis(500), WEBHOOK_SECRET);
    let server = jobs_server(&[("a", &fake)], |c| {
        c.jobs.public_url = "http://127.0.0.1:9".into();
        c.jobs.webhook_grace_ms = 300;
    });
    let base = server.http("");
    let (_, _, job) = create_job(&base, "alice", "k", &image_job("silent")).await;
    let id = job["id"].as_str().unwrap();
    let done = wait_for_job(&base, "alice", id, FINAL_WAIT, |j| {
        j["status"] == "succeeded"
    })
    .await;
    let prediction = done["attempts"][0]["prediction_id"].as_str().unwrap();
    assert!(fake.count("GET", prediction) >= 1);
}

/// The same key and body return the same job; another body is 422; a key is per user;
/// concurrent duplicates make one job; requests without a key, a token, a known kind or a
/// provider are refused clearly; per-user limits answer 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_limits_and_refusals() {
    let fake = FakeProvider::start("a", Duration::from_secs(30), WEBHOOK_SECRET);
    let server = jobs_server(&[("a", &fake)], |c| {
        c.jobs.concurrent_per_user_max = 2;
        c.jobs.per_user_per_min = 4;
    });
    let base = server.http("");
    let body = image_job("same");

    let (status, _, first) = create_job(&base, "alice", "key-1", &body).await;
    assert_eq!(status, 201);
    let (status, headers, again) = create_job(&base, "alice", "key-1", &body).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        headers.get("idempotent-replayed").map(String::as_str),
        Some("true")
    );
    let (status, _, err) = create_job(&base, "alice", "key-1", &image_job("other")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("IdempotencyKeyReused"))
    );
    let (status, _, theirs) = create_job(&base, "bob", "key-1", &body).await;
    assert_eq!(status, 201, "keys are per user");
    assert_ne!(theirs["id"], first["id"]);

    // Concurrent duplicates: one job; the others get it back or 409 while it is being made.
    let racers: Vec<_> = (0..12)
        .map(|_| {
            let base = base.clone();
            let body = body.clone();
            tokio::spawn(async move { create_job(&base, "erin", "race", &body).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for r in racers {
        let (status, _, v) = r.await.unwrap();
        match status {
            201 => {
                created += 1;
                ids.insert(v["id"].as_str().unwrap().to_owned());
            }
            200 => {
                ids.insert(v["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(v["error"]["code"], "IdempotencyKeyInUse"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let (_, _, list) = call(
        "GET",
        &format!("{base}/api/jobs"),
        Some(&token("erin")),
        &[],
        None,
    )
    .await;
    assert_eq!(list["results"].as_array().unwrap().len(), 1);

    // Refusals.
    let url = format!("{base}/api/jobs");
    let (status, _, err) = call(
        "POST",
        &url,
        None,
        &[("idempotency-key", "x")],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("AuthenticationRequired"))
    );
    let (status, _, err) = call(
        "POST",
        &url,
        Some(&token("alice")),
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("IdempotencyKeyRequired"))
    );
    let (status, _, err) = create_job(&base, "frank", "k", &json!({"kind": "hologram"})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("UnknownKind"))
    );
    let (status, _, err) =
        create_job(&base, "frank", "k2", &json!({"kind": "video", "input": {}})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (503, Some("NoProvider"))
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no provider is configured for video jobs"));
    let (status, _, err) = create_job(
        &base,
        "frank",
        "k3",
        &json!({"kind": "image", "provider": "zzz"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("UnknownProvider"))
    );
    let (status, _, err) = create_job(
        &base,
        "frank",
        "k4",
        &json!({"kind": "image", "input": "text"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("InvalidJobRequest"))
    );

    // Limits: two live jobs at most, four creations a minute.
    let (s1, _, c1) = create_job(&base, "carol", "c1", &image_job("1")).await;
    let (s2, _, c2) = create_job(&base, "carol", "c2", &image_job("2")).await;
    assert_eq!((s1, s2), (201, 201));
    let (status, _, err) = create_job(&base, "carol", "c3", &image_job("3")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (429, Some("TooManyJobs"))
    );
    for c in [&c1, &c2] {
        let url = format!("{base}/api/jobs/{}/cancel", c["id"].as_str().unwrap());
        assert_eq!(
            call("POST", &url, Some(&token("carol")), &[], None).await.0,
            200
        );
    }
    let (status, _, _) = create_job(&base, "carol", "c4", &image_job("4")).await;
    assert_eq!(status, 201);
    let (status, headers, err) = create_job(&base, "carol", "c5", &image_job("5")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (429, Some("JobRateLimited"))
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}
