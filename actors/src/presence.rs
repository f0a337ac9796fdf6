//! Presence state of one room: keys, their metas (one per joined session), and the diffs to send.
//!
//! Shapes follow Phoenix.Presence as Supabase sends them: `presence_state` is
//! `{key: {"metas": [{"phx_ref": …, …meta}]}}` and `presence_diff` is
//! `{"joins": {…}, "leaves": {…}}`. Re-tracking updates a meta in place: the diff carries the new
//! meta under `joins` with the same `phx_ref` and nothing under `leaves`, so clients see no
//! leave+join flicker (realtime-js replaces metas by `phx_ref`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::SessionId;

/// One device's presence under a key.
#[derive(Debug, Clone, Serialize)]
struct Meta {
    #[serde(skip)]
    session: SessionId,
    #[serde(flatten)]
    fields: Map<String, Value>,
    phx_ref: String,
}

#[derive(Serialize)]
struct Metas<'a> {
    metas: Vec<&'a Meta>,
}

/// A presence change to broadcast as `presence_diff`.
#[derive(Debug, Default)]
pub struct PresenceDiff {
    joins: Vec<(String, Meta)>,
    leaves: Vec<(String, Meta)>,
}

impl PresenceDiff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// The `presence_diff` payload.
    pub fn to_json(&self) -> String {
        fn group(items: &[(String, Meta)]) -> HashMap<&str, Metas<'_>> {
            let mut out: HashMap<&str, Metas<'_>> = HashMap::new();
            for (key, meta) in items {
                out.entry(key.as_str())
                    .or_insert(Metas { metas: Vec::new() })
                    .metas
                    .push(meta);
            }
            out
        }
        #[derive(Serialize)]
        struct Diff<'a> {
            joins: HashMap<&'a str, Metas<'a>>,
            leaves: HashMap<&'a str, Metas<'a>>,
        }
        serde_json::to_string(&Diff {
            joins: group(&self.joins),
            leaves: group(&self.leaves),
        })
        .expect("presence diff serializes")
    }
}

/// All presences of one room.
#[derive(Debug, Default)]
pub struct PresenceState {
    by_key: HashMap<String, Vec<Meta>>,
}

/// A fresh `phx_ref`, unique within this process (the node prefix keeps refs from different
/// restarts apart in clients that survived the restart).
fn next_phx_ref() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NODE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    format!("{node:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A presence key for a member whose client did not choose one (Supabase generates a UUID).
pub fn generated_key() -> String {
    format!("anon-{}", next_phx_ref())
}

impl PresenceState {
    /// Tracks `session` under `key` with `fields`; an existing meta of the session is updated in
    /// place, keeping its `phx_ref`.
    pub fn track(
        &mut self,
        session: SessionId,
        key: &str,
        fields: Map<String, Value>,
    ) -> PresenceDiff {
        let metas = self.by_key.entry(key.to_owned()).or_default();
        let meta = match metas.iter_mut().find(|m| m.session == session) {
            Some(existing) => {
                existing.fields = fields;
                existing.clone()
            }
            None => {
                let meta = Meta {
                    session,
                    fields,
                    phx_ref: next_phx_ref(),
                };
                metas.push(meta.clone());
                meta
            }
        };
        PresenceDiff {
            joins: vec![(key.to_owned(), meta)],
            leaves: Vec::new(),
        }
    }

    /// Removes the meta of `session` under `key`, if any.
    pub fn untrack(&mut self, session: SessionId, key: &str) -> PresenceDiff {
        let mut diff = PresenceDiff::default();
        if let Some(metas) = self.by_key.get_mut(key) {
            if let Some(pos) = metas.iter().position(|m| m.session == session) {
                diff.leaves.push((key.to_owned(), metas.remove(pos)));
            }
            if metas.is_empty() {
                self.by_key.remove(key);
            }
        }
        diff
    }

    /// The `presence_state` payload.
    pub fn state_json(&self) -> String {
        let view: HashMap<&str, Metas<'_>> = self
            .by_key
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    Metas {
                        metas: v.iter().collect(),
                    },
                )
            })
            .collect();
        serde_json::to_string(&view).expect("presence state serializes")
    }

    /// Number of metas across all keys.
    pub fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn two_devices_under_one_key_hold_two_metas() {
        let mut p = PresenceState::default();
        p.track(1, "alice", meta(json!({"device": "phone"})));
        p.track(2, "alice", meta(json!({"device": "laptop"})));
        let state: Value = serde_json::from_str(&p.state_json()).unwrap();
        assert_eq!(state["alice"]["metas"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn retrack_updates_in_place_with_same_ref_and_no_leave() {
        let mut p = PresenceState::default();
        let first: Value =
            serde_json::from_str(&p.track(1, "a", meta(json!({"s": "online"}))).to_json()).unwrap();
        let second: Value =
            serde_json::from_str(&p.track(1, "a", meta(json!({"s": "idle"}))).to_json()).unwrap();
        assert_eq!(
            first["joins"]["a"]["metas"][0]["phx_ref"],
            second["joins"]["a"]["metas"][0]["phx_ref"]
        );
        assert_eq!(second["joins"]["a"]["metas"][0]["s"], "idle");
        assert_eq!(second["leaves"], json!({}));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn untrack_emits_leave_and_forgets_empty_keys() {
        let mut p = PresenceState::default();
        p.track(1, "a", Map::new());
        let d: Value = serde_json::from_str(&p.untrack(1, "a").to_json()).unwrap();
        assert_eq!(d["leaves"]["a"]["metas"].as_array().unwrap().len(), 1);
        assert!(p.is_empty());
        assert!(p.untrack(1, "a").is_empty());
    }
}
