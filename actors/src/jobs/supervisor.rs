//! The job supervisor: starts an actor per live job, renews the leases of the jobs this
//! instance runs, and picks up jobs whose lease passed (a crashed or stalled instance's) —
//! at start, then every half lease.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use locus_storage::{now_ms, JobRecord, JobStore};

use super::job_actor::{Adapters, JobActor, StopJob};
use super::provider::Provider;
use super::replicate::ReplicateProvider;
use super::service::JobShared;
use crate::metrics as m;

/// Stalled jobs taken per claim.
const CLAIM_BATCH_MAX: usize = 100;

/// Start the actor of a job just created.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Launch(pub JobRecord);

/// Stop every job actor of this instance, then the supervisor (server shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub struct JobSupervisor {
    shared: Arc<JobShared>,
    adapters: Adapters,
    claiming: bool,
}

impl JobSupervisor {
    /// Builds the provider clients; must run on the arbiter the supervisor starts on.
    pub fn new(shared: Arc<JobShared>) -> JobSupervisor {
        let adapters: BTreeMap<String, Rc<dyn Provider>> = shared
            .providers
            .values()
            .filter_map(|p| {
                let token = p.config.resolved_token()?;
                let adapter: Rc<dyn Provider> = Rc::new(ReplicateProvider::new(
                    &p.config.base_url,
                    token,
                    p.config.request_timeout_ms,
                ));
                Some((p.name.clone(), adapter))
            })
            .collect();
        JobSupervisor {
            shared,
            adapters: Rc::new(adapters),
            claiming: false,
        }
    }

    fn launch(&mut self, job: JobRecord, recovered: bool) {
        if self.shared.live.contains_key(&job.id) {
            return;
        }
        if recovered {
            tracing::info!(job = %job.id, status = job.status.as_str(), recoveries = job.recoveries, "picking up a stalled job");
            self.shared.adopt(&job.owner);
        }
        let id = job.id.clone();
        let actor =
            JobActor::new(self.shared.clone(), self.adapters.clone(), job, recovered).start();
        self.shared.live.insert(id, actor);
        m::jobs_live().increment(1.0);
    }

    fn renew(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<String> = self.shared.live.iter().map(|e| e.key().clone()).collect();
        if ids.is_empty() {
            return;
        }
        let store = self.shared.store.clone();
        let until = now_ms() + self.shared.config.lease_ms as i64;
        ctx.spawn(
            async move {
                if let Err(e) = store.renew_job_leases(&ids, until).await {
                    tracing::warn!(error = %e, jobs = ids.len(), "job leases not renewed");
                }
            }
            .into_actor(self),
        );
    }

    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.claiming {
            return;
        }
        self.claiming = true;
        let store = self.shared.store.clone();
        let now = now_ms();
        let until = now + self.shared.config.lease_ms as i64;
        ctx.spawn(
            async move { store.claim_stalled_jobs(now, until, CLAIM_BATCH_MAX).await }
                .into_actor(self)
                .map(|claimed, act, _| {
                    act.claiming = false;
                    match claimed {
                        Ok(jobs) => jobs.into_iter().for_each(|j| act.launch(j, true)),
                        Err(e) => tracing::warn!(error = %e, "stalled jobs not claimed"),
                    }
                }),
        );
    }
}

impl Actor for JobSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let lease = self.shared.config.lease_ms.max(3);
        ctx.run_interval(Duration::from_millis(lease / 3), |act, ctx| act.renew(ctx));
        ctx.run_interval(Duration::from_millis(lease / 2), |act, ctx| act.claim(ctx));
        self.claim(ctx);
    }
}

impl Handler<Launch> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, Launch(job): Launch, _ctx: &mut Self::Context) {
        self.launch(job, false);
    }
}

impl Handler<Shutdown> for JobSupervisor {
    type Result = ();

    /// Stopping here, inside the runtime, drops the claims and provider calls in flight while
    /// their database connections can still be returned to the pool; dropped later, when the
    /// runtime itself is torn down, sqlx panics for want of a Tokio context.
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        for job in self.shared.live.iter() {
            job.value().do_send(StopJob);
        }
        ctx.stop();
    }
}
