//! The table of transport failures: one row per way a connection can fail,
//! each run through both adapters (the reqwest middleware over reqwest, the
//! tower layer over hyper-util's client) with a GET and with a POST without
//! an `Idempotency-Key`, under tokio's paused clock, against real parts on
//! loopback: the fault server, a refused port, a listener whose accept
//! queue is full, injected resolvers, a TLS server with a self-signed
//! certificate (rcgen, tokio-rustls; reqwest with rustls, hyper-rustls).
//!
//! Every row has one expected `FailureKind` for every attempt and one
//! outcome per method, whichever the client: the two clients report the
//! same failure in different types (reqwest's DNS error against
//! hyper-util's `ConnectError`, reqwest's private `TimedOut` against an
//! `io::ErrorKind::TimedOut`, tower's `Elapsed`), and the classifier maps
//! them to the same class. The class never comes from the error's text:
//! the rows whose URL says `certificates`, `tls`, `ssl` or `handshake`
//! are refused connections like any other.
//!
//! Checked per cell: the outcome (error code, or a status), the attempts in
//! the report and at the server (where there is one to count), each
//! attempt's failure kind, the waits and the time taken to the millisecond.
//! Run with `--nocapture` to see the table.

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use http::Method;
use http_resilience::FailureKind;
use support::clients::{BOTH, Got, Req, Via, base, get, post};
use support::net::{self, Dns, Stack, Stalled};
use support::tls::TlsServer;
use support::{Server, Step, refused_addr};

const MS: fn(u64) -> Duration = Duration::from_millis;
/// The timeouts of the rows that have one.
const TIMEOUT: u64 = 500;
/// `base()` waits 100 ms, then 200 ms; `max_retries(2)`: three attempts.
const WAITS: [u64; 2] = [100, 200];

/// Where a row's requests go.
#[derive(Clone, Copy)]
enum Target {
    /// The fault server, with this step on every attempt.
    Server(fn() -> Step),
    /// A refused port on 127.0.0.1, at this path.
    Refused(&'static str),
    /// A refused port, through this host name (resolved to 127.0.0.1).
    RefusedHost(&'static str, &'static str),
    /// A name no resolver knows (every lookup fails).
    NoSuchHost,
    /// A listener whose accept queue is full.
    Stalled,
    /// The self-signed TLS server.
    Tls,
}

/// How a cell ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Then {
    /// An error with this code after this many attempts, each a failure of
    /// the row's kind.
    Code(&'static str, u32),
    /// A response with this status after one attempt, whose body then
    /// fails with the row's kind.
    BodyFails(u16),
}

struct Row {
    name: &'static str,
    target: Target,
    /// The client's settings (the resolver is the target's business).
    stack: Stack,
    /// The policy's attempt timeout.
    attempt_timeout: Option<Duration>,
    /// Each attempt's failure kind (or the body's).
    kind: FailureKind,
    get: Then,
    post: Then,
    /// How long one attempt takes (a timeout), in ms.
    per_attempt: u64,
}

const RETRIED: Then = Then::Code("MAX_RETRIES_EXCEEDED", 3);
const ONCE: Then = Then::Code("NOT_RETRYABLE", 1);

fn rows() -> Vec<Row> {
    let plain = Stack::PLAIN;
    let row = |name, target, kind, get, post| Row {
        name,
        target,
        stack: plain,
        attempt_timeout: None,
        kind,
        get,
        post,
        per_attempt: 0,
    };
    let refused = |name, path| {
        row(
            name,
            Target::Refused(path),
            FailureKind::Connect,
            RETRIED,
            RETRIED,
        )
    };
    vec![
        row(
            "DNS failure",
            Target::NoSuchHost,
            FailureKind::Connect,
            RETRIED,
            RETRIED,
        ),
        refused("refused", "/"),
        refused("refused, path /v1/certificates", "/v1/certificates"),
        refused("refused, path /tls/handshake", "/tls/handshake"),
        refused("refused, path /ssl", "/ssl"),
        row(
            "refused, host mtls.internal",
            Target::RefusedHost("mtls.internal", "/ssl/certificate"),
            FailureKind::Connect,
            RETRIED,
            RETRIED,
        ),
        Row {
            stack: Stack { tls: true, ..plain },
            ..row(
                "refused, https://tls.internal/tls/handshake",
                Target::RefusedHost("tls.internal", "/tls/handshake"),
                FailureKind::Connect,
                RETRIED,
                RETRIED,
            )
        },
        row(
            "reset before response",
            Target::Server(|| Step::Reset),
            FailureKind::ConnectionReset,
            RETRIED,
            ONCE,
        ),
        row(
            "reset mid-body",
            Target::Server(|| Step::head_then_reset(200, 100, "partial")),
            FailureKind::ConnectionReset,
            Then::BodyFails(200),
            Then::BodyFails(200),
        ),
        row(
            "clean close before response",
            Target::Server(|| Step::Close),
            FailureKind::ConnectionClosed,
            RETRIED,
            ONCE,
        ),
        Row {
            stack: Stack {
                connect_timeout: Some(MS(TIMEOUT)),
                ..plain
            },
            per_attempt: TIMEOUT,
            ..row(
                "connect timeout",
                Target::Stalled,
                FailureKind::Connect,
                RETRIED,
                RETRIED,
            )
        },
        Row {
            attempt_timeout: Some(MS(TIMEOUT)),
            per_attempt: TIMEOUT,
            ..row(
                "attempt timeout (policy)",
                Target::Server(|| Step::Hang),
                FailureKind::Timeout,
                RETRIED,
                ONCE,
            )
        },
        Row {
            stack: Stack {
                timeout: Some(MS(TIMEOUT)),
                ..plain
            },
            per_attempt: TIMEOUT,
            ..row(
                "client timeout (TimeoutLayer / timeout())",
                Target::Server(|| Step::Hang),
                FailureKind::Timeout,
                RETRIED,
                ONCE,
            )
        },
        row(
            "malformed response head",
            Target::Server(|| Step::raw_headers(503, &[b"x-broken: a\x00b"], "x")),
            FailureKind::Decode,
            ONCE,
            ONCE,
        ),
        Row {
            stack: Stack { tls: true, ..plain },
            ..row(
                "TLS: self-signed certificate",
                Target::Tls,
                FailureKind::Tls,
                ONCE,
                ONCE,
            )
        },
    ]
}

/// Sends one cell's request; returns what came back and the attempts the
/// server saw (`None` where nothing listens to count them).
async fn run(row: &Row, via: Via, req: &Req) -> (Got, Option<usize>) {
    let mut policy = base().max_retries(2);
    if let Some(after) = row.attempt_timeout {
        policy = policy.attempt_timeout(after);
    }
    let policy = policy.build().unwrap();
    let mut stack = row.stack;
    match row.target {
        Target::Server(step) => {
            let server = Server::start().await;
            server.script("/fault", vec![step()]);
            let got = net::client(via, policy, stack)
                .send(&server.url("/fault"), req)
                .await;
            (got, Some(server.count("/fault")))
        }
        Target::Refused(path) => {
            let addr = refused_addr().await;
            let got = net::client(via, policy, stack)
                .send(&format!("http://{addr}{path}"), req)
                .await;
            (got, None)
        }
        Target::RefusedHost(host, path) => {
            let addr = refused_addr().await;
            stack.dns = Dns::To(addr);
            let scheme = if stack.tls { "https" } else { "http" };
            let url = format!("{scheme}://{host}:{}{path}", addr.port());
            (net::client(via, policy, stack).send(&url, req).await, None)
        }
        Target::NoSuchHost => {
            stack.dns = Dns::Fail;
            let url = "http://no-such-host.invalid/";
            (net::client(via, policy, stack).send(url, req).await, None)
        }
        Target::Stalled => {
            let stalled = Stalled::new();
            let url = format!("http://{}/", stalled.addr());
            (net::client(via, policy, stack).send(&url, req).await, None)
        }
        Target::Tls => {
            let server = TlsServer::start().await;
            stack.dns = Dns::To(server.addr());
            let got = net::client(via, policy, stack)
                .send(&server.url("/v1/items"), req)
                .await;
            (got, Some(server.accepted()))
        }
    }
}

/// Every way a cell differs from the row.
fn problems(row: &Row, then: Then, got: &Got, seen: Option<usize>) -> Vec<String> {
    let mut problems = vec![];
    let kinds: Vec<Option<FailureKind>> =
        got.report.history().iter().map(|r| r.failure()).collect();
    let attempts = match then {
        Then::Code(code, attempts) => {
            if got.code != Some(code) {
                problems.push(format!(
                    "code {:?} (status {:?}), expected {code}",
                    got.code, got.status
                ));
            }
            if kinds.iter().any(|k| *k != Some(row.kind)) {
                problems.push(format!("attempt kinds {kinds:?}, expected {:?}", row.kind));
            }
            attempts
        }
        Then::BodyFails(status) => {
            if got.status != Some(status) {
                problems.push(format!(
                    "status {:?} (code {:?}), expected {status}",
                    got.status, got.code
                ));
            }
            if got.body_failure != Some(row.kind) {
                problems.push(format!(
                    "body failure {:?} ({:?}), expected {:?}",
                    got.body_failure, got.body_error, row.kind
                ));
            }
            1
        }
    };
    if got.report.attempts() != attempts {
        problems.push(format!(
            "{} attempts, expected {attempts}",
            got.report.attempts()
        ));
    }
    if let Some(seen) = seen
        && seen != attempts as usize
    {
        problems.push(format!(
            "the server saw {seen} attempts, expected {attempts}"
        ));
    }
    let waits: Vec<u64> = got
        .waits()
        .iter()
        .map(|(d, _)| d.as_millis() as u64)
        .collect();
    let want = &WAITS[..attempts as usize - 1];
    if waits != want {
        problems.push(format!("waits {waits:?}, expected {want:?}"));
    }
    let elapsed = MS(row.per_attempt * u64::from(attempts) + want.iter().sum::<u64>());
    if got.elapsed != elapsed {
        problems.push(format!("took {:?}, expected {elapsed:?}", got.elapsed));
    }
    problems
}

#[tokio::test(start_paused = true)]
async fn every_transport_failure_has_one_class_through_both_adapters() {
    let mut table = String::new();
    let mut failures = String::new();
    let mut cells = 0;
    let mut passed = 0;
    for row in rows() {
        for (method, then) in [(Method::GET, row.get), (Method::POST, row.post)] {
            let req = if method == Method::GET { get() } else { post() };
            for via in BOTH {
                let (got, seen) = run(&row, via, &req).await;
                let problems = problems(&row, then, &got, seen);
                cells += 1;
                let verdict = if problems.is_empty() {
                    passed += 1;
                    "ok".to_string()
                } else {
                    let _ = writeln!(
                        failures,
                        "{} / {method} / {via:?}: {}",
                        row.name,
                        problems.join("; ")
                    );
                    format!("FAIL: {}", problems.join("; "))
                };
                let _ = writeln!(
                    table,
                    "{:<44} {:<5} {:<8} {:<18} {verdict}",
                    row.name,
                    method.as_str(),
                    format!("{via:?}"),
                    format!("{:?}", row.kind),
                );
            }
        }
    }
    println!("transport failure table: {passed}/{cells} cells pass\n{table}");
    assert!(failures.is_empty(), "{failures}");
}
