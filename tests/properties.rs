//! Property tests of the sans-IO core (no network, no timers):
//!
//! - the backoff schedule (cap, exact un-jittered schedule, jitter ranges,
//!   seeded reproducibility, `reset`);
//! - `RetryPolicyBuilder::build` validation against a model of the rules;
//! - the server-hint parsers against simple reference models, and that they
//!   never panic;
//! - the parsers, `server_hint`, `should_retry_header` and
//!   `rate_limit_exhausted` against the reference models in
//!   `tests/properties/model.rs` (written from RFC 9110 and the module docs,
//!   independently of the crate and of `httpdate`; the fuzz targets in
//!   `fuzz/` compare with the same models), on arbitrary bytes, near
//!   misses, field-by-field HTTP-dates and whole header maps;
//! - the engine: a total deadline is never crossed by a wait, `max_retries`
//!   is respected, per-attempt timeouts are clamped to what is left, and
//!   (with `Jitter::None`) every decision equals a reference model; with
//!   every kind of hint read through a fixed wall clock, a retry waits the
//!   model's hint when the policy accepts it and a capped backoff otherwise;
//! - load protection: `Tokens` / `RetryBudget` stay in `[0, capacity]` and
//!   a withdrawal succeeds iff the tokens cover it, and N first-attempt
//!   failures in flight at once get exactly `min(N, capacity / cost)`
//!   retries; `CircuitState` against the state-machine model (through
//!   `tests/properties/circuit_harness.rs`, shared with the `circuit` fuzz
//!   target) and the sliding window's guarantees; `parse_reset_duration`
//!   and `parse_rfc3339_reset` against models of Go durations and strict
//!   RFC 3339 written without jiff, and `quota_reset`'s family order;
//!   `RateLimitState` (the GCRA with reservations) against the limit itself
//!   (`model::rate_limit_holds`, a window rule over every turn taken, and
//!   `model::earliest_next_turn`): the limit holds through any sequence of
//!   turns taken, given back and used, a turn is never later than needed
//!   while none is given back, a refusal is exactly a turn beyond
//!   `max_wait`, and giving back every turn still to come restores the
//!   earliest next turn.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

/// The reference models of the parsers, shared with the fuzz targets
/// (which use every item; here a few are unused).
#[path = "properties/model.rs"]
#[allow(dead_code)]
mod model;

/// Drives `CircuitState` and the model's state machine side by side.
#[path = "properties/circuit_harness.rs"]
mod circuit_harness;

use http_resilience::classify::{rate_limit_exhausted, should_retry_header};
use http_resilience::policy::MAX_SETTING;
use http_resilience::retry_after::{
    parse_epoch_reset, parse_retry_after, parse_retry_after_ms, server_hint,
};
use http_resilience::{
    Decision, DelaySource, FailureKind, Jitter, LongHint, Outcome, RequestMeta, RetryPolicy,
    RetryPolicyBuilder, RetryState, StopReason,
};

const NS_PER_SEC: u64 = 1_000_000_000;
/// The parsers' documented upper bound for a hint (100 years).
const MAX_HINT_SECS: u64 = 100 * 365 * 24 * 3600;
const MAX_HINT: Duration = Duration::from_secs(MAX_HINT_SECS);
/// 9999-12-31T23:59:59Z, the last second an HTTP-date can name.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;
/// Around 2023-11: a "now" for header maps whose values are near it.
const NOW_BASE_SECS: u64 = 1_700_000_000;

/// 256 cases per property; no regression files are written (a failure
/// prints its minimal input, which is what to keep).
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    }
}

// ---------------------------------------------------------------------
// Shared strategies and models
// ---------------------------------------------------------------------

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
    ]
}

/// A duration in `[lo_ns, hi_ns]`, mostly log-uniform (so that every scale
/// from nanoseconds to hours is exercised), with the bounds themselves.
fn duration_between(lo_ns: u64, hi_ns: u64) -> impl Strategy<Value = Duration> {
    assert!(0 < lo_ns && lo_ns <= hi_ns);
    prop_oneof![
        1 => Just(Duration::from_nanos(lo_ns)),
        1 => Just(Duration::from_nanos(hi_ns)),
        2 => (lo_ns..=hi_ns).prop_map(Duration::from_nanos),
        6 => (0.0f64..=1.0).prop_map(move |t| {
            let (lo, hi) = (lo_ns as f64, hi_ns as f64);
            let ns = (lo * (hi / lo).powf(t)).round() as u64;
            Duration::from_nanos(ns.clamp(lo_ns, hi_ns))
        }),
    ]
}

/// Valid multipliers: 1.0..=10.0, with 1.0, 2.0, 10.0 and values just above 1.
fn multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(2.0),
        Just(10.0),
        1.0f64..=1.01,
        1.0f64..=10.0,
    ]
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
    seed: Option<u64>,
}

impl Schedule {
    fn builder(&self) -> RetryPolicyBuilder {
        let b = RetryPolicy::builder()
            .initial_backoff(self.initial)
            .max_backoff(self.max)
            .multiplier(self.multiplier)
            .jitter(self.jitter);
        match self.seed {
            Some(seed) => b.seed(seed),
            None => b,
        }
    }

    fn policy(&self) -> RetryPolicy {
        self.builder().build().expect("a valid schedule")
    }

    /// The same schedule without jitter: its delays are the bases.
    fn unjittered(&self) -> RetryPolicy {
        Schedule {
            jitter: Jitter::None,
            ..*self
        }
        .policy()
    }
}

/// initial in 1ns..=10s, max in initial..=1h (sometimes equal), every jitter.
fn schedule(seed: impl Strategy<Value = Option<u64>>) -> impl Strategy<Value = Schedule> {
    (
        duration_between(1, 10 * NS_PER_SEC),
        duration_between(1, 3600 * NS_PER_SEC),
        prop::bool::weighted(0.15),
        multiplier(),
        jitter(),
        seed,
    )
        .prop_map(|(a, b, equal, multiplier, jitter, seed)| {
            let initial = a.min(b);
            let max = if equal { initial } else { a.max(b) };
            Schedule {
                initial,
                max,
                multiplier,
                jitter,
                seed,
            }
        })
}

/// The reference schedule: `min(initial * multiplier^n, max)` in exact-ish
/// floating point, before rounding to nanoseconds.
fn model_base_ns(s: &Schedule, n: u64) -> f64 {
    let x = s.initial.as_nanos() as f64 * s.multiplier.powf(n as f64);
    x.min(s.max.as_nanos() as f64)
}

/// How far the crate's delay may be from the model: half a nanosecond of
/// rounding plus the float error of `powi`/`powf` (about `n` ulps), which is
/// far below 1 ns for n <= 200 at the scales tested.
fn base_tolerance_ns(model_ns: f64, n: u64) -> f64 {
    1.0 + (model_ns * n as f64 * 2.5e-16).floor()
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `max(0, at - now)` for instants given as nanoseconds since the epoch.
fn wait_ns(at_ns: i128, now: SystemTime) -> i128 {
    (at_ns - nanos_since_epoch(now)).max(0)
}

fn ns_to_duration(ns: i128) -> Duration {
    let ns = u128::try_from(ns).expect("non-negative");
    Duration::new(
        (ns / u128::from(NS_PER_SEC)) as u64,
        (ns % u128::from(NS_PER_SEC)) as u32,
    )
}

/// A wall-clock "now": anywhere an HTTP-date can name (with nanoseconds),
/// the epoch itself, or before it.
fn wall_now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        6 => (0..=MAX_HTTP_DATE_SECS + 1000, 0..NS_PER_SEC as u32)
            .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
        3 => (-10_000_000i64..=10_000_000, 0..NS_PER_SEC as u32).prop_map(|(off, n)| {
            UNIX_EPOCH + Duration::new(NOW_BASE_SECS.saturating_add_signed(off), n)
        }),
        1 => Just(UNIX_EPOCH),
        1 => (1u64..=10_000_000_000, 0..NS_PER_SEC as u32)
            .prop_map(|(s, n)| UNIX_EPOCH - Duration::new(s, n)),
    ]
}

/// Optional white space (space and tab), as RFC 9110 allows around values.
fn ows() -> impl Strategy<Value = String> {
    "[ \t]{0,3}"
}

/// The three HTTP-date forms of a second: IMF-fixdate (via `httpdate`),
/// asctime, and RFC 850 (only for 1970..=2069, its two-digit years).
fn date_forms(secs: u64) -> Vec<String> {
    let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (wd, day, mon, year, time) = (
        &imf[0..3],
        &imf[5..7],
        &imf[8..11],
        &imf[12..16],
        &imf[17..25],
    );
    let day_n: u32 = day.parse().expect("day");
    let year_n: u32 = year.parse().expect("year");
    let mut forms = vec![imf.clone(), format!("{wd} {mon} {day_n:>2} {time} {year}")];
    if (1970..2070).contains(&year_n) {
        let full = match wd {
            "Mon" => "Monday",
            "Tue" => "Tuesday",
            "Wed" => "Wednesday",
            "Thu" => "Thursday",
            "Fri" => "Friday",
            "Sat" => "Saturday",
            "Sun" => "Sunday",
            other => panic!("weekday {other}"),
        };
        forms.push(format!(
            "{full}, {day}-{mon}-{:02} {time} GMT",
            year_n % 100
        ));
    }
    forms
}

/// Numeric-looking values that every parser must refuse: signs, exponents,
/// letters (never an HTTP-date), non-ASCII digits, the empty string.
fn invalid_number() -> impl Strategy<Value = String> {
    let core = || "[0-9]{1,8}(\\.[0-9]{1,3})?";
    prop_oneof![
        (core(), "[+-]").prop_map(|(c, s)| format!("{s}{c}")),
        (core(), "[eE][+-]?[0-9]{1,3}").prop_map(|(c, e)| format!("{c}{e}")),
        (core(), "[a-zA-Z]{1,4}").prop_map(|(c, l)| format!("{c}{l}")),
        (core(), "[a-zA-Z]{1,4}").prop_map(|(c, l)| format!("{l}{c}")),
        (core(), "[a-zA-Z]", any::<Index>()).prop_map(|(c, l, at)| {
            let at = at.index(c.len() + 1);
            format!("{}{l}{}", &c[..at], &c[at..])
        }),
        core().prop_map(|c| format!("0x{c}")),
        prop::sample::select(vec![
            "",
            " ",
            "\t",
            " \t ",
            "inf",
            "-inf",
            "+inf",
            "nan",
            "NaN",
            "infinity",
            "Infinity",
            "e",
            "E5",
            ".",
            "-",
            "+",
            "-0",
            "+0",
            "1e3",
            "1E-3",
            "0x10",
            "soon",
            "\u{b2}",
            "\u{661}\u{662}",
            "\u{ff15}",
            "1\u{b2}",
            "12\u{a0}",
        ])
        .prop_map(String::from),
    ]
}

// ---------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------

/// Checks one drawn delay `d` (the `n`-th since the start or last reset)
/// against its jitter's range. `base` is the crate's un-jittered delay for
/// the same `n`, `prev` the previous delay of this backoff (or `initial`).
fn check_delay(
    s: &Schedule,
    n: u64,
    d: Duration,
    base: Duration,
    prev: Duration,
) -> Result<(), TestCaseError> {
    prop_assert!(d <= s.max, "delay {d:?} > max_backoff {:?} at n={n}", s.max);
    let model = model_base_ns(s, n);
    let tol = base_tolerance_ns(model, n);
    prop_assert!(
        (base.as_nanos() as f64 - model).abs() <= tol,
        "base {base:?} at n={n}, model {model} ns"
    );
    match s.jitter {
        Jitter::None => prop_assert_eq!(d, base),
        Jitter::Full => prop_assert!(d <= base, "full: {d:?} > base {base:?}"),
        Jitter::Equal => prop_assert!(
            d >= base / 2 && d <= base,
            "equal: {d:?} outside [{:?}, {base:?}]",
            base / 2
        ),
        Jitter::Decorrelated => {
            let high = prev.saturating_mul(3).max(s.initial).min(s.max);
            prop_assert!(
                d >= s.initial && d <= high + Duration::from_nanos(1),
                "decorrelated: {d:?} outside [{:?}, {high:?}] (prev {prev:?})",
                s.initial
            );
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Every delay is capped, follows its jitter's range and (with no
    /// jitter) the exact capped exponential schedule, also after thousands
    /// of draws; `reset` starts the schedule over.
    #[test]
    fn backoff_delays_follow_the_schedule(
        s in schedule(proptest::option::of(any::<u64>())),
        skip in prop_oneof![3 => Just(0usize), 1 => 0usize..=5_000],
        draws in 1usize..=200,
        after_reset in 1usize..=20,
    ) {
        let policy = s.policy();
        let plain = s.unjittered();
        let (mut b, mut bases) = (policy.backoff(), plain.backoff());
        let mut prev = s.initial;
        let mut prev_base = Duration::ZERO;
        for i in 0..skip + draws {
            let n = i as u64;
            let (d, base) = (b.next().expect("endless"), bases.next_delay());
            prop_assert!(base >= prev_base, "no-jitter schedule decreased at n={n}");
            check_delay(&s, n, d, base, prev)?;
            prop_assert_eq!(b.retries(), i as u32 + 1);
            prev = d;
            prev_base = base;
        }
        b.reset();
        bases.reset();
        prop_assert_eq!(b.retries(), 0);
        let mut prev = s.initial;
        for i in 0..after_reset {
            let (d, base) = (b.next_delay(), bases.next_delay());
            if i == 0 {
                prop_assert_eq!(base, s.initial, "the first base is initial_backoff");
            }
            check_delay(&s, i as u64, d, base, prev)?;
            prev = d;
        }
    }

    /// With a seed, the n-th backoff of a policy is the same for two policies
    /// built alike; consecutive backoffs of one policy differ (when there is
    /// room for randomness).
    #[test]
    fn seeded_backoffs_are_reproducible_and_distinct(
        s in schedule(any::<u64>().prop_map(Some)),
        draws in 16usize..=64,
    ) {
        let (p1, p2) = (s.policy(), s.policy());
        let run = |p: &RetryPolicy| -> Vec<Vec<Duration>> {
            (0..3).map(|_| p.backoff().take(draws).collect()).collect()
        };
        let (r1, r2) = (run(&p1), run(&p2));
        prop_assert_eq!(&r1, &r2);
        let room = s.initial >= Duration::from_micros(1)
            && s.max >= s.initial.saturating_mul(4);
        if s.jitter != Jitter::None && room {
            prop_assert_ne!(&r1[0], &r1[1]);
            prop_assert_ne!(&r1[1], &r1[2]);
            prop_assert_ne!(&r1[0], &r1[2]);
        }
        if s.jitter == Jitter::None {
            prop_assert_eq!(&r1[0], &r1[1]);
        }
    }
}

// ---------------------------------------------------------------------
// Builder validation
// ---------------------------------------------------------------------

fn any_duration() -> impl Strategy<Value = Duration> {
    let max_ns = MAX_SETTING.as_nanos() as u64;
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(MAX_SETTING),
        Just(MAX_SETTING - Duration::from_nanos(1)),
        Just(MAX_SETTING + Duration::from_nanos(1)),
        Just(Duration::MAX),
        (any::<u64>(), 0..NS_PER_SEC as u32).prop_map(|(s, n)| Duration::new(s, n)),
        (0..=2 * max_ns).prop_map(Duration::from_nanos),
        duration_between(1, 2 * max_ns),
        duration_between(1, 2 * max_ns),
    ]
}

fn any_multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            f64::from_bits(1.0f64.to_bits() - 1),
            f64::from_bits(1.0f64.to_bits() + 1),
            -1.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            1e300,
        ]),
        -10.0f64..10.0,
        0.9f64..1.1,
        1.0f64..1e300,
    ]
}

#[derive(Debug, Clone)]
struct BuilderCase {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    max_retry_after: Duration,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    max_retries: u32,
    jitter: Jitter,
    seed: Option<u64>,
}

fn builder_case() -> impl Strategy<Value = BuilderCase> {
    (
        (any_duration(), any_duration(), any::<bool>()),
        any_multiplier(),
        prop_oneof![Just(Duration::from_secs(120)), any_duration()],
        proptest::option::of(any_duration()),
        proptest::option::of(any_duration()),
        any::<u32>(),
        jitter(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(
                (initial, max, ordered),
                multiplier,
                max_retry_after,
                deadline,
                attempt_timeout,
                max_retries,
                jitter,
                seed,
            )| {
                // Half the time, order the pair so that valid policies are common.
                let (initial, max) = if ordered {
                    (initial.min(max), initial.max(max))
                } else {
                    (initial, max)
                };
                BuilderCase {
                    initial,
                    max,
                    multiplier,
                    max_retry_after,
                    deadline,
                    attempt_timeout,
                    max_retries,
                    jitter,
                    seed,
                }
            },
        )
}

/// The validation rules, in their documented order.
fn expected_error_field(c: &BuilderCase) -> Option<&'static str> {
    let ok = |d: Duration| !d.is_zero() && d <= MAX_SETTING;
    if !ok(c.initial) {
        return Some("initial_backoff");
    }
    if !ok(c.max) {
        return Some("max_backoff");
    }
    if c.initial > c.max {
        return Some("initial_backoff");
    }
    if !(c.multiplier.is_finite() && c.multiplier >= 1.0) {
        return Some("multiplier");
    }
    if !ok(c.max_retry_after) {
        return Some("max_retry_after");
    }
    if c.deadline.is_some_and(|d| !ok(d)) {
        return Some("deadline");
    }
    if c.attempt_timeout.is_some_and(|d| !ok(d)) {
        return Some("attempt_timeout");
    }
    None
}

proptest! {
    #![proptest_config(config())]

    /// `build` never panics, accepts exactly the valid settings and names
    /// the first offending field; an accepted policy keeps every setting and
    /// its backoff stays capped even at the extremes (365 days, huge
    /// multipliers).
    #[test]
    fn build_validates_like_the_model(c in builder_case()) {
        let mut b = RetryPolicy::builder()
            .initial_backoff(c.initial)
            .max_backoff(c.max)
            .multiplier(c.multiplier)
            .max_retry_after(c.max_retry_after)
            .max_retries(c.max_retries)
            .jitter(c.jitter);
        if let Some(d) = c.deadline {
            b = b.deadline(d);
        }
        if let Some(d) = c.attempt_timeout {
            b = b.attempt_timeout(d);
        }
        if let Some(seed) = c.seed {
            b = b.seed(seed);
        }
        match (b.build(), expected_error_field(&c)) {
            (Ok(p), None) => {
                prop_assert_eq!(p.initial_backoff(), c.initial);
                prop_assert_eq!(p.max_backoff(), c.max);
                prop_assert_eq!(p.multiplier().to_bits(), c.multiplier.to_bits());
                prop_assert_eq!(p.max_retry_after(), c.max_retry_after);
                prop_assert_eq!(p.deadline(), c.deadline);
                prop_assert_eq!(p.attempt_timeout(), c.attempt_timeout);
                prop_assert_eq!(p.max_retries(), c.max_retries);
                prop_assert_eq!(p.jitter(), c.jitter);
                prop_assert_eq!(p.seed(), c.seed);
                let mut prev = Duration::ZERO;
                for d in p.backoff().take(64) {
                    prop_assert!(d <= c.max, "{d:?} > {:?}", c.max);
                    if c.jitter == Jitter::None {
                        prop_assert!(d >= prev, "{d:?} < {prev:?}");
                    }
                    prev = d;
                }
            }
            (Err(e), Some(field)) => {
                prop_assert_eq!(e.field(), field, "{}", e);
                prop_assert_eq!(e.code(), "INVALID_CONFIG");
                prop_assert!(e.to_string().contains(field), "{}", e);
            }
            (Ok(p), Some(field)) => {
                prop_assert!(false, "accepted, expected an error on {field}: {p:?}");
            }
            (Err(e), None) => prop_assert!(false, "refused a valid policy: {e}"),
        }
    }
}

// ---------------------------------------------------------------------
// Server-hint parsers
// ---------------------------------------------------------------------

/// Valid strings with a few bytes overwritten, or truncated: these reach
/// deep into the date and number parsers.
fn near_miss() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        (0..=MAX_HTTP_DATE_SECS, any::<Index>()).prop_map(|(s, i)| {
            let forms = date_forms(s);
            i.get(&forms).clone().into_bytes()
        }),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        (any::<u64>(), "[0-9]{1,4}").prop_map(|(n, f)| format!("{n}.{f}").into_bytes()),
    ];
    let edit = prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| (i, Some(b))),
        any::<Index>().prop_map(|i| (i, None)),
    ];
    (base, proptest::collection::vec(edit, 0..4)).prop_map(|(mut bytes, edits)| {
        for (at, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match byte {
                Some(b) => bytes[at] = b,
                None => bytes.truncate(at),
            }
        }
        bytes
    })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        any::<String>().prop_map(String::into_bytes),
        near_miss(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// No input makes a parser panic, and whatever they return is within
    /// their documented bounds.
    #[test]
    fn parsers_never_panic(value in any_bytes(), now in wall_now()) {
        let _ = parse_retry_after(&value, now);
        if let Some(d) = parse_retry_after_ms(&value) {
            prop_assert!(d <= MAX_HINT, "{d:?}");
        }
        if let Some(d) = parse_epoch_reset(&value, now) {
            prop_assert!(d <= MAX_HINT, "{d:?}");
        }
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            for name in ["retry-after-ms", "retry-after", "x-ratelimit-reset"] {
                let mut headers = HeaderMap::new();
                headers.insert(HeaderName::from_static(name), v.clone());
                headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                if let Some(hint) = server_hint(&headers, now) {
                    prop_assert!(!hint.delay.is_zero());
                }
            }
        }
    }

    /// Decimal seconds: `Retry-After` reads them as a delay (up to 100
    /// years), `x-ratelimit-reset` as an epoch time, `retry-after-ms` as
    /// milliseconds; leading zeros and surrounding spaces/tabs are fine.
    #[test]
    fn decimal_seconds_parse_like_the_model(
        n in prop_oneof![
            4 => 0u64..=1_000,
            4 => 0..=MAX_HINT_SECS,
            1 => Just(MAX_HINT_SECS),
            1 => Just(MAX_HINT_SECS + 1),
            2 => any::<u64>(),
            1 => Just(u64::MAX),
        ],
        zeros in prop_oneof![3 => Just(0usize), 1 => 1usize..=3],
        pre in ows(),
        post in ows(),
        now in wall_now(),
    ) {
        let digits = format!("{}{n}", "0".repeat(zeros));
        let text = format!("{pre}{digits}{post}");
        let bytes = text.as_bytes();

        let want = (n <= MAX_HINT_SECS).then(|| Duration::from_secs(n));
        prop_assert_eq!(parse_retry_after(bytes, now), want, "{:?}", text);

        let wait = wait_ns(i128::from(n) * i128::from(NS_PER_SEC), now);
        let want = (wait <= MAX_HINT.as_nanos() as i128).then(|| ns_to_duration(wait));
        prop_assert_eq!(parse_epoch_reset(bytes, now), want, "{:?} at {:?}", text, now);

        if digits.len() <= 20 {
            check_ms(&text, u128::from(n) * 1_000_000)?;
        }
    }

    /// A number too large for a u64 is refused, never wrapped.
    #[test]
    fn huge_numbers_are_refused(digits in "[1-9][0-9]{20,40}", now in wall_now()) {
        let b = digits.as_bytes();
        prop_assert_eq!(parse_retry_after(b, now), None);
        prop_assert_eq!(parse_epoch_reset(b, now), None);
        prop_assert_eq!(parse_retry_after_ms(b), None);
    }

    /// Epoch resets near now, or 100 years (the bound) away: the wait is
    /// `max(0, reset - now)`, refused above the bound.
    #[test]
    fn epoch_resets_near_now_and_at_the_bound(
        (at, now) in prop_oneof![
            (-3_000_000i64..=3_000_000, -1_000_000i64..=1_000_000, 0..NS_PER_SEC as u32).prop_map(
                |(offset, now_offset, ns)| (
                    NOW_BASE_SECS.saturating_add_signed(offset),
                    UNIX_EPOCH + Duration::new(NOW_BASE_SECS.saturating_add_signed(now_offset), ns),
                )
            ),
            (0..=10_000_000_000u64, -2i64..=2, prop_oneof![Just(0u32), 0..NS_PER_SEC as u32]).prop_map(
                |(now_secs, delta, ns)| (
                    (now_secs + MAX_HINT_SECS).saturating_add_signed(delta),
                    UNIX_EPOCH + Duration::new(now_secs, ns),
                )
            ),
        ],
    ) {
        let wait = wait_ns(i128::from(at) * i128::from(NS_PER_SEC), now);
        let want = (wait <= MAX_HINT.as_nanos() as i128).then(|| ns_to_duration(wait));
        prop_assert_eq!(parse_epoch_reset(at.to_string().as_bytes(), now), want);
    }

    /// Every HTTP-date form of any second from 1970 to 9999 reads as
    /// `max(0, date - now)`.
    #[test]
    fn http_dates_parse_like_the_model(
        (date, now) in prop_oneof![
            (0..=MAX_HTTP_DATE_SECS, wall_now()),
            (0..=MAX_HTTP_DATE_SECS, -100_000i64..=100_000, 0..NS_PER_SEC as u32).prop_map(
                |(date, off, ns)| {
                    let secs = date.saturating_add_signed(off);
                    (date, UNIX_EPOCH + Duration::new(secs, ns))
                }
            ),
        ],
        form in any::<Index>(),
        pre in ows(),
        post in ows(),
    ) {
        let forms = date_forms(date);
        let text = format!("{pre}{}{post}", form.get(&forms));
        let want = ns_to_duration(wait_ns(i128::from(date) * i128::from(NS_PER_SEC), now));
        prop_assert_eq!(parse_retry_after(text.as_bytes(), now), Some(want), "{:?} at {:?}", text, now);
    }

    /// Fractional milliseconds (up to 3 decimals) read as the right duration
    /// within 1 µs, up to 100 years.
    #[test]
    fn fractional_millis_parse_like_the_model(
        int in prop_oneof![
            3 => 0u64..=100_000,
            3 => 0..=MAX_HINT_SECS * 1000,
            1 => (MAX_HINT_SECS * 1000 - 2)..=(MAX_HINT_SECS * 1000 + 2),
            1 => 0..=10_000_000_000_000_000u64,
        ],
        frac in "[0-9]{0,3}",
        pre in ows(),
        post in ows(),
    ) {
        let text = if frac.is_empty() {
            format!("{pre}{int}{post}")
        } else {
            format!("{pre}{int}.{frac}{post}")
        };
        let frac_ns = if frac.is_empty() {
            0
        } else {
            let padded = format!("{frac:0<3}");
            padded.parse::<u128>().expect("digits") * 1_000
        };
        check_ms(&text, u128::from(int) * 1_000_000 + frac_ns)?;
    }

    /// Signs, exponents, letters, non-ASCII digits and empty values are
    /// refused by every parser (and fractions by the seconds parsers).
    #[test]
    fn malformed_numbers_are_refused(
        value in invalid_number(),
        fraction in "[0-9]{1,6}\\.[0-9]{0,3}",
        pre in ows(),
        post in ows(),
        now in wall_now(),
    ) {
        let text = format!("{pre}{value}{post}");
        let b = text.as_bytes();
        prop_assert_eq!(parse_retry_after(b, now), None, "{:?}", text);
        prop_assert_eq!(parse_retry_after_ms(b), None, "{:?}", text);
        prop_assert_eq!(parse_epoch_reset(b, now), None, "{:?}", text);
        let text = format!("{pre}{fraction}{post}");
        let b = text.as_bytes();
        prop_assert_eq!(parse_retry_after(b, now), None, "{:?}", text);
        prop_assert_eq!(parse_epoch_reset(b, now), None, "{:?}", text);
    }
}

/// `parse_retry_after_ms(text)` against the exact value in nanoseconds:
/// within 1 µs when at most 100 years (minus 1 µs), `None` when above
/// (plus 1 µs); either is fine within 1 µs of the bound.
fn check_ms(text: &str, exact_ns: u128) -> Result<(), TestCaseError> {
    const TOL: u128 = 1_000;
    let got = parse_retry_after_ms(text.as_bytes());
    let bound = MAX_HINT.as_nanos();
    match got {
        Some(d) => {
            prop_assert!(
                exact_ns <= bound + TOL,
                "{text:?} -> {d:?}, above the bound"
            );
            prop_assert!(
                d.as_nanos().abs_diff(exact_ns) <= TOL,
                "{text:?} -> {d:?}, want {exact_ns} ns"
            );
        }
        None => prop_assert!(
            exact_ns + TOL > bound,
            "{text:?} -> None, want {exact_ns} ns"
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------
// server_hint: precedence
// ---------------------------------------------------------------------

const HINT_HEADERS: &[&str] = &[
    "retry-after-ms",
    "retry-after",
    "Retry-After",
    "x-ratelimit-remaining",
    "X-RateLimit-Remaining",
    "x-ratelimit-reset",
    "x-should-retry",
    "x-other",
];

fn hint_value() -> impl Strategy<Value = Vec<u8>> {
    let around = -2_000_000i64..=2_000_000;
    prop_oneof![
        (0u64..=400).prop_map(|n| n.to_string().into_bytes()),
        (0u64..=400_000, "[0-9]{0,3}").prop_map(|(n, f)| {
            if f.is_empty() {
                n.to_string().into_bytes()
            } else {
                format!("{n}.{f}").into_bytes()
            }
        }),
        (around.clone(), any::<Index>()).prop_map(|(off, i)| {
            let forms = date_forms(NOW_BASE_SECS.saturating_add_signed(off));
            i.get(&forms).clone().into_bytes()
        }),
        around.prop_map(|off| NOW_BASE_SECS
            .saturating_add_signed(off)
            .to_string()
            .into_bytes()),
        prop::sample::select(vec!["0", " 0 ", "\t0", "00", "1", ""])
            .prop_map(|s| s.as_bytes().to_vec()),
        invalid_number().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

proptest! {
    #![proptest_config(config())]

    /// `server_hint` picks the first valid positive hint of
    /// `retry-after-ms`, `Retry-After` (its first value) and, with
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-reset`.
    #[test]
    fn server_hint_follows_the_precedence(
        pairs in proptest::collection::vec(
            (prop::sample::select(HINT_HEADERS), hint_value()),
            0..8,
        ),
        now_offset in -1_000_000i64..=1_000_000,
        now_ns in 0..NS_PER_SEC as u32,
    ) {
        let now = UNIX_EPOCH + Duration::new(NOW_BASE_SECS.saturating_add_signed(now_offset), now_ns);
        let mut headers = HeaderMap::new();
        for (name, value) in &pairs {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("valid name");
                headers.append(name, value);
            }
        }
        let first = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
        let positive = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let want = if let Some(d) = positive(first("retry-after-ms").and_then(parse_retry_after_ms)) {
            Some((d, DelaySource::RetryAfterMs))
        } else if let Some(d) = positive(first("retry-after").and_then(|v| parse_retry_after(v, now))) {
            Some((d, DelaySource::RetryAfter))
        } else if first("x-ratelimit-remaining").is_some_and(|v| trim_ows(v) == b"0") {
            positive(first("x-ratelimit-reset").and_then(|v| parse_epoch_reset(v, now)))
                .map(|d| (d, DelaySource::RateLimitReset))
        } else {
            None
        };
        let got = server_hint(&headers, now).map(|h| (h.delay, h.source));
        prop_assert_eq!(got, want, "{:?}", headers);
    }
}

// ---------------------------------------------------------------------
// Engine: deadline, max_retries, attempt timeouts
// ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A transient status, with an optional `retry-after` in seconds.
    Status(u16, Option<u64>),
    /// A transient transport error.
    Error(FailureKind),
}

#[derive(Debug, Clone)]
struct EngineCase {
    schedule: Schedule,
    max_retries: u32,
    deadline: Duration,
    attempt_timeout: Option<Duration>,
    max_retry_after: Duration,
    on_long_hint: LongHint,
    /// Whether attempts end by their timeout (as an adapter enforces), or
    /// may overrun it (a slow adapter, a clock jump).
    respect_timeouts: bool,
    steps: Vec<(Step, Duration)>,
}

fn step() -> impl Strategy<Value = Step> {
    let hint = proptest::option::of(prop_oneof![0u64..=3, 0u64..=300]);
    prop_oneof![
        3 => (prop::sample::select(vec![503u16, 429, 500, 502, 504, 408, 529]), hint)
            .prop_map(|(s, h)| Step::Status(s, h)),
        1 => prop::sample::select(vec![
            FailureKind::Connect,
            FailureKind::Timeout,
            FailureKind::ConnectionReset,
            FailureKind::ConnectionClosed,
        ])
        .prop_map(Step::Error),
    ]
}

/// How the deadline is drawn: at any scale, on round figures, or exactly
/// where the `j`-th wait would end (to probe the boundary).
#[derive(Debug, Clone, Copy)]
enum DeadlineKind {
    Any(Duration),
    Secs(u64),
    Initials(u32),
    Boundary(usize),
}

/// The end of the `j`-th wait if every wait before it were the hint or the
/// un-jittered base (exact with `Jitter::None`, and for hints).
fn boundary(
    s: &Schedule,
    max_retry_after: Duration,
    steps: &[(Step, Duration)],
    j: usize,
) -> Duration {
    let mut bases = s.unjittered().backoff();
    let mut t = Duration::ZERO;
    for (i, &(step, attempt)) in steps.iter().enumerate() {
        t += attempt;
        let base = bases.next_delay();
        let wait = match step {
            Step::Status(_, Some(h)) if h > 0 && Duration::from_secs(h) <= max_retry_after => {
                Duration::from_secs(h)
            }
            _ => base,
        };
        t += wait;
        if i == j {
            break;
        }
    }
    t.max(Duration::from_nanos(1))
}

fn engine_case() -> impl Strategy<Value = EngineCase> {
    let schedule = schedule(proptest::option::of(any::<u64>())).prop_map(|mut s| {
        if !matches!(s.jitter, Jitter::None | Jitter::Full) {
            s.jitter = Jitter::Full;
        }
        s
    });
    let deadline = prop_oneof![
        2 => duration_between(1_000, 600 * NS_PER_SEC).prop_map(DeadlineKind::Any),
        1 => (1u64..=10).prop_map(DeadlineKind::Secs),
        1 => (1u32..=20).prop_map(DeadlineKind::Initials),
        3 => (0usize..4).prop_map(DeadlineKind::Boundary),
    ];
    let attempt = prop_oneof![
        2 => Just(Duration::ZERO),
        1 => (1u64..=3).prop_map(Duration::from_secs),
        3 => duration_between(1, 600 * NS_PER_SEC),
    ];
    (
        schedule,
        0u32..=12,
        deadline,
        proptest::option::of(duration_between(1, 600 * NS_PER_SEC)),
        prop_oneof![
            Just(Duration::from_secs(120)),
            (1u64..=4).prop_map(Duration::from_secs),
            duration_between(1, 600 * NS_PER_SEC)
        ],
        prop_oneof![Just(LongHint::GiveUp), Just(LongHint::UseBackoff)],
        any::<bool>(),
        proptest::collection::vec((step(), attempt), 1..=16),
    )
        .prop_map(
            |(
                schedule,
                max_retries,
                deadline,
                attempt_timeout,
                max_retry_after,
                on_long_hint,
                respect_timeouts,
                steps,
            )| {
                let deadline = match deadline {
                    DeadlineKind::Any(d) => d,
                    DeadlineKind::Secs(k) => Duration::from_secs(k),
                    DeadlineKind::Initials(k) => schedule.initial * k,
                    DeadlineKind::Boundary(j) => boundary(&schedule, max_retry_after, &steps, j),
                };
                EngineCase {
                    schedule,
                    max_retries,
                    deadline,
                    attempt_timeout,
                    max_retry_after,
                    on_long_hint,
                    respect_timeouts,
                    steps,
                }
            },
        )
}

fn run_engine(c: &EngineCase) -> Result<(), TestCaseError> {
    let fixed = UNIX_EPOCH + Duration::from_secs(NOW_BASE_SECS);
    let mut b = c
        .schedule
        .builder()
        .max_retries(c.max_retries)
        .deadline(c.deadline)
        .max_retry_after(c.max_retry_after)
        .on_long_hint(c.on_long_hint)
        .wall_clock(move || fixed);
    if let Some(t) = c.attempt_timeout {
        b = b.attempt_timeout(t);
    }
    let policy = b.build().expect("valid policy");
    // The same schedule without jitter: the bases, drawn in step with the
    // engine's own backoff.
    let mut bases = c.schedule.unjittered().backoff();

    let req_headers = HeaderMap::new();
    let meta = RequestMeta::new(&Method::GET, "http", "h", "/", &req_headers);
    let t0 = Instant::now();
    let mut now = t0;
    let mut state = RetryState::new(&policy, &meta, t0);
    let io_error = std::io::Error::other("transient");
    let (mut attempts, mut retries, mut waited) = (0u32, 0u32, Duration::ZERO);
    let d = c.deadline;

    for &(step, attempt) in &c.steps {
        // Before the attempt: its timeout never exceeds what is left.
        let left = d.saturating_sub(now - t0);
        let timeout = state.attempt_timeout(now);
        prop_assert!(
            timeout.is_some_and(|t| t <= left),
            "{timeout:?} > left {left:?}"
        );
        let want = c.attempt_timeout.map_or(left, |a| a.min(left));
        prop_assert_eq!(timeout, Some(want));
        let attempt = match (c.respect_timeouts, timeout) {
            (true, Some(t)) => attempt.min(t),
            _ => attempt,
        };
        now += attempt;
        let elapsed = now - t0;

        let mut headers = HeaderMap::new();
        let (outcome, hint) = match step {
            Step::Status(status, hint) => {
                if let Some(secs) = hint {
                    headers.insert("retry-after", HeaderValue::from(secs));
                }
                let status = StatusCode::from_u16(status).expect("status");
                let hint = hint.filter(|&s| s > 0).map(Duration::from_secs);
                (
                    Outcome::Response {
                        status,
                        headers: &headers,
                        body: None,
                    },
                    hint,
                )
            }
            Step::Error(kind) => (
                Outcome::Error {
                    kind,
                    error: &io_error,
                },
                None,
            ),
        };
        let decision = state.decide(&meta, &outcome, now);
        attempts += 1;

        // The invariants.
        let retries_before = retries;
        if let Decision::Retry { delay, .. } = decision {
            prop_assert!(
                elapsed + delay < d,
                "a wait crosses the deadline: {elapsed:?} + {delay:?} >= {d:?}"
            );
            retries += 1;
            prop_assert!(
                retries <= c.max_retries,
                "{retries} retries > {}",
                c.max_retries
            );
        }

        // The model, check by check (see the engine's module docs).
        if elapsed >= d {
            prop_assert_eq!(decision, Decision::Fail(StopReason::Deadline));
            break;
        }
        if retries_before >= c.max_retries {
            prop_assert_eq!(decision, Decision::Fail(StopReason::MaxRetries));
            break;
        }
        let base = bases.next_delay();
        let chosen = match hint {
            Some(h) if h > c.max_retry_after => match c.on_long_hint {
                LongHint::GiveUp => {
                    let reason = StopReason::RetryAfterTooLong { hint: h };
                    prop_assert_eq!(decision, Decision::Fail(reason));
                    break;
                }
                _ => None,
            },
            Some(h) => Some((h, DelaySource::RetryAfter)),
            None => None,
        };
        let exact = match chosen {
            Some(w) => Some(w),
            None if c.schedule.jitter == Jitter::None => Some((base, DelaySource::Backoff)),
            None => None,
        };
        match exact {
            Some((wait, source)) => {
                if elapsed + wait >= d {
                    prop_assert_eq!(decision, Decision::Fail(StopReason::Deadline));
                    break;
                }
                prop_assert_eq!(
                    decision,
                    Decision::Retry {
                        delay: wait,
                        source
                    }
                );
            }
            None => match decision {
                // Full jitter: somewhere in [0, base].
                Decision::Retry { delay, source } => {
                    prop_assert_eq!(source, DelaySource::Backoff);
                    prop_assert!(delay <= base, "{delay:?} > base {base:?}");
                }
                Decision::Fail(StopReason::Deadline) => {
                    prop_assert!(
                        elapsed + base >= d,
                        "stopped for the deadline though even the base fits: {elapsed:?} + {base:?} < {d:?}"
                    );
                    break;
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            },
        }
        if let Decision::Retry { delay, .. } = decision {
            waited += delay;
            now += delay;
        }
    }
    let report = state.report();
    prop_assert_eq!(report.attempts(), attempts);
    prop_assert_eq!(report.total_backoff(), waited);
    let left = d.saturating_sub(now - t0);
    prop_assert!(state.attempt_timeout(now).is_some_and(|t| t <= left));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the outcomes, hints and attempt durations: no wait crosses
    /// the deadline, at most `max_retries` retries happen, each attempt's
    /// timeout fits in what is left, and every decision is the one the
    /// documented checks call for.
    #[test]
    fn engine_never_waits_past_the_deadline(c in engine_case()) {
        run_engine(&c)?;
    }
}

// ---------------------------------------------------------------------
// Parsers against the shared reference models (tests/properties/model.rs,
// also what the fuzz targets compare with)
// ---------------------------------------------------------------------

/// All three value parsers on `value` against their models: exact for
/// `Retry-After` and epoch resets, within `f64` rounding for
/// `retry-after-ms` (either answer within rounding distance of the bound).
fn check_against_models(value: &[u8], now: SystemTime) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(value);
    let ns = |d: Option<Duration>| d.map(|d| d.as_nanos() as i128);
    prop_assert_eq!(
        ns(parse_retry_after(value, now)),
        model::model_retry_after(value, now),
        "Retry-After {:?} at {:?}",
        shown,
        now
    );
    prop_assert_eq!(
        ns(parse_epoch_reset(value, now)),
        model::model_epoch_reset(value, now),
        "x-ratelimit-reset {:?} at {:?}",
        shown,
        now
    );
    let got = ns(parse_retry_after_ms(value));
    match (got, model::model_retry_after_ms_exact(value)) {
        (Some(got), Some(exact)) => prop_assert!(
            (got - exact).abs() <= model::ms_tolerance_ns(exact),
            "retry-after-ms {shown:?} -> {got} ns, want {exact} ns"
        ),
        (Some(got), None) => prop_assert!(false, "retry-after-ms {shown:?} -> {got} ns, want None"),
        (None, Some(exact)) => prop_assert!(
            exact + model::ms_tolerance_ns(exact) > model::MAX_HINT_NS,
            "retry-after-ms {shown:?} -> None, want {exact} ns"
        ),
        (None, None) => {}
    }
    Ok(())
}

/// Zeller's congruence: the weekday of a Gregorian date, 0 = Monday (a
/// different formula from the model's day count, so each checks the
/// other).
fn zeller_weekday(y: i64, m: i64, d: i64) -> usize {
    let (y, m) = if m < 3 { (y - 1, m + 12) } else { (y, m) };
    let (k, j) = (y % 100, y / 100);
    // 0 = Saturday, 1 = Sunday, 2 = Monday, ...
    let h = (d + 13 * (m + 1) / 5 + k + k / 4 + j / 4 + 5 * j) % 7;
    ((h + 5) % 7) as usize
}

const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAY_NAMES: [(&str, &str); 7] = [
    ("Mon", "Monday"),
    ("Tue", "Tuesday"),
    ("Wed", "Wednesday"),
    ("Thu", "Thursday"),
    ("Fri", "Friday"),
    ("Sat", "Saturday"),
    ("Sun", "Sunday"),
];

/// An HTTP-date written field by field, in one of the three forms, with
/// fields mostly in range but sometimes just outside (day 0 or 32, Feb 29
/// of a common year, hour 24, second 60, year 1969 or 10000, a wrong
/// weekday), and whether it names a real second of 1970..=9999.
#[derive(Debug, Clone)]
struct FieldDate {
    text: String,
    valid: bool,
}

fn field_date() -> impl Strategy<Value = FieldDate> {
    let year = prop_oneof![
        4 => 1970i64..=2069,
        2 => 1960i64..=10_000,
        1 => prop::sample::select(vec![1969i64, 1970, 2000, 2100, 2400, 9999, 10_000]),
    ];
    let month = prop_oneof![8 => 1i64..=12, 1 => 0i64..=13];
    let day = prop_oneof![4 => 1i64..=28, 4 => 28i64..=31, 1 => 0i64..=32];
    let hms = (
        prop_oneof![8 => 0i64..=23, 1 => 0i64..=25],
        prop_oneof![8 => 0i64..=59, 1 => 0i64..=61],
        prop_oneof![8 => 0i64..=59, 1 => 0i64..=61],
    );
    let weekday = prop_oneof![4 => Just(None), 1 => (0usize..7).prop_map(Some)];
    (year, month, day, hms, weekday, 0usize..3).prop_map(
        |(year, month, day, (h, mi, s), weekday, form)| {
            // RFC 850 has two-digit years: 70..99 are 19xx, 00..69 20xx.
            let year = if form == 1 {
                let yy = year.rem_euclid(100);
                if yy < 70 { 2000 + yy } else { 1900 + yy }
            } else {
                year
            };
            let correct = zeller_weekday(year, month, day);
            let wd = weekday.unwrap_or(correct);
            let (short, long) = WEEKDAY_NAMES[wd];
            let mon = usize::try_from(month - 1)
                .ok()
                .and_then(|i| MONTH_NAMES.get(i))
                .copied()
                .unwrap_or("Xyz");
            let time = format!("{h:02}:{mi:02}:{s:02}");
            let text = match form {
                0 => format!("{short}, {day:02} {mon} {year:04} {time} GMT"),
                1 => format!("{long}, {day:02}-{mon}-{:02} {time} GMT", year % 100),
                _ => format!("{short} {mon} {day:>2} {time} {year:04}"),
            };
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let days_in_month = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let valid = (1970..=9999).contains(&year)
                && (1..=12).contains(&month)
                && (1..=days_in_month).contains(&day)
                && h < 24
                && mi < 60
                && s < 60
                && wd == correct;
            FieldDate { text, valid }
        },
    )
}

/// Values for `x-should-retry` and `x-ratelimit-remaining`.
fn flag_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "true",
            "TRUE",
            " True\t",
            "false",
            "FaLsE",
            "\tfalse ",
            "yes",
            "no",
            "1",
            "0",
            " 0",
            "0\t",
            "00",
            "0 0",
            "-0",
            "",
            "true,false",
            "\u{b0}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "[tTrRuUeEfFaAlLsS0 \t]{0,6}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

/// A response's headers: the names the parsers read (in several
/// spellings) and one they ignore, with hint or flag values, duplicates
/// included; values `http` refuses are dropped.
fn response_headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec(
        (
            prop::sample::select(HINT_HEADERS),
            prop_oneof![3 => hint_value(), 1 => flag_value()],
        ),
        0..8,
    )
    .prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("valid name");
                headers.append(name, value);
            }
        }
        headers
    })
}

/// A wall-clock "now" near the values `hint_value` draws.
fn near_now() -> impl Strategy<Value = SystemTime> {
    (-1_000_000i64..=1_000_000, 0..NS_PER_SEC as u32).prop_map(|(off, ns)| {
        UNIX_EPOCH + Duration::new(NOW_BASE_SECS.saturating_add_signed(off), ns)
    })
}

fn model_source(source: model::HintSource) -> DelaySource {
    match source {
        model::HintSource::RetryAfterMs => DelaySource::RetryAfterMs,
        model::HintSource::RetryAfter => DelaySource::RetryAfter,
        model::HintSource::RateLimitReset => DelaySource::RateLimitReset,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes, strings and near-miss dates and numbers: every
    /// parser gives exactly what its model gives.
    #[test]
    fn parsers_agree_with_the_reference_models(value in any_bytes(), now in wall_now()) {
        check_against_models(&value, now)?;
    }

    /// HTTP-dates written field by field, valid or just outside the
    /// calendar: read exactly when they name a real second with the right
    /// weekday (Zeller's rule here, a day count in the model), and then as
    /// the model reads them.
    #[test]
    fn field_by_field_dates_agree_with_the_reference_model(
        date in field_date(),
        pre in ows(),
        post in ows(),
        now in wall_now(),
    ) {
        let text = format!("{pre}{}{post}", date.text);
        check_against_models(text.as_bytes(), now)?;
        prop_assert_eq!(
            parse_retry_after(text.as_bytes(), now).is_some(),
            date.valid,
            "{:?}",
            text
        );
    }

    /// `server_hint`, `should_retry_header` and `rate_limit_exhausted` on
    /// whole header maps agree with the models (which use the model
    /// parsers, not the crate's).
    #[test]
    fn header_maps_agree_with_the_reference_models(headers in response_headers(), now in near_now()) {
        prop_assert_eq!(should_retry_header(&headers), model::model_should_retry(&headers), "{:?}", headers);
        prop_assert_eq!(rate_limit_exhausted(&headers), model::model_rate_limit_exhausted(&headers), "{:?}", headers);
        let got = server_hint(&headers, now);
        let Ok(want) = model::model_server_hint(&headers, now) else {
            return Ok(());
        };
        match (got, want) {
            (Some(got), Some(want)) => {
                prop_assert_eq!(got.source, model_source(want.source), "{:?}", headers);
                let got_ns = got.delay.as_nanos() as i128;
                prop_assert!((got_ns - want.ns).abs() <= want.tolerance, "{headers:?}: {got:?}, want {want:?}");
            }
            (None, None) => {}
            (got, want) => prop_assert!(false, "{headers:?} at {now:?}: {got:?}, want {want:?}"),
        }
    }
}

// ---------------------------------------------------------------------
// Engine: every kind of server hint, through a fixed wall clock
// ---------------------------------------------------------------------

#[derive(Debug, Clone)]
enum HintStep {
    Response(u16, HeaderMap),
    Error(FailureKind),
}

#[derive(Debug, Clone)]
struct HintCase {
    schedule: Schedule,
    max_retries: u32,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    on_long_hint: LongHint,
    retry_non_idempotent: bool,
    return_last_response: bool,
    method: Method,
    idempotency_key: bool,
    wall: SystemTime,
    steps: Vec<(HintStep, Duration)>,
}

fn hint_case() -> impl Strategy<Value = HintCase> {
    let status = prop_oneof![
        3 => prop::sample::select(vec![429u16, 503, 500, 502, 504, 408, 529, 403, 409]),
        1 => 100u16..=599,
    ];
    let step = prop_oneof![
        4 => (status, response_headers()).prop_map(|(s, h)| HintStep::Response(s, h)),
        1 => prop::sample::select(vec![
            FailureKind::Connect,
            FailureKind::Timeout,
            FailureKind::ConnectionReset,
            FailureKind::Tls,
        ])
        .prop_map(HintStep::Error),
    ];
    let attempt = prop_oneof![
        1 => Just(Duration::ZERO),
        2 => duration_between(1, 600 * NS_PER_SEC),
    ];
    (
        (
            schedule(any::<u64>().prop_map(Some)),
            0u32..=8,
            proptest::option::of(duration_between(1_000, 3_600 * NS_PER_SEC)),
            prop_oneof![
                Just(Duration::from_secs(120)),
                (1u64..=4).prop_map(Duration::from_secs),
                duration_between(1, 600 * NS_PER_SEC),
                Just(MAX_SETTING),
            ],
            prop_oneof![Just(LongHint::GiveUp), Just(LongHint::UseBackoff)],
        ),
        (
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec![Method::GET, Method::PUT, Method::POST, Method::PATCH]),
            any::<bool>(),
            near_now(),
        ),
        proptest::collection::vec((step, attempt), 1..=8),
    )
        .prop_map(
            |(
                (schedule, max_retries, deadline, max_retry_after, on_long_hint),
                (retry_non_idempotent, return_last_response, method, idempotency_key, wall),
                steps,
            )| HintCase {
                schedule,
                max_retries,
                deadline,
                max_retry_after,
                on_long_hint,
                retry_non_idempotent,
                return_last_response,
                method,
                idempotency_key,
                wall,
                steps,
            },
        )
}

fn run_hint_engine(c: &HintCase) -> Result<(), TestCaseError> {
    let wall = c.wall;
    let mut b = c
        .schedule
        .builder()
        .max_retries(c.max_retries)
        .max_retry_after(c.max_retry_after)
        .on_long_hint(c.on_long_hint)
        .retry_non_idempotent(c.retry_non_idempotent)
        .return_last_response(c.return_last_response)
        .wall_clock(move || wall);
    if let Some(d) = c.deadline {
        b = b.deadline(d);
    }
    let policy = b.build().expect("valid policy");
    let mut req_headers = HeaderMap::new();
    if c.idempotency_key {
        req_headers.insert("idempotency-key", HeaderValue::from_static("k"));
    }
    let meta = RequestMeta::new(&c.method, "http", "h", "/", &req_headers);
    let t0 = Instant::now();
    let mut now = t0;
    let mut state = RetryState::new(&policy, &meta, t0);
    let io_error = std::io::Error::other("transient");
    let max_retry_after_ns = c.max_retry_after.as_nanos() as i128;
    let mut retries = 0u32;

    for (step, attempt) in &c.steps {
        now += *attempt;
        let elapsed = now - t0;
        let (outcome, want) = match step {
            HintStep::Response(status, headers) => (
                Outcome::response(StatusCode::from_u16(*status).expect("status"), headers),
                model::model_server_hint(headers, wall),
            ),
            HintStep::Error(kind) => (
                Outcome::Error {
                    kind: *kind,
                    error: &io_error,
                },
                Ok(None),
            ),
        };
        let decision = state.decide(&meta, &outcome, now);
        let Ok(want) = want else {
            // A retry-after-ms value at a rounding boundary: only the
            // invariants below that do not need the model.
            if let Decision::Retry { delay, .. } = decision {
                retries += 1;
                prop_assert!(retries <= c.max_retries);
                prop_assert!(c.deadline.is_none_or(|d| elapsed + delay < d));
                now += delay;
                continue;
            }
            break;
        };
        // The model's hint, when the policy accepts its length.
        let usable = want.filter(|h| h.ns <= max_retry_after_ns);
        match decision {
            Decision::Retry { delay, source } => {
                retries += 1;
                prop_assert!(retries <= c.max_retries, "{retries} retries");
                if let Some(d) = c.deadline {
                    prop_assert!(elapsed + delay < d, "{elapsed:?} + {delay:?} >= {d:?}");
                }
                let delay_ns = delay.as_nanos() as i128;
                match usable {
                    Some(h) => {
                        prop_assert_eq!(source, model_source(h.source));
                        prop_assert!(
                            (delay_ns - h.ns).abs() <= h.tolerance,
                            "{delay:?}, want {h:?}"
                        );
                        prop_assert!(delay <= c.max_retry_after);
                    }
                    None => {
                        prop_assert_eq!(source, DelaySource::Backoff, "want {:?}", want);
                        prop_assert!(delay <= c.schedule.max, "{delay:?}");
                        if want.is_some() {
                            prop_assert_eq!(c.on_long_hint, LongHint::UseBackoff);
                        }
                    }
                }
                now += delay;
            }
            Decision::Fail(StopReason::RetryAfterTooLong { hint }) => {
                prop_assert_eq!(c.on_long_hint, LongHint::GiveUp);
                prop_assert!(hint > c.max_retry_after, "{hint:?}");
                let h = want.expect("a hint");
                prop_assert_eq!(hint.as_nanos() as i128 - h.ns, 0, "{:?} vs {:?}", hint, h);
                break;
            }
            Decision::Fail(StopReason::Deadline) => {
                let d = c.deadline.expect("a deadline");
                if let (false, Some(h)) = (elapsed >= d, usable) {
                    prop_assert!(
                        elapsed.as_nanos() as i128 + h.ns + h.tolerance >= d.as_nanos() as i128,
                        "stopped though the hint fits: {elapsed:?} + {h:?} < {d:?}"
                    );
                }
                break;
            }
            Decision::Return => {
                let is_response = matches!(outcome, Outcome::Response { .. });
                prop_assert!(is_response, "Return for a transport error");
                break;
            }
            _ => break,
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// With hints of every kind (`retry-after-ms`, delay-seconds and
    /// HTTP-date `Retry-After`, rate-limit resets) read through a fixed wall
    /// clock, any status and method: a retry waits exactly the model's hint
    /// when the policy accepts its length and otherwise a capped backoff,
    /// never crosses the deadline and never exceeds `max_retries`; a hint
    /// that is too long stops the request only under `LongHint::GiveUp`.
    #[test]
    fn engine_follows_every_hint_within_its_bounds(c in hint_case()) {
        run_hint_engine(&c)?;
    }
}

// ---------------------------------------------------------------------
// Load protection: retry budget, circuit breaker, quota headers.

use http_resilience::budget::Tokens;
use http_resilience::retry_after::{
    QuotaHeaders, parse_reset_duration, parse_rfc3339_reset, quota_reset,
};
use http_resilience::{Admission, CircuitBreaker, CircuitStatus, FailureKind as Fk, RetryBudget};

#[derive(Debug, Clone, Copy)]
enum TokenOp {
    Withdraw(u32),
    Deposit(u32),
}

/// One operation on a rate limit.
#[derive(Debug, Clone, Copy)]
enum LimitOp {
    /// Move the clock on by this many milliseconds.
    Advance(u32),
    /// Ask for a turn, waiting at most this many milliseconds (`None`: no
    /// bound).
    Acquire(Option<u32>),
    /// Give back the n-th outstanding turn (modulo their number) that has
    /// not come yet.
    Release(u16),
    /// Take a turn and give it back at once (an attempt the breaker
    /// refuses): nothing changes.
    Refused,
    /// Give back every turn still to come (the ones due now are sent), then
    /// ask for one.
    ReleaseAll,
}

fn limit_op() -> impl Strategy<Value = LimitOp> {
    prop_oneof![
        3 => (0u32..400).prop_map(LimitOp::Advance),
        5 => prop::option::of(0u32..3_000).prop_map(LimitOp::Acquire),
        2 => any::<u16>().prop_map(LimitOp::Release),
        1 => Just(LimitOp::Refused),
        1 => Just(LimitOp::ReleaseAll),
    ]
}

fn token_op() -> impl Strategy<Value = TokenOp> {
    let amount = prop_oneof![8 => 0u32..64, 1 => any::<u32>()];
    prop_oneof![
        amount.clone().prop_map(TokenOp::Withdraw),
        amount.prop_map(TokenOp::Deposit),
    ]
}

fn circuit_config() -> impl Strategy<Value = CircuitBreaker> {
    (
        1u32..5,
        1u32..30,
        1u32..=100,
        1u64..20_000,
        1u64..20_000,
        prop::option::of(1u32..8),
        1u64..40_000,
    )
        .prop_map(|(probes, min, ratio, window, brk, consecutive, wait)| {
            let c = CircuitBreaker::builder()
                .half_open_probes(probes)
                .minimum_throughput(min)
                .failure_ratio(f64::from(ratio) / 100.0)
                .sampling_window(Duration::from_millis(window))
                .break_duration(Duration::from_millis(brk))
                .max_half_open_wait(Duration::from_millis(wait));
            match consecutive {
                Some(n) => c.consecutive_failures(n),
                None => c,
            }
            .build()
            .unwrap()
        })
}

fn circuit_op() -> impl Strategy<Value = circuit_harness::Op> {
    use circuit_harness::Op;
    prop_oneof![
        2 => (0u32..3_000).prop_map(Op::Advance),
        1 => (0u32..40_000).prop_map(Op::Advance),
        4 => Just(Op::Admit),
        4 => (any::<u16>(), any::<bool>()).prop_map(|(n, f)| Op::Record(n, f)),
        1 => any::<u16>().prop_map(Op::Release),
    ]
}

/// Records one admitted outcome on a closed breaker at `now`.
fn record_closed(
    state: &mut http_resilience::circuit::CircuitState,
    c: &CircuitBreaker,
    failed: bool,
    now: Instant,
) -> Result<(), TestCaseError> {
    match state.admit(c, now) {
        http_resilience::circuit::Verdict::Allow(t) => {
            state.record(c, t, failed, now);
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "refused while closed: {other:?}"
        ))),
    }
}

/// A canonical Go duration (as `Duration.String()` writes it, plus the
/// shorter forms servers send): units from `h` down, each at most once,
/// a fraction only on the last one.
fn go_duration() -> impl Strategy<Value = String> {
    let units = ["h", "m", "s", "ms", "µs", "ns"];
    (
        prop::collection::vec((any::<bool>(), 0u64..100_000), 6),
        prop::option::of("[0-9]{1,9}"),
    )
        .prop_filter_map("no unit", move |(picks, frac)| {
            let chosen: Vec<_> = picks
                .iter()
                .zip(units)
                .filter(|((on, _), _)| *on)
                .map(|((_, n), u)| (*n, u))
                .collect();
            let (last, rest) = chosen.split_last()?;
            let mut s: String = rest.iter().map(|(n, u)| format!("{n}{u}")).collect();
            match &frac {
                // Go never writes a fraction of a nanosecond.
                Some(f) if last.1 != "ns" => s.push_str(&format!("{}.{f}{}", last.0, last.1)),
                _ => s.push_str(&format!("{}{}", last.0, last.1)),
            }
            Some(s)
        })
}

/// A strict RFC 3339 timestamp and its parts, 1970..=2200.
fn rfc3339() -> impl Strategy<Value = String> {
    (
        1970i64..=2200,
        1u32..=12,
        1u32..=31,
        (0u32..24, 0u32..60, 0u32..60),
        prop::option::of("[0-9]{1,9}"),
        prop_oneof![
            Just(None),
            (any::<bool>(), 0u32..24, 0u32..60).prop_map(Some)
        ],
    )
        .prop_map(|(y, m, d, (hh, mi, ss), frac, offset)| {
            // Clamp the day into the month (the model checks it anyway).
            let dim = match m {
                2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let mut s = format!("{y:04}-{m:02}-{:02}T{hh:02}:{mi:02}:{ss:02}", d.min(dim));
            if let Some(f) = frac {
                s.push('.');
                s.push_str(&f);
            }
            match offset {
                None => s.push('Z'),
                Some((neg, oh, om)) => {
                    s.push_str(&format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' }))
                }
            }
            s
        })
}

proptest! {
    #![proptest_config(config())]

    /// Tokens never leave `[0, capacity]` (starting anywhere in it), and a
    /// withdrawal succeeds iff the tokens cover its cost, taking exactly it.
    #[test]
    fn tokens_stay_in_range(
        // A budget holds at least its timeout cost (10 by default).
        capacity in prop_oneof![10u32..1_000, Just(u32::MAX)],
        start in 0.0f64..=1.0,
        ops in prop::collection::vec(token_op(), 0..200),
    ) {
        let budget = RetryBudget::builder().capacity(capacity).build().unwrap();
        let mut tokens = Tokens((f64::from(capacity) * start) as u32);
        if start == 1.0 {
            tokens = Tokens::full(&budget);
        }
        let mut model = u64::from(tokens.0);
        for op in ops {
            match op {
                TokenOp::Withdraw(cost) => {
                    let ok = tokens.withdraw(cost);
                    prop_assert_eq!(ok, model >= u64::from(cost), "withdraw {} from {}", cost, model);
                    if ok {
                        model -= u64::from(cost);
                    }
                }
                TokenOp::Deposit(n) => {
                    tokens.deposit(&budget, n);
                    model = (model + u64::from(n)).min(u64::from(capacity));
                }
            }
            prop_assert_eq!(u64::from(tokens.0), model);
            prop_assert!(tokens.0 <= capacity);
        }
    }

    /// N requests whose first attempts are all in flight when they fail
    /// get exactly `min(N, capacity / cost)` retries from one endpoint's
    /// budget (the default: 500 tokens, 5 a retry, 10 after a timeout).
    #[test]
    fn concurrent_first_failures_share_the_budget(
        n in 0usize..260,
        timeout in any::<bool>(),
        custom in prop::option::of((1u32..20, 0u32..20, 0u32..400)),
    ) {
        let budget = match custom {
            None => RetryBudget::default(),
            Some((cost, extra, more)) => RetryBudget::builder()
                .retry_cost(cost)
                .timeout_cost(cost + extra)
                .capacity(cost + extra + more).build().unwrap(),
        };
        let policy = if custom.is_none() {
            RetryPolicy::default()
        } else {
            RetryPolicy::builder().retry_budget(budget).build().unwrap()
        };
        prop_assert_eq!(policy.retry_budget(), Some(&budget));
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "https", "api.example.com", "/x", &headers);
        let t0 = Instant::now();
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let outcome = if timeout {
            Outcome::Error { kind: Fk::Timeout, error: &io }
        } else {
            Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &headers)
        };
        let mut states: Vec<RetryState> = (0..n)
            .map(|_| RetryState::new(&policy, &meta, t0))
            .collect();
        for s in &mut states {
            prop_assert_eq!(s.admit(&meta, t0), Admission::Send);
        }
        let mut retries = 0;
        for s in &mut states {
            match s.decide(&meta, &outcome, t0) {
                Decision::Retry { .. } => retries += 1,
                Decision::Fail(StopReason::BudgetExhausted) => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        let per_retry = budget.cost(timeout);
        let want = n.min((budget.capacity() / per_retry) as usize);
        prop_assert_eq!(retries, want);
    }

    /// The rate limiter's turns, through any sequence of asks, turns given
    /// back and the clock moving, against the limit itself.
    #[test]
    fn the_rate_limit_holds_and_turns_come_as_early_as_it_allows(
        requests in 1u32..20,
        period_ms in 100u64..10_000,
        burst in 1u32..6,
        ops in prop::collection::vec(limit_op(), 0..120),
    ) {
        use http_resilience::RateLimit;
        use http_resilience::rate_limit::{RateLimitState, Turn};

        let limit = RateLimit::builder(requests, Duration::from_millis(period_ms)).burst(burst).build().unwrap();
        let interval = (Duration::from_millis(period_ms) / requests).as_nanos();
        let mut state = RateLimitState::new(&limit);
        let t0 = Instant::now();
        let ns = |at: Instant| (at - t0).as_nanos();
        let mut now = t0;
        // Turns taken and not given back: still to come, and come (sent).
        let mut waiting: Vec<Turn> = Vec::new();
        let mut sent: Vec<u128> = Vec::new();
        let mut released_any = false;
        // A turn given back and not taken again before its time is lost
        // (sending it late could break the limit): the schedule then runs
        // that much later than the turns taken require.
        let mut maybe_lost = false;
        let taken = |waiting: &[Turn], sent: &[u128]| {
            let mut all: Vec<u128> = sent.to_vec();
            all.extend(waiting.iter().map(|t| ns(t.at())));
            all.sort_unstable();
            all
        };
        for (i, op) in ops.iter().enumerate() {
            match *op {
                LimitOp::Advance(ms) => {
                    maybe_lost |= state.given_back() > 0 && ms > 0;
                    now += Duration::from_millis(u64::from(ms));
                    // turns that have come are used: sent at their time
                    let (come, still): (Vec<Turn>, Vec<Turn>) =
                        waiting.drain(..).partition(|t| t.at() < now);
                    sent.extend(come.iter().map(|t| ns(t.at())));
                    waiting = still;
                }
                LimitOp::Acquire(max_ms) => {
                    let max_wait = max_ms.map_or(Duration::MAX, |ms| Duration::from_millis(u64::from(ms)));
                    let unbounded = state.clone().acquire(now, Duration::MAX);
                    let Ok(would) = unbounded else {
                        return Err(TestCaseError::fail(format!("op {i}: refused without a bound")));
                    };
                    prop_assert!(would.at() >= now, "op {}: a turn in the past", i);
                    let all = taken(&waiting, &sent);
                    if !released_any {
                        let want = model::earliest_next_turn(&all, ns(now), interval, burst);
                        prop_assert_eq!(ns(would.at()), want, "op {}: not the earliest turn", i);
                    }
                    match state.acquire(now, max_wait) {
                        Ok(turn) => {
                            prop_assert!(turn.at() - now <= max_wait, "op {}", i);
                            prop_assert_eq!(turn.at(), would.at(), "op {}", i);
                            waiting.push(turn);
                        }
                        Err(wait) => {
                            prop_assert!(would.at() - now > max_wait, "op {}: refused in time", i);
                            prop_assert_eq!(wait, would.at() - now, "op {}", i);
                        }
                    }
                }
                LimitOp::Release(n) => {
                    let to_come: Vec<usize> = (0..waiting.len())
                        .filter(|&k| waiting[k].at() > now)
                        .collect();
                    if !to_come.is_empty() {
                        let k = to_come[usize::from(n) % to_come.len()];
                        state.release(waiting.swap_remove(k));
                        released_any = true;
                    }
                }
                LimitOp::Refused => {
                    let before = state.clone();
                    if let Ok(turn) = state.acquire(now, Duration::MAX) {
                        state.release(turn);
                    }
                    let next = |s: &RateLimitState| s.clone().acquire(now, Duration::MAX).map(|t| t.at());
                    prop_assert_eq!(next(&state), next(&before), "op {}: a refusal kept a turn", i);
                }
                LimitOp::ReleaseAll => {
                    // those that come now are sent; the rest given back
                    let (now_due, to_come): (Vec<Turn>, Vec<Turn>) =
                        waiting.drain(..).partition(|t| t.at() <= now);
                    sent.extend(now_due.iter().map(|t| ns(t.at())));
                    for turn in to_come {
                        state.release(turn);
                    }
                    let turn = state.acquire(now, Duration::MAX).unwrap();
                    if !maybe_lost {
                        prop_assert_eq!(state.given_back(), 0, "op {}: all off the schedule", i);
                        let want = model::earliest_next_turn(&taken(&[], &sent), ns(now), interval, burst);
                        prop_assert_eq!(ns(turn.at()), want, "op {}: not restored", i);
                    }
                    waiting.push(turn);
                }
            }
            // The classic GCRA pass over everything taken: conforming.
            let all = taken(&waiting, &sent);
            let tolerance = interval * u128::from(burst - 1);
            let mut tat: Option<u128> = None;
            for &x in &all {
                if let Some(tat) = tat {
                    prop_assert!(x + tolerance >= tat, "op {}: {:?} breaks the limit", i, all);
                }
                tat = Some(tat.map_or(x, |tat| tat.max(x)) + interval);
            }
        }
        let all = taken(&waiting, &sent);
        prop_assert!(model::rate_limit_holds(&all, interval, burst), "{:?}", all);
    }

    /// `CircuitState` follows the documented state machine step by step
    /// (see `circuit_harness`).
    #[test]
    fn circuit_follows_the_model(
        c in circuit_config(),
        ops in prop::collection::vec(circuit_op(), 0..300),
    ) {
        if let Err(e) = circuit_harness::run_circuit(&c, &ops) {
            prop_assert!(false, "{}\n{:?}", e, c);
        }
    }

    /// Without `consecutive_failures`, fewer outcomes than the minimum
    /// throughput never open it, whatever they are and whenever.
    #[test]
    fn never_opens_below_minimum_throughput(
        c in circuit_config(),
        outcomes in prop::collection::vec((any::<bool>(), 0u64..5_000), 0..40),
    ) {
        let c = CircuitBreaker::builder()
            .minimum_throughput(c.minimum_throughput())
            .failure_ratio(c.failure_ratio())
            .sampling_window(c.sampling_window()).build().unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        let mut state = http_resilience::circuit::CircuitState::default();
        for (failed, step) in outcomes.into_iter().take(c.minimum_throughput() as usize - 1) {
            now += Duration::from_millis(step);
            record_closed(&mut state, &c, failed, now)?;
            prop_assert_eq!(state.status(now), CircuitStatus::Closed);
        }
    }

    /// When every outcome fails, it opens at the first failure that makes
    /// the minimum throughput, at the latest when the last `minimum`
    /// failures lie within nine tenths of the window, and never before the
    /// `minimum`-th failure.
    #[test]
    fn all_failures_open_it_at_the_minimum(
        c in circuit_config(),
        steps in prop::collection::vec(0u64..3_000, 1..60),
    ) {
        let c = CircuitBreaker::builder()
            .minimum_throughput(c.minimum_throughput())
            .failure_ratio(c.failure_ratio())
            .sampling_window(c.sampling_window()).build().unwrap();
        let min = c.minimum_throughput() as usize;
        // Nine tenths of the window, in ms (the window is whole ms).
        let span = c.sampling_window().as_millis() as u64 * 9 / 10;
        let t0 = Instant::now();
        let mut times = Vec::new();
        let mut now = t0;
        let mut state = http_resilience::circuit::CircuitState::default();
        for (i, step) in steps.into_iter().enumerate() {
            now += Duration::from_millis(step);
            times.push(now);
            record_closed(&mut state, &c, true, now)?;
            let count = i + 1;
            let open = state.status(now) != CircuitStatus::Closed;
            if count < min {
                prop_assert!(!open, "opened at failure {} < minimum {}", count, min);
            } else if now - times[count - min] <= Duration::from_millis(span) {
                prop_assert!(open, "{} failures within {} ms did not open it", min, span);
            }
            if open {
                prop_assert_eq!(
                    state.status(now),
                    CircuitStatus::Open { until: now + c.break_duration() }
                );
                break;
            }
        }
    }

    /// A closed breaker that only sees successes never opens.
    #[test]
    fn successes_never_open_it(
        c in circuit_config(),
        steps in prop::collection::vec(0u64..10_000, 0..300),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut state = http_resilience::circuit::CircuitState::default();
        for step in steps {
            now += Duration::from_millis(step);
            record_closed(&mut state, &c, false, now)?;
            prop_assert_eq!(state.status(now), CircuitStatus::Closed);
        }
    }

    /// Canonical Go durations (`6m0s`, `12ms`, `1.5s`, `1h2m3.25s`) parse
    /// as Go reads them (the model), in whole nanoseconds, with OWS around.
    #[test]
    fn reset_durations_parse_like_go(text in go_duration(), pad in ows()) {
        let go = model::model_go_duration(text.as_bytes()).expect("the model reads its grammar");
        prop_assert!(go.canonical);
        let padded = format!("{pad}{text}{pad}");
        let got = parse_reset_duration(padded.as_bytes()).map(|d| d.as_nanos() as i128);
        if go.exact {
            let want = (go.ns <= model::MAX_HINT_NS).then_some(go.ns);
            prop_assert_eq!(got, want, "{:?}", text);
        } else {
            // A fraction finer than a nanosecond: within one of Go's.
            let got = got.expect("accepted");
            prop_assert!((got - go.ns).abs() <= 1, "{:?}: {} vs {}", text, got, go.ns);
        }
    }

    /// Any Go duration (repeated or unordered units, fractions anywhere) is
    /// refused or read as Go reads it; arbitrary bytes never panic and
    /// never give more than 100 years.
    #[test]
    fn reset_durations_never_misread(
        text in "([0-9]{1,5}(\\.[0-9]{1,3})?(h|m|s|ms|us|µs|ns)){1,4}",
        bytes in any_bytes(),
    ) {
        let go = model::model_go_duration(text.as_bytes()).expect("the model reads its grammar");
        let got = parse_reset_duration(text.as_bytes()).map(|d| d.as_nanos() as i128);
        if go.exact && go.ns <= model::MAX_HINT_NS {
            prop_assert!(got.is_none() || got == Some(go.ns), "{:?}: {:?} vs {}", text, got, go.ns);
        }
        if let Some(d) = parse_reset_duration(&bytes) {
            prop_assert!(d <= MAX_HINT);
        }
    }

    /// Strict RFC 3339 timestamps give the wait until them (zero when
    /// past), from an epoch the model computes itself; never more than
    /// 100 years.
    #[test]
    fn rfc3339_resets_parse_like_the_model(
        text in rfc3339(),
        now in wall_now(),
        bytes in any_bytes(),
    ) {
        let at = model::model_rfc3339(text.as_bytes()).expect("the model reads its grammar");
        let want = (at - model::epoch_ns(now)).max(0);
        let want = (want <= model::MAX_HINT_NS).then_some(want);
        let got = parse_rfc3339_reset(text.as_bytes(), now).map(|d| d.as_nanos() as i128);
        prop_assert_eq!(got, want, "{:?} at {:?}", text, now);
        if let Some(d) = parse_rfc3339_reset(&bytes, now) {
            prop_assert!(d <= MAX_HINT);
        }
    }

    /// `quota_reset`: the first exhausted family (epoch, Anthropic, OpenAI)
    /// decides, a zero wait is no hold, and the wait is its parser's.
    #[test]
    fn quota_reset_takes_the_first_exhausted_family(
        remaining in prop::collection::vec(prop_oneof![Just("0"), Just(" 0\t"), Just("1"), Just("00")], 3),
        present in prop::collection::vec(any::<bool>(), 3),
        secs in 0u64..100_000,
        now_secs in 0u64..4_000_000_000,
        now_nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
    ) {
        let now = UNIX_EPOCH + Duration::new(now_secs, now_nanos);
        let at = now_secs + secs;
        let days = at / 86_400;
        let mut headers = HeaderMap::new();
        let families = [
            ("x-ratelimit-remaining", "x-ratelimit-reset", at.to_string()),
            (
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
                civil(days, at % 86_400),
            ),
            (
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                format!("{secs}s"),
            ),
        ];
        for (i, (rem, reset, value)) in families.iter().enumerate() {
            if present[i] {
                headers.insert(*rem, HeaderValue::from_static(remaining[i]));
                headers.insert(*reset, HeaderValue::from_str(value).unwrap());
            }
        }
        let first = (0..3).find(|&i| present[i] && remaining[i].trim() == "0");
        let got = quota_reset(&headers, now);
        let which = [QuotaHeaders::EpochReset, QuotaHeaders::Anthropic, QuotaHeaders::OpenAi];
        match first {
            None => prop_assert_eq!(got, None),
            Some(i) => {
                // Epoch and RFC 3339 resets name whole seconds: the wait is
                // to that second from a `now` with nanoseconds.
                let want = match i {
                    2 => Duration::from_secs(secs),
                    _ => (UNIX_EPOCH + Duration::from_secs(at))
                        .duration_since(now)
                        .unwrap_or(Duration::ZERO),
                };
                let want = (!want.is_zero()).then_some((want, which[i]));
                prop_assert_eq!(got, want, "{:?}", headers);
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for days since the epoch and seconds of the day
/// (Howard Hinnant's civil_from_days, written out here).
fn civil(days: u64, secs: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
