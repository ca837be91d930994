//! The engine's unit tests: the decision core under a fixed clock, no
//! network.

use super::*;
use crate::backoff::Jitter;
use crate::classify::FailureKind;
use std::time::{SystemTime, UNIX_EPOCH};

const NONE: &[(&str, &str)] = &[];

/// A response (status and headers) or a transport failure.
type Scripted = Result<(u16, &'static [(&'static str, &'static str)]), FailureKind>;

struct Case {
    method: Method,
    req_headers: Vec<(&'static str, &'static str)>,
}

fn policy() -> crate::policy::RetryPolicyBuilder {
    let fixed = UNIX_EPOCH + Duration::from_secs(1_000_000);
    RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .jitter(Jitter::None)
        .wall_clock(move || fixed)
}

fn run(policy: &RetryPolicy, case: &Case, outcomes: &[Scripted]) -> (Vec<Decision>, RetryReport) {
    let mut headers = HeaderMap::new();
    for (k, v) in &case.req_headers {
        headers.insert(*k, HeaderValue::from_static(v));
    }
    let meta = RequestMeta::new(&case.method, "http", "h", "/p", &headers);
    let t0 = Instant::now();
    let mut now = t0;
    let mut state = RetryState::new(policy, &meta, now);
    let mut out = vec![];
    let err = std::io::Error::other("x");
    for o in outcomes {
        let mut h = HeaderMap::new();
        let d = match o {
            Ok((status, pairs)) => {
                for (k, v) in pairs.iter() {
                    h.append(*k, HeaderValue::from_static(v));
                }
                let outcome = Outcome::response(StatusCode::from_u16(*status).unwrap(), &h);
                state.decide(&meta, &outcome, now)
            }
            Err(kind) => state.decide(
                &meta,
                &Outcome::Error {
                    kind: *kind,
                    error: &err,
                },
                now,
            ),
        };
        out.push(d);
        match d {
            Decision::Retry { delay, .. } => now += delay,
            _ => break,
        }
    }
    (out, state.take_report())
}

fn get() -> Case {
    Case {
        method: Method::GET,
        req_headers: vec![],
    }
}
fn post() -> Case {
    Case {
        method: Method::POST,
        req_headers: vec![],
    }
}

#[test]
fn exact_backoff_figures() {
    let p = policy().build().unwrap();
    let (d, report) = run(
        &p,
        &get(),
        &[
            Ok((503, NONE)),
            Ok((503, NONE)),
            Ok((503, NONE)),
            Ok((200, NONE)),
        ],
    );
    assert_eq!(d.last(), Some(&Decision::Return));
    assert_eq!(report.retries(), 3);
    assert_eq!(report.total_backoff(), Duration::from_millis(35));
    assert_eq!(report.stop_reason(), Some(StopReason::Success));
}

#[test]
fn exhaustion_fails() {
    let p = policy().max_retries(2).build().unwrap();
    let (d, report) = run(&p, &get(), &[Ok((503, NONE)); 3]);
    assert_eq!(d.last(), Some(&Decision::Fail(StopReason::MaxRetries)));
    assert_eq!(report.attempts(), 3);
    let p = policy()
        .max_retries(2)
        .return_last_response(true)
        .build()
        .unwrap();
    let (d, _) = run(&p, &get(), &[Ok((503, NONE)); 3]);
    assert_eq!(d.last(), Some(&Decision::Return));
}

#[test]
fn hints() {
    let p = policy().build().unwrap();
    let (d, _) = run(&p, &get(), &[Ok((503, &[("retry-after", "3")]))]);
    assert_eq!(
        d[0],
        Decision::Retry {
            delay: Duration::from_secs(3),
            source: DelaySource::RetryAfter
        }
    );
    let (d, _) = run(&p, &get(), &[Ok((429, &[("retry-after", "121")]))]);
    assert_eq!(
        d[0],
        Decision::Fail(StopReason::RetryAfterTooLong {
            hint: Duration::from_secs(121)
        })
    );
    let p2 = policy().on_long_hint(LongHint::UseBackoff).build().unwrap();
    let (d, _) = run(&p2, &get(), &[Ok((429, &[("retry-after", "121")]))]);
    assert_eq!(
        d[0],
        Decision::Retry {
            delay: Duration::from_millis(5),
            source: DelaySource::Backoff
        }
    );
    // GitHub primary limit: reset 30 s after the fixed clock
    let (d, _) = run(
        &p,
        &get(),
        &[Ok((
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000030"),
            ],
        ))],
    );
    assert_eq!(
        d[0],
        Decision::Retry {
            delay: Duration::from_secs(30),
            source: DelaySource::RateLimitReset
        }
    );
    let _ = SystemTime::now();
}

#[test]
fn deadline_is_never_overshot() {
    let p = policy()
        .deadline(Duration::from_millis(12))
        .build()
        .unwrap();
    // 5 ms, then 10 ms would end at 15 > 12: stop at once.
    let (d, report) = run(&p, &get(), &[Ok((503, NONE)), Ok((503, NONE))]);
    assert_eq!(d[1], Decision::Fail(StopReason::Deadline));
    assert_eq!(report.total_backoff(), Duration::from_millis(5));
    let (d, _) = run(&p, &get(), &[Ok((503, &[("retry-after", "1")]))]);
    assert_eq!(d[0], Decision::Fail(StopReason::Deadline));
}

#[test]
fn attempt_timeout_is_clamped_to_the_deadline() {
    let p = policy()
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let headers = HeaderMap::new();
    let meta = RequestMeta::new(&Method::GET, "http", "h", "/", &headers);
    let t0 = Instant::now();
    let state = RetryState::new(&p, &meta, t0);
    assert_eq!(state.attempt_timeout(t0), Some(Duration::from_secs(4)));
    assert_eq!(
        state.attempt_timeout(t0 + Duration::from_secs(8)),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        state.attempt_timeout(t0 + Duration::from_secs(11)),
        Some(Duration::ZERO)
    );
}

#[test]
fn idempotency_rules() {
    let p = policy().build().unwrap();
    // POST 503: may have been acted on, returned as is
    let (d, r) = run(&p, &post(), &[Ok((503, NONE))]);
    assert_eq!(d[0], Decision::Return);
    assert_eq!(r.stop_reason(), Some(StopReason::NotIdempotent));
    // POST reset: fails without retry
    let (d, _) = run(&p, &post(), &[Err(FailureKind::ConnectionReset)]);
    assert_eq!(d[0], Decision::Fail(StopReason::NotIdempotent));
    // POST 429 and refused connection: safe
    let (d, _) = run(&p, &post(), &[Ok((429, NONE))]);
    assert!(matches!(d[0], Decision::Retry { .. }));
    let (d, _) = run(&p, &post(), &[Err(FailureKind::Connect)]);
    assert!(matches!(d[0], Decision::Retry { .. }));
    // with a key, or opted in
    let keyed = Case {
        method: Method::POST,
        req_headers: vec![("idempotency-key", "k")],
    };
    let (d, _) = run(&p, &keyed, &[Ok((503, NONE))]);
    assert!(matches!(d[0], Decision::Retry { .. }));
    let p2 = policy().retry_non_idempotent(true).build().unwrap();
    let (d, _) = run(&p2, &post(), &[Ok((503, NONE))]);
    assert!(matches!(d[0], Decision::Retry { .. }));
}

#[test]
fn permanent_and_errors() {
    let p = policy().build().unwrap();
    let (d, _) = run(&p, &get(), &[Ok((404, NONE))]);
    assert_eq!(d[0], Decision::Return);
    let (d, _) = run(&p, &get(), &[Err(FailureKind::Tls)]);
    assert_eq!(d[0], Decision::Fail(StopReason::Permanent));
    let (d, r) = run(&p, &get(), &[Err(FailureKind::Timeout); 4]);
    assert_eq!(d[3], Decision::Fail(StopReason::MaxRetries));
    assert_eq!(r.history()[0].failure(), Some(FailureKind::Timeout));
}

mod protection {
    use super::*;
    use crate::protection::store::EndpointKey;
    use crate::protection::{CircuitBreaker, RetryBudget};
    use crate::report::ThrottleReason;

    fn meta(headers: &HeaderMap) -> RequestMeta<'_> {
        RequestMeta::new(&Method::GET, "http", "h", "/p", headers)
    }

    fn respond<'a>(status: u16, headers: &'a HeaderMap) -> Outcome<'a> {
        Outcome::response(StatusCode::from_u16(status).unwrap(), headers)
    }

    #[test]
    fn the_budget_pays_for_retries_until_it_cannot() {
        let budget = RetryBudget::builder().capacity(10).build().unwrap();
        let p = policy()
            .max_retries(5)
            .retry_budget(budget)
            .build()
            .unwrap();
        let h = HeaderMap::new();
        let t0 = Instant::now();
        let mut state = RetryState::new(&p, &meta(&h), t0);
        let mut decisions = vec![];
        for _ in 0..3 {
            assert_eq!(state.admit(&meta(&h), t0), Admission::Send);
            decisions.push(state.decide(&meta(&h), &respond(503, &h), t0));
        }
        assert!(matches!(decisions[0], Decision::Retry { .. }));
        assert!(matches!(decisions[1], Decision::Retry { .. }));
        assert_eq!(decisions[2], Decision::Fail(StopReason::BudgetExhausted));
        let endpoint = p.state_store().endpoint(&EndpointKey::new("h", 80));
        assert_eq!(endpoint.tokens(&budget), 0);
    }

    #[test]
    fn a_dropped_request_refunds_a_retry_it_paid_for() {
        let budget = RetryBudget::builder().capacity(10).build().unwrap();
        let p = policy().retry_budget(budget).build().unwrap();
        let h = HeaderMap::new();
        let t0 = Instant::now();
        let mut state = RetryState::new(&p, &meta(&h), t0);
        state.admit(&meta(&h), t0);
        assert!(matches!(
            state.decide(&meta(&h), &respond(503, &h), t0),
            Decision::Retry { .. }
        ));
        let endpoint = p.state_store().endpoint(&EndpointKey::new("h", 80));
        assert_eq!(endpoint.tokens(&budget), 5);
        drop(state);
        assert_eq!(endpoint.tokens(&budget), 10);
    }

    #[test]
    fn a_withdrawn_attempt_gives_back_its_tokens_and_its_probe_slot() {
        let budget = RetryBudget::builder().capacity(10).build().unwrap();
        let p = policy().retry_budget(budget).build().unwrap();
        let h = HeaderMap::new();
        let t0 = Instant::now();
        let endpoint = p.state_store().endpoint(&EndpointKey::new("h", 80));
        // A retry paid for and admitted, then withdrawn: its 5 tokens
        // come back, as if it had been refused at admission.
        let mut state = RetryState::new(&p, &meta(&h), t0);
        assert_eq!(state.admit(&meta(&h), t0), Admission::Send);
        assert_eq!(
            state.decide(&meta(&h), &respond(429, &h), t0),
            Decision::Retry {
                delay: Duration::from_millis(5),
                source: DelaySource::Backoff
            }
        );
        assert_eq!(endpoint.tokens(&budget), 5);
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(state.admit(&meta(&h), t1), Admission::Send);
        assert_eq!(
            state.withdraw(&meta(&h), StopReason::Deadline),
            Admission::Fail(StopReason::Deadline)
        );
        assert_eq!(endpoint.tokens(&budget), 10);
        assert_eq!(state.report().stop_reason(), Some(StopReason::Deadline));
        assert_eq!(
            state.refusal(StopReason::Deadline, true),
            Decision::Fail(StopReason::Deadline)
        );
        drop(state);
        assert_eq!(endpoint.tokens(&budget), 10, "nothing paid twice");

        // Open the breaker, then admit the half-open probe and withdraw
        // it: the slot is free for the next request.
        let p = policy()
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut opener = RetryState::new(&p, &meta(&h), t0);
        assert_eq!(opener.admit(&meta(&h), t0), Admission::Send);
        opener.decide(&meta(&h), &respond(503, &h), t0);
        let five = t0 + Duration::from_secs(5);
        let mut probe = RetryState::new(&p, &meta(&h), five);
        assert_eq!(probe.admit(&meta(&h), five), Admission::Send);
        probe.withdraw(&meta(&h), StopReason::Deadline);
        let mut next = RetryState::new(&p, &meta(&h), five);
        assert_eq!(next.admit(&meta(&h), five), Admission::Send);
    }

    #[test]
    fn a_refusal_before_a_retry_returns_the_last_response_only_when_asked() {
        let h = HeaderMap::new();
        let t0 = Instant::now();
        let plain = policy().build().unwrap();
        let keep = policy().return_last_response(true).build().unwrap();
        let local = StopReason::RateLimitedLocally {
            wait: Duration::from_secs(1),
        };
        for reason in [
            StopReason::Deadline,
            StopReason::CircuitOpen {
                retry_in: Duration::from_secs(1),
            },
            StopReason::RetryAfterTooLong {
                hint: Duration::from_secs(600),
            },
            local,
        ] {
            let state = RetryState::new(&plain, &meta(&h), t0);
            assert_eq!(state.refusal(reason, true), Decision::Fail(reason));
            assert_eq!(state.refusal(reason, false), Decision::Fail(reason));
            let state = RetryState::new(&keep, &meta(&h), t0);
            assert_eq!(state.refusal(reason, true), Decision::Return);
            assert_eq!(state.refusal(reason, false), Decision::Fail(reason));
        }
        // A body that cannot be sent again: the response as it is.
        let state = RetryState::new(&plain, &meta(&h), t0);
        let not_replayable = StopReason::BodyNotReplayable;
        assert_eq!(state.refusal(not_replayable, true), Decision::Return);
        assert_eq!(
            state.refusal(not_replayable, false),
            Decision::Fail(not_replayable)
        );
    }

    #[test]
    fn a_quota_gone_holds_the_next_request_until_the_reset() {
        let p = policy()
            .quota_release_spread(Duration::ZERO)
            .build()
            .unwrap();
        let none = HeaderMap::new();
        let mut gone = HeaderMap::new();
        gone.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        // the fixed wall clock is at 1,000,000 s
        gone.insert("x-ratelimit-reset", HeaderValue::from_static("1000030"));
        let t0 = Instant::now();
        let mut first = RetryState::new(&p, &meta(&none), t0);
        assert_eq!(first.admit(&meta(&none), t0), Admission::Send);
        assert_eq!(
            first.decide(&meta(&none), &respond(200, &gone), t0),
            Decision::Return
        );

        let later = t0 + Duration::from_secs(10);
        let mut next = RetryState::new(&p, &meta(&none), later);
        assert_eq!(
            next.admit(&meta(&none), later),
            Admission::Wait {
                delay: Duration::from_secs(20),
                reason: ThrottleReason::ServerQuota
            }
        );
        let at_reset = t0 + Duration::from_secs(30);
        assert_eq!(next.admit(&meta(&none), at_reset), Admission::Send);
        assert_eq!(next.report().total_throttled(), Duration::from_secs(20));

        // a reset beyond max_retry_after (120 s; the wall clock is fixed,
        // so 600 s from it): refused at once
        let mut far = HeaderMap::new();
        far.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        far.insert("x-ratelimit-reset", HeaderValue::from_static("1000600"));
        next.decide(&meta(&none), &respond(200, &far), at_reset);
        let mut refused = RetryState::new(&p, &meta(&none), at_reset);
        assert_eq!(
            refused.admit(&meta(&none), at_reset),
            Admission::Fail(StopReason::RetryAfterTooLong {
                hint: Duration::from_secs(600)
            })
        );
    }

    #[test]
    fn a_hold_is_the_credentials_and_is_released_over_the_spread() {
        let p = policy().seed(1).build().unwrap();
        let mut gone = HeaderMap::new();
        gone.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        gone.insert("x-ratelimit-reset", HeaderValue::from_static("1000030"));
        let mut a = HeaderMap::new();
        a.insert("authorization", HeaderValue::from_static("token a"));
        let mut b = HeaderMap::new();
        b.insert("authorization", HeaderValue::from_static("token b"));
        let none = HeaderMap::new();
        let t0 = Instant::now();
        let mut first = RetryState::new(&p, &meta(&a), t0);
        assert_eq!(first.admit(&meta(&a), t0), Admission::Send);
        first.decide(&meta(&a), &respond(200, &gone), t0);
        let thirty = Duration::from_secs(30);
        let mut delays = vec![];
        for _ in 0..20 {
            let mut held = RetryState::new(&p, &meta(&a), t0);
            match held.admit(&meta(&a), t0) {
                Admission::Wait { delay, reason } => {
                    assert_eq!(reason, ThrottleReason::ServerQuota);
                    assert!(delay >= thirty && delay <= thirty + Duration::from_secs(1));
                    delays.push(delay);
                }
                other => panic!("{other:?}"),
            }
        }
        delays.dedup();
        assert!(delays.len() > 1, "spread: {delays:?}");
        for other in [&b, &none] {
            let mut free = RetryState::new(&p, &meta(other), t0);
            assert_eq!(free.admit(&meta(other), t0), Admission::Send);
        }
    }

    #[test]
    fn a_reset_beyond_max_quota_reset_holds_nothing() {
        let none = HeaderMap::new();
        let t0 = Instant::now();
        // the fixed wall clock is at 1,000,000 s; the maximum is 1 h
        for (reset, held) in [("1003599", true), ("1003601", false), ("4102444800", false)] {
            let mut gone = HeaderMap::new();
            gone.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            gone.insert("x-ratelimit-reset", HeaderValue::from_static(reset));
            let p = policy()
                .max_quota_reset(Duration::from_secs(3600))
                .build()
                .unwrap();
            let mut first = RetryState::new(&p, &meta(&none), t0);
            first.admit(&meta(&none), t0);
            first.decide(&meta(&none), &respond(200, &gone), t0);
            let mut next = RetryState::new(&p, &meta(&none), t0);
            let got = next.admit(&meta(&none), t0);
            assert_eq!(got != Admission::Send, held, "{reset}: {got:?}");
        }
    }

    #[test]
    fn an_open_breaker_refuses_and_a_failure_that_opens_it_stops_at_once() {
        let p = policy()
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let h = HeaderMap::new();
        let t0 = Instant::now();
        let mut first = RetryState::new(&p, &meta(&h), t0);
        assert_eq!(first.admit(&meta(&h), t0), Admission::Send);
        let five = Duration::from_secs(5);
        assert_eq!(
            first.decide(&meta(&h), &respond(503, &h), t0),
            Decision::Fail(StopReason::CircuitOpen { retry_in: five })
        );
        let mut second = RetryState::new(&p, &meta(&h), t0);
        assert_eq!(
            second.admit(&meta(&h), t0 + Duration::from_secs(1)),
            Admission::Fail(StopReason::CircuitOpen {
                retry_in: Duration::from_secs(4)
            })
        );
        // at 5 s: one probe; a second request meanwhile is refused
        let mut probe = RetryState::new(&p, &meta(&h), t0 + five);
        assert_eq!(probe.admit(&meta(&h), t0 + five), Admission::Send);
        let mut other = RetryState::new(&p, &meta(&h), t0 + five);
        assert!(matches!(
            other.admit(&meta(&h), t0 + five),
            Admission::Fail(StopReason::CircuitOpen { .. })
        ));
        assert_eq!(
            probe.decide(&meta(&h), &respond(200, &h), t0 + five),
            Decision::Return
        );
        let mut after = RetryState::new(&p, &meta(&h), t0 + five);
        assert_eq!(after.admit(&meta(&h), t0 + five), Admission::Send);
    }
}

#[test]
fn auto_key_only_for_non_idempotent_without_one() {
    let p = policy().auto_idempotency_key(true).build().unwrap();
    let mut h = HeaderMap::new();
    prepare_request(&p, &Method::GET, &mut h);
    assert!(h.is_empty());
    prepare_request(&p, &Method::POST, &mut h);
    let key = h.get(IDEMPOTENCY_KEY).unwrap().clone();
    assert_eq!(key.len(), 36);
    prepare_request(&p, &Method::POST, &mut h);
    assert_eq!(
        h.get(IDEMPOTENCY_KEY),
        Some(&key),
        "an existing key is kept"
    );
    let mut h2 = HeaderMap::new();
    prepare_request(&policy().build().unwrap(), &Method::POST, &mut h2);
    assert!(h2.is_empty(), "off by default");
}
