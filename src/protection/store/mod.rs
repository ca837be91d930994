//! The shared-state seam: where retry budgets, circuit breakers, local
//! rate limits and server-announced limits keep their state.
//!
//! A [`StateStore`] hands out the state of one endpoint
//! ([`EndpointKey`]), created on first use; the state itself is behind
//! [`EndpointState`]. The rules (what a retry costs, when a breaker opens)
//! live in plain types ([`Tokens`](crate::protection::Tokens), [`CircuitState`]) that every store
//! applies, so a store only has to keep values and update them atomically.
//!
//! Server quota holds are kept per endpoint *and* per [`Partition`]: the
//! credential a request carries, as a keyed hash made in this process
//! (GitHub, OpenAI and Anthropic count quotas per token or key). A request
//! works out its partition only when a quota is seen gone or its endpoint
//! holds one ([`EndpointState::holding`]); the credential itself is never
//! kept. The hash key is drawn per process, so partitions mean nothing to
//! another process: a store shared between processes shares its
//! credential holds within each process only (and the anonymous holds
//! with everyone).
//!
//! [`InMemoryStore`] is the default: each [`RetryPolicy`](crate::RetryPolicy)
//! gets its own when built, shared by every clone of the policy and of the
//! layers and middlewares built from it. Give several policies one store
//! (with [`state_store`](crate::RetryPolicyBuilder::state_store)) to make
//! them share budgets and breakers; a store shared by many processes (say,
//! one that keeps a local view and syncs it with Redis) implements these
//! two traits, and no caller changes.
//!
//! ```
//! use std::sync::Arc;
//! use http_resilience::{EndpointKey, InMemoryStore, RetryPolicy, StateStore};
//!
//! let store = Arc::new(InMemoryStore::new());
//! let a = RetryPolicy::builder().state_store(store.clone()).build()?;
//! let b = http_resilience::Preset::GitHub.builder().state_store(store.clone()).build()?;
//! # let _ = (a, b);
//! assert_eq!(store.len(), 0, "endpoints appear as requests reach them");
//! let state = store.endpoint(&EndpointKey::new("api.github.com", 443));
//! assert_eq!(store.len(), 1);
//! # let _ = state;
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderMap;

pub use crate::headers::CREDENTIAL_HEADERS;
use crate::headers::QUOTA_SCOPE_HEADERS;
use crate::protection::{CircuitState, RateLimit, RetryBudget, Turn};

mod in_memory;

pub use in_memory::{InMemoryStore, InMemoryStoreBuilder, MAX_HOLDS};

/// Which endpoint a request's load-protection state belongs to: a host
/// (compared without regard to ASCII case) and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointKey<'a> {
    host: &'a str,
    port: u16,
}

impl<'a> EndpointKey<'a> {
    /// The endpoint `host:port`.
    pub fn new(host: &'a str, port: u16) -> Self {
        EndpointKey { host, port }
    }
    /// The one key of [`Scope::Policy`]: every request through a policy
    /// shares it.
    pub const fn whole_policy() -> EndpointKey<'static> {
        EndpointKey { host: "", port: 0 }
    }
    /// The host (empty for [`Scope::Policy`]).
    pub fn host(&self) -> &'a str {
        self.host
    }
    /// The port (0 for [`Scope::Policy`]).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for EndpointKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.is_empty() && self.port == 0 {
            f.write_str("(policy)")
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How requests are grouped for budgets, breakers and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Scope {
    /// One state per host and port. The default: an outage of one host
    /// does not spend the budget or open the breaker of another.
    #[default]
    Endpoint,
    /// One state for every request through the policy, whatever its host
    /// (for a policy that covers one service behind several names).
    Policy,
}

impl Scope {
    /// A stable snake_case name: `endpoint`, `policy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Endpoint => "endpoint",
            Scope::Policy => "policy",
        }
    }
}

/// Which requests a server quota hold applies to: those carrying the same
/// credential, since providers count quotas per credential (GitHub per
/// token and App installation, OpenAI and Anthropic per key and project).
/// One token running dry does not hold the requests of another.
///
/// A partition is a keyed hash (SipHash, with a key drawn at random once
/// per process) of the request's credential headers
/// ([`CREDENTIAL_HEADERS`], then OpenAI's `openai-organization` and
/// `openai-project` if present): the credential itself is never stored,
/// and the hash means nothing outside this process. Requests without a
/// credential share [`Partition::ANONYMOUS`], the host's own hold. Its
/// `Debug` form says only which of the two it is.
///
/// ```
/// use http::HeaderMap;
/// use http_resilience::store::Partition;
///
/// let mut a = HeaderMap::new();
/// a.insert("authorization", "Bearer token-a".parse().unwrap());
/// let mut b = HeaderMap::new();
/// b.insert("authorization", "Bearer token-b".parse().unwrap());
/// assert_eq!(Partition::of(&a), Partition::of(&a));
/// assert_ne!(Partition::of(&a), Partition::of(&b));
/// assert_eq!(Partition::of(&HeaderMap::new()), Partition::ANONYMOUS);
/// assert_eq!(format!("{:?}", Partition::of(&a)), "Partition(credential)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition(u64);

impl Partition {
    /// Requests without a credential.
    pub const ANONYMOUS: Partition = Partition(0);

    /// The partition of a request with these headers.
    pub fn of(headers: &HeaderMap) -> Partition {
        fn feed(h: &mut impl Hasher, tag: usize, value: &http::HeaderValue) {
            h.write_usize(tag);
            h.write_usize(value.len());
            h.write(value.as_bytes());
        }
        let mut hasher = None;
        for (i, name) in CREDENTIAL_HEADERS.iter().enumerate() {
            for value in headers.get_all(name) {
                let h = hasher.get_or_insert_with(|| credential_key().build_hasher());
                feed(h, i, value);
            }
        }
        let Some(mut h) = hasher else {
            return Partition::ANONYMOUS;
        };
        for (i, name) in QUOTA_SCOPE_HEADERS.iter().enumerate() {
            for value in headers.get_all(name) {
                feed(&mut h, 0x10 + i, value);
            }
        }
        // 0 is the anonymous partition's.
        Partition(h.finish().max(1))
    }

    /// The partition's number, for a store to key its holds by: 0 for
    /// [`ANONYMOUS`](Self::ANONYMOUS), otherwise the keyed hash (the same
    /// for the same credential throughout this process only).
    pub fn id(self) -> u64 {
        self.0
    }

    /// Whether it is [`ANONYMOUS`](Self::ANONYMOUS).
    pub fn is_anonymous(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_anonymous() {
            "Partition(anonymous)"
        } else {
            "Partition(credential)"
        })
    }
}

/// The process's key for credential hashes, drawn once.
fn credential_key() -> &'static RandomState {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

/// Hands out the load-protection state of each endpoint. See the
/// [module docs](self).
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// The state of `key`, made on first use. Called once per request (not
    /// per attempt), so it may take a lock.
    ///
    /// A store may forget an endpoint's state once it is at rest, since a
    /// new state would behave the same from then on: its bucket full, no
    /// quota hold lasting beyond now, its breaker at rest
    /// ([`CircuitState::is_at_rest`]) and its limiter too
    /// ([`RateLimitState::is_at_rest`](crate::protection::RateLimitState::is_at_rest)).
    /// It must not forget a state that a request still holds (an `Arc`
    /// this method returned), or that request's later updates (a retry
    /// paid, a failure recorded) would be lost to the next.
    /// [`InMemoryStore`] does both: see its eviction rules.
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState>;

    /// A hint that lets a request skip looking its endpoint up: `true` only
    /// if, at `now`, every endpoint is at rest: every retry budget full and
    /// no server quota held, whatever its partition. (Breakers and rate
    /// limits are always looked up.) The default, `false`, is always
    /// correct; it only costs a lookup per request.
    fn quiet(&self, now: Instant) -> bool {
        let _ = now;
        false
    }
}

impl<S: StateStore + ?Sized> StateStore for Arc<S> {
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState> {
        (**self).endpoint(key)
    }
    fn quiet(&self, now: Instant) -> bool {
        (**self).quiet(now)
    }
}

/// One endpoint's load-protection state. Every method must be atomic with
/// respect to the others on the same endpoint; the rules are in
/// [`Tokens`](crate::protection::Tokens), [`CircuitState`] and [`Limiter`](crate::protection::Limiter), which an implementation
/// applies to its own storage.
pub trait EndpointState: Send + Sync + fmt::Debug {
    /// Takes `cost` tokens from the endpoint's retry budget (a full bucket
    /// at first, see [`Tokens::withdraw`](crate::protection::Tokens::withdraw)); `false` if it cannot pay.
    fn withdraw(&self, budget: &RetryBudget, cost: u32) -> bool;
    /// Puts `tokens` back, never above the budget's capacity.
    fn deposit(&self, budget: &RetryBudget, tokens: u32);
    /// Applies `update` to the endpoint's breaker state (closed at first).
    fn circuit(&self, update: &mut dyn FnMut(&mut CircuitState));
    /// Until when the server said the quota of the requests in `partition`
    /// (their credential, see [`Partition`]) is gone, if it did.
    fn blocked_until(&self, partition: Partition) -> Option<Instant>;
    /// Records that the quota of `partition` is gone until `until` (a later
    /// time wins). The memory it takes must stay bounded: a hold may be
    /// dropped once `until` has passed.
    fn block_until(&self, partition: Partition, until: Instant);
    /// A hint that lets a request skip working out its partition (a hash of
    /// its credential headers): `false` only if no hold of any partition
    /// lasts beyond `now`. The default, `true`, is always correct.
    fn holding(&self, now: Instant) -> bool {
        let _ = now;
        true
    }
    /// Takes the next turn under `limit` at `now`, if it comes within
    /// `max_wait`: free now, or a reservation of a later one (the
    /// request's place in line); otherwise says how long until it would
    /// come, taking nothing. See [`RateLimitState`](crate::protection::RateLimitState)(crate::protection::RateLimitState),
    /// whose rules an implementation applies. The limiter is made from the
    /// first `limit` the endpoint sees.
    fn acquire(
        &self,
        limit: &RateLimit,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Turn, Duration>;
    /// Gives back a turn from [`acquire`](Self::acquire) that will not be
    /// used (its request was dropped while waiting for it, or refused), so
    /// that another request can take it.
    fn release(&self, limit: &RateLimit, turn: Turn);
    /// The tokens left in the retry budget (for reports and tests).
    fn tokens(&self, budget: &RetryBudget) -> u32;
}
