//! The batching actor behind both storage writers: gathers what publishers send into batches,
//! writes each batch in one transaction with retries, and hands the outcomes to its sink.
//!
//! A batch is written when it holds `batch_rows_max` records or `flush_interval_ms` after its
//! first one. While a batch is being written the mailbox keeps filling (that is where the next
//! batch comes from); the mailbox holds `inflight_publications_max` items and publishers use
//! `try_send`, so past the bound they are refused at once — never a silent drop. Publishers of
//! durable topics also reserve the record's bytes in the writer's [`InflightBytes`] first
//! (`inflight_bytes_max`), released when the record is completed.
//!
//! A record that cannot be stored ([`Batchable::check`]) is completed with its error as it
//! arrives. A batch failing transiently is retried with jittered exponential backoff for up to
//! `retry_window_ms` (storage health reads "degraded" meanwhile). A batch in which the database
//! refuses a row is split in halves, down to the refused rows: only their publishers get the
//! error, the other rows commit, in order. Nothing is completed before its commit; on stop,
//! what is buffered is written first.
//!
//! Over 400 lines: the batching actor, its byte budget and the retry/split write path are one
//! mechanism; the rest is its tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backon::{BackoffBuilder, ExponentialBuilder};
use locus_storage::{AnyStore, Appended, NewPublication, RecordError, Storage, StoreError};
use tokio::sync::oneshot;

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

    /// Called once per batch, after its commit or after its retries gave up, with one result
    /// per record in input order; also for a single record refused by its `check`.
    fn complete(
        &mut self,
        records: Vec<Self::Record>,
        tickets: Vec<Self::Ticket>,
        results: Vec<Result<<Self::Record as Batchable>::Outcome, StoreError>>,
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
        self.flush_then(ctx, None);
    }

    /// Writes the batch; with `stop`, stops once it is completed (or at once when there is
    /// nothing to write) and fires `stop`. The stop rides on the write's own future: actix polls
    /// the most recent `wait` first, so a second `wait` would run before the write.
    fn flush_then(&mut self, ctx: &mut Context<Self>, stop: Option<oneshot::Sender<()>>) {
        if let Some(t) = self.flush_timer.take() {
            ctx.cancel_future(t);
        }
        if self.records.is_empty() {
            if let Some(done) = stop {
                ctx.stop();
                let _ = done.send(());
            }
            return;
        }
        let records = std::mem::take(&mut self.records);
        let tickets = std::mem::take(&mut self.tickets);
        m::storage_batch_rows().record(records.len() as f64);
        let (store, limits, health) =
            (self.store.clone(), self.limits.clone(), self.health.clone());
        let write = async move {
            let results = write_batch(&store, &records, &limits, &health).await;
            (records, results)
        };
        // `wait`, not `spawn`: one batch at a time keeps offsets and completions in order.
        ctx.wait(
            write
                .into_actor(self)
                .map(move |(records, results), act, ctx| {
                    act.sink.complete(records, tickets, results);
                    if let Some(done) = stop {
                        ctx.stop();
                        let _ = done.send(());
                    }
                }),
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

/// Write what is buffered, then stop; `done` fires once that batch is completed (the last step
/// of the engine's shutdown, after every session closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop {
    pub done: oneshot::Sender<()>,
}

impl<S: BatchSink> BatchWriter<S> {
    /// Writes what is buffered, and stops once that batch is completed.
    pub fn stop_after_flush(&mut self, Stop { done }: Stop, ctx: &mut Context<Self>) {
        self.flush_then(ctx, Some(done));
    }
}

/// `Handler<Stop>` for a writer of a concrete sink (a generic one would overlap with the
/// generic `Handler<S::Item>`).
#[macro_export]
macro_rules! stop_handler {
    ($sink:ty) => {
        impl actix::Handler<$crate::publish::batch_writer::Stop>
            for $crate::publish::batch_writer::BatchWriter<$sink>
        {
            type Result = ();

            /// Writes what is buffered, then stops.
            fn handle(
                &mut self,
                stop: $crate::publish::batch_writer::Stop,
                ctx: &mut actix::Context<Self>,
            ) {
                self.stop_after_flush(stop, ctx);
            }
        }
    };
}

impl<S: BatchSink> Handler<S::Item> for BatchWriter<S> {
    type Result = ();

    /// Buffers the item; flushes when the batch is full, or arms the flush deadline. A record
    /// that cannot be stored is completed with its error at once, so that it never reaches (and
    /// fails) a batch.
    fn handle(&mut self, item: S::Item, ctx: &mut Self::Context) {
        let (record, ticket) = S::split(item);
        if let Err(e) = record.check() {
            m::storage_failure("invalid");
            self.sink.complete(
                vec![record],
                vec![ticket],
                vec![Err(StoreError::Invalid(e))],
            );
            return;
        }
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

/// The bytes a writer holds accepted but not yet completed, shared with its publishers, who
/// reserve a record's bytes before they send it.
#[derive(Clone)]
pub struct InflightBytes {
    held: Arc<AtomicUsize>,
    max: usize,
}

/// Bytes reserved in an [`InflightBytes`]; released when dropped (after the record's
/// completion, or when it was never sent).
#[derive(Debug)]
pub struct InflightPermit {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl InflightBytes {
    pub fn new(max: usize) -> Self {
        InflightBytes {
            held: Arc::default(),
            max,
        }
    }

    /// Reserves `bytes`, or `None` when that would take the writer past its bound. A record
    /// alone larger than the bound is admitted to an idle writer, so it is not refused forever.
    pub fn admit(&self, bytes: usize) -> Option<InflightPermit> {
        let mut held = self.held.load(Ordering::Acquire);
        loop {
            if held > 0 && held.saturating_add(bytes) > self.max {
                return None;
            }
            match self.held.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(InflightPermit {
                        held: self.held.clone(),
                        bytes,
                    })
                }
                Err(now) => held = now,
            }
        }
    }

    /// Bytes reserved now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Something the storage actors write in batches.
pub trait Batchable: Sized + Send + Sync + Unpin + 'static {
    type Outcome: Send + 'static;
    /// Whether the record can be stored (checked as it reaches the writer).
    fn check(&self) -> Result<(), RecordError> {
        Ok(())
    }
    /// Writes one batch in one transaction.
    fn write(
        store: &AnyStore,
        batch: &[Self],
    ) -> impl std::future::Future<Output = Result<Vec<Self::Outcome>, StoreError>> + Send;
}

impl Batchable for NewPublication {
    type Outcome = Appended;
    fn check(&self) -> Result<(), RecordError> {
        NewPublication::check(self)
    }
    async fn write(store: &AnyStore, batch: &[Self]) -> Result<Vec<Appended>, StoreError> {
        store.append(batch).await
    }
}

impl Batchable for locus_storage::NewGeoMessage {
    type Outcome = locus_storage::GeoAppended;
    fn check(&self) -> Result<(), RecordError> {
        locus_storage::NewGeoMessage::check(self)
    }
    async fn write(store: &AnyStore, batch: &[Self]) -> Result<Vec<Self::Outcome>, StoreError> {
        store.append_geo(batch).await
    }
}

/// Writes `records` in one transaction, with one result per record in input order. Transient
/// failures are retried (see [`write_retrying`]) within one `retry_window_ms` for the whole
/// batch. When the database refuses a row ([`StoreError::Rejected`]), the batch is split in
/// halves and each half written on its own, recursively: the refused rows fail alone and the
/// others commit, in input order (left half first), in at most `2 × rows − 1` writes.
pub async fn write_batch<T: Batchable>(
    store: &AnyStore,
    records: &[T],
    limits: &StorageLimits,
    health: &StorageHealth,
) -> Vec<Result<T::Outcome, StoreError>> {
    // Wall time, not summed delays: each failed attempt can itself take a while (a pool
    // timeout), and the window bounds how long publishers wait.
    let give_up_at = Instant::now() + Duration::from_millis(limits.retry_window_ms);
    let mut results = Vec::with_capacity(records.len());
    // Ranges still to write, the next on top; a split pushes its right half first.
    let mut pending = vec![(0, records.len())];
    while let Some((start, end)) = pending.pop() {
        match write_retrying(store, &records[start..end], limits, health, give_up_at).await {
            Ok(outcomes) => {
                debug_assert_eq!(outcomes.len(), end - start);
                results.extend(outcomes.into_iter().map(Ok));
            }
            Err(StoreError::Rejected(e)) if end - start > 1 => {
                tracing::warn!(error = %e, rows = end - start, "a row was refused; splitting the batch");
                let mid = start + (end - start) / 2;
                pending.push((mid, end));
                pending.push((start, mid));
            }
            Err(e) => results.extend((start..end).map(|_| Err(e.clone()))),
        }
    }
    debug_assert_eq!(results.len(), records.len());
    results
}

/// Writes `records` in one transaction, retrying transient failures with jittered exponential
/// backoff until `give_up_at`.
async fn write_retrying<T: Batchable>(
    store: &AnyStore,
    records: &[T],
    limits: &StorageLimits,
    health: &StorageHealth,
    give_up_at: Instant,
) -> Result<Vec<T::Outcome>, StoreError> {
    let mut delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(limits.retry_delay_ms_min))
        .with_max_delay(Duration::from_millis(limits.retry_delay_ms_max))
        .without_max_times()
        .build();
    loop {
        let started = Instant::now();
        match T::write(store, records).await {
            Ok(outcomes) => {
                m::storage_commit_latency().record(started.elapsed().as_secs_f64());
                health.set_degraded(false);
                return Ok(outcomes);
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
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                m::storage_failure(e.reason());
                tracing::error!(error = %e, rows = records.len(), "storage write failed");
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past `inflight_bytes_max` a writer refuses new records until completed ones release
    /// their bytes; a record alone larger than the bound is admitted to an idle writer.
    #[test]
    fn a_writer_refuses_once_inflight_bytes_exceed_the_bound() {
        let inflight = InflightBytes::new(100);
        let a = inflight.admit(60).expect("an idle writer admits");
        assert!(inflight.admit(41).is_none(), "60 + 41 > 100");
        let b = inflight.admit(40).expect("60 + 40 fits");
        assert!(inflight.admit(1).is_none());
        assert_eq!(inflight.held(), 100);
        drop(a);
        assert_eq!(inflight.held(), 40);
        let c = inflight.admit(60).expect("released bytes are free again");
        drop((b, c));
        assert_eq!(inflight.held(), 0);
        let huge = inflight
            .admit(1_000)
            .expect("an idle writer takes one oversized record");
        assert!(inflight.admit(1).is_none());
        drop(huge);
    }
}
