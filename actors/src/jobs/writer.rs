//! The job writer: job state changes go to storage in batches (one transaction per batch) on
//! the same batching actor as publications, and each change completes after its commit.

use actix::prelude::*;
use locus_storage::{AnyStore, JobStore, JobUpdate, StoreError};
use tokio::sync::oneshot;

use crate::publish::batch_writer::{BatchSink, BatchWriter, Batchable};
use crate::publish::writer::DurableError;

/// Write one job's state; `done` completes after commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobWrite {
    pub update: JobUpdate,
    pub done: oneshot::Sender<Result<(), DurableError>>,
}

pub type JobWriter = BatchWriter<JobSink>;

pub struct JobSink;

impl Batchable for JobUpdate {
    type Outcome = ();
    async fn write(store: &AnyStore, batch: &[Self]) -> Result<Vec<()>, StoreError> {
        store.update_jobs(batch).await?;
        Ok(vec![(); batch.len()])
    }
}

impl BatchSink for JobSink {
    type Item = JobWrite;
    type Record = JobUpdate;
    type Ticket = oneshot::Sender<Result<(), DurableError>>;

    fn split(w: JobWrite) -> (JobUpdate, Self::Ticket) {
        (w.update, w.done)
    }

    fn complete(
        &mut self,
        _records: Vec<JobUpdate>,
        tickets: Vec<Self::Ticket>,
        results: Vec<Result<(), StoreError>>,
    ) {
        for (done, result) in tickets.into_iter().zip(results) {
            let _ = done.send(result.map_err(|e| DurableError::from_store(&e)));
        }
    }
}

crate::stop_handler!(JobSink);
