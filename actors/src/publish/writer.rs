//! The storage writer actor: gathers durable publications into batches, writes each batch in
//! one transaction, and only then acknowledges and delivers them.
//!
//! Takes [`Append`]; batching, the mailbox and byte bounds (past them publishers get
//! `StorageBusy`), record checks and retries are the [`BatchWriter`]'s. After commit, in offset
//! order: the engine's [`Delivery`] puts the publication in the history window and hands it to
//! the broker with its `{offset, epoch}`, then its publisher's completion fires. When retries give up, its
//! publishers get `StorageUnavailable`; a record refused by its check gets `InvalidPayload` or
//! `ClientIdTooLong`, one the database refused `StorageError`.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use locus_protocol::PayloadEncoding;
use locus_storage::{AnyStore, Appended, NewPublication, RecordError, StoreError};
use tokio::sync::oneshot;

use crate::broker::{Body, Publication};
use crate::config::StorageLimits;
use crate::metrics as m;
pub use crate::publish::batch_writer::StorageHealth;
use crate::publish::batch_writer::{BatchSink, BatchWriter, InflightBytes, InflightPermit, Stop};
use crate::publish::delivery::Delivery;
use crate::refusal::{Code, Refusal};

/// Why a durable publication (or geo message) was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.code(), self.detail())]
pub enum DurableError {
    /// The writer holds `inflight_publications_max` publications or `inflight_bytes_max` bytes.
    Busy,
    Unavailable(String),
    Failed(String),
    /// The record cannot be stored as sent (`InvalidPayload`, `ClientIdTooLong`).
    Invalid(RecordError),
}

impl DurableError {
    /// The stable code (`StorageBusy`, …) for replies and metrics.
    pub fn code(&self) -> &'static str {
        self.refusal_code().as_str()
    }

    fn refusal_code(&self) -> Code {
        match self {
            DurableError::Busy => Code::StorageBusy,
            DurableError::Unavailable(_) => Code::StorageUnavailable,
            DurableError::Failed(_) => Code::StorageError,
            DurableError::Invalid(RecordError::ClientIdTooLong) => Code::ClientIdTooLong,
            DurableError::Invalid(_) => Code::InvalidPayload,
        }
    }

    /// The human part, without the code.
    pub fn detail(&self) -> String {
        match self {
            DurableError::Busy => "too many durable publications in flight, retry later".into(),
            DurableError::Unavailable(m) | DurableError::Failed(m) => m.clone(),
            DurableError::Invalid(r) => r.to_string(),
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

impl From<DurableError> for Refusal {
    fn from(e: DurableError) -> Refusal {
        Refusal::new(e.refusal_code(), e.detail())
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

/// After commit: the engine's delivery (history window, broker), then the publisher's
/// completion.
pub struct DurableSink {
    delivery: Delivery,
}

impl DurableSink {
    pub fn new(delivery: Delivery) -> Self {
        DurableSink { delivery }
    }
}

impl BatchSink for DurableSink {
    type Item = Append;
    type Record = NewPublication;
    type Ticket = (Publication, Completion, InflightPermit);

    fn split(a: Append) -> (NewPublication, Self::Ticket) {
        (a.record, (a.delivery, a.done, a.permit))
    }

    /// Delivers and acknowledges the committed publications of a batch, in offset order, and
    /// fails the publishers of the others. Each permit is released as its record is done with.
    fn complete(
        &mut self,
        records: Vec<NewPublication>,
        tickets: Vec<Self::Ticket>,
        results: Vec<Result<Appended, StoreError>>,
    ) {
        m::storage_queue_depth().decrement(records.len() as f64);
        debug_assert_eq!(results.len(), records.len());
        debug_assert_eq!(tickets.len(), records.len());
        for ((record, (publication, done, _permit)), result) in
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
                self.delivery.committed(
                    publication,
                    outcome.offset,
                    Arc::from(outcome.epoch.as_str()),
                    record.client_id.as_deref().map(Arc::from),
                    outcome.created_at_ms,
                );
            }
            let _ = done.send(Ok(outcome));
        }
    }
}

/// The durable-topic writers: a topic's publications all go to `writers[hash(topic) % len]`,
/// so each topic keeps its order while `storage.writers` batches commit in parallel.
#[derive(Clone)]
pub struct DurableWriters {
    writers: Arc<[Addr<StorageWriter>]>,
    /// Each writer's in-flight bytes (`storage.inflight_bytes_max`), by the same index.
    inflight: Arc<[InflightBytes]>,
}

impl DurableWriters {
    /// Starts `limits.writers` writers on the current arbiter.
    pub fn start(
        store: &AnyStore,
        limits: &StorageLimits,
        health: &StorageHealth,
        delivery: &Delivery,
    ) -> Self {
        let writers: Vec<_> = (0..limits.writers)
            .map(|_| {
                let sink = DurableSink::new(delivery.clone());
                StorageWriter::new(store.clone(), limits.clone(), health.clone(), sink).start()
            })
            .collect();
        let inflight: Vec<_> = (0..limits.writers)
            .map(|_| InflightBytes::new(limits.inflight_bytes_max))
            .collect();
        DurableWriters {
            writers: writers.into(),
            inflight: inflight.into(),
        }
    }

    fn index(&self, topic: &str) -> usize {
        use std::hash::BuildHasher;
        // A fixed-key hasher: the same topic must map to the same writer for the process's life.
        let hash =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(topic);
        (hash % self.writers.len() as u64) as usize
    }

    /// Hands a publication of a durable topic to its writer without waiting. The receiver
    /// completes after commit (the publication is then delivered with its offset), or with the
    /// reason it was not stored. `client_id` makes re-sends by the same user idempotent.
    /// Refused with `StorageBusy` when the writer holds `inflight_publications_max`
    /// publications or `inflight_bytes_max` bytes.
    pub fn append(
        &self,
        publication: Publication,
        user_id: Option<&str>,
        client_id: Option<String>,
    ) -> Result<oneshot::Receiver<Result<Appended, DurableError>>, DurableError> {
        // The record shares the payload's buffer with the delivery instead of copying it.
        let (encoding, payload) = match &publication.body {
            Body::Json(p) | Body::Event(p) => (
                locus_storage::Encoding::Json,
                Bytes::from_owner(JsonBytes(p.clone())),
            ),
            Body::Binary {
                encoding: PayloadEncoding::Json,
                data,
            } => (locus_storage::Encoding::Json, data.clone()),
            Body::Binary {
                encoding: PayloadEncoding::Binary,
                data,
            } => (locus_storage::Encoding::Binary, data.clone()),
        };
        let idem_key = match (&client_id, user_id) {
            (Some(id), user) => format!("u:{}:{id}", user.unwrap_or("")),
            (None, _) => format!("s:{}", crate::ids::generated_key()),
        };
        let record = NewPublication {
            topic: publication.topic.to_string(),
            event: publication.event.clone(),
            encoding,
            payload,
            user_id: user_id.map(str::to_owned),
            client_id,
            idem_key,
            created_at_ms: locus_storage::now_ms(),
        };
        let writer = self.index(&publication.topic);
        let Some(permit) = self.inflight[writer].admit(record.size_bytes()) else {
            m::storage_refused("inflight_bytes");
            return Err(DurableError::Busy);
        };
        let (done, completion) = oneshot::channel();
        self.writers[writer]
            .try_send(Append {
                record,
                delivery: publication,
                done,
                permit,
            })
            .map_err(|_| {
                m::storage_refused("inflight_publications");
                DurableError::Busy
            })?;
        m::storage_queue_depth().increment(1.0);
        Ok(completion)
    }

    /// Writes what every writer holds and stops them, awaited.
    pub async fn stop(&self) {
        stop_all(self.writers.iter().map(|w| w.clone().recipient())).await;
    }
}

/// Sends [`Stop`] to each writer and waits until each has written what it held.
pub async fn stop_all(writers: impl IntoIterator<Item = Recipient<Stop>>) {
    let stops = writers.into_iter().map(|w| {
        let (done, stopped) = oneshot::channel();
        // A writer that already stopped has nothing left to write.
        let sent = w.try_send(Stop { done }).is_ok();
        async move {
            if sent {
                let _ = stopped.await;
            }
        }
    });
    futures_util::future::join_all(stops).await;
}

/// A JSON payload's text as the bytes of a stored record, without copying it.
struct JsonBytes(Arc<serde_json::value::RawValue>);

impl AsRef<[u8]> for JsonBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.get().as_bytes()
    }
}

crate::stop_handler!(DurableSink);
