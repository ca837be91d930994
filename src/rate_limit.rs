//! [`RateLimit`]: a client-side quota per endpoint, with bursts, enforced
//! by [`governor`]'s GCRA.
//!
//! Every attempt takes its turn, retries included: the limiter sits in
//! front of the retries. An attempt that finds no cell free waits for one,
//! under tokio's clock, for at most [`max_wait`](RateLimit::max_wait) per
//! attempt; if its turn would come later than that, it fails at once with
//! [`Error::RateLimitedLocally`](crate::Error::RateLimitedLocally), which
//! says how long it would have had to wait. A waiting request holds no
//! cell, so dropping it leaves nothing behind.
//!
//! The waits before the first attempt do not count against the policy's
//! [`deadline`](crate::RetryPolicyBuilder::deadline) (the deadline starts
//! when the first attempt is sent, as in .NET's pipeline); waits before a
//! retry do.
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{RateLimit, RetryPolicy};
//!
//! // GitHub's 5,000 requests an hour, in bursts of at most 100, waiting at
//! // most 30 s for a turn.
//! let github = RateLimit::per_hour(5000)
//!     .burst(100)
//!     .max_wait(Duration::from_secs(30));
//! let policy = http_resilience::Preset::GitHub.builder().rate_limit(github).build()?;
//! assert_eq!(policy.rate_limit().unwrap().requests(), 5000);
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::policy::{ConfigError, MAX_SETTING};

/// A client-side quota: `requests` per `period`, at most `burst` at once.
///
/// | setting | default |
/// |---|---|
/// | [`burst`](Self::burst) | `requests` (the whole quota at once) |
/// | [`max_wait`](Self::max_wait) | 60 s |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct RateLimit {
    requests: u32,
    period: Duration,
    burst: Option<u32>,
    max_wait: Duration,
}

impl RateLimit {
    /// `requests` per `period`, replenished evenly (one every
    /// `period / requests`). Checked when the policy is built: both must be
    /// positive.
    pub fn new(requests: u32, period: Duration) -> RateLimit {
        RateLimit {
            requests,
            period,
            burst: None,
            max_wait: Duration::from_secs(60),
        }
    }
    /// `requests` a second.
    pub fn per_second(requests: u32) -> RateLimit {
        RateLimit::new(requests, Duration::from_secs(1))
    }
    /// `requests` a minute (an LLM provider's RPM).
    pub fn per_minute(requests: u32) -> RateLimit {
        RateLimit::new(requests, Duration::from_secs(60))
    }
    /// `requests` an hour (GitHub's 5,000).
    pub fn per_hour(requests: u32) -> RateLimit {
        RateLimit::new(requests, Duration::from_secs(3600))
    }
    /// The most requests let through at once after a quiet spell. Default:
    /// `requests`. Must be positive.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }
    /// The longest an attempt waits for its turn; beyond it, the request
    /// fails with `RATE_LIMITED_LOCALLY` at once. Default 60 s.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Requests per period.
    pub fn requests(&self) -> u32 {
        self.requests
    }
    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
    /// The burst size.
    pub fn burst_size(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }
    /// The longest wait for a turn.
    pub fn max_wait_time(&self) -> Duration {
        self.max_wait
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let bad =
            |what: &str, reason: String| Err(ConfigError::new(format!("{field}.{what}"), reason));
        if self.requests == 0 {
            return bad("requests", "must be greater than zero".into());
        }
        if self.period.is_zero() || self.period > MAX_SETTING {
            return bad(
                "per",
                format!(
                    "must be greater than zero and at most 365 days (got {:?})",
                    self.period
                ),
            );
        }
        if self.burst == Some(0) {
            return bad("burst", "must be greater than zero".into());
        }
        if self.max_wait > MAX_SETTING {
            return bad(
                "max_wait",
                format!("must be at most 365 days (got {:?})", self.max_wait),
            );
        }
        if self.quota().is_none() {
            return bad(
                "per",
                format!(
                    "{:?} / {} is below a nanosecond",
                    self.period, self.requests
                ),
            );
        }
        Ok(())
    }

    fn quota(&self) -> Option<Quota> {
        let burst = NonZeroU32::new(self.burst_size())?;
        let interval = self.period / self.requests.max(1);
        Some(Quota::with_period(interval)?.allow_burst(burst))
    }
}

/// A GCRA limiter on tokio's clock (so it follows a paused test clock).
pub struct Limiter {
    inner: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for `limit`. A policy holds only validated limits; an
    /// invalid one gives a limiter that lets everything pass.
    pub fn new(limit: &RateLimit) -> Limiter {
        let quota = limit
            .quota()
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX));
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        Limiter {
            inner: RateLimiter::direct_with_clock(quota, clock),
            clock,
        }
    }

    /// Takes a cell if one is free now; otherwise says how long until one
    /// is (and takes nothing).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        match self.inner.check() {
            Ok(()) => Ok(()),
            // At least a nanosecond, so that a caller sleeping on it makes
            // progress.
            Err(not_until) => Err(not_until
                .wait_time_from(self.clock.now())
                .max(Duration::from_nanos(1))),
        }
    }
}

/// Tokio's clock as governor sees it: the time since the limiter was made.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ten_a_second_in_bursts_of_one() {
        let limiter = Limiter::new(&RateLimit::per_second(10).burst(1));
        assert_eq!(limiter.try_acquire(), Ok(()));
        assert_eq!(limiter.try_acquire(), Err(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(limiter.try_acquire(), Err(Duration::from_millis(40)));
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_eq!(limiter.try_acquire(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let limiter = Limiter::new(&RateLimit::per_minute(60).burst(5));
        for _ in 0..5 {
            assert_eq!(limiter.try_acquire(), Ok(()));
        }
        assert_eq!(limiter.try_acquire(), Err(Duration::from_secs(1)));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = [
            (RateLimit::per_second(0), "r.requests"),
            (RateLimit::new(1, Duration::ZERO), "r.per"),
            (RateLimit::per_second(1).burst(0), "r.burst"),
            (
                RateLimit::per_second(1).max_wait(Duration::MAX),
                "r.max_wait",
            ),
            (RateLimit::new(u32::MAX, Duration::from_nanos(1)), "r.per"),
        ];
        for (r, field) in bad {
            assert_eq!(r.validate("r").unwrap_err().field(), field, "{r:?}");
        }
        assert_eq!(RateLimit::per_hour(5000).burst_size(), 5000);
    }
}
