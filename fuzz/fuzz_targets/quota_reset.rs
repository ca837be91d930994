//! `retry_after::quota_reset` on arbitrary header maps mixing the three
//! quota families (epoch seconds, Anthropic's RFC 3339, OpenAI's Go
//! durations) with arbitrary bytes, and `parse_reset_duration` /
//! `parse_rfc3339_reset` on every value in the map: never panics; any
//! `Some(wait)` is positive and at most 100 years; the family is the first
//! exhausted one; epoch resets equal the model; RFC 3339 timestamps of the
//! strict form and canonical Go durations (`6m0s`, `12ms`, `1.5s`) equal
//! the models in `tests/properties/model.rs` (written without jiff), and a
//! non-canonical Go duration (`1s1s`, `1.5m30s`) is refused or read as Go
//! reads it.
//!
//! Input: 8 bytes of clock (see `split_now`), then the header map (see
//! `header_map_with` and `QUOTA_NAMES`).
#![no_main]

use std::time::SystemTime;

use http_resilience::retry_after::{
    QuotaHeaders, parse_reset_duration, parse_rfc3339_reset, quota_reset,
};
use http_resilience_fuzz::{
    MAX_HINT_NS, QUOTA_NAMES, QuotaFamily, epoch_ns, header_map_with, model_epoch_reset,
    model_go_duration, model_quota_family, model_rfc3339, split_now,
};
use libfuzzer_sys::fuzz_target;

/// A wait the parsers may return for a time `at_ns` on the epoch: zero when
/// past, `None` above 100 years.
fn wait_until(at_ns: i128, now: SystemTime) -> Option<i128> {
    let wait = (at_ns - epoch_ns(now)).max(0);
    (wait <= MAX_HINT_NS).then_some(wait)
}

fn check_duration(value: &[u8]) {
    let got = parse_reset_duration(value).map(|d| d.as_nanos() as i128);
    if let Some(ns) = got {
        assert!(ns <= MAX_HINT_NS, "{value:?} -> {ns} ns");
    }
    let Some(go) = model_go_duration(value) else {
        return;
    };
    let want = (go.ns <= MAX_HINT_NS).then_some(go.ns);
    if go.canonical && go.exact {
        assert_eq!(
            got,
            want,
            "Go duration {:?}",
            String::from_utf8_lossy(value)
        );
    } else if go.exact {
        assert!(
            got.is_none() || got == want,
            "Go duration {:?}: {got:?}, Go reads {want:?}",
            String::from_utf8_lossy(value)
        );
    }
}

fn check_rfc3339(value: &[u8], now: SystemTime) {
    let got = parse_rfc3339_reset(value, now).map(|d| d.as_nanos() as i128);
    if let Some(ns) = got {
        assert!(ns <= MAX_HINT_NS, "{value:?} -> {ns} ns");
    }
    if let Some(at) = model_rfc3339(value) {
        assert_eq!(
            got,
            wait_until(at, now),
            "RFC 3339 {:?} at {now:?}",
            String::from_utf8_lossy(value)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((now, rest)) = split_now(data) else {
        return;
    };
    let headers = header_map_with(rest, QUOTA_NAMES);
    for value in headers.values() {
        check_duration(value.as_bytes());
        check_rfc3339(value.as_bytes(), now);
    }
    let got = quota_reset(&headers, now);
    if let Some((wait, _)) = got {
        assert!(!wait.is_zero(), "a zero wait is no hold");
        assert!(wait.as_nanos() as i128 <= MAX_HINT_NS, "{wait:?}");
    }
    let got = got.map(|(wait, which)| (wait.as_nanos() as i128, which));
    match model_quota_family(&headers) {
        None => assert_eq!(got, None, "no exhausted family: {headers:?}"),
        Some((family, reset)) => {
            let which = match family {
                QuotaFamily::EpochReset => QuotaHeaders::EpochReset,
                QuotaFamily::Anthropic => QuotaHeaders::Anthropic,
                QuotaFamily::OpenAi => QuotaHeaders::OpenAi,
            };
            if let Some((_, w)) = got {
                assert_eq!(w, which, "{headers:?}");
            }
            let want = match family {
                QuotaFamily::EpochReset => Some(model_epoch_reset(reset, now)),
                QuotaFamily::Anthropic => model_rfc3339(reset).map(|at| wait_until(at, now)),
                QuotaFamily::OpenAi => model_go_duration(reset)
                    .filter(|g| g.canonical && g.exact)
                    .map(|g| (g.ns <= MAX_HINT_NS).then_some(g.ns)),
            };
            if let Some(want) = want {
                let want = want.filter(|&ns| ns > 0).map(|ns| (ns, which));
                assert_eq!(got, want, "{headers:?} at {now:?}");
            }
        }
    }
});
