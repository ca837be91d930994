//! Load protection through both adapters, against the loopback server,
//! under tokio's paused clock: the retry budget in a total outage and on a
//! healthy service, the circuit breaker through open, half-open and closed,
//! the local rate limit, server-announced quotas, and the order of the
//! stages.
//!
//! The figures the issue asks for are printed (`cargo test --test
//! protection -- --nocapture`), and CI prints them too.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_like::join_all;
use http_resilience::rate_limit::Turn;
use http_resilience::store::Partition;
use http_resilience::{
    CircuitBreaker, EndpointKey, EndpointState, InMemoryStore, Preset, RateLimit, RetryBudget,
    RetryPolicy, Scope, StateStore, StopReason, ThrottleReason,
};
use support::clients::{BOTH, Client, Got, Req, base, breaker_policy, get};
use support::{Server, Step, fixed_now};
use tokio::time::Instant;

/// `join_all` without a `futures` dependency: spawn, then await in order.
mod futures_like {
    pub async fn join_all<F>(futures: Vec<F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("request task"));
        }
        out
    }
}

/// Sends `n` GETs to `url` at once through `client`.
async fn burst(client: &Client, url: &str, n: usize) -> Vec<Got> {
    join_all(
        (0..n)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_string());
                async move { client.send(&url, &get()).await }
            })
            .collect(),
    )
    .await
}

fn codes(got: &[Got]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for g in got {
        let key = match (g.code, g.status) {
            (Some(code), _) => code.to_string(),
            (None, Some(s)) => s.to_string(),
            _ => "?".into(),
        };
        *m.entry(key).or_default() += 1;
    }
    m
}

fn key(server: &Server) -> EndpointKey<'static> {
    EndpointKey::new("127.0.0.1", server.addr().port())
}

// ---------------------------------------------------------------- budget

#[tokio::test(start_paused = true)]
async fn a_total_outage_costs_at_most_1_2x_with_the_default_budget() {
    const N: usize = 1000;
    for via in BOTH {
        let mut seen = vec![];
        for budget in [Some(RetryBudget::default()), None] {
            let server = Server::start().await;
            server.set_recording(false);
            server.script("/down", vec![Step::status(503)]);
            let policy = base().max_retries(3).retry_budget(budget).build().unwrap();
            let client = Client::new(via, policy.clone());
            let got = burst(&client, &server.url("/down"), N).await;
            let sent = server.count("/down");
            let ratio = sent as f64 / N as f64;
            let label = if budget.is_some() {
                "default budget"
            } else {
                "no budget"
            };
            println!(
                "outage, {N} concurrent requests, 3 retries, {via:?}, {label}: server saw {sent} requests = {ratio:.2}x; results {:?}",
                codes(&got)
            );
            if budget.is_some() {
                assert!(ratio <= 1.2, "{via:?}: {ratio}");
                // 500 tokens at 5 a retry: exactly 100 retries, whatever the
                // interleaving.
                assert_eq!(sent, N + 100, "{via:?}");
                assert!(
                    got.iter().all(|g| g.code == Some("RETRY_BUDGET_EXHAUSTED")),
                    "{via:?}: {:?}",
                    codes(&got)
                );
                // the error carries the last response
                assert!(got.iter().all(|g| g.error.as_ref().unwrap().status()
                    == Some(http::StatusCode::SERVICE_UNAVAILABLE)));
                assert!(got.iter().all(|g| g.body.is_some()));
                assert!(
                    got.iter()
                        .all(|g| g.report.stop_reason() == Some(StopReason::BudgetExhausted))
                );
                let state = policy.state_store().endpoint(&key(&server));
                assert_eq!(state.tokens(&RetryBudget::default()), 0);
            } else {
                assert_eq!(sent, 4 * N, "{via:?}");
                assert!(got.iter().all(|g| g.code == Some("MAX_RETRIES_EXCEEDED")));
            }
            seen.push(sent);
        }
        println!(
            "outage figure, {via:?}: {:.2}x with the default budget, {:.2}x without",
            seen[0] as f64 / N as f64,
            seen[1] as f64 / N as f64
        );
    }
}

/// The budget is on by default: on a service that fails one attempt in
/// ten (at random, 50 requests in flight), it never refuses a retry, and
/// every request ends as it would without it.
#[tokio::test(start_paused = true)]
async fn the_default_budget_never_refuses_a_healthy_service() {
    const N: usize = 2000;
    for via in BOTH {
        for p in [0.1, 0.2] {
            let server = Server::start().await;
            server.set_recording(false);
            server.script(
                "/ok",
                vec![Step::chance(p, 7, Step::status(503), Step::status(200))],
            );
            let policy = base().max_retries(3).build().unwrap();
            let client = Client::new(via, policy.clone());
            let mut all = vec![];
            for _ in 0..N / 50 {
                all.extend(burst(&client, &server.url("/ok"), 50).await);
            }
            let c = codes(&all);
            let refused = c.get("RETRY_BUDGET_EXHAUSTED").copied().unwrap_or(0);
            let tokens = policy
                .state_store()
                .endpoint(&key(&server))
                .tokens(&RetryBudget::default());
            println!(
                "healthy service failing {:.0}% of attempts, {via:?}: {N} requests, {} attempts, results {c:?}, tokens left {tokens}/500",
                p * 100.0,
                server.count("/ok")
            );
            assert_eq!(refused, 0, "{via:?} p={p}: {c:?}");
            assert!(tokens >= 450, "{via:?} p={p}: {tokens}");
        }
    }
}

/// A retry after a timeout costs more; a success after retries refunds
/// what they cost; a first-attempt success refunds 1.
#[tokio::test(start_paused = true)]
async fn budget_costs_and_refunds() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/flaky", vec![Step::status(503), Step::status(200)]);
        server.script("/hang", vec![Step::Hang, Step::status(200)]);
        server.script("/fail", vec![Step::status(503), Step::status(404)]);
        let budget = RetryBudget::builder()
            .capacity(100)
            .success_refund(2)
            .build()
            .unwrap();
        let policy = base()
            .retry_budget(budget)
            .attempt_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let client = Client::new(via, policy.clone());
        let state = policy.state_store().endpoint(&key(&server));

        // 503 then 404: the retry's 5 tokens are spent for good
        let got = client.send(&server.url("/fail"), &get()).await;
        assert_eq!(got.status, Some(404));
        assert_eq!(state.tokens(&budget), 95, "{via:?}");
        // a timeout, then a success: 10 paid, then refunded
        let got = client.send(&server.url("/hang"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}: {got:?}");
        assert_eq!(got.report.retries(), 1);
        assert_eq!(
            state.tokens(&budget),
            95,
            "{via:?}: a success refunds its retries"
        );
        // 503 then 200: 5 paid and refunded
        client.send(&server.url("/flaky"), &get()).await;
        assert_eq!(state.tokens(&budget), 95);
        // a first-attempt success: +2
        client.send(&server.url("/flaky"), &get()).await;
        assert_eq!(state.tokens(&budget), 97, "{via:?}");
        // capped at the capacity
        for _ in 0..5 {
            client.send(&server.url("/flaky"), &get()).await;
        }
        assert_eq!(state.tokens(&budget), 100, "{via:?}");
    }
}

/// Budgets are per endpoint: an outage of one host leaves another's
/// retries alone.
#[tokio::test(start_paused = true)]
async fn one_hosts_outage_does_not_spend_anothers_budget() {
    for via in BOTH {
        let down = Server::start().await;
        let flaky = Server::start().await;
        down.script("/", vec![Step::status(503)]);
        flaky.script("/", vec![Step::status(503), Step::status(200)]);
        let policy = base()
            .retry_budget(RetryBudget::builder().capacity(20).build().unwrap())
            .build()
            .unwrap();
        let client = Client::new(via, policy.clone());
        burst(&client, &down.url("/"), 10).await;
        assert_eq!(down.count("/"), 14, "{via:?}: 4 retries for 20 tokens");
        let got = client.send(&flaky.url("/"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        assert_eq!(got.report.retries(), 1);

        // `Scope::Policy`: one budget for every host
        let shared = base()
            .retry_budget(RetryBudget::builder().capacity(20).build().unwrap())
            .scope(Scope::Policy)
            .build()
            .unwrap();
        let client = Client::new(via, shared);
        burst(&client, &down.url("/"), 10).await;
        flaky.script("/2", vec![Step::status(503), Step::status(200)]);
        let got = client.send(&flaky.url("/2"), &get()).await;
        assert_eq!(got.code, Some("RETRY_BUDGET_EXHAUSTED"), "{via:?}");
        assert_eq!(got.report.endpoint(), Some("(policy)"));
    }
}

// --------------------------------------------------------------- breaker

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_probes_and_closes_and_sends_nothing_while_open() {
    for via in BOTH {
        let server = Server::start().await;
        // four failures, then the service is back
        server.script(
            "/svc",
            vec![
                Step::status(503),
                Step::status(503),
                Step::status(503),
                Step::status(503),
                Step::status(200),
            ],
        );
        let policy = breaker_policy(3, Duration::from_secs(5));
        let client = Client::new(via, policy);
        let url = server.url("/svc");
        let t0 = Instant::now();
        for _ in 0..3 {
            let got = client.send(&url, &get()).await;
            assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        }
        assert_eq!(server.count("/svc"), 3);

        // open: refused at once, nothing sent, told when to come back
        let got = client.send(&url, &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}");
        let error = got.error.as_ref().unwrap();
        assert_eq!(error.retry_in(), Some(Duration::from_secs(5)));
        assert_eq!(got.report.attempts(), 0);
        assert_eq!(got.elapsed, Duration::ZERO);
        assert_eq!(
            got.report.endpoint(),
            Some(format!("127.0.0.1:{}", server.addr().port()).as_str())
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let got = client.send(&url, &get()).await;
        assert_eq!(
            got.error.as_ref().unwrap().retry_in(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(server.count("/svc"), 3, "{via:?}: nothing sent while open");

        // half-open at 5 s: one probe, which fails: open again for 5 s
        tokio::time::advance(Duration::from_secs(3)).await;
        let got = client.send(&url, &get()).await;
        assert_eq!(
            got.code,
            Some("MAX_RETRIES_EXCEEDED"),
            "{via:?}: the probe went"
        );
        assert_eq!(server.count("/svc"), 4);
        let got = client.send(&url, &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}: reopened");
        assert_eq!(server.count("/svc"), 4);

        // at 10 s the probe succeeds: closed, everything flows
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..5 {
            let got = client.send(&url, &get()).await;
            assert_eq!(got.status, Some(200), "{via:?}");
        }
        assert_eq!(server.count("/svc"), 9);
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        let seen = server.seen("/svc");
        let offsets: Vec<u64> = seen
            .iter()
            .map(|s| s.at.duration_since(t0).as_secs())
            .collect();
        assert_eq!(offsets, [0, 0, 0, 5, 10, 10, 10, 10, 10], "{via:?}");
    }
}

/// While a probe is in flight the breaker refuses the others; a request
/// whose failure opens the breaker stops with its last response instead of
/// waiting for a retry that would be refused.
#[tokio::test(start_paused = true)]
async fn half_open_admits_one_probe_and_a_failure_that_opens_it_keeps_its_response() {
    for via in BOTH {
        let server = Server::start().await;
        server.script(
            "/svc",
            vec![
                Step::body(503, "overloaded"),
                Step::trickle_head(200, Duration::from_millis(500)),
                Step::status(200),
            ],
        );
        let policy = base()
            .max_retries(3)
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .break_duration(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let url = server.url("/svc");
        let got = client.send(&url, &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}");
        assert_eq!(
            got.body.as_deref(),
            Some("overloaded"),
            "{via:?}: the last response is kept"
        );
        assert_eq!(got.report.attempts(), 1);
        assert_eq!(
            got.report.total_backoff(),
            Duration::ZERO,
            "no wait for a refused retry"
        );

        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.send(&url, &get()).await })
        };
        while server.count("/svc") < 2 {
            tokio::task::yield_now().await;
        }
        let other = client.send(&url, &get()).await;
        assert_eq!(
            other.code,
            Some("CIRCUIT_OPEN"),
            "{via:?}: one probe at a time"
        );
        let probe = probe.await.unwrap();
        assert_eq!(probe.status, Some(200), "{via:?}");
        let after = client.send(&url, &get()).await;
        assert_eq!(after.status, Some(200), "{via:?}: closed");
        assert_eq!(server.count("/svc"), 3);
    }
}

/// A half-open probe that never ends (no attempt timeout) does not keep
/// the breaker shut: after the maximum half-open wait (30 s by default) a
/// new probe goes, the refusals until then say exactly when, and the stuck
/// probe's late failure changes nothing.
#[tokio::test(start_paused = true)]
async fn a_hung_half_open_probe_does_not_keep_the_breaker_shut() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/fail", vec![Step::status(503)]);
        server.script(
            "/stuck",
            vec![Step::Raw {
                parts: vec![(
                    Duration::from_secs(100),
                    b"HTTP/1.1 503 X\r\ncontent-length: 0\r\n\r\n".to_vec(),
                )],
                end: support::End::KeepAlive,
            }],
        );
        server.script("/ok", vec![Step::status(200)]);
        let policy = breaker_policy(1, Duration::from_secs(5));
        let client = Client::new(via, policy);
        let got = client.send(&server.url("/fail"), &get()).await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        tokio::time::advance(Duration::from_secs(5)).await;
        let stuck = {
            let (client, url) = (client.clone(), server.url("/stuck"));
            tokio::spawn(async move { client.send(&url, &get()).await })
        };
        while server.count("/stuck") < 1 {
            tokio::task::yield_now().await;
        }
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}: the probe is out");
        assert_eq!(
            got.error.as_ref().unwrap().retry_in(),
            Some(Duration::from_secs(30)),
            "{via:?}: the next probe goes 30 s after this one"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(
            got.error.as_ref().map(|e| e.retry_in()),
            Some(Some(Duration::from_secs(20))),
            "{via:?}"
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}: a new probe went: {got:?}");
        assert_eq!(server.count("/ok"), 1, "{via:?}");
        // the stuck probe fails at last (100 s after it went): stale, so
        // the closed breaker stays closed
        let stuck = stuck.await.unwrap();
        assert_eq!(stuck.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}: still closed");
        assert_eq!(server.count("/ok"), 2, "{via:?}");
    }
}

// ------------------------------------------------------------ rate limit

#[tokio::test(start_paused = true)]
async fn a_10_per_second_limit_spreads_100_requests_over_10_seconds() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/api", vec![Step::status(200)]);
        let policy = base()
            .rate_limit(RateLimit::per_second(10).burst(1).build().unwrap())
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let t0 = Instant::now();
        let got = burst(&client, &server.url("/api"), 100).await;
        assert!(
            got.iter().all(|g| g.status == Some(200)),
            "{via:?}: {:?}",
            codes(&got)
        );
        let mut at: Vec<Duration> = server
            .seen("/api")
            .iter()
            .map(|s| s.at.duration_since(t0))
            .collect();
        at.sort();
        let span = *at.last().unwrap();
        println!(
            "rate limit 10/s, burst 1, {via:?}: 100 requests sent over {span:?} of paused time"
        );
        assert_eq!(at.len(), 100);
        assert!(
            span >= Duration::from_millis(9900) && span < Duration::from_millis(10500),
            "{via:?}: {span:?}"
        );
        // never more than one turn per 100 ms
        for pair in at.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(100),
                "{via:?}: {pair:?}"
            );
        }
        let throttled: Vec<Duration> = got.iter().map(|g| g.report.total_throttled()).collect();
        assert_eq!(
            throttled.iter().filter(|t| t.is_zero()).count(),
            1,
            "{via:?}"
        );
        assert!(got.iter().all(|g| {
            g.report
                .throttles()
                .iter()
                .all(|t| t.reason() == ThrottleReason::LocalRateLimit && t.before_attempt() == 1)
        }));
    }
}

#[tokio::test(start_paused = true)]
async fn a_turn_beyond_max_wait_fails_with_rate_limited_locally() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/api", vec![Step::status(200)]);
        let policy = base()
            .rate_limit(
                RateLimit::per_second(10)
                    .burst(1)
                    .max_wait(Duration::from_millis(500))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let got = burst(&client, &server.url("/api"), 20).await;
        let c = codes(&got);
        // turns at 0, 100, ..., 500 ms; the rest would wait beyond 500 ms
        assert_eq!(c.get("200"), Some(&6), "{via:?}: {c:?}");
        assert_eq!(c.get("RATE_LIMITED_LOCALLY"), Some(&14), "{via:?}: {c:?}");
        assert_eq!(server.count("/api"), 6);
        let mut refused_in = vec![];
        for g in got.iter().filter(|g| g.code.is_some()) {
            let e = g.error.as_ref().unwrap();
            refused_in.push(e.retry_in().unwrap());
            assert_eq!(g.report.attempts(), 0);
            assert!(matches!(
                g.report.stop_reason(),
                Some(StopReason::RateLimitedLocally { .. })
            ));
            // refused at once, not after waiting out max_wait
            assert_eq!(g.elapsed, Duration::ZERO, "{via:?}: {e}");
        }
        // a refusal takes no turn: each says when the next free one comes
        assert_eq!(refused_in, [Duration::from_millis(600); 14], "{via:?}");
    }
}

/// A store that counts how often the limiter is asked for a turn.
#[derive(Debug, Default)]
struct CountingStore {
    inner: InMemoryStore,
    asks: Arc<AtomicUsize>,
}

impl StateStore for CountingStore {
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState> {
        Arc::new(CountingEndpoint {
            inner: self.inner.endpoint(key),
            asks: self.asks.clone(),
        })
    }
    fn quiet(&self, now: std::time::Instant) -> bool {
        self.inner.quiet(now)
    }
}

#[derive(Debug)]
struct CountingEndpoint {
    inner: Arc<dyn EndpointState>,
    asks: Arc<AtomicUsize>,
}

impl EndpointState for CountingEndpoint {
    fn withdraw(&self, budget: &RetryBudget, cost: u32) -> bool {
        self.inner.withdraw(budget, cost)
    }
    fn deposit(&self, budget: &RetryBudget, tokens: u32) {
        self.inner.deposit(budget, tokens)
    }
    fn circuit(&self, update: &mut dyn FnMut(&mut http_resilience::circuit::CircuitState)) {
        self.inner.circuit(update)
    }
    fn blocked_until(&self, partition: Partition) -> Option<std::time::Instant> {
        self.inner.blocked_until(partition)
    }
    fn block_until(&self, partition: Partition, until: std::time::Instant) {
        self.inner.block_until(partition, until)
    }
    fn holding(&self, now: std::time::Instant) -> bool {
        self.inner.holding(now)
    }
    fn acquire(
        &self,
        limit: &RateLimit,
        now: std::time::Instant,
        max_wait: Duration,
    ) -> Result<Turn, Duration> {
        self.asks.fetch_add(1, Ordering::SeqCst);
        self.inner.acquire(limit, now, max_wait)
    }
    fn release(&self, limit: &RateLimit, turn: Turn) {
        self.inner.release(limit, turn)
    }
    fn tokens(&self, budget: &RetryBudget) -> u32 {
        self.inner.tokens(budget)
    }
}

/// 300 requests at once under 10/s: each holds its place in line, so they
/// reach the server first come, first served, one every 100 ms, and the
/// limiter is asked once per request however many wait.
#[tokio::test(start_paused = true)]
async fn three_hundred_waiters_are_served_in_order_asking_the_limiter_once_each() {
    const N: usize = 300;
    for via in BOTH {
        let server = Server::start().await;
        server.script("/api", vec![Step::status(200)]);
        let store = Arc::new(CountingStore::default());
        let policy = base()
            .rate_limit(RateLimit::per_second(10).burst(1).build().unwrap())
            .state_store(store.clone())
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let t0 = Instant::now();
        let seqs: Vec<&'static str> = (0..N)
            .map(|i| &*Box::leak(i.to_string().into_boxed_str()))
            .collect();
        let handles: Vec<_> = seqs
            .iter()
            .map(|seq| {
                let (client, url) = (client.clone(), server.url("/api"));
                let req = Req {
                    headers: vec![("x-seq", *seq)],
                    ..get()
                };
                tokio::spawn(async move { client.send(&url, &req).await })
            })
            .collect();
        let mut got = vec![];
        for h in handles {
            got.push(h.await.unwrap());
        }
        assert!(
            got.iter().all(|g| g.status == Some(200)),
            "{via:?}: {:?}",
            codes(&got)
        );
        let seen = server.seen("/api");
        assert_eq!(seen.len(), N);
        let order: Vec<&str> = seen.iter().map(|s| s.header("x-seq").unwrap()).collect();
        assert_eq!(order, seqs, "{via:?}: first come, first served");
        for (n, s) in seen.iter().enumerate() {
            assert_eq!(
                s.at - t0,
                Duration::from_millis(100 * n as u64),
                "{via:?}: request {n}"
            );
        }
        let asks = store.asks.load(Ordering::SeqCst);
        println!(
            "rate limit 10/s, {N} concurrent waiters, {via:?}: {asks} limiter asks = {:.2} per request",
            asks as f64 / N as f64
        );
        assert!(asks <= 2 * N, "{via:?}: {asks} asks for {N} requests");
    }
}

/// An attempt the breaker refuses gives its rate-limit turn back at once:
/// refusals while the breaker is open keep no turn from the requests that
/// follow.
#[tokio::test(start_paused = true)]
async fn attempts_the_breaker_refuses_keep_no_rate_limit_turn() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/fail", vec![Step::status(503)]);
        server.script("/ok", vec![Step::status(200)]);
        // one turn every 10 s, three at once; open for 1 s after a failure
        let policy = base()
            .max_retries(0)
            .rate_limit(RateLimit::per_minute(6).burst(3).build().unwrap())
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .break_duration(Duration::from_secs(1))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let t0 = Instant::now();
        let got = client.send(&server.url("/fail"), &get()).await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let got = client.send(&server.url("/ok"), &get()).await;
            assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}");
            assert_eq!(got.elapsed, Duration::ZERO, "{via:?}: refused at once");
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        // the two turns left of the burst: the probe, then one more
        for _ in 0..2 {
            let got = client.send(&server.url("/ok"), &get()).await;
            assert_eq!(got.status, Some(200), "{via:?}: {got:?}");
            assert_eq!(got.elapsed, Duration::ZERO, "{via:?}: {got:?}");
        }
        // the burst is spent: the next turn is 10 s after the first
        let got = client.send(&server.url("/ok"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let at: Vec<Duration> = server.seen("/ok").iter().map(|s| s.at - t0).collect();
        let ms = Duration::from_millis;
        assert_eq!(at, [ms(1000), ms(1000), ms(10_000)], "{via:?}");
    }
}

/// Rate limiting sits in front of the retries: a retry takes its turn too.
#[tokio::test(start_paused = true)]
async fn retries_take_their_turn() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/api", vec![Step::status(503), Step::status(200)]);
        let policy = base()
            .rate_limit(RateLimit::per_second(1).burst(1).build().unwrap())
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let got = client.send(&server.url("/api"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let seen = server.seen("/api");
        assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(1), "{via:?}");
        // 100 ms of backoff, then 900 ms more for the turn
        assert_eq!(got.report.total_backoff(), Duration::from_millis(100));
        let t = got.report.throttles();
        assert_eq!(t.len(), 1, "{via:?}: {t:?}");
        assert_eq!(t[0].reason(), ThrottleReason::LocalRateLimit);
        assert_eq!(t[0].before_attempt(), 2);
        assert_eq!(t[0].waited(), Duration::from_millis(900));
    }
}

// ---------------------------------------------------- server-driven quotas

#[tokio::test(start_paused = true)]
async fn github_quota_gone_holds_the_next_50_requests_until_the_reset_and_no_other_host() {
    for via in BOTH {
        let github = Server::start().await;
        let other = Server::start().await;
        github.script(
            "/repos",
            vec![
                support::quota_gone(30),
                Step::with(200, &[("x-ratelimit-remaining", "4999")]),
            ],
        );
        other.script("/x", vec![Step::status(200)]);
        let policy = Preset::GitHub
            .builder()
            .wall_clock(fixed_now)
            .seed(7)
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        let t0 = Instant::now();
        let first = client.send(&github.url("/repos"), &get()).await;
        assert_eq!(
            first.status,
            Some(200),
            "the response that says so is returned as is"
        );

        let held = {
            let (client, url) = (client.clone(), github.url("/repos"));
            tokio::spawn(async move {
                join_all(
                    (0..50)
                        .map(|_| {
                            let (client, url) = (client.clone(), url.clone());
                            async move { client.send(&url, &get()).await }
                        })
                        .collect(),
                )
                .await
            })
        };
        let free = burst(&client, &other.url("/x"), 50).await;
        assert!(
            free.iter()
                .all(|g| g.status == Some(200) && g.elapsed.is_zero())
        );
        assert!(
            other.seen("/x").iter().all(|s| s.at == t0),
            "{via:?}: another host is not held"
        );
        let held = held.await.unwrap();
        assert!(held.iter().all(|g| g.status == Some(200)), "{via:?}");
        let seen = github.seen("/repos");
        assert_eq!(seen.len(), 51);
        let sent: Vec<Duration> = seen[1..].iter().map(|s| s.at - t0).collect();
        let earliest = *sent.iter().min().unwrap();
        let latest = *sent.iter().max().unwrap();
        let instants: std::collections::BTreeSet<Duration> = sent.iter().copied().collect();
        println!(
            "GitHub quota gone, reset in 30 s, {via:?}: 50 held requests sent from {earliest:?} to {latest:?}, at {} distinct instants",
            instants.len()
        );
        // released after the reset, within the 1 s spread, not all at once
        let (reset, spread) = (Duration::from_secs(30), Duration::from_secs(1));
        assert!(earliest >= reset, "{via:?}: {earliest:?}");
        assert!(latest <= reset + spread, "{via:?}: {latest:?}");
        assert!(instants.len() >= 25, "{via:?}: {instants:?}");
        for g in &held {
            let t = g.report.throttles();
            assert_eq!(t.len(), 1, "{via:?}: {t:?}");
            assert_eq!(t[0].reason(), ThrottleReason::ServerQuota);
            assert!(
                t[0].waited() >= reset && t[0].waited() <= reset + spread,
                "{via:?}: {t:?}"
            );
            // the wait is the whole delay (timers fire on the millisecond)
            let late = g.elapsed - t[0].waited();
            assert!(late < Duration::from_millis(1), "{via:?}: {late:?}");
            assert_eq!(g.report.attempts(), 1);
            assert_eq!(
                g.report.endpoint(),
                Some(format!("127.0.0.1:{}", github.addr().port()).as_str())
            );
        }
    }
}

/// A quota belongs to the credential that ran out (GitHub's limits are per
/// token, OpenAI's and Anthropic's per key): a hold applies only to
/// requests with the same credential; requests without one share the
/// host's hold. For each credential header the crate knows.
#[tokio::test(start_paused = true)]
async fn a_quota_hold_belongs_to_the_credential_that_ran_out() {
    let credentials = [
        (
            "authorization",
            "Bearer ghp_tokenA-secret",
            "Bearer ghp_tokenB-secret",
        ),
        ("x-api-key", "sk-ant-keyA-secret", "sk-ant-keyB-secret"),
        ("api-key", "azure-keyA-secret", "azure-keyB-secret"),
    ];
    for via in BOTH {
        for (header, a, b) in credentials {
            let server = Server::start().await;
            server.script("/gone", vec![support::quota_gone(30)]);
            server.script("/x", vec![Step::status(200)]);
            let policy = base().seed(3).build().unwrap();
            let client = Client::new(via, policy.clone());
            let with = |value: &'static str| Req {
                headers: vec![(header, value)],
                ..get()
            };
            let anonymous = get();
            let context = format!("{via:?}, {header}");
            let t0 = Instant::now();
            // A's quota is gone for 30 s
            let first = client.send(&server.url("/gone"), &with(a)).await;
            assert_eq!(first.status, Some(200), "{context}");

            let send_all = |reqs: Vec<Req>| {
                let (client, url) = (client.clone(), server.url("/x"));
                join_all(
                    reqs.into_iter()
                        .map(|req| {
                            let (client, url) = (client.clone(), url.clone());
                            async move { client.send(&url, &req).await }
                        })
                        .collect(),
                )
            };
            let mut reqs = vec![];
            for _ in 0..5 {
                reqs.extend([with(a), with(b), anonymous.clone()]);
            }
            let got = send_all(reqs).await;
            assert!(got.iter().all(|g| g.status == Some(200)), "{context}");
            for (n, g) in got.iter().enumerate() {
                let held = n % 3 == 0;
                if held {
                    assert!(
                        g.elapsed >= Duration::from_secs(30)
                            && g.elapsed <= Duration::from_secs(31),
                        "{context}: A's request {n} waited {:?}",
                        g.elapsed
                    );
                    assert_eq!(g.report.throttles().len(), 1, "{context}");
                } else {
                    assert_eq!(g.elapsed, Duration::ZERO, "{context}: request {n} was held");
                    assert!(g.report.throttles().is_empty(), "{context}");
                }
                let text = format!("{:?} {}", g.report, g.report);
                assert!(!text.contains("secret"), "{context}: {text}");
            }
            for s in server.seen("/x") {
                let by_a = s.header(header) == Some(a);
                assert_eq!(s.at - t0 >= Duration::from_secs(30), by_a, "{context}");
            }
            let store = format!("{:?}", policy.state_store());
            assert!(!store.contains("secret"), "{context}: {store}");

            // an anonymous request's quota is gone: every anonymous request
            // is held, A's (its hold is over) and B's are not
            let t1 = Instant::now();
            let first = client.send(&server.url("/gone"), &anonymous).await;
            assert_eq!(first.status, Some(200), "{context}");
            let got = send_all(vec![anonymous.clone(), with(a), with(b), anonymous.clone()]).await;
            let waited: Vec<bool> = got
                .iter()
                .map(|g| g.elapsed >= Duration::from_secs(30))
                .collect();
            assert_eq!(waited, [true, false, false, true], "{context}");
            assert!(Instant::now() - t1 <= Duration::from_secs(31), "{context}");
        }
    }
}

/// A reset absurdly far ahead is invalid and holds nothing: one response
/// claiming a reset in the year 2100 must not refuse every later request
/// to the host. A reset within `max_quota_reset` (24 h by default) is
/// honoured as before (with GitHub's 300 s `max_retry_after`, refused at
/// once with `RETRY_AFTER_TOO_LONG` until then).
#[tokio::test(start_paused = true)]
async fn a_quota_reset_absurdly_far_ahead_holds_nothing() {
    let hours = |h: u64| h * 3600;
    let rows: [(&str, String, Option<Duration>); 3] = [
        ("the year 2100", "4102444800".to_string(), None),
        ("25 h ahead", support::epoch_after(hours(25)), None),
        (
            "23 h ahead",
            support::epoch_after(hours(23)),
            Some(Duration::from_secs(hours(23))),
        ),
    ];
    for via in BOTH {
        for (name, reset, held) in &rows {
            let server = Server::start().await;
            server.script(
                "/repos",
                vec![
                    Step::with(
                        200,
                        &[
                            ("x-ratelimit-remaining", "0"),
                            ("x-ratelimit-reset", reset.as_str()),
                        ],
                    ),
                    Step::status(200),
                ],
            );
            let policy = Preset::GitHub
                .builder()
                .wall_clock(fixed_now)
                .build()
                .unwrap();
            let client = Client::new(via, policy);
            let first = client.send(&server.url("/repos"), &get()).await;
            assert_eq!(first.status, Some(200), "{via:?} {name}");
            for _ in 0..3 {
                let got = client.send(&server.url("/repos"), &get()).await;
                match held {
                    None => {
                        assert_eq!(got.status, Some(200), "{via:?} {name}: {got:?}");
                        assert_eq!(got.elapsed, Duration::ZERO, "{via:?} {name}");
                    }
                    Some(wait) => {
                        assert_eq!(got.code, Some("RETRY_AFTER_TOO_LONG"), "{via:?} {name}");
                        assert_eq!(got.error.as_ref().unwrap().retry_in(), Some(*wait));
                    }
                }
            }
            let sent = if held.is_some() { 1 } else { 4 };
            assert_eq!(server.count("/repos"), sent, "{via:?} {name}");
        }
    }
}

/// A name, the first response's headers, and the hold the second request
/// sees (or the code it fails with).
type QuotaRow = (
    &'static str,
    Vec<(&'static str, String)>,
    Result<Duration, &'static str>,
);

/// The three header families, and a reset too far ahead.
#[tokio::test(start_paused = true)]
async fn anthropic_and_openai_quota_headers_hold_the_endpoint() {
    let in_30 = rfc3339_after(fixed_now(), 30);
    let rows: Vec<QuotaRow> = vec![
        (
            "anthropic, RFC 3339 reset in 30 s",
            vec![
                ("anthropic-ratelimit-requests-remaining", "0".into()),
                ("anthropic-ratelimit-requests-reset", in_30.clone()),
            ],
            Ok(Duration::from_secs(30)),
        ),
        (
            "openai, 12ms",
            vec![
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", "12ms".into()),
            ],
            Ok(Duration::from_millis(12)),
        ),
        (
            "openai, 1m30s",
            vec![
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", "1m30s".into()),
            ],
            Ok(Duration::from_secs(90)),
        ),
        (
            "openai, 6m0s: beyond max_retry_after (120 s)",
            vec![
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", "6m0s".into()),
            ],
            Err("RETRY_AFTER_TOO_LONG"),
        ),
        (
            "remaining 1: nothing held",
            vec![
                ("x-ratelimit-remaining-requests", "1".into()),
                ("x-ratelimit-reset-requests", "6m0s".into()),
            ],
            Ok(Duration::ZERO),
        ),
        (
            "unreadable reset: nothing held",
            vec![
                ("anthropic-ratelimit-requests-remaining", "0".into()),
                ("anthropic-ratelimit-requests-reset", "soon".into()),
            ],
            Ok(Duration::ZERO),
        ),
    ];
    for via in BOTH {
        for (name, headers, expect) in &rows {
            let server = Server::start().await;
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server.script("/v1", vec![Step::with(200, &pairs), Step::status(200)]);
            let policy = base().build().unwrap();
            let client = Client::new(via, policy);
            client.send(&server.url("/v1"), &get()).await;
            let got = client.send(&server.url("/v1"), &get()).await;
            match expect {
                Ok(wait) => {
                    assert_eq!(got.status, Some(200), "{via:?} {name}");
                    // the reset, plus a spread of at most 1 s and at most
                    // the hold itself
                    let most = *wait + (*wait).min(Duration::from_secs(1));
                    let throttled = got.report.total_throttled();
                    assert!(
                        throttled >= *wait && throttled <= most,
                        "{via:?} {name}: {throttled:?}"
                    );
                    let seen = server.seen("/v1");
                    let gap = seen[1].at - seen[0].at;
                    assert!(
                        gap >= throttled && gap - throttled < Duration::from_millis(1),
                        "{via:?} {name}: {gap:?}"
                    );
                }
                Err(code) => {
                    assert_eq!(got.code, Some(*code), "{via:?} {name}");
                    assert_eq!(
                        got.error.as_ref().unwrap().retry_in(),
                        Some(Duration::from_secs(360))
                    );
                    assert_eq!(server.count("/v1"), 1, "{via:?} {name}: not sent");
                    assert!(got.elapsed.is_zero(), "{via:?} {name}: no wait");
                }
            }
        }
    }
}

/// An RFC 3339 UTC time `offset` seconds after `base`, written by hand so
/// the test does not share the parser under test.
fn rfc3339_after(base: std::time::SystemTime, offset: i64) -> String {
    let secs = base
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + offset;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ------------------------------------------------------------- pipeline

/// The documented order: rate limit → total deadline → retry with budget
/// → circuit breaker → attempt timeout.
/// - the rate limit's wait before the first attempt does not count against
///   the deadline (the deadline starts at the first attempt);
/// - a wait for a turn before a retry that would cross the deadline fails
///   with `DEADLINE_EXCEEDED`, not `RATE_LIMITED_LOCALLY`;
/// - the breaker sees every attempt (retries too), after its turn;
/// - the attempt timeout is inside it all, and a timed-out attempt is a
///   breaker failure and costs the budget its timeout price.
#[tokio::test(start_paused = true)]
async fn the_stages_run_in_the_documented_order() {
    for via in BOTH {
        // (1) turn wait outside the deadline
        let server = Server::start().await;
        server.script("/a", vec![Step::status(200)]);
        let policy = base()
            .rate_limit(RateLimit::per_second(1).burst(1).build().unwrap())
            .deadline(Duration::from_millis(500))
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        client.send(&server.url("/a"), &get()).await;
        let got = client.send(&server.url("/a"), &get()).await;
        assert_eq!(
            got.status,
            Some(200),
            "{via:?}: a 1 s turn, then a 500 ms deadline"
        );
        assert_eq!(got.report.total_throttled(), Duration::from_secs(1));

        // (2) a retry's turn crossing the deadline
        server.script("/b", vec![Step::status(503), Step::status(200)]);
        let policy = base()
            .rate_limit(RateLimit::per_second(1).burst(1).build().unwrap())
            .deadline(Duration::from_millis(500))
            .build()
            .unwrap();
        let got = Client::new(via, policy)
            .send(&server.url("/b"), &get())
            .await;
        assert_eq!(got.code, Some("DEADLINE_EXCEEDED"), "{via:?}");
        assert_eq!(server.count("/b"), 1);

        // (3)+(4)+(5): a timed-out attempt, retried, is a breaker failure
        // and costs 10 tokens; the breaker then refuses the retry
        server.script("/c", vec![Step::Hang]);
        let budget = RetryBudget::builder().capacity(100).build().unwrap();
        let policy = base()
            .retry_budget(budget)
            .attempt_timeout(Duration::from_secs(1))
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(2)
                    .break_duration(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy.clone());
        let got = client.send(&server.url("/c"), &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}: {got:?}");
        assert_eq!(got.report.attempts(), 2, "{via:?}");
        assert_eq!(server.count("/c"), 2);
        assert_eq!(
            policy.state_store().endpoint(&key(&server)).tokens(&budget),
            90,
            "{via:?}: one retry after a timeout"
        );
    }
}

/// Per endpoint: different routes, different protection.
#[tokio::test(start_paused = true)]
async fn protection_is_chosen_per_endpoint() {
    for via in BOTH {
        let limited = Server::start().await;
        let open = Server::start().await;
        limited.script("/", vec![Step::status(200)]);
        open.script("/", vec![Step::status(200)]);
        let policies = http_resilience::EndpointPolicies::builder()
            .route(
                http_resilience::Route::any().path_prefix("/"),
                base()
                    .rate_limit(
                        RateLimit::per_second(1)
                            .burst(1)
                            .max_wait(Duration::from_millis(1))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        // the route matches both servers, but state is per endpoint
        let client = Client::new(via, policies);
        let a = burst(&client, &limited.url("/"), 3).await;
        let b = burst(&client, &open.url("/"), 3).await;
        assert_eq!(codes(&a).get("200"), Some(&1), "{via:?}");
        assert_eq!(codes(&b).get("200"), Some(&1), "{via:?}");
        // a per-request override without protection is not limited
        let unlimited = RetryPolicy::disabled();
        let req = support::clients::Req {
            policy: Some(unlimited),
            ..get()
        };
        let got = client.send(&limited.url("/"), &req).await;
        assert_eq!(got.status, Some(200), "{via:?}");
    }
}
