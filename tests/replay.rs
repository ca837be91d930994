//! Bounded replay of streamed request bodies against a real server, sent
//! by real clients (hyper-util's and reqwest's): the first attempt sends a
//! `ReplayBody`, a retry sends `replay()` of it. (The adapters take this up
//! in the wiring phase, see `design/streaming.md`; here the test plays the
//! adapter's part: send, look at the status, replay.)

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request};
use http_body::{Body, Frame};
use http_resilience::BoxError;
use http_resilience::replay::{Committed, DEFAULT_REPLAY_LIMIT, ReplayBody};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::clients::{BOTH, Via};
use support::{Server, Step};

/// A body that can be read only once: `Clone` it cannot be.
struct Stream(std::collections::VecDeque<Bytes>);

impl Stream {
    /// `len` bytes of deterministic data in chunks of `chunk`.
    fn new(len: usize, chunk: usize) -> (Stream, Vec<u8>) {
        let data = payload(len);
        let chunks = data.chunks(chunk).map(Bytes::copy_from_slice).collect();
        (Stream(chunks), data)
    }
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

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

/// Sends one attempt with `body` through `via`'s client; the status.
async fn send<S>(
    via: Via,
    method: &Method,
    url: &str,
    headers: &[(&str, &str)],
    body: ReplayBody<S>,
) -> Result<u16, BoxError>
where
    S: Body<Data = Bytes> + Send + 'static,
    S::Error: Into<BoxError>,
{
    match via {
        Via::Tower => {
            let client = HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody<S>>();
            let mut request = Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = client.request(request.body(body).unwrap()).await?;
            Ok(response.status().as_u16())
        }
        Via::Reqwest => {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut request = client.request(method.clone(), url);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = request.body(reqwest::Body::wrap(body)).send().await?;
            Ok(response.status().as_u16())
        }
    }
}

#[tokio::test]
async fn a_streamed_32_kib_body_is_sent_again_byte_for_byte() {
    let cases: [(Method, &[(&str, &str)]); 2] = [
        (Method::PUT, &[]),
        (Method::POST, &[("idempotency-key", "key-1")]),
    ];
    for via in BOTH {
        for (method, headers) in &cases {
            let server = Server::start().await;
            server.script("/up", vec![Step::status(503), Step::status(200)]);
            let (stream, data) = Stream::new(32 * 1024, 1000);
            // The adapter's part: keep the body, send a copy each time.
            let keep = ReplayBody::new(stream);
            let first = keep.replay().expect("nothing read yet");
            let url = server.url("/up");
            assert_eq!(send(via, method, &url, headers, first).await.unwrap(), 503);
            assert_eq!(keep.committed(), None, "{via:?}: 32 KiB fit");
            let again = keep.replay().expect("replayable after the 503");
            assert_eq!(send(via, method, &url, headers, again).await.unwrap(), 200);
            let seen = server.seen("/up");
            assert_eq!(seen.len(), 2);
            for s in &seen {
                assert_eq!(s.method, method.as_str());
                assert_eq!(digest(&s.body), digest(&data), "{via:?} {method}");
            }
        }
    }
}

#[tokio::test]
async fn a_streamed_1_mib_body_gets_one_attempt_and_the_reason() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/up", vec![Step::status(503), Step::status(200)]);
        let (stream, data) = Stream::new(1024 * 1024, 16 * 1024);
        let keep = ReplayBody::new(stream);
        let first = keep.replay().unwrap();
        let url = server.url("/up");
        assert_eq!(
            send(via, &Method::PUT, &url, &[], first).await.unwrap(),
            503
        );
        let reason = keep.replay().unwrap_err();
        assert_eq!(
            reason,
            Committed::TooLarge {
                limit: DEFAULT_REPLAY_LIMIT
            }
        );
        assert_eq!(reason.as_str(), "body_too_large");
        assert_eq!(keep.buffered(), 0, "the buffer is dropped once committed");
        // The one attempt carried the whole body.
        let seen = server.seen("/up");
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(digest(&seen[0].body), digest(&data), "{via:?}");
    }
}

#[tokio::test]
async fn a_body_the_first_attempt_never_polled_is_not_duplicated() {
    for via in BOTH {
        let refused = support::refused_addr().await;
        let (stream, data) = Stream::new(20_000, 700);
        let keep = ReplayBody::new(stream);
        let first = keep.replay().unwrap();
        let nowhere = format!("http://{refused}/up");
        assert!(send(via, &Method::PUT, &nowhere, &[], first).await.is_err());
        assert_eq!(keep.read(), 0, "{via:?}: the refused attempt read nothing");
        let retry = keep.replay().unwrap();
        let server = Server::start().await;
        server.script("/up", vec![Step::status(200)]);
        let url = server.url("/up");
        assert_eq!(
            send(via, &Method::PUT, &url, &[], retry).await.unwrap(),
            200
        );
        let seen = server.seen("/up");
        assert_eq!(seen[0].body.len(), data.len(), "{via:?}: each byte once");
        assert_eq!(digest(&seen[0].body), digest(&data));
    }
}

/// A server that answers the first request with a 503 after reading only
/// `early` bytes of it (head included), and records the decoded chunked
/// body of the second before answering 200.
async fn early_server(early: usize) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/up", listener.local_addr().unwrap());
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
    (url, task)
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
/// while the client is still sending it. The retry starts while the first
/// attempt's copy may still be alive in the connection: nothing panics,
/// the earlier copy takes nothing more from the stream, and the retry
/// sends every byte once: those already read (replayed), then the rest
/// (never read before, read now).
#[tokio::test]
async fn an_early_response_neither_panics_nor_replays_what_was_never_read() {
    for via in BOTH {
        let (url, server) = early_server(4096).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let data = payload(32 * 1024);
        let mut chunks = data.chunks(4096).map(Bytes::copy_from_slice);
        // Half the body is there before the answer; the rest only later.
        for chunk in chunks.by_ref().take(4) {
            tx.send(chunk).await.unwrap();
        }
        let keep = ReplayBody::new(Fed(rx));
        let first = keep.replay().unwrap();
        let status = send(via, &Method::PUT, &url, &[], first).await.unwrap();
        assert_eq!(status, 503, "{via:?}");
        let read_before = keep.read();
        assert!(
            read_before < data.len() as u64,
            "{via:?}: the body was not all read"
        );
        let retry = keep.replay().expect("all that was read fitted");
        let sending = tokio::spawn(send_owned(via, Method::PUT, url.clone(), retry));
        for chunk in chunks {
            tx.send(chunk).await.unwrap();
        }
        drop(tx);
        assert_eq!(sending.await.unwrap().unwrap(), 200, "{via:?}");
        let received = server.await.unwrap();
        assert_eq!(
            received.len(),
            data.len(),
            "{via:?}: nothing twice, nothing skipped"
        );
        assert_eq!(digest(&received), digest(&data), "{via:?}");
    }
}

/// `send` with owned arguments, for a spawned task.
async fn send_owned(
    via: Via,
    method: Method,
    url: String,
    body: ReplayBody<Fed>,
) -> Result<u16, BoxError> {
    send(via, &method, &url, &[], body).await
}

/// The reqwest middleware's wiring, shown with the parts it will use: a
/// request whose `reqwest::Body` cannot be cloned (`try_clone()` is
/// `None`) has its body taken out and wrapped in a `ReplayBody`; each
/// attempt sends `reqwest::Body::wrap` of a copy (reqwest needs `Send +
/// Sync`, which `ReplayBody<reqwest::Body>` is).
#[tokio::test]
async fn a_non_clonable_reqwest_body_is_taken_out_and_replayed() {
    let server = Server::start().await;
    server.script("/up", vec![Step::status(503), Step::status(200)]);
    let (stream, data) = Stream::new(32 * 1024, 1000);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client
        .put(server.url("/up"))
        .body(reqwest::Body::wrap(stream))
        .build()
        .unwrap();
    assert!(request.try_clone().is_none(), "a streaming body");
    let body: reqwest::Body = request.body_mut().take().unwrap();
    let keep = ReplayBody::new(body);
    for expected in [503, 200] {
        let mut attempt = request.try_clone().expect("body-less now");
        *attempt.body_mut() = Some(reqwest::Body::wrap(keep.replay().unwrap()));
        assert_eq!(client.execute(attempt).await.unwrap().status(), expected);
    }
    let seen = server.seen("/up");
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| digest(&s.body) == digest(&data)));
}
