//! Rate limits per connection and per user (token buckets from `governor`), and the flood
//! rule: a connection that keeps hitting its limits is disconnected.
//!
//! governor rather than hand-written buckets: GCRA in one atomic per bucket, a keyed limiter
//! (per user, across connections) with housekeeping, and `Quota` reads the same as the config.

use crate::refusal::{Code, Refusal};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// `[rate_limits]` in config.toml. A value of 0 turns that limit off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Frames one connection may send per second (every event counts). Default 100.
    pub messages_per_s: u32,
    /// `phx_join`s per second per connection. Default 10.
    pub joins_per_s: u32,
    /// `presence` calls per second per connection. Default 10.
    pub presence_per_s: u32,
    /// `post`s per minute per connection. Default 30.
    pub posts_per_min: u32,
    /// `location` beacons per second per connection. Default 10.
    pub beacons_per_s: u32,
    /// Frames one user may send per second across all their connections. Default 300.
    pub user_messages_per_s: u32,
    /// Refusals within `flood_window_ms` after which the connection is closed (4029). Default 100.
    pub flood_rejections_max: u32,
    /// The window of the flood rule, in milliseconds. Default 5,000.
    pub flood_window_ms: u64,
    /// Messages of `POST /api/broadcast` per second per caller (the user, or the client IP when
    /// anonymous). Default 100.
    pub rest_messages_per_s: u32,
    /// Messages of `POST /api/broadcast` per second per topic, all callers together. Default 500.
    pub rest_topic_messages_per_s: u32,
    /// Reads (`GET /api/channels/*/history`, `GET /api/nearby`) per second per caller. Default 20.
    pub rest_reads_per_s: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            messages_per_s: 100,
            joins_per_s: 10,
            presence_per_s: 10,
            posts_per_min: 30,
            beacons_per_s: 10,
            user_messages_per_s: 300,
            flood_rejections_max: 100,
            flood_window_ms: 5_000,
            rest_messages_per_s: 100,
            rest_topic_messages_per_s: 500,
            rest_reads_per_s: 20,
        }
    }
}

impl RateLimitConfig {
    /// Every limit off (benchmarks, tests of other behaviour).
    pub fn unlimited() -> RateLimitConfig {
        RateLimitConfig {
            messages_per_s: 0,
            joins_per_s: 0,
            presence_per_s: 0,
            posts_per_min: 0,
            beacons_per_s: 0,
            user_messages_per_s: 0,
            flood_rejections_max: 0,
            flood_window_ms: RateLimitConfig::default().flood_window_ms,
            rest_messages_per_s: 0,
            rest_topic_messages_per_s: 0,
            rest_reads_per_s: 0,
        }
    }
}

/// Which limit refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Messages,
    Joins,
    Presence,
    Posts,
    Beacons,
    UserMessages,
}

impl Limited {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Limited::Messages => "messages",
            Limited::Joins => "joins",
            Limited::Presence => "presence",
            Limited::Posts => "posts",
            Limited::Beacons => "beacons",
            Limited::UserMessages => "user_messages",
        }
    }

    /// The refusal; the codes and texts are Supabase's where it has one.
    pub fn refusal(self) -> Refusal {
        let (code, detail) = match self {
            Limited::Messages | Limited::UserMessages => {
                (Code::RateLimited, "Too many messages per second")
            }
            Limited::Joins => (
                Code::ClientJoinRateLimitReached,
                "Too many joins per second",
            ),
            Limited::Presence => (Code::RateLimited, "Client presence rate limit exceeded"),
            Limited::Posts => (Code::RateLimited, "Too many posts per minute"),
            Limited::Beacons => (Code::RateLimited, "Too many location updates per second"),
        };
        Refusal::new(code, detail)
    }
}

fn per_second(n: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(n).map(|n| RateLimiter::direct(Quota::per_second(n)))
}

/// Forgets the keys of `limiter` whose buckets are full again (idle for a bucket period), and
/// gives the memory back: run on a timer, so a key seen once does not stay for ever.
pub fn prune_keyed<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

/// Per-user buckets, shared by every connection of the engine.
pub type UserLimiter = DefaultKeyedRateLimiter<Arc<str>>;

pub fn user_limiter(config: &RateLimitConfig) -> Option<Arc<UserLimiter>> {
    NonZeroU32::new(config.user_messages_per_s)
        .map(|n| Arc::new(RateLimiter::keyed(Quota::per_second(n))))
}

/// One connection's buckets and flood counter.
pub struct ConnectionLimiter {
    messages: Option<DefaultDirectRateLimiter>,
    joins: Option<DefaultDirectRateLimiter>,
    presence: Option<DefaultDirectRateLimiter>,
    posts: Option<DefaultDirectRateLimiter>,
    beacons: Option<DefaultDirectRateLimiter>,
    flood_max: u32,
    flood_window: Duration,
    window_started: Instant,
    rejections: u32,
}

impl ConnectionLimiter {
    pub fn new(config: &RateLimitConfig) -> ConnectionLimiter {
        ConnectionLimiter {
            messages: per_second(config.messages_per_s),
            joins: per_second(config.joins_per_s),
            presence: per_second(config.presence_per_s),
            posts: NonZeroU32::new(config.posts_per_min)
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
            beacons: per_second(config.beacons_per_s),
            flood_max: config.flood_rejections_max,
            flood_window: Duration::from_millis(config.flood_window_ms),
            window_started: Instant::now(),
            rejections: 0,
        }
    }

    /// Takes one token for a frame with `event` from `user`.
    pub fn check(
        &self,
        event: &str,
        user: &Arc<str>,
        users: Option<&UserLimiter>,
    ) -> Result<(), Limited> {
        let ok =
            |l: &Option<DefaultDirectRateLimiter>| l.as_ref().is_none_or(|l| l.check().is_ok());
        if !ok(&self.messages) {
            return Err(Limited::Messages);
        }
        if users.is_some_and(|u| u.check_key(user).is_err()) {
            return Err(Limited::UserMessages);
        }
        let specific = match event {
            "phx_join" => (&self.joins, Limited::Joins),
            "presence" => (&self.presence, Limited::Presence),
            "post" => (&self.posts, Limited::Posts),
            "location" => (&self.beacons, Limited::Beacons),
            _ => return Ok(()),
        };
        if ok(specific.0) {
            Ok(())
        } else {
            Err(specific.1)
        }
    }

    /// Counts a refusal; true when the connection is flooding and must be closed.
    pub fn rejected(&mut self) -> bool {
        if self.window_started.elapsed() > self.flood_window {
            self.window_started = Instant::now();
            self.rejections = 0;
        }
        self.rejections += 1;
        self.flood_max > 0 && self.rejections > self.flood_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_past_the_burst_and_flooding_is_detected() {
        let config = RateLimitConfig {
            messages_per_s: 5,
            joins_per_s: 2,
            flood_rejections_max: 3,
            ..RateLimitConfig::default()
        };
        let mut l = ConnectionLimiter::new(&config);
        let user: Arc<str> = Arc::from("u");
        assert!(l.check("phx_join", &user, None).is_ok());
        assert!(l.check("phx_join", &user, None).is_ok());
        assert_eq!(l.check("phx_join", &user, None), Err(Limited::Joins));
        assert!(l.check("broadcast", &user, None).is_ok());
        assert!(l.check("broadcast", &user, None).is_ok());
        assert_eq!(l.check("broadcast", &user, None), Err(Limited::Messages));
        assert!(!l.rejected() && !l.rejected() && !l.rejected());
        assert!(l.rejected());
    }

    #[test]
    fn the_user_bucket_spans_connections() {
        let config = RateLimitConfig {
            user_messages_per_s: 3,
            ..RateLimitConfig::default()
        };
        let users = user_limiter(&config).unwrap();
        let (a, b) = (
            ConnectionLimiter::new(&config),
            ConnectionLimiter::new(&config),
        );
        let user: Arc<str> = Arc::from("u");
        assert!(a.check("broadcast", &user, Some(&users)).is_ok());
        assert!(b.check("broadcast", &user, Some(&users)).is_ok());
        assert!(a.check("broadcast", &user, Some(&users)).is_ok());
        assert_eq!(
            b.check("broadcast", &user, Some(&users)),
            Err(Limited::UserMessages)
        );
    }

    /// F19: pruning forgets users whose buckets are full again.
    #[test]
    fn pruning_forgets_idle_users() {
        let config = RateLimitConfig {
            user_messages_per_s: 1_000,
            ..RateLimitConfig::default()
        };
        let users = user_limiter(&config).unwrap();
        let conn = ConnectionLimiter::new(&RateLimitConfig::unlimited());
        for i in 0..100 {
            let user: Arc<str> = Arc::from(format!("u{i}"));
            conn.check("broadcast", &user, Some(&users)).unwrap();
        }
        assert_eq!(users.len(), 100);
        // Each bucket is full again 1 ms after its one token: prune until the map is empty.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !users.is_empty() && Instant::now() < deadline {
            prune_keyed(&users);
            std::thread::yield_now();
        }
        assert!(users.is_empty());
    }
}
