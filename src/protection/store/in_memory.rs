//! [`InMemoryStore`]: load-protection state in this process's memory.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{EndpointKey, EndpointState, Partition, StateStore};
use crate::protection::{CircuitState, Limiter, RateLimit, RetryBudget, Tokens, Turn};

/// The default store: state in this process's memory. One entry per
/// endpoint reached (a few hundred bytes), kept for the store's life, and
/// at most [`MAX_HOLDS`] quota holds per endpoint (one per credential that
/// ran out; expired holds make room for new ones first, then the hold that
/// ends first).
///
/// It also keeps two store-wide figures (how many buckets are below
/// capacity, the latest quota hold), so that [`quiet`](StateStore::quiet)
/// answers without a lookup, and a request that succeeds at once while
/// nothing is failing never touches a map or a lock.
#[derive(Debug)]
pub struct InMemoryStore {
    endpoints: RwLock<hashbrown::HashMap<OwnedKey, Arc<InMemoryEndpoint>>>,
    shared: Arc<Shared>,
}

/// What every endpoint of a store updates.
#[derive(Debug)]
struct Shared {
    /// Buckets below their capacity.
    not_full: AtomicUsize,
    /// The latest hold, in nanoseconds after `origin` plus one; 0 for none.
    latest_hold: AtomicU64,
    origin: Instant,
}

impl Shared {
    fn encode(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }
    fn decode(&self, n: u64) -> Option<Instant> {
        (n != 0).then(|| self.origin + Duration::from_nanos(n - 1))
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        InMemoryStore {
            endpoints: RwLock::default(),
            shared: Arc::new(Shared {
                not_full: AtomicUsize::new(0),
                latest_hold: AtomicU64::new(0),
                origin: tokio::time::Instant::now().into_std(),
            }),
        }
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> InMemoryStore {
        InMemoryStore::default()
    }
    /// How many endpoints have state.
    pub fn len(&self) -> usize {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
    /// Whether no endpoint has state yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateStore for InMemoryStore {
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState> {
        if let Some(found) = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return found.clone();
        }
        self.endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry_ref(key)
            .or_insert_with(|| Arc::new(InMemoryEndpoint::new(self.shared.clone())))
            .clone()
    }

    #[inline]
    fn quiet(&self, now: Instant) -> bool {
        self.shared.not_full.load(Ordering::Acquire) == 0
            && self
                .shared
                .decode(self.shared.latest_hold.load(Ordering::Acquire))
                .is_none_or(|until| until <= now)
    }
}

/// The owned form of an [`EndpointKey`], hashed and compared the same way.
#[derive(Debug)]
struct OwnedKey {
    host: Box<str>,
    port: u16,
}

fn hash_key<H: Hasher>(host: &str, port: u16, state: &mut H) {
    for b in host.bytes() {
        state.write_u8(b.to_ascii_lowercase());
    }
    state.write_u8(0xff);
    state.write_u16(port);
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(&self.host, self.port, state);
    }
}
impl Hash for EndpointKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.host, self.port, state);
    }
}
impl PartialEq for OwnedKey {
    fn eq(&self, other: &Self) -> bool {
        self.port == other.port && self.host.eq_ignore_ascii_case(&other.host)
    }
}
impl Eq for OwnedKey {}
impl hashbrown::Equivalent<OwnedKey> for EndpointKey<'_> {
    fn equivalent(&self, key: &OwnedKey) -> bool {
        self.port == key.port && self.host.eq_ignore_ascii_case(&key.host)
    }
}
impl From<&EndpointKey<'_>> for OwnedKey {
    fn from(key: &EndpointKey<'_>) -> Self {
        OwnedKey {
            host: key.host.to_ascii_lowercase().into(),
            port: key.port,
        }
    }
}

/// A bucket no request has touched: full, whatever its capacity.
const UNTOUCHED: u64 = u64::MAX;

/// The most quota holds [`InMemoryStore`] keeps per endpoint (one per
/// credential whose quota is gone): 1,024, about 32 KiB.
pub const MAX_HOLDS: usize = 1024;

struct InMemoryEndpoint {
    /// The bucket's tokens, or `UNTOUCHED`.
    tokens: AtomicU64,
    circuit: Mutex<CircuitState>,
    /// The latest hold of any partition, encoded as in `Shared`; 0 for none.
    latest_hold: AtomicU64,
    /// Partition id → its hold, encoded as in `Shared`; at most `MAX_HOLDS`.
    holds: Mutex<hashbrown::HashMap<u64, u64>>,
    limiter: OnceLock<Limiter>,
    shared: Arc<Shared>,
}

impl fmt::Debug for InMemoryEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Partitions are not shown: only how many holds there are.
        f.debug_struct("InMemoryEndpoint")
            .field("tokens", &self.tokens.load(Ordering::Relaxed))
            .field("holds", &self.lock_holds().len())
            .field(
                "latest_hold",
                &self.shared.decode(self.latest_hold.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

impl InMemoryEndpoint {
    fn new(shared: Arc<Shared>) -> Self {
        InMemoryEndpoint {
            tokens: AtomicU64::new(UNTOUCHED),
            circuit: Mutex::new(CircuitState::default()),
            latest_hold: AtomicU64::new(0),
            holds: Mutex::new(hashbrown::HashMap::new()),
            limiter: OnceLock::new(),
            shared,
        }
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, hashbrown::HashMap<u64, u64>> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_tokens(&self, budget: &RetryBudget, f: impl Fn(&mut Tokens) -> bool) -> bool {
        let full = |raw: u64| raw == UNTOUCHED || raw >= u64::from(budget.capacity());
        let mut after = 0;
        let result = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
                let mut tokens = if raw == UNTOUCHED {
                    Tokens::full(budget)
                } else {
                    Tokens(raw as u32)
                };
                after = u64::from(tokens.0);
                f(&mut tokens).then(|| {
                    after = u64::from(tokens.0);
                    after
                })
            });
        let Ok(before) = result else {
            return false;
        };
        match (full(before), full(after)) {
            (true, false) => {
                self.shared.not_full.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.shared.not_full.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        true
    }
}

impl EndpointState for InMemoryEndpoint {
    fn withdraw(&self, budget: &RetryBudget, cost: u32) -> bool {
        self.update_tokens(budget, |t| t.withdraw(cost))
    }

    fn deposit(&self, budget: &RetryBudget, tokens: u32) {
        // A full bucket stays as it is: no write on the success path.
        let raw = self.tokens.load(Ordering::Relaxed);
        if tokens == 0 || raw == UNTOUCHED || raw >= u64::from(budget.capacity()) {
            return;
        }
        self.update_tokens(budget, |t| {
            let before = *t;
            t.deposit(budget, tokens);
            *t != before
        });
    }

    fn circuit(&self, update: &mut dyn FnMut(&mut CircuitState)) {
        update(&mut self.circuit.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn blocked_until(&self, partition: Partition) -> Option<Instant> {
        if self.latest_hold.load(Ordering::Acquire) == 0 {
            return None;
        }
        let until = *self.lock_holds().get(&partition.id())?;
        self.shared.decode(until)
    }

    fn block_until(&self, partition: Partition, until: Instant) {
        let encoded = self.shared.encode(until);
        {
            let mut holds = self.lock_holds();
            if holds.len() >= MAX_HOLDS && !holds.contains_key(&partition.id()) {
                // Room for one more: the holds that are over go first, then
                // the one that ends first.
                let now = self.shared.encode(tokio::time::Instant::now().into_std());
                holds.retain(|_, until| *until > now);
                if holds.len() >= MAX_HOLDS
                    && let Some(first) = holds.iter().min_by_key(|(_, u)| **u).map(|(p, _)| *p)
                {
                    holds.remove(&first);
                }
            }
            let hold = holds.entry(partition.id()).or_insert(0);
            *hold = (*hold).max(encoded);
        }
        self.latest_hold.fetch_max(encoded, Ordering::AcqRel);
        self.shared.latest_hold.fetch_max(encoded, Ordering::AcqRel);
    }

    fn holding(&self, now: Instant) -> bool {
        self.shared
            .decode(self.latest_hold.load(Ordering::Acquire))
            .is_some_and(|until| until > now)
    }

    fn acquire(
        &self,
        limit: &RateLimit,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Turn, Duration> {
        self.limiter
            .get_or_init(|| Limiter::new(limit))
            .acquire(now, max_wait)
    }

    fn release(&self, _limit: &RateLimit, turn: Turn) {
        if let Some(limiter) = self.limiter.get() {
            limiter.release(turn);
        }
    }

    fn tokens(&self, budget: &RetryBudget) -> u32 {
        match self.tokens.load(Ordering::Acquire) {
            UNTOUCHED => budget.capacity(),
            n => n as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn one_state_per_host_and_port_ignoring_case() {
        let store = InMemoryStore::new();
        let a = store.endpoint(&EndpointKey::new("API.example.com", 443));
        let b = store.endpoint(&EndpointKey::new("api.example.com", 443));
        let c = store.endpoint(&EndpointKey::new("api.example.com", 8443));
        let budget = RetryBudget::default();
        assert!(a.withdraw(&budget, 5));
        assert_eq!(b.tokens(&budget), 495, "same endpoint");
        assert_eq!(c.tokens(&budget), 500, "another port");
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn budget_is_atomic_across_threads() {
        let store = Arc::new(InMemoryStore::new());
        let budget = RetryBudget::default();
        let paid: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let store = store.clone();
                    s.spawn(move || {
                        let e = store.endpoint(&EndpointKey::new("h", 1));
                        (0..100).filter(|_| e.withdraw(&budget, 5)).count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(paid, 100);
    }

    #[test]
    fn quiet_until_a_bucket_drains_or_a_quota_is_held() {
        let store = InMemoryStore::new();
        let budget = RetryBudget::default();
        let now = Instant::now();
        assert!(store.quiet(now));
        let a = store.endpoint(&EndpointKey::new("a", 1));
        let b = store.endpoint(&EndpointKey::new("b", 1));
        assert!(store.quiet(now), "untouched endpoints are at rest");
        assert!(a.withdraw(&budget, 5));
        assert!(b.withdraw(&budget, 5));
        assert!(!store.quiet(now));
        a.deposit(&budget, 5);
        assert!(!store.quiet(now), "b is still below capacity");
        b.deposit(&budget, 100);
        assert!(store.quiet(now));
        a.block_until(Partition::ANONYMOUS, now + Duration::from_secs(30));
        assert!(!store.quiet(now));
        assert!(
            store.quiet(now + Duration::from_secs(30)),
            "the hold is over"
        );
    }

    #[test]
    fn blocks_keep_the_latest() {
        let store = InMemoryStore::new();
        let e = store.endpoint(&EndpointKey::whole_policy());
        let p = Partition::ANONYMOUS;
        assert_eq!(e.blocked_until(p), None);
        let now = Instant::now();
        e.block_until(p, now + Duration::from_secs(30));
        e.block_until(p, now + Duration::from_secs(10));
        let until = e.blocked_until(p).unwrap();
        assert!(until >= now + Duration::from_secs(30) - Duration::from_micros(1));
        assert!(until <= now + Duration::from_secs(30) + Duration::from_micros(1));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn partitions_follow_the_credential_and_nothing_else() {
        let of = |pairs: &[(&'static str, &'static str)]| Partition::of(&headers(pairs));
        let a = of(&[("authorization", "Bearer a")]);
        assert!(!a.is_anonymous());
        assert_eq!(a, of(&[("Authorization", "Bearer a"), ("accept", "*/*")]));
        assert_ne!(a, of(&[("authorization", "Bearer b")]));
        assert_ne!(a, of(&[("x-api-key", "Bearer a")]), "another header");
        assert_ne!(of(&[("x-api-key", "k")]), of(&[("api-key", "k")]));
        assert_ne!(
            a,
            of(&[("authorization", "Bearer a"), ("openai-project", "p")]),
            "OpenAI quotas are per project"
        );
        assert_eq!(of(&[]), Partition::ANONYMOUS);
        assert_eq!(
            of(&[("openai-project", "p"), ("cookie", "c")]),
            Partition::ANONYMOUS,
            "no credential"
        );
        // values are not split at a boundary: ("ab", "c") != ("a", "bc")
        assert_ne!(
            of(&[("authorization", "ab"), ("x-api-key", "c")]),
            of(&[("authorization", "a"), ("x-api-key", "bc")])
        );
        assert!(!format!("{a:?}").contains("Bearer"));
    }

    #[test]
    fn holds_are_per_partition_and_bounded() {
        let store = InMemoryStore::new();
        let e = store.endpoint(&EndpointKey::new("h", 1));
        let now = Instant::now();
        let a = Partition::of(&headers(&[("authorization", "a")]));
        let b = Partition::of(&headers(&[("authorization", "b")]));
        assert!(!e.holding(now));
        e.block_until(a, now + Duration::from_secs(30));
        assert!(e.holding(now));
        assert!(e.blocked_until(a).is_some());
        assert_eq!(e.blocked_until(b), None);
        assert_eq!(e.blocked_until(Partition::ANONYMOUS), None);
        assert!(
            !e.holding(now + Duration::from_secs(30)),
            "over at the reset"
        );
        // many credentials run dry: the map stays at MAX_HOLDS, and the
        // newest hold is kept
        for i in 0..MAX_HOLDS + 10 {
            let h: HeaderMap = [(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("t{i}")).unwrap(),
            )]
            .into_iter()
            .collect();
            e.block_until(Partition::of(&h), now + Duration::from_secs(60 + i as u64));
        }
        let debug = format!("{e:?}");
        assert!(debug.contains(&format!("holds: {MAX_HOLDS}")), "{debug}");
        let last: HeaderMap = [(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("t{}", MAX_HOLDS + 9)).unwrap(),
        )]
        .into_iter()
        .collect();
        assert!(e.blocked_until(Partition::of(&last)).is_some());
        assert_eq!(
            e.blocked_until(a),
            None,
            "the hold that ended first gave way"
        );
    }
}
