//! [`RetryPolicy`]: what to retry, how long to wait, and when to stop.
//!
//! Build one with [`RetryPolicy::builder`]; every setting has a documented
//! default, and [`build`](RetryPolicyBuilder::build) validates them all,
//! returning a [`ConfigError`] that names the first offending field.
//!
//! | setting | default |
//! |---|---|
//! | [`max_retries`](RetryPolicyBuilder::max_retries) | 3 |
//! | [`initial_backoff`](RetryPolicyBuilder::initial_backoff) | 500 ms |
//! | [`max_backoff`](RetryPolicyBuilder::max_backoff) | 30 s |
//! | [`multiplier`](RetryPolicyBuilder::multiplier) | 2.0 |
//! | [`jitter`](RetryPolicyBuilder::jitter) | [`Jitter::Full`] |
//! | [`seed`](RetryPolicyBuilder::seed) | none (fresh randomness) |
//! | [`max_retry_after`](RetryPolicyBuilder::max_retry_after) | 120 s |
//! | [`on_long_hint`](RetryPolicyBuilder::on_long_hint) | [`LongHint::GiveUp`] |
//! | [`deadline`](RetryPolicyBuilder::deadline) | none |
//! | [`attempt_timeout`](RetryPolicyBuilder::attempt_timeout) | none |
//! | [`retry_non_idempotent`](RetryPolicyBuilder::retry_non_idempotent) | false |
//! | [`auto_idempotency_key`](RetryPolicyBuilder::auto_idempotency_key) | false |
//! | [`return_last_response`](RetryPolicyBuilder::return_last_response) | false |
//! | [`hide_paths`](RetryPolicyBuilder::hide_paths) | false |
//! | [`classifier`](RetryPolicyBuilder::classifier) | [`DefaultClassifier`](crate::DefaultClassifier) |
//! | [`wall_clock`](RetryPolicyBuilder::wall_clock) | [`SystemClock`](crate::retry_after::SystemClock) |
//! | [`retry_budget`](RetryPolicyBuilder::retry_budget) | [`RetryBudget::default`] (AWS: 500 tokens, 5 a retry) |
//! | [`circuit_breaker`](RetryPolicyBuilder::circuit_breaker) | none |
//! | [`rate_limit`](RetryPolicyBuilder::rate_limit) | none |
//! | [`server_limits`](RetryPolicyBuilder::server_limits) | true |
//! | [`max_quota_reset`](RetryPolicyBuilder::max_quota_reset) | 24 h |
//! | [`quota_release_spread`](RetryPolicyBuilder::quota_release_spread) | 1 s |
//! | [`request_cost`](RetryPolicyBuilder::request_cost) | [`RequestCost::Fixed(1)`](RequestCost::Fixed): a request is one turn of the rate limit |
//! | [`scope`](RetryPolicyBuilder::scope) | [`Scope::Endpoint`] (host and port) |
//! | [`state_store`](RetryPolicyBuilder::state_store) | a new [`InMemoryStore`](crate::InMemoryStore) per built policy |
//! | [`replay_buffer`](RetryPolicyBuilder::replay_buffer) | 64 KiB (a streamed request body is buffered up to this, per request, to be sent again; 0: never) |
//! | [`resume_bodies`](RetryPolicyBuilder::resume_bodies) | false |
//! | [`max_resumes`](RetryPolicyBuilder::max_resumes) | 3 |
//! | [`body_idle_timeout`](RetryPolicyBuilder::body_idle_timeout) | none |
//! | [`name`](RetryPolicyBuilder::name) | the preset's name (`github`, `openai`, `anthropic`, `git`), else none |
//! | [`before_retry`](RetryPolicyBuilder::before_retry) | none |
//! | [`attempt_header`](RetryPolicyBuilder::attempt_header) | none |
//! | [`hedging`](RetryPolicyBuilder::hedging) | none (no hedged requests) |
//!
//! ## Load protection
//!
//! Each request goes through these stages, outermost first (the order of
//! .NET's standard resilience handler):
//! 1. **rate limit**: the local [`RateLimit`] and any quota a server said
//!    is gone for the request's credential
//!    ([`server_limits`](RetryPolicyBuilder::server_limits)); every
//!    attempt, retries included, waits its turn here;
//! 2. **total deadline** ([`deadline`](RetryPolicyBuilder::deadline)),
//!    counted from the first attempt;
//! 3. **retry**, each retry paid from the [`RetryBudget`];
//! 4. **circuit breaker** ([`CircuitBreaker`]), asked before every attempt;
//! 5. **attempt timeout** ([`attempt_timeout`](RetryPolicyBuilder::attempt_timeout)).
//!
//! Their state is kept per endpoint (host and port) in the policy's
//! [`StateStore`], shared by every clone of the policy and of the layers
//! and middlewares built from it; see [`store`](crate::protection::store).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderName;
use rand::Rng;

use crate::backoff::{Backoff, Jitter, Schedule, mix_seed};
use crate::classify::Classify;
use crate::hedging::Hedging;
#[cfg(feature = "metrics")]
use crate::metrics::MetricsCache;
use crate::presets::Preset;
use crate::protection::CircuitBreaker;
use crate::protection::RateLimit;
use crate::protection::RetryBudget;
use crate::protection::store::{Scope, StateStore};
use crate::resend::BeforeRetry;
use crate::retry_after::WallClock;

mod builder;
mod cost;
mod presets;

pub use crate::validate::{ConfigError, MAX_SETTING};
pub use builder::RetryPolicyBuilder;
pub use cost::RequestCost;

/// What to do when the server asks for a wait longer than
/// [`max_retry_after`](RetryPolicyBuilder::max_retry_after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LongHint {
    /// Stop at once with [`Error::RetryAfterTooLong`](crate::Error::RetryAfterTooLong)
    /// (what git and the OpenAI SDK do). The default.
    #[default]
    GiveUp,
    /// Ignore the hint and wait the computed backoff instead (what the
    /// Anthropic SDK does).
    UseBackoff,
}

/// A retry policy: cheap to clone (one reference count), shared by every
/// clone of a layer or middleware built from it.
///
/// ```
/// use std::time::Duration;
/// use http_resilience::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_retries(5)
///     .initial_backoff(Duration::from_millis(200))
///     .jitter(Jitter::Equal)
///     .deadline(Duration::from_secs(20))
///     .build()?;
/// assert_eq!(policy.max_retries(), 5);
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) max_retries: u32,
    pub(crate) schedule: Schedule,
    pub(crate) seed: Option<u64>,
    pub(crate) seed_counter: AtomicU64,
    /// Draws of the quota release spread (seeded like the backoffs, in
    /// their own sequence).
    pub(crate) spread_counter: AtomicU64,
    pub(crate) max_retry_after: Duration,
    pub(crate) on_long_hint: LongHint,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) retry_non_idempotent: bool,
    pub(crate) auto_idempotency_key: bool,
    pub(crate) return_last_response: bool,
    pub(crate) hide_paths: bool,
    pub(crate) classifier: Arc<dyn Classify>,
    pub(crate) preset: Option<Preset>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) protection: Protection,
    pub(crate) replay_buffer: usize,
    pub(crate) resumes: Resumes,
    /// Hedged requests, if on.
    pub(crate) hedging: Option<Hedging>,
    /// The `http_resilience.policy` label, and what reports call it.
    pub(crate) name: Option<Cow<'static, str>>,
    /// Called before each resend.
    pub(crate) before_retry: Option<Arc<dyn BeforeRetry>>,
    /// Carries the attempt number on resends.
    pub(crate) attempt_header: Option<HeaderName>,
    /// The policy's metric handles, per endpoint: shared by its clones (and
    /// by the copies `retry` runs make), empty until a request records.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Arc<MetricsCache>,
}

/// The default of [`RetryPolicyBuilder::replay_buffer`]: 64 KiB.
pub(crate) const DEFAULT_REPLAY_BUFFER: usize = 64 * 1024;

/// The settings of resumable response bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resumes {
    pub(crate) on: bool,
    pub(crate) max: u32,
    pub(crate) idle_timeout: Option<Duration>,
}

/// The load-protection settings of a policy and where their state lives.
pub(crate) struct Protection {
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) circuit: Option<CircuitBreaker>,
    pub(crate) rate_limit: Option<RateLimit>,
    /// The turns of `rate_limit` a request takes.
    pub(crate) cost: RequestCost,
    pub(crate) server_limits: bool,
    pub(crate) max_quota_reset: Duration,
    pub(crate) quota_release_spread: Duration,
    pub(crate) scope: Scope,
    pub(crate) store: Arc<dyn StateStore>,
}

impl Inner {
    /// The extra wait of a request held by a server quota for `hold` more:
    /// uniform in `[0, min(quota_release_spread, hold)]`, reproducible with
    /// the policy's seed.
    pub(crate) fn release_spread(&self, hold: Duration) -> Duration {
        let most = self.protection.quota_release_spread.min(hold);
        let Ok(most) = u64::try_from(most.as_nanos()) else {
            return most;
        };
        if most == 0 {
            return Duration::ZERO;
        }
        let draw = match self.seed {
            Some(seed) => {
                let n = self.spread_counter.fetch_add(1, Ordering::Relaxed);
                // Salted: not the same numbers as the n-th backoff.
                mix_seed(seed ^ 0x5eed_5b7e_ad00_0001, n)
            }
            None => rand::rng().next_u64(),
        };
        Duration::from_nanos(draw % (most + 1))
    }
}

impl Protection {
    /// Whether any of it is on (otherwise no state is looked up).
    pub(crate) fn active(&self) -> bool {
        self.budget.is_some()
            || self.circuit.is_some()
            || self.rate_limit.is_some()
            || self.server_limits
    }
}

impl RetryPolicy {
    /// A builder with every default (see the [module docs](self)).
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// A policy that never retries: every response comes back as it is
    /// (`max_retries(0)` with `return_last_response(true)`), and a transport
    /// error as an [`Error`](crate::Error). No load protection either (no
    /// budget, and server quotas are not tracked). Useful as a per-request
    /// or per-endpoint override.
    pub fn disabled() -> RetryPolicy {
        RetryPolicy::builder()
            .max_retries(0)
            .return_last_response(true)
            .retry_budget(None)
            .server_limits(false)
            .build()
            .expect("the defaults are valid")
    }

    /// How many retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.inner.max_retries
    }
    /// The first backoff delay, before jitter.
    pub fn initial_backoff(&self) -> Duration {
        self.inner.schedule.initial
    }
    /// The cap on every backoff delay.
    pub fn max_backoff(&self) -> Duration {
        self.inner.schedule.max
    }
    /// The growth factor between backoff delays.
    pub fn multiplier(&self) -> f64 {
        self.inner.schedule.multiplier
    }
    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.inner.schedule.jitter
    }
    /// The seed, if jitter is reproducible.
    pub fn seed(&self) -> Option<u64> {
        self.inner.seed
    }
    /// The longest server-requested wait that is honoured.
    pub fn max_retry_after(&self) -> Duration {
        self.inner.max_retry_after
    }
    /// What happens to a longer server-requested wait.
    pub fn on_long_hint(&self) -> LongHint {
        self.inner.on_long_hint
    }
    /// The total time budget, first attempt to last, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.inner.deadline
    }
    /// The timeout of each attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.inner.attempt_timeout
    }
    /// Whether non-idempotent requests are retried after they may have
    /// reached the server.
    pub fn retry_non_idempotent(&self) -> bool {
        self.inner.retry_non_idempotent
    }
    /// Whether non-idempotent requests get a generated `Idempotency-Key`.
    #[inline]
    pub fn auto_idempotency_key(&self) -> bool {
        self.inner.auto_idempotency_key
    }
    /// Whether giving up on a response returns it instead of an error.
    pub fn return_last_response(&self) -> bool {
        self.inner.return_last_response
    }
    /// Whether errors, reports and tracing leave the request's path out
    /// (host and port only).
    #[inline]
    pub fn hide_paths(&self) -> bool {
        self.inner.hide_paths
    }

    /// A fresh backoff schedule following this policy. With a
    /// [`seed`](RetryPolicyBuilder::seed), the n-th backoff handed out by a
    /// policy (and its clones) is the same on every run.
    pub fn backoff(&self) -> Backoff {
        let seed = self.inner.seed.map(|seed| {
            let n = self.inner.seed_counter.fetch_add(1, Ordering::Relaxed);
            mix_seed(seed, n)
        });
        Backoff::new(self.inner.schedule, seed)
    }

    /// The preset whose rules this policy classifies with, if any (see
    /// [`Preset`]); `None` for the default rules or a custom classifier.
    pub fn preset(&self) -> Option<Preset> {
        self.inner.preset
    }

    /// The retry budget, if any.
    pub fn retry_budget(&self) -> Option<&RetryBudget> {
        self.inner.protection.budget.as_ref()
    }
    /// The circuit breaker, if any.
    pub fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.protection.circuit.as_ref()
    }
    /// The local rate limit, if any.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.inner.protection.rate_limit.as_ref()
    }
    /// How many turns of the rate limit a request takes.
    pub fn request_cost(&self) -> &RequestCost {
        &self.inner.protection.cost
    }
    /// Whether quotas that servers announce as gone hold back later
    /// requests.
    pub fn server_limits(&self) -> bool {
        self.inner.protection.server_limits
    }
    /// The furthest quota reset taken as valid.
    pub fn max_quota_reset(&self) -> Duration {
        self.inner.protection.max_quota_reset
    }
    /// The most by which a request held by a server quota is released
    /// after the reset.
    pub fn quota_release_spread(&self) -> Duration {
        self.inner.protection.quota_release_spread
    }
    /// How requests are grouped for load protection.
    pub fn scope(&self) -> Scope {
        self.inner.protection.scope
    }
    /// Where the load-protection state lives.
    pub fn state_store(&self) -> &Arc<dyn StateStore> {
        &self.inner.protection.store
    }
    /// The hedging settings, if requests are hedged (see
    /// [`hedging`](crate::hedging)).
    pub fn hedging(&self) -> Option<&Hedging> {
        self.inner.hedging.as_ref()
    }

    /// How many bytes of a streamed request body are kept to send it
    /// again (0: none).
    pub fn replay_buffer(&self) -> usize {
        self.inner.replay_buffer
    }
    /// Whether response bodies that fail while read are resumed.
    pub fn resume_bodies(&self) -> bool {
        self.inner.resumes.on
    }
    /// The most resumes of one response body.
    pub fn max_resumes(&self) -> u32 {
        self.inner.resumes.max
    }
    /// How long a response body may deliver nothing before it is resumed,
    /// if bounded.
    pub fn body_idle_timeout(&self) -> Option<Duration> {
        self.inner.resumes.idle_timeout
    }

    /// The policy a resume request is sent under, through the same
    /// adapter: one attempt, whatever comes back handed over (the resuming
    /// body decides, under this policy's limits), no load protection of
    /// its own (the body applies this policy's), and this policy's
    /// `hide_paths`.
    pub(crate) fn pass_through(&self) -> RetryPolicy {
        RetryPolicy::builder()
            .max_retries(0)
            .return_last_response(true)
            .retry_budget(None)
            .server_limits(false)
            .hide_paths(self.hide_paths())
            .build()
            .expect("the defaults are valid")
    }
    /// The policy's name, if it has one: [`name`](RetryPolicyBuilder::name),
    /// or the preset's.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }
    /// The header that carries the attempt number on resends, if any.
    pub fn attempt_header(&self) -> Option<&HeaderName> {
        self.inner.attempt_header.as_ref()
    }
    /// Whether a [`before_retry`](RetryPolicyBuilder::before_retry) hook
    /// is set.
    pub fn has_before_retry(&self) -> bool {
        self.inner.before_retry.is_some()
    }

    #[inline]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The same policy with its load-protection state in `store` (the
    /// configuration loader's, once a file's shared store is connected).
    /// Its counters (the seed's sequence) start afresh.
    #[cfg_attr(not(all(feature = "serde", feature = "redis")), allow(dead_code))]
    pub(crate) fn with_store(&self, store: Arc<dyn StateStore>) -> RetryPolicy {
        let i = &self.inner;
        let p = &i.protection;
        RetryPolicy {
            inner: Arc::new(Inner {
                max_retries: i.max_retries,
                schedule: i.schedule,
                seed: i.seed,
                seed_counter: AtomicU64::new(0),
                spread_counter: AtomicU64::new(0),
                max_retry_after: i.max_retry_after,
                on_long_hint: i.on_long_hint,
                deadline: i.deadline,
                attempt_timeout: i.attempt_timeout,
                retry_non_idempotent: i.retry_non_idempotent,
                auto_idempotency_key: i.auto_idempotency_key,
                return_last_response: i.return_last_response,
                hide_paths: i.hide_paths,
                replay_buffer: i.replay_buffer,
                resumes: i.resumes,
                classifier: i.classifier.clone(),
                preset: i.preset,
                clock: i.clock.clone(),
                protection: Protection {
                    budget: p.budget,
                    circuit: p.circuit,
                    rate_limit: p.rate_limit,
                    cost: p.cost.clone(),
                    server_limits: p.server_limits,
                    max_quota_reset: p.max_quota_reset,
                    quota_release_spread: p.quota_release_spread,
                    scope: p.scope,
                    store,
                },
                name: i.name.clone(),
                before_retry: i.before_retry.clone(),
                attempt_header: i.attempt_header.clone(),
                hedging: i.hedging.clone(),
                #[cfg(feature = "metrics")]
                metrics: Arc::clone(&i.metrics),
            }),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::builder()
            .build()
            .expect("the defaults are valid")
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RetryPolicy")
            .field("max_retries", &i.max_retries)
            .field("initial_backoff", &i.schedule.initial)
            .field("max_backoff", &i.schedule.max)
            .field("multiplier", &i.schedule.multiplier)
            .field("jitter", &i.schedule.jitter)
            .field("seed", &i.seed)
            .field("max_retry_after", &i.max_retry_after)
            .field("on_long_hint", &i.on_long_hint)
            .field("deadline", &i.deadline)
            .field("attempt_timeout", &i.attempt_timeout)
            .field("retry_non_idempotent", &i.retry_non_idempotent)
            .field("auto_idempotency_key", &i.auto_idempotency_key)
            .field("return_last_response", &i.return_last_response)
            .field("hide_paths", &i.hide_paths)
            .field("retry_budget", &i.protection.budget)
            .field("circuit_breaker", &i.protection.circuit)
            .field("rate_limit", &i.protection.rate_limit)
            .field("request_cost", &i.protection.cost)
            .field("server_limits", &i.protection.server_limits)
            .field("max_quota_reset", &i.protection.max_quota_reset)
            .field("quota_release_spread", &i.protection.quota_release_spread)
            .field("scope", &i.protection.scope)
            .field("replay_buffer", &i.replay_buffer)
            .field("resume_bodies", &i.resumes.on)
            .field("max_resumes", &i.resumes.max)
            .field("body_idle_timeout", &i.resumes.idle_timeout)
            .field("name", &i.name)
            .field("before_retry", &i.before_retry.is_some())
            .field("attempt_header", &i.attempt_header)
            .field("hedging", &i.hedging)
            .field(
                "rules",
                &i.preset.map_or("default or custom", Preset::as_str),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries(), 3);
        assert_eq!(p.initial_backoff(), Duration::from_millis(500));
        assert_eq!(p.max_backoff(), Duration::from_secs(30));
        assert_eq!(p.multiplier(), 2.0);
        assert_eq!(p.jitter(), Jitter::Full);
        assert_eq!(p.seed(), None);
        assert_eq!(p.max_retry_after(), Duration::from_secs(120));
        assert_eq!(p.deadline(), None);
        assert_eq!(p.attempt_timeout(), None);
        assert!(!p.retry_non_idempotent());
        assert!(!p.auto_idempotency_key());
        assert!(!p.return_last_response());
        assert_eq!(p.max_quota_reset(), Duration::from_secs(24 * 3600));
        assert_eq!(p.quota_release_spread(), Duration::from_secs(1));
        assert_eq!(RetryPolicy::disabled().max_retries(), 0);
        assert_eq!(p.replay_buffer(), 64 * 1024);
        assert!(!p.resume_bodies());
        assert_eq!(p.max_resumes(), 3);
        assert_eq!(p.body_idle_timeout(), None);
        assert!(p.hedging().is_none());
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let b = RetryPolicy::builder;
        let cases: Vec<(RetryPolicyBuilder, &str)> = vec![
            (b().initial_backoff(Duration::ZERO), "initial_backoff"),
            (b().max_backoff(Duration::ZERO), "max_backoff"),
            (b().max_backoff(Duration::MAX), "max_backoff"),
            (
                b().initial_backoff(Duration::from_secs(2))
                    .max_backoff(Duration::from_secs(1)),
                "initial_backoff",
            ),
            (b().multiplier(f64::NAN), "multiplier"),
            (b().multiplier(f64::INFINITY), "multiplier"),
            (b().multiplier(0.99), "multiplier"),
            (b().max_retry_after(Duration::ZERO), "max_retry_after"),
            (b().deadline(Duration::ZERO), "deadline"),
            (b().attempt_timeout(Duration::ZERO), "attempt_timeout"),
            (b().attempt_timeout(Duration::MAX), "attempt_timeout"),
            (b().max_quota_reset(Duration::ZERO), "max_quota_reset"),
            (b().max_quota_reset(Duration::MAX), "max_quota_reset"),
            (
                b().quota_release_spread(Duration::MAX),
                "quota_release_spread",
            ),
            (b().body_idle_timeout(Duration::ZERO), "body_idle_timeout"),
            (b().body_idle_timeout(Duration::MAX), "body_idle_timeout"),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field));
        }
        // deterministic: the first field in order is reported
        let err = b()
            .multiplier(f64::NAN)
            .initial_backoff(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "initial_backoff");
    }

    #[test]
    fn the_release_spread_stays_in_range_and_follows_the_seed() {
        let spread = Duration::from_secs(1);
        let p = RetryPolicy::builder().seed(9).build().unwrap();
        let q = RetryPolicy::builder().seed(9).build().unwrap();
        let a: Vec<Duration> = (0..50)
            .map(|_| p.inner().release_spread(spread * 30))
            .collect();
        let b: Vec<Duration> = (0..50)
            .map(|_| q.inner().release_spread(spread * 30))
            .collect();
        assert_eq!(a, b, "reproducible with the seed");
        assert!(a.iter().all(|d| *d <= spread));
        assert!(a.windows(2).any(|w| w[0] != w[1]));
        let short = Duration::from_millis(12);
        assert!((0..50).all(|_| p.inner().release_spread(short) <= short));
        let none = RetryPolicy::builder()
            .quota_release_spread(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(none.inner().release_spread(spread * 30), Duration::ZERO);
        let unseeded = RetryPolicy::default();
        assert!((0..50).all(|_| unseeded.inner().release_spread(spread * 30) <= spread));
    }

    #[test]
    fn seeded_backoffs_are_reproducible_per_request() {
        let make = || RetryPolicy::builder().seed(42).build().unwrap();
        let (p1, p2) = (make(), make());
        let run1: Vec<Vec<Duration>> = (0..3).map(|_| p1.backoff().take(4).collect()).collect();
        let run2: Vec<Vec<Duration>> = (0..3).map(|_| p2.backoff().take(4).collect()).collect();
        assert_eq!(run1, run2);
        assert_ne!(run1[0], run1[1]);
        assert_ne!(run1[1], run1[2]);
    }
}
