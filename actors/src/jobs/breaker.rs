//! A circuit breaker per provider: closed → open after `failures_max` provider faults within
//! `window` → half-open after `cooldown`, letting one probe through → closed when the probe
//! succeeds, open again when it fails.
//!
//! Hand-written rather than taken from a crate (failsafe): the state has to be readable from
//! `/api/health` and metrics per provider, and the whole machine is a few dozen lines.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of `locus_provider_breaker_state`.
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

pub struct Breaker {
    provider: String,
    failures_max: usize,
    window: Duration,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BreakerState,
    /// Provider faults within the window (closed state).
    failures: VecDeque<Instant>,
    opened_at: Instant,
    /// Half-open: the one probe is out.
    probing: bool,
}

impl Breaker {
    pub fn new(
        provider: &str,
        failures_max: usize,
        window: Duration,
        cooldown: Duration,
    ) -> Breaker {
        m::breaker_state(provider, BreakerState::Closed.gauge());
        Breaker {
            provider: provider.to_owned(),
            failures_max: failures_max.max(1),
            window,
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: VecDeque::new(),
                opened_at: Instant::now(),
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state as callers see it: an open breaker whose cool-down is over reads half-open.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if inner.opened_at.elapsed() >= self.cooldown => {
                BreakerState::HalfOpen
            }
            s => s,
        }
    }

    /// Whether a call may go out now. Half-open lets one probe through at a time; the caller
    /// must then report `success` or `failure`.
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open if inner.opened_at.elapsed() >= self.cooldown => {
                self.set(&mut inner, BreakerState::HalfOpen);
                inner.probing = true;
                true
            }
            BreakerState::Open => false,
            BreakerState::HalfOpen if !inner.probing => {
                inner.probing = true;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// The provider answered (whatever it said, it is up).
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.probing = false;
        if inner.state != BreakerState::Closed {
            inner.failures.clear();
            self.set(&mut inner, BreakerState::Closed);
        }
    }

    /// The provider failed (timeout, connection, 5xx).
    pub fn failure(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.probing = false;
        match inner.state {
            BreakerState::Closed => {
                inner.failures.push_back(now);
                while inner
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.window)
                {
                    inner.failures.pop_front();
                }
                if inner.failures.len() >= self.failures_max {
                    inner.failures.clear();
                    inner.opened_at = now;
                    self.set(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen | BreakerState::Open => {
                inner.opened_at = now;
                self.set(&mut inner, BreakerState::Open);
            }
        }
    }

    fn set(&self, inner: &mut Inner, to: BreakerState) {
        if inner.state == to {
            return;
        }
        tracing::warn!(provider = %self.provider, from = inner.state.as_str(), to = to.as_str(), "provider circuit breaker");
        inner.state = to;
        m::breaker_state(&self.provider, to.gauge());
        m::breaker_transition(&self.provider, to.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(
            "p",
            3,
            Duration::from_secs(60),
            Duration::from_millis(cooldown_ms),
        )
    }

    #[test]
    fn opens_after_the_threshold_and_refuses_calls() {
        let b = breaker(60_000);
        for _ in 0..2 {
            b.failure();
            assert_eq!(b.state(), BreakerState::Closed);
        }
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
    }

    #[test]
    fn half_opens_after_the_cooldown_with_one_probe_then_closes_on_success() {
        let b = breaker(20);
        (0..3).for_each(|_| b.failure());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "the probe goes out");
        assert!(!b.allow(), "only one probe at a time");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = breaker(20);
        (0..3).for_each(|_| b.failure());
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let b = Breaker::new("p", 2, Duration::from_millis(10), Duration::from_secs(60));
        b.failure();
        std::thread::sleep(Duration::from_millis(20));
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
