//! Hedged requests cut a slow tail: the same 200 GETs, without and with a
//! hedge after 50 ms, against an embedded server where one response in
//! twenty takes 500 ms and the others 5 ms.
//!
//! ```text
//! cargo run --example hedge
//! ```
//!
//! Prints, for each run, the p50, p99 and slowest latency the caller saw,
//! and how many requests the server received for the 200 made. With the
//! hedge, each slow first attempt gets a copy at 50 ms, which answers 5 ms
//! later and wins; the slow one is cancelled (its connection closed). Real
//! time: the run takes about seven seconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_resilience::{Hedging, ResponseExt, RetryMiddleware, RetryPolicy};

const REQUESTS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for hedge in [None, Some(Duration::from_millis(50))] {
        let received = Arc::new(AtomicU64::new(0));
        let addr = serve(received.clone()).await;
        let mut policy = RetryPolicy::builder();
        if let Some(delay) = hedge {
            policy = policy.hedging(Hedging::builder().delay(delay).build()?);
        }
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(RetryMiddleware::new(policy.build()?))
            .build();
        let url = format!("http://{addr}/");
        let mut latencies = Vec::with_capacity(REQUESTS);
        let mut hedged = 0;
        for _ in 0..REQUESTS {
            let start = Instant::now();
            let response = client.get(&url).send().await?;
            latencies.push(start.elapsed());
            hedged += u32::from(response.retry_report().hedges() > 0);
            response.bytes().await?;
        }
        latencies.sort();
        let at = |q: f64| latencies[((q * REQUESTS as f64).ceil() as usize).clamp(1, REQUESTS) - 1];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "hedge figure: {:<18} p50 {:6.1} ms, p99 {:6.1} ms, max {:6.1} ms; \
             the server received {} requests for {REQUESTS} ({hedged} hedged)",
            match hedge {
                None => "no hedging:".to_string(),
                Some(d) => format!("hedge after {} ms:", d.as_millis()),
            },
            ms(at(0.5)),
            ms(at(0.99)),
            ms(latencies[REQUESTS - 1]),
            received.load(Ordering::Relaxed),
        );
    }
    Ok(())
}

/// Answers every request, one in twenty (by arrival) after 500 ms, the
/// others after 5 ms.
async fn serve(received: Arc<AtomicU64>) -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let n = received.fetch_add(1, Ordering::Relaxed);
                    let wait = if n % 20 == 19 { 500 } else { 5 };
                    async move {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
