//! The batching actor behind both storage writers: gathers what publishers send into batches,
//! writes each batch in one transaction with retries, and hands the outcomes to its sink.
//!
//! A batch is written when it holds `batch_rows_max` records or `flush_interval_ms` after its
//! first one. While a batch is being written the mailbox keeps filling (that is where the next
//! batch comes from); the mailbox holds `inflight_publications_max` items and publishers use
//! `try_send`, so past the bound they are refused at once — never a silent drop. A batch
//! failing transiently is retried with jittered exponential backoff for up to
//! `retry_window_ms` (storage health reads "degraded" meanwhile). Nothing is completed before
//! its commit; on stop, what is buffered is written first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backon::{BackoffBuilder, ExponentialBuilder};
use locus_storage::{AnyStore, Appended, NewPublication, Storage, StoreError};

use crate::config::StorageLimits;
use crate::metrics as m;

/// What a [`BatchWriter`] does around the write: how an incoming message splits into the
/// record to store and what waits for the outcome, and what happens after the commit.
pub trait BatchSink: Sized + Unpin + 'static {
    /// The message publishers send.
    type Item: Message<Result = ()> + Send + 'static;
    type Record: Batchable;
    /// What waits while the record is written (a completion, a delivery).
    type Ticket: Unpin + 'static;

    fn split(item: Self::Item) -> (Self::Record, Self::Ticket);

    /// Called once per batch, after its commit or after its retries gave up.
    fn complete(
        &mut self,
        records: Vec<Self::Record>,
        tickets: Vec<Self::Ticket>,
        result: Result<Vec<<Self::Record as Batchable>::Outcome>, StoreError>,
    );
}

pub struct BatchWriter<S: BatchSink> {
    store: AnyStore,
    limits: StorageLimits,
    health: StorageHealth,
    sink: S,
    records: Vec<S::Record>,
    tickets: Vec<S::Ticket>,
    flush_timer: Option<SpawnHandle>,
}

impl<S: BatchSink> BatchWriter<S> {
    pub fn new(store: AnyStore, limits: StorageLimits, health: StorageHealth, sink: S) -> Self {
        BatchWriter {
            store,
            limits,
            health,
            sink,
            records: Vec::new(),
            tickets: Vec::new(),
            flush_timer: None,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.flush_timer.take() {
            ctx.cancel_future(t);
        }
        if self.records.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.records);
        let tickets = std::mem::take(&mut self.tickets);
        m::storage_batch_rows().record(records.len() as f64);
        let write = write_with_retry(
            self.store.clone(),
            records,
            self.limits.clone(),
            self.health.clone(),
        );
        // `wait`, not `spawn`: one batch at a time keeps offsets and completions in order.
        ctx.wait(
            write
                .into_actor(self)
                .map(move |(records, result), act, _| act.sink.complete(records, tickets, result)),
        );
    }
}

impl<S: BatchSink> Actor for BatchWriter<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.inflight_publications_max);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        if !self.records.is_empty() {
            self.flush(ctx);
            return Running::Continue;
        }
        Running::Stop
    }
}

impl<S: BatchSink> Handler<S::Item> for BatchWriter<S> {
    type Result = ();

    /// Buffers the item; flushes when the batch is full, or arms the flush deadline.
    fn handle(&mut self, item: S::Item, ctx: &mut Self::Context) {
        let (record, ticket) = S::split(item);
        self.records.push(record);
        self.tickets.push(ticket);
        if self.records.len() >= self.limits.batch_rows_max {
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

/// Something the storage actors write in batches.
pub trait Batchable: Sized + Send + Unpin + 'static {
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
async fn write_with_retry<T: Batchable>(
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
