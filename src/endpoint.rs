//! Per-endpoint policies: which [`RetryPolicy`] applies to which request.
//!
//! An [`EndpointPolicies`] is an ordered list of rules, each a [`Route`]
//! (scheme, host, path, methods) and the policy for requests that match it,
//! plus a default for everything else. Both adapters take one wherever they
//! take a single policy (a single policy converts into a set with no rules).
//!
//! **Selection**, for each request:
//! 1. a [`RetryPolicy`] in the request's extensions (for example through
//!    `reqwest_middleware::RequestBuilder::with_extension`, or
//!    `http::Request::extensions_mut`) wins over every rule;
//! 2. otherwise the **first rule that matches**, in the order they were
//!    added (put specific rules before general ones);
//! 3. otherwise the default ([`RetryPolicy::default`] unless set).
//!
//! A route matches when every part it sets matches:
//! - **scheme**: exact, case-insensitive;
//! - **host**: exact (`api.github.com`, case-insensitive), or a wildcard
//!   `*.example.com` that matches any subdomain (`a.example.com`,
//!   `a.b.example.com`) but not `example.com` itself;
//! - **path**: a prefix (`/v1/`), or a glob (`/repos/*/issues`, `**/info/refs`)
//!   where `*` matches within one segment and `**` across segments;
//! - **methods**: any of a set.
//!
//! A request without a host (a relative URI, as a tower layer sees below a
//! layer that sets the URI later, such as octocrab's `BaseUriLayer`) cannot
//! match a rule that names a host, and falls to the host-less rules or the
//! default. With the `tracing` feature, the first such request a set (or
//! any of its clones) sees is noted in one `WARN` event, target
//! `http_resilience`; later ones are not. See the [tower
//! layer](crate::layer) for where to put it.
//!
//! Selection does not allocate, and its cost does not grow with the number
//! of rules for other hosts: rules are indexed by host (exact and wildcard
//! suffix), so a request looks at only the rules for its own host and the
//! host-less ones.
//!
//! ```
//! use http::{HeaderMap, Method};
//! use http_resilience::{EndpointPolicies, RequestMeta, RetryPolicy, Route};
//!
//! let policies = EndpointPolicies::builder()
//!     .route(Route::host("uploads.example.com"), RetryPolicy::disabled())
//!     .route(Route::host("*.example.com").path_prefix("/v1/"), RetryPolicy::github())
//!     .default_policy(RetryPolicy::default())
//!     .build()?;
//!
//! let headers = HeaderMap::new();
//! let req = RequestMeta::new(&Method::GET, "https", "api.example.com", "/v1/repos", &headers);
//! assert_eq!(policies.select(&req).preset(), Some(http_resilience::Preset::GitHub));
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{Extensions, Method};

use crate::classify::RequestMeta;
use crate::policy::{ConfigError, RetryPolicy};

/// What a rule matches. Every part left unset matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Route {
    scheme: Option<String>,
    host: Option<String>,
    path: Option<PathPattern>,
    methods: Vec<Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Prefix(String),
    Glob(String),
}

impl Route {
    /// A route that matches every request.
    pub fn any() -> Route {
        Route::default()
    }

    /// Matches a host: exact (`api.github.com`) or a `*.example.com`
    /// wildcard (any subdomain). Case-insensitive.
    pub fn host(host: impl Into<String>) -> Route {
        Route::any().and_host(host)
    }

    /// Also match the host (see [`Route::host`]).
    pub fn and_host(mut self, host: impl Into<String>) -> Route {
        self.host = Some(host.into().to_ascii_lowercase());
        self
    }

    /// Also match the scheme (`https`), case-insensitive.
    pub fn scheme(mut self, scheme: impl Into<String>) -> Route {
        self.scheme = Some(scheme.into().to_ascii_lowercase());
        self
    }

    /// Also match paths starting with `prefix`.
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Route {
        self.path = Some(PathPattern::Prefix(prefix.into()));
        self
    }

    /// Also match paths against a glob: `*` and `?` within one segment,
    /// `**` across segments, `[abc]` classes. Checked when the set is
    /// built.
    pub fn path_glob(mut self, glob: impl Into<String>) -> Route {
        self.path = Some(PathPattern::Glob(glob.into()));
        self
    }

    /// Also match only these methods.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Route {
        self.methods = methods.into_iter().collect();
        self
    }
}

/// A compiled rule.
struct Rule {
    scheme: Option<Box<str>>,
    path: Option<CompiledPath>,
    methods: Box<[Method]>,
    policy: RetryPolicy,
    /// Kept for `Debug` and the config round trip.
    route: Route,
}

enum CompiledPath {
    Prefix(Box<str>),
    Glob(glob::Pattern),
}

const GLOB_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Rule {
    fn matches(&self, request: &RequestMeta<'_>) -> bool {
        if let Some(scheme) = &self.scheme
            && !scheme.eq_ignore_ascii_case(request.scheme())
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(request.method()) {
            return false;
        }
        match &self.path {
            None => true,
            Some(CompiledPath::Prefix(p)) => request.path().starts_with(&**p),
            Some(CompiledPath::Glob(g)) => g.matches_with(request.path(), GLOB_OPTIONS),
        }
    }
}

/// An ordered set of per-endpoint policies with a default. Cheap to clone
/// (one reference count). See the [module docs](self).
#[derive(Clone)]
pub struct EndpointPolicies {
    inner: Arc<Index>,
}

struct Index {
    rules: Box<[Rule]>,
    /// Rule numbers by exact host, in order.
    exact: HashMap<Box<str>, Box<[u32]>>,
    /// Rule numbers by wildcard suffix (`example.com` for `*.example.com`).
    wildcard: HashMap<Box<str>, Box<[u32]>>,
    /// Rules without a host, in order.
    any_host: Box<[u32]>,
    default: RetryPolicy,
    /// A request without a host was noted (once per set: see `select`).
    #[cfg(feature = "tracing")]
    hostless_noted: std::sync::atomic::AtomicBool,
}

/// The longest host name looked up in the index (DNS allows 253).
const MAX_HOST: usize = 255;

impl EndpointPolicies {
    /// An empty builder.
    pub fn builder() -> EndpointPoliciesBuilder {
        EndpointPoliciesBuilder::default()
    }

    /// The presets for the providers they follow, over the default policy:
    ///
    /// | route | policy |
    /// |---|---|
    /// | host `api.github.com` | [`RetryPolicy::github`] |
    /// | host `github.com`, path `**/info/refs`, `**/git-upload-pack`, `**/git-receive-pack` | [`RetryPolicy::git`] |
    /// | host `api.openai.com` | [`RetryPolicy::openai`] |
    /// | host `api.anthropic.com` | [`RetryPolicy::anthropic`] |
    /// | anything else | [`RetryPolicy::default`] |
    ///
    /// Extend it with [`EndpointPoliciesBuilder::well_known`].
    pub fn well_known() -> EndpointPolicies {
        EndpointPolicies::builder()
            .well_known()
            .build()
            .expect("the well-known routes are valid")
    }

    /// The policy for `request`: the first matching rule's, or the default.
    #[inline]
    pub fn select(&self, request: &RequestMeta<'_>) -> &RetryPolicy {
        let index = &*self.inner;
        // A single policy (the common set): nothing to look at.
        if index.rules.is_empty() {
            return &index.default;
        }
        let mut best: Option<u32> = None;
        let mut consider = |candidates: &[u32]| {
            for &n in candidates {
                if best.is_some_and(|b| b < n) {
                    return;
                }
                if index.rules[n as usize].matches(request) {
                    best = Some(n);
                    return;
                }
            }
        };
        // The host is read (and lowercased) only if some rule names one.
        let by_host = !(index.exact.is_empty() && index.wildcard.is_empty());
        let host = if by_host { request.host() } else { "" };
        if !host.is_empty() && host.len() <= MAX_HOST {
            let mut buf = [0u8; MAX_HOST];
            let lower = &mut buf[..host.len()];
            lower.copy_from_slice(host.as_bytes());
            lower.make_ascii_lowercase();
            // Lowercasing ASCII keeps UTF-8 valid.
            if let Ok(host) = std::str::from_utf8(lower) {
                if let Some(c) = index.exact.get(host) {
                    consider(c);
                }
                if !index.wildcard.is_empty() {
                    let mut rest = host;
                    while let Some(dot) = rest.find('.') {
                        rest = &rest[dot + 1..];
                        if let Some(c) = index.wildcard.get(rest) {
                            consider(c);
                        }
                    }
                }
            }
        }
        if by_host && host.is_empty() {
            index.note_hostless(request);
        }
        consider(&index.any_host);
        match best {
            Some(n) => &index.rules[n as usize].policy,
            None => &index.default,
        }
    }

    /// The policy for a request with these extensions: a [`RetryPolicy`]
    /// placed in them wins; otherwise [`select`](Self::select).
    #[inline]
    pub fn select_with<'a>(
        &'a self,
        extensions: &'a Extensions,
        request: &RequestMeta<'_>,
    ) -> &'a RetryPolicy {
        match extensions.get::<RetryPolicy>() {
            Some(policy) => policy,
            None => self.select(request),
        }
    }

    /// The default policy.
    pub fn default_policy(&self) -> &RetryPolicy {
        &self.inner.default
    }

    /// The rules, in order.
    pub fn routes(&self) -> impl ExactSizeIterator<Item = (&Route, &RetryPolicy)> {
        self.inner.rules.iter().map(|r| (&r.route, &r.policy))
    }
}

impl Index {
    /// A request without a host cannot match a rule that names one: it
    /// falls to the later rules or the default, silently. Said once per
    /// set (and its clones), at `WARN`, not once per request.
    fn note_hostless(&self, request: &RequestMeta<'_>) {
        #[cfg(feature = "tracing")]
        use std::sync::atomic::Ordering::Relaxed;
        #[cfg(feature = "tracing")]
        if !self.hostless_noted.load(Relaxed) && !self.hostless_noted.swap(true, Relaxed) {
            tracing::warn!(
                target: "http_resilience",
                method = %request.method(),
                path = request.path(),
                "request has no host (a relative URI): the routes that name a host cannot \
                 match it, so it gets a host-less route's policy or the default; put the \
                 retry layer below (inside) the layers that set the URI, such as octocrab's \
                 BaseUriLayer (noted once for this policy set)"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = request;
    }
}

impl Default for EndpointPolicies {
    fn default() -> Self {
        RetryPolicy::default().into()
    }
}

impl From<RetryPolicy> for EndpointPolicies {
    /// A set with no rules: `policy` for every request.
    fn from(policy: RetryPolicy) -> Self {
        EndpointPolicies::builder()
            .default_policy(policy)
            .build()
            .expect("a set without rules is valid")
    }
}

impl fmt::Debug for EndpointPolicies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointPolicies")
            .field("rules", &self.routes().collect::<Vec<_>>())
            .field("default", &self.inner.default)
            .finish()
    }
}

/// Builds an [`EndpointPolicies`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct EndpointPoliciesBuilder {
    routes: Vec<(Route, RetryPolicy)>,
    default: Option<RetryPolicy>,
}

impl EndpointPoliciesBuilder {
    /// Adds a rule after the ones already added (the first match wins).
    pub fn route(mut self, route: Route, policy: RetryPolicy) -> Self {
        self.routes.push((route, policy));
        self
    }

    /// Adds the routes of [`EndpointPolicies::well_known`] after the ones
    /// already added.
    pub fn well_known(self) -> Self {
        let git = RetryPolicy::git();
        let mut b = self.route(Route::host("api.github.com"), RetryPolicy::github());
        for glob in ["**/info/refs", "**/git-upload-pack", "**/git-receive-pack"] {
            b = b.route(Route::host("github.com").path_glob(glob), git.clone());
        }
        b.route(Route::host("api.openai.com"), RetryPolicy::openai())
            .route(Route::host("api.anthropic.com"), RetryPolicy::anthropic())
    }

    /// The policy for requests no rule matches. Default
    /// [`RetryPolicy::default`].
    pub fn default_policy(mut self, policy: RetryPolicy) -> Self {
        self.default = Some(policy);
        self
    }

    /// Checks the routes (host and glob syntax) and builds the index. The
    /// error's field is `routes[n].host` or `routes[n].path`.
    pub fn build(self) -> Result<EndpointPolicies, ConfigError> {
        let mut rules = Vec::with_capacity(self.routes.len());
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut any_host = Vec::new();
        for (n, (route, policy)) in self.routes.into_iter().enumerate() {
            let at = |field: &str, reason: String| {
                ConfigError::new(format!("routes[{n}].{field}"), reason)
            };
            let number = u32::try_from(n).map_err(|_| at("", "too many routes".into()))?;
            match route.host.as_deref() {
                None => any_host.push(number),
                Some(host) => {
                    let (map, name) = match host.strip_prefix("*.") {
                        Some(suffix) => (&mut wildcard, suffix),
                        None => (&mut exact, host),
                    };
                    if name.is_empty()
                        || name.len() > MAX_HOST
                        || name.starts_with('.')
                        || name.ends_with('.')
                        || !name.bytes().all(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
                        })
                    {
                        return Err(at(
                            "host",
                            format!("`{host}` is not a host name or a `*.domain` wildcard"),
                        ));
                    }
                    map.entry(name.into()).or_default().push(number);
                }
            }
            let path = match &route.path {
                None => None,
                Some(PathPattern::Prefix(p)) => Some(CompiledPath::Prefix(p.as_str().into())),
                Some(PathPattern::Glob(g)) => {
                    Some(CompiledPath::Glob(glob::Pattern::new(g).map_err(|e| {
                        at("path", format!("`{g}` is not a valid glob: {}", e.msg))
                    })?))
                }
            };
            rules.push(Rule {
                scheme: route.scheme.as_deref().map(Into::into),
                path,
                methods: route.methods.clone().into(),
                policy,
                route,
            });
        }
        let boxed = |m: HashMap<Box<str>, Vec<u32>>| {
            m.into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect()
        };
        Ok(EndpointPolicies {
            inner: Arc::new(Index {
                rules: rules.into(),
                exact: boxed(exact),
                wildcard: boxed(wildcard),
                any_host: any_host.into(),
                default: self.default.unwrap_or_default(),
                #[cfg(feature = "tracing")]
                hostless_noted: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn policy(n: u32) -> RetryPolicy {
        RetryPolicy::builder().max_retries(n).build().unwrap()
    }

    fn pick(set: &EndpointPolicies, method: Method, url: &str) -> u32 {
        let uri: http::Uri = url.parse().unwrap();
        let headers = HeaderMap::new();
        let req = RequestMeta::new(
            &method,
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.path(),
            &headers,
        );
        set.select(&req).max_retries()
    }

    #[test]
    fn first_match_wins_across_exact_wildcard_and_any_host_rules() {
        let set = EndpointPolicies::builder()
            .route(Route::any().path_prefix("/health"), policy(1))
            .route(
                Route::host("api.example.com").path_prefix("/v1/"),
                policy(2),
            )
            .route(Route::host("*.example.com"), policy(3))
            .route(Route::host("api.example.com"), policy(4))
            .route(Route::any().methods([Method::POST]), policy(5))
            .route(Route::host("*.example.com").scheme("http"), policy(6))
            .route(
                Route::host("files.example.com").path_glob("/repos/*/raw"),
                policy(7),
            )
            .default_policy(policy(9))
            .build()
            .unwrap();
        let cases = [
            (Method::GET, "https://api.example.com/health", 1),
            (Method::GET, "https://API.Example.COM/v1/x", 2),
            (Method::GET, "https://api.example.com/v2/x", 3),
            (Method::GET, "https://a.b.example.com/", 3),
            (Method::GET, "https://example.com/", 9),
            (Method::POST, "https://example.com/", 5),
            (Method::POST, "https://other.org/v1/", 5),
            (Method::GET, "https://other.org/", 9),
            (Method::GET, "https://notexample.com/", 9),
        ];
        for (method, url, want) in cases {
            assert_eq!(pick(&set, method.clone(), url), want, "{method} {url}");
        }
    }

    #[test]
    fn globs_match_within_and_across_segments() {
        let set = EndpointPolicies::builder()
            .route(Route::host("h").path_glob("/repos/*/raw"), policy(1))
            .route(Route::host("h").path_glob("**/info/refs"), policy(2))
            .build()
            .unwrap();
        assert_eq!(pick(&set, Method::GET, "http://h/repos/x/raw"), 1);
        assert_eq!(pick(&set, Method::GET, "http://h/repos/x/y/raw"), 3);
        assert_eq!(pick(&set, Method::GET, "http://h/o/r.git/info/refs"), 2);
    }

    #[test]
    fn bad_routes_name_their_index_and_field() {
        let err = EndpointPolicies::builder()
            .route(Route::host("ok.example"), policy(1))
            .route(Route::host("bad host"), policy(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "routes[1].host");
        let err = EndpointPolicies::builder()
            .route(Route::any().path_glob("/a/[b"), policy(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "routes[0].path");
    }

    #[test]
    fn request_extension_wins() {
        let set = EndpointPolicies::from(policy(3));
        let headers = HeaderMap::new();
        let req = RequestMeta::new(&Method::GET, "http", "h", "/", &headers);
        let mut ext = Extensions::new();
        assert_eq!(set.select_with(&ext, &req).max_retries(), 3);
        ext.insert(RetryPolicy::disabled());
        assert_eq!(set.select_with(&ext, &req).max_retries(), 0);
    }
}
