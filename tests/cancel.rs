//! Cancellation safety: dropping a request's future while it waits (a
//! backoff, a server-requested `Retry-After`) or while an attempt is in
//! flight leaves nothing behind, through both adapters:
//! - no attempt in flight and no clone of the inner service or of the
//!   request body kept (counted with a wrapper around the inner service or
//!   a middleware after the retry middleware, and `Arc` strong counts);
//! - no timer that fires later: the server sees no further attempt after
//!   the paused clock is advanced by an hour;
//! - the same while a preset reads the start of a response body;
//! - no task: once the client is dropped too, the runtime's alive tasks are
//!   back to what they were before the request (`num_alive_tasks`).
//!
//! - load protection: requests dropped while they wait for their turn
//!   under a rate limit, for a server quota's reset, or in a backoff they
//!   paid budget tokens for, or while they are a half-open probe, give back
//!   what they held (tokens refunded, the probe's slot freed, their place
//!   in the rate limiter's line handed to the next request that asks).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Extensions;
use http_resilience::{
    EndpointKey, RateLimit, RetryBudget, RetryLayer, RetryMiddleware, RetryPolicy,
};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use reqwest_middleware::{Middleware, Next};
use support::clients::{BOTH, Client, Got, ReplayBody, Via, base, breaker_policy, get};
use support::{Server, Step};
use tower::{Layer, Service};

#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Waiting out a 10 s backoff after a 503.
    Backoff,
    /// Waiting out `Retry-After: 30` after a 503.
    RetryAfter,
    /// The attempt is in flight: the server never answers.
    InFlight,
    /// GitHub's preset is reading the start of a 403's body (one byte a
    /// second) to tell a secondary rate limit from a permission error.
    Inspecting,
}
const WAITS: [Wait; 4] = [
    Wait::Backoff,
    Wait::RetryAfter,
    Wait::InFlight,
    Wait::Inspecting,
];

fn setup(wait: Wait) -> (RetryPolicy, Vec<Step>) {
    match wait {
        Wait::Backoff => (
            base()
                .initial_backoff(Duration::from_secs(10))
                .max_backoff(Duration::from_secs(10))
                .build()
                .unwrap(),
            vec![Step::status(503), Step::status(200)],
        ),
        Wait::RetryAfter => (
            base().build().unwrap(),
            vec![Step::with(503, &[("retry-after", "30")]), Step::status(200)],
        ),
        Wait::InFlight => (base().build().unwrap(), vec![Step::Hang, Step::status(200)]),
        Wait::Inspecting => (
            http_resilience::Preset::GitHub
                .builder()
                .wall_clock(support::fixed_now)
                .build()
                .unwrap(),
            vec![
                Step::trickle_body(403, "secondary rate limit", Duration::from_secs(1)),
                Step::status(200),
            ],
        ),
    }
}

/// Counts what is alive below the retry adapter: attempts in flight, and
/// holders of `token` (each clone of the wrapper, each attempt).
#[derive(Clone, Default)]
struct Census {
    in_flight: Arc<AtomicUsize>,
    token: Arc<()>,
}

impl Census {
    fn holders(&self) -> usize {
        Arc::strong_count(&self.token)
    }
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
    fn enter(&self) -> Guard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Guard {
            in_flight: self.in_flight.clone(),
            _token: self.token.clone(),
        }
    }
}

struct Guard {
    in_flight: Arc<AtomicUsize>,
    _token: Arc<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The tower side: wraps the inner service.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    census: Census,
}

impl<S, R> Service<R> for Counted<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, request: R) -> Self::Future {
        let guard = self.census.enter();
        let fut = self.inner.call(request);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}

/// The reqwest side: a middleware after the retry middleware.
struct CountedMiddleware(Census);

#[async_trait::async_trait]
impl Middleware for CountedMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let _guard = self.0.enter();
        next.run(request, extensions).await
    }
}

fn in_flight_while_waiting(wait: Wait) -> usize {
    match wait {
        Wait::InFlight => 1,
        // The head has arrived: the attempt below the adapter is over.
        Wait::Backoff | Wait::RetryAfter | Wait::Inspecting => 0,
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Lets every task run and the paused clock move `by`.
async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_request_leaves_nothing_behind() {
    for via in BOTH {
        for wait in WAITS {
            let server = Server::start().await;
            let path = format!("/cancel/{wait:?}");
            let (policy, script) = setup(wait);
            server.script(&path, script);
            let url = server.url(&path);
            advance(Duration::from_millis(1)).await;
            let tasks_before = alive_tasks();
            let census = Census::default();
            let body = ReplayBody::new("some body", false);
            let context = format!("{via:?}, {wait:?}");

            match via {
                Via::Reqwest => {
                    let client = reqwest_middleware::ClientBuilder::new(
                        reqwest::Client::builder().no_proxy().build().unwrap(),
                    )
                    .with(RetryMiddleware::new(policy))
                    .with(CountedMiddleware(census.clone()))
                    .build();
                    let idle_holders = census.holders();
                    let mut send = Box::pin(client.put(&url).body("some body").send());
                    let waited = tokio::time::timeout(Duration::from_millis(500), &mut send).await;
                    assert!(waited.is_err(), "{context}: still waiting at 500 ms");
                    // While waiting: the attempt is in flight only if it hangs.
                    assert_eq!(
                        census.in_flight(),
                        in_flight_while_waiting(wait),
                        "{context}"
                    );
                    drop(send);
                    assert_eq!(census.in_flight(), 0, "{context}: attempt left in flight");
                    assert_eq!(census.holders(), idle_holders, "{context}: token kept");
                    drop(client);
                }
                Via::Tower => {
                    let client =
                        HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody>();
                    let mut svc = RetryLayer::new(policy).layer(Counted {
                        inner: client,
                        census: census.clone(),
                    });
                    let idle_holders = census.holders();
                    let request = http::Request::put(&url).body(body.clone()).unwrap();
                    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
                    let fut = svc.call(request);
                    assert!(census.holders() > idle_holders, "{context}: counting works");
                    assert!(body.copies() > 1, "{context}: counting works");
                    let mut fut = Box::pin(fut);
                    let waited = tokio::time::timeout(Duration::from_millis(500), &mut fut).await;
                    assert!(waited.is_err(), "{context}: still waiting at 500 ms");
                    assert_eq!(
                        census.in_flight(),
                        in_flight_while_waiting(wait),
                        "{context}"
                    );
                    assert!(
                        body.copies() >= 2,
                        "{context}: the layer holds the original"
                    );
                    drop(fut);
                    assert_eq!(census.in_flight(), 0, "{context}: attempt left in flight");
                    assert_eq!(
                        census.holders(),
                        idle_holders,
                        "{context}: a clone of the inner service was kept"
                    );
                    assert_eq!(body.copies(), 1, "{context}: a copy of the body was kept");
                    drop(svc);
                }
            }
            assert_eq!(server.seen(&path).len(), 1, "{context}: one attempt");
            // No timer left to fire a retry later.
            advance(Duration::from_secs(3600)).await;
            assert_eq!(
                server.seen(&path).len(),
                1,
                "{context}: an attempt after the future was dropped"
            );
            assert_eq!(census.holders(), 1, "{context}: only ours is left");
            assert_eq!(
                alive_tasks(),
                tasks_before,
                "{context}: tasks left behind (client connection tasks, timers)"
            );
        }
    }
}

/// The same through spawned tasks aborted mid-wait, many at once: the
/// shape of a server cancelling its handlers.
#[tokio::test(start_paused = true)]
async fn aborting_many_waiting_tasks_leaves_nothing_behind() {
    let server = Server::start().await;
    server.script("/many", vec![Step::status(503)]);
    advance(Duration::from_millis(1)).await;
    let tasks_before = alive_tasks();
    let census = Census::default();
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let svc = RetryLayer::new(
        base()
            .initial_backoff(Duration::from_secs(10))
            .max_backoff(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .layer(Counted {
        inner: client,
        census: census.clone(),
    });
    let rq = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(RetryMiddleware::new(
        base()
            .initial_backoff(Duration::from_secs(10))
            .max_backoff(Duration::from_secs(10))
            .build()
            .unwrap(),
    ))
    .with(CountedMiddleware(census.clone()))
    .build();
    let idle_holders = census.holders();
    let url = server.url("/many");
    let mut handles = Vec::new();
    for i in 0..50 {
        if i % 2 == 0 {
            let mut svc = svc.clone();
            let url = url.clone();
            handles.push(tokio::spawn(async move {
                let request = http::Request::get(&url)
                    .body(ReplayBody::new("", false))
                    .unwrap();
                std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
                let _ = svc.call(request).await;
            }));
        } else {
            let rq = rq.clone();
            let url = url.clone();
            handles.push(tokio::spawn(async move {
                let _ = rq.get(&url).send().await;
            }));
        }
    }
    // All 50 have made their first attempt and are in their backoff.
    advance(Duration::from_secs(1)).await;
    assert_eq!(server.seen("/many").len(), 50);
    assert_eq!(census.in_flight(), 0);
    assert!(
        alive_tasks() >= tasks_before + 50,
        "the metric sees the waiting tasks"
    );
    for h in &handles {
        h.abort();
    }
    for h in handles {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    assert_eq!(
        census.holders(),
        idle_holders,
        "clones kept by aborted tasks"
    );
    advance(Duration::from_secs(3600)).await;
    assert_eq!(server.seen("/many").len(), 50, "a retry after the abort");
    drop((svc, rq));
    advance(Duration::from_secs(3600)).await;
    assert_eq!(census.holders(), 1);
    assert_eq!(alive_tasks(), tasks_before, "tasks left behind");
}

/// Spawns `n` GETs of `url` through `client`.
fn spawn_gets(client: &Client, url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Got>> {
    (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move { client.send(&url, &get()).await })
        })
        .collect()
}

async fn abort_all(handles: Vec<tokio::task::JoinHandle<Got>>) {
    for h in &handles {
        h.abort();
    }
    for h in handles {
        assert!(h.await.unwrap_err().is_cancelled());
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_requests_mid_wait_leaks_no_load_protection_state() {
    for via in BOTH {
        let server = Server::start().await;
        let key = EndpointKey::new("127.0.0.1", server.addr().port());

        // Budget: ten requests in a 10 s backoff have paid 5 tokens each;
        // aborting them refunds every token.
        server.script("/down", vec![Step::status(503)]);
        let budget = RetryBudget::builder().capacity(100).build().unwrap();
        let policy = base()
            .initial_backoff(Duration::from_secs(10))
            .max_backoff(Duration::from_secs(10))
            .retry_budget(budget)
            .build()
            .unwrap();
        let state = policy.state_store().endpoint(&key);
        let client = Client::new(via, policy);
        let handles = spawn_gets(&client, &server.url("/down"), 10);
        advance(Duration::from_secs(1)).await;
        assert_eq!(server.count("/down"), 10);
        assert_eq!(
            state.tokens(&budget),
            50,
            "{via:?}: each paid for its retry"
        );
        abort_all(handles).await;
        assert_eq!(state.tokens(&budget), 100, "{via:?}: refunded");
        advance(Duration::from_secs(3600)).await;
        assert_eq!(
            server.count("/down"),
            10,
            "{via:?}: no retry after the abort"
        );

        // Breaker: a half-open probe dropped in flight frees its slot.
        server.script("/hang", vec![Step::Hang]);
        server.script("/ok", vec![Step::status(503), Step::status(200)]);
        let policy = breaker_policy(1, Duration::from_secs(5));
        let client = Client::new(via, policy);
        client.send(&server.url("/ok"), &get()).await;
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}");
        advance(Duration::from_secs(5)).await;
        let probe = spawn_gets(&client, &server.url("/hang"), 1);
        while server.count("/hang") < 1 {
            tokio::task::yield_now().await;
        }
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(
            got.code,
            Some("CIRCUIT_OPEN"),
            "{via:?}: the probe's slot is taken"
        );
        abort_all(probe).await;
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(
            got.status,
            Some(200),
            "{via:?}: the slot was freed: {got:?}"
        );
        assert_eq!(server.count("/ok"), 2);

        // Rate limit: aborted waiters keep no turn. 1/s: one goes at 0,
        // twenty wait; they are aborted at 100 ms; the next request gets
        // the turn at 1 s, not after twenty more seconds.
        server.script("/limited", vec![Step::status(200)]);
        let policy = base()
            .rate_limit(
                RateLimit::per_second(1)
                    .burst(1)
                    .max_wait(Duration::from_secs(3600))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let t0 = tokio::time::Instant::now();
        client.send(&server.url("/limited"), &get()).await;
        let waiting = spawn_gets(&client, &server.url("/limited"), 20);
        advance(Duration::from_millis(100)).await;
        abort_all(waiting).await;
        let got = client.send(&server.url("/limited"), &get()).await;
        assert_eq!(got.status, Some(200));
        let seen = server.seen("/limited");
        assert_eq!(seen.len(), 2, "{via:?}");
        assert_eq!(seen[1].at - t0, Duration::from_secs(1), "{via:?}");

        // Server quota: requests held until the reset and aborted are
        // never sent.
        server.script("/quota", vec![support::quota_gone(30), Step::status(200)]);
        let client = Client::new(via, base().build().unwrap());
        client.send(&server.url("/quota"), &get()).await;
        let held = spawn_gets(&client, &server.url("/quota"), 10);
        advance(Duration::from_secs(1)).await;
        abort_all(held).await;
        advance(Duration::from_secs(3600)).await;
        assert_eq!(server.count("/quota"), 1, "{via:?}");
    }
}

/// A request dropped while it waits for its rate-limit turn gives its place
/// in line back: the next request to ask takes it, the others keep theirs,
/// and the limit is never exceeded. 1/s: one goes at 0; five wait for 1 s
/// to 5 s; the ones waiting for 2 s and 3 s are aborted; two newcomers take
/// 2 s and 3 s.
#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_turn_to_the_next_request() {
    use support::clients::Req;
    for via in BOTH {
        let server = Server::start().await;
        server.script("/limited", vec![Step::status(200)]);
        let policy = base()
            .rate_limit(
                RateLimit::per_second(1)
                    .burst(1)
                    .max_wait(Duration::from_secs(3600))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let t0 = tokio::time::Instant::now();
        let send = |who: &'static str| {
            let (client, url) = (client.clone(), server.url("/limited"));
            let req = Req {
                headers: vec![("x-who", who)],
                ..get()
            };
            tokio::spawn(async move { client.send(&url, &req).await })
        };
        send("first").await.unwrap();
        let mut waiting: Vec<_> = ["w1", "w2", "w3", "w4", "w5"]
            .into_iter()
            .map(send)
            .collect();
        advance(Duration::from_millis(100)).await;
        let w3 = waiting.remove(2);
        let w2 = waiting.remove(1);
        for h in [w2, w3] {
            h.abort();
            assert!(h.await.unwrap_err().is_cancelled());
        }
        let newcomers = [send("a"), send("b")];
        for h in waiting.into_iter().chain(newcomers) {
            assert_eq!(h.await.unwrap().status, Some(200), "{via:?}");
        }
        let seen: Vec<(u64, String)> = server
            .seen("/limited")
            .iter()
            .map(|s| {
                let at = (s.at - t0).as_millis() as u64;
                (at, s.header("x-who").unwrap().to_string())
            })
            .collect();
        let want: Vec<(u64, String)> = [
            (0, "first"),
            (1000, "w1"),
            (2000, "a"),
            (3000, "b"),
            (4000, "w4"),
            (5000, "w5"),
        ]
        .into_iter()
        .map(|(at, who)| (at, who.to_string()))
        .collect();
        assert_eq!(seen, want, "{via:?}");
    }
}
