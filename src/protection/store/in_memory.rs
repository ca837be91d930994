//! [`InMemoryStore`]: load-protection state in this process's memory.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use super::{EndpointKey, EndpointState, Partition, StateStore};
use crate::protection::{CircuitState, Limiter, RateLimit, RetryBudget, Tokens, Turn};
use crate::validate::{self, Check, ConfigError};

/// The default store: state in this process's memory, one entry per
/// endpoint (about 180 bytes with its key and its place in the map; a
/// breaker, a rate limiter and quota holds add theirs when first used),
/// made on first use, and at most
/// [`MAX_HOLDS`] quota holds per endpoint (one per credential that ran
/// out; expired holds make room for new ones first, then the hold that
/// ends first).
///
/// # Eviction
///
/// An endpoint's entry is dropped once it is **at rest** (a new entry
/// would behave exactly as it does) and no request holds it:
///
/// - its retry budget full (or never touched);
/// - its circuit breaker closed, its last outcome a success, and nothing
///   left in its sliding window ([`CircuitState::is_at_rest`]);
/// - no server quota hold lasting beyond now;
/// - its rate limiter with no turn scheduled after now
///   ([`Limiter::is_at_rest`]).
///
/// Such an entry is dropped when it has been idle (not looked up) for
/// [`idle_timeout`](InMemoryStoreBuilder::idle_timeout), or sooner when the
/// store holds [`capacity`](InMemoryStoreBuilder::capacity) entries and
/// needs room for a new endpoint. Since an entry at rest holds nothing a
/// new one would not, eviction changes no decision: an endpoint seen again
/// gets a new entry, full budget and closed breaker, which is what it had.
/// An entry **not** at rest (a drained budget, an open breaker or a failure
/// in its window, a live quota hold, a reserved turn) is never dropped,
/// nor one that a request in flight holds; a store therefore holds more
/// than `capacity` entries only while more endpoints than that have state
/// that matters (an endpoint that failed and is never reached again keeps
/// its drained budget, which only successes refill).
///
/// There is no background thread: each new endpoint examines two entries
/// in the store's sweep order (oldest first; those kept go to the back),
/// and up to 64 while the store is at capacity, under the write lock it
/// takes anyway to insert. The idle time is measured on tokio's clock
/// (paused in tests), as every wait is. Looking up an endpoint already in
/// the store takes a shared lock, or none when the thread looked it up
/// last (each thread remembers its latest 4 lookups, without keeping
/// them alive), and writes nothing but, once per sweep, a "used" flag.
///
/// # Default
///
/// | setting | default | why |
/// |---|---|---|
/// | [`capacity`](InMemoryStoreBuilder::capacity) | 10,000 endpoints | about 2 MiB; a service or gateway talks to far fewer hosts, and a crawler or webhook sender reaching millions keeps 10,000 entries at rest |
/// | [`idle_timeout`](InMemoryStoreBuilder::idle_timeout) | 10 minutes | well past the longest default state (a 30 s breaker window, a 60 s rate-limit wait), so that a service called every few minutes keeps its entry |
///
/// `benches/store.rs` measures 1,000,000 distinct hosts: see
/// `BENCHMARKS.md`.
///
/// It also keeps two store-wide figures (how many buckets are below
/// capacity, the latest quota hold), so that [`quiet`](StateStore::quiet)
/// answers without a lookup, and a request that succeeds at once while
/// nothing is failing never touches a map or a lock.
///
/// ```
/// use std::time::Duration;
/// use http_resilience::{InMemoryStore, RetryPolicy};
///
/// let store = InMemoryStore::builder()
///     .capacity(100_000)
///     .idle_timeout(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(store.capacity(), 100_000);
/// let policy = RetryPolicy::builder().state_store(store).build()?;
/// # let _ = policy;
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
pub struct InMemoryStore {
    map: RwLock<Map>,
    /// This store among all of the process's, for `RECENT`.
    id: u64,
    shared: Arc<Shared>,
    hasher: hashbrown::DefaultHashBuilder,
    capacity: usize,
    /// In nanoseconds.
    idle_timeout: u64,
}

/// The endpoints, and the order in which they are swept.
struct Map {
    table: hashbrown::HashTable<Arc<InMemoryEndpoint>>,
    /// Every entry of `table`, oldest first (those a sweep keeps go to the
    /// back). An entry no request holds is referenced from these two only.
    order: VecDeque<Arc<InMemoryEndpoint>>,
}

/// References to an entry that no request holds: `table` and `order`
/// (`RECENT` holds weak ones only).
const UNHELD: usize = 2;

/// A thread's latest lookups, by store and key hash: a hot endpoint is
/// found without the map's lock, whose word every lookup would otherwise
/// write (two atomic read-modify-writes on one cache line shared by every
/// thread). Weak, so that they keep no entry in the store: an entry gone
/// from the map fails to upgrade, or is marked `evicted`. (A weak one
/// keeps the entry's allocation, not its state, until the slot is reused:
/// 4 at most per thread.)
struct Recent {
    store: u64,
    hash: u64,
    entry: Weak<InMemoryEndpoint>,
}

const RECENT_SLOTS: usize = 4;

thread_local! {
    static RECENT: RefCell<[Option<Recent>; RECENT_SLOTS]> =
        const { RefCell::new([const { None }; RECENT_SLOTS]) };
}

fn recent_slot(hash: u64) -> usize {
    (hash >> 62) as usize % RECENT_SLOTS
}

/// Numbers the stores, so that `RECENT` never mistakes one for another.
static STORES: AtomicU64 = AtomicU64::new(0);

/// Entries each new endpoint examines, and while the store is full.
const SWEEP: usize = 2;
const SWEEP_FULL: usize = 64;

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

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Default for InMemoryStore {
    fn default() -> Self {
        InMemoryStore::builder()
            .build()
            .expect("the default settings are valid")
    }
}

impl fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("idle_timeout", &self.idle_timeout())
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl InMemoryStore {
    /// An empty store with the default settings (see
    /// [`InMemoryStore`]).
    pub fn new() -> InMemoryStore {
        InMemoryStore::default()
    }
    /// A builder holding the defaults.
    pub fn builder() -> InMemoryStoreBuilder {
        InMemoryStoreBuilder {
            capacity: 10_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
    /// How many endpoints have state.
    pub fn len(&self) -> usize {
        self.read().table.len()
    }
    /// Whether no endpoint has state yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The entries kept before those at rest make room for new ones.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// How long an entry at rest stays after it was last looked up.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn hash(&self, host: &str, port: u16) -> u64 {
        // The lower-cased bytes, in chunks, so that equal keys feed the
        // same writes (one per chunk, not one per byte); copied only if
        // some letter is upper-case.
        const CHUNK: usize = 64;
        let mut h = self.hasher.build_hasher();
        let bytes = host.as_bytes();
        if bytes.iter().any(u8::is_ascii_uppercase) {
            let mut buf = [0u8; CHUNK];
            for chunk in bytes.chunks(CHUNK) {
                let lower = &mut buf[..chunk.len()];
                lower.copy_from_slice(chunk);
                lower.make_ascii_lowercase();
                h.write(lower);
            }
        } else {
            for chunk in bytes.chunks(CHUNK) {
                h.write(chunk);
            }
        }
        h.write_u8(0xff);
        h.write_u16(port);
        h.finish()
    }

    /// The entry of `key` if this thread looked it up last (in its slot),
    /// and it is still in the map.
    fn recent(&self, hash: u64, key: &EndpointKey<'_>) -> Option<Arc<InMemoryEndpoint>> {
        RECENT
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                let slot = recent[recent_slot(hash)].as_ref()?;
                if slot.store != self.id || slot.hash != hash {
                    return None;
                }
                let entry = slot.entry.upgrade()?;
                // See `evict`: our hold is visible to a sweep, or its mark
                // to us.
                fence(Ordering::SeqCst);
                if entry.evicted.load(Ordering::Relaxed) || !entry.is(key) {
                    return None;
                }
                entry.mark_used();
                Some(entry)
            })
            .ok()
            .flatten()
    }

    fn remember(&self, hash: u64, entry: &Arc<InMemoryEndpoint>) {
        let _ = RECENT.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                recent[recent_slot(hash)] = Some(Recent {
                    store: self.id,
                    hash,
                    entry: Arc::downgrade(entry),
                });
            }
        });
    }

    /// The entry of `key`, made (after a sweep) unless another thread just
    /// did.
    fn insert(&self, hash: u64, key: &EndpointKey<'_>) -> Arc<InMemoryEndpoint> {
        let now = now();
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = map.table.find(hash, |e| e.is(key)) {
            found.mark_used();
            return found.clone();
        }
        self.sweep(&mut map, now);
        let entry = Arc::new(InMemoryEndpoint::new(
            key,
            self.shared.clone(),
            self.shared.encode(now),
        ));
        map.table
            .insert_unique(hash, entry.clone(), |e| self.hash(&e.host, e.port));
        map.order.push_back(entry.clone());
        entry
    }

    /// Makes room before `table` gains an entry: examines entries from the
    /// front of `order`, dropping those at rest and not held that are idle,
    /// or any such entry while the store is full (the least recently used
    /// first: one looked up since it was last examined gets a second
    /// chance, for the first half of the examined entries).
    fn sweep(&self, map: &mut Map, now: Instant) {
        let now_code = self.shared.encode(now);
        let limit = if map.table.len() >= self.capacity {
            SWEEP_FULL
        } else {
            SWEEP
        };
        let mut examined = 0;
        while examined < limit.min(map.order.len()) {
            let full = map.table.len() >= self.capacity;
            if examined >= SWEEP && !full {
                break;
            }
            let Some(entry) = map.order.pop_front() else {
                break;
            };
            examined += 1;
            let held = Arc::strong_count(&entry) > UNHELD;
            let used = entry.used.swap(false, Ordering::Relaxed);
            if held || used {
                entry.seen.store(now_code, Ordering::Relaxed);
            }
            let idle =
                now_code.saturating_sub(entry.seen.load(Ordering::Relaxed)) >= self.idle_timeout;
            let candidate = !held && (idle || (full && (!used || examined > limit / 2)));
            if candidate && evict(&entry, now) {
                let hash = self.hash(&entry.host, entry.port);
                if let Ok(found) = map.table.find_entry(hash, |e| Arc::ptr_eq(e, &entry)) {
                    found.remove();
                }
            } else {
                map.order.push_back(entry);
            }
        }
        // Give back the memory of a burst that has gone.
        let len = map.table.len();
        if map.table.capacity() > 4 * len.max(64) {
            map.table.shrink_to(2 * len, |e| self.hash(&e.host, e.port));
            map.order.shrink_to(2 * len);
        }
    }
}

/// Marks `entry` evicted if no request holds it and it is at rest at
/// `now`. Called by a sweep, under the write lock: no lookup through the
/// map can hand the entry out meanwhile, and one through `RECENT` either
/// is seen holding it here, or sees it evicted and lets go (each side
/// writes its word, fences, then reads the other's).
fn evict(entry: &Arc<InMemoryEndpoint>, now: Instant) -> bool {
    entry.evicted.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    if Arc::strong_count(entry) > UNHELD || !entry.at_rest(now) {
        entry.evicted.store(false, Ordering::Relaxed);
        return false;
    }
    true
}

/// Builds an [`InMemoryStore`]; [`build`](Self::build) checks the settings.
/// Defaults as [`InMemoryStore`] lists them.
///
/// ```
/// use std::time::Duration;
/// use http_resilience::InMemoryStore;
///
/// let store = InMemoryStore::builder().idle_timeout(Duration::from_secs(30)).build()?;
/// assert_eq!(store.capacity(), 10_000);
/// let err = InMemoryStore::builder().capacity(0).build().unwrap_err();
/// assert_eq!(err.field(), "capacity");
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct InMemoryStoreBuilder {
    capacity: usize,
    idle_timeout: Duration,
}

impl InMemoryStoreBuilder {
    /// The entries the store keeps before it drops those at rest to make
    /// room for a new endpoint (entries not at rest are kept beyond it).
    /// Default 10,000. Must be positive.
    pub fn capacity(mut self, endpoints: usize) -> Self {
        self.capacity = endpoints;
        self
    }
    /// How long an entry at rest stays after it was last looked up (it
    /// goes when a new endpoint's sweep finds it). Default 10 minutes.
    /// Must be positive, and at most 365 days.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }
    /// Checks the settings (`capacity`, then `idle_timeout`); the error
    /// names the first bad one.
    pub fn build(self) -> Result<InMemoryStore, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::new(
                "capacity",
                "must be greater than zero".into(),
            ));
        }
        validate::positive(self.idle_timeout).at("idle_timeout")?;
        Ok(InMemoryStore {
            id: STORES.fetch_add(1, Ordering::Relaxed),
            map: RwLock::new(Map {
                table: hashbrown::HashTable::new(),
                order: VecDeque::new(),
            }),
            shared: Arc::new(Shared {
                not_full: AtomicUsize::new(0),
                latest_hold: AtomicU64::new(0),
                origin: now(),
            }),
            hasher: hashbrown::DefaultHashBuilder::default(),
            capacity: self.capacity,
            idle_timeout: self.idle_timeout.as_nanos() as u64,
        })
    }
}

impl StateStore for InMemoryStore {
    fn endpoint(&self, key: &EndpointKey<'_>) -> Arc<dyn EndpointState> {
        let hash = self.hash(key.host, key.port);
        if let Some(found) = self.recent(hash, key) {
            return found;
        }
        let found = self.read().table.find(hash, |e| e.is(key)).map(|found| {
            found.mark_used();
            found.clone()
        });
        let entry = found.unwrap_or_else(|| self.insert(hash, key));
        self.remember(hash, &entry);
        entry
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

/// Hashed without regard to ASCII case, as keys compare in a store.
impl Hash for EndpointKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.host.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
        state.write_u8(0xff);
        state.write_u16(self.port);
    }
}

/// A bucket no request has touched: full, whatever its capacity.
const UNTOUCHED: u64 = u64::MAX;

/// The most quota holds [`InMemoryStore`] keeps per endpoint (one per
/// credential whose quota is gone): 1,024, about 32 KiB.
pub const MAX_HOLDS: usize = 1024;

struct InMemoryEndpoint {
    /// The key, lower-cased.
    host: Box<str>,
    port: u16,
    /// Looked up since the last sweep examined it.
    used: AtomicBool,
    /// Dropped from the map (or about to be, see `evict`): a thread's
    /// `RECENT` must not hand it out.
    evicted: AtomicBool,
    /// When a sweep last found it used or held (or it was made), encoded
    /// as in `Shared`.
    seen: AtomicU64,
    /// The bucket's tokens, or `UNTOUCHED`.
    tokens: AtomicU64,
    /// This bucket's share of `Shared::not_full`: 0 when it is full.
    below: AtomicU32,
    /// The latest hold of any partition, encoded as in `Shared`; 0 for none.
    latest_hold: AtomicU64,
    /// Made on first use (most endpoints never have a breaker, a hold or a
    /// limiter), and boxed, so that an entry stays small.
    circuit: OnceLock<Box<Mutex<CircuitState>>>,
    /// Partition id → its hold, encoded as in `Shared`; at most `MAX_HOLDS`.
    holds: OnceLock<Box<Mutex<hashbrown::HashMap<u64, u64>>>>,
    limiter: OnceLock<Box<Limiter>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for InMemoryEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Partitions are not shown: only how many holds there are.
        f.debug_struct("InMemoryEndpoint")
            .field("tokens", &self.tokens.load(Ordering::Relaxed))
            .field("holds", &self.holds.get().map_or(0, |h| lock(h).len()))
            .field(
                "latest_hold",
                &self.shared.decode(self.latest_hold.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InMemoryEndpoint {
    fn new(key: &EndpointKey<'_>, shared: Arc<Shared>, seen: u64) -> Self {
        InMemoryEndpoint {
            host: key.host.to_ascii_lowercase().into(),
            port: key.port,
            used: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            seen: AtomicU64::new(seen),
            tokens: AtomicU64::new(UNTOUCHED),
            below: AtomicU32::new(0),
            latest_hold: AtomicU64::new(0),
            circuit: OnceLock::new(),
            holds: OnceLock::new(),
            limiter: OnceLock::new(),
            shared,
        }
    }

    /// Whether this is the entry of `key` (its host compared without
    /// regard to ASCII case; ours is lower-cased).
    fn is(&self, key: &EndpointKey<'_>) -> bool {
        self.port == key.port
            && (*self.host == *key.host || self.host.eq_ignore_ascii_case(key.host))
    }

    /// A lookup found it: read-mostly, one write per sweep at most.
    fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a new entry would behave as this one does from `now` on.
    fn at_rest(&self, now: Instant) -> bool {
        // The requests that held it updated it before they let go.
        fence(Ordering::Acquire);
        self.below.load(Ordering::Relaxed) == 0
            && self
                .shared
                .decode(self.latest_hold.load(Ordering::Relaxed))
                .is_none_or(|until| until <= now)
            && self.circuit.get().is_none_or(|c| lock(c).is_at_rest(now))
            && self.limiter.get().is_none_or(|l| l.is_at_rest(now))
    }

    fn holds(&self) -> MutexGuard<'_, hashbrown::HashMap<u64, u64>> {
        lock(self.holds.get_or_init(Box::default))
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
                self.below.fetch_add(1, Ordering::AcqRel);
                self.shared.not_full.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.below.fetch_sub(1, Ordering::AcqRel);
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
        update(&mut lock(self.circuit.get_or_init(Box::default)));
    }

    fn blocked_until(&self, partition: Partition) -> Option<Instant> {
        if self.latest_hold.load(Ordering::Acquire) == 0 {
            return None;
        }
        let until = *self.holds().get(&partition.id())?;
        self.shared.decode(until)
    }

    fn block_until(&self, partition: Partition, until: Instant) {
        let encoded = self.shared.encode(until);
        {
            let mut holds = self.holds();
            if holds.len() >= MAX_HOLDS && !holds.contains_key(&partition.id()) {
                // Room for one more: the holds that are over go first, then
                // the one that ends first.
                let now = self.shared.encode(now());
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
            .get_or_init(|| Box::new(Limiter::new(limit)))
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
        // beyond one hashing chunk (64 bytes), in either case
        let long = "a-very-long-label-that-goes-on.and-on.and-on-and-on.example.com.";
        let long = long.repeat(3);
        let upper = long.to_ascii_uppercase();
        let d = store.endpoint(&EndpointKey::new(&long, 443));
        assert!(d.withdraw(&budget, 5));
        let e = store.endpoint(&EndpointKey::new(&upper, 443));
        assert_eq!(e.tokens(&budget), 495, "same endpoint");
        assert_eq!(store.len(), 3);
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

    // ---- eviction: entries at rest go, the others stay -------------------

    use crate::protection::{CircuitBreaker, CircuitStatus, Verdict};

    fn store(capacity: usize, idle_secs: u64) -> InMemoryStore {
        InMemoryStore::builder()
            .capacity(capacity)
            .idle_timeout(Duration::from_secs(idle_secs))
            .build()
            .unwrap()
    }

    fn host(i: usize) -> String {
        format!("host-{i}.example.com")
    }

    /// A request's use of an endpoint that leaves it at rest: a retry
    /// paid, then refunded.
    fn visit(store: &InMemoryStore, host: &str) {
        let budget = RetryBudget::default();
        let e = store.endpoint(&EndpointKey::new(host, 443));
        assert!(e.withdraw(&budget, 5));
        e.deposit(&budget, 5);
    }

    fn same(a: &Arc<dyn EndpointState>, b: &Arc<dyn EndpointState>) -> bool {
        Arc::ptr_eq(a, b)
    }

    #[test]
    fn the_settings_are_checked() {
        let store = InMemoryStore::new();
        assert_eq!(store.capacity(), 10_000);
        assert_eq!(store.idle_timeout(), Duration::from_secs(600));
        let b = InMemoryStore::builder;
        assert_eq!(b().capacity(0).build().unwrap_err().field(), "capacity");
        for bad in [Duration::ZERO, Duration::MAX] {
            let err = b().idle_timeout(bad).build().unwrap_err();
            assert_eq!(err.field(), "idle_timeout");
        }
        assert!(format!("{store:?}").contains("capacity: 10000"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_entries_at_rest_go_as_new_endpoints_come() {
        let store = store(1_000, 60);
        for i in 0..10 {
            visit(&store, &host(i));
        }
        assert_eq!(store.len(), 10);
        tokio::time::advance(Duration::from_secs(59)).await;
        // looked up within the idle time: kept
        let kept = store.endpoint(&EndpointKey::new(&host(0), 443));
        drop(kept);
        for i in 10..20 {
            visit(&store, &host(i));
        }
        assert_eq!(store.len(), 20, "nothing idle for 60 s yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        for i in 20..30 {
            visit(&store, &host(i));
        }
        // each new endpoint examined two entries, oldest first: hosts 1 to
        // 9 were idle for 60 s and went; host 0 was used at 59 s
        assert_eq!(store.len(), 21);
        let budget = RetryBudget::default();
        let zero = store.endpoint(&EndpointKey::new(&host(0), 443));
        assert_eq!(zero.tokens(&budget), 500);
        assert_eq!(store.len(), 21, "host 0 was still there");
        drop(zero);
        let one = store.endpoint(&EndpointKey::new(&host(1), 443));
        assert_eq!(one.tokens(&budget), 500, "a new entry, as the old one was");
        assert_eq!(store.len(), 22);
        assert!(store.quiet(now()), "eviction leaves the store quiet");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_at_rest_never_exceed_the_capacity() {
        let store = store(100, 600);
        let mut in_flight = VecDeque::new();
        for i in 0..5_000 {
            visit(&store, &host(i));
            // some hosts come back at once, some requests are still going
            if i % 3 == 0 {
                visit(&store, &host(i / 2));
            }
            in_flight.push_back(store.endpoint(&EndpointKey::new(&host(i), 443)));
            if in_flight.len() > 10 {
                in_flight.pop_front();
            }
            assert!(store.len() <= 100, "{} entries after {i}", store.len());
        }
        // the entries requests hold are kept
        for held in &in_flight {
            let again = store.endpoint(&EndpointKey::new(&host(4_999), 443));
            let _ = again;
            assert!(store.read().table.iter().any(|e| {
                let e: Arc<dyn EndpointState> = e.clone();
                same(&e, held)
            }));
        }
        assert!(store.quiet(now()));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_not_at_rest_are_kept_until_they_are() {
        let store = store(4, 1);
        let budget = RetryBudget::default();
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let limit = RateLimit::per_minute(1).build().unwrap();
        let key = |name: &'static str| EndpointKey::new(name, 443);
        let t0 = now();
        // a drained budget
        assert!(store.endpoint(&key("drained")).withdraw(&budget, 5));
        // an open breaker
        store.endpoint(&key("open")).circuit(&mut |s| {
            let Verdict::Allow(t) = s.admit(&breaker, t0) else {
                unreachable!()
            };
            s.record(&breaker, t, true, t0);
        });
        // a success in the breaker's window (30 s)
        store.endpoint(&key("window")).circuit(&mut |s| {
            let Verdict::Allow(t) = s.admit(&breaker, t0) else {
                unreachable!()
            };
            s.record(&breaker, t, false, t0);
        });
        // a quota held for an hour
        let hour = Duration::from_secs(3600);
        store
            .endpoint(&key("held"))
            .block_until(Partition::ANONYMOUS, t0 + hour);
        // a turn taken: the next one is a minute away
        let turn = store
            .endpoint(&key("limited"))
            .acquire(&limit, t0, Duration::ZERO)
            .unwrap();
        drop(turn);
        assert_eq!(store.len(), 5, "beyond the capacity: none is at rest");

        tokio::time::advance(Duration::from_secs(30)).await;
        for i in 0..100 {
            visit(&store, &host(i));
        }
        let names = ["drained", "open", "window", "held", "limited"];
        let kept = |store: &InMemoryStore| {
            names
                .iter()
                .filter(|n| store.read().table.iter().any(|e| &*e.host == **n))
                .count()
        };
        assert_eq!(kept(&store), 4, "all but the window, over after 30 s");
        assert!(store.len() <= 4 + 4, "{}", store.len());
        assert_eq!(store.endpoint(&key("drained")).tokens(&budget), 495);
        let mut status = None;
        let now = now();
        store
            .endpoint(&key("open"))
            .circuit(&mut |s| status = Some(s.status(now)));
        assert_eq!(status, Some(CircuitStatus::HalfOpen), "still remembered");
        assert!(store.endpoint(&key("held")).holding(now));
        assert!(!store.quiet(now));

        // once they come to rest, they go too
        store.endpoint(&key("drained")).deposit(&budget, 5);
        store.endpoint(&key("open")).circuit(&mut |s| {
            let Verdict::Allow(t) = s.admit(&breaker, now) else {
                unreachable!()
            };
            s.record(&breaker, t, false, now);
        });
        tokio::time::advance(hour).await;
        for i in 100..200 {
            visit(&store, &host(i));
        }
        assert_eq!(kept(&store), 0);
        assert!(store.len() <= 4);
        assert!(store.quiet(super::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_keeps_its_entry_however_long_it_takes() {
        let store = store(2, 1);
        let budget = RetryBudget::default();
        let slow = store.endpoint(&EndpointKey::new("slow", 443));
        tokio::time::advance(Duration::from_secs(3600)).await;
        for i in 0..100 {
            visit(&store, &host(i));
        }
        // its later updates are seen by the next request to that endpoint
        assert!(slow.withdraw(&budget, 5));
        let next = store.endpoint(&EndpointKey::new("SLOW", 443));
        assert!(same(&slow, &next));
        assert_eq!(next.tokens(&budget), 495);
    }

    #[tokio::test(start_paused = true)]
    async fn a_thread_s_latest_lookup_never_hands_out_an_evicted_entry() {
        let store = store(1, 1);
        let budget = RetryBudget::default();
        let key = |name: &'static str| EndpointKey::new(name, 443);
        drop(store.endpoint(&key("a")));
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(store.endpoint(&key("b")));
        assert_eq!(store.len(), 1, "b took a's place");
        let a = store.endpoint(&key("a"));
        assert!(a.withdraw(&budget, 5));
        assert_eq!(store.len(), 1, "a took b's place");
        let again = store.endpoint(&key("a"));
        assert!(same(&a, &again));
        assert_eq!(again.tokens(&budget), 495);
    }

    #[test]
    fn a_held_entry_is_the_one_handed_out_whatever_the_churn() {
        // Threads hold the hot endpoint's entry and look it up again, while
        // another fills a store of capacity 1 with new endpoints: the entry
        // a request holds is never dropped, so the store hands out that
        // same entry and no update is lost.
        let store = Arc::new(store(1, 1));
        let budget = RetryBudget::default();
        let hot = EndpointKey::new("hot.example.com", 443);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    drop(store.endpoint(&EndpointKey::new(&host(i % 64), 443)));
                    i += 1;
                }
            });
            let workers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..20_000 {
                            let held = store.endpoint(&hot);
                            assert!(held.withdraw(&budget, 1));
                            let again = store.endpoint(&hot);
                            assert!(same(&held, &again), "a second entry for a held endpoint");
                            held.deposit(&budget, 1);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(store.endpoint(&hot).tokens(&budget), 500);
        assert!(store.quiet(now()));
    }
}
