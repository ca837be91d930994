//! A whole response `HeaderMap` built from fuzz bytes (arbitrary and
//! well-known names in several spellings, duplicates, non-UTF-8 values):
//! `server_hint`, `classify::should_retry_header` and
//! `classify::rate_limit_exhausted` never panic and agree with reference
//! models built on the independent parser models (first value of each
//! header; `retry-after-ms`, then `Retry-After`, then `x-ratelimit-reset`
//! with `x-ratelimit-remaining: 0`; zero means no hint).
//!
//! Input: 8 bytes of clock (see `split_now`), then the headers (see
//! `header_map`).
#![no_main]

use http::HeaderMap;
use http_resilience::DelaySource;
use http_resilience::classify::{rate_limit_exhausted, should_retry_header};
use http_resilience::retry_after::server_hint;
use http_resilience_fuzz::{
    MAX_HINT_NS, first_value, header_map, model_epoch_reset, model_rate_limit_exhausted,
    model_retry_after, model_retry_after_ms_exact, model_should_retry, ms_tolerance_ns, split_now,
};
use libfuzzer_sys::fuzz_target;

/// The model's hint and its tolerance, or `Err(())` when the input sits
/// within rounding distance of a boundary (either answer is right).
fn model_hint(
    headers: &HeaderMap,
    now: std::time::SystemTime,
) -> Result<Option<(i128, DelaySource, i128)>, ()> {
    if let Some(exact) = first_value(headers, "retry-after-ms").and_then(model_retry_after_ms_exact)
    {
        let tol = ms_tolerance_ns(exact);
        if exact <= tol || (exact - MAX_HINT_NS).abs() <= tol {
            return Err(());
        }
        if exact <= MAX_HINT_NS {
            return Ok(Some((exact, DelaySource::RetryAfterMs, tol)));
        }
    }
    let positive = |d: Option<i128>| d.filter(|&d| d > 0);
    if let Some(d) =
        positive(first_value(headers, "retry-after").and_then(|v| model_retry_after(v, now)))
    {
        return Ok(Some((d, DelaySource::RetryAfter, 0)));
    }
    let reset = first_value(headers, "x-ratelimit-reset").and_then(|v| model_epoch_reset(v, now));
    if model_rate_limit_exhausted(headers)
        && let Some(d) = positive(reset)
    {
        return Ok(Some((d, DelaySource::RateLimitReset, 0)));
    }
    Ok(None)
}

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
    let Ok(want) = model_hint(&headers, now) else {
        return;
    };
    match (got, want) {
        (Some(hint), Some((ns, source, tol))) => {
            assert_eq!(hint.source, source, "{headers:?} at {now:?}");
            let got_ns = hint.delay.as_nanos() as i128;
            assert!(
                (got_ns - ns).abs() <= tol,
                "{headers:?} at {now:?}: {got_ns} ns, want {ns} ns"
            );
        }
        (None, None) => {}
        (got, want) => panic!("{headers:?} at {now:?}: got {got:?}, want {want:?}"),
    }
});
