//! A scripted Replicate-style prediction API on loopback, for the job tests: a real HTTP server
//! (actix-web, its own thread and system) that Locus reaches over TCP exactly as it would reach
//! Replicate. The test scripts the answers to creates (accept, 5xx, 429 with Retry-After, a
//! refusal), can take the whole provider down, and reads back every call it got and every
//! webhook it sent.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// The bearer token the fake provider accepts.
pub const TOKEN: &str = "fake-provider-token";

/// The answer to the next create.
#[derive(Debug, Clone)]
pub enum Reply {
    Accept,
    /// A 5xx with this status.
    Fail(u16),
    /// 429 with `Retry-After` in seconds.
    RateLimited(u64),
    /// A 4xx with Replicate's `detail`.
    Refuse(u16, &'static str),
}

/// One request the provider got.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

/// One webhook the provider sent: the exact headers and body.
#[derive(Debug, Clone)]
pub struct SentWebhook {
    pub url: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

struct Prediction {
    created: Instant,
    canceled: bool,
}

struct State {
    replies: VecDeque<Reply>,
    down: bool,
    run: Duration,
    /// Send webhooks when a create asks for them.
    webhooks: bool,
    secret: String,
    predictions: HashMap<String, Prediction>,
    calls: Vec<Call>,
    sent: Vec<SentWebhook>,
    next_id: u64,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    name: String,
    state: Arc<Mutex<State>>,
}

impl FakeProvider {
    /// Starts a provider whose predictions run for `run` (starting for the first tenth, then
    /// processing with tqdm-style progress in the logs, then succeeded). `secret` (`whsec_…`)
    /// signs its webhooks.
    pub fn start(name: &str, run: Duration, secret: &str) -> FakeProvider {
        let state = Arc::new(Mutex::new(State {
            replies: VecDeque::new(),
            down: false,
            run,
            webhooks: false,
            secret: secret.to_owned(),
            predictions: HashMap::new(),
            calls: Vec::new(),
            sent: Vec::new(),
            next_id: 1,
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        let prefix = name.to_owned();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::new((shared, prefix));
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/v1/predictions", web::post().to(create))
                        .route("/v1/predictions/{id}", web::get().to(get))
                        .route("/v1/predictions/{id}/cancel", web::post().to(cancel))
                })
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("fake provider binds");
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            });
        });
        FakeProvider {
            addr: rx.recv().unwrap(),
            name: name.to_owned(),
            state,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Answers for the next creates, in order; after them, creates are accepted.
    pub fn script(&self, replies: &[Reply]) {
        self.with(|s| s.replies.extend(replies.iter().cloned()));
    }

    /// While down, every call gets a 503.
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down);
    }

    pub fn send_webhooks(&self, on: bool) {
        self.with(|s| s.webhooks = on);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Calls with this method whose path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.method == method && c.path.ends_with(suffix))
            .count()
    }

    pub fn creates(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path == "/v1/predictions")
            .collect()
    }

    pub fn sent_webhooks(&self) -> Vec<SentWebhook> {
        self.with(|s| s.sent.clone())
    }
}

type Data = web::Data<(Arc<Mutex<State>>, String)>;

fn view(id: &str, p: &Prediction, run: Duration) -> Value {
    let elapsed = p.created.elapsed();
    let (status, logs) = if p.canceled {
        ("canceled", String::new())
    } else if elapsed < run / 10 {
        ("starting", String::new())
    } else if elapsed < run {
        let pct = elapsed.as_millis() * 100 / run.as_millis().max(1);
        (
            "processing",
            format!("{pct:3}%|{}| {pct}/100", "#".repeat(pct as usize / 10)),
        )
    } else {
        ("succeeded", "100%|##########| 100/100".to_owned())
    };
    let mut v = json!({
        "id": id,
        "status": status,
        "logs": logs,
        "error": null,
        "output": null,
        "metrics": {},
    });
    if status == "succeeded" {
        v["output"] = json!([format!("https://fake.example/{id}.png")]);
        v["metrics"] = json!({ "predict_time": run.as_secs_f64() });
    }
    v
}

/// Records the call; the answer when the provider is down or the token is wrong.
fn admit(req: &HttpRequest, data: &Data) -> Option<HttpResponse> {
    let mut s = data.0.lock().unwrap();
    s.calls.push(Call {
        at: Instant::now(),
        method: req.method().to_string(),
        path: req.path().to_owned(),
    });
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return Some(HttpResponse::Unauthorized().json(json!({"detail": "Invalid token."})));
    }
    if s.down {
        return Some(
            HttpResponse::ServiceUnavailable().json(json!({"detail": "down for maintenance"})),
        );
    }
    None
}

async fn create(req: HttpRequest, body: web::Json<Value>, data: Data) -> HttpResponse {
    if let Some(r) = admit(&req, &data) {
        return r;
    }
    let mut s = data.0.lock().unwrap();
    match s.replies.pop_front().unwrap_or(Reply::Accept) {
        Reply::Fail(status) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .json(json!({"detail": "internal error"}))
        }
        Reply::RateLimited(after) => {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", after.to_string()))
                .json(json!({"detail": "Request was throttled."}))
        }
        Reply::Refuse(status, detail) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .json(json!({"title": "Invalid input", "detail": detail}))
        }
        Reply::Accept => {}
    }
    let id = format!("{}-pred-{}", data.1, s.next_id);
    s.next_id += 1;
    let p = Prediction {
        created: Instant::now(),
        canceled: false,
    };
    let v = view(&id, &p, s.run);
    s.predictions.insert(id.clone(), p);
    if let (true, Some(url)) = (s.webhooks, body["webhook"].as_str()) {
        spawn_webhooks(data.0.clone(), id, url.to_owned());
    }
    HttpResponse::Created().json(v)
}

async fn get(req: HttpRequest, id: web::Path<String>, data: Data) -> HttpResponse {
    if let Some(r) = admit(&req, &data) {
        return r;
    }
    let s = data.0.lock().unwrap();
    match s.predictions.get(id.as_str()) {
        Some(p) => HttpResponse::Ok().json(view(&id, p, s.run)),
        None => HttpResponse::NotFound().json(json!({"detail": "Not found."})),
    }
}

async fn cancel(req: HttpRequest, id: web::Path<String>, data: Data) -> HttpResponse {
    if let Some(r) = admit(&req, &data) {
        return r;
    }
    let mut s = data.0.lock().unwrap();
    let run = s.run;
    match s.predictions.get_mut(id.as_str()) {
        Some(p) => {
            if p.created.elapsed() < run {
                p.canceled = true;
            }
            HttpResponse::Ok().json(view(&id, p, run))
        }
        None => HttpResponse::NotFound().json(json!({"detail": "Not found."})),
    }
}

/// Signs like Standard Webhooks: HMAC-SHA256 over `id.timestamp.body` with the secret's bytes.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Posts the prediction's state to `url` every tenth of its run until it is final, like
/// Replicate's start/output/completed webhooks.
fn spawn_webhooks(state: Arc<Mutex<State>>, id: String, url: String) {
    std::thread::spawn(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut n = 0;
        loop {
            let (body, secret, run) = {
                let s = state.lock().unwrap();
                let p = &s.predictions[&id];
                (view(&id, p, s.run), s.secret.clone(), s.run)
            };
            n += 1;
            let msg_id = format!("msg_{id}_{n}");
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string();
            let text = body.to_string();
            let signature = sign(&secret, &msg_id, &ts, &text);
            let _ = agent
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", &ts)
                .header("webhook-signature", &signature)
                .send(text.as_bytes());
            state.lock().unwrap().sent.push(SentWebhook {
                url: url.clone(),
                id: msg_id,
                timestamp: ts,
                signature,
                body: text,
            });
            if matches!(
                body["status"].as_str(),
                Some("succeeded" | "failed" | "canceled")
            ) {
                return;
            }
            std::thread::sleep(run / 10);
        }
    });
}
