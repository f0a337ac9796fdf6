//! The storage writer actor: gathers durable publications into batches, writes each batch in
//! one transaction, and only then acknowledges and delivers them.
//!
//! Takes [`Append`]. A batch is written when it holds `batch_rows_max` publications or
//! `flush_interval_ms` after its first one. While a batch is being written the mailbox keeps
//! filling (that is where the next batch comes from); the mailbox holds
//! `inflight_publications_max` appends and publishers use `try_send`, so past the bound they get
//! `StorageBusy` at once — never a silent drop.
//!
//! After commit, in offset order: the publication enters the history window, is handed to the
//! broker with its `{offset, epoch}`, and its publisher's completion fires. A batch failing
//! transiently is retried with jittered exponential backoff for up to `retry_window_ms`
//! (storage health reads "degraded" meanwhile); then its publishers get `StorageUnavailable`.
//! Nothing is acknowledged before its commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backon::{BackoffBuilder, ExponentialBuilder};
use locus_storage::{AnyStore, Appended, NewPublication, Storage, StoreError};
use tokio::sync::oneshot;

use crate::broker::{Broker, Durable, Publication};
use crate::config::StorageLimits;
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

/// Whether the last storage attempt failed (the engine is serving, storage is not).
#[derive(Clone, Default)]
pub struct StorageHealth(Arc<AtomicBool>);

impl StorageHealth {
    pub fn is_degraded(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set_degraded(&self, degraded: bool) {
        self.0.store(degraded, Ordering::Relaxed);
    }
}

pub struct StorageWriter {
    store: AnyStore,
    broker: Arc<dyn Broker>,
    cache: HistoryCache,
    limits: StorageLimits,
    health: StorageHealth,
    buffer: Vec<Append>,
    flush_timer: Option<SpawnHandle>,
}

impl StorageWriter {
    pub fn new(
        store: AnyStore,
        broker: Arc<dyn Broker>,
        cache: HistoryCache,
        limits: StorageLimits,
        health: StorageHealth,
    ) -> Self {
        StorageWriter {
            store,
            broker,
            cache,
            limits,
            health,
            buffer: Vec::new(),
            flush_timer: None,
        }
    }
}

impl Actor for StorageWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.inflight_publications_max);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        // Flush what is buffered before stopping; the flush runs under `ctx.wait`.
        if !self.buffer.is_empty() {
            self.flush(ctx);
            return Running::Continue;
        }
        Running::Stop
    }
}

impl Handler<Append> for StorageWriter {
    type Result = ();

    /// Buffers the append; flushes when the batch is full, or arms the flush deadline.
    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) {
        self.buffer.push(msg);
        if self.buffer.len() >= self.limits.batch_rows_max {
            self.flush(ctx);
        } else if self.flush_timer.is_none() {
            let after = Duration::from_millis(self.limits.flush_interval_ms);
            self.flush_timer = Some(ctx.run_later(after, |act, ctx| {
                act.flush_timer = None;
                act.flush(ctx);
            }));
        }
    }
}

impl StorageWriter {
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.flush_timer.take() {
            ctx.cancel_future(t);
        }
        if self.buffer.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer);
        let (records, rest): (Vec<NewPublication>, Vec<(Publication, Completion)>) = batch
            .into_iter()
            .map(|a| (a.record, (a.delivery, a.done)))
            .unzip();
        m::storage_batch_rows().record(records.len() as f64);
        let write = write_with_retry(
            self.store.clone(),
            records,
            self.limits.clone(),
            self.health.clone(),
        );
        ctx.wait(
            write
                .into_actor(self)
                .map(move |(records, result), act, _| act.complete(records, rest, result)),
        );
    }

    /// Delivers and acknowledges a committed batch, or fails its publishers.
    fn complete(
        &mut self,
        records: Vec<NewPublication>,
        rest: Vec<(Publication, Completion)>,
        result: Result<Vec<Appended>, StoreError>,
    ) {
        m::storage_queue_depth().decrement(records.len() as f64);
        let outcomes = match result {
            Ok(o) => o,
            Err(e) => {
                let err = if e.is_transient() {
                    DurableError::Unavailable(e.to_string())
                } else {
                    DurableError::Failed(e.to_string())
                };
                for (_, done) in rest {
                    let _ = done.send(Err(err.clone()));
                }
                return;
            }
        };
        debug_assert_eq!(outcomes.len(), records.len());
        for ((record, (mut publication, done)), outcome) in
            records.into_iter().zip(rest).zip(outcomes)
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

/// Something the storage actors write in batches.
pub trait Batchable: Sized + Send + 'static {
    type Outcome: Send + 'static;
    /// Writes one batch in one transaction.
    fn write(
        store: &AnyStore,
        batch: &[Self],
    ) -> impl std::future::Future<Output = Result<Vec<Self::Outcome>, StoreError>> + Send;
}

impl Batchable for NewPublication {
    type Outcome = Appended;
    async fn write(store: &AnyStore, batch: &[Self]) -> Result<Vec<Appended>, StoreError> {
        store.append(batch).await
    }
}

impl Batchable for locus_storage::NewGeoMessage {
    type Outcome = locus_storage::GeoAppended;
    async fn write(store: &AnyStore, batch: &[Self]) -> Result<Vec<Self::Outcome>, StoreError> {
        store.append_geo(batch).await
    }
}

/// Writes `records`, retrying transient failures with jittered exponential backoff for up to
/// `retry_window_ms`. Returns the records (for delivery) with the outcome.
pub(crate) async fn write_with_retry<T: Batchable>(
    store: AnyStore,
    records: Vec<T>,
    limits: StorageLimits,
    health: StorageHealth,
) -> (Vec<T>, Result<Vec<T::Outcome>, StoreError>) {
    let mut delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(limits.retry_delay_ms_min))
        .with_max_delay(Duration::from_millis(limits.retry_delay_ms_max))
        .without_max_times()
        .build();
    // Wall time, not summed delays: each failed attempt can itself take a while (a pool
    // timeout), and the window bounds how long publishers wait.
    let give_up_at = Instant::now() + Duration::from_millis(limits.retry_window_ms);
    loop {
        let started = Instant::now();
        match T::write(&store, &records).await {
            Ok(outcomes) => {
                m::storage_commit_latency().record(started.elapsed().as_secs_f64());
                health.set_degraded(false);
                return (records, Ok(outcomes));
            }
            Err(e) if e.is_transient() => {
                health.set_degraded(true);
                match delays.next().filter(|d| Instant::now() + *d < give_up_at) {
                    Some(delay) => {
                        m::storage_retry();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, rows = records.len(), "storage write failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        m::storage_failure("retries_exhausted");
                        tracing::error!(error = %e, rows = records.len(), "storage write failed past retry_window_ms");
                        return (records, Err(e));
                    }
                }
            }
            Err(e) => {
                m::storage_failure(e.reason());
                tracing::error!(error = %e, rows = records.len(), "storage write failed");
                return (records, Err(e));
            }
        }
    }
}
