//! The clients under test: the reqwest middleware and the tower layer over
//! hyper-util's client, behind one `send` so that every behaviour runs
//! through both.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_resilience::{
    DelaySource, EndpointPolicies, Error, FailureKind, Jitter, ResponseExt, RetryLayer,
    RetryMiddleware, RetryPolicy, RetryPolicyBuilder, RetryReport,
};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::fixed_now;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Via {
    Reqwest,
    Tower,
}
pub const BOTH: [Via; 2] = [Via::Reqwest, Via::Tower];

/// A request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
    /// Send the body as a stream of chunks of unknown length (chunked
    /// transfer encoding) that cannot be cloned ([`OnceBody`]). reqwest:
    /// `Body::wrap` of it, which the middleware keeps in its replay buffer
    /// (`replay_buffer`). tower: through `RetryLayer::replay_bodies()`,
    /// which wraps it in the crate's `ReplayBody` with the same limit.
    pub streaming: bool,
    /// A per-request policy, put in the request's extensions.
    pub policy: Option<RetryPolicy>,
    /// The body's clones share one stream, as octocrab's `OctoBody` does
    /// (an `Arc` around one body): see [`ReplayBody::shared`]. tower: the
    /// layer's copy for a retry is then drained by the first attempt.
    /// reqwest: sent as `Body::wrap` of it, as octocrab's reqwest connector
    /// sends every body (a stream, which `try_clone` cannot copy; an empty
    /// one reports `is_end_stream`).
    pub shared: bool,
}

pub fn get() -> Req {
    Req {
        method: Method::GET,
        headers: vec![],
        body: "",
        streaming: false,
        policy: None,
        shared: false,
    }
}
pub fn post() -> Req {
    Req {
        method: Method::POST,
        body: "payload",
        ..get()
    }
}
pub fn keyed_post() -> Req {
    Req {
        headers: vec![("idempotency-key", "key-123")],
        ..post()
    }
}

/// A request body made of chunks, `Clone` (a clone replays from the first
/// chunk). `streaming`: no length up front, so it goes out chunked; else an
/// exact length (Content-Length). Every clone shares the chunks, so
/// [`ReplayBody::copies`] counts the live copies.
///
/// [`ReplayBody::shared`] makes one whose clones also share the read
/// position, as octocrab's `OctoBody` (`Arc<RwLock<BoxBody>>`, a shallow
/// `Clone`): a clone taken before the first attempt is drained by it.
#[derive(Clone, Debug)]
pub struct ReplayBody {
    chunks: Arc<[Bytes]>,
    next: usize,
    streaming: bool,
    /// The read position every clone shares, for a shared body.
    cursor: Option<Arc<AtomicUsize>>,
}

impl ReplayBody {
    pub fn new(text: &str, streaming: bool) -> ReplayBody {
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        let chunks: Vec<Bytes> = if streaming && bytes.len() > 2 {
            // Three chunks, so it is a stream in fact and not only in name.
            let a = bytes.len() / 3;
            vec![
                bytes.slice(..a),
                bytes.slice(a..2 * a),
                bytes.slice(2 * a..),
            ]
        } else if bytes.is_empty() {
            vec![]
        } else {
            vec![bytes]
        };
        ReplayBody {
            chunks: chunks.into(),
            next: 0,
            streaming,
            cursor: None,
        }
    }
    /// The same body, but its clones share one stream (as `OctoBody`):
    /// what one copy reads, no copy can read again. Its `size_hint` and
    /// `is_end_stream` tell what is left, as `OctoBody` forwards its inner
    /// body's.
    pub fn shared(self) -> ReplayBody {
        ReplayBody {
            cursor: Some(Arc::new(AtomicUsize::new(self.next))),
            ..self
        }
    }
    fn position(&self) -> usize {
        match &self.cursor {
            Some(cursor) => cursor.load(Ordering::SeqCst),
            None => self.next,
        }
    }
    /// Live copies of this body (the original and its clones).
    pub fn copies(&self) -> usize {
        Arc::strong_count(&self.chunks)
    }
    fn remaining(&self) -> u64 {
        self.chunks[self.position().min(self.chunks.len())..]
            .iter()
            .map(|c| c.len() as u64)
            .sum()
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let i = match &self.cursor {
            Some(cursor) => cursor.fetch_add(1, Ordering::SeqCst),
            None => self.next,
        };
        match self.chunks.get(i).cloned() {
            Some(chunk) => {
                self.next = i + 1;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        !self.streaming && self.position() >= self.chunks.len()
    }
    fn size_hint(&self) -> SizeHint {
        if self.streaming {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.remaining())
        }
    }
}

/// A request body that can be read only once: chunks of unknown length,
/// not `Clone` (a stream from a file or a socket). Through both adapters it
/// is sent again only from the replay buffer.
#[derive(Debug)]
pub struct OnceBody {
    chunks: std::collections::VecDeque<Bytes>,
}

impl OnceBody {
    /// `text` in three chunks (as [`ReplayBody::new`] cuts it).
    pub fn new(text: &str) -> OnceBody {
        OnceBody::from_bytes(text.as_bytes(), (text.len() / 3).max(1))
    }
    /// `bytes` in chunks of `chunk`.
    pub fn from_bytes(bytes: &[u8], chunk: usize) -> OnceBody {
        OnceBody {
            chunks: bytes
                .chunks(chunk.max(1))
                .map(Bytes::copy_from_slice)
                .collect(),
        }
    }
}

impl Body for OnceBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// hyper-util's client for the crate's `ReplayBody` around any body `B`:
/// what the tower layer's `replay_bodies()` mode sends through.
pub fn hyper_stream_client<B>()
-> HyperClient<hyper_util::client::legacy::connect::HttpConnector, StreamBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<http_resilience::BoxError>,
{
    HyperClient::builder(TokioExecutor::new()).build_http::<StreamBody<B>>()
}

/// The crate's replay buffer around a request body.
pub type StreamBody<B> = http_resilience::replay::ReplayBody<B>;

/// What came back, whichever the adapter.
#[derive(Debug)]
pub struct Got {
    pub status: Option<u16>,
    pub body: Option<String>,
    /// Reading the returned response's body failed (after the adapter had
    /// handed the response over): the error, as text.
    pub body_error: Option<String>,
    /// That error's kind, by `FailureKind::from_error`.
    pub body_failure: Option<FailureKind>,
    pub report: RetryReport,
    pub code: Option<&'static str>,
    pub error: Option<Error>,
    pub elapsed: Duration,
}

impl Got {
    fn ok<E>(status: u16, body: Result<String, E>, report: RetryReport) -> Got
    where
        E: std::error::Error + 'static,
    {
        let (body, body_error, body_failure) = match body {
            Ok(b) => (Some(b), None, None),
            Err(e) => (
                None,
                Some(format!("{e:?}")),
                Some(FailureKind::from_error(&e)),
            ),
        };
        Got {
            status: Some(status),
            body,
            body_error,
            body_failure,
            report,
            code: None,
            error: None,
            elapsed: Duration::ZERO,
        }
    }

    /// `body`: the last response's, taken out of the error.
    fn failed(error: Error, body: Option<String>) -> Got {
        Got {
            status: None,
            body,
            body_error: None,
            body_failure: None,
            report: error.report().clone(),
            code: Some(error.code()),
            error: Some(error),
            elapsed: Duration::ZERO,
        }
    }

    pub fn waits(&self) -> Vec<(Duration, DelaySource)> {
        self.report
            .history()
            .iter()
            .filter_map(|r| Some((r.delay()?, r.delay_source()?)))
            .collect()
    }
}

/// A deterministic base policy: no jitter, 100 ms doubling to 1 s, and the
/// fixed wall clock the server writes its dates with.
pub fn base() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_secs(1))
        .jitter(Jitter::None)
        .wall_clock(fixed_now)
}

/// [`base`] with no retries and a circuit breaker that opens after
/// `failures` failures in a row, for `open`.
pub fn breaker_policy(failures: u32, open: Duration) -> RetryPolicy {
    base()
        .max_retries(0)
        .circuit_breaker(
            http_resilience::CircuitBreaker::builder()
                .consecutive_failures(failures)
                .break_duration(open)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// Sends `req` through `via` under `policy` (a policy or an endpoint set).
pub async fn send(via: Via, policy: impl Into<EndpointPolicies>, url: &str, req: &Req) -> Got {
    Client::new(via, policy).send(url, req).await
}

pub type Hyper = HyperClient<hyper_util::client::legacy::connect::HttpConnector, ReplayBody>;

/// hyper-util's client, as the tower adapter's tests use it.
pub fn hyper_client() -> Hyper {
    HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody>()
}

/// Any client stack under the tower layer (see `support::net`).
pub type TowerService = tower::util::BoxCloneSyncService<
    http::Request<ReplayBody>,
    http::Response<hyper::body::Incoming>,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// One client through `via`, to send many requests through the same
/// middleware or layer (and so the same load-protection state). Cheap to
/// clone: clones share the connection pool.
#[derive(Clone)]
pub enum Client {
    Reqwest(reqwest_middleware::ClientWithMiddleware),
    Tower(http_resilience::Retry<Hyper>),
    /// The tower layer over another client stack.
    Custom(http_resilience::Retry<TowerService>),
}

impl Client {
    pub fn new(via: Via, policy: impl Into<EndpointPolicies>) -> Client {
        let policy = policy.into();
        match via {
            Via::Reqwest => Client::Reqwest(
                reqwest_middleware::ClientBuilder::new(
                    reqwest::Client::builder().no_proxy().build().unwrap(),
                )
                .with(RetryMiddleware::new(policy))
                .build(),
            ),
            Via::Tower => Client::Tower(RetryLayer::new(policy).layer(hyper_client())),
        }
    }

    pub async fn send(&self, url: &str, req: &Req) -> Got {
        let start = Instant::now();
        let mut got = match self {
            Client::Reqwest(client) => send_reqwest(client, url, req).await,
            // A body that cannot be cloned: through the layer's
            // `replay_bodies()` mode, under the same policies (and so the
            // same load-protection state).
            Client::Tower(svc) if req.streaming && !req.shared => {
                let svc = RetryLayer::new(svc.policies().clone())
                    .replay_bodies()
                    .layer(hyper_stream_client::<OnceBody>());
                sendable(send_tower_stream(svc, url, req)).await
            }
            Client::Tower(svc) => sendable(send_tower(svc.clone(), url, req)).await,
            Client::Custom(svc) => sendable(send_tower(svc.clone(), url, req)).await,
        };
        got.elapsed = start.elapsed();
        got
    }
}

/// `future`, boxed as `Send` where its service type is concrete: through
/// the generic `call_tower`, rustc cannot prove a spawned caller's future
/// `Send` (a higher-ranked `From` bound on hyper's body error, lost in the
/// projection of `S::Future`).
fn sendable<'a>(
    future: impl std::future::Future<Output = Got> + Send + 'a,
) -> Pin<Box<dyn std::future::Future<Output = Got> + Send + 'a>> {
    Box::pin(future)
}

async fn send_reqwest(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    req: &Req,
) -> Got {
    let mut builder = client.request(req.method.clone(), url);
    for (k, v) in &req.headers {
        builder = builder.header(*k, *v);
    }
    if let Some(policy) = &req.policy {
        builder = builder.with_extension(policy.clone());
    }
    builder = if req.shared {
        builder.body(reqwest::Body::wrap(
            ReplayBody::new(req.body, req.streaming).shared(),
        ))
    } else if req.streaming {
        builder.body(reqwest::Body::wrap(OnceBody::new(req.body)))
    } else {
        builder.body(req.body)
    };
    match builder.send().await {
        Ok(response) => {
            let report = response.retry_report().into_owned();
            let status = response.status().as_u16();
            let body = response.text().await;
            Got::ok(status, body, report)
        }
        Err(reqwest_middleware::Error::Middleware(e)) => {
            let mut error = e.downcast::<Error>().expect("an http_resilience::Error");
            let body = match error.take_response::<reqwest::Response>() {
                Some(r) => Some(r.text().await.unwrap()),
                None => None,
            };
            Got::failed(error, body)
        }
        Err(other) => panic!("every failure should be wrapped: {other:?}"),
    }
}

type TowerBody = http_resilience::ResponseBody<hyper::body::Incoming>;

/// Sends `req` through a tower `Retry` over any inner service that takes
/// [`ReplayBody`] requests and answers with hyper's bodies (hyper-util's
/// client, bare or below other layers). `url` may be relative, for an inner
/// layer that sets the URI.
pub async fn send_tower<S>(mut svc: http_resilience::Retry<S>, url: &str, req: &Req) -> Got
where
    S: Service<http::Request<ReplayBody>, Response = http::Response<hyper::body::Incoming>> + Clone,
    S::Error: Into<http_resilience::BoxError>,
{
    let mut request = http::Request::builder().method(req.method.clone()).uri(url);
    for (k, v) in &req.headers {
        request = request.header(*k, *v);
    }
    let body = ReplayBody::new(req.body, req.streaming);
    let body = if req.shared { body.shared() } else { body };
    let mut request = request.body(body).unwrap();
    if let Some(policy) = &req.policy {
        request.extensions_mut().insert(policy.clone());
    }
    let start = Instant::now();
    let mut got = call_tower(&mut svc, request).await;
    got.elapsed = start.elapsed();
    got
}

/// Sends `req` (`streaming`) with an [`OnceBody`] through a tower `Retry`
/// in `replay_bodies()` mode.
pub async fn send_tower_stream<S>(mut svc: S, url: &str, req: &Req) -> Got
where
    S: Service<
            http::Request<OnceBody>,
            Response = http::Response<TowerBody>,
            Error = http_resilience::Error,
        >,
{
    let mut request = http::Request::builder().method(req.method.clone()).uri(url);
    for (k, v) in &req.headers {
        request = request.header(*k, *v);
    }
    let mut request = request.body(OnceBody::new(req.body)).unwrap();
    if let Some(policy) = &req.policy {
        request.extensions_mut().insert(policy.clone());
    }
    call_tower(&mut svc, request).await
}

async fn call_tower<S, B>(svc: &mut S, request: http::Request<B>) -> Got
where
    S: Service<
            http::Request<B>,
            Response = http::Response<TowerBody>,
            Error = http_resilience::Error,
        >,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    match svc.call(request).await {
        Ok(response) => {
            let report = response.retry_report().into_owned();
            let status = response.status().as_u16();
            let body = match response.into_body().collect().await {
                Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
                Err(e) => Err(e),
            };
            Got::ok(status, body, report)
        }
        Err(mut error) => {
            let body = match error.take_response::<http::Response<TowerBody>>() {
                Some(r) => {
                    let bytes = r.into_body().collect().await.unwrap().to_bytes();
                    Some(String::from_utf8(bytes.to_vec()).unwrap())
                }
                None => None,
            };
            Got::failed(error, body)
        }
    }
}
