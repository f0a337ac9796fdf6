//! The JSON shapes of a job: the API's full object and the `job` event's summary
//! (`{"id","status","progress","output"?,"error"?,"updated_at"}`, docs/API.md "AI jobs"), and the jobs part
//! of `/api/health` (each provider's breaker state).

use locus_storage::time::rfc3339_ms;
use locus_storage::JobRecord;
use serde_json::{json, Value};

use super::breaker::BreakerState;
use super::service::Jobs;

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// `GET /api/jobs/<id>`: Replicate's prediction shape plus the job's attempts and cost.
pub fn job_json(job: &JobRecord) -> Value {
    json!({
        "id": job.id,
        "kind": job.kind,
        "status": job.status.as_str(),
        "progress": job.progress,
        "input": parse_json(&job.input),
        "output": job.output.as_deref().map_or(Value::Null, parse_json),
        "error": job.error,
        "provider": job.provider,
        "requested_provider": job.requested_provider,
        "attempts": parse_json(&job.attempts),
        "cost": { "estimate": job.cost_estimate, "actual": job.cost_actual },
        "created_at": rfc3339_ms(job.created_at_ms),
        "updated_at": rfc3339_ms(job.updated_at_ms),
        "urls": {
            "get": format!("/api/jobs/{}", job.id),
            "cancel": format!("/api/jobs/{}/cancel", job.id),
        },
    })
}

/// The payload of a `job` event on `realtime:user:<owner>`.
pub fn event_json(job: &JobRecord) -> Value {
    let mut event = json!({
        "id": job.id,
        "status": job.status.as_str(),
        "progress": job.progress,
        // Set when the event is emitted (a Locus extension): events order by it.
        "updated_at": rfc3339_ms(job.updated_at_ms),
    });
    if let Some(output) = &job.output {
        event["output"] = parse_json(output);
    }
    if let Some(error) = &job.error {
        event["error"] = Value::String(error.clone());
    }
    event
}

impl Jobs {
    /// Each provider's breaker state, for `/api/health`.
    pub fn provider_health(&self) -> Value {
        let providers: serde_json::Map<String, Value> = self
            .shared
            .config
            .providers
            .keys()
            .map(|name| {
                let state = match self.shared.providers.get(name) {
                    Some(p) => {
                        let breaker = p.breaker.state();
                        serde_json::json!({
                            "status": if breaker == BreakerState::Closed { "ok" } else { "degraded" },
                            "breaker": breaker.as_str(),
                            "running": p.config.concurrency - p.permits.available_permits(),
                            "webhooks": self.shared.webhooks_on(name),
                        })
                    }
                    None => serde_json::json!({ "status": "off", "reason": "no token" }),
                };
                (name.clone(), state)
            })
            .collect();
        serde_json::json!({ "live": self.shared.live.len(), "providers": providers })
    }
}
