//! [`RetryPolicy::to_reqwest_retry`]: the policy's classification as
//! reqwest's own retry hook, for code that can only be handed a plain
//! `reqwest::Client` (SDKs that take a `Client`, not a middleware stack).

use std::time::Instant;

use http::{HeaderMap, Method, StatusCode, Uri};

use crate::classify::{Outcome, RequestMeta};
use crate::engine::{Decision, RetryState};
use crate::policy::RetryPolicy;

impl RetryPolicy {
    /// The policy's classification as a `reqwest::retry::Builder` (reqwest
    /// 0.13's own retry hook) for requests to `host`, to give to
    /// `reqwest::ClientBuilder::retry` when a client can only be handed a
    /// plain `reqwest::Client`, so that neither the
    /// [middleware](crate::middleware) nor the [layer](crate::layer) can
    /// go under it.
    ///
    /// ```
    /// use http_resilience::RetryPolicy;
    ///
    /// let client = reqwest::Client::builder()
    ///     .retry(RetryPolicy::anthropic().to_reqwest_retry("api.anthropic.com"))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    ///
    /// # What it carries
    ///
    /// After every attempt, reqwest asks; the answer is this crate's
    /// [engine](crate::engine) deciding on what the hook can see: the
    /// method, the URL and the status, or the transport error (mapped as
    /// through the middleware). So the status rules, the transport rules,
    /// the presets' rules that need no header (the git preset's "never
    /// resend a push"), the method rules (a POST is resent only after a
    /// refused connection, a 408, 425 or 429, or under a policy that opts
    /// in), the retry budget (the policy's, per endpoint: reqwest's own
    /// budget is turned off) and an open circuit breaker (no retry while
    /// it is open) apply. `max_retries` becomes reqwest's
    /// `max_retries_per_request`. Requests to hosts other than `host` are
    /// never retried (reqwest scopes a retry policy to one host: build
    /// one client per API, as SDKs do).
    ///
    /// # What it cannot do
    ///
    /// reqwest's hook sees no header and no body, and cannot wait: its
    /// retry is sent at once. So, compared with the middleware:
    ///
    /// - **no waits**: no backoff, no jitter; a retry follows its failure
    ///   immediately, and a 429 is retried at once;
    /// - **no server hints**: `Retry-After`, `retry-after-ms`, rate-limit
    ///   resets and quota holds are never read; `x-should-retry` is not
    ///   seen; GitHub's rate-limit 403s (told apart by their headers or
    ///   body) are not retried;
    /// - **no request headers**: an `Idempotency-Key` the caller set is not
    ///   seen, so a keyed POST counts as not idempotent; the policy adds no
    ///   key, no attempt header, and runs no `before_retry` hook;
    /// - **no deadline, no attempt timeout** (use reqwest's own `timeout`),
    ///   no local rate limit, no admission by the breaker before the
    ///   first attempt;
    /// - **no report and no typed error**: the caller gets reqwest's last
    ///   response or error as it is, with no [`RetryReport`](crate::RetryReport)
    ///   and no [`Error`](crate::Error) code;
    /// - streaming bodies are sent once (reqwest copies only bodies it can
    ///   clone).
    ///
    /// Prefer [`RetryMiddleware`](crate::RetryMiddleware), the
    /// [layer](crate::layer) or [`send_rebuilt`](Self::send_rebuilt)
    /// wherever the client allows one.
    pub fn to_reqwest_retry(&self, host: impl Into<String>) -> reqwest::retry::Builder {
        let policy = self.clone();
        let host = host.into();
        // reqwest 0.13.5 checks its scope only from the second retry on:
        // the classifier checks the host too, so that no request to
        // another host is ever retried.
        let ours = host.clone();
        reqwest::retry::for_host(host)
            .no_budget()
            .max_retries_per_request(self.max_retries())
            .classify_fn(move |attempt| {
                let status = attempt.status();
                let in_scope = attempt.uri().host() == Some(ours.as_str());
                if in_scope
                    && retries(
                        &policy,
                        attempt.method(),
                        attempt.uri(),
                        status,
                        attempt.error(),
                    )
                {
                    attempt.retryable()
                } else {
                    attempt.success()
                }
            })
    }
}

/// Whether the engine would retry this attempt, seen as the first attempt
/// of a request (reqwest counts the retries).
fn retries(
    policy: &RetryPolicy,
    method: &Method,
    uri: &Uri,
    status: Option<StatusCode>,
    error: Option<&(dyn std::error::Error + 'static)>,
) -> bool {
    let headers = HeaderMap::new();
    let scheme = uri.scheme_str().unwrap_or("");
    let port = uri.port_u16().unwrap_or(match scheme {
        "https" => 443,
        "http" => 80,
        _ => 0,
    });
    let meta = RequestMeta::new(
        method,
        scheme,
        uri.host().unwrap_or(""),
        uri.path(),
        &headers,
    )
    .with_port(port);
    let now = Instant::now();
    let mut engine = RetryState::new(policy, &meta, now);
    let decision = match (status, error) {
        (Some(status), _) => engine.decide(&meta, &Outcome::response(status, &headers), now),
        (None, Some(error)) => {
            let kind = crate::adapter::middleware::kind_of(error);
            engine.decide(&meta, &Outcome::Error { kind, error }, now)
        }
        (None, None) => return false,
    };
    matches!(decision, Decision::Retry { .. })
}
