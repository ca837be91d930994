//! [`RedisStore`]: load-protection state shared by many processes through
//! Redis (or Valkey), so that a fleet of workers on one token or one API
//! key keeps one quota, one budget and one view of a server's holds.
//!
//! # What is shared, and how
//!
//! | state | shared? | how | round trips |
//! |---|---|---|---|
//! | server quota holds (`x-ratelimit-remaining: 0`, per credential) | always | set only if later, expiring at the reset, published to every process | none to read (a local copy); one to note a hold |
//! | client-side rate limit | always | a GCRA in a server-side script, on the Redis server's clock, with a cost per request | one per attempt; none while the process knows it must wait |
//! | retry budget | [optional](RedisStoreBuilder::shared_budget) (local by default, as Envoy, Finagle and the AWS SDKs keep it) | deposit capped at the capacity, withdraw only if enough, in one script | one per retry; refunds batched, none while the bucket is full |
//! | circuit breaker | [optional hint](RedisStoreBuilder::share_open_circuits) (local by default: each process sees its own network) | "open until", set only if later, published | none to read; one when a breaker opens |
//!
//! Every time the fleet shares is a wall-clock time of one clock, the
//! Redis server's (`TIME`): holds and hints in milliseconds since the Unix
//! epoch, the rate limit's schedule in microseconds (an interval below a
//! millisecond stays exact). No process's clock is compared with another's:
//! a reply carries the server's time, and each process maps the server's
//! times onto its own instants from it.
//!
//! Keys start with the [prefix](RedisStoreBuilder::prefix); an endpoint's
//! keys share the hash tag `{host:port}` (one cluster slot) and every key
//! expires, so nothing is left behind when the fleet stops:
//!
//! | key | holds | expires |
//! |---|---|---|
//! | `P:{host:port}:limit` | the rate limit's schedule | when its time has passed |
//! | `P:{host:port}:holds` | quota holds, partition → end | at the latest end |
//! | `P:{host:port}:budget` | the shared budget's tokens (absent: full) | 10 minutes after its last change |
//! | `P:{host:port}:open` | the breaker hint | at its end |
//! | `P:{P}:members` | live processes (heartbeats) | 3 heartbeats after the last |
//! | `P:{P}:partition-key` | the fleet's key for credential hashes | 25 hours after the last heartbeat |
//! | `P:{P}:index` | endpoints with a hold or hint | at the latest end |
//!
//! Holds and hints are published on the channel `P:events`; a process
//! subscribes ([`HoldSync::Subscribe`], the default) or polls
//! ([`HoldSync::Poll`]), and after every (re)connection reads what it
//! missed from the index.
//!
//! # Credentials
//!
//! A hold belongs to a credential: its [`Partition`], a keyed hash of the
//! request's credential headers. The fleet shares one hash key, made at
//! random by the first process and kept in Redis (set once; a process that
//! reconnects after a restart of Redis puts the key it had back), so a
//! credential has the same partition in every process. The credential
//! itself is never stored or sent: Redis sees only the hashes.
//!
//! # When Redis is slow or gone
//!
//! Every call has a [timeout](RedisStoreBuilder::call_timeout) (50 ms by
//! default): a request never waits longer on the store. A call that fails
//! or times out switches the process to local decisions (a `WARN` event)
//! and the [fallback](RedisStoreBuilder::fallback) decides, without asking
//! Redis again, until a background task reaches it (every
//! [`retry_interval`](RedisStoreBuilder::retry_interval)), reads what it
//! missed, shares what it noted meanwhile and switches back (another
//! `WARN` event). No restart is needed. Each answer says whether it was
//! [decided](Decided) by the fleet, by the process, or by the fallback.
//!
//! [`Fallback::Local`], the default, keeps each process to its share of
//! the limit (and of a shared budget): the limit divided by the live
//! processes counted by the heartbeats. It fails open: a third-party API
//! that is overshot answers with 429s, which the crate honours.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use http_resilience::{EndpointKey, RateLimit};
//! use http_resilience::store::{Decided, Fallback, RedisStore};
//!
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .prefix("my-batch-job")
//!     .call_timeout(Duration::from_millis(20))
//!     .fallback(Fallback::Local)
//!     .connect()
//!     .await?;
//! let github = store.endpoint(&EndpointKey::new("api.github.com", 443));
//! // GitHub's secondary limit counts a mutation as 5 points.
//! let limit = RateLimit::per_minute(900).burst(90).build()?;
//! match github.acquire(&limit, 5, Duration::from_secs(10)).await {
//!     Ok(turn) => {
//!         tokio::time::sleep_until(turn.at().into()).await;
//!         assert_ne!(turn.decided(), Decided::Process);
//!         // send the request
//!     }
//!     Err(refused) => eprintln!("not sent: {refused:?}"),
//! }
//! # Ok(()) }
//! ```

mod endpoint;
mod error;
mod keys;
mod link;
pub mod scripts;
mod view;

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use http::HeaderMap;

pub use endpoint::{BUDGET_IDLE, FleetEndpoint, FleetRefusal, FleetTurn, fleet_interval};
pub use error::StoreError;

/// [`Decided`], at the path it had when
/// only this store made it.
pub use crate::protection::store::Decided;
use crate::protection::store::{EndpointKey, EndpointState, InMemoryStore, Partition, StateStore};
use crate::validate::{self, Check, ConfigError};
use endpoint::FleetState;
use keys::FleetKeys;

/// What a store does when Redis cannot answer in time. See the
/// [module docs](self#when-redis-is-slow-or-gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Fallback {
    /// Decide from local state: each process keeps to its share of the
    /// limit (and of a shared budget), the limit divided by the live
    /// processes. The default; it fails open.
    #[default]
    Local,
    /// Let every request through the rate limit and pay every retry.
    Allow,
    /// Refuse: no turn under the rate limit, no retry from a shared
    /// budget.
    Refuse,
}

impl Fallback {
    /// A stable snake_case name: `local`, `allow`, `refuse`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Allow => "allow",
            Fallback::Refuse => "refuse",
        }
    }
}

/// How a process keeps its local copy of the fleet's holds and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HoldSync {
    /// Subscribe to the fleet's channel: a hold reaches every process
    /// within a round trip, and an idle process sends nothing. The
    /// default. (A second connection per process.)
    #[default]
    Subscribe,
    /// Read the fleet's holds every interval: one round trip per interval
    /// and per endpoint held, and a hold reaches the others within the
    /// interval.
    Poll(Duration),
}

/// Counters of a store's work, for tests, benches and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreStats {
    /// Calls sent to Redis by requests (not the background task's).
    pub round_trips: u64,
    /// Answers given by the fallback.
    pub fallbacks: u64,
    /// Rate-limit refusals answered from what Redis had said, without a
    /// round trip.
    pub known_refusals: u64,
    /// Switches to local decisions.
    pub went_local: u64,
    /// Returns to the shared state.
    pub came_back: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    round_trips: AtomicU64,
    fallbacks: AtomicU64,
    known_refusals: AtomicU64,
    went_local: AtomicU64,
    came_back: AtomicU64,
}

/// The settings of a [`RedisStore`], with their defaults:
///
/// | setting | default |
/// |---|---|
/// | [`prefix`](Self::prefix) | `http-resilience` |
/// | [`call_timeout`](Self::call_timeout) | 50 ms |
/// | [`connect_timeout`](Self::connect_timeout) | 1 s |
/// | [`fallback`](Self::fallback) | [`Fallback::Local`] |
/// | [`retry_interval`](Self::retry_interval) | 1 s |
/// | [`heartbeat`](Self::heartbeat) | 1 s (a process is live for 3) |
/// | [`hold_sync`](Self::hold_sync) | [`HoldSync::Subscribe`] |
/// | [`shared_budget`](Self::shared_budget) | `false` (one budget per process) |
/// | [`share_open_circuits`](Self::share_open_circuits) | `false` |
/// | [`expected_processes`](Self::expected_processes) | 1 |
/// | [`start_without_redis`](Self::start_without_redis) | `false` (an unreachable server is an error) |
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    settings: Settings,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) fallback: Fallback,
    pub(crate) retry_interval: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) hold_sync: HoldSync,
    pub(crate) shared_budget: bool,
    pub(crate) share_open: bool,
    pub(crate) expected_processes: usize,
    pub(crate) start_without_redis: bool,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: never shown.
        f.debug_struct("RedisStoreBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The longest setting accepted for a timeout or an interval: one hour.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// A duration in (0, 1 hour], in the words of [`validate`].
fn within_an_hour(d: Duration) -> validate::Verdict {
    validate::positive(d)?;
    if d > MAX_INTERVAL {
        return Err(format!("must be at most 1 hour (got {d:?})"));
    }
    Ok(())
}

impl RedisStoreBuilder {
    /// The key prefix: 1 to 64 bytes of `[A-Za-z0-9_.:/-]`. Processes with
    /// the same prefix share their state; give each fleet (each token or
    /// key's users) its own. Default `http-resilience`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }
    /// The longest a request's call to Redis may take; past it, the
    /// fallback decides. Default 50 ms. Must be positive.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.settings.call_timeout = timeout;
        self
    }
    /// The longest a connection (at start and on reconnecting) may take.
    /// Default 1 s. Must be positive.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }
    /// What happens when Redis cannot answer. Default [`Fallback::Local`].
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.settings.fallback = fallback;
        self
    }
    /// How often the background task tries to reach Redis again while it
    /// is gone. Default 1 s. Must be positive.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.settings.retry_interval = interval;
        self
    }
    /// How often a process says it is live (which is how the fleet counts
    /// its processes, for each one's share of the limit). A process not
    /// heard of for three heartbeats is no longer counted. Default 1 s.
    /// Must be positive.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.settings.heartbeat = interval;
        self
    }
    /// How the local copy of holds is kept. Default
    /// [`HoldSync::Subscribe`].
    pub fn hold_sync(mut self, sync: HoldSync) -> Self {
        self.settings.hold_sync = sync;
        self
    }
    /// Whether the retry budget is one for the fleet: an outage seen by
    /// every process is then amplified no more than if one process had
    /// sent all the requests. Default `false`: one budget per process.
    pub fn shared_budget(mut self, shared: bool) -> Self {
        self.settings.shared_budget = shared;
        self
    }
    /// Whether a breaker that opens tells the fleet "open until", as a
    /// hint the others honour as they honour a hold. Default `false`.
    pub fn share_open_circuits(mut self, share: bool) -> Self {
        self.settings.share_open = share;
        self
    }
    /// How many processes to assume before the first heartbeat is answered
    /// (a process that starts without Redis keeps to this share). Default
    /// 1. Must be positive.
    pub fn expected_processes(mut self, processes: usize) -> Self {
        self.settings.expected_processes = processes;
        self
    }
    /// Whether [`connect`](Self::connect) succeeds when Redis cannot be
    /// reached: the store then starts with local decisions (a `WARN`
    /// event) and joins the fleet when Redis answers. Default `false`: an
    /// unreachable server is [`StoreError::Unreachable`].
    pub fn start_without_redis(mut self, start: bool) -> Self {
        self.settings.start_without_redis = start;
        self
    }

    /// Checks the settings, in the builder's order (`prefix`,
    /// `call_timeout`, `connect_timeout`, `retry_interval`, `heartbeat`,
    /// `hold_sync`, `expected_processes`), without a network: the error
    /// names the first bad one, in the words every builder of the crate
    /// uses. [`connect`](Self::connect) checks them too (then also the
    /// URL).
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_resilience::store::RedisStore;
    ///
    /// let builder = RedisStore::builder("redis://127.0.0.1:6379").call_timeout(Duration::ZERO);
    /// let err = builder.check().unwrap_err();
    /// assert_eq!(err.field(), "call_timeout");
    /// assert_eq!(err.reason(), "must be greater than zero");
    /// ```
    pub fn check(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        if !keys::valid_prefix(&s.prefix) {
            return Err(ConfigError::new(
                "prefix",
                "must be 1 to 64 bytes of A-Z, a-z, 0-9, `_`, `.`, `:`, `/`, `-`".into(),
            ));
        }
        for (field, d) in [
            ("call_timeout", s.call_timeout),
            ("connect_timeout", s.connect_timeout),
            ("retry_interval", s.retry_interval),
            ("heartbeat", s.heartbeat),
        ]
        .into_iter()
        .chain(match s.hold_sync {
            HoldSync::Poll(every) => Some(("hold_sync", every)),
            HoldSync::Subscribe => None,
        }) {
            within_an_hour(d).at(field)?;
        }
        if s.expected_processes == 0 {
            return Err(ConfigError::new(
                "expected_processes",
                "must be greater than zero".into(),
            ));
        }
        Ok(())
    }

    /// Checks the URL as [`connect`](Self::connect) will (that it is a Redis
    /// URL; nothing is sent).
    pub(crate) fn client(&self) -> Result<redis::Client, StoreError> {
        redis::Client::open(self.url.as_str()).map_err(|e| StoreError::InvalidUrl {
            reason: error::describe_url(&e),
        })
    }

    /// Checks the settings and the URL, connects, joins the fleet (a
    /// heartbeat, which also reads the fleet's partition key), subscribes
    /// to its channel and reads the holds already set. Must be called
    /// within a tokio runtime: the store's background task runs on it.
    ///
    /// Fails with [`StoreError::InvalidUrl`] for a URL that is not a Redis
    /// URL, [`StoreError::InvalidSetting`] for a bad setting, and
    /// [`StoreError::Unreachable`] if Redis does not answer within the
    /// [connect timeout](Self::connect_timeout) (unless
    /// [`start_without_redis`](Self::start_without_redis)).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        self.check().map_err(StoreError::InvalidSetting)?;
        let client = self.client()?;
        let server = client.get_connection_info().addr().to_string();
        let runtime = tokio::runtime::Handle::current();
        let inner = Arc::new(Inner::new(client, server, self.settings, runtime));
        let started = link::start(&inner).await;
        if let Err(reason) = started {
            if !inner.settings.start_without_redis {
                return Err(StoreError::Unreachable {
                    server: inner.server.clone(),
                    reason,
                });
            }
            inner.went_local(&reason);
        }
        link::spawn(&inner);
        Ok(RedisStore { inner })
    }
}

/// Load-protection state shared by many processes through Redis. See the
/// [module docs](self). Cheap to clone: clones share one connection, one
/// local view and one background task, which ends when the last clone is
/// dropped.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.inner.server)
            .field("prefix", &self.inner.settings.prefix)
            .field("shared", &self.is_shared())
            .field("processes", &self.processes())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for a store on the Redis server at `url`
    /// (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS if
    /// the `redis` crate was built with it, `redis+unix:///path`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            settings: Settings {
                prefix: "http-resilience".into(),
                call_timeout: Duration::from_millis(50),
                connect_timeout: Duration::from_secs(1),
                fallback: Fallback::Local,
                retry_interval: Duration::from_secs(1),
                heartbeat: Duration::from_secs(1),
                hold_sync: HoldSync::Subscribe,
                shared_budget: false,
                share_open: false,
                expected_processes: 1,
                start_without_redis: false,
            },
        }
    }

    /// The handle of one endpoint's state, made on first use (a lock and
    /// a map lookup: take it once per request).
    pub fn endpoint(&self, key: &EndpointKey<'_>) -> FleetEndpoint {
        FleetEndpoint::new(self.inner.clone(), key)
    }

    /// The credential partition of a request with these headers, hashed
    /// with the fleet's key (so it is the same in every process of the
    /// fleet). Before the store has reached Redis once, the process's own
    /// key stands in: holds noted then stay in this process.
    pub fn partition(&self, headers: &HeaderMap) -> Partition {
        self.inner.partition(headers)
    }

    /// Whether the store decides with the fleet now (Redis answers), or
    /// locally (the fallback).
    pub fn is_shared(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// The live processes of the fleet, as the last heartbeat counted them
    /// (or [`expected_processes`](RedisStoreBuilder::expected_processes)
    /// before the first): what each process's share of the limit is
    /// divided by.
    pub fn processes(&self) -> usize {
        self.inner.processes()
    }

    /// Whether, at `now`, this process knows of a hold of any endpoint
    /// (for a request to skip looking its endpoint up when nothing is
    /// held, as [`StateStore::quiet`]).
    pub fn holding(&self, now: std::time::Instant) -> bool {
        self.inner.view.holding(self.inner.clock.server_ms(now))
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            round_trips: get(&c.round_trips),
            fallbacks: get(&c.fallbacks),
            known_refusals: get(&c.known_refusals),
            went_local: get(&c.went_local),
            came_back: get(&c.came_back),
        }
    }

    /// The fallback in use.
    pub fn fallback(&self) -> Fallback {
        self.inner.settings.fallback
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.settings.prefix
    }
}

/// The store as the engine uses it, when a policy is built with
/// [`state_store`](crate::RetryPolicyBuilder::state_store): every request's
/// turn under a policy's [`RateLimit`](crate::RateLimit) is the fleet's (one
/// round trip per attempt, none while this process knows it must wait), a
/// quota hold is read from the local copy and shared when noted, a retry is
/// paid from the fleet's budget if it is [shared](RedisStoreBuilder::shared_budget)
/// (else from this process's), a breaker is this process's, and its
/// "open until" is shared as a hint if [asked for](RedisStoreBuilder::share_open_circuits).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use http_resilience::{RateLimit, RetryPolicy, store::RedisStore};
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379").prefix("nightly").connect().await?;
/// let policy = RetryPolicy::builder()
///     .state_store(store.clone())
///     .rate_limit(RateLimit::per_hour(5000).burst(100).build()?)
///     .build()?;
/// # let _ = policy;
/// # Ok(()) }
/// ```
impl StateStore for RedisStore {
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState> {
        Arc::new(FleetState(self.endpoint(key)))
    }

    /// At rest: no hold known of any endpoint, no shared bucket last seen
    /// below its capacity, and the per-process state at rest.
    fn quiet(&self, now: std::time::Instant) -> bool {
        self.inner.draining.load(Ordering::Acquire) == 0
            && !self.holding(now)
            && self.inner.local.quiet(now)
    }
}

/// The fleet's key for credential hashes: SipHash-2-4 with two 64-bit
/// keys, the same in every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FleetKey(u64, u64);

impl FleetKey {
    pub(crate) fn random() -> FleetKey {
        FleetKey(rand::random(), rand::random())
    }
    /// As kept in Redis: 32 hex digits.
    pub(crate) fn to_hex(self) -> String {
        format!("{:016x}{:016x}", self.0, self.1)
    }
    /// A key from any text, the same in every process.
    pub(crate) fn derive(text: &str) -> FleetKey {
        use std::hash::Hasher;
        let mut a = FleetKey(0, 0).build_hasher();
        a.write(text.as_bytes());
        let mut b = FleetKey(1, 1).build_hasher();
        b.write(text.as_bytes());
        FleetKey(a.finish(), b.finish())
    }
    pub(crate) fn from_hex(hex: &str) -> Option<FleetKey> {
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let a = u64::from_str_radix(&hex[..16], 16).ok()?;
        let b = u64::from_str_radix(&hex[16..], 16).ok()?;
        Some(FleetKey(a, b))
    }
}

impl BuildHasher for FleetKey {
    // SipHash-2-4 with explicit keys: the one keyed hash in std. It is
    // deprecated only in favour of `DefaultHasher`, which cannot be keyed.
    #[allow(deprecated)]
    type Hasher = std::hash::SipHasher;
    #[allow(deprecated)]
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::SipHasher::new_with_keys(self.0, self.1)
    }
}

/// What every clone of a store and every endpoint handle share.
pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) server: String,
    pub(crate) client: redis::Client,
    pub(crate) keys: FleetKeys,
    pub(crate) conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Whether requests ask Redis (else the fallback decides).
    pub(crate) up: AtomicBool,
    /// When the store went local, for the `WARN` event of the return.
    pub(crate) down_since: Mutex<Option<std::time::Instant>>,
    /// Whether the subscription is live.
    pub(crate) subscribed: AtomicBool,
    /// Wakes the background task (the store went local, or the
    /// subscription ended).
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) view: view::View,
    pub(crate) clock: view::Clock,
    /// Live processes, from the last heartbeat; 0 before the first.
    pub(crate) members: AtomicUsize,
    pub(crate) fleet_key: RwLock<Option<FleetKey>>,
    /// This process's id among the members.
    pub(crate) process: String,
    /// Per-process state: the breaker, a local budget, the fallback's.
    pub(crate) local: InMemoryStore,
    pub(crate) endpoints: RwLock<HashMap<String, Arc<endpoint::Shared>>>,
    pub(crate) counters: Counters,
    pub(crate) tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The task reading the subscription.
    pub(crate) listener: Mutex<Option<tokio::task::AbortHandle>>,
    /// Shared buckets last seen below their capacity.
    pub(crate) draining: AtomicUsize,
    /// The runtime the store was connected on: the background task's, and
    /// the one that shares what requests note (holds, hints, turns given
    /// back) without making them wait.
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Inner {
    fn new(
        client: redis::Client,
        server: String,
        settings: Settings,
        runtime: tokio::runtime::Handle,
    ) -> Inner {
        Inner {
            draining: AtomicUsize::new(0),
            runtime,
            keys: FleetKeys::new(&settings.prefix),
            settings,
            server,
            client,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            down_since: Mutex::new(None),
            subscribed: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            view: view::View::default(),
            clock: view::Clock::new(),
            members: AtomicUsize::new(0),
            fleet_key: RwLock::new(None),
            process: uuid::Uuid::new_v4().simple().to_string(),
            local: InMemoryStore::new(),
            endpoints: RwLock::default(),
            counters: Counters::default(),
            tasks: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
        }
    }

    pub(crate) fn processes(&self) -> usize {
        match self.members.load(Ordering::Relaxed) {
            0 => self.settings.expected_processes,
            n => n,
        }
    }

    /// The partition of a request with these headers: hashed with the
    /// fleet's key, or this process's before the store reached Redis.
    pub(crate) fn partition(&self, headers: &HeaderMap) -> Partition {
        match self.fleet_key() {
            Some(key) => Partition::of_keyed(headers, &key),
            None => Partition::of(headers),
        }
    }

    /// Runs `task` on the store's runtime, without waiting for it (a share
    /// bounded by the call timeout).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.runtime.spawn(task));
    }

    pub(crate) fn fleet_key(&self) -> Option<FleetKey> {
        *self
            .fleet_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Switches to local decisions (once), with a `WARN` event.
    pub(crate) fn went_local(&self, reason: &str) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        let mut since = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.is_some() && !was_up {
            return;
        }
        *since = Some(view::now());
        drop(since);
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.counters.went_local.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "http_resilience",
            server = %self.server,
            prefix = %self.settings.prefix,
            fallback = self.settings.fallback.as_str(),
            reason,
            "redis store unreachable: deciding locally until it answers"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = reason;
        self.wake.notify_one();
    }

    /// Back to the shared state, with a `WARN` event.
    pub(crate) fn came_back(&self) {
        let since = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.up.store(true, Ordering::Release);
        if let Some(since) = since {
            self.counters.came_back.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::warn!(
                target: "http_resilience",
                server = %self.server,
                prefix = %self.settings.prefix,
                local_ms = view::now().saturating_duration_since(since).as_millis() as u64,
                "redis store reachable again: back to the shared state"
            );
            #[cfg(not(feature = "tracing"))]
            let _ = since;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        if let Some(task) = self
            .listener
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        // Leave the fleet at once rather than three heartbeats later, if
        // a runtime is there to send it.
        let conn = self
            .conn
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (Some(mut conn), Ok(rt)) = (conn, tokio::runtime::Handle::try_current()) {
            let members = self.keys.members.clone();
            let process = self.process.clone();
            let timeout = self.settings.call_timeout;
            rt.spawn(async move {
                let mut leave = scripts::SCRIPTS.leave.key(members);
                leave.arg(process);
                let _ = tokio::time::timeout(timeout, leave.invoke_async::<i64>(&mut conn)).await;
            });
        }
    }
}
