//! Reference models of the server-hint parsers, written from RFC 9110
//! and the `retry_after` / `classify` module docs, independently of the
//! crate's code and of `httpdate` (the dates are decoded and checked here,
//! calendar and weekday included).
//!
//! Shared by the property tests (`tests/properties.rs`) and the fuzz
//! targets (`fuzz/src/lib.rs` includes this file with `#[path]`), so that
//! the one model is exercised both by CI and by the fuzzers. Only `std`
//! and `http` are used (and `httpdate` in its own test).

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// The parsers' bound for a number-based hint: 100 years.
pub const MAX_HINT_SECS: u64 = 100 * 365 * 24 * 3600;
/// The same bound in nanoseconds.
pub const MAX_HINT_NS: i128 = MAX_HINT_SECS as i128 * NS;
/// Nanoseconds per second.
pub const NS: i128 = 1_000_000_000;

/// `now` as signed nanoseconds since the epoch.
pub fn epoch_ns(now: SystemTime) -> i128 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// RFC 9110 §5.6.3 optional white space: space and horizontal tab.
pub fn model_trim(mut v: &[u8]) -> &[u8] {
    while let Some((&(b' ' | b'\t'), rest)) = v.split_first() {
        v = rest;
    }
    while let Some((&(b' ' | b'\t'), rest)) = v.split_last() {
        v = rest;
    }
    v
}

/// What `str::trim` removes from ASCII text: space, HT, LF, VT, FF, CR.
fn trim_ascii_ws(mut v: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    while v.first().is_some_and(ws) {
        v = &v[1..];
    }
    while v.last().is_some_and(ws) {
        v = &v[..v.len() - 1];
    }
    v
}

/// A run of ASCII digits as a number, saturating at 10^30 (far above any
/// bound that matters). `None` unless the input is one or more digits.
pub fn model_digits(v: &[u8]) -> Option<u128> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let cap = 10u128.pow(30);
    Some(
        v.iter()
            .fold(0u128, |acc, &b| (acc * 10 + u128::from(b - b'0')).min(cap)),
    )
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
/// Weekday names from Monday, with their long forms (RFC 850).
const DAYS: [(&[u8], &[u8]); 7] = [
    (b"Mon", b"Monday"),
    (b"Tue", b"Tuesday"),
    (b"Wed", b"Wednesday"),
    (b"Thu", b"Thursday"),
    (b"Fri", b"Friday"),
    (b"Sat", b"Saturday"),
    (b"Sun", b"Sunday"),
];

fn num(v: &[u8]) -> Option<i64> {
    model_digits(v).map(|n| n as i64)
}

fn month(v: &[u8]) -> Option<i64> {
    MONTHS.iter().position(|m| *m == v).map(|i| i as i64 + 1)
}

/// `HH:MM:SS` as seconds of the day.
fn time_of_day(v: &[u8]) -> Option<i64> {
    if v.len() != 8 || v[2] != b':' || v[5] != b':' {
        return None;
    }
    let (h, m, s) = (num(&v[0..2])?, num(&v[3..5])?, num(&v[6..8])?);
    (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
}

/// Seconds since the epoch of a calendar date, if it exists, lies in
/// 1970..=9999 (what an HTTP-date can name) and falls on `weekday`
/// (0 = Monday).
fn checked_date(y: i64, m: i64, d: i64, secs_of_day: i64, weekday: usize) -> Option<i64> {
    if !(1970..=9999).contains(&y) || !(1..=days_in_month(y, m)).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // 1970-01-01 was a Thursday (3).
    let wd = (days + 3).rem_euclid(7) as usize;
    (wd == weekday).then_some(days * 86_400 + secs_of_day)
}

/// The three HTTP-date forms of RFC 9110 §5.6.7, exactly (no extra spaces,
/// case-sensitive names, `GMT`), with a weekday that matches the date:
///
/// - IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`
/// - RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` (years 70..99 are 19xx,
///   00..69 are 20xx; see the note on the byte before the time)
/// - asctime `Sun Nov  6 08:49:37 1994`
///
/// Returns seconds since the epoch.
pub fn model_http_date(v: &[u8]) -> Option<i64> {
    let weekday_short = |w: &[u8]| DAYS.iter().position(|(s, _)| *s == w);
    // IMF-fixdate
    if v.len() == 29 && &v[3..5] == b", " && v[7] == b' ' && v[11] == b' ' && v[16] == b' ' {
        if &v[25..] == b" GMT" {
            let wd = weekday_short(&v[0..3])?;
            let (d, m, y) = (num(&v[5..7])?, month(&v[8..11])?, num(&v[12..16])?);
            return checked_date(y, m, d, time_of_day(&v[17..25])?, wd);
        }
        return None;
    }
    // asctime
    if v.len() == 24 && v[3] == b' ' && v[7] == b' ' && v[10] == b' ' && v[19] == b' ' {
        let wd = weekday_short(&v[0..3])?;
        let m = month(&v[4..7])?;
        let d = if v[8] == b' ' {
            num(&v[9..10])?
        } else {
            num(&v[8..10])?
        };
        let y = num(&v[20..24])?;
        return checked_date(y, m, d, time_of_day(&v[11..19])?, wd);
    }
    // RFC 850
    let comma = v.iter().position(|&b| b == b',')?;
    let wd = DAYS.iter().position(|(_, long)| *long == &v[..comma])?;
    let rest = &v[comma..];
    if rest.len() != 24 || &rest[..2] != b", " || rest[4] != b'-' || rest[8] != b'-' {
        return None;
    }
    // `rest[11]` should be a space, but `httpdate` 1.0.3 does not check
    // that byte of an RFC 850 date (any ASCII byte is accepted); the model
    // follows it, so that only the crate's own behaviour is tested.
    if &rest[20..] != b" GMT" {
        return None;
    }
    let (d, m, yy) = (num(&rest[2..4])?, month(&rest[5..8])?, num(&rest[9..11])?);
    let y = if yy < 70 { 2000 + yy } else { 1900 + yy };
    checked_date(y, m, d, time_of_day(&rest[12..20])?, wd)
}

/// What `parse_retry_after` should return, in nanoseconds: delay-seconds
/// up to 100 years, or the distance to an HTTP-date (0 when past).
pub fn model_retry_after(value: &[u8], now: SystemTime) -> Option<i128> {
    let v = model_trim(value);
    if let Some(secs) = model_digits(v) {
        return (secs <= u128::from(MAX_HINT_SECS)).then(|| secs as i128 * NS);
    }
    // `httpdate` trims ASCII white space as `str::trim` defines it (also
    // CR, LF, VT and FF) around a date; the model follows it.
    // An HTTP-date is ASCII (which also excludes the loose byte below).
    if !v.is_ascii() {
        return None;
    }
    let at = model_http_date(trim_ascii_ws(v))?;
    Some((i128::from(at) * NS - epoch_ns(now)).max(0))
}

/// What `parse_retry_after_ms` should return: the exact value in
/// nanoseconds (fraction digits beyond the nanosecond dropped) of
/// `1*DIGIT [ "." *DIGIT ]` or `"." 1*DIGIT`, up to 100 years. The caller
/// allows a rounding tolerance (see [`ms_tolerance_ns`]).
pub fn model_retry_after_ms_exact(value: &[u8]) -> Option<i128> {
    let v = model_trim(value);
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &v[v.len()..]),
    };
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int.is_empty() && frac.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let int_ms = if int.is_empty() {
        0
    } else {
        model_digits(int)?
    };
    // 1 ms = 10^6 ns: six fraction digits reach the nanosecond.
    let mut frac_ns = 0i128;
    for i in 0..6 {
        let digit = frac.get(i).map_or(0, |b| b - b'0');
        frac_ns = frac_ns * 10 + i128::from(digit);
    }
    let int_ns = i128::try_from(int_ms).ok()?.checked_mul(1_000_000)?;
    Some(int_ns + frac_ns)
}

/// How far the crate's `retry-after-ms` may be from the exact value: it
/// goes through `f64` (two roundings, about 2.2e-16 relative each), plus
/// the dropped sub-nanosecond digits.
pub fn ms_tolerance_ns(exact_ns: i128) -> i128 {
    1_000 + exact_ns / 1_000_000_000_000_000
}

/// What `parse_epoch_reset` should return, in nanoseconds: the wait until
/// an epoch-seconds time (0 when past), up to 100 years.
pub fn model_epoch_reset(value: &[u8], now: SystemTime) -> Option<i128> {
    let secs = model_digits(model_trim(value))?;
    let at = i128::try_from(secs).ok()?.checked_mul(NS)?;
    let wait = (at - epoch_ns(now)).max(0);
    (wait <= MAX_HINT_NS).then_some(wait)
}

/// The first value of `name` (case-insensitive; `HeaderMap` keeps names
/// lowercase), found by walking every entry rather than by lookup.
pub fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_bytes())
}

/// `x-should-retry`: `true` or `false` in any case, trimmed.
pub fn model_should_retry(headers: &HeaderMap) -> Option<bool> {
    let v = model_trim(first_value(headers, "x-should-retry")?).to_ascii_lowercase();
    match v.as_slice() {
        b"true" => Some(true),
        b"false" => Some(false),
        _ => None,
    }
}

/// `x-ratelimit-remaining` is exactly `0` (trimmed).
pub fn model_rate_limit_exhausted(headers: &HeaderMap) -> bool {
    first_value(headers, "x-ratelimit-remaining").is_some_and(|v| model_trim(v) == b"0")
}

/// Which header a hint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintSource {
    /// `retry-after-ms`.
    RetryAfterMs,
    /// `Retry-After`.
    RetryAfter,
    /// `x-ratelimit-reset` (with `x-ratelimit-remaining: 0`).
    RateLimitReset,
}

/// A hint the model expects: the delay in nanoseconds, its header, and how
/// far the crate may be from it (non-zero only for `retry-after-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelHint {
    /// The delay, in nanoseconds (positive).
    pub ns: i128,
    /// The header it came from.
    pub source: HintSource,
    /// The allowed distance from `ns`.
    pub tolerance: i128,
}

/// A `retry-after-ms` value within rounding distance of zero or of the
/// bound: either answer is right, so the caller skips the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// What `server_hint` should return: the first valid, positive hint of
/// `retry-after-ms`, `Retry-After` and (with `x-ratelimit-remaining: 0`)
/// `x-ratelimit-reset`, each read from the header's first value.
pub fn model_server_hint(
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Option<ModelHint>, Ambiguous> {
    let hint = |ns, source, tolerance| {
        Ok(Some(ModelHint {
            ns,
            source,
            tolerance,
        }))
    };
    if let Some(exact) = first_value(headers, "retry-after-ms").and_then(model_retry_after_ms_exact)
    {
        let tol = ms_tolerance_ns(exact);
        if exact <= tol || (exact - MAX_HINT_NS).abs() <= tol {
            return Err(Ambiguous);
        }
        if exact <= MAX_HINT_NS {
            return hint(exact, HintSource::RetryAfterMs, tol);
        }
    }
    let positive = |d: Option<i128>| d.filter(|&d| d > 0);
    let retry_after = first_value(headers, "retry-after").and_then(|v| model_retry_after(v, now));
    if let Some(d) = positive(retry_after) {
        return hint(d, HintSource::RetryAfter, 0);
    }
    let reset = first_value(headers, "x-ratelimit-reset").and_then(|v| model_epoch_reset(v, now));
    if model_rate_limit_exhausted(headers)
        && let Some(d) = positive(reset)
    {
        return hint(d, HintSource::RateLimitReset, 0);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_match_httpdate_on_valid_input() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Tue, 29 Feb 2000 12:00:00 GMT",
        ] {
            let want = httpdate::parse_http_date(s).unwrap();
            let got = model_http_date(s.as_bytes()).unwrap();
            assert_eq!(UNIX_EPOCH + Duration::from_secs(got as u64), want, "{s}");
        }
        for s in [
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Tue, 29 Feb 1900 12:00:00 GMT",
        ] {
            assert_eq!(model_http_date(s.as_bytes()), None, "{s}");
        }
    }
}

// ---------------------------------------------------------------------
// Server quota headers (`retry_after::quota_reset`), written from OpenAI's
// and Anthropic's documentation (see retry-semantics.md) and Go's
// `time.ParseDuration`, without jiff.

/// A Go duration (`time.ParseDuration`) of the unsigned subset
/// `(\d+(\.\d+)?(h|m|s|ms|us|µs|μs|ns))+` that OpenAI's
/// `x-ratelimit-reset-*` headers use (`6m0s`, `12ms`, `1.5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// The value in nanoseconds, each component's fraction truncated to a
    /// whole nanosecond as Go does (not capped: can exceed `i64`).
    pub ns: i128,
    /// Every component's fraction is a whole number of nanoseconds.
    pub exact: bool,
    /// The form Go's `Duration.String()` writes and servers send: each
    /// unit at most once, largest first, a fraction only on the last
    /// component, at most 9 fractional digits and none on `ns`, no leading
    /// zeros, `µs` with the micro sign (U+00B5; Go also reads the Greek mu
    /// U+03BC but never writes it).
    pub canonical: bool,
}

/// Go's unit names, longest first so that `ms` is not read as `m`.
const GO_UNITS: [(&str, i128, u8); 8] = [
    ("ns", 1, 0),
    ("us", 1_000, 1),
    ("µs", 1_000, 1),
    ("μs", 1_000, 1),
    ("ms", 1_000_000, 2),
    ("h", 3_600 * NS, 5),
    ("m", 60 * NS, 4),
    ("s", NS, 3),
];

/// Parses the Go-duration subset above (after OWS trimming). `None` when
/// the text does not match it. Digit runs saturate (see [`model_digits`]).
pub fn model_go_duration(value: &[u8]) -> Option<GoDuration> {
    let mut v = model_trim(value);
    if v.is_empty() {
        return None;
    }
    let (mut ns, mut exact, mut canonical) = (0i128, true, true);
    let mut last_rank = u8::MAX;
    let mut had_fraction = false;
    while !v.is_empty() {
        let int_len = v.iter().take_while(|b| b.is_ascii_digit()).count();
        if int_len == 0 {
            return None;
        }
        let int = model_digits(&v[..int_len])? as i128;
        let v_int_first = v[0];
        v = &v[int_len..];
        let mut frac: &[u8] = &[];
        if let Some((b'.', rest)) = v.split_first() {
            let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            frac = &rest[..n];
            v = &rest[n..];
        }
        let (unit, scale, rank) = GO_UNITS
            .iter()
            .find(|(u, _, _)| v.starts_with(u.as_bytes()))
            .copied()?;
        v = &v[unit.len()..];
        // Go reads the Greek mu (U+03BC) too, but writes the micro sign.
        let leading_zero = int_len > 1 && v_int_first == b'0';
        if leading_zero
            || unit == "μs"
            || (unit == "ns" && !frac.is_empty())
            || had_fraction
            || rank >= last_rank
            || frac.len() > 9
        {
            canonical = false;
        }
        last_rank = rank;
        had_fraction |= !frac.is_empty();
        // Fraction: digits / 10^len of a unit, truncated to whole ns.
        let mut frac_ns = 0i128;
        if !frac.is_empty() {
            let digits = &frac[..frac.len().min(20)];
            let num = model_digits(digits)? as i128;
            let den = 10i128.pow(digits.len() as u32);
            frac_ns = num * scale / den;
            if num * scale % den != 0 || frac.len() > digits.len() {
                exact = false;
            }
        }
        ns = ns
            .saturating_add(int.saturating_mul(scale))
            .saturating_add(frac_ns);
    }
    Some(GoDuration {
        ns,
        exact,
        canonical,
    })
}

/// An RFC 3339 timestamp of the strict form
/// `YYYY-MM-DDTHH:MM:SS(.frac)?(Z|±HH:MM)` (upper-case `T` and `Z`, 1 to 9
/// fractional digits, seconds 00..59, offset hours 00..23), as nanoseconds
/// since the epoch. `None` for anything else, including impossible dates.
pub fn model_rfc3339(value: &[u8]) -> Option<i128> {
    let v = model_trim(value);
    if v.len() < 20 || v[4] != b'-' || v[7] != b'-' || v[10] != b'T' {
        return None;
    }
    let (y, m, d) = (num(&v[0..4])?, num(&v[5..7])?, num(&v[8..10])?);
    if !(1..=12).contains(&m) || !(1..=days_in_month(y, m)).contains(&d) {
        return None;
    }
    if v[13] != b':' || v[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(&v[11..13])?, num(&v[14..16])?, num(&v[17..19])?);
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let mut rest = &v[19..];
    let mut frac_ns = 0i128;
    if let Some((b'.', r)) = rest.split_first() {
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        frac_ns = model_digits(&r[..n])? as i128 * 10i128.pow(9 - n as u32);
        rest = &r[n..];
    }
    let offset_secs = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let local = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(i128::from(local - offset_secs) * NS + frac_ns)
}

/// Which family of quota headers a [`model_quota_reset`] answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFamily {
    /// `x-ratelimit-remaining: 0` + `x-ratelimit-reset` epoch seconds.
    EpochReset,
    /// `anthropic-ratelimit-requests-remaining: 0` + RFC 3339 reset.
    Anthropic,
    /// `x-ratelimit-remaining-requests: 0` + Go-duration reset.
    OpenAi,
}

/// The first header family (in the documented order: epoch, Anthropic,
/// OpenAI) whose first `*-remaining` value is `0` after OWS trimming, and
/// the first value of its reset header. `None` when no family is
/// exhausted or the exhausted one has no reset header. (The first
/// exhausted family decides: a later family is not consulted.)
pub fn model_quota_family(headers: &HeaderMap) -> Option<(QuotaFamily, &[u8])> {
    let families = [
        (
            QuotaFamily::EpochReset,
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ),
        (
            QuotaFamily::Anthropic,
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ),
        (
            QuotaFamily::OpenAi,
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
    ];
    for (family, remaining, reset) in families {
        if first_value(headers, remaining).is_some_and(|v| model_trim(v) == b"0") {
            return first_value(headers, reset).map(|v| (family, v));
        }
    }
    None
}

// ---------------------------------------------------------------------
// The circuit breaker's documented state machine, except the decision to
// open a closed breaker (which depends on the bucketed window; the
// harness accepts the crate's answer and checks it separately).

/// The model's view of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMode {
    /// Admits everything; outcomes are counted.
    Closed,
    /// Refuses until `until` (nanoseconds on the harness's clock).
    Open {
        /// End of the break.
        until: u128,
    },
    /// Admits up to `probes` probes; `in_flight` admitted and not yet
    /// recorded or released, `succeeded` recorded successes; with every
    /// probe out, a new round once the latest has been out for the maximum
    /// half-open wait.
    HalfOpen {
        /// Probes admitted and not yet settled.
        in_flight: u32,
        /// Probes that succeeded.
        succeeded: u32,
        /// When the latest probe was admitted.
        latest: u128,
    },
}

/// A ticket the model handed out: a probe or not, and the episode (a
/// count of state changes) it belongs to. A ticket of an older episode is
/// stale and must change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelTicket {
    /// Admitted in half-open.
    pub probe: bool,
    /// The model's episode when admitted.
    pub episode: u64,
}

/// The state machine: closed → open (decided by the harness), open refuses
/// until the break ends, then the first admission starts half-open with one
/// probe; at most `probes` probes (in flight plus succeeded), the others
/// refused until the latest probe has been out for the maximum half-open
/// wait, when a new half-open episode starts with one probe; a failed probe
/// reopens for another break, `probes` successes close it; a released probe
/// frees its slot; every change of state starts a new episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitModel {
    /// Current mode.
    pub mode: ModelMode,
    /// Episode counter.
    pub episode: u64,
    /// Failures in a row while closed in this episode.
    pub consecutive: u32,
    /// `half_open_probes`.
    pub probes: u32,
    /// `break_duration` in nanoseconds.
    pub break_ns: u128,
    /// `max_half_open_wait` in nanoseconds.
    pub half_open_wait_ns: u128,
}

/// What the model says an admission does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelVerdict {
    /// Admitted.
    Allow(ModelTicket),
    /// Refused, retry in this many nanoseconds.
    Refuse(u128),
}

impl CircuitModel {
    /// A closed breaker.
    pub fn new(probes: u32, break_ns: u128, half_open_wait_ns: u128) -> CircuitModel {
        CircuitModel {
            mode: ModelMode::Closed,
            episode: 0,
            consecutive: 0,
            probes,
            break_ns,
            half_open_wait_ns,
        }
    }

    fn change(&mut self, mode: ModelMode) {
        self.mode = mode;
        self.episode += 1;
        self.consecutive = 0;
    }

    /// Probes in flight.
    pub fn in_flight(&self) -> u32 {
        match self.mode {
            ModelMode::HalfOpen { in_flight, .. } => in_flight,
            _ => 0,
        }
    }

    /// An admission at `now`.
    pub fn admit(&mut self, now: u128) -> ModelVerdict {
        let ticket = |probe, episode| ModelVerdict::Allow(ModelTicket { probe, episode });
        match self.mode {
            ModelMode::Closed => ticket(false, self.episode),
            ModelMode::Open { until } if now < until => ModelVerdict::Refuse(until - now),
            ModelMode::Open { .. } => {
                self.change(ModelMode::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                    latest: now,
                });
                ticket(true, self.episode)
            }
            ModelMode::HalfOpen {
                in_flight,
                succeeded,
                ..
            } if in_flight + succeeded < self.probes => {
                self.mode = ModelMode::HalfOpen {
                    in_flight: in_flight + 1,
                    succeeded,
                    latest: now,
                };
                ticket(true, self.episode)
            }
            ModelMode::HalfOpen { latest, .. } if now < latest + self.half_open_wait_ns => {
                ModelVerdict::Refuse(latest + self.half_open_wait_ns - now)
            }
            ModelMode::HalfOpen { .. } => {
                self.change(ModelMode::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                    latest: now,
                });
                ticket(true, self.episode)
            }
        }
    }

    /// An outcome at `now`. While closed, `opened` is whether the breaker
    /// under test opened (the model only counts the run of failures).
    pub fn record(&mut self, ticket: ModelTicket, failed: bool, now: u128, opened: bool) {
        if ticket.episode != self.episode {
            return;
        }
        match self.mode {
            ModelMode::Closed => {
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                if opened {
                    self.change(ModelMode::Open {
                        until: now + self.break_ns,
                    });
                }
            }
            ModelMode::HalfOpen {
                in_flight,
                succeeded,
                latest,
            } if ticket.probe => {
                if failed {
                    self.change(ModelMode::Open {
                        until: now + self.break_ns,
                    });
                } else if succeeded + 1 >= self.probes {
                    self.change(ModelMode::Closed);
                } else {
                    self.mode = ModelMode::HalfOpen {
                        in_flight: in_flight - 1,
                        succeeded: succeeded + 1,
                        latest,
                    };
                }
            }
            _ => {}
        }
    }

    /// A probe given up without an outcome.
    pub fn release(&mut self, ticket: ModelTicket) {
        if ticket.episode != self.episode || !ticket.probe {
            return;
        }
        if let ModelMode::HalfOpen {
            in_flight,
            succeeded,
            latest,
        } = self.mode
        {
            self.mode = ModelMode::HalfOpen {
                in_flight: in_flight - 1,
                succeeded,
                latest,
            };
        }
    }
}

// ---------------------------------------------------------------------
// The rate limit: `burst` at once, then one every `interval`, written as
// the limit itself (a window rule over the turns actually taken), not as
// the GCRA's bookkeeping.

/// Whether the turns `sorted` (times in nanoseconds, in order) keep a limit
/// of `burst` at once and one every `interval_ns`: between any two turns
/// `i < j` lies at least `(j - i + 1 - burst)` intervals, so that no span
/// holds more than `burst` turns plus one per interval.
pub fn rate_limit_holds(sorted: &[u128], interval_ns: u128, burst: u32) -> bool {
    let burst = u128::from(burst);
    for i in 0..sorted.len() {
        for j in i + 1..sorted.len() {
            let turns = (j - i + 1) as u128;
            let need = turns.saturating_sub(burst) * interval_ns;
            if sorted[j] - sorted[i] < need {
                return false;
            }
        }
    }
    true
}

/// The earliest turn at or after `now_ns` that keeps the limit, if it is
/// taken after every turn in `sorted`: for turn `i` (counting from 0) of
/// `n`, at least `(n - i + 1 - burst)` intervals after it.
pub fn earliest_next_turn(sorted: &[u128], now_ns: u128, interval_ns: u128, burst: u32) -> u128 {
    let n = sorted.len() as u128;
    let burst = u128::from(burst);
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| x + (n - i as u128 + 1).saturating_sub(burst) * interval_ns)
        .fold(now_ns, u128::max)
}

/// The earliest time at or after `now_ns` at which `cost` turns taken at
/// once (a request that costs `cost`, sent at that time), after every turn
/// in `sorted`, keep the limit: for turn `i` (counting from 0) of `n`, at
/// least `(n - i + cost - burst)` intervals after it. `cost` must be at
/// most `burst` (more turns than the burst never fit at one time). With a
/// cost of 1 it is [`earliest_next_turn`].
pub fn earliest_turn_of_cost(
    sorted: &[u128],
    now_ns: u128,
    interval_ns: u128,
    burst: u32,
    cost: u32,
) -> u128 {
    assert!(cost >= 1 && cost <= burst);
    let n = sorted.len() as u128;
    let (burst, cost) = (u128::from(burst), u128::from(cost));
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| x + (n - i as u128 + cost).saturating_sub(burst) * interval_ns)
        .fold(now_ns, u128::max)
}
