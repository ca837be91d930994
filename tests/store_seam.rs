//! The store seam's network path through both adapters, without a
//! network: a scripted store whose rate-limit turns and retry payments are
//! calls the adapter awaits (`StoreStep::Pending`), answered after a delay
//! on tokio's paused clock, with the answers a shared store gives (a turn,
//! a refusal, the fallback's decision, "unavailable"). Also the other
//! seam calls the engine makes: the request's partition, the breaker's
//! open hint, `opened`. Against the loopback server, every row through
//! both adapters.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http_resilience::protection::CircuitState;
use http_resilience::rate_limit::Turn;
use http_resilience::store::{
    Answer, Decided, Partition, Refused, StoreAnswer, StoreCall, StoreStep,
};
use http_resilience::{
    EndpointKey, EndpointState, InMemoryStore, RateLimit, RetryBudget, RetryPolicyBuilder,
    StateStore, StopReason, ThrottleReason,
};
use support::clients::{BOTH, Client, base, get};
use support::{Server, Step};

/// What the scripted store answers, and what it saw.
#[derive(Debug, Default)]
struct Script {
    /// How long a turn's call takes; `None`: answered at once.
    turn_delay: Mutex<Option<Duration>>,
    /// Replaces the turn's answer (else the in-memory limiter's).
    turn_answer: Mutex<Option<Result<(), Refused>>>,
    /// Who decided the turns.
    turn_decided: Mutex<Option<Decided>>,
    /// How long a payment's call takes; `None`: answered at once.
    pay_delay: Mutex<Option<Duration>>,
    /// Replaces the payment's answer (else the in-memory budget's).
    pay_answer: Mutex<Option<Result<(), Refused>>>,
    turn_calls: AtomicUsize,
    pay_calls: AtomicUsize,
    /// Every request is one partition, whatever its credential.
    one_partition: AtomicBool,
    open_hint: Mutex<Option<Instant>>,
    opened: Mutex<Vec<Instant>>,
}

#[derive(Debug)]
struct Scripted {
    inner: InMemoryStore,
    script: Arc<Script>,
}

impl Scripted {
    fn new() -> (Arc<Scripted>, Arc<Script>) {
        let script = Arc::new(Script::default());
        let store = Arc::new(Scripted {
            inner: InMemoryStore::new(),
            script: script.clone(),
        });
        (store, script)
    }
}

impl StateStore for Scripted {
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState> {
        Arc::new(ScriptedEndpoint {
            inner: self.inner.endpoint(key),
            script: self.script.clone(),
        })
    }
}

#[derive(Debug)]
struct ScriptedEndpoint {
    inner: Arc<dyn EndpointState>,
    script: Arc<Script>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl EndpointState for ScriptedEndpoint {
    fn withdraw(&self, budget: &RetryBudget, cost: u32) -> bool {
        self.inner.withdraw(budget, cost)
    }
    fn deposit(&self, budget: &RetryBudget, tokens: u32) {
        self.inner.deposit(budget, tokens)
    }
    fn circuit(&self, update: &mut dyn FnMut(&mut CircuitState)) {
        self.inner.circuit(update)
    }
    fn blocked_until(&self, partition: Partition) -> Option<Instant> {
        self.inner.blocked_until(partition)
    }
    fn block_until(&self, partition: Partition, until: Instant) {
        self.inner.block_until(partition, until)
    }
    fn holding(&self, now: Instant) -> bool {
        self.inner.holding(now)
    }
    fn acquire(
        &self,
        limit: &RateLimit,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Turn, Duration> {
        self.inner.acquire(limit, now, max_wait)
    }
    fn release(&self, limit: &RateLimit, turn: Turn) {
        self.inner.release(limit, turn)
    }
    fn tokens(&self, budget: &RetryBudget) -> u32 {
        self.inner.tokens(budget)
    }

    fn acquire_turn(
        &self,
        limit: &RateLimit,
        cost: u32,
        now_: Instant,
        max_wait: Duration,
    ) -> StoreStep<Result<Turn, Refused>> {
        let script = self.script.clone();
        script.turn_calls.fetch_add(1, Ordering::SeqCst);
        let decided = script
            .turn_decided
            .lock()
            .unwrap()
            .unwrap_or(Decided::Fleet);
        let answer = move |inner: &dyn EndpointState, limit: &RateLimit, at: Instant| {
            let value = match *script.turn_answer.lock().unwrap() {
                Some(Ok(())) => Ok(Turn::new(at)),
                Some(Err(refused)) => Err(refused),
                None => match inner.acquire_turn(limit, cost, at, max_wait) {
                    StoreStep::Ready(a) => a.value,
                    StoreStep::Pending(_) => unreachable!("in memory"),
                },
            };
            Answer::new(value, decided)
        };
        let delay = *self.script.turn_delay.lock().unwrap();
        let Some(delay) = delay else {
            return StoreStep::Ready(answer(&*self.inner, limit, now_));
        };
        let (inner, limit) = (self.inner.clone(), *limit);
        let call: StoreCall = Box::pin(async move {
            tokio::time::sleep(delay).await;
            StoreAnswer::Turn(answer(&*inner, &limit, now()))
        });
        StoreStep::Pending(call)
    }

    fn withdraw_step(&self, budget: &RetryBudget, cost: u32) -> StoreStep<Result<(), Refused>> {
        let script = self.script.clone();
        script.pay_calls.fetch_add(1, Ordering::SeqCst);
        let answer = move |inner: &dyn EndpointState, budget: &RetryBudget| {
            let value = match *script.pay_answer.lock().unwrap() {
                Some(answer) => answer,
                None if inner.withdraw(budget, cost) => Ok(()),
                None => Err(Refused::Exhausted),
            };
            Answer::new(value, Decided::Fleet)
        };
        let delay = *self.script.pay_delay.lock().unwrap();
        let Some(delay) = delay else {
            return StoreStep::Ready(answer(&*self.inner, budget));
        };
        let (inner, budget) = (self.inner.clone(), *budget);
        StoreStep::Pending(Box::pin(async move {
            tokio::time::sleep(delay).await;
            StoreAnswer::Payment(answer(&*inner, &budget))
        }))
    }

    fn partition(&self, headers: &HeaderMap) -> Partition {
        if self.script.one_partition.load(Ordering::SeqCst) {
            // every credential, one partition (as a fleet's key would make
            // them the same in every process)
            let mut h = HeaderMap::new();
            h.insert("authorization", "Bearer the-fleet".parse().unwrap());
            Partition::of(&h)
        } else {
            self.inner.partition(headers)
        }
    }

    fn open_hint(&self, now: Instant) -> Option<Instant> {
        self.script
            .open_hint
            .lock()
            .unwrap()
            .filter(|until| *until > now)
    }

    fn opened(&self, until: Instant) {
        self.script.opened.lock().unwrap().push(until);
    }
}

fn limited(store: Arc<Scripted>) -> RetryPolicyBuilder {
    base()
        .state_store(store)
        .rate_limit(RateLimit::per_second(10).burst(1).build().unwrap())
}

/// A turn that comes from a store call: every attempt asks once, waits for
/// the answer, then for its turn; the limit holds at the server.
#[tokio::test(start_paused = true)]
async fn a_turn_from_a_store_call_is_awaited_then_waited_for() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/x", vec![Step::status(200)]);
        let (store, script) = Scripted::new();
        *script.turn_delay.lock().unwrap() = Some(Duration::from_millis(5));
        let client = Client::new(via, limited(store).build().unwrap());
        let t0 = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (client, url) = (client.clone(), server.url("/x"));
            tasks.push(tokio::spawn(async move { client.send(&url, &get()).await }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        assert!(
            got.iter().all(|g| g.status == Some(200)),
            "{via:?}: {got:?}"
        );
        assert_eq!(
            script.turn_calls.load(Ordering::SeqCst),
            3,
            "{via:?}: one call per attempt"
        );
        let mut at: Vec<Duration> = server
            .seen("/x")
            .iter()
            .map(|s| s.at.duration_since(t0))
            .collect();
        at.sort();
        let ms = |n| Duration::from_millis(n);
        // 5 ms for the call, then one turn every 100 ms
        assert_eq!(at, vec![ms(5), ms(105), ms(205)], "{via:?}");
        let waited: Vec<Duration> = got.iter().map(|g| g.report.total_throttled()).collect();
        assert!(waited.contains(&ms(200)), "{via:?}: {waited:?}");
        assert!(got.iter().all(|g| !g.report.decided_locally()), "{via:?}");
    }
}

/// A refusal from a store call: nothing is sent, the error says how long
/// the turn would have taken.
#[tokio::test(start_paused = true)]
async fn a_refusal_from_a_store_call_sends_nothing() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/x", vec![Step::status(200)]);
        let (store, script) = Scripted::new();
        *script.turn_delay.lock().unwrap() = Some(Duration::from_millis(3));
        *script.turn_answer.lock().unwrap() = Some(Err(Refused::TooLong(Duration::from_secs(90))));
        let client = Client::new(via, limited(store).build().unwrap());
        let got = client.send(&server.url("/x"), &get()).await;
        assert_eq!(got.code, Some("RATE_LIMITED_LOCALLY"), "{via:?}: {got:?}");
        let error = got.error.as_ref().unwrap();
        // The whole wait from when the attempt first asked: the 3 ms call,
        // then the 90 s the store answered at its end.
        assert_eq!(error.retry_in(), Some(Duration::from_millis(90_003)));
        assert_eq!(server.count("/x"), 0, "{via:?}");
        assert_eq!(got.elapsed, Duration::from_millis(3), "{via:?}");
        assert_eq!(got.report.attempts(), 0);
    }
}

/// The fallback's answers: a turn it gave is marked in the report (even on
/// a first-attempt success, which otherwise carries no report), and a
/// store that can refuse nothing but cannot answer stops the request with
/// `STORE_UNAVAILABLE`.
#[tokio::test(start_paused = true)]
async fn the_fallbacks_decisions_are_in_the_report_and_unavailable_is_an_error() {
    for via in BOTH {
        for pending in [false, true] {
            let server = Server::start().await;
            server.script("/x", vec![Step::status(200)]);
            let (store, script) = Scripted::new();
            if pending {
                *script.turn_delay.lock().unwrap() = Some(Duration::from_millis(1));
            }
            *script.turn_decided.lock().unwrap() = Some(Decided::Fallback);
            let client = Client::new(via, limited(store).build().unwrap());
            let got = client.send(&server.url("/x"), &get()).await;
            assert_eq!(got.status, Some(200), "{via:?}");
            assert!(
                got.report.decided_locally(),
                "{via:?} {pending}: {:?}",
                got.report
            );
            assert!(
                got.report.to_string().contains("decided locally"),
                "{}",
                got.report
            );

            *script.turn_answer.lock().unwrap() = Some(Err(Refused::Unavailable));
            let got = client.send(&server.url("/x"), &get()).await;
            assert_eq!(
                got.code,
                Some("STORE_UNAVAILABLE"),
                "{via:?} {pending}: {got:?}"
            );
            assert_eq!(got.report.stop_reason(), Some(StopReason::StoreUnavailable));
            assert!(got.report.decided_locally());
            assert_eq!(server.count("/x"), 1, "{via:?}: only the first was sent");
        }
    }
}

/// A retry's payment from a store call: the retry waits for the answer;
/// a budget that cannot pay, or a store that cannot answer, stops the
/// request with the last response.
#[tokio::test(start_paused = true)]
async fn a_payment_from_a_store_call() {
    for via in BOTH {
        let server = Server::start().await;
        let (store, script) = Scripted::new();
        *script.pay_delay.lock().unwrap() = Some(Duration::from_millis(7));
        let client = Client::new(via, base().state_store(store).build().unwrap());

        server.script("/flaky", vec![Step::status(503), Step::status(200)]);
        let got = client.send(&server.url("/flaky"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}: {got:?}");
        assert_eq!(got.report.retries(), 1);
        assert_eq!(script.pay_calls.load(Ordering::SeqCst), 1, "{via:?}");
        // the call (7 ms), then the backoff (100 ms)
        assert_eq!(got.elapsed, Duration::from_millis(107), "{via:?}");

        for (answer, code) in [
            (Refused::Exhausted, "RETRY_BUDGET_EXHAUSTED"),
            (Refused::Unavailable, "STORE_UNAVAILABLE"),
        ] {
            *script.pay_answer.lock().unwrap() = Some(Err(answer));
            server.script("/down", vec![Step::body(503, "down")]);
            let got = client.send(&server.url("/down"), &get()).await;
            assert_eq!(got.code, Some(code), "{via:?}: {got:?}");
            let error = got.error.as_ref().unwrap();
            assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
            assert_eq!(
                got.body.as_deref(),
                Some("down"),
                "{via:?}: the last response"
            );
            assert_eq!(got.report.attempts(), 1);
        }
        *script.pay_answer.lock().unwrap() = None;
    }
}

/// The deadline holds across a store call: a payment answered after the
/// deadline stops the request there, with the last response.
#[tokio::test(start_paused = true)]
async fn the_deadline_holds_across_a_store_call() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/down", vec![Step::status(503)]);
        let (store, script) = Scripted::new();
        *script.pay_delay.lock().unwrap() = Some(Duration::from_millis(60));
        let policy = base()
            .state_store(store)
            .deadline(Duration::from_millis(50))
            .initial_backoff(Duration::from_millis(1))
            .build()
            .unwrap();
        let got = Client::new(via, policy)
            .send(&server.url("/down"), &get())
            .await;
        assert_eq!(got.code, Some("DEADLINE_EXCEEDED"), "{via:?}: {got:?}");
        assert_eq!(server.count("/down"), 1, "{via:?}");
        assert_eq!(
            got.error.unwrap().status(),
            Some(http::StatusCode::SERVICE_UNAVAILABLE)
        );
    }
}

/// A request dropped while its store call is out gives nothing back that
/// it did not take, and holds nothing: the next request goes as usual.
#[tokio::test(start_paused = true)]
async fn a_request_dropped_during_a_store_call_holds_nothing() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/x", vec![Step::status(200)]);
        let (store, script) = Scripted::new();
        *script.turn_delay.lock().unwrap() = Some(Duration::from_millis(50));
        let client = Client::new(via, limited(store).build().unwrap());
        let url = server.url("/x");
        let dropped =
            tokio::time::timeout(Duration::from_millis(10), client.send(&url, &get())).await;
        assert!(dropped.is_err(), "{via:?}: cancelled during the call");
        let got = client.send(&url, &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        assert_eq!(server.count("/x"), 1);
        // no turn was taken by the dropped request: the first turn is free
        assert_eq!(got.report.total_throttled(), Duration::ZERO, "{via:?}");
    }
}

/// The engine asks the store for a request's partition: a store that makes
/// every credential one partition (as a fleet's shared key makes one
/// credential one partition in every process) holds them all.
#[tokio::test(start_paused = true)]
async fn the_partition_is_the_stores() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/gone", vec![support::quota_gone(30), Step::status(200)]);
        let (store, script) = Scripted::new();
        script.one_partition.store(true, Ordering::SeqCst);
        let client = Client::new(via, base().state_store(store).build().unwrap());
        let mut a = get();
        a.headers = vec![("authorization", "Bearer a")];
        let mut b = get();
        b.headers = vec![("authorization", "Bearer b")];
        let first = client.send(&server.url("/gone"), &a).await;
        assert_eq!(first.status, Some(200));
        let held = client.send(&server.url("/gone"), &b).await;
        assert_eq!(held.status, Some(200), "{via:?}");
        let throttles = held.report.throttles();
        assert_eq!(throttles.len(), 1, "{via:?}: {:?}", held.report);
        assert_eq!(throttles[0].reason(), ThrottleReason::ServerQuota);
    }
}

/// The breaker's open hint refuses attempts as an open breaker does, and a
/// breaker that opens tells the store.
#[tokio::test(start_paused = true)]
async fn the_open_hint_refuses_and_an_opened_breaker_is_told() {
    for via in BOTH {
        let server = Server::start().await;
        server.script("/x", vec![Step::status(503)]);
        let (store, script) = Scripted::new();
        let policy = base()
            .state_store(store)
            .max_retries(0)
            .circuit_breaker(
                http_resilience::CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .break_duration(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        *script.open_hint.lock().unwrap() = Some(now() + Duration::from_secs(2));
        let got = client.send(&server.url("/x"), &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}: {got:?}");
        assert_eq!(got.error.unwrap().retry_in(), Some(Duration::from_secs(2)));
        assert_eq!(server.count("/x"), 0);
        assert!(script.opened.lock().unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        // the hint is over: sent, fails, the breaker opens and says so
        let got = client.send(&server.url("/x"), &get()).await;
        assert_eq!(got.status, None);
        assert_eq!(server.count("/x"), 1, "{via:?}");
        let opened = script.opened.lock().unwrap().clone();
        assert_eq!(opened, vec![now() + Duration::from_secs(5)], "{via:?}");
    }
}

/// Operations (`RetryPolicy::retry`) await the same calls: a turn (3 ms)
/// before each attempt, a payment (7 ms) before the retry, then the
/// backoff and the next turn; a payment refused stops with the budget's
/// code.
#[tokio::test(start_paused = true)]
async fn an_operation_awaits_the_stores_calls() {
    use http_resilience::ErrorClass;
    let (store, script) = Scripted::new();
    *script.turn_delay.lock().unwrap() = Some(Duration::from_millis(3));
    *script.pay_delay.lock().unwrap() = Some(Duration::from_millis(7));
    let policy = limited(store).build().unwrap();
    let t0 = tokio::time::Instant::now();
    let calls = AtomicUsize::new(0);
    let got: Result<u32, _> = policy
        .retry(
            |_| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(std::io::Error::other("busy"))
                    } else {
                        Ok(7)
                    }
                }
            },
            |_: &std::io::Error| ErrorClass::transient(),
        )
        .await;
    assert_eq!(got.unwrap(), 7);
    assert_eq!(script.turn_calls.load(Ordering::SeqCst), 2);
    assert_eq!(script.pay_calls.load(Ordering::SeqCst), 1);
    // turn 3 ms, payment 7, backoff 100, turn 3 (the limit's next turn,
    // 100 ms after the first, has come by then)
    assert_eq!(t0.elapsed(), Duration::from_millis(113));

    *script.pay_answer.lock().unwrap() = Some(Err(Refused::Exhausted));
    let error = policy
        .retry(
            |_| async { Err::<u32, _>(std::io::Error::other("busy")) },
            |_: &std::io::Error| ErrorClass::transient(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "RETRY_BUDGET_EXHAUSTED");
}

#[path = "support/ranges.rs"]
mod ranges;

/// A resume is an attempt like any other: under a store whose rate-limit
/// turns are awaited calls, the resume of a body cut at 40% asks the store
/// for its turn (one call), waits for the answer, and the caller reads the
/// whole body, through both adapters.
#[tokio::test(start_paused = true)]
async fn a_resume_awaits_its_turn_from_a_store_call() {
    use http_body_util::{BodyExt, Empty};
    use http_resilience::resume::{ResumeExt, ResumeLayer, ResumeLog};
    use http_resilience::{RetryLayer, RetryMiddleware};
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::rt::TokioExecutor;
    use ranges::{Fault, RangeServer, content};
    use support::clients::Via;
    use tower::{ServiceBuilder, ServiceExt};

    const LEN: usize = 200_000;
    const CUT: usize = 80_000;
    let original = content(LEN, 7);
    for via in BOTH {
        let server =
            RangeServer::start(original.clone(), vec![Fault::CutAfter(CUT), Fault::Honest]).await;
        let (store, script) = Scripted::new();
        *script.turn_delay.lock().unwrap() = Some(Duration::from_millis(5));
        let policy = limited(store).resume_bodies(true).build().unwrap();
        let url = server.url("/file");
        let (bytes, failed, log) = match via {
            Via::Tower => {
                let client =
                    HyperClient::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
                let svc = ServiceBuilder::new()
                    .layer(ResumeLayer::new())
                    .layer(RetryLayer::new(policy))
                    .service(client);
                let request = http::Request::get(&url).body(Empty::new()).unwrap();
                let response = svc.oneshot(request).await.expect("a response");
                let log = response.extensions().get::<ResumeLog>().cloned();
                match response.into_body().collect().await {
                    Ok(all) => (all.to_bytes().to_vec(), None, log),
                    Err(e) => (Vec::new(), Some(e.to_string()), log),
                }
            }
            Via::Reqwest => {
                let client = reqwest_middleware::ClientBuilder::new(
                    reqwest::Client::builder().no_proxy().build().unwrap(),
                )
                .with(RetryMiddleware::new(policy))
                .build();
                let mut response = client.get(&url).send_resumable().await.expect("a response");
                let log = response.extensions().get::<ResumeLog>().cloned();
                let mut bytes = Vec::new();
                let failed = loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                };
                (bytes, failed, log)
            }
        };
        assert_eq!(failed, None, "{via:?}");
        assert!(bytes == original, "{via:?}: {} bytes read", bytes.len());
        let log = log.expect("a ResumeLog");
        assert_eq!(log.records().len(), 1, "{via:?}: one resume");
        assert_eq!(
            script.turn_calls.load(Ordering::SeqCst),
            2,
            "{via:?}: one store call for the first attempt, one for the resume"
        );
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "{via:?}");
        assert_eq!(seen[1].range.as_deref(), Some("bytes=80000-"), "{via:?}");
    }
}
