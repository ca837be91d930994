//! Heap allocations per request, counted by a global allocator
//! (`support::Counting`) on the calling thread only, so the loopback
//! server's thread is left out:
//!
//! - the decision core (`RetryState::new` + `admit` + `decide`, as the
//!   adapters call it) for a success, a 503 with `Retry-After` and a
//!   connection reset, with load protection on (the default) and off;
//! - tower, in process (the service of `benches/tower.rs`): bare,
//!   `RetryLayer`, `tower::retry`;
//! - reqwest end to end over loopback (the server of `benches/reqwest.rs`):
//!   plain `reqwest_middleware`, `RetryMiddleware`, `reqwest-retry`;
//!
//! each for a request that succeeds at once and for one that gets a 503 and
//! then a 200 (one retry). Counts are exact and the same from run to run up
//! to a handful of allocations the runtimes make now and then (timer wheel,
//! connection pool), which the averages over many requests smooth out.
//! A `realloc` counts as one allocation.
//!
//! A plain `main` (`harness = false`): `cargo bench --bench alloc`; it
//! takes a few seconds, the same with or without `QUICK`.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use http_resilience::{Jitter, ResponseExt, RetryLayer, RetryMiddleware, RetryPolicy, RetryState};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use tower::{Layer, Service, ServiceExt};

use support::{CoreInputs, Counting, Script, TowerPolicy, start_server};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Requests per measurement.
const N: u64 = 1_000;

/// Allocations and bytes per operation of `f`, run `N` times after a
/// warm-up of `N / 10`.
fn per_op(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..N / 10 {
        f();
    }
    let (a0, b0) = Counting::counts();
    Counting::track(true);
    for _ in 0..N {
        f();
    }
    Counting::track(false);
    let (a1, b1) = Counting::counts();
    ((a1 - a0) as f64 / N as f64, (b1 - b0) as f64 / N as f64)
}

struct Row {
    name: &'static str,
    allocs: f64,
    bytes: f64,
}

fn table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("| stack | allocations/request | bytes/request | allocations vs first row |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.0} | {:+.2} |",
            r.name,
            r.allocs,
            r.bytes,
            r.allocs - rows[0].allocs
        );
    }
}

fn row(name: &'static str, (allocs, bytes): (f64, f64)) -> Row {
    Row {
        name,
        allocs,
        bytes,
    }
}

// ---------------------------------------------------------------------------
// Decision core

fn core() {
    let (on, off) = support::protection_on_off();
    let inputs = CoreInputs::new();
    let meta = inputs.request();
    let t0 = Instant::now();
    for (policy, title) in [
        (
            &on,
            "decision core: RetryState::new + admit + one decide, default policy (budget and quota holds on; target: zero)",
        ),
        (
            &off,
            "decision core: the same, .retry_budget(None).server_limits(false)",
        ),
    ] {
        let mut rows = Vec::new();
        for (_, name, outcome) in inputs.cases() {
            rows.push(row(
                name,
                per_op(|| {
                    // As the adapters do: ask before the attempt, then decide.
                    let mut state = RetryState::new(policy, &meta, t0);
                    std::hint::black_box(state.admit(&meta, t0));
                    std::hint::black_box(state.decide(&meta, &outcome, t0));
                }),
            ));
        }
        table(title, &rows);
    }
}

// ---------------------------------------------------------------------------
// tower, in process

type Body = Full<Bytes>;

fn request() -> Request<Body> {
    static URI: std::sync::LazyLock<Uri> =
        std::sync::LazyLock::new(|| Uri::from_static("http://api.example.com/v1/items"));
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = URI.clone();
    request
}

/// Answers 200 at once; with `flaky`, 503 to every other call first.
fn inner(
    flaky: bool,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    let calls = Arc::new(AtomicU64::new(0));
    tower::service_fn(move |_req: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Full::new(Bytes::from_static(support::BODY)));
        if flaky && n.is_multiple_of(2) {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn tower_call<S, R>(rt: &tokio::runtime::Runtime, svc: &mut S) -> Response<R>
where
    S: Service<Request<Body>, Response = Response<R>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let ready = svc.ready().await.expect("ready");
        ready.call(request()).await.expect("response")
    })
}

fn tower_stacks() {
    // A paused clock: the backoff of the retried case passes at once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let mut bare = inner(false);
    rows.push(row(
        "bare service_fn",
        per_op(|| assert_eq!(tower_call(&rt, &mut bare).status(), 200)),
    ));
    let mut ours = RetryLayer::new(RetryPolicy::default()).layer(inner(false));
    rows.push(row(
        "RetryLayer",
        per_op(|| assert_eq!(tower_call(&rt, &mut ours).status(), 200)),
    ));
    let mut theirs = tower::retry::Retry::new(TowerPolicy::new(), inner(false));
    rows.push(row(
        "tower::retry::Retry",
        per_op(|| assert_eq!(tower_call(&rt, &mut theirs).status(), 200)),
    ));
    table("tower in process, success at once", &rows);

    let mut rows = Vec::new();
    let mut bare = inner(true);
    rows.push(row(
        "bare service_fn, two calls (503, 200)",
        per_op(|| {
            assert_eq!(tower_call(&rt, &mut bare).status(), 503);
            assert_eq!(tower_call(&rt, &mut bare).status(), 200);
        }),
    ));
    let mut ours = RetryLayer::new(RetryPolicy::default()).layer(inner(true));
    rows.push(row(
        "RetryLayer",
        per_op(|| {
            let response = tower_call(&rt, &mut ours);
            assert_eq!(response.status(), 200);
            let report = response.retry_report();
            assert_eq!(report.attempts(), 2);
        }),
    ));
    let mut theirs = tower::retry::Retry::new(TowerPolicy::new(), inner(true));
    rows.push(row(
        "tower::retry::Retry",
        per_op(|| assert_eq!(tower_call(&rt, &mut theirs).status(), 200)),
    ));
    table("tower in process, 503 then 200 (one retry)", &rows);
}

// ---------------------------------------------------------------------------
// reqwest, end to end

fn reqwest_client(middleware: Option<Middleware>) -> ClientWithMiddleware {
    let builder = ClientBuilder::new(reqwest::Client::builder().build().expect("client"));
    match middleware {
        None => builder.build(),
        Some(Middleware::Ours(policy)) => builder.with(RetryMiddleware::new(policy)).build(),
        Some(Middleware::Theirs(policy)) => builder
            .with(RetryTransientMiddleware::new_with_policy(policy))
            .build(),
    }
}

enum Middleware {
    Ours(RetryPolicy),
    Theirs(ExponentialBackoff),
}

fn send(rt: &tokio::runtime::Runtime, client: &ClientWithMiddleware, url: &reqwest::Url) -> u16 {
    rt.block_on(async {
        let response = client.get(url.clone()).send().await.expect("response");
        let status = response.status().as_u16();
        let attempts = Some(response.retry_report().attempts());
        let body = response.bytes().await.expect("body");
        assert_eq!(body.len(), support::BODY.len());
        if let Some(attempts) = attempts {
            // Ours: exactly one retry when the server is flaky.
            assert!(attempts == 1 || (attempts == 2 && status == 200));
        }
        status
    })
}

fn reqwest_stacks() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let url: reqwest::Url = format!("http://{}/", start_server(Script::Ok))
        .parse()
        .expect("url");
    let mut rows = Vec::new();
    let plain = reqwest_client(None);
    rows.push(row(
        "plain reqwest_middleware client",
        per_op(|| assert_eq!(send(&rt, &plain, &url), 200)),
    ));
    let ours = reqwest_client(Some(Middleware::Ours(RetryPolicy::default())));
    rows.push(row(
        "+ RetryMiddleware",
        per_op(|| assert_eq!(send(&rt, &ours, &url), 200)),
    ));
    let theirs = reqwest_client(Some(Middleware::Theirs(
        ExponentialBackoff::builder().build_with_max_retries(3),
    )));
    rows.push(row(
        "+ reqwest_retry::RetryTransientMiddleware",
        per_op(|| assert_eq!(send(&rt, &theirs, &url), 200)),
    ));
    table(
        "reqwest end to end, success at once (target: RetryMiddleware no more than reqwest-retry)",
        &rows,
    );

    // Every other request the server sees gets a 503; requests go one at a
    // time, so each retrying request sees a 503 and then a 200. Backoff of
    // 1 ms (real time: the sockets are real).
    let url: reqwest::Url = format!("http://{}/", start_server(Script::FailEveryOther))
        .parse()
        .expect("url");
    let mut rows = Vec::new();
    let plain = reqwest_client(None);
    rows.push(row(
        "plain client, two sends (503, 200)",
        per_op(|| {
            assert_eq!(send(&rt, &plain, &url), 503);
            assert_eq!(send(&rt, &plain, &url), 200);
        }),
    ));
    let ms = Duration::from_millis(1);
    let ours = reqwest_client(Some(Middleware::Ours(
        RetryPolicy::builder()
            .initial_backoff(ms)
            .max_backoff(ms)
            .jitter(Jitter::None)
            .build()
            .expect("policy"),
    )));
    rows.push(row(
        "+ RetryMiddleware",
        per_op(|| assert_eq!(send(&rt, &ours, &url), 200)),
    ));
    let theirs = reqwest_client(Some(Middleware::Theirs(
        ExponentialBackoff::builder()
            .retry_bounds(ms, ms)
            .build_with_max_retries(3),
    )));
    rows.push(row(
        "+ reqwest_retry::RetryTransientMiddleware",
        per_op(|| assert_eq!(send(&rt, &theirs, &url), 200)),
    ));
    table("reqwest end to end, 503 then 200 (one retry)", &rows);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from a harness
    // run over all benches is ignored (there is nothing to select).
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    core();
    tower_stacks();
    reqwest_stacks();
    println!();
}
