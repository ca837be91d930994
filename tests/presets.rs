//! Provider presets and per-endpoint routing, run through both adapters
//! (reqwest middleware, tower layer over hyper-util) against a scripted
//! server on loopback, under tokio's paused clock: every wait is asserted
//! to the millisecond.

mod support;

use http::Method;
use http_resilience::{
    DelaySource, EndpointPolicies, Jitter, Preset, RetryPolicy, RetryPolicyBuilder, Route,
};
use support::clients::{BOTH, Req, base, get, keyed_post, post, send};
use support::table::{Expect, Expected, problems};
use support::{Server, Step, fixed_now};

struct Row {
    name: &'static str,
    preset: Preset,
    req: fn() -> Req,
    /// Appended to the row's path (git's paths decide its rules).
    path: &'static str,
    script: Vec<Step>,
    expect: Expect,
    attempts: u32,
    waits: Vec<(u64, DelaySource)>,
}

/// The preset with its rules and settings, but no jitter (exact waits) and
/// the server's fixed wall clock (dates and epoch resets).
fn preset(p: Preset) -> RetryPolicyBuilder {
    p.builder().jitter(Jitter::None).wall_clock(fixed_now)
}

fn epoch(offset: i64) -> String {
    let now = fixed_now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now + offset).to_string()
}

const SECONDARY: &str = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}"#;
const NOT_ACCESSIBLE: &str = r#"{"message":"Resource not accessible by integration","documentation_url":"https://docs.github.com/rest"}"#;

fn rows() -> Vec<Row> {
    use DelaySource::*;
    use Expect::*;
    use Preset::*;
    let in_30 = epoch(30);
    let past = epoch(-10);
    let in_hour = epoch(3600);
    let primary = |reset: &str| {
        Step::respond(
            403,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)],
            "API rate limit exceeded",
        )
    };
    let row = |name, preset, script, expect, attempts, waits| Row {
        name,
        preset,
        req: get,
        path: "",
        script,
        expect,
        attempts,
        waits,
    };
    vec![
        // GitHub REST.
        row(
            "github: primary limit, reset 30 s ahead: waits 31 s",
            GitHub,
            vec![primary(&in_30), Step::status(200)],
            Status(200),
            2,
            vec![(31_000, RateLimitReset)],
        ),
        row(
            "github: primary limit on a 429 too",
            GitHub,
            vec![
                Step::respond(
                    429,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", &in_30),
                    ],
                    "",
                ),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(31_000, RateLimitReset)],
        ),
        row(
            "github: reset in the past: only the backoff",
            GitHub,
            vec![primary(&past), Step::status(200)],
            Status(200),
            2,
            vec![(1_000, Backoff)],
        ),
        row(
            "github: reset an hour ahead: RETRY_AFTER_TOO_LONG, no sleep",
            GitHub,
            vec![primary(&in_hour)],
            Code("RETRY_AFTER_TOO_LONG"),
            1,
            vec![],
        ),
        row(
            "github: secondary limit with retry-after: 5 s",
            GitHub,
            vec![
                Step::respond(403, &[("retry-after", "5")], SECONDARY),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(5_000, RetryAfter)],
        ),
        row(
            "github: secondary limit without retry-after: 60 s, doubling",
            GitHub,
            vec![
                Step::respond(403, &[], SECONDARY),
                Step::respond(403, &[], SECONDARY),
                Step::status(200),
            ],
            Status(200),
            3,
            vec![(60_000, ProviderRule), (120_000, ProviderRule)],
        ),
        row(
            "github: 429 without hints: at least 60 s",
            GitHub,
            vec![Step::status(429), Step::status(200)],
            Status(200),
            2,
            vec![(60_000, ProviderRule)],
        ),
        row(
            "github: 'Resource not accessible by integration' 403 is permanent",
            GitHub,
            vec![Step::respond(403, &[], NOT_ACCESSIBLE)],
            Status(403),
            1,
            vec![],
        ),
        row(
            "github: 404 is permanent",
            GitHub,
            vec![Step::status(404)],
            Status(404),
            1,
            vec![],
        ),
        row(
            "github: 422 is permanent",
            GitHub,
            vec![Step::status(422)],
            Status(422),
            1,
            vec![],
        ),
        row(
            "github: 502 is retried with backoff",
            GitHub,
            vec![Step::status(502), Step::status(200)],
            Status(200),
            2,
            vec![(1_000, Backoff)],
        ),
        Row {
            req: post,
            ..row(
                "github: POST 502 without a key is not retried",
                GitHub,
                vec![Step::status(502)],
                Status(502),
                1,
                vec![],
            )
        },
        // A rate-limit rejection proves the server did not act on the
        // request: a POST without a key is retried after it.
        Row {
            req: post,
            ..row(
                "github: POST after a primary-limit 403 is retried at the reset",
                GitHub,
                vec![primary(&in_30), Step::status(201)],
                Status(201),
                2,
                vec![(31_000, RateLimitReset)],
            )
        },
        Row {
            req: post,
            ..row(
                "github: POST after a secondary-limit 403 (message only) is retried",
                GitHub,
                vec![Step::respond(403, &[], SECONDARY), Step::status(201)],
                Status(201),
                2,
                vec![(60_000, ProviderRule)],
            )
        },
        Row {
            req: post,
            ..row(
                "github: POST after a secondary-limit 403 with retry-after is retried",
                GitHub,
                vec![
                    Step::respond(403, &[("retry-after", "5")], SECONDARY),
                    Step::status(201),
                ],
                Status(201),
                2,
                vec![(5_000, RetryAfter)],
            )
        },
        Row {
            req: post,
            ..row(
                "github: POST after 'Resource not accessible' 403 is not retried",
                GitHub,
                vec![Step::respond(403, &[], NOT_ACCESSIBLE)],
                Status(403),
                1,
                vec![],
            )
        },
        // OpenAI.
        row(
            "openai: retry-after 121 is not waited for",
            OpenAi,
            vec![Step::with(429, &[("retry-after", "121")])],
            Code("RETRY_AFTER_TOO_LONG"),
            1,
            vec![],
        ),
        row(
            "openai: retry-after 120 is waited for",
            OpenAi,
            vec![
                Step::with(429, &[("retry-after", "120")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(120_000, RetryAfter)],
        ),
        row(
            "openai: retry-after-ms 1500 beats retry-after 2",
            OpenAi,
            vec![
                Step::with(429, &[("retry-after-ms", "1500"), ("retry-after", "2")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(1_500, RetryAfterMs)],
        ),
        Row {
            req: post,
            ..row(
                "openai: POST 500 is retried, backoff 0.5 s doubling",
                OpenAi,
                vec![Step::status(500), Step::status(500), Step::status(200)],
                Status(200),
                3,
                vec![(500, Backoff), (1_000, Backoff)],
            )
        },
        row(
            "openai: 409 is retried",
            OpenAi,
            vec![Step::status(409), Step::status(200)],
            Status(200),
            2,
            vec![(500, Backoff)],
        ),
        row(
            "openai: x-should-retry: true wins over 400",
            OpenAi,
            vec![
                Step::with(400, &[("x-should-retry", "true")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(500, Backoff)],
        ),
        row(
            "openai: x-should-retry: false wins over 503",
            OpenAi,
            vec![Step::with(503, &[("x-should-retry", "false")])],
            Status(503),
            1,
            vec![],
        ),
        row(
            "openai: 2 retries, then MAX_RETRIES_EXCEEDED",
            OpenAi,
            vec![Step::status(500)],
            Code("MAX_RETRIES_EXCEEDED"),
            3,
            vec![(500, Backoff), (1_000, Backoff)],
        ),
        // Anthropic.
        Row {
            req: post,
            ..row(
                "anthropic: 529 overloaded is retried",
                Anthropic,
                vec![Step::status(529), Step::status(200)],
                Status(200),
                2,
                vec![(500, Backoff)],
            )
        },
        row(
            "anthropic: retry-after 61 falls back to the backoff",
            Anthropic,
            vec![Step::with(429, &[("retry-after", "61")]), Step::status(200)],
            Status(200),
            2,
            vec![(500, Backoff)],
        ),
        row(
            "anthropic: retry-after 60 is waited for",
            Anthropic,
            vec![Step::with(429, &[("retry-after", "60")]), Step::status(200)],
            Status(200),
            2,
            vec![(60_000, RetryAfter)],
        ),
        row(
            "anthropic: retry-after-ms 1500 beats retry-after 2",
            Anthropic,
            vec![
                Step::with(429, &[("retry-after-ms", "1500"), ("retry-after", "2")]),
                Step::status(200),
            ],
            Status(200),
            2,
            vec![(1_500, RetryAfterMs)],
        ),
        // git smart HTTP.
        Row {
            req: post,
            path: "/repo.git/git-receive-pack",
            ..row(
                "git: push (receive-pack) 503 is never retried",
                Git,
                vec![Step::status(503)],
                Status(503),
                1,
                vec![],
            )
        },
        Row {
            req: keyed_post,
            path: "/repo.git/git-receive-pack",
            ..row(
                "git: push is not retried even with an Idempotency-Key",
                Git,
                vec![Step::status(503)],
                Status(503),
                1,
                vec![],
            )
        },
        Row {
            req: post,
            path: "/repo.git/git-upload-pack",
            ..row(
                "git: fetch (upload-pack) 503 is retried",
                Git,
                vec![Step::status(503), Step::status(200)],
                Status(200),
                2,
                vec![(1_000, Backoff)],
            )
        },
        Row {
            path: "/repo.git/info/refs",
            ..row(
                "git: info/refs 429 honours Retry-After",
                Git,
                vec![Step::with(429, &[("retry-after", "10")]), Step::status(200)],
                Status(200),
                2,
                vec![(10_000, RetryAfter)],
            )
        },
        Row {
            path: "/repo.git/info/refs",
            ..row(
                "git: a wait beyond 300 s fails at once",
                Git,
                vec![Step::with(429, &[("retry-after", "301")])],
                Code("RETRY_AFTER_TOO_LONG"),
                1,
                vec![],
            )
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn preset_table_through_both_adapters() {
    let server = Server::start().await;
    let rows = rows();
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for via in BOTH {
            let path = format!("/row{i}/{via:?}{}", row.path);
            server.script(&path, row.script.clone());
            let policy = preset(row.preset).build().unwrap();
            let req = (row.req)();
            let got = send(via, policy, &server.url(&path), &req).await;
            let seen = server.seen(&path);
            let problems = problems(
                &got,
                &seen,
                &req,
                &Expected {
                    expect: row.expect,
                    attempts: row.attempts,
                    waits: &row.waits,
                    script: &row.script,
                    attempt_timeout: None,
                },
            );
            if !problems.is_empty() {
                failures.push(format!(
                    "row {i} {:?} via {via:?}: {}",
                    row.name,
                    problems.join("; ")
                ));
            }
        }
    }
    println!(
        "preset table: {} rows x 2 adapters, {} failed",
        rows.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// GitHub's ambiguous 403s are told apart by reading at most 64 KiB of the
/// body; the caller still reads the whole body, however long.
#[tokio::test(start_paused = true)]
async fn inspected_bodies_stay_whole_and_the_inspection_is_bounded() {
    let server = Server::start().await;
    let long_denial = format!("{NOT_ACCESSIBLE}{}", "x".repeat(200 * 1024));
    // The secondary-limit words beyond the first 64 KiB are not seen: the
    // 403 is taken as a permission error (bounded inspection).
    let late_words = format!("{}secondary rate limit", " ".repeat(70 * 1024));
    for via in BOTH {
        let path = format!("/long/{via:?}");
        server.script(&path, vec![Step::respond(403, &[], &long_denial)]);
        let got = send(
            via,
            preset(Preset::GitHub).build().unwrap(),
            &server.url(&path),
            &get(),
        )
        .await;
        assert_eq!(got.status, Some(403), "{via:?}");
        assert_eq!(
            got.body.as_deref().map(str::len),
            Some(long_denial.len()),
            "{via:?}"
        );
        assert_eq!(got.body.as_deref(), Some(long_denial.as_str()), "{via:?}");

        let path = format!("/late/{via:?}");
        server.script(
            &path,
            vec![Step::respond(403, &[], &late_words), Step::status(200)],
        );
        let got = send(
            via,
            preset(Preset::GitHub).build().unwrap(),
            &server.url(&path),
            &get(),
        )
        .await;
        assert_eq!(got.status, Some(403), "{via:?}");
        assert_eq!(server.seen(&path).len(), 1, "{via:?}");
        assert_eq!(got.body.as_deref(), Some(late_words.as_str()), "{via:?}");

        // The secondary limit found in the body, then exhaustion: the
        // last 403's body is still whole inside the error.
        let path = format!("/exhausted/{via:?}");
        server.script(&path, vec![Step::respond(403, &[], SECONDARY)]);
        let policy = preset(Preset::GitHub).max_retries(1).build().unwrap();
        let got = send(via, policy, &server.url(&path), &get()).await;
        assert_eq!(got.code, Some("MAX_RETRIES_EXCEEDED"), "{via:?}");
        assert_eq!(got.body.as_deref(), Some(SECONDARY), "{via:?}");
    }
}

/// The LLM presets multiply each backoff by a random factor in [0.75, 1].
#[tokio::test(start_paused = true)]
async fn llm_backoff_is_scaled_by_three_quarters_to_one() {
    let server = Server::start().await;
    for via in BOTH {
        for seed in 0..8 {
            let path = format!("/jitter/{via:?}/{seed}");
            server.script(
                &path,
                vec![Step::status(500), Step::status(500), Step::status(200)],
            );
            let policy = Preset::OpenAi.builder().seed(seed).build().unwrap();
            let got = send(via, policy, &server.url(&path), &get()).await;
            let waits = got.waits();
            assert_eq!(waits.len(), 2, "{via:?}");
            for ((wait, _), base) in waits.iter().zip([500u64, 1_000]) {
                let ms = wait.as_secs_f64() * 1e3;
                assert!(
                    ms >= base as f64 * 0.75 && ms <= base as f64,
                    "{via:?} seed {seed}: {ms} ms for base {base}"
                );
            }
        }
    }
}

fn retries(n: u32) -> RetryPolicy {
    base().max_retries(n).build().unwrap()
}

/// Routing through both adapters: overlapping rules (first match wins),
/// method and glob rules, a per-request override, the default fallback.
#[tokio::test(start_paused = true)]
async fn endpoint_routing_through_both_adapters() {
    let server = Server::start().await;
    let policies = EndpointPolicies::builder()
        .route(Route::host("*.invalid"), retries(5))
        .route(Route::host("127.0.0.1").path_prefix("/one/"), retries(1))
        .route(Route::any().path_prefix("/one/"), retries(4))
        .route(Route::any().path_glob("/*/off/**"), RetryPolicy::disabled())
        .route(
            Route::any().methods([Method::POST]),
            base()
                .max_retries(2)
                .retry_non_idempotent(true)
                .build()
                .unwrap(),
        )
        .default_policy(retries(3))
        .build()
        .unwrap();
    let override_post = Req {
        policy: Some(RetryPolicy::disabled()),
        ..post()
    };
    // (request, path, expected attempts, expected outcome)
    let cases: Vec<(Req, &str, u32, Expect)> = vec![
        (get(), "/one/a", 2, Expect::Code("MAX_RETRIES_EXCEEDED")),
        (get(), "/x/off/y/z", 1, Expect::Status(503)),
        (post(), "/two/a", 3, Expect::Code("MAX_RETRIES_EXCEEDED")),
        (override_post, "/two/b", 1, Expect::Status(503)),
        (get(), "/default", 4, Expect::Code("MAX_RETRIES_EXCEEDED")),
        (
            Req {
                policy: Some(retries(0)),
                ..get()
            },
            "/one/b",
            1,
            Expect::Code("MAX_RETRIES_EXCEEDED"),
        ),
    ];
    for via in BOTH {
        for (req, path, attempts, expect) in &cases {
            let full = format!("{path}/{via:?}");
            server.script(&full, vec![Step::status(503)]);
            let got = send(via, policies.clone(), &server.url(&full), req).await;
            let outcome = match got.code {
                Some(code) => Expect::Code(code),
                None => Expect::Status(got.status.unwrap()),
            };
            assert_eq!(server.seen(&full).len() as u32, *attempts, "{via:?} {path}");
            assert_eq!(outcome, *expect, "{via:?} {path}");
        }
    }
}

#[test]
fn well_known_routes_pick_the_presets() {
    let set = EndpointPolicies::well_known();
    let headers = http::HeaderMap::new();
    let cases = [
        (
            Method::GET,
            "api.github.com",
            "/repos/o/r",
            Some(Preset::GitHub),
        ),
        (
            Method::GET,
            "github.com",
            "/o/r.git/info/refs",
            Some(Preset::Git),
        ),
        (
            Method::POST,
            "github.com",
            "/o/r.git/git-upload-pack",
            Some(Preset::Git),
        ),
        (
            Method::POST,
            "github.com",
            "/o/r.git/git-receive-pack",
            Some(Preset::Git),
        ),
        (Method::GET, "github.com", "/o/r/issues", None),
        (
            Method::POST,
            "api.openai.com",
            "/v1/chat/completions",
            Some(Preset::OpenAi),
        ),
        (
            Method::POST,
            "api.anthropic.com",
            "/v1/messages",
            Some(Preset::Anthropic),
        ),
        (Method::GET, "example.com", "/", None),
    ];
    for (method, host, path, want) in cases {
        let req = http_resilience::RequestMeta::new(&method, "https", host, path, &headers);
        assert_eq!(set.select(&req).preset(), want, "{method} {host}{path}");
    }
}
