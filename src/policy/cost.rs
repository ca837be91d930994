//! [`RequestCost`]: how many turns of a rate limit one request counts as.

use std::fmt;
use std::sync::Arc;

use http::Method;

use crate::classify::RequestMeta;

/// How many turns of the policy's [`RateLimit`](crate::RateLimit) a request
/// takes: most APIs count requests, some count points. GitHub's secondary
/// limit allows 900 points a minute for REST endpoints and counts a
/// `GET`, `HEAD` or `OPTIONS` as 1 point and any other method as 5
/// ([`GitHubPoints`](Self::GitHubPoints)). A request of cost `c` takes `c`
/// turns at once and is sent at the last of them, through the in-process
/// limiter and a fleet's ([`RedisStore`](crate::protection::store::redis::RedisStore))
/// alike. Set with
/// [`request_cost`](crate::RetryPolicyBuilder::request_cost); the default is
/// [`Fixed(1)`](Self::Fixed). It matters only with a rate limit.
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, Method};
/// use http_resilience::{Preset, RateLimit, RequestMeta};
/// use http_resilience::policy::RequestCost;
///
/// // GitHub's secondary limit: 900 points a minute.
/// let policy = Preset::GitHub
///     .builder()
///     .rate_limit(RateLimit::per_minute(900).burst(90).build()?)
///     .request_cost(RequestCost::GitHubPoints)
///     .build()?;
/// let headers = HeaderMap::new();
/// let post = RequestMeta::new(&Method::POST, "https", "api.github.com", "/repos/o/r/issues", &headers);
/// assert_eq!(policy.request_cost().of(&post), 5);
/// let get = RequestMeta::new(&Method::GET, "https", "api.github.com", "/repos/o/r", &headers);
/// assert_eq!(policy.request_cost().of(&get), 1);
///
/// // A rule of your own: a GraphQL mutation counts as 5.
/// let graphql = RequestCost::custom(|r| if r.path() == "/graphql" && r.method() == Method::POST { 5 } else { 1 });
/// assert_eq!(graphql.of(&post), 1);
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum RequestCost {
    /// Every request counts as this many turns (at least 1). The default
    /// is 1.
    Fixed(u32),
    /// GitHub's points: `GET`, `HEAD` and `OPTIONS` count 1, any other
    /// method 5.
    GitHubPoints,
    /// A rule of your own ([`custom`](Self::custom)); an answer of 0
    /// counts as 1.
    Custom(Arc<dyn Fn(&RequestMeta<'_>) -> u32 + Send + Sync>),
}

impl RequestCost {
    /// A rule of your own.
    pub fn custom(cost: impl Fn(&RequestMeta<'_>) -> u32 + Send + Sync + 'static) -> RequestCost {
        RequestCost::Custom(Arc::new(cost))
    }

    /// The turns `request` takes (at least 1).
    pub fn of(&self, request: &RequestMeta<'_>) -> u32 {
        match self {
            RequestCost::Fixed(n) => (*n).max(1),
            RequestCost::GitHubPoints => match *request.method() {
                Method::GET | Method::HEAD | Method::OPTIONS => 1,
                _ => 5,
            },
            RequestCost::Custom(f) => f(request).max(1),
        }
    }

    /// A stable name for the rule: `fixed`, `github_points`, `custom`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestCost::Fixed(_) => "fixed",
            RequestCost::GitHubPoints => "github_points",
            RequestCost::Custom(_) => "custom",
        }
    }
}

impl Default for RequestCost {
    fn default() -> Self {
        RequestCost::Fixed(1)
    }
}

impl fmt::Debug for RequestCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestCost::Fixed(n) => f.debug_tuple("Fixed").field(n).finish(),
            RequestCost::GitHubPoints => f.write_str("GitHubPoints"),
            RequestCost::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PartialEq for RequestCost {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RequestCost::Fixed(a), RequestCost::Fixed(b)) => a == b,
            (RequestCost::GitHubPoints, RequestCost::GitHubPoints) => true,
            (RequestCost::Custom(a), RequestCost::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
