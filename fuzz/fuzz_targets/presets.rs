//! The provider presets' rules on arbitrary responses: a preset (GitHub,
//! OpenAI, Anthropic, git), a request (method and a path that may be a git
//! fetch or push), and a sequence of responses (any status with a fuzzed
//! header map and a fuzzed body start) or transport failures, with a fixed
//! wall clock and a seeded backoff.
//!
//! Asserted after every decision: no panic; the body the engine asks for
//! is at most `MAX_INSPECTED_BODY`; a retry never exceeds `max_retries`, a
//! backoff is at most `max_backoff`, any other wait is positive and at most
//! `max_retry_after`; git's push is never retried and its fetch always may
//! be; and GitHub's 403s follow the documented rule (retried exactly when
//! `x-ratelimit-remaining: 0`, a `retry-after` header, or "secondary rate
//! limit" in the inspected body says it is a rate limit, with the primary
//! limit's wait at its reset plus one second).
#![no_main]

use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use http_resilience::{
    Decision, DelaySource, FailureKind, MAX_INSPECTED_BODY, Outcome, Preset, RequestMeta,
    RetryState, StopReason,
};
use http_resilience_fuzz::{header_map, split_now};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &[
    "/",
    "/repos/o/r/issues",
    "/o/r.git/info/refs",
    "/o/r.git/git-upload-pack",
    "/o/r.git/git-receive-pack",
    "/v1/messages",
];

const METHODS: &[Method] = &[Method::GET, Method::PUT, Method::POST, Method::PATCH];

const FAILURES: &[FailureKind] = &[
    FailureKind::Connect,
    FailureKind::Timeout,
    FailureKind::ConnectionReset,
    FailureKind::Tls,
    FailureKind::Other,
];

/// GitHub's wording, in several cases, and cut short.
const PHRASES: &[&[u8]] = &[
    b"secondary rate limit",
    b"You have exceeded a Secondary Rate Limit",
    b"SECONDARY RATE LIMI",
];

fn mentions_secondary_limit(body: &[u8]) -> bool {
    let needle = b"secondary rate limit";
    body.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn run(data: &[u8]) -> Result<()> {
    let Some((now_wall, rest)) = split_now(data) else {
        return Ok(());
    };
    let mut u = Unstructured::new(rest);
    let preset = *u.choose(&Preset::ALL)?;
    let policy = preset
        .builder()
        .seed(u.arbitrary()?)
        .wall_clock(move || now_wall)
        .build()
        .expect("a preset with a seed and a clock is valid");
    let method = u.choose(METHODS)?.clone();
    let path = *u.choose(PATHS)?;
    let req_headers = HeaderMap::new();
    let meta = RequestMeta::new(&method, "https", "api.example.com", path, &req_headers);
    let t0 = Instant::now();
    let mut now = t0;
    let mut state = RetryState::new(&policy, &meta, t0);
    let io_error = std::io::Error::other("fuzzed failure");
    let mut retries = 0u32;

    for _ in 0..8 {
        now += Duration::from_millis(u.int_in_range(0..=5_000)?);
        let headers;
        let body: Vec<u8>;
        let outcome = if u.ratio(4, 5)? {
            let status = StatusCode::from_u16(u.int_in_range(100..=999)?).expect("100..=999");
            let len = u.int_in_range(0..=96)?;
            headers = header_map(u.bytes(len)?);
            let wanted = state.body_to_inspect(&meta, status, &headers);
            assert!(wanted <= MAX_INSPECTED_BODY, "{wanted}");
            let body_len = u.int_in_range(0..=256)?;
            let mut bytes = u.bytes(body_len)?.to_vec();
            // Random bytes almost never spell GitHub's message: splice it
            // in (in any case, possibly cut short) often enough to matter.
            if u.ratio(1, 3)? {
                let phrase = u.choose(PHRASES)?;
                let at = u.int_in_range(0..=bytes.len())?;
                bytes.splice(at..at, phrase.iter().copied());
            }
            bytes.truncate(wanted);
            body = bytes;
            Outcome::Response {
                status,
                headers: &headers,
                body: (wanted > 0).then_some(&body[..]),
            }
        } else {
            Outcome::Error {
                kind: *u.choose(FAILURES)?,
                error: &io_error,
            }
        };
        let decision = state.decide(&meta, &outcome, now);

        // git: a push is never retried, whatever happened.
        if preset == Preset::Git && path.ends_with("/git-receive-pack") {
            assert!(!matches!(decision, Decision::Retry { .. }), "{decision:?}");
        }
        // GitHub's 403 rule, before the retry budget and hint caps apply.
        if preset == Preset::GitHub
            && let Outcome::Response {
                status,
                headers,
                body,
            } = outcome
            && status == StatusCode::FORBIDDEN
        {
            let exhausted = headers
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
            let limited = exhausted
                || headers.contains_key("retry-after")
                || body.is_some_and(mentions_secondary_limit);
            let last = state.report().last().expect("a record");
            assert_eq!(
                last.class() == http_resilience::Class::Transient,
                limited,
                "{headers:?} {body:?}"
            );
        }

        match decision {
            Decision::Retry { delay, source } => {
                retries += 1;
                assert!(retries <= policy.max_retries(), "{retries} retries");
                if source == DelaySource::Backoff {
                    assert!(delay <= policy.max_backoff(), "{delay:?}");
                } else {
                    assert!(!delay.is_zero());
                    assert!(delay <= policy.max_retry_after(), "{delay:?} ({source})");
                }
                now += delay;
            }
            Decision::Fail(StopReason::RetryAfterTooLong { hint }) => {
                assert!(hint > policy.max_retry_after());
                break;
            }
            _ => break,
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
