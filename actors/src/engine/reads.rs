//! What the engine answers without publishing: a durable topic's history page (behind the
//! access check, like a join), the nearby query, and the health of its parts.

use std::time::Duration;

use locus_storage::{History, NearbyHit, NearbyQuery, Storage, StoreError};

use super::Engine;
use crate::auth::{Action, Identity};
use crate::refusal::Refusal;
use crate::topic::Topic;

/// A store that does not answer within this long is reported down.
const STORAGE_PING_TIMEOUT_MS: u64 = 1_000;

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The access check or a bound refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The topic keeps no history (not in `storage.durable_topics`).
    #[error("this topic keeps no history")]
    NotDurable,
    /// `limit` outside `1..=storage.history_page_max`.
    #[error("limit must be 1..={0}")]
    InvalidLimit(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of a topic's history.
pub struct HistoryPage {
    pub history: History,
    /// The `since_offset` of the next page; `None` once the page reaches the newest message.
    pub next_since_offset: Option<u64>,
}

/// The state of each part, for `/api/health`.
pub struct Health {
    pub broker_name: &'static str,
    pub broker_ok: bool,
    pub storage_backend: &'static str,
    pub storage_reachable: bool,
    /// The last storage write failed (and is being retried).
    pub storage_degraded: bool,
    pub connections: usize,
    pub rooms: usize,
}

impl Engine {
    /// Up to `limit` (default and most `storage.history_page_max`) publications of `topic`
    /// after `since_offset`, within `storage.history_page_bytes_max`. Reading history is
    /// reading the channel: `who` must be allowed to join it (`private` as a join says).
    pub async fn history_page(
        &self,
        who: &Identity,
        topic: &Topic,
        private: bool,
        since_offset: u64,
        limit: Option<usize>,
    ) -> Result<HistoryPage, ReadError> {
        self.authorize(who, topic, private, Action::Join)?;
        // A private channel's history is its own (private and public joins are kept apart).
        let key = topic.room_key(private);
        if !self.is_durable(&key) {
            return Err(ReadError::NotDurable);
        }
        let limits = self.storage_limits();
        let max = limits.history_page_max;
        let limit = limit.unwrap_or(max);
        if limit == 0 || limit > max {
            return Err(ReadError::InvalidLimit(max));
        }
        let history = self
            .store()
            .history(&key, since_offset, limit, limits.history_page_bytes_max)
            .await?;
        let next_since_offset = history
            .publications
            .last()
            .map(|p| p.offset)
            .filter(|&last| last.saturating_add(1) < history.next_offset);
        Ok(HistoryPage {
            history,
            next_since_offset,
        })
    }

    /// Stored geo messages within the query's circle, nearest first.
    pub async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyHit>, StoreError> {
        self.store().nearby(query).await
    }

    /// Pings the store (bounded by a timeout) and reads each part's state.
    pub async fn health(&self) -> Health {
        let broker = self.inner.delivery.broker();
        let ping = tokio::time::timeout(
            Duration::from_millis(STORAGE_PING_TIMEOUT_MS),
            self.store().ping(),
        )
        .await;
        Health {
            broker_name: broker.name(),
            broker_ok: broker.is_healthy(),
            storage_backend: self.store().backend(),
            storage_reachable: matches!(ping, Ok(Ok(()))),
            storage_degraded: self.storage_health().is_degraded(),
            connections: self.connections(),
            rooms: self.rooms_running(),
        }
    }
}
