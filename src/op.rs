//! Retries for any async operation, not only HTTP: a queue poll, a store
//! write, a subprocess, an SDK call.
//!
//! [`RetryPolicy::retry`] runs an operation under the policy's backoff,
//! jitter, `max_retries`, deadline, attempt timeout, retry budget, circuit
//! breaker and local rate limit, through the same [engine](crate::engine)
//! as the HTTP adapters. A function of yours classifies each error:
//! [`ErrorClass::transient`] (retry it) or [`ErrorClass::permanent`]
//! (return it at once). The answer is the operation's value, or the
//! crate's [`Error`] with its [`RetryReport`] and your last error as its
//! [`source()`](std::error::Error::source).
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{ErrorClass, Jitter, RetryPolicy};
//!
//! #[derive(Debug)]
//! enum StoreError { Busy, Corrupt }
//! impl std::fmt::Display for StoreError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "{self:?}")
//!     }
//! }
//! impl std::error::Error for StoreError {}
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = RetryPolicy::builder()
//!     .initial_backoff(Duration::from_millis(5))
//!     .jitter(Jitter::None)
//!     .build()?;
//! let mut busy = 2;
//! let (value, report) = policy
//!     .operation("store.read")
//!     .retry_with_report(
//!         |_attempt| {
//!             let failing = busy > 0;
//!             busy -= 1;
//!             async move { if failing { Err(StoreError::Busy) } else { Ok(42) } }
//!         },
//!         |e: &StoreError| match e {
//!             StoreError::Busy => ErrorClass::transient(),
//!             StoreError::Corrupt => ErrorClass::permanent(),
//!         },
//!     )
//!     .await?;
//! assert_eq!(value, 42);
//! assert_eq!(report.retries(), 2);
//! assert_eq!(report.total_backoff(), Duration::from_millis(15)); // 5 + 10
//! # Ok(()) }
//! ```
//!
//! # What applies, and how
//!
//! - Every error your function calls transient is retried while the
//!   policy allows: `max_retries`, the deadline (never overshot), the
//!   retry budget, the breaker. The HTTP rules for methods and bodies do
//!   not apply: the operation is yours to declare safe to repeat.
//! - The policy's [`attempt_timeout`](crate::policy::RetryPolicyBuilder::attempt_timeout)
//!   (clamped to what is left of the deadline) bounds each attempt; an
//!   attempt that runs out is a transient [`FailureKind::Timeout`], its
//!   error an [`AttemptTimedOut`]. The operation
//!   is given each attempt's number and timeout ([`Attempt`]), for a
//!   client that sets its own.
//! - Load protection keeps its state under the operation's name
//!   ([`RetryPolicy::operation`]; `operation` for [`RetryPolicy::retry`]),
//!   port 0, in the policy's [`StateStore`](crate::protection::store::StateStore): every run
//!   of `store.poll` pays from one budget and trips one breaker.
//! - Each run starts afresh: a poll loop that calls `retry` once per poll
//!   starts again at the initial backoff after every success.
//! - A cancelled run (its future dropped) gives back what it held, as a
//!   cancelled request does.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

use crate::adapter::span::{AttemptSpan, decide_in, instrumented};
use crate::classify::{
    AttemptTimedOut, Class, Classify, FailureKind, OPERATION, Outcome, RequestMeta,
};
use crate::engine::{Admission, Decision, RetryState};
use crate::error::{BoxError, Error, Last};
use crate::policy::RetryPolicy;
use crate::report::{RetryReport, StopReason};
use crate::retry_after::{DelaySource, Hint};

/// How your function classifies one error of an operation (see the
/// [module docs](self)): transient or permanent, the failure's kind for
/// the report, and optionally the wait the service asked for.
///
/// ```
/// use std::time::Duration;
/// use http_resilience::{Class, DelaySource, ErrorClass, FailureKind};
/// let c = ErrorClass::transient().kind(FailureKind::Timeout);
/// assert_eq!(c.class(), Class::Transient);
/// assert_eq!(c.failure_kind(), FailureKind::Timeout);
/// assert_eq!(ErrorClass::from(Class::Permanent), ErrorClass::permanent());
/// // A store that says "busy, try again in 250 ms":
/// let busy = ErrorClass::transient().retry_after(Duration::from_millis(250));
/// let hint = busy.hint().unwrap();
/// assert_eq!((hint.delay, hint.source), (Duration::from_millis(250), DelaySource::RetryAfter));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    class: Class,
    kind: FailureKind,
    hint: Option<Hint>,
}

impl ErrorClass {
    /// Worth retrying: the error may go away on its own.
    pub const fn transient() -> ErrorClass {
        ErrorClass {
            class: Class::Transient,
            kind: FailureKind::Other,
            hint: None,
        }
    }

    /// Not worth retrying: returned at once.
    pub const fn permanent() -> ErrorClass {
        ErrorClass {
            class: Class::Permanent,
            kind: FailureKind::Other,
            hint: None,
        }
    }

    /// The failure's kind in the report (default [`FailureKind::Other`]).
    /// [`FailureKind::Timeout`] also costs the retry budget's timeout
    /// price, as a timed-out HTTP attempt does.
    pub const fn kind(mut self, kind: FailureKind) -> ErrorClass {
        self.kind = kind;
        self
    }

    /// The wait the operation's service asked for before the next attempt
    /// (a queue's "retry in 2 s", a store's throttling delay), used instead
    /// of the backoff as a server's `Retry-After` is: capped by the
    /// policy's [`max_retry_after`](crate::policy::RetryPolicyBuilder::max_retry_after)
    /// (a longer one stops the run with `RETRY_AFTER_TOO_LONG`, or is
    /// ignored under [`LongHint::UseBackoff`](crate::policy::LongHint::UseBackoff)),
    /// never past the deadline, recorded with the source
    /// [`DelaySource::RetryAfter`]. Zero means no hint (the backoff).
    /// Only a transient error waits.
    pub const fn retry_after(self, delay: Duration) -> ErrorClass {
        self.with_hint(Hint {
            delay,
            source: DelaySource::RetryAfter,
        })
    }

    /// [`retry_after`](Self::retry_after) with a source of your choice
    /// (for the report and the metrics: [`DelaySource::RateLimitReset`] for
    /// a quota's reset, say). A zero delay means no hint.
    pub const fn with_hint(mut self, hint: Hint) -> ErrorClass {
        self.hint = if hint.delay.is_zero() {
            None
        } else {
            Some(hint)
        };
        self
    }

    /// The wait asked for, if any.
    pub const fn hint(&self) -> Option<Hint> {
        self.hint
    }

    /// [`Class::Transient`] or [`Class::Permanent`].
    pub const fn class(&self) -> Class {
        self.class
    }

    /// The failure's kind.
    pub const fn failure_kind(&self) -> FailureKind {
        self.kind
    }
}

/// [`Class::Transient`] is [`ErrorClass::transient`]; [`Class::Permanent`]
/// and [`Class::Success`] (an error cannot be a success: it is returned as
/// it is) are [`ErrorClass::permanent`].
impl From<Class> for ErrorClass {
    fn from(class: Class) -> ErrorClass {
        match class {
            Class::Transient => ErrorClass::transient(),
            Class::Success | Class::Permanent => ErrorClass::permanent(),
        }
    }
}

/// What the operation is told about the attempt it is asked to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    number: u32,
    timeout: Option<Duration>,
}

impl Attempt {
    /// Attempt `number` (1 for the first), with this timeout.
    pub(crate) const fn new(number: u32, timeout: Option<Duration>) -> Attempt {
        Attempt { number, timeout }
    }
    /// 1 for the first attempt, 2 for the first retry, ...
    pub fn number(&self) -> u32 {
        self.number
    }
    /// `true` from the second attempt on.
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }
    /// The time this attempt may take (the policy's `attempt_timeout`,
    /// clamped to what is left of the deadline); the run enforces it, and
    /// an operation may pass it on to a client of its own. `None`: no
    /// limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// A policy applied to a named operation: see [`RetryPolicy::operation`].
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    policy: &'a RetryPolicy,
    name: &'a str,
}

impl RetryPolicy {
    /// The policy, for runs of the operation `name`: its load protection
    /// (budget, breaker, rate limit) is kept under that name, and the
    /// tracing events name it as their host. Keep names few and fixed
    /// (`store.poll`, `trial.run`), as for metric labels.
    pub fn operation<'a>(&'a self, name: &'a str) -> Operation<'a> {
        Operation { policy: self, name }
    }

    /// Runs `operation` until it succeeds, `classify` calls an error
    /// permanent, or the policy stops retrying: the value, or the crate's
    /// [`Error`] with the report and your last error as its `source()`.
    /// The same as [`operation("operation")`](Self::operation) followed by
    /// [`Operation::retry`]; see the [`op`](crate::op) module.
    pub async fn retry<T, E, F, Fut, C, K>(&self, operation: F, classify: C) -> Result<T, Error>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        C: FnMut(&E) -> K,
        K: Into<ErrorClass>,
    {
        self.operation("operation").retry(operation, classify).await
    }
}

impl Operation<'_> {
    /// Runs the operation (see [`RetryPolicy::retry`]).
    pub async fn retry<T, E, F, Fut, C, K>(self, operation: F, classify: C) -> Result<T, Error>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        C: FnMut(&E) -> K,
        K: Into<ErrorClass>,
    {
        self.retry_with_report(operation, classify)
            .await
            .map(|(value, _)| value)
    }

    /// Runs the operation, and on success also gives its report (on
    /// failure the [`Error`] carries it).
    pub async fn retry_with_report<T, E, F, Fut, C, K>(
        self,
        mut operation: F,
        mut classify: C,
    ) -> Result<(T, RetryReport), Error>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        C: FnMut(&E) -> K,
        K: Into<ErrorClass>,
    {
        let policy = self.policy.with_classifier(Arc::new(Operations));
        let headers = HeaderMap::new();
        let method = Method::from_bytes(OPERATION.as_bytes()).unwrap_or_default();
        let meta = RequestMeta::new(&method, "", self.name, "", &headers).with_port(0);
        let mut starts = Instant::now().into_std();
        let mut state = RetryState::with_policy(policy, &meta, starts);
        loop {
            loop {
                match state.admit(&meta, starts) {
                    Admission::Send => break,
                    Admission::Wait { delay, .. } => {
                        tokio::time::sleep(delay).await;
                        starts = Instant::now().into_std();
                    }
                    Admission::Fail(reason) => {
                        let report = state.take_report();
                        return Err(Error::from_stop::<()>(reason, report, Last::Nothing));
                    }
                    // A turn under a limit shared by many processes: the
                    // store's call, then ask again.
                    Admission::Consult => {
                        state.store_call().await;
                        starts = Instant::now().into_std();
                    }
                }
            }
            let timeout = state.attempt_timeout(starts);
            let attempt = Attempt {
                number: state.report().attempts() + 1,
                timeout,
            };
            // The attempt's span, if a subscriber wants one.
            let span = AttemptSpan::operation(self.name, attempt.number);
            let run = operation(attempt);
            let result = instrumented(span.as_deref(), async {
                match timeout {
                    None => run.await.map_err(Failed::Operation),
                    Some(after) => match tokio::time::timeout(after, run).await {
                        Ok(result) => result.map_err(Failed::Operation),
                        Err(_elapsed) => Err(Failed::TimedOut(after)),
                    },
                }
            })
            .await;
            let now = Instant::now().into_std();
            match result {
                Ok(value) => {
                    // Fed to the engine as a response, so that a success
                    // refunds the budget and closes the breaker as any
                    // success does; the record keeps no status.
                    let outcome = Outcome::response(StatusCode::OK, &headers);
                    decide_in(span.as_deref(), &outcome, || {
                        state.decide(&meta, &outcome, now)
                    });
                    let mut report = state.take_report();
                    if let Some(last) = report.last_mut() {
                        last.status = None;
                    }
                    return Ok((value, report));
                }
                Err(failed) => {
                    let verdict = match &failed {
                        Failed::Operation(e) => classify(e).into(),
                        Failed::TimedOut(_) => ErrorClass::transient().kind(FailureKind::Timeout),
                    };
                    // In a block: the outcome borrows a `dyn Error`, which
                    // must not live across an await (the run stays `Send`).
                    let decision = {
                        let error = Verdict(verdict);
                        let outcome = Outcome::Error {
                            kind: verdict.kind,
                            error: &error,
                        };
                        decide_in(span.as_deref(), &outcome, || {
                            state.decide(&meta, &outcome, now)
                        })
                    };
                    drop(span);
                    // A retry's payment from a budget shared by many
                    // processes: the store's call, then the decision.
                    let decision = match decision {
                        Decision::Consult => {
                            state.store_call().await;
                            state.decide_after_store(&meta, Instant::now().into_std())
                        }
                        decision => decision,
                    };
                    match decision {
                        Decision::Retry { delay, .. } => {
                            drop(failed);
                            tokio::time::sleep(delay).await;
                            starts = Instant::now().into_std();
                        }
                        decision => {
                            let reason = match decision {
                                Decision::Fail(reason) => reason,
                                _ => StopReason::Permanent,
                            };
                            let source = match failed {
                                Failed::Operation(e) => e.into(),
                                Failed::TimedOut(after) => {
                                    Box::new(AttemptTimedOut { after }) as BoxError
                                }
                            };
                            let report = state.take_report();
                            return Err(Error::from_stop::<()>(
                                reason,
                                report,
                                Last::Error(source),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// An attempt that did not succeed.
enum Failed<E> {
    Operation(E),
    TimedOut(Duration),
}

/// What the engine's classifier reads back: the class your function gave.
#[derive(Debug)]
struct Verdict(ErrorClass);

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.class.as_str())
    }
}

impl StdError for Verdict {}

/// The classifier of operation runs: a success is a success, an error has
/// the class your function gave it, and every operation may be repeated.
struct Operations;

impl Classify for Operations {
    fn classify(&self, _: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class {
        match outcome {
            Outcome::Response { .. } => Class::Success,
            Outcome::Error { error, .. } => error
                .downcast_ref::<Verdict>()
                .map_or(Class::Permanent, |v| v.0.class),
        }
    }

    fn retry_safety(&self, _: &RequestMeta<'_>) -> Option<bool> {
        Some(true)
    }

    fn hint(
        &self,
        _: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        _: SystemTime,
        _: u32,
    ) -> Option<Hint> {
        match outcome {
            Outcome::Error { error, .. } => error.downcast_ref::<Verdict>()?.0.hint,
            Outcome::Response { .. } => None,
        }
    }
}
