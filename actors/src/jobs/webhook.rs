//! Provider webhooks, verified the Standard Webhooks way (Replicate signs with it): HMAC-SHA256
//! with the base64 secret after `whsec_`, over `"{webhook-id}.{webhook-timestamp}.{raw body}"`;
//! `webhook-signature` lists `v1,<base64>` entries; the timestamp must be within the tolerance.
//! A verified `webhook-id` seen before is a replay and is not applied again. [`Jobs::webhook`]
//! is the whole path: verify, deduplicate, hand the prediction to the live job that follows it.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::error::JobError;
use super::job_actor::ProviderUpdate;
use super::replicate::parse_prediction;
use super::service::Jobs;
use crate::metrics as m;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than {0} s from now")]
    Stale(u64),
    #[error("no webhook-signature matches")]
    BadSignature,
    #[error("no webhook secret is configured for this provider")]
    NotConfigured,
}

impl WebhookError {
    /// Bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            WebhookError::MissingHeader(_) => "missing_header",
            WebhookError::BadTimestamp => "bad_timestamp",
            WebhookError::Stale(_) => "stale",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::NotConfigured => "not_configured",
        }
    }
}

/// The three Standard Webhooks headers.
pub struct WebhookHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks a webhook against `secret` (`whsec_<base64>`, or bare base64) at `now_s`.
pub fn verify(
    secret: &str,
    headers: &WebhookHeaders<'_>,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), WebhookError> {
    let id = headers
        .id
        .ok_or(WebhookError::MissingHeader("webhook-id"))?;
    let timestamp = headers
        .timestamp
        .ok_or(WebhookError::MissingHeader("webhook-timestamp"))?;
    let signatures = headers
        .signature
        .ok_or(WebhookError::MissingHeader("webhook-signature"))?;
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::BadTimestamp)?;
    if ts.abs_diff(now_s) > tolerance_s {
        return Err(WebhookError::Stale(tolerance_s));
    }
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| WebhookError::NotConfigured)?;
    for entry in signatures.split_whitespace() {
        let Some(sig) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = B64.decode(sig) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // verify_slice compares in constant time.
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(WebhookError::BadSignature)
}

/// The `webhook-id`s seen lately: bounded in count, forgotten after `ttl` (past the timestamp
/// tolerance a replay is refused as stale anyway).
pub struct SeenWebhooks {
    ttl: Duration,
    max: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    /// The same ids, oldest first, with when each was seen.
    order: VecDeque<(Instant, String)>,
}

impl SeenWebhooks {
    pub fn new(ttl: Duration, max: usize) -> SeenWebhooks {
        SeenWebhooks {
            ttl,
            max: max.max(1),
            inner: Mutex::new(Seen::default()),
        }
    }

    /// True the first time `id` is seen (within the ttl).
    pub fn first_time(&self, id: &str) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Seen { ids: set, order } = &mut *guard;
        let now = Instant::now();
        while let Some((at, old)) = order.front() {
            if now.duration_since(*at) <= self.ttl && order.len() < self.max {
                break;
            }
            set.remove(old);
            order.pop_front();
        }
        if !set.insert(id.to_owned()) {
            return false;
        }
        order.push_back((now, id.to_owned()));
        true
    }
}

/// What a webhook came to.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied,
    /// The `webhook-id` was seen before: not applied again.
    Duplicate,
    /// No live job here follows that prediction (polling covers it).
    Unknown,
}

impl Jobs {
    /// A provider webhook: verified, deduplicated by `webhook-id`, then handed to the job.
    pub fn webhook(
        &self,
        provider: &str,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
    ) -> Result<WebhookOutcome, JobError> {
        let Some(info) = self.shared.providers.get(provider) else {
            // The path is the caller's: labelled with one fixed value, never with the name
            // (each distinct name would be a permanent series).
            m::webhook(m::UNKNOWN_PROVIDER_LABEL, "unknown_provider");
            return Err(JobError::UnknownWebhookProvider);
        };
        // A configured provider's name: a bounded label.
        let label = |outcome: &'static str| m::webhook(&info.name, outcome);
        let secret = info
            .webhook_secret
            .as_deref()
            .ok_or(WebhookError::NotConfigured);
        let verified = secret.and_then(|s| {
            verify(
                s,
                headers,
                body,
                crate::auth::now_s(),
                self.shared.config.webhook_tolerance_s,
            )
        });
        if let Err(e) = verified {
            label(e.label());
            return Err(e.into());
        }
        let id = headers.id.unwrap_or_default();
        if !self.shared.seen_webhooks.first_time(id) {
            label("duplicate");
            return Ok(WebhookOutcome::Duplicate);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| JobError::MalformedWebhook(e.to_string()))?;
        let prediction =
            parse_prediction(&value).map_err(|e| JobError::MalformedWebhook(e.to_string()))?;
        let job_id = self
            .shared
            .predictions
            .get(&(provider.to_owned(), prediction.id.clone()))
            .map(|j| j.clone());
        let actor = job_id.and_then(|j| self.shared.live.get(&j).map(|a| a.clone()));
        match actor {
            Some(actor) => {
                actor.do_send(ProviderUpdate(prediction));
                label("applied");
                Ok(WebhookOutcome::Applied)
            }
            None => {
                label("unknown_prediction");
                Ok(WebhookOutcome::Unknown)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference vector (standard-webhooks spec test suite).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(sig: &'a str, ts: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            id: Some(ID),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn the_reference_vector_verifies() {
        let now = 1_614_265_330;
        assert_eq!(verify(SECRET, &headers(SIG, TS), BODY, now, 300), Ok(()));
        let several = format!("v1,bm90IGl0 {SIG}");
        assert_eq!(
            verify(SECRET, &headers(&several, TS), BODY, now, 300),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_or_secret_or_old_timestamp_is_refused() {
        let now = 1_614_265_330;
        assert_eq!(
            verify(SECRET, &headers(SIG, TS), br#"{"test": 1}"#, now, 300),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                &headers(SIG, TS),
                BODY,
                now,
                300
            ),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, &headers(SIG, TS), BODY, now + 301, 300),
            Err(WebhookError::Stale(300))
        );
        let missing = WebhookHeaders {
            id: Some(ID),
            timestamp: None,
            signature: Some(SIG),
        };
        assert_eq!(
            verify(SECRET, &missing, BODY, now, 300),
            Err(WebhookError::MissingHeader("webhook-timestamp"))
        );
    }

    #[test]
    fn a_webhook_id_is_seen_once_and_the_memory_is_bounded() {
        let seen = SeenWebhooks::new(Duration::from_secs(60), 2);
        assert!(seen.first_time("a"));
        assert!(!seen.first_time("a"));
        assert!(seen.first_time("b"));
        assert!(seen.first_time("c"), "evicts the oldest");
        assert!(seen.first_time("a"), "a was evicted");
    }
}
