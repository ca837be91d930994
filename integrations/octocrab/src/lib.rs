//! octocrab 0.54 with `http-resilience` under it: [`client`] builds an
//! [`Octocrab`] whose every request goes through the tower layer with a
//! GitHub policy.
//!
//! # Where the layer goes
//!
//! octocrab's ordinary builder (`Octocrab::builder()`) has no hook for a
//! layer: the only way in is `OctocrabBuilder::new_empty()`, which takes a
//! whole service stack and so drops what the ordinary builder would have
//! added. This recipe adds back, from octocrab's own public layers, what a
//! GitHub client needs, outermost first:
//!
//! 1. `AuthHeaderLayer`: the `Authorization` header (here a token), only on
//!    requests to the base and upload URIs;
//! 2. `BaseUriLayer`: relative routes (`/repos/o/r`) made absolute;
//! 3. `ExtraHeadersLayer`: `User-Agent: octocrab` (GitHub refuses requests
//!    without one) and `Accept: application/vnd.github+json`;
//! 4. `RetryLayer` with the policy: it sees every request whole (absolute
//!    URI, auth, user agent), so each retry is the same request;
//! 5. hyper-util's client (add `hyper-rustls`' connector for `https`).
//!
//! Left out, as `new_empty` leaves them: octocrab's redirect following,
//! its timeouts (use the policy's `attempt_timeout` and `deadline`), its
//! previews and its cache, and app-installation token refreshing (build
//! one client per token).
//!
//! # What octocrab's own retry must be
//!
//! Off: with `new_empty` it is not in the stack at all (and this crate
//! turns octocrab's `retry` feature off). Nesting octocrab's
//! `RetryConfig::Simple(3)` under the layer multiplies the attempts (4 of
//! octocrab's per attempt of ours: 16 for 3 retries).
//!
//! # How errors map
//!
//! With `return_last_response(true)` (which [`client`] sets on the policy)
//! a request the layer gives up on hands octocrab its last response, so a
//! 502 after the retries is still `octocrab::Error::GitHub { source, .. }`
//! with `source.status_code == 502`, as users of octocrab match it. A
//! transport failure (refused, reset, timed out) is
//! `octocrab::Error::Service`, whose source downcasts to
//! [`http_resilience::Error`] (code, report).

use std::sync::Arc;

use http::header::{ACCEPT, USER_AGENT};
use http::{HeaderValue, Uri};
#[cfg(doc)]
use http_resilience::{Preset, RetryPolicy};
use http_resilience::{RetryLayer, RetryPolicyBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};

/// An [`Octocrab`] for the API at `base` (`https://api.github.com` in
/// production) with `token`, retrying under the policy that `policy`
/// builds (start from [`Preset::GitHub`]'s builder, the rules of
/// [`RetryPolicy::github`]); `return_last_response` is turned on so that
/// octocrab's errors stay as its users know them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let github = recipe_octocrab::client(
///     http_resilience::Preset::GitHub.builder(),
///     "http://127.0.0.1:1",
///     "ghp_example",
/// )
/// .unwrap();
/// # let _ = github; }
/// ```
pub fn client(policy: RetryPolicyBuilder, base: &str, token: &str) -> Result<Octocrab, BuildError> {
    let policy = policy
        .return_last_response(true)
        .build()
        .map_err(|e| BuildError(e.to_string()))?;
    let base: Uri = base.parse().map_err(|_| BuildError("base URI".into()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| BuildError("token".into()))?;
    let headers = vec![
        (USER_AGENT, HeaderValue::from_static("octocrab")),
        (
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        ),
    ];
    let connector = Client::builder(TokioExecutor::new()).build_http::<OctoBody>();
    let octocrab = OctocrabBuilder::new_empty()
        .with_service(connector)
        .with_layer(&RetryLayer::new(policy))
        .with_layer(&ExtraHeadersLayer::new(Arc::new(headers)))
        .with_layer(&BaseUriLayer::new(base.clone()))
        .with_layer(&AuthHeaderLayer::new(Some(auth), base.clone(), base))
        .with_auth(AuthState::None)
        .build()
        .map_err(|e| BuildError(e.to_string()))?;
    Ok(octocrab)
}

/// A bad setting given to [`client`] (the token is never printed).
#[derive(Debug)]
pub struct BuildError(String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot build the octocrab client: {}", self.0)
    }
}

impl std::error::Error for BuildError {}
