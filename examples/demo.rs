//! `cargo run --example demo`
//!
//! Starts a flaky HTTP server in-process, then sends four requests through a
//! `reqwest` client with [`RetryMiddleware`] and prints what happened to each:
//!
//! - `/recovers` answers 503 twice, then 200: retried with backoff;
//! - `/retry-after` answers 429 with `Retry-After: 1` once: the server's wait wins;
//! - `/missing` answers 404: permanent, returned at once;
//! - `/down` always answers 503: retries run out, and the error keeps the
//!   last response, body included.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_resilience::{RetryMiddleware, RetryPolicy, RetryReport};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = start_flaky_server().await?;

    // Small backoffs so that the demo takes a few seconds.
    let policy = RetryPolicy::builder()
        .max_retries(3)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_secs(1))
        .build()?;
    // `no_proxy`: talk to the embedded server directly, whatever HTTP_PROXY says.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(RetryMiddleware::new(policy))
        .build();

    for path in ["/recovers", "/retry-after", "/missing", "/down"] {
        let label = format!("GET {path}");
        match client.get(format!("http://{addr}{path}")).send().await {
            Ok(response) => {
                let report = response
                    .extensions()
                    .get::<RetryReport>()
                    .expect("always attached");
                println!("{label:<16} -> {} {}", response.status(), summary(report));
            }
            Err(reqwest_middleware::Error::Middleware(e)) => {
                // The middleware gave up: its typed error says why, and keeps
                // the report and the last response, body unread.
                let err = e.downcast::<http_resilience::Error>()?;
                let line = format!(
                    "{label:<16} -> error {} {}",
                    err.code(),
                    summary(err.report())
                );
                let last = err
                    .into_response::<reqwest::Response>()
                    .expect("the last attempt got a response");
                let status = last.status();
                println!("{line}; last response: {status} {:?}", last.text().await?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `after 3 attempts; waits: 112ms (backoff), 187ms (backoff)`
fn summary(report: &RetryReport) -> String {
    let n = report.attempts();
    let waits: Vec<String> = report
        .history()
        .iter()
        .filter_map(|r| {
            let (delay, source) = (r.delay()?, r.delay_source()?);
            // Whole milliseconds are precise enough to read: `87ms`, `1s`.
            let ms = delay.as_millis() as u64;
            let delay = match ms {
                0..1000 => format!("{ms}ms"),
                _ => format!("{:?}", Duration::from_millis(ms)),
            };
            Some(format!("{delay} ({})", source.as_str()))
        })
        .collect();
    let plural = if n == 1 { "" } else { "s" };
    if waits.is_empty() {
        format!("after {n} attempt{plural}; not retried")
    } else {
        format!("after {n} attempt{plural}; waits: {}", waits.join(", "))
    }
}

/// Serves on 127.0.0.1 (a free port) and counts the hits on each path.
async fn start_flaky_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = hits.clone();
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let path = req.uri().path().to_owned();
                let n = {
                    let mut hits = hits.lock().unwrap();
                    let n = hits.entry(path.clone()).or_default();
                    *n += 1;
                    *n
                };
                std::future::ready(Ok::<_, Infallible>(flaky(&path, n)))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Ok(addr)
}

/// The answer to the `n`-th request (from 1) on `path`.
fn flaky(path: &str, n: u32) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    };
    match (path, n) {
        ("/recovers", 1..=2) => reply(StatusCode::SERVICE_UNAVAILABLE, "busy"),
        ("/retry-after", 1) => {
            let mut response = reply(StatusCode::TOO_MANY_REQUESTS, "slow down");
            response
                .headers_mut()
                .insert("retry-after", "1".parse().unwrap());
            response
        }
        ("/missing", _) => reply(StatusCode::NOT_FOUND, "no such thing"),
        ("/down", _) => reply(StatusCode::SERVICE_UNAVAILABLE, "maintenance until 18:00"),
        _ => reply(StatusCode::OK, "ok"),
    }
}
