//! Security checks, through both adapters against the fault server:
//! - credentials (`Authorization`, `Proxy-Authorization`, `Cookie`, API-key
//!   headers) never appear in reports, errors (`Display` and `Debug`) or
//!   tracing output, nor do credentials the server sends back;
//! - a hostile server cannot make the client sleep longer than the policy
//!   allows, whatever it puts in `Retry-After`, `retry-after-ms` or
//!   `x-ratelimit-reset` (huge, negative, far-future dates, garbage);
//! - what the retry machinery buffers is bounded: one copy of the request
//!   body however many attempts, and a discarded response's body is never
//!   read.
//!
//! Tracing: every test of this binary installs the same global subscriber
//! first (once), so tracing's process-wide callsite interest is computed
//! with it in place and no event can be missed; the tracing test then reads
//! what every test logged.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_resilience::{DelaySource, Error, LongHint, RetryLayer, StopReason};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use support::capture::Captured;
use support::clients::{BOTH, Got, ReplayBody, Req, Via, base, get, post, send};
use support::{End, Server, Step};
use tower::{Layer, Service};

/// Every secret carries this marker, so one search finds any of them.
const MARK: &str = "sekrit";

/// The credential-bearing request headers of the common providers.
const CREDENTIALS: [(&str, &str); 9] = [
    ("authorization", "Bearer sekrit-authorization"),
    ("proxy-authorization", "Basic sekrit-proxy"),
    ("cookie", "session=sekrit-cookie"),
    ("x-api-key", "sekrit-x-api-key"),
    ("api-key", "sekrit-api-key"),
    ("x-goog-api-key", "sekrit-goog"),
    ("private-token", "sekrit-gitlab"),
    ("x-auth-token", "sekrit-auth-token"),
    ("x-amz-security-token", "sekrit-amz"),
];

/// The process-wide capture of tracing output; installed by every test
/// before it does anything.
fn logs() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

fn with_credentials(req: Req) -> Req {
    let mut headers = req.headers.clone();
    headers.extend(CREDENTIALS);
    Req { headers, ..req }
}

/// Everything a caller could print about an outcome.
fn printed(got: &Got) -> String {
    let mut out = format!("{got:?}\n{}\n{:?}\n", got.report, got.report);
    if let Some(e) = &got.error {
        out.push_str(&format!("{e}\n{e:?}\n{:?}\n", e.failure()));
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            out.push_str(&format!("{s}\n{s:?}\n"));
            source = s.source();
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn credentials_never_appear_in_reports_or_errors() {
    logs();
    let server = Server::start().await;
    // The server echoes credentials of its own in what it returns.
    let echo: &[(&str, &str)] = &[
        ("set-cookie", "id=sekrit-set-cookie"),
        ("www-authenticate", "Bearer realm=sekrit-realm"),
    ];
    let cases: Vec<(&str, Vec<Step>, Req, &str)> = vec![
        (
            "exhausted",
            vec![Step::with(503, echo)],
            get(),
            "MAX_RETRIES_EXCEEDED",
        ),
        (
            "too long",
            vec![Step::with(
                429,
                &[("retry-after", "9999"), echo[0], echo[1]],
            )],
            get(),
            "RETRY_AFTER_TOO_LONG",
        ),
        ("reset", vec![Step::Reset], post(), "NOT_RETRYABLE"),
        ("timeouts", vec![Step::Hang], get(), "MAX_RETRIES_EXCEEDED"),
        (
            "success",
            vec![Step::status(503), Step::with(200, echo)],
            get(),
            "",
        ),
    ];
    for via in BOTH {
        for (name, script, req, code) in &cases {
            let path = format!("/creds/{}/{via:?}", name.replace(' ', "-"));
            server.script(&path, script.clone());
            let policy = base()
                .max_retries(2)
                .attempt_timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            let got = send(
                via,
                policy,
                &server.url(&path),
                &with_credentials(req.clone()),
            )
            .await;
            assert_eq!(got.code.unwrap_or(""), *code, "{via:?} {name}");
            // The credentials did reach the server: the test is not vacuous.
            let seen = server.seen(&path);
            assert!(seen[0].header("authorization").unwrap().contains(MARK));
            let text = printed(&got);
            assert!(
                !text.contains(MARK),
                "{via:?} {name}: a secret leaked:\n{text}"
            );
        }
    }
}

/// Credentials in the URL (userinfo) are as secret as headers.
#[tokio::test(start_paused = true)]
async fn url_passwords_never_appear_in_errors() {
    logs();
    let server = Server::start().await;
    server.script("/userinfo", vec![Step::Reset]);
    for via in BOTH {
        let url = format!("http://user:sekrit-password@{}/userinfo", server.addr());
        let got = send(via, base().max_retries(1).build().unwrap(), &url, &get()).await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        let text = printed(&got);
        if via == Via::Reqwest {
            // reqwest's errors do show the URL: without its password.
            assert!(text.contains("/userinfo"), "{text}");
        }
        assert!(
            !text.contains(MARK),
            "{via:?}: the URL password leaked:\n{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn tracing_never_shows_credentials() {
    let captured = logs();
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/traced/{via:?}");
        server.script(&path, vec![Step::status(503), Step::Reset]);
        let got = send(
            via,
            base().max_retries(2).build().unwrap(),
            &server.url(&path),
            &with_credentials(get()),
        )
        .await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"));
    }
    let text = captured.text();
    // Capture works: both requests' retries and give-ups are there.
    for via in BOTH {
        let path = format!(" path=\"/traced/{via:?}\"");
        let ours = text
            .lines()
            .filter(|l| is_ours(l) && l.contains(&path))
            .count();
        assert_eq!(ours, 3, "{via:?}: two retries and a give-up:\n{text}");
    }
    // And no test of this binary made the crate log a secret. (Only what
    // the crate wrote counts: hyper-util's TRACE events print a URI's user
    // info, which is the client's business; the attempt's span they run
    // in is the crate's.)
    let ours: String = text
        .lines()
        .filter_map(written_by_us)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!ours.is_empty());
    assert!(ours.contains("http_resilience.attempt{"), "{ours}");
    assert!(!ours.contains(MARK), "a secret in the logs:\n{ours}");
}

/// Whether a formatted line is one of the crate's own events (its target
/// follows the spans).
fn is_ours(line: &str) -> bool {
    line.contains(" http_resilience: ")
}

/// What the crate wrote on a formatted line: all of its own event, or the
/// fields of its attempt span around another crate's event.
fn written_by_us(line: &str) -> Option<&str> {
    if is_ours(line) {
        return Some(line);
    }
    let start = line.find("http_resilience.attempt{")?;
    let end = start + line[start..].find("}:")?;
    Some(&line[start..=end])
}

/// Hostile hints: huge, negative, far-future, fractional, garbage.
fn hostile() -> Vec<(u16, Vec<(&'static str, &'static str)>)> {
    let mut cases: Vec<(u16, Vec<(&str, &str)>)> = Vec::new();
    for v in [
        "99999999999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "4294967296",
        "-1",
        "-99999999999",
        "1e10",
        "NaN",
        "inf",
        "0x7fffffff",
        "5; 10000000",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Thu Jan  1 00:00:00 2150",
        "tomorrow",
        "",
    ] {
        cases.push((503, vec![("retry-after", v)]));
        cases.push((429, vec![("retry-after-ms", v)]));
        cases.push((
            403,
            vec![("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", v)],
        ));
        cases.push((429, vec![("x-ratelimit-reset", v)]));
    }
    for v in ["1e300", "1.5e9", "9999999999.9", "-0", "1_000"] {
        cases.push((429, vec![("retry-after-ms", v)]));
    }
    cases
}

#[tokio::test(start_paused = true)]
async fn hostile_hints_cannot_make_the_client_sleep_longer_than_the_policy_allows() {
    logs();
    let server = Server::start().await;
    let cap = Duration::from_secs(5);
    let max_retries = 3u32;
    let mut checked = 0;
    let mut refused = 0;
    for via in BOTH {
        for long_hint in [LongHint::GiveUp, LongHint::UseBackoff] {
            for (i, (status, headers)) in hostile().into_iter().enumerate() {
                let path = format!("/hostile/{via:?}/{long_hint:?}/{i}");
                server.script(&path, vec![Step::with(status, &headers)]);
                let policy = base()
                    .max_retries(max_retries)
                    .max_retry_after(cap)
                    .on_long_hint(long_hint)
                    .build()
                    .unwrap();
                let got = send(via, policy, &server.url(&path), &get()).await;
                let context = format!("{via:?} {long_hint:?} {status} {headers:?}: {got:?}");
                for (wait, source) in got.waits() {
                    assert!(wait <= cap, "{context}: waited {wait:?}");
                    if long_hint == LongHint::UseBackoff || source == DelaySource::Backoff {
                        assert!(wait <= Duration::from_secs(1), "{context}");
                    }
                }
                // The clock, not just the report: no longer than the
                // retries times the cap.
                assert!(got.elapsed <= cap * max_retries, "{context}");
                assert!(got.report.attempts() <= max_retries + 1, "{context}");
                if got.code == Some("RETRY_AFTER_TOO_LONG") {
                    assert_eq!(long_hint, LongHint::GiveUp, "{context}");
                    assert_eq!(got.elapsed, Duration::ZERO, "{context}: no wait at all");
                    refused += 1;
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 2 * hostile().len());
    // Some of them were parsed as the huge waits they are, and refused.
    assert!(refused > 0);
    println!("{checked} hostile cases, {refused} refused as too long");
}

/// A deadline bounds the whole request even against a server whose every
/// hint is just under the cap.
#[tokio::test(start_paused = true)]
async fn a_deadline_bounds_a_server_that_always_asks_for_the_most() {
    logs();
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/greedy/{via:?}");
        server.script(&path, vec![Step::with(429, &[("retry-after", "120")])]);
        let policy = base()
            .max_retries(100)
            .deadline(Duration::from_secs(300))
            .build()
            .unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.code, Some("DEADLINE_EXCEEDED"), "{via:?}");
        assert_eq!(got.report.attempts(), 3, "{via:?}: 0, 120, 240 s");
        assert!(got.elapsed < Duration::from_secs(300), "{via:?}");
    }
}

/// The tower layer keeps one copy of the request body, whatever the number
/// of attempts: the original it replays from, plus the attempt in flight.
#[tokio::test(start_paused = true)]
async fn replay_keeps_one_copy_of_the_body() {
    logs();
    let server = Server::start().await;
    server.script(
        "/copies",
        vec![
            Step::status(503),
            Step::status(503),
            Step::status(503),
            Step::status(200),
        ],
    );
    let body = ReplayBody::new(&"x".repeat(64 * 1024), true);
    let most = Arc::new(Mutex::new(Vec::new()));
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let watched = {
        let most = most.clone();
        tower::service_fn(move |req: http::Request<ReplayBody>| {
            most.lock().unwrap().push(req.body().copies());
            let mut client = client.clone();
            async move { client.call(req).await }
        })
    };
    let mut svc = RetryLayer::new(base().build().unwrap()).layer(watched);
    let request = http::Request::put(server.url("/copies"))
        .body(body.clone())
        .unwrap();
    let response = svc.call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // Ours, the layer's original, the attempt's: 3 at every attempt.
    assert_eq!(*most.lock().unwrap(), vec![3, 3, 3, 3]);
    assert_eq!(body.copies(), 1, "nothing kept after the response");
    let seen = server.seen("/copies");
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.body_len() == 64 * 1024));
}

/// A retried or given-up response's body is never read: a server cannot
/// make the client buffer (or wait for) a huge error body.
#[tokio::test(start_paused = true)]
async fn discarded_response_bodies_are_never_read() {
    logs();
    let server = Server::start().await;
    // A 503 announcing 1 GiB, sending 1 KiB, then nothing more.
    let head = format!(
        "HTTP/1.1 503 X\r\ncontent-length: {}\r\n\r\n{}",
        1u64 << 30,
        "y".repeat(1024)
    );
    let huge = Step::Raw {
        parts: vec![(Duration::ZERO, head.into_bytes())],
        end: End::KeepAlive,
    };
    let policy = base().max_retries(2).build().unwrap();
    let limit = Duration::from_secs(3600);
    let started = tokio::time::Instant::now();

    // reqwest. If the adapter read the body, this would never finish.
    server.script("/huge/reqwest", vec![huge.clone()]);
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(http_resilience::RetryMiddleware::new(policy.clone()))
    .build();
    let sent = client.get(server.url("/huge/reqwest")).send();
    let error = match tokio::time::timeout(limit, sent).await {
        Ok(Err(reqwest_middleware::Error::Middleware(e))) => {
            e.downcast::<http_resilience::Error>().unwrap()
        }
        other => panic!("reqwest: {other:?}"),
    };
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(error.report().attempts(), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(300), "reqwest");
    assert_eq!(server.seen("/huge/reqwest").len(), 3);

    // tower.
    let started = tokio::time::Instant::now();
    server.script("/huge/tower", vec![huge]);
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let mut svc = RetryLayer::new(policy).layer(client);
    let request = http::Request::get(server.url("/huge/tower"))
        .body(ReplayBody::new("", false))
        .unwrap();
    let error = match tokio::time::timeout(limit, svc.call(request)).await {
        Ok(Err(e)) => e,
        other => panic!("tower: {other:?}"),
    };
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(error.report().attempts(), 3);
    assert_eq!(error.report().stop_reason(), Some(StopReason::MaxRetries));
    assert_eq!(started.elapsed(), Duration::from_millis(300), "tower");
    assert_eq!(server.seen("/huge/tower").len(), 3);
}

/// Query strings carry API keys too (`?key=` for Google APIs): they stay
/// out of errors. The path is kept: it says which call failed.
#[tokio::test(start_paused = true)]
async fn url_query_strings_never_appear_in_errors() {
    logs();
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/query?key=sekrit-query-{via:?}");
        server.script(&path, vec![Step::Reset]);
        let url = server.url(&path);
        let got = send(via, base().max_retries(1).build().unwrap(), &url, &get()).await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        assert_eq!(server.seen(&path).len(), 2, "{via:?}");
        let text = printed(&got);
        if via == Via::Reqwest {
            assert!(text.contains("/query"), "{text}");
        }
        assert!(!text.contains(MARK), "{via:?}: the query leaked:\n{text}");
    }
}

/// A `reqwest::Request` built directly (not through `RequestBuilder`, which
/// moves URL credentials into an `Authorization` header) keeps its user
/// info in the URL, and reqwest prints the URL in its errors: the password
/// must not reach the caller's error text.
#[tokio::test(start_paused = true)]
async fn url_passwords_of_directly_built_requests_never_appear_in_errors() {
    logs();
    let server = Server::start().await;
    server.script("/direct?token=sekrit-q", vec![Step::Reset]);
    let url = format!(
        "http://user:sekrit-direct@{}/direct?token=sekrit-q",
        server.addr()
    );
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(http_resilience::RetryMiddleware::new(
            base().max_retries(1).build().unwrap(),
        ))
        .build();
    let request = reqwest::Request::new(http::Method::GET, url.parse().unwrap());
    let error = match client.execute(request).await {
        Err(reqwest_middleware::Error::Middleware(e)) => e.downcast::<Error>().unwrap(),
        other => panic!("expected a middleware error, got {other:?}"),
    };
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(server.seen("/direct?token=sekrit-q").len(), 2);
    let mut text = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        text.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    assert!(text.contains("/direct"), "the path stays:\n{text}");
    assert!(!text.contains(MARK), "the URL password leaked:\n{text}");
}

/// Some URLs carry a token in the path (Telegram's `/bot<token>/`, Slack
/// webhooks): with `hide_paths(true)` errors, reports and tracing name the
/// host and port only.
#[tokio::test(start_paused = true)]
async fn hide_paths_keeps_tokens_in_paths_out_of_errors_reports_and_logs() {
    let captured = logs();
    let server = Server::start().await;
    let port = server.addr().port().to_string();
    for via in BOTH {
        let path = format!("/botsekrit-path-token-{via:?}/sendMessage");
        server.script(&path, vec![Step::status(503), Step::Reset]);
        let policy = base().max_retries(2).hide_paths(true).build().unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        assert_eq!(server.seen(&path).len(), 3, "{via:?}");
        let error = got.error.as_ref().unwrap();
        assert_eq!(
            error.url(),
            Some(format!("http://127.0.0.1:{port}").as_str()),
            "{via:?}"
        );
        let text = printed(&got);
        assert!(!text.contains(MARK), "{via:?}: the path leaked:\n{text}");
    }
    let text = captured.text();
    let ours = text
        .lines()
        .filter(|l| l.contains(&format!("port={port}")) && l.contains("retrying request"))
        .count();
    assert_eq!(
        ours, 4,
        "both adapters' retries are logged, with the host and port:\n{text}"
    );
    assert!(
        !text.contains("sekrit-path"),
        "a path token in the logs:\n{text}"
    );
}

/// Without `hide_paths`, the error's URL keeps the path but never user
/// info or the query string.
#[tokio::test(start_paused = true)]
async fn the_errors_url_is_redacted() {
    logs();
    let server = Server::start().await;
    let port = server.addr().port();
    for via in BOTH {
        let path = format!("/redacted/{via:?}?key=sekrit-{via:?}");
        server.script(&path, vec![Step::Reset]);
        let url = format!("http://user:sekrit-pw@127.0.0.1:{port}{path}");
        let got = send(via, base().max_retries(0).build().unwrap(), &url, &get()).await;
        let error = got.error.as_ref().unwrap();
        assert_eq!(
            error.url(),
            Some(format!("http://127.0.0.1:{port}/redacted/{via:?}").as_str()),
            "{via:?}"
        );
    }
}
