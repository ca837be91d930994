//! reqwest end to end: a hyper HTTP/1.1 server on 127.0.0.1 inside the
//! bench (its own thread and current-thread runtime) answers `200` with a
//! 13-byte body. The client (a current-thread runtime on the main thread)
//! sends `GET /` and reads the body through three `reqwest_middleware`
//! clients, each over its own `reqwest::Client` (own connection pool):
//! plain, with [`RetryMiddleware`], and with `reqwest_retry`'s
//! `RetryTransientMiddleware` (exponential backoff, 3 retries, the crate's
//! defaults otherwise). At concurrency 1 and 64 (that many requests in
//! flight at all times).
//!
//! Criterion measures each (throughput in requests per second); then a
//! summary table gives medians and ratios to the plain client from
//! interleaved rounds in this same process (see `support::interleaved`).
//!
//! `cargo bench --bench reqwest`; `QUICK=1` for a short run.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_resilience::{ResponseExt, RetryMiddleware, RetryPolicy};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;

use support::{Contender, Script, config, interleaved, quick, start_server};

const CONCURRENCY: [u64; 2] = [1, 64];

struct Stacks {
    url: reqwest::Url,
    plain: ClientWithMiddleware,
    ours: ClientWithMiddleware,
    theirs: ClientWithMiddleware,
}

impl Stacks {
    fn new(url: reqwest::Url) -> Stacks {
        let client = || reqwest::Client::builder().build().expect("client");
        Stacks {
            url,
            plain: ClientBuilder::new(client()).build(),
            ours: ClientBuilder::new(client())
                .with(RetryMiddleware::new(RetryPolicy::default()))
                .build(),
            theirs: ClientBuilder::new(client())
                .with(RetryTransientMiddleware::new_with_policy(
                    ExponentialBackoff::builder().build_with_max_retries(3),
                ))
                .build(),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One request: send, check the status, read the body.
async fn one(client: &ClientWithMiddleware, url: &reqwest::Url) {
    let response = client.get(url.clone()).send().await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), support::BODY.len());
}

/// `n` requests with `concurrency` in flight; the time they took.
fn run(
    rt: &tokio::runtime::Runtime,
    client: &ClientWithMiddleware,
    url: &reqwest::Url,
    n: u64,
    concurrency: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        if concurrency == 1 {
            for _ in 0..n {
                one(client, url).await;
            }
        } else {
            let left = Arc::new(AtomicU64::new(n));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency.min(n) {
                let (client, url, left) = (client.clone(), url.clone(), left.clone());
                workers.spawn(async move {
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                        .is_ok()
                    {
                        one(&client, &url).await;
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done.expect("worker");
            }
        }
        start.elapsed()
    })
}

/// `REQWEST_ONLY=plain|retry_middleware|reqwest_retry` (and
/// `REQWEST_REQUESTS`, default 2 000): send that many requests one at a
/// time through one client and exit, for instruction counts under
/// `valgrind --tool=callgrind` (two counts, take the difference; the
/// server's share is the same for every client).
fn only(rt: &tokio::runtime::Runtime, stacks: &Stacks) {
    let Ok(name) = std::env::var("REQWEST_ONLY") else {
        return;
    };
    let n = std::env::var("REQWEST_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let client = match name.as_str() {
        "plain" => &stacks.plain,
        "retry_middleware" => &stacks.ours,
        "reqwest_retry" => &stacks.theirs,
        other => panic!("REQWEST_ONLY={other}: not a client"),
    };
    run(rt, client, &stacks.url, n, 1);
    std::process::exit(0);
}

fn end_to_end(c: &mut Criterion) {
    let profiling = std::env::args().any(|a| a == "--profile-time");
    let addr = start_server(Script::Ok);
    let stacks = Stacks::new(format!("http://{addr}/").parse().expect("url"));
    let rt = runtime();
    only(&rt, &stacks);

    // Sanity: ours went through the middleware.
    rt.block_on(async {
        let response = stacks.ours.get(stacks.url.clone()).send().await.unwrap();
        let report = response.retry_report();
        assert_eq!(report.attempts(), 1);
    });

    let named = [
        ("plain", &stacks.plain),
        ("retry_middleware", &stacks.ours),
        ("reqwest_retry", &stacks.theirs),
    ];
    for concurrency in CONCURRENCY {
        let mut group = c.benchmark_group(format!("reqwest_c{concurrency}"));
        group.throughput(Throughput::Elements(1));
        for (name, client) in named {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|n| run(&rt, client, &stacks.url, n, concurrency))
            });
        }
        group.finish();
    }
    if profiling {
        return;
    }

    let (rounds, per_round) = if quick() { (5, 2_000) } else { (21, 10_000) };
    for concurrency in CONCURRENCY {
        let mut contenders: Vec<Contender<'_>> = named
            .iter()
            .map(|&(name, client)| Contender {
                name,
                run: Box::new({
                    let (rt, url) = (&rt, &stacks.url);
                    move |n| run(rt, client, url, n, concurrency)
                }),
            })
            .collect();
        let ns = interleaved(&mut contenders, rounds, per_round);
        println!(
            "\nreqwest end to end, concurrency {concurrency}: median of {rounds} interleaved rounds of {per_round} requests each"
        );
        println!("| client | requests/s | vs plain |");
        println!("|---|---:|---:|");
        for (c, v) in contenders.iter().zip(&ns) {
            println!("| {} | {:.0} | {:.3}x |", c.name, 1e9 / v, ns[0] / v);
        }
        println!(
            "RetryMiddleware / reqwest-retry throughput: {:.3}x (target: at least 0.97x plain, not below reqwest-retry)",
            ns[2] / ns[1]
        );
    }
    println!();
}

criterion_group! {
    name = benches;
    config = config();
    targets = end_to_end
}
criterion_main!(benches);
