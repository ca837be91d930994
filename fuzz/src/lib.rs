//! Helpers shared by the fuzz targets: a wall-clock "now" and a header map
//! built from fuzz bytes. The reference models they compare the crate with
//! are in [`model`], which is `tests/properties/model.rs` of the main
//! package (the property tests use the same models).
//!
//! A target compares the crate with a model on every input: a disagreement
//! is a crash, like a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

#[path = "../../tests/properties/model.rs"]
pub mod model;
pub use model::*;

/// Around 2023-11-14: the centre of the fuzzed clock.
pub const NOW_BASE_SECS: i64 = 1_700_000_000;

/// Splits the first 8 bytes off as a wall-clock "now": `NOW_BASE_SECS`
/// plus a signed 32-bit number of seconds (1901..2091), with nanoseconds.
/// Returns `None` for shorter inputs.
pub fn split_now(data: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    let offset = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let nanos = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) % 1_000_000_000;
    let secs = NOW_BASE_SECS + i64::from(offset);
    let now = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    };
    Some((now, rest))
}

/// Nanoseconds as a duration (`ns` must be non-negative and fit).
pub fn duration_ns(ns: i128) -> Duration {
    let ns = u128::try_from(ns).expect("non-negative");
    Duration::new((ns / NS as u128) as u64, (ns % NS as u128) as u32)
}

/// Header names a fuzz byte can pick: the ones the parsers read, in
/// several spellings, and a few they must ignore.
const NAMES: &[&str] = &[
    "retry-after",
    "Retry-After",
    "RETRY-AFTER",
    "retry-after-ms",
    "Retry-After-Ms",
    "x-ratelimit-remaining",
    "X-RateLimit-Remaining",
    "x-ratelimit-reset",
    "X-RateLimit-Reset",
    "x-should-retry",
    "X-Should-Retry",
    "idempotency-key",
    "x-ratelimit-limit",
    "ratelimit-reset",
    "retry-after-s",
    "content-length",
];

/// A header map from fuzz bytes: entries separated by `\n`; an entry's
/// first byte picks a name (from [`NAMES`] when below 0xF0, otherwise the
/// bytes up to the first `:` are the name) and the rest is the value, raw
/// (non-UTF-8 allowed). Entries `http` refuses are skipped; repeated names
/// are appended, so duplicates occur.
pub fn header_map(data: &[u8]) -> HeaderMap {
    header_map_with(data, NAMES)
}

/// The circuit-breaker harness shared with the property tests.
#[path = "../../tests/properties/circuit_harness.rs"]
pub mod circuit_harness;

/// Header names for the `quota_reset` target: the three families'
/// `*-remaining` and `*-reset` headers (in two spellings), the other
/// families' request/token variants and a few unrelated names.
pub const QUOTA_NAMES: &[&str] = &[
    "x-ratelimit-remaining",
    "X-RateLimit-Remaining",
    "x-ratelimit-reset",
    "X-RateLimit-Reset",
    "anthropic-ratelimit-requests-remaining",
    "Anthropic-Ratelimit-Requests-Remaining",
    "anthropic-ratelimit-requests-reset",
    "Anthropic-Ratelimit-Requests-Reset",
    "x-ratelimit-remaining-requests",
    "X-Ratelimit-Remaining-Requests",
    "x-ratelimit-reset-requests",
    "X-Ratelimit-Reset-Requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-tokens-reset",
    "retry-after",
];

/// [`header_map`] with the names picked from `names` instead.
pub fn header_map_with(data: &[u8], names: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for entry in data.split(|&b| b == b'\n') {
        let Some((&pick, rest)) = entry.split_first() else {
            continue;
        };
        let (name, value) = if pick < 0xF0 {
            let name = names[usize::from(pick) % names.len()];
            (HeaderName::from_bytes(name.as_bytes()).ok(), rest)
        } else {
            match rest.iter().position(|&b| b == b':') {
                Some(colon) => (
                    HeaderName::from_bytes(&rest[..colon]).ok(),
                    &rest[colon + 1..],
                ),
                None => (None, rest),
            }
        };
        if let (Some(name), Ok(value)) = (name, HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    headers
}
