//! The attempt log of a job: one JSON entry per provider tried, skipped, recovered or failed
//! to cancel (`{"provider","outcome","at",...}`), stored as the job's `attempts` text.

use locus_storage::now_ms;
use locus_storage::time::rfc3339_ms;
use serde_json::{json, Value};

use crate::metrics as m;

#[derive(Debug, Default)]
pub struct AttemptLog {
    entries: Vec<Value>,
}

impl AttemptLog {
    /// The log stored as `text` (a JSON array); empty when it is not one.
    pub fn parse(text: &str) -> AttemptLog {
        AttemptLog {
            entries: serde_json::from_str::<Vec<Value>>(text).unwrap_or_default(),
        }
    }

    /// Adds an entry stamped now, with the fields of `extra` (an object) after the fixed ones,
    /// and counts it.
    pub fn record(&mut self, provider: &str, outcome: &str, extra: Value) {
        m::job_attempt(provider, outcome);
        self.entries
            .push(entry(provider, outcome, rfc3339_ms(now_ms()), extra));
    }

    /// The log as stored.
    pub fn to_text(&self) -> String {
        Value::Array(self.entries.clone()).to_string()
    }
}

fn entry(provider: &str, outcome: &str, at: String, extra: Value) -> Value {
    let mut entry = json!({ "provider": provider, "outcome": outcome, "at": at });
    if let (Some(obj), Value::Object(more)) = (entry.as_object_mut(), extra) {
        obj.extend(more);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry carries provider, outcome and time, then the extra fields; the stored text
    /// reads back as the same log.
    #[test]
    fn entries_round_trip_through_the_stored_text() {
        let mut log = AttemptLog::parse("not json");
        log.record("replicate", "accepted", json!({ "tries": 2 }));
        let back = AttemptLog::parse(&log.to_text());
        assert_eq!(back.entries.len(), 1);
        let e = &back.entries[0];
        assert_eq!(e["provider"], "replicate");
        assert_eq!(e["outcome"], "accepted");
        assert_eq!(e["tries"], 2);
        assert!(e["at"].is_string());
    }
}
