//! Recovery on join: what a rejoining client missed (`config.recover`) or asked to replay
//! (`config.broadcast.replay`), read from the history window or the database before the join
//! reaches the room.

use std::sync::Arc;

use bytes::Bytes;
use locus_storage::Storage;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::broker::Body;
use crate::engine::StorageHandle;
use crate::history::{CachedPublication, Coverage};
use crate::room::Recovery;
use crate::wire::raw;

/// `config.recover`: the last publication the client saw.
#[derive(Deserialize, Clone)]
pub(crate) struct RecoverConfig {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
}

/// `config.broadcast.replay` (Supabase): publications since a time, in milliseconds.
#[derive(Deserialize, Clone)]
pub(crate) struct ReplayConfig {
    pub(crate) since: i64,
    #[serde(default)]
    pub(crate) limit: Option<usize>,
}

/// What a join asked to get back.
pub(crate) enum Wanted {
    Recover(RecoverConfig),
    Replay(ReplayConfig),
}

/// A stored publication as kept in memory and replayed.
fn cached(p: locus_storage::Stored) -> Arc<CachedPublication> {
    let body = match p.encoding {
        locus_storage::Encoding::Json => match String::from_utf8(p.payload)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
        {
            Some(json) => Body::Json(Arc::from(json)),
            None => Body::Json(Arc::from(raw("null".into()))),
        },
        locus_storage::Encoding::Binary => Body::Binary {
            encoding: locus_protocol::PayloadEncoding::Binary,
            data: Bytes::from(p.payload),
        },
    };
    Arc::new(CachedPublication {
        offset: p.offset,
        event: p.event,
        body,
        client_id: p.client_id.map(Arc::from),
        created_at_ms: p.created_at_ms,
    })
}

/// Reads what a joining client missed: from the history window when it covers the gap, else
/// from the database. The room adds what was committed after this read.
pub(crate) async fn prepare_recovery(
    storage: Option<&StorageHandle>,
    topic: &str,
    wanted: Wanted,
) -> Recovery {
    let not_possible = |replay: bool| Recovery {
        possible: false,
        epoch: None,
        after_offset: 0,
        entries: Vec::new(),
        replay,
    };
    let Some(storage) = storage else {
        // Only durable topics have a history.
        return not_possible(matches!(wanted, Wanted::Replay(_)));
    };
    match wanted {
        Wanted::Recover(r) => {
            let epoch: Arc<str> = Arc::from(r.epoch.as_str());
            if let Coverage::Covered(entries) = storage.cache.after(topic, &r.epoch, r.offset) {
                return Recovery {
                    possible: true,
                    epoch: Some(epoch),
                    after_offset: r.offset,
                    entries,
                    replay: false,
                };
            }
            let max = storage.limits.recover_publications_max;
            let Ok(h) = storage.store.history(topic, r.offset, max + 1).await else {
                return not_possible(false);
            };
            let same_epoch = h.epoch.as_deref() == Some(r.epoch.as_str());
            let first_missing = r.offset + 1;
            let gap_retained = match h.first_offset {
                Some(first) => first <= first_missing,
                None => h.next_offset <= first_missing,
            };
            if !same_epoch || !gap_retained || h.publications.len() > max {
                return not_possible(false);
            }
            let entries = h.publications.into_iter().map(cached).collect();
            Recovery {
                possible: true,
                epoch: Some(epoch),
                after_offset: r.offset,
                entries,
                replay: false,
            }
        }
        Wanted::Replay(r) => {
            let max = storage.limits.replay_publications_max;
            let limit = r.limit.unwrap_or(max).min(max);
            match storage.store.history_since(topic, r.since, limit).await {
                Ok(h) => {
                    let after_offset = h
                        .publications
                        .first()
                        .map_or(0, |p| p.offset.saturating_sub(1));
                    Recovery {
                        possible: true,
                        epoch: h.epoch.map(Arc::from),
                        after_offset,
                        entries: h.publications.into_iter().map(cached).collect(),
                        replay: true,
                    }
                }
                Err(_) => not_possible(true),
            }
        }
    }
}
