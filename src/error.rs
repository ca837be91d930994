//! [`Error`]: why a request failed after the retry machinery gave up, with
//! everything it knew.
//!
//! Nothing is lost: the [`RetryReport`] with every attempt, and the last
//! response (status, headers, and the response itself with its unread
//! body) or the last transport error as [`source()`](std::error::Error::source).
//!
//! | variant | [`code()`](Error::code) |
//! |---|---|
//! | [`Error::MaxRetriesExceeded`] | `MAX_RETRIES_EXCEEDED` |
//! | [`Error::RetryAfterTooLong`] | `RETRY_AFTER_TOO_LONG` |
//! | [`Error::DeadlineExceeded`] | `DEADLINE_EXCEEDED` |
//! | [`Error::NotRetryable`] | `NOT_RETRYABLE` |
//! | [`Error::RetryBudgetExhausted`] | `RETRY_BUDGET_EXHAUSTED` |
//! | [`Error::CircuitOpen`] | `CIRCUIT_OPEN` |
//! | [`Error::RateLimitedLocally`] | `RATE_LIMITED_LOCALLY` |
//! | [`Error::StoreUnavailable`] | `STORE_UNAVAILABLE` |
//!
//! A load-protection refusal before an attempt was sent (an open breaker,
//! a local rate limit, a server quota reset too far ahead, the deadline)
//! has no response of its own. Before the first attempt, the error carries
//! the report alone; before a retry, it carries the last attempt's response
//! (or transport error), kept through the wait, as if the retry had been
//! refused right after that attempt.
//!
//! Through `reqwest-middleware` it arrives as
//! `reqwest_middleware::Error::Middleware`, from which it downcasts:
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # async fn demo(client: reqwest_middleware::ClientWithMiddleware) {
//! match client.get("http://127.0.0.1:1/").send().await {
//!     Ok(response) => println!("{}", response.status()),
//!     Err(reqwest_middleware::Error::Middleware(e)) => {
//!         if let Ok(e) = e.downcast::<http_resilience::Error>() {
//!             println!("{} after {} attempts", e.code(), e.report().attempts());
//!             if let Some(last) = e.into_response::<reqwest::Response>() {
//!                 println!("last body: {:?}", last.text().await);
//!             }
//!         }
//!     }
//!     Err(e) => println!("{e}"),
//! }
//! # }
//! ```

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

pub use crate::classify::AttemptTimedOut;
use crate::classify::FailureKind;
use crate::report::{RetryReport, StopReason};

/// A boxed error, as `tower` uses.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request failed once the adapter stopped retrying.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Every retry was used up on transient failures.
    MaxRetriesExceeded(Box<Failure>),
    /// The server asked for a wait above `max_retry_after`: in a
    /// `Retry-After`-like header, or as a quota reset
    /// ([`quota_reset`](crate::retry_after::quota_reset)) that later
    /// requests to the endpoint would have had to wait for.
    RetryAfterTooLong {
        /// The wait the server asked for.
        hint: Duration,
        /// What was known when giving up.
        failure: Box<Failure>,
    },
    /// The deadline would have been crossed by the next wait, or was
    /// reached during an attempt.
    DeadlineExceeded(Box<Failure>),
    /// A transport error that was not retried: permanent (TLS, invalid
    /// URL, ...), or transient on a request that could not safely be
    /// repeated (see [`RetryReport::stop_reason`]).
    NotRetryable(Box<Failure>),
    /// The endpoint's [retry budget](crate::RetryBudget) could not pay for
    /// the retry this transient failure called for.
    RetryBudgetExhausted(Box<Failure>),
    /// The endpoint's [circuit breaker](crate::CircuitBreaker) is open:
    /// nothing was sent (or, right after a failure that found it open, no
    /// retry was).
    /// [`retry_in`](Error::retry_in) says when the breaker lets a probe
    /// through.
    CircuitOpen(Box<Failure>),
    /// The local [rate limit](crate::RateLimit) would have made an attempt
    /// wait beyond its `max_wait`; nothing was sent for it.
    /// [`retry_in`](Error::retry_in) gives the whole wait the attempt would
    /// have needed.
    RateLimitedLocally(Box<Failure>),
    /// A state store shared by many processes (a
    /// [`RedisStore`](crate::protection::store::redis::RedisStore)) could not
    /// answer in time and its fallback refuses: no turn under the shared
    /// rate limit, or no retry from a shared budget. Nothing was sent for
    /// it; before a retry, the last response is kept.
    StoreUnavailable(Box<Failure>),
}

/// The last outcome and the report, carried by every [`Error`].
pub struct Failure {
    report: RetryReport,
    status: Option<StatusCode>,
    headers: Option<HeaderMap>,
    // The response is kept type-erased so that `Error` is one type for
    // every client; `Mutex` keeps `Error: Sync` for response types that are
    // only `Send`.
    response: Mutex<Option<Box<dyn Any + Send>>>,
    source: Option<BoxError>,
    /// The request's URL as the crate prints it (see [`Error::url`]).
    url: Option<Box<str>>,
}

/// The last outcome, as adapters hand it over.
pub(crate) enum Last<R> {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        response: R,
    },
    Error(BoxError),
    /// Refused before an attempt: no response or error of its own.
    Nothing,
}

impl Failure {
    pub(crate) fn new<R: Send + 'static>(report: RetryReport, last: Last<R>) -> Box<Failure> {
        let (status, headers, response, source) = match last {
            Last::Response {
                status,
                headers,
                response,
            } => (
                Some(status),
                Some(headers),
                Some(Box::new(response) as Box<dyn Any + Send>),
                None,
            ),
            Last::Error(e) => (None, None, None, Some(e)),
            Last::Nothing => (None, None, None, None),
        };
        Box::new(Failure {
            report,
            status,
            headers,
            response: Mutex::new(response),
            source,
            url: None,
        })
    }

    /// The report of every attempt.
    pub fn report(&self) -> &RetryReport {
        &self.report
    }
    /// The last response's status, if the last attempt got a response.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
    /// The last response's headers, if the last attempt got a response.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }
    /// The last transport error, if the last attempt got no response.
    pub fn last_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
    /// The request's URL, redacted (see [`Error::url`]).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    fn take_response<R: 'static>(&mut self) -> Option<R> {
        let slot = self
            .response
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.take()?.downcast::<R>() {
            Ok(r) => Some(*r),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are left out on purpose: they may hold credentials.
        f.debug_struct("Failure")
            .field("report", &self.report)
            .field("status", &self.status)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Error {
    /// A stable, machine-readable code (see the [module docs](self)).
    pub fn code(&self) -> &'static str {
        match self {
            Error::MaxRetriesExceeded(_) => "MAX_RETRIES_EXCEEDED",
            Error::RetryAfterTooLong { .. } => "RETRY_AFTER_TOO_LONG",
            Error::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            Error::NotRetryable(_) => "NOT_RETRYABLE",
            Error::RetryBudgetExhausted(_) => "RETRY_BUDGET_EXHAUSTED",
            Error::CircuitOpen(_) => "CIRCUIT_OPEN",
            Error::RateLimitedLocally(_) => "RATE_LIMITED_LOCALLY",
            Error::StoreUnavailable(_) => "STORE_UNAVAILABLE",
        }
    }

    /// The last outcome and report.
    pub fn failure(&self) -> &Failure {
        match self {
            Error::MaxRetriesExceeded(f)
            | Error::RetryAfterTooLong { failure: f, .. }
            | Error::DeadlineExceeded(f)
            | Error::NotRetryable(f)
            | Error::RetryBudgetExhausted(f)
            | Error::CircuitOpen(f)
            | Error::RateLimitedLocally(f)
            | Error::StoreUnavailable(f) => f,
        }
    }

    fn failure_mut(&mut self) -> &mut Failure {
        match self {
            Error::MaxRetriesExceeded(f)
            | Error::RetryAfterTooLong { failure: f, .. }
            | Error::DeadlineExceeded(f)
            | Error::NotRetryable(f)
            | Error::RetryBudgetExhausted(f)
            | Error::CircuitOpen(f)
            | Error::RateLimitedLocally(f)
            | Error::StoreUnavailable(f) => f,
        }
    }

    /// The report of every attempt.
    pub fn report(&self) -> &RetryReport {
        self.failure().report()
    }

    /// How long until trying again may succeed, when the error knows:
    /// - [`CircuitOpen`](Error::CircuitOpen): until the breaker lets a
    ///   probe through;
    /// - [`RateLimitedLocally`](Error::RateLimitedLocally): the whole wait
    ///   the attempt would have needed for its turn;
    /// - [`RetryAfterTooLong`](Error::RetryAfterTooLong): the wait the
    ///   server asked for.
    pub fn retry_in(&self) -> Option<Duration> {
        match (self, self.report().stop_reason()) {
            (Error::RetryAfterTooLong { hint, .. }, _) => Some(*hint),
            (Error::CircuitOpen(_), Some(StopReason::CircuitOpen { retry_in })) => Some(retry_in),
            (Error::RateLimitedLocally(_), Some(StopReason::RateLimitedLocally { wait })) => {
                Some(wait)
            }
            _ => None,
        }
    }

    /// The last response's status, if the last attempt got a response.
    pub fn status(&self) -> Option<StatusCode> {
        self.failure().status()
    }

    /// The URL of the request, as the crate prints it: without user info
    /// or query string, and with host and port only under
    /// [`hide_paths`](crate::RetryPolicyBuilder::hide_paths)
    /// (`https://api.example.com/v1/items`, `http://127.0.0.1:8080`).
    /// `None` for an error made outside the adapters.
    ///
    /// With `reqwest`, it stands in for `reqwest::Error::url()`.
    pub fn url(&self) -> Option<&str> {
        self.failure().url()
    }

    /// `true` if the request ran out of time: its last attempt timed out
    /// (the policy's [`attempt_timeout`](crate::RetryPolicyBuilder::attempt_timeout),
    /// the client's own timeout, a connect timeout), or the
    /// [`deadline`](crate::RetryPolicyBuilder::deadline) stopped it
    /// ([`Error::DeadlineExceeded`]).
    ///
    /// The check a caller of `reqwest::Error::is_timeout()` had keeps
    /// working with the middleware installed:
    ///
    /// ```
    /// fn should_alert(e: &http_resilience::Error) -> bool {
    ///     !e.is_timeout() && !e.is_connect()
    /// }
    /// # let _ = should_alert;
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded(_))
            || self.last_failure() == Some(FailureKind::Timeout)
            || self.last_source_says(reqwest_timeout)
    }

    /// `true` if the last attempt could not connect (refused, DNS failure,
    /// connect timeout): the request never reached the server. It stands
    /// in for `reqwest::Error::is_connect()`.
    pub fn is_connect(&self) -> bool {
        self.last_failure() == Some(FailureKind::Connect) || self.last_source_says(reqwest_connect)
    }

    fn last_failure(&self) -> Option<FailureKind> {
        self.report().last().and_then(|r| r.failure())
    }

    /// Asks the last transport error, if it is reqwest's (which knows a
    /// connect timeout from a connect error).
    fn last_source_says(&self, ask: fn(&(dyn StdError + 'static)) -> bool) -> bool {
        let mut current = self
            .failure()
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static));
        while let Some(e) = current {
            if ask(e) {
                return true;
            }
            current = e.source();
        }
        false
    }

    /// Finds this crate's [`Error`] in `error`: the error itself, one in
    /// its [`source()`](std::error::Error::source) chain, or (with the
    /// `reqwest` feature) the one inside a
    /// `reqwest_middleware::Error::Middleware`, however deep. This is how
    /// to get it back once an SDK has turned the middleware's error into a
    /// `Box<dyn Error>` (a plain `downcast` finds only the
    /// `reqwest_middleware::Error` then).
    ///
    /// ```
    /// # #[cfg(feature = "reqwest")]
    /// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) {
    /// // What SDKs built on reqwest-middleware do with its errors:
    /// let result: Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>> =
    ///     client.get("http://127.0.0.1:1/").send().await.map_err(Into::into);
    /// if let Err(boxed) = result {
    ///     if let Some(e) = http_resilience::Error::find(&*boxed) {
    ///         println!("{} after {} attempts", e.code(), e.report().attempts());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<Error>() {
                return Some(found);
            }
            #[cfg(feature = "reqwest")]
            if let Some(reqwest_middleware::Error::Middleware(inner)) =
                e.downcast_ref::<reqwest_middleware::Error>()
                && let Some(found) = inner.downcast_ref::<Error>()
            {
                return Some(found);
            }
            current = e.source();
        }
        None
    }

    /// Takes this crate's [`Error`] out of a `reqwest_middleware::Error`
    /// (it is inside `Error::Middleware` when the middleware gave up), or
    /// gives the error back.
    ///
    /// ```
    /// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) {
    /// if let Err(e) = client.get("http://127.0.0.1:1/").send().await {
    ///     match http_resilience::Error::from_middleware(e) {
    ///         Ok(ours) => println!("{}: {}", ours.code(), ours),
    ///         Err(other) => println!("{other}"),
    ///     }
    /// }
    /// # }
    /// ```
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn from_middleware(
        error: reqwest_middleware::Error,
    ) -> Result<Error, reqwest_middleware::Error> {
        match error {
            reqwest_middleware::Error::Middleware(inner) => inner
                .downcast::<Error>()
                .map_err(reqwest_middleware::Error::Middleware),
            other => Err(other),
        }
    }

    /// [`middleware::into_box_error`](crate::middleware::into_box_error).
    #[cfg(feature = "reqwest")]
    pub(crate) fn boxed_from_middleware(error: reqwest_middleware::Error) -> BoxError {
        match Error::from_middleware(error) {
            Ok(ours) => Box::new(ours),
            Err(reqwest_middleware::Error::Reqwest(e)) => Box::new(e),
            Err(reqwest_middleware::Error::Middleware(e)) => e.into(),
        }
    }

    /// Sets the redacted URL (adapters, once, when the error is made).
    pub(crate) fn with_url(mut self, url: String) -> Error {
        self.failure_mut().url = Some(url.into_boxed_str());
        self
    }

    /// The last response's headers, if the last attempt got a response.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.failure().headers()
    }

    /// Takes the last response out of the error, body unread.
    ///
    /// `R` is the adapter's response type: `reqwest::Response` through
    /// [`RetryMiddleware`](crate::RetryMiddleware),
    /// `http::Response<ResponseBody<B>>` (with `B` the inner service's body
    /// type, see [`ResponseBody`](crate::ResponseBody)) through
    /// [`RetryLayer`](crate::RetryLayer). `None` if there was no response,
    /// it was already taken, or `R` is not its type.
    pub fn take_response<R: 'static>(&mut self) -> Option<R> {
        self.failure_mut().take_response()
    }

    /// Consumes the error, returning the last response (see
    /// [`take_response`](Self::take_response)).
    pub fn into_response<R: 'static>(mut self) -> Option<R> {
        self.take_response()
    }

    pub(crate) fn from_stop<R: Send + 'static>(
        reason: StopReason,
        report: RetryReport,
        last: Last<R>,
    ) -> Error {
        let failure = Failure::new(report, last);
        match reason {
            StopReason::MaxRetries => Error::MaxRetriesExceeded(failure),
            StopReason::RetryAfterTooLong { hint } => Error::RetryAfterTooLong { hint, failure },
            StopReason::Deadline => Error::DeadlineExceeded(failure),
            StopReason::BudgetExhausted => Error::RetryBudgetExhausted(failure),
            StopReason::CircuitOpen { .. } => Error::CircuitOpen(failure),
            StopReason::RateLimitedLocally { .. } => Error::RateLimitedLocally(failure),
            StopReason::StoreUnavailable => Error::StoreUnavailable(failure),
            _ => Error::NotRetryable(failure),
        }
    }
}

/// `reqwest::Error::is_timeout`, for any error.
fn reqwest_timeout(e: &(dyn StdError + 'static)) -> bool {
    #[cfg(feature = "reqwest")]
    if let Some(e) = e.downcast_ref::<reqwest::Error>() {
        return e.is_timeout();
    }
    let _ = e;
    false
}

/// `reqwest::Error::is_connect`, for any error.
fn reqwest_connect(e: &(dyn StdError + 'static)) -> bool {
    #[cfg(feature = "reqwest")]
    if let Some(e) = e.downcast_ref::<reqwest::Error>() {
        return e.is_connect();
    }
    let _ = e;
    false
}

fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = self.failure();
        let report = failure.report();
        match self {
            Error::MaxRetriesExceeded(_) => {
                write!(f, "gave up after {} retries", report.retries())?
            }
            Error::RetryAfterTooLong { hint, .. } => write!(
                f,
                "server asked to wait {hint:?}, more than the policy allows"
            )?,
            Error::DeadlineExceeded(_) => f.write_str("retry deadline exceeded")?,
            Error::NotRetryable(_) => {
                f.write_str("request failed and was not retried")?;
                if let Some(StopReason::BodyCommitted { reason }) = report.stop_reason() {
                    write!(f, ": {reason}")?;
                }
            }
            Error::RetryBudgetExhausted(_) => {
                f.write_str("retry budget exhausted for this endpoint")?
            }
            Error::CircuitOpen(_) => write!(
                f,
                "circuit open for this endpoint; next probe in {:?}",
                whole_ms(self.retry_in().unwrap_or_default())
            )?,
            Error::RateLimitedLocally(_) => write!(
                f,
                "local rate limit: the next turn is {:?} away, beyond max_wait",
                whole_ms(self.retry_in().unwrap_or_default())
            )?,
            Error::StoreUnavailable(_) => f.write_str(
                "the shared state store did not answer in time and its fallback refuses",
            )?,
        }
        match (failure.status, &failure.source) {
            (Some(status), _) => write!(f, "; last status {status}")?,
            (None, Some(e)) => write!(f, "; last error: {e}")?,
            (None, None) => {}
        }
        write!(f, " ({report})")
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.failure()
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_small() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert!(std::mem::size_of::<Error>() <= 24);
    }

    #[test]
    fn keeps_the_response_and_its_type() {
        let report = RetryReport::new();
        let last = Last::Response {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers: HeaderMap::new(),
            response: String::from("body"),
        };
        let mut e = Error::from_stop(StopReason::MaxRetries, report, last);
        assert_eq!(e.code(), "MAX_RETRIES_EXCEEDED");
        assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            e.take_response::<u32>(),
            None,
            "wrong type leaves it in place"
        );
        assert_eq!(e.take_response::<String>().as_deref(), Some("body"));
        assert_eq!(e.take_response::<String>(), None);
    }

    #[test]
    fn chains_the_transport_error() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = Error::from_stop::<()>(
            StopReason::Permanent,
            RetryReport::new(),
            Last::Error(Box::new(io)),
        );
        assert_eq!(e.code(), "NOT_RETRYABLE");
        let src = e.source().unwrap();
        assert!(src.downcast_ref::<std::io::Error>().is_some());
        assert!(e.to_string().contains("last error"));
    }
}
