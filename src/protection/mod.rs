//! Load protection: what keeps retries from turning an outage into a
//! flood, and a client from overrunning a quota. Four parts, each a plain
//! settings type checked by its builder and a sans-IO state that takes the
//! time as an argument, behind one state seam ([`store`]):
//!
//! - [`RetryBudget`] and [`Tokens`]: how many retries an endpoint gets;
//! - [`CircuitBreaker`] and [`CircuitState`]: stop sending to an endpoint
//!   that keeps failing;
//! - [`RateLimit`] and [`RateLimitState`]: a client-side quota, in turns
//!   taken first come, first served;
//! - server quotas ([`quota_reset`](crate::retry_after::quota_reset)): a
//!   quota a server said is gone holds that credential's later requests
//!   until the reset.
//!
//! The engine applies them in the order the [policy](crate::policy#load-protection)
//! documents; the adapters only sleep or fail as it says.
//!
//! # Retry budget
//!
//! [`RetryBudget`]: a token bucket that bounds how many retries an endpoint
//! gets, so that retries cannot multiply the load on a failing service.
//!
//! Every request through a policy draws on the bucket of its endpoint
//! (host and port, see [`Scope`](crate::Scope)), shared by every clone of
//! the layer or middleware built from that policy:
//! - a retry costs [`retry_cost`](RetryBudget::retry_cost) tokens, or
//!   [`timeout_cost`](RetryBudget::timeout_cost) after a timeout (a hung
//!   server is the most expensive kind to retry);
//! - a request that succeeds at its first attempt puts back
//!   [`success_refund`](RetryBudget::success_refund) tokens, and one that
//!   succeeds after retries puts back what its retries cost;
//! - when the bucket cannot pay, the request is not retried and fails with
//!   [`Error::RetryBudgetExhausted`](crate::Error::RetryBudgetExhausted),
//!   which carries the last response.
//!
//! The defaults are the AWS SDKs' retry quota (smithy-rs "standard" mode):
//! 500 tokens, 5 per retry, 10 per retry after a timeout, 1 back per
//! success. A bucket starts full, so an endpoint that was healthy gets 100
//! retries at once in an outage, then one retry per 5 first-time successes;
//! a service failing less than one request in six never drains it, and
//! retries that succeed pay for themselves. In a total outage of 1,000
//! concurrent requests with 3 retries each, the server sees 1,100 requests
//! instead of 4,000.
//!
//! ```
//! use http_resilience::{RetryBudget, RetryPolicy};
//!
//! let policy = RetryPolicy::builder()
//!     .retry_budget(RetryBudget::builder().capacity(100).build()?)
//!     .build()?;
//! assert_eq!(policy.retry_budget().unwrap().capacity(), 100);
//! // Or without a budget:
//! let unbounded = RetryPolicy::builder().retry_budget(None).build()?;
//! assert!(unbounded.retry_budget().is_none());
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! # Circuit breaker
//!
//! [`CircuitBreaker`]: stop sending to an endpoint that keeps failing, and
//! let a few probes find out when it is back.
//!
//! The breaker of an endpoint (host and port, see [`Scope`](crate::Scope))
//! is shared by every clone of the layer or middleware built from a policy.
//! It sees every attempt, retries included; an attempt the policy's
//! classifier calls transient (5xx, 408, 429, timeouts, resets) is a
//! failure, anything else (2xx, 404, ...) a success.
//!
//! - **Closed**: attempts pass. It opens when, over the last
//!   [`sampling_window`](CircuitBreaker::sampling_window), at least
//!   [`minimum_throughput`](CircuitBreaker::minimum_throughput) attempts
//!   were seen and the share of failures reached
//!   [`failure_ratio`](CircuitBreaker::failure_ratio); or, if set, after
//!   [`consecutive_failures`](CircuitBreaker::consecutive_failures) failures
//!   in a row.
//! - **Open** for [`break_duration`](CircuitBreaker::break_duration): every
//!   attempt fails at once with
//!   [`Error::CircuitOpen`](crate::Error::CircuitOpen), which says when the
//!   breaker will let a probe through. Nothing is sent.
//! - **Half-open**: up to [`half_open_probes`](CircuitBreaker::half_open_probes)
//!   attempts go through as probes; the others are refused, with a
//!   `retry_in` that says when the next probe may go. When that many
//!   probes have succeeded it closes; the first probe that fails opens it
//!   again. A probe whose request is dropped (a cancelled future) frees its
//!   slot. A probe that never ends (there is no attempt timeout by default)
//!   cannot keep it shut: once the latest probe has been out for
//!   [`max_half_open_wait`](CircuitBreaker::max_half_open_wait), a new
//!   half-open round starts with a new probe, and the outcomes of the
//!   probes before it no longer count (resilience4j's
//!   `maxWaitDurationInHalfOpenState`).
//!
//! A request that fails and finds the breaker open (its own failure may
//! have opened it) stops at once with `CIRCUIT_OPEN` and its last
//! response, instead of waiting for a retry that would be refused.
//!
//! The defaults follow .NET's standard resilience handler (30 s window,
//! 5 s break, one probe) and resilience4j (50% failures over at least 100
//! calls). A breaker is off unless a policy sets one:
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{CircuitBreaker, RetryPolicy};
//!
//! let policy = RetryPolicy::builder()
//!     .circuit_breaker(
//!         CircuitBreaker::builder()
//!             .consecutive_failures(5)
//!             .break_duration(Duration::from_secs(10))
//!             .build()?,
//!     )
//!     .build()?;
//! assert_eq!(policy.circuit_breaker().unwrap().break_duration(), Duration::from_secs(10));
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! # Rate limit
//!
//! [`RateLimit`]: a client-side quota per endpoint, with bursts, enforced
//! by a GCRA (the generic cell rate algorithm) with reservations.
//!
//! Every attempt takes its turn, retries included: the limiter sits in
//! front of the retries. An attempt that finds no turn free now takes the
//! next one in line (a reservation) and waits for it, under tokio's clock,
//! for at most [`max_wait`](RateLimit::max_wait) per attempt; turns go
//! first come, first served, and the limiter is asked once per attempt
//! however many wait. If its turn would come later than `max_wait`, the
//! attempt fails at once with
//! [`Error::RateLimitedLocally`](crate::Error::RateLimitedLocally), which
//! says how long it would have had to wait, and takes nothing. A request
//! dropped while it waits (a cancelled future) gives its turn back: the
//! next request to ask takes it, so the limit is never exceeded and no turn
//! is kept by a request that is gone.
//!
//! The rules live in [`RateLimitState`], a plain value that takes the time
//! as an argument (tested without a runtime, against a model of the
//! limit); [`Limiter`] is that state behind a lock.
//!
//! The waits before the first attempt do not count against the policy's
//! [`deadline`](crate::RetryPolicyBuilder::deadline) (the deadline starts
//! when the first attempt is sent, as in .NET's pipeline); waits before a
//! retry do.
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{RateLimit, RetryPolicy};
//!
//! // GitHub's 5,000 requests an hour, in bursts of at most 100, waiting at
//! // most 30 s for a turn.
//! let github = RateLimit::per_hour(5000)
//!     .burst(100)
//!     .max_wait(Duration::from_secs(30))
//!     .build()?;
//! let policy = http_resilience::Preset::GitHub.builder().rate_limit(github).build()?;
//! assert_eq!(policy.rate_limit().unwrap().requests(), 5000);
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```

mod budget;
mod circuit;
mod rate_limit;
pub mod store;

pub use budget::{RetryBudget, RetryBudgetBuilder, Tokens};
pub use circuit::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitState, CircuitStatus, Ticket, Verdict,
};
pub use rate_limit::{Limiter, RateLimit, RateLimitBuilder, RateLimitState, Turn};
