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
        let state = RetryState::new(&self.policy, &RequestMeta::from_http(&request), now);
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

            let meta = RequestMeta::from_http(this.request);
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
