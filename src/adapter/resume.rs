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

use crate::backoff::Backoff;
use crate::classify::{Class, RequestMeta, classify_status};
pub use crate::engine::resume::{
    ContentRange, Continuation, NotResumable, Resumable, ResumeError, ResumeErrorKind,
    ResumeRequest, Validator,
};
use crate::engine::resume::{content_length, single};
use crate::error::BoxError;

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

/// One resume: where it asked to continue, what came back, how much it
/// fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeRecord {
    offset: u64,
    status: Option<StatusCode>,
    fetched: u64,
    skipped: u64,
    waited: Duration,
}

impl ResumeRecord {
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
    /// The backoff waited before it.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// The resumes of one body, shared with whoever holds a copy of the log
/// (the body itself is usually consumed by reading it).
#[derive(Debug, Clone, Default)]
pub struct ResumeLog {
    records: Arc<Mutex<Vec<ResumeRecord>>>,
}

impl ResumeLog {
    /// Every resume so far, in order.
    pub fn records(&self) -> Vec<ResumeRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    /// How many resumes were made.
    pub fn len(&self) -> usize {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
    /// `true` if none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn push(&self, record: ResumeRecord) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
    fn update(&self, f: impl FnOnce(&mut ResumeRecord)) {
        if let Some(last) = self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_mut()
        {
            f(last);
        }
    }
}

/// A response body that resumes itself. See the [module docs](self).
///
/// When the first response cannot be resumed
/// ([`not_resumable`](Self::not_resumable) says why), it passes the body
/// through as it is.
pub struct ResumableBody<B, R> {
    inner: Option<Inner<B, R>>,
    plain: Option<Pin<Box<B>>>,
    reason: Option<NotResumable>,
    log: ResumeLog,
}

struct Inner<B, R> {
    resumable: Resumable,
    resumer: R,
    limits: ResumeLimits,
    /// Body bytes passed to the caller, from the first response's start.
    received: u64,
    /// Where the current response's body ends, in the representation
    /// (exclusive), when known.
    end: Option<u64>,
    /// Bytes of the current response still to discard (a `200`'s start).
    skip: u64,
    resumes: u32,
    phase: Phase<B>,
    /// The idle timer, or the backoff before a resume.
    timer: Option<Pin<Box<Sleep>>>,
    /// In the current response, when it is a resume's.
    resumed: bool,
}

enum Phase<B> {
    Reading(Pin<Box<B>>),
    Waiting {
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
                .field("resumes", &inner.resumes),
            None => s.field("not_resumable", &self.reason),
        };
        s.finish_non_exhaustive()
    }
}

impl<B, R> ResumableBody<B, R>
where
    B: Body<Data = Bytes>,
    R: Resume<B>,
{
    /// Wraps the first response to `method`: its body resumes through
    /// `resumer` when the response allows it, and passes through
    /// otherwise.
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
            Err(reason) => ResumableBody {
                inner: None,
                plain: Some(Box::pin(body)),
                reason: Some(reason),
                log: ResumeLog::default(),
            },
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
        let end = match (length, resumable.total) {
            (Some(l), _) => Some(resumable.start.saturating_add(l)),
            (None, total) => total,
        };
        ResumableBody {
            inner: Some(Inner {
                resumable,
                resumer,
                limits,
                received: 0,
                end,
                skip: 0,
                resumes: 0,
                phase: Phase::Reading(Box::pin(body)),
                timer: None,
                resumed: false,
            }),
            plain: None,
            reason: None,
            log: ResumeLog::default(),
        }
    }
}

impl<B, R> ResumableBody<B, R> {
    /// Why the body is passed through as it is, if it is.
    pub fn not_resumable(&self) -> Option<NotResumable> {
        self.reason
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

impl<B, R> Inner<B, R>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    R: Resume<B>,
{
    fn offset(&self) -> u64 {
        self.resumable.start.saturating_add(self.received)
    }

    fn arm_idle(&mut self) {
        if let Some(after) = self.limits.idle_timeout {
            let at = Instant::now() + after;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
    }

    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.timer {
            Some(timer) if self.limits.idle_timeout.is_some() => timer.as_mut().poll(cx).is_ready(),
            _ => false,
        }
    }

    fn fail(&mut self, kind: ResumeErrorKind, cause: Option<BoxError>) -> BoxError {
        self.phase = Phase::Done;
        self.timer = None;
        Box::new(ResumeError::new(kind, self.offset(), self.resumes).with_source(cause))
    }

    /// The current response failed (or ended short): plan the next resume,
    /// or give up.
    fn failed(&mut self, cause: Option<BoxError>, log: &ResumeLog) -> Result<(), BoxError> {
        if self.resumes >= self.limits.max_resumes {
            return Err(self.fail(ResumeErrorKind::LimitExceeded, cause));
        }
        let now = Instant::now();
        let delay = self
            .limits
            .backoff
            .as_mut()
            .map_or(Duration::ZERO, Backoff::next_delay);
        if self.limits.deadline.is_some_and(|d| now + delay >= d) {
            return Err(self.fail(ResumeErrorKind::DeadlineExceeded, cause));
        }
        self.resumes += 1;
        log.push(ResumeRecord {
            offset: self.offset(),
            status: None,
            fetched: 0,
            skipped: 0,
            waited: delay,
        });
        if delay.is_zero() {
            self.send(cause);
        } else {
            self.timer = Some(Box::pin(tokio::time::sleep(delay)));
            self.phase = Phase::Waiting { cause };
        }
        Ok(())
    }

    fn send(&mut self, cause: Option<BoxError>) {
        let request = self.resumable.request(self.received);
        let future = self.resumer.resume(request);
        self.phase = Phase::Requesting { future, cause };
        self.timer = None;
        self.arm_idle();
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
                    self.send(cause);
                }
                Phase::Requesting { future, cause } => {
                    let result = match future.as_mut().poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            if self.idle_expired(cx) {
                                let after = self.limits.idle_timeout.unwrap_or_default();
                                if let Err(e) = self.failed(Some(Box::new(BodyIdle { after })), log)
                                {
                                    return Poll::Ready(Some(Err(e)));
                                }
                                continue;
                            }
                            return Poll::Pending;
                        }
                    };
                    let cause = cause.take();
                    let response = match result {
                        Ok(response) => response,
                        // The resume request itself failed: one more.
                        Err(e) => {
                            if let Err(e) = self.failed(Some(e), log) {
                                return Poll::Ready(Some(Err(e)));
                            }
                            continue;
                        }
                    };
                    let (parts, body) = response.into_parts();
                    log.update(|r| r.status = Some(parts.status));
                    let offset = self.offset();
                    match self
                        .resumable
                        .check_kind(offset, parts.status, &parts.headers)
                    {
                        Ok(continuation) => {
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
                        Err(ResumeErrorKind::UnexpectedStatus(status))
                            if classify_status(
                                &RequestMeta::new(&Method::GET, "", "", "", &parts.headers),
                                status,
                                &parts.headers,
                            ) == Class::Transient =>
                        {
                            drop(body);
                            if let Err(e) = self.failed(cause, log) {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        Err(kind) => return Poll::Ready(Some(Err(self.fail(kind, cause)))),
                    }
                }
                Phase::Reading(body) => {
                    let polled = body.as_mut().poll_frame(cx);
                    match polled {
                        Poll::Pending => {
                            if self.idle_expired(cx) {
                                let after = self.limits.idle_timeout.unwrap_or_default();
                                if let Err(e) = self.failed(Some(Box::new(BodyIdle { after })), log)
                                {
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
                            if let Err(e) = self.failed(Some(e.into()), log) {
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
                                    if let Err(e) = self.failed(Some(Box::new(early)), log) {
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
                        let offset = inner.offset();
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
                Some(end) => SizeHint::with_exact(end.saturating_sub(inner.offset())),
                None => SizeHint::new(),
            },
            None => SizeHint::with_exact(0),
        }
    }
}
