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
//! | `replay_buffer` | integer ≥ 0, bytes (`0` for none) | [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer) |
//! | `resume_bodies` | boolean | [`resume_bodies`](crate::RetryPolicyBuilder::resume_bodies) |
//! | `max_resumes` | integer ≥ 0 | [`max_resumes`](crate::RetryPolicyBuilder::max_resumes) |
//! | `body_idle_timeout` | duration | [`body_idle_timeout`](crate::RetryPolicyBuilder::body_idle_timeout) |
//! | `name` | string, 1 to 64 printable ASCII characters | [`name`](crate::RetryPolicyBuilder::name) |
//! | `attempt_header` | a header name (`"x-attempt"`), not a connection, credential or idempotency header | [`attempt_header`](crate::RetryPolicyBuilder::attempt_header) |
//! | `hedging` | `true`, `false` or a table (see [below](#hedged-requests)) | [`hedging`](crate::RetryPolicyBuilder::hedging) |
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
//! # Hedged requests
//!
//! `hedging` takes `true` ([`Hedging::default`](crate::Hedging::default):
//! a copy after 2 s), `false` (none; what a key left out means too, unless
//! a preset had it) or a table of overrides on the defaults, every key
//! optional (see [`hedging`](crate::hedging)):
//!
//! ```toml
//! [hedging]
//! delay = "50ms"      # the fixed delay, and the delay until enough was learned
//! max_hedges = 1      # in 1..=4
//! percentile = 0.95   # learn the delay per endpoint; in (0, 1]; default: none (fixed)
//! min_samples = 20    # latencies before the learned delay is used; in 1..=samples
//! samples = 128       # recent latencies kept per endpoint; in 1..=1024
//! ```
//!
//! It is a policy key like the others: per route in an endpoint set. Bad
//! values name their key path (`routes[0].policy.hedging.percentile`).
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::RetryPolicy;
//!
//! let policy = RetryPolicy::from_toml_str(r#"hedging = { delay = "50ms", percentile = 0.95 }"#)?;
//! let hedging = policy.hedging().unwrap();
//! assert_eq!(hedging.delay(), Duration::from_millis(50));
//! assert_eq!(hedging.percentile(), Some(0.95));
//! let err = RetryPolicy::from_toml_str("hedging = { max_hedges = 0 }").unwrap_err();
//! assert_eq!(err.field(), "hedging.max_hedges");
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
//! [`Route`](crate::Route) and [`EndpointPolicies`].
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

use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::endpoint::EndpointPolicies;
use crate::policy::{ConfigError, RetryPolicy};

mod spec;
mod word;

use spec::{EndpointsSpec, PolicySpec, Table};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use shared::Config;

/// A document with a shared store (the `redis` feature).
#[cfg(feature = "redis")]
mod shared {
    use std::path::Path;
    use std::sync::Arc;

    use super::spec::{EndpointsSpec, Table};
    use super::{Format, parse_json, parse_toml, read};
    use crate::endpoint::EndpointPolicies;
    use crate::policy::ConfigError;
    use crate::protection::store::StateStore;
    use crate::protection::store::redis::{RedisStoreBuilder, StoreError};

    /// An endpoint-set document whose policies share a
    /// [`RedisStore`](crate::protection::store::redis::RedisStore), read and
    /// checked but not yet connected: [`connect`](Self::connect) reaches
    /// Redis and gives the policies. Reading checks everything it can
    /// without a network (every key, the store's settings and URL) and
    /// fails as the synchronous loaders do, naming the key
    /// (`store.call_timeout`); connecting fails only for the server
    /// ([`StoreError::Unreachable`]).
    ///
    /// The document is an endpoint set (see the [module docs](super#an-endpoint-set))
    /// with a `[store]` table at its top; a single policy goes under
    /// `[default]`. Every policy of the set, the well-known routes' too,
    /// keeps its state in the one store:
    ///
    /// ```toml
    /// [store]                     # or inline: store = { redis = "redis://127.0.0.1:6379", prefix = "batch" }
    /// redis = "redis://127.0.0.1:6379"   # required: redis://[user:password@]host:port[/db]
    /// prefix = "batch-job"        # default "http-resilience"; processes with one prefix share
    /// call_timeout = "50ms"       # the longest a request waits on Redis
    /// connect_timeout = "1s"
    /// fallback = "local"          # "local" (each process's share), "allow" or "refuse"
    /// retry_interval = "1s"       # how often Redis is tried again while it is gone
    /// heartbeat = "1s"            # a process counts as live for 3
    /// hold_sync = "subscribe"     # or a polling interval: "50ms"
    /// shared_budget = false       # one retry budget for the fleet
    /// share_open_circuits = false # tell the fleet when a breaker opens
    /// expected_processes = 1      # the share before the first heartbeat
    /// start_without_redis = false # start locally when Redis cannot be reached
    ///
    /// [default]
    /// rate_limit = { requests = 5000, per = "1h", burst = 100 }
    /// ```
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use http_resilience::config::Config;
    ///
    /// let policies = Config::from_toml_str(r#"
    ///     store = { redis = "redis://127.0.0.1:6379", prefix = "nightly-sync" }
    ///     [default]
    ///     rate_limit = { requests = 5000, per = "1h", burst = 100 }
    /// "#)?
    /// .connect()
    /// .await?;
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(http_resilience::RetryMiddleware::new(policies))
    ///     .build();
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    ///
    /// The synchronous loaders ([`EndpointPolicies::from_toml_str`] and the
    /// others) refuse a `store` (the key `store`, naming this loader)
    /// rather than silently run without it, and a `store` inside a policy
    /// table is refused too.
    ///
    /// ```
    /// use http_resilience::config::Config;
    /// use http_resilience::EndpointPolicies;
    ///
    /// let err = Config::from_toml_str(r#"store = { redis = "redis://127.0.0.1", call_timeout = "0s" }"#)
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "store.call_timeout");
    /// assert_eq!(err.reason(), "must be greater than zero");
    /// let err = EndpointPolicies::from_toml_str(r#"store = { redis = "redis://127.0.0.1" }"#)
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "store");
    /// ```
    #[derive(Debug)]
    pub struct Config {
        policies: EndpointPolicies,
        store: Option<RedisStoreBuilder>,
    }

    impl Config {
        /// Reads a document from TOML: all or nothing, any problem an error
        /// naming the key.
        pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
            Config::of(parse_toml::<Table<EndpointsSpec>>(toml)?.0)
        }

        /// Reads a document from JSON (the same keys).
        pub fn from_json_str(json: &str) -> Result<Config, ConfigError> {
            Config::of(parse_json::<Table<EndpointsSpec>>(json)?.0)
        }

        /// Reads a `.toml` or `.json` file (chosen by the extension).
        pub fn from_path(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
            let (format, text) = read(path.as_ref())?;
            match format {
                Format::Toml => Config::from_toml_str(&text),
                Format::Json => Config::from_json_str(&text),
            }
        }

        fn of(mut spec: EndpointsSpec) -> Result<Config, ConfigError> {
            let store = spec.store.take().map(|t| t.0.build()).transpose();
            let policies = spec.build()?;
            Ok(Config {
                policies,
                store: store?,
            })
        }

        /// The policies as read, each with a store of its own in memory (what
        /// [`connect`](Self::connect) replaces).
        pub fn policies(&self) -> &EndpointPolicies {
            &self.policies
        }

        /// The store's builder, if the document has a `store`.
        pub fn store(&self) -> Option<&RedisStoreBuilder> {
            self.store.as_ref()
        }

        /// Connects the store (see
        /// [`RedisStoreBuilder::connect`]) and gives the policies, every one
        /// of them keeping its state in it. A document without a `store`
        /// gives its policies as they are. Must be called within a tokio
        /// runtime.
        pub async fn connect(self) -> Result<EndpointPolicies, StoreError> {
            let Some(builder) = self.store else {
                return Ok(self.policies);
            };
            let store: Arc<dyn StateStore> = Arc::new(builder.connect().await?);
            let mut set = EndpointPolicies::builder();
            for (route, policy) in self.policies.routes() {
                set = set.route(route.clone(), policy.with_store(store.clone()));
            }
            set = set.default_policy(self.policies.default_policy().with_store(store));
            // The routes were checked when the document was read: this
            // cannot fail, and would say so if it did.
            set.build().map_err(StoreError::InvalidSetting)
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::word::Parse;
    use super::*;
    use http::Method;

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
