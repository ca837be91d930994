//! One table of behaviours, run through both adapters (the reqwest
//! middleware and the tower layer over hyper-util's client) against a real
//! scripted server on loopback, under tokio's paused clock: waits are
//! asserted to the millisecond and no test sleeps for real.

mod support;

use std::time::Duration;

use http::Method;
use http_resilience::{
    DelaySource, Error, FailureKind, RetryPolicy, RetryPolicyBuilder, StopReason,
};
use support::clients::{BOTH, Req, Via, base, get, keyed_post, post, send};
use support::table::{Expect, Expected, problems};
use support::{Server, Step, fixed_now, refused_addr};

/// One row of the table.
struct Row {
    name: &'static str,
    policy: fn() -> RetryPolicyBuilder,
    req: fn() -> Req,
    script: Vec<Step>,
    /// Final status (Ok), or error code.
    expect: Expect,
    attempts: u32,
    waits: Vec<(u64, DelaySource)>,
    /// Where the reqwest middleware differs (outcome, attempts, waits): a
    /// body that tower's default mode copies by `Clone` reaches reqwest as
    /// a `Body::wrap` stream, which its replay buffer sends again whole.
    reqwest: Option<Outcome>,
}

/// A row's outcome, attempts and waits.
type Outcome = (Expect, u32, Vec<(u64, DelaySource)>);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn http_date(after: Duration) -> String {
    httpdate::fmt_http_date(fixed_now() + after)
}

fn rows() -> Vec<Row> {
    use DelaySource::*;
    use Expect::*;
    let row = |name, script: Vec<Step>, expect, attempts, waits: Vec<(u64, DelaySource)>| Row {
        name,
        policy: base,
        req: get,
        script,
        expect,
        attempts,
        waits,
        reqwest: None,
    };
    let mut rows = vec![
        row(
            "success at once",
            vec![Step::status(200)],
            Status(200),
            1,
            vec![],
        ),
        row(
            "recovers after two 503s",
            vec![Step::status(503), Step::status(503), Step::status(200)],
            Status(200),
            3,
            vec![(100, Backoff), (200, Backoff)],
        ),
        row(
            "redirect status is success",
            vec![Step::body(304, "")],
            Status(304),
            1,
            vec![],
        ),
    ];
    for s in [408u16, 429, 500, 502, 503, 504, 529] {
        rows.push(row(
            "transient status",
            vec![Step::status(s), Step::status(200)],
            Status(200),
            2,
            vec![(100, Backoff)],
        ));
    }
    for s in [400u16, 401, 403, 404, 409, 410, 422, 451, 501, 505] {
        rows.push(row(
            "permanent status",
            vec![Step::status(s), Step::status(200)],
            Status(s),
            1,
            vec![],
        ));
    }
    rows.extend([
        Row {
            req: keyed_post,
            ..row(
                "409 with Idempotency-Key is in progress",
                vec![Step::status(409), Step::status(201)],
                Status(201),
                2,
                vec![(100, Backoff)],
            )
        },
        row(
            "GitHub primary rate limit waits for the reset",
            vec![
                Step::with(
                    403,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", "1700000030"),
                    ],
                ),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(30_000, RateLimitReset)],
        ),
        row(
            "Retry-After seconds",
            vec![Step::with(503, &[("retry-after", "2")]), Step::status(200)],
            Status(200),
            2,
            vec![(2000, RetryAfter)],
        ),
        row(
            "retry-after-ms wins over Retry-After",
            vec![
                Step::with(429, &[("retry-after", "2"), ("retry-after-ms", "1500")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(1500, RetryAfterMs)],
        ),
        row(
            "two Retry-After headers: the first wins",
            vec![
                Step::with(503, &[("retry-after", "2"), ("retry-after", "3")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(2000, RetryAfter)],
        ),
        row(
            "Retry-After past date uses the backoff",
            vec![
                Step::with(503, &[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(100, Backoff)],
        ),
        row(
            "Retry-After zero uses the backoff",
            vec![Step::with(503, &[("retry-after", "0")]), Step::status(200)],
            Status(200),
            2,
            vec![(100, Backoff)],
        ),
        row(
            "Retry-After above the cap gives up at once",
            vec![Step::with(503, &[("retry-after", "121")])],
            Code("RETRY_AFTER_TOO_LONG"),
            1,
            vec![],
        ),
        row(
            "x-should-retry: false overrides a 503",
            vec![
                Step::with(503, &[("x-should-retry", "false")]),
                Step::status(200),
            ],
            Status(503),
            1,
            vec![],
        ),
        row(
            "x-should-retry: true overrides a 400",
            vec![
                Step::with(400, &[("x-should-retry", "true")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(100, Backoff)],
        ),
        row(
            "exhaustion gives MAX_RETRIES_EXCEEDED",
            vec![Step::body(503, "maintenance")],
            Code("MAX_RETRIES_EXCEEDED"),
            4,
            vec![(100, Backoff), (200, Backoff), (400, Backoff)],
        ),
        Row {
            policy: || base().return_last_response(true),
            ..row(
                "exhaustion can return the last response",
                vec![Step::body(503, "maintenance")],
                Status(503),
                4,
                vec![(100, Backoff), (200, Backoff), (400, Backoff)],
            )
        },
        Row {
            policy: || base().deadline(ms(250)),
            ..row(
                "a wait that would cross the deadline stops at once",
                vec![Step::status(503)],
                Code("DEADLINE_EXCEEDED"),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            policy: || base().initial_backoff(ms(5)).max_backoff(ms(20)),
            ..row(
                "exact backoff figures: 5, 10, 20 ms",
                vec![
                    Step::status(503),
                    Step::status(503),
                    Step::status(503),
                    Step::status(200),
                ],
                Status(200),
                4,
                vec![(5, Backoff), (10, Backoff), (20, Backoff)],
            )
        },
        Row {
            req: post,
            ..row(
                "POST 503 without a key is not retried",
                vec![Step::status(503), Step::status(200)],
                Status(503),
                1,
                vec![],
            )
        },
        Row {
            req: post,
            ..row(
                "POST 429 is retried: the server did not act on it",
                vec![Step::status(429), Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: post,
            ..row(
                "POST 408 is retried: the server did not receive it whole",
                vec![Step::status(408), Step::status(201)],
                Status(201),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: post,
            ..row(
                "POST 425 Too Early is retried (RFC 8470)",
                vec![Step::status(425), Step::status(201)],
                Status(201),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: post,
            ..row(
                "POST after GitHub's primary-limit 403 is retried",
                vec![
                    Step::with(
                        403,
                        &[
                            ("x-ratelimit-remaining", "0"),
                            ("x-ratelimit-reset", "1700000002"),
                        ],
                    ),
                    Step::status(201),
                ],
                Status(201),
                2,
                vec![(2_000, RateLimitReset)],
            )
        },
        row(
            "425 Too Early is transient",
            vec![Step::status(425), Step::status(200)],
            Status(200),
            2,
            vec![(100, Backoff)],
        ),
        Row {
            req: keyed_post,
            ..row(
                "POST with Idempotency-Key is retried",
                vec![Step::status(503), Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: post,
            policy: || base().retry_non_idempotent(true),
            ..row(
                "POST is retried when the policy opts in",
                vec![Step::status(503), Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: post,
            policy: || base().auto_idempotency_key(true),
            ..row(
                "POST gets an automatic Idempotency-Key",
                vec![Step::status(503), Step::status(503), Step::status(200)],
                Status(200),
                3,
                vec![(100, Backoff), (200, Backoff)],
            )
        },
        row(
            "connection reset is retried",
            vec![Step::Reset, Step::status(200)],
            Status(200),
            2,
            vec![(100, Backoff)],
        ),
        row(
            "server closing before a response is retried",
            vec![Step::Close, Step::status(200)],
            Status(200),
            2,
            vec![(100, Backoff)],
        ),
        Row {
            req: post,
            ..row(
                "POST reset is not retried",
                vec![Step::Reset, Step::status(200)],
                Code("NOT_RETRYABLE"),
                1,
                vec![],
            )
        },
        Row {
            policy: || base().attempt_timeout(Duration::from_secs(1)),
            ..row(
                "a hanging attempt times out and is retried",
                vec![Step::Hang, Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            policy: || {
                base()
                    .attempt_timeout(Duration::from_secs(1))
                    .max_retries(1)
            },
            ..row(
                "hanging every time exhausts",
                vec![Step::Hang],
                Code("MAX_RETRIES_EXCEEDED"),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            policy: || base().deadline(Duration::from_secs(2)),
            ..row(
                "the deadline bounds a hanging attempt",
                vec![Step::Hang],
                Code("DEADLINE_EXCEEDED"),
                1,
                vec![],
            )
        },
    ]);
    rows.extend([
        Row {
            req: shared_put,
            reqwest: Some((Status(200), 2, vec![(100, Backoff)])),
            ..row(
                "a PUT whose body's clones share one stream is not resent drained (reqwest: resent from its replay buffer)",
                vec![Step::status(502), Step::status(200)],
                Status(502),
                1,
                vec![],
            )
        },
        Row {
            req: shared_keyed_post,
            reqwest: Some((Status(201), 2, vec![(100, Backoff)])),
            ..row(
                "a keyed POST whose body's clones share one stream is not resent after a 429 (reqwest: resent from its replay buffer)",
                vec![Step::status(429), Step::status(201)],
                Status(429),
                1,
                vec![],
            )
        },
        Row {
            req: ended_stream_get,
            ..row(
                "a GET whose body is an already-ended stream is retried",
                vec![Step::status(502), Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: ended_stream_put,
            ..row(
                "a PUT whose body is an already-ended stream is retried",
                vec![Step::status(503), Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
        Row {
            req: zero_length_stream_get,
            ..row(
                "a GET with Content-Length: 0 and a stream body is retried",
                vec![Step::status(502), Step::status(200)],
                Status(200),
                2,
                vec![(100, Backoff)],
            )
        },
    ]);
    // Retry-After as an HTTP-date in its three forms (fixed clock: the
    // server's date is 3 s after the policy's "now").
    let imf = http_date(Duration::from_secs(3));
    assert_eq!(imf, "Tue, 14 Nov 2023 22:13:23 GMT");
    for date in [
        "Tue, 14 Nov 2023 22:13:23 GMT",
        "Tuesday, 14-Nov-23 22:13:23 GMT",
        "Tue Nov 14 22:13:23 2023",
    ] {
        rows.push(row(
            "Retry-After HTTP-date",
            vec![Step::with(503, &[("retry-after", date)]), Step::status(200)],
            Status(200),
            2,
            vec![(3000, RetryAfter)],
        ));
    }
    let thirty_digits = "123456789012345678901234567890";
    for bad in [
        "-1",
        "+1",
        "1.5",
        "soon",
        "nan",
        "",
        thirty_digits,
        "Fri, 32 Dec 1999 23:59:59 GMT",
    ] {
        rows.push(row(
            "invalid Retry-After falls back to the backoff",
            vec![Step::with(503, &[("retry-after", bad)]), Step::status(200)],
            Status(200),
            2,
            vec![(100, Backoff)],
        ));
    }
    rows
}

/// A JSON body whose clones share one stream, as octocrab's `OctoBody`.
fn shared_put() -> Req {
    Req {
        method: Method::PUT,
        body: r#"{"state":"closed"}"#,
        shared: true,
        ..get()
    }
}
fn shared_keyed_post() -> Req {
    Req {
        body: r#"{"title":"new"}"#,
        shared: true,
        ..keyed_post()
    }
}
/// No body, sent as a stream that has already ended (octocrab's reqwest
/// connector wraps every body, even an empty one, with `Body::wrap`).
fn ended_stream_get() -> Req {
    Req {
        shared: true,
        ..get()
    }
}
fn ended_stream_put() -> Req {
    Req {
        method: Method::PUT,
        ..ended_stream_get()
    }
}
/// An empty stream of unknown length, announced as `Content-Length: 0`.
fn zero_length_stream_get() -> Req {
    Req {
        streaming: true,
        headers: vec![("content-length", "0")],
        ..get()
    }
}

#[tokio::test(start_paused = true)]
async fn behaviour_table_through_both_adapters() {
    let server = Server::start().await;
    let rows = rows();
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for via in BOTH {
            let path = format!("/row{i}/{via:?}");
            server.script(&path, row.script.clone());
            let policy = (row.policy)().build().unwrap();
            let req = (row.req)();
            let got = send(via, policy, &server.url(&path), &req).await;
            let seen = server.seen(&path);
            let label = format!("row {i} {:?} via {via:?}", row.name);

            let (expect, attempts, waits) = match (&row.reqwest, via) {
                (Some((expect, attempts, waits)), Via::Reqwest) => (*expect, *attempts, waits),
                _ => (row.expect, row.attempts, &row.waits),
            };
            let problems = problems(
                &got,
                &seen,
                &req,
                &Expected {
                    expect,
                    attempts,
                    waits,
                    script: &row.script,
                    attempt_timeout: (row.policy)().build().unwrap().attempt_timeout(),
                },
            );
            if !problems.is_empty() {
                failures.push(format!("{label}: {}", problems.join("; ")));
            }
        }
    }
    println!(
        "behaviour table: {} rows x 2 adapters, {} failed",
        rows.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test(start_paused = true)]
async fn exhaustion_keeps_the_last_response_and_history() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/down/{via:?}");
        server.script(
            &path,
            vec![
                Step::with(503, &[("x-request-id", "abc")]),
                Step::body(503, "still down"),
            ],
        );
        let got = send(
            via,
            base().max_retries(2).build().unwrap(),
            &server.url(&path),
            &get(),
        )
        .await;
        let error = got.error.expect("an error");
        assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED", "{via:?}");
        assert_eq!(got.body.as_deref(), Some("still down"), "{via:?}");
        assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        assert!(error.headers().unwrap().contains_key("content-length"));
        let report = error.report();
        assert_eq!(report.attempts(), 3);
        assert_eq!(report.retries(), 2);
        assert_eq!(report.stop_reason(), Some(StopReason::MaxRetries));
        assert!(
            report
                .history()
                .iter()
                .all(|r| r.status() == Some(http::StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(got.elapsed, ms(300), "{via:?}: waits 100 + 200 ms");
        let text = error.to_string();
        assert!(text.contains("gave up after 2 retries"), "{text}");
        assert!(text.contains("503"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_too_long_carries_the_hint() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/slow/{via:?}");
        server.script(&path, vec![Step::with(429, &[("retry-after", "3600")])]);
        let got = send(via, base().build().unwrap(), &server.url(&path), &get()).await;
        match got.error {
            Some(Error::RetryAfterTooLong { hint, .. }) => {
                assert_eq!(hint, Duration::from_secs(3600))
            }
            other => panic!("{via:?}: {other:?}"),
        }
        assert_eq!(got.elapsed, Duration::ZERO, "{via:?}: no sleep at all");
    }
}

#[tokio::test(start_paused = true)]
async fn automatic_idempotency_key_is_a_uuid_kept_across_attempts() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/auto/{via:?}");
        server.script(
            &path,
            vec![Step::status(503), Step::status(503), Step::status(201)],
        );
        let policy = base().auto_idempotency_key(true).build().unwrap();
        let got = send(via, policy, &server.url(&path), &post()).await;
        assert_eq!(got.status, Some(201));
        let seen = server.seen(&path);
        assert_eq!(seen.len(), 3);
        let key = seen[0]
            .header("idempotency-key")
            .expect("a key")
            .to_string();
        assert!(uuid_like(&key), "{key}");
        assert!(
            seen.iter()
                .all(|s| s.header("idempotency-key") == Some(key.as_str()))
        );
        // A caller's own key is kept as it is.
        let path = format!("/own/{via:?}");
        server.script(&path, vec![Step::status(503), Step::status(201)]);
        let policy = base().auto_idempotency_key(true).build().unwrap();
        send(via, policy, &server.url(&path), &keyed_post()).await;
        assert!(
            server
                .seen(&path)
                .iter()
                .all(|s| s.header("idempotency-key") == Some("key-123"))
        );
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[tokio::test(start_paused = true)]
async fn connection_refused_is_retried_for_any_method() {
    let addr = refused_addr().await;
    let url = format!("http://{addr}/");
    for via in BOTH {
        for req in [get(), post()] {
            let got = send(via, base().max_retries(2).build().unwrap(), &url, &req).await;
            let error = got.error.expect("an error");
            assert_eq!(
                error.code(),
                "MAX_RETRIES_EXCEEDED",
                "{via:?} {}",
                req.method
            );
            assert_eq!(error.report().attempts(), 3);
            assert!(
                error
                    .report()
                    .history()
                    .iter()
                    .all(|r| r.failure() == Some(FailureKind::Connect)),
                "{:?}",
                error.report()
            );
            assert!(
                std::error::Error::source(&error).is_some(),
                "the transport error is chained"
            );
            assert_eq!(got.elapsed, ms(300));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn hanging_attempt_is_recorded_as_a_timeout() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/hang/{via:?}");
        server.script(&path, vec![Step::Hang, Step::status(200)]);
        let policy = base()
            .attempt_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.status, Some(200));
        assert_eq!(
            got.report.history()[0].failure(),
            Some(FailureKind::Timeout)
        );
        assert_eq!(got.elapsed, Duration::from_secs(5) + ms(100), "{via:?}");
    }
}

/// A body that cannot be cloned (a stream) is kept in the replay buffer
/// and sent again whole; with `replay_buffer(0)` it is sent once and not
/// retried. (`tests/replay.rs` has the bodies longer than the buffer.)
#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_replayed_from_the_buffer_or_sent_once_without_one() {
    let server = Server::start().await;
    let req = Req {
        method: Method::PUT,
        streaming: true,
        body: "streamed",
        ..get()
    };
    for via in BOTH {
        let path = format!("/stream/{via:?}");
        server.script(&path, vec![Step::status(503), Step::status(200)]);
        let got = send(via, base().build().unwrap(), &server.url(&path), &req).await;
        assert_eq!(got.status, Some(200), "{via:?}: {:?}", got.code);
        assert_eq!(got.report.attempts(), 2, "{via:?}");
        let bodies: Vec<Vec<u8>> = server.seen(&path).into_iter().map(|s| s.body).collect();
        assert_eq!(bodies, vec![b"streamed".to_vec(); 2], "{via:?}");

        let path = format!("/stream-once/{via:?}");
        server.script(&path, vec![Step::status(503), Step::status(200)]);
        let policy = base().replay_buffer(0).build().unwrap();
        let got = send(via, policy, &server.url(&path), &req).await;
        assert_eq!(
            got.status,
            Some(503),
            "{via:?}: returned as it is, no error"
        );
        assert_eq!(got.report.attempts(), 1, "{via:?}");
        assert_eq!(
            got.report.stop_reason(),
            Some(StopReason::BodyNotReplayable),
            "{via:?}"
        );
        let seen = server.seen(&path);
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(seen[0].body, b"streamed");

        // A streaming body that succeeds is untouched.
        let path = format!("/stream-ok/{via:?}");
        server.script(&path, vec![Step::status(200)]);
        let got = send(via, base().build().unwrap(), &server.url(&path), &req).await;
        assert_eq!(got.status, Some(200));
        assert_eq!(got.report.stop_reason(), Some(StopReason::Success));
    }
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_is_reproducible_through_both_adapters() {
    let server = Server::start().await;
    let mut runs = Vec::new();
    for via in BOTH {
        // Two fresh policies with the same seed, two requests each.
        let mut waits = Vec::new();
        for _run in 0..2 {
            let policy = RetryPolicy::builder()
                .seed(7)
                .initial_backoff(ms(100))
                .build()
                .unwrap();
            let mut per_request = Vec::new();
            for n in 0..2 {
                let path = format!("/seed/{via:?}/{}/{n}", waits.len());
                server.script(
                    &path,
                    vec![Step::status(503), Step::status(503), Step::status(200)],
                );
                let got = send(via, policy.clone(), &server.url(&path), &get()).await;
                per_request.push(got.waits());
            }
            waits.push(per_request);
        }
        assert_eq!(waits[0], waits[1], "{via:?}: same seed, same delays");
        assert_ne!(waits[0][0], waits[0][1], "{via:?}: requests differ");
        runs.push(waits);
    }
    assert_eq!(runs[0], runs[1], "both adapters draw the same sequence");
}

#[tokio::test(start_paused = true)]
async fn errors_and_reports_never_show_credentials() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/creds/{via:?}");
        server.script(&path, vec![Step::status(503)]);
        let req = Req {
            headers: vec![
                ("authorization", "Bearer secret-token"),
                ("proxy-authorization", "Basic secret-proxy"),
                ("cookie", "session=secret-cookie"),
            ],
            ..get()
        };
        let got = send(
            via,
            base().max_retries(1).build().unwrap(),
            &server.url(&path),
            &req,
        )
        .await;
        let error = got.error.unwrap();
        let shown = format!("{error} {error:?} {:?} {}", error.report(), error.report());
        for secret in ["secret-token", "secret-proxy", "secret-cookie"] {
            assert!(!shown.contains(secret), "{via:?}: {shown}");
        }
    }
}

/// Retries 404s under `/jobs/` (a job not visible yet) and otherwise does
/// the default.
struct EventuallyVisible;

impl http_resilience::Classify for EventuallyVisible {
    fn classify(
        &self,
        request: &http_resilience::RequestMeta<'_>,
        outcome: &http_resilience::Outcome<'_>,
    ) -> http_resilience::Class {
        if outcome.status() == Some(http::StatusCode::NOT_FOUND)
            && request.path().starts_with("/jobs/")
        {
            return http_resilience::Class::Transient;
        }
        http_resilience::DefaultClassifier.classify(request, outcome)
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_replaces_the_default() {
    let server = Server::start().await;
    for via in BOTH {
        let policy = base().classifier(EventuallyVisible).build().unwrap();
        let job = format!("/jobs/{via:?}");
        server.script(
            &job,
            vec![Step::status(404), Step::status(404), Step::status(200)],
        );
        let got = send(via, policy.clone(), &server.url(&job), &get()).await;
        assert_eq!(
            (got.status, got.report.attempts()),
            (Some(200), 3),
            "{via:?}"
        );
        let other = format!("/other/{via:?}");
        server.script(&other, vec![Step::status(404), Step::status(200)]);
        let got = send(via, policy, &server.url(&other), &get()).await;
        assert_eq!(
            (got.status, got.report.attempts()),
            (Some(404), 1),
            "{via:?}"
        );
    }
}

#[test]
fn futures_and_services_are_send_and_cloneable() {
    fn send<T: Send>(_: &T) {}
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    clone_send_sync::<RetryPolicy>();
    clone_send_sync::<http_resilience::RetryLayer>();
    clone_send_sync::<http_resilience::RetryMiddleware>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    use tower::{Layer, Service};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut svc = http_resilience::RetryLayer::new(RetryPolicy::default()).layer(client);
    let svc2 = svc.clone();
    let future = svc.call(http::Request::new(http_body_util::Full::default()));
    // A spawned task can own the future (it is never polled here).
    send(&future);
    send(&svc2);
}

/// Issue 16, part 5: the attempt header goes on resends only, with the
/// attempt's number.
#[tokio::test(start_paused = true)]
async fn the_attempt_header_numbers_every_resend() {
    let server = Server::start().await;
    for via in BOTH {
        let path = format!("/attempt-header/{via:?}");
        server.script(
            &path,
            vec![Step::status(503), Step::status(503), Step::status(200)],
        );
        let policy = base().attempt_header("X-Attempt").build().unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let numbers: Vec<Option<String>> = server
            .seen(&path)
            .iter()
            .map(|s| s.header("x-attempt").map(str::to_owned))
            .collect();
        assert_eq!(
            numbers,
            [None, Some("2".to_owned()), Some("3".to_owned())],
            "{via:?}"
        );
        // A caller's own value is replaced on resends, kept on the first.
        let path = format!("/attempt-header-own/{via:?}");
        server.script(&path, vec![Step::status(503), Step::status(200)]);
        let req = Req {
            headers: vec![("x-attempt", "mine")],
            ..get()
        };
        let policy = base().attempt_header("x-attempt").build().unwrap();
        send(via, policy, &server.url(&path), &req).await;
        let values: Vec<Vec<String>> = server
            .seen(&path)
            .iter()
            .map(|s| {
                s.headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("x-attempt"))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .collect();
        assert_eq!(
            values,
            [vec!["mine".to_owned()], vec!["2".to_owned()]],
            "{via:?}"
        );
    }
}

/// Issue 16, part 5: the hook runs before each resend, on the copy about
/// to go, with the attempt number; the caller's request and the first
/// attempt are untouched.
#[tokio::test(start_paused = true)]
async fn the_before_retry_hook_changes_each_resend_only() {
    use std::sync::{Arc, Mutex};
    let server = Server::start().await;
    for via in BOTH {
        let calls: Arc<Mutex<Vec<(u32, String, String)>>> = Arc::default();
        let seen_by_hook = Arc::clone(&calls);
        let policy = base()
            .attempt_header("x-attempt")
            .before_retry(
                move |r: &mut http_resilience::ResendRequest<'_>, attempt: u32| {
                    let before = r
                        .headers()
                        .get("x-signature")
                        .map_or("none", |v| v.to_str().unwrap())
                        .to_owned();
                    seen_by_hook.lock().unwrap().push((
                        attempt,
                        format!("{} {}", r.method(), r.url()),
                        before,
                    ));
                    assert_eq!(
                        r.headers().get("x-attempt").unwrap(),
                        &attempt.to_string(),
                        "the attempt header is set before the hook runs"
                    );
                    let value = http::HeaderValue::from_str(&format!("sig-{attempt}")).unwrap();
                    r.headers_mut().insert("x-signature", value);
                },
            )
            .build()
            .unwrap();
        // The server keys its scripts by path and query: the hook sees
        // the query too (it may sign it).
        let path = format!("/hook/{via:?}?page=2");
        server.script(
            &path,
            vec![Step::status(503), Step::status(502), Step::status(200)],
        );
        let url = server.url(&path);
        let req = Req {
            headers: vec![("x-signature", "caller")],
            ..get()
        };
        let got = send(via, policy, &url, &req).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let signatures: Vec<String> = server
            .seen(&path)
            .iter()
            .map(|s| s.header("x-signature").unwrap().to_owned())
            .collect();
        assert_eq!(signatures, ["caller", "sig-2", "sig-3"], "{via:?}");
        let calls = calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                (2, format!("GET {url}"), "caller".to_owned()),
                (3, format!("GET {url}"), "caller".to_owned()),
            ],
            "{via:?}: each resend starts from the caller's request"
        );
        // A clean success: the hook is not called.
        let path = format!("/hook-clean/{via:?}");
        server.script(&path, vec![Step::status(200)]);
        let count = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&count);
        let policy = base()
            .before_retry(move |_: &mut http_resilience::ResendRequest<'_>, _| {
                *counter.lock().unwrap() += 1;
            })
            .build()
            .unwrap();
        send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(*count.lock().unwrap(), 0, "{via:?}");
    }
}

/// A body that is sent once is never resent, so the hook never runs for
/// it: a stream through reqwest with no replay buffer (`replay_buffer(0)`;
/// with one, it is resent from the buffer, hook included), a body whose
/// clones share one stream through tower.
#[tokio::test(start_paused = true)]
async fn the_hook_is_never_called_for_a_body_sent_once() {
    use std::sync::{Arc, Mutex};
    let server = Server::start().await;
    for via in BOTH {
        let count = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&count);
        let policy = base()
            .retry_non_idempotent(true)
            .replay_buffer(0)
            .attempt_header("x-attempt")
            .before_retry(move |_: &mut http_resilience::ResendRequest<'_>, _| {
                *counter.lock().unwrap() += 1;
            })
            .build()
            .unwrap();
        let path = format!("/hook-stream/{via:?}");
        server.script(&path, vec![Step::status(503), Step::status(200)]);
        let req = Req {
            streaming: via == Via::Reqwest,
            shared: via == Via::Tower,
            ..post()
        };
        let got = send(via, policy, &server.url(&path), &req).await;
        assert_eq!(got.status, Some(503), "{via:?}: returned as it is");
        assert_eq!(
            got.report.stop_reason(),
            Some(StopReason::BodyNotReplayable),
            "{via:?}"
        );
        assert_eq!(*count.lock().unwrap(), 0, "{via:?}");
        let seen = server.seen(&path);
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(seen[0].header("x-attempt"), None);
    }
}
