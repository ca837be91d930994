//! Hedged requests through both adapters, against the scripted server on
//! loopback, under tokio's paused clock (so every time below is exact):
//!
//! - the tail figure: 2,000 requests to a server where one response in
//!   twenty takes 2 s and the others 10 ms; with a hedge after 50 ms the
//!   p99 falls below 100 ms for 5% more requests, without it stays at 2 s;
//! - only requests that may be sent twice are hedged (a POST with a key
//!   is, with the same key and body on both attempts; one without is not);
//! - the losers are cancelled: the server sees their connections close at
//!   the instant the winner's response arrived, and a response they had
//!   already received is never read;
//! - the load bound: no hedge with the budget exhausted, the breaker open
//!   or a quota held; never more than `max_hedges`;
//! - exact timing of each hedge (fixed, learned, several), and the
//!   interplay with retries and the deadline;
//! - per route, and from a configuration file.

mod support;

use std::time::Duration;

use http::Method;
use http_resilience::{
    CircuitBreaker, EndpointPolicies, Hedging, RetryBudget, RetryPolicy, RetryPolicyBuilder, Route,
};
use support::clients::{BOTH, Client, Got, Req, Via, base, get, keyed_post, post};
use support::{Seen, Server, Step, quota_gone};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// [`base`] with a hedge after `delay`.
fn hedged(delay: Duration) -> RetryPolicyBuilder {
    base().hedging(Hedging::builder().delay(delay).build().unwrap())
}

/// A response after `after` (the server watches the connection meanwhile,
/// and notes a client that goes away).
fn late(after: Duration, status: u16, body: &str) -> Step {
    Step::after(after, Step::body(status, body))
}

/// The times the server saw each attempt, from the first.
fn arrivals(seen: &[Seen]) -> Vec<Duration> {
    seen.iter().map(|s| s.at - seen[0].at).collect()
}

/// The `q` quantile of `sorted` by nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One request through `via` to `path`, scripted as `script`.
async fn one(
    via: Via,
    policy: impl Into<EndpointPolicies>,
    script: Vec<Step>,
    req: &Req,
) -> (Got, Vec<Seen>, Server) {
    let server = Server::start().await;
    server.script("/p", script);
    let got = Client::new(via, policy).send(&server.url("/p"), req).await;
    let seen = server.seen("/p");
    (got, seen, server)
}

/// The extra requests allowed above 5% of the requests made. The slow
/// responses are one in twenty of what the server *sees*, hedges included:
/// with H hedges, (2,000 + H) / 20 of them are slow, and each slow first
/// attempt draws one hedge, so H = 2,105 / 20 = 105 (5.25%). The floor
/// covers that, and no more.
const FLOOR: usize = 10;

#[tokio::test(start_paused = true)]
async fn a_hedge_after_50ms_cuts_the_p99_of_a_slow_tail_for_5_percent_more_requests() {
    const N: usize = 2000;
    for via in BOTH {
        for hedging in [false, true] {
            let server = Server::start().await;
            server.set_recording(false);
            // Response n is slow when n % 20 == 19: one in twenty, 5%.
            server.script(
                "/tail",
                vec![Step::one_in(
                    20,
                    late(ms(2000), 200, "slow"),
                    late(ms(10), 200, "fast"),
                )],
            );
            let policy = if hedging {
                hedged(ms(50)).build().unwrap()
            } else {
                base().build().unwrap()
            };
            let client = Client::new(via, policy);
            let url = server.url("/tail");
            let mut latencies = Vec::with_capacity(N);
            let mut hedged_requests = 0;
            for _ in 0..N {
                let got = client.send(&url, &get()).await;
                assert_eq!(got.status, Some(200), "{via:?}: {:?}", got.code);
                hedged_requests += usize::from(got.report.hedges() > 0);
                latencies.push(got.elapsed);
            }
            latencies.sort();
            let (p50, p99, max) = (
                quantile(&latencies, 0.5),
                quantile(&latencies, 0.99),
                latencies[N - 1],
            );
            let sent = server.count("/tail");
            let extra = sent - N;
            println!(
                "hedging figure: {via:?}, {}: p50 {p50:?}, p99 {p99:?}, max {max:?}; \
                 server saw {sent} requests for {N} ({extra} extra, {:.1}%); {hedged_requests} hedged",
                if hedging {
                    "hedge after 50 ms"
                } else {
                    "no hedging"
                },
                extra as f64 * 100.0 / N as f64,
            );
            if hedging {
                assert!(p99 < ms(100), "{via:?}: p99 {p99:?}");
                // The slow 5% are answered by their hedge at 50 + 10 ms.
                assert_eq!(p99, ms(60), "{via:?}");
                assert_eq!(max, ms(60), "{via:?}");
                assert!(extra <= N * 5 / 100 + FLOOR, "{via:?}: {extra} extra");
                assert_eq!(extra, hedged_requests, "one hedge per hedged request");
            } else {
                assert_eq!(p99, ms(2000), "{via:?}");
                assert_eq!(extra, 0, "{via:?}");
            }
            assert_eq!(p50, ms(10), "{via:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn only_requests_that_may_be_sent_twice_are_hedged() {
    let script = || vec![late(ms(2000), 200, "slow"), late(ms(10), 200, "fast")];
    let put = Req {
        method: Method::PUT,
        ..post()
    };
    let rows: Vec<(&str, Req, RetryPolicy, bool)> = vec![
        ("GET", get(), hedged(ms(50)).build().unwrap(), true),
        ("PUT", put, hedged(ms(50)).build().unwrap(), true),
        (
            "DELETE",
            Req {
                method: Method::DELETE,
                ..get()
            },
            hedged(ms(50)).build().unwrap(),
            true,
        ),
        (
            "POST without a key",
            post(),
            hedged(ms(50)).build().unwrap(),
            false,
        ),
        (
            "POST without a key, retry_non_idempotent",
            post(),
            hedged(ms(50)).retry_non_idempotent(true).build().unwrap(),
            false,
        ),
        (
            "POST with a key",
            keyed_post(),
            hedged(ms(50)).build().unwrap(),
            true,
        ),
        (
            "POST with a generated key",
            post(),
            hedged(ms(50)).auto_idempotency_key(true).build().unwrap(),
            true,
        ),
    ];
    for via in BOTH {
        for (what, req, policy, expect_hedge) in &rows {
            let (got, seen, _server) = one(via, policy.clone(), script(), req).await;
            let at = format!("{via:?}, {what}");
            assert_eq!(got.status, Some(200), "{at}");
            if *expect_hedge {
                assert_eq!(got.body.as_deref(), Some("fast"), "{at}");
                assert_eq!(got.elapsed, ms(60), "{at}");
                assert_eq!(arrivals(&seen), [ms(0), ms(50)], "{at}");
                assert_eq!(got.report.attempts(), 2, "{at}");
                assert_eq!(got.report.hedges(), 1, "{at}");
                assert_eq!(got.report.retries(), 0, "{at}: a hedge is not a retry");
                // The same body and the same key on both attempts.
                assert_eq!(seen[0].body, seen[1].body, "{at}");
                assert_eq!(seen[1].body, req.body.as_bytes(), "{at}");
                assert_eq!(
                    seen[0].header("idempotency-key"),
                    seen[1].header("idempotency-key"),
                    "{at}"
                );
                if req.method == Method::POST {
                    assert!(seen[0].header("idempotency-key").is_some(), "{at}");
                }
            } else {
                assert_eq!(got.body.as_deref(), Some("slow"), "{at}");
                assert_eq!(got.elapsed, ms(2000), "{at}");
                assert_eq!(seen.len(), 1, "{at}");
                assert_eq!(got.report.hedges(), 0, "{at}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_report_lists_each_attempt_whether_a_hedge_which_won_and_when() {
    for via in BOTH {
        let policy = hedged(ms(50)).build().unwrap();
        let script = vec![late(ms(2000), 200, "slow"), late(ms(10), 200, "fast")];
        let (got, _seen, _server) = one(via, policy, script, &get()).await;
        let report = &got.report;
        let h = report.history();
        assert_eq!(h.len(), 2, "{via:?}");
        assert!(!h[0].is_hedge() && h[1].is_hedge(), "{via:?}");
        assert_eq!(
            (h[0].sent_at(), h[1].sent_at()),
            (Some(ms(0)), Some(ms(50))),
            "{via:?}"
        );
        assert!(h[0].is_cancelled() && !h[1].is_cancelled(), "{via:?}");
        assert_eq!(
            h[0].status(),
            None,
            "{via:?}: a cancelled attempt has no outcome"
        );
        assert_eq!(
            (h[0].elapsed(), h[1].elapsed()),
            (ms(60), ms(60)),
            "{via:?}"
        );
        assert_eq!(h[1].status().map(|s| s.as_u16()), Some(200), "{via:?}");
        assert_eq!(report.winner(), Some(1), "{via:?}");
        assert_eq!(
            report.to_string(),
            "2 attempts [cancelled at 60ms, hedge at 50ms: 200 (won)]",
            "{via:?}"
        );
        // The JSON record says the same.
        #[cfg(feature = "serde")]
        {
            let record = http_resilience::record::ReportRecord::from(report);
            let json = serde_json::to_value(&record).unwrap();
            assert_eq!(json["winner"], 1, "{via:?}");
            assert_eq!(json["history"][0]["cancelled"], true, "{via:?}");
            assert_eq!(json["history"][0]["sent_ms"], 0.0, "{via:?}");
            assert_eq!(json["history"][1]["hedge"], true, "{via:?}");
            assert_eq!(json["history"][1]["sent_ms"], 50.0, "{via:?}");
            assert!(json["history"][1].get("cancelled").is_none(), "{via:?}");
        }
        // An attempt that answers before the delay: no hedge, a clean
        // report, and no timer left to fire a hedge later.
        let server = Server::start().await;
        server.script("/p", vec![late(ms(10), 200, "fast")]);
        let got = Client::new(via, hedged(ms(50)).build().unwrap())
            .send(&server.url("/p"), &get())
            .await;
        assert_eq!((got.status, got.elapsed), (Some(200), ms(10)), "{via:?}");
        assert_eq!(got.report.attempts(), 1, "{via:?}");
        assert_eq!(got.report.winner(), Some(0), "{via:?}");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(server.count("/p"), 1, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_losers_connection_is_closed_when_the_winner_answers() {
    for via in BOTH {
        let policy = hedged(ms(50)).build().unwrap();
        let script = vec![late(ms(2000), 200, "slow"), late(ms(10), 200, "fast")];
        let (got, seen, server) = one(via, policy, script, &get()).await;
        assert_eq!(got.body.as_deref(), Some("fast"), "{via:?}");
        // The server sees the first attempt's connection close at 60 ms,
        // when the hedge's response arrived: its future was dropped. (The
        // client's connection task closes it when next it runs.)
        tokio::time::sleep(ms(1)).await;
        let cancelled = server.cancelled("/p");
        assert_eq!(cancelled.len(), 1, "{via:?}");
        assert_eq!(cancelled[0] - seen[0].at, ms(60), "{via:?}");
        // Nothing more comes: no late write, no retry.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(server.count("/p"), 2, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_losers_response_already_received_is_never_read() {
    // The first attempt fails with a 503 at 60 ms whose 8 MiB body is more
    // than the socket buffers hold; the hedge, sent at 50 ms, answers at
    // 70 ms and wins. The 503 is never read: the server cannot write its
    // body whole.
    let big = "x".repeat(8 << 20);
    for via in BOTH {
        let policy = hedged(ms(50)).build().unwrap();
        let script = vec![late(ms(60), 503, &big), late(ms(20), 200, "fast")];
        let (got, seen, server) = one(via, policy, script, &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        assert_eq!(got.elapsed, ms(70), "{via:?}");
        assert_eq!(arrivals(&seen), [ms(0), ms(50)], "{via:?}: no retry");
        let h = got.report.history();
        assert_eq!(h[0].status().map(|s| s.as_u16()), Some(503), "{via:?}");
        assert!(!h[0].is_cancelled(), "{via:?}: it ended on its own");
        assert_eq!(got.report.winner(), Some(1), "{via:?}");
        let unread = server.unread("/p");
        assert_eq!(unread.len(), 1, "{via:?}: {unread:?}");
        assert!(
            unread[0].1 < big.len(),
            "{via:?}: {} bytes written",
            unread[0].1
        );
        // Dropped unread when the engine chose to wait for the hedge (60
        // ms), or at the latest when the hedge won (70 ms).
        let dropped = unread[0].0 - seen[0].at;
        assert!(
            (ms(60)..=ms(70)).contains(&dropped),
            "{via:?}: dropped at {dropped:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_budget_is_exhausted() {
    for via in BOTH {
        // A budget that pays for exactly one hedge (5 tokens of 5).
        let budget = RetryBudget::builder()
            .capacity(5)
            .retry_cost(5)
            .timeout_cost(5)
            .success_refund(1)
            .build()
            .unwrap();
        let policy = hedged(ms(50)).retry_budget(budget).build().unwrap();
        let server = Server::start().await;
        server.script(
            "/p",
            vec![
                late(ms(2000), 200, "slow"),
                late(ms(10), 200, "fast"),
                late(ms(2000), 200, "slow"),
            ],
        );
        let client = Client::new(via, policy);
        let first = client.send(&server.url("/p"), &get()).await;
        assert_eq!(
            (first.elapsed, first.report.hedges()),
            (ms(60), 1),
            "{via:?}"
        );
        // 5 - 5 + 1: one token left, a hedge costs 5.
        let second = client.send(&server.url("/p"), &get()).await;
        assert_eq!(second.body.as_deref(), Some("slow"), "{via:?}");
        assert_eq!(second.elapsed, ms(2000), "{via:?}");
        assert_eq!(second.report.hedges(), 0, "{via:?}");
        assert_eq!(
            second.report.hedge_skipped().map(|s| s.as_str()),
            Some("budget_exhausted"),
            "{via:?}"
        );
        assert_eq!(server.count("/p"), 3, "{via:?}: no hedge sent");
    }
}

#[tokio::test(start_paused = true)]
async fn no_hedge_while_the_breaker_is_open_or_a_quota_is_held() {
    for via in BOTH {
        for what in ["breaker", "quota"] {
            let mut policy = hedged(ms(50)).max_retries(0);
            if what == "breaker" {
                policy = policy.circuit_breaker(
                    CircuitBreaker::builder()
                        .consecutive_failures(1)
                        .break_duration(Duration::from_secs(10))
                        .build()
                        .unwrap(),
                );
            }
            let server = Server::start().await;
            server.script(
                "/slow",
                vec![late(ms(2000), 200, "slow"), late(ms(10), 200, "fast")],
            );
            // Another request to the same endpoint opens the breaker (a
            // 503) or announces the quota gone, at 10 ms.
            let other = if what == "breaker" {
                late(ms(10), 503, "down")
            } else {
                Step::after(ms(10), quota_gone(30))
            };
            server.script("/other", vec![other]);
            let client = Client::new(via, policy.build().unwrap());
            let (slow_url, other_url) = (server.url("/slow"), server.url("/other"));
            let (slow_req, other_req) = (get(), get());
            let (slow, _) = tokio::join!(
                client.send(&slow_url, &slow_req),
                client.send(&other_url, &other_req),
            );
            let at = format!("{via:?}, {what}");
            assert_eq!(slow.body.as_deref(), Some("slow"), "{at}");
            assert_eq!(slow.elapsed, ms(2000), "{at}");
            assert_eq!(server.count("/slow"), 1, "{at}: no hedge");
            let expected = if what == "breaker" {
                "circuit_open"
            } else {
                "server_quota"
            };
            assert_eq!(
                slow.report.hedge_skipped().map(|s| s.as_str()),
                Some(expected),
                "{at}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_hedge_goes_one_delay_after_the_one_before_up_to_max_hedges() {
    for via in BOTH {
        for max in [1, 2, 3] {
            let policy = base()
                .hedging(
                    Hedging::builder()
                        .delay(ms(50))
                        .max_hedges(max)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            // Every attempt is slow but the fourth.
            let slow = late(ms(2000), 200, "slow");
            let script = vec![slow.clone(), slow.clone(), slow, late(ms(10), 200, "fast")];
            let (got, seen, _server) = one(via, policy, script, &get()).await;
            let at = format!("{via:?}, max_hedges {max}");
            let expected: Vec<Duration> = (0..=u64::from(max)).map(|n| ms(50 * n)).collect();
            assert_eq!(arrivals(&seen), expected, "{at}");
            assert_eq!(got.report.hedges(), max, "{at}");
            if max == 3 {
                assert_eq!(
                    (got.body.as_deref(), got.elapsed),
                    (Some("fast"), ms(160)),
                    "{at}"
                );
                assert_eq!(got.report.winner(), Some(3), "{at}");
            } else {
                assert_eq!(
                    (got.body.as_deref(), got.elapsed),
                    (Some("slow"), ms(2000)),
                    "{at}"
                );
                assert_eq!(got.report.winner(), Some(0), "{at}: the first to answer");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_learned_delay_is_the_endpoints_percentile_once_there_are_enough_samples() {
    for via in BOTH {
        let hedging = Hedging::builder()
            .delay(ms(500))
            .percentile(0.95)
            .min_samples(20)
            .samples(20)
            .build()
            .unwrap();
        let server = Server::start().await;
        // Twenty answers in 10 to 29 ms (p95 by nearest rank: 28 ms), then
        // a slow one, then fast ones.
        let mut script: Vec<Step> = (0..20).map(|n| late(ms(10 + n), 200, "fast")).collect();
        script.push(late(ms(2000), 200, "slow"));
        script.push(late(ms(5), 200, "fast"));
        server.script("/p", script);
        // Before enough were learned: the fixed delay.
        let cold = Server::start().await;
        cold.script(
            "/p",
            vec![late(ms(2000), 200, "slow"), late(ms(5), 200, "fast")],
        );
        let policy = base().hedging(hedging.clone()).build().unwrap();
        let client = Client::new(via, policy);
        let got = client.send(&cold.url("/p"), &get()).await;
        assert_eq!(
            arrivals(&cold.seen("/p")),
            [ms(0), ms(500)],
            "{via:?}: the fixed delay"
        );
        assert_eq!(got.elapsed, ms(505), "{via:?}");
        for _ in 0..20 {
            client.send(&server.url("/p"), &get()).await;
        }
        assert_eq!(
            hedging.delay_for("127.0.0.1", server.addr().port()),
            ms(28),
            "{via:?}"
        );
        let got = client.send(&server.url("/p"), &get()).await;
        let seen = server.seen("/p");
        assert_eq!(
            seen[21].at - seen[20].at,
            ms(28),
            "{via:?}: hedged after the learned p95"
        );
        assert_eq!(got.elapsed, ms(33), "{via:?}");
        // The cancelled attempt's 33 ms, a lower bound, was learned too.
        assert_eq!(got.report.hedges(), 1, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_while_a_hedge_is_in_flight_waits_for_it_before_retrying() {
    // (what, script, backoff, arrivals, final body, elapsed)
    type Row<'a> = (&'a str, Vec<Step>, u64, Vec<u64>, &'a str, u64);
    let rows: Vec<Row<'_>> = vec![
        (
            "the hedge answers first: no retry",
            vec![late(ms(60), 503, "busy"), late(ms(30), 200, "hedge")],
            100,
            vec![0, 50],
            "hedge",
            80,
        ),
        (
            "the hedge is still out one delay after its send: the retry goes then",
            vec![
                late(ms(60), 503, "busy"),
                late(ms(2000), 200, "slow hedge"),
                late(ms(10), 200, "retry"),
            ],
            10,
            vec![0, 50, 100],
            "retry",
            110,
        ),
        (
            "... but not before the failure's own backoff",
            vec![
                late(ms(60), 503, "busy"),
                late(ms(2000), 200, "slow hedge"),
                late(ms(10), 200, "retry"),
            ],
            100,
            vec![0, 50, 160],
            "retry",
            170,
        ),
        (
            "the hedge fails too: one retry, after the later of the two waits",
            vec![
                late(ms(60), 503, "busy"),
                late(ms(20), 503, "busy too"),
                late(ms(10), 200, "retry"),
            ],
            100,
            // The hedge's failure at 70 ms draws the second backoff, 200 ms.
            vec![0, 50, 270],
            "retry",
            280,
        ),
    ];
    for via in BOTH {
        for (what, script, backoff, expected, body, elapsed) in &rows {
            let policy = hedged(ms(50))
                .initial_backoff(ms(*backoff))
                .build()
                .unwrap();
            let (got, seen, _server) = one(via, policy, script.clone(), &get()).await;
            let at = format!("{via:?}, {what}");
            let expected: Vec<Duration> = expected.iter().map(|n| ms(*n)).collect();
            assert_eq!(arrivals(&seen), expected, "{at}");
            assert_eq!(got.body.as_deref(), Some(*body), "{at}");
            assert_eq!(got.elapsed, ms(*elapsed), "{at}");
            assert_eq!(got.report.hedges(), 1, "{at}");
            assert_eq!(got.report.retries(), expected.len() as u32 - 2, "{at}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_every_attempt_and_every_hedge() {
    for via in BOTH {
        // Both attempts hang: the request ends at the deadline.
        let policy = hedged(ms(50)).deadline(ms(300)).build().unwrap();
        let (got, seen, _server) = one(via, policy, vec![Step::Hang], &get()).await;
        assert_eq!(got.code, Some("DEADLINE_EXCEEDED"), "{via:?}");
        assert_eq!(got.elapsed, ms(300), "{via:?}");
        assert_eq!(arrivals(&seen), [ms(0), ms(50)], "{via:?}");
        // A deadline before the hedge delay: no hedge.
        let policy = hedged(ms(50)).deadline(ms(40)).build().unwrap();
        let (got, seen, _server) = one(via, policy, vec![Step::Hang], &get()).await;
        assert_eq!(got.code, Some("DEADLINE_EXCEEDED"), "{via:?}");
        assert_eq!(got.elapsed, ms(40), "{via:?}");
        assert_eq!(seen.len(), 1, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn hedging_is_per_route_and_loads_from_a_configuration_file() {
    let built = EndpointPolicies::builder()
        .route(
            Route::any().path_prefix("/hedged"),
            hedged(ms(50)).build().unwrap(),
        )
        .default_policy(base().build().unwrap())
        .build()
        .unwrap();
    #[cfg(feature = "serde")]
    let from_file = Some(
        EndpointPolicies::from_toml_str(
            r#"
            [default]
            jitter = "none"
            [[routes]]
            path_prefix = "/hedged"
            policy = { jitter = "none", hedging = { delay = "50ms" } }
            "#,
        )
        .unwrap(),
    );
    #[cfg(not(feature = "serde"))]
    let from_file: Option<EndpointPolicies> = None;
    for via in BOTH {
        for set in [Some(built.clone()), from_file.clone()]
            .into_iter()
            .flatten()
        {
            let server = Server::start().await;
            let script = vec![late(ms(2000), 200, "slow"), late(ms(10), 200, "fast")];
            server.script("/hedged", script.clone());
            server.script("/plain", script);
            let client = Client::new(via, set);
            let a = client.send(&server.url("/hedged"), &get()).await;
            let b = client.send(&server.url("/plain"), &get()).await;
            assert_eq!((a.elapsed, a.report.hedges()), (ms(60), 1), "{via:?}");
            assert_eq!((b.elapsed, b.report.hedges()), (ms(2000), 0), "{via:?}");
            assert_eq!(
                (server.count("/hedged"), server.count("/plain")),
                (2, 1),
                "{via:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn hedging_off_changes_nothing() {
    // The same slow script without hedging: one attempt, no hedge, a clean
    // report.
    for via in BOTH {
        let script = vec![late(ms(2000), 200, "slow"), late(ms(10), 200, "fast")];
        let (got, seen, _server) = one(via, base().build().unwrap(), script, &get()).await;
        assert_eq!(
            (got.body.as_deref(), got.elapsed),
            (Some("slow"), ms(2000)),
            "{via:?}"
        );
        assert_eq!(seen.len(), 1, "{via:?}");
        assert_eq!(got.report.hedges(), 0, "{via:?}");
        assert!(
            got.report.history().iter().all(|a| !a.is_hedge()),
            "{via:?}"
        );
    }
    let _ = Instant::now();
}

/// A response whose body the classifier must read first (GitHub's
/// ambiguous 403) ends the race: the other attempt is cancelled then, and
/// the 403 is read within its own attempt's timer and handed over whole.
#[tokio::test(start_paused = true)]
async fn a_response_whose_body_is_read_first_ends_the_race() {
    for via in BOTH {
        let policy = http_resilience::Preset::GitHub
            .builder()
            .jitter(http_resilience::Jitter::None)
            .attempt_timeout(ms(1000))
            .hedging(Hedging::builder().delay(ms(50)).build().unwrap())
            .build()
            .unwrap();
        let script = vec![
            late(ms(2000), 200, "slow"),
            late(
                ms(10),
                403,
                r#"{"message":"Resource not accessible by integration"}"#,
            ),
        ];
        let (got, seen, server) = one(via, policy, script, &get()).await;
        let at = format!("{via:?}");
        assert_eq!(got.status, Some(403), "{at}");
        assert_eq!(
            got.body.as_deref(),
            Some(r#"{"message":"Resource not accessible by integration"}"#),
            "{at}: read whole after the classifier's look"
        );
        assert_eq!(got.elapsed, ms(60), "{at}");
        assert_eq!(arrivals(&seen), [ms(0), ms(50)], "{at}");
        tokio::time::sleep(ms(1)).await;
        let cancelled = server.cancelled("/p");
        assert_eq!(cancelled.len(), 1, "{at}");
        assert_eq!(
            cancelled[0] - seen[0].at,
            ms(60),
            "{at}: cancelled at the handover"
        );
        let h = got.report.history();
        assert_eq!(h.len(), 2, "{at}");
        assert!(h[0].is_cancelled(), "{at}");
        assert_eq!(h[1].status().map(|s| s.as_u16()), Some(403), "{at}");
        assert!(h[1].is_hedge(), "{at}: {h:?}");
    }
}
