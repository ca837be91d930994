//! What load protection costs in the sans-IO core:
//!
//! - the decision core (`RetryState::new` + `admit` + `decide`) with the
//!   default policy (retry budget on, server quota holds on) against
//!   `.retry_budget(None).server_limits(false)` (no endpoint state at all),
//!   for a 200 and for a 503 with `Retry-After: 2` that is retried;
//! - `InMemoryStore::endpoint` with 1 and 1,000 endpoints in the store;
//! - `CircuitState::admit` + `record` on a closed breaker;
//! - `Limiter::try_acquire` when a cell is free and when none is, and
//!   `Limiter::acquire` taking a reservation and giving it back;
//! - `retry_after::quota_reset` on a response without quota headers and
//!   with each family's (epoch, Anthropic RFC 3339, OpenAI Go duration).
//!
//! `cargo bench --bench protection`; with `QUICK=1` it runs in seconds.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use http_resilience::circuit::{CircuitState, Verdict};
use http_resilience::rate_limit::Limiter;
use http_resilience::retry_after::quota_reset;
use http_resilience::{
    Admission, CircuitBreaker, Decision, EndpointKey, InMemoryStore, RateLimit, RetryPolicy,
    RetryState, StateStore,
};
use support::{CoreInputs, config};

fn decide(c: &mut Criterion) {
    let (on, off) = support::protection_on_off();
    let inputs = CoreInputs::new();
    let meta = inputs.request();
    let t0 = Instant::now();
    let [(_, _, ok), (_, _, unavailable), _] = inputs.cases();

    let run = |policy: &RetryPolicy, outcome: &http_resilience::Outcome<'_>| {
        let mut state = RetryState::new(policy, &meta, t0);
        let admitted = state.admit(&meta, t0);
        (admitted, state.decide(&meta, outcome, t0))
    };
    // Sanity, many times over: dropping a state whose retry was not sent
    // gives its tokens back, so the budget never runs dry and every
    // iteration measures the retry path.
    for policy in [&on, &off] {
        for _ in 0..1_000 {
            assert_eq!(run(policy, &ok), (Admission::Send, Decision::Return));
            assert!(matches!(
                run(policy, &unavailable),
                (Admission::Send, Decision::Retry { delay, .. }) if delay == Duration::from_secs(2)
            ));
        }
    }

    let mut group = c.benchmark_group("protection_decide");
    for (name, policy) in [("on", &on), ("off", &off)] {
        for (case, outcome) in [("200_success", &ok), ("503_retry", &unavailable)] {
            group.bench_function(format!("{case}/{name}"), |b| {
                b.iter(|| {
                    let mut state = RetryState::new(black_box(policy), black_box(&meta), t0);
                    black_box(state.admit(&meta, black_box(t0)));
                    black_box(state.decide(&meta, black_box(outcome), black_box(t0)))
                })
            });
        }
    }
    group.finish();
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_endpoint");
    for n in [1usize, 1_000] {
        let store = InMemoryStore::new();
        let hosts: Vec<String> = (0..n).map(|i| format!("host-{i}.example.com")).collect();
        for host in &hosts {
            let _ = store.endpoint(&EndpointKey::new(host, 443));
        }
        assert_eq!(store.len(), n);
        let last = hosts.last().unwrap().as_str();
        group.bench_function(format!("{n}_endpoints"), |b| {
            b.iter(|| black_box(store.endpoint(&EndpointKey::new(black_box(last), 443))))
        });
    }
    group.finish();
}

fn circuit(c: &mut Criterion) {
    let breaker = CircuitBreaker::default();
    let mut state = CircuitState::default();
    let t0 = Instant::now();
    c.bench_function("circuit_admit_record/closed_success", |b| {
        b.iter(|| match state.admit(black_box(&breaker), black_box(t0)) {
            Verdict::Allow(ticket) => state.record(&breaker, ticket, black_box(false), t0),
            Verdict::Refuse { .. } => unreachable!("a closed breaker with successes only"),
        })
    });
}

fn limiter(c: &mut Criterion) {
    let free = Limiter::new(
        &RateLimit::builder(u32::MAX, Duration::from_secs(1))
            .burst(u32::MAX)
            .build()
            .unwrap(),
    );
    let spent = Limiter::new(&RateLimit::per_hour(1).build().unwrap());
    assert!(spent.try_acquire().is_ok());
    assert!(spent.try_acquire().is_err());
    let mut group = c.benchmark_group("limiter_try_acquire");
    group.bench_function("free", |b| b.iter(|| black_box(free.try_acquire())));
    group.bench_function("exhausted", |b| b.iter(|| black_box(spent.try_acquire())));
    group.finish();
    // A waiter's place in line: reserved, then given back (a cancelled
    // request), which leaves the limiter as it was.
    let t0 = Instant::now();
    let hour = Duration::from_secs(3600);
    let reserved = Limiter::new(&RateLimit::per_hour(1000).burst(1).build().unwrap());
    assert_eq!(reserved.acquire(t0, hour).unwrap().at(), t0);
    let turn = reserved.acquire(t0, hour).unwrap();
    assert!(turn.at() > t0);
    reserved.release(turn);
    let mut group = c.benchmark_group("limiter_acquire");
    group.bench_function("reserve_release", |b| {
        b.iter(|| {
            let turn = reserved.acquire(black_box(t0), hour).unwrap();
            reserved.release(black_box(turn));
        })
    });
    group.finish();
}

fn quota(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let base = || {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("content-length", "13"),
            ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
            ("server", "bench"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        h
    };
    let with = |pairs: &[(&'static str, &'static str)]| {
        let mut h = base();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    };
    let cases = [
        ("none", base()),
        (
            "epoch",
            with(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000030"),
            ]),
        ),
        (
            "anthropic_rfc3339",
            with(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:50Z"),
            ]),
        ),
        (
            "openai_duration",
            with(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "6m0s"),
            ]),
        ),
    ];
    let mut group = c.benchmark_group("quota_reset");
    for (name, headers) in &cases {
        let got = quota_reset(headers, now);
        assert_eq!(got.is_some(), *name != "none", "{name}: {got:?}");
        group.bench_function(*name, |b| {
            b.iter(|| black_box(quota_reset(black_box(headers), black_box(now))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decide, store, circuit, limiter, quota
}
criterion_main!(benches);
