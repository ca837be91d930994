//! The sans-IO rules of resuming a response body: whether a first
//! response can be resumed ([`Resumable::from_response`]), the headers of a
//! resume ([`ResumeRequest`]) and the checks of its answer
//! ([`Resumable::check`]: [`Continuation`] or a [`ResumeError`] with a
//! stable code). No I/O, no timer, no body: the body that resumes itself is
//! `adapter/resume.rs`'s `ResumableBody`, and these types are public at
//! `http_resilience::resume`, where they are documented.
//!
//! Beside them, in `state.rs`, the engine's [`ResumeState`]: the request's
//! retry state carried past hand-over into a body that resumes under the
//! policy (its limits, its deadline, its budget, its report).

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::header::{
    ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, DATE, ETAG,
    IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::error::BoxError;
pub use crate::report::ResumeRecord;
use crate::report::RetryReport;

mod state;

pub(crate) use state::{Answer, ResumeAdmission, ResumeState};

/// What a resume is validated against: the first response's strong
/// validator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validator {
    /// A strong `ETag` (`"..."`, not `W/"..."`), as the server sent it.
    ETag(HeaderValue),
    /// A `Last-Modified` date that RFC 9110 §8.8.2.2 lets a client treat as
    /// strong: no `ETag` at all, and a `Date` at least one second later.
    LastModified(HeaderValue),
}

impl Validator {
    /// Reads the strong validator of a response, if it has one.
    pub fn of(headers: &HeaderMap) -> Result<Validator, NotResumable> {
        let mut etags = headers.get_all(ETAG).iter();
        if let Some(etag) = etags.next() {
            if etags.next().is_some() {
                return Err(NotResumable::NoValidator);
            }
            return match entity_tag(etag.as_bytes()) {
                Some(Tag::Strong) => Ok(Validator::ETag(etag.clone())),
                Some(Tag::Weak) => Err(NotResumable::WeakValidator),
                // An entity tag, but not one the grammar allows: nothing to
                // compare with confidence.
                None => Err(NotResumable::NoValidator),
            };
        }
        let Some(modified) = single(headers, &LAST_MODIFIED) else {
            return Err(NotResumable::NoValidator);
        };
        let date = single(headers, &DATE).and_then(http_date);
        match (http_date(modified), date) {
            (Some(m), Some(d))
                if d.duration_since(m)
                    .is_ok_and(|gap| gap >= Duration::from_secs(1)) =>
            {
                Ok(Validator::LastModified(modified.clone()))
            }
            // Without a `Date`, or changed within the second it names, a
            // `Last-Modified` is weak.
            (Some(_), _) => Err(NotResumable::WeakValidator),
            (None, _) => Err(NotResumable::NoValidator),
        }
    }

    /// The value to send in `If-Range`.
    pub fn as_header(&self) -> &HeaderValue {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }

    /// Compares a later response's validator with this one: the same
    /// strong `ETag` (byte for byte), or, for a date, no `ETag` and the same
    /// `Last-Modified`. `None` when the response carries none.
    fn matches(&self, headers: &HeaderMap) -> Result<Option<()>, ResumeErrorKind> {
        let mut etags = headers.get_all(ETAG).iter();
        let etag = etags.next();
        if etags.next().is_some() {
            return Err(ResumeErrorKind::ValidatorChanged);
        }
        match (self, etag) {
            (_, Some(tag)) if entity_tag(tag.as_bytes()) == Some(Tag::Weak) => {
                Err(ResumeErrorKind::WeakValidator)
            }
            (Validator::ETag(ours), Some(theirs)) if ours == theirs => Ok(Some(())),
            (Validator::ETag(_), None) => Ok(None),
            (Validator::LastModified(ours), None) => match single(headers, &LAST_MODIFIED) {
                Some(theirs) if theirs == ours => Ok(Some(())),
                Some(_) => Err(ResumeErrorKind::ValidatorChanged),
                None => Ok(None),
            },
            // A different tag, or a tag where there was none.
            (_, Some(_)) => Err(ResumeErrorKind::ValidatorChanged),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Strong,
    Weak,
}

/// RFC 9110 §8.8.3: `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`,
/// `etagc = %x21 / %x23-7E / obs-text`.
fn entity_tag(value: &[u8]) -> Option<Tag> {
    let (tag, kind) = match value.strip_prefix(b"W/") {
        Some(rest) => (rest, Tag::Weak),
        None => (value, Tag::Strong),
    };
    let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    inner
        .iter()
        .all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c) || c >= 0x80)
        .then_some(kind)
}

pub(crate) fn single<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// `1*DIGIT` as a `u64`, nothing else (no sign, no spaces, no overflow).
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    match headers.get_all(CONTENT_LENGTH).iter().count() {
        0 => Ok(None),
        1 => headers
            .get(CONTENT_LENGTH)
            .and_then(|v| digits(v.as_bytes()))
            .map(Some)
            .ok_or(()),
        _ => Err(()),
    }
}

/// A parsed `Content-Range: bytes first-last/complete` (complete may be
/// `*`): `first <= last`, and `last < complete` when it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The first byte's offset.
    pub first: u64,
    /// The last byte's offset (inclusive).
    pub last: u64,
    /// The representation's whole length, when the server says.
    pub complete: Option<u64>,
}

impl ContentRange {
    /// Parses a satisfied byte range (RFC 9110 §14.4). `None` for anything
    /// else: another unit, `bytes */N`, an impossible range, junk.
    ///
    /// ```
    /// use http_resilience::resume::ContentRange;
    /// let r = ContentRange::parse(b"bytes 400-999/1000").unwrap();
    /// assert_eq!((r.first, r.last, r.complete), (400, 999, Some(1000)));
    /// assert!(ContentRange::parse(b"bytes 500-400/1000").is_none());
    /// assert!(ContentRange::parse(b"bytes 0-1000/1000").is_none());
    /// ```
    pub fn parse(value: &[u8]) -> Option<ContentRange> {
        let value = value.trim_ascii();
        let unit = value.get(..6)?;
        if !unit.eq_ignore_ascii_case(b"bytes ") {
            return None;
        }
        let rest = value[6..].trim_ascii_start();
        let slash = rest.iter().position(|&c| c == b'/')?;
        let (range, complete) = (&rest[..slash], &rest[slash + 1..]);
        let dash = range.iter().position(|&c| c == b'-')?;
        let first = digits(&range[..dash])?;
        let last = digits(&range[dash + 1..])?;
        let complete = match complete {
            b"*" => None,
            n => Some(digits(n)?),
        };
        if first > last || complete.is_some_and(|c| last >= c) {
            return None;
        }
        Some(ContentRange {
            first,
            last,
            complete,
        })
    }

    /// The number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a satisfied range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why a response's body cannot be resumed (it is then passed on as it
/// is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotResumable {
    /// Only `GET` responses are resumed (`Range` is defined for `GET`).
    Method,
    /// Neither a `200` nor a `206` that runs to the end of the
    /// representation.
    Status,
    /// No `ETag` nor `Last-Modified` (or one that does not parse, or more
    /// than one).
    NoValidator,
    /// The only validator is weak (`W/"..."`, or a `Last-Modified` without
    /// a `Date` a second later): a range could splice two versions.
    WeakValidator,
    /// No `Accept-Ranges: bytes`.
    NoRanges,
    /// A `Content-Encoding`: the bytes read are not the bytes a range
    /// counts.
    Encoded,
    /// A `206` whose `Content-Range` or length does not parse or agree.
    InvalidRange,
}

impl NotResumable {
    /// A stable snake_case name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            NotResumable::Method => "method",
            NotResumable::Status => "status",
            NotResumable::NoValidator => "no_validator",
            NotResumable::WeakValidator => "weak_validator",
            NotResumable::NoRanges => "no_ranges",
            NotResumable::Encoded => "encoded",
            NotResumable::InvalidRange => "invalid_range",
        }
    }
}

impl fmt::Display for NotResumable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The headers of one resume request: add them to a copy of the original
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    offset: u64,
    range: HeaderValue,
    if_range: HeaderValue,
}

impl ResumeRequest {
    /// The representation offset asked for (the `N` of `bytes=N-`).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// `bytes=N-`.
    pub fn range(&self) -> &HeaderValue {
        &self.range
    }
    /// The validator, for `If-Range`.
    pub fn if_range(&self) -> &HeaderValue {
        &self.if_range
    }
    /// Sets `Range` and `If-Range` in `headers` (replacing any).
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RANGE, self.range.clone());
        headers.insert(IF_RANGE, self.if_range.clone());
    }
}

/// How the stream goes on after a resume response passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Continuation {
    /// A `206` from the asked offset: its body continues the stream.
    Continue,
    /// A `200` with the same validator (the server ignored the range): its
    /// first `n` bytes were already read and are skipped.
    Skip(u64),
}

/// A response body that can be resumed: its validator, and where it lies
/// in the representation. See the [module docs](crate::resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumable {
    validator: Validator,
    /// The first response's first byte, in the representation (0 for a
    /// `200`).
    pub(crate) start: u64,
    /// The representation's whole length, if known (a resumed body learns
    /// it from a `206` when the first response did not say).
    pub(crate) total: Option<u64>,
}

impl Resumable {
    /// Decides from the first response whether its body can be resumed.
    pub fn from_response(
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Resumable, NotResumable> {
        if method != Method::GET {
            return Err(NotResumable::Method);
        }
        if let Some(encoding) = headers.get(CONTENT_ENCODING)
            && !encoding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"identity")
        {
            return Err(NotResumable::Encoded);
        }
        let length = content_length(headers).map_err(|()| NotResumable::InvalidRange)?;
        let (start, total) = match status {
            StatusCode::OK => {
                if !accepts_byte_ranges(headers) {
                    return Err(NotResumable::NoRanges);
                }
                (0, length)
            }
            // A range that the caller asked for: resumable if it runs to
            // the end (the server proved it serves ranges).
            StatusCode::PARTIAL_CONTENT => {
                let range = single(headers, &CONTENT_RANGE)
                    .and_then(|v| ContentRange::parse(v.as_bytes()))
                    .ok_or(NotResumable::InvalidRange)?;
                let Some(complete) = range.complete else {
                    return Err(NotResumable::InvalidRange);
                };
                if range.last + 1 != complete || length.is_some_and(|l| l != range.len()) {
                    return Err(NotResumable::Status);
                }
                if is_multipart(headers) {
                    return Err(NotResumable::Status);
                }
                (range.first, Some(complete))
            }
            _ => return Err(NotResumable::Status),
        };
        let validator = Validator::of(headers)?;
        Ok(Resumable {
            validator,
            start,
            total,
        })
    }

    /// Builds a `Resumable` from what is already known (for example what
    /// an earlier run saved): the validator, where the body to resume
    /// starts in the representation, and the whole length.
    pub fn from_parts(validator: Validator, start: u64, total: Option<u64>) -> Resumable {
        Resumable {
            validator,
            start,
            total,
        }
    }

    /// The validator that resumes are checked against.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The representation's whole length, if known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Where the first response started in the representation (0 unless it
    /// was itself a `206`).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The headers of a resume after `received` bytes of the first
    /// response's body were read: `Range: bytes=N-` (`N` = its start +
    /// `received`) and `If-Range`.
    pub fn request(&self, received: u64) -> ResumeRequest {
        let offset = self.start.saturating_add(received);
        let range = HeaderValue::try_from(format!("bytes={offset}-"))
            .unwrap_or_else(|_| HeaderValue::from_static("bytes=0-"));
        ResumeRequest {
            offset,
            range,
            if_range: self.validator.as_header().clone(),
        }
    }

    /// Checks the response to [`request(received)`](Self::request).
    /// A transient status (`503`, `429`, ...) comes back as
    /// [`ResumeErrorKind::UnexpectedStatus`]: the body may try again.
    pub fn check(
        &self,
        received: u64,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Continuation, ResumeError> {
        let offset = self.start.saturating_add(received);
        self.check_kind(offset, status, headers)
            .map_err(|kind| ResumeError::new(kind, offset, 0))
    }

    pub(crate) fn check_kind(
        &self,
        offset: u64,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Continuation, ResumeErrorKind> {
        if let Some(encoding) = headers.get(CONTENT_ENCODING)
            && !encoding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"identity")
        {
            return Err(ResumeErrorKind::InvalidRange);
        }
        let length = content_length(headers).map_err(|()| ResumeErrorKind::InvalidRange)?;
        match status {
            StatusCode::PARTIAL_CONTENT => {
                if is_multipart(headers) {
                    return Err(ResumeErrorKind::InvalidRange);
                }
                let range = single(headers, &CONTENT_RANGE)
                    .and_then(|v| ContentRange::parse(v.as_bytes()))
                    .ok_or(ResumeErrorKind::InvalidRange)?;
                if length.is_some_and(|l| l != range.len()) {
                    return Err(ResumeErrorKind::InvalidRange);
                }
                if let (Some(ours), Some(theirs)) = (self.total, range.complete)
                    && ours != theirs
                {
                    return Err(ResumeErrorKind::LengthChanged {
                        expected: ours,
                        got: theirs,
                    });
                }
                if self.total.is_some_and(|t| range.last >= t) {
                    return Err(ResumeErrorKind::InvalidRange);
                }
                if range.first != offset {
                    return Err(ResumeErrorKind::WrongStart {
                        expected: offset,
                        got: range.first,
                    });
                }
                // The server applied `If-Range`; a validator it sends must
                // still be ours.
                self.validator.matches(headers)?;
                Ok(Continuation::Continue)
            }
            StatusCode::OK => {
                // The range was ignored, or `If-Range` failed: go on only
                // if this is provably the same representation.
                match self.validator.matches(headers)? {
                    Some(()) => {}
                    None => return Err(ResumeErrorKind::ValidatorChanged),
                }
                if let (Some(ours), Some(theirs)) = (self.total, length)
                    && ours != theirs
                {
                    return Err(ResumeErrorKind::LengthChanged {
                        expected: ours,
                        got: theirs,
                    });
                }
                Ok(Continuation::Skip(offset))
            }
            other => Err(ResumeErrorKind::UnexpectedStatus(other)),
        }
    }
}

fn accepts_byte_ranges(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_RANGES).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|unit| unit.trim_ascii().eq_ignore_ascii_case(b"bytes"))
    })
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii_start()
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"multipart/"))
    })
}

/// What went wrong with a resume. See [`ResumeError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResumeErrorKind {
    /// The representation changed (another `ETag` or `Last-Modified`), or
    /// a `200` could not be shown to be the same one.
    ValidatorChanged,
    /// The resume's response carries a weak `ETag`.
    WeakValidator,
    /// A `206` that does not start where the caller stopped reading.
    WrongStart {
        /// The offset asked for.
        expected: u64,
        /// The offset the server sent.
        got: u64,
    },
    /// The whole length changed.
    LengthChanged {
        /// The length known before.
        expected: u64,
        /// The length the server now says.
        got: u64,
    },
    /// A `206` without a usable `Content-Range` (missing, unparseable,
    /// impossible, beyond the length, multipart, disagreeing with its
    /// `Content-Length`), or an encoded one.
    InvalidRange,
    /// A status that is neither `200` nor `206` (after transient ones ran
    /// out of resumes).
    UnexpectedStatus(StatusCode),
    /// The server sent more bytes than the length it announced.
    TooLong,
    /// The body failed again with no resume left.
    LimitExceeded,
    /// The body failed after the deadline, or the next resume would
    /// cross it.
    DeadlineExceeded,
    /// The endpoint's [retry budget](crate::RetryBudget) could not pay for
    /// the resume (a resume costs what a retry does).
    BudgetExhausted,
    /// The endpoint's [circuit breaker](crate::CircuitBreaker) is open: no
    /// resume is sent to it.
    CircuitOpen,
    /// The local [rate limit](crate::RateLimit) would have made the resume
    /// wait longer than its `max_wait`.
    RateLimited,
    /// The server asked for a wait above `max_retry_after` before the
    /// resume (a `Retry-After` on a `503` to the range request, or a quota
    /// reset).
    RetryAfterTooLong,
}

/// A resume that failed: the body ends with this error. Never carries a
/// URL or a header value.
#[derive(Debug)]
pub struct ResumeError {
    kind: ResumeErrorKind,
    offset: u64,
    resumes: u32,
    source: Option<BoxError>,
    /// The request's report, when the body resumed under a policy.
    report: Option<Box<RetryReport>>,
}

impl ResumeError {
    pub(crate) fn new(kind: ResumeErrorKind, offset: u64, resumes: u32) -> ResumeError {
        ResumeError {
            kind,
            offset,
            resumes,
            source: None,
            report: None,
        }
    }

    pub(crate) fn with_source(mut self, source: Option<BoxError>) -> ResumeError {
        self.source = source;
        self
    }

    pub(crate) fn with_report(mut self, report: Option<RetryReport>) -> ResumeError {
        self.report = report.map(Box::new);
        self
    }

    /// The request's whole report, when the body resumed under a policy
    /// ([`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies)): the
    /// attempts of the first request, then one attempt per resume request,
    /// and the resumes themselves ([`RetryReport::resumes`]). `None` for a
    /// body resumed under [`ResumeLimits`](crate::resume::ResumeLimits).
    pub fn report(&self) -> Option<&RetryReport> {
        self.report.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> ResumeErrorKind {
        self.kind
    }

    /// The representation offset where the stream stopped (what the caller
    /// had read, from the start of the representation).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many resumes had been made.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// A stable, machine-readable code:
    ///
    /// | kind | code |
    /// |---|---|
    /// | `ValidatorChanged` | `RESUME_VALIDATOR_CHANGED` |
    /// | `WeakValidator` | `RESUME_WEAK_VALIDATOR` |
    /// | `WrongStart` | `RESUME_WRONG_START` |
    /// | `LengthChanged` | `RESUME_LENGTH_CHANGED` |
    /// | `InvalidRange` | `RESUME_INVALID_RANGE` |
    /// | `UnexpectedStatus` | `RESUME_UNEXPECTED_STATUS` |
    /// | `TooLong` | `RESUME_BODY_TOO_LONG` |
    /// | `LimitExceeded` | `RESUME_LIMIT_EXCEEDED` |
    /// | `DeadlineExceeded` | `RESUME_DEADLINE_EXCEEDED` |
    /// | `BudgetExhausted` | `RESUME_BUDGET_EXHAUSTED` |
    /// | `CircuitOpen` | `RESUME_CIRCUIT_OPEN` |
    /// | `RateLimited` | `RESUME_RATE_LIMITED` |
    /// | `RetryAfterTooLong` | `RESUME_RETRY_AFTER_TOO_LONG` |
    pub fn code(&self) -> &'static str {
        match self.kind {
            ResumeErrorKind::ValidatorChanged => "RESUME_VALIDATOR_CHANGED",
            ResumeErrorKind::WeakValidator => "RESUME_WEAK_VALIDATOR",
            ResumeErrorKind::WrongStart { .. } => "RESUME_WRONG_START",
            ResumeErrorKind::LengthChanged { .. } => "RESUME_LENGTH_CHANGED",
            ResumeErrorKind::InvalidRange => "RESUME_INVALID_RANGE",
            ResumeErrorKind::UnexpectedStatus(_) => "RESUME_UNEXPECTED_STATUS",
            ResumeErrorKind::TooLong => "RESUME_BODY_TOO_LONG",
            ResumeErrorKind::LimitExceeded => "RESUME_LIMIT_EXCEEDED",
            ResumeErrorKind::DeadlineExceeded => "RESUME_DEADLINE_EXCEEDED",
            ResumeErrorKind::BudgetExhausted => "RESUME_BUDGET_EXHAUSTED",
            ResumeErrorKind::CircuitOpen => "RESUME_CIRCUIT_OPEN",
            ResumeErrorKind::RateLimited => "RESUME_RATE_LIMITED",
            ResumeErrorKind::RetryAfterTooLong => "RESUME_RETRY_AFTER_TOO_LONG",
        }
    }
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match self.kind {
            ResumeErrorKind::ValidatorChanged => write!(
                f,
                "cannot resume at byte {at}: the resource is no longer the same (validator changed)"
            ),
            ResumeErrorKind::WeakValidator => {
                write!(
                    f,
                    "cannot resume at byte {at}: the server sent a weak validator"
                )
            }
            ResumeErrorKind::WrongStart { expected, got } => write!(
                f,
                "cannot resume at byte {expected}: the server's range starts at {got}"
            ),
            ResumeErrorKind::LengthChanged { expected, got } => write!(
                f,
                "cannot resume at byte {at}: the length changed from {expected} to {got}"
            ),
            ResumeErrorKind::InvalidRange => write!(
                f,
                "cannot resume at byte {at}: the server's Content-Range is missing or impossible"
            ),
            ResumeErrorKind::UnexpectedStatus(s) => {
                write!(
                    f,
                    "cannot resume at byte {at}: the server answered {}",
                    s.as_u16()
                )
            }
            ResumeErrorKind::TooLong => {
                write!(f, "the body went on past its announced length at byte {at}")
            }
            ResumeErrorKind::LimitExceeded => write!(
                f,
                "the body failed at byte {at} after {} resumes",
                self.resumes
            ),
            ResumeErrorKind::DeadlineExceeded => {
                write!(
                    f,
                    "the body failed at byte {at} and the deadline leaves no time to resume"
                )
            }
            ResumeErrorKind::BudgetExhausted => write!(
                f,
                "the body failed at byte {at} and the retry budget cannot pay for a resume"
            ),
            ResumeErrorKind::CircuitOpen => write!(
                f,
                "the body failed at byte {at} and the circuit breaker is open"
            ),
            ResumeErrorKind::RateLimited => write!(
                f,
                "the body failed at byte {at} and the local rate limit's next turn is beyond max_wait"
            ),
            ResumeErrorKind::RetryAfterTooLong => write!(
                f,
                "the body failed at byte {at} and the server asked to wait longer than the policy allows"
            ),
        }
    }
}

impl StdError for ResumeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The resumes of one body, shared with whoever holds a copy of the log
/// (the body itself is usually consumed by reading it). A response whose
/// body may resume carries one in its extensions.
#[derive(Debug, Clone, Default)]
pub struct ResumeLog {
    shared: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    records: Vec<ResumeRecord>,
    /// The request's report as it stands, under a policy.
    report: Option<RetryReport>,
}

impl ResumeLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Every resume so far, in order.
    pub fn records(&self) -> Vec<ResumeRecord> {
        self.lock().records.clone()
    }
    /// How many resumes were made.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }
    /// `true` if none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The request's whole report as it stands, when the body resumes under
    /// a policy ([`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies)):
    /// the first request's attempts, one attempt per resume request, and
    /// the resumes ([`RetryReport::resumes`]). `None` for a body resumed
    /// under [`ResumeLimits`](crate::resume::ResumeLimits).
    pub fn report(&self) -> Option<RetryReport> {
        let log = self.lock();
        let mut report = log.report.clone()?;
        report.set_resumes(log.records.clone());
        Some(report)
    }
    pub(crate) fn push(&self, record: ResumeRecord) {
        self.lock().records.push(record);
    }
    pub(crate) fn update(&self, f: impl FnOnce(&mut ResumeRecord)) {
        if let Some(last) = self.lock().records.last_mut() {
            f(last);
        }
    }
    pub(crate) fn set_report(&self, report: &RetryReport) {
        self.lock().report = Some(report.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    fn first(pairs: &[(&'static str, &str)]) -> Result<Resumable, NotResumable> {
        Resumable::from_response(&Method::GET, StatusCode::OK, &headers(pairs))
    }

    const OK: [(&str, &str); 3] = [
        ("etag", "\"abc\""),
        ("accept-ranges", "bytes"),
        ("content-length", "100"),
    ];

    #[test]
    fn a_strong_etag_and_byte_ranges_make_a_body_resumable() {
        let r = first(&OK).unwrap();
        assert_eq!(r.total(), Some(100));
        assert_eq!(
            r.validator(),
            &Validator::ETag(HeaderValue::from_static("\"abc\""))
        );
        let req = r.request(40);
        assert_eq!(req.offset(), 40);
        assert_eq!(req.range(), "bytes=40-");
        let mut h = HeaderMap::new();
        req.apply(&mut h);
        assert_eq!(h["range"], "bytes=40-");
        assert_eq!(h["if-range"], "\"abc\"");
    }

    #[test]
    fn what_is_not_resumable_says_why() {
        let cases: &[(&[(&'static str, &str)], NotResumable)] = &[
            (&[("accept-ranges", "bytes")], NotResumable::NoValidator),
            (
                &[("etag", "W/\"abc\""), ("accept-ranges", "bytes")],
                NotResumable::WeakValidator,
            ),
            (
                &[("etag", "abc"), ("accept-ranges", "bytes")],
                NotResumable::NoValidator,
            ),
            (
                &[
                    ("etag", "\"a\""),
                    ("etag", "\"b\""),
                    ("accept-ranges", "bytes"),
                ],
                NotResumable::NoValidator,
            ),
            (&[("etag", "\"abc\"")], NotResumable::NoRanges),
            (
                &[("etag", "\"abc\""), ("accept-ranges", "none")],
                NotResumable::NoRanges,
            ),
            (
                &[
                    ("etag", "\"abc\""),
                    ("accept-ranges", "bytes"),
                    ("content-encoding", "gzip"),
                ],
                NotResumable::Encoded,
            ),
            (
                &[
                    ("etag", "\"abc\""),
                    ("accept-ranges", "bytes"),
                    ("content-length", "1x"),
                ],
                NotResumable::InvalidRange,
            ),
        ];
        for (pairs, why) in cases {
            assert_eq!(first(pairs), Err(*why), "{pairs:?}");
        }
        let post = Resumable::from_response(&Method::POST, StatusCode::OK, &headers(&OK));
        assert_eq!(post, Err(NotResumable::Method));
        let created = Resumable::from_response(&Method::GET, StatusCode::CREATED, &headers(&OK));
        assert_eq!(created, Err(NotResumable::Status));
    }

    #[test]
    fn last_modified_is_strong_only_a_second_before_date_and_without_etag() {
        let lm = "Tue, 14 Nov 2023 22:13:20 GMT";
        let strong = first(&[
            ("last-modified", lm),
            ("date", "Tue, 14 Nov 2023 22:13:21 GMT"),
            ("accept-ranges", "bytes"),
        ])
        .unwrap();
        assert_eq!(strong.request(5).if_range(), lm);
        let same_second = first(&[
            ("last-modified", lm),
            ("date", lm),
            ("accept-ranges", "bytes"),
        ]);
        assert_eq!(same_second, Err(NotResumable::WeakValidator));
        let no_date = first(&[("last-modified", lm), ("accept-ranges", "bytes")]);
        assert_eq!(no_date, Err(NotResumable::WeakValidator));
        // A weak ETag rules the date out too (RFC 9110 §13.1.5).
        let weak_tag = first(&[
            ("etag", "W/\"x\""),
            ("last-modified", lm),
            ("date", "Tue, 14 Nov 2023 22:14:00 GMT"),
            ("accept-ranges", "bytes"),
        ]);
        assert_eq!(weak_tag, Err(NotResumable::WeakValidator));
    }

    #[test]
    fn an_original_206_to_the_end_is_resumable_from_its_start() {
        let h = headers(&[
            ("etag", "\"abc\""),
            ("content-range", "bytes 60-99/100"),
            ("content-length", "40"),
        ]);
        let r = Resumable::from_response(&Method::GET, StatusCode::PARTIAL_CONTENT, &h).unwrap();
        assert_eq!((r.start(), r.total()), (60, Some(100)));
        assert_eq!(r.request(10).range(), "bytes=70-");
        let short = headers(&[("etag", "\"abc\""), ("content-range", "bytes 60-89/100")]);
        let r = Resumable::from_response(&Method::GET, StatusCode::PARTIAL_CONTENT, &short);
        assert_eq!(r, Err(NotResumable::Status));
    }

    fn check(status: u16, pairs: &[(&'static str, &str)]) -> Result<Continuation, &'static str> {
        first(&OK)
            .unwrap()
            .check(40, StatusCode::from_u16(status).unwrap(), &headers(pairs))
            .map_err(|e| e.code())
    }

    type Case = (
        u16,
        &'static [(&'static str, &'static str)],
        Result<Continuation, &'static str>,
    );

    #[test]
    fn resume_responses_are_checked() {
        use Continuation::*;
        let cases: &[Case] = &[
            (
                206,
                &[("content-range", "bytes 40-99/100"), ("etag", "\"abc\"")],
                Ok(Continue),
            ),
            (206, &[("content-range", "bytes 40-99/100")], Ok(Continue)),
            (206, &[("content-range", "bytes 40-99/*")], Ok(Continue)),
            (
                206,
                &[
                    ("content-range", "BYTES 40-99/100"),
                    ("content-length", "60"),
                ],
                Ok(Continue),
            ),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-length", "59"),
                ],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes 0-99/100")],
                Err("RESUME_WRONG_START"),
            ),
            (
                206,
                &[("content-range", "bytes 41-99/100")],
                Err("RESUME_WRONG_START"),
            ),
            (
                206,
                &[("content-range", "bytes 40-99/120")],
                Err("RESUME_LENGTH_CHANGED"),
            ),
            (
                206,
                &[("content-range", "bytes 40-199/*")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes 40-30/100")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes 40-100/100")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes 40-99")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes -40-99/100")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes 18446744073709551616-99/100")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes */100")],
                Err("RESUME_INVALID_RANGE"),
            ),
            (206, &[], Err("RESUME_INVALID_RANGE")),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-type", "multipart/byteranges; boundary=x"),
                ],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                206,
                &[("content-range", "bytes 40-99/100"), ("etag", "\"new\"")],
                Err("RESUME_VALIDATOR_CHANGED"),
            ),
            (
                206,
                &[("content-range", "bytes 40-99/100"), ("etag", "W/\"abc\"")],
                Err("RESUME_WEAK_VALIDATOR"),
            ),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-encoding", "gzip"),
                ],
                Err("RESUME_INVALID_RANGE"),
            ),
            (
                200,
                &[("etag", "\"abc\""), ("content-length", "100")],
                Ok(Skip(40)),
            ),
            (200, &[("etag", "\"abc\"")], Ok(Skip(40))),
            (
                200,
                &[("etag", "\"new\""), ("content-length", "100")],
                Err("RESUME_VALIDATOR_CHANGED"),
            ),
            (
                200,
                &[("content-length", "100")],
                Err("RESUME_VALIDATOR_CHANGED"),
            ),
            (200, &[("etag", "W/\"abc\"")], Err("RESUME_WEAK_VALIDATOR")),
            (
                200,
                &[("etag", "\"abc\""), ("content-length", "101")],
                Err("RESUME_LENGTH_CHANGED"),
            ),
            (
                416,
                &[("content-range", "bytes */100")],
                Err("RESUME_UNEXPECTED_STATUS"),
            ),
            (503, &[], Err("RESUME_UNEXPECTED_STATUS")),
        ];
        for (status, pairs, want) in cases {
            assert_eq!(&check(*status, pairs), want, "{status} {pairs:?}");
        }
    }

    #[test]
    fn a_date_validator_is_compared_as_a_date() {
        let lm = "Tue, 14 Nov 2023 22:13:20 GMT";
        let r = first(&[
            ("last-modified", lm),
            ("date", "Tue, 14 Nov 2023 22:14:00 GMT"),
            ("accept-ranges", "bytes"),
        ])
        .unwrap();
        let ok = headers(&[("content-range", "bytes 5-9/10"), ("last-modified", lm)]);
        assert_eq!(
            r.check(5, StatusCode::PARTIAL_CONTENT, &ok).unwrap(),
            Continuation::Continue
        );
        let changed = headers(&[
            ("content-range", "bytes 5-9/10"),
            ("last-modified", "Wed, 15 Nov 2023 00:00:00 GMT"),
        ]);
        assert_eq!(
            r.check(5, StatusCode::PARTIAL_CONTENT, &changed)
                .unwrap_err()
                .code(),
            "RESUME_VALIDATOR_CHANGED"
        );
        let tagged = headers(&[("content-range", "bytes 5-9/10"), ("etag", "\"x\"")]);
        assert_eq!(
            r.check(5, StatusCode::PARTIAL_CONTENT, &tagged)
                .unwrap_err()
                .code(),
            "RESUME_VALIDATOR_CHANGED"
        );
        let full_same = headers(&[("last-modified", lm)]);
        assert_eq!(
            r.check(5, StatusCode::OK, &full_same).unwrap(),
            Continuation::Skip(5)
        );
    }

    #[test]
    fn errors_never_print_header_values() {
        let e = first(&OK)
            .unwrap()
            .check(40, StatusCode::OK, &headers(&[("etag", "\"secret-tag\"")]))
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert_eq!(e.offset(), 40);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// `ContentRange::parse` never panics, and what it accepts is a
            /// possible range that prints back the same.
            #[test]
            fn content_range_parses_only_possible_ranges(text in "(?i:bytes) {0,2}[0-9*-]{0,8}/?[0-9*]{0,4}", raw in proptest::collection::vec(any::<u8>(), 0..24)) {
                for input in [text.as_bytes(), raw.as_slice()] {
                    if let Some(r) = ContentRange::parse(input) {
                        prop_assert!(r.first <= r.last);
                        if let Some(c) = r.complete { prop_assert!(r.last < c); }
                    }
                }
            }

            /// Whatever the server's `Content-Range`, a `206` continues only
            /// when it starts at the offset asked for and fits the length.
            #[test]
            fn a_206_continues_only_at_the_offset(first in 0u64..120, last in 0u64..120, complete in prop_oneof![Just(None), (0u64..130).prop_map(Some)], received in 0u64..100) {
                let r = Resumable::from_response(&Method::GET, StatusCode::OK, &headers(&OK)).unwrap();
                let value = format!("bytes {first}-{last}/{}", complete.map_or("*".to_string(), |c| c.to_string()));
                let h = headers(&[("content-range", value.as_str())]);
                let result = r.check(received, StatusCode::PARTIAL_CONTENT, &h);
                let possible = first <= last && complete.is_none_or(|c| last < c);
                let fits = possible && last < 100 && complete.is_none_or(|c| c == 100) && first == received;
                prop_assert_eq!(result.is_ok(), fits, "{} at {}", value, received);
            }
        }
    }
}
