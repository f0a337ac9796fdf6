//! Rate limits of the REST API: broadcast messages per caller and per topic, reads (history,
//! nearby) per caller. A caller is its user when its token names one, else its client IP.
//! `service_role` (server-side callers) is exempt, as it is from the topic rules.
//!
//! governor keyed limiters, like the socket's buckets; their keys are pruned on a timer
//! ([`HttpLimiters::prune`]) so a stream of new callers or topics cannot grow them for ever.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use actix_web::HttpRequest;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use locus_actors::auth::{Identity, SERVICE_ROLE};
use locus_actors::metrics as m;
use locus_actors::rate_limit::{prune_keyed, RateLimitConfig};

use crate::http::error::ApiError;

/// Who a REST request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    User(Arc<str>),
    Ip(IpAddr),
    /// No peer address (not over TCP): one shared bucket.
    Unknown,
}

/// The REST API's buckets.
pub struct HttpLimiters {
    messages: Option<DefaultKeyedRateLimiter<CallerKey>>,
    topics: Option<DefaultKeyedRateLimiter<String>>,
    reads: Option<DefaultKeyedRateLimiter<CallerKey>>,
}

fn keyed<K: std::hash::Hash + Eq + Clone>(per_s: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_s).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

/// Seconds a refused caller is told to wait: the buckets refill within one.
const RETRY_AFTER_S: u64 = 1;

impl HttpLimiters {
    pub fn new(config: &RateLimitConfig) -> HttpLimiters {
        HttpLimiters {
            messages: keyed(config.rest_messages_per_s),
            topics: keyed(config.rest_topic_messages_per_s),
            reads: keyed(config.rest_reads_per_s),
        }
    }

    /// Takes `n` message tokens from the caller's bucket (a whole request at once).
    pub fn messages(&self, caller: &Caller, n: usize) -> Result<(), ApiError> {
        take(&self.messages, caller, &caller.key, n, "rest_messages")
    }

    /// Takes one token of `topic`'s bucket.
    pub fn topic(&self, caller: &Caller, topic: &str) -> Result<(), ApiError> {
        if caller.exempt {
            return Ok(());
        }
        take(
            &self.topics,
            caller,
            &topic.to_owned(),
            1,
            "rest_topic_messages",
        )
    }

    /// Takes one read token from the caller's bucket.
    pub fn read(&self, caller: &Caller) -> Result<(), ApiError> {
        take(&self.reads, caller, &caller.key, 1, "rest_reads")
    }

    /// Forgets the buckets that are full again, so the maps hold only recent callers and
    /// topics. Run on a timer.
    pub fn prune(&self) {
        for l in [&self.messages, &self.reads].into_iter().flatten() {
            prune_keyed(l);
        }
        if let Some(l) = &self.topics {
            prune_keyed(l);
        }
    }

    /// Keys held now, across the maps (for tests of pruning).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.messages.as_ref().map_or(0, |l| l.len())
            + self.topics.as_ref().map_or(0, |l| l.len())
            + self.reads.as_ref().map_or(0, |l| l.len())
    }
}

fn take<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    caller: &Caller,
    key: &K,
    n: usize,
    reason: &'static str,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter.as_ref().filter(|_| !caller.exempt) else {
        return Ok(());
    };
    let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    match limiter.check_key_n(key, n) {
        Ok(Ok(())) => Ok(()),
        // Err(InsufficientCapacity): more than a burst in one request can never pass.
        _ => {
            m::rate_limited(reason);
            Err(ApiError::rate_limited(
                "too many requests for this caller or topic (see [rate_limits] rest_*)",
                RETRY_AFTER_S,
            ))
        }
    }
}

/// A REST caller: the bucket key and whether it is exempt.
pub struct Caller {
    pub key: CallerKey,
    pub exempt: bool,
}

impl Caller {
    pub fn of(req: &HttpRequest, who: &Identity) -> Caller {
        let key = if who.is_user() {
            CallerKey::User(who.user_id.clone())
        } else {
            req.peer_addr()
                .map_or(CallerKey::Unknown, |a| CallerKey::Ip(a.ip()))
        };
        Caller {
            key,
            exempt: who.is_authenticated() && *who.role == *SERVICE_ROLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F19: buckets of callers that went quiet are pruned away.
    #[test]
    fn quiet_callers_are_pruned() {
        let config = RateLimitConfig {
            rest_messages_per_s: 1000,
            ..RateLimitConfig::default()
        };
        let l = HttpLimiters::new(&config);
        for i in 0..50u8 {
            let caller = Caller {
                key: CallerKey::Ip(IpAddr::from([10, 0, 0, i])),
                exempt: false,
            };
            l.messages(&caller, 1).unwrap();
        }
        assert!(l.keys() >= 50);
        // A bucket is full again 1 ms after its one token: prune until the map is empty.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while l.keys() > 0 && std::time::Instant::now() < deadline {
            l.prune();
            std::thread::yield_now();
        }
        assert_eq!(l.keys(), 0);
    }
}
