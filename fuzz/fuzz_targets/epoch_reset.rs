//! `retry_after::parse_epoch_reset` on arbitrary bytes and an arbitrary
//! "now": never panics, and agrees exactly with the reference model (the
//! wait until an epoch-seconds time, zero when past, refused above 100
//! years).
//!
//! Input: 8 bytes of clock (see `split_now`), then the header value.
#![no_main]

use http_resilience::retry_after::parse_epoch_reset;
use http_resilience_fuzz::{model_epoch_reset, split_now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((now, value)) = split_now(data) else {
        return;
    };
    let got = parse_epoch_reset(value, now).map(|d| d.as_nanos() as i128);
    let want = model_epoch_reset(value, now);
    assert_eq!(
        got,
        want,
        "value {:?} at {now:?}",
        String::from_utf8_lossy(value)
    );
});
