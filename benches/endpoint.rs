//! Endpoint selection: the cost of picking a request's policy from an
//! [`EndpointPolicies`] set of 1, 10 and 300 rules, for a request that
//! matches the last rule of its host and for one that falls to the
//! default. Rules are indexed by host, so the cost should stay flat as
//! rules for other hosts grow.
//!
//! `cargo bench --bench endpoint`; with `QUICK=1` it runs in a few seconds.

mod support;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Extensions, HeaderMap, Method};
use http_resilience::{EndpointPolicies, RequestMeta, RetryPolicy, Route};
use support::config;

/// `n` rules: one per host `svc{i}.example.com` (exact), every tenth a
/// wildcard (from the first on, so that 10 and 300 rules have the same
/// kinds of lookup), and last a glob rule on the host the benchmark asks
/// for.
fn set(n: usize) -> EndpointPolicies {
    let policy = RetryPolicy::default();
    let mut b = EndpointPolicies::builder();
    for i in 0..n.saturating_sub(1) {
        let route = if i % 10 == 0 {
            Route::host(format!("*.zone{i}.example.com"))
        } else {
            Route::host(format!("svc{i}.example.com")).path_prefix("/v1/")
        };
        b = b.route(route, policy.clone());
    }
    b.route(
        Route::host("api.example.com").path_glob("/v2/*/items"),
        RetryPolicy::github(),
    )
    .build()
    .expect("valid rules")
}

fn select(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let ext = Extensions::new();
    let hit = RequestMeta::new(
        &Method::GET,
        "https",
        "api.example.com",
        "/v2/acme/items",
        &headers,
    );
    let miss = RequestMeta::new(&Method::GET, "https", "a.b.other.org", "/", &headers);
    let mut group = c.benchmark_group("endpoint_select");
    for n in [1usize, 10, 300] {
        let set = set(n);
        assert!(
            set.select(&hit).preset().is_some(),
            "the hit request matches its rule"
        );
        assert!(
            set.select(&miss).preset().is_none(),
            "the miss request gets the default"
        );
        group.bench_with_input(BenchmarkId::new("match", n), &set, |b, set| {
            b.iter(|| black_box(set.select_with(black_box(&ext), black_box(&hit))).max_retries())
        });
        group.bench_with_input(BenchmarkId::new("default", n), &set, |b, set| {
            b.iter(|| black_box(set.select_with(black_box(&ext), black_box(&miss))).max_retries())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = select
}
criterion_main!(benches);
