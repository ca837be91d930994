//! Retries for clients that build a fresh request for every attempt: an
//! SDK with its own request factory (async-openai's `HttpRequestFactory`),
//! a multipart upload whose form is a stream, any request that cannot be
//! cloned but can be made again.
//!
//! [`RetryPolicy::send_rebuilt`] takes two functions: `make`, which builds
//! the request of one attempt (a `reqwest::Request` or an
//! `http::Request<B>`), and `send`, which sends it (a `reqwest::Client`, a
//! hyper-util client, an SDK's transport) and gives back the response
//! (`reqwest::Response` or `http::Response<B>`) or a transport error. Each
//! outcome is classified by the policy's rules, as through the
//! [middleware](crate::middleware) and the [layer](crate::layer): the
//! status, the headers (`Retry-After`, `retry-after-ms`, rate-limit
//! resets, `x-should-retry`), the start of the body when the classifier
//! asks for it (GitHub's 403s), transport errors by kind, the presets' rules, the
//! method's idempotency, load protection. It is the same engine and the
//! same shared path as the two adapters; only the copy of the request is
//! made differently. The answer is the response (its
//! [`RetryReport`] attached, as the adapters attach it:
//! [`ResponseExt::retry_report`](crate::ResponseExt::retry_report)) or the
//! crate's [`Error`], with the last response or error inside.
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # async fn demo() -> Result<(), http_resilience::Error> {
//! use http_resilience::RetryPolicy;
//!
//! let client = reqwest::Client::new();
//! let policy = RetryPolicy::openai();
//! // An upload whose body reqwest cannot clone (a stream, as a multipart
//! // form is): made anew for each attempt (the file read again), and
//! // every attempt is sent whole.
//! let response = policy
//!     .send_rebuilt(
//!         |_attempt| async {
//!             let bytes = std::fs::read("train.jsonl")?;
//!             let body = reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from(bytes)));
//!             Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
//!                 client.post("https://api.openai.com/v1/files").body(body).build()?,
//!             )
//!         },
//!         |request| client.execute(request),
//!     )
//!     .await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! # What the driver does to each request
//!
//! - The first request made describes the request for the whole run: its
//!   method, URL and headers decide whether it may be repeated, which
//!   endpoint's load protection applies, and what the error names. Every
//!   attempt is described as the first (make the same request each time).
//! - A generated `Idempotency-Key` (when the policy adds one) is put on the
//!   first request and copied onto every later one, so that all carry the
//!   same key; the policy's attempt header and its `before_retry` hook are
//!   applied to each resend, as through the adapters.
//! - Every request is made again, so every body can be replayed: the
//!   `BODY_NOT_REPLAYABLE` stop of a streamed body through the middleware
//!   does not happen here.
//! - `make` for the first attempt runs before the first admission (the
//!   request is needed to know where it goes); for a retry, after the
//!   wait, just before the send. When the first request cannot be made
//!   (`make` fails), nothing is sent: the run stops with
//!   [`Error::NotRetryable`], `make`'s error as its `source()`. When a
//!   retry's cannot, the run stops as it does for a body that cannot be
//!   sent again: the last response is handed over as it is (the last
//!   transport error, as [`Error::NotRetryable`]), its report's stop
//!   reason [`StopReason::BodyNotReplayable`].
//! - The attempt's timer (`attempt_timeout`, clamped to the deadline)
//!   covers the send and the reading of a body prefix for the classifier,
//!   as through the adapters; the [`Attempt`] given to `make` carries it.
//! - A `reqwest::Error` is mapped to its [`FailureKind`]
//!   as the middleware maps it, and loses its URL's user info and query
//!   string (its whole URL under `hide_paths`) before it is kept.

use std::future::Future;
use std::time::Duration;

use http::{HeaderMap, Method};
use tokio::time::Instant;

use crate::adapter::span::instrumented;
use crate::adapter::{
    Kept, attempt_span, attempt_window, body_to_inspect, changes_resend, decide, finish, keep,
    pause, prepare_resend, refused, start, take_kept,
};
use crate::classify::{FailureKind, IDEMPOTENCY_KEY, RequestMeta};
use crate::engine::{Admission, Decision, RetryState};
use crate::error::{AttemptTimedOut, BoxError, Error, Last};
use crate::op::Attempt;
use crate::policy::RetryPolicy;
use crate::report::{RetryReport, StopReason};
use crate::resend::ResendRequest;

/// A request type [`RetryPolicy::send_rebuilt`] can describe:
/// `reqwest::Request` (feature `reqwest`) and `http::Request<B>`. Sealed.
pub trait RebuiltRequest: sealed::Request {}

/// A response type [`RetryPolicy::send_rebuilt`] can classify:
/// `reqwest::Response` (feature `reqwest`), handed back as it is, and
/// `http::Response<B>` for a body `B` of `Bytes`, handed back as
/// `http::Response<ResponseBody<B>>` (as the tower layer does: the start
/// of the body may have been read for the classifier). Sealed.
pub trait RebuiltResponse: sealed::Response {}

// Sealed: only this crate implements them. Their bounds are the adapters'
// crate-private traits, which users never see or name (the lint would
// have them public).
#[allow(private_bounds, private_interfaces)]
pub(crate) mod sealed {
    use std::future::Future;

    use http::{HeaderMap, Method};

    use crate::adapter::{HttpRequest, HttpResponse};

    /// What the driver reads and changes on a request.
    pub trait Request: HttpRequest + Send {
        /// The method.
        fn method_ref(&self) -> &Method;
        /// The absolute URL, written out.
        fn url_string(&self) -> String;
        /// The headers.
        fn header_map(&self) -> &HeaderMap;
    }

    /// What the driver reads on a response, and how it hands it over.
    pub trait Response: HttpResponse {
        /// What the caller gets.
        type Output: HttpResponse;
        /// The response as it is (no body read).
        fn plain(self) -> Self::Output;
        /// Reads up to `limit` bytes of the body for the classifier: the
        /// prefix, and the response that still gives the whole body.
        fn inspect(self, limit: usize) -> impl Future<Output = (Vec<u8>, Self::Output)> + Send;
    }
}

impl<B: Send> sealed::Request for http::Request<B> {
    fn method_ref(&self) -> &Method {
        self.method()
    }
    fn url_string(&self) -> String {
        self.uri().to_string()
    }
    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }
}
impl<B: Send> RebuiltRequest for http::Request<B> {}

impl<B> sealed::Response for http::Response<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Send,
{
    type Output = http::Response<crate::adapter::body::ResponseBody<B>>;
    fn plain(self) -> Self::Output {
        self.map(crate::adapter::body::ResponseBody::new)
    }
    fn inspect(self, limit: usize) -> impl Future<Output = (Vec<u8>, Self::Output)> + Send {
        let (parts, body) = self.into_parts();
        async move {
            let (prefix, replay) = crate::adapter::body::Inspect::new(body, limit).await;
            let body = crate::adapter::body::ResponseBody::replay(replay);
            (prefix, http::Response::from_parts(parts, body))
        }
    }
}
impl<B> RebuiltResponse for http::Response<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Send,
{
}

#[cfg(feature = "reqwest")]
impl sealed::Request for reqwest::Request {
    fn method_ref(&self) -> &Method {
        self.method()
    }
    fn url_string(&self) -> String {
        self.url().as_str().to_owned()
    }
    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }
}
#[cfg(feature = "reqwest")]
impl RebuiltRequest for reqwest::Request {}

#[cfg(feature = "reqwest")]
impl sealed::Response for reqwest::Response {
    type Output = reqwest::Response;
    fn plain(self) -> reqwest::Response {
        self
    }
    fn inspect(self, limit: usize) -> impl Future<Output = (Vec<u8>, reqwest::Response)> + Send {
        crate::adapter::middleware::inspect(self, limit)
    }
}
#[cfg(feature = "reqwest")]
impl RebuiltResponse for reqwest::Response {}

/// The request as the first `make` gave it (with the key the policy
/// added): what the engine, the classifier and the error see of every
/// attempt.
struct Identity {
    method: Method,
    url: String,
    uri: http::Uri,
    headers: HeaderMap,
}

impl Identity {
    fn of<Q: sealed::Request>(request: &Q) -> Identity {
        let url = request.url_string();
        Identity {
            method: request.method_ref().clone(),
            uri: url.parse().unwrap_or_default(),
            url,
            headers: request.header_map().clone(),
        }
    }

    fn describe(&self) -> RequestMeta<'_> {
        let uri = &self.uri;
        let scheme = uri.scheme_str().unwrap_or("");
        let port = uri.port_u16().unwrap_or(match scheme {
            "https" => 443,
            "http" => 80,
            _ => 0,
        });
        RequestMeta::new(
            &self.method,
            scheme,
            uri.host().unwrap_or(""),
            uri.path(),
            &self.headers,
        )
        .with_port(port)
    }
}

impl RetryPolicy {
    /// Sends a request that is made anew for every attempt: `make` builds
    /// the request of each attempt (it is told the attempt's number and
    /// timeout), `send` sends it. The policy's rules classify every
    /// outcome and the crate's engine decides, as through the adapters;
    /// see the [`rebuild`](crate::rebuild) module for what is done to each
    /// request.
    ///
    /// The response has its report attached when anything happened
    /// ([`ResponseExt::retry_report`](crate::ResponseExt::retry_report));
    /// when the run gives up, the [`Error`] keeps the report and the last
    /// response (or transport error).
    ///
    /// ```
    /// # #[cfg(feature = "reqwest")]
    /// # async fn demo(url: &str) -> Result<(), http_resilience::Error> {
    /// use http_resilience::RetryPolicy;
    ///
    /// let client = reqwest::Client::new();
    /// let response = RetryPolicy::default()
    ///     .send_rebuilt(
    ///         |_attempt| std::future::ready(client.get(url).build()),
    ///         |request| client.execute(request),
    ///     )
    ///     .await?;
    /// assert!(response.status().is_success());
    /// # Ok(()) }
    /// ```
    pub async fn send_rebuilt<Q, R, M, MF, ME, S, SF, SE>(
        &self,
        mut make: M,
        mut send: S,
    ) -> Result<R::Output, Error>
    where
        Q: RebuiltRequest,
        R: RebuiltResponse,
        M: FnMut(Attempt) -> MF,
        MF: Future<Output = Result<Q, ME>>,
        ME: Into<BoxError>,
        S: FnMut(Q) -> SF,
        SF: Future<Output = Result<R, SE>>,
        SE: Into<BoxError>,
    {
        let mut starts = Instant::now().into_std();
        // The first attempt's timer, before the engine exists: nothing of
        // the deadline has gone yet.
        let first = {
            let p = self.inner();
            match (p.attempt_timeout, p.deadline) {
                (Some(a), Some(d)) => Some(a.min(d)),
                (a, d) => a.or(d),
            }
        };
        let mut request = match make(Attempt::new(1, first)).await {
            Ok(request) => request,
            Err(e) => return Err(not_made(RetryReport::new(), e.into())),
        };
        let (mut engine, mut admission) = start(&mut request, |_, _| self.clone(), starts);
        let identity = Identity::of(&request);
        let key = identity.headers.get(IDEMPOTENCY_KEY).cloned();
        let mut next = Some(request);
        let mut kept: Kept<R::Output> = None;
        loop {
            loop {
                match admission {
                    Admission::Send => break,
                    Admission::Wait { delay, .. } => pause(&mut kept, delay, None).sleep().await,
                    Admission::Fail(reason) => {
                        return refused(&mut engine, &identity.describe(), reason, kept);
                    }
                    // A turn under a limit shared by many processes: the
                    // store's call, then ask again (as the adapters do).
                    Admission::Consult => {
                        engine.store_call().await;
                    }
                }
                starts = Instant::now().into_std();
                admission = engine.admit(&identity.describe(), starts);
            }
            let timeout = match attempt_window(&mut engine, || identity.describe(), starts) {
                Ok(timeout) => timeout,
                Err(reason) => return refused(&mut engine, &identity.describe(), reason, kept),
            };
            let mut request = match next.take() {
                Some(first) => first,
                None => {
                    let number = engine.report().attempts() + 1;
                    match make(Attempt::new(number, timeout)).await {
                        Ok(mut request) => {
                            if let Some(key) = &key {
                                request.headers_mut().insert(IDEMPOTENCY_KEY, key.clone());
                            }
                            request
                        }
                        Err(_) => {
                            // The request cannot be made again: as for a
                            // body that cannot be replayed, the last
                            // response (or error) is handed over, and the
                            // report says why it stopped.
                            let meta = identity.describe();
                            let reason = StopReason::BodyNotReplayable;
                            engine.withdraw(&meta, reason);
                            return refused(&mut engine, &meta, reason, kept);
                        }
                    }
                }
            };
            if changes_resend(&engine) {
                let mut resend =
                    ResendRequest::with_url(&identity.method, &identity.url, request.headers_mut());
                prepare_resend(&engine, &mut resend);
            }
            drop(take_kept(&mut kept));
            let span = attempt_span(&engine, || identity.describe()).map(Box::new);
            let sent = send(request);
            let result: Result<R, BoxError> =
                match instrumented(span.as_deref(), within(sent, timeout)).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(e)) => Err(redact(e.into(), &engine)),
                    Err(after) => Err(timed_out(after)),
                };
            let wanted = body_to_inspect(&engine, &identity.describe(), &result);
            let (result, prefix) = match result {
                Ok(response) if wanted > 0 => {
                    match inspect_within(response, wanted, starts, timeout).await {
                        Ok((prefix, response)) => (Ok(response), Some(prefix)),
                        Err(e) => (Err(e), None),
                    }
                }
                Ok(response) => (Ok(sealed::Response::plain(response)), None),
                Err(e) => (Err(e), None),
            };
            let decision = decide(
                &mut engine,
                &identity.describe(),
                &result,
                prefix.as_deref(),
                kind_of,
                // Every attempt's body is made anew: none is ever
                // committed.
                || None,
                span.as_deref(),
            );
            drop(span);
            let (delay, last) = match decision {
                Decision::Retry { delay, .. } => (delay, Some(result)),
                // The retry's payment from a budget shared by many
                // processes: the store's call, the result kept meanwhile.
                Decision::Consult => {
                    keep(&mut kept, result);
                    engine.store_call().await;
                    let now = Instant::now().into_std();
                    match engine.decide_after_store(&identity.describe(), now) {
                        Decision::Retry { delay, .. } => (delay, None),
                        decision => {
                            let meta = identity.describe();
                            return match take_kept(&mut kept) {
                                Some(result) => finish(decision, &mut engine, || meta, result),
                                None => {
                                    refused(&mut engine, &meta, StopReason::StoreUnavailable, None)
                                }
                            };
                        }
                    }
                }
                decision => return finish(decision, &mut engine, || identity.describe(), result),
            };
            pause(&mut kept, delay, last).sleep().await;
            starts = Instant::now().into_std();
            admission = engine.admit(&identity.describe(), starts);
        }
    }
}

/// The first `make` failed: nothing was sent.
fn not_made(mut report: RetryReport, error: BoxError) -> Error {
    report.set_stop(StopReason::Permanent);
    Error::from_stop::<()>(StopReason::Permanent, report, Last::Error(error))
}

/// The send, within the attempt's `timeout` (`Err` with it when it ran
/// out).
async fn within<F: Future>(send: F, timeout: Option<Duration>) -> Result<F::Output, Duration> {
    match timeout {
        None => Ok(send.await),
        Some(after) => tokio::time::timeout(after, send)
            .await
            .map_err(|_elapsed| after),
    }
}

/// Reads the body prefix the classifier wants, within what is left of the
/// attempt's `timeout` (counted from `starts`, the send).
async fn inspect_within<R: sealed::Response>(
    response: R,
    limit: usize,
    starts: std::time::Instant,
    timeout: Option<Duration>,
) -> Result<(Vec<u8>, R::Output), BoxError> {
    let read = response.inspect(limit);
    match timeout {
        None => Ok(read.await),
        Some(after) => {
            let until = Instant::from_std(starts) + after;
            tokio::time::timeout_at(until, read)
                .await
                .map_err(|_elapsed| timed_out(after))
        }
    }
}

fn timed_out(after: Duration) -> BoxError {
    Box::new(AttemptTimedOut { after })
}

/// A transport error's kind: the middleware's mapping for reqwest's
/// errors, the source chain's for any other.
fn kind_of(error: &(dyn std::error::Error + 'static)) -> FailureKind {
    #[cfg(feature = "reqwest")]
    {
        crate::adapter::middleware::kind_of(error)
    }
    #[cfg(not(feature = "reqwest"))]
    {
        FailureKind::from_error(error)
    }
}

/// A `reqwest::Error` loses what the middleware removes from it (user
/// info and query string; the URL under `hide_paths`); any other error is
/// kept as it is.
fn redact(error: BoxError, engine: &RetryState) -> BoxError {
    #[cfg(feature = "reqwest")]
    {
        match error.downcast::<reqwest::Error>() {
            Ok(e) => {
                crate::adapter::middleware::into_box(reqwest_middleware::Error::Reqwest(*e), engine)
            }
            Err(other) => other,
        }
    }
    #[cfg(not(feature = "reqwest"))]
    {
        let _ = engine;
        error
    }
}
