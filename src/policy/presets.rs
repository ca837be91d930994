//! The presets' rules: each provider's settings ([`Preset::builder`]) and
//! classifier, and the constructors [`RetryPolicy::github`],
//! [`RetryPolicy::openai`], [`RetryPolicy::anthropic`] and
//! [`RetryPolicy::git`]. The [`Preset`] names themselves are a leaf
//! ([`presets`](crate::presets)), documented there.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use super::{LongHint, RetryPolicy, RetryPolicyBuilder};
use crate::backoff::Jitter;
use crate::classify::{
    Class, Classify, DefaultClassifier, MAX_INSPECTED_BODY, Outcome, RequestMeta, classify_failure,
    not_processed, rate_limit_exhausted, should_retry_header,
};
use crate::headers::contains_ignore_ascii_case;
use crate::presets::Preset;
use crate::retry_after::{
    DelaySource, Hint, rate_limit_reset_hint, retry_after_hint, retry_after_ms_hint,
};

impl Preset {
    /// A builder holding this preset's settings and rules, to override
    /// some of them.
    pub fn builder(self) -> RetryPolicyBuilder {
        let b = RetryPolicy::builder();
        match self {
            Preset::GitHub => b
                .max_retries(3)
                .initial_backoff(Duration::from_secs(1))
                .max_backoff(Duration::from_secs(60))
                .max_retry_after(Duration::from_secs(300))
                .on_long_hint(LongHint::GiveUp)
                .rules(Preset::GitHub, GitHubRules),
            Preset::OpenAi => llm(b)
                .max_retry_after(Duration::from_secs(120))
                .on_long_hint(LongHint::GiveUp)
                .rules(Preset::OpenAi, LlmRules),
            Preset::Anthropic => llm(b)
                .max_retry_after(Duration::from_secs(60))
                .on_long_hint(LongHint::UseBackoff)
                .rules(Preset::Anthropic, LlmRules),
            Preset::Git => b
                .max_retries(3)
                .initial_backoff(Duration::from_secs(1))
                .max_backoff(Duration::from_secs(30))
                .max_retry_after(Duration::from_secs(300))
                .on_long_hint(LongHint::GiveUp)
                .rules(Preset::Git, GitRules),
        }
    }

    /// The preset's policy with its defaults.
    pub fn policy(self) -> RetryPolicy {
        self.builder().build().expect("presets are valid")
    }
}

fn llm(b: RetryPolicyBuilder) -> RetryPolicyBuilder {
    b.max_retries(2)
        .initial_backoff(Duration::from_millis(500))
        .max_backoff(Duration::from_secs(8))
        .multiplier(2.0)
        .jitter(Jitter::Scaled { min_factor: 0.75 })
        .retry_non_idempotent(true)
}

impl RetryPolicy {
    /// GitHub's REST API.
    ///
    /// - **Primary rate limit**: a 403 or 429 with `x-ratelimit-remaining: 0`
    ///   waits until `x-ratelimit-reset` (epoch seconds) plus one second, as
    ///   octokit does; a reset already past falls back to the backoff.
    /// - **Secondary rate limit**: a 403 or 429 with `retry-after` waits
    ///   that long; a 403 whose body mentions a "secondary rate limit", or a
    ///   429 without hints, waits at least 60 s, doubling on each repeat
    ///   (60, 120, 240 s). To see the message, the first 64 KiB of such a
    ///   403's body are read; the caller still receives the whole body.
    /// - **Permanent**: every other 403 (for example "Resource not accessible
    ///   by integration"), and 400, 401, 404, 410, 422, 451 (octokit's
    ///   `doNotRetry` list).
    /// - **Retried**: 5xx except 501/505, 408, and connection errors, for
    ///   idempotent requests (or ones with an `Idempotency-Key`). A rate
    ///   limit (primary or secondary) is retried for **any** method, POST
    ///   included: GitHub documents that a rate-limited request was not
    ///   processed ([`Classify::not_processed`]).
    /// - Settings: 3 retries, backoff 1 s doubling to 60 s with full jitter;
    ///   a wait above 5 minutes (a primary reset far ahead) fails at once
    ///   with `RETRY_AFTER_TOO_LONG`, carrying the wait, rather than
    ///   sleeping silently.
    ///
    /// Sources: docs.github.com, "Rate limits for the REST API" and "Best
    /// practices for using the REST API"; octokit `plugin-retry` and
    /// `plugin-throttling`.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::github();
    /// assert_eq!(policy.max_retries(), 3);
    /// ```
    pub fn github() -> RetryPolicy {
        Preset::GitHub.policy()
    }

    /// OpenAI's API, as the official SDK retries it.
    ///
    /// - Retries 408, 409, 425, 429, every 5xx, timeouts and connection errors,
    ///   for every method, POST included (`retry_non_idempotent`).
    /// - `x-should-retry: true|false` wins over the status rule.
    /// - Waits `retry-after-ms`, else `Retry-After` (seconds or HTTP-date);
    ///   a hint above 120 s is not waited for: the request fails at once
    ///   with `RETRY_AFTER_TOO_LONG`.
    /// - Backoff: 0.5 s doubling to 8 s, each wait multiplied by a random
    ///   factor in \[0.75, 1\] ([`Jitter::Scaled`]); 2 retries.
    ///
    /// Source: `openai-python`, `_base_client.py` (`_should_retry`,
    /// `_calculate_retry_timeout`) and `_constants.py`.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::openai();
    /// assert_eq!(policy.max_retries(), 2);
    /// assert!(policy.retry_non_idempotent());
    /// ```
    pub fn openai() -> RetryPolicy {
        Preset::OpenAi.policy()
    }

    /// Anthropic's API, as the official SDK retries it.
    ///
    /// The same rules as [`RetryPolicy::openai`], with 529 (`overloaded_error`)
    /// retried explicitly, and a hint above 60 s ignored in favour of the
    /// backoff ([`LongHint::UseBackoff`]), as the SDK does.
    ///
    /// Source: `anthropic-sdk-python`, `_base_client.py`; Anthropic's
    /// "Errors" documentation (529 overloaded).
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::anthropic();
    /// assert_eq!(policy.max_retry_after(), std::time::Duration::from_secs(60));
    /// ```
    pub fn anthropic() -> RetryPolicy {
        Preset::Anthropic.policy()
    }

    /// git's smart HTTP protocol.
    ///
    /// - `GET .../info/refs` and `POST .../git-upload-pack` (a fetch, which
    ///   changes nothing on the server) are retried; `POST
    ///   .../git-receive-pack` (a push) never is, not even after a refused
    ///   connection.
    /// - 429 and 5xx (but 501/505) and connection errors are retried; 429
    ///   honours `Retry-After`.
    /// - A wait above 300 s fails at once with `RETRY_AFTER_TOO_LONG`, like
    ///   git's `http.maxRetryTime`.
    /// - Settings: 3 retries, backoff 1 s doubling to 30 s with full jitter.
    ///
    /// Source: git `http.c` (`http.maxRetries`, `http.maxRetryTime`) and
    /// `gitprotocol-http`.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::git();
    /// assert_eq!(policy.max_retry_after(), std::time::Duration::from_secs(300));
    /// ```
    pub fn git() -> RetryPolicy {
        Preset::Git.policy()
    }
}

/// GitHub REST rules (see [`RetryPolicy::github`]).
#[derive(Debug, Clone, Copy)]
struct GitHubRules;

/// The statuses GitHub uses for rate limits.
fn rate_limit_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 403 | 429)
}

fn mentions_secondary_limit(body: &[u8]) -> bool {
    contains_ignore_ascii_case(body, b"secondary rate limit")
}

/// GitHub's minimum wait after a secondary rate limit.
const SECONDARY_MINIMUM: Duration = Duration::from_secs(60);

/// `Some(true)` for GitHub's rate-limit rejections (a 403 or 429 with
/// `x-ratelimit-remaining: 0`, a `retry-after`, or a secondary-limit
/// message; any 429), `Some(false)` for its other 403s, `None` for
/// anything else.
fn github_rate_limited(outcome: &Outcome<'_>) -> Option<bool> {
    match *outcome {
        Outcome::Response {
            status,
            headers,
            body,
        } if rate_limit_status(status) => Some(
            status == StatusCode::TOO_MANY_REQUESTS
                || rate_limit_exhausted(headers)
                || headers.contains_key(http::header::RETRY_AFTER)
                || body.is_some_and(mentions_secondary_limit),
        ),
        _ => None,
    }
}

impl Classify for GitHubRules {
    fn classify(&self, request: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class {
        match github_rate_limited(outcome) {
            Some(true) => Class::Transient,
            Some(false) => Class::Permanent,
            None => DefaultClassifier.classify(request, outcome),
        }
    }

    /// GitHub documents that a rate-limited request was not processed
    /// (primary and secondary limits alike), and content-creating POSTs
    /// are what trigger secondary limits: any method may be resent after
    /// one.
    fn not_processed(&self, _: &RequestMeta<'_>, outcome: &Outcome<'_>) -> bool {
        github_rate_limited(outcome).unwrap_or_else(|| not_processed(outcome))
    }

    fn inspect_body(&self, _: &RequestMeta<'_>, status: StatusCode, headers: &HeaderMap) -> usize {
        // Only a 403 without any rate-limit header is ambiguous; a 429 is a
        // rate limit whatever its body says.
        if status == StatusCode::FORBIDDEN
            && !rate_limit_exhausted(headers)
            && !headers.contains_key(http::header::RETRY_AFTER)
        {
            MAX_INSPECTED_BODY
        } else {
            0
        }
    }

    fn hint(
        &self,
        _: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: SystemTime,
        retries: u32,
    ) -> Option<Hint> {
        let Outcome::Response {
            status, headers, ..
        } = *outcome
        else {
            return None;
        };
        if let Some(hint) = retry_after_hint(headers, now) {
            return Some(hint);
        }
        if !rate_limit_status(status) {
            return None;
        }
        if rate_limit_exhausted(headers) {
            // Primary limit: until the reset, plus one second (octokit); a
            // reset already past leaves the wait to the backoff.
            return rate_limit_reset_hint(headers, now).map(|hint| Hint {
                delay: hint.delay.saturating_add(Duration::from_secs(1)),
                ..hint
            });
        }
        // Secondary limit without a hint: at least a minute, doubling.
        Some(Hint {
            delay: SECONDARY_MINIMUM.saturating_mul(1u32 << retries.min(16)),
            source: DelaySource::ProviderRule,
        })
    }
}

/// OpenAI and Anthropic SDK rules (see [`RetryPolicy::openai`]).
#[derive(Debug, Clone, Copy)]
struct LlmRules;

impl Classify for LlmRules {
    fn classify(&self, _: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class {
        match *outcome {
            Outcome::Response {
                status, headers, ..
            } => {
                if status.as_u16() < 400 {
                    return Class::Success;
                }
                let retry = should_retry_header(headers).unwrap_or(matches!(
                    status.as_u16(),
                    408 | 409 | 425 | 429 | 529 | 500..=599
                ));
                if retry {
                    Class::Transient
                } else {
                    Class::Permanent
                }
            }
            Outcome::Error { kind, .. } => classify_failure(kind),
        }
    }

    fn hint(
        &self,
        _: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: SystemTime,
        _: u32,
    ) -> Option<Hint> {
        let headers = outcome.headers()?;
        // The SDKs read only these two; a zero hint means "use the backoff".
        retry_after_ms_hint(headers).or_else(|| retry_after_hint(headers, now))
    }
}

/// git smart HTTP rules (see [`RetryPolicy::git`]).
#[derive(Debug, Clone, Copy)]
struct GitRules;

impl Classify for GitRules {
    fn classify(&self, request: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class {
        DefaultClassifier.classify(request, outcome)
    }

    fn retry_safety(&self, request: &RequestMeta<'_>) -> Option<bool> {
        let path = request.path();
        if path.ends_with("/git-receive-pack") {
            Some(false)
        } else if path.ends_with("/git-upload-pack") || path.ends_with("/info/refs") {
            Some(true)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};
    use std::time::UNIX_EPOCH;

    fn response(
        rules: &dyn Classify,
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: Option<&[u8]>,
    ) -> (Class, Option<Hint>) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_static(v));
        }
        let req_headers = HeaderMap::new();
        let req = RequestMeta::new(&Method::GET, "https", "api.github.com", "/x", &req_headers);
        let outcome = Outcome::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &h,
            body,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        (
            rules.classify(&req, &outcome),
            rules.hint(&req, &outcome, now, 1),
        )
    }

    #[test]
    fn github_rules() {
        let secs = |s| Some(Duration::from_secs(s));
        type Row = (
            u16,
            &'static [(&'static str, &'static str)],
            Option<&'static [u8]>,
            Class,
            Option<Duration>,
        );
        let cases: &[Row] = &[
            (
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700000030"),
                ],
                None,
                Class::Transient,
                secs(31),
            ),
            (
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1699999990"),
                ],
                None,
                Class::Transient,
                None,
            ),
            (
                403,
                &[("retry-after", "5")],
                None,
                Class::Transient,
                secs(5),
            ),
            (
                403,
                &[],
                Some(b"{\"message\":\"You have exceeded a Secondary Rate Limit\"}"),
                Class::Transient,
                secs(120),
            ),
            (
                403,
                &[],
                Some(b"{\"message\":\"Resource not accessible by integration\"}"),
                Class::Permanent,
                secs(120),
            ),
            (429, &[], None, Class::Transient, secs(120)),
            (422, &[], None, Class::Permanent, None),
            (502, &[], None, Class::Transient, None),
        ];
        for (status, headers, body, class, delay) in cases {
            let (c, h) = response(&GitHubRules, *status, headers, *body);
            assert_eq!(c, *class, "{status} {headers:?}");
            assert_eq!(h.map(|h| h.delay), *delay, "{status} {headers:?}");
        }
    }

    #[test]
    fn llm_rules() {
        for (status, headers, class) in [
            (409, &[][..], Class::Transient),
            (529, &[], Class::Transient),
            (501, &[], Class::Transient),
            (400, &[("x-should-retry", "true")], Class::Transient),
            (503, &[("x-should-retry", "false")], Class::Permanent),
            (404, &[], Class::Permanent),
        ] {
            assert_eq!(
                response(&LlmRules, status, headers, None).0,
                class,
                "{status}"
            );
        }
        let (_, hint) = response(
            &LlmRules,
            429,
            &[("retry-after-ms", "1500"), ("retry-after", "2")],
            None,
        );
        assert_eq!(hint.unwrap().delay, Duration::from_millis(1500));
    }

    #[test]
    fn preset_names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.as_str().parse::<Preset>(), Ok(p));
            assert_eq!(p.policy().preset(), Some(p));
        }
    }
}
