//! The body of `POST /api/jobs` (`kind`, `provider`, `input`; no other field) and new job ids.

use serde_json::Value;

use super::error::JobError;

/// The body of `POST /api/jobs`.
pub(super) struct JobRequest {
    pub kind: String,
    pub provider: Option<String>,
    pub input: Value,
}

impl JobRequest {
    pub fn parse(body: &Value) -> Result<JobRequest, JobError> {
        let invalid = |m: &str| JobError::InvalidRequest(m.into());
        let obj = body
            .as_object()
            .ok_or_else(|| invalid("the body must be a JSON object"))?;
        if let Some(extra) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "kind" | "provider" | "input"))
        {
            return Err(invalid(&format!(
                "unknown field {extra:?}; fields: kind, provider, input"
            )));
        }
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("kind is required: \"image\", \"music\" or \"video\""))?;
        let provider = match obj.get("provider") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(invalid("provider must be a string")),
        };
        let input = obj
            .get("input")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        if !input.is_object() {
            return Err(invalid("input must be a JSON object"));
        }
        Ok(JobRequest {
            kind: kind.to_owned(),
            provider,
            input,
        })
    }
}

/// A new job id: 16 random bytes as 32 lowercase hex digits.
pub(super) fn new_job_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}
