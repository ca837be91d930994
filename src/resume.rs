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
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, DATE, ETAG,
    IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::backoff::Backoff;
use crate::classify::{Class, RequestMeta, classify_status};
use crate::error::BoxError;

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

fn single<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a HeaderValue> {
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

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
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
/// in the representation. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumable {
    validator: Validator,
    /// The first response's first byte, in the representation (0 for a
    /// `200`).
    start: u64,
    /// The representation's whole length, if known.
    total: Option<u64>,
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

    fn check_kind(
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
}

/// A resume that failed: the body ends with this error. Never carries a
/// URL or a header value.
#[derive(Debug)]
pub struct ResumeError {
    kind: ResumeErrorKind,
    offset: u64,
    resumes: u32,
    source: Option<BoxError>,
}

impl ResumeError {
    fn new(kind: ResumeErrorKind, offset: u64, resumes: u32) -> ResumeError {
        ResumeError {
            kind,
            offset,
            resumes,
            source: None,
        }
    }

    fn with_source(mut self, source: Option<BoxError>) -> ResumeError {
        self.source = source;
        self
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
