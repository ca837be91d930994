//! The cost of the sans-IO decision core: one `RetryState::new` plus one
//! `decide`, for a success, a 503 with `Retry-After: 2` (header parse plus
//! backoff draw) and a transport error; and `parse_retry_after` on its two
//! forms.
//!
//! `cargo bench --bench core`; with `QUICK=1` (or `-- --quick`) it runs in
//! a few seconds.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http_resilience::retry_after::parse_retry_after;
use http_resilience::{Decision, Outcome, RetryPolicy, RetryState};
use support::{CoreInputs, config};

fn decide(c: &mut Criterion) {
    // The default policy: full jitter from fresh randomness, system clock.
    let policy = RetryPolicy::default();
    let inputs = CoreInputs::new();
    let meta = inputs.request();
    let t0 = Instant::now();
    let cases = inputs.cases();

    // Sanity: each case takes the path it is meant to measure.
    let once =
        |outcome: &Outcome<'_>| RetryState::new(&policy, &meta, t0).decide(&meta, outcome, t0);
    let [(_, _, ok), (_, _, unavailable), (_, _, reset)] = &cases;
    assert_eq!(once(ok), Decision::Return);
    assert!(matches!(
        once(unavailable),
        Decision::Retry { delay, .. } if delay == Duration::from_secs(2)
    ));
    assert!(matches!(once(reset), Decision::Retry { .. }));

    let mut group = c.benchmark_group("decide");
    for (id, _, outcome) in &cases {
        group.bench_function(*id, |b| {
            b.iter(|| {
                let mut state = RetryState::new(black_box(&policy), black_box(&meta), t0);
                black_box(state.decide(&meta, black_box(outcome), black_box(t0)))
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
    let mut group = c.benchmark_group("parse_retry_after");
    group.bench_function("imf_fixdate", |b| {
        b.iter(|| parse_retry_after(black_box(date.as_bytes()), black_box(now)))
    });
    group.bench_function("seconds_120", |b| {
        b.iter(|| parse_retry_after(black_box(b"120"), black_box(now)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decide, parse
}
criterion_main!(benches);
