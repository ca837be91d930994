//! `RetryPolicy::to_reqwest_retry`: the policy's classification in
//! reqwest's own retry hook, on a plain `reqwest::Client` against the
//! scripted server. What it carries (statuses, methods, transport errors,
//! presets, `max_retries`) and what it cannot do (wait, read headers),
//! both pinned here. Real time: the hook does not wait, which is what the
//! timing rows show.

mod support;

use std::time::{Duration, Instant};

use http::Method;
use http_resilience::{Preset, RetryPolicy};
use support::{Server, Step};

struct Row {
    name: &'static str,
    policy: RetryPolicy,
    method: Method,
    headers: &'static [(&'static str, &'static str)],
    steps: Vec<Step>,
    /// The status the caller gets (reqwest hands over the last response).
    status: Option<u16>,
    /// Requests the server saw.
    attempts: usize,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "GET 503, 503, 200: retried, recovered",
            policy: RetryPolicy::default(),
            method: Method::GET,
            headers: &[],
            steps: vec![Step::status(503), Step::status(503), Step::status(200)],
            status: Some(200),
            attempts: 3,
        },
        Row {
            name: "GET always 503: max_retries 2 is reqwest's limit, last 503 handed over",
            policy: RetryPolicy::builder().max_retries(2).build().unwrap(),
            method: Method::GET,
            headers: &[],
            steps: vec![Step::status(503)],
            status: Some(503),
            attempts: 3,
        },
        Row {
            name: "POST 503: not resent (not idempotent)",
            policy: RetryPolicy::default(),
            method: Method::POST,
            headers: &[],
            steps: vec![Step::status(503), Step::status(200)],
            status: Some(503),
            attempts: 1,
        },
        Row {
            name: "POST 429: resent (a rate limit proves it was not processed), at once",
            policy: RetryPolicy::default(),
            method: Method::POST,
            headers: &[],
            steps: vec![Step::with(429, &[("retry-after", "5")]), Step::status(200)],
            status: Some(200),
            attempts: 2,
        },
        Row {
            name: "Anthropic preset: POST 529 resent (the preset opts in)",
            policy: RetryPolicy::anthropic(),
            method: Method::POST,
            headers: &[],
            steps: vec![Step::status(529), Step::status(200)],
            status: Some(200),
            attempts: 2,
        },
        Row {
            name: "GET 404: permanent",
            policy: RetryPolicy::default(),
            method: Method::GET,
            headers: &[],
            steps: vec![Step::status(404)],
            status: Some(404),
            attempts: 1,
        },
        Row {
            name: "GET reset, then 200: a transport error retried",
            policy: RetryPolicy::default(),
            method: Method::GET,
            headers: &[],
            steps: vec![Step::Reset, Step::status(200)],
            status: Some(200),
            attempts: 2,
        },
        Row {
            name: "x-should-retry: false on a 503 is not seen: still retried",
            policy: RetryPolicy::builder().max_retries(1).build().unwrap(),
            method: Method::GET,
            headers: &[],
            steps: vec![Step::with(503, &[("x-should-retry", "false")])],
            status: Some(503),
            attempts: 2,
        },
        Row {
            name: "a keyed POST 503: the key is not seen, so not resent",
            policy: RetryPolicy::default(),
            method: Method::POST,
            headers: &[("idempotency-key", "k-1")],
            steps: vec![Step::status(503), Step::status(200)],
            status: Some(503),
            attempts: 1,
        },
        Row {
            name: "git preset: a push is never resent, even on 503",
            policy: Preset::Git.policy(),
            method: Method::POST,
            headers: &[],
            steps: vec![Step::status(503), Step::status(200)],
            status: Some(503),
            attempts: 1,
        },
        Row {
            name: "retries off: one attempt",
            policy: RetryPolicy::disabled(),
            method: Method::GET,
            headers: &[],
            steps: vec![Step::status(503), Step::status(200)],
            status: Some(503),
            attempts: 1,
        },
    ]
}

/// Sends `row`'s request with reqwest 0.13 (`v12`: 0.12) under the hook:
/// the status handed over.
async fn send(row: &Row, url: &str, v12: bool) -> Option<u16> {
    if v12 {
        #[cfg(feature = "reqwest-0_12")]
        {
            let client = reqwest_0_12::Client::builder()
                .no_proxy()
                .retry(row.policy.to_reqwest_retry_0_12("127.0.0.1"))
                .build()
                .unwrap();
            let mut request = client.request(row.method.clone(), url).body("b");
            for (k, v) in row.headers {
                request = request.header(*k, *v);
            }
            return request.send().await.ok().map(|r| r.status().as_u16());
        }
        #[cfg(not(feature = "reqwest-0_12"))]
        unreachable!("reqwest 0.12 rows run only with the feature");
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .retry(row.policy.to_reqwest_retry("127.0.0.1"))
        .build()
        .unwrap();
    let mut request = client.request(row.method.clone(), url).body("b");
    for (k, v) in row.headers {
        request = request.header(*k, *v);
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn the_hook_carries_the_classification_and_never_waits() {
    println!("reqwest hook table (requests seen by the server, time taken):");
    let versions: &[bool] = if cfg!(feature = "reqwest-0_12") {
        &[false, true]
    } else {
        &[false]
    };
    for row in rows() {
        for &v12 in versions {
            let version = if v12 { "0.12" } else { "0.13" };
            let server = Server::start().await;
            let path = if row.name.starts_with("git preset") {
                "/r.git/git-receive-pack"
            } else {
                "/r"
            };
            server.script(path, row.steps.clone());
            let start = Instant::now();
            let status = send(&row, &server.url(path), v12).await;
            let took = start.elapsed();
            assert_eq!(status, row.status, "{} (reqwest {version})", row.name);
            assert_eq!(
                server.count(path),
                row.attempts,
                "{} (reqwest {version})",
                row.name
            );
            // No backoff and no Retry-After: everything at once.
            assert!(took < Duration::from_secs(2), "{}: {took:?}", row.name);
            println!(
                "  reqwest {version}: {}: {} requests, {} ms",
                row.name,
                server.count(path),
                took.as_millis()
            );
        }
    }
}

#[tokio::test]
async fn other_hosts_are_not_retried() {
    let server = Server::start().await;
    server.script("/r", vec![Step::status(503), Step::status(200)]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .retry(RetryPolicy::default().to_reqwest_retry("api.example.com"))
        .build()
        .unwrap();
    let response = client.get(server.url("/r")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(server.count("/r"), 1);
}
