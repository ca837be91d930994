//! async-anthropic 0.6 with `http-resilience` in its reqwest 0.12 client:
//! [`client`] builds an `async_anthropic::Client` whose `http_client` has
//! reqwest's own retry hook set to
//! [`RetryPolicy::to_reqwest_retry_0_12`], and whose own retry is off.
//!
//! # Where the retry goes
//!
//! async-anthropic takes a plain `reqwest::Client` (reqwest 0.12) and
//! sends through it: there is no request factory, no tower service and no
//! middleware stack to put this crate's middleware or layer under. What is
//! left is reqwest's own retry hook (`ClientBuilder::retry`, reqwest
//! 0.12.28 or later), which [`RetryPolicy::to_reqwest_retry_0_12`] fills
//! with the policy's classification for the API's host.
//!
//! # What async-anthropic's own retry must be
//!
//! Off. Its `post` retries 429 and 529 with an `ExponentialBackoff` of the
//! `backoff` crate (the builder's default: 0.5 s growing by 1.5 for up to
//! 15 minutes; `Client::default()`'s: 15 s for up to 2 minutes), without
//! reading `retry-after`. Left on, every give-up of the hook (3 attempts
//! under the Anthropic preset) is one attempt of the SDK's: the attempts
//! multiply. [`client`] sets [`no_retry`], a backoff that never waits.
//!
//! # What reqwest's hook cannot do
//!
//! It sees the method, the URL and the status or the transport error, and
//! nothing else, and cannot wait. So a retry is sent at once (no backoff,
//! a 429 included), `retry-after`, `retry-after-ms` and `x-should-retry`
//! are never read, there is no deadline, and there is no
//! [`RetryReport`](http_resilience::RetryReport) and no
//! [`http_resilience::Error`]: async-anthropic gets reqwest's last response
//! or error as it is.
//!
//! # How errors map
//!
//! As async-anthropic maps them, from the last response: a 400 is
//! `AnthropicError::BadRequest`, a 401 `Unauthorized`, a 429 or 529
//! `ApiError`, any other status `Unknown` (each with the body), and a
//! transport failure after the retries `NetworkError` holding reqwest's
//! error.

use std::time::Duration;

use async_anthropic::Client;
use backoff::ExponentialBackoff;
use http_resilience::RetryPolicy;

/// The API version async-anthropic's `Client::default()` sends (its
/// builder's default is empty, which the API refuses).
pub const API_VERSION: &str = "2023-06-01";

/// An async-anthropic client for the API at `base`
/// (`https://api.anthropic.com` in production) with `key`, its reqwest
/// 0.12 client retrying under `policy` (start from
/// [`RetryPolicy::anthropic`]) for `base`'s host only, and its own retry
/// off.
///
/// ```
/// let anthropic = recipe_anthropic::client(
///     &http_resilience::RetryPolicy::anthropic(),
///     "http://127.0.0.1:1",
///     "sk-ant-example",
/// )
/// .unwrap();
/// # let _ = anthropic;
/// ```
pub fn client(policy: &RetryPolicy, base: &str, key: &str) -> Result<Client, BuildError> {
    let url = reqwest::Url::parse(base).map_err(|_| BuildError("base URL"))?;
    let host = url.host_str().ok_or(BuildError("base URL host"))?;
    // reqwest 0.12 (add its `rustls-tls` or `native-tls` for https).
    let http = reqwest::Client::builder()
        .retry(policy.to_reqwest_retry_0_12(host))
        .build()
        .map_err(|_| BuildError("reqwest client"))?;
    Client::builder()
        .http_client(http)
        .base_url(base)
        .api_key(key)
        .version(API_VERSION)
        .backoff(no_retry())
        .build()
        .map_err(|_| BuildError("async-anthropic client"))
}

/// async-anthropic's backoff turned off: no time may pass (`max_elapsed_time`
/// zero) and the first wait (1 s) is already beyond it, so the first 429
/// or 529 it sees is returned at once.
pub fn no_retry() -> ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_secs(1))
        .with_max_elapsed_time(Some(Duration::ZERO))
        .build()
}

/// A bad setting given to [`client`] (the key is never printed).
#[derive(Debug)]
pub struct BuildError(&'static str);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot build the async-anthropic client: {}", self.0)
    }
}

impl std::error::Error for BuildError {}
