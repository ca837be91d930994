//! Many processes, one rate limit: N workers share a limit through Redis.
//!
//! ```text
//! cargo run --example fleet --features redis
//! cargo run --example fleet --features redis -- --workers 8 --rate 20 --burst 5 --secs 10 \
//!     --redis redis://127.0.0.1:6379
//! ```
//!
//! Starts an HTTP server on loopback, connects to the local `redis-server`
//! (and says how to start one if none answers), starts N copies of itself
//! as workers, each trying to send five times the whole limit, and prints
//! each second what the server received against the shared limit.
//!
//! Each worker is an ordinary client: a `RetryPolicy` with a rate limit
//! and the `RedisStore` as its state store, behind `RetryMiddleware`. The
//! engine takes every attempt's turn from the fleet's limit; a request
//! whose turn is further than 250 ms away fails at once with
//! `RATE_LIMITED_LOCALLY`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_resilience::store::RedisStore;
use http_resilience::{RateLimit, ResponseExt, RetryMiddleware, RetryPolicy};

struct Args {
    workers: usize,
    rate: u32,
    burst: u32,
    secs: u64,
    redis: String,
    worker: bool,
    http: Option<SocketAddr>,
    prefix: String,
}

fn args() -> Args {
    let mut a = Args {
        workers: 8,
        rate: 20,
        burst: 5,
        secs: 10,
        redis: "redis://127.0.0.1:6379".into(),
        worker: false,
        http: None,
        prefix: format!("fleet-example-{}", std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--workers" => a.workers = value().parse().unwrap_or_else(|_| usage("--workers N")),
            "--rate" => a.rate = value().parse().unwrap_or_else(|_| usage("--rate N")),
            "--burst" => a.burst = value().parse().unwrap_or_else(|_| usage("--burst N")),
            "--secs" => a.secs = value().parse().unwrap_or_else(|_| usage("--secs N")),
            "--redis" => a.redis = value(),
            "--worker" => a.worker = true,
            "--http" => a.http = Some(value().parse().unwrap_or_else(|_| usage("--http ADDR"))),
            "--prefix" => a.prefix = value(),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    if a.workers == 0 || a.rate == 0 || a.burst == 0 || a.secs == 0 {
        usage("--workers, --rate, --burst and --secs must be positive");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: fleet [--workers 8] [--rate 20] [--burst 5] [--secs 10] \
         [--redis redis://127.0.0.1:6379]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args = args();
    if args.worker {
        worker(args).await;
    } else {
        lead(args).await;
    }
}

/// What the server saw: arrivals per second since the start, and the
/// first and last arrival (µs since the start, plus one; 0 for none).
struct Seen {
    seconds: Vec<AtomicU64>,
    first: AtomicU64,
    last: AtomicU64,
}

/// Counts what arrives.
async fn serve(seen: Arc<Seen>, start: Instant) -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let at = start.elapsed();
                    if let Some(n) = seen.seconds.get(at.as_secs() as usize) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    let us = at.as_micros() as u64 + 1;
                    let _ = seen
                        .first
                        .compare_exchange(0, us, Ordering::AcqRel, Ordering::Acquire);
                    seen.last.fetch_max(us, Ordering::AcqRel);
                    async {
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

async fn lead(args: Args) {
    // Is there a Redis?
    let probe = RedisStore::builder(&args.redis)
        .prefix(args.prefix.clone())
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await;
    if let Err(e) = probe {
        eprintln!(
            "{e} ({})\nStart one with `redis-server --port 6379 --save ''` \
             (Debian: `apt-get install -y redis-server`), or pass --redis URL.",
            e.code()
        );
        std::process::exit(1);
    }
    drop(probe);
    let start = Instant::now();
    let seen = Arc::new(Seen {
        seconds: (0..args.secs + 5).map(|_| AtomicU64::new(0)).collect(),
        first: AtomicU64::new(0),
        last: AtomicU64::new(0),
    });
    let addr = serve(seen.clone(), start).await;
    println!(
        "{} workers, one limit of {}/s (burst {}) through Redis, each worker trying {}/s for {} s",
        args.workers,
        args.rate,
        args.burst,
        5 * args.rate,
        args.secs
    );
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..args.workers)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--worker",
                    "--http",
                    &addr.to_string(),
                    "--redis",
                    &args.redis,
                ])
                .args([
                    "--rate",
                    &args.rate.to_string(),
                    "--burst",
                    &args.burst.to_string(),
                ])
                .args(["--secs", &args.secs.to_string(), "--prefix", &args.prefix])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("a worker")
        })
        .collect();
    let mut total = 0;
    for s in 0..args.secs as usize + 1 {
        tokio::time::sleep_until((start + Duration::from_secs(s as u64 + 1)).into()).await;
        let n = seen.seconds[s].load(Ordering::Relaxed);
        total += n;
        println!(
            "t={:>2}s  received {n:>4}  (limit {}/s, burst {})  {}",
            s + 1,
            args.rate,
            args.burst,
            "#".repeat(n as usize)
        );
    }
    for child in children.drain(..) {
        if let Ok(out) = child.wait_with_output() {
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    let span = Duration::from_micros(
        seen.last
            .load(Ordering::Acquire)
            .saturating_sub(seen.first.load(Ordering::Acquire)),
    );
    let bound = f64::from(args.burst) + f64::from(args.rate) * span.as_secs_f64();
    println!(
        "total {total} in {:.2} s from the first request to the last (the limit allows {bound:.0}: burst + rate x time)",
        span.as_secs_f64()
    );
}

async fn worker(args: Args) {
    let Some(addr) = args.http else {
        usage("--worker needs --http")
    };
    let store = match RedisStore::builder(&args.redis)
        .prefix(args.prefix.clone())
        .connect()
        .await
    {
        Ok(store) => store,
        Err(e) => {
            eprintln!("worker: {e}");
            std::process::exit(1);
        }
    };
    let limit = match RateLimit::per_second(args.rate)
        .burst(args.burst)
        .max_wait(Duration::from_millis(250))
        .build()
    {
        Ok(limit) => limit,
        Err(e) => usage(&format!("--rate / --burst: {e}")),
    };
    let policy = RetryPolicy::builder()
        .state_store(store)
        .rate_limit(limit)
        .build()
        .unwrap_or_else(|e| usage(&e.to_string()));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RetryMiddleware::new(policy))
        .build();
    let url = format!("http://{addr}/");
    let end = Instant::now() + Duration::from_secs(args.secs);
    // Five times the whole limit, from each worker.
    let mut offer = tokio::time::interval(Duration::from_secs(1) / (5 * args.rate));
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        offer.tick().await;
        let (client, url) = (client.clone(), url.clone());
        // Sent when its turn comes, or refused (RATE_LIMITED_LOCALLY).
        tasks.spawn(async move {
            match client.get(&url).send().await {
                Ok(response) => (true, response.retry_report().decided_locally()),
                Err(reqwest_middleware::Error::Middleware(e)) => {
                    let local = e
                        .downcast_ref::<http_resilience::Error>()
                        .is_some_and(|e| e.report().decided_locally());
                    (false, local)
                }
                Err(_) => (false, false),
            }
        });
    }
    let (mut sent, mut refused, mut local) = (0u64, 0u64, 0u64);
    while let Some(Ok((ok, decided_locally))) = tasks.join_next().await {
        if ok {
            sent += 1;
        } else {
            refused += 1;
        }
        local += u64::from(decided_locally);
    }
    // A request whose turn the store's fallback gave (Redis did not
    // answer within its call timeout) says so in its report.
    println!(
        "worker {}: sent {sent}, refused {refused}, decided locally {local}",
        std::process::id()
    );
}
