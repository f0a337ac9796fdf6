//! What the job tests share: user tokens, a jobs config pointing at fake providers, HTTP calls
//! that show headers, and waiting on a job's `job` events or stored state.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use locus_actors::jobs::{JobsConfig, ProviderConfig};
use serde_json::{json, Value};

use super::fake_provider::{FakeProvider, TOKEN};
use super::{http_request, Client, Msg};

pub const SECRET: &str = "locus-test-secret-of-a-decent-length";
/// The Standard Webhooks secret the fake providers sign with.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3_600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp, "role": "authenticated"}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `[jobs]` with `providers` (in route order) serving image jobs, fast retries and polling.
pub fn jobs_config(providers: &[(&str, &FakeProvider)]) -> JobsConfig {
    let mut c = JobsConfig {
        poll_interval_ms: 100,
        retry_delay_ms_min: 10,
        retry_delay_ms_max: 50,
        retries_max: 2,
        providers: BTreeMap::new(),
        routes: BTreeMap::new(),
        ..JobsConfig::default()
    };
    for (name, fake) in providers {
        c.providers.insert(
            (*name).into(),
            ProviderConfig {
                base_url: fake.base_url(),
                token: TOKEN.into(),
                token_env: String::new(),
                webhook_secret: WEBHOOK_SECRET.into(),
                webhook_secret_env: String::new(),
                models: BTreeMap::from([("image".into(), format!("{name}/image-model"))]),
                cost_estimate: BTreeMap::from([("image".into(), 2.0)]),
                cost_per_predict_s: 1.5,
                request_timeout_ms: 2_000,
                concurrency: 8,
            },
        );
    }
    c.routes.insert(
        "image".into(),
        providers.iter().map(|(n, _)| (*n).to_string()).collect(),
    );
    // A kind no provider serves.
    c.routes.insert("video".into(), vec![]);
    c
}

/// An HTTP response: (status, response headers, JSON body).
pub type Response = (u16, BTreeMap<String, String>, Value);

/// Any HTTP call on loopback.
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    try_call(method, url, token, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Any HTTP call on loopback; `Err` when it never got an answer (e.g. nothing listens yet).
pub async fn try_call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Response, ureq::Error> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all = headers.to_vec();
    if let Some(b) = &bearer {
        all.push(("authorization", b));
    }
    let (status, headers, text) = http_request(method, url, &all, body).await?;
    Ok((
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    ))
}

/// `POST /api/jobs` as `user` with `key`: (status, headers, body).
pub async fn create_job(
    base: &str,
    user: &str,
    key: &str,
    body: &Value,
) -> (u16, BTreeMap<String, String>, Value) {
    call(
        "POST",
        &format!("{base}/api/jobs"),
        Some(&token(user)),
        &[("idempotency-key", key)],
        Some(&body.to_string()),
    )
    .await
}

pub async fn get_job(base: &str, user: &str, id: &str) -> (u16, Value) {
    let (s, _, v) = call(
        "GET",
        &format!("{base}/api/jobs/{id}"),
        Some(&token(user)),
        &[],
        None,
    )
    .await;
    (s, v)
}

/// Polls `GET /api/jobs/<id>` until `done` holds for it or `wait` passes.
pub async fn wait_for_job(
    base: &str,
    user: &str,
    id: &str,
    wait: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let (status, job) = get_job(base, user, id).await;
        if status == 200 && done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never got there; last: {status} {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `job` event for `id` on a client joined to its owner's topic.
pub async fn next_job_event(client: &mut Client, id: &str) -> Value {
    let m: Msg = client
        .next_where(|m| {
            m.event == "broadcast"
                && m.payload["event"] == "job"
                && m.payload["payload"]["id"] == id
        })
        .await;
    m.payload["payload"].clone()
}

/// `job` events for `id` until a terminal one, with when each arrived.
pub async fn job_events_until_final(client: &mut Client, id: &str) -> Vec<(Instant, Value)> {
    let mut seen = Vec::new();
    loop {
        let e = next_job_event(client, id).await;
        let terminal = matches!(
            e["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        );
        seen.push((Instant::now(), e));
        if terminal {
            return seen;
        }
    }
}

pub fn image_job(prompt: &str) -> Value {
    json!({"kind": "image", "input": {"prompt": prompt}})
}
