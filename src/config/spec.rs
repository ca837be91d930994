//! The documents' shapes: policy, protection and route tables, read with
//! serde and built through the builders, which do every check.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use http::Method;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::backoff::Jitter;
use crate::endpoint::{EndpointPolicies, Route};
use crate::hedging::Hedging;
use crate::policy::{ConfigError, LongHint, RequestCost, RetryPolicy, RetryPolicyBuilder};
use crate::presets::Preset;
use crate::protection::CircuitBreaker;
use crate::protection::RateLimit;
use crate::protection::RetryBudget;
use crate::protection::store::Scope;

use super::word::Word;

/// A policy table, every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicySpec {
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
    request_cost: Option<CostSpec>,
    server_limits: Option<bool>,
    max_quota_reset: Option<Word<Duration>>,
    quota_release_spread: Option<Word<Duration>>,
    scope: Option<Word<Scope>>,
    replay_buffer: Option<usize>,
    resume_bodies: Option<bool>,
    max_resumes: Option<u32>,
    body_idle_timeout: Option<Word<Duration>>,
    name: Option<String>,
    attempt_header: Option<String>,
    /// Refused with a pointer to where a store goes.
    #[allow(dead_code)]
    store: Option<NotHere>,
    hedging: Option<Toggle<HedgingSpec>>,
}

impl PolicySpec {
    /// The builder's own validation; its field is put under `at`.
    pub(super) fn build(self, at: &str) -> Result<RetryPolicy, ConfigError> {
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
        b = set(b, self.name, |b, name: String| b.name(name));
        b = set(
            b,
            self.attempt_header,
            RetryPolicyBuilder::attempt_header::<String>,
        );
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
        b = set(
            b,
            self.request_cost.map(|c| c.0),
            RetryPolicyBuilder::request_cost,
        );
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
        b = set(b, self.replay_buffer, RetryPolicyBuilder::replay_buffer);
        b = set(b, self.resume_bodies, RetryPolicyBuilder::resume_bodies);
        b = set(b, self.max_resumes, RetryPolicyBuilder::max_resumes);
        b = set(
            b,
            word(self.body_idle_timeout),
            RetryPolicyBuilder::body_idle_timeout,
        );
        b = match self.hedging {
            None => b,
            Some(Toggle::Off) => b.hedging(None),
            Some(Toggle::On) => b.hedging(Hedging::default()),
            Some(Toggle::Table(spec)) => match spec.build() {
                Ok(hedging) => b.hedging(hedging),
                Err(e) => {
                    tables = tables.and(Err(e.within("hedging")));
                    b
                }
            },
        };
        let policy = b.build().map_err(|e| under(at, &e))?;
        tables.map_err(|e| under(at, &e))?;
        Ok(policy)
    }
}

/// A `retry_budget` table: every key optional, defaults as
/// [`RetryBudget::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BudgetSpec {
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
pub(super) struct BreakerSpec {
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
pub(super) struct RateLimitSpec {
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

/// `request_cost`: a number of turns, or `"github_points"`.
pub(super) struct CostSpec(RequestCost);

impl<'de> Deserialize<'de> for CostSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CostSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a number of turns (1 or more) or "github_points""#)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<CostSpec, E> {
                // 0 is the builder's to refuse, in its words.
                let n = u32::try_from(n)
                    .map_err(|_| E::custom(format!("{n} turns is more than a rate limit holds")))?;
                Ok(CostSpec(RequestCost::Fixed(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<CostSpec, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{n} is not a cost: a request takes 1 turn or more"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CostSpec, E> {
                match s {
                    "github_points" => Ok(CostSpec(RequestCost::GitHubPoints)),
                    _ => Err(E::custom(format!(
                        "unknown request_cost `{s}` (expected a number or github_points)"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A `store` inside a policy table: refused, saying where it goes.
pub(super) struct NotHere;

impl<'de> Deserialize<'de> for NotHere {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(
            "a shared store is set once, at the top of an endpoint-set document, \
             and loaded with http_resilience::config::Config (not inside a policy)",
        ))
    }
}

/// A `hedging` table: every key optional, defaults as
/// [`Hedging::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HedgingSpec {
    delay: Option<Word<Duration>>,
    max_hedges: Option<u32>,
    percentile: Option<f64>,
    min_samples: Option<u32>,
    samples: Option<u32>,
}

impl HedgingSpec {
    fn build(self) -> Result<Hedging, ConfigError> {
        let mut h = Hedging::builder();
        if let Some(Word(d)) = self.delay {
            h = h.delay(d);
        }
        if let Some(n) = self.max_hedges {
            h = h.max_hedges(n);
        }
        if let Some(p) = self.percentile {
            h = h.percentile(p);
        }
        if let Some(n) = self.min_samples {
            h = h.min_samples(n);
        }
        if let Some(n) = self.samples {
            h = h.samples(n);
        }
        h.build()
    }
}

/// A load-protection key: `false` (none), `true` (the defaults) or a table
/// of settings.
pub(super) enum Toggle<T> {
    Off,
    On,
    Table(T),
}

/// What `true` means for a kind of table, or why it means nothing.
pub(super) trait Defaults {
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

impl Defaults for HedgingSpec {
    const EXPECTING: &'static str =
        "`true` (hedging with the defaults), `false` (no hedging) or a hedging table";
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
pub(super) fn under(at: &str, e: &ConfigError) -> ConfigError {
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
pub(super) struct EndpointsSpec {
    #[serde(default)]
    well_known: bool,
    default: Option<Table<PolicySpec>>,
    #[serde(default)]
    routes: Vec<Table<RouteSpec>>,
    /// A store shared by many processes, for every policy of the set.
    pub(super) store: Option<Table<StoreSpec>>,
}

/// A `store` table: `redis` (the URL) required, every other key optional
/// with the defaults of [`RedisStoreBuilder`](crate::protection::store::redis::RedisStoreBuilder).
#[cfg(feature = "redis")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreSpec {
    redis: String,
    prefix: Option<String>,
    call_timeout: Option<Word<Duration>>,
    connect_timeout: Option<Word<Duration>>,
    fallback: Option<Word<crate::protection::store::redis::Fallback>>,
    retry_interval: Option<Word<Duration>>,
    heartbeat: Option<Word<Duration>>,
    hold_sync: Option<Word<crate::protection::store::redis::HoldSync>>,
    shared_budget: Option<bool>,
    share_open_circuits: Option<bool>,
    expected_processes: Option<usize>,
    start_without_redis: Option<bool>,
}

#[cfg(feature = "redis")]
impl StoreSpec {
    /// The store's builder, its settings and URL checked (nothing sent);
    /// errors name their key under `store`.
    pub(super) fn build(
        self,
    ) -> Result<crate::protection::store::redis::RedisStoreBuilder, ConfigError> {
        use crate::protection::store::redis::{RedisStore, RedisStoreBuilder};
        fn set<T>(
            b: RedisStoreBuilder,
            value: Option<T>,
            f: fn(RedisStoreBuilder, T) -> RedisStoreBuilder,
        ) -> RedisStoreBuilder {
            match value {
                Some(v) => f(b, v),
                None => b,
            }
        }
        let word = |w: Option<Word<Duration>>| w.map(|w| w.0);
        let mut b = RedisStore::builder(self.redis);
        b = set(b, self.prefix, |b, p| b.prefix(p));
        b = set(b, word(self.call_timeout), RedisStoreBuilder::call_timeout);
        b = set(
            b,
            word(self.connect_timeout),
            RedisStoreBuilder::connect_timeout,
        );
        b = set(b, self.fallback.map(|w| w.0), RedisStoreBuilder::fallback);
        b = set(
            b,
            word(self.retry_interval),
            RedisStoreBuilder::retry_interval,
        );
        b = set(b, word(self.heartbeat), RedisStoreBuilder::heartbeat);
        b = set(b, self.hold_sync.map(|w| w.0), RedisStoreBuilder::hold_sync);
        b = set(b, self.shared_budget, RedisStoreBuilder::shared_budget);
        b = set(
            b,
            self.share_open_circuits,
            RedisStoreBuilder::share_open_circuits,
        );
        b = set(
            b,
            self.expected_processes,
            RedisStoreBuilder::expected_processes,
        );
        b = set(
            b,
            self.start_without_redis,
            RedisStoreBuilder::start_without_redis,
        );
        b.check().map_err(|e| e.within("store"))?;
        b.client()
            .map_err(|e| ConfigError::new("store.redis", e.to_string()))?;
        Ok(b)
    }
}

/// A `store` table without the `redis` feature: refused.
#[cfg(not(feature = "redis"))]
pub(super) struct StoreSpec;

#[cfg(not(feature = "redis"))]
impl<'de> Deserialize<'de> for StoreSpec {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(
            "a shared store needs the crate's `redis` feature, which is off",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSpec {
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
    /// The set; a `store` is refused (it needs a connection: see
    /// `Config`, which takes it out first).
    pub(super) fn build(self) -> Result<EndpointPolicies, ConfigError> {
        if self.store.is_some() {
            return Err(ConfigError::new(
                "store",
                "a shared store needs a connection: load this document with \
                 `http_resilience::config::Config::from_toml_str(..)?.connect().await` \
                 (or from_json_str, from_path)"
                    .into(),
            ));
        }
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
pub(super) struct Table<T>(pub(super) T);

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
