//! The tower success path: an in-process `service_fn` that answers 200 at
//! once, called bare, through [`RetryLayer`], and through `tower::retry`
//! with an equivalent policy (`support::TowerPolicy`). Each call builds a
//! fresh `GET http://api.example.com/v1/items` request with an empty body,
//! waits for `ready()` and awaits the response, on a current-thread tokio
//! runtime.
//!
//! Criterion measures each stack; then a summary table gives medians and
//! ratios to bare from interleaved rounds in this same process (see
//! `support::interleaved`).
//!
//! `cargo bench --bench tower`; `QUICK=1` for a short run.

mod support;

use std::convert::Infallible;
use std::fmt::Debug;
use std::hint::black_box;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use http_resilience::{ResponseExt, RetryLayer, RetryPolicy};
use tower::{Layer, Service, ServiceExt};

use support::{Contender, TowerPolicy, config, interleaved, quick};

type Body = Full<Bytes>;

/// Parsed once: the bench measures the stacks, not URI parsing.
static URI: LazyLock<Uri> = LazyLock::new(|| Uri::from_static("http://api.example.com/v1/items"));

fn request() -> Request<Body> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = URI.clone();
    request
}

fn inner() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    tower::service_fn(|_req: Request<Body>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(
            Bytes::from_static(support::BODY),
        ))))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// `n` sequential calls; the time they took.
fn run<S, R>(rt: &tokio::runtime::Runtime, svc: &mut S, n: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<R>>,
    S::Error: Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let ready = svc.ready().await.expect("ready");
            let response = ready.call(request()).await.expect("response");
            black_box(response);
        }
        start.elapsed()
    })
}

/// Each stack answers 200, and ours went through the retry layer.
fn sanity() {
    let rt = runtime();
    rt.block_on(async {
        let ours = RetryLayer::new(RetryPolicy::default())
            .layer(inner())
            .oneshot(request())
            .await
            .expect("ours");
        assert_eq!(ours.status(), StatusCode::OK);
        assert_eq!(ours.retry_report().attempts(), 1);
        let theirs = tower::retry::Retry::new(TowerPolicy::new(), inner())
            .oneshot(request())
            .await
            .expect("tower::retry");
        assert_eq!(theirs.status(), StatusCode::OK);
    });
}

/// The same retries as `tower::retry`'s policy and nothing more: no retry
/// budget, no server quota holds (the default policy has both on).
fn lean() -> RetryPolicy {
    RetryPolicy::builder()
        .retry_budget(None)
        .server_limits(false)
        .build()
        .expect("lean policy")
}

/// `TOWER_ONLY=bare|retry_layer|retry_layer_lean|tower_retry` (and `TOWER_CALLS`, default
/// 10 000): make that many calls through one stack and exit, for
/// instruction counts under `valgrind --tool=callgrind` (run it twice with
/// different counts and take the difference).
fn only() {
    let Ok(stack) = std::env::var("TOWER_ONLY") else {
        return;
    };
    let n = std::env::var("TOWER_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = runtime();
    match stack.as_str() {
        "bare" => run(&rt, &mut inner(), n),
        "retry_layer" => run(
            &rt,
            &mut RetryLayer::new(RetryPolicy::default()).layer(inner()),
            n,
        ),
        "retry_layer_lean" => run(&rt, &mut RetryLayer::new(lean()).layer(inner()), n),
        "tower_retry" => run(
            &rt,
            &mut tower::retry::Retry::new(TowerPolicy::new(), inner()),
            n,
        ),
        other => panic!("TOWER_ONLY={other}: not a stack"),
    };
    std::process::exit(0);
}

fn success_path(c: &mut Criterion) {
    only();
    sanity();
    let profiling = std::env::args().any(|a| a == "--profile-time");
    let rt = runtime();
    let mut bare = inner();
    let mut ours = RetryLayer::new(RetryPolicy::default()).layer(inner());
    let mut ours_lean = RetryLayer::new(lean()).layer(inner());
    let mut theirs = tower::retry::Retry::new(TowerPolicy::new(), inner());

    let mut group = c.benchmark_group("tower_success");
    group.bench_function("bare", |b| b.iter_custom(|n| run(&rt, &mut bare, n)));
    group.bench_function("retry_layer", |b| b.iter_custom(|n| run(&rt, &mut ours, n)));
    group.bench_function("retry_layer_lean", |b| {
        b.iter_custom(|n| run(&rt, &mut ours_lean, n))
    });
    group.bench_function("tower_retry", |b| {
        b.iter_custom(|n| run(&rt, &mut theirs, n))
    });
    group.finish();
    if profiling {
        return;
    }

    let (rounds, per_round) = if quick() { (11, 5_000) } else { (41, 20_000) };
    let mut contenders = [
        Contender {
            name: "bare service_fn",
            run: Box::new(|n| run(&rt, &mut bare, n)),
        },
        Contender {
            name: "http_resilience::RetryLayer",
            run: Box::new(|n| run(&rt, &mut ours, n)),
        },
        Contender {
            name: "RetryLayer, no budget or quota holds",
            run: Box::new(|n| run(&rt, &mut ours_lean, n)),
        },
        Contender {
            name: "tower::retry::Retry",
            run: Box::new(|n| run(&rt, &mut theirs, n)),
        },
    ];
    let ns = interleaved(&mut contenders, rounds, per_round);
    println!(
        "\ntower success path: median of {rounds} interleaved rounds of {per_round} calls each"
    );
    println!("| stack | ns/call | vs bare |");
    println!("|---|---:|---:|");
    for (c, v) in contenders.iter().zip(&ns) {
        println!("| {} | {:.1} | {:.2}x |", c.name, v, v / ns[0]);
    }
    println!(
        "RetryLayer / tower::retry: {:.2}x (target: at most 1.00x, aim 0.90x)\n",
        ns[1] / ns[3]
    );
    println!(
        "RetryLayer without budget or quota holds / tower::retry: {:.2}x\n",
        ns[2] / ns[3]
    );
}

criterion_group! {
    name = benches;
    config = config();
    targets = success_path
}
criterion_main!(benches);
