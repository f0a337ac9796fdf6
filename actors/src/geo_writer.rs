//! The geo writer: stores geo messages (`post`) in batches, like the storage writer does for
//! durable topics, and completes each post only after its batch committed.
//!
//! Takes [`GeoAppend`]; batching, the mailbox bound (refusal with `StorageBusy` past it), record
//! checks (NUL, id length: `InvalidPayload`, `ClientIdTooLong`) and retries are the
//! [`BatchWriter`]'s. Fan-out to cells is the poster's session's job once the
//! completion says "stored, not a duplicate".

use actix::prelude::*;
use locus_storage::{GeoAppended, NewGeoMessage, StoreError};
use tokio::sync::oneshot;

use crate::batch_writer::{BatchSink, BatchWriter};
use crate::storage_writer::DurableError;

/// Completion of one post.
pub type GeoCompletion = oneshot::Sender<Result<GeoAppended, DurableError>>;

/// Store one geo message; `done` completes after commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GeoAppend {
    pub record: NewGeoMessage,
    pub done: GeoCompletion,
}

/// The geo message writer.
pub type GeoWriter = BatchWriter<GeoSink>;

/// After commit: each poster's completion.
pub struct GeoSink;

impl BatchSink for GeoSink {
    type Item = GeoAppend;
    type Record = NewGeoMessage;
    type Ticket = GeoCompletion;

    fn split(a: GeoAppend) -> (NewGeoMessage, GeoCompletion) {
        (a.record, a.done)
    }

    fn complete(
        &mut self,
        _records: Vec<NewGeoMessage>,
        tickets: Vec<GeoCompletion>,
        results: Vec<Result<GeoAppended, StoreError>>,
    ) {
        debug_assert_eq!(tickets.len(), results.len());
        for (done, result) in tickets.into_iter().zip(results) {
            let _ = done.send(result.map_err(|e| DurableError::from_store(&e)));
        }
    }
}
