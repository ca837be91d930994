//! Metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): what retries and load protection did, for a
//! dashboard.
//!
//! Install a recorder (an exporter: Prometheus, OpenTelemetry, StatsD, ...)
//! as usual, then call [`enable`] once. Until then nothing is recorded, and
//! a request pays one relaxed atomic load for the whole feature.
//!
//! ```
//! // At startup, after installing the recorder:
//! http_resilience::metrics::enable();
//! assert!(http_resilience::metrics::is_enabled());
//! ```
//!
//! # Instruments
//!
//! Names are OpenTelemetry-style (dotted, under `http_resilience.`); units
//! are given as OpenTelemetry writes them and as the `metrics` facade's
//! [`Unit`] that [`describe`] registers.
//!
//! | name | kind | unit | extra labels | recorded |
//! |---|---|---|---|---|
//! | `http_resilience.attempts` | counter | `{attempt}` (`Count`) | `outcome`: `success`, `transient`, `permanent` | once per attempt whose outcome arrived (a response or a transport error) |
//! | `http_resilience.request.retries` | histogram | `{retry}` (`Count`) | | once per request that was retried, when it ends: its number of retries |
//! | `http_resilience.retry.delay` | histogram | `s` (`Seconds`) | `source`: `backoff`, `retry_after`, `quota` | once per retry: the wait before it |
//! | `http_resilience.throttles` | counter | `{throttle}` (`Count`) | `reason`: `local_rate_limit`, `server_quota` | once per wait that load protection imposed before an attempt |
//! | `http_resilience.refusals` | counter | `{refusal}` (`Count`) | `reason`: `budget_exhausted`, `circuit_open`, `rate_limited`, `quota_held` | once per request that load protection stopped |
//! | `http_resilience.circuit.state` | gauge | `{state}` (none) | | the endpoint's breaker after each of its decisions: 0 closed, 1 half-open, 2 open |
//! | `http_resilience.budget.tokens` | gauge | `{token}` (`Count`) | | the endpoint's retry budget after each withdrawal or deposit |
//! | `http_resilience.hedges` | counter | `{hedge}` (`Count`) | `outcome`: `sent`, `won`, `skipped` | once per hedge sent, per hedged request a hedge won, per hedge that was due and not sent (its reason is in the report) |
//!
//! The `source` of a delay: `backoff` for the computed backoff,
//! `retry_after` for a server's `Retry-After`, `retry-after-ms` or a
//! provider's documented wait, `quota` for a rate-limit reset
//! (`x-ratelimit-reset`). The exact source is in the
//! [`RetryReport`] and the tracing events.
//!
//! A request that succeeds at its first attempt records one
//! `http_resilience.attempts{outcome="success"}` and nothing else.
//!
//! # Labels
//!
//! Every instrument carries `server.address` (the host) and `server.port`,
//! plus `http_resilience.policy` when the policy has a name (its preset's:
//! `github`, `openai`, ...). Never a path, a query string, a header or
//! user info: a dashboard's series stay few, and no secret reaches the
//! metrics backend. The label values of an endpoint are made once, when the
//! endpoint is first recorded; at most [`MAX_ENDPOINTS`] endpoints get
//! their own series, the others share `server.address="_other"`.
//!
//! # Cost
//!
//! Without the feature nothing of this is compiled. With it and before
//! [`enable`]: one relaxed atomic load per request. Once enabled, each
//! request finds its endpoint's handles (one hash-map lookup under a read
//! lock, no allocation) and increments them.

use ::metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, SharedString, Unit,
};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use crate::classify::Class;
use crate::protection::CircuitStatus;
use crate::report::{RetryReport, StopReason, ThrottleReason};
use crate::retry_after::DelaySource;

/// Attempts, by `outcome`.
pub const ATTEMPTS: &str = "http_resilience.attempts";
/// Retries per retried request (a histogram).
pub const REQUEST_RETRIES: &str = "http_resilience.request.retries";
/// The wait before each retry, in seconds, by `source`.
pub const RETRY_DELAY: &str = "http_resilience.retry.delay";
/// Waits imposed before attempts, by `reason`.
pub const THROTTLES: &str = "http_resilience.throttles";
/// Requests stopped by load protection, by `reason`.
pub const REFUSALS: &str = "http_resilience.refusals";
/// The breaker's state per endpoint: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "http_resilience.circuit.state";
/// Tokens left in the endpoint's retry budget.
pub const BUDGET_TOKENS: &str = "http_resilience.budget.tokens";
/// Hedges: sent, won, or due and not sent.
pub const HEDGES: &str = "http_resilience.hedges";

/// The label with the endpoint's host.
pub const SERVER_ADDRESS: &str = "server.address";
/// The label with the endpoint's port.
pub const SERVER_PORT: &str = "server.port";
/// The label with the policy's name, when it has one.
pub const POLICY: &str = "http_resilience.policy";

/// How many endpoints get series of their own; the others share
/// `server.address="_other"`, `server.port="0"` (a client that calls
/// whatever host its input names cannot grow the backend without bound).
pub const MAX_ENDPOINTS: usize = 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);

static METADATA: Metadata<'static> =
    Metadata::new("http_resilience", Level::INFO, Some(module_path!()));

/// Describes every instrument (name, unit, help) to the current recorder
/// and turns recording on. Call it once, after installing the recorder;
/// calling it again describes them again and changes nothing else.
pub fn enable() {
    describe();
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Describes every instrument of the [table](self#instruments) to the
/// current recorder, with its unit. [`enable`] does this; call it yourself
/// only to describe them to another recorder.
pub fn describe() {
    ::metrics::with_recorder(|r| {
        let counter = |name: &'static str, help: &'static str| {
            r.describe_counter(
                KeyName::from_const_str(name),
                Some(Unit::Count),
                SharedString::const_str(help),
            );
        };
        counter(
            ATTEMPTS,
            "Attempts whose outcome arrived, by outcome (success, transient, permanent).",
        );
        counter(
            THROTTLES,
            "Waits that load protection imposed before an attempt, by reason.",
        );
        counter(
            REFUSALS,
            "Requests that load protection stopped, by reason.",
        );
        counter(HEDGES, "Hedged attempts, by outcome (sent, won, skipped).");
        r.describe_histogram(
            KeyName::from_const_str(REQUEST_RETRIES),
            Some(Unit::Count),
            SharedString::const_str("Retries of each request that was retried."),
        );
        r.describe_histogram(
            KeyName::from_const_str(RETRY_DELAY),
            Some(Unit::Seconds),
            SharedString::const_str("The wait before each retry, by source."),
        );
        r.describe_gauge(
            KeyName::from_const_str(CIRCUIT_STATE),
            None,
            SharedString::const_str(
                "The endpoint's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
        );
        r.describe_gauge(
            KeyName::from_const_str(BUDGET_TOKENS),
            Some(Unit::Count),
            SharedString::const_str("Tokens left in the endpoint's retry budget."),
        );
    });
}

/// The `source` label of a retry's delay.
const fn delay_source(source: DelaySource) -> usize {
    match source {
        DelaySource::Backoff => 0,
        DelaySource::RetryAfter | DelaySource::RetryAfterMs | DelaySource::ProviderRule => 1,
        DelaySource::RateLimitReset => 2,
    }
}
const DELAY_SOURCES: [&str; 3] = ["backoff", "retry_after", "quota"];

const fn outcome(class: Class) -> usize {
    match class {
        Class::Success => 0,
        Class::Transient => 1,
        Class::Permanent => 2,
    }
}
const OUTCOMES: [&str; 3] = ["success", "transient", "permanent"];

const fn throttle(reason: ThrottleReason) -> usize {
    match reason {
        ThrottleReason::LocalRateLimit => 0,
        ThrottleReason::ServerQuota => 1,
    }
}
const THROTTLE_REASONS: [&str; 2] = ["local_rate_limit", "server_quota"];

/// A load-protection refusal, as the `reason` label of
/// [`REFUSALS`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The retry budget could not pay for a retry.
    BudgetExhausted,
    /// The circuit breaker is open (or its probes are all out).
    CircuitOpen,
    /// The local rate limit's next turn was beyond its `max_wait`.
    RateLimited,
    /// A server quota holds the request's credential beyond
    /// `max_retry_after`.
    QuotaHeld,
}

impl Refusal {
    /// A stable snake_case name: the `reason` label's value.
    pub const fn as_str(self) -> &'static str {
        REFUSAL_REASONS[self.index()]
    }

    const fn index(self) -> usize {
        match self {
            Refusal::BudgetExhausted => 0,
            Refusal::CircuitOpen => 1,
            Refusal::RateLimited => 2,
            Refusal::QuotaHeld => 3,
        }
    }

    /// The refusal a stop reason is, if any. `before_attempt`: the engine
    /// stopped the request in [`admit`](crate::engine::RetryState::admit)
    /// (where a `RetryAfterTooLong` is a server quota held too long), not
    /// in [`decide`](crate::engine::RetryState::decide) (where it is the
    /// server's hint, not load protection).
    pub const fn of(reason: StopReason, before_attempt: bool) -> Option<Refusal> {
        match reason {
            StopReason::BudgetExhausted => Some(Refusal::BudgetExhausted),
            StopReason::CircuitOpen { .. } => Some(Refusal::CircuitOpen),
            StopReason::RateLimitedLocally { .. } => Some(Refusal::RateLimited),
            StopReason::RetryAfterTooLong { .. } if before_attempt => Some(Refusal::QuotaHeld),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
const REFUSAL_REASONS: [&str; 4] = [
    "budget_exhausted",
    "circuit_open",
    "rate_limited",
    "quota_held",
];

/// The instruments of one endpoint: its labels, made once, and its
/// handles, each registered with the recorder on first use (so an
/// endpoint that never retried has no retry series).
pub(crate) struct EndpointMetrics {
    labels: Box<[Label]>,
    attempts: [OnceLock<Counter>; 3],
    retries: OnceLock<Histogram>,
    delay: [OnceLock<Histogram>; 3],
    throttles: [OnceLock<Counter>; 2],
    refusals: [OnceLock<Counter>; 4],
    circuit: OnceLock<Gauge>,
    tokens: OnceLock<Gauge>,
    hedges: [OnceLock<Counter>; 3],
}

/// What happened to a hedge, as the `outcome` label of [`HEDGES`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HedgeEvent {
    /// A hedge was sent.
    Sent,
    /// A hedge's response was handed over.
    Won,
    /// A hedge was due and not sent.
    Skipped,
}
const HEDGE_OUTCOMES: [&str; 3] = ["sent", "won", "skipped"];

impl fmt::Debug for EndpointMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointMetrics")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl EndpointMetrics {
    /// The instruments of `host:port`, under the policy named `policy`.
    pub(crate) fn new(host: &str, port: u16, policy: Option<&SharedString>) -> EndpointMetrics {
        let mut labels = vec![
            Label::new(SERVER_ADDRESS, host.to_owned()),
            Label::new(SERVER_PORT, port.to_string()),
        ];
        if let Some(name) = policy {
            labels.push(Label::new(POLICY, name.clone()));
        }
        EndpointMetrics {
            labels: labels.into_boxed_slice(),
            attempts: Default::default(),
            retries: OnceLock::new(),
            delay: Default::default(),
            throttles: Default::default(),
            refusals: Default::default(),
            circuit: OnceLock::new(),
            tokens: OnceLock::new(),
            hedges: Default::default(),
        }
    }

    fn key(&self, name: &'static str, extra: Option<(&'static str, &'static str)>) -> Key {
        let mut labels = self.labels.to_vec();
        if let Some((k, v)) = extra {
            labels.push(Label::from_static_parts(k, v));
        }
        Key::from_parts(name, labels)
    }

    fn counter(
        &self,
        slot: &OnceLock<Counter>,
        name: &'static str,
        extra: Option<(&'static str, &'static str)>,
    ) -> Counter {
        slot.get_or_init(|| {
            let key = self.key(name, extra);
            ::metrics::with_recorder(|r| r.register_counter(&key, &METADATA))
        })
        .clone()
    }

    fn histogram(
        &self,
        slot: &OnceLock<Histogram>,
        name: &'static str,
        extra: Option<(&'static str, &'static str)>,
    ) -> Histogram {
        slot.get_or_init(|| {
            let key = self.key(name, extra);
            ::metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
        })
        .clone()
    }

    fn gauge(&self, slot: &OnceLock<Gauge>, name: &'static str) -> Gauge {
        slot.get_or_init(|| {
            let key = self.key(name, None);
            ::metrics::with_recorder(|r| r.register_gauge(&key, &METADATA))
        })
        .clone()
    }

    /// An attempt whose outcome arrived, of class `class` (the report's
    /// last record).
    pub(crate) fn attempted(&self, class: Class) {
        let i = outcome(class);
        self.counter(&self.attempts[i], ATTEMPTS, Some(("outcome", OUTCOMES[i])))
            .increment(1);
    }

    /// A retry decided, after `delay` from `source`.
    pub(crate) fn retrying(&self, delay: Duration, source: DelaySource) {
        let i = delay_source(source);
        self.histogram(
            &self.delay[i],
            RETRY_DELAY,
            Some(("source", DELAY_SOURCES[i])),
        )
        .record(delay.as_secs_f64());
    }

    /// A wait before an attempt that load protection imposed.
    pub(crate) fn throttled(&self, reason: ThrottleReason) {
        let i = throttle(reason);
        self.counter(
            &self.throttles[i],
            THROTTLES,
            Some(("reason", THROTTLE_REASONS[i])),
        )
        .increment(1);
    }

    /// A request that load protection stopped.
    pub(crate) fn refused(&self, refusal: Refusal) {
        let i = refusal.index();
        self.counter(
            &self.refusals[i],
            REFUSALS,
            Some(("reason", REFUSAL_REASONS[i])),
        )
        .increment(1);
    }

    /// A request that ended (returned or stopped), with `report`: its
    /// retries, if it was retried.
    pub(crate) fn ended(&self, report: &RetryReport) {
        let retries = report.retries();
        if retries > 0 {
            self.histogram(&self.retries, REQUEST_RETRIES, None)
                .record(f64::from(retries));
        }
    }

    /// The endpoint's breaker, as it stands at `now`.
    pub(crate) fn circuit(&self, status: CircuitStatus) {
        let value = match status {
            CircuitStatus::Closed => 0.0,
            CircuitStatus::HalfOpen => 1.0,
            CircuitStatus::Open { .. } => 2.0,
        };
        self.gauge(&self.circuit, CIRCUIT_STATE).set(value);
    }

    /// A hedge sent, won or skipped.
    pub(crate) fn hedged(&self, event: HedgeEvent) {
        let i = event as usize;
        self.counter(
            &self.hedges[i],
            HEDGES,
            Some(("outcome", HEDGE_OUTCOMES[i])),
        )
        .increment(1);
    }

    /// The tokens left in the endpoint's retry budget.
    pub(crate) fn budget_tokens(&self, tokens: u32) {
        self.gauge(&self.tokens, BUDGET_TOKENS)
            .set(f64::from(tokens));
    }
}

/// One policy's endpoint instruments, found by host and port without an
/// allocation once made. Bounded by [`MAX_ENDPOINTS`].
pub(crate) struct MetricsCache {
    policy: Option<SharedString>,
    endpoints: RwLock<hashbrown::HashMap<OwnedKey, Arc<EndpointMetrics>>>,
    other: OnceLock<Arc<EndpointMetrics>>,
}

impl fmt::Debug for MetricsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsCache")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(PartialEq, Eq)]
struct OwnedKey {
    host: Box<str>,
    port: u16,
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        BorrowedKey {
            host: &self.host,
            port: self.port,
        }
        .hash(state);
    }
}

#[derive(Hash)]
struct BorrowedKey<'a> {
    host: &'a str,
    port: u16,
}

impl hashbrown::Equivalent<OwnedKey> for BorrowedKey<'_> {
    fn equivalent(&self, key: &OwnedKey) -> bool {
        *self.host == *key.host && self.port == key.port
    }
}

impl MetricsCache {
    /// The cache of a policy named `policy` (`None`: no policy label).
    pub(crate) fn new(policy: Option<SharedString>) -> MetricsCache {
        MetricsCache {
            policy,
            endpoints: RwLock::new(hashbrown::HashMap::new()),
            other: OnceLock::new(),
        }
    }

    /// The instruments of `host:port`, made on first use; `None` until
    /// [`enable`] (the only cost then: one relaxed load).
    #[inline]
    pub(crate) fn get(&self, host: &str, port: u16) -> Option<Arc<EndpointMetrics>> {
        if !is_enabled() {
            return None;
        }
        Some(self.find(host, port))
    }

    fn find(&self, host: &str, port: u16) -> Arc<EndpointMetrics> {
        let key = BorrowedKey { host, port };
        let read = self
            .endpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = read.get(&key) {
            return Arc::clone(found);
        }
        let full = read.len() >= MAX_ENDPOINTS;
        drop(read);
        if full {
            return Arc::clone(self.other.get_or_init(|| {
                Arc::new(EndpointMetrics::new("_other", 0, self.policy.as_ref()))
            }));
        }
        let mut write = self
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if write.len() >= MAX_ENDPOINTS && write.get(&key).is_none() {
            drop(write);
            return self.find(host, port);
        }
        Arc::clone(
            write
                .entry(OwnedKey {
                    host: host.into(),
                    port,
                })
                .or_insert_with(|| {
                    Arc::new(EndpointMetrics::new(host, port, self.policy.as_ref()))
                }),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The metrics' own tests, and the helpers that the engine's recording
    //! tests (`engine/metrics.rs`) read the recorder with.

    use std::time::{Duration, Instant};

    use http::HeaderMap;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;
    use crate::classify::RequestMeta;

    /// One series: its name, its labels (sorted) and its value.
    pub(crate) type Series = (String, Vec<(String, String)>, DebugValue);

    /// What the recorder holds, sorted.
    pub(crate) fn read(snap: &Snapshotter) -> Vec<Series> {
        let mut out: Vec<_> = snap
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                (key.name().to_owned(), labels, value)
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// The labels of the endpoint `h:80`, with `extra`, sorted.
    pub(crate) fn labels(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [("server.address", "h"), ("server.port", "80")]
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        v.sort();
        v
    }

    /// A histogram's values.
    pub(crate) fn histogram(values: &[f64]) -> DebugValue {
        DebugValue::Histogram(values.iter().map(|v| (*v).into()).collect())
    }

    #[test]
    fn protection_gauges_and_waits() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let m = MetricsCache::new(None).get("h", 80).unwrap();
        m.circuit(CircuitStatus::Open {
            until: Instant::now(),
        });
        m.budget_tokens(495);
        m.throttled(ThrottleReason::ServerQuota);
        let refusals = [
            StopReason::RetryAfterTooLong {
                hint: Duration::from_secs(600),
            },
            StopReason::RateLimitedLocally {
                wait: Duration::from_secs(9),
            },
            // A deadline is not load protection: no refusal.
            StopReason::Deadline,
        ];
        for reason in refusals {
            if let Some(refusal) = Refusal::of(reason, true) {
                m.refused(refusal);
            }
        }
        assert_eq!(
            read(&snap),
            vec![
                (
                    BUDGET_TOKENS.into(),
                    labels(&[]),
                    DebugValue::Gauge(495.0.into())
                ),
                (
                    CIRCUIT_STATE.into(),
                    labels(&[]),
                    DebugValue::Gauge(2.0.into())
                ),
                (
                    REFUSALS.into(),
                    labels(&[("reason", "quota_held")]),
                    DebugValue::Counter(1)
                ),
                (
                    REFUSALS.into(),
                    labels(&[("reason", "rate_limited")]),
                    DebugValue::Counter(1)
                ),
                (
                    THROTTLES.into(),
                    labels(&[("reason", "server_quota")]),
                    DebugValue::Counter(1)
                ),
            ]
        );
    }

    #[test]
    fn a_long_hint_is_a_refusal_only_before_an_attempt() {
        let long = StopReason::RetryAfterTooLong {
            hint: Duration::from_secs(600),
        };
        assert_eq!(Refusal::of(long, true), Some(Refusal::QuotaHeld));
        assert_eq!(Refusal::of(long, false), None);
        assert_eq!(
            Refusal::of(StopReason::BudgetExhausted, false),
            Some(Refusal::BudgetExhausted)
        );
        assert_eq!(Refusal::of(StopReason::MaxRetries, false), None);
        assert_eq!(Refusal::CircuitOpen.to_string(), "circuit_open");
    }

    #[test]
    fn every_instrument_is_described_with_its_unit() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let m = MetricsCache::new(None).get("h", 80).unwrap();
        m.retrying(Duration::from_millis(1), DelaySource::RateLimitReset);
        m.budget_tokens(1);
        let units: Vec<(String, Option<Unit>, bool)> = snap
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, unit, help, _)| (key.key().name().to_owned(), unit, help.is_some()))
            .collect();
        assert!(units.contains(&(RETRY_DELAY.into(), Some(Unit::Seconds), true)));
        assert!(units.contains(&(BUDGET_TOKENS.into(), Some(Unit::Count), true)));
    }

    #[test]
    fn labels_never_carry_more_than_host_port_and_policy() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let cache = MetricsCache::new(None);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        let uri: http::Uri = "http://user:pw@h:8080/v1/secret-path?key=secret"
            .parse()
            .unwrap();
        let request = http::Request::builder().uri(uri).body(()).unwrap();
        let meta = RequestMeta::from_http(&request);
        let m = cache.get(meta.host(), meta.port()).unwrap();
        m.attempted(Class::Success);
        let got = read(&snap);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].1,
            vec![
                ("outcome".to_owned(), "success".to_owned()),
                ("server.address".to_owned(), "h".to_owned()),
                ("server.port".to_owned(), "8080".to_owned()),
            ]
        );
        let text = format!("{got:?}");
        assert!(!text.contains("secret") && !text.contains("pw"), "{text}");
    }

    #[test]
    fn endpoints_beyond_the_cap_share_one_series() {
        let recorder = DebuggingRecorder::new();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let cache = MetricsCache::new(None);
        let first = cache.get("host-0", 1).unwrap();
        for i in 0..MAX_ENDPOINTS + 10 {
            cache.get(&format!("host-{i}"), 1).unwrap();
        }
        assert!(Arc::ptr_eq(&first, &cache.get("host-0", 1).unwrap()));
        let a = cache
            .get(&format!("host-{}", MAX_ENDPOINTS + 1), 1)
            .unwrap();
        let b = cache
            .get(&format!("host-{}", MAX_ENDPOINTS + 5), 1)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.labels[0].value(), "_other");
        assert_eq!(cache.endpoints.read().unwrap().len(), MAX_ENDPOINTS);
    }
}
