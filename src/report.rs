//! [`RetryReport`]: what happened to one request, attempt by attempt.
//!
//! Every response that passes through the adapters answers
//! [`ResponseExt::retry_report`], and every [`Error`](crate::Error) carries
//! its report. A report is attached to a response's extensions whenever
//! anything happened (a retry, a wait, a throttle, a permanent outcome
//! handed over); a first-attempt success carries none, so the success path
//! allocates nothing for it, and the accessor makes its clean one-attempt
//! report on the spot.
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # async fn demo(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
//! use http_resilience::ResponseExt;
//! let response = client.get("http://127.0.0.1:8080/").send().await?;
//! let report = response.retry_report();
//! println!("{} attempts, waited {:?}", report.attempts(), report.total_backoff());
//! for attempt in report.history() {
//!     println!("{attempt}"); // e.g. "503 -> wait 1s (retry_after)"
//! }
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::classify::{Class, FailureKind};
use crate::retry_after::DelaySource;

/// The one way to read a response's [`RetryReport`], whichever adapter it
/// came through: the report attached to it, or, for a response that
/// carries none (a first-attempt success with no wait: nothing is attached
/// then, so the success path allocates nothing), a clean one-attempt
/// report ([`RetryReport::clean`]) made on the spot without allocating.
///
/// ```
/// use http_resilience::ResponseExt;
/// let response = http::Response::new(());
/// let report = response.retry_report();
/// assert_eq!(report.attempts(), 1);
/// assert_eq!(report.retries(), 0);
/// assert!(matches!(report, std::borrow::Cow::Owned(_)), "nothing attached");
/// ```
pub trait ResponseExt {
    /// The request's report: attached, or clean (see the trait's docs).
    fn retry_report(&self) -> Cow<'_, RetryReport>;
}

impl<B> ResponseExt for http::Response<B> {
    fn retry_report(&self) -> Cow<'_, RetryReport> {
        match self.extensions().get::<RetryReport>() {
            Some(report) => Cow::Borrowed(report),
            None => Cow::Owned(RetryReport::clean(self.status())),
        }
    }
}

#[cfg(feature = "reqwest")]
impl ResponseExt for reqwest::Response {
    fn retry_report(&self) -> Cow<'_, RetryReport> {
        match self.extensions().get::<RetryReport>() {
            Some(report) => Cow::Borrowed(report),
            None => Cow::Owned(RetryReport::clean(self.status())),
        }
    }
}

/// One reading of the wall clock at a known point of a request: `wall`
/// was the time when `elapsed` had passed since the start of its first
/// attempt. Each attempt's wall-clock time follows from it by the
/// monotonic clock ([`RetryReport::attempt_time`]), so a wall clock that
/// jumps cannot reorder a request's history.
///
/// The engine reads the policy's
/// [`wall_clock`](crate::policy::RetryPolicyBuilder::wall_clock) once per
/// request that did not succeed at its first attempt (when its first
/// attempt that was not such a success ends, or when it is refused before
/// any attempt: then `elapsed` is zero). A request that succeeds at once
/// reads no clock and has no anchor.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use http_resilience::report::WallAnchor;
///
/// let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let anchor = WallAnchor::new(wall, Duration::from_millis(100));
/// // An attempt that ended 40 ms after the start: 60 ms before the reading.
/// assert_eq!(anchor.at(Duration::from_millis(40)), wall - Duration::from_millis(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallAnchor {
    /// The wall-clock time at the start of the first attempt (the reading
    /// less the `elapsed` it was taken at): one word pair, kept inline in
    /// the report.
    start: SystemTime,
}

impl WallAnchor {
    /// `wall` was the time when `elapsed` had passed since the start of the
    /// request's first attempt.
    pub fn new(wall: SystemTime, elapsed: Duration) -> WallAnchor {
        WallAnchor {
            start: wall.checked_sub(elapsed).unwrap_or(wall),
        }
    }

    /// The wall-clock time at `elapsed` since the start of the first
    /// attempt. Saturates at the clock's limits, never panics.
    pub fn at(&self, elapsed: Duration) -> SystemTime {
        self.start.checked_add(elapsed).unwrap_or(self.start)
    }
}

/// One attempt: its outcome and the wait chosen after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRecord {
    pub(crate) status: Option<StatusCode>,
    pub(crate) failure: Option<FailureKind>,
    pub(crate) class: Class,
    pub(crate) delay: Option<Duration>,
    pub(crate) delay_source: Option<DelaySource>,
    /// Nanoseconds from the start of the first attempt to this one's end
    /// (a `u64`, half a `Duration`: the record keeps its size with
    /// `sent_at` beside it).
    pub(crate) elapsed: u64,
    /// Nanoseconds from the start of the first attempt to this one's send
    /// ([`UNKNOWN`] unless the request was hedged).
    pub(crate) sent_at: u64,
    /// A hedge: sent while an earlier attempt was still in flight.
    pub(crate) hedge: bool,
    /// Cancelled because another attempt of a hedged request won.
    pub(crate) cancelled: bool,
}

/// [`AttemptRecord::sent_at`] not known.
pub(crate) const UNKNOWN: u64 = u64::MAX;

/// A duration as a record keeps it (saturating at 584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(UNKNOWN - 1)
}

impl AttemptRecord {
    /// The record of an attempt of a hedged request cancelled at
    /// `elapsed` because another won: no status, no failure.
    pub(crate) fn cancelled(elapsed: Duration, sent_at: Duration, hedge: bool) -> AttemptRecord {
        AttemptRecord {
            status: None,
            failure: None,
            class: Class::Transient,
            delay: None,
            delay_source: None,
            elapsed: nanos(elapsed),
            sent_at: nanos(sent_at),
            hedge,
            cancelled: true,
        }
    }
    /// Whether the attempt was a hedge: a copy of the request sent while
    /// an earlier attempt was still in flight (see
    /// [`hedging`](crate::hedging)).
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }
    /// When the attempt was sent, from the start of the first attempt (on
    /// the scale of [`elapsed`](Self::elapsed), its end): known for the
    /// attempts of a hedged request, `None` otherwise.
    pub fn sent_at(&self) -> Option<Duration> {
        (self.sent_at != UNKNOWN).then(|| Duration::from_nanos(self.sent_at))
    }
    /// Whether the attempt was cancelled because another attempt of a
    /// hedged request won (see [`RetryReport::winner`]): it has no status
    /// and no failure, and its [`elapsed`](Self::elapsed) is when it was
    /// cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }
    /// The response status, if a response arrived.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
    /// The transport failure, if no response arrived.
    pub fn failure(&self) -> Option<FailureKind> {
        self.failure
    }
    /// How the attempt was classified.
    pub fn class(&self) -> Class {
        self.class
    }
    /// The wait chosen after this attempt, if it was retried.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }
    /// Where [`delay`](Self::delay) came from.
    pub fn delay_source(&self) -> Option<DelaySource> {
        self.delay_source
    }
    /// Time from the start of the first attempt to the end of this one.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed)
    }
}

impl fmt::Display for AttemptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cancelled {
            let at = Duration::from_millis(self.elapsed().as_millis() as u64);
            return write!(f, "cancelled at {at:?}");
        }
        if let (true, Some(sent)) = (self.hedge, self.sent_at()) {
            let at = Duration::from_millis(sent.as_millis() as u64);
            write!(f, "hedge at {at:?}: ")?;
        }
        match (self.status, self.failure) {
            (Some(s), _) => write!(f, "{}", s.as_u16())?,
            (None, Some(k)) => f.write_str(k.as_str())?,
            // An operation's attempt (`RetryPolicy::retry`): its class.
            (None, None) => f.write_str(self.class.as_str())?,
        }
        if let (Some(d), Some(src)) = (self.delay, self.delay_source) {
            // Whole milliseconds read better than jitter's nanoseconds.
            let shown = if d >= Duration::from_millis(1) {
                Duration::from_millis(d.as_millis() as u64)
            } else {
                d
            };
            write!(f, " -> wait {shown:?} ({src})")?;
        }
        Ok(())
    }
}

/// Why the adapter stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The last attempt succeeded.
    Success,
    /// The last outcome was permanent (including `x-should-retry: false`).
    Permanent,
    /// The outcome was transient, but the request is not idempotent and may
    /// have reached the server.
    NotIdempotent,
    /// The outcome was transient, but the request body cannot be replayed
    /// (a stream).
    BodyNotReplayable,
    /// `max_retries` retries were made.
    MaxRetries,
    /// The server asked for a wait above `max_retry_after`.
    RetryAfterTooLong {
        /// The wait the server asked for.
        hint: Duration,
    },
    /// The next wait (or attempt) would cross the deadline.
    Deadline,
    /// The endpoint's [retry budget](crate::RetryBudget) could not pay for
    /// another retry.
    BudgetExhausted,
    /// The endpoint's [circuit breaker](crate::CircuitBreaker) is open (or
    /// its half-open probes are all taken).
    CircuitOpen {
        /// When it lets a probe through.
        retry_in: Duration,
    },
    /// The local [rate limit](crate::RateLimit) would have made the
    /// attempt wait longer than its `max_wait`.
    RateLimitedLocally {
        /// The whole wait the attempt would have needed.
        wait: Duration,
    },
    /// A store shared by many processes could not answer in time, and its
    /// fallback refuses ([`Fallback::Refuse`](crate::protection::store::redis::Fallback::Refuse)
    /// with the `redis` feature): no turn, or no retry.
    StoreUnavailable,
    /// The outcome was transient, but the request's streamed body is
    /// committed to the attempts already made: it was longer than the
    /// replay buffer ([`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer)),
    /// or its stream failed. Its [`as_str`](Self::as_str) is the reason's
    /// (`body_too_large`, `body_failed`).
    BodyCommitted {
        /// Why.
        reason: Committed,
    },
}

impl StopReason {
    /// A stable snake_case name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            StopReason::Success => "success",
            StopReason::Permanent => "permanent",
            StopReason::NotIdempotent => "not_idempotent",
            StopReason::BodyNotReplayable => "body_not_replayable",
            StopReason::MaxRetries => "max_retries",
            StopReason::RetryAfterTooLong { .. } => "retry_after_too_long",
            StopReason::Deadline => "deadline",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::CircuitOpen { .. } => "circuit_open",
            StopReason::RateLimitedLocally { .. } => "rate_limited_locally",
            StopReason::StoreUnavailable => "store_unavailable",
            StopReason::BodyCommitted { reason } => reason.as_str(),
        }
    }
}

/// Why a streamed request body cannot be sent again
/// ([`StopReason::BodyCommitted`]; also what
/// [`ReplayBody::replay`](crate::replay::ReplayBody::replay) refuses with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Committed {
    /// More than `limit` bytes were read (or the body's size hint said it
    /// was longer than that, and something was read): the buffer does not
    /// hold them.
    TooLarge {
        /// The buffer's limit, in bytes.
        limit: usize,
    },
    /// The body's own stream failed while it was being sent: what it would
    /// have sent after the failure is unknown.
    Failed,
}

impl Committed {
    /// A stable snake_case name: `body_too_large`, `body_failed`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Committed::TooLarge { .. } => "body_too_large",
            Committed::Failed => "body_failed",
        }
    }
}

impl fmt::Display for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Committed::TooLarge { limit } => write!(
                f,
                "the request body is longer than the replay buffer ({limit} bytes): it cannot be sent again"
            ),
            Committed::Failed => f.write_str(
                "the request body's stream failed while it was sent: it cannot be sent again",
            ),
        }
    }
}

impl std::error::Error for Committed {}

/// One resume of a response body (see [`resume`](crate::resume)): where it
/// asked to continue, what came back, how much it fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeRecord {
    pub(crate) offset: u64,
    pub(crate) status: Option<StatusCode>,
    pub(crate) fetched: u64,
    pub(crate) skipped: u64,
    pub(crate) waited: Duration,
}

impl ResumeRecord {
    pub(crate) fn new(offset: u64, waited: Duration) -> ResumeRecord {
        ResumeRecord {
            offset,
            status: None,
            fetched: 0,
            skipped: 0,
            waited,
        }
    }
    /// The representation offset asked for (`Range: bytes=N-`).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The response's status, if one came.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
    /// Body bytes this resume's response delivered (skipped ones
    /// included).
    pub fn fetched(&self) -> u64 {
        self.fetched
    }
    /// Bytes of a `200` that were skipped (already read).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
    /// The wait before it (backoff, a server's hint, load protection).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Why an attempt waited before it was sent (not a backoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleReason {
    /// Its turn under the local [`RateLimit`](crate::RateLimit).
    LocalRateLimit,
    /// A response said the endpoint's quota was gone until a reset
    /// (`x-ratelimit-remaining: 0` and the like, see
    /// [`quota_reset`](crate::retry_after::quota_reset)).
    ServerQuota,
}

impl ThrottleReason {
    /// A stable snake_case name: `local_rate_limit`, `server_quota`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::LocalRateLimit => "local_rate_limit",
            ThrottleReason::ServerQuota => "server_quota",
        }
    }
}

impl fmt::Display for ThrottleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wait before an attempt imposed by load protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub(crate) reason: ThrottleReason,
    pub(crate) waited: Duration,
    pub(crate) before_attempt: u32,
}

impl Throttle {
    /// Why it waited.
    pub fn reason(&self) -> ThrottleReason {
        self.reason
    }
    /// How long (the sum, if it waited more than once for one turn).
    pub fn waited(&self) -> Duration {
        self.waited
    }
    /// The attempt that waited (1 for the first).
    pub fn before_attempt(&self) -> u32 {
        self.before_attempt
    }
}

/// The history stays inline for the common single attempt, so a request
/// that succeeds at once allocates nothing for its report.
#[derive(Clone, PartialEq, Eq)]
enum History {
    Empty,
    One(AttemptRecord),
    Many(Vec<AttemptRecord>),
}

/// What happened to one request: attempts, waits and why it stopped.
#[derive(Clone, PartialEq, Eq)]
pub struct RetryReport {
    history: History,
    /// The wall clock, read once for a request that did not succeed at
    /// once (see [`WallAnchor`]). Inline: the report of a retried request
    /// allocates nothing more for it. (The total backoff, which this word
    /// pair replaced, is the sum of the history's delays.)
    anchor: Option<WallAnchor>,
    stop: Option<StopReason>,
    /// `None` (no allocation, one word) unless load protection made the
    /// request wait or refused it, or its body was resumed: almost always
    /// empty, so boxed.
    protection: Option<Box<ProtectionLog>>,
}

/// What load protection did to a request, and the resumes of its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProtectionLog {
    throttles: Vec<Throttle>,
    /// `host:port`, or `(policy)` for `Scope::Policy`.
    endpoint: Option<Box<str>>,
    /// A store's fallback made one of its decisions.
    decided_locally: bool,
    resumes: Vec<ResumeRecord>,
    /// The index of the attempt whose response was handed over, in a
    /// hedged request.
    winner: Option<u32>,
    /// Why the last hedge that was due was not sent.
    hedge_skipped: Option<HedgeSkip>,
}

/// Why a hedge that was due was not sent ([`RetryReport::hedge_skipped`]).
/// Its names are those of the stop and throttle reasons for the same
/// causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HedgeSkip {
    /// The endpoint's retry budget could not pay for it.
    BudgetExhausted,
    /// The endpoint's circuit breaker was not closed.
    CircuitOpen,
    /// A server quota was held for the request's credential.
    ServerQuota,
    /// The local rate limit had no turn free at once (a hedge never waits).
    LocalRateLimit,
    /// No time was left before the deadline.
    Deadline,
    /// A retry owed (after a failure while another attempt was in flight)
    /// would exceed `max_retries`.
    MaxRetries,
}

impl HedgeSkip {
    /// A stable lowercase name: `budget_exhausted`, `circuit_open`,
    /// `server_quota`, `local_rate_limit`, `deadline` or
    /// `max_retries`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HedgeSkip::BudgetExhausted => "budget_exhausted",
            HedgeSkip::CircuitOpen => "circuit_open",
            HedgeSkip::ServerQuota => "server_quota",
            HedgeSkip::LocalRateLimit => "local_rate_limit",
            HedgeSkip::Deadline => "deadline",
            HedgeSkip::MaxRetries => "max_retries",
        }
    }
}

impl fmt::Display for HedgeSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RetryReport {
    #[inline]
    pub(crate) fn new() -> Self {
        RetryReport {
            history: History::Empty,
            anchor: None,
            stop: None,
            protection: None,
        }
    }

    /// The report of a request that succeeded at its first attempt, with
    /// `status`, and met no wait: what
    /// [`ResponseExt::retry_report`] answers for a response that carries no
    /// report. Its one attempt's [`elapsed`](AttemptRecord::elapsed) is not
    /// known and reads as zero.
    pub fn clean(status: StatusCode) -> Self {
        RetryReport {
            history: History::One(AttemptRecord {
                status: Some(status),
                failure: None,
                class: Class::Success,
                delay: None,
                delay_source: None,
                elapsed: crate::report::nanos(Duration::ZERO),
                sent_at: crate::report::UNKNOWN,
                hedge: false,
                cancelled: false,
            }),
            anchor: None,
            stop: Some(StopReason::Success),
            protection: None,
        }
    }

    /// Whether nothing happened worth a report of its own: one attempt, a
    /// success, no wait. Such a report is not attached to the response.
    #[inline]
    pub(crate) fn is_clean(&self) -> bool {
        matches!(
            self.history,
            History::One(AttemptRecord {
                class: Class::Success,
                ..
            })
        ) && self.protection.is_none()
            && self.stop == Some(StopReason::Success)
    }

    /// Whether load protection noted anything: a wait, a refusal's
    /// endpoint.
    #[inline]
    pub(crate) fn has_extras(&self) -> bool {
        self.protection.is_some()
    }

    /// Anchors the attempts in wall-clock time, once: later calls keep the
    /// first reading (and read no clock).
    #[inline]
    pub(crate) fn anchor(&mut self, anchor: impl FnOnce() -> WallAnchor) {
        if self.anchor.is_none() {
            self.anchor = Some(anchor());
        }
    }

    /// Names the endpoint whose load protection acted on the request.
    pub(crate) fn set_endpoint(&mut self, endpoint: impl FnOnce() -> String) {
        let log = self.protection.get_or_insert_with(Box::default);
        if log.endpoint.is_none() {
            log.endpoint = Some(endpoint().into_boxed_str());
        }
    }

    /// Notes that a store's fallback made a decision for the request (what
    /// the store shares could not answer in time), at `endpoint`.
    pub(crate) fn note_decided_locally(&mut self, endpoint: impl FnOnce() -> String) {
        self.set_endpoint(endpoint);
        if let Some(log) = &mut self.protection {
            log.decided_locally = true;
        }
    }

    /// Adds a wait before attempt `before_attempt`, merged with the last
    /// one if it was for the same attempt and reason.
    pub(crate) fn add_throttle(&mut self, reason: ThrottleReason, waited: Duration) {
        let before_attempt = self.attempts() + 1;
        let throttles = &mut self.protection.get_or_insert_with(Box::default).throttles;
        if let Some(last) = throttles.last_mut()
            && last.reason == reason
            && last.before_attempt == before_attempt
        {
            last.waited = last.waited.saturating_add(waited);
            return;
        }
        throttles.push(Throttle {
            reason,
            waited,
            before_attempt,
        });
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, record: AttemptRecord) {
        // The first attempt: written in place (every request comes here);
        // the rest out of line (with several callers, the whole of `push`
        // stopped being inlined into the decision: +30 instructions on the
        // success path).
        if let History::Empty = self.history {
            self.history = History::One(record);
        } else {
            self.push_more(record);
        }
    }

    #[inline(never)]
    fn push_more(&mut self, record: AttemptRecord) {
        match &mut self.history {
            History::Empty => self.history = History::One(record),
            History::Many(v) => v.push(record),
            History::One(first) => {
                let mut v = Vec::with_capacity(4);
                v.push(*first);
                v.push(record);
                self.history = History::Many(v);
            }
        }
    }

    pub(crate) fn last_mut(&mut self) -> Option<&mut AttemptRecord> {
        match &mut self.history {
            History::Empty => None,
            History::One(r) => Some(r),
            History::Many(v) => v.last_mut(),
        }
    }

    /// Puts the records from `start` on (a hedged round's, pushed as its
    /// attempts ended) in the order they were sent, and moves the round's
    /// wait, if any, to the last of them. Returns where the record of the
    /// attempt sent at `sent_at` went.
    pub(crate) fn order_round(&mut self, start: usize, sent_at: u64) -> Option<usize> {
        let History::Many(records) = &mut self.history else {
            return (start == 0 && self.attempts() == 1).then_some(0);
        };
        let round = records.get_mut(start..)?;
        let wait = round
            .iter_mut()
            .find_map(|r| r.delay.take().map(|d| (d, r.delay_source.take())));
        round.sort_by_key(|r| r.sent_at);
        if let (Some((delay, source)), Some(last)) = (wait, round.last_mut()) {
            last.delay = Some(delay);
            last.delay_source = source;
        }
        round
            .iter()
            .position(|r| r.sent_at == sent_at && !r.cancelled)
            .map(|i| start + i)
    }

    /// Sets the last record's send time and hedge flag (an attempt of a
    /// hedged request).
    pub(crate) fn note_sent(&mut self, sent_at: u64, hedge: bool) {
        if let Some(last) = self.last_mut() {
            last.sent_at = sent_at;
            last.hedge = hedge;
        }
    }

    /// [`note_sent`](Self::note_sent) for the record at `index`, if there
    /// is one.
    pub(crate) fn note_sent_at(&mut self, index: usize, sent_at: u64, hedge: bool) {
        let record = match &mut self.history {
            History::Many(v) => v.get_mut(index),
            History::One(r) if index == 0 => Some(r),
            _ => None,
        };
        if let Some(record) = record {
            record.sent_at = sent_at;
            record.hedge = hedge;
        }
    }

    /// Notes the attempt at `index` as the one handed over.
    pub(crate) fn set_winner(&mut self, index: u32) {
        self.protection.get_or_insert_with(Box::default).winner = Some(index);
    }

    /// Notes why a hedge that was due was not sent.
    pub(crate) fn note_hedge_skipped(&mut self, skip: HedgeSkip) {
        self.protection
            .get_or_insert_with(Box::default)
            .hedge_skipped = Some(skip);
    }

    /// Forgets the stop reason noted (an attempt of a hedged request that
    /// failed while another is still in flight: the request goes on).
    pub(crate) fn clear_stop(&mut self) {
        self.stop = None;
    }

    #[inline]
    pub(crate) fn set_stop(&mut self, stop: StopReason) {
        self.stop = Some(stop);
    }

    /// In a hedged request, the index in [`history`](Self::history) of the
    /// attempt whose response was handed over (the first acceptable one).
    pub fn winner(&self) -> Option<usize> {
        self.protection.as_ref()?.winner.map(|w| w as usize)
    }
    /// How many hedges were sent.
    ///
    /// ```
    /// # fn show(report: &http_resilience::RetryReport) {
    /// for (i, attempt) in report.history().iter().enumerate() {
    ///     let won = if report.winner() == Some(i) { " (won)" } else { "" };
    ///     println!(
    ///         "sent at {:?}{}, ended at {:?}{}{won}",
    ///         attempt.sent_at(),
    ///         if attempt.is_hedge() { " (hedge)" } else { "" },
    ///         attempt.elapsed(),
    ///         if attempt.is_cancelled() { ", cancelled" } else { "" },
    ///     );
    /// }
    /// # }
    /// ```
    pub fn hedges(&self) -> u32 {
        match &self.history {
            History::Many(v) => v.iter().filter(|r| r.hedge).count() as u32,
            _ => 0,
        }
    }
    /// Why the last hedge that was due was not sent, if one was not.
    pub fn hedge_skipped(&self) -> Option<HedgeSkip> {
        self.protection.as_ref()?.hedge_skipped
    }

    /// Attempts made, the first included.
    #[inline]
    pub fn attempts(&self) -> u32 {
        self.history().len() as u32
    }
    /// Retries made: attempts after the first that were not hedges.
    pub fn retries(&self) -> u32 {
        self.attempts().saturating_sub(1 + self.hedges())
    }
    /// The sum of the waits between attempts.
    pub fn total_backoff(&self) -> Duration {
        self.history()
            .iter()
            .filter_map(|r| r.delay)
            .fold(Duration::ZERO, Duration::saturating_add)
    }
    /// Every attempt, in order.
    #[inline]
    pub fn history(&self) -> &[AttemptRecord] {
        match &self.history {
            History::Empty => &[],
            History::One(r) => std::slice::from_ref(r),
            History::Many(v) => v,
        }
    }
    /// The last attempt.
    #[inline]
    pub fn last(&self) -> Option<&AttemptRecord> {
        self.history().last()
    }
    /// Why the adapter stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }
    /// Every wait imposed by load protection (local rate limit, server
    /// quota), in order; empty for most requests.
    pub fn throttles(&self) -> &[Throttle] {
        self.protection
            .as_deref()
            .map_or(&[], |log| log.throttles.as_slice())
    }
    /// The endpoint (`host:port`, or `(policy)` when the policy's
    /// [`Scope`](crate::Scope) is the whole policy) whose load protection
    /// made the request wait or refused it; `None` if it did neither.
    pub fn endpoint(&self) -> Option<&str> {
        self.protection.as_deref()?.endpoint.as_deref()
    }
    /// Whether a decision for this request (a rate-limit turn, a retry's
    /// payment) was made locally by a shared store's fallback, because what
    /// the store shares (a [`RedisStore`](crate::protection::store::redis::RedisStore))
    /// could not answer in time. Such a request always carries its report,
    /// a first-attempt success too. `false` for a store that is not shared.
    pub fn decided_locally(&self) -> bool {
        self.protection
            .as_deref()
            .is_some_and(|log| log.decided_locally)
    }
    /// The resumes of the response's body, in order (with
    /// [`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies)): in the
    /// report of a [`ResumeLog`](crate::resume::ResumeLog) or a
    /// [`ResumeError`](crate::resume::ResumeError); empty in the report a
    /// response carries at hand-over, before its body is read.
    pub fn resumes(&self) -> &[ResumeRecord] {
        self.protection
            .as_deref()
            .map_or(&[], |log| log.resumes.as_slice())
    }

    /// Sets the resumes (from the body's log).
    pub(crate) fn set_resumes(&mut self, resumes: Vec<ResumeRecord>) {
        if resumes.is_empty() && self.protection.is_none() {
            return;
        }
        self.protection.get_or_insert_with(Box::default).resumes = resumes;
    }

    /// The wall-clock reading the attempts' times follow from; `None` for
    /// a request that succeeded at its first attempt (no clock is read
    /// then), or a report made by hand.
    pub fn wall_anchor(&self) -> Option<WallAnchor> {
        self.anchor
    }
    /// The wall-clock time when attempt `index` (0 for the first) ended,
    /// by the policy's [`wall_clock`](crate::policy::RetryPolicyBuilder::wall_clock);
    /// `None` without an [anchor](Self::wall_anchor) or past the last
    /// attempt.
    ///
    /// ```
    /// # use std::time::{Duration, Instant, UNIX_EPOCH};
    /// # use http::{HeaderMap, Method, StatusCode};
    /// use http_resilience::{Outcome, RequestMeta, RetryPolicy, RetryState};
    /// let fixed = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let policy = RetryPolicy::builder().wall_clock(move || fixed).build()?;
    /// # let headers = HeaderMap::new();
    /// # let meta = RequestMeta::new(&Method::GET, "https", "example.com", "/", &headers);
    /// let t0 = Instant::now();
    /// let mut state = RetryState::new(&policy, &meta, t0);
    /// state.admit(&meta, t0);
    /// let busy = Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &headers);
    /// state.decide(&meta, &busy, t0 + Duration::from_millis(30));
    /// // The clock was read when the first attempt ended, 30 ms in.
    /// assert_eq!(state.report().attempt_time(0), Some(fixed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attempt_time(&self, index: usize) -> Option<SystemTime> {
        let record = self.history().get(index)?;
        Some(self.wall_anchor()?.at(record.elapsed()))
    }
    /// The sum of [`throttles`](Self::throttles).
    pub fn total_throttled(&self) -> Duration {
        self.throttles()
            .iter()
            .fold(Duration::ZERO, |sum, t| sum.saturating_add(t.waited))
    }
}

impl fmt::Debug for RetryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryReport")
            .field("attempts", &self.attempts())
            .field("total_backoff", &self.total_backoff())
            .field("stop", &self.stop)
            .field("history", &self.history())
            .field("throttles", &self.throttles())
            .field("resumes", &self.resumes())
            .field("winner", &self.winner())
            .field("wall_anchor", &self.wall_anchor())
            .finish()
    }
}

/// `3 attempts [503 -> wait 1s (retry_after), 503 -> wait 1.2s (backoff), 200]`,
/// then `; throttled 2s (server_quota)` if load protection made it wait,
/// `; stopped: budget_exhausted` for a load-protection refusal (or
/// `; stopped: body_too_large (65536 bytes)` for a committed body),
/// `; resumed at byte 80000 (120000 bytes)` for the body's resumes,
/// `; decided locally (shared store unreachable)` if a shared store's
/// fallback decided, and ` at api.github.com:443`, the endpoint, after a
/// wait or a refusal.
/// `; stopped: budget_exhausted` for a load-protection refusal (or
/// `; stopped: body_too_large (65536 bytes)` for a committed body),
/// `; resumed at byte 80000 (120000 bytes)` for the body's resumes, and
/// ` at api.github.com:443`, the endpoint, after a wait or a refusal.
impl fmt::Display for RetryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.attempts();
        write!(f, "{n} attempt{} [", if n == 1 { "" } else { "s" })?;
        for (i, r) in self.history().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
            if self.winner() == Some(i) && self.attempts() > 1 {
                f.write_str(" (won)")?;
            }
        }
        f.write_str("]")?;
        for t in self.throttles() {
            let ms = Duration::from_millis(t.waited.as_millis() as u64);
            write!(f, "; throttled {ms:?} ({})", t.reason)?;
        }
        if let Some(
            stop @ (StopReason::BudgetExhausted
            | StopReason::CircuitOpen { .. }
            | StopReason::RateLimitedLocally { .. }
            | StopReason::StoreUnavailable),
        ) = self.stop
        {
            write!(f, "; stopped: {}", stop.as_str())?;
        }
        match self.stop {
            Some(StopReason::BodyCommitted {
                reason: Committed::TooLarge { limit },
            }) => write!(f, "; stopped: body_too_large ({limit} bytes)")?,
            Some(StopReason::BodyCommitted { reason }) => {
                write!(f, "; stopped: {}", reason.as_str())?
            }
            _ => {}
        }
        if let Some(skip) = self.hedge_skipped() {
            write!(f, "; hedge skipped ({skip})")?;
        }
        for (i, r) in self.resumes().iter().enumerate() {
            let lead = if i == 0 { "; resumed" } else { "," };
            write!(f, "{lead} at byte {} ({} bytes)", r.offset, r.fetched)?;
        }
        if self.decided_locally() {
            f.write_str("; decided locally (shared store unreachable)")?;
        }
        if let Some(endpoint) = self.endpoint() {
            write!(f, " at {endpoint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: u16) -> AttemptRecord {
        AttemptRecord {
            status: StatusCode::from_u16(status).ok(),
            failure: None,
            class: Class::Transient,
            delay: None,
            delay_source: None,
            elapsed: crate::report::nanos(Duration::ZERO),
            sent_at: crate::report::UNKNOWN,
            hedge: false,
            cancelled: false,
        }
    }

    #[test]
    fn history_grows_from_inline() {
        let mut r = RetryReport::new();
        assert_eq!(r.attempts(), 0);
        r.push(rec(503));
        assert_eq!(r.attempts(), 1);
        assert_eq!(r.retries(), 0);
        r.last_mut().unwrap().delay = Some(Duration::from_secs(1));
        r.last_mut().unwrap().delay_source = Some(DelaySource::RetryAfter);
        r.push(rec(200));
        r.last_mut().unwrap().delay = Some(Duration::from_nanos(86_123_456));
        r.last_mut().unwrap().delay_source = Some(DelaySource::Backoff);
        r.push(rec(200));
        assert_eq!(r.attempts(), 3);
        assert_eq!(r.retries(), 2);
        assert_eq!(
            r.history()[0].status(),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            r.to_string(),
            "3 attempts [503 -> wait 1s (retry_after), 200 -> wait 86ms (backoff), 200]"
        );
    }
}
