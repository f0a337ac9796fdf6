//! Typing indicators of one room: who is typing, when it expires, and when to re-announce it.
//!
//! `typing: true` is announced when a user starts typing and re-announced at most once per
//! `typing_throttle_ms`; it expires `typing_ttl_ms` after the last refresh, which announces
//! `typing: false`. Pure state: the room actor owns the clock and the timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    expires_at: Instant,
    announced_at: Instant,
}

/// What to do with a typing update.
#[derive(Debug, PartialEq, Eq)]
pub enum TypingOutcome {
    /// Announce this state to the room.
    Announce(bool),
    /// Absorbed: inside the throttle window, or `false` for a user not typing.
    Absorbed,
}

#[derive(Debug)]
pub struct TypingState {
    by_user: HashMap<Arc<str>, Entry>,
    ttl: Duration,
    throttle: Duration,
}

impl TypingState {
    pub fn new(ttl: Duration, throttle: Duration) -> Self {
        TypingState {
            by_user: HashMap::new(),
            ttl,
            throttle,
        }
    }

    pub fn update(&mut self, user: &Arc<str>, typing: bool, now: Instant) -> TypingOutcome {
        if !typing {
            return match self.by_user.remove(user) {
                Some(_) => TypingOutcome::Announce(false),
                None => TypingOutcome::Absorbed,
            };
        }
        match self.by_user.get_mut(user) {
            Some(e) => {
                e.expires_at = now + self.ttl;
                if now.duration_since(e.announced_at) >= self.throttle {
                    e.announced_at = now;
                    TypingOutcome::Announce(true)
                } else {
                    TypingOutcome::Absorbed
                }
            }
            None => {
                self.by_user.insert(
                    user.clone(),
                    Entry {
                        expires_at: now + self.ttl,
                        announced_at: now,
                    },
                );
                TypingOutcome::Announce(true)
            }
        }
    }

    /// Removes expired entries and returns their users (each to be announced as `false`).
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<str>> {
        let expired: Vec<Arc<str>> = self
            .by_user
            .iter()
            .filter(|(_, e)| e.expires_at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &expired {
            self.by_user.remove(u);
        }
        expired
    }

    /// When the next entry expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_user.values().map(|e| e.expires_at).min()
    }

    pub fn is_typing(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_announced_repeats_are_throttled_and_ttl_expires() {
        let mut t = TypingState::new(Duration::from_secs(6), Duration::from_secs(2));
        let u: Arc<str> = "u1".into();
        let t0 = Instant::now();
        assert_eq!(t.update(&u, true, t0), TypingOutcome::Announce(true));
        assert_eq!(
            t.update(&u, true, t0 + Duration::from_secs(1)),
            TypingOutcome::Absorbed
        );
        assert_eq!(
            t.update(&u, true, t0 + Duration::from_secs(3)),
            TypingOutcome::Announce(true)
        );
        assert!(
            t.expire(t0 + Duration::from_secs(8)).is_empty(),
            "refresh at 3 s moves expiry to 9 s"
        );
        assert_eq!(t.expire(t0 + Duration::from_secs(9)), vec![u.clone()]);
        assert!(t.next_expiry().is_none());
    }

    #[test]
    fn stop_is_announced_only_for_a_typing_user() {
        let mut t = TypingState::new(Duration::from_secs(6), Duration::from_secs(2));
        let u: Arc<str> = "u1".into();
        let now = Instant::now();
        assert_eq!(t.update(&u, false, now), TypingOutcome::Absorbed);
        t.update(&u, true, now);
        assert_eq!(t.update(&u, false, now), TypingOutcome::Announce(false));
        assert!(!t.is_typing("u1"));
    }
}
