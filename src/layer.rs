//! The `tower` adapter: [`RetryLayer`] and its [`Retry`] service.
//!
//! It wraps any `tower::Service<http::Request<B>, Response = http::Response<R>>`
//! whose request body `B` is `Clone` (`Full<Bytes>`, `String`, `Bytes`,
//! ...), such as hyper-util's client. Each attempt sends a clone of the
//! request; the decision after each attempt is the shared
//! [engine](crate::engine)'s, so this adapter only moves requests,
//! responses and timers.
//!
//! The service's error type is [`Error`]; the inner service's errors are
//! carried as its [`source()`](std::error::Error::source). Every response
//! carries a [`RetryReport`] in its extensions.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_resilience::{RetryLayer, RetryPolicy, RetryReport};
//! use tower::{Layer, Service};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), http_resilience::Error> {
//! let inner = tower::service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new("hello"))
//! });
//! let mut svc = RetryLayer::new(RetryPolicy::default()).layer(inner);
//! let response = svc.call(Request::new(String::new())).await?;
//! assert_eq!(response.extensions().get::<RetryReport>().unwrap().attempts(), 1);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, Timeout};
use tower::{Layer, Service};

use crate::adapter::{decide, finish, not_ready};
use crate::classify::{FailureKind, RequestMeta};
use crate::engine::{Decision, RetryState, prepare_request};
use crate::error::{AttemptTimedOut, BoxError, Error};
use crate::policy::RetryPolicy;
use crate::report::RetryReport;

/// Applies a [`RetryPolicy`] to a tower service.
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer that retries under `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.policy.clone())
    }
}

/// A tower service that retries `S` under a [`RetryPolicy`]. Made by
/// [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl<S, B, R> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| not_ready(RetryReport::new(), e.into()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes into the future; a clone takes its place
        // (the same dance as tower's own `Retry`).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = request.method().clone();
        prepare_request(&self.policy, &method, request.headers_mut());
        let now = Instant::now().into_std();
        let state = RetryState::new(&self.policy, &meta_of(&request), now);
        let timeout = state.attempt_timeout(now);
        let fut = inner.call(request.clone());
        ResponseFuture {
            state: State::start(fut, timeout),
            inner,
            request,
            engine: state,
        }
    }
}

/// [`RequestMeta::from_http`], with the host found by a byte scan: the
/// char-pattern splits of `Uri::host` were a seventh of this layer's cost
/// on the success path. Same result (tested below).
fn meta_of<B>(request: &Request<B>) -> RequestMeta<'_> {
    let uri = request.uri();
    RequestMeta::new(
        request.method(),
        uri.scheme_str().unwrap_or(""),
        uri.authority().map_or("", |a| host_of(a.as_str())),
        uri.path(),
        request.headers(),
    )
}

/// The host of an authority: after any `userinfo@`, before any `:port`,
/// brackets kept for an IPv6 literal.
fn host_of(authority: &str) -> &str {
    // One pass: the last `@` starts the host, the first `:` after it ends
    // it (outside an IPv6 literal's brackets).
    let bytes = authority.as_bytes();
    let mut start = 0;
    let mut end = None;
    let mut bracket = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'@' => {
                start = i + 1;
                end = None;
                bracket = false;
            }
            b'[' if i == start => bracket = true,
            b']' if bracket && end.is_none() => end = Some(i + 1),
            b':' if !bracket && end.is_none() => end = Some(i),
            _ => {}
        }
    }
    // Both ends sit next to ASCII bytes, so they are char boundaries.
    authority
        .get(start..end.unwrap_or(bytes.len()))
        .unwrap_or("")
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] fut: F },
        CallingWithTimeout { #[pin] fut: Timeout<F>, after: Duration },
        Sleeping { #[pin] sleep: Sleep },
        Ready,
    }
}

impl<F: Future> State<F> {
    fn start(fut: F, timeout: Option<Duration>) -> Self {
        match timeout {
            Some(after) => State::CallingWithTimeout {
                fut: tokio::time::timeout(after, fut),
                after,
            },
            None => State::Calling { fut },
        }
    }
}

pin_project! {
    /// The future of [`Retry`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        inner: S,
        request: Request<B>,
        engine: RetryState,
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("report", self.engine.report())
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: Clone,
    R: Send + 'static,
{
    type Output = Result<Response<R>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result: Result<Response<R>, BoxError> = match this.state.as_mut().project() {
                StateProj::Calling { fut } => ready!(fut.poll(cx)).map_err(Into::into),
                StateProj::CallingWithTimeout { fut, after } => match ready!(fut.poll(cx)) {
                    Ok(result) => result.map_err(Into::into),
                    Err(_elapsed) => Err(Box::new(AttemptTimedOut { after: *after }) as BoxError),
                },
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                    continue;
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                        let report = this.engine.take_report();
                        return Poll::Ready(Err(not_ready(report, e.into())));
                    }
                    let timeout = this.engine.attempt_timeout(Instant::now().into_std());
                    let fut = this.inner.call(this.request.clone());
                    this.state.set(State::start(fut, timeout));
                    continue;
                }
            };

            let meta = meta_of(this.request);
            let decision = decide(
                this.engine,
                &meta,
                &result,
                FailureKind::from_error,
                Instant::now().into_std(),
            );
            if let Decision::Retry { delay, .. } = decision {
                drop(result);
                this.state.set(State::Sleeping {
                    sleep: tokio::time::sleep(delay),
                });
                continue;
            }
            return Poll::Ready(finish(decision, this.engine, result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let request = Request::get(uri).body(()).unwrap();
            assert_eq!(
                meta_of(&request).host(),
                request.uri().host().unwrap_or(""),
                "{uri}"
            );
        }
    }
}
