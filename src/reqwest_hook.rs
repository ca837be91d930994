//! [`RetryPolicy::to_reqwest_retry`]: the policy's classification as
//! reqwest's own retry hook, for code that can only be handed a plain
//! `reqwest::Client` (SDKs that take a `Client`, not a middleware stack).

use std::time::Instant;

use http::{HeaderMap, Method, StatusCode, Uri};

use crate::classify::{FailureKind, Outcome, RequestMeta};
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
    /// - **no shared store calls**: a policy whose budget or breaker lives
    ///   in a store shared by many processes (Redis) needs a round trip
    ///   the hook cannot await: such a retry is not made;
    /// - streaming bodies are sent once (reqwest copies only bodies it can
    ///   clone).
    ///
    /// Prefer [`RetryMiddleware`](crate::RetryMiddleware), the
    /// [layer](crate::layer) or [`send_rebuilt`](Self::send_rebuilt)
    /// wherever the client allows one.
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn to_reqwest_retry(&self, host: impl Into<String>) -> reqwest::retry::Builder {
        retry_hook!(reqwest, self, host, crate::adapter::middleware::kind_of)
    }

    /// [`to_reqwest_retry`](Self::to_reqwest_retry) for reqwest 0.12
    /// (0.12.28 or later), for clients that take only a reqwest 0.12
    /// `Client`: the Anthropic SDKs (async-anthropic, clust,
    /// anthropic-ai-sdk) among them. The same rules and the same limits:
    /// no waits, no headers, no report.
    ///
    /// ```
    /// use http_resilience::RetryPolicy;
    ///
    /// // reqwest 0.12, under whatever name your Cargo.toml gives it.
    /// let client = reqwest_0_12::Client::builder()
    ///     .retry(RetryPolicy::anthropic().to_reqwest_retry_0_12("api.anthropic.com"))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    #[cfg(feature = "reqwest-0_12")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest-0_12")))]
    pub fn to_reqwest_retry_0_12(&self, host: impl Into<String>) -> reqwest_0_12::retry::Builder {
        retry_hook!(reqwest_0_12, self, host, kind_of_0_12)
    }
}

/// The hook of one reqwest version: its builder, scoped to `host`, with
/// the policy's `max_retries`, no budget of reqwest's (the policy's
/// applies), and the engine's decision as its classifier.
macro_rules! retry_hook {
    ($reqwest:ident, $policy:expr, $host:expr, $kind_of:path) => {{
        let policy = $policy.clone();
        let host: String = $host.into();
        // reqwest (0.12.28, 0.13.5) checks its scope only from the second
        // retry on: the classifier checks the host too, so that no
        // request to another host is ever retried.
        let ours = host.clone();
        $reqwest::retry::for_host(host)
            .no_budget()
            .max_retries_per_request($policy.max_retries())
            .classify_fn(move |attempt| {
                let status = attempt.status();
                let in_scope = attempt.uri().host() == Some(ours.as_str());
                let error = attempt.error();
                let outcome = match (status, error) {
                    (Some(status), _) => Some(Seen::Status(status)),
                    (None, Some(error)) => Some(Seen::Error($kind_of(error), error)),
                    (None, None) => None,
                };
                match outcome {
                    Some(seen)
                        if in_scope && retries(&policy, attempt.method(), attempt.uri(), seen) =>
                    {
                        attempt.retryable()
                    }
                    _ => attempt.success(),
                }
            })
    }};
}
use retry_hook;

/// What the hook saw of an attempt.
#[derive(Clone, Copy)]
enum Seen<'a> {
    Status(StatusCode),
    Error(FailureKind, &'a (dyn std::error::Error + 'static)),
}

/// Whether the engine would retry this attempt, seen as the first attempt
/// of a request (reqwest counts the retries).
fn retries(policy: &RetryPolicy, method: &Method, uri: &Uri, seen: Seen<'_>) -> bool {
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
    let decision = match seen {
        Seen::Status(status) => engine.decide(&meta, &Outcome::response(status, &headers), now),
        Seen::Error(kind, error) => engine.decide(&meta, &Outcome::Error { kind, error }, now),
    };
    matches!(decision, Decision::Retry { .. })
}

/// A reqwest 0.12 error's kind, by the rule the middleware applies to
/// reqwest 0.13's (`middleware::kind_of`): the builder and redirect flags,
/// the chain's connect-phase verdict, then reqwest's own flags, then the
/// chain. Never from the text.
#[cfg(feature = "reqwest-0_12")]
fn kind_of_0_12(error: &(dyn std::error::Error + 'static)) -> FailureKind {
    let Some(e) = error.downcast_ref::<reqwest_0_12::Error>() else {
        return FailureKind::from_error(error);
    };
    if e.is_builder() {
        return FailureKind::InvalidRequest;
    }
    if e.is_redirect() {
        return FailureKind::Redirect;
    }
    match FailureKind::from_error(e) {
        chain @ (FailureKind::Tls | FailureKind::Connect) => chain,
        _ if e.is_connect() => FailureKind::Connect,
        _ if e.is_timeout() => FailureKind::Timeout,
        _ if e.is_decode() => FailureKind::Decode,
        FailureKind::Other if e.is_body() => FailureKind::Body,
        chain => chain,
    }
}
