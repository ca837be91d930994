//! Header names and small header helpers: the vocabulary the rest of the
//! crate reads responses and requests with. A leaf: it imports nothing of
//! the crate.
//!
//! Names are `HeaderName` constants: a `&str` key makes `http` parse and
//! hash the name on every lookup.

use http::{HeaderMap, HeaderName};

/// The header that makes a non-idempotent request safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(crate) const IDEMPOTENCY_KEY_NAME: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY);
pub(crate) const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
pub(crate) const X_RATELIMIT_REMAINING: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining");
pub(crate) const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub(crate) const X_RATELIMIT_RESOURCE: HeaderName = HeaderName::from_static("x-ratelimit-resource");
pub(crate) const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
pub(crate) const ANTHROPIC_RESET: HeaderName =
    HeaderName::from_static("anthropic-ratelimit-requests-reset");
pub(crate) const OPENAI_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");

/// The headers that carry a request's credential, in the order they are
/// hashed into its `Partition`: `Authorization` (GitHub's tokens,
/// OpenAI's keys, any bearer or basic credential), `x-api-key`
/// (Anthropic) and `api-key` (Azure OpenAI).
pub const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
];

/// Headers that narrow a credential's quota, hashed in after it when a
/// credential is present: OpenAI's limits are per organization and
/// project, which a request may pick with these.
pub(crate) const QUOTA_SCOPE_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
];

/// Request headers that a policy's attempt header may not be: the
/// connection's own (hop-by-hop and framing: RFC 9110 §7.6.1, `host`,
/// `content-length`), credentials (they belong to the caller, and a
/// request's quota partition is hashed from them) and the idempotency key
/// (every attempt must carry the caller's).
pub(crate) const RESERVED_REQUEST_HEADERS: [HeaderName; 15] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    IDEMPOTENCY_KEY_NAME,
];

/// Reads `x-should-retry: true|false` (case-insensitive). Anything else is
/// ignored.
pub fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(&X_SHOULD_RETRY)?.as_bytes();
    let value = trim_ows(value);
    if value.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else if value.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else {
        None
    }
}

/// `true` when `x-ratelimit-remaining` is exactly `0` (GitHub's sign of an
/// exhausted primary rate limit).
pub fn rate_limit_exhausted(headers: &HeaderMap) -> bool {
    headers
        .get(&X_RATELIMIT_REMAINING)
        .is_some_and(|v| trim_ows(v.as_bytes()) == b"0")
}

/// Trims optional white space (space and tab, RFC 9110 §5.6.3).
pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// `true` if `haystack` contains `needle`, ignoring ASCII case (a body's
/// message, for one). Allocation-free.
pub(crate) fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_ows() {
        assert_eq!(trim_ows(b" \t42 "), b"42");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"  "), b"");
    }

    #[test]
    fn finds_ignoring_case() {
        assert!(contains_ignore_ascii_case(
            b"a Secondary Rate Limit",
            b"secondary rate limit"
        ));
        assert!(!contains_ignore_ascii_case(
            b"rate",
            b"secondary rate limit"
        ));
    }
}
