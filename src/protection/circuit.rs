//! Circuit breaker: the settings and the sans-IO state; documented in
//! [`protection`](super).

use std::time::{Duration, Instant};

use crate::validate::{self, Check, ConfigError, MAX_SETTING};

/// The settings of a circuit breaker. See the [module docs](crate::protection#circuit-breaker). Made
/// with [`CircuitBreaker::builder`], which checks them, or
/// [`CircuitBreaker::default`].
///
/// # Default
///
/// | setting | default | source |
/// |---|---|---|
/// | [`failure_ratio`](CircuitBreakerBuilder::failure_ratio) | 0.5 | resilience4j |
/// | [`minimum_throughput`](CircuitBreakerBuilder::minimum_throughput) | 100 | .NET, resilience4j |
/// | [`sampling_window`](CircuitBreakerBuilder::sampling_window) | 30 s | .NET |
/// | [`break_duration`](CircuitBreakerBuilder::break_duration) | 5 s | .NET |
/// | [`half_open_probes`](CircuitBreakerBuilder::half_open_probes) | 1 | .NET |
/// | [`max_half_open_wait`](CircuitBreakerBuilder::max_half_open_wait) | 30 s | .NET's total timeout |
/// | [`consecutive_failures`](CircuitBreakerBuilder::consecutive_failures) | off | |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreaker {
    failure_ratio: f64,
    minimum_throughput: u32,
    sampling_window: Duration,
    break_duration: Duration,
    half_open_probes: u32,
    max_half_open_wait: Duration,
    consecutive_failures: Option<u32>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            failure_ratio: 0.5,
            minimum_throughput: 100,
            sampling_window: Duration::from_secs(30),
            break_duration: Duration::from_secs(5),
            half_open_probes: 1,
            max_half_open_wait: Duration::from_secs(30),
            consecutive_failures: None,
        }
    }
}

impl CircuitBreaker {
    /// A builder holding the defaults (see [`CircuitBreaker`]).
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            breaker: CircuitBreaker::default(),
        }
    }
    /// The share of failed attempts in the window that opens it.
    pub fn failure_ratio(&self) -> f64 {
        self.failure_ratio
    }
    /// The attempts the window must hold before the ratio counts.
    pub fn minimum_throughput(&self) -> u32 {
        self.minimum_throughput
    }
    /// How far back the ratio looks.
    pub fn sampling_window(&self) -> Duration {
        self.sampling_window
    }
    /// How long it stays open before it lets probes through.
    pub fn break_duration(&self) -> Duration {
        self.break_duration
    }
    /// How many probes go through at once when half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }
    /// The longest it waits, half-open, for its probes.
    pub fn max_half_open_wait(&self) -> Duration {
        self.max_half_open_wait
    }
    /// The consecutive failures that open it, if set.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }
}

/// Builds a [`CircuitBreaker`]; [`build`](Self::build) checks the
/// settings. Defaults as [`CircuitBreaker`] lists them.
///
/// ```
/// use std::time::Duration;
/// let breaker = http_resilience::CircuitBreaker::builder()
///     .consecutive_failures(5)
///     .break_duration(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(breaker.break_duration(), Duration::from_secs(10));
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct CircuitBreakerBuilder {
    breaker: CircuitBreaker,
}

impl CircuitBreakerBuilder {
    /// The share of failed attempts in the window that opens the breaker,
    /// in (0, 1]. Default 0.5.
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.breaker.failure_ratio = ratio;
        self
    }
    /// The attempts the window must hold before the ratio counts. Default
    /// 100. Must be positive.
    pub fn minimum_throughput(mut self, attempts: u32) -> Self {
        self.breaker.minimum_throughput = attempts;
        self
    }
    /// How far back the ratio looks (a sliding window of ten buckets).
    /// Default 30 s.
    pub fn sampling_window(mut self, window: Duration) -> Self {
        self.breaker.sampling_window = window;
        self
    }
    /// How long the breaker stays open before it lets probes through.
    /// Default 5 s.
    pub fn break_duration(mut self, duration: Duration) -> Self {
        self.breaker.break_duration = duration;
        self
    }
    /// How many probes go through at once when half-open, and how many
    /// must succeed to close it. Default 1. Must be positive.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.breaker.half_open_probes = probes;
        self
    }
    /// The longest the breaker waits, half-open, for its probes: once the
    /// latest probe has been out this long without an outcome, a new probe
    /// is admitted (a new half-open round: the older probes' outcomes no
    /// longer count). Until then the others are refused with a `retry_in`
    /// that says when that will be. Default 30 s, the total timeout of
    /// .NET's standard resilience handler: a probe still out after it would
    /// have failed there. Must be positive.
    pub fn max_half_open_wait(mut self, wait: Duration) -> Self {
        self.breaker.max_half_open_wait = wait;
        self
    }
    /// Also open after this many failures in a row, whatever the ratio.
    /// Default: off. Must be positive.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.breaker.consecutive_failures = Some(failures);
        self
    }
    /// Checks the settings, in the order above; the error names the first
    /// bad one.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let c = self.breaker;
        validate::share(c.failure_ratio).at("failure_ratio")?;
        validate::nonzero(c.minimum_throughput).at("minimum_throughput")?;
        validate::positive(c.sampling_window).at("sampling_window")?;
        validate::positive(c.break_duration).at("break_duration")?;
        validate::positive(c.max_half_open_wait).at("max_half_open_wait")?;
        validate::nonzero(c.half_open_probes).at("half_open_probes")?;
        if let Some(n) = c.consecutive_failures {
            validate::nonzero(n).at("consecutive_failures")?;
        }
        Ok(c)
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitStatus {
    /// Attempts pass.
    Closed,
    /// Attempts are refused until the given instant.
    Open {
        /// When probes will be let through.
        until: Instant,
    },
    /// Probes are in flight or may go.
    HalfOpen,
}

/// The answer to "may this attempt go?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; hand the ticket back with the outcome.
    Allow(Ticket),
    /// Refuse it; the breaker lets probes through in `retry_in`.
    Refuse {
        /// Time until the next probe may go: the end of the break, or
        /// while half-open with every probe out, the end of the
        /// [maximum half-open wait](CircuitBreaker::max_half_open_wait).
        retry_in: Duration,
    },
}

/// What an admitted attempt carries until its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    probe: bool,
    generation: u32,
}

impl Ticket {
    /// Whether the attempt is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Buckets in the sliding window.
const BUCKETS: usize = 10;

/// One breaker's state, as a plain value: what a
/// [`StateStore`](crate::StateStore) keeps for each endpoint. Every
/// transition lives here, takes the time as an argument, and is tested
/// without a runtime.
#[derive(Debug, Clone)]
pub struct CircuitState {
    mode: Mode,
    /// Bumped on every transition, so that outcomes of attempts admitted
    /// before it are not counted after it.
    generation: u32,
    consecutive: u32,
    /// (failures, total) per bucket; `head` is the newest.
    buckets: [(u32, u32); BUCKETS],
    head: usize,
    head_start: Option<Instant>,
    /// When every bucket will have left the window (the next outcome then
    /// starts a new one); `None` while the window is empty, or if that
    /// instant is too far to represent.
    window_ends: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
        /// When the latest probe was admitted.
        latest: Instant,
    },
}

impl Default for CircuitState {
    fn default() -> Self {
        CircuitState {
            mode: Mode::Closed,
            generation: 0,
            consecutive: 0,
            buckets: [(0, 0); BUCKETS],
            head: 0,
            head_start: None,
            window_ends: None,
        }
    }
}

impl CircuitState {
    /// Where the breaker stands at `now`.
    pub fn status(&self, now: Instant) -> CircuitStatus {
        match self.mode {
            Mode::Closed => CircuitStatus::Closed,
            Mode::Open { until } if now < until => CircuitStatus::Open { until },
            _ => CircuitStatus::HalfOpen,
        }
    }

    /// Asks whether an attempt may go at `now`.
    pub fn admit(&mut self, config: &CircuitBreaker, now: Instant) -> Verdict {
        match self.mode {
            Mode::Closed => Verdict::Allow(self.ticket(false)),
            Mode::Open { until } if now < until => Verdict::Refuse {
                retry_in: until - now,
            },
            Mode::Open { .. } => self.start_probing(now),
            Mode::HalfOpen {
                in_flight,
                succeeded,
                latest,
            } => {
                if in_flight + succeeded < config.half_open_probes {
                    self.mode = Mode::HalfOpen {
                        in_flight: in_flight + 1,
                        succeeded,
                        latest: now,
                    };
                    return Verdict::Allow(self.ticket(true));
                }
                // Every probe is out: the next goes when the latest has
                // been out for the maximum wait (an unvalidated wait too
                // large for an `Instant`: never).
                match latest.checked_add(config.max_half_open_wait) {
                    Some(next) if now < next => Verdict::Refuse {
                        retry_in: next - now,
                    },
                    Some(_) => self.start_probing(now),
                    None => Verdict::Refuse {
                        retry_in: MAX_SETTING,
                    },
                }
            }
        }
    }

    /// A new half-open round with one probe, admitted at `now`: the
    /// tickets of earlier probes become stale.
    fn start_probing(&mut self, now: Instant) -> Verdict {
        self.transition(Mode::HalfOpen {
            in_flight: 1,
            succeeded: 0,
            latest: now,
        });
        Verdict::Allow(self.ticket(true))
    }

    /// Records the outcome of an admitted attempt.
    pub fn record(&mut self, config: &CircuitBreaker, ticket: Ticket, failed: bool, now: Instant) {
        if ticket.generation != self.generation {
            // Admitted before the last transition: says nothing about now.
            return;
        }
        match self.mode {
            Mode::Closed => {
                self.consecutive = if failed {
                    self.consecutive.saturating_add(1)
                } else {
                    0
                };
                let (f, t) = self.add(config, failed, now);
                let by_ratio =
                    t >= config.minimum_throughput && f as f64 >= config.failure_ratio * t as f64;
                let in_a_row = config
                    .consecutive_failures
                    .is_some_and(|n| self.consecutive >= n);
                if failed && (by_ratio || in_a_row) {
                    self.open(config, now);
                }
            }
            Mode::HalfOpen {
                in_flight,
                succeeded,
                latest,
            } if ticket.probe => {
                if failed {
                    self.open(config, now);
                } else if succeeded + 1 >= config.half_open_probes {
                    self.transition(Mode::Closed);
                } else {
                    self.mode = Mode::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        succeeded: succeeded + 1,
                        latest,
                    };
                }
            }
            _ => {}
        }
    }

    /// Gives back an admitted attempt whose outcome will never come (its
    /// request was dropped): a probe's slot is freed.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation || !ticket.probe {
            return;
        }
        if let Mode::HalfOpen {
            in_flight,
            succeeded,
            latest,
        } = self.mode
        {
            self.mode = Mode::HalfOpen {
                in_flight: in_flight.saturating_sub(1),
                succeeded,
                latest,
            };
        }
    }

    /// Whether the breaker is at rest at `now`: closed, its last outcome
    /// (if any) a success, and nothing left in its sliding window (no
    /// outcome recorded, or every one older than the window). From `now`
    /// on it behaves as a new state would (tickets handed out before are
    /// ignored by either), so a [`StateStore`](crate::StateStore) may
    /// forget it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use http_resilience::circuit::{CircuitState, Verdict};
    /// use http_resilience::CircuitBreaker;
    ///
    /// let breaker = CircuitBreaker::default(); // a 30 s window
    /// let mut state = CircuitState::default();
    /// let t0 = Instant::now();
    /// assert!(state.is_at_rest(t0));
    /// let Verdict::Allow(ticket) = state.admit(&breaker, t0) else { unreachable!() };
    /// state.record(&breaker, ticket, false, t0);
    /// assert!(!state.is_at_rest(t0), "a success in the window");
    /// assert!(state.is_at_rest(t0 + Duration::from_secs(30)), "out of the window");
    /// ```
    pub fn is_at_rest(&self, now: Instant) -> bool {
        matches!(self.mode, Mode::Closed)
            && self.consecutive == 0
            && (self.window_ends.is_some_and(|end| now >= end)
                || self.buckets.iter().all(|&(_, total)| total == 0))
    }

    /// Probes in flight (0 unless half-open).
    pub fn probes_in_flight(&self) -> u32 {
        match self.mode {
            Mode::HalfOpen { in_flight, .. } => in_flight,
            _ => 0,
        }
    }

    fn ticket(&self, probe: bool) -> Ticket {
        Ticket {
            probe,
            generation: self.generation,
        }
    }

    fn open(&mut self, config: &CircuitBreaker, now: Instant) {
        // A policy's breaker is validated (at most 365 days); a state used
        // directly with a larger one stays open as long as it can.
        let until = now
            .checked_add(config.break_duration)
            .or_else(|| now.checked_add(MAX_SETTING))
            .unwrap_or(now);
        self.transition(Mode::Open { until });
    }

    fn transition(&mut self, mode: Mode) {
        self.mode = mode;
        self.generation = self.generation.wrapping_add(1);
        self.consecutive = 0;
        self.buckets = [(0, 0); BUCKETS];
        self.head_start = None;
        self.window_ends = None;
    }

    /// Adds one outcome to the window; returns (failures, total) in it.
    fn add(&mut self, config: &CircuitBreaker, failed: bool, now: Instant) -> (u32, u32) {
        let width = (config.sampling_window / BUCKETS as u32).max(Duration::from_nanos(1));
        match self.head_start {
            None => self.head_start = Some(now),
            Some(start) => {
                let behind = now.saturating_duration_since(start);
                let steps = behind.as_nanos() / width.as_nanos();
                if steps >= BUCKETS as u128 {
                    self.buckets = [(0, 0); BUCKETS];
                    self.head_start = Some(now);
                } else {
                    for _ in 0..steps {
                        self.head = (self.head + 1) % BUCKETS;
                        self.buckets[self.head] = (0, 0);
                    }
                    self.head_start = Some(start + width * steps as u32);
                }
            }
        }
        // The oldest bucket leaves the window `BUCKETS` widths after the
        // head's start: an outcome then clears them all.
        self.window_ends = self
            .head_start
            .and_then(|start| start.checked_add(width.checked_mul(BUCKETS as u32)?));
        let bucket = &mut self.buckets[self.head];
        bucket.0 += failed as u32;
        bucket.1 += 1;
        self.buckets
            .iter()
            .fold((0, 0), |(f, t), b| (f + b.0, t + b.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(state: &mut CircuitState, c: &CircuitBreaker, now: Instant) -> Ticket {
        match state.admit(c, now) {
            Verdict::Allow(t) => t,
            other => panic!("refused: {other:?}"),
        }
    }

    #[test]
    fn opens_on_ratio_with_minimum_throughput() {
        let c = CircuitBreaker::builder()
            .minimum_throughput(10)
            .failure_ratio(0.5)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        // 9 failures: below the minimum throughput, still closed
        for i in 0..9 {
            let t = allow(&mut s, &c, t0);
            s.record(&c, t, true, t0 + Duration::from_millis(i));
        }
        assert_eq!(s.status(t0), CircuitStatus::Closed);
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, true, t0);
        let until = t0 + Duration::from_secs(5);
        assert_eq!(s.status(t0), CircuitStatus::Open { until });
        assert_eq!(
            s.admit(&c, t0 + Duration::from_secs(1)),
            Verdict::Refuse {
                retry_in: Duration::from_secs(4)
            }
        );
    }

    #[test]
    fn successes_keep_it_closed_and_old_buckets_expire() {
        let c = CircuitBreaker::builder()
            .minimum_throughput(4)
            .failure_ratio(0.5)
            .sampling_window(Duration::from_secs(10))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        for ok in [true, true, true, false] {
            let t = allow(&mut s, &c, t0);
            s.record(&c, t, !ok, t0);
        }
        assert_eq!(s.status(t0), CircuitStatus::Closed, "1 in 4 < 50%");
        // 11 s later the successes have left the window: 1 success, then
        // failures only
        let later = t0 + Duration::from_secs(11);
        let t = allow(&mut s, &c, later);
        s.record(&c, t, false, later);
        for _ in 0..2 {
            let t = allow(&mut s, &c, later);
            s.record(&c, t, true, later);
        }
        assert_eq!(s.status(later), CircuitStatus::Closed, "3 < minimum 4");
        let t = allow(&mut s, &c, later);
        s.record(&c, t, true, later);
        assert!(matches!(s.status(later), CircuitStatus::Open { .. }));
    }

    #[test]
    fn consecutive_failures_open_it() {
        let c = CircuitBreaker::builder()
            .consecutive_failures(3)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        for failed in [true, true, false, true, true] {
            let t = allow(&mut s, &c, t0);
            s.record(&c, t, failed, t0);
        }
        assert_eq!(
            s.status(t0),
            CircuitStatus::Closed,
            "a success resets the run"
        );
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, true, t0);
        assert!(matches!(s.status(t0), CircuitStatus::Open { .. }));
    }

    #[test]
    fn half_open_probes_close_or_reopen() {
        let c = CircuitBreaker::builder()
            .consecutive_failures(1)
            .half_open_probes(2)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, true, t0);
        let t1 = t0 + Duration::from_secs(5);
        let p1 = allow(&mut s, &c, t1);
        let p2 = allow(&mut s, &c, t1);
        assert!(p1.is_probe() && p2.is_probe());
        assert!(
            matches!(s.admit(&c, t1), Verdict::Refuse { .. }),
            "2 probes at most"
        );
        s.record(&c, p1, false, t1);
        assert_eq!(s.status(t1), CircuitStatus::HalfOpen);
        assert!(
            matches!(s.admit(&c, t1), Verdict::Refuse { .. }),
            "one succeeded, one in flight"
        );
        s.record(&c, p2, false, t1);
        assert_eq!(s.status(t1), CircuitStatus::Closed);

        // reopen on a failed probe
        let t = allow(&mut s, &c, t1);
        s.record(&c, t, true, t1);
        let t2 = t1 + Duration::from_secs(5);
        let p = allow(&mut s, &c, t2);
        s.record(&c, p, true, t2);
        assert_eq!(
            s.status(t2),
            CircuitStatus::Open {
                until: t2 + Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn a_dropped_probe_frees_its_slot_and_stale_outcomes_are_ignored() {
        let c = CircuitBreaker::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        let stale = allow(&mut s, &c, t0);
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, true, t0);
        // a request admitted before it opened fails later: not counted
        s.record(&c, stale, true, t0);
        let t1 = t0 + Duration::from_secs(5);
        let p = allow(&mut s, &c, t1);
        assert_eq!(s.probes_in_flight(), 1);
        assert!(matches!(s.admit(&c, t1), Verdict::Refuse { .. }));
        s.release(p);
        assert_eq!(s.probes_in_flight(), 0);
        let p = allow(&mut s, &c, t1);
        s.record(&c, p, false, t1);
        assert_eq!(s.status(t1), CircuitStatus::Closed);
    }

    #[test]
    fn a_probe_out_for_the_maximum_wait_gives_way_to_a_new_one() {
        let c = CircuitBreaker::builder()
            .consecutive_failures(1)
            .max_half_open_wait(Duration::from_secs(30))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, true, t0);
        let t1 = t0 + Duration::from_secs(5);
        let stuck = allow(&mut s, &c, t1);
        let secs = Duration::from_secs;
        assert_eq!(s.admit(&c, t1), Verdict::Refuse { retry_in: secs(30) });
        assert_eq!(
            s.admit(&c, t1 + secs(29)),
            Verdict::Refuse { retry_in: secs(1) }
        );
        let t2 = t1 + secs(30);
        let fresh = allow(&mut s, &c, t2);
        assert!(fresh.is_probe());
        assert_eq!(
            s.probes_in_flight(),
            1,
            "the stuck probe is no longer counted"
        );
        assert_eq!(s.admit(&c, t2), Verdict::Refuse { retry_in: secs(30) });
        // the stuck probe's late failure and release change nothing
        s.record(&c, stuck, true, t2);
        s.release(stuck);
        assert_eq!(s.status(t2), CircuitStatus::HalfOpen);
        assert_eq!(s.probes_in_flight(), 1);
        s.record(&c, fresh, false, t2);
        assert_eq!(s.status(t2), CircuitStatus::Closed);

        // the longest wait a breaker takes: refused, no panic
        let huge = CircuitBreaker::builder()
            .consecutive_failures(1)
            .max_half_open_wait(MAX_SETTING)
            .build()
            .unwrap();
        let mut s = CircuitState::default();
        let t = allow(&mut s, &huge, t0);
        s.record(&huge, t, true, t0);
        let _probe = allow(&mut s, &huge, t1);
        assert!(matches!(s.admit(&huge, t1), Verdict::Refuse { .. }));
    }

    #[test]
    fn at_rest_when_closed_and_the_window_is_over() {
        let c = CircuitBreaker::builder()
            .consecutive_failures(2)
            .sampling_window(Duration::from_secs(10))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut s = CircuitState::default();
        assert!(s.is_at_rest(t0));
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, false, t0);
        assert!(!s.is_at_rest(t0 + secs(9)), "a success in the window");
        assert!(s.is_at_rest(t0 + secs(10)), "the window is over");
        // a failure in a row is remembered whatever the window
        let t = allow(&mut s, &c, t0 + secs(10));
        s.record(&c, t, true, t0 + secs(10));
        assert!(!s.is_at_rest(t0 + secs(100)));
        let t = allow(&mut s, &c, t0 + secs(100));
        s.record(&c, t, false, t0 + secs(100));
        assert!(s.is_at_rest(t0 + secs(110)));
        // open, then half-open: not at rest, however long after
        let t = allow(&mut s, &c, t0 + secs(110));
        s.record(&c, t, true, t0 + secs(110));
        let t = allow(&mut s, &c, t0 + secs(110));
        s.record(&c, t, true, t0 + secs(110));
        assert!(matches!(
            s.status(t0 + secs(110)),
            CircuitStatus::Open { .. }
        ));
        assert!(!s.is_at_rest(t0 + secs(1_000)));
        // a probe that succeeds closes it: a new state, at rest at once
        let p = allow(&mut s, &c, t0 + secs(1_000));
        assert!(!s.is_at_rest(t0 + secs(1_000)));
        s.record(&c, p, false, t0 + secs(1_000));
        assert!(s.is_at_rest(t0 + secs(1_000)));
        // the longest window a policy accepts: not at rest within it
        let long = CircuitBreaker::builder()
            .sampling_window(MAX_SETTING)
            .build()
            .unwrap();
        let mut s = CircuitState::default();
        let t = allow(&mut s, &long, t0);
        s.record(&long, t, false, t0);
        assert!(!s.is_at_rest(t0 + secs(3600)));
    }

    #[test]
    fn the_longest_break_does_not_panic() {
        let c = CircuitBreaker::builder()
            .consecutive_failures(1)
            .break_duration(MAX_SETTING)
            .sampling_window(MAX_SETTING)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut s = CircuitState::default();
        let t = allow(&mut s, &c, t0);
        s.record(&c, t, true, t0);
        assert!(matches!(s.status(t0), CircuitStatus::Open { .. }));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = [
            (
                CircuitBreaker::builder().failure_ratio(0.0),
                "failure_ratio",
            ),
            (
                CircuitBreaker::builder().failure_ratio(f64::NAN),
                "failure_ratio",
            ),
            (
                CircuitBreaker::builder().failure_ratio(1.5),
                "failure_ratio",
            ),
            (
                CircuitBreaker::builder().minimum_throughput(0),
                "minimum_throughput",
            ),
            (
                CircuitBreaker::builder().sampling_window(Duration::ZERO),
                "sampling_window",
            ),
            (
                CircuitBreaker::builder().break_duration(Duration::MAX),
                "break_duration",
            ),
            (
                CircuitBreaker::builder().half_open_probes(0),
                "half_open_probes",
            ),
            (
                CircuitBreaker::builder().max_half_open_wait(Duration::ZERO),
                "max_half_open_wait",
            ),
            (
                CircuitBreaker::builder().consecutive_failures(0),
                "consecutive_failures",
            ),
        ];
        for (c, field) in bad {
            assert_eq!(c.build().unwrap_err().field(), field);
        }
    }
}
