//! The per-IP sign-in attempt limit: a governor keyed limiter, pruned of idle addresses so that
//! one-off clients (an IPv6 host has plenty of addresses) do not pile up in it.
//!
//! Pruning piggybacks on attempts: the first attempt after each interval runs it, so no task
//! is needed and an idle server does nothing. `retain_recent` is O(keys), and the keys are at
//! most the addresses seen within a minute plus one interval, so each attempt pays O(1)
//! amortised.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often idle addresses are dropped from the limiter, in milliseconds.
pub const ATTEMPT_KEYS_PRUNE_INTERVAL_MS: u64 = 60_000;

/// Attempts per client IP per minute.
pub struct Attempts {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    started: Instant,
    prune_interval_ms: u64,
    /// Milliseconds after `started` when the next prune is due.
    next_prune_ms: AtomicU64,
}

impl Attempts {
    /// `per_min` attempts per IP per minute (a burst of as many), pruned every
    /// `prune_interval`; `None` when `per_min` is 0 (no limit).
    pub fn new(per_min: u32, prune_interval: Duration) -> Option<Attempts> {
        let per_min = NonZeroU32::new(per_min)?;
        let prune_interval_ms = prune_interval.as_millis() as u64;
        Some(Attempts {
            limiter: RateLimiter::keyed(Quota::per_minute(per_min)),
            started: Instant::now(),
            prune_interval_ms,
            next_prune_ms: AtomicU64::new(prune_interval_ms),
        })
    }

    /// Counts an attempt from `ip`: false when it is over the limit.
    pub fn check(&self, ip: IpAddr) -> bool {
        self.prune_if_due();
        self.limiter.check_key(&ip).is_ok()
    }

    /// Addresses the limiter holds state for.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    /// Drops the addresses whose budget is full again (indistinguishable from new ones), once
    /// per interval; of concurrent callers, the one that moves the deadline does it.
    fn prune_if_due(&self) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let due_ms = self.next_prune_ms.load(Ordering::Relaxed);
        if now_ms < due_ms {
            return;
        }
        let next_ms = now_ms.saturating_add(self.prune_interval_ms);
        if self
            .next_prune_ms
            .compare_exchange(due_ms, next_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            locus_actors::rate_limit::prune_keyed(&self.limiter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F19: addresses seen once are dropped from the limiter once their budget has refilled,
    /// by the attempts that come after; busy addresses keep theirs.
    #[test]
    fn idle_addresses_are_pruned_from_the_limiter() {
        // 60 a minute: an address that made one attempt is back to a full budget in 1 s.
        let a = Attempts::new(60, Duration::from_millis(50)).unwrap();
        for i in 0..1_000u32 {
            assert!(a.check(IpAddr::from(
                ((0x2001_0db8_u128 << 96) | i as u128).to_be_bytes()
            )));
        }
        assert_eq!(a.keys(), 1_000, "fresh keys are not pruned");
        let busy = IpAddr::from([192, 0, 2, 1]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.keys() > 1 {
            assert!(
                Instant::now() < deadline,
                "still {} keys: idle addresses are never pruned",
                a.keys()
            );
            a.check(busy);
            std::thread::sleep(Duration::from_millis(10));
        }
        // The busy address's state is kept.
        assert_eq!(a.keys(), 1);
    }
}
