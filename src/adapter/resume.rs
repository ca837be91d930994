//! Resumable response bodies: a download cut in the middle goes on from
//! where the caller stopped reading, and never yields corrupt bytes.
//!
//! Two layers:
//!
//! - **sans-IO rules** ([`Resumable`]): from the first response, decide
//!   whether the body can be resumed (a `GET`, a `200` or a `206` running to
//!   the end, `Accept-Ranges: bytes`, no `Content-Encoding`, and a strong
//!   validator: an `ETag` that is not weak, or, without any `ETag`, a
//!   `Last-Modified` at least one second before the response's `Date`, as
//!   RFC 9110 §8.8.2.2 and §13.1.5 ask); build the `Range: bytes=N-` and
//!   `If-Range` headers of a resume; and check what comes back
//!   ([`Resumable::check`]):
//!   - a `206` whose `Content-Range` starts at `N` and agrees on the total
//!     length continues the stream ([`Continuation::Continue`]);
//!   - a `200` (the server ignored the range) continues only with the same
//!     validator, skipping the first `N` bytes ([`Continuation::Skip`]);
//!   - anything else is a [`ResumeError`] with its own stable
//!     [`code`](ResumeError::code): a changed or missing validator, a weak
//!     one, another start, another total length, an impossible or
//!     unparseable range, an unexpected status.
//! - **a body** ([`ResumableBody`]) that continues the same stream across
//!   resumes. It is handed something that sends the range request (a
//!   [`Resume`]: a closure returning the new response) and the limits of
//!   [`ResumeLimits`]: how many resumes, an idle timeout between chunks, a
//!   deadline, a backoff between resume attempts. Each resume is recorded
//!   in its [`ResumeLog`] (the offset, the status, the bytes fetched).
//!
//! A failure while reading (a reset, an early close, a body shorter than
//! announced, no chunk within the idle timeout) triggers a resume; a resume
//! whose request fails, or is answered with a transient status (`503`,
//! `429`, ...), is one more resume. When no resume is left, or a check
//! fails, the body yields the [`ResumeError`] (its
//! [`source`](std::error::Error::source) is the failure that asked for the
//! resume) and ends. Bytes are only ever passed on after the response that
//! carries them has been checked.
//!
//! ```
//! use http::{HeaderMap, Method, StatusCode};
//! use http_resilience::resume::{Continuation, Resumable};
//!
//! let mut first = HeaderMap::new();
//! first.insert("etag", "\"v1\"".parse().unwrap());
//! first.insert("accept-ranges", "bytes".parse().unwrap());
//! first.insert("content-length", "1000".parse().unwrap());
//! let resumable = Resumable::from_response(&Method::GET, StatusCode::OK, &first).unwrap();
//!
//! // 400 bytes were read when the connection broke: ask for the rest.
//! let request = resumable.request(400);
//! assert_eq!(request.range(), "bytes=400-");
//! assert_eq!(request.if_range(), "\"v1\"");
//!
//! let mut answer = HeaderMap::new();
//! answer.insert("etag", "\"v1\"".parse().unwrap());
//! answer.insert("content-range", "bytes 400-999/1000".parse().unwrap());
//! let next = resumable.check(400, StatusCode::PARTIAL_CONTENT, &answer).unwrap();
//! assert_eq!(next, Continuation::Continue);
//!
//! answer.insert("content-range", "bytes 0-999/1000".parse().unwrap());
//! let wrong = resumable.check(400, StatusCode::PARTIAL_CONTENT, &answer).unwrap_err();
//! assert_eq!(wrong.code(), "RESUME_WRONG_START");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_RANGE;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body::RetryBody;
#[cfg(feature = "reqwest")]
use super::replay::Committed;
use crate::backoff::Backoff;
use crate::classify::{AttemptTimedOut, Class, FailureKind, RequestMeta, classify_status};
use crate::engine::resume::{Answer, ResumeAdmission, ResumeState, content_length, single};
pub use crate::engine::resume::{
    ContentRange, Continuation, NotResumable, Resumable, ResumeError, ResumeErrorKind, ResumeLog,
    ResumeRecord, ResumeRequest, Validator,
};
use crate::error::BoxError;
use crate::report::RetryReport;
use crate::retry_after::DelaySource;

/// The body ended before the length it announced (a close that the
/// transport did not report as an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedEarly {
    /// Bytes still expected.
    pub missing: u64,
}

impl fmt::Display for EndedEarly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the body ended {} bytes early", self.missing)
    }
}

impl StdError for EndedEarly {}

/// No chunk of the body arrived within the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyIdle {
    /// The idle timeout.
    pub after: Duration,
}

impl fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no body data for {:?}", self.after)
    }
}

impl StdError for BodyIdle {}

/// The boxed future of one resume request.
pub type ResumeFuture<B> =
    Pin<Box<dyn Future<Output = Result<http::Response<B>, BoxError>> + Send + 'static>>;

/// Sends a resume request: a copy of the original request with the
/// [`ResumeRequest`]'s headers added. Closures
/// `FnMut(ResumeRequest) -> impl Future<Output = Result<http::Response<B>, BoxError>>`
/// are `Resume`s.
pub trait Resume<B> {
    /// Sends it; resolves to the response (its body not yet read).
    fn resume(&mut self, request: ResumeRequest) -> ResumeFuture<B>;
}

impl<B, F, Fut> Resume<B> for F
where
    F: FnMut(ResumeRequest) -> Fut,
    Fut: Future<Output = Result<http::Response<B>, BoxError>> + Send + 'static,
{
    fn resume(&mut self, request: ResumeRequest) -> ResumeFuture<B> {
        Box::pin(self(request))
    }
}

/// The limits of a [`ResumableBody`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`max_resumes`](Self::max_resumes) | 3 |
/// | [`idle_timeout`](Self::idle_timeout) | none |
/// | [`deadline`](Self::deadline) | none |
/// | [`backoff`](Self::backoff) | none: a resume is sent at once |
#[derive(Debug, Clone)]
pub struct ResumeLimits {
    max_resumes: u32,
    idle_timeout: Option<Duration>,
    deadline: Option<Instant>,
    backoff: Option<Backoff>,
}

impl Default for ResumeLimits {
    fn default() -> Self {
        ResumeLimits {
            max_resumes: 3,
            idle_timeout: None,
            deadline: None,
            backoff: None,
        }
    }
}

impl ResumeLimits {
    /// At most `n` resume requests per body (0: never resume).
    pub fn max_resumes(mut self, n: u32) -> Self {
        self.max_resumes = n;
        self
    }
    /// A body that delivers nothing for `after` (between chunks, or while
    /// waiting for a resume's response) has failed, and is resumed.
    pub fn idle_timeout(mut self, after: Duration) -> Self {
        self.idle_timeout = Some(after);
        self
    }
    /// No resume starts at or after `at` (tokio's clock), and none whose
    /// backoff would reach it.
    pub fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }
    /// Waits between resume attempts, from this schedule (see
    /// [`RetryPolicy::backoff`](crate::RetryPolicy::backoff)).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
}

/// A response body that resumes itself. See the [module docs](self).
///
/// When the first response cannot be resumed
/// ([`not_resumable`](Self::not_resumable) says why), it passes the body
/// through as it is. `R`, the [`Resume`] that sends the range requests, is
/// boxed by default: that is the type [`Resuming`] and [`ResumeExt`]
/// return.
pub struct ResumableBody<B, R = Box<dyn Resume<B> + Send>> {
    inner: Option<Inner<B, R>>,
    plain: Option<Pin<Box<B>>>,
    reason: Option<NotResumable>,
    log: ResumeLog,
}

struct Inner<B, R> {
    resumable: Resumable,
    resumer: R,
    control: Control,
    /// Body bytes passed to the caller, from the first response's start.
    received: u64,
    /// Where the current response's body ends, in the representation
    /// (exclusive), when known.
    end: Option<u64>,
    /// Bytes of the current response still to discard (a `200`'s start).
    skip: u64,
    phase: Phase<B>,
    /// The idle timer (or the resume request's timeout), or the wait
    /// before a resume.
    timer: Option<Pin<Box<Sleep>>>,
    /// The resume request's own timeout (the policy's `attempt_timeout`,
    /// clamped to its deadline), while it is awaited.
    request_timeout: Option<Duration>,
    /// In the current response, when it is a resume's.
    resumed: bool,
}

/// Who decides the resumes.
enum Control {
    /// The body's own [`ResumeLimits`].
    Limits { limits: ResumeLimits, resumes: u32 },
    /// The request's policy, through the engine.
    Policy(Box<ResumeState>),
}

enum Phase<B> {
    Reading(Pin<Box<B>>),
    /// A wait before a resume (its backoff, or a wait load protection
    /// imposed); the resume asks to be admitted when it ends.
    Waiting {
        cause: Option<BoxError>,
    },
    /// The state store is being asked for the resume's turn; the resume
    /// asks to be admitted again when it has answered.
    Consulting {
        cause: Option<BoxError>,
    },
    Requesting {
        future: ResumeFuture<B>,
        cause: Option<BoxError>,
    },
    Done,
}

impl<B, R> fmt::Debug for ResumableBody<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ResumableBody");
        match &self.inner {
            Some(inner) => s
                .field("received", &inner.received)
                .field("resumes", &inner.control.resumes()),
            None => s.field("not_resumable", &self.reason),
        };
        s.finish_non_exhaustive()
    }
}

impl Control {
    fn resumes(&self) -> u32 {
        match self {
            Control::Limits { resumes, .. } => *resumes,
            Control::Policy(state) => state.resumes(),
        }
    }

    fn idle_timeout(&self) -> Option<Duration> {
        match self {
            Control::Limits { limits, .. } => limits.idle_timeout,
            Control::Policy(state) => state.idle_timeout(),
        }
    }

    fn report(&self) -> Option<RetryReport> {
        match self {
            Control::Limits { .. } => None,
            Control::Policy(state) => Some(state.report()),
        }
    }
}

impl<B, R> ResumableBody<B, R>
where
    B: Body<Data = Bytes>,
    R: Resume<B>,
{
    /// Wraps the first response to `method`: its body resumes through
    /// `resumer` under `limits` when the response allows it, and passes
    /// through otherwise.
    pub fn wrap(
        method: &Method,
        response: http::Response<B>,
        resumer: R,
        limits: ResumeLimits,
    ) -> http::Response<ResumableBody<B, R>> {
        let (parts, body) = response.into_parts();
        let body = match Resumable::from_response(method, parts.status, &parts.headers) {
            Ok(resumable) => {
                let length = content_length(&parts.headers).ok().flatten();
                ResumableBody::new(resumable, length, body, resumer, limits)
            }
            Err(reason) => ResumableBody::plain(body, Some(reason)),
        };
        http::Response::from_parts(parts, body)
    }

    /// A body that resumes `body` (which starts at `resumable.start()`,
    /// with `length` bytes if known) through `resumer`.
    pub fn new(
        resumable: Resumable,
        length: Option<u64>,
        body: B,
        resumer: R,
        limits: ResumeLimits,
    ) -> ResumableBody<B, R> {
        let control = Control::Limits { limits, resumes: 0 };
        Self::with_control(
            resumable,
            length,
            body,
            resumer,
            control,
            ResumeLog::default(),
        )
    }

    /// The body of a response that an adapter handed over with a
    /// [`ResumeState`] (its policy has `resume_bodies`): resumes through
    /// `resumer`, under the request's policy.
    pub(crate) fn resuming(
        response: http::Response<B>,
        resumer: R,
        state: Box<ResumeState>,
    ) -> http::Response<ResumableBody<B, R>> {
        let (mut parts, body) = response.into_parts();
        let length = content_length(&parts.headers).ok().flatten();
        let log = state.log().clone();
        parts.extensions.insert(log.clone());
        let resumable = state.resumable().clone();
        let body = Self::with_control(
            resumable,
            length,
            body,
            resumer,
            Control::Policy(state),
            log,
        );
        http::Response::from_parts(parts, body)
    }

    /// [`resuming`](Self::resuming), for a response whose body was already
    /// checked to start where `resumable` says (a download going on from an
    /// earlier run's file).
    #[cfg(feature = "download")]
    pub(crate) fn resuming_from(
        resumable: Resumable,
        length: Option<u64>,
        body: B,
        resumer: R,
        state: Box<ResumeState>,
    ) -> ResumableBody<B, R> {
        let log = state.log().clone();
        Self::with_control(
            resumable,
            length,
            body,
            resumer,
            Control::Policy(state),
            log,
        )
    }

    fn with_control(
        resumable: Resumable,
        length: Option<u64>,
        body: B,
        resumer: R,
        control: Control,
        log: ResumeLog,
    ) -> ResumableBody<B, R> {
        let end = match (length, resumable.total) {
            (Some(l), _) => Some(resumable.start.saturating_add(l)),
            (None, total) => total,
        };
        let mut inner = Inner {
            resumable,
            resumer,
            control,
            received: 0,
            end,
            skip: 0,
            phase: Phase::Reading(Box::pin(body)),
            timer: None,
            request_timeout: None,
            resumed: false,
        };
        inner.arm_idle();
        ResumableBody {
            inner: Some(inner),
            plain: None,
            reason: None,
            log,
        }
    }

    /// A body passed through as it is (`reason`: why it is not resumed).
    pub(crate) fn plain(body: B, reason: Option<NotResumable>) -> ResumableBody<B, R> {
        ResumableBody {
            inner: None,
            plain: Some(Box::pin(body)),
            reason,
            log: ResumeLog::default(),
        }
    }
}

impl<B, R> ResumableBody<B, R> {
    /// Why the body is passed through as it is, if it is (`None` too when
    /// no resume was asked for: a policy without `resume_bodies`, a request
    /// that is not a `GET`).
    pub fn not_resumable(&self) -> Option<NotResumable> {
        self.reason
    }

    /// `true` if the body resumes when it fails.
    pub fn is_resumable(&self) -> bool {
        self.inner.is_some()
    }

    /// The resumes made so far; the log stays readable after the body has
    /// been consumed.
    pub fn log(&self) -> ResumeLog {
        self.log.clone()
    }

    /// Bytes passed to the caller so far.
    pub fn received(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.received)
    }
}

/// The kind of a failure that asks for a resume: what the budget is paid
/// for (a timeout costs a timeout's tokens).
fn failure_kind(cause: Option<&BoxError>) -> Option<FailureKind> {
    let cause = cause?;
    if cause.is::<BodyIdle>() || cause.is::<AttemptTimedOut>() {
        return Some(FailureKind::Timeout);
    }
    if cause.is::<EndedEarly>() {
        return Some(FailureKind::Body);
    }
    Some(FailureKind::from_error(&**cause))
}

impl<B, R> Inner<B, R> {
    fn offset(&self) -> u64 {
        self.resumable.start.saturating_add(self.received)
    }

    /// Arms the idle timer (while reading, or while a resume request is
    /// awaited: then at most its own timeout).
    fn arm_idle(&mut self) {
        let idle = self.control.idle_timeout();
        let after = match (idle, self.request_timeout) {
            (Some(i), Some(t)) => Some(i.min(t)),
            (i, t) => i.or(t),
        };
        if let Some(after) = after {
            let at = Instant::now() + after;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        } else {
            self.timer = None;
        }
    }

    /// The idle timer (or the request's timeout) expired: the failure it
    /// is.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<BoxError> {
        let timer = self.timer.as_mut()?;
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        let idle = self.control.idle_timeout();
        Some(match (idle, self.request_timeout) {
            (Some(i), Some(t)) if t < i => Box::new(AttemptTimedOut { after: t }),
            (None, Some(t)) => Box::new(AttemptTimedOut { after: t }),
            (i, _) => Box::new(BodyIdle {
                after: i.unwrap_or_default(),
            }),
        })
    }
}

impl<B, R> Inner<B, R>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    R: Resume<B>,
{
    fn fail(&mut self, kind: ResumeErrorKind, cause: Option<BoxError>) -> BoxError {
        self.phase = Phase::Done;
        self.timer = None;
        let error = ResumeError::new(kind, self.offset(), self.control.resumes())
            .with_source(cause)
            .with_report(self.control.report());
        Box::new(error)
    }

    /// The current response failed (or ended short, or a resume's answer
    /// asked to try again after `hint`): plan the next resume, or give up.
    fn failed(
        &mut self,
        cause: Option<BoxError>,
        hint: Option<(Duration, DelaySource)>,
        log: &ResumeLog,
    ) -> Result<(), BoxError> {
        let offset = self.offset();
        let now = Instant::now();
        let delay = match &mut self.control {
            Control::Limits { limits, resumes } => {
                if *resumes >= limits.max_resumes {
                    return Err(self.fail(ResumeErrorKind::LimitExceeded, cause));
                }
                let delay = limits
                    .backoff
                    .as_mut()
                    .map_or(Duration::ZERO, Backoff::next_delay);
                if limits.deadline.is_some_and(|d| now + delay >= d) {
                    return Err(self.fail(ResumeErrorKind::DeadlineExceeded, cause));
                }
                *resumes += 1;
                log.push(ResumeRecord::new(offset, delay));
                delay
            }
            Control::Policy(state) => {
                let failure = failure_kind(cause.as_ref());
                match state.plan(offset, failure, hint, now.into_std()) {
                    Ok(delay) => delay,
                    Err(kind) => return Err(self.fail(kind, cause)),
                }
            }
        };
        self.request_timeout = None;
        if delay.is_zero() {
            self.admit(cause)?;
        } else {
            self.timer = Some(Box::pin(tokio::time::sleep(delay)));
            self.phase = Phase::Waiting { cause };
        }
        Ok(())
    }

    /// The resume may go (or must wait, or is refused) now.
    fn admit(&mut self, cause: Option<BoxError>) -> Result<(), BoxError> {
        let timeout = match &mut self.control {
            Control::Limits { .. } => None,
            Control::Policy(state) => {
                let offset = self.resumable.start.saturating_add(self.received);
                match state.admit(offset, Instant::now().into_std()) {
                    ResumeAdmission::Send { timeout } => timeout,
                    ResumeAdmission::Wait(delay) => {
                        self.timer = Some(Box::pin(tokio::time::sleep(delay)));
                        self.phase = Phase::Waiting { cause };
                        return Ok(());
                    }
                    ResumeAdmission::Fail(kind) => return Err(self.fail(kind, cause)),
                    ResumeAdmission::Consult => {
                        self.phase = Phase::Consulting { cause };
                        return Ok(());
                    }
                }
            }
        };
        let request = self.resumable.request(self.received);
        let future = self.resumer.resume(request);
        self.phase = Phase::Requesting { future, cause };
        self.request_timeout = timeout;
        self.timer = None;
        self.arm_idle();
        Ok(())
    }

    /// What the answer to a resume request means.
    fn answered(&mut self, status: StatusCode, headers: &http::HeaderMap) -> Answer {
        let offset = self.offset();
        match &mut self.control {
            Control::Limits { .. } => match self.resumable.check_kind(offset, status, headers) {
                Ok(continuation) => Answer::Go(continuation),
                Err(ResumeErrorKind::UnexpectedStatus(status))
                    if classify_status(
                        &RequestMeta::new(&Method::GET, "", "", "", headers),
                        status,
                        headers,
                    ) == Class::Transient =>
                {
                    Answer::Again(None)
                }
                Err(kind) => Answer::Fail(kind),
            },
            Control::Policy(state) => {
                let now = Instant::now().into_std();
                state.answered(&self.resumable, offset, status, headers, now)
            }
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        log: &ResumeLog,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Waiting { cause } => {
                    let ready = self
                        .timer
                        .as_mut()
                        .is_none_or(|t| t.as_mut().poll(cx).is_ready());
                    if !ready {
                        return Poll::Pending;
                    }
                    let cause = cause.take();
                    self.timer = None;
                    if let Err(e) = self.admit(cause) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Phase::Consulting { cause } => {
                    if let Control::Policy(state) = &mut self.control {
                        std::task::ready!(state.poll_store_call(cx));
                    }
                    let cause = cause.take();
                    if let Err(e) = self.admit(cause) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Phase::Requesting { future, cause } => {
                    let result = match future.as_mut().poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            if let Some(expired) = self.expired(cx) {
                                if let Control::Policy(state) = &mut self.control {
                                    state.request_failed(&*expired, Instant::now().into_std());
                                }
                                if let Err(e) = self.failed(Some(expired), None, log) {
                                    return Poll::Ready(Some(Err(e)));
                                }
                                continue;
                            }
                            return Poll::Pending;
                        }
                    };
                    let cause = cause.take();
                    self.request_timeout = None;
                    let response = match result {
                        Ok(response) => response,
                        // The resume request itself failed: one more.
                        Err(e) => {
                            if let Control::Policy(state) = &mut self.control {
                                state.request_failed(&*e, Instant::now().into_std());
                            }
                            if let Err(e) = self.failed(Some(e), None, log) {
                                return Poll::Ready(Some(Err(e)));
                            }
                            continue;
                        }
                    };
                    let (parts, body) = response.into_parts();
                    if let Control::Limits { .. } = self.control {
                        log.update(|r| r.status = Some(parts.status));
                    }
                    let offset = self.offset();
                    match self.answered(parts.status, &parts.headers) {
                        Answer::Go(continuation) => {
                            let length = content_length(&parts.headers).ok().flatten();
                            match continuation {
                                Continuation::Continue => {
                                    self.skip = 0;
                                    let range = single(&parts.headers, &CONTENT_RANGE)
                                        .and_then(|v| ContentRange::parse(v.as_bytes()));
                                    if self.resumable.total.is_none() {
                                        self.resumable.total = range.and_then(|r| r.complete);
                                    }
                                    self.end = range
                                        .map(|r| r.last + 1)
                                        .or(length.map(|l| offset.saturating_add(l)))
                                        .or(self.resumable.total);
                                }
                                Continuation::Skip(n) => {
                                    self.skip = n;
                                    self.end = length.or(self.resumable.total);
                                    log.update(|r| r.skipped = n);
                                }
                            }
                            self.resumed = true;
                            self.phase = Phase::Reading(Box::pin(body));
                            self.arm_idle();
                        }
                        Answer::Again(hint) => {
                            drop(body);
                            if let Err(e) = self.failed(cause, hint, log) {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        Answer::Fail(kind) => {
                            return Poll::Ready(Some(Err(self.fail(kind, cause))));
                        }
                    }
                }
                Phase::Reading(body) => {
                    let polled = body.as_mut().poll_frame(cx);
                    match polled {
                        Poll::Pending => {
                            if let Some(expired) = self.expired(cx) {
                                if let Err(e) = self.failed(Some(expired), None, log) {
                                    return Poll::Ready(Some(Err(e)));
                                }
                                continue;
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(frame))) => {
                            let mut data = match frame.into_data() {
                                Ok(data) => data,
                                // Trailers pass through.
                                Err(frame) => return Poll::Ready(Some(Ok(frame))),
                            };
                            self.arm_idle();
                            if self.resumed {
                                let len = data.len() as u64;
                                log.update(|r| r.fetched += len);
                            }
                            if self.skip > 0 {
                                let n = self.skip.min(data.len() as u64);
                                self.skip -= n;
                                data = data.slice(n as usize..);
                                if data.is_empty() {
                                    continue;
                                }
                            }
                            let len = data.len() as u64;
                            let past_end = self
                                .end
                                .is_some_and(|end| self.offset().saturating_add(len) > end)
                                || self
                                    .resumable
                                    .total
                                    .is_some_and(|t| self.offset().saturating_add(len) > t);
                            if past_end {
                                return Poll::Ready(Some(Err(
                                    self.fail(ResumeErrorKind::TooLong, None)
                                )));
                            }
                            self.received += len;
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Poll::Ready(Some(Err(e))) => {
                            if let Err(e) = self.failed(Some(e.into()), None, log) {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        Poll::Ready(None) => {
                            let offset = self.offset();
                            let short_of = self
                                .end
                                .filter(|&end| offset < end)
                                .or(self.resumable.total.filter(|&t| offset < t));
                            match short_of {
                                Some(end) => {
                                    let early = EndedEarly {
                                        missing: end - offset,
                                    };
                                    if let Err(e) = self.failed(Some(Box::new(early)), None, log) {
                                        return Poll::Ready(Some(Err(e)));
                                    }
                                }
                                None => {
                                    self.phase = Phase::Done;
                                    self.timer = None;
                                    return Poll::Ready(None);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<B, R> Body for ResumableBody<B, R>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    R: Resume<B> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(plain) = &mut this.plain {
            return plain.as_mut().poll_frame(cx).map_err(Into::into);
        }
        match &mut this.inner {
            Some(inner) => inner.poll_frame(cx, &this.log),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(plain) = &self.plain {
            return plain.is_end_stream();
        }
        match &self.inner {
            Some(inner) => match &inner.phase {
                Phase::Done => true,
                Phase::Reading(body) => {
                    inner.skip == 0 && body.is_end_stream() && {
                        let offset = inner.resumable.start.saturating_add(inner.received);
                        inner.end.is_none_or(|end| offset >= end)
                    }
                }
                _ => false,
            },
            None => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(plain) = &self.plain {
            return plain.size_hint();
        }
        match &self.inner {
            Some(inner) => match inner.resumable.total.or(inner.end) {
                Some(end) => {
                    let offset = inner.resumable.start.saturating_add(inner.received);
                    SizeHint::with_exact(end.saturating_sub(offset))
                }
                None => SizeHint::new(),
            },
            None => SizeHint::with_exact(0),
        }
    }
}

impl<B> Resume<B> for Box<dyn Resume<B> + Send> {
    fn resume(&mut self, request: ResumeRequest) -> ResumeFuture<B> {
        (**self).resume(request)
    }
}

/// What an adapter attaches to a response it hands over when the policy
/// has `resume_bodies` and the response can be resumed: the request's
/// [`ResumeState`], for [`Resuming`] (tower) or [`ResumeExt`] (reqwest) to
/// take into the body. Cloning shares it; it is taken once.
#[derive(Clone)]
pub(crate) struct ResumeHandle(Arc<Mutex<Option<Box<ResumeState>>>>);

impl ResumeHandle {
    pub(crate) fn new(state: Box<ResumeState>) -> ResumeHandle {
        ResumeHandle(Arc::new(Mutex::new(Some(state))))
    }

    /// The state, taken out of `extensions` (once).
    pub(crate) fn take(extensions: &mut http::Extensions) -> Option<Box<ResumeState>> {
        let handle = extensions.remove::<ResumeHandle>()?;
        let mut slot = handle.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.take()
    }
}

/// Puts a response body behind a `Mutex`, for clients that need a `Sync`
/// body (reqwest's `Body::wrap`): the body is only ever polled through
/// `&mut`, which takes no lock.
#[cfg(feature = "reqwest")]
struct SyncBody<B>(Mutex<B>);

#[cfg(feature = "reqwest")]
impl<B: Body + Unpin> Body for SyncBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let body = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}

/// Whether a request's `Accept-Encoding` lets byte offsets count what the
/// server sends: none (then `identity` is asked for, so that no layer or
/// client decodes the body and drops its `Content-Encoding`), or
/// `identity`.
fn identity_encoding(headers: &mut http::HeaderMap) -> bool {
    match headers.get(http::header::ACCEPT_ENCODING) {
        None => {
            headers.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity"),
            );
            true
        }
        Some(v) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"),
    }
}

/// Makes the response bodies of a [`Retry`](crate::Retry) service resume
/// when they fail while read, under each request's policy (with
/// [`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies)). Goes
/// **outside** the [`RetryLayer`](crate::RetryLayer): its resume requests
/// are sent through the same `Retry` service, one attempt each (the body
/// decides what follows, under the request's limits, deadline and budget).
///
/// Bodies come back as [`ResumableBody`]s, whose errors are boxed (a
/// [`ResumeError`] when a resume fails). A response that cannot be resumed
/// (not a `GET`, no strong validator, no `Accept-Ranges: bytes`, encoded,
/// or a policy without `resume_bodies`) passes through as it is. A `GET`
/// without `Accept-Encoding` is sent with `Accept-Encoding: identity`, so
/// that no decoding layer below counts other bytes than the server's
/// ranges do.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Empty, Full};
/// use http_resilience::resume::ResumeLayer;
/// use http_resilience::{RetryLayer, RetryPolicy};
/// use tower::{Service, ServiceBuilder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let policy = RetryPolicy::builder().resume_bodies(true).build()?;
/// let mut svc = ServiceBuilder::new()
///     .layer(ResumeLayer::new()) // outermost: resumable bodies
///     .layer(RetryLayer::new(policy))
///     .service(tower::service_fn(|_req: Request<Empty<bytes::Bytes>>| async {
///         Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from("data"))))
///     }));
/// let response = svc.call(Request::new(Empty::new())).await?;
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(&body[..], b"data");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumeLayer {
    _private: (),
}

impl ResumeLayer {
    /// The layer.
    pub fn new() -> ResumeLayer {
        ResumeLayer { _private: () }
    }
}

impl<S> tower::Layer<S> for ResumeLayer {
    type Service = Resuming<S>;
    fn layer(&self, inner: S) -> Resuming<S> {
        Resuming { inner }
    }
}

/// The service of [`ResumeLayer`].
#[derive(Debug, Clone)]
pub struct Resuming<S> {
    inner: S,
}

impl<S> Resuming<S> {
    /// Wraps `inner` (a [`Retry`](crate::Retry) service).
    pub fn new(inner: S) -> Resuming<S> {
        Resuming { inner }
    }
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Consumes the layer's service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What a resume request is made from: the original `GET`'s head and
/// body, kept by [`Resuming`].
struct Template<B> {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    body: B,
}

/// Sends resume requests through the tower service.
struct TowerResumer<S, B> {
    service: S,
    template: Template<B>,
    policy: crate::policy::RetryPolicy,
}

impl<S, B, R> Resume<R> for TowerResumer<S, B>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: RetryBody + Send + 'static,
    R: Send + 'static,
{
    fn resume(&mut self, request: ResumeRequest) -> ResumeFuture<R> {
        let t = &self.template;
        let body = match t.body.try_replay() {
            Ok(body) => body,
            Err(committed) => {
                let error: BoxError = Box::new(committed);
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        let mut req = http::Request::new(body);
        *req.method_mut() = t.method.clone();
        *req.uri_mut() = t.uri.clone();
        *req.version_mut() = t.version;
        *req.headers_mut() = t.headers.clone();
        request.apply(req.headers_mut());
        *req.extensions_mut() = t.extensions.clone();
        // One attempt through the retry service: the body decides.
        req.extensions_mut().insert(self.policy.clone());
        let mut service = self.service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            service.call(req).await.map_err(Into::into)
        })
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Resuming<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: RetryBody + Send + 'static,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Response = http::Response<ResumableBody<R>>;
    type Error = S::Error;
    type Future = ResumingFuture<S, B, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Only a `GET` can be resumed: only then is anything kept.
        let kept = if request.method() == Method::GET && identity_encoding(request.headers_mut()) {
            request.body().try_replay().ok().map(|body| {
                let template = Template {
                    method: request.method().clone(),
                    uri: request.uri().clone(),
                    version: request.version(),
                    headers: request.headers().clone(),
                    extensions: request.extensions().clone(),
                    body,
                };
                // The ready service sends this request; a clone, the
                // resumes (the same dance as tower's own `Retry`).
                (self.inner.clone(), template)
            })
        } else {
            None
        };
        ResumingFuture {
            future: self.inner.call(request),
            kept,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Resuming`].
    pub struct ResumingFuture<S, B, R>
    where
        S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    {
        #[pin]
        future: S::Future,
        kept: Option<(S, Template<B>)>,
    }
}

impl<S, B, R> fmt::Debug for ResumingFuture<S, B, R>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumingFuture")
            .field("resumable", &self.kept.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Future for ResumingFuture<S, B, R>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: RetryBody + Send + 'static,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Output = Result<http::Response<ResumableBody<R>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.future.poll(cx))?;
        let state = ResumeHandle::take(response.extensions_mut());
        Poll::Ready(Ok(match (state, this.kept.take()) {
            (Some(state), Some((service, template))) => {
                let resumer: Box<dyn Resume<R> + Send> = Box::new(TowerResumer {
                    service,
                    template,
                    policy: state.pass_through().clone(),
                });
                ResumableBody::resuming(response, resumer, state)
            }
            _ => response.map(|body| ResumableBody::plain(body, None)),
        }))
    }
}

/// Sends resume requests through the whole `reqwest-middleware` client
/// (the middlewares before and after the retry middleware included), one
/// attempt each through it.
#[cfg(feature = "reqwest")]
pub(crate) struct ReqwestResumer {
    client: reqwest_middleware::ClientWithMiddleware,
    template: reqwest::Request,
    extensions: http::Extensions,
}

#[cfg(feature = "reqwest")]
impl ReqwestResumer {
    /// Resumes `template` (a copy of the request, its body bytes or none)
    /// through `client`, with `extensions` (the pass-through policy in them
    /// when the body resumes under the engine). (Used by `download`.)
    #[cfg_attr(not(feature = "download"), allow(dead_code))]
    pub(crate) fn new(
        client: reqwest_middleware::ClientWithMiddleware,
        template: reqwest::Request,
        extensions: http::Extensions,
    ) -> ReqwestResumer {
        ReqwestResumer {
            client,
            template,
            extensions,
        }
    }
}

#[cfg(feature = "reqwest")]
impl Resume<reqwest::Body> for ReqwestResumer {
    fn resume(&mut self, request: ResumeRequest) -> ResumeFuture<reqwest::Body> {
        let copy = self.template.try_clone().map(|mut r| {
            request.apply(r.headers_mut());
            r
        });
        let client = self.client.clone();
        let mut extensions = self.extensions.clone();
        Box::pin(async move {
            let request = copy.ok_or_else(|| -> BoxError { Box::new(Committed::Failed) })?;
            let response = client
                .execute_with_extensions(request, &mut extensions)
                .await
                // The retry middleware's `Error` downcasts.
                .map_err(crate::error::Error::boxed_from_middleware)?;
            Ok(http::Response::<reqwest::Body>::from(response))
        })
    }
}

/// The resumable form of a `reqwest-middleware` send: through a client
/// with [`RetryMiddleware`](crate::RetryMiddleware) under a policy with
/// [`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies), the
/// response's body resumes when it fails while read (its resume requests go
/// through the same client, one attempt each: the body decides what
/// follows, under the request's limits, deadline and budget). The
/// response's extensions hold the body's [`ResumeLog`].
///
/// The retry middleware cannot do it alone: a body outlives the middleware
/// chain it came through, so it needs the client to send its resumes. A
/// response that cannot be resumed (not a `GET`, no strong validator, no
/// `Accept-Ranges: bytes`, encoded, or a policy without `resume_bodies`)
/// comes back as a plain send would give it. A `GET` without
/// `Accept-Encoding` is sent with `Accept-Encoding: identity` (a reqwest
/// built with `gzip` would decode the body and drop its
/// `Content-Encoding`, and byte offsets would no longer be the server's);
/// one that asks for another encoding is not resumed.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use http_resilience::resume::ResumeExt;
/// use http_resilience::{RetryMiddleware, RetryPolicy};
///
/// let policy = RetryPolicy::builder().resume_bodies(true).build()?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(RetryMiddleware::new(policy))
///     .build();
/// let response = client.get("http://127.0.0.1:8080/big.iso").send_resumable().await?;
/// let bytes = response.bytes().await?; // resumed if cut
/// # let _ = bytes; Ok(()) }
/// ```
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub trait ResumeExt: sealed::Sealed {
    /// Sends the request; its body resumes when it fails while read. See
    /// the [trait docs](ResumeExt).
    fn send_resumable(
        self,
    ) -> impl Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send;
}

#[cfg(feature = "reqwest")]
mod sealed {
    pub trait Sealed {}
    impl Sealed for reqwest_middleware::RequestBuilder {}
}

#[cfg(feature = "reqwest")]
impl ResumeExt for reqwest_middleware::RequestBuilder {
    fn send_resumable(
        mut self,
    ) -> impl Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send {
        let extensions = std::mem::take(self.extensions());
        let (client, request) = self.build_split();
        async move { execute_resumable_with(&client, request?, extensions).await }
    }
}

/// [`ResumeExt::send_resumable`] for a request already built.
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub async fn execute_resumable(
    client: &reqwest_middleware::ClientWithMiddleware,
    request: reqwest::Request,
) -> reqwest_middleware::Result<reqwest::Response> {
    execute_resumable_with(client, request, http::Extensions::new()).await
}

#[cfg(feature = "reqwest")]
async fn execute_resumable_with(
    client: &reqwest_middleware::ClientWithMiddleware,
    mut request: reqwest::Request,
    mut extensions: http::Extensions,
) -> reqwest_middleware::Result<reqwest::Response> {
    let template = (request.method() == Method::GET && identity_encoding(request.headers_mut()))
        .then(|| request.try_clone())
        .flatten()
        .map(|template| (template, extensions.clone()));
    let mut response = client
        .execute_with_extensions(request, &mut extensions)
        .await?;
    let state = ResumeHandle::take(response.extensions_mut());
    let (Some(state), Some((template, mut extensions))) = (state, template) else {
        return Ok(response);
    };
    // One attempt per resume through the retry middleware: the body
    // decides.
    extensions.insert(state.pass_through().clone());
    let resumer = ReqwestResumer {
        client: client.clone(),
        template,
        extensions,
    };
    Ok(resumable_reqwest(response, resumer, state))
}

/// `response` with a body that resumes through `resumer` under `state`.
#[cfg(feature = "reqwest")]
fn resumable_reqwest(
    response: reqwest::Response,
    resumer: ReqwestResumer,
    state: Box<ResumeState>,
) -> reqwest::Response {
    use reqwest::ResponseBuilderExt;

    let url = response.url().clone();
    let response = http::Response::<reqwest::Body>::from(response);
    let (mut parts, body) = ResumableBody::resuming(response, resumer, state).into_parts();
    // `reqwest` keeps the URL in a private extension that only its
    // response builder can set.
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
    let body = reqwest::Body::wrap(SyncBody(Mutex::new(body)));
    reqwest::Response::from(http::Response::from_parts(parts, body))
}
