//! [`RequestMeta`]: what a classifier and the engine know of a request,
//! whatever the client.

use http::{HeaderMap, Method};

use crate::headers::IDEMPOTENCY_KEY_NAME;

/// The method of the [`RequestMeta`] that stands for an operation (see
/// [`RequestMeta::is_operation`]).
pub(crate) const OPERATION: &str = "OPERATION";

/// What a classifier (and the engine) may know about the request, whatever
/// the client. Cheap to build: it only borrows.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    method: &'a Method,
    scheme: &'a str,
    /// The host, or (from `from_http`) the URI authority it is read from
    /// on demand: most requests never need it.
    host: Host<'a>,
    path: &'a str,
    headers: &'a HeaderMap,
    /// Set by `with_port`; otherwise read from the authority or the scheme.
    port: Option<u16>,
}

#[derive(Debug, Clone, Copy)]
enum Host<'a> {
    Host(&'a str),
    Authority(&'a str),
}

impl<'a> RequestMeta<'a> {
    /// Describes a request by its parts.
    ///
    /// ```
    /// use http::{HeaderMap, Method};
    /// use http_resilience::RequestMeta;
    /// let headers = HeaderMap::new();
    /// let meta = RequestMeta::new(&Method::GET, "https", "api.github.com", "/repos", &headers);
    /// assert!(meta.is_idempotent());
    /// ```
    #[inline]
    pub fn new(
        method: &'a Method,
        scheme: &'a str,
        host: &'a str,
        path: &'a str,
        headers: &'a HeaderMap,
    ) -> Self {
        RequestMeta {
            method,
            scheme,
            host: Host::Host(host),
            path,
            headers,
            port: None,
        }
    }

    /// Sets the port (otherwise the scheme's default: 443 for `https`, 80
    /// for `http`). Load protection keeps its state per host and port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Whether this stands for an operation run by
    /// [`retry`](crate::policy::RetryPolicy::retry) rather than an HTTP
    /// request: no scheme, the method [`OPERATION`], the operation's name
    /// as the host and port 0.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn is_operation(&self) -> bool {
        self.scheme.is_empty() && self.method.as_str() == OPERATION
    }

    /// Describes an `http::Request`.
    #[inline]
    pub fn from_http<B>(request: &'a http::Request<B>) -> Self {
        let uri = request.uri();
        RequestMeta {
            method: request.method(),
            scheme: uri.scheme_str().unwrap_or(""),
            host: Host::Authority(uri.authority().map_or("", |a| a.as_str())),
            path: uri.path(),
            headers: request.headers(),
            port: None,
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }
    /// The URI scheme (`http`, `https`), or `""` if unknown.
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }
    /// The host, or `""` if unknown.
    pub fn host(&self) -> &'a str {
        match self.host {
            Host::Host(host) => host,
            Host::Authority(authority) => host_of(authority),
        }
    }
    /// The port: set by [`with_port`](Self::with_port), written in the
    /// URI's authority, or the scheme's default (443 for `https` and `wss`,
    /// 80 for `http` and `ws`, 0 if unknown).
    pub fn port(&self) -> u16 {
        if let Some(port) = self.port {
            return port;
        }
        if let Host::Authority(authority) = self.host
            && let Some(port) = port_of(authority)
        {
            return port;
        }
        default_port(self.scheme)
    }
    /// The path (no query string).
    pub fn path(&self) -> &'a str {
        self.path
    }
    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request's URL as the crate prints it (in [`Error::url`](crate::Error::url)):
    /// scheme, host, the port unless it is the scheme's default, and the
    /// path unless `hide_path`; never user info or the query string.
    /// Made only when an error is.
    pub(crate) fn redacted_url(&self, hide_path: bool) -> String {
        use std::fmt::Write as _;
        let mut url = String::new();
        if !self.scheme.is_empty() {
            url.push_str(self.scheme);
            url.push_str("://");
        }
        url.push_str(self.host());
        let port = self.port();
        if port != default_port(self.scheme) && port != 0 {
            let _ = write!(url, ":{port}");
        }
        if !hide_path {
            url.push_str(self.path);
        }
        url
    }

    /// `true` if the request carries an `Idempotency-Key` header.
    pub fn has_idempotency_key(&self) -> bool {
        self.headers.contains_key(&IDEMPOTENCY_KEY_NAME)
    }

    /// `true` if repeating the request is safe: an idempotent method
    /// (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or an
    /// `Idempotency-Key` header.
    pub fn is_idempotent(&self) -> bool {
        is_idempotent_method(self.method) || self.has_idempotency_key()
    }
}

/// A scheme's default port: 443 for `https` and `wss`, 80 for `http` and
/// `ws`, 0 if unknown.
fn default_port(scheme: &str) -> u16 {
    match scheme {
        s if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") => 443,
        s if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") => 80,
        _ => 0,
    }
}

/// The host of an authority: after any `userinfo@`, before any `:port`,
/// brackets kept for an IPv6 literal; the same result as `Uri::host`
/// (tested), without its char-pattern splits.
/// The port written in an authority, if any.
fn port_of(authority: &str) -> Option<u16> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => &v6[v6.find(']')? + 1..],
        None => &host_port[host_port.find(':')?..],
    };
    after_host.strip_prefix(':')?.parse().ok()
}

fn host_of(authority: &str) -> &str {
    // The last `@` ends any userinfo; an IPv6 literal runs to its `]`;
    // otherwise the first `:` starts the port. (The slices start or end
    // next to ASCII bytes, so they stay on char boundaries.)
    let host = match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let end = if host.starts_with('[') {
        host.find(']').map(|i| i + 1)
    } else {
        host.find(':')
    };
    &host[..end.unwrap_or(host.len())]
}

/// RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and DELETE.
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
