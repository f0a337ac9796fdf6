//! The adapter for Replicate-style prediction APIs: `POST /v1/predictions`,
//! `GET /v1/predictions/<id>`, `POST /v1/predictions/<id>/cancel`, bearer token, webhooks
//! requested with `webhook` and `webhook_events_filter`.

use std::time::Duration;

use awc::http::StatusCode;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};

use super::provider::{CreateRequest, Prediction, PredictionStatus, Provider, ProviderError};

/// Largest provider response read, in bytes (outputs are URLs, not media).
const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest provider error message kept on a job, in bytes.
const ERROR_MESSAGE_BYTES_MAX: usize = 1_000;

pub struct ReplicateProvider {
    base_url: String,
    token: String,
    timeout_ms: u64,
    client: awc::Client,
}

impl ReplicateProvider {
    /// Builds the client; must run on the thread that will use it.
    pub fn new(base_url: &str, token: String, timeout_ms: u64) -> ReplicateProvider {
        let client = awc::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .finish();
        ReplicateProvider {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            timeout_ms,
            client,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Prediction, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let request = match method {
            "GET" => self.client.get(&url),
            _ => self.client.post(&url),
        }
        .insert_header(("Authorization", format!("Bearer {}", self.token)));
        let sent = match body {
            Some(b) => request.send_json(&b).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| match e {
            awc::error::SendRequestError::Timeout => ProviderError::Timeout(self.timeout_ms),
            other => ProviderError::Connect(other.to_string()),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .body()
            .limit(RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::RateLimited { retry_after });
        }
        if !status.is_success() {
            let message = error_message(&bytes);
            return Err(if status.is_server_error() {
                ProviderError::Server {
                    status: status.as_u16(),
                    message,
                }
            } else {
                ProviderError::Refused {
                    status: status.as_u16(),
                    message,
                }
            });
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        parse_prediction(&value)
    }
}

impl Provider for ReplicateProvider {
    fn create(
        &self,
        request: CreateRequest,
    ) -> LocalBoxFuture<'_, Result<Prediction, ProviderError>> {
        let mut body = json!({ "version": request.model, "input": request.input });
        if let Some(url) = request.webhook {
            body["webhook"] = Value::String(url);
            body["webhook_events_filter"] = json!(["start", "output", "logs", "completed"]);
        }
        self.call("POST", "/v1/predictions", Some(body))
            .boxed_local()
    }

    fn get(&self, id: &str) -> LocalBoxFuture<'_, Result<Prediction, ProviderError>> {
        let path = format!("/v1/predictions/{id}");
        async move { self.call("GET", &path, None).await }.boxed_local()
    }

    fn cancel(&self, id: &str) -> LocalBoxFuture<'_, Result<Prediction, ProviderError>> {
        let path = format!("/v1/predictions/{id}/cancel");
        async move { self.call("POST", &path, None).await }.boxed_local()
    }
}

/// Reads a Replicate prediction object (also the body of its webhooks).
pub fn parse_prediction(v: &Value) -> Result<Prediction, ProviderError> {
    let bad = |what: &str| ProviderError::BadResponse(format!("prediction without {what}"));
    let id = v["id"].as_str().ok_or_else(|| bad("an id"))?.to_owned();
    let status = v["status"]
        .as_str()
        .and_then(PredictionStatus::parse)
        .ok_or_else(|| bad("a known status"))?;
    let progress = v["progress"]
        .as_f64()
        .or_else(|| v["logs"].as_str().and_then(progress_from_logs))
        .map(|p| p.clamp(0.0, 1.0));
    let error = match &v["error"] {
        Value::Null => None,
        Value::String(s) => Some(truncate(s)),
        other => Some(truncate(&other.to_string())),
    };
    Ok(Prediction {
        id,
        status,
        progress,
        output: Some(v["output"].clone()).filter(|o| !o.is_null()),
        error,
        predict_time_s: v["metrics"]["predict_time"].as_f64(),
    })
}

/// The last percentage in a model's logs (tqdm prints ` 45%|████▌     | 45/100`), as 0–1.
pub fn progress_from_logs(logs: &str) -> Option<f64> {
    let bytes = logs.as_bytes();
    for end in (0..bytes.len()).rev() {
        if bytes[end] != b'%' {
            continue;
        }
        let start = bytes[..end]
            .iter()
            .rposition(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(0, |i| i + 1);
        if let Ok(pct) = logs[start..end].parse::<f64>() {
            if (0.0..=100.0).contains(&pct) {
                return Some(pct / 100.0);
            }
        }
    }
    None
}

/// The provider's own words: Replicate's `detail` (or `title`), else the body itself.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| {
            v["detail"]
                .as_str()
                .or(v["title"].as_str())
                .or(v["error"].as_str())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    truncate(&text)
}

fn truncate(s: &str) -> String {
    if s.len() <= ERROR_MESSAGE_BYTES_MAX {
        return s.to_owned();
    }
    let mut end = ERROR_MESSAGE_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_the_last_percentage_in_the_logs() {
        let logs = "loading\n  3%|▎         | 3/100\n 45%|████▌     | 45/100 [00:02<00:03]";
        assert_eq!(progress_from_logs(logs), Some(0.45));
        assert_eq!(progress_from_logs("no numbers here"), None);
        assert_eq!(progress_from_logs("100%|██████████|"), Some(1.0));
        assert_eq!(progress_from_logs("12.5%"), Some(0.125));
        assert_eq!(progress_from_logs("250% faster"), None);
    }

    #[test]
    fn a_replicate_prediction_parses() {
        let v = json!({
            "id": "gm3qorzdhgbfurvjtvhg6dckhu",
            "status": "succeeded",
            "output": ["https://replicate.delivery/out.png"],
            "error": null,
            "logs": "50%|█████",
            "metrics": {"predict_time": 2.5}
        });
        let p = parse_prediction(&v).unwrap();
        assert_eq!(p.status, PredictionStatus::Succeeded);
        assert_eq!(p.progress, Some(0.5));
        assert_eq!(p.predict_time_s, Some(2.5));
        assert!(p.output.is_some());
        assert!(parse_prediction(&json!({"id": "x", "status": "exploded"})).is_err());
        assert_eq!(
            parse_prediction(&json!({"id": "x", "status": "aborted"}))
                .unwrap()
                .status,
            PredictionStatus::Canceled
        );
    }
}
