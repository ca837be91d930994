//! Rate limit: the settings and the sans-IO state; documented in
//! [`protection`](super).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::validate::{self, Check, ConfigError};

/// A client-side quota: `requests` per `period`, at most `burst` at once.
/// Made with [`RateLimit::builder`] (or [`per_second`](Self::per_second),
/// [`per_minute`](Self::per_minute), [`per_hour`](Self::per_hour)), whose
/// [`build`](RateLimitBuilder::build) checks it: a `RateLimit` is always
/// valid.
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`burst`](RateLimitBuilder::burst) | `requests` (the whole quota at once) |
/// | [`max_wait`](RateLimitBuilder::max_wait) | 60 s |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: u32,
    period: Duration,
    burst: u32,
    max_wait: Duration,
}

impl RateLimit {
    /// `requests` per `period`, replenished evenly (one every
    /// `period / requests`); both must be positive, which
    /// [`build`](RateLimitBuilder::build) checks.
    pub fn builder(requests: u32, period: Duration) -> RateLimitBuilder {
        RateLimitBuilder {
            requests,
            period,
            burst: None,
            max_wait: Duration::from_secs(60),
        }
    }
    /// `requests` a second.
    pub fn per_second(requests: u32) -> RateLimitBuilder {
        RateLimit::builder(requests, Duration::from_secs(1))
    }
    /// `requests` a minute (an LLM provider's RPM).
    pub fn per_minute(requests: u32) -> RateLimitBuilder {
        RateLimit::builder(requests, Duration::from_secs(60))
    }
    /// `requests` an hour (GitHub's 5,000).
    pub fn per_hour(requests: u32) -> RateLimitBuilder {
        RateLimit::builder(requests, Duration::from_secs(3600))
    }

    /// Requests per period.
    pub fn requests(&self) -> u32 {
        self.requests
    }
    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
    /// The most requests let through at once after a quiet spell.
    pub fn burst(&self) -> u32 {
        self.burst
    }
    /// The longest an attempt waits for its turn.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The time between two turns at the steady rate.
    fn interval(&self) -> Duration {
        self.period / self.requests
    }
}

/// Builds a [`RateLimit`]; [`build`](Self::build) checks the settings.
/// Defaults as [`RateLimit`] lists them.
///
/// ```
/// use std::time::Duration;
/// let limit = http_resilience::RateLimit::per_second(10).burst(1).build()?;
/// assert_eq!(limit.burst(), 1);
/// let err = http_resilience::RateLimit::per_second(0).build().unwrap_err();
/// assert_eq!(err.field(), "requests");
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct RateLimitBuilder {
    requests: u32,
    period: Duration,
    burst: Option<u32>,
    max_wait: Duration,
}

impl RateLimitBuilder {
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
    /// Checks the settings (`requests`, `per`, `burst`, `max_wait`, in
    /// that order; `per` is the period's name in configuration files); the
    /// error names the first bad one.
    pub fn build(self) -> Result<RateLimit, ConfigError> {
        validate::nonzero(self.requests).at("requests")?;
        validate::positive(self.period).at("per")?;
        let burst = self.burst.unwrap_or(self.requests);
        validate::nonzero(burst).at("burst")?;
        validate::at_most_max(self.max_wait).at("max_wait")?;
        if (self.period / self.requests).is_zero() {
            return Err(ConfigError::new(
                "per",
                format!(
                    "{:?} / {} is below a nanosecond",
                    self.period, self.requests
                ),
            ));
        }
        Ok(RateLimit {
            requests: self.requests,
            period: self.period,
            burst,
            max_wait: self.max_wait,
        })
    }
}

/// A turn under a rate limit: the instant at which the attempt holding it
/// may be sent (now, or later for a reservation). Handed out by
/// [`RateLimitState::acquire`]; an attempt sends at [`at`](Self::at) and
/// drops the turn, or gives it back with [`RateLimitState::release`] if it
/// will not use it. Not `Clone`: a turn is given back at most once.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Turn {
    at: Instant,
}

impl Turn {
    /// A turn at `at`, for a [`StateStore`](crate::StateStore) that keeps
    /// its own limiter.
    pub fn new(at: Instant) -> Turn {
        Turn { at }
    }
    /// When the attempt holding it may be sent.
    pub fn at(&self) -> Instant {
        self.at
    }
}

/// One rate limit's state, as a plain value: the GCRA's theoretical
/// arrival time and the reserved turns given back before they came. Every
/// transition takes the time as an argument.
///
/// GCRA by virtual scheduling: each turn moves the theoretical arrival time
/// (`tat`) one interval (`period / requests`) on; a turn is free at `now`
/// if `now >= tat - tolerance` (the tolerance is `burst - 1` intervals),
/// and otherwise the next turn is at `tat - tolerance`, which a request may
/// reserve. A reservation given back is taken off the end of the schedule
/// if it is the last one, and otherwise handed to the next request that
/// asks (never earlier than its time, so the limit holds either way).
///
/// ```
/// use std::time::{Duration, Instant};
/// use http_resilience::RateLimit;
/// use http_resilience::rate_limit::RateLimitState;
///
/// let limit = RateLimit::per_second(10).burst(1).build().unwrap();
/// let mut state = RateLimitState::new(&limit);
/// let t0 = Instant::now();
/// let wait = Duration::from_secs(1);
/// assert_eq!(state.acquire(t0, wait).unwrap().at(), t0);
/// // the next ones wait in line, 100 ms apart
/// let second = state.acquire(t0, wait).unwrap();
/// assert_eq!(second.at(), t0 + Duration::from_millis(100));
/// let third = state.acquire(t0, wait).unwrap();
/// assert_eq!(third.at(), t0 + Duration::from_millis(200));
/// // beyond max_wait: refused at once, with the wait, taking nothing
/// assert_eq!(state.acquire(t0, Duration::from_millis(250)), Err(Duration::from_millis(300)));
/// // a request dropped while it waits gives its turn back; the next takes it
/// state.release(second);
/// assert_eq!(state.acquire(t0, wait).unwrap().at(), t0 + Duration::from_millis(100));
/// # let _ = third;
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitState {
    /// The interval between turns; zero lets everything pass.
    interval: Duration,
    /// How far ahead of the theoretical arrival time a turn may be taken:
    /// `burst - 1` intervals.
    tolerance: Duration,
    /// The theoretical arrival time of the next turn; `None` before the
    /// first.
    tat: Option<Instant>,
    /// Reserved turns given back, in time order, to hand out again (only at
    /// or after their time).
    free: VecDeque<Instant>,
    /// The last turn the schedule handed out and the `tat` before it: a
    /// turn free at once and given back at once (its attempt refused by the
    /// breaker) comes off exactly.
    last: Option<(Instant, Option<Instant>)>,
}

impl RateLimitState {
    /// The state of `limit` before any turn.
    pub fn new(limit: &RateLimit) -> RateLimitState {
        let (interval, burst) = (limit.interval(), limit.burst());
        RateLimitState {
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            tat: None,
            free: VecDeque::new(),
            last: None,
        }
    }

    /// Takes the next turn at `now`: free now, or a reservation of the next
    /// one in line, if that comes within `max_wait`; otherwise how long
    /// until it would come (at least a nanosecond), taking nothing.
    pub fn acquire(&mut self, now: Instant, max_wait: Duration) -> Result<Turn, Duration> {
        // Turns given back that have passed are gone: sending one now
        // could exceed the limit.
        while self.free.front().is_some_and(|&at| at < now) {
            self.free.pop_front();
        }
        let next = match self.tat {
            Some(tat) => tat
                .checked_sub(self.tolerance)
                .map_or(now, |earliest| earliest.max(now)),
            None => now,
        };
        if let Some(&at) = self.free.front()
            && at <= next
        {
            let wait = at - now;
            if wait > max_wait {
                return Err(wait.max(Duration::from_nanos(1)));
            }
            self.free.pop_front();
            return Ok(Turn { at });
        }
        let wait = next - now;
        if wait > max_wait {
            return Err(wait.max(Duration::from_nanos(1)));
        }
        let base = self.tat.map_or(now, |tat| tat.max(now));
        self.last = Some((next, self.tat));
        // A limit valid for a policy (an interval of at most 365 days)
        // never overflows; past that, the schedule stops moving.
        self.tat = Some(base.checked_add(self.interval).unwrap_or(base));
        Ok(Turn { at: next })
    }

    /// Gives back a turn that will not be used (its request was dropped, or
    /// refused after taking it). The last turn of the schedule comes off
    /// it; another is handed to the next request that asks, at its time.
    pub fn release(&mut self, turn: Turn) {
        let undo = self.last.filter(|(at, _)| *at == turn.at);
        if undo.is_some() || self.is_last(turn.at) {
            match undo {
                Some((_, before)) => self.tat = before,
                None => self.unschedule_last(),
            }
            self.last = None;
            // Turns given back earlier may now be the last ones.
            while let Some(&at) = self.free.back()
                && self.is_last(at)
            {
                self.free.pop_back();
                self.unschedule_last();
            }
        } else {
            let i = self.free.partition_point(|&at| at <= turn.at);
            self.free.insert(i, turn.at);
        }
    }

    /// Whether the limiter is at rest at `now`: no turn scheduled after
    /// `now` (every reservation's time has come, and a burst would be let
    /// through whole), so that from `now` on it behaves as a new state
    /// would, and a [`StateStore`](crate::StateStore) may forget it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use http_resilience::RateLimit;
    /// use http_resilience::rate_limit::RateLimitState;
    ///
    /// let limit = RateLimit::per_second(10).burst(1).build().unwrap();
    /// let mut state = RateLimitState::new(&limit);
    /// let t0 = Instant::now();
    /// assert!(state.is_at_rest(t0));
    /// let _turn = state.acquire(t0, Duration::ZERO).unwrap();
    /// assert!(!state.is_at_rest(t0), "the next turn is 100 ms away");
    /// assert!(state.is_at_rest(t0 + Duration::from_millis(100)));
    /// ```
    pub fn is_at_rest(&self, now: Instant) -> bool {
        // Turns given back come before `tat`: they are over too.
        self.tat.is_none_or(|tat| tat <= now)
    }

    /// Reserved turns given back and not yet handed out again.
    pub fn given_back(&self) -> usize {
        self.free.len()
    }

    /// Whether `at` is the last turn of the schedule: `tat` is one interval
    /// past it, plus the tolerance.
    fn is_last(&self, at: Instant) -> bool {
        !self.interval.is_zero()
            && self
                .tat
                .and_then(|tat| tat.checked_sub(self.interval)?.checked_sub(self.tolerance))
                == Some(at)
    }

    fn unschedule_last(&mut self) {
        self.last = None;
        if let Some(tat) = self.tat {
            self.tat = tat.checked_sub(self.interval).or(Some(tat));
        }
    }
}

/// A [`RateLimitState`] behind a lock: what
/// [`InMemoryStore`](crate::InMemoryStore) keeps per endpoint.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<RateLimitState>,
}

impl Limiter {
    /// A limiter for `limit`. A policy holds only validated limits; an
    /// invalid one gives a limiter that lets everything pass.
    pub fn new(limit: &RateLimit) -> Limiter {
        Limiter {
            state: Mutex::new(RateLimitState::new(limit)),
        }
    }

    /// [`RateLimitState::acquire`].
    pub fn acquire(&self, now: Instant, max_wait: Duration) -> Result<Turn, Duration> {
        self.lock().acquire(now, max_wait)
    }

    /// [`RateLimitState::release`].
    pub fn release(&self, turn: Turn) {
        self.lock().release(turn)
    }

    /// [`RateLimitState::is_at_rest`].
    pub fn is_at_rest(&self, now: Instant) -> bool {
        self.lock().is_at_rest(now)
    }

    /// Takes a turn if one is free now (on tokio's clock); otherwise says
    /// how long until one is (and takes nothing).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = tokio::time::Instant::now().into_std();
        self.acquire(now, Duration::ZERO).map(|_| ())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateLimitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ten_a_second_in_bursts_of_one() {
        let limiter = Limiter::new(&RateLimit::per_second(10).burst(1).build().unwrap());
        assert_eq!(limiter.try_acquire(), Ok(()));
        assert_eq!(limiter.try_acquire(), Err(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(limiter.try_acquire(), Err(Duration::from_millis(40)));
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_eq!(limiter.try_acquire(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let limiter = Limiter::new(&RateLimit::per_minute(60).burst(5).build().unwrap());
        for _ in 0..5 {
            assert_eq!(limiter.try_acquire(), Ok(()));
        }
        assert_eq!(limiter.try_acquire(), Err(Duration::from_secs(1)));
    }

    #[test]
    fn waiters_take_their_place_in_line_and_give_it_back() {
        let limit = RateLimit::per_second(10).burst(2).build().unwrap();
        let mut s = RateLimitState::new(&limit);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let long = Duration::from_secs(60);
        let at = |turn: &Turn| turn.at() - t0;
        // a burst of 2, then one every 100 ms, in the order asked
        let turns: Vec<Turn> = (0..5).map(|_| s.acquire(t0, long).unwrap()).collect();
        let times: Vec<Duration> = turns.iter().map(at).collect();
        assert_eq!(times, [ms(0), ms(0), ms(100), ms(200), ms(300)]);
        // beyond max_wait: refused, nothing taken
        assert_eq!(s.acquire(t0, ms(350)), Err(ms(400)));
        assert_eq!(at(&s.acquire(t0, ms(400)).unwrap()), ms(400));
        let mut turns = turns;
        // the last turn given back comes off the schedule...
        let last = s.acquire(t0, long).unwrap();
        assert_eq!(at(&last), ms(500));
        s.release(last);
        assert_eq!(s.given_back(), 0);
        // ...one in the middle goes to the next request that asks
        let middle = turns.remove(3);
        s.release(middle);
        assert_eq!(s.given_back(), 1);
        assert_eq!(at(&s.acquire(t0, long).unwrap()), ms(200));
        assert_eq!(at(&s.acquire(t0, long).unwrap()), ms(500));
        // given back, then the last one too: both come off
        let a = s.acquire(t0, long).unwrap();
        let b = s.acquire(t0, long).unwrap();
        s.release(a);
        s.release(b);
        assert_eq!(s.given_back(), 0);
        assert_eq!(at(&s.acquire(t0, long).unwrap()), ms(600));
        // a turn given back is not handed out after its time has passed
        let c = s.acquire(t0, long).unwrap();
        let _d = s.acquire(t0, long).unwrap();
        assert_eq!(at(&c), ms(700));
        s.release(c);
        let later = t0 + ms(750);
        let next = s.acquire(later, long).unwrap();
        assert_eq!(next.at() - t0, ms(900));
        assert_eq!(s.given_back(), 0);
    }

    #[test]
    fn at_rest_once_no_turn_is_ahead() {
        let limit = RateLimit::per_second(10).burst(3).build().unwrap();
        let mut s = RateLimitState::new(&limit);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let long = Duration::from_secs(60);
        assert!(s.is_at_rest(t0));
        let turns: Vec<Turn> = (0..5).map(|_| s.acquire(t0, long).unwrap()).collect();
        assert_eq!(
            turns[4].at() - t0,
            ms(200),
            "a burst of 3, then reservations"
        );
        assert!(!s.is_at_rest(t0 + ms(499)));
        assert!(s.is_at_rest(t0 + ms(500)), "the whole burst is back");
        // at rest, it behaves as a new limiter: a burst of 3 at once
        let later = t0 + ms(500);
        for _ in 0..3 {
            assert_eq!(s.acquire(later, Duration::ZERO).unwrap().at(), later);
        }
        assert!(s.acquire(later, Duration::ZERO).is_err());
        // a reservation given back in the middle is not ahead of the schedule
        let mut s = RateLimitState::new(&limit);
        let mut turns: Vec<Turn> = (0..6).map(|_| s.acquire(t0, long).unwrap()).collect();
        s.release(turns.remove(4));
        assert_eq!(s.given_back(), 1);
        assert!(!s.is_at_rest(t0 + ms(599)));
        assert!(s.is_at_rest(t0 + ms(600)));
        let limiter = Limiter::new(&limit);
        assert!(limiter.is_at_rest(t0));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = [
            (RateLimit::per_second(0), "requests"),
            (RateLimit::builder(1, Duration::ZERO), "per"),
            (RateLimit::per_second(1).burst(0), "burst"),
            (RateLimit::per_second(1).max_wait(Duration::MAX), "max_wait"),
            (RateLimit::builder(u32::MAX, Duration::from_nanos(1)), "per"),
        ];
        for (r, field) in bad {
            assert_eq!(r.build().unwrap_err().field(), field, "{r:?}");
        }
        assert_eq!(RateLimit::per_hour(5000).build().unwrap().burst(), 5000);
    }
}
