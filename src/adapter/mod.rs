//! What both adapters share: feeding an attempt's result to the engine and
//! turning the final decision into the caller's result. Crate-private; the
//! adapters themselves only move requests, responses and timers.

use std::error::Error as StdError;
use std::pin::Pin;
use std::time::{Duration, Instant};

use http::{Extensions, HeaderMap, HeaderValue, StatusCode};

use crate::classify::{FailureKind, Outcome, RequestMeta};
use crate::engine::{Admission, Decision, RetryState, needs_idempotency_key, prepare_request};
use crate::error::{BoxError, Error, Last};
use crate::policy::RetryPolicy;
use crate::report::{Committed, RetryReport, StopReason};
use crate::resend::ResendRequest;

use self::span::{AttemptSpan, decide_in};

pub mod body;
// Attempts side by side (hedged requests), both adapters.
pub(crate) mod hedge;
pub mod layer;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod middleware;
pub mod replay;
pub mod resume;
// One span per attempt, made by both adapters and by `retry`'s runs.
pub(crate) mod span;

/// A client's request type, as far as the adapters need it.
pub(crate) trait HttpRequest {
    /// The request as the engine and classifiers see it (a borrowed view,
    /// cheap to make).
    fn describe(&self) -> RequestMeta<'_>;
    fn headers_mut(&mut self) -> &mut HeaderMap;
}

/// Starts a request: its policy (`select` reads the request's
/// description), a generated `Idempotency-Key` if the policy adds one, the
/// engine, and the first admission at `now`. The description is made once,
/// or twice when a key is added. Inline: the engine is built where the
/// adapter keeps it, not returned through a copy (tower success path
/// 2,308 -> 2,288 instructions per call).
#[inline]
pub(crate) fn start<Q: HttpRequest>(
    request: &mut Q,
    select: impl FnOnce(&Q, &RequestMeta<'_>) -> RetryPolicy,
    now: Instant,
) -> (RetryState, Admission) {
    let first = request.describe();
    let policy = select(request, &first);
    let keyed;
    let meta = if needs_idempotency_key(&policy, &first) {
        let method = first.method().clone();
        prepare_request(&policy, &method, request.headers_mut());
        keyed = request.describe();
        &keyed
    } else {
        &first
    };
    // One engine, made once after the branch (made in each, it was moved
    // out through a tuple twice: 2,268 -> 2,234 instructions per call).
    let mut engine = RetryState::with_policy(policy, meta, now);
    let admission = engine.admit(meta, now);
    (engine, admission)
}

/// A client's response type, as far as the adapters need it.
pub(crate) trait HttpResponse: Send + 'static {
    fn status(&self) -> StatusCode;
    fn headers(&self) -> &HeaderMap;
    fn extensions_mut(&mut self) -> &mut Extensions;
}

impl<B: Send + 'static> HttpResponse for http::Response<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }
    fn headers(&self) -> &HeaderMap {
        self.headers()
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

/// How many bytes of this attempt's response body the engine wants to see
/// before deciding (0 for none, or for a transport error).
pub(crate) fn body_to_inspect<R: HttpResponse>(
    engine: &RetryState,
    request: &RequestMeta<'_>,
    result: &Result<R, BoxError>,
) -> usize {
    match result {
        Ok(response) => engine.body_to_inspect(request, response.status(), response.headers()),
        Err(_) => 0,
    }
}

/// Hands one attempt's result (and the inspected start of its body, if
/// [`body_to_inspect`] asked for it) to the engine. `kind_of` maps the
/// client's transport errors; `replay` says whether the request's body is
/// committed (asked only when a retry is otherwise allowed, see
/// [`RetryState::decide_with`]). With the attempt's `span` (if one was
/// made), the outcome is recorded on it and the engine decides inside it,
/// so its events are the attempt's.
#[inline]
pub(crate) fn decide<R: HttpResponse>(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    result: &Result<R, BoxError>,
    body: Option<&[u8]>,
    kind_of: impl FnOnce(&(dyn StdError + 'static)) -> FailureKind,
    replay: impl FnOnce() -> Option<Committed>,
    span: Option<&AttemptSpan>,
) -> Decision {
    // The attempt's end, read only if the decision needs it.
    let now = || tokio::time::Instant::now().into_std();
    match result {
        Ok(response) => {
            let outcome = Outcome::Response {
                status: response.status(),
                headers: response.headers(),
                body,
            };
            decide_in(span, &outcome, || {
                engine.decide_at(request, &outcome, now, replay)
            })
        }
        Err(error) => {
            let error: &(dyn StdError + 'static) = &**error;
            let kind = kind_of(error);
            let outcome = Outcome::Error { kind, error };
            decide_in(span, &outcome, || {
                engine.decide_at(request, &outcome, now, replay)
            })
        }
    }
}

/// The span of the attempt about to be sent, if a subscriber wants one
/// (see [`AttemptSpan::traced`]; `request` describes the request only
/// then).
#[inline]
pub(crate) fn attempt_span<'a>(
    engine: &RetryState,
    request: impl FnOnce() -> RequestMeta<'a>,
) -> Option<AttemptSpan> {
    // The process-wide level first (one atomic load): with no subscriber,
    // or none at INFO, nothing below is worked out.
    #[cfg(feature = "tracing")]
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return None;
    }
    AttemptSpan::traced(
        request,
        engine.report().attempts() + 1,
        engine.policy().hide_paths(),
    )
}

/// [`attempt_span`] for attempt number `attempt` (0 for the first) of a
/// hedged round, whose attempts end in any order.
pub(crate) fn lane_span<'a>(
    engine: &RetryState,
    request: impl FnOnce() -> RequestMeta<'a>,
    attempt: u32,
) -> Option<AttemptSpan> {
    #[cfg(feature = "tracing")]
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return None;
    }
    AttemptSpan::traced(request, attempt + 1, engine.policy().hide_paths())
}

/// Whether the attempt about to be sent is a resend that the policy
/// changes (an attempt header, a `before_retry` hook): then the adapter
/// makes a [`ResendRequest`] of its copy for [`prepare_resend`].
#[inline]
pub(crate) fn changes_resend(engine: &RetryState) -> bool {
    let p = engine.policy().inner();
    (p.attempt_header.is_some() || p.before_retry.is_some()) && engine.report().attempts() > 0
}

/// Prepares the copy about to be resent: the policy's attempt header with
/// the attempt's number, then its `before_retry` hook. Both adapters call
/// it on their copy, after [`changes_resend`] said so.
pub(crate) fn prepare_resend(engine: &RetryState, request: &mut ResendRequest<'_>) {
    let p = engine.policy().inner();
    let attempt = engine.report().attempts() + 1;
    if let Some(name) = &p.attempt_header {
        request
            .headers_mut()
            .insert(name.clone(), HeaderValue::from(attempt));
    }
    if let Some(hook) = &p.before_retry {
        hook.before_retry(request, attempt);
    }
}

/// Turns a final (non-retry) decision into the caller's result: the
/// response with its report attached, or an [`Error`] that keeps the report
/// and the last response or error.
///
/// Inline, the errors out of line ([`finish_error`]): a returned response
/// is moved once, into the caller's result, instead of into and out of a
/// call (its 144-byte copies: tower success path 2,365 -> 2,308
/// instructions per call).
#[inline]
pub(crate) fn finish<'a, R: HttpResponse>(
    decision: Decision,
    engine: &mut RetryState,
    request: impl FnOnce() -> RequestMeta<'a>,
    result: Result<R, BoxError>,
) -> Result<R, Error> {
    match result {
        Ok(mut response) if decision == Decision::Return => {
            if engine.policy().resume_bodies() {
                offer_resume(engine, &request(), &mut response);
            }
            // A first-attempt success with no wait carries no report: the
            // accessor (`ResponseExt::retry_report`) answers for it without
            // allocating. Anything else that happened is attached.
            if !engine.report().is_clean() {
                response.extensions_mut().insert(engine.take_report());
            }
            Ok(response)
        }
        result => finish_error(decision, engine, request, result),
    }
}

/// [`finish`] for a request that fails: an [`Error`] with the report and
/// the last response or error.
#[inline(never)]
fn finish_error<'a, R: HttpResponse>(
    decision: Decision,
    engine: &mut RetryState,
    request: impl FnOnce() -> RequestMeta<'a>,
    result: Result<R, BoxError>,
) -> Result<R, Error> {
    let report = engine.take_report();
    let reason = match decision {
        Decision::Fail(reason) => reason,
        _ => StopReason::Permanent,
    };
    let last = match result {
        Ok(mut response) => {
            response.extensions_mut().insert(report.clone());
            Last::Response {
                status: response.status(),
                headers: response.headers().clone(),
                response,
            }
        }
        Err(e) => Last::Error(e),
    };
    Err(with_url(
        Error::from_stop(reason, report, last),
        engine,
        &request(),
    ))
}

/// With `resume_bodies`: a response handed over whose body can be resumed
/// carries the engine's state for it, for `ResumeLayer` or `ResumeExt` to
/// take into its body.
#[cold]
fn offer_resume<R: HttpResponse>(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    response: &mut R,
) {
    if let Some(state) = engine.resume_state(request, response.status(), response.headers()) {
        response
            .extensions_mut()
            .insert(resume::ResumeHandle::new(state));
    }
}

/// Names the request in the error, redacted as the policy says.
fn with_url(error: Error, engine: &RetryState, request: &RequestMeta<'_>) -> Error {
    error.with_url(request.redacted_url(engine.policy().hide_paths()))
}

pin_project_lite::pin_project! {
    /// A wait before the next attempt (a backoff, or one that load
    /// protection imposed), and the last attempt's result kept through it:
    /// if the next attempt is refused before it is sent, that result is
    /// what the caller gets, as if the retry had been refused right after
    /// the attempt. One box for both, made at the first wait (most requests
    /// never wait), and reused for the next.
    pub(crate) struct Pause<R> {
        #[pin]
        sleep: tokio::time::Sleep,
        kept: Option<Result<R, BoxError>>,
    }
}

/// A request's pause, once it has waited.
pub(crate) type Kept<R> = Option<Pin<Box<Pause<R>>>>;

/// Starts waiting `delay` in `pause` (made on first need), keeping `last`
/// (or, with `None`, whatever it kept before).
pub(crate) fn pause<R>(
    pause: &mut Kept<R>,
    delay: Duration,
    last: Option<Result<R, BoxError>>,
) -> Pin<&mut Pause<R>> {
    let deadline = tokio::time::Instant::now() + delay;
    let pause = match pause {
        Some(pause) => {
            let mut this = pause.as_mut().project();
            this.sleep.as_mut().reset(deadline);
            if last.is_some() {
                *this.kept = last;
            }
            pause
        }
        None => pause.insert(Box::pin(Pause {
            sleep: tokio::time::sleep_until(deadline),
            kept: last,
        })),
    };
    pause.as_mut()
}

/// Keeps `last` in the pause (made on first need) through a store call,
/// without waiting: the timer is set when a wait follows
/// ([`pause`]). If the call ends the request, `last` is what the caller
/// gets.
pub(crate) fn keep<R>(kept: &mut Kept<R>, last: Result<R, BoxError>) {
    match kept {
        Some(pause) => *pause.as_mut().project().kept = Some(last),
        // Never polled before `pause` sets it.
        None => {
            *kept = Some(Box::pin(Pause {
                sleep: tokio::time::sleep_until(tokio::time::Instant::now()),
                kept: Some(last),
            }))
        }
    }
}

impl<R> Pause<R> {
    /// The wait's timer.
    pub(crate) fn sleep(self: Pin<&mut Self>) -> Pin<&mut tokio::time::Sleep> {
        self.project().sleep
    }
}

/// The result a pause kept, taken out (the attempt after it was sent, or
/// refused).
pub(crate) fn take_kept<R>(pause: &mut Kept<R>) -> Option<Result<R, BoxError>> {
    pause.as_mut()?.as_mut().project().kept.take()
}

/// The next attempt was refused before it was sent ([`RetryState::admit`]
/// or [`RetryState::withdraw`]): before the first attempt, an [`Error`]
/// with the report; before a retry, what the engine says of the last
/// result the pause `kept` ([`RetryState::refusal`]): the response itself,
/// or an [`Error`] that carries it (or the last transport error).
pub(crate) fn refused<R: HttpResponse>(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    reason: StopReason,
    mut kept: Kept<R>,
) -> Result<R, Error> {
    match take_kept(&mut kept) {
        None => {
            let error = Error::from_stop::<()>(reason, engine.take_report(), Last::Nothing);
            Err(with_url(error, engine, request))
        }
        Some(last) => {
            let decision = engine.refusal(reason, last.is_ok());
            finish(decision, engine, || *request, last)
        }
    }
}

/// The timeout of the attempt about to be sent at `now` (`None`: none).
/// With no time left before the deadline, the attempt is withdrawn
/// instead (`Err`): nothing is sent with no time left. `request` makes the
/// request's metadata, needed only then.
pub(crate) fn attempt_window<'a>(
    engine: &mut RetryState,
    request: impl FnOnce() -> RequestMeta<'a>,
    now: Instant,
) -> Result<Option<Duration>, StopReason> {
    match engine.attempt_timeout(now) {
        Some(left) if left.is_zero() => {
            engine.withdraw(&request(), StopReason::Deadline);
            Err(StopReason::Deadline)
        }
        timeout => Ok(timeout),
    }
}

/// The inner service failed to become ready (before the first attempt, or
/// before a retry): not retried, reported with what is known so far.
pub(crate) fn not_ready(report: RetryReport, error: BoxError) -> Error {
    Error::from_stop::<()>(StopReason::Permanent, report, Last::Error(error))
}

/// [`not_ready`] for a request the adapter had started.
pub(crate) fn not_ready_for(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    error: BoxError,
) -> Error {
    let error = not_ready(engine.take_report(), error);
    with_url(error, engine, request)
}
