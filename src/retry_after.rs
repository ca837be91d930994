//! Server delay hints: `retry-after-ms`, `Retry-After` and rate-limit
//! reset headers.
//!
//! | header | form | note |
//! |---|---|---|
//! | `retry-after-ms` | milliseconds, optionally fractional (`1500`, `12.5`) | sent by OpenAI and Anthropic; wins when valid |
//! | `Retry-After` | `delay-seconds` (`1*DIGIT`) or an HTTP-date (IMF-fixdate, RFC 850, asctime) | RFC 9110 §10.2.3 |
//! | `x-ratelimit-reset` | epoch seconds | only when `x-ratelimit-remaining: 0` (GitHub) |
//!
//! The first *valid, positive* hint in that order is used. Invalid values
//! (`-1`, `+1`, `1.5` seconds, `soon`, `nan`, `inf`, the empty string,
//! numbers too large to represent, impossible dates) are ignored, never a
//! panic; a zero hint or a date in the past means "no hint" and the
//! computed backoff is used. When several `Retry-After` headers are present,
//! the first wins.
//!
//! HTTP-dates and epoch seconds are compared to a wall clock passed in by
//! the caller, so they can be tested against a fixed time.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http_resilience::retry_after::{parse_retry_after, parse_retry_after_ms};
//!
//! let now = httpdate::parse_http_date("Mon, 03 Jun 2019 11:00:00 GMT").unwrap();
//! assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
//! assert_eq!(
//!     parse_retry_after(b"Mon, 03 Jun 2019 11:30:12 GMT", now),
//!     Some(Duration::from_secs(1812))
//! );
//! assert_eq!(parse_retry_after(b"soon", now), None);
//! assert_eq!(parse_retry_after_ms(b"1500"), Some(Duration::from_millis(1500)));
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::headers::{
    ANTHROPIC_RESET, OPENAI_RESET, RETRY_AFTER_MS, X_RATELIMIT_RESET, X_RATELIMIT_RESOURCE,
    rate_limit_exhausted, trim_ows,
};

/// Where the wait before a retry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DelaySource {
    /// The policy's computed backoff.
    Backoff,
    /// The `Retry-After` header.
    RetryAfter,
    /// The `retry-after-ms` header.
    RetryAfterMs,
    /// A rate-limit reset header (`x-ratelimit-reset`).
    RateLimitReset,
    /// A provider's documented rule rather than a header, such as GitHub's
    /// "wait at least one minute" after a secondary rate limit.
    ProviderRule,
}

impl DelaySource {
    /// A stable snake_case name: `backoff`, `retry_after`, `retry_after_ms`,
    /// `rate_limit_reset`, `provider_rule`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DelaySource::Backoff => "backoff",
            DelaySource::RetryAfter => "retry_after",
            DelaySource::RetryAfterMs => "retry_after_ms",
            DelaySource::RateLimitReset => "rate_limit_reset",
            DelaySource::ProviderRule => "provider_rule",
        }
    }
}

impl std::fmt::Display for DelaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wait the server asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// How long to wait (always positive).
    pub delay: Duration,
    /// Which header said so.
    pub source: DelaySource,
}

/// A source of wall-clock time, for HTTP-dates and epoch-second resets.
///
/// Implemented for `Fn() -> SystemTime` closures, so a fixed clock is
/// `move || fixed_time`.
pub trait WallClock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

impl<F> WallClock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// The system's clock ([`SystemTime::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The largest number-based hint (delay-seconds, milliseconds, epoch
/// reset) taken as a real instruction: 100 years. Larger numbers (a
/// 30-digit value) are what overflowing or garbled input looks like, so they
/// are invalid and the backoff is used. An HTTP-date is always a real date
/// and gives its real distance, however far; the engine then refuses a wait
/// that long (`RETRY_AFTER_TOO_LONG`).
const MAX_HINT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses one `Retry-After` value: delay-seconds or an HTTP-date.
///
/// Returns `None` for an invalid value, `Some(ZERO)` for `0` or a date that
/// is not in the future.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = trim_ows(value);
    if value.is_empty() {
        return None;
    }
    if value.iter().all(u8::is_ascii_digit) {
        return parse_digits(value)
            .map(Duration::from_secs)
            .filter(|d| *d <= MAX_HINT);
    }
    let text = std::str::from_utf8(value).ok()?;
    let date = httpdate::parse_http_date(text).ok()?;
    Some(until(date, now))
}

/// Parses one `retry-after-ms` value: non-negative milliseconds, with an
/// optional fraction (`"1500"`, `"12.5"`, also `".5"` and `"1."`). Signs,
/// exponents, `inf`, `nan` and more than 20 significant integer digits are
/// invalid.
pub fn parse_retry_after_ms(value: &[u8]) -> Option<Duration> {
    let value = trim_ows(value);
    let (mut dots, mut digits, mut significant) = (0, 0, 0);
    for &b in value {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                // Integer digits after leading zeros: bounds the magnitude.
                if dots == 0 && (significant > 0 || b != b'0') {
                    significant += 1;
                }
            }
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if digits == 0 || dots > 1 || significant > 20 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let ms: f64 = text.parse().ok()?;
    let delay = Duration::try_from_secs_f64(ms / 1000.0).ok()?;
    (delay <= MAX_HINT).then_some(delay)
}

/// Parses an epoch-seconds reset time (`x-ratelimit-reset`) into the wait
/// from `now`: `Some(ZERO)` when the reset is not in the future.
pub fn parse_epoch_reset(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = trim_ows(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = parse_digits(value)?;
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    let wait = until(at, now);
    (wait <= MAX_HINT).then_some(wait)
}

/// The hint a response carries, if any: the first valid, positive one of
/// `retry-after-ms`, `Retry-After` and (with `x-ratelimit-remaining: 0`)
/// `x-ratelimit-reset`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use http_resilience::retry_after::{server_hint, DelaySource};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "2".parse().unwrap());
/// headers.insert("retry-after-ms", "1500".parse().unwrap());
/// let hint = server_hint(&headers, SystemTime::now()).unwrap();
/// assert_eq!(hint.delay, Duration::from_millis(1500));
/// assert_eq!(hint.source, DelaySource::RetryAfterMs);
/// ```
pub fn server_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    retry_after_ms_hint(headers)
        .or_else(|| retry_after_hint(headers, now))
        .or_else(|| rate_limit_reset_hint(headers, now))
}

/// A positive `retry-after-ms` hint, if the header is valid.
pub fn retry_after_ms_hint(headers: &HeaderMap) -> Option<Hint> {
    let delay = parse_retry_after_ms(headers.get(&RETRY_AFTER_MS)?.as_bytes())?;
    positive(delay, DelaySource::RetryAfterMs)
}

/// A positive `Retry-After` hint (seconds or an HTTP-date after `now`), if
/// the header is valid.
pub fn retry_after_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    let value = headers.get(http::header::RETRY_AFTER)?;
    positive(
        parse_retry_after(value.as_bytes(), now)?,
        DelaySource::RetryAfter,
    )
}

/// The wait until `x-ratelimit-reset` (epoch seconds), only when
/// `x-ratelimit-remaining` is `0` and the reset is after `now`.
pub fn rate_limit_reset_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    if !rate_limit_exhausted(headers) {
        return None;
    }
    let delay = parse_epoch_reset(headers.get(&X_RATELIMIT_RESET)?.as_bytes(), now)?;
    positive(delay, DelaySource::RateLimitReset)
}

/// Which family of headers said that an endpoint's request quota is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaHeaders {
    /// `x-ratelimit-remaining: 0` with `x-ratelimit-reset` in epoch seconds
    /// (GitHub and many others).
    EpochReset,
    /// `anthropic-ratelimit-requests-remaining: 0` with
    /// `anthropic-ratelimit-requests-reset` as an RFC 3339 time.
    Anthropic,
    /// `x-ratelimit-remaining-requests: 0` with `x-ratelimit-reset-requests`
    /// as a duration such as `6m0s` or `12ms` (OpenAI).
    OpenAi,
}

impl QuotaHeaders {
    /// A stable snake_case name: `epoch_reset`, `anthropic`, `openai`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaHeaders::EpochReset => "epoch_reset",
            QuotaHeaders::Anthropic => "anthropic",
            QuotaHeaders::OpenAi => "openai",
        }
    }
}

/// How long until an endpoint's request quota resets, when a response
/// (of any status, a 200 included) says it is used up; `None` when it does
/// not, or when the reset is unreadable or not in the future.
///
/// | remaining (must be `0`) | reset |
/// |---|---|
/// | `x-ratelimit-remaining` | `x-ratelimit-reset`, epoch seconds |
/// | `anthropic-ratelimit-requests-remaining` | `anthropic-ratelimit-requests-reset`, RFC 3339 |
/// | `x-ratelimit-remaining-requests` | `x-ratelimit-reset-requests`, a duration (`6m0s`, `12ms`, `1.5s`) |
///
/// Token quotas (`...-tokens-remaining`) are not read: whether the next
/// request fits depends on its size. Nor is a GitHub quota for a resource
/// other than `core` (`x-ratelimit-resource: search`, `graphql`, ...): it
/// covers only some of the host's paths, and holding the whole host for it
/// would stall requests that have quota left.
///
/// With [`server_limits`](crate::RetryPolicyBuilder::server_limits) on,
/// the engine holds the later requests carrying the same credential (see
/// [`Partition`](crate::protection::store::Partition)) until the reset, and ignores as
/// invalid a reset beyond
/// [`max_quota_reset`](crate::RetryPolicyBuilder::max_quota_reset) (24 h by
/// default); this function reports any reset up to 100 years away.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use http_resilience::retry_after::{quota_reset, QuotaHeaders};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
/// assert_eq!(
///     quota_reset(&headers, SystemTime::now()),
///     Some((Duration::from_secs(360), QuotaHeaders::OpenAi))
/// );
/// ```
pub fn quota_reset(headers: &HeaderMap, now: SystemTime) -> Option<(Duration, QuotaHeaders)> {
    quota_reset_at(headers, || now)
}

/// [`quota_reset`], reading the clock only if a quota is gone. One pass
/// over the header names (a length switch, no hashing): it runs on every
/// response.
pub(crate) fn quota_reset_at(
    headers: &HeaderMap,
    now: impl FnOnce() -> SystemTime,
) -> Option<(Duration, QuotaHeaders)> {
    // Which families say `0`, in order of precedence. As everywhere in
    // this crate, the first of several values of one header is the one
    // read.
    let mut gone = [false; 3];
    let mut seen = [false; 3];
    for (name, value) in headers {
        // The three names are 21, 30 and 38 bytes long: most names are
        // passed over by their length alone.
        if !matches!(name.as_str().len(), 21 | 30 | 38) {
            continue;
        }
        let family = match name.as_str() {
            "x-ratelimit-remaining" => 0,
            "anthropic-ratelimit-requests-remaining" => 1,
            "x-ratelimit-remaining-requests" => 2,
            _ => continue,
        };
        if !std::mem::replace(&mut seen[family], true) {
            gone[family] = trim_ows(value.as_bytes()) == b"0";
        }
    }
    let (wait, which) = if gone[0] {
        if headers
            .get(&X_RATELIMIT_RESOURCE)
            .is_some_and(|r| !trim_ows(r.as_bytes()).eq_ignore_ascii_case(b"core"))
        {
            return None;
        }
        let reset = headers.get(&X_RATELIMIT_RESET)?;
        (
            parse_epoch_reset(reset.as_bytes(), now())?,
            QuotaHeaders::EpochReset,
        )
    } else if gone[1] {
        let reset = headers.get(&ANTHROPIC_RESET)?;
        (
            parse_rfc3339_reset(reset.as_bytes(), now())?,
            QuotaHeaders::Anthropic,
        )
    } else if gone[2] {
        let reset = headers.get(&OPENAI_RESET)?;
        (
            parse_reset_duration(reset.as_bytes())?,
            QuotaHeaders::OpenAi,
        )
    } else {
        return None;
    };
    (!wait.is_zero()).then_some((wait, which))
}

/// Parses an RFC 3339 reset time (`2026-11-22T10:00:30Z`, any offset,
/// optional fraction) into the wait from `now`: `Some(ZERO)` when it is
/// not in the future. Parsed by `jiff`.
pub fn parse_rfc3339_reset(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(trim_ows(value)).ok()?;
    let at: jiff::Timestamp = text.parse().ok()?;
    let at = SystemTime::from(at);
    let wait = until(at, now);
    (wait <= MAX_HINT).then_some(wait)
}

/// Parses a reset given as a duration, as OpenAI sends it (`6m0s`, `12ms`,
/// `1h2m3.5s`, `20ms`): unit-suffixed parts from hours down to
/// nanoseconds, parsed by `jiff`. Negative, empty and unit-less values
/// are invalid.
pub fn parse_reset_duration(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(trim_ows(value)).ok()?;
    // A bare number has no unit to read it in (and `jiff` takes ISO 8601
    // `PT..` forms, which no server sends here).
    if !text.bytes().next()?.is_ascii_digit() || text.bytes().last()?.is_ascii_digit() {
        return None;
    }
    let signed: jiff::SignedDuration = text.parse().ok()?;
    let wait = Duration::try_from(signed).ok()?;
    (wait <= MAX_HINT).then_some(wait)
}

fn positive(delay: Duration, source: DelaySource) -> Option<Hint> {
    (!delay.is_zero()).then_some(Hint { delay, source })
}

fn parse_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(date: &str) -> SystemTime {
        httpdate::parse_http_date(date).unwrap()
    }

    #[test]
    fn urllib3_cases() {
        let now = at("Mon, 03 Jun 2019 11:00:00 GMT");
        assert_eq!(parse_retry_after(b"0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(b"1000", now),
            Some(Duration::from_secs(1000))
        );
        assert_eq!(
            parse_retry_after(b"\t42 ", now),
            Some(Duration::from_secs(42))
        );
        for bad in ["-1", "+1", "1.0", "²", "1.5", "soon", "nan", "inf", ""] {
            assert_eq!(parse_retry_after(bad.as_bytes(), now), None, "{bad:?}");
        }
        for date in [
            "Mon, 03 Jun 2019 11:30:12 GMT",
            "Monday, 03-Jun-19 11:30:12 GMT",
            "Mon Jun  3 11:30:12 2019",
        ] {
            assert_eq!(
                parse_retry_after(date.as_bytes(), now),
                Some(Duration::from_secs(1812)),
                "{date}"
            );
        }
    }

    #[test]
    fn go_retryablehttp_cases() {
        let now = at("Fri, 31 Dec 1999 23:59:57 GMT");
        assert_eq!(parse_retry_after(b"2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(b"Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(b"Fri, 31 Dec 1999 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-2", "Fri, 32 Dec 1999 23:59:59 GMT", "badbadbad"] {
            assert_eq!(parse_retry_after(bad.as_bytes(), now), None, "{bad:?}");
        }
    }

    #[test]
    fn openai_cases() {
        let now = SystemTime::now();
        let thirty = "123456789012345678901234567890";
        assert_eq!(parse_retry_after(thirty.as_bytes(), now), None);
        assert_eq!(parse_retry_after_ms(thirty.as_bytes()), None);
        assert_eq!(
            parse_retry_after(b"Mon, 01 Jan 100000 00:00:00 GMT", now),
            None
        );
        for bad in [
            "inf", "nan", "NaN", "", "-5", "+5", "1e3", "1.2.3", ".", "0x10",
        ] {
            assert_eq!(parse_retry_after_ms(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after_ms(b"12.5"),
            Some(Duration::from_micros(12_500))
        );
        assert_eq!(parse_retry_after_ms(b"0"), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after_ms(b"000000000000000000001500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after_ms(b".5"),
            Some(Duration::from_micros(500))
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn quota_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let q = |pairs: &[(&'static str, &'static str)]| quota_reset(&headers(pairs), now);
        let secs = Duration::from_secs;
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000030")
            ]),
            Some((secs(30), QuotaHeaders::EpochReset))
        );
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "1"),
                ("x-ratelimit-reset", "1000030")
            ]),
            None
        );
        assert_eq!(q(&[("x-ratelimit-remaining", "0")]), None, "no reset");
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "1"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000030")
            ]),
            None,
            "the first of two values is read (found by the quota_reset fuzzer)"
        );
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000030"),
                ("x-ratelimit-resource", "core")
            ]),
            Some((secs(30), QuotaHeaders::EpochReset))
        );
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000030"),
                ("x-ratelimit-resource", "search")
            ]),
            None,
            "GitHub's search quota covers only /search paths"
        );
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "999999")
            ]),
            None,
            "reset in the past"
        );
        assert_eq!(
            q(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "1970-01-12T13:47:10Z")
            ]),
            Some((secs(30), QuotaHeaders::Anthropic))
        );
        assert_eq!(
            q(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                (
                    "anthropic-ratelimit-requests-reset",
                    "1970-01-12T15:47:10.5+02:00"
                )
            ]),
            Some((Duration::from_millis(30_500), QuotaHeaders::Anthropic))
        );
        assert_eq!(
            q(&[
                ("anthropic-ratelimit-tokens-remaining", "0"),
                ("anthropic-ratelimit-tokens-reset", "1970-01-12T13:47:10Z")
            ]),
            None,
            "token quotas are not read"
        );
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "12ms")
            ]),
            Some((Duration::from_millis(12), QuotaHeaders::OpenAi))
        );
    }

    #[test]
    fn reset_durations() {
        let ok = [
            ("6m0s", Duration::from_secs(360)),
            ("12ms", Duration::from_millis(12)),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            (" 20ms\t", Duration::from_millis(20)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_reset_duration(text.as_bytes()), Some(want), "{text}");
        }
        for bad in [
            "",
            "-1s",
            "12",
            "inf",
            "nan",
            "1d",
            "PT1S",
            "s",
            "1 parsec",
            "\u{ff}",
            "999999999999h",
        ] {
            assert_eq!(parse_reset_duration(bad.as_bytes()), None, "{bad:?}");
        }
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for bad in [
            "",
            "yesterday",
            "1970-01-12T13:47:10",
            "1970-13-12T13:47:10Z",
            "9999999-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_reset(bad.as_bytes(), now), None, "{bad:?}");
        }
        assert_eq!(
            parse_rfc3339_reset(b"1970-01-01T00:00:00Z", now),
            Some(Duration::ZERO),
            "the past is no wait"
        );
    }

    #[test]
    fn precedence() {
        let now = at("Fri, 31 Dec 1999 23:59:57 GMT");
        let hint = |pairs| server_hint(&headers(pairs), now);
        assert_eq!(
            hint(&[("retry-after-ms", "1500"), ("retry-after", "2")]),
            Some(Hint {
                delay: Duration::from_millis(1500),
                source: DelaySource::RetryAfterMs
            })
        );
        // invalid ms falls through to Retry-After
        assert_eq!(
            hint(&[("retry-after-ms", "soon"), ("retry-after", "2")]).map(|h| h.source),
            Some(DelaySource::RetryAfter)
        );
        // two Retry-After headers: the first wins
        assert_eq!(
            hint(&[("retry-after", "2"), ("retry-after", "3")]).map(|h| h.delay),
            Some(Duration::from_secs(2))
        );
        // zero and past mean no hint
        assert_eq!(hint(&[("retry-after", "0")]), None);
        assert_eq!(
            hint(&[("retry-after", "Fri, 31 Dec 1999 23:00:00 GMT")]),
            None
        );
        // reset only counts when remaining is 0: 946684800 is 2000-01-01T00:00:00Z
        assert_eq!(hint(&[("x-ratelimit-reset", "946684800")]), None);
        assert_eq!(
            hint(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "946684800")
            ]),
            Some(Hint {
                delay: Duration::from_secs(3),
                source: DelaySource::RateLimitReset
            })
        );
        assert_eq!(
            hint(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]),
            None
        );
    }
}
