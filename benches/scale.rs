//! Scale: 10 000 concurrent requests that each fail twice (503) and then
//! succeed, on a current-thread tokio runtime with a paused clock (the
//! backoff waits pass in virtual time; only the work is real). Each request
//! is a spawned task (`JoinSet`) calling an in-process service through
//! [`RetryLayer`] (default policy), or through `tower::retry` with the
//! equivalent `support::TowerPolicy`.
//!
//! - Time to complete: criterion, one iteration = all 10 000 requests from
//!   spawn to the last join.
//! - Memory per waiting request: a counting global allocator's high-water
//!   mark of live bytes during one run, minus the live bytes before it,
//!   divided by 10 000. The same is measured for a control in which each
//!   task holds the same request through the same two waits (two
//!   `tokio::time::sleep`s) without any retry layer: that is what the
//!   request itself (its task, its body, its timer) weighs, and the
//!   difference is the retry layer's own cost per waiting request.
//!
//! `cargo bench --bench scale`; `QUICK=1` for a short run.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use http_resilience::{ResponseExt, RetryLayer, RetryPolicy};
use tower::{Layer, ServiceExt};

use support::{Counting, TowerPolicy, config};

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: usize = 10_000;

/// The request body: a shared attempt counter, so that the service can
/// fail each request's first two attempts (every attempt sends a clone).
/// As a body it is empty (the tower layer requires an `http_body::Body`).
#[derive(Clone)]
struct Ticket(Arc<AtomicU8>);

impl http_body::Body for Ticket {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(None)
    }
    fn is_end_stream(&self) -> bool {
        true
    }
}

fn request() -> Request<Ticket> {
    static URI: LazyLock<Uri> =
        LazyLock::new(|| Uri::from_static("http://api.example.com/v1/items"));
    let mut request = Request::new(Ticket(Arc::new(AtomicU8::new(0))));
    *request.uri_mut() = URI.clone();
    request
}

type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// 503 to a request's first two attempts, then 200.
fn answer(req: Request<Ticket>) -> Answer {
    let attempt = req.body().0.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    if attempt < 2 {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    std::future::ready(Ok(response))
}

/// A nameable (hence visibly `Send`) service type.
fn inner() -> tower::util::ServiceFn<fn(Request<Ticket>) -> Answer> {
    tower::service_fn(answer as fn(Request<Ticket>) -> Answer)
}

#[derive(Clone, Copy, Debug)]
enum Stack {
    /// No retry layer: each task holds its request through two waits.
    Control,
    Ours,
    TowerRetry,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Runs the 10 000 requests; returns the wall time and the peak live bytes
/// above those live at the start.
fn run(rt: &tokio::runtime::Runtime, stack: Stack) -> (Duration, usize) {
    let ours = RetryLayer::new(RetryPolicy::default()).layer(inner());
    let theirs = tower::retry::Retry::new(TowerPolicy::new(), inner());
    rt.block_on(async {
        let before = Counting::live();
        Counting::reset_peak();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..REQUESTS {
            let request = request();
            match stack {
                Stack::Control => {
                    tasks.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        tokio::time::sleep(Duration::from_millis(1000)).await;
                        drop(request);
                        3
                    });
                }
                Stack::Ours => {
                    let svc = ours.clone();
                    tasks.spawn(async move {
                        let response = svc.oneshot(request).await.expect("retried to success");
                        assert_eq!(response.status(), StatusCode::OK);
                        let report = response.retry_report();
                        report.attempts()
                    });
                }
                Stack::TowerRetry => {
                    let svc = theirs.clone();
                    tasks.spawn(async move {
                        let response = svc.oneshot(request).await.expect("retried to success");
                        assert_eq!(response.status(), StatusCode::OK);
                        3
                    });
                }
            }
        }
        let mut done = 0;
        while let Some(attempts) = tasks.join_next().await {
            assert_eq!(attempts.expect("task"), 3);
            done += 1;
        }
        assert_eq!(done, REQUESTS);
        let took = start.elapsed();
        (took, Counting::peak().saturating_sub(before))
    })
}

/// `SCALE_ONLY=control|retry_layer|tower_retry`: one run of that stack,
/// then exit, for `valgrind --tool=callgrind` or `perf`.
fn only(rt: &tokio::runtime::Runtime) {
    let Ok(name) = std::env::var("SCALE_ONLY") else {
        return;
    };
    let stack = match name.as_str() {
        "control" => Stack::Control,
        "retry_layer" => Stack::Ours,
        "tower_retry" => Stack::TowerRetry,
        other => panic!("SCALE_ONLY={other}: not a stack"),
    };
    let (took, peak) = run(rt, stack);
    eprintln!("{name}: {took:?}, peak {peak} bytes");
    std::process::exit(0);
}

fn scale(c: &mut Criterion) {
    let rt = runtime();
    only(&rt);
    let stacks = [
        ("control (request + two sleeps)", Stack::Control),
        ("RetryLayer", Stack::Ours),
        ("tower::retry::Retry", Stack::TowerRetry),
    ];

    let mut group = c.benchmark_group("scale_10k_fail_twice");
    group.sample_size(10);
    for (name, stack) in [
        ("retry_layer", Stack::Ours),
        ("tower_retry", Stack::TowerRetry),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| run(&rt, stack).0).sum())
        });
    }
    group.finish();
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }

    // Memory: one warm-up run each, then the median of a few.
    let runs = if support::quick() { 3 } else { 7 };
    let mut rows = Vec::new();
    for (name, stack) in stacks {
        run(&rt, stack);
        let mut times = Vec::new();
        let mut peaks = Vec::new();
        for _ in 0..runs {
            let (took, peak) = run(&rt, stack);
            times.push(took.as_secs_f64() * 1e3);
            peaks.push(peak as f64);
        }
        rows.push((name, support::median(times), support::median(peaks)));
    }
    let control = rows[0].2 / REQUESTS as f64;
    println!(
        "\nscale: {REQUESTS} concurrent requests, each 503, 503, 200, paused clock (median of {runs} runs)"
    );
    println!(
        "| stack | wall time to complete (ms) | peak bytes per waiting request | beyond the request itself |"
    );
    println!("|---|---:|---:|---:|");
    for (name, ms, peak) in &rows {
        let per = peak / REQUESTS as f64;
        println!("| {name} | {ms:.1} | {per:.0} | {:+.0} |", per - control);
    }
    println!(
        "(the request itself, its task and its timer: {control:.0} bytes; target: under 2048 bytes beyond it)\n"
    );
}

criterion_group! {
    name = benches;
    config = config();
    targets = scale
}
criterion_main!(benches);
