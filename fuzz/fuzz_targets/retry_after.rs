//! `retry_after::parse_retry_after` on arbitrary bytes and an arbitrary
//! "now": never panics, and agrees with the reference model (delay-seconds
//! up to 100 years, or the distance to a well-formed HTTP-date) exactly.
//!
//! Input: 8 bytes of clock (see `split_now`), then the header value.
#![no_main]

use http_resilience::retry_after::parse_retry_after;
use http_resilience_fuzz::{model_retry_after, split_now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((now, value)) = split_now(data) else {
        return;
    };
    let got = parse_retry_after(value, now).map(|d| d.as_nanos() as i128);
    let want = model_retry_after(value, now);
    assert_eq!(
        got,
        want,
        "value {:?} at {now:?}",
        String::from_utf8_lossy(value)
    );
});
