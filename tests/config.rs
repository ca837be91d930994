//! Policies and endpoint sets from configuration files (the `serde`
//! feature): valid TOML and JSON give exactly what the builder gives, and
//! each class of bad input gives its own error, naming the key path.
//!
//! `RetryPolicy` has no `PartialEq` (its classifier cannot be compared), so
//! policies are compared through `Debug`, which prints every setting and the
//! preset whose rules it uses.

use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use http_resilience::{
    CircuitBreaker, ConfigError, EndpointPolicies, Jitter, LongHint, Preset, RateLimit,
    RequestMeta, RetryBudget, RetryPolicy, Route, Scope,
};

fn dbg<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const EVERY_SETTING_TOML: &str = r#"
max_retries = 6
initial_backoff = "250ms"
max_backoff = "1m 30s"
multiplier = 1.5
jitter = "scaled:0.6"
seed = 18446744073709551615
max_retry_after = "10m"
on_long_hint = "use_backoff"
deadline = "2h"
attempt_timeout = "45s"
retry_non_idempotent = true
auto_idempotency_key = true
return_last_response = true
hide_paths = true
replay_buffer = 262144
resume_bodies = true
max_resumes = 7
body_idle_timeout = "20s"
"#;

const EVERY_SETTING_JSON: &str = r#"{
    "max_retries": 6,
    "initial_backoff": "250ms",
    "max_backoff": "1m 30s",
    "multiplier": 1.5,
    "jitter": "scaled:0.6",
    "seed": 18446744073709551615,
    "max_retry_after": "10m",
    "on_long_hint": "use_backoff",
    "deadline": "2h",
    "attempt_timeout": "45s",
    "retry_non_idempotent": true,
    "auto_idempotency_key": true,
    "return_last_response": true,
    "hide_paths": true,
    "replay_buffer": 262144,
    "resume_bodies": true,
    "max_resumes": 7,
    "body_idle_timeout": "20s"
}"#;

fn every_setting_built() -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(6)
        .initial_backoff(ms(250))
        .max_backoff(secs(90))
        .multiplier(1.5)
        .jitter(Jitter::Scaled { min_factor: 0.6 })
        .seed(u64::MAX)
        .max_retry_after(secs(600))
        .on_long_hint(LongHint::UseBackoff)
        .deadline(secs(7200))
        .attempt_timeout(secs(45))
        .retry_non_idempotent(true)
        .auto_idempotency_key(true)
        .return_last_response(true)
        .hide_paths(true)
        .replay_buffer(256 * 1024)
        .resume_bodies(true)
        .max_resumes(7)
        .body_idle_timeout(secs(20))
        .build()
        .unwrap()
}

#[test]
fn every_setting_loads_from_toml_and_json_as_the_builder_sets_it() {
    let built = every_setting_built();
    let from_toml = RetryPolicy::from_toml_str(EVERY_SETTING_TOML).unwrap();
    let from_json = RetryPolicy::from_json_str(EVERY_SETTING_JSON).unwrap();
    assert_eq!(dbg(&from_toml), dbg(&built));
    assert_eq!(dbg(&from_json), dbg(&built));
    // and not by accident of Debug: the values themselves
    assert_eq!(from_toml.max_retries(), 6);
    assert_eq!(from_toml.initial_backoff(), ms(250));
    assert_eq!(from_toml.max_backoff(), secs(90));
    assert_eq!(from_toml.multiplier(), 1.5);
    assert_eq!(from_toml.jitter(), Jitter::Scaled { min_factor: 0.6 });
    assert_eq!(from_toml.seed(), Some(u64::MAX));
    assert_eq!(from_toml.max_retry_after(), secs(600));
    assert_eq!(from_toml.on_long_hint(), LongHint::UseBackoff);
    assert_eq!(from_toml.deadline(), Some(secs(7200)));
    assert_eq!(from_toml.attempt_timeout(), Some(secs(45)));
    assert!(from_toml.retry_non_idempotent());
    assert!(from_toml.auto_idempotency_key());
    assert!(from_toml.return_last_response());
    assert!(from_toml.hide_paths());
    assert_eq!(from_toml.replay_buffer(), 256 * 1024);
    assert!(from_json.resume_bodies());
    assert_eq!(from_toml.max_resumes(), 7);
    assert_eq!(from_json.body_idle_timeout(), Some(secs(20)));
    assert_eq!(from_toml.preset(), None);
    // the same seed gives the same jitter as the builder's policy
    let a: Vec<Duration> = from_json.backoff().take(5).collect();
    let b: Vec<Duration> = built.backoff().take(5).collect();
    assert_eq!(a, b);
}

#[test]
fn an_empty_file_is_the_default_policy() {
    let default = dbg(&RetryPolicy::default());
    assert_eq!(dbg(&RetryPolicy::from_toml_str("").unwrap()), default);
    assert_eq!(
        dbg(&RetryPolicy::from_toml_str("# nothing\n").unwrap()),
        default
    );
    assert_eq!(dbg(&RetryPolicy::from_json_str("{}").unwrap()), default);
    // JSON null leaves a setting at its default
    let p = RetryPolicy::from_json_str(r#"{"deadline": null, "seed": null}"#).unwrap();
    assert_eq!(dbg(&p), default);
}

#[test]
fn every_jitter_and_long_hint_name_loads() {
    let jitters = [
        ("none", Jitter::None),
        ("full", Jitter::Full),
        ("equal", Jitter::Equal),
        ("decorrelated", Jitter::Decorrelated),
        ("scaled:0", Jitter::Scaled { min_factor: 0.0 }),
        ("scaled:0.75", Jitter::Scaled { min_factor: 0.75 }),
        ("scaled:1", Jitter::Scaled { min_factor: 1.0 }),
    ];
    for (name, jitter) in jitters {
        let p = RetryPolicy::from_toml_str(&format!("jitter = {name:?}")).unwrap();
        assert_eq!(p.jitter(), jitter, "{name}");
        let p = RetryPolicy::from_json_str(&format!(r#"{{"jitter": {name:?}}}"#)).unwrap();
        assert_eq!(p.jitter(), jitter, "{name}");
    }
    for (name, hint) in [
        ("give_up", LongHint::GiveUp),
        ("use_backoff", LongHint::UseBackoff),
    ] {
        let p = RetryPolicy::from_toml_str(&format!("on_long_hint = {name:?}")).unwrap();
        assert_eq!(p.on_long_hint(), hint, "{name}");
    }
    // an integer multiplier is a number too
    assert_eq!(
        RetryPolicy::from_toml_str("multiplier = 3")
            .unwrap()
            .multiplier(),
        3.0
    );
}

#[test]
fn a_preset_is_a_base_that_the_other_keys_override() {
    for preset in Preset::ALL {
        let name = preset.as_str();
        // alone: exactly the preset
        let alone = RetryPolicy::from_toml_str(&format!("preset = {name:?}")).unwrap();
        assert_eq!(dbg(&alone), dbg(&preset.policy()), "{name}");
        assert_eq!(alone.preset(), Some(preset));

        // with overrides, whichever comes first in the file
        let want = preset
            .builder()
            .max_retries(7)
            .initial_backoff(ms(100))
            .deadline(secs(60))
            .build()
            .unwrap();
        let after = format!(
            "preset = {name:?}\nmax_retries = 7\ninitial_backoff = \"100ms\"\ndeadline = \"1m\""
        );
        let before = format!(
            "max_retries = 7\ninitial_backoff = \"100ms\"\ndeadline = \"1m\"\npreset = {name:?}"
        );
        let json = format!(
            r#"{{"max_retries": 7, "preset": {name:?}, "initial_backoff": "100ms", "deadline": "60s"}}"#
        );
        for loaded in [
            RetryPolicy::from_toml_str(&after).unwrap(),
            RetryPolicy::from_toml_str(&before).unwrap(),
            RetryPolicy::from_json_str(&json).unwrap(),
        ] {
            assert_eq!(dbg(&loaded), dbg(&want), "{name}");
            assert_eq!(
                loaded.preset(),
                Some(preset),
                "{name}: keeps the preset's rules"
            );
        }
    }
    // the preset's own settings stay where not overridden
    let p = RetryPolicy::from_toml_str("preset = \"anthropic\"\nmax_retries = 9").unwrap();
    assert_eq!(p.on_long_hint(), LongHint::UseBackoff);
    assert_eq!(p.max_retry_after(), secs(60));
    assert_eq!(p.jitter(), Jitter::Scaled { min_factor: 0.75 });
}

const PROTECTION_TOML: &str = r#"
server_limits = false
max_quota_reset = "6h"
quota_release_spread = "250ms"
scope = "policy"

[retry_budget]
capacity = 200
retry_cost = 4
timeout_cost = 12
success_refund = 2

[circuit_breaker]
failure_ratio = 0.25
minimum_throughput = 20
sampling_window = "1m"
break_duration = "15s"
half_open_probes = 3
max_half_open_wait = "45s"
consecutive_failures = 7

[rate_limit]
requests = 5000
per = "1h"
burst = 100
max_wait = "45s"
"#;

const PROTECTION_JSON: &str = r#"{
    "server_limits": false,
    "max_quota_reset": "360m",
    "quota_release_spread": "250ms",
    "scope": "policy",
    "retry_budget": {"capacity": 200, "retry_cost": 4, "timeout_cost": 12, "success_refund": 2},
    "circuit_breaker": {
        "failure_ratio": 0.25,
        "minimum_throughput": 20,
        "sampling_window": "60s",
        "break_duration": "15s",
        "half_open_probes": 3,
        "max_half_open_wait": "45s",
        "consecutive_failures": 7
    },
    "rate_limit": {"requests": 5000, "per": "60m", "burst": 100, "max_wait": "45s"}
}"#;

fn protection_built() -> RetryPolicy {
    protection_builder().build().unwrap()
}

fn protection_builder() -> http_resilience::RetryPolicyBuilder {
    RetryPolicy::builder()
        .server_limits(false)
        .max_quota_reset(secs(6 * 3600))
        .quota_release_spread(Duration::from_millis(250))
        .scope(Scope::Policy)
        .retry_budget(
            RetryBudget::builder()
                .capacity(200)
                .retry_cost(4)
                .timeout_cost(12)
                .success_refund(2)
                .build()
                .unwrap(),
        )
        .circuit_breaker(
            CircuitBreaker::builder()
                .failure_ratio(0.25)
                .minimum_throughput(20)
                .sampling_window(secs(60))
                .break_duration(secs(15))
                .half_open_probes(3)
                .max_half_open_wait(secs(45))
                .consecutive_failures(7)
                .build()
                .unwrap(),
        )
        .rate_limit(
            RateLimit::per_hour(5000)
                .burst(100)
                .max_wait(secs(45))
                .build()
                .unwrap(),
        )
}

#[test]
fn every_protection_setting_loads_from_toml_and_json_as_the_builder_sets_it() {
    let built = protection_built();
    let from_toml = RetryPolicy::from_toml_str(PROTECTION_TOML).unwrap();
    let from_json = RetryPolicy::from_json_str(PROTECTION_JSON).unwrap();
    assert_eq!(dbg(&from_toml), dbg(&built));
    assert_eq!(dbg(&from_json), dbg(&built));
    // Debug does print them (a policy without them differs)
    assert_ne!(dbg(&from_toml), dbg(&RetryPolicy::default()));
    // and the values themselves
    assert!(!from_toml.server_limits());
    assert_eq!(from_toml.max_quota_reset(), secs(6 * 3600));
    assert_eq!(from_json.quota_release_spread(), Duration::from_millis(250));
    assert_eq!(from_toml.scope(), Scope::Policy);
    let budget = from_toml.retry_budget().unwrap();
    assert_eq!(
        (
            budget.capacity(),
            budget.retry_cost(),
            budget.timeout_cost(),
            budget.success_refund()
        ),
        (200, 4, 12, 2)
    );
    let breaker = from_json.circuit_breaker().unwrap();
    assert_eq!(breaker.failure_ratio(), 0.25);
    assert_eq!(breaker.minimum_throughput(), 20);
    assert_eq!(breaker.sampling_window(), secs(60));
    assert_eq!(breaker.break_duration(), secs(15));
    assert_eq!(breaker.half_open_probes(), 3);
    assert_eq!(breaker.max_half_open_wait(), secs(45));
    assert_eq!(breaker.consecutive_failures(), Some(7));
    let limit = from_json.rate_limit().unwrap();
    assert_eq!(limit.requests(), 5000);
    assert_eq!(limit.period(), secs(3600));
    assert_eq!(limit.burst(), 100);
    assert_eq!(limit.max_wait(), secs(45));

    // the same keys with the policy's others, in one table
    let mixed = format!("{}\n{PROTECTION_TOML}", EVERY_SETTING_TOML.trim());
    let want = protection_builder()
        .max_retries(6)
        .initial_backoff(ms(250))
        .max_backoff(secs(90))
        .multiplier(1.5)
        .jitter(Jitter::Scaled { min_factor: 0.6 })
        .seed(u64::MAX)
        .max_retry_after(secs(600))
        .on_long_hint(LongHint::UseBackoff)
        .deadline(secs(7200))
        .attempt_timeout(secs(45))
        .retry_non_idempotent(true)
        .auto_idempotency_key(true)
        .return_last_response(true)
        .hide_paths(true)
        .replay_buffer(256 * 1024)
        .resume_bodies(true)
        .max_resumes(7)
        .body_idle_timeout(secs(20))
        .build()
        .unwrap();
    assert_eq!(
        dbg(&RetryPolicy::from_toml_str(&mixed).unwrap()),
        dbg(&want)
    );
}

#[test]
fn protection_keys_take_a_bool_or_a_table() {
    let default_budget = Some(RetryBudget::default());
    let cases: &[(&str, &str, RetryPolicy)] = &[
        // (TOML, JSON, what the builder makes)
        ("", "{}", RetryPolicy::default()),
        (
            "retry_budget = false",
            r#"{"retry_budget": false}"#,
            RetryPolicy::builder().retry_budget(None).build().unwrap(),
        ),
        (
            "retry_budget = true",
            r#"{"retry_budget": true}"#,
            RetryPolicy::builder()
                .retry_budget(default_budget)
                .build()
                .unwrap(),
        ),
        (
            "retry_budget = {}",
            r#"{"retry_budget": {}}"#,
            RetryPolicy::default(),
        ),
        (
            // one key: the others keep RetryBudget::default()'s values
            "retry_budget = { capacity = 50 }",
            r#"{"retry_budget": {"capacity": 50}}"#,
            RetryPolicy::builder()
                .retry_budget(RetryBudget::builder().capacity(50).build().unwrap())
                .build()
                .unwrap(),
        ),
        (
            "retry_budget = { success_refund = 0 }",
            r#"{"retry_budget": {"success_refund": 0}}"#,
            RetryPolicy::builder()
                .retry_budget(RetryBudget::builder().success_refund(0).build().unwrap())
                .build()
                .unwrap(),
        ),
        (
            "circuit_breaker = {}",
            r#"{"circuit_breaker": {}}"#,
            RetryPolicy::builder()
                .circuit_breaker(CircuitBreaker::default())
                .build()
                .unwrap(),
        ),
        (
            "circuit_breaker = true",
            r#"{"circuit_breaker": true}"#,
            RetryPolicy::builder()
                .circuit_breaker(CircuitBreaker::default())
                .build()
                .unwrap(),
        ),
        (
            "circuit_breaker = false",
            r#"{"circuit_breaker": false}"#,
            RetryPolicy::default(),
        ),
        (
            "[circuit_breaker]\nconsecutive_failures = 5\nbreak_duration = \"10s\"",
            r#"{"circuit_breaker": {"consecutive_failures": 5, "break_duration": "10s"}}"#,
            RetryPolicy::builder()
                .circuit_breaker(
                    CircuitBreaker::builder()
                        .consecutive_failures(5)
                        .break_duration(secs(10))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        ),
        (
            // an integer ratio is a number too
            "[circuit_breaker]\nfailure_ratio = 1",
            r#"{"circuit_breaker": {"failure_ratio": 1}}"#,
            RetryPolicy::builder()
                .circuit_breaker(
                    CircuitBreaker::builder()
                        .failure_ratio(1.0)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        ),
        (
            "rate_limit = false",
            r#"{"rate_limit": false}"#,
            RetryPolicy::default(),
        ),
        (
            // burst defaults to requests, max_wait to 60 s
            "rate_limit = { requests = 10, per = \"1s\" }",
            r#"{"rate_limit": {"requests": 10, "per": "1s"}}"#,
            RetryPolicy::builder()
                .rate_limit(RateLimit::per_second(10).build().unwrap())
                .build()
                .unwrap(),
        ),
        (
            "server_limits = true\nscope = \"endpoint\"",
            r#"{"server_limits": true, "scope": "endpoint"}"#,
            RetryPolicy::default(),
        ),
        (
            "server_limits = false",
            r#"{"server_limits": false}"#,
            RetryPolicy::builder().server_limits(false).build().unwrap(),
        ),
        (
            "scope = \"policy\"",
            r#"{"scope": "policy"}"#,
            RetryPolicy::builder().scope(Scope::Policy).build().unwrap(),
        ),
        (
            // JSON null (and a key left out) keep the default
            "",
            r#"{"retry_budget": null, "circuit_breaker": null, "rate_limit": null, "scope": null}"#,
            RetryPolicy::default(),
        ),
    ];
    for (toml, json, want) in cases {
        let got = RetryPolicy::from_toml_str(toml).unwrap();
        assert_eq!(dbg(&got), dbg(want), "{toml}");
        let got = RetryPolicy::from_json_str(json).unwrap();
        assert_eq!(dbg(&got), dbg(want), "{json}");
    }
    // the defaults the tables start from are the crate's
    let p = RetryPolicy::from_toml_str("circuit_breaker = {}\nretry_budget = true").unwrap();
    assert_eq!(p.circuit_breaker().unwrap().failure_ratio(), 0.5);
    assert_eq!(p.circuit_breaker().unwrap().consecutive_failures(), None);
    assert_eq!(p.retry_budget().unwrap().capacity(), 500);
}

#[test]
fn a_preset_is_a_base_that_protection_keys_override() {
    for preset in Preset::ALL {
        let name = preset.as_str();
        let want = preset
            .builder()
            .retry_budget(None)
            .circuit_breaker(
                CircuitBreaker::builder()
                    .consecutive_failures(3)
                    .build()
                    .unwrap(),
            )
            .rate_limit(RateLimit::per_minute(50).burst(5).build().unwrap())
            .server_limits(false)
            .scope(Scope::Policy)
            .build()
            .unwrap();
        let toml = format!(
            "retry_budget = false\nserver_limits = false\nscope = \"policy\"\npreset = {name:?}\n\
             circuit_breaker = {{ consecutive_failures = 3 }}\n\
             rate_limit = {{ requests = 50, per = \"1m\", burst = 5 }}"
        );
        let json = format!(
            r#"{{"retry_budget": false, "circuit_breaker": {{"consecutive_failures": 3}},
                "rate_limit": {{"requests": 50, "per": "60s", "burst": 5}},
                "server_limits": false, "scope": "policy", "preset": {name:?}}}"#
        );
        for loaded in [
            RetryPolicy::from_toml_str(&toml).unwrap(),
            RetryPolicy::from_json_str(&json).unwrap(),
        ] {
            assert_eq!(dbg(&loaded), dbg(&want), "{name}");
            assert_eq!(loaded.preset(), Some(preset));
            assert!(loaded.retry_budget().is_none(), "{name}: turned off");
        }
        // left out, the preset's own protection stays
        let alone = RetryPolicy::from_toml_str(&format!("preset = {name:?}")).unwrap();
        assert_eq!(
            alone.retry_budget(),
            preset.policy().retry_budget(),
            "{name}"
        );
        assert_eq!(alone.server_limits(), preset.policy().server_limits());
    }
}

#[test]
fn protection_keys_load_in_default_and_in_routes() {
    let toml = r#"
        [default]
        retry_budget = false
        [[routes]]
        host = "api.github.com"
        policy = { preset = "github", rate_limit = { requests = 5000, per = "1h", burst = 100 } }
        [[routes]]
        host = "*.internal.example"
        [routes.policy]
        scope = "policy"
        [routes.policy.circuit_breaker]
        consecutive_failures = 5
        [routes.policy.retry_budget]
        capacity = 100
    "#;
    let json = r#"{
        "default": {"retry_budget": false},
        "routes": [
            {"host": "api.github.com",
             "policy": {"preset": "github", "rate_limit": {"requests": 5000, "per": "1h", "burst": 100}}},
            {"host": "*.internal.example",
             "policy": {"scope": "policy", "circuit_breaker": {"consecutive_failures": 5},
                        "retry_budget": {"capacity": 100}}}
        ]
    }"#;
    let built = EndpointPolicies::builder()
        .default_policy(RetryPolicy::builder().retry_budget(None).build().unwrap())
        .route(
            Route::host("api.github.com"),
            Preset::GitHub
                .builder()
                .rate_limit(RateLimit::per_hour(5000).burst(100).build().unwrap())
                .build()
                .unwrap(),
        )
        .route(
            Route::host("*.internal.example"),
            RetryPolicy::builder()
                .scope(Scope::Policy)
                .circuit_breaker(
                    CircuitBreaker::builder()
                        .consecutive_failures(5)
                        .build()
                        .unwrap(),
                )
                .retry_budget(RetryBudget::builder().capacity(100).build().unwrap())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let from_toml = EndpointPolicies::from_toml_str(toml).unwrap();
    let from_json = EndpointPolicies::from_json_str(json).unwrap();
    assert_eq!(dbg(&from_toml), dbg(&built));
    assert_eq!(dbg(&from_json), dbg(&built));
    let github = select(&from_toml, Method::GET, "https://api.github.com/user");
    assert_eq!(github.rate_limit().unwrap().burst(), 100);
    assert!(
        github.retry_budget().is_some(),
        "not inherited from default"
    );
    let internal = select(&from_json, Method::GET, "https://db.internal.example/");
    assert_eq!(
        internal.circuit_breaker().unwrap().consecutive_failures(),
        Some(5)
    );
    assert_eq!(internal.scope(), Scope::Policy);
    let other = select(&from_toml, Method::GET, "https://example.org/");
    assert!(other.retry_budget().is_none());
}

#[test]
fn the_documented_protection_example_loads_as_its_comments_say() {
    // the module docs' two TOML blocks under "# Load protection", as one
    // policy file
    let docs = include_str!("../src/config/mod.rs");
    let section = docs
        .split("//! # Load protection")
        .nth(1)
        .and_then(|rest| rest.split("//! # Hedged requests").next())
        .unwrap();
    let mut toml = String::new();
    let mut inside = false;
    for line in section.lines() {
        let Some(line) = line.strip_prefix("//!") else {
            continue;
        };
        let line = line.strip_prefix(' ').unwrap_or(line);
        match line {
            "```toml" => inside = true,
            "```" => inside = false,
            _ if inside => {
                toml.push_str(line);
                toml.push('\n');
            }
            _ => {}
        }
    }
    // the second block's keys must come before the tables to stay in the
    // top-level table
    let (tables, top) = toml.split_at(toml.find("server_limits").unwrap());
    let file = format!("{top}{tables}");
    let want = RetryPolicy::builder()
        .retry_budget(RetryBudget::default())
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(5)
                .build()
                .unwrap(),
        )
        .rate_limit(
            RateLimit::per_hour(5000)
                .burst(100)
                .max_wait(secs(30))
                .build()
                .unwrap(),
        )
        .server_limits(true)
        .scope(Scope::Endpoint)
        .build()
        .unwrap();
    assert_eq!(
        dbg(&RetryPolicy::from_toml_str(&file).unwrap()),
        dbg(&want),
        "{file}"
    );
}

const SET_TOML: &str = r#"
well_known = true

[default]
max_retries = 1
deadline = "30s"

[[routes]]
host = "api.github.com"
path_prefix = "/graphql"
methods = ["POST"]
[routes.policy]
preset = "github"
retry_non_idempotent = true

[[routes]]
host = "*.internal.example"
scheme = "https"
[routes.policy]
max_retries = 5
initial_backoff = "250ms"
jitter = "equal"

[[routes]]
path_glob = "/repos/*/raw"
policy = { max_retries = 0, return_last_response = true }
"#;

const SET_JSON: &str = r#"{
    "well_known": true,
    "default": {"max_retries": 1, "deadline": "30s"},
    "routes": [
        {
            "host": "api.github.com",
            "path_prefix": "/graphql",
            "methods": ["POST"],
            "policy": {"preset": "github", "retry_non_idempotent": true}
        },
        {
            "host": "*.internal.example",
            "scheme": "https",
            "policy": {"max_retries": 5, "initial_backoff": "250ms", "jitter": "equal"}
        },
        {"path_glob": "/repos/*/raw", "policy": {"max_retries": 0, "return_last_response": true}}
    ]
}"#;

fn set_built() -> EndpointPolicies {
    EndpointPolicies::builder()
        .route(
            Route::host("api.github.com")
                .path_prefix("/graphql")
                .methods([Method::POST]),
            Preset::GitHub
                .builder()
                .retry_non_idempotent(true)
                .build()
                .unwrap(),
        )
        .route(
            Route::host("*.internal.example").scheme("https"),
            RetryPolicy::builder()
                .max_retries(5)
                .initial_backoff(ms(250))
                .jitter(Jitter::Equal)
                .build()
                .unwrap(),
        )
        .route(Route::any().path_glob("/repos/*/raw"), no_retries())
        .well_known()
        .default_policy(
            RetryPolicy::builder()
                .max_retries(1)
                .deadline(secs(30))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn select(set: &EndpointPolicies, method: Method, url: &str) -> RetryPolicy {
    let uri: Uri = url.parse().unwrap();
    let headers = HeaderMap::new();
    let request = RequestMeta::new(
        &method,
        uri.scheme_str().unwrap(),
        uri.host().unwrap(),
        uri.path(),
        &headers,
    );
    set.select(&request).clone()
}

#[test]
fn an_endpoint_set_loads_from_toml_and_json_as_the_builder_builds_it() {
    let built = set_built();
    let from_toml = EndpointPolicies::from_toml_str(SET_TOML).unwrap();
    let from_json = EndpointPolicies::from_json_str(SET_JSON).unwrap();
    // Debug prints every route and every policy, in order, and the default
    assert_eq!(dbg(&from_toml), dbg(&built));
    assert_eq!(dbg(&from_json), dbg(&built));
    assert_eq!(
        from_toml.routes().len(),
        3 + EndpointPolicies::well_known().routes().len()
    );
}

#[test]
fn an_endpoint_set_selects_the_expected_policy_for_each_request() {
    let set = EndpointPolicies::from_toml_str(SET_TOML).unwrap();
    let graphql = Preset::GitHub
        .builder()
        .retry_non_idempotent(true)
        .build()
        .unwrap();
    let internal = RetryPolicy::builder()
        .max_retries(5)
        .initial_backoff(ms(250))
        .jitter(Jitter::Equal)
        .build()
        .unwrap();
    let default = RetryPolicy::builder()
        .max_retries(1)
        .deadline(secs(30))
        .build()
        .unwrap();
    let cases = [
        // the file's route wins over the well-known api.github.com route
        (
            Method::POST,
            "https://api.github.com/graphql",
            dbg(&graphql),
        ),
        // ... only where it matches: elsewhere the well-known route applies
        (
            Method::GET,
            "https://api.github.com/graphql",
            dbg(&RetryPolicy::github()),
        ),
        (
            Method::GET,
            "https://api.github.com/repos/o/r",
            dbg(&RetryPolicy::github()),
        ),
        (
            Method::GET,
            "https://github.com/o/r.git/info/refs",
            dbg(&RetryPolicy::git()),
        ),
        (
            Method::POST,
            "https://api.openai.com/v1/responses",
            dbg(&RetryPolicy::openai()),
        ),
        (
            Method::POST,
            "https://api.anthropic.com/v1/messages",
            dbg(&RetryPolicy::anthropic()),
        ),
        (Method::GET, "https://db.internal.example/x", dbg(&internal)),
        (
            Method::GET,
            "https://A.B.Internal.Example/x",
            dbg(&internal),
        ),
        // scheme must match
        (Method::GET, "http://db.internal.example/x", dbg(&default)),
        // the wildcard does not match the bare domain
        (Method::GET, "https://internal.example/x", dbg(&default)),
        // the host-less glob route, on any host
        (
            Method::GET,
            "https://example.org/repos/x/raw",
            dbg(&no_retries()),
        ),
        (
            Method::GET,
            "https://example.org/repos/x/y/raw",
            dbg(&default),
        ),
        (Method::GET, "https://example.org/", dbg(&default)),
    ];
    for (method, url, want) in cases {
        assert_eq!(
            dbg(&select(&set, method.clone(), url)),
            want,
            "{method} {url}"
        );
    }
}

#[test]
fn without_well_known_only_the_files_routes_apply() {
    let set = EndpointPolicies::from_toml_str(
        "[[routes]]\nhost = \"a.example\"\npolicy = { max_retries = 8 }",
    )
    .unwrap();
    assert_eq!(set.routes().len(), 1);
    assert_eq!(
        select(&set, Method::GET, "https://a.example/").max_retries(),
        8
    );
    // no [default]: the default policy
    assert_eq!(
        dbg(&select(&set, Method::GET, "https://api.github.com/")),
        dbg(&RetryPolicy::default())
    );
    let empty = EndpointPolicies::from_json_str("{}").unwrap();
    assert_eq!(dbg(&empty), dbg(&EndpointPolicies::default()));
}

#[test]
fn a_routes_policy_starts_from_the_builder_defaults_not_from_default() {
    let set = EndpointPolicies::from_toml_str(
        "[default]\nmax_retries = 1\n[[routes]]\nhost = \"a.example\"\n[routes.policy]\ndeadline = \"5s\"",
    )
    .unwrap();
    let p = select(&set, Method::GET, "https://a.example/");
    assert_eq!(p.max_retries(), 3);
    assert_eq!(p.deadline(), Some(secs(5)));
}

#[test]
fn the_example_file_loads_and_selects_what_its_comments_say() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let set = EndpointPolicies::from_path(format!("{dir}/examples/policies.toml")).unwrap();
    let github = select(&set, Method::GET, "https://api.github.com/repos/o/r");
    assert_eq!(github.preset(), Some(Preset::GitHub));
    assert_eq!(github.max_retries(), 5);
    assert_eq!(github.max_retry_after(), secs(900));
    let upload = select(&set, Method::POST, "https://uploads.github.com/x");
    assert_eq!(upload.max_retries(), 0);
    let openai = select(&set, Method::POST, "https://api.openai.com/v1/responses");
    assert_eq!(
        (openai.preset(), openai.max_retries()),
        (Some(Preset::OpenAi), 3)
    );
    let git = select(
        &set,
        Method::GET,
        "https://git.internal.example/t.git/info/refs",
    );
    assert_eq!(git.preset(), Some(Preset::Git));
    let internal = select(&set, Method::POST, "https://billing.internal.example/i");
    assert!(internal.auto_idempotency_key());
    assert_eq!(internal.jitter(), Jitter::Decorrelated);
    let anthropic = select(&set, Method::POST, "https://api.anthropic.com/v1/messages");
    assert_eq!(anthropic.preset(), Some(Preset::Anthropic));
    let other = select(&set, Method::GET, "https://example.org/");
    assert_eq!(other.attempt_timeout(), Some(secs(10)));
    // load protection: GitHub paced to its quota, a breaker and a smaller
    // budget on internal hosts, the default budget elsewhere
    assert_eq!(
        github.rate_limit(),
        Some(
            &RateLimit::per_hour(5000)
                .burst(100)
                .max_wait(secs(60))
                .build()
                .unwrap()
        )
    );
    assert_eq!(github.retry_budget(), Some(&RetryBudget::default()));
    assert!(github.circuit_breaker().is_none());
    assert_eq!(
        internal.circuit_breaker(),
        Some(
            &CircuitBreaker::builder()
                .consecutive_failures(5)
                .minimum_throughput(20)
                .break_duration(secs(10))
                .build()
                .unwrap()
        )
    );
    assert_eq!(
        internal.retry_budget(),
        Some(&RetryBudget::builder().capacity(100).build().unwrap())
    );
    assert!(internal.rate_limit().is_none());
    assert_eq!(other.retry_budget(), Some(&RetryBudget::default()));
    assert!(other.circuit_breaker().is_none() && other.rate_limit().is_none());
    // the well-known routes keep their presets' protection
    assert_eq!(
        anthropic.rate_limit(),
        Preset::Anthropic.policy().rate_limit()
    );
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "http-resilience-config-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn from_path_chooses_the_format_by_extension() {
    let dir = TempDir::new("from-path");
    let write = |name: &str, text: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let built = dbg(&every_setting_built());
    let toml = write("policy.toml", EVERY_SETTING_TOML);
    let json = write("policy.JSON", EVERY_SETTING_JSON);
    assert_eq!(dbg(&RetryPolicy::from_path(&toml).unwrap()), built);
    assert_eq!(dbg(&RetryPolicy::from_path(&json).unwrap()), built);
    let set_toml = write("set.toml", SET_TOML);
    let set_json = write("set.json", SET_JSON);
    assert_eq!(
        dbg(&EndpointPolicies::from_path(&set_toml).unwrap()),
        dbg(&set_built())
    );
    assert_eq!(
        dbg(&EndpointPolicies::from_path(&set_json).unwrap()),
        dbg(&set_built())
    );

    // JSON text in a .toml file is read as TOML, and refused
    let wrong = write("wrong.toml", EVERY_SETTING_JSON);
    let err = RetryPolicy::from_path(&wrong).unwrap_err();
    assert!(err.reason().starts_with("TOML syntax error"), "{err}");

    let yaml = write("policy.yaml", "max_retries: 3");
    let err = RetryPolicy::from_path(&yaml).unwrap_err();
    assert_eq!(err.field(), "");
    assert!(err.reason().contains("unknown file extension"), "{err}");
    let err = EndpointPolicies::from_path(dir.0.join("missing.toml")).unwrap_err();
    assert_eq!(err.field(), "");
    assert!(err.reason().starts_with("cannot read"), "{err}");
    assert_eq!(err.code(), "INVALID_CONFIG");
}

#[derive(Clone, Copy)]
enum Fmt {
    Toml,
    Json,
}

fn policy_err(format: Fmt, text: &str) -> ConfigError {
    match format {
        Fmt::Toml => RetryPolicy::from_toml_str(text).unwrap_err(),
        Fmt::Json => RetryPolicy::from_json_str(text).unwrap_err(),
    }
}

fn set_err(format: Fmt, text: &str) -> ConfigError {
    match format {
        Fmt::Toml => EndpointPolicies::from_toml_str(text).unwrap_err(),
        Fmt::Json => EndpointPolicies::from_json_str(text).unwrap_err(),
    }
}

fn check(what: &str, err: &ConfigError, field: &str, reason: &str) {
    assert_eq!(err.field(), field, "{what}: {err}");
    assert!(
        err.reason().contains(reason),
        "{what}: reason {:?} lacks {reason:?}",
        err.reason()
    );
    assert_eq!(err.code(), "INVALID_CONFIG", "{what}");
    if !field.is_empty() {
        assert!(
            err.to_string().contains(&format!("`{field}`")),
            "{what}: {err}"
        );
    }
}

#[test]
fn each_bad_policy_value_names_its_key_and_reason() {
    use Fmt::{Json, Toml};
    let cases: &[(&str, Fmt, &str, &str, &str)] = &[
        // (what, format, input, field, part of the reason)
        (
            "unknown key",
            Toml,
            "max_retires = 3",
            "max_retires",
            "unknown field `max_retires`",
        ),
        (
            "unknown key",
            Json,
            r#"{"max_retires": 3}"#,
            "max_retires",
            "unknown field `max_retires`",
        ),
        (
            "unknown key lists the known",
            Toml,
            "retries = 3",
            "retries",
            "expected one of `preset`, `max_retries`",
        ),
        (
            "wrong type",
            Toml,
            "max_retries = \"3\"",
            "max_retries",
            "invalid type: string \"3\", expected u32",
        ),
        (
            "wrong type",
            Json,
            r#"{"retry_non_idempotent": "yes"}"#,
            "retry_non_idempotent",
            "expected a boolean",
        ),
        (
            "negative count",
            Toml,
            "max_retries = -1",
            "max_retries",
            "invalid value: integer `-1`",
        ),
        (
            "count too large",
            Json,
            r#"{"max_retries": 4294967296}"#,
            "max_retries",
            "expected u32",
        ),
        (
            "bare number duration",
            Toml,
            "deadline = 30",
            "deadline",
            r#"expected a duration such as "500ms""#,
        ),
        (
            "unknown unit",
            Toml,
            "initial_backoff = \"5 parsecs\"",
            "initial_backoff",
            "`5 parsecs` is not a duration (unknown time unit \"parsecs\"",
        ),
        (
            "negative duration",
            Json,
            r#"{"initial_backoff": "-1s"}"#,
            "initial_backoff",
            "`-1s` is not a duration",
        ),
        (
            "overflowing duration",
            Toml,
            "deadline = \"99999999999999999999999s\"",
            "deadline",
            "is not a duration",
        ),
        (
            "zero duration",
            Toml,
            "attempt_timeout = \"0s\"",
            "attempt_timeout",
            "must be greater than zero",
        ),
        (
            "zero duration",
            Json,
            r#"{"max_backoff": "0ms"}"#,
            "max_backoff",
            "must be greater than zero",
        ),
        (
            "too long a duration",
            Toml,
            "max_retry_after = \"400days\"",
            "max_retry_after",
            "must be at most 365 days",
        ),
        (
            "initial above max",
            Toml,
            "initial_backoff = \"1m\"\nmax_backoff = \"30s\"",
            "initial_backoff",
            "must not exceed max_backoff",
        ),
        (
            "initial above a preset's max",
            Toml,
            "preset = \"openai\"\ninitial_backoff = \"10s\"",
            "initial_backoff",
            "must not exceed max_backoff (10s > 8s)",
        ),
        (
            "multiplier below 1",
            Toml,
            "multiplier = 0.5",
            "multiplier",
            "must be at least 1 (got 0.5)",
        ),
        (
            "multiplier below 1",
            Json,
            r#"{"multiplier": 0}"#,
            "multiplier",
            "must be at least 1",
        ),
        (
            "multiplier not finite",
            Toml,
            "multiplier = inf",
            "multiplier",
            "must be a finite number",
        ),
        (
            "multiplier not finite",
            Toml,
            "multiplier = nan",
            "multiplier",
            "must be a finite number",
        ),
        (
            "unknown jitter",
            Toml,
            "jitter = \"fuzzy\"",
            "jitter",
            "unknown jitter `fuzzy`",
        ),
        (
            "scaled factor out of range",
            Toml,
            "jitter = \"scaled:1.5\"",
            "jitter",
            "must lie in [0, 1] (got 1.5)",
        ),
        (
            "scaled factor not a number",
            Json,
            r#"{"jitter": "scaled:x"}"#,
            "jitter",
            "`x` is not a number",
        ),
        (
            "jitter not a string",
            Toml,
            "jitter = 1",
            "jitter",
            "expected a jitter",
        ),
        (
            "unknown preset",
            Toml,
            "preset = \"gitlab\"",
            "preset",
            "unknown preset `gitlab` (expected github, openai, anthropic or git)",
        ),
        (
            "preset case",
            Json,
            r#"{"preset": "GitHub"}"#,
            "preset",
            "unknown preset `GitHub`",
        ),
        (
            "unknown long hint",
            Toml,
            "on_long_hint = \"wait\"",
            "on_long_hint",
            "unknown on_long_hint `wait`",
        ),
        ("negative seed", Toml, "seed = -1", "seed", "expected u64"),
        ("not a table", Json, "[1, 2]", "", "expected a table"),
        ("not a table", Json, "3", "", "expected a table"),
        (
            "duplicate key",
            Json,
            r#"{"max_retries": 1, "max_retries": 2}"#,
            "",
            "duplicate field `max_retries`",
        ),
        (
            "TOML syntax",
            Toml,
            "max_retries = 3\ninitial_backoff = \"1s",
            "",
            "TOML syntax error",
        ),
        (
            "TOML syntax position",
            Toml,
            "max_retries = 3\ninitial_backoff = \"1s",
            "",
            "(line 2, column 22)",
        ),
        (
            "TOML duplicate key",
            Toml,
            "max_retries = 3\nmax_retries = 4",
            "",
            "(line 2, column 1)",
        ),
        (
            "JSON syntax",
            Json,
            "{\"max_retries\": 3,\n}",
            "",
            "JSON syntax error",
        ),
        (
            "JSON syntax position",
            Json,
            "{\"max_retries\": 3,\n}",
            "",
            "(line 2, column 1)",
        ),
        (
            "JSON trailing text",
            Json,
            "{} {}",
            "",
            "trailing characters",
        ),
        ("JSON empty", Json, "", "", "EOF while parsing"),
        // load protection: the builder's checks, under the key path
        (
            "ratio above 1",
            Toml,
            "circuit_breaker = { failure_ratio = 1.5 }",
            "circuit_breaker.failure_ratio",
            "must lie in (0, 1] (got 1.5)",
        ),
        (
            "zero ratio",
            Json,
            r#"{"circuit_breaker": {"failure_ratio": 0}}"#,
            "circuit_breaker.failure_ratio",
            "must lie in (0, 1] (got 0)",
        ),
        (
            "ratio not a number",
            Toml,
            "[circuit_breaker]\nfailure_ratio = nan",
            "circuit_breaker.failure_ratio",
            "must lie in (0, 1] (got NaN)",
        ),
        (
            "ratio as a word",
            Json,
            r#"{"circuit_breaker": {"failure_ratio": "half"}}"#,
            "circuit_breaker.failure_ratio",
            "invalid type: string \"half\", expected f64",
        ),
        (
            "zero throughput",
            Toml,
            "circuit_breaker = { minimum_throughput = 0 }",
            "circuit_breaker.minimum_throughput",
            "must be greater than zero",
        ),
        (
            "zero probes",
            Toml,
            "circuit_breaker = { half_open_probes = 0 }",
            "circuit_breaker.half_open_probes",
            "must be greater than zero",
        ),
        (
            "zero consecutive failures",
            Json,
            r#"{"circuit_breaker": {"consecutive_failures": 0}}"#,
            "circuit_breaker.consecutive_failures",
            "must be greater than zero",
        ),
        (
            "zero break",
            Toml,
            "circuit_breaker = { break_duration = \"0s\" }",
            "circuit_breaker.break_duration",
            "must be greater than zero",
        ),
        (
            "zero half-open wait",
            Json,
            r#"{"circuit_breaker": {"max_half_open_wait": "0s"}}"#,
            "circuit_breaker.max_half_open_wait",
            "must be greater than zero",
        ),
        (
            "half-open wait not a duration",
            Toml,
            "circuit_breaker = { max_half_open_wait = 30 }",
            "circuit_breaker.max_half_open_wait",
            "invalid type: integer `30`",
        ),
        (
            "zero max_quota_reset",
            Toml,
            "max_quota_reset = \"0s\"",
            "max_quota_reset",
            "must be greater than zero",
        ),
        (
            "max_quota_reset beyond 365 days",
            Json,
            r#"{"max_quota_reset": "400days"}"#,
            "max_quota_reset",
            "must be at most 365 days",
        ),
        (
            "quota_release_spread beyond 365 days",
            Toml,
            "quota_release_spread = \"400days\"",
            "quota_release_spread",
            "must be at most 365 days",
        ),
        (
            "quota_release_spread not a duration",
            Json,
            r#"{"quota_release_spread": "a bit"}"#,
            "quota_release_spread",
            "`a bit` is not a duration",
        ),
        (
            "bad window duration",
            Toml,
            "circuit_breaker = { sampling_window = \"soon\" }",
            "circuit_breaker.sampling_window",
            "`soon` is not a duration",
        ),
        (
            "zero capacity",
            Toml,
            "retry_budget = { capacity = 0 }",
            "retry_budget.capacity",
            "must be at least timeout_cost (0 < 10)",
        ),
        (
            "capacity below timeout_cost",
            Json,
            r#"{"retry_budget": {"capacity": 15, "timeout_cost": 20}}"#,
            "retry_budget.capacity",
            "must be at least timeout_cost (15 < 20)",
        ),
        (
            "timeout_cost below retry_cost",
            Toml,
            "[retry_budget]\ntimeout_cost = 3",
            "retry_budget.timeout_cost",
            "must be at least retry_cost (3 < 5)",
        ),
        (
            "zero retry_cost",
            Json,
            r#"{"retry_budget": {"retry_cost": 0}}"#,
            "retry_budget.retry_cost",
            "must be greater than zero",
        ),
        (
            "negative capacity",
            Toml,
            "retry_budget = { capacity = -1 }",
            "retry_budget.capacity",
            "invalid value: integer `-1`, expected u32",
        ),
        (
            "zero requests",
            Toml,
            "rate_limit = { requests = 0, per = \"1h\" }",
            "rate_limit.requests",
            "must be greater than zero",
        ),
        (
            "missing per",
            Toml,
            "rate_limit = { requests = 10 }",
            "rate_limit",
            "missing field `per`",
        ),
        (
            "missing requests",
            Json,
            r#"{"rate_limit": {"per": "1h"}}"#,
            "rate_limit",
            "missing field `requests`",
        ),
        (
            "bad per duration",
            Toml,
            "rate_limit = { requests = 10, per = \"1 fortnight\" }",
            "rate_limit.per",
            "`1 fortnight` is not a duration (unknown time unit \"fortnight\"",
        ),
        (
            "bare number per",
            Json,
            r#"{"rate_limit": {"requests": 10, "per": 3600}}"#,
            "rate_limit.per",
            r#"expected a duration such as "500ms""#,
        ),
        (
            "zero per",
            Toml,
            "rate_limit = { requests = 10, per = \"0s\" }",
            "rate_limit.per",
            "must be greater than zero",
        ),
        (
            "per too short for requests",
            Toml,
            "rate_limit = { requests = 4294967295, per = \"1ns\" }",
            "rate_limit.per",
            "is below a nanosecond",
        ),
        (
            "zero burst",
            Toml,
            "rate_limit = { requests = 10, per = \"1h\", burst = 0 }",
            "rate_limit.burst",
            "must be greater than zero",
        ),
        (
            "too long max_wait",
            Json,
            r#"{"rate_limit": {"requests": 10, "per": "1h", "max_wait": "400days"}}"#,
            "rate_limit.max_wait",
            "must be at most 365 days",
        ),
        (
            "rate_limit true",
            Toml,
            "rate_limit = true",
            "rate_limit",
            "`true` is not a rate limit: write a table with `requests` and `per`",
        ),
        (
            "rate_limit true",
            Json,
            r#"{"rate_limit": true}"#,
            "rate_limit",
            "`true` is not a rate limit",
        ),
        (
            "unknown breaker key",
            Toml,
            "circuit_breaker = { ratio = 0.5 }",
            "circuit_breaker.ratio",
            "unknown field `ratio`, expected one of `failure_ratio`",
        ),
        (
            "unknown budget key",
            Json,
            r#"{"retry_budget": {"tokens": 5}}"#,
            "retry_budget.tokens",
            "unknown field `tokens`, expected one of `capacity`",
        ),
        (
            "unknown rate-limit key",
            Toml,
            "[rate_limit]\nrequests = 10\nper = \"1h\"\nperiod = \"1h\"",
            "rate_limit.period",
            "unknown field `period`",
        ),
        (
            "budget of the wrong type",
            Toml,
            "retry_budget = \"on\"",
            "retry_budget",
            "invalid type: string \"on\", expected `true` (the default budget), `false` (no budget) or a retry_budget table",
        ),
        (
            "breaker of the wrong type",
            Json,
            r#"{"circuit_breaker": [1]}"#,
            "circuit_breaker",
            "invalid type: sequence, expected `true` (the default breaker), `false` (no breaker) or a circuit_breaker table",
        ),
        (
            "rate limit of the wrong type",
            Toml,
            "rate_limit = 5",
            "rate_limit",
            "invalid type: integer `5`, expected `false` (no limit) or a rate_limit table",
        ),
        (
            "server_limits of the wrong type",
            Toml,
            "server_limits = \"yes\"",
            "server_limits",
            "expected a boolean",
        ),
        (
            "bad scope name",
            Toml,
            "scope = \"host\"",
            "scope",
            "unknown scope `host` (expected endpoint or policy)",
        ),
        (
            "scope case",
            Json,
            r#"{"scope": "Policy"}"#,
            "scope",
            "unknown scope `Policy`",
        ),
        (
            "scope not a string",
            Toml,
            "scope = 1",
            "scope",
            r#"expected a scope: "endpoint" or "policy""#,
        ),
        // streaming bodies
        (
            "negative replay buffer",
            Toml,
            "replay_buffer = -1",
            "replay_buffer",
            "invalid value: integer `-1`",
        ),
        (
            "replay buffer as a word",
            Json,
            r#"{"replay_buffer": "64KiB"}"#,
            "replay_buffer",
            "invalid type: string \"64KiB\"",
        ),
        (
            "resume_bodies of the wrong type",
            Toml,
            "resume_bodies = \"yes\"",
            "resume_bodies",
            "expected a boolean",
        ),
        (
            "negative max_resumes",
            Json,
            r#"{"max_resumes": -3}"#,
            "max_resumes",
            "invalid value: integer `-3`",
        ),
        (
            "zero body idle timeout",
            Toml,
            "body_idle_timeout = \"0s\"",
            "body_idle_timeout",
            "must be greater than zero",
        ),
        (
            "body idle timeout beyond 365 days",
            Json,
            r#"{"body_idle_timeout": "400days"}"#,
            "body_idle_timeout",
            "must be at most 365 days",
        ),
        (
            "body idle timeout as a number",
            Toml,
            "body_idle_timeout = 30",
            "body_idle_timeout",
            "invalid type: integer `30`",
        ),
    ];
    for &(what, format, input, field, reason) in cases {
        check(what, &policy_err(format, input), field, reason);
    }
}

#[test]
fn positions_point_at_the_offending_value() {
    let err = RetryPolicy::from_toml_str("max_retries = 3\n\ndeadline = \"soon\"").unwrap_err();
    assert_eq!(err.field(), "deadline");
    assert!(err.reason().ends_with("(line 3, column 12)"), "{err}");
    let err = RetryPolicy::from_json_str("{\n  \"deadline\": 5\n}").unwrap_err();
    assert_eq!(err.field(), "deadline");
    assert!(err.reason().contains("(line 2, column"), "{err}");
}

#[test]
fn each_bad_endpoint_set_names_its_key_and_reason() {
    use Fmt::{Json, Toml};
    let route = |body: &str| format!("[[routes]]\n{body}\n");
    let cases: Vec<(&str, Fmt, String, &str, &str)> = vec![
        (
            "unknown top-level key",
            Toml,
            "[defaults]\nmax_retries = 1".into(),
            "defaults",
            "unknown field `defaults`, expected one of `well_known`, `default`, `routes`",
        ),
        (
            "unknown route key",
            Toml,
            route("hosts = \"a\"\npolicy = {}"),
            "routes[0].hosts",
            "unknown field `hosts`",
        ),
        (
            "unknown nested key",
            Toml,
            route("host = \"a\"\n[routes.policy]\nmax_retries = 1\nbogus = 2"),
            "routes[0].policy.bogus",
            "unknown field `bogus`",
        ),
        (
            "unknown nested key",
            Json,
            r#"{"routes": [{"policy": {}}, {"policy": {"x": 1}}]}"#.into(),
            "routes[1].policy.x",
            "unknown field `x`",
        ),
        (
            "unknown key in default",
            Json,
            r#"{"default": {"max_retry": 1}}"#.into(),
            "default.max_retry",
            "unknown field `max_retry`",
        ),
        (
            "missing policy",
            Toml,
            route("host = \"a\""),
            "routes[0]",
            "missing field `policy`",
        ),
        (
            "wrong type",
            Toml,
            "well_known = \"yes\"".into(),
            "well_known",
            "expected a boolean",
        ),
        (
            "routes not a list",
            Json,
            r#"{"routes": {"host": "a"}}"#.into(),
            "routes",
            "expected a sequence",
        ),
        (
            "route not a table",
            Json,
            r#"{"routes": ["a"]}"#.into(),
            "routes[0]",
            "expected a table",
        ),
        (
            "policy not a table",
            Toml,
            route("policy = \"github\""),
            "routes[0].policy",
            "expected a table",
        ),
        (
            "a route's half-open wait refused by the builder",
            Toml,
            format!(
                "{}{}",
                route("policy = {}"),
                route("policy = { circuit_breaker = { max_half_open_wait = \"0s\" } }")
            ),
            "routes[1].policy.circuit_breaker.max_half_open_wait",
            "must be greater than zero",
        ),
        (
            "a default max_quota_reset refused by the builder",
            Json,
            r#"{"default": {"max_quota_reset": "0s"}}"#.into(),
            "default.max_quota_reset",
            "must be greater than zero",
        ),
        (
            "a route's body_idle_timeout refused by the builder",
            Toml,
            route("policy = { resume_bodies = true, body_idle_timeout = \"0s\" }"),
            "routes[0].policy.body_idle_timeout",
            "must be greater than zero",
        ),
        (
            "a default replay_buffer of the wrong type",
            Json,
            r#"{"default": {"replay_buffer": 1.5}}"#.into(),
            "default.replay_buffer",
            "invalid type: floating point `1.5`",
        ),
        (
            "bad duration in a route",
            Toml,
            format!(
                "{}{}",
                route("policy = {}"),
                route("policy = { deadline = \"-1s\" }")
            ),
            "routes[1].policy.deadline",
            "`-1s` is not a duration",
        ),
        (
            "builder refusal in a route",
            Toml,
            format!(
                "{}{}",
                route("policy = {}"),
                route("[routes.policy]\ninitial_backoff = \"0s\"")
            ),
            "routes[1].policy.initial_backoff",
            "must be greater than zero",
        ),
        (
            "builder refusal in a route",
            Json,
            r#"{"routes": [{"policy": {"multiplier": 0.5}}]}"#.into(),
            "routes[0].policy.multiplier",
            "must be at least 1 (got 0.5)",
        ),
        (
            "builder refusal in default",
            Toml,
            "[default]\nmax_backoff = \"500days\"".into(),
            "default.max_backoff",
            "must be at most 365 days",
        ),
        (
            "unknown preset in a route",
            Toml,
            route("policy = { preset = \"gitlab\" }"),
            "routes[0].policy.preset",
            "unknown preset `gitlab`",
        ),
        (
            "bad scaled factor in a route",
            Json,
            r#"{"routes": [{"policy": {"jitter": "scaled:-0.1"}}]}"#.into(),
            "routes[0].policy.jitter",
            "must lie in [0, 1]",
        ),
        (
            "bad host",
            Toml,
            format!(
                "{}{}",
                route("host = \"ok.example\"\npolicy = {}"),
                route("host = \"bad host\"\npolicy = {}")
            ),
            "routes[1].host",
            "`bad host` is not a host name",
        ),
        (
            "bad wildcard",
            Json,
            r#"{"routes": [{"host": "*.", "policy": {}}]}"#.into(),
            "routes[0].host",
            "is not a host name or a `*.domain` wildcard",
        ),
        (
            "host not a string",
            Toml,
            route("host = 3\npolicy = {}"),
            "routes[0].host",
            "expected a string",
        ),
        (
            "bad glob",
            Toml,
            route("path_glob = \"/a/[b\"\npolicy = {}"),
            "routes[0].path_glob",
            "`/a/[b` is not a valid glob",
        ),
        (
            "prefix and glob",
            Toml,
            route("path_prefix = \"/a\"\npath_glob = \"/b/*\"\npolicy = {}"),
            "routes[0].path_glob",
            "either path_prefix or path_glob, not both",
        ),
        (
            "relative prefix",
            Toml,
            route("path_prefix = \"v1/\"\npolicy = {}"),
            "routes[0].path_prefix",
            "must start with `/`",
        ),
        (
            "bad method",
            Toml,
            route("methods = [\"GET\", \"G ET\"]\npolicy = {}"),
            "routes[0].methods[1]",
            "`G ET` is not an HTTP method",
        ),
        (
            "lowercase method",
            Json,
            r#"{"routes": [{"methods": ["get"], "policy": {}}]}"#.into(),
            "routes[0].methods[0]",
            "`get` is not `GET`: methods are case-sensitive",
        ),
        (
            "methods not a list",
            Toml,
            route("methods = \"GET\"\npolicy = {}"),
            "routes[0].methods",
            "expected a sequence",
        ),
        (
            "no methods",
            Toml,
            route("methods = []\npolicy = {}"),
            "routes[0].methods",
            "lists no method",
        ),
        (
            "scheme with separator",
            Toml,
            route("scheme = \"https://\"\npolicy = {}"),
            "routes[0].scheme",
            "is not a URL scheme",
        ),
        (
            "empty scheme",
            Json,
            r#"{"routes": [{"scheme": "", "policy": {}}]}"#.into(),
            "routes[0].scheme",
            "is not a URL scheme",
        ),
        (
            "unknown breaker key in default",
            Toml,
            "[default]\ncircuit_breaker = { ratio = 0.5 }".into(),
            "default.circuit_breaker.ratio",
            "unknown field `ratio`",
        ),
        (
            "unknown breaker key in default",
            Json,
            r#"{"default": {"circuit_breaker": {"ratio": 1}}}"#.into(),
            "default.circuit_breaker.ratio",
            "unknown field `ratio`",
        ),
        (
            "bad ratio in a route",
            Toml,
            format!(
                "{}{}",
                route("policy = {}"),
                route("[routes.policy.circuit_breaker]\nfailure_ratio = 2")
            ),
            "routes[1].policy.circuit_breaker.failure_ratio",
            "must lie in (0, 1] (got 2)",
        ),
        (
            "bad budget in default",
            Json,
            r#"{"default": {"retry_budget": {"timeout_cost": 1}}}"#.into(),
            "default.retry_budget.timeout_cost",
            "must be at least retry_cost (1 < 5)",
        ),
        (
            "zero requests in a route",
            Json,
            r#"{"routes": [{"policy": {"rate_limit": {"requests": 0, "per": "1m"}}}]}"#.into(),
            "routes[0].policy.rate_limit.requests",
            "must be greater than zero",
        ),
        (
            "missing per in a route",
            Toml,
            route("policy = { rate_limit = { requests = 5000 } }"),
            "routes[0].policy.rate_limit",
            "missing field `per`",
        ),
        (
            "bad per in a route",
            Toml,
            route("policy = { rate_limit = { requests = 5000, per = \"hour\" } }"),
            "routes[0].policy.rate_limit.per",
            "`hour` is not a duration",
        ),
        (
            "bad scope in a route",
            Json,
            r#"{"routes": [{"policy": {}}, {"policy": {"scope": "global"}}]}"#.into(),
            "routes[1].policy.scope",
            "unknown scope `global`",
        ),
        (
            "wrong type in a route",
            Toml,
            route("policy = { retry_budget = 0 }"),
            "routes[0].policy.retry_budget",
            "invalid type: integer `0`",
        ),
        (
            "TOML syntax",
            Toml,
            "[[routes]\nhost = \"a\"".into(),
            "",
            "TOML syntax error",
        ),
        (
            "TOML syntax position",
            Toml,
            "well_known = true\n[[routes]]\nhost = \"a\" policy = {}".into(),
            "",
            "(line 3, column",
        ),
        (
            "JSON syntax",
            Json,
            r#"{"routes": [}"#.into(),
            "",
            "JSON syntax error",
        ),
    ];
    for (what, format, input, field, reason) in cases {
        check(what, &set_err(format, &input), field, reason);
    }
}

#[test]
fn errors_come_in_a_fixed_order() {
    // types anywhere in the file come before any value check
    let err = EndpointPolicies::from_toml_str(
        "[default]\nmultiplier = 0.5\n[[routes]]\npolicy = { max_retries = \"x\" }",
    )
    .unwrap_err();
    assert_eq!(err.field(), "routes[0].policy.max_retries");
    // then the default policy, then the routes in order
    let err = EndpointPolicies::from_toml_str(
        "[[routes]]\npolicy = { multiplier = 0.1 }\n[default]\nmultiplier = 0.5",
    )
    .unwrap_err();
    assert_eq!(err.field(), "default.multiplier");
    // within a route: its own keys, then its policy
    let err = EndpointPolicies::from_toml_str(
        "[[routes]]\npath_prefix = \"x\"\npolicy = { multiplier = 0.1 }",
    )
    .unwrap_err();
    assert_eq!(err.field(), "routes[0].path_prefix");
    // hosts and globs last, as the set's builder checks them
    let err = EndpointPolicies::from_toml_str(
        "[[routes]]\nhost = \"bad host\"\npolicy = {}\n[[routes]]\npolicy = { multiplier = 0.1 }",
    )
    .unwrap_err();
    assert_eq!(err.field(), "routes[1].policy.multiplier");
    // and the builder's own order within a policy
    let err = RetryPolicy::from_toml_str("multiplier = 0.5\ninitial_backoff = \"0s\"").unwrap_err();
    assert_eq!(err.field(), "initial_backoff");
    // the policy's own settings, then budget, breaker and rate limit,
    // whatever their order in the file
    let all_bad = "rate_limit = { requests = 0, per = \"1s\" }\n\
                   circuit_breaker = { failure_ratio = 2 }\n\
                   retry_budget = { retry_cost = 0 }\n\
                   multiplier = 0.5";
    let order = [
        ("multiplier = 0.5\n", "multiplier"),
        (
            "retry_budget = { retry_cost = 0 }\n",
            "retry_budget.retry_cost",
        ),
        (
            "circuit_breaker = { failure_ratio = 2 }\n",
            "circuit_breaker.failure_ratio",
        ),
        (
            "rate_limit = { requests = 0, per = \"1s\" }",
            "rate_limit.requests",
        ),
    ];
    let mut text = all_bad.to_owned();
    for (line, field) in order {
        let err = RetryPolicy::from_toml_str(&text).unwrap_err();
        assert_eq!(err.field(), field, "{text}");
        text = text.replace(line.trim_end(), "");
    }
    assert!(RetryPolicy::from_toml_str(&text).is_ok(), "{text}");
    // a type error inside a table comes before any value check
    let err =
        RetryPolicy::from_toml_str("multiplier = 0.5\ncircuit_breaker = { sampling_window = 30 }")
            .unwrap_err();
    assert_eq!(err.field(), "circuit_breaker.sampling_window");
}

#[test]
fn nothing_is_half_applied() {
    // A file whose last setting is bad yields no policy at all: the only
    // way to get a value is a file without problems.
    let good_then_bad = "max_retries = 9\ndeadline = \"1m\"\njitter = \"fuzzy\"";
    assert!(RetryPolicy::from_toml_str(good_then_bad).is_err());
    let good_routes_then_bad = r#"{"routes": [
        {"host": "a.example", "policy": {"max_retries": 9}},
        {"host": "b.example", "policy": {"max_retries": 9}},
        {"host": "c example", "policy": {}}
    ]}"#;
    let err = EndpointPolicies::from_json_str(good_routes_then_bad).unwrap_err();
    assert_eq!(err.field(), "routes[2].host");
}

#[test]
fn never_panics_on_odd_input() {
    let odd = [
        "\u{0}",
        "é = 1",
        "[routes]\nhost = 1",
        "routes = 5",
        "[[routes]]\n[[routes.policy]]",
        "max_retries = 1e400",
        "multiplier = 1e400",
        "deadline = \"\"",
        "deadline = \"1\"",
        "deadline = \"é\"",
        "initial_backoff = \"1ns\"",
        "{\"routes\": [{\"host\": \"\", \"policy\": {}}]}",
        "{\"routes\": [{\"path_glob\": \"***\", \"policy\": {}}]}",
        "{\"routes\": [{\"path_glob\": \"[\", \"policy\": {}}]}",
        "[[[",
        "{{{",
        "retry_budget = { capacity = 4294967295, retry_cost = 4294967295, timeout_cost = 4294967295 }",
        "circuit_breaker = { failure_ratio = -inf }",
        "circuit_breaker = { failure_ratio = 1e400 }",
        "rate_limit = { requests = 1, per = \"365days\" }",
        "rate_limit = { requests = 4294967295, per = \"1s\", max_wait = \"0s\" }",
        "{\"rate_limit\": {\"requests\": 1, \"per\": \"1s\", \"requests\": 2}}",
        "{\"circuit_breaker\": {\"failure_ratio\": null}}",
        "[rate_limit]\n[rate_limit.requests]",
    ];
    for text in odd {
        let _ = RetryPolicy::from_toml_str(text);
        let _ = RetryPolicy::from_json_str(text);
        let _ = EndpointPolicies::from_toml_str(text);
        let _ = EndpointPolicies::from_json_str(text);
    }
    // deep nesting is refused by the parsers' depth limits, not by a stack
    // overflow
    let deep_toml = format!("seed = {}", "[".repeat(100_000));
    let deep_json = format!("{{\"seed\": {}", "[".repeat(100_000));
    assert!(RetryPolicy::from_toml_str(&deep_toml).is_err());
    assert!(RetryPolicy::from_json_str(&deep_json).is_err());
    assert!(EndpointPolicies::from_toml_str(&deep_toml).is_err());
    assert!(EndpointPolicies::from_json_str(&deep_json).is_err());
    // a one-nanosecond backoff is valid, as with the builder
    assert_eq!(
        RetryPolicy::from_toml_str("initial_backoff = \"1ns\"")
            .unwrap()
            .initial_backoff(),
        Duration::from_nanos(1)
    );
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    name: String,
    retry: RetryPolicy,
    endpoints: EndpointPolicies,
}

#[test]
fn policies_and_sets_deserialize_inside_an_applications_own_config() {
    let json =
        format!(r#"{{"name": "indexer", "retry": {EVERY_SETTING_JSON}, "endpoints": {SET_JSON}}}"#);
    let app: AppConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(app.name, "indexer");
    assert_eq!(dbg(&app.retry), dbg(&every_setting_built()));
    assert_eq!(dbg(&app.endpoints), dbg(&set_built()));

    let toml = format!(
        "name = \"indexer\"\n[retry]\n{EVERY_SETTING_TOML}\n[endpoints]\nwell_known = true\n[[endpoints.routes]]\nhost = \"a.example\"\npolicy = {{ preset = \"git\" }}"
    );
    let app: AppConfig = toml::from_str(&toml).unwrap();
    assert_eq!(dbg(&app.retry), dbg(&every_setting_built()));
    assert_eq!(
        select(&app.endpoints, Method::GET, "https://a.example/").preset(),
        Some(Preset::Git)
    );

    // the same checks, the message naming the key inside the policy or set
    let cases = [
        (
            r#"{"name": "x", "retry": {"multiplier": 0.5}, "endpoints": {}}"#,
            "`multiplier` must be at least 1",
        ),
        (
            r#"{"name": "x", "retry": {"jitter": "fuzzy"}, "endpoints": {}}"#,
            "unknown jitter `fuzzy`",
        ),
        (
            r#"{"name": "x", "retry": {"retries": 1}, "endpoints": {}}"#,
            "unknown field `retries`",
        ),
        (
            r#"{"name": "x", "retry": [], "endpoints": {}}"#,
            "expected a table",
        ),
        (
            r#"{"name": "x", "retry": {}, "endpoints": {"routes": [{"host": "a b", "policy": {}}]}}"#,
            "`routes[0].host` `a b` is not a host name",
        ),
        (
            r#"{"name": "x", "retry": {}, "endpoints": {"routes": [{"policy": {"deadline": "0s"}}]}}"#,
            "`routes[0].policy.deadline` must be greater than zero",
        ),
        (
            r#"{"name": "x", "retry": {"circuit_breaker": {"failure_ratio": 2}}, "endpoints": {}}"#,
            "`circuit_breaker.failure_ratio` must lie in (0, 1]",
        ),
        (
            r#"{"name": "x", "retry": {}, "endpoints": {"default": {"rate_limit": {"requests": 0, "per": "1s"}}}}"#,
            "`default.rate_limit.requests` must be greater than zero",
        ),
    ];
    for (text, want) in cases {
        let err = serde_json::from_str::<AppConfig>(text).err().unwrap();
        assert!(err.to_string().contains(want), "{text}: {err}");
    }
}

/// What `{ max_retries = 0, return_last_response = true }` builds (not
/// `RetryPolicy::disabled()`, which also turns load protection off).
fn no_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(0)
        .return_last_response(true)
        .build()
        .unwrap()
}

/// The README's configuration snippets load as endpoint sets (one with a
/// shared `store` through `config::Config`, which the synchronous loaders
/// refuse).
#[test]
fn readme_toml_snippets_load() {
    let readme = include_str!("../README.md");
    let mut found = 0;
    for block in readme.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        let set = match EndpointPolicies::from_toml_str(text) {
            Err(e) if e.field() == "store" => {
                #[cfg(feature = "redis")]
                {
                    let config = http_resilience::config::Config::from_toml_str(text)
                        .unwrap_or_else(|e| panic!("README snippet does not load: {e}\n{text}"));
                    assert!(config.store().is_some());
                    config.policies().clone()
                }
                #[cfg(not(feature = "redis"))]
                continue;
            }
            set => set.unwrap_or_else(|e| panic!("README snippet does not load: {e}\n{text}")),
        };
        assert!(set.routes().len() > 0);
        found += 1;
    }
    assert!(found >= 1, "no TOML snippet in the README");
}

// ------------------------------------------------------------ request cost

#[test]
fn request_cost_takes_a_number_or_github_points() {
    use http_resilience::policy::RequestCost;
    for (toml, want) in [
        ("request_cost = 3", RequestCost::Fixed(3)),
        (
            "request_cost = \"github_points\"",
            RequestCost::GitHubPoints,
        ),
        ("", RequestCost::Fixed(1)),
    ] {
        let policy = RetryPolicy::from_toml_str(toml).unwrap();
        assert_eq!(policy.request_cost(), &want, "{toml}");
    }
    let json = RetryPolicy::from_json_str(r#"{"request_cost": "github_points"}"#).unwrap();
    assert_eq!(json.request_cost(), &RequestCost::GitHubPoints);
    let built = RetryPolicy::builder()
        .request_cost(RequestCost::Fixed(3))
        .build()
        .unwrap();
    assert_eq!(
        dbg(&RetryPolicy::from_toml_str("request_cost = 3").unwrap()),
        dbg(&built)
    );
    // bad values name their key path
    let err = RetryPolicy::from_toml_str("request_cost = 0").unwrap_err();
    assert_eq!(err.field(), "request_cost");
    assert_eq!(err.reason(), "must be greater than zero");
    for (toml, field, reason) in [
        (
            "[default]\nrequest_cost = -1",
            "default.request_cost",
            "-1 is not a cost",
        ),
        (
            "[[routes]]\npolicy = { request_cost = \"points\" }",
            "routes[0].policy.request_cost",
            "unknown request_cost `points`",
        ),
        (
            "[default]\nrequest_cost = 1.5",
            "default.request_cost",
            "a number of turns",
        ),
        (
            "[default]\nrequest_cost = 0",
            "default.request_cost",
            "must be greater than zero",
        ),
    ] {
        let err = EndpointPolicies::from_toml_str(toml).unwrap_err();
        assert_eq!(err.field(), field, "{toml}: {err}");
        assert!(err.reason().contains(reason), "{toml}: {err}");
    }
}

// ------------------------------------------------------------------- store

/// The synchronous loaders refuse a shared store rather than run without
/// it, and a store inside a policy is refused, saying where it goes.
#[test]
fn the_synchronous_loaders_refuse_a_store() {
    let set = r#"store = { redis = "redis://127.0.0.1:6379" }"#;
    let err = EndpointPolicies::from_toml_str(set).unwrap_err();
    assert_eq!(err.field(), "store");
    if cfg!(feature = "redis") {
        assert!(err.reason().contains("config::Config"), "{err}");
    } else {
        assert!(err.reason().contains("`redis` feature"), "{err}");
    }
    let err = EndpointPolicies::from_json_str(r#"{"store": {"redis": "redis://h"}}"#).unwrap_err();
    assert_eq!(err.field(), "store");
    for (err, field) in [
        (
            RetryPolicy::from_toml_str(r#"store = { redis = "redis://h" }"#).unwrap_err(),
            "store",
        ),
        (
            EndpointPolicies::from_toml_str("[default]\nstore = { redis = \"redis://h\" }")
                .unwrap_err(),
            "default.store",
        ),
    ] {
        assert_eq!(err.field(), field, "{err}");
        assert!(
            err.reason().contains("top of an endpoint-set document"),
            "{err}"
        );
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_store_table_is_checked_without_a_network_and_bad_values_name_their_key() {
    use http_resilience::config::Config;
    use http_resilience::store::{Fallback, HoldSync};

    let config = Config::from_toml_str(
        r#"
        well_known = true
        [store]
        redis = "redis://user:hunter2@127.0.0.1:6379/2"
        prefix = "batch-job"
        call_timeout = "20ms"
        connect_timeout = "2s"
        fallback = "refuse"
        retry_interval = "500ms"
        heartbeat = "2s"
        hold_sync = "50ms"
        shared_budget = true
        share_open_circuits = true
        expected_processes = 8
        start_without_redis = true
        [default]
        rate_limit = { requests = 20, per = "1s" }
        "#,
    )
    .unwrap();
    let store = dbg(config.store().unwrap());
    for part in [
        "prefix: \"batch-job\"",
        "call_timeout: 20ms",
        "connect_timeout: 2s",
        "fallback: Refuse",
        "retry_interval: 500ms",
        "heartbeat: 2s",
        "hold_sync: Poll(50ms)",
        "shared_budget: true",
        "share_open: true",
        "expected_processes: 8",
        "start_without_redis: true",
    ] {
        assert!(store.contains(part), "{part} in {store}");
    }
    assert!(!store.contains("hunter2"), "{store}");
    assert_eq!(
        config
            .policies()
            .default_policy()
            .rate_limit()
            .unwrap()
            .requests(),
        20
    );
    let _ = (Fallback::Local, HoldSync::Subscribe);
    // JSON, and the defaults
    let config = Config::from_json_str(r#"{"store": {"redis": "redis://127.0.0.1"}}"#).unwrap();
    let store = dbg(config.store().unwrap());
    assert!(store.contains("prefix: \"http-resilience\""), "{store}");
    assert!(store.contains("hold_sync: Subscribe"), "{store}");
    // no store: the policies as they are
    assert!(Config::from_toml_str("").unwrap().store().is_none());

    for (table, field, reason) in [
        ("prefix = \"a b\"", "store.prefix", "must be 1 to 64 bytes"),
        (
            "call_timeout = \"0s\"",
            "store.call_timeout",
            "must be greater than zero",
        ),
        (
            "heartbeat = \"2h\"",
            "store.heartbeat",
            "must be at most 1 hour (got 7200s)",
        ),
        (
            "retry_interval = \"soon\"",
            "store.retry_interval",
            "is not a duration",
        ),
        (
            "fallback = \"open\"",
            "store.fallback",
            "unknown fallback `open`",
        ),
        (
            "hold_sync = \"push\"",
            "store.hold_sync",
            "neither \"subscribe\" nor a duration",
        ),
        (
            "hold_sync = \"0s\"",
            "store.hold_sync",
            "must be greater than zero",
        ),
        (
            "expected_processes = 0",
            "store.expected_processes",
            "must be greater than zero",
        ),
        (
            "shared_budget = \"yes\"",
            "store.shared_budget",
            "invalid type",
        ),
        ("budget = true", "store.budget", "unknown field `budget`"),
    ] {
        let toml = format!("[store]\nredis = \"redis://127.0.0.1\"\n{table}");
        let err = Config::from_toml_str(&toml).unwrap_err();
        assert_eq!(err.field(), field, "{table}: {err}");
        assert!(err.reason().contains(reason), "{table}: {err}");
    }
    let err = Config::from_toml_str("[store]\nprefix = \"x\"").unwrap_err();
    assert_eq!(err.field(), "store");
    assert!(err.reason().contains("missing field `redis`"), "{err}");
    let err =
        Config::from_toml_str("[store]\nredis = \"http://user:hunter2@example.com\"").unwrap_err();
    assert_eq!(err.field(), "store.redis");
    assert!(err.reason().contains("invalid Redis URL"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // a bad policy in the same document is reported as without a store
    let err =
        Config::from_toml_str("store = { redis = \"redis://h\" }\n[default]\nmultiplier = 0.5")
            .unwrap_err();
    assert_eq!(err.field(), "default.multiplier");
}

/// Issue 16's keys: the policy's name (its metrics label) and the header
/// that carries the attempt number on resends; bad values name their key
/// path, in a policy file and in a route's policy.
#[test]
fn name_and_attempt_header_load_and_bad_values_name_their_key() {
    use Fmt::{Json, Toml};
    let toml =
        RetryPolicy::from_toml_str("name = \"billing\"\nattempt_header = \"X-Attempt\"").unwrap();
    let json = RetryPolicy::from_json_str(r#"{"name": "billing", "attempt_header": "x-attempt"}"#)
        .unwrap();
    let built = RetryPolicy::builder()
        .name("billing")
        .attempt_header("x-attempt")
        .build()
        .unwrap();
    for p in [&toml, &json] {
        assert_eq!(p.name(), Some("billing"));
        assert_eq!(p.attempt_header().map(|h| h.as_str()), Some("x-attempt"));
        assert_eq!(dbg(p), dbg(&built));
    }
    // A preset's policy is named after it unless the file names it.
    let github = RetryPolicy::from_toml_str("preset = \"github\"").unwrap();
    assert_eq!(github.name(), Some("github"));
    let named = RetryPolicy::from_toml_str("preset = \"github\"\nname = \"gh\"").unwrap();
    assert_eq!(named.name(), Some("gh"));
    assert_eq!(RetryPolicy::from_toml_str("").unwrap().name(), None);

    let cases: &[(&str, Fmt, &str, &str, &str)] = &[
        (
            "empty name",
            Toml,
            "name = \"\"",
            "name",
            "1 to 64 characters",
        ),
        (
            "long name",
            Json,
            &format!(r#"{{"name": "{}"}}"#, "n".repeat(65)),
            "name",
            "1 to 64 characters long (got 65)",
        ),
        (
            "control character",
            Json,
            r#"{"name": "a\nb"}"#,
            "name",
            "printable ASCII",
        ),
        (
            "name not a string",
            Toml,
            "name = 3",
            "name",
            "expected a string",
        ),
        (
            "not a header name",
            Toml,
            "attempt_header = \"bad name\"",
            "attempt_header",
            "must be a valid header name",
        ),
        (
            "a credential header",
            Json,
            r#"{"attempt_header": "Authorization"}"#,
            "attempt_header",
            "must not be `authorization`",
        ),
        (
            "a connection header",
            Toml,
            "attempt_header = \"connection\"",
            "attempt_header",
            "must not be `connection`",
        ),
        (
            "the idempotency key",
            Toml,
            "attempt_header = \"idempotency-key\"",
            "attempt_header",
            "must not be `idempotency-key`",
        ),
    ];
    for (what, format, input, field, reason) in cases {
        check(what, &policy_err(*format, input), field, reason);
    }
    let err = EndpointPolicies::from_toml_str(
        "[[routes]]\nhost = \"api.example.com\"\npolicy = { attempt_header = \"cookie\" }",
    )
    .unwrap_err();
    check(
        "in a route",
        &err,
        "routes[0].policy.attempt_header",
        "cookie",
    );
    let err = EndpointPolicies::from_json_str(r#"{"default": {"name": ""}}"#).unwrap_err();
    check("in the default", &err, "default.name", "1 to 64");
}

#[test]
fn hedging_loads_from_toml_and_json_as_the_builder_sets_it() {
    use http_resilience::Hedging;
    let built = RetryPolicy::builder()
        .hedging(
            Hedging::builder()
                .delay(ms(50))
                .max_hedges(2)
                .percentile(0.95)
                .min_samples(10)
                .samples(64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let toml = RetryPolicy::from_toml_str(
        r#"
        [hedging]
        delay = "50ms"
        max_hedges = 2
        percentile = 0.95
        min_samples = 10
        samples = 64
        "#,
    )
    .unwrap();
    let json = RetryPolicy::from_json_str(
        r#"{"hedging": {"delay": "50ms", "max_hedges": 2, "percentile": 0.95,
            "min_samples": 10, "samples": 64}}"#,
    )
    .unwrap();
    assert_eq!(dbg(&toml), dbg(&built));
    assert_eq!(dbg(&json), dbg(&built));
    assert_eq!(toml.hedging(), built.hedging());
    let h = toml.hedging().unwrap();
    assert_eq!(
        (h.delay(), h.max_hedges(), h.percentile()),
        (ms(50), 2, Some(0.95))
    );
    assert_eq!((h.min_samples(), h.samples()), (10, 64));
    // `true` is the default, `false` and a missing key none; a table starts
    // from the defaults.
    let on = RetryPolicy::from_toml_str("hedging = true").unwrap();
    assert_eq!(on.hedging(), Some(&Hedging::default()));
    assert!(
        RetryPolicy::from_toml_str("hedging = false")
            .unwrap()
            .hedging()
            .is_none()
    );
    assert!(RetryPolicy::from_toml_str("").unwrap().hedging().is_none());
    let partial = RetryPolicy::from_toml_str("hedging = { max_hedges = 3 }").unwrap();
    let h = partial.hedging().unwrap();
    assert_eq!((h.delay(), h.max_hedges()), (secs(2), 3));
    // Per route: each route's policy has its own.
    let set = EndpointPolicies::from_toml_str(
        r#"
        [[routes]]
        host = "slow.example.com"
        policy = { hedging = { delay = "80ms" } }
        "#,
    )
    .unwrap();
    let slow = select(&set, Method::GET, "https://slow.example.com/x");
    assert_eq!(slow.hedging().unwrap().delay(), ms(80));
    let other = select(&set, Method::GET, "https://example.com/x");
    assert!(other.hedging().is_none());
}

#[test]
fn each_bad_hedging_value_names_its_key_and_reason() {
    use Fmt::{Json, Toml};
    let cases: &[(&str, Fmt, &str, &str, &str)] = &[
        (
            "zero delay",
            Toml,
            r#"hedging = { delay = "0s" }"#,
            "hedging.delay",
            "must be greater than zero",
        ),
        (
            "bare number delay",
            Toml,
            "hedging = { delay = 50 }",
            "hedging.delay",
            "",
        ),
        (
            "delay not a duration",
            Json,
            r#"{"hedging": {"delay": "soon"}}"#,
            "hedging.delay",
            "",
        ),
        (
            "infinite delay",
            Toml,
            r#"hedging = { delay = "1000years" }"#,
            "hedging.delay",
            "must be at most 365 days",
        ),
        (
            "no hedges",
            Toml,
            "hedging = { max_hedges = 0 }",
            "hedging.max_hedges",
            "must be greater than zero",
        ),
        (
            "too many hedges",
            Json,
            r#"{"hedging": {"max_hedges": 5}}"#,
            "hedging.max_hedges",
            "must be at most 4 (got 5)",
        ),
        (
            "negative hedges",
            Toml,
            "hedging = { max_hedges = -1 }",
            "hedging.max_hedges",
            "",
        ),
        (
            "percentile above 1",
            Toml,
            "hedging = { percentile = 95 }",
            "hedging.percentile",
            "must lie in (0, 1] (got 95)",
        ),
        (
            "zero percentile",
            Json,
            r#"{"hedging": {"percentile": 0}}"#,
            "hedging.percentile",
            "must lie in (0, 1] (got 0)",
        ),
        (
            "percentile not a number",
            Toml,
            "[hedging]\npercentile = nan",
            "hedging.percentile",
            "must lie in (0, 1] (got NaN)",
        ),
        (
            "percentile as a word",
            Json,
            r#"{"hedging": {"percentile": "p95"}}"#,
            "hedging.percentile",
            "invalid type: string \"p95\", expected f64",
        ),
        (
            "zero samples",
            Toml,
            "hedging = { samples = 0 }",
            "hedging.samples",
            "must be greater than zero",
        ),
        (
            "too many samples",
            Toml,
            "hedging = { samples = 100000 }",
            "hedging.samples",
            "must be at most 1024 (got 100000)",
        ),
        (
            "zero min_samples",
            Toml,
            "hedging = { min_samples = 0 }",
            "hedging.min_samples",
            "must be greater than zero",
        ),
        (
            "min_samples above samples",
            Toml,
            "hedging = { samples = 10, min_samples = 11 }",
            "hedging.min_samples",
            "must not exceed samples (11 > 10)",
        ),
        (
            "unknown key",
            Toml,
            r#"hedging = { after = "1s" }"#,
            "hedging.after",
            "unknown field `after`",
        ),
        (
            "not a table",
            Json,
            r#"{"hedging": "50ms"}"#,
            "hedging",
            "`true` (hedging with the defaults), `false` (no hedging) or a hedging table",
        ),
    ];
    for (what, format, text, field, reason) in cases {
        check(what, &policy_err(*format, text), field, reason);
    }
    // In an endpoint set, under the route's path.
    let err = set_err(
        Fmt::Toml,
        r#"
        [[routes]]
        host = "a.example.com"
        policy = { hedging = { percentile = 1.5 } }
        "#,
    );
    check(
        "in a route",
        &err,
        "routes[0].policy.hedging.percentile",
        "must lie in (0, 1] (got 1.5)",
    );
    let err = set_err(Fmt::Json, r#"{"default": {"hedging": {"max_hedges": 9}}}"#);
    check(
        "in the default",
        &err,
        "default.hedging.max_hedges",
        "must be at most 4 (got 9)",
    );
}
