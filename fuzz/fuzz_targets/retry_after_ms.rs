//! `retry_after::parse_retry_after_ms` on arbitrary bytes: never panics,
//! never returns more than 100 years, and agrees with the reference model
//! (exact decimal milliseconds) within the rounding of `f64`; within that
//! tolerance of the bound either answer is accepted.
//!
//! Input: the header value.
#![no_main]

use http_resilience::retry_after::parse_retry_after_ms;
use http_resilience_fuzz::{MAX_HINT_NS, model_retry_after_ms_exact, ms_tolerance_ns};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &[u8]| {
    let got = parse_retry_after_ms(value).map(|d| d.as_nanos() as i128);
    let exact = model_retry_after_ms_exact(value);
    let shown = String::from_utf8_lossy(value);
    if let Some(got) = got {
        assert!(got <= MAX_HINT_NS, "{shown:?} -> {got} ns, above the bound");
    }
    match (got, exact) {
        (Some(got), Some(exact)) => assert!(
            (got - exact).abs() <= ms_tolerance_ns(exact),
            "{shown:?} -> {got} ns, want {exact} ns"
        ),
        (Some(got), None) => panic!("{shown:?} -> {got} ns, want None"),
        (None, Some(exact)) => assert!(
            exact + ms_tolerance_ns(exact) > MAX_HINT_NS,
            "{shown:?} -> None, want {exact} ns"
        ),
        (None, None) => {}
    }
});
