//! Classification: is one attempt's outcome a success, a transient failure
//! worth retrying, or a permanent one?
//!
//! The [`DefaultClassifier`] follows RFC 9110 and what the big HTTP APIs
//! signal:
//!
//! | outcome | class |
//! |---|---|
//! | 1xx, 2xx, 3xx | [`Class::Success`] |
//! | 408, 425, 429, 5xx except 501 and 505 | [`Class::Transient`] |
//! | 409 on a request carrying `Idempotency-Key` (the original is still in progress) | [`Class::Transient`] |
//! | 403 or 429 with `x-ratelimit-remaining: 0` (GitHub's primary rate limit) | [`Class::Transient`] |
//! | any other 4xx, 501, 505 | [`Class::Permanent`] |
//! | `x-should-retry: true` / `false` on any response | overrides the status rule |
//! | a failure to connect: DNS failure, refused, unreachable, connect timeout ([`FailureKind::Connect`]: the request was not sent, so any method may be retried) | [`Class::Transient`] |
//! | connection reset or closed before the response; attempt timeouts (the policy's, tower's `TimeoutLayer`, the client's own) | [`Class::Transient`] |
//! | TLS (handshake, certificate), invalid request or URL, redirect loop, malformed response head, body or decode errors, anything unknown | [`Class::Permanent`] |
//!
//! A transport failure's [`FailureKind`] comes from the types in the error's
//! `source()` chain ([`FailureKind::from_error`] has the table), never from
//! its text: reqwest's errors end with the URL, and a refused connection to
//! `/v1/certificates` or to a host named `mtls.internal` is still a refused
//! connection. Both adapters map the same failure to the same kind,
//! whichever the client reports it in (reqwest or hyper-util).
//!
//! Replace it with your own [`Classify`] implementation through
//! [`RetryPolicyBuilder::classifier`](crate::RetryPolicyBuilder::classifier);
//! a custom classifier can delegate to [`DefaultClassifier`] for the cases it
//! does not care about.
//!
//! Whether a transient failure is then *retried* also depends on the
//! request's method (see [`RequestMeta::is_idempotent`]) and on the policy;
//! that is decided by the engine, not here. A non-idempotent request
//! without an `Idempotency-Key` is resent only after an outcome that proves
//! the server did not act on it ([`Classify::not_processed`]): a refused
//! connection, 408, 425, 429, or a rate-limit 403.

use std::error::Error as StdError;
use std::io;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode};

use crate::retry_after::{Hint, server_hint};

use crate::headers::IDEMPOTENCY_KEY_NAME;
pub use crate::headers::{IDEMPOTENCY_KEY, rate_limit_exhausted, should_retry_header};

/// What a classifier returns for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// The attempt succeeded (or failed in a way a retry cannot change and
    /// that the caller should see as a normal response, such as a 3xx).
    Success,
    /// The failure may go away on its own: retrying is worthwhile.
    Transient,
    /// Retrying will not help.
    Permanent,
}

impl Class {
    /// A stable lowercase name: `success`, `transient` or `permanent`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Success => "success",
            Class::Transient => "transient",
            Class::Permanent => "permanent",
        }
    }
}

/// The kind of a transport-level failure (no HTTP response was received).
///
/// Adapters map their client's error into one of these; see
/// [`FailureKind::from_error`] for the mapping of standard and `hyper`
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The connection could not be established (refused, DNS failure,
    /// connect timeout): the request never reached the server.
    Connect,
    /// The attempt took longer than its timeout; the server may have acted
    /// on the request.
    Timeout,
    /// The connection was reset or aborted after the request was sent.
    ConnectionReset,
    /// The server closed the connection before sending a complete response.
    ConnectionClosed,
    /// TLS handshake or certificate failure.
    Tls,
    /// The request itself is invalid (bad URL, builder error).
    InvalidRequest,
    /// Too many redirects, or a redirect loop.
    Redirect,
    /// The request or response body failed.
    Body,
    /// The response could not be decoded.
    Decode,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// A stable snake_case name, used in reports and tracing.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionReset => "connection_reset",
            FailureKind::ConnectionClosed => "connection_closed",
            FailureKind::Tls => "tls",
            FailureKind::InvalidRequest => "invalid_request",
            FailureKind::Redirect => "redirect",
            FailureKind::Body => "body",
            FailureKind::Decode => "decode",
            FailureKind::Other => "other",
        }
    }

    /// `true` when the request provably never reached the server, so that
    /// retrying it is safe whatever its method.
    pub const fn request_not_sent(self) -> bool {
        matches!(self, FailureKind::Connect)
    }

    /// Maps an error (and its `source()` chain) into a kind, from the types
    /// in the chain only: never from an error's text, which for most
    /// clients ends with the URL (a path such as `/v1/certificates` or a
    /// host such as `mtls.internal` says nothing about the failure).
    /// Cheap and allocation-free; it runs only when an attempt failed.
    ///
    /// | in the chain | kind |
    /// |---|---|
    /// | hyper-util's client error with `is_connect()` (feature `hyper-util`), and an `io::Error` of kind `InvalidData` below it (how `tokio-rustls`, and so `hyper-rustls` and reqwest's rustls, report every TLS failure) | [`Tls`](FailureKind::Tls) |
    /// | hyper-util's client error with `is_connect()`, anything else below it: DNS failure, refused, unreachable, connect timeout, a handshake cut short | [`Connect`](FailureKind::Connect) |
    /// | `io::Error`: `ConnectionRefused`, `AddrNotAvailable`, `NotConnected`, `HostUnreachable`, `NetworkUnreachable`, `NetworkDown` | [`Connect`](FailureKind::Connect) |
    /// | `io::Error`: `ConnectionReset`, `ConnectionAborted`, `BrokenPipe` | [`ConnectionReset`](FailureKind::ConnectionReset) |
    /// | `io::Error`: `UnexpectedEof`; `hyper::Error`: incomplete message, canceled, closed | [`ConnectionClosed`](FailureKind::ConnectionClosed) |
    /// | `io::Error`: `TimedOut`; `hyper::Error::is_timeout`; the policy's attempt timeout; `tokio::time::error::Elapsed`; `tower::timeout::error::Elapsed` (tower's `TimeoutLayer`) | [`Timeout`](FailureKind::Timeout) |
    /// | `hyper::Error`: parse error (a malformed response head) | [`Decode`](FailureKind::Decode) |
    /// | `hyper::Error`: body write aborted, user error | [`Body`](FailureKind::Body) |
    /// | anything else | [`Other`](FailureKind::Other) |
    ///
    /// Outside the connect phase the innermost specific cause wins (a
    /// `hyper::Error` wrapping a reset `io::Error` is a reset). An
    /// `io::Error` that wraps another error is looked through.
    ///
    /// A TLS stack that reports its failures otherwise (native-tls, in
    /// its own error type) is seen as a failure to connect; a custom
    /// [`Classify`] can tell its error type apart.
    ///
    /// ```
    /// use http_resilience::FailureKind;
    /// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// assert_eq!(FailureKind::from_error(&refused), FailureKind::Connect);
    /// // The text does not matter, only the kind.
    /// let named = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "tls handshake");
    /// assert_eq!(FailureKind::from_error(&named), FailureKind::Connect);
    /// ```
    pub fn from_error(error: &(dyn StdError + 'static)) -> FailureKind {
        let mut scan = Scan::default();
        let mut current: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(err) = current {
            scan.link(err);
            current = err.source();
        }
        scan.kind()
    }
}

/// What the walk down an error's `source()` chain has seen so far.
#[derive(Default)]
struct Scan {
    /// The innermost specific kind.
    innermost: Option<FailureKind>,
    /// The failure happened while connecting (hyper-util's client said
    /// so): the request was not sent.
    connecting: bool,
    /// An `io::Error` of kind `InvalidData`: what the TLS stream reports a
    /// TLS failure as.
    invalid_data: bool,
}

impl Scan {
    fn kind(&self) -> FailureKind {
        match (self.connecting, self.invalid_data) {
            (true, true) => FailureKind::Tls,
            // Whatever the cause (refused, DNS, a connect timeout), no
            // byte of the request left: safe to retry any method.
            (true, false) => FailureKind::Connect,
            (false, _) => self.innermost.unwrap_or(FailureKind::Other),
        }
    }

    fn found(&mut self, kind: Option<FailureKind>) {
        if kind.is_some() {
            self.innermost = kind;
        }
    }

    fn link(&mut self, err: &(dyn StdError + 'static)) {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            self.io(io);
            return;
        }
        #[cfg(feature = "hyper-util")]
        if let Some(e) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            self.connecting |= e.is_connect();
            return;
        }
        let kind = if let Some(h) = err.downcast_ref::<hyper::Error>() {
            kind_of_hyper(h)
        } else if err.is::<crate::error::AttemptTimedOut>()
            || err.is::<tokio::time::error::Elapsed>()
            || err.is::<tower::timeout::error::Elapsed>()
        {
            Some(FailureKind::Timeout)
        } else {
            None
        };
        self.found(kind);
    }

    fn io(&mut self, io: &io::Error) {
        self.invalid_data |= io.kind() == io::ErrorKind::InvalidData;
        self.found(kind_of_io(io.kind()));
        // An `io::Error`'s `source()` is its inner error's source, not the
        // inner error: look at that here (a rustls error, a timer's
        // `Elapsed`, another `io::Error`).
        if let Some(inner) = io.get_ref() {
            let inner: &(dyn StdError + 'static) = inner;
            self.link(inner);
        }
    }
}

fn kind_of_hyper(h: &hyper::Error) -> Option<FailureKind> {
    let kind = if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
        FailureKind::ConnectionClosed
    } else if h.is_timeout() {
        FailureKind::Timeout
    } else if h.is_body_write_aborted() || h.is_user() {
        FailureKind::Body
    } else if h.is_parse() {
        FailureKind::Decode
    } else {
        return None;
    };
    Some(kind)
}

fn kind_of_io(kind: io::ErrorKind) -> Option<FailureKind> {
    use io::ErrorKind as K;
    let kind = match kind {
        K::ConnectionRefused
        | K::AddrNotAvailable
        | K::NotConnected
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => FailureKind::Connect,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => FailureKind::ConnectionReset,
        K::UnexpectedEof => FailureKind::ConnectionClosed,
        K::TimedOut => FailureKind::Timeout,
        _ => return None,
    };
    Some(kind)
}

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

    /// Describes an `http::Request`.
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

/// The outcome of one attempt, as a classifier sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// A response arrived.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its headers.
        headers: &'a HeaderMap,
        /// The start of its body, when the classifier asked to see it
        /// ([`Classify::inspect_body`]); `None` otherwise. The caller still
        /// receives the whole body.
        body: Option<&'a [u8]>,
    },
    /// No response: a transport error.
    Error {
        /// The kind the adapter mapped the error to.
        kind: FailureKind,
        /// The error itself.
        error: &'a (dyn StdError + 'static),
    },
}

impl<'a> Outcome<'a> {
    /// A response outcome without a body prefix.
    pub fn response(status: StatusCode, headers: &'a HeaderMap) -> Self {
        Outcome::Response {
            status,
            headers,
            body: None,
        }
    }

    /// The response headers, if any.
    pub fn headers(&self) -> Option<&'a HeaderMap> {
        match self {
            Outcome::Response { headers, .. } => Some(headers),
            Outcome::Error { .. } => None,
        }
    }

    /// The inspected start of the response body, if any.
    pub fn body(&self) -> Option<&'a [u8]> {
        match self {
            Outcome::Response { body, .. } => *body,
            Outcome::Error { .. } => None,
        }
    }

    /// The response status, if any.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Outcome::Response { status, .. } => Some(*status),
            Outcome::Error { .. } => None,
        }
    }
    /// The transport failure kind, if any.
    pub fn failure(&self) -> Option<FailureKind> {
        match self {
            Outcome::Response { .. } => None,
            Outcome::Error { kind, .. } => Some(*kind),
        }
    }
}

/// Decides the [`Class`] of an attempt's outcome.
///
/// ```
/// use http::StatusCode;
/// use http_resilience::{Class, Classify, DefaultClassifier, Outcome, RequestMeta};
///
/// /// Also retries 404s on one flaky path, and otherwise does the default.
/// struct Eventually;
/// impl Classify for Eventually {
///     fn classify(&self, req: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class {
///         if outcome.status() == Some(StatusCode::NOT_FOUND) && req.path().starts_with("/jobs/") {
///             return Class::Transient;
///         }
///         DefaultClassifier.classify(req, outcome)
///     }
/// }
/// let policy = http_resilience::RetryPolicy::builder().classifier(Eventually).build().unwrap();
/// # let _ = policy;
/// ```
pub trait Classify: Send + Sync + 'static {
    /// Classifies one outcome of `request`.
    fn classify(&self, request: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class;

    /// Whether `request` may be retried at all, whatever its method.
    ///
    /// `None` (the default) leaves it to the HTTP rule: idempotent methods
    /// and requests with an `Idempotency-Key` are retried, others only if the
    /// policy opts in. `Some(true)` marks a request safe to repeat (git's
    /// read-only `POST .../git-upload-pack`); `Some(false)` forbids any
    /// retry of it, even with a key or an opt-in (git's push).
    fn retry_safety(&self, request: &RequestMeta<'_>) -> Option<bool> {
        let _ = request;
        None
    }

    /// Whether `outcome` proves that the server did not act on `request`,
    /// so that resending it is safe whatever its method (a POST without an
    /// `Idempotency-Key` included).
    ///
    /// The default ([`not_processed`]): a refused connection (the request
    /// never reached the server), a rate-limit rejection (429, and a 403
    /// with `x-ratelimit-remaining: 0`, GitHub's primary limit), 408
    /// Request Timeout (RFC 9110 §15.5.9: the server did not receive a
    /// complete request) and 425 Too Early (RFC 8470 §5.2). Presets add the
    /// rejections their provider documents (GitHub's secondary-limit 403s).
    /// Only consulted for outcomes classified [`Class::Transient`]; a
    /// request the classifier marks never retryable
    /// ([`retry_safety`](Self::retry_safety) `Some(false)`) stays so.
    fn not_processed(&self, request: &RequestMeta<'_>, outcome: &Outcome<'_>) -> bool {
        let _ = request;
        not_processed(outcome)
    }

    /// How many bytes of this response's body the classifier needs to see
    /// before it can decide; `0` (the default) for none. At most
    /// [`MAX_INSPECTED_BODY`] is read. The adapters read that prefix, pass it
    /// as the `body` of [`Outcome::Response`], and still hand the whole body to the
    /// caller.
    fn inspect_body(
        &self,
        request: &RequestMeta<'_>,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> usize {
        let _ = (request, status, headers);
        0
    }

    /// The wait the server asked for before the next attempt, if any.
    ///
    /// `now` is the wall-clock time (for HTTP-dates and epoch resets) and
    /// `retries` the number of retries already made. The default reads
    /// `retry-after-ms`, `Retry-After` and `x-ratelimit-reset` (see
    /// [`server_hint`]). Presets override
    /// it with their provider's rules.
    fn hint(
        &self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: SystemTime,
        retries: u32,
    ) -> Option<Hint> {
        let _ = (request, retries);
        server_hint(outcome.headers()?, now)
    }
}

/// The most body bytes a classifier can ask to inspect: 64 KiB.
pub const MAX_INSPECTED_BODY: usize = 64 * 1024;

/// The default rules (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, request: &RequestMeta<'_>, outcome: &Outcome<'_>) -> Class {
        match *outcome {
            Outcome::Response {
                status, headers, ..
            } => classify_status(request, status, headers),
            Outcome::Error { kind, .. } => classify_failure(kind),
        }
    }
}

/// The default rule of [`Classify::not_processed`]: `true` for a refused
/// connection ([`FailureKind::request_not_sent`]) and for responses that
/// reject a request before acting on it: 408, 425, 429, and a 403 with
/// `x-ratelimit-remaining: 0`.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use http_resilience::Outcome;
/// use http_resilience::classify::not_processed;
///
/// let none = HeaderMap::new();
/// assert!(not_processed(&Outcome::response(StatusCode::TOO_MANY_REQUESTS, &none)));
/// assert!(not_processed(&Outcome::response(StatusCode::REQUEST_TIMEOUT, &none)));
/// assert!(!not_processed(&Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &none)));
/// ```
pub fn not_processed(outcome: &Outcome<'_>) -> bool {
    match *outcome {
        Outcome::Response {
            status, headers, ..
        } => match status.as_u16() {
            408 | 425 | 429 => true,
            403 => rate_limit_exhausted(headers),
            _ => false,
        },
        Outcome::Error { kind, .. } => kind.request_not_sent(),
    }
}

/// The default rule for a transport failure.
pub fn classify_failure(kind: FailureKind) -> Class {
    match kind {
        FailureKind::Connect
        | FailureKind::Timeout
        | FailureKind::ConnectionReset
        | FailureKind::ConnectionClosed => Class::Transient,
        _ => Class::Permanent,
    }
}

/// The default rule for a response.
pub fn classify_status(
    request: &RequestMeta<'_>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Class {
    // A success stays a success, whatever `x-should-retry` says (and the
    // success path reads no header).
    if status.as_u16() < 400 {
        return Class::Success;
    }
    // The server's explicit word wins over the status rule.
    if let Some(verdict) = should_retry_header(headers) {
        return if verdict {
            Class::Transient
        } else {
            Class::Permanent
        };
    }
    match status.as_u16() {
        408 | 425 | 429 => Class::Transient,
        403 if rate_limit_exhausted(headers) => Class::Transient,
        409 if request.has_idempotency_key() => Class::Transient,
        501 | 505 => Class::Permanent,
        500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn meta<'a>(method: &'a Method, headers: &'a HeaderMap) -> RequestMeta<'a> {
        RequestMeta::new(method, "http", "example.com", "/", headers)
    }

    fn class(status: u16, resp: &[(&'static str, &'static str)], req_headers: &HeaderMap) -> Class {
        let mut headers = HeaderMap::new();
        for (k, v) in resp {
            headers.append(*k, HeaderValue::from_static(v));
        }
        let status = StatusCode::from_u16(status).unwrap();
        DefaultClassifier.classify(
            &meta(&Method::GET, req_headers),
            &Outcome::response(status, &headers),
        )
    }

    #[test]
    fn status_table() {
        let none = HeaderMap::new();
        for s in [100, 200, 201, 204, 301, 304, 399] {
            assert_eq!(class(s, &[], &none), Class::Success, "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504, 507, 529, 599] {
            assert_eq!(class(s, &[], &none), Class::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 422, 451, 501, 505] {
            assert_eq!(class(s, &[], &none), Class::Permanent, "{s}");
        }
    }

    #[test]
    fn special_rules() {
        let none = HeaderMap::new();
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k1"));
        assert_eq!(class(409, &[], &keyed), Class::Transient);
        assert_eq!(
            class(403, &[("x-ratelimit-remaining", "0")], &none),
            Class::Transient
        );
        assert_eq!(
            class(403, &[("x-ratelimit-remaining", "12")], &none),
            Class::Permanent
        );
        assert_eq!(
            class(400, &[("x-should-retry", "true")], &none),
            Class::Transient
        );
        assert_eq!(
            class(503, &[("x-should-retry", "FALSE")], &none),
            Class::Permanent
        );
        assert_eq!(
            class(503, &[("x-should-retry", "maybe")], &none),
            Class::Transient
        );
        assert_eq!(
            class(200, &[("x-should-retry", "true")], &none),
            Class::Success
        );
    }

    #[test]
    fn failure_kinds() {
        use io::ErrorKind as K;
        let cases = [
            (K::ConnectionRefused, FailureKind::Connect),
            (K::ConnectionReset, FailureKind::ConnectionReset),
            (K::ConnectionAborted, FailureKind::ConnectionReset),
            (K::UnexpectedEof, FailureKind::ConnectionClosed),
            (K::TimedOut, FailureKind::Timeout),
            (K::PermissionDenied, FailureKind::Other),
        ];
        for (io_kind, want) in cases {
            let e = io::Error::from(io_kind);
            assert_eq!(FailureKind::from_error(&e), want, "{io_kind:?}");
        }
        assert_eq!(classify_failure(FailureKind::Tls), Class::Permanent);
        assert_eq!(classify_failure(FailureKind::Connect), Class::Transient);
        assert_eq!(classify_failure(FailureKind::Timeout), Class::Transient);
        assert_eq!(
            classify_failure(FailureKind::InvalidRequest),
            Class::Permanent
        );
    }

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn walks_the_source_chain() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(FailureKind::from_error(&e), FailureKind::ConnectionReset);
    }

    /// Says what it is told to, like an error that prints its URL.
    #[derive(Debug)]
    struct Says(&'static str, Option<io::Error>);
    impl std::fmt::Display for Says {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Says {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    #[test]
    fn the_text_never_decides() {
        use io::ErrorKind as K;
        let words = [
            "error sending request for url (http://127.0.0.1:9/v1/certificates)",
            "http://127.0.0.1:9/tls/handshake",
            "http://mtls.internal/ssl",
            "invalid peer certificate: UnknownIssuer",
        ];
        for text in words {
            let refused = Says(text, Some(io::Error::from(K::ConnectionRefused)));
            assert_eq!(
                FailureKind::from_error(&refused),
                FailureKind::Connect,
                "{text}"
            );
            let inner = io::Error::new(K::ConnectionRefused, text);
            assert_eq!(
                FailureKind::from_error(&inner),
                FailureKind::Connect,
                "{text}"
            );
            // Nothing typed: unknown, whatever it says.
            assert_eq!(
                FailureKind::from_error(&Says(text, None)),
                FailureKind::Other
            );
            // `InvalidData` is a TLS failure only while connecting (hyper-util's
            // error says so; tested in tests/transport.rs).
            let data = io::Error::new(K::InvalidData, text);
            assert_eq!(FailureKind::from_error(&data), FailureKind::Other, "{text}");
        }
    }

    #[test]
    fn timers_and_nested_io_errors() {
        use io::ErrorKind as K;
        let attempt = crate::error::AttemptTimedOut {
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(FailureKind::from_error(&attempt), FailureKind::Timeout);
        let tower = tower::timeout::error::Elapsed::new();
        assert_eq!(FailureKind::from_error(&tower), FailureKind::Timeout);
        // An io::Error inside an io::Error: the innermost kind wins.
        let nested = io::Error::other(io::Error::from(K::ConnectionAborted));
        assert_eq!(
            FailureKind::from_error(&nested),
            FailureKind::ConnectionReset
        );
        for kind in [K::HostUnreachable, K::NetworkUnreachable, K::NetworkDown] {
            let e = io::Error::from(kind);
            assert_eq!(
                FailureKind::from_error(&e),
                FailureKind::Connect,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn idempotency() {
        let none = HeaderMap::new();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(meta(&m, &none).is_idempotent(), "{m}");
        }
        assert!(!meta(&Method::POST, &none).is_idempotent());
        assert!(!meta(&Method::PATCH, &none).is_idempotent());
        let mut keyed = HeaderMap::new();
        keyed.insert("Idempotency-Key", HeaderValue::from_static("abc"));
        assert!(meta(&Method::POST, &keyed).is_idempotent());
    }

    #[test]
    fn port_of_authority_or_scheme() {
        let cases = [
            ("http://a.example:8080/x", 8080),
            ("https://user:pw@a.example:8443/", 8443),
            ("http://[::1]:3000/", 3000),
            ("https://a.example/", 443),
            ("http://a.example/", 80),
            ("http://[::1]/", 80),
            ("/relative", 0),
        ];
        for (uri, port) in cases {
            let request = http::Request::get(uri).body(()).unwrap();
            assert_eq!(RequestMeta::from_http(&request).port(), port, "{uri}");
        }
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "https", "h", "/", &headers);
        assert_eq!(meta.port(), 443);
        assert_eq!(meta.with_port(1).port(), 1);
    }

    #[test]
    fn host_of_matches_uri_host() {
        for uri in [
            "http://api.example.com/v1/items",
            "https://api.example.com:8443/",
            "http://user:pass@example.com:80/x",
            "http://a@b@example.com/",
            "http://[::1]:8080/",
            "http://user@[fe80::1]/",
            "http://u:p@[fe80::1%25eth0]:8080/",
            "http://[::1]/",
            "http://127.0.0.1:3000",
            "/relative/only",
        ] {
            let request = http::Request::get(uri).body(()).unwrap();
            assert_eq!(
                RequestMeta::from_http(&request).host(),
                request.uri().host().unwrap_or(""),
                "{uri}"
            );
        }
    }
}
