//! The pure decisions of a job's life, with no actor, clock or I/O: a provider's status as a
//! job status, the order statuses move in, the cost charged, how a failed create is logged,
//! when a progress event may leave, and the whole stored state of a job as one update.
//!
//! These are the pure moves out of job_actor.rs; a full `JobState::on(Event) -> Effects`
//! machine (architecture review §3) is not done yet.

use std::time::{Duration, Instant};

use locus_storage::{JobRecord, JobStatus, JobUpdate};

use super::attempt::AttemptError;
use super::config::ProviderConfig;
use super::provider::PredictionStatus;

/// The job status a provider's prediction status stands for.
pub fn job_status(p: PredictionStatus) -> JobStatus {
    match p {
        PredictionStatus::Starting => JobStatus::Starting,
        PredictionStatus::Processing => JobStatus::Processing,
        PredictionStatus::Succeeded => JobStatus::Succeeded,
        PredictionStatus::Failed => JobStatus::Failed,
        PredictionStatus::Canceled => JobStatus::Canceled,
    }
}

/// Order of statuses along the state machine; terminal ones share the top.
pub fn rank(s: JobStatus) -> u8 {
    match s {
        JobStatus::Queued => 0,
        JobStatus::Starting => 1,
        JobStatus::Processing => 2,
        _ => 3,
    }
}

/// Whether `to` is behind `from`: webhooks can arrive out of order, and a status never moves
/// backwards.
pub fn is_backwards(from: JobStatus, to: JobStatus) -> bool {
    rank(to) < rank(from)
}

/// What a succeeded job is charged: the provider's rate times the prediction's time when both
/// are known, else the provider's estimate for `kind`, else the job's own estimate, else 0.
pub fn actual_cost(
    provider: Option<&ProviderConfig>,
    kind: &str,
    job_estimate: Option<f64>,
    predict_time_s: Option<f64>,
) -> f64 {
    let estimate = provider
        .and_then(|p| p.cost_estimate.get(kind).copied())
        .or(job_estimate)
        .unwrap_or(0.0);
    match (provider.map(|p| p.cost_per_predict_s), predict_time_s) {
        (Some(rate), Some(t)) if rate > 0.0 => rate * t,
        _ => estimate,
    }
}

/// The attempt-log outcome of a create call that gave up, and the tries it took.
pub fn create_failure(e: &AttemptError) -> (&'static str, u32) {
    match e {
        AttemptError::CircuitOpen => ("skipped", 0),
        AttemptError::Exhausted { tries, .. } => ("failed", *tries),
        AttemptError::Refused(_) => ("refused", 1),
    }
}

/// How long a progress event must wait so that events leave at most once per `interval`:
/// `None` when it may leave `now`.
pub fn progress_wait(
    last_event: Option<Instant>,
    now: Instant,
    interval: Duration,
) -> Option<Duration> {
    let since = last_event.map_or(interval, |t| now.saturating_duration_since(t));
    (since < interval).then(|| interval - since)
}

/// The whole mutable state of `job` as one store update. (`From<&JobRecord> for JobUpdate`
/// would have to live in locus_storage: both types are foreign here.)
pub fn update_of(job: &JobRecord) -> JobUpdate {
    JobUpdate {
        id: job.id.clone(),
        status: job.status,
        progress: job.progress,
        output: job.output.clone(),
        error: job.error.clone(),
        provider: job.provider.clone(),
        provider_job_id: job.provider_job_id.clone(),
        attempts: job.attempts.clone(),
        cost_actual: job.cost_actual,
        lease_until_ms: job.lease_until_ms,
        updated_at_ms: job.updated_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::provider::ProviderError;

    /// A late `starting` after `processing` is backwards; terminal statuses all rank the same.
    #[test]
    fn statuses_only_move_forward() {
        assert!(is_backwards(JobStatus::Processing, JobStatus::Starting));
        assert!(!is_backwards(JobStatus::Starting, JobStatus::Processing));
        assert!(!is_backwards(JobStatus::Queued, JobStatus::Queued));
        assert!(is_backwards(JobStatus::Succeeded, JobStatus::Processing));
        assert_eq!(rank(JobStatus::Succeeded), rank(JobStatus::Canceled));
        assert_eq!(
            job_status(PredictionStatus::Processing),
            JobStatus::Processing
        );
    }

    /// The rate times the predict time wins; without either, the provider's estimate, then the
    /// job's, then 0.
    #[test]
    fn cost_is_rate_times_time_else_the_estimate() {
        let mut p = ProviderConfig {
            cost_estimate: [("image".to_string(), 0.5)].into(),
            cost_per_predict_s: 0.0,
            ..ProviderConfig::default()
        };
        assert_eq!(actual_cost(Some(&p), "image", Some(9.0), Some(2.0)), 0.5);
        p.cost_per_predict_s = 0.25;
        assert_eq!(actual_cost(Some(&p), "image", Some(9.0), Some(4.0)), 1.0);
        assert_eq!(actual_cost(Some(&p), "speech", Some(9.0), Some(4.0)), 1.0);
        assert_eq!(actual_cost(Some(&p), "speech", Some(9.0), None), 9.0);
        assert_eq!(actual_cost(None, "image", None, Some(2.0)), 0.0);
    }

    /// Each way a create gives up has its own log outcome and try count.
    #[test]
    fn a_failed_create_is_logged_by_how_it_gave_up() {
        assert_eq!(create_failure(&AttemptError::CircuitOpen), ("skipped", 0));
        let last = ProviderError::Timeout(10);
        assert_eq!(
            create_failure(&AttemptError::Exhausted { last, tries: 4 }),
            ("failed", 4)
        );
        let refused = ProviderError::Refused {
            status: 422,
            message: "no".into(),
        };
        assert_eq!(
            create_failure(&AttemptError::Refused(refused)),
            ("refused", 1)
        );
    }

    /// The first event leaves at once; the next waits out the rest of the interval.
    #[test]
    fn progress_events_leave_at_most_once_per_interval() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(500);
        assert_eq!(progress_wait(None, t0, interval), None);
        assert_eq!(
            progress_wait(Some(t0), t0 + Duration::from_millis(200), interval),
            Some(Duration::from_millis(300))
        );
        assert_eq!(progress_wait(Some(t0), t0 + interval, interval), None);
    }
}
