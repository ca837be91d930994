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
//!
//! Then load protection, with the same client:
//! - `/quota` says `x-ratelimit-remaining: 0` with a reset 2 s ahead: the
//!   next request to the host waits for the reset instead of being sent to
//!   fail;
//! - `/outage` always answers 503 to 1,000 concurrent requests: the default
//!   retry budget keeps the server's load at 1.1x instead of 4x.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_resilience::{ResponseExt, RetryMiddleware, RetryPolicy, RetryReport};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (addr, hits) = start_flaky_server().await?;

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
                let report = response.retry_report();
                println!("{label:<16} -> {} {}", response.status(), summary(&report));
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

    // Load protection: a quota the server says is gone holds the host's
    // next requests until the reset.
    for label in ["GET /quota", "GET /quota again"] {
        let response = client.get(format!("http://{addr}/quota")).send().await?;
        let report = response.retry_report();
        let held = match report.total_throttled() {
            d if d.is_zero() => "sent at once".to_string(),
            d => format!("held {}ms for the server's quota reset", d.as_millis()),
        };
        println!("{label:<16} -> {} {held}", response.status());
    }

    // A total outage: every clone of the client shares the host's retry
    // budget (500 tokens, 5 a retry, a few already spent above), so 1,000
    // requests with 3 retries each put about 1,100 requests on the server,
    // not 4,000.
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url) = (client.clone(), format!("http://{addr}/outage"));
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    for request in requests {
        let code = match request.await? {
            Ok(response) => response.status().to_string(),
            Err(reqwest_middleware::Error::Middleware(e)) => e
                .downcast::<http_resilience::Error>()
                .map_or("other".into(), |e| e.code().to_string()),
            Err(e) => e.to_string(),
        };
        *codes.entry(code).or_default() += 1;
    }
    let seen = hits.lock().unwrap().get("/outage").copied().unwrap_or(0);
    println!(
        "1000 x GET /outage -> {codes:?}; the server saw {seen} requests ({:.2}x)",
        f64::from(seen) / 1000.0
    );
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

type Hits = Arc<Mutex<HashMap<String, u32>>>;

/// Serves on 127.0.0.1 (a free port) and counts the hits on each path.
async fn start_flaky_server() -> std::io::Result<(SocketAddr, Hits)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits: Hits = Arc::default();
    let counted = hits.clone();
    tokio::spawn(async move {
        let hits = counted;
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
    Ok((addr, hits))
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
        ("/outage", _) => reply(StatusCode::SERVICE_UNAVAILABLE, "down"),
        ("/quota", 1) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() + 2);
            let mut response = reply(StatusCode::OK, "last one this window");
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
            headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            response
        }
        _ => reply(StatusCode::OK, "ok"),
    }
}
