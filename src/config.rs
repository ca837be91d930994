//! Policies and endpoint sets from configuration files (TOML or JSON), with
//! the `serde` feature.
//!
//! - [`RetryPolicy::from_toml_str`], [`RetryPolicy::from_json_str`] and
//!   [`RetryPolicy::from_path`] read one policy;
//! - [`EndpointPolicies::from_toml_str`], [`EndpointPolicies::from_json_str`]
//!   and [`EndpointPolicies::from_path`] read a set of per-endpoint policies;
//! - both implement [`serde::Deserialize`], to sit inside an application's
//!   own configuration (any serde format), with the same keys and checks.
//!
//! # A policy
//!
//! Every key is optional; a key left out keeps the builder's default (see
//! the [`policy`](crate::policy) module), or the preset's value when
//! `preset` names one:
//!
//! | key | value | builder setting |
//! |---|---|---|
//! | `preset` | `"github"`, `"openai"`, `"anthropic"` or `"git"`: the base, whatever the key's place in the table | [`Preset::builder`](crate::Preset::builder) |
//! | `max_retries` | integer ≥ 0 | [`max_retries`](crate::RetryPolicyBuilder::max_retries) |
//! | `initial_backoff` | duration | [`initial_backoff`](crate::RetryPolicyBuilder::initial_backoff) |
//! | `max_backoff` | duration | [`max_backoff`](crate::RetryPolicyBuilder::max_backoff) |
//! | `multiplier` | number ≥ 1 | [`multiplier`](crate::RetryPolicyBuilder::multiplier) |
//! | `jitter` | `"none"`, `"full"`, `"equal"`, `"decorrelated"`, `"scaled:0.75"` | [`jitter`](crate::RetryPolicyBuilder::jitter) |
//! | `seed` | integer in [0, 2⁶⁴) | [`seed`](crate::RetryPolicyBuilder::seed) |
//! | `max_retry_after` | duration | [`max_retry_after`](crate::RetryPolicyBuilder::max_retry_after) |
//! | `on_long_hint` | `"give_up"` or `"use_backoff"` | [`on_long_hint`](crate::RetryPolicyBuilder::on_long_hint) |
//! | `deadline` | duration | [`deadline`](crate::RetryPolicyBuilder::deadline) |
//! | `attempt_timeout` | duration | [`attempt_timeout`](crate::RetryPolicyBuilder::attempt_timeout) |
//! | `retry_non_idempotent` | boolean | [`retry_non_idempotent`](crate::RetryPolicyBuilder::retry_non_idempotent) |
//! | `auto_idempotency_key` | boolean | [`auto_idempotency_key`](crate::RetryPolicyBuilder::auto_idempotency_key) |
//! | `return_last_response` | boolean | [`return_last_response`](crate::RetryPolicyBuilder::return_last_response) |
//! | `hide_paths` | boolean | [`hide_paths`](crate::RetryPolicyBuilder::hide_paths) |
//! | `retry_budget` | `true`, `false` or a table (see [below](#load-protection)) | [`retry_budget`](crate::RetryPolicyBuilder::retry_budget) |
//! | `circuit_breaker` | `true`, `false` or a table | [`circuit_breaker`](crate::RetryPolicyBuilder::circuit_breaker) |
//! | `rate_limit` | `false` or a table | [`rate_limit`](crate::RetryPolicyBuilder::rate_limit) |
//! | `server_limits` | boolean | [`server_limits`](crate::RetryPolicyBuilder::server_limits) |
//! | `max_quota_reset` | duration | [`max_quota_reset`](crate::RetryPolicyBuilder::max_quota_reset) |
//! | `quota_release_spread` | duration (`"0s"` for none) | [`quota_release_spread`](crate::RetryPolicyBuilder::quota_release_spread) |
//! | `scope` | `"endpoint"` or `"policy"` | [`scope`](crate::RetryPolicyBuilder::scope) |
//!
//! A **duration** is a string in [`humantime`]'s format: `"500ms"`, `"2m"`,
//! `"1h"`, `"1m 30s"`. Bare numbers are refused (seconds or milliseconds?).
//! The classifier and the wall clock cannot be set from a file (a preset
//! brings its classifier).
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{Preset, RetryPolicy};
//!
//! let policy = RetryPolicy::from_toml_str(r#"
//!     preset = "github"
//!     max_retries = 5
//!     deadline = "2m"
//! "#)?;
//! assert_eq!(policy.preset(), Some(Preset::GitHub));
//! assert_eq!(policy.max_retries(), 5);
//! assert_eq!(policy.initial_backoff(), Duration::from_secs(1)); // the preset's
//! assert_eq!(policy.deadline(), Some(Duration::from_secs(120)));
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! # Load protection
//!
//! The [retry budget](crate::protection#retry-budget), [circuit breaker](crate::protection#circuit-breaker),
//! [rate limit](crate::protection#rate-limit), server quota holds and their
//! [scope](crate::Scope) are policy keys like the others: they go in a
//! single-policy file, in `[default]` and in each route's `policy`, so each
//! endpoint gets its own. The three tables take every key of their type,
//! and refuse any other (`default.circuit_breaker.ratio` is an unknown
//! key):
//!
//! ```toml
//! # A table of overrides on RetryBudget::default() (every key optional);
//! # `true` is the default budget, `false` none. Left out: the base
//! # policy's (the builder's default budget, or the preset's).
//! [retry_budget]
//! capacity = 500          # tokens; at least timeout_cost
//! retry_cost = 5          # tokens a retry costs; above zero
//! timeout_cost = 10       # after a timeout; at least retry_cost
//! success_refund = 1      # back per first-attempt success
//!
//! # A table of overrides on CircuitBreaker::default() (every key optional;
//! # even `circuit_breaker = {}` turns the default breaker on); `true` is
//! # the default breaker, `false` none. Left out: none (or the preset's).
//! [circuit_breaker]
//! failure_ratio = 0.5         # in (0, 1]
//! minimum_throughput = 100    # attempts in the window before it counts
//! sampling_window = "30s"
//! break_duration = "5s"
//! half_open_probes = 1
//! max_half_open_wait = "30s"  # a new probe once the latest is out this long
//! consecutive_failures = 5    # default: off
//!
//! # `requests` per `per`, both required; `false` for none. There is no
//! # default limit, so `rate_limit = true` is refused.
//! [rate_limit]
//! requests = 5000
//! per = "1h"              # a duration
//! burst = 100             # default: requests
//! max_wait = "30s"        # default: 60s
//! ```
//!
//! and, beside them in the policy table,
//!
//! ```toml
//! server_limits = true    # hold a credential's requests when a server says its quota is gone
//! max_quota_reset = "24h" # a reset further ahead is invalid and holds nothing
//! quota_release_spread = "1s"  # held requests go over this long after the reset
//! scope = "endpoint"      # per host and port; "policy": one state for all
//! ```
//!
//! With a `preset`, these keys override the preset's settings like any
//! other: `retry_budget = false` turns off a budget the preset has. A table
//! always starts from the type's defaults, not from the preset's table.
//! Out-of-range values are the builder's errors, under the key path:
//! `routes[0].policy.circuit_breaker.failure_ratio`,
//! `default.retry_budget.timeout_cost`, `rate_limit.per`.
//!
//! ```
//! use std::time::Duration;
//! use http::{HeaderMap, Method};
//! use http_resilience::{EndpointPolicies, RequestMeta, RetryPolicy, Scope};
//!
//! let set = EndpointPolicies::from_toml_str(r#"
//!     [default]
//!     retry_budget = { capacity = 100 }
//!
//!     [[routes]]
//!     host = "api.github.com"
//!     policy = { preset = "github", rate_limit = { requests = 5000, per = "1h", burst = 100 } }
//!
//!     [[routes]]
//!     host = "*.internal.example"
//!     [routes.policy]
//!     retry_budget = false
//!     scope = "policy"
//!     [routes.policy.circuit_breaker]
//!     consecutive_failures = 5
//!     break_duration = "10s"
//! "#)?;
//! let policy_for = |host: &str| {
//!     let headers = HeaderMap::new();
//!     set.select(&RequestMeta::new(&Method::GET, "https", host, "/", &headers)).clone()
//! };
//! let github = policy_for("api.github.com");
//! assert_eq!(github.rate_limit().unwrap().burst(), 100);
//! assert_eq!(github.retry_budget().unwrap().capacity(), 500); // not [default]'s
//! let internal = policy_for("db.internal.example");
//! assert!(internal.retry_budget().is_none());
//! assert_eq!(internal.circuit_breaker().unwrap().break_duration(), Duration::from_secs(10));
//! assert_eq!(internal.circuit_breaker().unwrap().failure_ratio(), 0.5); // the default's
//! assert_eq!(internal.scope(), Scope::Policy);
//! assert_eq!(policy_for("example.org").retry_budget().unwrap().capacity(), 100);
//!
//! let err = RetryPolicy::from_toml_str("circuit_breaker = { failure_ratio = 1.5 }").unwrap_err();
//! assert_eq!(err.field(), "circuit_breaker.failure_ratio");
//! assert_eq!(err.reason(), "must lie in (0, 1] (got 1.5)");
//! let err = RetryPolicy::from_json_str(r#"{"rate_limit": {"requests": 10}}"#).unwrap_err();
//! assert_eq!(err.field(), "rate_limit");
//! assert!(err.reason().starts_with("missing field `per`"));
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! # An endpoint set
//!
//! ```toml
//! # Optional: append the routes of EndpointPolicies::well_known() after the
//! # file's own (so the file's routes win). Default false.
//! well_known = true
//!
//! # Optional: the policy for requests no route matches (a policy table as
//! # above). Default: RetryPolicy::default().
//! [default]
//! max_retries = 2
//!
//! # Routes, tried in order; the first that matches wins. Every match key is
//! # optional (one left out matches anything); `policy` is required.
//! [[routes]]
//! host = "*.internal.example"   # exact, or *.domain for any subdomain
//! scheme = "https"
//! path_prefix = "/v1/"          # or path_glob = "**/info/refs", not both
//! methods = ["GET", "PUT"]      # HTTP methods, case-sensitive
//! [routes.policy]
//! preset = "github"
//! max_retries = 5
//! initial_backoff = "250ms"
//! ```
//!
//! Each route's `policy` is a policy table as above, starting from the
//! builder's defaults (or its `preset`): it does not inherit `[default]`,
//! so a route reads the same wherever it is moved.
//!
//! The same in JSON: `{"well_known": true, "default": {...}, "routes":
//! [{"host": ..., "policy": {...}}]}`. Route semantics are those of
//! [`Route`] and [`EndpointPolicies`].
//!
//! ```
//! use http::{HeaderMap, Method};
//! use http_resilience::{EndpointPolicies, Preset, RequestMeta};
//!
//! let set = EndpointPolicies::from_toml_str(r#"
//!     well_known = true
//!     [default]
//!     max_retries = 2
//!     [[routes]]
//!     host = "*.internal.example"
//!     [routes.policy]
//!     max_retries = 6
//!     deadline = "10s"
//! "#)?;
//! let policy_for = |host: &str| {
//!     let headers = HeaderMap::new();
//!     set.select(&RequestMeta::new(&Method::GET, "https", host, "/", &headers)).clone()
//! };
//! assert_eq!(policy_for("db.internal.example").max_retries(), 6);
//! assert_eq!(policy_for("api.github.com").preset(), Some(Preset::GitHub));
//! assert_eq!(policy_for("example.org").max_retries(), 2);
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! # Errors
//!
//! Loading is all or nothing: it returns a [`Result`], so a file with any
//! problem yields no policy at all, never one with some settings applied.
//! The [`ConfigError`] (code `INVALID_CONFIG`) names the key path in
//! [`field`](ConfigError::field) (`routes[1].policy.initial_backoff`,
//! `routes[0].methods[2]`, `default.jitter`) and says why in
//! [`reason`](ConfigError::reason):
//!
//! - a syntax error: the position (line and column) and the parser's
//!   message; the field is the path reached, often empty;
//! - an unknown key (at any depth), a value of the wrong type, a missing
//!   `requests` or `per` in a `rate_limit`, a duration, jitter, preset,
//!   `on_long_hint`, scope or method that does not parse: the key's path,
//!   and the message with its position;
//! - a value the builder refuses (a zero or over-365-day duration,
//!   `multiplier` below 1, `initial_backoff` above `max_backoff`, a
//!   `failure_ratio` outside (0, 1], a budget whose `timeout_cost` is below
//!   its `retry_cost`, zero `requests`): the builder's own message
//!   ([`RetryPolicyBuilder::build`](crate::RetryPolicyBuilder::build)),
//!   under the key path of the policy (`routes[1].policy.multiplier`,
//!   `default.rate_limit.requests`);
//! - a route the set refuses (a bad host or glob; both `path_prefix` and
//!   `path_glob`; a `path_prefix` not starting with `/`; an empty
//!   `methods` list; a malformed scheme): `routes[n].<key>`.
//!
//! Checks run in a fixed order, and the first problem is reported: the
//! whole file's syntax and types, then the default policy, then each route
//! in order (its scheme, path and methods, then its policy), then every
//! route's host and glob. Within a policy the builder's order holds,
//! whatever the keys' order in the file: the retry settings, then
//! `retry_budget`, `circuit_breaker` and `rate_limit`.
//!
//! ```
//! use http_resilience::RetryPolicy;
//!
//! let err = RetryPolicy::from_toml_str("multiplier = 0.5").unwrap_err();
//! assert_eq!(err.field(), "multiplier");
//! assert_eq!(err.reason(), "must be at least 1 (got 0.5)");
//!
//! let err = RetryPolicy::from_json_str(r#"{"initial_backof": "1s"}"#).unwrap_err();
//! assert_eq!(err.field(), "initial_backof");
//! assert!(err.reason().starts_with("unknown field `initial_backof`"));
//! ```

use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use http::Method;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::backoff::Jitter;
use crate::endpoint::{EndpointPolicies, Route};
use crate::policy::{ConfigError, LongHint, RetryPolicy, RetryPolicyBuilder};
use crate::presets::Preset;
use crate::protection::CircuitBreaker;
use crate::protection::RateLimit;
use crate::protection::RetryBudget;
use crate::protection::store::Scope;

impl RetryPolicy {
    /// Reads a policy from TOML (see the [`config`](crate::config) module for
    /// the keys). All or nothing: any problem is an error naming the key.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::from_toml_str(r#"
    ///     max_retries = 4
    ///     jitter = "scaled:0.75"
    /// "#)?;
    /// assert_eq!(policy.max_retries(), 4);
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn from_toml_str(toml: &str) -> Result<RetryPolicy, ConfigError> {
        parse_toml::<Table<PolicySpec>>(toml)?.0.build("")
    }

    /// Reads a policy from JSON (the same keys as
    /// [`from_toml_str`](Self::from_toml_str)).
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::from_json_str(
    ///     r#"{"preset": "openai", "deadline": "30s"}"#,
    /// )?;
    /// assert_eq!(policy.max_retries(), 2);
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn from_json_str(json: &str) -> Result<RetryPolicy, ConfigError> {
        parse_json::<Table<PolicySpec>>(json)?.0.build("")
    }

    /// Reads a policy from a `.toml` or `.json` file (chosen by the
    /// extension, case-insensitive). An unreadable file or another
    /// extension is an error with an empty field.
    pub fn from_path(path: impl AsRef<Path>) -> Result<RetryPolicy, ConfigError> {
        let (format, text) = read(path.as_ref())?;
        match format {
            Format::Toml => RetryPolicy::from_toml_str(&text),
            Format::Json => RetryPolicy::from_json_str(&text),
        }
    }
}

impl EndpointPolicies {
    /// Reads an endpoint set from TOML (see the [`config`](crate::config)
    /// module for the shape). All or nothing: any problem is an error
    /// naming the key.
    ///
    /// ```
    /// let set = http_resilience::EndpointPolicies::from_toml_str(r#"
    ///     [[routes]]
    ///     host = "uploads.example.com"
    ///     methods = ["POST"]
    ///     policy = { max_retries = 0 }
    /// "#)?;
    /// assert_eq!(set.routes().len(), 1);
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn from_toml_str(toml: &str) -> Result<EndpointPolicies, ConfigError> {
        parse_toml::<Table<EndpointsSpec>>(toml)?.0.build()
    }

    /// Reads an endpoint set from JSON (the same shape as
    /// [`from_toml_str`](Self::from_toml_str)).
    ///
    /// ```
    /// let set = http_resilience::EndpointPolicies::from_json_str(r#"{
    ///     "well_known": true,
    ///     "routes": [{"host": "*.example.com", "policy": {"preset": "git"}}]
    /// }"#)?;
    /// assert_eq!(set.routes().len(), 1 + http_resilience::EndpointPolicies::well_known().routes().len());
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn from_json_str(json: &str) -> Result<EndpointPolicies, ConfigError> {
        parse_json::<Table<EndpointsSpec>>(json)?.0.build()
    }

    /// Reads an endpoint set from a `.toml` or `.json` file (chosen by the
    /// extension, case-insensitive). An unreadable file or another
    /// extension is an error with an empty field.
    pub fn from_path(path: impl AsRef<Path>) -> Result<EndpointPolicies, ConfigError> {
        let (format, text) = read(path.as_ref())?;
        match format {
            Format::Toml => EndpointPolicies::from_toml_str(&text),
            Format::Json => EndpointPolicies::from_json_str(&text),
        }
    }
}

/// Reads a policy table inside a larger configuration, with the same keys
/// and checks as [`RetryPolicy::from_toml_str`]. A value the builder
/// refuses becomes the format's error, saying which key (the format's own
/// path, if it tracks one, stops at the policy).
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct AppConfig {
///     name: String,
///     retry: http_resilience::RetryPolicy,
/// }
///
/// let app: AppConfig = toml::from_str(r#"
///     name = "indexer"
///     [retry]
///     preset = "github"
///     max_retries = 6
/// "#).unwrap();
/// assert_eq!(app.retry.max_retries(), 6);
///
/// let err = toml::from_str::<AppConfig>("name = \"x\"\nretry = { multiplier = 0.5 }")
///     .err()
///     .unwrap();
/// assert!(err.message().contains("`multiplier` must be at least 1"));
/// ```
impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = Table::<PolicySpec>::deserialize(deserializer)?.0;
        spec.build("").map_err(|e| de::Error::custom(inline(&e)))
    }
}

/// Reads an endpoint set inside a larger configuration, with the same
/// shape and checks as [`EndpointPolicies::from_toml_str`].
impl<'de> Deserialize<'de> for EndpointPolicies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = Table::<EndpointsSpec>::deserialize(deserializer)?.0;
        spec.build().map_err(|e| de::Error::custom(inline(&e)))
    }
}

/// A [`ConfigError`] as one message inside another format's error.
fn inline(e: &ConfigError) -> String {
    if e.field().is_empty() {
        e.reason().to_owned()
    } else {
        format!("`{}` {}", e.field(), e.reason())
    }
}

enum Format {
    Toml,
    Json,
}

fn read(path: &Path) -> Result<(Format, String), ConfigError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        _ => {
            return Err(ConfigError::new(
                "",
                format!(
                    "`{}`: unknown file extension (expected .toml or .json)",
                    path.display()
                ),
            ));
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read `{}`: {e}", path.display())))?;
    Ok((format, text))
}

/// The key path serde_path_to_error reports, or "" for the document itself.
fn key_path(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." { String::new() } else { path }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Reads a whole TOML document; any error names the key path reached.
fn parse_toml<T: de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let located = |e: &toml::de::Error| {
        let mut reason = e.message().trim().replace('\n', "; ");
        if let Some(span) = e.span() {
            let (line, column) = position(text, span.start);
            let _ = write!(reason, " (line {line}, column {column})");
        }
        reason
    };
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("", format!("TOML syntax error: {}", located(&e))))?;
    serde_path_to_error::deserialize(de)
        .map_err(|e| ConfigError::new(key_path(e.path()), located(e.inner())))
}

/// Reads a whole JSON document; any error names the key path reached.
fn parse_json<T: de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_error(key_path(e.path()), e.inner()))?;
    de.end().map_err(|e| json_error(String::new(), &e))?;
    Ok(value)
}

fn json_error(field: String, err: &serde_json::Error) -> ConfigError {
    // serde_json's message ends with " at line L column C" when it knows
    // the position; say it as the TOML errors do.
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let (field, mut reason) = match err.classify() {
        serde_json::error::Category::Data => (field, message.to_owned()),
        // The path reached can end in an unnamed `?`: the position says more.
        _ => (String::new(), format!("JSON syntax error: {message}")),
    };
    if err.line() > 0 {
        let _ = write!(
            reason,
            " (line {}, column {})",
            err.line(),
            err.column().max(1)
        );
    }
    ConfigError::new(field, reason)
}

/// A policy table, every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    preset: Option<Word<Preset>>,
    max_retries: Option<u32>,
    initial_backoff: Option<Word<Duration>>,
    max_backoff: Option<Word<Duration>>,
    multiplier: Option<f64>,
    jitter: Option<Word<Jitter>>,
    seed: Option<u64>,
    max_retry_after: Option<Word<Duration>>,
    on_long_hint: Option<Word<LongHint>>,
    deadline: Option<Word<Duration>>,
    attempt_timeout: Option<Word<Duration>>,
    retry_non_idempotent: Option<bool>,
    auto_idempotency_key: Option<bool>,
    return_last_response: Option<bool>,
    hide_paths: Option<bool>,
    retry_budget: Option<Toggle<BudgetSpec>>,
    circuit_breaker: Option<Toggle<BreakerSpec>>,
    rate_limit: Option<Toggle<RateLimitSpec>>,
    server_limits: Option<bool>,
    max_quota_reset: Option<Word<Duration>>,
    quota_release_spread: Option<Word<Duration>>,
    scope: Option<Word<Scope>>,
}

impl PolicySpec {
    /// The builder's own validation; its field is put under `at`.
    fn build(self, at: &str) -> Result<RetryPolicy, ConfigError> {
        fn set<T>(
            b: RetryPolicyBuilder,
            value: Option<T>,
            f: fn(RetryPolicyBuilder, T) -> RetryPolicyBuilder,
        ) -> RetryPolicyBuilder {
            match value {
                Some(v) => f(b, v),
                None => b,
            }
        }
        let word = |w: Option<Word<Duration>>| w.map(|w| w.0);
        let mut b = match self.preset {
            Some(Word(preset)) => preset.builder(),
            None => RetryPolicy::builder(),
        };
        b = set(b, self.max_retries, RetryPolicyBuilder::max_retries);
        b = set(
            b,
            word(self.initial_backoff),
            RetryPolicyBuilder::initial_backoff,
        );
        b = set(b, word(self.max_backoff), RetryPolicyBuilder::max_backoff);
        b = set(b, self.multiplier, RetryPolicyBuilder::multiplier);
        b = set(b, self.jitter.map(|w| w.0), RetryPolicyBuilder::jitter);
        b = set(b, self.seed, RetryPolicyBuilder::seed);
        b = set(
            b,
            word(self.max_retry_after),
            RetryPolicyBuilder::max_retry_after,
        );
        b = set(
            b,
            self.on_long_hint.map(|w| w.0),
            RetryPolicyBuilder::on_long_hint,
        );
        b = set(b, word(self.deadline), RetryPolicyBuilder::deadline);
        b = set(
            b,
            word(self.attempt_timeout),
            RetryPolicyBuilder::attempt_timeout,
        );
        b = set(
            b,
            self.retry_non_idempotent,
            RetryPolicyBuilder::retry_non_idempotent,
        );
        b = set(
            b,
            self.auto_idempotency_key,
            RetryPolicyBuilder::auto_idempotency_key,
        );
        b = set(
            b,
            self.return_last_response,
            RetryPolicyBuilder::return_last_response,
        );
        b = set(b, self.hide_paths, RetryPolicyBuilder::hide_paths);
        // `false` turns off what the base (builder or preset) had; `true`
        // and a table set the crate's defaults plus the table's keys. A
        // table's own checks come after the policy's (see `build` below).
        let mut tables = Ok(());
        b = match self.retry_budget {
            None => b,
            Some(Toggle::Off) => b.retry_budget(None),
            Some(Toggle::On) => b.retry_budget(RetryBudget::default()),
            Some(Toggle::Table(spec)) => match spec.build() {
                Ok(budget) => b.retry_budget(budget),
                Err(e) => {
                    tables = tables.and(Err(e.within("retry_budget")));
                    b
                }
            },
        };
        b = match self.circuit_breaker {
            None => b,
            Some(Toggle::Off) => b.circuit_breaker(None),
            Some(Toggle::On) => b.circuit_breaker(CircuitBreaker::default()),
            Some(Toggle::Table(spec)) => match spec.build() {
                Ok(breaker) => b.circuit_breaker(breaker),
                Err(e) => {
                    tables = tables.and(Err(e.within("circuit_breaker")));
                    b
                }
            },
        };
        b = match self.rate_limit {
            None => b,
            Some(Toggle::Off) => b.rate_limit(None),
            // Refused while reading (a limit has no default quota).
            Some(Toggle::On) => b,
            Some(Toggle::Table(spec)) => match spec.build() {
                Ok(limit) => b.rate_limit(limit),
                Err(e) => {
                    tables = tables.and(Err(e.within("rate_limit")));
                    b
                }
            },
        };
        b = set(b, self.server_limits, RetryPolicyBuilder::server_limits);
        b = set(
            b,
            word(self.max_quota_reset),
            RetryPolicyBuilder::max_quota_reset,
        );
        b = set(
            b,
            word(self.quota_release_spread),
            RetryPolicyBuilder::quota_release_spread,
        );
        b = set(b, self.scope.map(|w| w.0), RetryPolicyBuilder::scope);
        let policy = b.build().map_err(|e| under(at, &e))?;
        tables.map_err(|e| under(at, &e))?;
        Ok(policy)
    }
}

/// A `retry_budget` table: every key optional, defaults as
/// [`RetryBudget::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetSpec {
    capacity: Option<u32>,
    retry_cost: Option<u32>,
    timeout_cost: Option<u32>,
    success_refund: Option<u32>,
}

impl BudgetSpec {
    fn build(self) -> Result<RetryBudget, ConfigError> {
        let mut b = RetryBudget::builder();
        if let Some(n) = self.capacity {
            b = b.capacity(n);
        }
        if let Some(n) = self.retry_cost {
            b = b.retry_cost(n);
        }
        if let Some(n) = self.timeout_cost {
            b = b.timeout_cost(n);
        }
        if let Some(n) = self.success_refund {
            b = b.success_refund(n);
        }
        b.build()
    }
}

/// A `circuit_breaker` table: every key optional, defaults as
/// [`CircuitBreaker::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerSpec {
    failure_ratio: Option<f64>,
    minimum_throughput: Option<u32>,
    sampling_window: Option<Word<Duration>>,
    break_duration: Option<Word<Duration>>,
    half_open_probes: Option<u32>,
    max_half_open_wait: Option<Word<Duration>>,
    consecutive_failures: Option<u32>,
}

impl BreakerSpec {
    fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let mut c = CircuitBreaker::builder();
        if let Some(r) = self.failure_ratio {
            c = c.failure_ratio(r);
        }
        if let Some(n) = self.minimum_throughput {
            c = c.minimum_throughput(n);
        }
        if let Some(Word(d)) = self.sampling_window {
            c = c.sampling_window(d);
        }
        if let Some(Word(d)) = self.break_duration {
            c = c.break_duration(d);
        }
        if let Some(n) = self.half_open_probes {
            c = c.half_open_probes(n);
        }
        if let Some(Word(d)) = self.max_half_open_wait {
            c = c.max_half_open_wait(d);
        }
        if let Some(n) = self.consecutive_failures {
            c = c.consecutive_failures(n);
        }
        c.build()
    }
}

/// A `rate_limit` table: `requests` and `per` required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSpec {
    requests: u32,
    per: Word<Duration>,
    burst: Option<u32>,
    max_wait: Option<Word<Duration>>,
}

impl RateLimitSpec {
    fn build(self) -> Result<RateLimit, ConfigError> {
        let mut r = RateLimit::builder(self.requests, self.per.0);
        if let Some(n) = self.burst {
            r = r.burst(n);
        }
        if let Some(Word(d)) = self.max_wait {
            r = r.max_wait(d);
        }
        r.build()
    }
}

/// A load-protection key: `false` (none), `true` (the defaults) or a table
/// of settings.
enum Toggle<T> {
    Off,
    On,
    Table(T),
}

/// What `true` means for a kind of table, or why it means nothing.
trait Defaults {
    /// The `expecting` text: what the key takes.
    const EXPECTING: &'static str;
    /// `None` if `true` is accepted, else the reason it is refused.
    const NO_DEFAULT: Option<&'static str> = None;
}

impl Defaults for BudgetSpec {
    const EXPECTING: &'static str =
        "`true` (the default budget), `false` (no budget) or a retry_budget table";
}

impl Defaults for BreakerSpec {
    const EXPECTING: &'static str =
        "`true` (the default breaker), `false` (no breaker) or a circuit_breaker table";
}

impl Defaults for RateLimitSpec {
    const EXPECTING: &'static str =
        "`false` (no limit) or a rate_limit table with `requests` and `per`";
    const NO_DEFAULT: Option<&'static str> = Some(
        "`true` is not a rate limit: write a table with `requests` and `per`, e.g. { requests = 5000, per = \"1h\" }",
    );
}

impl<'de, T: Deserialize<'de> + Defaults> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Defaults> Visitor<'de> for V<T> {
            type Value = Toggle<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<Toggle<T>, E> {
                match (on, T::NO_DEFAULT) {
                    (false, _) => Ok(Toggle::Off),
                    (true, None) => Ok(Toggle::On),
                    (true, Some(reason)) => Err(E::custom(reason)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Toggle<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Toggle::Table)
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// `e` with its field put under the key path `at`.
fn under(at: &str, e: &ConfigError) -> ConfigError {
    let field = match (at.is_empty(), e.field().is_empty()) {
        (true, _) => e.field().to_owned(),
        (false, true) => at.to_owned(),
        (false, false) => format!("{at}.{}", e.field()),
    };
    ConfigError::new(field, e.reason().to_owned())
}

/// An endpoint set document.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointsSpec {
    #[serde(default)]
    well_known: bool,
    default: Option<Table<PolicySpec>>,
    #[serde(default)]
    routes: Vec<Table<RouteSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    host: Option<String>,
    scheme: Option<String>,
    path_prefix: Option<String>,
    path_glob: Option<String>,
    methods: Option<Vec<Word<Method>>>,
    policy: Table<PolicySpec>,
}

impl RouteSpec {
    fn build(self, n: usize) -> Result<(Route, RetryPolicy), ConfigError> {
        let at = |key: &str, reason: String| ConfigError::new(format!("routes[{n}].{key}"), reason);
        let mut route = Route::any();
        if let Some(host) = self.host {
            // Checked (with the glob) when the set is built.
            route = route.and_host(host);
        }
        if let Some(scheme) = self.scheme {
            let mut bytes = scheme.bytes();
            let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
            if !valid {
                return Err(at(
                    "scheme",
                    format!("`{scheme}` is not a URL scheme (write `https`, not `https://`)"),
                ));
            }
            route = route.scheme(scheme);
        }
        match (self.path_prefix, self.path_glob) {
            (Some(_), Some(_)) => {
                return Err(at(
                    "path_glob",
                    "set either path_prefix or path_glob, not both".into(),
                ));
            }
            (Some(prefix), None) => {
                if !prefix.starts_with('/') {
                    return Err(at(
                        "path_prefix",
                        format!("`{prefix}` must start with `/` (paths always do)"),
                    ));
                }
                route = route.path_prefix(prefix);
            }
            (None, Some(glob)) => route = route.path_glob(glob),
            (None, None) => {}
        }
        if let Some(methods) = self.methods {
            if methods.is_empty() {
                return Err(at(
                    "methods",
                    "lists no method (leave the key out to match every method)".into(),
                ));
            }
            route = route.methods(methods.into_iter().map(|m| m.0));
        }
        let policy = self.policy.0.build(&format!("routes[{n}].policy"))?;
        Ok((route, policy))
    }
}

impl EndpointsSpec {
    fn build(self) -> Result<EndpointPolicies, ConfigError> {
        let mut builder = EndpointPolicies::builder();
        if let Some(default) = self.default {
            builder = builder.default_policy(default.0.build("default")?);
        }
        for (n, spec) in self.routes.into_iter().enumerate() {
            let (route, policy) = spec.0.build(n)?;
            builder = builder.route(route, policy);
        }
        if self.well_known {
            builder = builder.well_known();
        }
        builder.build().map_err(|e| {
            // The set names a glob problem `routes[n].path`: in a file that
            // is `path_glob` (prefixes cannot fail). The well-known routes,
            // after the file's, are valid.
            match e.field().strip_suffix(".path") {
                Some(route) => ConfigError::new(format!("{route}.path_glob"), e.reason().into()),
                None => e,
            }
        })
    }
}

/// A struct read from a table only: serde's derived structs also accept a
/// sequence of their fields in order, which no configuration means.
struct Table<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Table<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table (a JSON object)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Table<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Table)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// A value written as a string and parsed by [`Parse`].
struct Word<T>(T);

trait Parse: Sized {
    /// What serde says it expected when the type is wrong.
    const EXPECTING: &'static str;
    fn parse(s: &str) -> Result<Self, String>;
}

impl Parse for Duration {
    const EXPECTING: &'static str = r#"a duration such as "500ms", "2m" or "1h""#;
    fn parse(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s).map_err(|e| {
            format!(r#"`{s}` is not a duration ({e}); write e.g. "500ms", "2m" or "1h""#)
        })
    }
}

impl Parse for Jitter {
    const EXPECTING: &'static str =
        r#"a jitter: "none", "full", "equal", "decorrelated" or "scaled:<factor>""#;
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl Parse for Preset {
    const EXPECTING: &'static str = r#"a preset: "github", "openai", "anthropic" or "git""#;
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl Parse for LongHint {
    const EXPECTING: &'static str = r#""give_up" or "use_backoff""#;
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "give_up" => Ok(LongHint::GiveUp),
            "use_backoff" => Ok(LongHint::UseBackoff),
            _ => Err(format!(
                "unknown on_long_hint `{s}` (expected give_up or use_backoff)"
            )),
        }
    }
}

impl Parse for Scope {
    const EXPECTING: &'static str = r#"a scope: "endpoint" or "policy""#;
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "endpoint" => Ok(Scope::Endpoint),
            "policy" => Ok(Scope::Policy),
            _ => Err(format!("unknown scope `{s}` (expected endpoint or policy)")),
        }
    }
}

impl Parse for Method {
    const EXPECTING: &'static str = r#"an HTTP method such as "GET""#;
    fn parse(s: &str) -> Result<Self, String> {
        let method =
            Method::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not an HTTP method"))?;
        // Methods are case-sensitive: `get` is not GET and would never
        // match a real GET, so say so rather than accept a dead rule.
        let upper = s.to_ascii_uppercase();
        if upper != s && STANDARD.iter().any(|m| m.as_str() == upper) {
            return Err(format!(
                "`{s}` is not `{upper}`: methods are case-sensitive"
            ));
        }
        Ok(method)
    }
}

const STANDARD: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

impl<'de, T: Parse> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: Parse> Visitor<'_> for V<T> {
            type Value = Word<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Word<T>, E> {
                T::parse(s).map(Word).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(position("", 0), (1, 1));
        assert_eq!(position("ab\ncé\nx", 6), (2, 3));
        assert_eq!(position("ab\ncé\nx", 7), (3, 1));
        assert_eq!(position("é", 1), (1, 1)); // inside a character
        assert_eq!(position("abc", 99), (1, 4));
    }

    #[test]
    fn method_case_is_checked_only_for_standard_methods() {
        assert_eq!(Method::parse("GET"), Ok(Method::GET));
        assert!(Method::parse("get").unwrap_err().contains("case-sensitive"));
        assert_eq!(Method::parse("PROPFIND").unwrap().as_str(), "PROPFIND");
        assert_eq!(Method::parse("propfind").unwrap().as_str(), "propfind");
        assert!(Method::parse("G ET").is_err());
    }
}
