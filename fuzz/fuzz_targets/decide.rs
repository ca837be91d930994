//! The engine's decision on arbitrary responses: a policy, a request and a
//! sequence of outcomes (any status 100..=999 with a fuzzed header map, or
//! a transport failure) and attempt durations, all from fuzz bytes, with a
//! fixed wall clock and a seeded backoff (so every input is reproducible).
//!
//! Asserted after every `RetryState::decide`: no panic; a retry's delay is
//! within the policy's bounds (a backoff at most `max_backoff`, a server
//! hint positive, at most `max_retry_after` and equal to what
//! `server_hint` reads from the same headers), never crosses the deadline,
//! and never exceeds `max_retries`; `Return` only for a response; the next
//! attempt's timeout fits in what is left of the deadline; the report
//! counts every attempt and every wait.
#![no_main]

use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use http_resilience::policy::MAX_SETTING;
use http_resilience::retry_after::server_hint;
use http_resilience::{
    Decision, DelaySource, FailureKind, Jitter, LongHint, Outcome, RequestMeta, RetryPolicy,
    RetryState, StopReason,
};
use http_resilience_fuzz::{header_map, split_now};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A duration in `0..=max`, spread over every scale (a value shifted right
/// by a fuzzed amount).
fn duration(u: &mut Unstructured<'_>, max: Duration) -> Result<Duration> {
    let max_ns = max.as_nanos() as u64;
    let raw: u64 = u.int_in_range(0..=max_ns)?;
    let shift: u32 = u.int_in_range(0..=48)?;
    Ok(Duration::from_nanos(raw >> shift))
}

fn policy(u: &mut Unstructured<'_>, now: std::time::SystemTime) -> Result<RetryPolicy> {
    let a = duration(u, MAX_SETTING)?.max(Duration::from_nanos(1));
    let b = duration(u, MAX_SETTING)?.max(Duration::from_nanos(1));
    let multiplier = match u.int_in_range(0..=3)? {
        0 => 1.0,
        1 => 2.0,
        2 => 1.0 + f64::from(u.arbitrary::<u16>()?) / 64.0,
        _ => u.arbitrary::<f64>()?.abs().max(1.0),
    };
    let jitter = *u.choose(&[
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ])?;
    let mut builder = RetryPolicy::builder()
        .max_retries(u.int_in_range(0..=12)?)
        .initial_backoff(a.min(b))
        .max_backoff(a.max(b))
        .multiplier(if multiplier.is_finite() {
            multiplier
        } else {
            2.0
        })
        .jitter(jitter)
        .seed(u.arbitrary()?)
        .max_retry_after(duration(u, MAX_SETTING)?.max(Duration::from_nanos(1)))
        .on_long_hint(*u.choose(&[LongHint::GiveUp, LongHint::UseBackoff])?)
        .retry_non_idempotent(u.arbitrary()?)
        .return_last_response(u.arbitrary()?)
        .wall_clock(move || now);
    if u.arbitrary()? {
        builder = builder.deadline(duration(u, MAX_SETTING)?.max(Duration::from_nanos(1)));
    }
    if u.arbitrary()? {
        builder = builder.attempt_timeout(duration(u, MAX_SETTING)?.max(Duration::from_nanos(1)));
    }
    Ok(builder.build().expect("a valid policy"))
}

const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::DELETE,
    Method::POST,
    Method::PATCH,
];

const FAILURES: &[FailureKind] = &[
    FailureKind::Connect,
    FailureKind::Timeout,
    FailureKind::ConnectionReset,
    FailureKind::ConnectionClosed,
    FailureKind::Tls,
    FailureKind::InvalidRequest,
    FailureKind::Redirect,
    FailureKind::Body,
    FailureKind::Decode,
    FailureKind::Other,
];

fn run(data: &[u8]) -> Result<()> {
    let Some((now_wall, rest)) = split_now(data) else {
        return Ok(());
    };
    let mut u = Unstructured::new(rest);
    let policy = policy(&mut u, now_wall)?;
    let method = u.choose(METHODS)?.clone();
    let mut req_headers = HeaderMap::new();
    if u.arbitrary()? {
        req_headers.insert("idempotency-key", "k".parse().expect("a value"));
    }
    let meta = RequestMeta::new(&method, "http", "h", "/", &req_headers);
    let t0 = Instant::now();
    let mut now = t0;
    let mut state = RetryState::new(&policy, &meta, t0);
    state.set_replayable(u.arbitrary()?);
    let io_error = std::io::Error::other("fuzzed failure");
    let (mut attempts, mut retries, mut waited) = (0u32, 0u32, Duration::ZERO);

    for _ in 0..16 {
        let left = policy.deadline().map(|d| d.saturating_sub(now - t0));
        let timeout = state.attempt_timeout(now);
        if let Some(left) = left {
            assert!(timeout.is_some_and(|t| t <= left), "{timeout:?} > {left:?}");
        }
        now += duration(&mut u, Duration::from_secs(86_400))?;
        let elapsed = now - t0;

        let headers;
        let outcome = if u.ratio(3, 4)? {
            let code = u.int_in_range(100..=999)?;
            let len = u.int_in_range(0..=96)?;
            headers = header_map(u.bytes(len)?);
            Outcome::response(StatusCode::from_u16(code).expect("100..=999"), &headers)
        } else {
            Outcome::Error {
                kind: *u.choose(FAILURES)?,
                error: &io_error,
            }
        };
        let decision = state.decide(&meta, &outcome, now);
        attempts += 1;
        assert_eq!(state.report().attempts(), attempts);

        match decision {
            Decision::Retry { delay, source } => {
                retries += 1;
                assert!(retries <= policy.max_retries(), "{retries} retries");
                if let Some(d) = policy.deadline() {
                    assert!(elapsed + delay < d, "{elapsed:?} + {delay:?} >= {d:?}");
                }
                match (source, &outcome) {
                    (DelaySource::Backoff, _) => {
                        assert!(delay <= policy.max_backoff(), "{delay:?}");
                    }
                    (_, Outcome::Response { headers, .. }) => {
                        assert!(!delay.is_zero());
                        assert!(delay <= policy.max_retry_after(), "{delay:?}");
                        let hint = server_hint(headers, now_wall).expect("a hint");
                        assert_eq!((hint.delay, hint.source), (delay, source));
                    }
                    (_, outcome) => panic!("a server hint for {outcome:?}"),
                }
                waited += delay;
                now += delay;
            }
            Decision::Return => {
                assert!(matches!(outcome, Outcome::Response { .. }));
                break;
            }
            Decision::Fail(reason) => {
                if let StopReason::RetryAfterTooLong { hint } = reason {
                    assert!(hint > policy.max_retry_after());
                }
                break;
            }
            _ => break,
        }
        // The report counts retries made: all but the one just decided.
        assert_eq!(state.report().retries() + 1, retries);
        assert_eq!(state.report().total_backoff(), waited);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
