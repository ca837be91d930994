//! What a metric costs on a request's path when NO recorder is installed
//! (feature `metrics`), the figures behind design/observability.md:
//!
//! - `gate`: `http_resilience::metrics::is_enabled()`, the one relaxed load
//!   every request pays with the feature on and `enable()` not called;
//! - `facade_dynamic_labels`: `metrics::counter!` with the request's host
//!   and port as labels, made per request (what the wiring must avoid: two
//!   label `String`s per call, whatever the recorder);
//! - `facade_static_key`: `metrics::counter!` with a static name and
//!   static labels (the facade's own cost: a thread-local, the global
//!   recorder's state, a `dyn` call);
//! - `cached_handle`: `Counter::increment` on a handle registered once (the
//!   wiring's path once enabled; a no-op handle without a recorder);
//! - `attempt_span`: the per-attempt span of `src/adapter/span.rs` (the same
//!   fields) with no tracing subscriber;
//! - `engine_off`: the engine's success path (`RetryState::new`, `admit`,
//!   `decide` on a 200, default policy), the feature compiled in and
//!   `enable()` not called: what every request pays;
//! - `engine_enabled`: the same after `enable()` (no recorder installed,
//!   so the handles are the facade's no-ops): the lookup of the endpoint's
//!   handles and one counter, what a request pays once metrics are on (a
//!   real exporter adds its own cost per increment).
//!
//! `cargo bench --bench metrics --features metrics`. For instruction
//! counts: `METRICS_ONLY=<case> METRICS_CALLS=<n>` runs one case `n` times
//! and exits; run it under callgrind with two `n` and divide the
//! difference.

use std::hint::black_box;

use criterion::{Criterion, criterion_group};

const CASES: [&str; 7] = [
    "gate",
    "facade_dynamic_labels",
    "facade_static_key",
    "cached_handle",
    "attempt_span",
    "engine_off",
    "engine_enabled",
];

/// `RetryState::new` + `admit` + `decide` on a 200, `calls` times.
fn engine(calls: u64) {
    use http::{HeaderMap, Method, StatusCode};
    use http_resilience::{Outcome, RequestMeta, RetryPolicy, RetryState};
    let policy = RetryPolicy::default();
    let headers = HeaderMap::new();
    let response = HeaderMap::new();
    let method = Method::GET;
    for _ in 0..calls {
        let meta =
            RequestMeta::new(&method, "https", "api.example.com", "/v1", &headers).with_port(443);
        let now = std::time::Instant::now();
        let mut state = RetryState::new(black_box(&policy), &meta, now);
        black_box(state.admit(&meta, now));
        let outcome = Outcome::response(StatusCode::OK, &response);
        black_box(state.decide(&meta, &outcome, now));
    }
}

fn run(case: &str, calls: u64) {
    let host = black_box("api.example.com");
    let port: u16 = black_box(443);
    let handle = metrics::counter!("http_resilience.attempts", "outcome" => "success");
    // The case is chosen once, outside the loop: the loop holds only it.
    match case {
        "gate" => {
            for _ in 0..calls {
                black_box(http_resilience::metrics::is_enabled());
            }
        }
        "facade_dynamic_labels" => {
            for _ in 0..calls {
                metrics::counter!(
                    "http_resilience.attempts",
                    "server.address" => black_box(host).to_owned(),
                    "server.port" => black_box(port).to_string(),
                    "outcome" => "success"
                )
                .increment(1);
            }
        }
        "facade_static_key" => {
            for _ in 0..calls {
                metrics::counter!(
                    "http_resilience.attempts",
                    "server.address" => "api.example.com",
                    "server.port" => "443",
                    "outcome" => "success"
                )
                .increment(1);
            }
        }
        "cached_handle" => {
            for _ in 0..calls {
                black_box(&handle).increment(1);
            }
        }
        "attempt_span" => {
            for _ in 0..calls {
                let method = black_box("GET");
                let span = tracing::info_span!(
                    target: "http_resilience",
                    "http_resilience.attempt",
                    otel.name = method,
                    otel.kind = "client",
                    http.request.method = method,
                    server.address = host,
                    server.port = port,
                    url.path = tracing::field::Empty,
                    http.request.resend_count = tracing::field::Empty,
                    http.response.status_code = tracing::field::Empty,
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                );
                black_box(span.is_disabled());
            }
        }
        "engine_off" => engine(calls),
        "engine_enabled" => {
            http_resilience::metrics::enable();
            engine(calls);
        }
        other => panic!("unknown case {other}; one of {CASES:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_without_recorder");
    // `engine_enabled` switches recording on for the whole process: last.
    for case in CASES {
        group.bench_function(case, |b| b.iter(|| run(case, 1)));
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(case) = std::env::var("METRICS_ONLY") {
        let calls = std::env::var("METRICS_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        run(&case, calls);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
