//! The storage writer actor: gathers durable publications into batches, writes each batch in
//! one transaction, and only then acknowledges and delivers them.
//!
//! Takes [`Append`]; batching, the mailbox and byte bounds (past them publishers get
//! `StorageBusy`), record checks and retries are the [`BatchWriter`]'s. After commit, in offset
//! order: the publication enters the history window, is handed to the broker with its
//! `{offset, epoch}`, and its publisher's completion fires. When retries give up, its
//! publishers get `StorageUnavailable`; a record refused by its check gets `InvalidPayload` or
//! `ClientIdTooLong`, one the database refused `StorageError`.

use std::sync::Arc;

use actix::prelude::*;
use locus_storage::{Appended, NewPublication, RecordError, StoreError};
use tokio::sync::oneshot;

pub use crate::batch_writer::StorageHealth;
use crate::batch_writer::{BatchSink, BatchWriter, InflightPermit};
use crate::broker::{Broker, Durable, Publication};
use crate::history::{CachedPublication, HistoryCache};
use crate::metrics as m;

/// Why a durable publication was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurableError {
    #[error("StorageBusy: too many durable publications in flight, retry later")]
    Busy,
    #[error("StorageUnavailable: {0}")]
    Unavailable(String),
    #[error("StorageError: {0}")]
    Failed(String),
    /// The record cannot be stored as sent (`InvalidPayload`, `ClientIdTooLong`).
    #[error("{code}: {0}", code = .0.code())]
    Invalid(RecordError),
}

impl DurableError {
    /// The stable code (`StorageBusy`, …) for replies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DurableError::Busy => "StorageBusy",
            DurableError::Unavailable(_) => "StorageUnavailable",
            DurableError::Failed(_) => "StorageError",
            DurableError::Invalid(e) => e.code(),
        }
    }

    /// The publisher-facing error for a batch whose write failed.
    pub fn from_store(e: &StoreError) -> DurableError {
        match e {
            StoreError::Invalid(r) => DurableError::Invalid(r.clone()),
            e if e.is_transient() => DurableError::Unavailable(e.to_string()),
            e => DurableError::Failed(e.to_string()),
        }
    }
}

/// Completion of one durable publication.
pub type Completion = oneshot::Sender<Result<Appended, DurableError>>;

/// Store `record`, then deliver `delivery` and complete `done`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Append {
    /// Shares its payload with `delivery` (no second copy while it waits).
    pub record: NewPublication,
    pub delivery: Publication,
    pub done: Completion,
    /// The record's bytes reserved in the writer's in-flight budget, released on completion.
    pub permit: InflightPermit,
}

/// The durable-topic writer.
pub type StorageWriter = BatchWriter<DurableSink>;

/// After commit: the history window, the broker, the publisher's completion.
pub struct DurableSink {
    broker: Arc<dyn Broker>,
    cache: HistoryCache,
}

impl DurableSink {
    pub fn new(broker: Arc<dyn Broker>, cache: HistoryCache) -> Self {
        DurableSink { broker, cache }
    }
}

impl BatchSink for DurableSink {
    type Item = Append;
    type Record = NewPublication;
    type Ticket = (Publication, Completion, InflightPermit);

    fn split(a: Append) -> (NewPublication, Self::Ticket) {
        (a.record, (a.delivery, a.done, a.permit))
    }

    /// Delivers and acknowledges the committed publications of a batch, and fails the
    /// publishers of the others. Each permit is released as its record is done with.
    fn complete(
        &mut self,
        records: Vec<NewPublication>,
        tickets: Vec<Self::Ticket>,
        results: Vec<Result<Appended, StoreError>>,
    ) {
        m::storage_queue_depth().decrement(records.len() as f64);
        debug_assert_eq!(results.len(), records.len());
        for ((record, (mut publication, done, _permit)), result) in
            records.into_iter().zip(tickets).zip(results)
        {
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    let _ = done.send(Err(DurableError::from_store(&e)));
                    continue;
                }
            };
            if !outcome.duplicate {
                let epoch: Arc<str> = Arc::from(outcome.epoch.as_str());
                let client_id: Option<Arc<str>> = record.client_id.as_deref().map(Arc::from);
                let cached = Arc::new(CachedPublication {
                    offset: outcome.offset,
                    event: publication.event.clone(),
                    body: publication.body.clone(),
                    client_id: client_id.clone(),
                    created_at_ms: outcome.created_at_ms,
                });
                self.cache.push(&publication.topic, &epoch, cached);
                publication.durable = Some(Durable {
                    offset: outcome.offset,
                    epoch,
                    client_id,
                    replayed: false,
                });
                // A refused live delivery is counted by the broker; the publication is stored
                // and reaches members through recovery.
                let _ = self.broker.publish(publication);
            }
            let _ = done.send(Ok(outcome));
        }
    }
}
