//! The `reqwest` adapter: [`RetryMiddleware`] for `reqwest-middleware`.
//!
//! Each attempt sends `Request::try_clone()` of the request down the rest
//! of the middleware chain. A request whose body cannot be cloned (a
//! stream: `Body::wrap_stream`, `Body::wrap`) has its body kept in a
//! [`ReplayBody`](crate::replay::ReplayBody) of the policy's
//! [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer) (64 KiB by
//! default) as it is sent, and each attempt sends a copy from it; a longer
//! body is sent whole once and the request is committed: a transient
//! failure is not retried, its report says
//! [`StopReason::BodyCommitted`](crate::StopReason::BodyCommitted)
//! (`body_too_large`). With `replay_buffer(0)` a stream is sent once, as it
//! is, and its report says
//! [`StopReason::BodyNotReplayable`](crate::StopReason::BodyNotReplayable).
//! A stream known to be empty or complete needs no buffer: one that reports
//! `is_end_stream` (clients that wrap every body as a stream, octocrab's
//! reqwest connector among them, send even "no body" so), one whose exact
//! size is 0, or any body under `Content-Length: 0`. It is replaced by an
//! empty body, which every attempt sends. The decision after each attempt
//! is the shared [engine](crate::engine)'s.
//!
//! Response bodies that fail while read are resumed (with
//! [`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies)) when the
//! request is sent with [`ResumeExt::send_resumable`](crate::resume::ResumeExt).
//!
//! Each attempt has one timer, from its send (`attempt_timeout`, clamped to
//! what is left of the `deadline`), which also covers reading the start of
//! the body for the classifier (GitHub's 403s): a body that stalls ends the
//! attempt as an attempt timeout. A retry that was decided and then refused
//! during its wait (an open breaker, a server quota hold, the local rate
//! limit, the deadline) keeps the last response, as a refusal right after
//! the attempt would.
//!
//! When the middleware gives up, the error is
//! `reqwest_middleware::Error::Middleware` wrapping an
//! [`http_resilience::Error`](crate::Error), which downcasts. Every response
//! answers [`ResponseExt::retry_report`](crate::ResponseExt::retry_report)
//! (its [`RetryReport`](crate::RetryReport) is attached to
//! `Response::extensions()` whenever anything happened).
//!
//! ```
//! use http_resilience::{RetryMiddleware, RetryPolicy};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryMiddleware::new(RetryPolicy::default()))
//!     .build();
//! # let _ = client;
//! ```

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use std::future::Future;
use std::pin::Pin;

use super::body::{Inspect, ResponseBody, RetryBody, known_empty};
use super::hedge::{Event, LaneEnd, Race};
use super::replay::{Committed, ReplayBody};
use super::span::{AttemptSpan, instrumented};
use super::{
    HttpRequest, HttpResponse, Kept, attempt_span, attempt_window, body_to_inspect, changes_resend,
    decide, finish, keep, lane_span, pause, prepare_resend, refused, start, take_kept,
};
use crate::classify::{FailureKind, RequestMeta};
use crate::endpoint::EndpointPolicies;
use crate::engine::{Admission, Decision, Hedge, Raced, RetryState, committed as committed_reason};
use crate::error::{AttemptTimedOut, BoxError};
#[cfg(doc)]
use crate::policy::RetryPolicy;
use crate::report::StopReason;
use crate::resend::ResendRequest;

/// A `reqwest-middleware` middleware that retries under a [`RetryPolicy`],
/// or under per-endpoint policies ([`EndpointPolicies`]).
///
/// A [`RetryPolicy`] put in a request's extensions
/// (`RequestBuilder::with_extension`) overrides both for that request:
///
/// ```
/// use http_resilience::{EndpointPolicies, RetryMiddleware, RetryPolicy};
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(RetryMiddleware::new(EndpointPolicies::well_known()))
///     .build();
/// let request = client
///     .get("https://api.github.com/rate_limit")
///     .with_extension(RetryPolicy::disabled());
/// # let _ = request;
/// ```
#[derive(Debug, Clone, Default)]
pub struct RetryMiddleware {
    policies: EndpointPolicies,
}

impl RetryMiddleware {
    /// A middleware that retries under `policies`: a single
    /// [`RetryPolicy`], or an [`EndpointPolicies`] set.
    pub fn new(policies: impl Into<EndpointPolicies>) -> Self {
        RetryMiddleware {
            policies: policies.into(),
        }
    }
    /// The policies.
    pub fn policies(&self) -> &EndpointPolicies {
        &self.policies
    }
}

impl HttpResponse for Response {
    fn status(&self) -> StatusCode {
        self.status()
    }
    fn headers(&self) -> &HeaderMap {
        self.headers()
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

/// The request as the engine and classifiers see it: a borrowed view,
/// with the port the URL gives or its scheme's default.
impl HttpRequest for Request {
    fn describe(&self) -> RequestMeta<'_> {
        let url = self.url();
        RequestMeta::new(
            self.method(),
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path(),
            self.headers(),
        )
        .with_port(url.port_or_known_default().unwrap_or(0))
    }
    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // The request's description borrows it, so it is made again after
        // each await rather than kept across it (this future is boxed on
        // every request, and its size is paid each time): once before the
        // first send (policy, engine, admission), once after each attempt.
        // When the next attempt starts (one clock read per attempt).
        let mut starts = Instant::now().into_std();
        let (mut engine, mut admission) = start(
            &mut request,
            |_, meta| self.policies.select_with(extensions, meta).clone(),
            starts,
        );
        // Set once a streaming body has been sent away whole (with
        // `replay_buffer(0)`): `request` is then a body-less stand-in with
        // the same method, URL and headers (what the engine reads), and no
        // retry follows.
        let mut streamed = false;
        // A streaming body kept in its replay buffer; `request` is then
        // body-less, and each attempt sends a copy. Boxed: one word in this
        // (boxed) future, `None` for every body that can be cloned.
        let mut replay: Option<Box<ReplayBody<reqwest::Body>>> = None;
        // The wait before the next attempt, and the last result kept
        // through it (a refusal before the retry is sent hands it over):
        // boxed, so this (boxed) future stays small.
        let mut kept: Kept<Response> = None;
        loop {
            // Load protection in front of every attempt: wait, or refuse.
            // Only the boxed sleep lives across the await, which keeps this
            // (boxed) future small enough for the allocator's fast path.
            loop {
                match admission {
                    Admission::Send => break,
                    Admission::Wait { delay, .. } => pause(&mut kept, delay, None).sleep().await,
                    Admission::Fail(reason) => {
                        return refused(&mut engine, &request.describe(), reason, kept)
                            .map_err(reqwest_middleware::Error::middleware);
                    }
                    // A turn under a limit shared by many processes: the
                    // store's call (bounded by its own timeout), then ask
                    // again.
                    Admission::Consult => {
                        engine.store_call().await;
                    }
                }
                starts = Instant::now().into_std();
                admission = engine.admit(&request.describe(), starts);
            }
            let mut timeout = match attempt_window(&mut engine, || request.describe(), starts) {
                Ok(timeout) => timeout,
                Err(reason) => {
                    return refused(&mut engine, &request.describe(), reason, kept)
                        .map_err(reqwest_middleware::Error::middleware);
                }
            };
            // (A function of its own: nothing of it lives in this future.)
            let attempt = match next_attempt(&mut request, &mut replay, &mut engine, &mut streamed)
            {
                Ok(attempt) => attempt,
                // Read past its buffer since the retry was decided (it
                // cannot be: the decision cut the earlier copy off).
                Err(committed) => {
                    let meta = request.describe();
                    let reason = committed_reason(committed);
                    engine.withdraw(&meta, reason);
                    return refused(&mut engine, &meta, reason, kept)
                        .map_err(reqwest_middleware::Error::middleware);
                }
            };
            // Sent: the last result is no longer needed.
            drop(take_kept(&mut kept));
            // A hedged request: its attempts side by side, in a future of
            // their own (boxed: this one does not grow), until one is
            // decided, or one's body must be read first.
            let mut raced = None;
            let mut span = None;
            let mut result = if let Some(first) = engine.hedge_start(|| request.describe(), starts)
            {
                let race = Race::new();
                let ends = hedged(
                    race,
                    &mut engine,
                    &request,
                    &replay,
                    attempt,
                    first,
                    timeout,
                    &next,
                    extensions,
                );
                match Box::pin(ends).await {
                    RaceEnd::Decided(decision, result) => {
                        raced = Some(decision);
                        result
                    }
                    RaceEnd::Handover(result, window, lane) => {
                        // Its body is read within its own timer, and
                        // decided in its own span.
                        if let Some((at, after)) = window {
                            starts = (at - after).into_std();
                            timeout = Some(after);
                        }
                        span = lane.map(Box::new);
                        result
                    }
                }
            } else {
                // The attempt's span, if a subscriber wants one: the send runs
                // in it (boxed then, so that this future does not grow).
                span = attempt_span(&engine, || request.describe()).map(Box::new);
                let send = next.clone().run(attempt, extensions);
                match span.as_deref() {
                    None => match timeout {
                        None => send.await.map_err(|e| into_box(e, &engine)),
                        Some(after) => match Box::pin(tokio::time::timeout(after, send)).await {
                            Ok(result) => result.map_err(|e| into_box(e, &engine)),
                            Err(_elapsed) => Err(timed_out(after)),
                        },
                    },
                    traced => {
                        match Box::pin(instrumented(traced, send_within(send, timeout))).await {
                            Ok(result) => result.map_err(|e| into_box(e, &engine)),
                            Err(after) => Err(timed_out(after)),
                        }
                    }
                }
            };

            // One description after the attempt, for the decision; a second
            // only when a classifier reads the start of the body first.
            let decided = if let Some(decision) = raced {
                Ok(decision)
            } else {
                let meta = request.describe();
                match body_to_inspect(&engine, &meta, &result) {
                    0 => Ok(decide(
                        &mut engine,
                        &meta,
                        &result,
                        None,
                        kind_of,
                        || committed(&replay),
                        span.as_deref(),
                    )),
                    wanted => Err(wanted),
                }
            };
            let decision = match decided {
                Ok(decision) => decision,
                Err(wanted) => {
                    let mut prefix = None;
                    if let Ok(response) = result {
                        // The attempt's timer covers reading the body too:
                        // it ends when the attempt's timeout, counted from
                        // the send, does.
                        let read =
                            Box::pin(inspect_within(response, wanted, starts, timeout)).await;
                        result = read.map(|(start, response)| {
                            prefix = Some(start);
                            response
                        });
                    }
                    let meta = request.describe();
                    let prefix = prefix.as_deref();
                    decide(
                        &mut engine,
                        &meta,
                        &result,
                        prefix,
                        kind_of,
                        || committed(&replay),
                        span.as_deref(),
                    )
                }
            };
            // The attempt's span closes once the engine has decided in it.
            if let Some(span) = span {
                drop(span);
            }
            let (delay, last) = match decision {
                // The engine never retries a request sent whole; the guard
                // makes sure the stand-in is never sent.
                Decision::Retry { delay, .. } if !streamed => (delay, Some(result)),
                // The retry's payment from a budget shared by many
                // processes: the store's call, the result kept meanwhile
                // (in the pause's box: this future stays small).
                Decision::Consult if !streamed => {
                    keep(&mut kept, result);
                    engine.store_call().await;
                    let now = Instant::now().into_std();
                    match engine.decide_after_store(&request.describe(), now) {
                        Decision::Retry { delay, .. } => (delay, None),
                        decision => {
                            let meta = request.describe();
                            let done = match take_kept(&mut kept) {
                                Some(result) => finish(decision, &mut engine, || meta, result),
                                None => {
                                    refused(&mut engine, &meta, StopReason::StoreUnavailable, None)
                                }
                            };
                            return done.map_err(reqwest_middleware::Error::middleware);
                        }
                    }
                }
                decision => {
                    return finish(decision, &mut engine, || request.describe(), result)
                        .map_err(reqwest_middleware::Error::middleware);
                }
            };
            pause(&mut kept, delay, last).sleep().await;
            starts = Instant::now().into_std();
            admission = engine.admit(&request.describe(), starts);
        }
    }
}

/// How a hedged round ended: decided (the others cancelled, unless the
/// decision is a retry with none left in flight), or with a response
/// whose body must be read before it is decided (the others cancelled).
enum RaceEnd {
    Decided(Decision, Result<Response, BoxError>),
    /// With the attempt's timer (deadline, length), if it had one.
    Handover(
        Result<Response, BoxError>,
        Option<(Instant, std::time::Duration)>,
        Option<AttemptSpan>,
    ),
}

/// One attempt of a hedged round: a send through the rest of the chain,
/// with its own copy of the request's extensions (two attempts in flight
/// cannot share the caller's).
type Lane<'a> = Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// Drives a hedged round (see `engine/hedge.rs`): `first`, attempt number
/// `attempt`, is sent at once; each hedge the engine lets go is another
/// copy (a clone, or a fork of the replay buffer); each attempt's end is
/// decided as any attempt's, and the engine says whether the round goes
/// on. The losers are dropped with the race.
#[allow(clippy::too_many_arguments)]
async fn hedged<'a>(
    mut race: Race<Lane<'a>>,
    engine: &mut RetryState,
    request: &Request,
    replay: &Option<Box<ReplayBody<reqwest::Body>>>,
    first: Request,
    attempt: u32,
    timeout: Option<std::time::Duration>,
    next: &Next<'a>,
    extensions: &Extensions,
) -> RaceEnd {
    let lane = |copy: Request| -> Lane<'a> {
        let next = next.clone();
        let mut extensions = extensions.clone();
        Box::pin(async move { next.run(copy, &mut extensions).await })
    };
    let span = lane_span(engine, || request.describe(), attempt);
    race.start(attempt, lane(first), timeout, span);
    race.arm(engine.hedge_due());
    loop {
        let event = std::future::poll_fn(|cx| race.poll_next(cx)).await;
        let now = Instant::now().into_std();
        let (attempt, end, ended) = match event {
            Event::Due => {
                match engine.hedge_now(&request.describe(), now) {
                    Hedge::Send { attempt } => match hedge_copy(request, replay) {
                        Some(mut copy) => {
                            if changes_resend(engine) {
                                resend_copy(engine, &mut copy);
                            }
                            let span = lane_span(engine, || request.describe(), attempt);
                            race.start(attempt, lane(copy), engine.attempt_timeout(now), span);
                        }
                        None => engine.hedge_unsent(attempt),
                    },
                    Hedge::Wait(delay) => {
                        race.arm(Some(now + delay));
                        continue;
                    }
                    Hedge::Skip => {}
                }
                race.arm(engine.hedge_due());
                continue;
            }
            Event::Ended(attempt, end, ended) => (attempt, end, ended),
        };
        let result = match end {
            LaneEnd::Done(result) => result.map_err(|e| into_box(e, engine)),
            LaneEnd::TimedOut(after) => Err(timed_out(after)),
        };
        let meta = request.describe();
        if body_to_inspect(engine, &meta, &result) > 0 {
            engine.race_handover(attempt, &meta, now);
            return RaceEnd::Handover(result, ended.window, ended.span);
        }
        engine.race_ended(attempt);
        let decision = decide(
            engine,
            &meta,
            &result,
            None,
            kind_of,
            || committed(replay),
            ended.span.as_ref(),
        );
        match engine.race_settle(&meta, decision, now) {
            Raced::Keep => race.arm(engine.hedge_due()),
            Raced::Done(decision) => return RaceEnd::Decided(decision, result),
        }
    }
}

/// A copy of `request` for a hedge: a clone, or one with a fork of the
/// streaming body's replay buffer (the copies read side by side).
fn hedge_copy(
    request: &Request,
    replay: &Option<Box<ReplayBody<reqwest::Body>>>,
) -> Option<Request> {
    match replay {
        None => request.try_clone(),
        Some(body) => with_body(request, || body.fork()).ok(),
    }
}

/// The policy's attempt header and `before_retry` hook on a resend's copy.
fn resend_copy(engine: &RetryState, attempt: &mut Request) {
    let mut headers = std::mem::take(attempt.headers_mut());
    let mut resend =
        ResendRequest::with_url(attempt.method(), attempt.url().as_str(), &mut headers);
    prepare_resend(engine, &mut resend);
    *attempt.headers_mut() = headers;
}

/// Turns the middleware's error into a boxed error that still downcasts to
/// [`http_resilience::Error`](crate::Error) when the middleware gave up
/// (`reqwest_middleware::Error::Middleware` holds it inside an
/// `anyhow::Error`, which a plain `.into()` boxes as it is). Any other
/// error is boxed as it is.
///
/// ```
/// # async fn demo(client: reqwest_middleware::ClientWithMiddleware) {
/// use http_resilience::middleware::into_box_error;
///
/// let result = client.get("http://127.0.0.1:1/").send().await.map_err(into_box_error);
/// if let Err(boxed) = result {
///     match boxed.downcast::<http_resilience::Error>() {
///         Ok(e) => println!("{} after {} attempts", e.code(), e.report().attempts()),
///         Err(other) => println!("{other}"),
///     }
/// }
/// # }
/// ```
pub fn into_box_error(error: reqwest_middleware::Error) -> BoxError {
    crate::error::Error::boxed_from_middleware(error)
}

/// The request for the next attempt: a clone of `request`; or, for a
/// streaming body, a copy from its replay buffer (made at the first
/// attempt, `request` then body-less); or, with no buffer
/// (`replay_buffer(0)`), the original itself, once (`request` then a
/// body-less stand-in with the same method, URL and headers, what the
/// engine reads, and `streamed` set: no retry follows).
///
/// A resend then gets the policy's attempt header and `before_retry` hook.
/// (Here rather than in the boxed future: a local borrowed there would
/// keep its storage across the send's await.)
fn next_attempt(
    request: &mut Request,
    replay: &mut Option<Box<ReplayBody<reqwest::Body>>>,
    engine: &mut RetryState,
    streamed: &mut bool,
) -> Result<Request, Committed> {
    let mut attempt = copy_for_attempt(request, replay, engine, streamed)?;
    if changes_resend(engine) {
        resend_copy(engine, &mut attempt);
    }
    Ok(attempt)
}

/// The copy [`next_attempt`] sends.
fn copy_for_attempt(
    request: &mut Request,
    replay: &mut Option<Box<ReplayBody<reqwest::Body>>>,
    engine: &mut RetryState,
    streamed: &mut bool,
) -> Result<Request, Committed> {
    if let Some(body) = replay {
        return with_body(request, || body.replay());
    }
    if let Some(copy) = replayable_copy(request) {
        return Ok(copy);
    }
    match (engine.policy().replay_buffer(), request.body_mut().take()) {
        (limit, Some(body)) if limit > 0 => {
            let body = replay.insert(Box::new(ReplayBody::with_limit(body, limit)));
            with_body(request, || body.replay())
        }
        (_, body) => {
            *request.body_mut() = body;
            engine.set_replayable(false);
            *streamed = true;
            let mut stand_in = Request::new(request.method().clone(), request.url().clone());
            *stand_in.headers_mut() = request.headers().clone();
            Ok(std::mem::replace(request, stand_in))
        }
    }
}

/// A copy of the body-less `request` for the next attempt, with the copy
/// of its body that `body` makes from the replay buffer (a retry's
/// `replay`, a hedge's `fork`).
fn with_body(
    request: &Request,
    body: impl FnOnce() -> Result<ReplayBody<reqwest::Body>, Committed>,
) -> Result<Request, Committed> {
    let mut copy = request.try_clone().ok_or(Committed::Failed)?;
    *copy.body_mut() = Some(reqwest::Body::wrap(body()?));
    Ok(copy)
}

/// Whether the streaming body kept in `replay` is committed (asked when a
/// retry is otherwise allowed; it cuts the last attempt's copy off).
fn committed(replay: &Option<Box<ReplayBody<reqwest::Body>>>) -> Option<Committed> {
    replay.as_ref().and_then(|body| body.can_replay().err())
}

/// A copy of `request` for the next attempt, if its body can be sent again:
/// bytes, no body, or a body known to be empty or complete (a stream that
/// has already ended, as clients that wrap every body as a stream send for
/// none; `Content-Length: 0`), which is then replaced by an empty one.
/// `None`: a stream that can be sent only once.
fn replayable_copy(request: &mut Request) -> Option<Request> {
    if let Some(copy) = request.try_clone() {
        return Some(copy);
    }
    if !request
        .body()
        .is_some_and(|body| known_empty(body, request.headers()))
    {
        return None;
    }
    *request.body_mut() = Some(reqwest::Body::from(Bytes::new()));
    request.try_clone()
}

/// The attempt's send, within its `timeout` (`Err` with it when it ran
/// out): the traced form, boxed with its span.
async fn send_within<F>(
    send: F,
    timeout: Option<std::time::Duration>,
) -> Result<reqwest_middleware::Result<Response>, std::time::Duration>
where
    F: std::future::Future<Output = reqwest_middleware::Result<Response>>,
{
    match timeout {
        None => Ok(send.await),
        Some(after) => tokio::time::timeout(after, send)
            .await
            .map_err(|_elapsed| after),
    }
}

/// [`inspect`], within what is left of the attempt's `timeout` (counted
/// from `starts`, the send): past it, an attempt timeout.
async fn inspect_within(
    response: Response,
    limit: usize,
    starts: std::time::Instant,
    timeout: Option<std::time::Duration>,
) -> Result<(Vec<u8>, Response), BoxError> {
    match timeout {
        None => Ok(inspect(response, limit).await),
        Some(after) => {
            let until = Instant::from_std(starts) + after;
            tokio::time::timeout_at(until, inspect(response, limit))
                .await
                .map_err(|_elapsed| timed_out(after))
        }
    }
}

fn timed_out(after: std::time::Duration) -> BoxError {
    Box::new(AttemptTimedOut { after })
}

/// Reads the start of a response's body for the classifier, and rebuilds
/// the response so that the caller still reads the whole body (and the
/// same URL, status, headers and extensions).
pub(crate) async fn inspect(response: Response, limit: usize) -> (Vec<u8>, Response) {
    use reqwest::ResponseBuilderExt;

    let url = response.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    let (prefix, replay) = Inspect::new(body, limit).await;
    // `reqwest` keeps the URL in a private extension that only its
    // response builder can set.
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
    let body = reqwest::Body::wrap(ResponseBody::replay(replay));
    (
        prefix,
        Response::from(http::Response::from_parts(parts, body)),
    )
}

pub(crate) fn into_box(error: reqwest_middleware::Error, engine: &RetryState) -> BoxError {
    match error {
        reqwest_middleware::Error::Reqwest(e) if engine.policy().hide_paths() => {
            Box::new(e.without_url())
        }
        reqwest_middleware::Error::Reqwest(mut e) => {
            // reqwest prints the URL in its errors: user info (a
            // `Request` built directly keeps it in the URL) and the query
            // string (`?key=`) can hold credentials, so both go; the path
            // stays.
            if let Some(url) = e.url_mut() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
            }
            Box::new(e)
        }
        reqwest_middleware::Error::Middleware(e) => e.into(),
    }
}

/// Maps a reqwest error: its builder and redirect flags first; then the
/// source chain's connect-phase verdict (`Tls` or `Connect`, from
/// hyper-util's typed error, as through the tower layer); then reqwest's
/// flags for what only reqwest knows (its own `timeout()` and
/// `connect_timeout()` fire as a private type); then the chain. Never from
/// the error's text, which ends with the URL.
pub(crate) fn kind_of(error: &(dyn std::error::Error + 'static)) -> FailureKind {
    let Some(e) = error.downcast_ref::<reqwest::Error>() else {
        return FailureKind::from_error(error);
    };
    if e.is_builder() {
        return FailureKind::InvalidRequest;
    }
    if e.is_redirect() {
        return FailureKind::Redirect;
    }
    match FailureKind::from_error(e) {
        chain @ (FailureKind::Tls | FailureKind::Connect) => chain,
        // reqwest's connect timeout: the request was not sent.
        _ if e.is_connect() => FailureKind::Connect,
        _ if e.is_timeout() => FailureKind::Timeout,
        _ if e.is_decode() => FailureKind::Decode,
        FailureKind::Other if e.is_body() => FailureKind::Body,
        chain => chain,
    }
}
