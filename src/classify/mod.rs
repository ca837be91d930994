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
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use crate::retry_after::{Hint, server_hint};

mod failure;
mod request;

pub use crate::headers::{IDEMPOTENCY_KEY, rate_limit_exhausted, should_retry_header};
pub use failure::{AttemptTimedOut, FailureKind};
pub(crate) use request::OPERATION;
pub use request::{RequestMeta, is_idempotent_method};

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
    #[inline]
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
#[inline]
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
    use http::Method;
    use std::io;

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
        let attempt = AttemptTimedOut {
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
