//! `cargo run --example tower`
//!
//! The same retries as a tower layer: hyper-util's client wrapped in
//! [`RetryLayer`], against an in-process server that answers 503 twice
//! before it recovers.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use http_resilience::{ResponseExt, RetryLayer, RetryPolicy};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = start_flaky_server().await?;

    let policy = RetryPolicy::builder()
        .max_retries(3)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_secs(1))
        .build()?;
    // The layer needs a `Clone` client and a `Clone` request body: the
    // hyper-util client and `Full<Bytes>` are both.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(client);

    let request = Request::get(format!("http://{addr}/flaky")).body(Full::new(Bytes::new()))?;
    // `ServiceExt::oneshot` would need tower's "util" feature.
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    let response = svc.call(request).await?;

    let report = response.retry_report().into_owned();
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET /flaky -> {status} {body:?} after {} attempts",
        report.attempts()
    );
    for (i, attempt) in report.history().iter().enumerate() {
        let status = attempt.status().map_or("-".into(), |s| s.to_string());
        match (attempt.delay(), attempt.delay_source()) {
            (Some(delay), Some(source)) => {
                let ms = delay.as_millis();
                println!(
                    "  attempt {}: {status}, then waited {ms}ms ({source})",
                    i + 1
                );
            }
            _ => println!("  attempt {}: {status}", i + 1),
        }
    }
    Ok(())
}

/// Serves on 127.0.0.1 (a free port): 503 for the first two requests, then 200.
async fn start_flaky_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = hits.clone();
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let (status, body) = match hits.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
                    _ => (StatusCode::OK, "hello"),
                };
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = status;
                std::future::ready(Ok::<_, Infallible>(response))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Ok(addr)
}
