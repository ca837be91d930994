//! Transport failures: [`FailureKind`], read from the types in an error's
//! `source()` chain, and [`AttemptTimedOut`], the error of an attempt that
//! ran out of time.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

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
    /// [`Classify`](super::Classify) can tell its error type apart.
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
        } else if err.is::<AttemptTimedOut>()
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

/// The error of an attempt that ran out of time
/// ([`attempt_timeout`](crate::RetryPolicyBuilder::attempt_timeout), or
/// what was left of the deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimedOut {
    /// The timeout that expired.
    pub after: Duration,
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.after)
    }
}

impl std::error::Error for AttemptTimedOut {}
