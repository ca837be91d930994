//! Telemetry through both adapters. In a test binary of its own: tracing
//! caches per-callsite interest process-wide, and a thread-local subscriber
//! racing other tests' first calls could miss events.

mod support;

use support::capture::Captured;
use support::clients::{BOTH, Req, base, get, send};
use support::{Server, Step};

/// Captures the crate's events on this thread until the guard is dropped
/// (the client's own events, hyper-util's, happen inside the attempts'
/// spans and are not the crate's).
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let captured = Captured::default();
    let writer = captured.clone();
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("http_resilience", tracing::Level::TRACE);
    let guard = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .with(ours)
        .set_default();
    (captured, guard)
}

#[tokio::test(start_paused = true)]
async fn tracing_one_event_per_retry_and_no_secrets() {
    let (captured, _guard) = capture();
    let server = Server::start().await;
    for via in BOTH {
        let secret_req = Req {
            headers: vec![
                ("authorization", "Bearer secret-token"),
                ("cookie", "session=secret-cookie"),
                ("x-api-key", "secret-key"),
            ],
            ..get()
        };
        let path = format!("/ok/{via:?}");
        server.script(&path, vec![Step::status(200)]);
        send(
            via,
            base().build().unwrap(),
            &server.url(&path),
            &secret_req,
        )
        .await;
        let logs = captured.take();
        assert!(
            !logs.contains("http_resilience"),
            "{via:?}: nothing for a first-attempt success: {logs}"
        );

        let path = format!("/flaky/{via:?}");
        server.script(&path, vec![Step::status(503)]);
        send(
            via,
            base().max_retries(2).build().unwrap(),
            &server.url(&path),
            &secret_req,
        )
        .await;
        let logs = captured.take();
        let ours: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("http_resilience"))
            .collect();
        let retries = ours
            .iter()
            .filter(|l| l.contains("retrying request"))
            .count();
        let give_ups = ours
            .iter()
            .filter(|l| l.contains("giving up on request"))
            .count();
        assert_eq!((retries, give_ups), (2, 1), "{via:?}: {ours:#?}");
        let first = ours[0];
        for field in [
            "attempt=1",
            "delay_ms=100",
            "source=\"backoff\"",
            "reason=status 503",
            "method=GET",
            "host=\"127.0.0.1\"",
            &format!("path=\"{path}\""),
        ] {
            assert!(first.contains(field), "{via:?}: {field} missing in {first}");
        }
        assert!(ours.last().unwrap().contains("reason=\"max_retries\""));
        for secret in ["secret-token", "secret-cookie", "secret-key", "Bearer"] {
            assert!(!logs.contains(secret), "{via:?}: {secret} leaked: {logs}");
        }
    }
}

/// Every load-protection refusal and wait is a tracing event with the
/// endpoint (host and port) and the reason.
#[tokio::test(start_paused = true)]
async fn tracing_load_protection_refusals_and_waits() {
    use http_resilience::{CircuitBreaker, RateLimit, RetryBudget};
    use std::time::Duration;
    use support::clients::Client;
    let (captured, _guard) = capture();
    let server = Server::start().await;
    let port = format!("port={}", server.addr().port());
    server.script("/down", vec![Step::status(503)]);
    server.script("/ok", vec![Step::status(200)]);
    for via in BOTH {
        let event = |logs: &str, message: &str, reason: &str| {
            let line = logs
                .lines()
                .find(|l| l.contains(message) && l.contains(&format!("reason=\"{reason}\"")))
                .unwrap_or_else(|| panic!("{via:?}: no {message:?} with {reason}: {logs}"))
                .to_string();
            assert!(line.contains("host=\"127.0.0.1\""), "{line}");
            line
        };
        // budget: capacity 10 pays for two retries, then gives up
        let policy = base()
            .retry_budget(RetryBudget::builder().capacity(10).build().unwrap())
            .build()
            .unwrap();
        send(via, policy, &server.url("/down"), &get()).await;
        event(&captured.take(), "giving up on request", "budget_exhausted");

        // circuit: opened by one failure, then refuses
        let policy = base()
            .max_retries(0)
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        client.send(&server.url("/down"), &get()).await;
        client.send(&server.url("/down"), &get()).await;
        let line = event(&captured.take(), "refusing request", "circuit_open");
        assert!(line.contains(&port), "{line}");

        // local rate limit: a wait, then a refusal
        let policy = base()
            .rate_limit(
                RateLimit::per_second(1)
                    .burst(1)
                    .max_wait(Duration::from_millis(1500))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        for _ in 0..2 {
            client.send(&server.url("/ok"), &get()).await;
        }
        let line = event(
            &captured.take(),
            "waiting before attempt",
            "local_rate_limit",
        );
        assert!(line.contains("delay_ms=1000"), "{line}");

        // a server quota: noted, then the next request is held
        // (no release spread: the wait is exactly the reset's)
        let no_spread = base().quota_release_spread(Duration::ZERO);
        let client2 = Client::new(via, no_spread.build().unwrap());
        let quota = format!("/quota/{via:?}");
        server.script(&quota, vec![support::quota_gone(30), Step::status(200)]);
        client2.send(&server.url(&quota), &get()).await;
        client2.send(&server.url(&quota), &get()).await;
        let logs = captured.take();
        let line = event(&logs, "server quota exhausted", "server_quota");
        assert!(
            line.contains("reset_ms=30000") && line.contains(&port),
            "{line}"
        );
        let line = event(&logs, "waiting before attempt", "server_quota");
        assert!(line.contains("delay_ms=30000"), "{line}");
        // and a refusal for a turn beyond max_wait
        let policy = base()
            .rate_limit(
                RateLimit::per_second(1)
                    .burst(1)
                    .max_wait(Duration::from_millis(10))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let client = Client::new(via, policy);
        client.send(&server.url("/down"), &get()).await;
        client.send(&server.url("/down"), &get()).await;
        event(&captured.take(), "refusing request", "rate_limited_locally");
    }
}

/// Placed above a layer that sets the URI (as octocrab's `BaseUriLayer`
/// does), the tower layer sees relative URIs with no host, and its per-host
/// routes cannot match: the request silently gets the default policy. One
/// `WARN` says so, once for the policy set (not once per request); placed
/// below such a layer, the route matches and nothing is said.
#[tokio::test(start_paused = true)]
async fn a_request_without_a_host_is_noted_once() {
    use http_resilience::{EndpointPolicies, RetryLayer, Route};
    use support::clients::{ReplayBody, hyper_client, send_tower};
    use tower::{Layer, ServiceExt};
    let (captured, _guard) = capture();
    let server = Server::start().await;
    let addr = server.addr();
    // What octocrab's `BaseUriLayer` does: make the URI absolute.
    let base_uri = tower::util::MapRequestLayer::new(move |mut req: http::Request<ReplayBody>| {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        req
    });
    // The route for this host allows no retry; the default retries.
    let policies = EndpointPolicies::builder()
        .route(
            Route::host("127.0.0.1"),
            base().max_retries(0).build().unwrap(),
        )
        .default_policy(base().build().unwrap())
        .build()
        .unwrap();
    let warnings = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("WARN") && l.contains("no host"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // Above the layer that sets the URI: no host, the default policy.
    server.script("/wrong", vec![Step::status(503), Step::status(200)]);
    let wrong = RetryLayer::new(policies.clone()).layer(base_uri.layer(hyper_client()));
    let mut attempts = vec![];
    for _ in 0..3 {
        let got = send_tower(wrong.clone(), "/wrong", &get()).await;
        attempts.push(got.report.attempts());
    }
    // The default policy: the first request's 503 retried, the rest 200.
    assert_eq!(attempts, [2, 1, 1]);
    let logs = captured.take();
    let noted = warnings(&logs);
    assert_eq!(noted.len(), 1, "one warning for the set: {logs}");
    assert!(noted[0].contains("routes"), "{}", noted[0]);

    // Below it: the route for the host matches (no retry), nothing said.
    server.script("/right", vec![Step::status(503), Step::status(200)]);
    let right = base_uri.layer(RetryLayer::new(policies).layer(hyper_client()));
    let request = http::Request::get("/right")
        .body(ReplayBody::new("", false))
        .unwrap();
    let error = right.oneshot(request).await.expect_err("no retry allowed");
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(error.report().attempts(), 1);
    assert!(warnings(&captured.take()).is_empty());
}

/// Issue 16, part 2: one span per physical attempt, under the caller's
/// span, with OpenTelemetry's HTTP client fields; the engine's events are
/// inside the attempt they follow.
#[tokio::test(start_paused = true)]
async fn one_span_per_attempt_with_the_http_client_conventions() {
    use tracing::Instrument;
    let (spans, _guard) = support::spans::capture();
    let server = Server::start().await;
    let port = format!("u64:{}", server.addr().port());
    for via in BOTH {
        spans.clear();
        let path = format!("/spans/{via:?}");
        server.script(
            &path,
            vec![Step::status(503), Step::status(503), Step::status(200)],
        );
        let caller = tracing::info_span!("caller");
        let got = send(via, base().build().unwrap(), &server.url(&path), &get())
            .instrument(caller)
            .await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let seen = spans.attempts();
        assert_eq!(seen.len(), 3, "{via:?}: {seen:#?}");
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s.parent.as_deref(), Some("caller"), "{via:?} {i}: {s:?}");
            assert_eq!(s.field("otel.name"), Some("GET"));
            assert_eq!(s.field("otel.kind"), Some("client"));
            assert_eq!(s.field("http.request.method"), Some("GET"), "{via:?}");
            assert_eq!(s.field("server.address"), Some("127.0.0.1"), "{via:?}");
            assert_eq!(s.field("server.port"), Some(port.as_str()), "{via:?}");
            assert_eq!(s.field("url.path"), Some(path.as_str()), "{via:?}");
        }
        let status: Vec<_> = seen
            .iter()
            .map(|s| s.field("http.response.status_code"))
            .collect();
        assert_eq!(status, [Some("u64:503"), Some("u64:503"), Some("u64:200")]);
        let errors: Vec<_> = seen.iter().map(|s| s.field("error.type")).collect();
        assert_eq!(errors, [Some("503"), Some("503"), None], "{via:?}");
        let resends: Vec<_> = seen
            .iter()
            .map(|s| s.field("http.request.resend_count"))
            .collect();
        assert_eq!(resends, [None, Some("u64:1"), Some("u64:2")], "{via:?}");
        // The two "retrying request" events, each in the attempt it follows.
        let retrying: Vec<_> = spans
            .events()
            .into_iter()
            .filter(|e| {
                e.fields
                    .get("message")
                    .is_some_and(|m| m == "retrying request")
            })
            .collect();
        assert_eq!(retrying.len(), 2, "{via:?}");
        assert!(
            retrying
                .iter()
                .all(|e| e.span.as_deref() == Some("http_resilience.attempt")),
            "{via:?}: {retrying:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_name_a_transport_failure_and_hide_paths() {
    let (spans, _guard) = support::spans::capture();
    let server = Server::start().await;
    for via in BOTH {
        spans.clear();
        let path = format!("/spans-reset/{via:?}/secret-part");
        server.script(&path, vec![Step::Reset, Step::status(200)]);
        let policy = base().hide_paths(true).build().unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let seen = spans.attempts();
        assert_eq!(seen.len(), 2, "{via:?}: {seen:#?}");
        assert_eq!(
            seen[0].field("error.type"),
            Some("connection_reset"),
            "{via:?}"
        );
        assert_eq!(seen[0].field("otel.status_code"), Some("error"));
        assert_eq!(seen[0].field("http.response.status_code"), None);
        assert_eq!(seen[1].field("error.type"), None);
        for s in &seen {
            assert_eq!(s.field("url.path"), None, "{via:?}: {s:?}");
            assert!(!format!("{:?}", s.fields).contains("secret-part"));
        }
        // A clean success: one span, no event.
        spans.clear();
        server.script("/spans-ok", vec![Step::status(200)]);
        send(
            via,
            base().build().unwrap(),
            &server.url("/spans-ok"),
            &get(),
        )
        .await;
        assert_eq!(spans.attempts().len(), 1, "{via:?}");
        assert!(spans.events().is_empty(), "{via:?}: {:?}", spans.events());
    }
}

/// `retry` for any operation: its events name the operation, not a method
/// and a host.
#[tokio::test(start_paused = true)]
async fn an_operations_events_name_it() {
    use http_resilience::{ErrorClass, Jitter, RetryPolicy};
    let (captured, _guard) = capture();
    let policy = RetryPolicy::builder()
        .initial_backoff(std::time::Duration::from_millis(5))
        .jitter(Jitter::None)
        .max_retries(1)
        .build()
        .unwrap();
    let error = policy
        .operation("store.poll")
        .retry(
            |_| async { Err::<(), _>("busy") },
            |_: &&str| ErrorClass::transient(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    let logs = captured.take();
    let retrying = logs
        .lines()
        .find(|l| l.contains("retrying operation"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(retrying.contains("operation=\"store.poll\""), "{retrying}");
    assert!(!retrying.contains("method="), "{retrying}");
    let giving_up = logs
        .lines()
        .find(|l| l.contains("giving up on operation"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(giving_up.contains("reason=\"max_retries\""), "{giving_up}");
}

/// An attempt that runs out of its time: its span says `timeout`, and the
/// next one, within its own timer, succeeds in its span.
#[tokio::test(start_paused = true)]
async fn attempt_spans_name_a_timeout() {
    let (spans, _guard) = support::spans::capture();
    let server = Server::start().await;
    for via in BOTH {
        spans.clear();
        let path = format!("/spans-timeout/{via:?}");
        server.script(&path, vec![Step::Hang, Step::status(200)]);
        let policy = base()
            .attempt_timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let seen = spans.attempts();
        assert_eq!(seen.len(), 2, "{via:?}: {seen:#?}");
        assert_eq!(seen[0].field("error.type"), Some("timeout"), "{via:?}");
        assert_eq!(seen[0].field("http.response.status_code"), None);
        assert_eq!(seen[1].field("http.response.status_code"), Some("u64:200"));
        assert_eq!(seen[1].field("http.request.resend_count"), Some("u64:1"));
        let retrying: Vec<_> = spans
            .events()
            .into_iter()
            .filter(|e| {
                e.fields
                    .get("message")
                    .is_some_and(|m| m == "retrying request")
            })
            .collect();
        assert_eq!(retrying.len(), 1, "{via:?}");
        assert_eq!(retrying[0].span.as_deref(), Some("http_resilience.attempt"));
    }
}

/// A response whose body the classifier reads (GitHub's secondary rate
/// limit in a 403): the reading is part of the attempt, in its span, and
/// the engine decides in it.
#[tokio::test(start_paused = true)]
async fn an_inspected_body_is_read_in_the_attempts_span() {
    use http_resilience::{Jitter, Preset};
    const SECONDARY: &str = r#"{"message":"You have exceeded a secondary rate limit."}"#;
    let (spans, _guard) = support::spans::capture();
    let server = Server::start().await;
    for via in BOTH {
        spans.clear();
        let path = format!("/spans-inspected/{via:?}");
        server.script(
            &path,
            vec![Step::respond(403, &[], SECONDARY), Step::status(200)],
        );
        let policy = Preset::GitHub
            .builder()
            .jitter(Jitter::None)
            .attempt_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let seen = spans.attempts();
        assert_eq!(seen.len(), 2, "{via:?}: {seen:#?}");
        assert_eq!(seen[0].field("http.response.status_code"), Some("u64:403"));
        assert_eq!(seen[0].field("error.type"), Some("403"), "{via:?}");
        assert_eq!(seen[1].field("error.type"), None, "{via:?}");
        let retrying: Vec<_> = spans
            .events()
            .into_iter()
            .filter(|e| {
                e.fields
                    .get("message")
                    .is_some_and(|m| m == "retrying request")
            })
            .collect();
        assert_eq!(retrying.len(), 1, "{via:?}: {:?}", spans.events());
        assert_eq!(retrying[0].span.as_deref(), Some("http_resilience.attempt"));
    }
}

/// Issue 17 with issue 16's spans: each attempt of a hedged request has
/// its own span, the hedge's a resend; the winner's records its status, the
/// cancelled one none.
#[tokio::test(start_paused = true)]
async fn a_hedge_has_its_own_span() {
    use std::time::Duration;
    let (spans, _guard) = support::spans::capture();
    let server = Server::start().await;
    for via in BOTH {
        spans.clear();
        let path = format!("/hedged/{via:?}");
        let slow = Step::after(Duration::from_secs(2), Step::body(200, "slow"));
        let fast = Step::after(Duration::from_millis(10), Step::body(200, "fast"));
        server.script(&path, vec![slow, fast]);
        let hedging = http_resilience::Hedging::builder()
            .delay(Duration::from_millis(50))
            .build()
            .unwrap();
        let policy = base().hedging(hedging).build().unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.body.as_deref(), Some("fast"), "{via:?}");
        let seen = spans.attempts();
        assert_eq!(seen.len(), 2, "{via:?}: {seen:#?}");
        let resends: Vec<_> = seen
            .iter()
            .map(|s| s.field("http.request.resend_count"))
            .collect();
        assert_eq!(resends, [None, Some("u64:1")], "{via:?}");
        let status: Vec<_> = seen
            .iter()
            .map(|s| s.field("http.response.status_code"))
            .collect();
        assert_eq!(
            status,
            [None, Some("u64:200")],
            "{via:?}: the first was cancelled"
        );
    }
}
