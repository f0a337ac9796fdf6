//! The storage writer actor: gathers durable publications into batches, writes each batch in
//! one transaction, and only then acknowledges and delivers them.
//!
//! Takes [`Append`]; batching, the mailbox bound (past it publishers get `StorageBusy`) and
//! retries are the [`BatchWriter`]'s. After commit, in offset order: the publication enters the
//! history window, is handed to the broker with its `{offset, epoch}`, and its publisher's
//! completion fires. When retries give up, its publishers get `StorageUnavailable`.

use std::sync::Arc;

use actix::prelude::*;
use locus_storage::{Appended, NewPublication, StoreError};
use tokio::sync::oneshot;

pub use crate::batch_writer::StorageHealth;
use crate::batch_writer::{BatchSink, BatchWriter};
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
}

impl DurableError {
    /// The stable code (`StorageBusy`, …) for replies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DurableError::Busy => "StorageBusy",
            DurableError::Unavailable(_) => "StorageUnavailable",
            DurableError::Failed(_) => "StorageError",
        }
    }

    /// The publisher-facing error for a batch whose write failed.
    pub fn from_store(e: &StoreError) -> DurableError {
        if e.is_transient() {
            DurableError::Unavailable(e.to_string())
        } else {
            DurableError::Failed(e.to_string())
        }
    }
}

/// Completion of one durable publication.
pub type Completion = oneshot::Sender<Result<Appended, DurableError>>;

/// Store `record`, then deliver `delivery` and complete `done`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Append {
    pub record: NewPublication,
    pub delivery: Publication,
    pub done: Completion,
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
    type Ticket = (Publication, Completion);

    fn split(a: Append) -> (NewPublication, (Publication, Completion)) {
        (a.record, (a.delivery, a.done))
    }

    /// Delivers and acknowledges a committed batch, or fails its publishers.
    fn complete(
        &mut self,
        records: Vec<NewPublication>,
        tickets: Vec<(Publication, Completion)>,
        result: Result<Vec<Appended>, StoreError>,
    ) {
        m::storage_queue_depth().decrement(records.len() as f64);
        let outcomes = match result {
            Ok(o) => o,
            Err(e) => {
                let err = DurableError::from_store(&e);
                for (_, done) in tickets {
                    let _ = done.send(Err(err.clone()));
                }
                return;
            }
        };
        debug_assert_eq!(outcomes.len(), records.len());
        for ((record, (mut publication, done)), outcome) in
            records.into_iter().zip(tickets).zip(outcomes)
        {
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
