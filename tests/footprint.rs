//! The per-request footprint that the success path pays for: the reqwest
//! middleware's future is boxed by `async-trait` on every request, and
//! glibc's allocator serves blocks of up to 1,032 bytes from its per-thread
//! cache; above that, every request takes the slow path (measured: about
//! 1,300 more instructions per request). These bounds make growth a
//! conscious choice.

use http_resilience::{RetryMiddleware, RetryPolicy, RetryState};
use reqwest_middleware::{Middleware, Next};

/// Sits before the retry middleware and measures the future it returns.
struct Probe(std::sync::Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for Probe {
    async fn handle(
        &self,
        req: reqwest::Request,
        ext: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let fut = next.run(req, ext);
        self.0.store(
            std::mem::size_of_val(&*fut),
            std::sync::atomic::Ordering::SeqCst,
        );
        fut.await
    }
}

#[tokio::test]
async fn the_middleware_future_fits_the_allocators_fast_path() {
    let size = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(Probe(size.clone()))
        .with(RetryMiddleware::new(RetryPolicy::disabled()))
        .build();
    // Nothing listens on port 1: refused at once.
    let _ = client.get("http://127.0.0.1:1/").send().await;
    let size = size.load(std::sync::atomic::Ordering::SeqCst);
    println!("middleware future: {size} bytes");
    assert!(size > 0, "measured");
    assert!(size <= 1032, "{size} bytes");
}

#[test]
fn the_per_request_state_stays_small() {
    let size = std::mem::size_of::<RetryState>();
    println!("RetryState: {size} bytes");
    assert!(size <= 136, "{size} bytes");
}
