//! `cargo run --example config --features serde`
//!
//! Loads the endpoint policies of `examples/policies.toml`, prints its routes
//! and which policy a few sample requests get.

use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use http_resilience::{EndpointPolicies, RequestMeta, RetryPolicy};

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

/// One line per policy: its rules and the settings that differ most.
fn summary(p: &RetryPolicy) -> String {
    let opt = |d: Option<Duration>| d.map_or_else(|| "none".to_owned(), |d| format!("{d:?}"));
    format!(
        "rules {}, {} retries, backoff {:?}..{:?} ({} jitter), hints up to {:?}, deadline {}, attempt timeout {}{}",
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
    )
}
