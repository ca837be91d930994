//! async-openai 0.43 with `http-resilience` under it: [`Resilient`] is the
//! tower service given to `Client::with_http_service`, and [`client`]
//! builds a client with it.
//!
//! # Where it goes
//!
//! async-openai hands its transport an `HttpRequestFactory`, not a
//! request: the factory builds a fresh `reqwest::Request` each time it is
//! asked (a multipart upload reads its form again). [`Resilient`] calls
//! [`RetryPolicy::send_rebuilt`] with the factory as `make` and
//! `reqwest::Client::execute` as `send`, so every attempt is a whole new
//! request, multipart uploads included, classified by the policy's rules
//! (`retry-after-ms` and `retry-after`, `x-should-retry`, 408, 409, 429,
//! 5xx, transport errors).
//!
//! # What async-openai's own retry must be
//!
//! Nothing to do: `with_http_service` replaces the default transport, and
//! with it async-openai's own `OpenAIRetryLayer` (which does not read
//! `retry-after-ms`). Do not add that layer to the service as well: the
//! attempts would multiply.
//!
//! # How errors map
//!
//! With `return_last_response(true)` (which [`client`] sets) a request the
//! policy gives up on hands async-openai its last response, which it turns
//! into `OpenAIError::ApiError` as it always does (a 429's `rate_limit_exceeded`,
//! a 500's message). A transport failure after the retries is
//! `OpenAIError::Boxed` holding the [`http_resilience::Error`] (code,
//! report, the reqwest error as its source).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use http_resilience::{RetryPolicy, RetryPolicyBuilder};

/// The transport for `Client::with_http_service`: each request rebuilt
/// for every attempt and sent by `reqwest`, under the policy.
#[derive(Clone, Debug)]
pub struct Resilient {
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl Resilient {
    /// Sends with `client` under `policy`.
    pub fn new(client: reqwest::Client, policy: RetryPolicy) -> Resilient {
        Resilient { client, policy }
    }
}

impl tower::Service<HttpRequestFactory> for Resilient {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            this.policy
                .send_rebuilt(
                    |_attempt| factory.build(),
                    |request| this.client.execute(request),
                )
                .await
                .map_err(|e| OpenAIError::Boxed(Box::new(e)))
        })
    }
}

/// An async-openai client for the API at `base` (`https://api.openai.com/v1`
/// in production) with `key`, retrying under the policy `policy` builds
/// (start from `Preset::OpenAi.builder()`, the rules of
/// [`RetryPolicy::openai`]), `return_last_response` turned on.
///
/// ```
/// let openai = recipe_async_openai::client(
///     http_resilience::Preset::OpenAi.builder(),
///     "http://127.0.0.1:1/v1",
///     "sk-example",
/// )
/// .unwrap();
/// # let _ = openai;
/// ```
pub fn client(
    policy: RetryPolicyBuilder,
    base: &str,
    key: &str,
) -> Result<Client<OpenAIConfig>, http_resilience::ConfigError> {
    let policy = policy.return_last_response(true).build()?;
    let config = OpenAIConfig::new().with_api_base(base).with_api_key(key);
    Ok(Client::with_config(config)
        .with_http_service(Resilient::new(reqwest::Client::new(), policy)))
}
