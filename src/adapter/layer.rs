//! The `tower` adapter: [`RetryLayer`] and its [`Retry`] service.
//!
//! It wraps any `tower::Service<http::Request<B>, Response = http::Response<R>>`
//! whose request body `B` is an [`http_body::Body`] that can be sent again
//! (a [`RetryBody`]: every `Clone` body, such as `Full<Bytes>`,
//! `Empty<Bytes>`, `String`, and a [`ReplayBody`]) and whose response body
//! `R` is an [`http_body::Body`] of `Bytes`, such as hyper-util's client.
//! Each attempt sends a copy of the request; the decision after each
//! attempt is the shared [engine](crate::engine)'s, so this adapter only
//! moves requests, responses and timers.
//!
//! # Bodies that cannot be cloned
//!
//! [`RetryLayer::replay_bodies`] takes request bodies of any type: each is
//! wrapped in a [`ReplayBody`] with the policy's
//! [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer) (64 KiB by
//! default), which keeps what the first attempt sends, so that a retry
//! sends it again byte for byte. A longer body is sent whole once and the
//! request is committed: a transient failure is not retried, and its report
//! says [`StopReason::BodyCommitted`] (`body_too_large`). The idempotency
//! rules are the same as for any body.
//!
//! # The request body's `Clone` must give an independent copy
//!
//! In the default mode every retry sends a clone of the request, so
//! **`Clone` on the body must
//! give a copy that can be read whole on its own**, as `Full<Bytes>` and
//! `String` do. A body whose clones share one stream (octocrab's `OctoBody`
//! is an `Arc` around one body) is drained by the first attempt, and its
//! clone would go out with nothing left. The layer notes the body's
//! `size_hint` and `is_end_stream` at the first send and checks every
//! retry's copy against them: a copy that no longer says the same is never
//! sent, and the request stops as for a body that cannot be replayed (its
//! report says `body_not_replayable`; the last response is returned as it
//! is, or its transport error fails with `NOT_RETRYABLE`). A shared empty
//! body still says the same, and is retried. A shared stream of unknown
//! length that never reports its end cannot be told apart: send such a
//! body through [`RetryLayer::replay_bodies`], which never uses its
//! `Clone`.
//!
//! # Where the layer goes
//!
//! The layer reads the request as it reaches it: the URI picks the
//! per-endpoint policy (and the load protection's endpoint), the headers
//! say whether the request is keyed (`Idempotency-Key`). Put it **below
//! (inside) the layers that set the URI or such headers**, so that it sees
//! the request as it will be sent. With `tower::ServiceBuilder`, that means
//! after them in the builder (`ServiceBuilder::new().layer(set_uri).layer(retry)`:
//! the first layer is the outermost). With octocrab's `OctocrabBuilder`,
//! each `with_layer` wraps what came before, so add the retry layer right
//! after `with_service(...)` and before `BaseUriLayer`, `ExtraHeadersLayer`
//! and `AuthHeaderLayer`. Above `BaseUriLayer`, the layer sees relative URIs
//! with no host: routes that name a host cannot match them, and the request
//! falls to the default policy. The first such request is noted in one
//! `WARN` event (target `http_resilience`; once for each policy set, not
//! once per request). Layers that must redo their work for every attempt go
//! below it.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, Uri};
//! use http_resilience::{EndpointPolicies, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), http_resilience::Error> {
//! // Sets the absolute URI, as octocrab's `BaseUriLayer` does.
//! let base_uri = tower::util::MapRequestLayer::new(|mut req: Request<String>| {
//!     let path = req.uri().path().to_string();
//!     *req.uri_mut() = format!("https://api.github.com{path}").parse::<Uri>().unwrap();
//!     req
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(base_uri) // outermost: runs first
//!     .layer(RetryLayer::new(EndpointPolicies::well_known())) // sees api.github.com
//!     .service(tower::service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("{}")))
//!     }));
//! let response = svc.oneshot(Request::new(String::new())).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```
//!
//! # Time
//!
//! Each attempt has one timer, from its send: the policy's
//! `attempt_timeout`, clamped to what is left of the `deadline`. It covers
//! the response head and, when the classifier reads the start of the body
//! (GitHub's 403s), that read too: a body that stalls or trickles ends the
//! attempt as an attempt timeout, and a deadline it reaches ends the request
//! with `DEADLINE_EXCEEDED` at the deadline. Before a retry, the wait for
//! the inner service's readiness (a saturated `ConcurrencyLimit`, a full
//! `Buffer`) counts against the deadline too, and ends there with
//! `DEADLINE_EXCEEDED`; no attempt is sent with no time left.
//!
//! A retry that was decided and then refused before it was sent (load
//! protection during the wait, the deadline, a drained body) hands over the
//! last response, body unread, exactly as a refusal right after the attempt
//! would: inside the [`Error`], or as the response with
//! `return_last_response(true)`.
//!
//! It takes a single [`RetryPolicy`] or per-endpoint policies
//! ([`EndpointPolicies`]); a [`RetryPolicy`] in a request's extensions
//! overrides both for that request.
//!
//! The service's error type is [`Error`]; the inner service's errors are
//! carried as its [`source()`](std::error::Error::source). Every response
//! answers [`ResponseExt::retry_report`](crate::ResponseExt::retry_report)
//! (its [`RetryReport`] is attached whenever anything happened). Response
//! bodies come back as
//! [`ResponseBody<R>`](ResponseBody): `R` itself, unless a preset's
//! classifier read the start of it (GitHub's 403s), in which case those
//! bytes are replayed before the rest.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_resilience::{ResponseExt, RetryLayer, RetryPolicy};
//! use tower::{Layer, Service};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), http_resilience::Error> {
//! let inner = tower::service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! });
//! let mut svc = RetryLayer::new(RetryPolicy::default()).layer(inner);
//! let response = svc.call(Request::new(String::new())).await?;
//! assert_eq!(response.retry_report().attempts(), 1);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use bytes::Bytes;
use http_body::Body;

use super::body::{BodyShape, Inspect, ResponseBody, RetryBody};
use super::hedge::{Event, LaneEnd, Race};
use super::replay::ReplayBody;
use super::span::AttemptSpan;
use super::{
    HttpRequest, Kept, attempt_span, attempt_window, body_to_inspect, changes_resend, decide,
    finish, keep, lane_span, not_ready, not_ready_for, pause, prepare_resend, refused, start,
    take_kept,
};
use crate::classify::{FailureKind, RequestMeta};
use crate::endpoint::EndpointPolicies;
use crate::engine::{Admission, Decision, Hedge, Raced, RetryState, committed as committed_reason};
use crate::error::{AttemptTimedOut, BoxError, Error};
#[cfg(doc)]
use crate::policy::RetryPolicy;
use crate::report::{RetryReport, StopReason};
use crate::resend::ResendRequest;

/// Applies a [`RetryPolicy`], or per-endpoint [`EndpointPolicies`], to a
/// tower service.
///
/// `M` is how request bodies are sent again: [`AsGiven`] (the default:
/// each attempt sends a copy of the body the caller gave, which must be a
/// [`RetryBody`]: `Clone`, or a [`ReplayBody`]), or [`ReplayBodies`]
/// ([`replay_bodies`](Self::replay_bodies): any `http_body::Body`, kept in
/// a replay buffer of the policy's
/// [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer)).
#[derive(Debug, Clone, Default)]
pub struct RetryLayer<M = AsGiven> {
    policies: EndpointPolicies,
    mode: M,
}

/// The default mode of [`RetryLayer`] and [`Retry`]: each attempt sends a
/// copy of the request body as given ([`RetryBody::try_replay`]: a clone, or
/// a [`ReplayBody`]'s replay).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsGiven;

/// The mode of [`RetryLayer::replay_bodies`]: every request body, whatever
/// its type, is wrapped in a [`ReplayBody`] with the request's policy's
/// [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer), and sent
/// again from it. The inner service receives `ReplayBody<B>`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayBodies;

impl RetryLayer {
    /// A layer that retries under `policies`: a single [`RetryPolicy`], or
    /// an [`EndpointPolicies`] set.
    pub fn new(policies: impl Into<EndpointPolicies>) -> Self {
        RetryLayer {
            policies: policies.into(),
            mode: AsGiven,
        }
    }

    /// The same layer for request bodies of any type, `Clone` or not (a
    /// stream from a file, a proxied upload): each is wrapped in a
    /// [`ReplayBody`] with the request's policy's
    /// [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer) (64 KiB by
    /// default), so that a retry sends it again byte for byte; a longer one
    /// is sent once and the request is committed (its report says
    /// `body_too_large`). The inner service receives `ReplayBody<B>`s, as
    /// hyper-util's client does for any body type:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
    /// use http_resilience::replay::ReplayBody;
    /// use http_resilience::{RetryLayer, RetryPolicy};
    /// use hyper_util::client::legacy::Client;
    /// use hyper_util::rt::TokioExecutor;
    /// use tower::Layer;
    ///
    /// type Upload = UnsyncBoxBody<Bytes, std::convert::Infallible>; // not `Clone`
    /// let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Upload>>();
    /// let svc = RetryLayer::new(RetryPolicy::default()).replay_bodies().layer(client);
    /// let request = http::Request::put("http://127.0.0.1:8080/upload")
    ///     .body(Full::new(Bytes::from("streamed")).boxed_unsync())
    ///     .unwrap();
    /// // `svc.call(request)` retries it as any idempotent request.
    /// # let _ = (svc, request);
    /// ```
    ///
    /// A `Clone` body takes this path too under this mode (the caller chose
    /// it); in the default mode it takes the cheaper one (a clone per
    /// attempt).
    pub fn replay_bodies(self) -> RetryLayer<ReplayBodies> {
        RetryLayer {
            policies: self.policies,
            mode: ReplayBodies,
        }
    }
}

impl<S, M: Clone> Layer<S> for RetryLayer<M> {
    type Service = Retry<S, M>;

    fn layer(&self, inner: S) -> Retry<S, M> {
        Retry {
            inner,
            policies: self.policies.clone(),
            _mode: self.mode.clone(),
        }
    }
}

/// A tower service that retries `S` under a [`RetryPolicy`] or
/// [`EndpointPolicies`]. Made by [`RetryLayer`]; `M` as there.
#[derive(Debug, Clone)]
pub struct Retry<S, M = AsGiven> {
    inner: S,
    policies: EndpointPolicies,
    _mode: M,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policies: impl Into<EndpointPolicies>) -> Self {
        Retry {
            inner,
            policies: policies.into(),
            _mode: AsGiven,
        }
    }

    /// The same service for request bodies of any type (see
    /// [`RetryLayer::replay_bodies`]).
    pub fn replay_bodies(self) -> Retry<S, ReplayBodies> {
        Retry {
            inner: self.inner,
            policies: self.policies,
            _mode: ReplayBodies,
        }
    }
}

impl<S, M> Retry<S, M> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Consumes the layer's service, returning the inner service.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http_resilience::{Retry, RetryPolicy};
    ///
    /// let inner = tower::service_fn(|_req: http::Request<String>| async {
    ///     Ok::<_, Infallible>(http::Response::new(String::new()))
    /// });
    /// let mut retry = Retry::new(inner, RetryPolicy::default());
    /// let _: &mut _ = retry.get_mut();
    /// let inner = retry.into_inner();
    /// # let _ = inner;
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
    /// The policies.
    pub fn policies(&self) -> &EndpointPolicies {
        &self.policies
    }
}

impl<B> HttpRequest for Request<B> {
    fn describe(&self) -> RequestMeta<'_> {
        RequestMeta::from_http(self)
    }
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.headers_mut()
    }
}

impl<S, B, R> Service<Request<B>> for Retry<S, AsGiven>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + RetryBody,
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::begin(&mut self.inner, &self.policies, request, |_, _| {})
    }
}

impl<S, B, R> Service<Request<B>> for Retry<S, ReplayBodies>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Send,
{
    type Response = Response<ResponseBody<R>>;
    type Error = Error;
    type Future = ResponseFuture<S, ReplayBody<B>, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| not_ready(RetryReport::new(), e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Wrapped before the policy is chosen (the request is described
        // first), its buffer set to the chosen policy's once it is.
        let request = request.map(ReplayBody::new);
        ResponseFuture::begin(
            &mut self.inner,
            &self.policies,
            request,
            |request, engine| {
                let limit = engine.policy().replay_buffer();
                request.body_mut().set_limit(limit);
            },
        )
    }
}

impl<S, B, R> ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<R>>,
    B: Body + RetryBody,
    R: Body,
{
    /// Takes the ready inner service for one request (a clone takes its
    /// place: the same dance as tower's own `Retry`), starts the request
    /// (its description is made once here, twice when a key is added, for
    /// the policy, the engine and the first admission, and once after each
    /// attempt), lets `configure` set its body up once the policy is chosen
    /// (in place: a request moved here costs a 232-byte copy on every
    /// call), and sends the first attempt. (One function, the future built
    /// in place: nothing big moves twice on the success path.)
    #[inline]
    fn begin(
        service: &mut S,
        policies: &EndpointPolicies,
        mut request: Request<B>,
        configure: impl FnOnce(&mut Request<B>, &RetryState),
    ) -> Self
    where
        S: Clone,
    {
        let clone = service.clone();
        let mut inner = std::mem::replace(service, clone);
        let now = Instant::now().into_std();
        let (mut engine, admission) = start(
            &mut request,
            |request, meta| policies.select_with(request.extensions(), meta).clone(),
            now,
        );
        configure(&mut request, &engine);
        // Noted before anything reads the body: each retry's copy must
        // still say the same.
        let shape = BodyShape::of(request.body());
        let mut kept = None;
        let state = match admission {
            // The first attempt always has time: the deadline starts now.
            Admission::Send => match B::try_replay_request(&request) {
                Ok(copy) => {
                    let timeout = engine.attempt_timeout(now);
                    if let Some(attempt) =
                        engine.hedge_start(|| RequestMeta::from_http(&request), now)
                    {
                        let span = lane_span(&engine, || RequestMeta::from_http(&request), attempt);
                        let fut = in_span(&span, || inner.call(copy));
                        State::racing(attempt, fut, timeout, engine.hedge_due(), span)
                    } else {
                        match attempt_span(&engine, || RequestMeta::from_http(&request)) {
                            None => State::start(inner.call(copy), timeout),
                            Some(span) => {
                                let fut = span.in_scope(|| inner.call(copy));
                                State::traced(fut, timeout, span)
                            }
                        }
                    }
                }
                // A body that the caller gave already committed (a
                // `ReplayBody` read past its limit): nothing to send whole.
                Err(committed) => {
                    let reason = committed_reason(committed);
                    engine.withdraw(&RequestMeta::from_http(&request), reason);
                    State::Refused { reason }
                }
            },
            Admission::Wait { delay, .. } => {
                pause(&mut kept, delay, None);
                State::Sleeping
            }
            Admission::Fail(reason) => State::Refused { reason },
            Admission::Consult => State::Consulting {
                after: After::Admit,
            },
        };
        ResponseFuture {
            state,
            inner,
            request,
            engine,
            shape,
            pause: kept,
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
        // One timer for the whole attempt, from its send: the response
        // head, then any reading of its body for the classifier.
        // (The timers are boxed: only attempts with a timeout, waits and a
        // busy inner service use one, and a small state keeps the future
        // cheap to move on every request.)
        CallingWithTimeout { #[pin] fut: F, timer: Pin<Box<Sleep>>, after: Duration },
        // An attempt in its span (a subscriber wanted one), with its timer
        // if it has one: boxed, so that the states above, the success
        // path's, stay as small as they were.
        CallingTraced { traced: Pin<Box<Traced<F>>> },
        // Boxed: only responses whose body a classifier reads get here
        // (GitHub's ambiguous 403s), and a small state keeps the future
        // cheap to move.
        Inspecting { inspect: Pin<Box<Inspection<R>>> },
        // A backoff, or a wait that load protection imposed; either way
        // the next attempt asks to be admitted again. `kept`: the last
        // result (before a retry), handed over if the retry is refused.
        Sleeping,
        // Admitted (or about to ask): wait for the inner service, until
        // the deadline at most (the timer is set only if it is not ready
        // at once), then send.
        Ready {
            admitted: bool,
            deadline: Option<Pin<Box<Sleep>>>,
        },
        // A hedged request's attempts side by side, and the hedge timer
        // (boxed: only a policy that hedges gets here).
        Racing { race: Box<Race<F>> },
        // Refused before the first attempt.
        Refused { reason: StopReason },
        // Waiting for a store call (a state store shared by many
        // processes: a turn under a shared rate limit, a retry's payment
        // from a shared budget), which the engine keeps and this future
        // polls in place; then admitting again, or finishing the decision.
        // A result to hand over meanwhile is in the pause.
        Consulting { after: After },
    }
}

/// What follows a store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Ask for the attempt's admission again.
    Admit,
    /// Finish the decision on the last attempt.
    Decide,
}

impl<F: Future, R: Body> State<F, R> {
    // Inline: the inner call's future is made in the state, not copied
    // into it (tower success path 2,288 -> 2,268 instructions per call).
    #[inline]
    fn start(fut: F, timeout: Option<Duration>) -> Self {
        match timeout {
            Some(after) => State::CallingWithTimeout {
                fut,
                timer: Box::pin(tokio::time::sleep(after)),
                after,
            },
            None => State::Calling { fut },
        }
    }

    /// [`start`](Self::start), in `span`.
    #[cold]
    fn traced(fut: F, timeout: Option<Duration>, span: AttemptSpan) -> Self {
        State::CallingTraced {
            traced: Box::pin(Traced {
                fut,
                span: Some(span),
                timer: timeout.map(tokio::time::sleep),
                after: timeout.unwrap_or_default(),
            }),
        }
    }

    /// A hedged round, its first attempt (number `attempt`) sent.
    #[cold]
    fn racing(
        attempt: u32,
        fut: F,
        timeout: Option<Duration>,
        due: Option<std::time::Instant>,
        span: Option<AttemptSpan>,
    ) -> Self {
        let mut race = Box::new(Race::new());
        race.start(attempt, fut, timeout, span);
        race.arm(due);
        State::Racing { race }
    }

    fn ready() -> Self {
        State::Ready {
            admitted: false,
            deadline: None,
        }
    }
}

pin_project! {
    /// An attempt in its span, within its timer if it has one.
    struct Traced<F> {
        #[pin]
        fut: F,
        // Taken when the attempt ends: the engine decides in it.
        span: Option<AttemptSpan>,
        #[pin]
        timer: Option<Sleep>,
        after: Duration,
    }
}

pin_project! {
    /// A response whose body is being read for the classifier, within what
    /// is left of its attempt's timer (in the attempt's span, if it has
    /// one).
    struct Inspection<R: Body> {
        parts: Option<http::response::Parts>,
        body: Inspect<R>,
        #[pin]
        timer: Option<Sleep>,
        after: Duration,
        span: Option<AttemptSpan>,
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
        // What the request body said of itself at the first send.
        shape: BodyShape,
        // The wait before the next attempt and the last result kept
        // through it (made at the first wait, reused after).
        pause: Kept<Response<ResponseBody<R>>>,
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

/// One attempt's result: fresh from the inner service (with its timer's
/// deadline, should its body be read next), or with the start of its body
/// read for the classifier.
enum Attempt<R: Body> {
    Fresh(Result<Response<R>, BoxError>, Option<(Instant, Duration)>),
    Inspected(Response<ResponseBody<R>>, Vec<u8>),
}

fn timed_out(after: Duration) -> BoxError {
    Box::new(AttemptTimedOut { after })
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: Body + RetryBody,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Send,
{
    type Output = Result<Response<ResponseBody<R>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // The span of the attempt that ended, if it had one.
            let mut span = None;
            let attempt = match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    Attempt::Fresh(ready!(fut.poll(cx)).map_err(Into::into), None)
                }
                StateProj::CallingWithTimeout { fut, timer, after } => match fut.poll(cx) {
                    Poll::Ready(result) => {
                        Attempt::Fresh(result.map_err(Into::into), Some((timer.deadline(), *after)))
                    }
                    Poll::Pending => {
                        ready!(timer.as_mut().poll(cx));
                        Attempt::Fresh(Err(timed_out(*after)), None)
                    }
                },
                StateProj::CallingTraced { traced } => {
                    let t = traced.as_mut().project();
                    let fut = t.fut;
                    let polled = match t.span {
                        Some(s) => s.in_scope(|| fut.poll(cx)),
                        None => fut.poll(cx),
                    };
                    match polled {
                        Poll::Ready(result) => {
                            span = t.span.take();
                            let deadline = t.timer.as_ref().get_ref().as_ref().map(Sleep::deadline);
                            let timing = deadline.map(|at| (at, *t.after));
                            Attempt::Fresh(result.map_err(Into::into), timing)
                        }
                        Poll::Pending => {
                            let Some(timer) = t.timer.as_pin_mut() else {
                                return Poll::Pending;
                            };
                            ready!(timer.poll(cx));
                            span = t.span.take();
                            Attempt::Fresh(Err(timed_out(*t.after)), None)
                        }
                    }
                }
                StateProj::Inspecting { inspect } => {
                    let inspection = inspect.as_mut().project();
                    let body = Pin::new(inspection.body);
                    let polled = match inspection.span {
                        Some(s) => s.in_scope(|| body.poll(cx)),
                        None => body.poll(cx),
                    };
                    match polled {
                        Poll::Ready((prefix, replay)) => {
                            let Some(parts) = inspection.parts.take() else {
                                // Polled again after completing: a caller bug.
                                return Poll::Pending;
                            };
                            span = inspection.span.take();
                            Attempt::Inspected(
                                Response::from_parts(parts, ResponseBody::replay(replay)),
                                prefix,
                            )
                        }
                        Poll::Pending => {
                            let Some(timer) = inspection.timer.as_pin_mut() else {
                                return Poll::Pending;
                            };
                            ready!(timer.poll(cx));
                            span = inspection.span.take();
                            // The body did not come in time: an attempt
                            // timeout, like a head that does not.
                            Attempt::Fresh(Err(timed_out(*inspection.after)), None)
                        }
                    }
                }
                StateProj::Sleeping => {
                    if let Some(pause) = this.pause {
                        ready!(pause.as_mut().sleep().poll(cx));
                    }
                    this.state.set(State::ready());
                    continue;
                }
                StateProj::Racing { race } => {
                    let event = ready!(race.poll_next(cx));
                    let meta = RequestMeta::from_http(this.request);
                    let now = Instant::now().into_std();
                    let (attempt, end, mut lane) = match event {
                        Event::Due => {
                            match this.engine.hedge_now(&meta, now) {
                                Hedge::Send { attempt } => {
                                    // A hedge never waits for the inner
                                    // service, nor goes with a short body.
                                    let copy = match this.inner.poll_ready(cx) {
                                        Poll::Ready(Ok(())) => hedge_copy(this.request, this.shape),
                                        _ => None,
                                    };
                                    match copy {
                                        Some(mut copy) => {
                                            if changes_resend(this.engine) {
                                                resend_copy(this.engine, &mut copy);
                                            }
                                            let timeout = this.engine.attempt_timeout(now);
                                            let span = lane_span(this.engine, || meta, attempt);
                                            let fut = in_span(&span, || this.inner.call(copy));
                                            race.start(attempt, fut, timeout, span);
                                        }
                                        None => this.engine.hedge_unsent(attempt),
                                    }
                                }
                                Hedge::Wait(delay) => {
                                    race.arm(Some(now + delay));
                                    continue;
                                }
                                Hedge::Skip => {}
                            }
                            race.arm(this.engine.hedge_due());
                            continue;
                        }
                        Event::Ended(attempt, end, ended) => (attempt, end, ended),
                    };
                    let result = match end {
                        LaneEnd::Done(result) => result.map_err(Into::into),
                        LaneEnd::TimedOut(after) => Err(timed_out(after)),
                    };
                    let wanted = body_to_inspect(this.engine, &meta, &result);
                    let result = match result {
                        Ok(response) if wanted > 0 => {
                            // Its body is read before it is decided: the
                            // race ends with it, the others cancelled.
                            this.engine.race_handover(attempt, &meta, now);
                            let (parts, body) = response.into_parts();
                            // Within what is left of its own timer, in
                            // its own span, as a lone attempt's.
                            let (at, after) = lane.window.unzip();
                            this.state.set(State::Inspecting {
                                inspect: Box::pin(Inspection {
                                    parts: Some(parts),
                                    body: Inspect::new(body, wanted),
                                    timer: at.map(tokio::time::sleep_until),
                                    after: after.unwrap_or_default(),
                                    span: lane.span.take(),
                                }),
                            });
                            continue;
                        }
                        result => result.map(|r| r.map(ResponseBody::new)),
                    };
                    let success = matches!(&result, Ok(r) if r.status().is_success());
                    if !success && !this.shape.matches(this.request.body()) {
                        this.engine.set_replayable(false);
                    }
                    let request = &*this.request;
                    this.engine.race_ended(attempt);
                    let decision = decide(
                        this.engine,
                        &meta,
                        &result,
                        None,
                        FailureKind::from_error,
                        || request.body().can_replay().err(),
                        lane.span.as_ref(),
                    );
                    match this.engine.race_settle(&meta, decision, now) {
                        Raced::Keep => {
                            race.arm(this.engine.hedge_due());
                            continue;
                        }
                        Raced::Done(decision) => {
                            match after_decision(decision, result, this.engine, this.pause, meta) {
                                Ok(next) => this.state.set(next),
                                Err(done) => return Poll::Ready(done),
                            }
                            continue;
                        }
                    }
                }
                StateProj::Refused { reason } => {
                    let reason = *reason;
                    let meta = RequestMeta::from_http(this.request);
                    return Poll::Ready(refused(this.engine, &meta, reason, None));
                }
                StateProj::Consulting { after } => {
                    let after = *after;
                    ready!(this.engine.poll_store_call(cx));
                    if after == After::Admit {
                        this.state.set(State::ready());
                        continue;
                    }
                    let meta = RequestMeta::from_http(this.request);
                    let now = Instant::now().into_std();
                    match this.engine.decide_after_store(&meta, now) {
                        Decision::Retry { delay, .. } => {
                            // The kept result stays through the wait.
                            pause(this.pause, delay, None);
                            this.state.set(State::Sleeping);
                            continue;
                        }
                        decision => {
                            // The attempt's result, kept before the call.
                            let Some(result) = take_kept(this.pause) else {
                                let reason = StopReason::StoreUnavailable;
                                return Poll::Ready(refused(this.engine, &meta, reason, None));
                            };
                            return Poll::Ready(finish(decision, this.engine, || meta, result));
                        }
                    }
                }
                StateProj::Ready { admitted, deadline } => {
                    let kept = &mut *this.pause;
                    let meta = RequestMeta::from_http(this.request);
                    if !*admitted {
                        match this.engine.admit(&meta, Instant::now().into_std()) {
                            Admission::Send => *admitted = true,
                            Admission::Wait { delay, .. } => {
                                pause(kept, delay, None);
                                this.state.set(State::Sleeping);
                                continue;
                            }
                            Admission::Fail(reason) => {
                                return Poll::Ready(refused(
                                    this.engine,
                                    &meta,
                                    reason,
                                    kept.take(),
                                ));
                            }
                            Admission::Consult => {
                                let next = State::Consulting {
                                    after: After::Admit,
                                };
                                this.state.set(next);
                                continue;
                            }
                        }
                    }
                    match this.inner.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(not_ready_for(this.engine, &meta, e.into())));
                        }
                        Poll::Pending => {
                            // Waiting for the inner service (a saturated
                            // limit, a full buffer) counts against the
                            // deadline.
                            if deadline.is_none() {
                                let now = Instant::now().into_std();
                                match this.engine.deadline_left(now) {
                                    Some(left) => {
                                        *deadline = Some(Box::pin(tokio::time::sleep(left)))
                                    }
                                    None => return Poll::Pending,
                                }
                            }
                            if let Some(timer) = deadline {
                                ready!(timer.as_mut().poll(cx));
                            }
                            this.engine.withdraw(&meta, StopReason::Deadline);
                            let kept = kept.take();
                            let reason = StopReason::Deadline;
                            return Poll::Ready(refused(this.engine, &meta, reason, kept));
                        }
                    }
                    let now = Instant::now().into_std();
                    let timeout = match attempt_window(
                        this.engine,
                        || RequestMeta::from_http(this.request),
                        now,
                    ) {
                        Ok(timeout) => timeout,
                        Err(reason) => {
                            return Poll::Ready(refused(this.engine, &meta, reason, kept.take()));
                        }
                    };
                    let mut copy = match B::try_replay_request(this.request) {
                        Ok(copy) => copy,
                        Err(committed) => {
                            let reason = committed_reason(committed);
                            this.engine.withdraw(&meta, reason);
                            return Poll::Ready(refused(this.engine, &meta, reason, kept.take()));
                        }
                    };
                    if !this.shape.matches(copy.body()) {
                        // Drained since the retry was decided: never send
                        // a shorter body.
                        let reason = StopReason::BodyNotReplayable;
                        this.engine.withdraw(&meta, reason);
                        return Poll::Ready(refused(this.engine, &meta, reason, kept.take()));
                    }
                    if changes_resend(this.engine) {
                        resend_copy(this.engine, &mut copy);
                    }
                    // Sent: the last result is no longer needed.
                    drop(take_kept(kept));
                    let request = &*this.request;
                    let state = if let Some(attempt) = this
                        .engine
                        .hedge_start(|| RequestMeta::from_http(request), now)
                    {
                        let due = this.engine.hedge_due();
                        let span =
                            lane_span(this.engine, || RequestMeta::from_http(request), attempt);
                        let fut = in_span(&span, || this.inner.call(copy));
                        State::racing(attempt, fut, timeout, due, span)
                    } else {
                        match attempt_span(this.engine, || RequestMeta::from_http(request)) {
                            None => State::start(this.inner.call(copy), timeout),
                            Some(span) => {
                                let fut = span.in_scope(|| this.inner.call(copy));
                                State::traced(fut, timeout, span)
                            }
                        }
                    };
                    this.state.set(state);
                    continue;
                }
            };

            let meta = RequestMeta::from_http(this.request);
            let (result, prefix) = match attempt {
                Attempt::Fresh(result, timer) => {
                    let wanted = body_to_inspect(this.engine, &meta, &result);
                    match result {
                        Ok(response) if wanted > 0 => {
                            let (parts, body) = response.into_parts();
                            let (at, after) = timer.unzip();
                            this.state.set(State::Inspecting {
                                inspect: Box::pin(Inspection {
                                    parts: Some(parts),
                                    body: Inspect::new(body, wanted),
                                    timer: at.map(tokio::time::sleep_until),
                                    after: after.unwrap_or_default(),
                                    span: span.take(),
                                }),
                            });
                            continue;
                        }
                        result => (result.map(|r| r.map(ResponseBody::new)), None),
                    }
                }
                Attempt::Inspected(response, prefix) => (Ok(response), Some(prefix)),
            };
            // A body whose copies share one stream, drained by this
            // attempt, cannot be sent again: known now, no wait is spent on
            // it. (Skipped for a 2xx, which is not retried unless a custom
            // classifier says so; the copy is checked again before any send.)
            let success = matches!(&result, Ok(r) if r.status().is_success());
            if !success && !this.shape.matches(this.request.body()) {
                this.engine.set_replayable(false);
            }
            let request = &*this.request;
            // The attempt's span closes once the engine has decided in it
            // (at the end of this turn of the loop).
            let decision = decide(
                this.engine,
                &meta,
                &result,
                prefix.as_deref(),
                FailureKind::from_error,
                // Asked only when a retry is otherwise allowed.
                || request.body().can_replay().err(),
                span.as_ref(),
            );
            // (The same as `after_decision`, written out: the success path
            // moves its response once, into the caller's result.)
            match decision {
                Decision::Retry { delay, .. } => {
                    // Kept through the wait, in case the retry is refused.
                    pause(this.pause, delay, Some(result));
                    this.state.set(State::Sleeping);
                    continue;
                }
                Decision::Consult => {
                    // Kept through the store call (and the wait after it).
                    keep(this.pause, result);
                    this.state.set(State::Consulting {
                        after: After::Decide,
                    });
                    continue;
                }
                _ => return Poll::Ready(finish(decision, this.engine, || meta, result)),
            }
        }
    }
}

/// The caller's result.
type Done<R> = Result<Response<ResponseBody<R>>, Error>;

/// What follows `decision` on an attempt's `result`: the next state (a
/// wait, or a store call, `result` kept through it in case the retry is
/// refused), or the caller's result. (For a hedged round's end; the lone
/// attempt's path writes it out.)
fn after_decision<F, R: Body + Send + 'static>(
    decision: Decision,
    result: Result<Response<ResponseBody<R>>, BoxError>,
    engine: &mut RetryState,
    kept: &mut Kept<Response<ResponseBody<R>>>,
    meta: RequestMeta<'_>,
) -> Result<State<F, R>, Done<R>>
where
    R::Error: Send,
{
    match decision {
        Decision::Retry { delay, .. } => {
            pause(kept, delay, Some(result));
            Ok(State::Sleeping)
        }
        Decision::Consult => {
            keep(kept, result);
            Ok(State::Consulting {
                after: After::Decide,
            })
        }
        _ => Err(finish(decision, engine, || meta, result)),
    }
}

/// A copy of `request` for a hedge ([`RetryBody::try_hedge_request`]), if
/// one can be sent whole: its body still says what it said at the first
/// send.
fn hedge_copy<B: Body + RetryBody>(request: &Request<B>, shape: &BodyShape) -> Option<Request<B>> {
    let copy = B::try_hedge_request(request).ok()?;
    shape.matches(copy.body()).then_some(copy)
}

/// `call`, inside `span` if there is one.
fn in_span<T>(span: &Option<AttemptSpan>, call: impl FnOnce() -> T) -> T {
    match span {
        Some(span) => span.in_scope(call),
        None => call(),
    }
}

/// The policy's attempt header and `before_retry` hook on a resend's copy.
fn resend_copy<B>(engine: &RetryState, copy: &mut Request<B>) {
    let mut headers = std::mem::take(copy.headers_mut());
    let mut resend = ResendRequest::with_uri(copy.method(), copy.uri(), &mut headers);
    prepare_resend(engine, &mut resend);
    *copy.headers_mut() = headers;
}
