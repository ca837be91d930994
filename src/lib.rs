//! Correct, cheap retries for HTTP clients.
//!
//! `http-resilience` wraps an HTTP client so that the ordinary failures of
//! calls to GitHub, LLM providers and git hosts (429 rate limits, 503s,
//! 529 overloads, connection resets, hangs) are retried the way the HTTP
//! standard and those services expect, and nothing else is:
//!
//! - **classification**: transient (408, 425, 429, 5xx but 501/505, connection
//!   errors, timeouts) against permanent (other 4xx, TLS, bad URLs), with
//!   `x-should-retry`, `Idempotency-Key` 409s and GitHub's rate-limit 403s
//!   understood; replaceable ([`Classify`]);
//! - **jittered exponential backoff**, capped, reproducible with a seed
//!   ([`Backoff`], [`Jitter`]);
//! - **server hints**: `retry-after-ms`, `Retry-After` (seconds and all
//!   three HTTP-date forms), `x-ratelimit-reset`; a hint above the cap stops
//!   at once with `RETRY_AFTER_TOO_LONG` instead of a silent long sleep
//!   ([`retry_after`]);
//! - **HTTP semantics**: non-idempotent requests are retried only when the
//!   server provably did not act on them (a refused connection, 408, 425,
//!   a rate-limit rejection: 429 and GitHub's rate-limit 403s), or when they carry an
//!   `Idempotency-Key` (which the policy can add); a total deadline that is
//!   never overshot; per-attempt timeouts;
//! - **nothing lost**: when retries run out the [`Error`] says why
//!   ([`Error::code`]) and keeps the full [`RetryReport`] and the last
//!   response, body unread;
//! - **one engine, two adapters**: a sans-IO decision core ([`engine`])
//!   under a `tower` layer ([`RetryLayer`]) and a `reqwest-middleware`
//!   middleware ([`RetryMiddleware`]);
//! - **per-endpoint policies and provider presets**: [`EndpointPolicies`]
//!   routes requests to policies by scheme, host, path and method, and
//!   [`presets`] follow what GitHub, OpenAI, Anthropic and git document
//!   ([`RetryPolicy::github`], [`RetryPolicy::openai`],
//!   [`RetryPolicy::anthropic`], [`RetryPolicy::git`],
//!   [`EndpointPolicies::well_known`]);
//! - **load protection**, so that retries never turn an outage into a
//!   flood: a per-endpoint [`RetryBudget`] (on by default), a
//!   [`CircuitBreaker`], a client-side [`RateLimit`] (a GCRA with
//!   reservations: first come, first served), and quotas that servers
//!   announce as gone (`x-ratelimit-remaining: 0` and the Anthropic and
//!   OpenAI forms) holding the later requests with the same credential
//!   until the reset; state behind a [`StateStore`] seam. The stages run in one
//!   documented order, see [policy](policy#load-protection);
//! - **any async operation**, not only HTTP: [`RetryPolicy::retry`] runs a
//!   queue poll or a store call under the same backoff, deadline, budget
//!   and report, with your function classifying its errors (see [`op`]);
//! - **observability and extension points**: metrics (feature `metrics`),
//!   one tracing span per attempt with OpenTelemetry's HTTP fields, JSON
//!   records of reports and errors (feature `serde`, see `record`), a hook
//!   before each resend and an attempt-number header ([`resend`]);
//! - **hedged requests**: a second copy of a slow request that may be sent
//!   twice, after a fixed delay or a learned percentile, the first
//!   acceptable response winning and the others cancelled, within the
//!   retry budget (see [`hedging`]);
//! - **streamed bodies**: bounded replay of request bodies that cannot be
//!   cloned ([`replay`]), response bodies that resume where they were cut
//!   ([`resume`]), downloads that never leave a partial file (feature
//!   `download`).
//!
//! # With reqwest
//!
//! ```
//! # #[cfg(feature = "reqwest")] {
//! use std::time::Duration;
//! use http_resilience::{RetryMiddleware, RetryPolicy};
//!
//! let policy = RetryPolicy::builder()
//!     .max_retries(3)
//!     .deadline(Duration::from_secs(30))
//!     .build()
//!     .expect("valid policy");
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryMiddleware::new(policy))
//!     .build();
//! # let _ = client; }
//! ```
//!
//! # With tower
//!
//! ```
//! use std::convert::Infallible;
//! use http_resilience::{RetryLayer, RetryPolicy};
//!
//! let inner = tower::service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, Infallible>(http::Response::new(String::from("ok")))
//! });
//! let service = tower::ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::default()))
//!     .service(inner);
//! # let _ = service;
//! ```
//!
//! # Features
//!
//! - `reqwest` (default): [`RetryMiddleware`], for `reqwest` 0.13 through
//!   `reqwest-middleware` 0.5.
//! - `tracing` (default): one span per physical attempt
//!   (`http_resilience.attempt`, with OpenTelemetry's HTTP client fields:
//!   `http.request.method`, `server.address`, `server.port`, `url.path`,
//!   `http.response.status_code`, `error.type`, and
//!   `http.request.resend_count` on resends); one `INFO` event per retry
//!   and one `WARN` event when giving up, under the target `http_resilience`, with the method,
//!   host and path, never header values. Nothing for a request that succeeds
//!   on its first attempt. Load protection adds an `INFO` event for each
//!   wait before an attempt and each server quota noted, and a `WARN`
//!   event for each refusal, with the host, port and reason.
//! - `hyper-util` (default; `reqwest` turns it on): recognises hyper-util's
//!   client errors (`is_connect()`), so that a failure to connect through
//!   the tower layer over hyper-util's client (DNS failure, refused,
//!   connect timeout) is [`FailureKind::Connect`], as through reqwest.
//!   Without it such a failure has the kind of its innermost cause (a DNS
//!   failure is then [`FailureKind::Other`]).
//! - `metrics`: counters, histograms and gauges through the `metrics`
//!   facade (attempts by outcome, retries per request, retry delays by
//!   source, throttles, refusals, breaker state, budget tokens), labelled
//!   by host, port and policy name only; nothing is recorded until
//!   `metrics::enable()`. See the `metrics` module.
//! - `serde`: [`RetryPolicy`] and [`EndpointPolicies`] from TOML or JSON
//!   (`from_toml_str`, `from_json_str`, `from_path`), with presets as a
//!   base and errors that name the key path, load protection included;
//!   see [`config`]. JSON records of reports and errors, in a stable
//!   shape: see [`record`].
//! - `redis`: [`store::RedisStore`], a [`StateStore`] shared by many
//!   processes through Redis or Valkey (quota holds, a fleet-wide rate
//!   limit, optionally a fleet-wide retry budget and breaker hints), with a
//!   fallback when Redis is slow or gone; give it to a policy with
//!   [`state_store`](RetryPolicyBuilder::state_store). With `serde`,
//!   `config::Config` reads a file's `[store]` and connects it.
//! - `download`: [`download`], a response saved to a file
//!   that is resumed within a run and across runs, checked (length, an
//!   optional SHA-256) and renamed into place atomically; turns on
//!   `reqwest`.
//!
//! # Streaming bodies
//!
//! A request body that cannot be cloned (a stream) is kept in a replay
//! buffer as it is sent ([`RetryPolicyBuilder::replay_buffer`], 64 KiB by
//! default; [`replay`]), so that a retry sends it again byte for byte: by
//! the reqwest middleware for every streamed body, by the tower layer with
//! [`RetryLayer::replay_bodies`]. With
//! [`RetryPolicyBuilder::resume_bodies`], a `GET` response body with a
//! strong validator that fails while read is resumed with a range request
//! where the caller stopped reading, checked, and continued as the same
//! stream ([`resume`]: through tower with [`resume::ResumeLayer`], through
//! reqwest with [`resume::ResumeExt`]); each resume is one more attempt of
//! the request, under its limits.
//!
//! # Time
//!
//! Waits use tokio's clock, so tests can run them with a paused clock.
//! Wall-clock reads (HTTP-dates, epoch resets) go through
//! [`RetryPolicyBuilder::wall_clock`], which tests can fix.

// `rust_2018_idioms`, clippy's lints and `unsafe_code = "deny"` are set for
// every target in Cargo.toml's `[lints]` (the benches' and tests' counting
// allocators allow it where they implement `GlobalAlloc`); the library
// forbids it outright, and these two concern only its public API.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod adapter;
pub mod backoff;
pub mod classify;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod download;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod git;
mod headers;
pub mod hedging;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod op;
pub mod policy;
pub mod presets;
pub mod protection;
pub mod rebuild;
// `RetryPolicy::to_reqwest_retry`: reqwest's own retry hook.
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod record;
pub mod report;
#[cfg(any(feature = "reqwest", feature = "reqwest-0_12"))]
mod reqwest_hook;
pub mod resend;
pub mod retry_after;
mod validate;

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use adapter::middleware;
pub use adapter::{body, layer, replay, resume};
pub use protection::store;
/// [`store::redis`] (the `redis` feature's [`RedisStore`](store::RedisStore)
/// and its parts), at the path it had before [`store`] held it.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use protection::store::redis as redis_store;

/// [`RetryBudget`] and its builder, at the path they had before
/// [`protection`] held them; documented there ([retry budget](protection#retry-budget)).
pub mod budget {
    pub use crate::protection::{RetryBudget, RetryBudgetBuilder, Tokens};
}

/// [`CircuitBreaker`] and its state, at the path they had before
/// [`protection`] held them; documented there ([circuit breaker](protection#circuit-breaker)).
pub mod circuit {
    pub use crate::protection::{
        CircuitBreaker, CircuitBreakerBuilder, CircuitState, CircuitStatus, Ticket, Verdict,
    };
}

/// [`RateLimit`] and its state, at the path they had before [`protection`]
/// held them; documented there ([rate limit](protection#rate-limit)).
pub mod rate_limit {
    pub use crate::protection::{Limiter, RateLimit, RateLimitBuilder, RateLimitState, Turn};
}

pub use backoff::{Backoff, Jitter};
pub use body::{ResponseBody, RetryBody};
pub use classify::{
    Class, Classify, DefaultClassifier, FailureKind, MAX_INSPECTED_BODY, Outcome, RequestMeta,
};
pub use endpoint::{EndpointPolicies, EndpointPoliciesBuilder, Route};
pub use engine::{Admission, Decision, RetryState};
pub use error::{AttemptTimedOut, BoxError, Error, Failure};
pub use hedging::{Hedging, HedgingBuilder};
pub use layer::{Retry, RetryLayer};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use middleware::RetryMiddleware;
pub use op::{Attempt, ErrorClass, Operation};
pub use policy::{ConfigError, LongHint, RequestCost, RetryPolicy, RetryPolicyBuilder};
pub use presets::Preset;
pub use protection::{CircuitBreaker, CircuitStatus, RateLimit, RetryBudget};
pub use rebuild::{RebuiltRequest, RebuiltResponse};
pub use report::{
    AttemptRecord, ResponseExt, ResumeRecord, RetryReport, StopReason, Throttle, ThrottleReason,
};
pub use resend::{BeforeRetry, ResendRequest};
pub use retry_after::{DelaySource, WallClock};
pub use store::{EndpointKey, EndpointState, InMemoryStore, Scope, StateStore};
