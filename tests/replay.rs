//! Bounded replay of streamed request bodies, through both adapters, against
//! a real server: a body that cannot be cloned is kept in the replay buffer
//! (the policy's `replay_buffer`, 64 KiB by default) as it is sent, and a
//! retry sends it again byte for byte; a longer one is sent once and the
//! request is committed, and the report and the error say why.
//!
//! reqwest: `reqwest::Body::wrap` of a stream, through `RetryMiddleware`.
//! tower: the same stream through `RetryLayer::replay_bodies()` over
//! hyper-util's client (the layer wraps every body in a `ReplayBody`).

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_resilience::replay::{Committed, DEFAULT_REPLAY_LIMIT, ReplayBody};
use http_resilience::{
    BoxError, Error, ResponseExt, RetryLayer, RetryMiddleware, RetryPolicy, RetryReport, StopReason,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt};

use support::clients::{BOTH, OnceBody, ReplayBody as SharedBody, Via, base, hyper_stream_client};
use support::{Server, Step};

/// A body fed by the test, chunk by chunk.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What came back.
#[derive(Debug)]
enum Sent {
    Response { status: u16, report: RetryReport },
    Failed(Error),
}

impl Sent {
    fn status(&self) -> Option<u16> {
        match self {
            Sent::Response { status, .. } => Some(*status),
            Sent::Failed(_) => None,
        }
    }
    fn report(&self) -> &RetryReport {
        match self {
            Sent::Response { report, .. } => report,
            Sent::Failed(e) => e.report(),
        }
    }
    fn error(&self) -> &Error {
        match self {
            Sent::Failed(e) => e,
            other => panic!("an error, got {other:?}"),
        }
    }
}

/// A request with a body that cannot be cloned.
struct Streamed<'a, B> {
    method: Method,
    url: &'a str,
    headers: &'a [(&'static str, &'static str)],
    body: B,
}

/// The reqwest client through the middleware, with `inner` (if any)
/// between it and the transport.
fn reqwest_client(
    policy: RetryPolicy,
    inner: Option<Arc<dyn reqwest_middleware::Middleware>>,
) -> reqwest_middleware::ClientWithMiddleware {
    let mut builder = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(RetryMiddleware::new(policy));
    if let Some(inner) = inner {
        builder = builder.with_arc(inner);
    }
    builder.build()
}

async fn send_reqwest<B>(
    client: &reqwest_middleware::ClientWithMiddleware,
    req: Streamed<'_, B>,
) -> Sent
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = client.request(req.method, req.url);
    for (k, v) in req.headers {
        builder = builder.header(*k, *v);
    }
    match builder.body(reqwest::Body::wrap(req.body)).send().await {
        Ok(response) => Sent::Response {
            status: response.status().as_u16(),
            report: response.retry_report().into_owned(),
        },
        Err(e) => Sent::Failed(Error::from_middleware(e).expect("the middleware's error")),
    }
}

async fn send_tower<S, B>(svc: S, req: Streamed<'_, B>) -> Sent
where
    S: Service<
            Request<B>,
            Response = http::Response<http_resilience::ResponseBody<hyper::body::Incoming>>,
            Error = Error,
        >,
{
    let mut request = Request::builder().method(req.method).uri(req.url);
    for (k, v) in req.headers {
        request = request.header(*k, *v);
    }
    match svc.oneshot(request.body(req.body).unwrap()).await {
        Ok(response) => {
            let report = response.retry_report().into_owned();
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            Sent::Response { status, report }
        }
        Err(e) => Sent::Failed(e),
    }
}

/// Sends `req` through `via` under `policy`.
async fn send<B>(via: Via, policy: RetryPolicy, req: Streamed<'_, B>) -> Sent
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    match via {
        Via::Reqwest => send_reqwest(&reqwest_client(policy, None), req).await,
        Via::Tower => {
            let svc = RetryLayer::new(policy)
                .replay_bodies()
                .layer(hyper_stream_client::<B>());
            send_tower(svc, req).await
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_streamed_32_kib_put_or_keyed_post_is_sent_again_byte_for_byte() {
    let cases: [(Method, &[(&str, &str)]); 2] = [
        (Method::PUT, &[]),
        (Method::POST, &[("idempotency-key", "key-1")]),
    ];
    let data = payload(32 * 1024);
    for via in BOTH {
        for (method, headers) in &cases {
            let server = Server::start().await;
            server.script("/up", vec![Step::status(503), Step::status(200)]);
            let url = server.url("/up");
            let req = Streamed {
                method: method.clone(),
                url: &url,
                headers,
                body: OnceBody::from_bytes(&data, 1000),
            };
            let sent = send(via, base().build().unwrap(), req).await;
            let label = format!("{via:?} {method}");
            assert_eq!(sent.status(), Some(200), "{label}: {sent:?}");
            let report = sent.report();
            assert_eq!(report.attempts(), 2, "{label}");
            assert_eq!(
                report.to_string(),
                "2 attempts [503 -> wait 100ms (backoff), 200]"
            );
            let seen = server.seen("/up");
            assert_eq!(seen.len(), 2, "{label}");
            for s in &seen {
                assert_eq!(s.method, method.as_str());
                assert_eq!(digest(&s.body), digest(&data), "{label}: byte-identical");
                assert_eq!(s.header("transfer-encoding"), Some("chunked"), "{label}");
            }
        }
    }
}

/// Replay makes a retry possible, not safe: a `POST` without a key is
/// still not retried after a 503.
#[tokio::test(start_paused = true)]
async fn replay_does_not_make_a_post_safe() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/up", vec![Step::status(503), Step::status(200)]);
        let url = server.url("/up");
        let req = Streamed {
            method: Method::POST,
            url: &url,
            headers: &[],
            body: OnceBody::new("a streamed post"),
        };
        let sent = send(via, base().build().unwrap(), req).await;
        assert_eq!(sent.status(), Some(503), "{via:?}");
        assert_eq!(
            sent.report().stop_reason(),
            Some(StopReason::NotIdempotent),
            "{via:?}"
        );
        assert_eq!(server.count("/up"), 1, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_streamed_1_mib_body_gets_one_attempt_and_the_reason() {
    let data = payload(1024 * 1024);
    let committed = StopReason::BodyCommitted {
        reason: Committed::TooLarge {
            limit: DEFAULT_REPLAY_LIMIT,
        },
    };
    for via in BOTH {
        // A 503: handed over as it is, the report says why.
        let server = Server::start().await;
        server.script("/up", vec![Step::status(503), Step::status(200)]);
        let url = server.url("/up");
        let req = Streamed {
            method: Method::PUT,
            url: &url,
            headers: &[],
            body: OnceBody::from_bytes(&data, 16 * 1024),
        };
        let sent = send(via, base().build().unwrap(), req).await;
        assert_eq!(sent.status(), Some(503), "{via:?}");
        let report = sent.report();
        assert_eq!(report.attempts(), 1, "{via:?}");
        assert_eq!(report.stop_reason(), Some(committed), "{via:?}");
        assert_eq!(committed.as_str(), "body_too_large");
        assert!(
            report
                .to_string()
                .contains("stopped: body_too_large (65536 bytes)"),
            "{via:?}: {report}"
        );
        let seen = server.seen("/up");
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(digest(&seen[0].body), digest(&data), "{via:?}: sent whole");

        // A reset after the whole body was read: an error that says why
        // (and no query string: it may hold a credential).
        let server = Server::start().await;
        server.script("/up?key=secret", vec![Step::Reset, Step::status(200)]);
        let url = server.url("/up?key=secret");
        let req = Streamed {
            method: Method::PUT,
            url: &url,
            headers: &[],
            body: OnceBody::from_bytes(&data, 16 * 1024),
        };
        let sent = send(via, base().build().unwrap(), req).await;
        let error = sent.error();
        assert_eq!(error.code(), "NOT_RETRYABLE", "{via:?}");
        assert_eq!(error.report().stop_reason(), Some(committed), "{via:?}");
        let text = error.to_string();
        assert!(
            text.contains("longer than the replay buffer (65536 bytes)"),
            "{via:?}: {text}"
        );
        assert!(
            !text.contains("secret"),
            "{via:?}: the query stays out: {text}"
        );
        assert_eq!(server.count("/up?key=secret"), 1, "{via:?}");
    }
}

/// With `replay_buffer(0)` nothing is kept: a stream is sent once, as a
/// body that cannot be replayed.
#[tokio::test(start_paused = true)]
async fn a_zero_replay_buffer_sends_a_stream_once() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/up", vec![Step::status(503), Step::status(200)]);
        let url = server.url("/up");
        let req = Streamed {
            method: Method::PUT,
            url: &url,
            headers: &[],
            body: OnceBody::new("streamed once"),
        };
        let sent = send(via, base().replay_buffer(0).build().unwrap(), req).await;
        assert_eq!(sent.status(), Some(503), "{via:?}");
        assert_eq!(
            sent.report().stop_reason(),
            Some(StopReason::BodyNotReplayable),
            "{via:?}"
        );
        let seen = server.seen("/up");
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(seen[0].body, b"streamed once");
    }
}

/// The limit is the policy's: a per-request policy with a bigger buffer
/// replays a body the default one would have committed.
#[tokio::test(start_paused = true)]
async fn the_limit_is_the_policys() {
    let data = payload(100 * 1024);
    for via in BOTH {
        let server = Server::start().await;
        server.script("/up", vec![Step::status(503), Step::status(200)]);
        let url = server.url("/up");
        let req = Streamed {
            method: Method::PUT,
            url: &url,
            headers: &[],
            body: OnceBody::from_bytes(&data, 8 * 1024),
        };
        let policy = base().replay_buffer(128 * 1024).build().unwrap();
        let sent = send(via, policy, req).await;
        assert_eq!(sent.status(), Some(200), "{via:?}: {sent:?}");
        let seen = server.seen("/up");
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| digest(&s.body) == digest(&data)));
    }
}

/// A server that answers the first request with a 503 after reading only
/// `early` bytes of it (head included), and records the decoded chunked
/// body of the second before answering 200. `answered` fires once the 503
/// is written.
async fn early_server(
    early: usize,
) -> (
    String,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/up", listener.local_addr().unwrap());
    let (tx, answered) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        // First: answer early, then drain (no reset) until the client goes.
        let (mut first, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; early];
        first.read_exact(&mut buf).await.unwrap();
        first
            .write_all(b"HTTP/1.1 503 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        first.shutdown().await.unwrap();
        let _ = tx.send(());
        let drain = tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while matches!(first.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        // Second: the whole request.
        let (mut second, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let body = loop {
            let mut chunk = [0u8; 4096];
            let n = second.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the retry ended before its body did");
            raw.extend_from_slice(&chunk[..n]);
            if let Some(body) = dechunk(&raw) {
                break body;
            }
        };
        second
            .write_all(b"HTTP/1.1 200 X\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        drain.abort();
        body
    });
    (url, answered, task)
}

/// The decoded body of a complete chunked request in `raw`, if complete.
fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut rest = &raw[head_end..];
    let mut body = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line]).ok()?.trim(), 16).ok()?;
        rest = &rest[line + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// linkerd2-proxy #3216: the server answers before it has read the body,
/// while the client is still sending it. The adapter retries while the
/// first attempt's copy may still be alive in its connection: nothing
/// panics, the earlier copy takes nothing more from the stream, and the
/// retry sends every byte once: those already read (replayed), then the
/// rest (never read before, read now). Real time (a spawned sender fed by
/// the test); the backoff is 100 ms.
#[tokio::test]
async fn an_early_answer_neither_panics_nor_replays_what_was_never_read() {
    for via in BOTH {
        let (url, answered, server) = early_server(4096).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let data = payload(32 * 1024);
        let mut chunks = data.chunks(4096).map(Bytes::copy_from_slice);
        // Half the body is there before the answer; the rest only later.
        for chunk in chunks.by_ref().take(4) {
            tx.send(chunk).await.unwrap();
        }
        let sending = tokio::spawn({
            let url = url.clone();
            async move {
                let req = Streamed {
                    method: Method::PUT,
                    url: &url,
                    headers: &[],
                    body: Fed(rx),
                };
                send(via, base().build().unwrap(), req).await
            }
        });
        tokio::time::timeout(Duration::from_secs(20), answered)
            .await
            .expect("the early answer")
            .unwrap();
        for chunk in chunks {
            tx.send(chunk).await.unwrap();
        }
        drop(tx);
        let sent = tokio::time::timeout(Duration::from_secs(20), sending)
            .await
            .expect("the retry completes")
            .unwrap();
        assert_eq!(sent.status(), Some(200), "{via:?}: {sent:?}");
        assert_eq!(sent.report().attempts(), 2, "{via:?}");
        let received = server.await.unwrap();
        assert_eq!(
            received.len(),
            data.len(),
            "{via:?}: nothing twice, nothing skipped"
        );
        assert_eq!(digest(&received), digest(&data), "{via:?}");
    }
}

/// Fails the first attempt with a refused connection before anything reads
/// its body (the body is dropped unpolled), then passes the rest through.
#[derive(Clone)]
struct FailFirst<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S, B> Service<Request<B>> for FailFirst<S>
where
    S: Service<Request<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            drop(request);
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            return Box::pin(async move { Err(refused.into()) });
        }
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

/// The same for reqwest: the first attempt fails to connect (to a port
/// nobody listens on), its body dropped unpolled.
struct FailFirstMiddleware {
    calls: AtomicUsize,
    refused: String,
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for FailFirstMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        ext: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            drop(req);
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let error = client.get(&self.refused).send().await.unwrap_err();
            assert!(error.is_connect());
            return Err(reqwest_middleware::Error::Reqwest(error));
        }
        next.run(req, ext).await
    }
}

/// linkerd2-proxy #4621: a retry whose body the earlier attempt never
/// polled sends each chunk exactly once.
#[tokio::test(start_paused = true)]
async fn a_body_the_first_attempt_never_polled_is_not_duplicated() {
    let data = payload(20_000);
    let refused = format!("http://{}/", support::refused_addr().await);
    for via in BOTH {
        let server = Server::start().await;
        server.script("/up", vec![Step::status(200)]);
        let url = server.url("/up");
        let req = Streamed {
            method: Method::PUT,
            url: &url,
            headers: &[],
            body: OnceBody::from_bytes(&data, 700),
        };
        let sent = match via {
            Via::Reqwest => {
                let fail = FailFirstMiddleware {
                    calls: AtomicUsize::new(0),
                    refused: refused.clone(),
                };
                let client = reqwest_client(base().build().unwrap(), Some(Arc::new(fail)));
                send_reqwest(&client, req).await
            }
            Via::Tower => {
                let inner = FailFirst {
                    inner: hyper_stream_client::<OnceBody>(),
                    calls: Arc::new(AtomicUsize::new(0)),
                };
                let svc = RetryLayer::new(base().build().unwrap())
                    .replay_bodies()
                    .layer(inner);
                send_tower(svc, req).await
            }
        };
        assert_eq!(sent.status(), Some(200), "{via:?}: {sent:?}");
        assert_eq!(sent.report().attempts(), 2, "{via:?}");
        let seen = server.seen("/up");
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(seen[0].body.len(), data.len(), "{via:?}: each byte once");
        assert_eq!(digest(&seen[0].body), digest(&data), "{via:?}");
    }
}

/// The hardening issue's body whose clones share one stream (octocrab's
/// `OctoBody`): kept in the replay buffer, it is sent again whole, through
/// reqwest (`Body::wrap` of it, as octocrab sends it) and through tower's
/// `replay_bodies()` (where its `Clone`, which would send what is left, is
/// never used).
#[tokio::test(start_paused = true)]
async fn a_body_whose_clones_share_one_stream_is_resent_whole() {
    let json = r#"{"title":"hardening","body":"not empty"}"#;
    for via in BOTH {
        let server = Server::start().await;
        server.script("/up", vec![Step::status(502), Step::status(200)]);
        let url = server.url("/up");
        let req = Streamed {
            method: Method::PUT,
            url: &url,
            headers: &[],
            body: SharedBody::new(json, true).shared(),
        };
        let sent = send(via, base().build().unwrap(), req).await;
        assert_eq!(sent.status(), Some(200), "{via:?}: {sent:?}");
        let bodies: Vec<Vec<u8>> = server.seen("/up").into_iter().map(|s| s.body).collect();
        assert_eq!(bodies, vec![json.as_bytes().to_vec(); 2], "{via:?}");
    }
}

/// In the tower layer's default mode, a body the caller wrapped in a
/// `ReplayBody` (with its own limit) is replayed too: the layer takes any
/// body that is `Clone` or a `ReplayBody` (`RetryBody`).
#[tokio::test(start_paused = true)]
async fn a_replay_body_the_caller_made_goes_through_the_default_tower_mode() {
    let data = payload(10_000);
    let server = Server::start().await;
    server.script("/up", vec![Step::status(503), Step::status(200)]);
    let svc = RetryLayer::new(base().build().unwrap()).layer(hyper_stream_client::<OnceBody>());
    let req = Streamed {
        method: Method::PUT,
        url: &server.url("/up"),
        headers: &[],
        body: ReplayBody::with_limit(OnceBody::from_bytes(&data, 1000), 16 * 1024),
    };
    let sent = send_tower(svc.clone(), req).await;
    assert_eq!(sent.status(), Some(200), "{sent:?}");
    assert!(
        server
            .seen("/up")
            .iter()
            .all(|s| digest(&s.body) == digest(&data))
    );

    // Past its own limit (not the policy's): committed.
    server.script("/small", vec![Step::status(503), Step::status(200)]);
    let req = Streamed {
        method: Method::PUT,
        url: &server.url("/small"),
        headers: &[],
        body: ReplayBody::with_limit(OnceBody::from_bytes(&data, 1000), 4096),
    };
    let sent = send_tower(svc, req).await;
    assert_eq!(sent.status(), Some(503));
    assert_eq!(
        sent.report().stop_reason(),
        Some(StopReason::BodyCommitted {
            reason: Committed::TooLarge { limit: 4096 }
        })
    );
}
