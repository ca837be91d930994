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
//! | [`classifier`](RetryPolicyBuilder::classifier) | [`DefaultClassifier`] |
//! | [`wall_clock`](RetryPolicyBuilder::wall_clock) | [`SystemClock`] |
//! | [`retry_budget`](RetryPolicyBuilder::retry_budget) | [`RetryBudget::default`] (AWS: 500 tokens, 5 a retry) |
//! | [`circuit_breaker`](RetryPolicyBuilder::circuit_breaker) | none |
//! | [`rate_limit`](RetryPolicyBuilder::rate_limit) | none |
//! | [`server_limits`](RetryPolicyBuilder::server_limits) | true |
//! | [`max_quota_reset`](RetryPolicyBuilder::max_quota_reset) | 24 h |
//! | [`quota_release_spread`](RetryPolicyBuilder::quota_release_spread) | 1 s |
//! | [`scope`](RetryPolicyBuilder::scope) | [`Scope::Endpoint`] (host and port) |
//! | [`state_store`](RetryPolicyBuilder::state_store) | a new [`InMemoryStore`] per built policy |
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

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::backoff::{Backoff, Jitter, Schedule, mix_seed};
use crate::classify::{Classify, DefaultClassifier};
use crate::presets::Preset;
use crate::protection::CircuitBreaker;
use crate::protection::RateLimit;
use crate::protection::RetryBudget;
use crate::protection::store::{InMemoryStore, Scope, StateStore};
use crate::retry_after::{SystemClock, WallClock};
use crate::validate::{self, Check};

pub use crate::validate::{ConfigError, MAX_SETTING};

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
}

/// The load-protection settings of a policy and where their state lives.
pub(crate) struct Protection {
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) circuit: Option<CircuitBreaker>,
    pub(crate) rate_limit: Option<RateLimit>,
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
    pub fn auto_idempotency_key(&self) -> bool {
        self.inner.auto_idempotency_key
    }
    /// Whether giving up on a response returns it instead of an error.
    pub fn return_last_response(&self) -> bool {
        self.inner.return_last_response
    }
    /// Whether errors, reports and tracing leave the request's path out
    /// (host and port only).
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

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
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
            .field("server_limits", &i.protection.server_limits)
            .field("max_quota_reset", &i.protection.max_quota_reset)
            .field("quota_release_spread", &i.protection.quota_release_spread)
            .field("scope", &i.protection.scope)
            .field(
                "rules",
                &i.preset.map_or("default or custom", Preset::as_str),
            )
            .finish_non_exhaustive()
    }
}

/// Builds a [`RetryPolicy`]; every setter documents its default.
#[derive(Clone)]
#[must_use]
pub struct RetryPolicyBuilder {
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: Jitter,
    seed: Option<u64>,
    max_retry_after: Duration,
    on_long_hint: LongHint,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    retry_non_idempotent: bool,
    auto_idempotency_key: bool,
    return_last_response: bool,
    hide_paths: bool,
    classifier: Arc<dyn Classify>,
    preset: Option<Preset>,
    clock: Arc<dyn WallClock>,
    retry_budget: Option<RetryBudget>,
    circuit_breaker: Option<CircuitBreaker>,
    rate_limit: Option<RateLimit>,
    server_limits: bool,
    max_quota_reset: Duration,
    quota_release_spread: Duration,
    scope: Scope,
    store: Option<Arc<dyn StateStore>>,
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        RetryPolicyBuilder {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: Jitter::Full,
            seed: None,
            max_retry_after: Duration::from_secs(120),
            on_long_hint: LongHint::GiveUp,
            deadline: None,
            attempt_timeout: None,
            retry_non_idempotent: false,
            auto_idempotency_key: false,
            return_last_response: false,
            hide_paths: false,
            classifier: Arc::new(DefaultClassifier),
            preset: None,
            clock: Arc::new(SystemClock),
            retry_budget: Some(RetryBudget::default()),
            circuit_breaker: None,
            rate_limit: None,
            server_limits: true,
            max_quota_reset: Duration::from_secs(24 * 3600),
            quota_release_spread: Duration::from_secs(1),
            scope: Scope::Endpoint,
            store: None,
        }
    }
}

impl fmt::Debug for RetryPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("multiplier", &self.multiplier)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl RetryPolicyBuilder {
    /// Retries after the first attempt. Default 3 (4 attempts in all); 0
    /// disables retries.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
    /// The first backoff delay, before jitter. Default 500 ms. Must be
    /// positive and at most `max_backoff`.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }
    /// The cap on every backoff delay, jitter included. Default 30 s.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
    /// The growth factor between delays. Default 2.0. Must be finite and
    /// at least 1.
    pub fn multiplier(mut self, factor: f64) -> Self {
        self.multiplier = factor;
        self
    }
    /// The jitter mode. Default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }
    /// Makes jitter reproducible: the n-th request through the policy to
    /// need a retry gets the same delays on every run, and different
    /// requests get different sequences (a request that never retries
    /// takes no place in the order). Default: none (fresh randomness).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// The longest server-requested wait (`Retry-After`, `retry-after-ms`,
    /// rate-limit reset) that is honoured. Default 120 s, as the OpenAI SDK.
    /// A longer hint is handled as [`on_long_hint`](Self::on_long_hint) says.
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }
    /// What to do with a hint above `max_retry_after`. Default
    /// [`LongHint::GiveUp`].
    pub fn on_long_hint(mut self, what: LongHint) -> Self {
        self.on_long_hint = what;
        self
    }
    /// A total time budget from the start of the first attempt: a wait that
    /// would cross it stops at once with
    /// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded), and each
    /// attempt's timeout is clamped to what is left. Default: none.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }
    /// A timeout for each attempt; a timed-out attempt counts as a transient
    /// failure. Default: none.
    ///
    /// It runs from the attempt's send and bounds the wait for the response
    /// *head* (status and headers), which is when the decision is made, and,
    /// when the classifier reads the start of the body before deciding
    /// ([`Classify::inspect_body`], as
    /// GitHub's preset does for 403s), that read too. Reading the body of
    /// the response handed over is the caller's, so bound a slow body with
    /// the client's own read timeout (for example
    /// `reqwest::ClientBuilder::read_timeout`).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = Some(d);
        self
    }
    /// Retry non-idempotent requests (POST, PATCH, ...) without an
    /// `Idempotency-Key` even after they may have reached the server (5xx,
    /// timeouts, resets). Default false: such requests are retried only when
    /// the server provably did not act on them (connection refused, 429).
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }
    /// Add a fresh `Idempotency-Key` (a UUID v4) to non-idempotent requests
    /// that lack one, the same on every attempt, which makes them
    /// retryable. Only useful with servers that honour the key. Default
    /// false.
    pub fn auto_idempotency_key(mut self, yes: bool) -> Self {
        self.auto_idempotency_key = yes;
        self
    }
    /// When giving up on a response (retries exhausted, hint too long,
    /// deadline), return that response (with its [`RetryReport`](crate::RetryReport)
    /// in the extensions) instead of an [`Error`](crate::Error). Default false.
    pub fn return_last_response(mut self, yes: bool) -> Self {
        self.return_last_response = yes;
        self
    }
    /// Keep request paths out of errors, reports and tracing: they name the
    /// host and port only. Default false (the path is shown; user info and
    /// the query string never are).
    ///
    /// For services whose URLs carry a secret in the path, such as
    /// Telegram's `https://api.telegram.org/bot<token>/sendMessage` or a
    /// Slack webhook `https://hooks.slack.com/services/T000/B000/<secret>`:
    ///
    /// ```
    /// let telegram = http_resilience::RetryPolicy::builder()
    ///     .hide_paths(true)
    ///     .build()?;
    /// assert!(telegram.hide_paths());
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn hide_paths(mut self, yes: bool) -> Self {
        self.hide_paths = yes;
        self
    }
    /// Replaces the classifier: the [`DefaultClassifier`], or a
    /// [preset](crate::presets)'s rules (the policy then no longer reports
    /// that [`preset`](RetryPolicy::preset)).
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Arc::new(classifier);
        self.preset = None;
        self
    }

    /// A preset's classifier, remembered by name.
    pub(crate) fn rules(mut self, preset: Preset, rules: impl Classify) -> Self {
        self.classifier = Arc::new(rules);
        self.preset = Some(preset);
        self
    }
    /// The wall clock used for HTTP-dates and epoch resets. Default
    /// [`SystemClock`]; tests can fix it with a closure.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let fixed = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let policy = http_resilience::RetryPolicy::builder()
    ///     .wall_clock(move || fixed)
    ///     .build()
    ///     .unwrap();
    /// # let _ = policy;
    /// ```
    pub fn wall_clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The [retry budget](crate::protection#retry-budget) of each endpoint; `None` for no
    /// budget (every retry the policy allows is made, however many
    /// requests fail at once). Default [`RetryBudget::default`]: 500
    /// tokens, 5 a retry, 10 a retry after a timeout, 1 back per success
    /// (the AWS SDKs' retry quota).
    pub fn retry_budget(mut self, budget: impl Into<Option<RetryBudget>>) -> Self {
        self.retry_budget = budget.into();
        self
    }
    /// The [circuit breaker](crate::protection#circuit-breaker) of each endpoint; `None` for
    /// none. Default: none.
    pub fn circuit_breaker(mut self, breaker: impl Into<Option<CircuitBreaker>>) -> Self {
        self.circuit_breaker = breaker.into();
        self
    }
    /// A client-side [rate limit](crate::protection#rate-limit) per endpoint, which
    /// every attempt (retries included) waits for; `None` for none.
    /// Default: none.
    pub fn rate_limit(mut self, limit: impl Into<Option<RateLimit>>) -> Self {
        self.rate_limit = limit.into();
        self
    }
    /// When a response says the request quota is gone
    /// (`x-ratelimit-remaining: 0` with a reset, and the Anthropic and
    /// OpenAI equivalents, see
    /// [`quota_reset`](crate::retry_after::quota_reset)), hold the later
    /// attempts to that endpoint *with the same credential* until the reset
    /// instead of sending them to fail. Quotas are per credential (GitHub
    /// counts per token, OpenAI and Anthropic per key): a hold applies to
    /// the requests carrying the same `Authorization`, `x-api-key` or
    /// `api-key` (compared by a keyed hash made in this process, see
    /// [`Partition`](crate::protection::store::Partition)), and requests without a
    /// credential share one hold of their own. A reset further away than
    /// [`max_retry_after`](Self::max_retry_after) fails them at once with
    /// [`Error::RetryAfterTooLong`](crate::Error::RetryAfterTooLong), or,
    /// with [`LongHint::UseBackoff`], is ignored like any long hint; one
    /// beyond [`max_quota_reset`](Self::max_quota_reset) is invalid and
    /// holds nothing. Held requests are released over
    /// [`quota_release_spread`](Self::quota_release_spread) after the
    /// reset. Default true.
    pub fn server_limits(mut self, yes: bool) -> Self {
        self.server_limits = yes;
        self
    }
    /// The furthest ahead a server's quota reset may lie and still be
    /// believed: a reset beyond it (a response claiming its quota comes
    /// back in the year 2100) is taken for garbage and holds nothing, so
    /// that one bad response cannot refuse every request for the life of
    /// the process. Default 24 h (the longest quota window the providers
    /// document is a day). Must be positive and at most 365 days.
    pub fn max_quota_reset(mut self, d: Duration) -> Self {
        self.max_quota_reset = d;
        self
    }
    /// How much later than the reset a request held by a server quota may
    /// be released: each waits until the reset plus a random extra of up to
    /// this much (never more than the hold itself, so a 12 ms hold adds at
    /// most 12 ms), so that the held requests do not all reach the server in
    /// the same millisecond. Reproducible with the policy's
    /// [`seed`](Self::seed). Default 1 s; zero releases them all at the
    /// reset. At most 365 days.
    pub fn quota_release_spread(mut self, d: Duration) -> Self {
        self.quota_release_spread = d;
        self
    }
    /// How requests are grouped for budgets, breakers and limits. Default
    /// [`Scope::Endpoint`]: per host and port.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
    /// Where budgets, breakers and limits keep their state. Default: a new
    /// [`InMemoryStore`] for each built policy. Pass the same store to
    /// several policies to make them share it.
    pub fn state_store(mut self, store: impl StateStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Validates the settings. Fields are checked in a fixed order and the
    /// first problem is reported, so the error is deterministic.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        validate::positive(self.initial_backoff).at("initial_backoff")?;
        validate::positive(self.max_backoff).at("max_backoff")?;
        if self.initial_backoff > self.max_backoff {
            return Err(ConfigError::new(
                "initial_backoff",
                format!(
                    "must not exceed max_backoff ({:?} > {:?})",
                    self.initial_backoff, self.max_backoff
                ),
            ));
        }
        if !self.multiplier.is_finite() {
            return Err(ConfigError::new(
                "multiplier",
                format!("must be a finite number (got {})", self.multiplier),
            ));
        }
        if self.multiplier < 1.0 {
            return Err(ConfigError::new(
                "multiplier",
                format!("must be at least 1 (got {})", self.multiplier),
            ));
        }
        if let Jitter::Scaled { min_factor } = self.jitter {
            validate::factor(min_factor)
                .map_err(|reason| format!("the scaled factor {reason}"))
                .at("jitter")?;
        }
        validate::positive(self.max_retry_after).at("max_retry_after")?;
        if let Some(d) = self.deadline {
            validate::positive(d).at("deadline")?;
        }
        if let Some(d) = self.attempt_timeout {
            validate::positive(d).at("attempt_timeout")?;
        }
        validate::positive(self.max_quota_reset).at("max_quota_reset")?;
        validate::at_most_max(self.quota_release_spread).at("quota_release_spread")?;
        Ok(RetryPolicy {
            inner: Arc::new(Inner {
                max_retries: self.max_retries,
                schedule: Schedule {
                    initial: self.initial_backoff,
                    max: self.max_backoff,
                    multiplier: self.multiplier,
                    jitter: self.jitter,
                },
                seed: self.seed,
                seed_counter: AtomicU64::new(0),
                spread_counter: AtomicU64::new(0),
                max_retry_after: self.max_retry_after,
                on_long_hint: self.on_long_hint,
                deadline: self.deadline,
                attempt_timeout: self.attempt_timeout,
                retry_non_idempotent: self.retry_non_idempotent,
                auto_idempotency_key: self.auto_idempotency_key,
                return_last_response: self.return_last_response,
                hide_paths: self.hide_paths,
                classifier: self.classifier,
                preset: self.preset,
                clock: self.clock,
                protection: Protection {
                    budget: self.retry_budget,
                    circuit: self.circuit_breaker,
                    rate_limit: self.rate_limit,
                    server_limits: self.server_limits,
                    max_quota_reset: self.max_quota_reset,
                    quota_release_spread: self.quota_release_spread,
                    scope: self.scope,
                    store: self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new())),
                },
            }),
        })
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
