//! The actor per live job: it takes the job through the providers of its kind (skipping open
//! breakers, falling back when retries run out), follows the prediction by webhook and poll,
//! persists every change through the job writer and then pushes it as a `job` event to the
//! owner's `realtime:user:<id>` — state changes at once, progress at most once per
//! `progress_interval_ms`.
//!
//! Every event is sent after the state it shows was committed, so a client that reads the job
//! on an event sees at least that state. Writes and events leave in order: each commit is a
//! `ctx.wait`, which holds the actor's other work until it is done.
//!
//! Over 400 lines on purpose: this is one actor with its messages and handlers, and its
//! methods are the I/O steps of one job (provider calls, timers, commits). The pure decisions
//! are in machine.rs and the attempt log in attempt_log.rs; turning the rest into a pure
//! `JobState::on(Event) -> Effects` machine (architecture review §3) is not done yet.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use locus_storage::{now_ms, JobRecord, JobStatus};
use serde_json::{json, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::attempt::{with_retries, AttemptError, RetryPolicy};
use super::attempt_log::AttemptLog;
use super::machine::{
    actual_cost, create_failure, is_backwards, job_status, progress_wait, update_of,
};
use super::provider::{CreateRequest, Prediction, PredictionStatus, Provider};
use super::routing::ProviderInfo;
use super::service::JobShared;
use super::writer::JobWrite;
use crate::metrics as m;
use crate::publish::writer::DurableError;

/// The provider adapters of this arbiter, by name.
pub type Adapters = Rc<BTreeMap<String, Rc<dyn Provider>>>;

/// A prediction update from a verified webhook.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProviderUpdate(pub Prediction);

/// Cancel the job; `done` gets the job once it is final.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelJob {
    pub done: oneshot::Sender<JobRecord>,
}

/// Stop following the job on this instance (shutdown). The job stays live in storage; its
/// lease lapses and the next instance resumes it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopJob;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a provider slot (`queued`).
    Waiting,
    /// The create call (with its retries) is out.
    Creating,
    /// The provider has the prediction.
    Running,
    /// Terminal; the last commit is on its way.
    Finished,
}

pub struct JobActor {
    shared: Arc<JobShared>,
    adapters: Adapters,
    policy: RetryPolicy,
    job: JobRecord,
    attempts: AttemptLog,
    /// Providers still to try, in order.
    route: VecDeque<Arc<ProviderInfo>>,
    /// The slot held at the current provider.
    permit: Option<OwnedSemaphorePermit>,
    stage: Stage,
    waiting: Option<SpawnHandle>,
    recovered: bool,
    cancel_requested: bool,
    cancel_waiters: Vec<oneshot::Sender<JobRecord>>,
    /// Last word from the provider (webhook or poll).
    last_heard: Instant,
    polling: bool,
    /// Progress or output changed since the last event.
    dirty: bool,
    last_event: Option<Instant>,
    progress_timer: Option<SpawnHandle>,
    deadline: Instant,
    last_error: Option<String>,
}

impl JobActor {
    pub fn new(
        shared: Arc<JobShared>,
        adapters: Adapters,
        job: JobRecord,
        recovered: bool,
    ) -> Self {
        let attempts = AttemptLog::parse(&job.attempts);
        let age_ms = (now_ms() - job.created_at_ms).max(0) as u64;
        let left = Duration::from_millis(shared.config.job_timeout_ms.saturating_sub(age_ms));
        let route = shared
            .route(&job.kind, job.requested_provider.as_deref())
            .unwrap_or_default()
            .into();
        JobActor {
            policy: RetryPolicy::from_config(&shared.config),
            shared,
            adapters,
            job,
            attempts,
            route,
            permit: None,
            stage: Stage::Waiting,
            waiting: None,
            recovered,
            cancel_requested: false,
            cancel_waiters: Vec::new(),
            last_heard: Instant::now(),
            polling: false,
            dirty: false,
            last_event: None,
            progress_timer: None,
            deadline: Instant::now() + left,
            last_error: None,
        }
    }

    fn adapter(&self, provider: &str) -> Option<Rc<dyn Provider>> {
        self.adapters.get(provider).cloned()
    }

    /// Takes the next provider of the route: skips open breakers, waits for a slot.
    fn submit_next(&mut self, ctx: &mut Context<Self>) {
        let provider = loop {
            let Some(p) = self.route.pop_front() else {
                let reason = self
                    .last_error
                    .take()
                    .unwrap_or_else(|| "every provider for this kind is unavailable".into());
                return self.finish(
                    ctx,
                    JobStatus::Failed,
                    Some(format!("no provider could run the job: {reason}")),
                );
            };
            if p.breaker.state() == super::breaker::BreakerState::Open {
                self.attempts
                    .record(&p.name, "skipped", json!({ "error": "circuit open" }));
                self.last_error = Some(format!("{}: circuit open", p.name));
                continue;
            }
            break p;
        };
        self.stage = Stage::Waiting;
        let permits = provider.permits.clone();
        let handle = ctx.spawn(
            async move { permits.acquire_owned().await.ok() }
                .into_actor(self)
                .map(move |permit, act, ctx| {
                    act.waiting = None;
                    act.permit = permit;
                    act.create(ctx, provider);
                }),
        );
        self.waiting = Some(handle);
    }

    fn create(&mut self, ctx: &mut Context<Self>, provider: Arc<ProviderInfo>) {
        let Some(adapter) = self.adapter(&provider.name) else {
            self.last_error = Some(format!("{}: not running on this instance", provider.name));
            return self.submit_next(ctx);
        };
        self.stage = Stage::Creating;
        let request = CreateRequest {
            model: provider
                .config
                .models
                .get(&self.job.kind)
                .cloned()
                .unwrap_or_default(),
            input: serde_json::from_str(&self.job.input).unwrap_or(Value::Null),
            webhook: self.shared.webhook_url(&provider),
        };
        let policy = self.policy;
        let p = provider.clone();
        let call = async move {
            with_retries(&p.name, "create", &p.breaker, policy, || {
                adapter.create(request.clone())
            })
            .await
        };
        ctx.spawn(
            call.into_actor(self)
                .map(move |result, act, ctx| act.created(ctx, provider, result)),
        );
    }

    fn created(
        &mut self,
        ctx: &mut Context<Self>,
        provider: Arc<ProviderInfo>,
        result: Result<(Prediction, u32), AttemptError>,
    ) {
        let name = provider.name.clone();
        match result {
            Ok((prediction, tries)) => {
                self.attempts.record(
                    &name,
                    "accepted",
                    json!({ "tries": tries, "prediction_id": prediction.id }),
                );
                self.job.provider = Some(name.clone());
                self.job.provider_job_id = Some(prediction.id.clone());
                self.shared
                    .predictions
                    .insert((name, prediction.id.clone()), self.job.id.clone());
                self.stage = Stage::Running;
                if self.cancel_requested {
                    return self.cancel_at_provider(ctx);
                }
                self.apply(ctx, prediction);
            }
            Err(e) => {
                self.permit = None;
                let (outcome, tries) = create_failure(&e);
                self.attempts.record(
                    &name,
                    outcome,
                    json!({ "error": e.to_string(), "tries": tries }),
                );
                if self.cancel_requested {
                    return self.finish(ctx, JobStatus::Canceled, None);
                }
                if let AttemptError::Refused(reason) = e {
                    return self.finish(ctx, JobStatus::Failed, Some(reason.to_string()));
                }
                self.last_error = Some(format!("{name}: {e}"));
                // Persist the attempt (no event: the job is still queued), then fall back.
                self.commit(ctx, false);
                self.submit_next(ctx);
            }
        }
    }

    /// Folds a provider's view of the prediction into the job.
    fn apply(&mut self, ctx: &mut Context<Self>, p: Prediction) {
        if self.stage == Stage::Finished {
            return;
        }
        self.last_heard = Instant::now();
        let status = job_status(p.status);
        if let Some(progress) = p.progress.filter(|pr| *pr > self.job.progress) {
            self.job.progress = progress;
            self.dirty = true;
        }
        if let Some(output) = p.output.map(|o| o.to_string()) {
            if self.job.output.as_ref() != Some(&output) {
                self.job.output = Some(output);
                self.dirty = true;
            }
        }
        if is_backwards(self.job.status, status) {
            return self.emit_throttled(ctx);
        }
        match status {
            JobStatus::Succeeded => {
                self.job.progress = 1.0;
                self.job.cost_actual = Some(self.actual_cost(p.predict_time_s));
                self.finish(ctx, status, None)
            }
            JobStatus::Failed => {
                let reason = p
                    .error
                    .unwrap_or_else(|| "the provider reported a failure".into());
                self.finish(ctx, status, Some(reason))
            }
            JobStatus::Canceled => self.finish(ctx, status, None),
            _ if status != self.job.status => {
                self.job.status = status;
                self.emit(ctx);
            }
            _ => self.emit_throttled(ctx),
        }
    }

    fn actual_cost(&self, predict_time_s: Option<f64>) -> f64 {
        let provider = self
            .job
            .provider
            .as_deref()
            .and_then(|n| self.shared.providers.get(n));
        actual_cost(
            provider.map(|p| &p.config),
            &self.job.kind,
            self.job.cost_estimate,
            predict_time_s,
        )
    }

    /// Commits and announces the current state now.
    fn emit(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.progress_timer.take() {
            ctx.cancel_future(t);
        }
        self.dirty = false;
        self.last_event = Some(Instant::now());
        self.commit(ctx, true);
    }

    /// Announces progress at most once per `progress_interval_ms`: now, or when the interval
    /// since the last event is over (latest state wins).
    fn emit_throttled(&mut self, ctx: &mut Context<Self>) {
        if !self.dirty || self.progress_timer.is_some() {
            return;
        }
        let interval = Duration::from_millis(self.shared.config.progress_interval_ms);
        let Some(wait) = progress_wait(self.last_event, Instant::now(), interval) else {
            return self.emit(ctx);
        };
        self.progress_timer = Some(ctx.run_later(wait, |act, ctx| {
            act.progress_timer = None;
            if act.dirty && act.stage != Stage::Finished {
                act.emit(ctx);
            }
        }));
    }

    /// Makes the job terminal: commits, announces, answers cancels, stops.
    fn finish(&mut self, ctx: &mut Context<Self>, status: JobStatus, error: Option<String>) {
        if self.stage == Stage::Finished {
            return;
        }
        if let Some(h) = self.waiting.take() {
            ctx.cancel_future(h);
        }
        self.stage = Stage::Finished;
        self.job.status = status;
        self.job.error = error;
        self.permit = None;
        m::job_finished(status.as_str());
        tracing::info!(job = %self.job.id, status = status.as_str(), error = ?self.job.error, "job finished");
        self.emit(ctx);
    }

    /// Writes the job's state (through the batched writer) and, once committed, pushes it as
    /// a `job` event.
    fn commit(&mut self, ctx: &mut Context<Self>, publish: bool) {
        let now = now_ms();
        self.job.updated_at_ms = now;
        self.job.lease_until_ms = now + self.shared.config.lease_ms as i64;
        self.job.attempts = self.attempts.to_text();
        let update = update_of(&self.job);
        let snapshot = self.job.clone();
        let writer = self.shared.writer.clone();
        let write = async move {
            let (done, committed) = oneshot::channel();
            writer
                .send(JobWrite { update, done })
                .await
                .map_err(|_| DurableError::Unavailable("the job writer stopped".into()))?;
            committed
                .await
                .map_err(|_| DurableError::Unavailable("the job writer stopped".into()))?
        };
        ctx.wait(write.into_actor(self).map(move |result, act, ctx| {
            if let Err(e) = result {
                // The provider's state is real whether or not it was stored: announce it; the
                // next commit writes the whole state again.
                m::job_write_failed();
                tracing::error!(job = %snapshot.id, error = %e, "job state not stored");
            }
            if publish {
                act.shared.publish_event(&snapshot);
            }
            if snapshot.status.is_terminal() {
                for w in act.cancel_waiters.drain(..) {
                    let _ = w.send(snapshot.clone());
                }
                ctx.stop();
            }
        }));
    }

    fn cancel_at_provider(&mut self, ctx: &mut Context<Self>) {
        let (Some(name), Some(id)) = (self.job.provider.clone(), self.job.provider_job_id.clone())
        else {
            return self.finish(ctx, JobStatus::Canceled, None);
        };
        let (Some(adapter), Some(info)) = (
            self.adapter(&name),
            self.shared.providers.get(&name).cloned(),
        ) else {
            return self.finish(ctx, JobStatus::Canceled, None);
        };
        let policy = self.policy;
        let call = async move {
            with_retries(&name, "cancel", &info.breaker, policy, || {
                adapter.cancel(&id)
            })
            .await
        };
        ctx.spawn(call.into_actor(self).map(|result, act, ctx| match result {
            // Finished before the cancel reached it: the provider's outcome stands.
            Ok((p, _))
                if matches!(
                    p.status,
                    PredictionStatus::Succeeded | PredictionStatus::Failed
                ) =>
            {
                act.apply(ctx, p)
            }
            Ok(_) => act.finish(ctx, JobStatus::Canceled, None),
            Err(e) => {
                let provider = act.job.provider.clone().unwrap_or_default();
                act.attempts.record(
                    &provider,
                    "cancel_failed",
                    json!({ "error": e.to_string() }),
                );
                act.finish(ctx, JobStatus::Canceled, None)
            }
        }));
    }

    /// Every `poll_interval_ms`: the deadline, then a poll when the provider has been silent.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.stage == Stage::Finished {
            return;
        }
        if Instant::now() >= self.deadline {
            if self.stage == Stage::Running {
                self.cancel_quietly(ctx);
            }
            let after_s = self.shared.config.job_timeout_ms / 1000;
            return self.finish(
                ctx,
                JobStatus::Failed,
                Some(format!("timed out after {after_s} s")),
            );
        }
        let quiet_for = if self
            .job
            .provider
            .as_deref()
            .is_some_and(|n| self.shared.webhooks_on(n))
        {
            Duration::from_millis(self.shared.config.webhook_grace_ms)
        } else {
            Duration::ZERO
        };
        if self.stage == Stage::Running && !self.polling && self.last_heard.elapsed() >= quiet_for {
            self.poll(ctx);
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let (Some(name), Some(id)) = (self.job.provider.clone(), self.job.provider_job_id.clone())
        else {
            return;
        };
        let (Some(adapter), Some(info)) = (
            self.adapter(&name),
            self.shared.providers.get(&name).cloned(),
        ) else {
            return self.finish(
                ctx,
                JobStatus::Failed,
                Some(format!("provider {name} is no longer configured")),
            );
        };
        self.polling = true;
        let policy = self.policy;
        let call = async move {
            with_retries(&name, "get", &info.breaker, policy, || adapter.get(&id)).await
        };
        ctx.spawn(call.into_actor(self).map(|result, act, ctx| {
            act.polling = false;
            match result {
                Ok((p, _)) => act.apply(ctx, p),
                Err(AttemptError::Refused(e)) => act.finish(
                    ctx,
                    JobStatus::Failed,
                    Some(format!("the provider lost the prediction: {e}")),
                ),
                // Down or unreachable for now: the next tick asks again (the deadline bounds it).
                Err(_) => {}
            }
        }));
    }

    /// Best-effort cancel at the provider of a job that is failing anyway.
    fn cancel_quietly(&mut self, ctx: &mut Context<Self>) {
        let (Some(name), Some(id)) = (self.job.provider.clone(), self.job.provider_job_id.clone())
        else {
            return;
        };
        if let Some(adapter) = self.adapter(&name) {
            ctx.spawn(
                async move {
                    let _ = adapter.cancel(&id).await;
                }
                .into_actor(self),
            );
        }
    }

    /// A job picked up after a stall: continue where its record says it was.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let provider = self.job.provider.clone();
        self.attempts.record(
            provider.as_deref().unwrap_or(""),
            "recovered",
            json!({ "recoveries": self.job.recoveries }),
        );
        if self.job.recoveries > self.shared.config.recoveries_max {
            let reason = format!(
                "job stalled more than allowable limit ({} recoveries)",
                self.shared.config.recoveries_max
            );
            return self.finish(ctx, JobStatus::Failed, Some(reason));
        }
        match (provider, self.job.provider_job_id.clone()) {
            (Some(name), Some(id)) => {
                let Some(info) = self.shared.providers.get(&name).cloned() else {
                    return self.finish(
                        ctx,
                        JobStatus::Failed,
                        Some(format!("provider {name} is no longer configured")),
                    );
                };
                // A slot if one is free: the prediction runs at the provider either way.
                self.permit = info.permits.clone().try_acquire_owned().ok();
                self.shared
                    .predictions
                    .insert((name, id), self.job.id.clone());
                self.stage = Stage::Running;
                self.commit(ctx, false);
                self.poll(ctx);
            }
            _ => self.submit_next(ctx),
        }
    }
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_millis(self.shared.config.poll_interval_ms.max(1));
        ctx.run_interval(every, |act, ctx| act.tick(ctx));
        if self.recovered {
            self.resume(ctx);
        } else {
            self.submit_next(ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shared.forget(&self.job);
    }
}

impl Handler<ProviderUpdate> for JobActor {
    type Result = ();

    fn handle(&mut self, ProviderUpdate(p): ProviderUpdate, ctx: &mut Self::Context) {
        if self.stage == Stage::Running && Some(&p.id) == self.job.provider_job_id.as_ref() {
            self.apply(ctx, p);
        }
    }
}

impl Handler<CancelJob> for JobActor {
    type Result = ();

    fn handle(&mut self, msg: CancelJob, ctx: &mut Self::Context) {
        self.cancel_waiters.push(msg.done);
        if self.cancel_requested || self.stage == Stage::Finished {
            return;
        }
        self.cancel_requested = true;
        match self.stage {
            Stage::Waiting => self.finish(ctx, JobStatus::Canceled, None),
            // `created` sees the request when the create call returns.
            Stage::Creating => {}
            Stage::Running => self.cancel_at_provider(ctx),
            Stage::Finished => {}
        }
    }
}

impl Handler<StopJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: StopJob, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
