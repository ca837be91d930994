//! What an attempt's time covers, and what survives a retry that is not
//! sent, through both adapters against the fault server on loopback, under
//! tokio's paused clock (every time is asserted to the millisecond):
//! - reading a response body for the classifier is part of the attempt:
//!   it ends at the attempt timeout and at the deadline;
//! - the tower adapter's wait for its inner service's readiness ends at the
//!   deadline, and nothing is sent with no time left;
//! - a retry that was decided and then refused during its wait (breaker,
//!   server quota, local limiter, deadline) hands over the last response
//!   exactly as a refusal before the wait would;
//! - a retry never sends a body that a shared-stream clone already drained.
//!
//! A request that today would wait forever runs under a one-hour guard, so
//! a regression fails (instantly, on the paused clock) instead of hanging.

mod support;

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use http_resilience::{
    AttemptTimedOut, CircuitBreaker, Classify, DefaultClassifier, FailureKind, Jitter, Outcome,
    Preset, RateLimit, RequestMeta, Retry, RetryPolicyBuilder, StopReason,
};
use support::clients::{BOTH, Client, Req, base, get, hyper_client, send, send_tower};
use support::{End, Server, Step, fixed_now, quota_gone};
use tokio::time::Instant;
use tower::Service;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs `f` under a one-hour guard on the paused clock.
async fn guarded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(secs(3600), f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still not finished after an hour"),
    }
}

/// GitHub's rules (a 403 without rate-limit headers has its body read), no
/// jitter, a 100 ms first backoff and the server's fixed wall clock.
fn github() -> RetryPolicyBuilder {
    Preset::GitHub
        .builder()
        .jitter(Jitter::None)
        .initial_backoff(ms(100))
        .wall_clock(fixed_now)
}

/// A 403 whose head announces 100 body bytes that never come.
fn stalled(status: u16) -> Step {
    let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 100\r\n\r\n");
    Step::Raw {
        parts: vec![(Duration::ZERO, head.into_bytes())],
        end: End::KeepAlive,
    }
}

/// A 403 whose 100-byte body arrives one byte a second.
fn trickled() -> Step {
    Step::trickle_body(403, &"x".repeat(100), secs(1))
}

/// Asks to read the first 16 bytes of every 200's body; otherwise the
/// default rules.
struct InspectsOk;

impl Classify for InspectsOk {
    fn classify(&self, request: &RequestMeta<'_>, outcome: &Outcome<'_>) -> http_resilience::Class {
        DefaultClassifier.classify(request, outcome)
    }
    fn inspect_body(
        &self,
        _: &RequestMeta<'_>,
        status: http::StatusCode,
        _: &http::HeaderMap,
    ) -> usize {
        if status == http::StatusCode::OK {
            16
        } else {
            0
        }
    }
}

/// The times a request whose inspected body never completes must keep.
struct Bounded {
    name: &'static str,
    policy: fn() -> RetryPolicyBuilder,
    step: fn() -> Step,
    code: &'static str,
    /// When the request ends, from its start.
    ends: Duration,
    /// When each attempt reached the server.
    sent_at: Vec<Duration>,
}

#[tokio::test(start_paused = true)]
async fn reading_a_body_for_the_classifier_ends_at_the_attempt_timeout_and_the_deadline() {
    let cases = [
        Bounded {
            name: "403 whose body stalls, deadline 2 s, attempt timeout 1 s",
            policy: || github().deadline(secs(2)).attempt_timeout(secs(1)),
            step: || stalled(403),
            code: "DEADLINE_EXCEEDED",
            ends: secs(2),
            // 1 s timeout, 100 ms backoff, then a 900 ms attempt (clamped to
            // the deadline)
            sent_at: vec![Duration::ZERO, ms(1100)],
        },
        Bounded {
            name: "403 whose body trickles at 1 B/s, deadline 2 s, attempt timeout 1 s",
            policy: || github().deadline(secs(2)).attempt_timeout(secs(1)),
            step: trickled,
            code: "DEADLINE_EXCEEDED",
            ends: secs(2),
            sent_at: vec![Duration::ZERO, ms(1100)],
        },
        Bounded {
            name: "403 whose body stalls, attempt timeout 1 s, 1 retry",
            policy: || github().attempt_timeout(secs(1)).max_retries(1),
            step: || stalled(403),
            code: "MAX_RETRIES_EXCEEDED",
            ends: Duration::from_millis(2100),
            sent_at: vec![Duration::ZERO, ms(1100)],
        },
        Bounded {
            name: "403 whose body trickles, deadline 2 s alone",
            policy: || github().deadline(secs(2)),
            step: trickled,
            code: "DEADLINE_EXCEEDED",
            ends: secs(2),
            sent_at: vec![Duration::ZERO],
        },
        Bounded {
            name: "a user classifier reading a 200's body that stalls",
            policy: || {
                base()
                    .classifier(InspectsOk)
                    .deadline(secs(2))
                    .attempt_timeout(secs(1))
            },
            step: || stalled(200),
            code: "DEADLINE_EXCEEDED",
            ends: secs(2),
            sent_at: vec![Duration::ZERO, ms(1100)],
        },
    ];
    let server = Server::start().await;
    let mut failures = vec![];
    for (i, case) in cases.iter().enumerate() {
        for via in BOTH {
            let path = format!("/inspect/{i}/{via:?}");
            server.script(&path, vec![(case.step)()]);
            let start = Instant::now();
            let policy = (case.policy)().build().unwrap();
            let got = guarded(case.name, send(via, policy, &server.url(&path), &get())).await;
            let label = format!("{} via {via:?}", case.name);
            let mut problems = vec![];
            if got.code != Some(case.code) {
                problems.push(format!("outcome {:?} {:?}", got.status, got.code));
            }
            if got.elapsed != case.ends {
                problems.push(format!(
                    "ended after {:?}, not {:?}",
                    got.elapsed, case.ends
                ));
            }
            let sent: Vec<Duration> = server.seen(&path).iter().map(|s| s.at - start).collect();
            if sent != case.sent_at {
                problems.push(format!("attempts sent at {sent:?}, not {:?}", case.sent_at));
            }
            // Each attempt is an attempt timeout, with its usual class.
            let failures_seen: Vec<Option<FailureKind>> =
                got.report.history().iter().map(|r| r.failure()).collect();
            if failures_seen != vec![Some(FailureKind::Timeout); case.sent_at.len()] {
                problems.push(format!("attempts recorded as {failures_seen:?}"));
            }
            if let Some(error) = &got.error {
                let timed_out = std::error::Error::source(error)
                    .is_some_and(|e| e.downcast_ref::<AttemptTimedOut>().is_some());
                if !timed_out {
                    problems.push(format!("last error is not an attempt timeout: {error}"));
                }
            }
            if !problems.is_empty() {
                failures.push(format!("{label}: {}", problems.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The inspection still hands over a body that arrives in time, whole.
#[tokio::test(start_paused = true)]
async fn an_inspected_body_that_arrives_in_time_is_handed_over_whole() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/in-time/{via:?}");
        // 10 bytes at 50 ms each: done at 500 ms, inside the 1 s timeout.
        server.script(&path, vec![Step::trickle_body(403, "forbidden!", ms(50))]);
        let policy = github()
            .deadline(secs(2))
            .attempt_timeout(secs(1))
            .build()
            .unwrap();
        let got = guarded("in time", send(via, policy, &server.url(&path), &get())).await;
        assert_eq!(got.status, Some(403), "{via:?}: {:?}", got.code);
        assert_eq!(got.body.as_deref(), Some("forbidden!"), "{via:?}");
        assert_eq!(got.elapsed, ms(500), "{via:?}");
    }
}

/// How a retry that was decided, then refused during its wait, must end.
struct Refusal {
    name: &'static str,
    policy: fn() -> RetryPolicyBuilder,
    /// What the request meets first (it is then retried after 100 ms).
    first: Step,
    /// Another request to the same endpoint, 10 ms in, that changes the
    /// endpoint's load protection during the wait.
    other: Option<Step>,
    code: &'static str,
}

fn refusals() -> Vec<Refusal> {
    let kept = || Step::respond(503, &[("x-request-id", "kept")], "the last response");
    vec![
        Refusal {
            name: "the breaker opens during the wait (another request's failure)",
            policy: || {
                base().circuit_breaker(
                    CircuitBreaker::builder()
                        .consecutive_failures(2)
                        .build()
                        .unwrap(),
                )
            },
            first: kept(),
            other: Some(Step::status(503)),
            code: "CIRCUIT_OPEN",
        },
        Refusal {
            name: "a server quota hold beyond max_retry_after begins during the wait",
            policy: base,
            first: kept(),
            other: Some(quota_gone(3600)),
            code: "RETRY_AFTER_TOO_LONG",
        },
        Refusal {
            name: "the local limiter's next turn is beyond max_wait",
            policy: || {
                base().rate_limit(
                    RateLimit::per_second(1)
                        .burst(1)
                        .max_wait(ms(500))
                        .build()
                        .unwrap(),
                )
            },
            first: kept(),
            other: None,
            code: "RATE_LIMITED_LOCALLY",
        },
        Refusal {
            name: "the deadline passes during the limiter's wait",
            policy: || {
                base()
                    .rate_limit(
                        RateLimit::per_second(1)
                            .burst(1)
                            .max_wait(secs(10))
                            .build()
                            .unwrap(),
                    )
                    .deadline(ms(500))
            },
            first: kept(),
            other: None,
            code: "DEADLINE_EXCEEDED",
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_during_its_wait_keeps_the_last_response() {
    let server = Server::start().await;
    let mut failures = vec![];
    for (i, case) in refusals().iter().enumerate() {
        for via in BOTH {
            for return_last in [false, true] {
                let label = format!(
                    "{} via {via:?}, return_last_response({return_last})",
                    case.name
                );
                let path = format!("/refused/{i}/{via:?}/{return_last}/a");
                let other = format!("/refused/{i}/{via:?}/{return_last}/b");
                server.script(&path, vec![case.first.clone(), Step::status(200)]);
                if let Some(step) = &case.other {
                    server.script(&other, vec![step.clone()]);
                }
                let policy = (case.policy)()
                    .return_last_response(return_last)
                    .build()
                    .unwrap();
                let client = Client::new(via, policy);
                let (url, other_url, req) = (server.url(&path), server.url(&other), get());
                let (got, _) = tokio::join!(guarded(&label, client.send(&url, &req)), async {
                    if case.other.is_some() {
                        tokio::time::sleep(ms(10)).await;
                        client.send(&other_url, &req).await;
                    }
                });
                let mut problems = vec![];
                if server.count(&path) != 1 {
                    problems.push(format!("{} attempts sent", server.count(&path)));
                }
                if got.elapsed != ms(100) {
                    problems.push(format!("ended after {:?}", got.elapsed));
                }
                if got.report.stop_reason().map(|r| r.as_str()) != Some(code_reason(case.code)) {
                    problems.push(format!("stop reason {:?}", got.report.stop_reason()));
                }
                if got.body.as_deref() != Some("the last response") {
                    problems.push(format!("last body {:?}", got.body));
                }
                if return_last {
                    if got.status != Some(503) {
                        problems.push(format!("not Ok(503): {:?} {:?}", got.status, got.code));
                    }
                } else {
                    match &got.error {
                        Some(e) if e.code() == case.code => {
                            if e.status() != Some(http::StatusCode::SERVICE_UNAVAILABLE) {
                                problems.push(format!("status() {:?}", e.status()));
                            }
                            let id = e.headers().and_then(|h| h.get("x-request-id"));
                            if id.is_none_or(|v| v != "kept") {
                                problems.push(format!("headers() {:?}", e.headers()));
                            }
                        }
                        other => problems.push(format!("error {other:?}")),
                    }
                }
                if !problems.is_empty() {
                    failures.push(format!("{label}: {}", problems.join("; ")));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn code_reason(code: &str) -> &'static str {
    match code {
        "CIRCUIT_OPEN" => "circuit_open",
        "RETRY_AFTER_TOO_LONG" => "retry_after_too_long",
        "RATE_LIMITED_LOCALLY" => "rate_limited_locally",
        "DEADLINE_EXCEEDED" => "deadline",
        other => panic!("{other}"),
    }
}

/// A transport error kept through the wait is the refusal's `source()`, as
/// it would be for a refusal before the wait.
#[tokio::test(start_paused = true)]
async fn a_retry_refused_during_its_wait_keeps_the_last_transport_error() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/refused-error/{via:?}");
        server.script(&path, vec![Step::Reset, Step::status(200)]);
        let policy = base()
            .rate_limit(
                RateLimit::per_second(1)
                    .burst(1)
                    .max_wait(ms(500))
                    .build()
                    .unwrap(),
            )
            .return_last_response(true)
            .build()
            .unwrap();
        let got = guarded("reset", send(via, policy, &server.url(&path), &get())).await;
        let error = got.error.expect("an error: there is no response to return");
        assert_eq!(error.code(), "RATE_LIMITED_LOCALLY", "{via:?}");
        assert_eq!(error.status(), None, "{via:?}");
        assert!(
            error.failure().last_error().is_some(),
            "{via:?}: the reset is kept: {error:?}"
        );
        assert_eq!(
            error.report().history()[0].failure(),
            Some(FailureKind::ConnectionReset),
            "{via:?}"
        );
        assert_eq!(got.elapsed, ms(100), "{via:?}");
    }
}

/// Counts the calls that reach the inner service (a request sent).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, request: http::Request<B>) -> S::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

/// hyper-util's client below a `ConcurrencyLimit` of one slot.
type Limited = tower::limit::ConcurrencyLimit<support::clients::Hyper>;

/// Holds `limited`'s only slot from `from` to `until` (both after `t0`).
async fn hold_the_slot(limited: &Limited, t0: Instant, from: Duration, until: Duration) {
    tokio::time::sleep_until(t0 + from).await;
    let mut holder = limited.clone();
    poll_fn(|cx| holder.poll_ready(cx)).await.unwrap();
    tokio::time::sleep_until(t0 + until).await;
    drop(holder);
}

/// Below a saturated `ConcurrencyLimit`, a retry waits for the inner
/// service's readiness: that wait ends at the deadline, with the last
/// response kept.
#[tokio::test(start_paused = true)]
async fn a_retry_waiting_for_readiness_ends_at_the_deadline() {
    let server = Server::start().await;
    for return_last in [false, true] {
        let path = format!("/ready/{return_last}");
        server.script(&path, vec![Step::body(503, "busy"), Step::status(200)]);
        let limited = Limited::new(hyper_client(), 1);
        let calls = Arc::new(AtomicUsize::new(0));
        let policy = base()
            .deadline(secs(1))
            .return_last_response(return_last)
            .build()
            .unwrap();
        let svc = Retry::new(
            Counted {
                inner: limited.clone(),
                calls: calls.clone(),
            },
            policy,
        );
        let t0 = Instant::now();
        // The first attempt has the slot; 10 ms in (its answer is in),
        // another caller takes it for an hour.
        let (url, req) = (server.url(&path), get());
        let (got, _) = tokio::join!(
            guarded("readiness", send_tower(svc, &url, &req)),
            hold_the_slot(&limited, t0, ms(10), secs(3600)),
        );
        let label = format!("return_last_response({return_last})");
        assert_eq!(got.elapsed, secs(1), "{label}: ends at the deadline");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{label}");
        assert_eq!(server.count(&path), 1, "{label}");
        assert_eq!(
            got.report.stop_reason(),
            Some(StopReason::Deadline),
            "{label}"
        );
        assert_eq!(got.body.as_deref(), Some("busy"), "{label}");
        if return_last {
            assert_eq!(got.status, Some(503), "{label}: {:?}", got.code);
        } else {
            let error = got.error.as_ref().unwrap();
            assert_eq!(error.code(), "DEADLINE_EXCEEDED", "{label}");
            assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        }
    }
}

/// The slot comes free exactly at the deadline: no time is left, so the
/// retry is not sent (the inner service is not even called).
#[tokio::test(start_paused = true)]
async fn nothing_is_sent_with_no_time_left() {
    let server = Server::start().await;
    server.script("/zero", vec![Step::status(503), Step::status(200)]);
    let limited = Limited::new(hyper_client(), 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let policy = base().deadline(secs(1)).build().unwrap();
    let svc = Retry::new(
        Counted {
            inner: limited.clone(),
            calls: calls.clone(),
        },
        policy,
    );
    let t0 = Instant::now();
    let (url, req) = (server.url("/zero"), get());
    let (got, _) = tokio::join!(
        guarded("zero", send_tower(svc, &url, &req)),
        hold_the_slot(&limited, t0, ms(10), secs(1)),
    );
    assert_eq!(got.code, Some("DEADLINE_EXCEEDED"), "{:?}", got.status);
    assert_eq!(got.elapsed, secs(1));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the retry reached the inner service"
    );
    // Whatever the inner service might have done with it, the server saw
    // one attempt (give a late send the time to arrive).
    tokio::time::sleep(secs(5)).await;
    assert_eq!(server.count("/zero"), 1);
}

/// A request body whose clones share one stream (as octocrab's `OctoBody`)
/// is drained by the first attempt: the retry must not go out with what is
/// left (nothing). Through tower's default mode (each attempt a clone) it
/// stops as for a body that cannot be replayed, the last response handed
/// over. Through reqwest (which sends it as `Body::wrap`, a stream) it is
/// kept in the replay buffer and sent again whole (as through tower's
/// `replay_bodies()` mode: `tests/replay.rs`).
#[tokio::test(start_paused = true)]
async fn a_drained_shared_body_is_never_resent() {
    let json = r#"{"title":"hardening","body":"not empty"}"#;
    let server = Server::start().await;
    let cases: [(&str, Req, Step); 3] = [
        (
            "PUT after a 502",
            Req {
                method: Method::PUT,
                body: json,
                shared: true,
                ..get()
            },
            Step::body(502, "bad gateway"),
        ),
        (
            "keyed POST after a 429",
            Req {
                body: json,
                shared: true,
                ..support::clients::keyed_post()
            },
            Step::body(429, "slow down"),
        ),
        (
            "PUT after a reset",
            Req {
                method: Method::PUT,
                body: json,
                shared: true,
                ..get()
            },
            Step::Reset,
        ),
    ];
    for (name, req, first) in cases {
        for via in BOTH {
            let path = format!("/drained/{}/{via:?}", name.replace(' ', "-"));
            server.script(&path, vec![first.clone(), Step::status(200)]);
            let got = guarded(
                name,
                send(via, base().build().unwrap(), &server.url(&path), &req),
            )
            .await;
            let label = format!("{name} via {via:?}");
            let seen = server.seen(&path);
            let bodies: Vec<String> = seen
                .iter()
                .map(|s| String::from_utf8_lossy(&s.body).into_owned())
                .collect();
            if via == support::clients::Via::Reqwest {
                assert_eq!(
                    bodies,
                    vec![json.to_string(); 2],
                    "{label}: sent again whole"
                );
                assert_eq!(got.status, Some(200), "{label}: {:?}", got.code);
                continue;
            }
            assert_eq!(
                bodies,
                vec![json.to_string()],
                "{label}: one attempt, whole"
            );
            assert_eq!(
                got.report.stop_reason(),
                Some(StopReason::BodyNotReplayable),
                "{label}"
            );
            assert_eq!(got.report.attempts(), 1, "{label}");
            assert_eq!(got.elapsed, Duration::ZERO, "{label}: no wait for nothing");
            match &first {
                Step::Respond { status, body, .. } => {
                    assert_eq!(got.status, Some(*status), "{label}: {:?}", got.code);
                    assert_eq!(got.body.as_deref(), Some(body.as_str()), "{label}");
                }
                _ => {
                    assert_eq!(got.code, Some("NOT_RETRYABLE"), "{label}");
                    assert!(got.error.as_ref().unwrap().failure().last_error().is_some());
                }
            }
        }
    }
}

/// A shared body that is whole when the retry is decided but drained during
/// the wait (here by the inner service itself, after it answered) is caught
/// before the send: the retry is not sent, the last response is kept.
#[tokio::test(start_paused = true)]
async fn a_body_drained_during_the_wait_is_caught_before_the_send() {
    use http_body_util::BodyExt;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let inner = tower::service_fn(
        move |request: http::Request<support::clients::ReplayBody>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = request.into_body();
            tokio::spawn(async move {
                // Reads the body 50 ms after answering (an early answer).
                tokio::time::sleep(ms(50)).await;
                let _ = body.collect().await;
            });
            async {
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(503)
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"early",
                        )))
                        .unwrap(),
                )
            }
        },
    );
    let mut svc = Retry::new(inner, base().build().unwrap());
    let body = support::clients::ReplayBody::new("payload", false).shared();
    let request = http::Request::put("http://127.0.0.1:9/")
        .body(body)
        .unwrap();
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let start = Instant::now();
    let result = guarded("drained later", svc.call(request)).await;
    let response = result.expect("the 503, returned as it is");
    assert_eq!(response.status(), 503);
    let report = response
        .extensions()
        .get::<http_resilience::RetryReport>()
        .unwrap()
        .clone();
    assert_eq!(report.stop_reason(), Some(StopReason::BodyNotReplayable));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the drained copy was sent");
    assert_eq!(start.elapsed(), ms(100), "found after the 100 ms backoff");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"early");
}
