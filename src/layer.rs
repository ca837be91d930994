//! The `tower` adapter: [`RetryLayer`] and its [`Retry`] service.
//!
//! It wraps any `tower::Service<http::Request<B>, Response = http::Response<R>>`
//! whose request body `B` is `Clone` (`Full<Bytes>`, `String`, `Bytes`,
//! ...) and whose response body `R` is an [`http_body::Body`] of `Bytes`,
//! such as hyper-util's client. Each attempt sends a clone of the request;
//! the decision after each attempt is the shared [engine](crate::engine)'s,
//! so this adapter only moves requests, responses and timers.
//!
//! It takes a single [`RetryPolicy`] or per-endpoint policies
//! ([`EndpointPolicies`]); a [`RetryPolicy`] in a request's extensions
//! overrides both for that request.
//!
//! The service's error type is [`Error`]; the inner service's errors are
//! carried as its [`source()`](std::error::Error::source). Every response
//! carries a [`RetryReport`] in its extensions. Response bodies come back as
//! [`ResponseBody<R>`](ResponseBody): `R` itself, unless a preset's
//! classifier read the start of it (GitHub's 403s), in which case those
//! bytes are replayed before the rest.
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
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
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

use bytes::Bytes;
use http_body::Body;

use crate::adapter::{body_to_inspect, decide, finish, not_ready, not_ready_for, refused};
use crate::body::{Inspect, ResponseBody};
use crate::classify::{FailureKind, RequestMeta};
use crate::endpoint::EndpointPolicies;
use crate::engine::{Admission, Decision, RetryState, prepare_request};
use crate::error::{AttemptTimedOut, BoxError, Error};
#[cfg(doc)]
use crate::policy::RetryPolicy;
use crate::report::{RetryReport, StopReason};

/// Applies a [`RetryPolicy`], or per-endpoint [`EndpointPolicies`], to a
/// tower service.
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    policies: EndpointPolicies,
}

impl RetryLayer {
    /// A layer that retries under `policies`: a single [`RetryPolicy`], or
    /// an [`EndpointPolicies`] set.
    pub fn new(policies: impl Into<EndpointPolicies>) -> Self {
        RetryLayer {
            policies: policies.into(),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.policies.clone())
    }
}

/// A tower service that retries `S` under a [`RetryPolicy`] or
/// [`EndpointPolicies`]. Made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policies: EndpointPolicies,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policies: impl Into<EndpointPolicies>) -> Self {
        Retry {
            inner,
            policies: policies.into(),
        }
    }
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The policies.
    pub fn policies(&self) -> &EndpointPolicies {
        &self.policies
    }
}

impl<S, B, R> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Send,
{
    type Response = Response<ResponseBody<R>>;
    type Error = Error;
    type Future = ResponseFuture<S, B, R>;

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
        let policy = self
            .policies
            .select_with(request.extensions(), &RequestMeta::from_http(&request))
            .clone();
        let method = request.method().clone();
        prepare_request(&policy, &method, request.headers_mut());
        let now = Instant::now().into_std();
        let meta = RequestMeta::from_http(&request);
        let mut engine = RetryState::with_policy(policy, &meta, now);
        let state = match engine.admit(&meta, now) {
            Admission::Send => {
                let timeout = engine.attempt_timeout(now);
                State::start(inner.call(request.clone()), timeout)
            }
            Admission::Wait { delay, .. } => State::Sleeping {
                sleep: tokio::time::sleep(delay),
            },
            Admission::Fail(reason) => State::Refused { reason },
        };
        ResponseFuture {
            state,
            inner,
            request,
            engine,
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R>
    where
        R: Body,
    {
        Calling { #[pin] fut: F },
        CallingWithTimeout { #[pin] fut: Timeout<F>, after: Duration },
        // Boxed: only GitHub's ambiguous 403s get here, and a small state
        // keeps the future cheap to move.
        Inspecting { inspect: Box<(Option<http::response::Parts>, Inspect<R>)> },
        // A backoff, or a wait that load protection imposed; either way
        // the next attempt asks to be admitted again.
        Sleeping { #[pin] sleep: Sleep },
        // Admitted (or about to ask): wait for the inner service, send.
        Ready { admitted: bool },
        // Refused before the first attempt.
        Refused { reason: StopReason },
    }
}

impl<F: Future, R: Body> State<F, R> {
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
    pub struct ResponseFuture<S, B, R>
    where
        S: Service<Request<B>>,
        R: Body,
    {
        #[pin]
        state: State<S::Future, R>,
        inner: S,
        request: Request<B>,
        engine: RetryState,
    }
}

impl<S, B, R> fmt::Debug for ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
    R: Body,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("report", self.engine.report())
            .finish_non_exhaustive()
    }
}

/// One attempt's result: fresh from the inner service, or with the start
/// of its body read for the classifier.
enum Attempt<R: Body> {
    Fresh(Result<Response<R>, BoxError>),
    Inspected(Response<ResponseBody<R>>, Vec<u8>),
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: Clone,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Send,
{
    type Output = Result<Response<ResponseBody<R>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let attempt = match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    Attempt::Fresh(ready!(fut.poll(cx)).map_err(Into::into))
                }
                StateProj::CallingWithTimeout { fut, after } => {
                    Attempt::Fresh(match ready!(fut.poll(cx)) {
                        Ok(result) => result.map_err(Into::into),
                        Err(_elapsed) => {
                            Err(Box::new(AttemptTimedOut { after: *after }) as BoxError)
                        }
                    })
                }
                StateProj::Inspecting { inspect } => {
                    let (parts, inspect) = &mut **inspect;
                    let (prefix, replay) = ready!(Pin::new(inspect).poll(cx));
                    let Some(parts) = parts.take() else {
                        // Polled again after completing: a caller bug.
                        return Poll::Pending;
                    };
                    Attempt::Inspected(
                        Response::from_parts(parts, ResponseBody::replay(replay)),
                        prefix,
                    )
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready { admitted: false });
                    continue;
                }
                StateProj::Refused { reason } => {
                    let reason = *reason;
                    let meta = RequestMeta::from_http(this.request);
                    return Poll::Ready(Err(refused(this.engine, &meta, reason)));
                }
                StateProj::Ready { admitted } => {
                    if !*admitted {
                        let meta = RequestMeta::from_http(this.request);
                        match this.engine.admit(&meta, Instant::now().into_std()) {
                            Admission::Send => *admitted = true,
                            Admission::Wait { delay, .. } => {
                                this.state.set(State::Sleeping {
                                    sleep: tokio::time::sleep(delay),
                                });
                                continue;
                            }
                            Admission::Fail(reason) => {
                                return Poll::Ready(Err(refused(this.engine, &meta, reason)));
                            }
                        }
                    }
                    if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                        let meta = RequestMeta::from_http(this.request);
                        return Poll::Ready(Err(not_ready_for(this.engine, &meta, e.into())));
                    }
                    let timeout = this.engine.attempt_timeout(Instant::now().into_std());
                    let fut = this.inner.call(this.request.clone());
                    this.state.set(State::start(fut, timeout));
                    continue;
                }
            };

            let meta = RequestMeta::from_http(this.request);
            let (result, prefix) = match attempt {
                Attempt::Fresh(result) => {
                    let wanted = body_to_inspect(this.engine, &meta, &result);
                    match result {
                        Ok(response) if wanted > 0 => {
                            let (parts, body) = response.into_parts();
                            this.state.set(State::Inspecting {
                                inspect: Box::new((Some(parts), Inspect::new(body, wanted))),
                            });
                            continue;
                        }
                        result => (result.map(|r| r.map(ResponseBody::new)), None),
                    }
                }
                Attempt::Inspected(response, prefix) => (Ok(response), Some(prefix)),
            };
            let decision = decide(
                this.engine,
                &meta,
                &result,
                prefix.as_deref(),
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
            return Poll::Ready(finish(decision, this.engine, &meta, result));
        }
    }
}
