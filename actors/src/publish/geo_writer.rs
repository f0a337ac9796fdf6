//! The geo writer: stores geo messages (`post`) in batches, like the storage writer does for
//! durable topics, and completes each post only after its batch committed.
//!
//! Takes [`GeoAppend`]; batching, the mailbox bound (refusal with `StorageBusy` past it), record
//! checks (NUL, id length: `InvalidPayload`, `ClientIdTooLong`) and retries are the
//! [`BatchWriter`]'s. After commit, a message stored for the first time is fanned out by the
//! engine's [`Delivery`] (cells and geo rooms), whoever is still connected, then its poster's
//! completion fires.

use std::sync::Arc;

use actix::prelude::*;
use locus_storage::{GeoAppended, NewGeoMessage, StoreError};
use tokio::sync::oneshot;

use crate::geo::GeoPost;
use crate::publish::batch_writer::{BatchSink, BatchWriter};
use crate::publish::delivery::Delivery;
use crate::publish::writer::DurableError;

/// Completion of one post.
pub type GeoCompletion = oneshot::Sender<Result<GeoAppended, DurableError>>;

/// Called with a post's outcome right after its commit and before its fan-out, so whatever it
/// sends (the poster's reply) precedes the message itself on the poster's socket.
pub type OnStored = Box<dyn FnOnce(&Result<GeoAppended, DurableError>) + Send>;

/// Store one geo message; `done` completes after commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GeoAppend {
    pub record: NewGeoMessage,
    /// What members receive once it is stored (`created_at_ms` is set from the commit).
    pub post: GeoPost,
    pub done: GeoCompletion,
    pub on_stored: Option<OnStored>,
}

/// The geo message writer.
pub type GeoWriter = BatchWriter<GeoSink>;

/// After commit: the fan-out of new messages, then each poster's completion.
pub struct GeoSink {
    delivery: Delivery,
}

impl GeoSink {
    pub fn new(delivery: Delivery) -> Self {
        GeoSink { delivery }
    }
}

impl BatchSink for GeoSink {
    type Item = GeoAppend;
    type Record = NewGeoMessage;
    type Ticket = (GeoPost, GeoCompletion, Option<OnStored>);

    fn split(a: GeoAppend) -> (NewGeoMessage, Self::Ticket) {
        (a.record, (a.post, a.done, a.on_stored))
    }

    fn complete(
        &mut self,
        records: Vec<NewGeoMessage>,
        tickets: Vec<Self::Ticket>,
        results: Vec<Result<GeoAppended, StoreError>>,
    ) {
        debug_assert_eq!(tickets.len(), results.len());
        debug_assert_eq!(records.len(), results.len());
        for ((mut post, done, on_stored), result) in tickets.into_iter().zip(results) {
            let result = result.map_err(|e| DurableError::from_store(&e));
            if let Some(f) = on_stored {
                f(&result);
            }
            if let Ok(stored) = &result {
                if !stored.duplicate {
                    post.created_at_ms = stored.created_at_ms;
                    self.delivery.geo_committed(Arc::new(post));
                }
            }
            let _ = done.send(result);
        }
    }
}

crate::stop_handler!(GeoSink);
