//! A whole response `HeaderMap` built from fuzz bytes (arbitrary and
//! well-known names in several spellings, duplicates, non-UTF-8 values):
//! `server_hint`, `classify::should_retry_header` and
//! `classify::rate_limit_exhausted` never panic and agree with the
//! reference models (`model_server_hint` and friends: first value of each
//! header; `retry-after-ms`, then `Retry-After`, then `x-ratelimit-reset`
//! with `x-ratelimit-remaining: 0`; zero means no hint).
//!
//! Input: 8 bytes of clock (see `split_now`), then the headers (see
//! `header_map`).
#![no_main]

use http_resilience::DelaySource;
use http_resilience::classify::{rate_limit_exhausted, should_retry_header};
use http_resilience::retry_after::server_hint;
use http_resilience_fuzz::{
    HintSource, header_map, model_rate_limit_exhausted, model_server_hint, model_should_retry,
    split_now,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((now, rest)) = split_now(data) else {
        return;
    };
    let headers = header_map(rest);
    assert_eq!(
        should_retry_header(&headers),
        model_should_retry(&headers),
        "{headers:?}"
    );
    assert_eq!(
        rate_limit_exhausted(&headers),
        model_rate_limit_exhausted(&headers),
        "{headers:?}"
    );
    let got = server_hint(&headers, now);
    if let Some(hint) = got {
        assert!(!hint.delay.is_zero(), "a zero hint: {headers:?}");
    }
    let Ok(want) = model_server_hint(&headers, now) else {
        return;
    };
    match (got, want) {
        (Some(hint), Some(want)) => {
            let source = match want.source {
                HintSource::RetryAfterMs => DelaySource::RetryAfterMs,
                HintSource::RetryAfter => DelaySource::RetryAfter,
                HintSource::RateLimitReset => DelaySource::RateLimitReset,
            };
            assert_eq!(hint.source, source, "{headers:?} at {now:?}");
            let got_ns = hint.delay.as_nanos() as i128;
            assert!(
                (got_ns - want.ns).abs() <= want.tolerance,
                "{headers:?} at {now:?}: {got_ns} ns, want {want:?}"
            );
        }
        (None, None) => {}
        (got, want) => panic!("{headers:?} at {now:?}: got {got:?}, want {want:?}"),
    }
});
