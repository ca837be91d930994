//! [`RetryPolicyBuilder`]: every setting with its default, checked by
//! [`build`](RetryPolicyBuilder::build).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderName;

use crate::backoff::{Jitter, Schedule, mix_seed};
use crate::classify::{Classify, DefaultClassifier};
use crate::headers::RESERVED_REQUEST_HEADERS;
use crate::hedging::Hedging;
#[cfg(feature = "metrics")]
use crate::metrics::MetricsCache;
use crate::presets::Preset;
use crate::protection::CircuitBreaker;
use crate::protection::RateLimit;
use crate::protection::RetryBudget;
use crate::protection::store::{InMemoryStore, Scope, StateStore};
use crate::resend::BeforeRetry;
use crate::retry_after::{SystemClock, WallClock};
use crate::validate::{self, Check, ConfigError};

use super::{
    DEFAULT_REPLAY_BUFFER, Inner, LongHint, Protection, RequestCost, Resumes, RetryPolicy,
};

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
    request_cost: RequestCost,
    server_limits: bool,
    max_quota_reset: Duration,
    quota_release_spread: Duration,
    scope: Scope,
    store: Option<Arc<dyn StateStore>>,
    replay_buffer: usize,
    resume_bodies: bool,
    max_resumes: u32,
    body_idle_timeout: Option<Duration>,
    name: Option<Cow<'static, str>>,
    before_retry: Option<Arc<dyn BeforeRetry>>,
    /// The name, or why it is not one (reported by `build`).
    attempt_header: Option<Result<HeaderName, String>>,
    hedging: Option<Hedging>,
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
            request_cost: RequestCost::Fixed(1),
            server_limits: true,
            max_quota_reset: Duration::from_secs(24 * 3600),
            quota_release_spread: Duration::from_secs(1),
            scope: Scope::Endpoint,
            store: None,
            replay_buffer: DEFAULT_REPLAY_BUFFER,
            resume_bodies: false,
            max_resumes: 3,
            body_idle_timeout: None,
            name: None,
            before_retry: None,
            attempt_header: None,
            hedging: None,
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
    /// How many turns of the [`rate_limit`](Self::rate_limit) a request
    /// takes: a request of cost `c` takes `c` turns at once and is sent at
    /// the last (GitHub's secondary limit counts a mutation as 5 points:
    /// [`RequestCost::GitHubPoints`]). Default
    /// [`RequestCost::Fixed(1)`](RequestCost::Fixed); a fixed cost must be
    /// positive. Only a rate limit reads it.
    pub fn request_cost(mut self, cost: RequestCost) -> Self {
        self.request_cost = cost;
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

    /// How many bytes of a streamed request body (one that cannot be
    /// cloned) are kept, per request, so that the request can be sent
    /// again: a body that fits is replayed byte for byte on a retry; a
    /// longer one is sent whole once and the request is then
    /// **committed** (not retried; its report says
    /// [`BodyCommitted`](crate::StopReason::BodyCommitted) with
    /// `body_too_large` and the limit). Default 64 KiB (as linkerd and
    /// Pingora buffer); 0 never buffers (a streamed body is sent once, its
    /// report says `body_not_replayable`).
    ///
    /// The reqwest middleware applies it to every `Body::wrap_stream` /
    /// `Body::wrap` body; the tower layer to every body under
    /// [`RetryLayer::replay_bodies`](crate::RetryLayer::replay_bodies)
    /// (a [`ReplayBody`](crate::replay::ReplayBody) the caller made keeps its
    /// own limit). Replay makes a retry possible, not safe: the idempotency
    /// rules are the same as for any body. Bodies that can be cloned (bytes,
    /// `Full`, `String`) are never buffered: each attempt sends a clone.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::builder()
    ///     .replay_buffer(256 * 1024)
    ///     .build()?;
    /// assert_eq!(policy.replay_buffer(), 256 * 1024);
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn replay_buffer(mut self, bytes: usize) -> Self {
        self.replay_buffer = bytes;
        self
    }
    /// Resume response bodies that fail while they are read (a reset, an
    /// early close, a body shorter than announced, no data within
    /// [`body_idle_timeout`](Self::body_idle_timeout)): the crate asks for
    /// `Range: bytes=N-` with `If-Range`, `N` being what the caller has
    /// read, checks what comes back, and continues the same body stream
    /// (see [`resume`](crate::resume)). Only `GET` responses with a strong
    /// validator (an `ETag` that is not weak, or a `Last-Modified` a second
    /// before `Date`), `Accept-Ranges: bytes` and no `Content-Encoding` are
    /// resumed. Each resume is an attempt of the same request: it counts
    /// against [`max_resumes`](Self::max_resumes) and the
    /// [`deadline`](Self::deadline), pays the [retry budget](Self::retry_budget)
    /// like a retry, waits the backoff (or a `Retry-After`), passes the load
    /// protection, and is in the request's report. Default false (a resume
    /// changes what a body error means to the caller).
    ///
    /// Through tower, put [`ResumeLayer`](crate::resume::ResumeLayer) outside
    /// the [`RetryLayer`](crate::RetryLayer); through reqwest, send with
    /// [`ResumeExt`](crate::resume::ResumeExt) (`send_resumable`): a body
    /// that outlives the adapter needs a way to send its resumes.
    pub fn resume_bodies(mut self, yes: bool) -> Self {
        self.resume_bodies = yes;
        self
    }
    /// At most this many resumes of one response body (with
    /// [`resume_bodies`](Self::resume_bodies)); a separate limit from
    /// `max_retries`, since a long download may need more resumes than a
    /// request needs retries, and a resume asks the server only for what
    /// is missing. A resume answered with a transient status (`503`) is
    /// one more. Default 3; 0 never resumes.
    pub fn max_resumes(mut self, n: u32) -> Self {
        self.max_resumes = n;
        self
    }
    /// A response body (with [`resume_bodies`](Self::resume_bodies)) that
    /// delivers nothing for this long, between two chunks or while waiting
    /// for a resume's response, has failed and is resumed: the "timeout
    /// between chunks". Default: none. Must be positive and at most 365
    /// days.
    pub fn body_idle_timeout(mut self, d: Duration) -> Self {
        self.body_idle_timeout = Some(d);
        self
    }
    /// The policy's name: the `http_resilience.policy` label of its
    /// [metrics](crate#features) (feature `metrics`). Default: the
    /// preset's name (`github`, `openai`, `anthropic`, `git`) for a
    /// preset's policy, else none (no such label). Keep names few and
    /// fixed, as any metric label. Must be 1 to 64 printable ASCII
    /// characters.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::builder().name("billing").build()?;
    /// assert_eq!(policy.name(), Some("billing"));
    /// assert_eq!(http_resilience::RetryPolicy::github().name(), Some("github"));
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// A hook called before each resend, with the request about to go
    /// (its headers to change: re-sign it, put a fresh token in it) and
    /// its attempt number (2 for the first resend); see
    /// [`resend`](crate::resend). Both adapters call it, on the copy they
    /// are about to send. Default: none.
    pub fn before_retry(mut self, hook: impl BeforeRetry) -> Self {
        self.before_retry = Some(Arc::new(hook));
        self
    }
    /// A request header that carries the attempt number (`2`, `3`, ...)
    /// on every resend, never on the first attempt, so that the server can
    /// tell a resend from a new request (as Envoy's `x-envoy-attempt-count`,
    /// the OpenAI SDKs' `x-stainless-retry-count` or gRPC's
    /// `grpc-previous-rpc-attempts` do; their numbering differs, this one
    /// is the attempt's number). Set before the
    /// [`before_retry`](Self::before_retry) hook runs, replacing any value
    /// of the caller's. Default: none. Must be a valid header name, and
    /// none of the connection's (`connection`, `host`, `te`, ...), the
    /// credentials (`authorization`, `cookie`, `x-api-key`, ...) or
    /// `idempotency-key`.
    ///
    /// ```
    /// let policy = http_resilience::RetryPolicy::builder()
    ///     .attempt_header("x-attempt")
    ///     .build()?;
    /// assert_eq!(policy.attempt_header().map(|h| h.as_str()), Some("x-attempt"));
    /// let bad = http_resilience::RetryPolicy::builder().attempt_header("authorization").build();
    /// assert_eq!(bad.unwrap_err().field(), "attempt_header");
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn attempt_header<N>(mut self, name: N) -> Self
    where
        N: TryInto<HeaderName>,
        N::Error: fmt::Display,
    {
        self.attempt_header = Some(name.try_into().map_err(|e| e.to_string()));
        self
    }

    /// Hedged requests ([`Hedging`]; see [`hedging`](crate::hedging)): a
    /// request that may be sent twice and has no response after the hedge
    /// delay gets another attempt alongside the first, and the first
    /// acceptable response wins. `None` for none. Default: none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_resilience::{Hedging, RetryPolicy};
    ///
    /// let policy = RetryPolicy::builder()
    ///     .hedging(Hedging::builder().delay(Duration::from_millis(50)).build()?)
    ///     .build()?;
    /// assert_eq!(policy.hedging().unwrap().max_hedges(), 1);
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn hedging(mut self, hedging: impl Into<Option<Hedging>>) -> Self {
        self.hedging = hedging.into();
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
        if let RequestCost::Fixed(n) = self.request_cost {
            validate::nonzero(n).at("request_cost")?;
        }
        validate::positive(self.max_quota_reset).at("max_quota_reset")?;
        validate::at_most_max(self.quota_release_spread).at("quota_release_spread")?;
        if let Some(d) = self.body_idle_timeout {
            validate::positive(d).at("body_idle_timeout")?;
        }
        if let Some(name) = &self.name {
            validate::label(name).at("name")?;
        }
        if let Some(header) = &self.attempt_header {
            validate::header_name(header, &RESERVED_REQUEST_HEADERS).at("attempt_header")?;
        }
        let name = self
            .name
            .or_else(|| self.preset.map(|p| Cow::Borrowed(p.as_str())));
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
                    cost: self.request_cost,
                    server_limits: self.server_limits,
                    max_quota_reset: self.max_quota_reset,
                    quota_release_spread: self.quota_release_spread,
                    scope: self.scope,
                    store: self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new())),
                },
                replay_buffer: self.replay_buffer,
                resumes: Resumes {
                    on: self.resume_bodies,
                    max: self.max_resumes,
                    idle_timeout: self.body_idle_timeout,
                },
                #[cfg(feature = "metrics")]
                metrics: Arc::new(MetricsCache::new(name.clone().map(Into::into))),
                name,
                before_retry: self.before_retry,
                attempt_header: self.attempt_header.and_then(Result::ok),
                hedging: self.hedging,
            }),
        })
    }
}

impl RetryPolicy {
    /// This policy with another classifier, for another kind of outcome
    /// (the runs of [`retry`](RetryPolicy::retry)): every setting, the
    /// load-protection state and the metric handles are this policy's;
    /// the seed is one of its own, drawn from this policy's (a seeded
    /// policy's n-th copy gets the same backoffs on every run, and each
    /// copy different ones from the others). Next to `build` so that a new
    /// setting is copied here too.
    pub(crate) fn with_classifier(&self, classifier: Arc<dyn Classify>) -> RetryPolicy {
        let p = self.inner();
        let seed = p
            .seed
            .map(|seed| mix_seed(seed, p.seed_counter.fetch_add(1, Ordering::Relaxed)));
        let protection = &p.protection;
        RetryPolicy {
            inner: Arc::new(Inner {
                max_retries: p.max_retries,
                schedule: p.schedule,
                seed,
                seed_counter: AtomicU64::new(0),
                spread_counter: AtomicU64::new(0),
                max_retry_after: p.max_retry_after,
                on_long_hint: p.on_long_hint,
                deadline: p.deadline,
                attempt_timeout: p.attempt_timeout,
                retry_non_idempotent: p.retry_non_idempotent,
                auto_idempotency_key: p.auto_idempotency_key,
                return_last_response: p.return_last_response,
                hide_paths: p.hide_paths,
                classifier,
                preset: p.preset,
                clock: Arc::clone(&p.clock),
                protection: Protection {
                    budget: protection.budget,
                    circuit: protection.circuit,
                    rate_limit: protection.rate_limit,
                    cost: protection.cost.clone(),
                    server_limits: protection.server_limits,
                    max_quota_reset: protection.max_quota_reset,
                    quota_release_spread: protection.quota_release_spread,
                    scope: protection.scope,
                    store: Arc::clone(&protection.store),
                },
                replay_buffer: p.replay_buffer,
                resumes: p.resumes,
                name: p.name.clone(),
                before_retry: p.before_retry.clone(),
                attempt_header: p.attempt_header.clone(),
                hedging: p.hedging.clone(),
                #[cfg(feature = "metrics")]
                metrics: Arc::clone(&p.metrics),
            }),
        }
    }
}
