//! `RetryPolicy::send_rebuilt`: a request made anew for every attempt,
//! classified by the policy's rules. Every row runs through both clients
//! (reqwest's `Client::execute` on a `reqwest::Request`, hyper-util's
//! client on an `http::Request`) against the scripted server, under
//! tokio's paused clock.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use http_resilience::{
    DelaySource, Error, Jitter, Preset, ResponseExt, RetryPolicy, RetryPolicyBuilder,
};
use support::clients::{BOTH, Got, ReplayBody, Via, base, hyper_client};
use support::{Server, Step, fixed_now};
use tokio::time::Instant;

/// What to send, made again for every attempt.
#[derive(Clone)]
struct Send {
    method: Method,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    /// A body of unknown length in chunks (a stream, as a multipart form is).
    streaming: bool,
    /// `make` fails from this attempt on (1 for the first).
    make_fails_from: Option<u32>,
}

fn get() -> Send {
    Send {
        method: Method::GET,
        headers: vec![],
        body: "",
        streaming: false,
        make_fails_from: None,
    }
}

fn post(body: &'static str) -> Send {
    Send {
        method: Method::POST,
        body,
        ..get()
    }
}

#[derive(Debug)]
struct CannotMake;
impl std::fmt::Display for CannotMake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot read the upload")
    }
}
impl std::error::Error for CannotMake {}

/// Sends `what` through `via` with `send_rebuilt`; also how many requests
/// `make` built.
async fn rebuilt(via: Via, policy: &RetryPolicy, url: &str, what: &Send) -> (Got, u32) {
    let made = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let mut got = match via {
        Via::Reqwest => {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let result = policy
                .send_rebuilt(
                    |attempt| {
                        let n = made.fetch_add(1, Ordering::SeqCst) + 1;
                        assert_eq!(attempt.number(), n);
                        let mut builder = client.request(what.method.clone(), url);
                        for (k, v) in &what.headers {
                            builder = builder.header(*k, *v);
                        }
                        builder = if what.streaming {
                            builder.body(reqwest::Body::wrap(ReplayBody::new(what.body, true)))
                        } else {
                            builder.body(what.body)
                        };
                        let fails = what.make_fails_from.is_some_and(|from| n >= from);
                        async move {
                            if fails {
                                return Err(Box::new(CannotMake) as http_resilience::BoxError);
                            }
                            Ok(builder.build()?)
                        }
                    },
                    |request| client.execute(request),
                )
                .await;
            match result {
                Ok(response) => {
                    let report = response.retry_report().into_owned();
                    let status = response.status().as_u16();
                    ok(status, response.text().await.unwrap(), report)
                }
                Err(mut error) => {
                    let body = match error.take_response::<reqwest::Response>() {
                        Some(r) => Some(r.text().await.unwrap()),
                        None => None,
                    };
                    failed(error, body)
                }
            }
        }
        Via::Tower => {
            let client = hyper_client();
            let result = policy
                .send_rebuilt(
                    |attempt| {
                        let n = made.fetch_add(1, Ordering::SeqCst) + 1;
                        assert_eq!(attempt.number(), n);
                        let mut builder = http::Request::builder()
                            .method(what.method.clone())
                            .uri(url);
                        for (k, v) in &what.headers {
                            builder = builder.header(*k, *v);
                        }
                        let request = builder.body(ReplayBody::new(what.body, what.streaming));
                        let fails = what.make_fails_from.is_some_and(|from| n >= from);
                        async move {
                            if fails {
                                return Err(Box::new(CannotMake) as http_resilience::BoxError);
                            }
                            Ok(request?)
                        }
                    },
                    |request| client.request(request),
                )
                .await;
            match result {
                Ok(response) => {
                    let report = response.retry_report().into_owned();
                    let status = response.status().as_u16();
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    ok(status, String::from_utf8_lossy(&bytes).into_owned(), report)
                }
                Err(mut error) => {
                    type Body = http_resilience::ResponseBody<hyper::body::Incoming>;
                    let body = match error.take_response::<http::Response<Body>>() {
                        Some(r) => {
                            let bytes = r.into_body().collect().await.unwrap().to_bytes();
                            Some(String::from_utf8_lossy(&bytes).into_owned())
                        }
                        None => None,
                    };
                    failed(error, body)
                }
            }
        }
    };
    got.elapsed = start.elapsed();
    (got, made.load(Ordering::SeqCst))
}

fn ok(status: u16, body: String, report: http_resilience::RetryReport) -> Got {
    Got {
        status: Some(status),
        body: Some(body),
        body_error: None,
        body_failure: None,
        report,
        code: None,
        error: None,
        elapsed: Duration::ZERO,
    }
}

fn failed(error: Error, body: Option<String>) -> Got {
    Got {
        status: None,
        body,
        body_error: None,
        body_failure: None,
        report: error.report().clone(),
        code: Some(error.code()),
        error: Some(error),
        elapsed: Duration::ZERO,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One row: what the server does, what is sent under which policy, and
/// what must come of it.
struct Row {
    name: &'static str,
    policy: RetryPolicyBuilder,
    steps: Vec<Step>,
    send: Send,
    /// The status handed over (`None`: an error).
    status: Option<u16>,
    code: Option<&'static str>,
    attempts: usize,
    waits: Vec<(Duration, DelaySource)>,
}

fn rows() -> Vec<Row> {
    let secondary = "{\"message\":\"You have exceeded a secondary rate limit.\"}";
    vec![
        Row {
            name: "503, 503, 200 on a GET: recovered after the backoff",
            policy: base().max_retries(3),
            steps: vec![Step::status(503), Step::status(503), Step::status(200)],
            send: get(),
            status: Some(200),
            code: None,
            attempts: 3,
            waits: vec![
                (ms(100), DelaySource::Backoff),
                (ms(200), DelaySource::Backoff),
            ],
        },
        Row {
            name: "OpenAI preset: 429 with retry-after-ms 300, a POST waited 300 ms",
            policy: Preset::OpenAi
                .builder()
                .jitter(Jitter::None)
                .wall_clock(fixed_now),
            steps: vec![
                Step::with(429, &[("retry-after-ms", "300")]),
                Step::status(200),
            ],
            send: post("{\"model\":\"m\"}"),
            status: Some(200),
            code: None,
            attempts: 2,
            waits: vec![(ms(300), DelaySource::RetryAfterMs)],
        },
        Row {
            name: "a POST that got a 503 is handed back, not resent",
            policy: base(),
            steps: vec![Step::status(503), Step::status(200)],
            send: post("payload"),
            status: Some(503),
            code: None,
            attempts: 1,
            waits: vec![],
        },
        Row {
            name: "a connection reset, then 200",
            policy: base(),
            steps: vec![Step::Reset, Step::status(200)],
            send: get(),
            status: Some(200),
            code: None,
            attempts: 2,
            waits: vec![(ms(100), DelaySource::Backoff)],
        },
        Row {
            name: "a streamed POST body with a generated key: made again and resent whole",
            policy: base().auto_idempotency_key(true),
            steps: vec![Step::status(503), Step::status(200)],
            send: Send {
                streaming: true,
                ..post("a streamed multipart form")
            },
            status: Some(200),
            code: None,
            attempts: 2,
            waits: vec![(ms(100), DelaySource::Backoff)],
        },
        Row {
            name: "always 503: gives up with the last response",
            policy: base().max_retries(2),
            steps: vec![Step::status(503)],
            send: get(),
            status: None,
            code: Some("MAX_RETRIES_EXCEEDED"),
            attempts: 3,
            waits: vec![
                (ms(100), DelaySource::Backoff),
                (ms(200), DelaySource::Backoff),
            ],
        },
        Row {
            name: "GitHub preset: a secondary-limit 403 (read from its body) honours retry-after",
            policy: Preset::GitHub
                .builder()
                .jitter(Jitter::None)
                .wall_clock(fixed_now),
            steps: vec![
                Step::respond(403, &[("retry-after", "2")], secondary),
                Step::status(200),
            ],
            send: get(),
            status: Some(200),
            code: None,
            attempts: 2,
            waits: vec![(Duration::from_secs(2), DelaySource::RetryAfter)],
        },
        Row {
            name: "a 404 is permanent: handed back at once",
            policy: base(),
            steps: vec![Step::status(404)],
            send: get(),
            status: Some(404),
            code: None,
            attempts: 1,
            waits: vec![],
        },
        Row {
            name: "an attempt that hangs times out, the next succeeds",
            policy: base().attempt_timeout(Duration::from_secs(1)),
            steps: vec![Step::Hang, Step::status(200)],
            send: get(),
            status: Some(200),
            code: None,
            attempts: 2,
            waits: vec![(ms(100), DelaySource::Backoff)],
        },
        Row {
            name: "the retry's request cannot be made: the last response handed over",
            policy: base(),
            steps: vec![Step::status(503)],
            send: Send {
                make_fails_from: Some(2),
                ..get()
            },
            status: Some(503),
            code: None,
            attempts: 1,
            waits: vec![(ms(100), DelaySource::Backoff)],
        },
        Row {
            name: "the first request cannot be made: nothing sent",
            policy: base(),
            steps: vec![Step::status(200)],
            send: Send {
                make_fails_from: Some(1),
                ..get()
            },
            status: None,
            code: Some("NOT_RETRYABLE"),
            attempts: 0,
            waits: vec![],
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn behaviour_table_through_both_clients() {
    println!("rebuild table (attempts seen by the server, waits):");
    for row in rows() {
        for via in BOTH {
            let server = Server::start().await;
            server.script("/r", row.steps.clone());
            let policy = row.policy.clone().build().unwrap();
            let (got, made) = rebuilt(via, &policy, &server.url("/r"), &row.send).await;
            let what = format!("{} ({via:?})", row.name);
            assert_eq!(got.code, row.code, "{what}: {:?}", got.error);
            assert_eq!(got.status, row.status, "{what}");
            assert_eq!(got.report.attempts() as usize, row.attempts, "{what}");
            assert_eq!(server.count("/r"), row.attempts, "{what}: server");
            assert_eq!(got.waits(), row.waits, "{what}");
            // One request made per attempt (and the one that failed).
            let extra = usize::from(row.send.make_fails_from.is_some());
            assert_eq!(made as usize, row.attempts + extra, "{what}: made");
            // Every attempt carried the whole body, and one key.
            let seen = server.seen("/r");
            for s in &seen {
                if row.send.method == Method::POST {
                    assert_eq!(s.body, row.send.body.as_bytes(), "{what}");
                }
            }
            let keys: Vec<_> = seen
                .iter()
                .map(|s| s.header("idempotency-key").map(str::to_owned))
                .collect();
            if policy.auto_idempotency_key() {
                assert!(keys[0].is_some(), "{what}: a key");
                assert!(keys.iter().all(|k| k == &keys[0]), "{what}: {keys:?}");
            }
            if row.code == Some("MAX_RETRIES_EXCEEDED") {
                assert_eq!(got.body.as_deref(), Some("body of 503"), "{what}");
                assert_eq!(got.error.as_ref().unwrap().status().unwrap().as_u16(), 503);
            }
            if row.send.make_fails_from == Some(2) {
                assert_eq!(
                    got.report.stop_reason(),
                    Some(http_resilience::StopReason::BodyNotReplayable),
                    "{what}"
                );
            }
            if row.code == Some("NOT_RETRYABLE") {
                let source = std::error::Error::source(got.error.as_ref().unwrap()).unwrap();
                assert_eq!(source.to_string(), "cannot read the upload", "{what}");
            }
            println!(
                "  {via:?}: {}: {} attempts, waits {:?}",
                row.name,
                server.count("/r"),
                got.waits()
                    .iter()
                    .map(|(d, _)| d.as_millis())
                    .collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn refused_connections_are_retried_then_reported() {
    for via in BOTH {
        let addr = support::refused_addr().await;
        let url = format!("http://user:secret@{addr}/v1/x?token=hunter2");
        let policy = base().max_retries(2).build().unwrap();
        let (got, made) = rebuilt(via, &policy, &url, &post("p")).await;
        // A refused connection proves the POST was not sent: retried.
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        assert_eq!(got.report.attempts(), 3, "{via:?}");
        assert_eq!(made, 3);
        let error = got.error.unwrap();
        assert!(error.is_connect(), "{via:?}: {error:?}");
        // No secret in the error, its URL or its source.
        let all = format!(
            "{error} {error:?} {:?} {}",
            error.url(),
            std::error::Error::source(&error).map_or(String::new(), |e| format!("{e} {e:?}"))
        );
        for secret in ["secret", "hunter2", "token"] {
            assert!(!all.contains(secret), "{via:?}: {secret} in {all}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn attempt_header_and_hook_reach_each_rebuilt_request() {
    for via in BOTH {
        let server = Server::start().await;
        server.script(
            "/h",
            vec![Step::status(503), Step::status(503), Step::status(200)],
        );
        let policy = base()
            .attempt_header("x-attempt")
            .before_retry(|request: &mut http_resilience::ResendRequest<'_>, n: u32| {
                let value = http::HeaderValue::from(n * 10);
                request.headers_mut().insert("x-hook", value);
            })
            .build()
            .unwrap();
        let (got, _) = rebuilt(via, &policy, &server.url("/h"), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let seen = server.seen("/h");
        let attempt: Vec<_> = seen.iter().map(|s| s.header("x-attempt")).collect();
        let hook: Vec<_> = seen.iter().map(|s| s.header("x-hook")).collect();
        assert_eq!(attempt, [None, Some("2"), Some("3")], "{via:?}");
        assert_eq!(hook, [None, Some("20"), Some("30")], "{via:?}");
    }
}
