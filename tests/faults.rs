//! The fault matrix: every injected fault × every kind of request × both
//! adapters (the reqwest middleware, and the tower layer over hyper-util's
//! client), against the fault server on loopback under tokio's paused
//! clock.
//!
//! Each cell asserts the number of attempts the server saw (and the report
//! counted), the outcome (a response with its status, or an `Error` with
//! the right `code()`), the waits, that every attempt carried the same
//! method, body and `Idempotency-Key`, and that nothing more arrives once
//! the outcome is in. Requests that must not be retried (a POST without a
//! key after the server may have acted on it; a body that cannot be
//! replayed) must show exactly one attempt. Each fault runs in three
//! scenarios: it happens twice then the server recovers; it persists until
//! the retries run out; it persists under a deadline.
//!
//! The "streaming" column is a PUT (idempotent, so only the body decides)
//! whose body is a stream of chunks of unknown length that cannot be
//! cloned, sent with chunked transfer encoding: `reqwest::Body::wrap(stream)`
//! through the middleware, and the same stream through the tower layer's
//! `replay_bodies()` mode. Both keep it in their replay buffer (64 KiB by
//! default), so it is retried like any idempotent request, and every
//! attempt must carry the whole body again (`tests/replay.rs` has the
//! bodies too long for the buffer).
//!
//! The matrix is printed (run with `--nocapture` to see it) with its
//! passed/expected count; the test fails if any cell fails.

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use http::Method;
use http_resilience::{DelaySource, FailureKind, RetryPolicyBuilder};
use support::clients::{BOTH, Got, Req, Via, base, get, keyed_post, post, send};
use support::{Server, Step};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a fault does to an attempt, as far as the retry rules go.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Effect {
    /// A transient status the server may have acted on (5xx).
    Transient(u16),
    /// A 429 with `Retry-After: 1`: refused before being acted on, so
    /// retried whatever the method.
    RateLimited,
    /// A 503 with a `Retry-After` above the policy's cap.
    TooLong,
    /// No response, at once (reset, close).
    Dropped,
    /// No response within the attempt timeout (hang, trickle of the head).
    TimedOut,
    /// The response head arrives at once; the body misbehaves afterwards,
    /// which is the caller's business, not the retry layer's.
    LateBody { body_fails: bool },
    /// A head no HTTP parser accepts: a permanent failure.
    Unparseable,
}

struct Fault {
    name: &'static str,
    step: Step,
    effect: Effect,
    /// How the report records the faulty attempt.
    first: First,
}

/// The first attempt's record: a status, or a transport failure.
#[derive(Clone, Copy, Debug, PartialEq)]
enum First {
    Status(u16),
    Failure(FailureKind),
}

fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "503 + body",
            step: Step::body(503, "down for maintenance"),
            effect: Effect::Transient(503),
            first: First::Status(503),
        },
        Fault {
            name: "429 Retry-After: 1",
            step: Step::with(429, &[("retry-after", "1")]),
            effect: Effect::RateLimited,
            first: First::Status(429),
        },
        Fault {
            name: "503 Retry-After: 1 day",
            step: Step::with(503, &[("retry-after", "86400")]),
            effect: Effect::TooLong,
            first: First::Status(503),
        },
        Fault {
            name: "garbage hint values",
            step: Step::raw_headers(
                503,
                &[
                    b"retry-after: \xff\xfe soon",
                    b"retry-after-ms: -5000",
                    b"x-ratelimit-remaining: 0",
                    b"x-ratelimit-reset: 99999999999999999999999",
                ],
                "bad hints",
            ),
            effect: Effect::Transient(503),
            first: First::Status(503),
        },
        Fault {
            name: "reset before response",
            step: Step::Reset,
            effect: Effect::Dropped,
            first: First::Failure(FailureKind::ConnectionReset),
        },
        Fault {
            name: "close before response",
            step: Step::Close,
            effect: Effect::Dropped,
            first: First::Failure(FailureKind::ConnectionClosed),
        },
        Fault {
            name: "hang",
            step: Step::Hang,
            effect: Effect::TimedOut,
            first: First::Failure(FailureKind::Timeout),
        },
        Fault {
            name: "trickle head (100ms/B)",
            step: Step::trickle_head(200, ms(100)),
            effect: Effect::TimedOut,
            first: First::Failure(FailureKind::Timeout),
        },
        Fault {
            name: "head, reset mid-body",
            step: Step::head_then_reset(200, 100, "partial"),
            effect: Effect::LateBody { body_fails: true },
            first: First::Status(200),
        },
        Fault {
            name: "trickle body (50ms/B)",
            step: Step::trickle_body(200, "slow body", ms(50)),
            effect: Effect::LateBody { body_fails: false },
            first: First::Status(200),
        },
        Fault {
            name: "malformed header (NUL)",
            step: Step::raw_headers(503, &[b"x-broken: a\x00b"], "x"),
            effect: Effect::Unparseable,
            first: First::Failure(FailureKind::Decode),
        },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    /// Fault, fault, then 200; `max_retries` 3.
    Recovers,
    /// The fault every time; `max_retries` 2.
    Persists,
    /// The fault every time; `max_retries` 10 under a 1.5 s deadline.
    Deadline,
}
const SCENARIOS: [Scenario; 3] = [Scenario::Recovers, Scenario::Persists, Scenario::Deadline];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Get,
    Put,
    Post,
    KeyedPost,
    AutoKeyPost,
    Streaming,
}
const KINDS: [Kind; 6] = [
    Kind::Get,
    Kind::Put,
    Kind::Post,
    Kind::KeyedPost,
    Kind::AutoKeyPost,
    Kind::Streaming,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Get => "GET",
            Kind::Put => "PUT",
            Kind::Post => "POST",
            Kind::KeyedPost => "POST+key",
            Kind::AutoKeyPost => "POST+auto",
            Kind::Streaming => "stream",
        }
    }
    fn req(self) -> Req {
        match self {
            Kind::Get => get(),
            Kind::Put => Req {
                method: Method::PUT,
                body: "put body",
                ..get()
            },
            Kind::Post | Kind::AutoKeyPost => post(),
            Kind::KeyedPost => keyed_post(),
            Kind::Streaming => Req {
                method: Method::PUT,
                body: "a streamed body in chunks",
                streaming: true,
                ..get()
            },
        }
    }
}

/// The expected outcome of one cell.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Status(u16),
    Code(&'static str),
}

fn policy(scenario: Scenario, kind: Kind) -> RetryPolicyBuilder {
    let p = base()
        .attempt_timeout(Duration::from_secs(1))
        .auto_idempotency_key(kind == Kind::AutoKeyPost);
    match scenario {
        Scenario::Recovers => p.max_retries(3),
        Scenario::Persists => p.max_retries(2),
        Scenario::Deadline => p.max_retries(10).deadline(ms(1500)),
    }
}

fn script(scenario: Scenario, fault: &Step) -> Vec<Step> {
    match scenario {
        Scenario::Recovers => vec![fault.clone(), fault.clone(), Step::body(200, "recovered")],
        Scenario::Persists | Scenario::Deadline => vec![fault.clone()],
    }
}

/// The rules, spelled out independently of the engine: attempts and
/// outcome.
fn expected(effect: Effect, scenario: Scenario, kind: Kind, via: Via) -> (usize, Expect) {
    use Expect::*;
    // Every body here fits the replay buffer, through either adapter.
    let _ = via;
    let keyed_or_idempotent = !matches!(kind, Kind::Post);
    let may_retry = match effect {
        Effect::RateLimited => true,
        _ => keyed_or_idempotent,
    };
    // Attempts made before a 1.5 s deadline stops a persistent fault (no
    // jitter; 1 s attempt timeout, clamped to what is left):
    // - immediate failures: waits 100, 200, 400 ms, then 800 ms would reach
    //   1.5 s: 4 attempts;
    // - Retry-After 1 s: one wait of 1 s, then the next would reach 2 s: 2;
    // - time-outs: 1 s, wait 100 ms, then the second attempt's 400 ms
    //   timeout ends at the deadline: 2.
    let deadline_attempts = match effect {
        Effect::RateLimited | Effect::TimedOut => 2,
        _ => 4,
    };
    let retried = || match scenario {
        Scenario::Recovers => (3, Status(200)),
        Scenario::Persists => (3, Code("MAX_RETRIES_EXCEEDED")),
        Scenario::Deadline => (deadline_attempts, Code("DEADLINE_EXCEEDED")),
    };
    match effect {
        Effect::Transient(s) if !may_retry => (1, Status(s)),
        Effect::RateLimited if !may_retry => (1, Status(429)),
        Effect::Transient(_) | Effect::RateLimited => retried(),
        Effect::TooLong if !may_retry => (1, Status(503)),
        Effect::TooLong => (1, Code("RETRY_AFTER_TOO_LONG")),
        Effect::Dropped | Effect::TimedOut if !may_retry => (1, Code("NOT_RETRYABLE")),
        Effect::Dropped | Effect::TimedOut => retried(),
        Effect::LateBody { .. } => (1, Status(200)),
        Effect::Unparseable => (1, Code("NOT_RETRYABLE")),
    }
}

/// Checks one cell; `Err` says what is wrong.
#[allow(clippy::too_many_arguments)]
fn check(
    fault: &Fault,
    scenario: Scenario,
    kind: Kind,
    via: Via,
    req: &Req,
    got: &Got,
    seen: &[support::Seen],
    late: usize,
) -> Result<(), String> {
    let (attempts, outcome) = expected(fault.effect, scenario, kind, via);
    let mut errs = String::new();
    let actual = match (got.status, got.code) {
        (Some(s), _) => Expect::Status(s),
        (None, Some(c)) => Expect::Code(c),
        (None, None) => unreachable!("Got is a response or an error"),
    };
    if actual != outcome {
        let _ = write!(errs, "outcome {actual:?}, want {outcome:?}; ");
    }
    if seen.len() != attempts {
        let _ = write!(
            errs,
            "server saw {} attempts, want {attempts}; ",
            seen.len()
        );
    }
    if got.report.attempts() as usize != attempts {
        let _ = write!(errs, "report says {} attempts; ", got.report.attempts());
    }
    if late != 0 {
        let _ = write!(errs, "{late} attempts arrived after the outcome; ");
    }
    // Waits: one after every attempt but the last, from the right source.
    let waits = got.waits();
    let want_waits: Vec<(Duration, DelaySource)> = (0..attempts.saturating_sub(1))
        .map(|i| match fault.effect {
            Effect::RateLimited => (Duration::from_secs(1), DelaySource::RetryAfter),
            _ => (
                ms(100 << i).min(Duration::from_secs(1)),
                DelaySource::Backoff,
            ),
        })
        .collect();
    if waits != want_waits {
        let _ = write!(errs, "waits {waits:?}, want {want_waits:?}; ");
    }
    // The server's clock agrees: attempts that fail at once are spaced by
    // exactly the waits (a timed-out attempt adds its timeout).
    let took = match fault.effect {
        Effect::TimedOut => Duration::from_secs(1),
        _ => Duration::ZERO,
    };
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    let want_gaps: Vec<Duration> = want_waits.iter().map(|(d, _)| *d + took).collect();
    if seen.len() == attempts && gaps != want_gaps {
        let _ = write!(errs, "server-side gaps {gaps:?}, want {want_gaps:?}; ");
    }
    // The first attempt is recorded as the fault it was.
    let first = got
        .report
        .history()
        .first()
        .map(|r| match (r.status(), r.failure()) {
            (Some(s), _) => First::Status(s.as_u16()),
            (None, Some(k)) => First::Failure(k),
            (None, None) => First::Status(0),
        });
    if first != Some(fault.first) {
        let _ = write!(errs, "first attempt {first:?}, want {:?}; ", fault.first);
    }
    // Every attempt: same method, the whole body, the same key.
    let keys: Vec<Option<&str>> = seen.iter().map(|s| s.header("idempotency-key")).collect();
    for (i, s) in seen.iter().enumerate() {
        if s.method != req.method.as_str() {
            let _ = write!(errs, "attempt {i}: method {}; ", s.method);
        }
        if s.body != req.body.as_bytes() {
            let _ = write!(
                errs,
                "attempt {i}: body {:?} ({} bytes); ",
                String::from_utf8_lossy(&s.body),
                s.body_len()
            );
        }
        let chunked = s
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"));
        if chunked != req.streaming {
            let _ = write!(errs, "attempt {i}: chunked={chunked}; ");
        }
    }
    match kind {
        Kind::KeyedPost if keys.iter().any(|k| *k != Some("key-123")) => {
            let _ = write!(errs, "keys {keys:?}; ");
        }
        Kind::AutoKeyPost
            if keys.first().is_none_or(|k| k.is_none_or(|k| k.len() != 36))
                || keys.windows(2).any(|w| w[0] != w[1]) =>
        {
            let _ = write!(errs, "generated keys differ or are missing: {keys:?}; ");
        }
        Kind::Get | Kind::Put | Kind::Post | Kind::Streaming
            if keys.iter().any(Option::is_some) =>
        {
            let _ = write!(errs, "unexpected key {keys:?}; ");
        }
        _ => {}
    }
    // What the caller reads of the returned body.
    match (fault.effect, scenario, &got.body, &got.body_error) {
        (Effect::LateBody { body_fails: true }, _, _, e) if e.is_none() => {
            let _ = write!(errs, "a body cut by a reset read fine: {:?}; ", got.body);
        }
        (Effect::LateBody { body_fails: false }, _, b, _) if b.as_deref() != Some("slow body") => {
            let _ = write!(errs, "trickled body {b:?}; ");
        }
        (
            Effect::Transient(_) | Effect::Dropped | Effect::TimedOut | Effect::RateLimited,
            Scenario::Recovers,
            b,
            _,
        ) if outcome == Expect::Status(200) && b.as_deref() != Some("recovered") => {
            let _ = write!(errs, "body {b:?}; ");
        }
        _ => {}
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn fault_matrix_through_both_adapters() {
    let server = Server::start().await;
    let mut failures = Vec::new();
    let mut table = String::new();
    let mut passed = 0;
    let mut total = 0;

    let _ = write!(table, "{:<36}", "fault / scenario");
    for kind in KINDS {
        for via in BOTH {
            let tag = if via == Via::Reqwest { "rq" } else { "tw" };
            let _ = write!(table, " {:>12}", format!("{} {tag}", kind.label()));
        }
    }
    table.push('\n');

    for fault in faults() {
        for scenario in SCENARIOS {
            let _ = write!(table, "{:<36}", format!("{} / {scenario:?}", fault.name));
            for kind in KINDS {
                for via in BOTH {
                    let path = format!(
                        "/{}/{scenario:?}/{}/{via:?}",
                        slug(fault.name),
                        slug(kind.label())
                    );
                    server.script(&path, script(scenario, &fault.step));
                    let req = kind.req();
                    let policy = policy(scenario, kind).build().unwrap();
                    let got = send(via, policy, &server.url(&path), &req).await;
                    let seen = server.seen(&path);
                    // Nothing may follow the outcome: no retry left behind.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let late = server.seen(&path).len() - seen.len();
                    total += 1;
                    match check(&fault, scenario, kind, via, &req, &got, &seen, late) {
                        Ok(()) => {
                            passed += 1;
                            let _ = write!(table, " {:>12}", "ok");
                        }
                        Err(e) => {
                            let _ = write!(table, " {:>12}", "FAIL");
                            failures.push(format!("{path}: {e}"));
                        }
                    }
                }
            }
            table.push('\n');
        }
    }
    println!("{table}");
    println!("fault matrix: {passed}/{total} cells passed");
    assert!(
        failures.is_empty(),
        "{} of {total} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(total, 11 * 3 * 6 * 2);
}
