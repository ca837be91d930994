//! `cargo run --example config --features serde`
//!
//! Loads the endpoint policies of `examples/policies.toml`, prints its routes
//! and which policy a few sample requests get, with each policy's load
//! protection (retry budget, circuit breaker, rate limit).

use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use http_resilience::{EndpointPolicies, RequestMeta, RetryBudget, RetryPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policies.toml");
    let policies = EndpointPolicies::from_path(path)?;

    println!(
        "{path}: {} routes, first match wins",
        policies.routes().len()
    );
    for (n, (route, policy)) in policies.routes().enumerate() {
        println!("  [{n}] {route:?}\n       -> {}", summary(policy));
    }
    println!("  default -> {}", summary(policies.default_policy()));

    println!("\nsample requests:");
    let samples = [
        (
            Method::GET,
            "https://api.github.com/repos/rust-lang/rust/issues",
        ),
        (
            Method::POST,
            "https://uploads.github.com/repos/o/r/releases/1/assets",
        ),
        (Method::POST, "https://api.openai.com/v1/responses"),
        (Method::POST, "https://api.anthropic.com/v1/messages"),
        (
            Method::GET,
            "https://github.com/rust-lang/rust.git/info/refs",
        ),
        (
            Method::GET,
            "https://git.internal.example/tools.git/info/refs",
        ),
        (Method::POST, "https://billing.internal.example/invoices"),
        (Method::GET, "https://example.org/"),
    ];
    let headers = HeaderMap::new();
    for (method, url) in samples {
        let uri: Uri = url.parse()?;
        let request = RequestMeta::new(
            &method,
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.path(),
            &headers,
        );
        println!(
            "  {method:<4} {url}\n       -> {}",
            summary(policies.select(&request))
        );
    }
    Ok(())
}

/// Two lines per policy: its rules and the settings that differ most, then
/// its load protection.
fn summary(p: &RetryPolicy) -> String {
    let opt = |d: Option<Duration>| d.map_or_else(|| "none".to_owned(), |d| format!("{d:?}"));
    format!(
        "rules {}, {} retries, backoff {:?}..{:?} ({} jitter), hints up to {:?}, deadline {}, attempt timeout {}{}\n          {}",
        p.preset().map_or("default", |p| p.as_str()),
        p.max_retries(),
        p.initial_backoff(),
        p.max_backoff(),
        p.jitter(),
        p.max_retry_after(),
        opt(p.deadline()),
        opt(p.attempt_timeout()),
        if p.auto_idempotency_key() {
            ", idempotency keys"
        } else {
            ""
        },
        protection(p),
    )
}

/// The budget, breaker, rate limit and server quota holds, per scope.
fn protection(p: &RetryPolicy) -> String {
    let budget = match p.retry_budget() {
        None => "no retry budget".to_owned(),
        Some(b) if *b == RetryBudget::default() => "default retry budget (500 tokens)".to_owned(),
        Some(b) => format!(
            "budget {} tokens ({} a retry, {} after a timeout, {} back a success)",
            b.capacity(),
            b.retry_cost(),
            b.timeout_cost(),
            b.success_refund()
        ),
    };
    let breaker = p.circuit_breaker().map_or_else(
        || "no breaker".to_owned(),
        |c| {
            let consecutive = c
                .consecutive_failures()
                .map_or_else(String::new, |n| format!(" or {n} in a row"));
            format!(
                "breaker at {}% of >= {} in {:?}{consecutive}, open {:?}",
                c.failure_ratio() * 100.0,
                c.minimum_throughput(),
                c.sampling_window(),
                c.break_duration()
            )
        },
    );
    let limit = p.rate_limit().map_or_else(
        || "no rate limit".to_owned(),
        |r| {
            format!(
                "{} per {:?} (burst {}, wait <= {:?})",
                r.requests(),
                r.period(),
                r.burst(),
                r.max_wait()
            )
        },
    );
    format!(
        "per {}: {budget}; {breaker}; {limit}; server quota holds {}",
        p.scope().as_str(),
        if p.server_limits() { "on" } else { "off" },
    )
}
