//! The geo writer actor: stores geo messages (`post`) in batches, like the storage writer does
//! for durable topics, and completes each post only after its batch committed.
//!
//! Takes [`GeoAppend`]. Batching, the mailbox bound (`storage.inflight_publications_max`,
//! refusal with `StorageBusy` past it) and retries follow the storage writer's rules; fan-out
//! to cells is the poster's session's job once the completion says "stored, not a duplicate".

use std::time::Duration;

use actix::prelude::*;
use locus_storage::{AnyStore, GeoAppended, NewGeoMessage};
use tokio::sync::oneshot;

use crate::config::StorageLimits;
use crate::metrics as m;
use crate::storage_writer::{write_with_retry, DurableError, StorageHealth};

/// Store one geo message; `done` completes after commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GeoAppend {
    pub record: NewGeoMessage,
    pub done: oneshot::Sender<Result<GeoAppended, DurableError>>,
}

pub struct GeoWriter {
    store: AnyStore,
    limits: StorageLimits,
    health: StorageHealth,
    buffer: Vec<GeoAppend>,
    flush_timer: Option<SpawnHandle>,
}

impl GeoWriter {
    pub fn new(store: AnyStore, limits: StorageLimits, health: StorageHealth) -> Self {
        GeoWriter {
            store,
            limits,
            health,
            buffer: Vec::new(),
            flush_timer: None,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.flush_timer.take() {
            ctx.cancel_future(t);
        }
        if self.buffer.is_empty() {
            return;
        }
        let (records, dones): (Vec<NewGeoMessage>, Vec<_>) = std::mem::take(&mut self.buffer)
            .into_iter()
            .map(|a| (a.record, a.done))
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
                .map(move |(_, result), _, _| match result {
                    Ok(outcomes) => {
                        for (done, outcome) in dones.into_iter().zip(outcomes) {
                            let _ = done.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        let err = if e.is_transient() {
                            DurableError::Unavailable(e.to_string())
                        } else {
                            DurableError::Failed(e.to_string())
                        };
                        for done in dones {
                            let _ = done.send(Err(err.clone()));
                        }
                    }
                }),
        );
    }
}

impl Actor for GeoWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.inflight_publications_max);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        if !self.buffer.is_empty() {
            self.flush(ctx);
            return Running::Continue;
        }
        Running::Stop
    }
}

impl Handler<GeoAppend> for GeoWriter {
    type Result = ();

    /// Buffers the post; flushes a full batch at once, or arms the flush deadline.
    fn handle(&mut self, msg: GeoAppend, ctx: &mut Self::Context) {
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
