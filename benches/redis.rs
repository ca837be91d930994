//! What a `RedisStore` adds per request on loopback, against the
//! in-memory store: a whole request through the tower layer (over an
//! in-process service, so that only the crate and the store are measured)
//! under a shared rate limit and with only holds shared (p50, p99); the
//! latency of each call a request makes; and how fast a hold reaches
//! another process (subscription against polling). Starts its own
//! `redis-server` (tests/support/redis.rs).
//!
//! `cargo bench --bench redis --features redis` (prints a markdown table).

#[path = "../tests/support/redis.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use http::HeaderMap;
use http_resilience::store::{HoldSync, RedisStore};
use http_resilience::{
    EndpointKey, InMemoryStore, RateLimit, RetryBudget, RetryLayer, RetryPolicy, StateStore,
};
use redis_support::RedisServer;
use tower::{Layer, Service, ServiceExt};

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

fn row(what: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (p50, p99) = percentiles(samples);
    println!("| {what} | {n} | {p50:.1?} | {p99:.1?} |");
}

async fn timed<F: Future>(n: usize, mut f: impl FnMut(usize) -> F) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed());
    }
    samples
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let redis = RedisServer::start();
    let version = redis
        .cmd(&["INFO", "server"])
        .text()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = 5_000;
        let key = EndpointKey::new("api.example.com", 443);
        // A limit that never refuses: what is measured is the call.
        let limit = RateLimit::per_second(1_000_000)
            .burst(1_000_000)
            .build()
            .expect("a valid limit");
        let wait = Duration::from_secs(1);
        let budget = RetryBudget::default();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer token".parse().unwrap());

        println!("Redis {version} on loopback, one process, {n} calls each after 500 to warm up\n");
        println!("| call | n | p50 | p99 |");
        println!("|---|---|---|---|");

        let memory = InMemoryStore::new();
        let e = memory.endpoint(&key);
        let now = tokio::time::Instant::now().into_std();
        let _ = timed(500, |_| async { e.acquire(&limit, now, wait).ok() }).await;
        row(
            "in-memory: a rate-limit turn",
            timed(n, |_| async { e.acquire(&limit, now, wait).ok() }).await,
        );
        row(
            "in-memory: is a hold there (`holding`)",
            timed(n, |_| async { e.holding(now) }).await,
        );

        let store = RedisStore::builder(redis.url())
            .prefix("bench")
            .shared_budget(true)
            .connect()
            .await
            .unwrap();
        let fleet = store.endpoint(&key);
        let _ = timed(500, |_| fleet.acquire(&limit, 1, wait)).await;
        row(
            "redis: a rate-limit turn (one script call)",
            timed(n, |_| fleet.acquire(&limit, 1, wait)).await,
        );
        row(
            "redis: is a hold there (`holding`, local copy)",
            timed(n, |_| async { fleet.holding(Instant::now()) }).await,
        );
        row(
            "redis: the hold of a credential (`partition` + `blocked_until`)",
            timed(n, |_| async {
                fleet.blocked_until(store.partition(&headers))
            })
            .await,
        );
        row(
            "redis: a shared-budget withdrawal",
            timed(n, |_| async {
                fleet.withdraw(&budget, 1).await;
                fleet.deposit(&budget, 1);
            })
            .await,
        );
        let untouched = store.endpoint(&EndpointKey::new("untouched.example.com", 443));
        row(
            "redis: a success's refund to a full shared budget (no call)",
            timed(n, |_| async { untouched.deposit(&budget, 1) }).await,
        );

        // Whole requests through the tower layer, over a service that
        // answers 200 at once: what each store adds to a request.
        println!();
        println!("| a request through the tower layer (in-process service) | n | p50 | p99 |");
        println!("|---|---|---|---|");
        let held = RedisStore::builder(redis.url())
            .prefix("bench-requests-held")
            .connect()
            .await
            .unwrap();
        {
            // Another credential of the endpoint is held: every request
            // works out its partition and reads the local copy.
            let mut other = HeaderMap::new();
            other.insert("authorization", "Bearer another".parse().unwrap());
            held.endpoint(&key)
                .block_for(held.partition(&other), Duration::from_secs(600))
                .await;
        }
        let shared = RedisStore::builder(redis.url())
            .prefix("bench-requests")
            .connect()
            .await
            .unwrap();
        let cases: [(&str, RetryPolicy); 5] = [
            (
                "in-memory store, default policy (holds only)",
                RetryPolicy::default(),
            ),
            (
                "redis store, default policy (holds only), none held",
                RetryPolicy::builder()
                    .state_store(shared.clone())
                    .build()
                    .unwrap(),
            ),
            (
                "redis store, default policy, another credential held",
                RetryPolicy::builder()
                    .state_store(held.clone())
                    .build()
                    .unwrap(),
            ),
            (
                "in-memory store, a rate limit",
                RetryPolicy::builder().rate_limit(limit).build().unwrap(),
            ),
            (
                "redis store, a shared rate limit (one script call)",
                RetryPolicy::builder()
                    .state_store(shared.clone())
                    .rate_limit(limit)
                    .build()
                    .unwrap(),
            ),
        ];
        for (name, policy) in cases {
            let inner = tower::service_fn(|_req: http::Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            });
            let svc = RetryLayer::new(policy).layer(inner);
            let send = |_| {
                let mut svc = svc.clone();
                async move {
                    let mut request = http::Request::new(String::new());
                    *request.uri_mut() = "https://api.example.com/v1".parse().unwrap();
                    request
                        .headers_mut()
                        .insert("authorization", "Bearer token".parse().unwrap());
                    let response = svc.ready().await.unwrap().call(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                }
            };
            let _ = timed(500, send).await;
            row(name, timed(n, send).await);
        }
        drop((held, shared));
        println!();
        println!("| call | n | p50 | p99 |");
        println!("|---|---|---|---|");

        // A hold's way to another process: noted by one store, read by
        // another in a loop, by subscription and by polling.
        for (name, sync) in [
            ("subscription", HoldSync::Subscribe),
            (
                "polling every 50 ms",
                HoldSync::Poll(Duration::from_millis(50)),
            ),
        ] {
            let writer = RedisStore::builder(redis.url())
                .prefix("bench-holds")
                .connect()
                .await
                .unwrap();
            let reader = RedisStore::builder(redis.url())
                .prefix("bench-holds")
                .hold_sync(sync)
                .connect()
                .await
                .unwrap();
            let (w, r) = (writer.endpoint(&key), reader.endpoint(&key));
            let holds = if sync == HoldSync::Subscribe {
                200
            } else {
                100
            };
            let mut samples = Vec::with_capacity(holds);
            for i in 0..holds {
                let mut h = HeaderMap::new();
                h.insert(
                    "authorization",
                    format!("Bearer {name}-{i}").parse().unwrap(),
                );
                let (pw, pr) = (writer.partition(&h), reader.partition(&h));
                if let HoldSync::Poll(every) = sync {
                    // Holds at every phase of the poll, not just after one.
                    let phase = every.as_micros() as u64 * (i as u64 * 37 % 100) / 100;
                    tokio::time::sleep(Duration::from_micros(phase)).await;
                }
                let t = Instant::now();
                w.block_for(pw, Duration::from_secs(60)).await;
                while r.blocked_until(pr).is_none() {
                    tokio::task::yield_now().await;
                    if t.elapsed() > Duration::from_millis(1) {
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    }
                }
                samples.push(t.elapsed());
            }
            row(
                &format!("a hold noted to seen by another process, {name}"),
                samples,
            );
            // What an idle process costs Redis in this mode: commands a
            // second (its heartbeats included), over 2 s.
            drop((w, writer));
            drop((r, reader));
        }
        drop((fleet, untouched, store));
        tokio::time::sleep(Duration::from_millis(100)).await;

        // What one idle process sends to Redis (its heartbeat included),
        // in each mode, with one endpoint held.
        for (name, sync) in [
            ("subscription", HoldSync::Subscribe),
            (
                "polling every 50 ms",
                HoldSync::Poll(Duration::from_millis(50)),
            ),
        ] {
            let idle = RedisStore::builder(redis.url())
                .prefix("bench-holds")
                .hold_sync(sync)
                .connect()
                .await
                .unwrap();
            let watch = {
                let port = redis.port();
                std::thread::spawn(move || {
                    RedisServer::attach(port).monitor(Duration::from_secs(3))
                })
            };
            tokio::time::sleep(Duration::from_millis(3100)).await;
            let calls = watch.join().unwrap().len() as f64 / 3.0;
            println!("| an idle process's calls to Redis a second, {name} | | {calls:.1} | |");
            drop(idle);
        }
    });
}
