//! Serialisable records (feature `serde`): a [`RetryReport`], its
//! [`AttemptRecord`]s and an [`Error`] as JSON, in a documented, stable
//! shape that a service can store: a per-attempt history with times,
//! classes, failure kinds, statuses and waits, and the error's stable
//! [`code`](Error::code).
//!
//! [`RetryReport`], [`AttemptRecord`] and [`Error`] implement
//! `serde::Serialize` through the owned records here ([`ReportRecord`],
//! [`AttemptEntry`], [`ErrorRecord`]), which also deserialize, so a stored
//! record can be read back.
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{Outcome, RequestMeta, RetryPolicy, RetryState, Jitter};
//! use http_resilience::record::{ReportRecord, WallAnchor};
//!
//! // A report, as the engine makes it: 503, then 200.
//! let policy = RetryPolicy::builder().jitter(Jitter::None).build()?;
//! let headers = http::HeaderMap::new();
//! let meta = RequestMeta::new(&http::Method::GET, "https", "api.example.com", "/", &headers);
//! let t0 = std::time::Instant::now();
//! let mut state = RetryState::new(&policy, &meta, t0);
//! state.admit(&meta, t0);
//! state.decide(&meta, &Outcome::response(http::StatusCode::SERVICE_UNAVAILABLE, &headers), t0);
//! let t1 = t0 + Duration::from_millis(500);
//! state.admit(&meta, t1);
//! state.decide(&meta, &Outcome::response(http::StatusCode::OK, &headers), t1);
//!
//! // The wall clock read when the first attempt failed: 2023-11-14T22:13:20Z.
//! let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let anchor = WallAnchor::new(wall, Duration::ZERO);
//! let json = serde_json::to_value(ReportRecord::with_anchor(state.report(), Some(anchor)))?;
//! assert_eq!(json["attempts"], 2);
//! assert_eq!(json["stop_reason"], "success");
//! assert_eq!(json["history"][0]["status"], 503);
//! assert_eq!(json["history"][0]["delay_ms"], 500.0);
//! assert_eq!(json["history"][0]["delay_source"], "backoff");
//! assert_eq!(json["history"][1]["at"], "2023-11-14T22:13:20.500Z");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The shape
//!
//! Every key is always present (`null` when it has no value), so that a
//! log store sees the same columns for every record. Durations are
//! milliseconds (`_ms`, fractional: jitter has nanoseconds), times are RFC
//! 3339 in UTC with milliseconds, names are the stable snake_case names of
//! the crate's enums ([`Class::as_str`](crate::classify::Class::as_str),
//! [`FailureKind::as_str`](crate::classify::FailureKind::as_str),
//! [`DelaySource::as_str`], [`StopReason::as_str`],
//! [`ThrottleReason::as_str`](crate::report::ThrottleReason::as_str)). A change to
//! this shape is a CHANGELOG entry.
//!
//! An error ([`ErrorRecord`]):
//!
//! ```json
//! {
//!   "code": "MAX_RETRIES_EXCEEDED",
//!   "message": "gave up after 2 retries; last status 503 Service Unavailable (3 attempts [...])",
//!   "url": "http://127.0.0.1:8080/v1/items",
//!   "status": 503,
//!   "retry_in_ms": null,
//!   "report": { "...": "a report, below" }
//! }
//! ```
//!
//! A report ([`ReportRecord`]):
//!
//! ```json
//! {
//!   "attempts": 3,
//!   "retries": 2,
//!   "stop_reason": "max_retries",
//!   "stop_wait_ms": null,
//!   "total_backoff_ms": 300.0,
//!   "total_throttled_ms": 0.0,
//!   "endpoint": null,
//!   "history": [
//!     { "at": "2023-11-14T22:13:20.000Z", "elapsed_ms": 0.0, "class": "transient",
//!       "status": 503, "failure": null, "delay_ms": 100.0, "delay_source": "backoff" }
//!   ],
//!   "throttles": [
//!     { "reason": "server_quota", "waited_ms": 2000.0, "before_attempt": 2 }
//!   ]
//! }
//! ```
//!
//! | key | meaning |
//! |---|---|
//! | `code` | [`Error::code`]: `MAX_RETRIES_EXCEEDED`, `DEADLINE_EXCEEDED`, ... |
//! | `message` | the error's text ([`Display`](std::fmt::Display)): no header, no user info, no query string |
//! | `url` | [`Error::url`]: scheme, host, port and path (the path left out under `hide_paths`), never user info or query |
//! | `status` | the last response's status, if the last attempt got one |
//! | `retry_in_ms` | [`Error::retry_in`] |
//! | `attempts`, `retries` | attempts made, the first included; retries made |
//! | `stop_reason` | why it stopped ([`StopReason::as_str`]); `null` while running |
//! | `stop_wait_ms` | the wait a stop reason carries: the server's hint (`retry_after_too_long`), the breaker's `retry_in` (`circuit_open`), the turn's wait (`rate_limited_locally`) |
//! | `total_backoff_ms`, `total_throttled_ms` | the sums of the waits between attempts and before them |
//! | `endpoint` | [`RetryReport::endpoint`]: `host:port` whose load protection acted |
//! | `history[].at` | when the attempt's outcome arrived, by the policy's [`WallClock`](crate::retry_after::WallClock) |
//! | `history[].elapsed_ms` | from the start of the first attempt to the end of this one |
//! | `history[].class`, `status`, `failure` | the attempt's class, its response status or its transport failure kind |
//! | `history[].delay_ms`, `delay_source` | the wait chosen after it and where it came from, if it was retried |
//! | `throttles[]` | [`RetryReport::throttles`]: reason, wait, and the attempt (1 for the first) that waited |
//! | `history[].sent_ms`, `hedge`, `cancelled` | a hedged request's attempts only: when it was sent, whether a hedge, whether cancelled because another won (left out otherwise) |
//! | `winner` | a hedged request only: the index in `history` of the attempt handed over |
//!
//! # Times
//!
//! An attempt's `at` is worked out from a [`WallAnchor`]: one reading of
//! the policy's wall clock at a known point of the request, from which
//! each attempt's time follows by the monotonic clock (a wall clock that
//! jumps cannot reorder the history). Without an anchor, `at` is `null`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::report::{AttemptRecord, RetryReport, StopReason, Throttle};
#[cfg(doc)]
use crate::retry_after::DelaySource;

pub use crate::report::WallAnchor;

/// Fractional milliseconds, as the records write durations.
fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

/// RFC 3339, UTC, milliseconds: `2023-11-14T22:13:20.005Z`. `None` for a
/// time outside what RFC 3339 can write (before year 0 or after 9999).
fn rfc3339(time: SystemTime) -> Option<String> {
    let ts = jiff::Timestamp::try_from(time).ok()?;
    Some(format!("{ts:.3}"))
}

/// One attempt, as JSON (see the [module docs](self#the-shape)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptEntry {
    /// When its outcome arrived (RFC 3339), if the wall clock is known.
    pub at: Option<String>,
    /// From the start of the first attempt to the end of this one.
    pub elapsed_ms: f64,
    /// `success`, `transient` or `permanent`.
    pub class: String,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    /// The transport failure's kind, if no response arrived.
    pub failure: Option<String>,
    /// The wait chosen after it, if it was retried.
    pub delay_ms: Option<f64>,
    /// Where that wait came from.
    pub delay_source: Option<String>,
    /// When it was sent, from the start of the first attempt: known for
    /// the attempts of a hedged request (left out otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<f64>,
    /// A hedge: sent while an earlier attempt was in flight (left out when
    /// `false`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub hedge: bool,
    /// Cancelled because another attempt won (left out when `false`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelled: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AttemptEntry {
    /// The entry of `record`; `anchor` gives its time.
    pub fn with_anchor(record: &AttemptRecord, anchor: Option<WallAnchor>) -> AttemptEntry {
        AttemptEntry {
            at: anchor.and_then(|a| rfc3339(a.at(record.elapsed()))),
            elapsed_ms: ms(record.elapsed()),
            class: record.class().as_str().to_owned(),
            status: record.status().map(|s| s.as_u16()),
            failure: record.failure().map(|k| k.as_str().to_owned()),
            delay_ms: record.delay().map(ms),
            delay_source: record.delay_source().map(|s| s.as_str().to_owned()),
            sent_ms: record.sent_at().map(ms),
            hedge: record.is_hedge(),
            cancelled: record.is_cancelled(),
        }
    }
}

/// A wait before an attempt, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThrottleEntry {
    /// `local_rate_limit` or `server_quota`.
    pub reason: String,
    /// How long it waited.
    pub waited_ms: f64,
    /// The attempt that waited (1 for the first).
    pub before_attempt: u32,
}

impl From<&Throttle> for ThrottleEntry {
    fn from(t: &Throttle) -> ThrottleEntry {
        ThrottleEntry {
            reason: t.reason().as_str().to_owned(),
            waited_ms: ms(t.waited()),
            before_attempt: t.before_attempt(),
        }
    }
}

/// A [`RetryReport`] as JSON (see the [module docs](self#the-shape)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReportRecord {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Retries made.
    pub retries: u32,
    /// Why it stopped ([`StopReason::as_str`]), once it has.
    pub stop_reason: Option<String>,
    /// The wait the stop reason carries, if any.
    pub stop_wait_ms: Option<f64>,
    /// The sum of the waits between attempts.
    pub total_backoff_ms: f64,
    /// The sum of the waits that load protection imposed.
    pub total_throttled_ms: f64,
    /// The endpoint whose load protection acted, if one did.
    pub endpoint: Option<String>,
    /// Every attempt, in order.
    pub history: Vec<AttemptEntry>,
    /// Every wait before an attempt, in order.
    pub throttles: Vec<ThrottleEntry>,
    /// In a hedged request, the index in `history` of the attempt whose
    /// response was handed over (left out otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<usize>,
}

/// The wait a stop reason carries.
fn stop_wait(reason: StopReason) -> Option<Duration> {
    match reason {
        StopReason::RetryAfterTooLong { hint } => Some(hint),
        StopReason::CircuitOpen { retry_in } => Some(retry_in),
        StopReason::RateLimitedLocally { wait } => Some(wait),
        _ => None,
    }
}

impl ReportRecord {
    /// The record of `report`; `anchor` gives each attempt's time.
    pub fn with_anchor(report: &RetryReport, anchor: Option<WallAnchor>) -> ReportRecord {
        ReportRecord {
            attempts: report.attempts(),
            retries: report.retries(),
            stop_reason: report.stop_reason().map(|r| r.as_str().to_owned()),
            stop_wait_ms: report.stop_reason().and_then(stop_wait).map(ms),
            total_backoff_ms: ms(report.total_backoff()),
            total_throttled_ms: ms(report.total_throttled()),
            endpoint: report.endpoint().map(str::to_owned),
            history: report
                .history()
                .iter()
                .map(|r| AttemptEntry::with_anchor(r, anchor))
                .collect(),
            throttles: report.throttles().iter().map(ThrottleEntry::from).collect(),
            winner: report.winner(),
        }
    }
}

/// An [`Error`] as JSON (see the [module docs](self#the-shape)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorRecord {
    /// [`Error::code`].
    pub code: String,
    /// The error's text.
    pub message: String,
    /// [`Error::url`], redacted.
    pub url: Option<String>,
    /// The last response's status, if any.
    pub status: Option<u16>,
    /// [`Error::retry_in`].
    pub retry_in_ms: Option<f64>,
    /// The report of every attempt.
    pub report: ReportRecord,
}

impl ErrorRecord {
    /// The record of `error`; `anchor` gives each attempt's time.
    pub fn with_anchor(error: &Error, anchor: Option<WallAnchor>) -> ErrorRecord {
        ErrorRecord {
            code: error.code().to_owned(),
            message: error.to_string(),
            url: error.url().map(str::to_owned),
            status: error.status().map(|s| s.as_u16()),
            retry_in_ms: error.retry_in().map(ms),
            report: ReportRecord::with_anchor(error.report(), anchor),
        }
    }
}

/// The report's record, each attempt dated by the report's own
/// [anchor](RetryReport::wall_anchor).
impl From<&RetryReport> for ReportRecord {
    fn from(report: &RetryReport) -> ReportRecord {
        ReportRecord::with_anchor(report, report.wall_anchor())
    }
}

/// The error's record, each attempt dated by its report's own
/// [anchor](RetryReport::wall_anchor).
impl From<&Error> for ErrorRecord {
    fn from(error: &Error) -> ErrorRecord {
        ErrorRecord::with_anchor(error, error.report().wall_anchor())
    }
}

/// As a [`ReportRecord`].
impl Serialize for RetryReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ReportRecord::from(self).serialize(serializer)
    }
}

/// As an [`AttemptEntry`], with no time (an attempt alone does not know
/// its report's anchor: serialize the report for the times).
impl Serialize for AttemptRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AttemptEntry::with_anchor(self, None).serialize(serializer)
    }
}

/// As an [`ErrorRecord`].
impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ErrorRecord::from(self).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, UNIX_EPOCH};

    use http::{HeaderMap, Method, StatusCode};

    use super::*;
    use crate::backoff::Jitter;
    use crate::classify::{FailureKind, Outcome, RequestMeta};
    use crate::engine::{Decision, RetryState};
    use crate::error::Last;
    use crate::policy::RetryPolicy;

    #[test]
    fn anchor_arithmetic_saturates() {
        let wall = UNIX_EPOCH + Duration::from_secs(10);
        let a = WallAnchor::new(wall, Duration::from_secs(3));
        assert_eq!(a.at(Duration::from_secs(5)), wall + Duration::from_secs(2));
        assert_eq!(a.at(Duration::from_secs(1)), wall - Duration::from_secs(2));
        // An impossible reading (before the epoch is fine; far beyond, the
        // clock's limit) gives the anchor itself rather than a panic.
        let far = WallAnchor::new(wall, Duration::ZERO);
        assert_eq!(far.at(Duration::MAX), wall);
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(5)).unwrap(),
            "1970-01-01T00:00:00.005Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 86400)),
            None
        );
    }

    #[test]
    fn an_error_record_keeps_every_attempt() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = RetryPolicy::builder()
            .wall_clock(move || wall)
            .initial_backoff(Duration::from_millis(5))
            .jitter(Jitter::None)
            .max_retries(2)
            .build()
            .unwrap();
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/p", &headers);
        let t0 = Instant::now();
        let mut now = t0;
        let mut state = RetryState::new(&p, &meta, now);
        let err = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let outcomes = [
            Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Outcome::Error {
                kind: FailureKind::ConnectionReset,
                error: &err,
            },
            Outcome::response(StatusCode::BAD_GATEWAY, &headers),
        ];
        let mut last = None;
        for o in &outcomes {
            state.admit(&meta, now);
            match state.decide(&meta, o, now) {
                Decision::Retry { delay, .. } => now += delay + Duration::from_millis(1),
                d => last = Some(d),
            }
        }
        let Some(Decision::Fail(reason)) = last else {
            panic!("{last:?}")
        };
        let error = Error::from_stop(
            reason,
            state.take_report(),
            Last::Response {
                status: StatusCode::BAD_GATEWAY,
                headers: HeaderMap::new(),
                response: (),
            },
        );
        // Anchored by the engine when the first attempt failed, at t0.
        assert_eq!(
            error.report().wall_anchor(),
            Some(WallAnchor::new(wall, Duration::ZERO))
        );
        let record = ErrorRecord::from(&error);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["code"], "MAX_RETRIES_EXCEEDED");
        assert_eq!(json["status"], 502);
        let history = json["report"]["history"].as_array().unwrap();
        let times: Vec<&str> = history.iter().map(|h| h["at"].as_str().unwrap()).collect();
        assert_eq!(
            times,
            [
                "2023-11-14T22:13:20.000Z",
                "2023-11-14T22:13:20.006Z",
                "2023-11-14T22:13:20.017Z"
            ]
        );
        assert_eq!(history[1]["failure"], "connection_reset");
        assert_eq!(history[1]["status"], serde_json::Value::Null);
        assert_eq!(history[1]["delay_ms"], 10.0);
        assert_eq!(history[2]["delay_ms"], serde_json::Value::Null);
        // Read back, the same record.
        let back: ErrorRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        // `Serialize for Error` is the same record.
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            serde_json::to_value(&record).unwrap()
        );
        // A record made without an anchor has no times.
        let plain = serde_json::to_value(ErrorRecord::with_anchor(&error, None)).unwrap();
        assert_eq!(plain["report"]["history"][0]["at"], serde_json::Value::Null);
    }
}
