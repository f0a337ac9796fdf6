//! Presence state of one room: keys, their metas (one per joined session), and the diffs to send.
//!
//! Shapes follow Phoenix.Presence as Supabase sends them: `presence_state` is
//! `{key: {"metas": [{"phx_ref": …, …meta}]}}` and `presence_diff` is
//! `{"joins": {…}, "leaves": {…}}`. Re-tracking updates a meta in place: the diff carries the new
//! meta under `joins` with the same `phx_ref` and nothing under `leaves`, so clients see no
//! leave+join flicker (realtime-js replaces metas by `phx_ref`).
//!
//! In a cluster the state also holds the other nodes' metas, keyed by node and session, with the
//! `phx_ref` their node gave them; only this node's own changes are sent on.
//!
//! Over 400 lines: one state with its local and remote operations, and their tests (half the
//! file).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::broker::{NodeRef, PresenceDelta, PresenceEntry, PresenceLeave, LOCAL_NODE};
use crate::SessionId;

/// Who holds a meta: a session of this node ([`LOCAL_NODE`]) or of another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Owner {
    node: NodeRef,
    session: SessionId,
}

impl Owner {
    fn local(session: SessionId) -> Owner {
        Owner {
            node: LOCAL_NODE,
            session,
        }
    }
}

/// Bytes a meta adds to `presence_state` besides its key and fields: the `phx_ref` and the JSON
/// punctuation around them (an upper bound, so the accounting never undercounts).
const META_OVERHEAD_BYTES: usize = 64;

/// The bounds of one room's presence (`[room]` in config.toml).
#[derive(Debug, Clone, Copy)]
pub struct PresenceBounds {
    pub metas_per_key_max: usize,
    pub metas_max: usize,
    pub state_bytes_max: usize,
}

impl PresenceBounds {
    /// No bound (benchmarks and tests of other behaviour).
    pub const UNBOUNDED: PresenceBounds = PresenceBounds {
        metas_per_key_max: usize::MAX,
        metas_max: usize::MAX,
        state_bytes_max: usize::MAX,
    };
}

/// Why a track was refused: the room's presence is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresenceFull {
    #[error("this presence key already holds room.presence_metas_per_key_max metas")]
    MetasPerKey,
    #[error("this room already holds room.presence_metas_max metas")]
    Metas,
    #[error("this room's presence state would exceed room.presence_state_bytes_max")]
    StateBytes,
}

/// One device's presence under a key.
#[derive(Debug, Clone, Serialize)]
struct Meta {
    #[serde(skip)]
    owner: Owner,
    /// What this meta adds to the encoded state, in bytes (key included).
    #[serde(skip)]
    cost_bytes: usize,
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

    /// The part of this diff made by this node's sessions, as the other nodes receive it.
    pub fn local_delta(&self) -> PresenceDelta {
        let local = |m: &&(String, Meta)| m.1.owner.node == LOCAL_NODE;
        PresenceDelta {
            joins: (self.joins.iter().filter(local))
                .map(|(k, m)| entry(k, m))
                .collect(),
            leaves: (self.leaves.iter().filter(local))
                .map(|(key, m)| PresenceLeave {
                    session: m.owner.session,
                    key: key.clone(),
                })
                .collect(),
        }
    }

    fn extend(&mut self, other: PresenceDiff) {
        self.joins.extend(other.joins);
        self.leaves.extend(other.leaves);
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

/// A diff item as it crosses nodes.
fn entry(key: &str, m: &Meta) -> PresenceEntry {
    PresenceEntry {
        session: m.owner.session,
        key: key.to_owned(),
        phx_ref: m.phx_ref.clone(),
        meta: m.fields.clone(),
    }
}

/// All presences of one room.
#[derive(Debug, Default)]
pub struct PresenceState {
    by_key: HashMap<String, Vec<Meta>>,
    /// Metas across all keys.
    metas: usize,
    /// An upper bound of the encoded `presence_state`, in bytes.
    state_bytes: usize,
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
        self.try_track(session, key, fields, &PresenceBounds::UNBOUNDED)
            .expect("unbounded presence accepts every track")
    }

    /// [`PresenceState::track`] within `bounds`: a track that would take the key or the room
    /// past them is refused and changes nothing.
    pub fn try_track(
        &mut self,
        session: SessionId,
        key: &str,
        fields: Map<String, Value>,
        bounds: &PresenceBounds,
    ) -> Result<PresenceDiff, PresenceFull> {
        self.upsert(Owner::local(session), key, fields, None, bounds)
    }

    /// Tracks (or updates) `owner`'s meta under `key`; a meta from another node keeps the
    /// `phx_ref` it was given there. Unchanged metas make an empty diff.
    fn upsert(
        &mut self,
        owner: Owner,
        key: &str,
        fields: Map<String, Value>,
        phx_ref: Option<&str>,
        bounds: &PresenceBounds,
    ) -> Result<PresenceDiff, PresenceFull> {
        let fields_bytes = serde_json::to_vec(&fields).map_or(0, |v| v.len());
        // Keys are counted as encoded: escaping can make a key several times longer.
        let key_bytes = serde_json::to_string(key).map_or(key.len(), |k| k.len());
        let cost_bytes = key_bytes + fields_bytes + META_OVERHEAD_BYTES;
        let existing = self
            .by_key
            .get(key)
            .and_then(|metas| metas.iter().find(|m| m.owner == owner))
            .map(|m| m.cost_bytes);
        if existing.is_none() {
            if self.by_key.get(key).map_or(0, Vec::len) >= bounds.metas_per_key_max {
                return Err(PresenceFull::MetasPerKey);
            }
            if self.metas >= bounds.metas_max {
                return Err(PresenceFull::Metas);
            }
        }
        let state_bytes = self.state_bytes - existing.unwrap_or(0) + cost_bytes;
        if state_bytes > bounds.state_bytes_max {
            return Err(PresenceFull::StateBytes);
        }
        self.state_bytes = state_bytes;
        let metas = self.by_key.entry(key.to_owned()).or_default();
        let meta = match metas.iter_mut().find(|m| m.owner == owner) {
            Some(existing) if phx_ref.is_some() && existing.fields == fields => {
                // A remote join seen again (a snapshot after its delta): nothing to announce.
                return Ok(PresenceDiff::default());
            }
            Some(existing) => {
                existing.fields = fields;
                existing.cost_bytes = cost_bytes;
                existing.clone()
            }
            None => {
                let meta = Meta {
                    owner,
                    cost_bytes,
                    fields,
                    phx_ref: phx_ref.map_or_else(crate::ids::next_phx_ref, str::to_owned),
                };
                metas.push(meta.clone());
                self.metas += 1;
                meta
            }
        };
        Ok(PresenceDiff {
            joins: vec![(key.to_owned(), meta)],
            leaves: Vec::new(),
        })
    }

    /// Removes the meta of `session` under `key`, if any.
    pub fn untrack(&mut self, session: SessionId, key: &str) -> PresenceDiff {
        self.remove(Owner::local(session), key)
    }

    /// Applies another node's presence change; joins past `bounds` are left out and counted.
    pub fn apply_remote(
        &mut self,
        node: NodeRef,
        delta: &PresenceDelta,
        bounds: &PresenceBounds,
    ) -> PresenceDiff {
        let mut diff = PresenceDiff::default();
        for leave in &delta.leaves {
            diff.extend(self.remove(
                Owner {
                    node,
                    session: leave.session,
                },
                &leave.key,
            ));
        }
        for e in &delta.joins {
            let owner = Owner {
                node,
                session: e.session,
            };
            match self.upsert(owner, &e.key, e.meta.clone(), Some(&e.phx_ref), bounds) {
                Ok(d) => diff.extend(d),
                Err(_) => crate::metrics::dropped(crate::metrics::DropReason::PresenceRemoteFull),
            }
        }
        diff
    }

    /// Replaces everything held for `node` by `entries` (its snapshot).
    pub fn replace_node(
        &mut self,
        node: NodeRef,
        entries: &[PresenceEntry],
        bounds: &PresenceBounds,
    ) -> PresenceDiff {
        let keep = |o: &Owner, key: &str| {
            entries
                .iter()
                .any(|e| e.session == o.session && e.key == key)
        };
        let mut diff = self.remove_where(|o, key| o.node == node && !keep(o, key));
        let delta = PresenceDelta {
            joins: entries.to_vec(),
            leaves: Vec::new(),
        };
        diff.extend(self.apply_remote(node, &delta, bounds));
        diff
    }

    /// Removes every meta of `node` (dead or shut down).
    pub fn remove_node(&mut self, node: NodeRef) -> PresenceDiff {
        self.remove_where(|o, _| o.node == node)
    }

    /// This node's entries, for another node syncing the room.
    pub fn local_entries(&self) -> Vec<PresenceEntry> {
        let mut out = Vec::new();
        for (key, metas) in &self.by_key {
            for m in metas.iter().filter(|m| m.owner.node == LOCAL_NODE) {
                out.push(entry(key, m));
            }
        }
        out
    }

    fn remove_where(&mut self, doomed: impl Fn(&Owner, &str) -> bool) -> PresenceDiff {
        let mut gone = Vec::new();
        for (key, metas) in &self.by_key {
            for m in metas.iter().filter(|m| doomed(&m.owner, key)) {
                gone.push((m.owner, key.clone()));
            }
        }
        let mut diff = PresenceDiff::default();
        for (owner, key) in gone {
            diff.extend(self.remove(owner, &key));
        }
        diff
    }

    fn remove(&mut self, owner: Owner, key: &str) -> PresenceDiff {
        let mut diff = PresenceDiff::default();
        if let Some(metas) = self.by_key.get_mut(key) {
            if let Some(pos) = metas.iter().position(|m| m.owner == owner) {
                let meta = metas.remove(pos);
                self.metas -= 1;
                self.state_bytes -= meta.cost_bytes;
                diff.leaves.push((key.to_owned(), meta));
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
        debug_assert_eq!(
            self.metas,
            self.by_key.values().map(Vec::len).sum::<usize>()
        );
        self.metas
    }

    /// An upper bound of the encoded `presence_state`, in bytes.
    pub fn state_bytes(&self) -> usize {
        self.state_bytes
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

    /// F5: the per-key, per-room and state-size bounds refuse a track (changing nothing), a
    /// re-track within them updates in place, and an untrack gives the room's budget back.
    #[test]
    fn tracks_past_the_bounds_are_refused_and_untrack_frees_the_budget() {
        let bounds = PresenceBounds {
            metas_per_key_max: 2,
            metas_max: 3,
            state_bytes_max: 1_000,
        };
        let mut p = PresenceState::default();
        assert!(p.try_track(1, "a", Map::new(), &bounds).is_ok());
        assert!(p.try_track(2, "a", Map::new(), &bounds).is_ok());
        assert_eq!(
            p.try_track(3, "a", Map::new(), &bounds).unwrap_err(),
            PresenceFull::MetasPerKey
        );
        assert!(p.try_track(3, "b", Map::new(), &bounds).is_ok());
        assert_eq!(
            p.try_track(4, "c", Map::new(), &bounds).unwrap_err(),
            PresenceFull::Metas
        );
        let big = meta(json!({ "blob": "x".repeat(900) }));
        assert_eq!(
            p.try_track(1, "a", big.clone(), &bounds).unwrap_err(),
            PresenceFull::StateBytes
        );
        assert_eq!(p.len(), 3);
        let before = p.state_bytes();
        assert!(before <= 1_000);
        p.untrack(2, "a");
        p.untrack(3, "b");
        assert!(
            p.try_track(1, "a", big, &bounds).is_ok(),
            "re-track within the budget"
        );
        assert!(
            p.state_bytes() >= p.state_json().len(),
            "the bound never undercounts"
        );
    }

    fn remote_entry(session: u64, key: &str, phx_ref: &str, v: Value) -> PresenceEntry {
        PresenceEntry {
            session,
            key: key.into(),
            phx_ref: phx_ref.into(),
            meta: meta(v),
        }
    }

    /// Another node's metas keep their `phx_ref`; a join seen again (its snapshot after its
    /// delta) announces nothing; only this node's own changes go out to other nodes.
    #[test]
    fn remote_metas_keep_their_ref_and_repeats_are_silent() {
        let mut p = PresenceState::default();
        let local = p.track(1, "me", Map::new());
        assert_eq!(local.local_delta().joins.len(), 1);
        let delta = PresenceDelta {
            joins: vec![remote_entry(1, "them", "r-7", json!({"at": "b"}))],
            leaves: vec![],
        };
        let b = PresenceBounds::UNBOUNDED;
        let d: Value = serde_json::from_str(&p.apply_remote(9, &delta, &b).to_json()).unwrap();
        assert_eq!(d["joins"]["them"]["metas"][0]["phx_ref"], "r-7");
        let again = p.apply_remote(9, &delta, &b);
        assert!(again.is_empty());
        assert!(
            again.local_delta().is_empty(),
            "remote changes are not sent back"
        );
        assert_eq!(p.len(), 2);
        assert_eq!(
            p.local_entries().len(),
            1,
            "only this node's entries are shared"
        );
    }

    /// A snapshot replaces what was held for its node (absent entries leave); a departed node's
    /// metas all leave; sessions with the same id on two nodes are different members.
    #[test]
    fn snapshots_replace_a_node_and_departures_remove_it() {
        let mut p = PresenceState::default();
        let b = PresenceBounds::UNBOUNDED;
        p.track(1, "local", Map::new());
        let first = vec![
            remote_entry(1, "a", "r1", json!({})),
            remote_entry(2, "b", "r2", json!({})),
        ];
        p.replace_node(7, &first, &b);
        p.replace_node(8, &[remote_entry(1, "c", "r3", json!({}))], &b);
        assert_eq!(p.len(), 4);
        let d: Value = serde_json::from_str(
            &p.replace_node(7, &[remote_entry(2, "b", "r2", json!({}))], &b)
                .to_json(),
        )
        .unwrap();
        assert_eq!(keys_of(&d["leaves"]), ["a"]);
        assert_eq!(keys_of(&d["joins"]), Vec::<String>::new());
        let d: Value = serde_json::from_str(&p.remove_node(7).to_json()).unwrap();
        assert_eq!(keys_of(&d["leaves"]), ["b"]);
        let state: Value = serde_json::from_str(&p.state_json()).unwrap();
        assert_eq!(keys_of(&state), ["c", "local"]);
    }

    fn keys_of(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
}
