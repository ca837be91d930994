//! [`FleetEndpoint`]: one endpoint's shared state, as a request uses it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::keys::{EndpointKeys, endpoint_tag};
use super::scripts::SCRIPTS;
use super::view::{EndpointView, now};
use super::{Fallback, Inner};
use crate::protection::rate_limit::{GiveBack, LocalBack};
use crate::protection::store::{
    Answer, Decided, EndpointKey, EndpointState, MAX_HOLDS, Partition, Refused, StateStore,
    StoreAnswer, StoreStep,
};
use crate::protection::{RateLimit, RateLimitState, RetryBudget, Turn};
use crate::validate::MAX_SETTING;

/// A shared bucket left unchanged this long is full again (its key
/// expires): 10 minutes.
pub const BUDGET_IDLE: Duration = Duration::from_secs(600);

/// The longest wait passed to the server, in microseconds (about 31
/// years): a longer one is as good as no bound.
const MAX_WAIT_US: u128 = 1 << 50;

/// The interval of `limit` under a fleet's rate limit: `period /
/// requests`, rounded up to a microsecond (the fleet's schedule is kept in
/// microseconds of the Redis server's clock; rounding up never lets it go
/// faster than the limit).
///
/// ```
/// use std::time::Duration;
/// use http_resilience::RateLimit;
/// use http_resilience::store::redis::fleet_interval;
///
/// let limit = RateLimit::per_second(20).build()?;
/// assert_eq!(fleet_interval(&limit), Duration::from_millis(50));
/// let limit = RateLimit::per_second(3).build()?;
/// assert_eq!(fleet_interval(&limit), Duration::from_micros(333_334));
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
pub fn fleet_interval(limit: &RateLimit) -> Duration {
    Duration::from_micros(interval_us(limit))
}

/// `period / requests` in µs, rounded up: a [`RateLimit`] is valid when
/// built (positive requests, a period of at most 365 days), so it is at
/// least 1 and fits.
fn interval_us(limit: &RateLimit) -> u64 {
    let requests = u128::from(limit.requests().max(1));
    let interval = limit.period().as_micros().div_ceil(requests).max(1);
    u64::try_from(interval).unwrap_or(u64::MAX)
}

/// The interval and the tolerance (`burst - 1` intervals), in µs. `None`
/// only when the tolerance does not fit 64 bits (a burst of billions over
/// long intervals), which lets everything pass.
fn params(limit: &RateLimit) -> Option<(u64, u64)> {
    let interval = interval_us(limit);
    let burst = u64::from(limit.burst().max(1));
    Some((interval, interval.checked_mul(burst - 1)?))
}

/// One process's share of `limit` among `n`: the same requests over `n`
/// periods, a burst of `burst / n` (at least one). When `n` periods are
/// longer than a limit's period may be (365 days), the share is written as
/// one request per share interval (the same schedule), capped at 365 days.
fn share_limit(limit: &RateLimit, n: usize) -> RateLimit {
    let n32 = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let span = limit.period().saturating_mul(n32);
    let burst = (limit.burst() / n32).max(1);
    RateLimit::builder(limit.requests(), span)
        .burst(burst)
        .max_wait(limit.max_wait())
        .build()
        .or_else(|_| {
            RateLimit::builder(1, (span / limit.requests().max(1)).min(MAX_SETTING))
                .burst(burst)
                .max_wait(limit.max_wait())
                .build()
        })
        .unwrap_or(*limit)
}

/// One process's share of `budget` among `n`: the capacity divided by `n`,
/// at least one retry after a timeout.
fn share_budget(budget: &RetryBudget, n: usize) -> RetryBudget {
    let n32 = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    RetryBudget::builder()
        .capacity((budget.capacity() / n32).max(budget.timeout_cost()))
        .retry_cost(budget.retry_cost())
        .timeout_cost(budget.timeout_cost())
        .success_refund(budget.success_refund())
        .build()
        .unwrap_or(*budget)
}

/// A turn under a fleet's rate limit: when the attempt may be sent, and
/// who decided. Give it back with [`FleetEndpoint::release`] if it will not
/// be used. Not `Clone`: a turn is given back at most once.
#[derive(Debug)]
#[must_use]
pub struct FleetTurn {
    turn: Turn,
    decided: Decided,
}

impl FleetTurn {
    /// When the attempt may be sent (now, or later for a place in line).
    pub fn at(&self) -> Instant {
        self.turn.at()
    }
    /// Who decided: [`Decided::Fleet`], or [`Decided::Fallback`] when
    /// Redis could not answer.
    pub fn decided(&self) -> Decided {
        self.decided
    }
    /// The turn, as the [`StateStore`](crate::protection::store::StateStore) seam hands it to the engine (given
    /// back through [`EndpointState::release`]).
    pub fn into_turn(self) -> Turn {
        self.turn
    }
}

/// Why a fleet's rate limit gave no turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetRefusal {
    /// The turn would come later than the longest wait asked for; nothing
    /// was taken.
    TooLong {
        /// How long until it would come.
        wait: Duration,
        /// Who decided.
        decided: Decided,
    },
    /// Redis could not answer and the fallback is [`Fallback::Refuse`].
    Unavailable,
}

impl FleetRefusal {
    fn into_seam(self) -> (Refused, Decided) {
        match self {
            FleetRefusal::TooLong { wait, decided } => (Refused::TooLong(wait), decided),
            FleetRefusal::Unavailable => (Refused::Unavailable, Decided::Fallback),
        }
    }
}

/// What every handle of one endpoint shares.
pub(crate) struct Shared {
    pub(crate) keys: EndpointKeys,
    pub(crate) view: Arc<EndpointView>,
    pub(crate) local: Arc<dyn EndpointState>,
    /// The next turn of cost 1, as the last refusal said.
    denied_until: Mutex<Option<Instant>>,
    /// Refunds not yet sent to the shared budget.
    pub(crate) pending: AtomicU32,
    /// The budget's settings, for sending the refunds.
    pub(crate) budget: Mutex<Option<RetryBudget>>,
    /// Whether the shared bucket was full at its last answer.
    pub(crate) full: AtomicBool,
    /// Its tokens at its last answer (`u32::MAX`: not asked yet).
    pub(crate) left: AtomicU32,
    /// The fallback's limiter: its generation, the share it was made for.
    share: Mutex<Option<ShareState>>,
}

struct ShareState {
    generation: u64,
    n: usize,
    limit: RateLimit,
    state: RateLimitState,
}

impl Shared {
    fn lock_share(&self) -> std::sync::MutexGuard<'_, Option<ShareState>> {
        self.share.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One endpoint's state in a [`RedisStore`](super::RedisStore): cheap to
/// clone. Reads of holds and hints are local; calls that cross to Redis
/// are `async` and bounded by the store's call timeout.
#[derive(Clone)]
pub struct FleetEndpoint {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
}

impl fmt::Debug for FleetEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetEndpoint")
            .field("endpoint", &self.shared.keys.tag)
            .finish_non_exhaustive()
    }
}

impl FleetEndpoint {
    pub(crate) fn new(inner: Arc<Inner>, key: &EndpointKey<'_>) -> FleetEndpoint {
        let tag = endpoint_tag(key);
        let found = inner
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tag)
            .cloned();
        let shared = match found {
            Some(shared) => shared,
            None => inner
                .endpoints
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tag.clone())
                .or_insert_with(|| {
                    Arc::new(Shared {
                        view: inner.view.endpoint(&tag),
                        local: inner.local.endpoint(key),
                        keys: EndpointKeys::new(&inner.settings.prefix, tag),
                        denied_until: Mutex::new(None),
                        pending: AtomicU32::new(0),
                        budget: Mutex::new(None),
                        full: AtomicBool::new(true),
                        left: AtomicU32::new(u32::MAX),
                        share: Mutex::new(None),
                    })
                })
                .clone(),
        };
        FleetEndpoint { inner, shared }
    }

    /// The endpoint's per-process state: its circuit breaker, and its
    /// retry budget unless the budget is [shared](super::RedisStoreBuilder::shared_budget).
    pub fn local(&self) -> &Arc<dyn EndpointState> {
        &self.shared.local
    }

    /// Takes the next turn of `cost` (0 counts as 1) under the fleet's
    /// `limit`, if it comes within `max_wait`: free now, or a place in
    /// line. One round trip; none while this process knows the next turn
    /// is beyond `max_wait` (a refusal said so), or while Redis cannot
    /// answer (the [`Fallback`] decides). A request that costs more than
    /// the burst waits for its turns like any other (`cost - burst`
    /// intervals at least), as in the in-process limiter.
    pub async fn acquire(
        &self,
        limit: &RateLimit,
        cost: u32,
        max_wait: Duration,
    ) -> Result<FleetTurn, FleetRefusal> {
        match self.acquire_now(limit, cost, max_wait) {
            Some(answer) => answer,
            None => self.acquire_remote(*limit, cost, max_wait).await,
        }
    }

    /// The answer of [`acquire`](Self::acquire) when it needs no round
    /// trip: a refusal this process knows of, a limit that lets everything
    /// pass, or the fallback's while Redis cannot answer. `None`: ask
    /// Redis.
    pub(crate) fn acquire_now(
        &self,
        limit: &RateLimit,
        cost: u32,
        max_wait: Duration,
    ) -> Option<Result<FleetTurn, FleetRefusal>> {
        let cost = cost.max(1);
        let t = now();
        let Some((interval, _)) = params(limit) else {
            return Some(Ok(FleetTurn {
                turn: Turn::shared(t, cost, GiveBack::Nothing),
                decided: Decided::Fleet,
            }));
        };
        let extra = Duration::from_micros(interval.saturating_mul(u64::from(cost - 1)));
        if let Some(wait) = self.known_wait(t, extra)
            && wait > max_wait
        {
            self.inner
                .counters
                .known_refusals
                .fetch_add(1, Ordering::Relaxed);
            return Some(Err(FleetRefusal::TooLong {
                wait,
                decided: Decided::Fleet,
            }));
        }
        if !self.inner.up.load(Ordering::Acquire) {
            return Some(self.fallback_acquire(limit, cost, max_wait, t));
        }
        None
    }

    /// The round trip of [`acquire`](Self::acquire) (the fallback's answer
    /// if it fails).
    pub(crate) async fn acquire_remote(
        &self,
        limit: RateLimit,
        cost: u32,
        max_wait: Duration,
    ) -> Result<FleetTurn, FleetRefusal> {
        let cost = cost.max(1);
        let Some((interval, tolerance)) = params(&limit) else {
            return Ok(FleetTurn {
                turn: Turn::shared(now(), cost, GiveBack::Nothing),
                decided: Decided::Fleet,
            });
        };
        let extra = Duration::from_micros(interval.saturating_mul(u64::from(cost - 1)));
        let max_us = max_wait.as_micros().min(MAX_WAIT_US) as u64;
        let mut call = SCRIPTS.acquire.key(&self.shared.keys.limit);
        call.arg(interval).arg(tolerance).arg(cost).arg(max_us);
        match self.inner.call::<(i64, i64, i64, i64)>(&call).await {
            Some(((granted, server_us, x, tat), sent, received)) => {
                self.inner
                    .clock
                    .observe(sent, received, server_us.div_euclid(1000));
                let after = Duration::from_micros(u64::try_from(x - server_us).unwrap_or(0));
                if granted == 1 {
                    let span = interval.saturating_mul(u64::from(cost));
                    Ok(FleetTurn {
                        turn: Turn::shared(
                            received + after,
                            cost,
                            GiveBack::Fleet {
                                tat,
                                span: i64::try_from(span).unwrap_or(i64::MAX),
                            },
                        ),
                        decided: Decided::Fleet,
                    })
                } else {
                    let wait = Duration::from_micros(u64::try_from(x).unwrap_or(0).max(1));
                    *self
                        .shared
                        .denied_until
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some(received + wait.saturating_sub(extra));
                    Err(FleetRefusal::TooLong {
                        wait,
                        decided: Decided::Fleet,
                    })
                }
            }
            None => self.fallback_acquire(&limit, cost, max_wait, now()),
        }
    }

    /// How long until a turn `extra` after the next one of cost 1, if a
    /// refusal said the next one is still to come.
    fn known_wait(&self, t: Instant, extra: Duration) -> Option<Duration> {
        let mut denied = self
            .shared
            .denied_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *denied {
            Some(until) if until > t => Some(until - t + extra),
            Some(_) => {
                *denied = None;
                None
            }
            None => None,
        }
    }

    fn fallback_acquire(
        &self,
        limit: &RateLimit,
        cost: u32,
        max_wait: Duration,
        t: Instant,
    ) -> Result<FleetTurn, FleetRefusal> {
        self.inner
            .counters
            .fallbacks
            .fetch_add(1, Ordering::Relaxed);
        match self.inner.settings.fallback {
            Fallback::Allow => Ok(FleetTurn {
                turn: Turn::shared(t, cost, GiveBack::Nothing),
                decided: Decided::Fallback,
            }),
            Fallback::Refuse => Err(FleetRefusal::Unavailable),
            Fallback::Local => {
                let n = self.inner.processes();
                let mut share = self.shared.lock_share();
                if share.as_ref().is_none_or(|s| s.n != n || s.limit != *limit) {
                    let generation = share.as_ref().map_or(0, |s| s.generation + 1);
                    let mine = share_limit(limit, n);
                    *share = Some(ShareState {
                        generation,
                        n,
                        limit: *limit,
                        state: RateLimitState::new(&mine),
                    });
                }
                let Some(share) = share.as_mut() else {
                    return Err(FleetRefusal::Unavailable);
                };
                match share.state.acquire_cost(t, max_wait, cost) {
                    Ok(turn) => {
                        let inner = match turn.back {
                            GiveBack::Schedule { before, after } => {
                                LocalBack::Schedule { before, after }
                            }
                            _ => LocalBack::One,
                        };
                        let back = GiveBack::Local {
                            generation: share.generation,
                            inner,
                        };
                        Ok(FleetTurn {
                            turn: Turn::shared(turn.at(), cost, back),
                            decided: Decided::Fallback,
                        })
                    }
                    Err(wait) => Err(FleetRefusal::TooLong {
                        wait,
                        decided: Decided::Fallback,
                    }),
                }
            }
        }
    }

    /// Gives back a turn that will not be used (its request was dropped or
    /// refused): the fleet's schedule moves back if it is still the last
    /// turn (otherwise it is lost, and the limit holds either way); a
    /// fallback turn goes back to the local limiter. One round trip for a
    /// fleet turn.
    pub async fn release(&self, turn: FleetTurn) {
        if let Some((tat, span)) = self.give_back_locally(turn.turn) {
            self.release_remote(tat, span).await;
        }
    }

    /// Gives back what needs no round trip; the fleet's schedule time and
    /// span if the rest is Redis's.
    fn give_back_locally(&self, turn: Turn) -> Option<(i64, i64)> {
        match turn.back {
            GiveBack::Fleet { tat, span } => Some((tat, span)),
            GiveBack::Local { generation, inner } => {
                let mut share = self.shared.lock_share();
                if let Some(share) = share.as_mut().filter(|s| s.generation == generation) {
                    let back = match inner {
                        LocalBack::One => GiveBack::One,
                        LocalBack::Schedule { before, after } => {
                            GiveBack::Schedule { before, after }
                        }
                    };
                    share
                        .state
                        .release(Turn::shared(turn.at(), turn.cost(), back));
                }
                None
            }
            _ => None,
        }
    }

    async fn release_remote(&self, tat: i64, span: i64) {
        let mut call = SCRIPTS.release.key(&self.shared.keys.limit);
        call.arg(tat).arg(span);
        let _ = self.inner.call::<i64>(&call).await;
    }

    /// Until when the quota of `partition` (from
    /// [`RedisStore::partition`](super::RedisStore::partition)) is held, if
    /// it is: from this process's copy, no round trip.
    pub fn blocked_until(&self, partition: Partition) -> Option<Instant> {
        let clock = &self.inner.clock;
        self.shared
            .view
            .hold(partition.id(), clock.server_ms(now()))
            .map(|until| clock.instant_of(until))
    }

    /// Whether a hold of any partition of this endpoint lasts beyond
    /// `now` (no round trip).
    pub fn holding(&self, now: Instant) -> bool {
        self.shared.view.holding(self.inner.clock.server_ms(now))
    }

    /// Notes that the quota of `partition` is gone for `wait` (a later
    /// hold wins), in this process at once and for the fleet: set only if
    /// later, expiring at the reset, published to every process. One round
    /// trip (two the first time an endpoint is held: the fleet's index).
    /// Redis unreachable: the hold is kept here and shared when it
    /// answers again ([`Decided::Fallback`]).
    pub async fn block_for(&self, partition: Partition, wait: Duration) -> Decided {
        let (id, wait_ms) = self.note_hold(partition, wait);
        self.share_hold(id, wait_ms).await
    }

    /// The part of [`block_for`](Self::block_for) in this process.
    fn note_hold(&self, partition: Partition, wait: Duration) -> (u64, i64) {
        let wait_ms = wait.as_micros().div_ceil(1000).max(1) as i64;
        let server_now = self.inner.clock.server_ms(now());
        let id = partition.id();
        self.inner.view.note_hold(
            &self.shared.view,
            id,
            server_now + wait_ms,
            false,
            server_now,
        );
        (id, wait_ms)
    }

    /// The part of [`block_for`](Self::block_for) that crosses to Redis.
    async fn share_hold(&self, id: u64, wait_ms: i64) -> Decided {
        let hex = format!("{id:016x}");
        let mut call = SCRIPTS.hold.key(&self.shared.keys.holds);
        call.arg(&hex)
            .arg(wait_ms)
            .arg(MAX_HOLDS)
            .arg(&self.inner.keys.channel)
            .arg(&self.shared.keys.tag);
        match self.inner.call::<(i64, i64, i64)>(&call).await {
            Some(((_, server_now, until), sent, received)) => {
                self.inner.clock.observe(sent, received, server_now);
                self.inner
                    .view
                    .note_hold(&self.shared.view, id, until, true, server_now);
                self.shared.view.mark_shared(id);
                self.index(until).await;
                Decided::Fleet
            }
            None => {
                self.inner
                    .counters
                    .fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                Decided::Fallback
            }
        }
    }

    async fn index(&self, until: i64) {
        let mut call = SCRIPTS.index.key(&self.inner.keys.index);
        call.arg(&self.shared.keys.tag).arg(until).arg(MAX_INDEX);
        let _ = self.inner.call::<i64>(&call).await;
    }

    /// Until when the fleet said this endpoint's breaker is open, if it
    /// did and it still is (no round trip).
    pub fn open_until(&self) -> Option<Instant> {
        let clock = &self.inner.clock;
        self.shared
            .view
            .open_until(clock.server_ms(now()))
            .map(|until| clock.instant_of(until))
    }

    /// Tells the fleet this endpoint's breaker opened for `open_for`, if
    /// the store [shares open circuits](super::RedisStoreBuilder::share_open_circuits)
    /// (otherwise nothing: [`Decided::Process`]). Set only if later,
    /// published, expiring at its end.
    pub async fn share_open(&self, open_for: Duration) -> Decided {
        match self.note_open(open_for) {
            Some(wait_ms) => self.share_open_remote(wait_ms).await,
            None => Decided::Process,
        }
    }

    /// The part of [`share_open`](Self::share_open) in this process: the
    /// wait to share, if open circuits are shared.
    fn note_open(&self, open_for: Duration) -> Option<i64> {
        if !self.inner.settings.share_open {
            return None;
        }
        let wait_ms = open_for.as_micros().div_ceil(1000).max(1) as i64;
        let server_now = self.inner.clock.server_ms(now());
        self.shared.view.note_open(server_now + wait_ms, false);
        Some(wait_ms)
    }

    async fn share_open_remote(&self, wait_ms: i64) -> Decided {
        let mut call = SCRIPTS.open.key(&self.shared.keys.open);
        call.arg(wait_ms)
            .arg(&self.inner.keys.channel)
            .arg(&self.shared.keys.tag);
        match self.inner.call::<(i64, i64, i64)>(&call).await {
            Some(((_, server_now, until), sent, received)) => {
                self.inner.clock.observe(sent, received, server_now);
                self.shared.view.note_open(until, true);
                self.index(until).await;
                Decided::Fleet
            }
            None => {
                self.inner
                    .counters
                    .fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                Decided::Fallback
            }
        }
    }

    /// Takes `cost` tokens from the retry budget: the process's own, or
    /// the fleet's if [shared](super::RedisStoreBuilder::shared_budget)
    /// (one round trip, carrying the refunds noted since the last). When
    /// Redis cannot answer, the [`Fallback`] decides (for
    /// [`Fallback::Local`], a local bucket of the process's share of the
    /// capacity).
    pub async fn withdraw(&self, budget: &RetryBudget, cost: u32) -> (bool, Decided) {
        match self.withdraw_now(budget, cost) {
            Some(answer) => answer,
            None => self.withdraw_remote(*budget, cost).await,
        }
    }

    /// The answer of [`withdraw`](Self::withdraw) when it needs no round
    /// trip: a budget kept per process, or the fallback's while Redis
    /// cannot answer. `None`: ask Redis.
    pub(crate) fn withdraw_now(&self, budget: &RetryBudget, cost: u32) -> Option<(bool, Decided)> {
        if !self.inner.settings.shared_budget {
            return Some((self.shared.local.withdraw(budget, cost), Decided::Process));
        }
        if !self.inner.up.load(Ordering::Acquire) {
            return Some(self.fallback_withdraw(budget, cost));
        }
        None
    }

    /// The round trip of [`withdraw`](Self::withdraw) for a shared budget.
    pub(crate) async fn withdraw_remote(&self, budget: RetryBudget, cost: u32) -> (bool, Decided) {
        self.remember(&budget);
        let pending = self.shared.pending.swap(0, Ordering::AcqRel);
        let mut call = SCRIPTS.budget.key(&self.shared.keys.budget);
        call.arg(budget.capacity())
            .arg(pending)
            .arg(cost)
            .arg(BUDGET_IDLE.as_millis() as u64);
        match self.inner.call::<(i64, i64)>(&call).await {
            Some(((paid, left), _, _)) => {
                self.noted(&budget, left);
                (paid == 1, Decided::Fleet)
            }
            None => {
                self.shared.pending.fetch_add(pending, Ordering::AcqRel);
                self.fallback_withdraw(&budget, cost)
            }
        }
    }

    fn fallback_withdraw(&self, budget: &RetryBudget, cost: u32) -> (bool, Decided) {
        self.inner
            .counters
            .fallbacks
            .fetch_add(1, Ordering::Relaxed);
        let paid = match self.inner.settings.fallback {
            Fallback::Local => {
                let mine = share_budget(budget, self.inner.processes());
                self.shared.local.withdraw(&mine, cost)
            }
            Fallback::Allow => true,
            Fallback::Refuse => false,
        };
        (paid, Decided::Fallback)
    }

    /// Puts `tokens` back: in the process's own budget, or, if shared,
    /// noted to go with the next call (a withdrawal, or the background
    /// task's next heartbeat). No round trip, and nothing at all while the
    /// shared bucket was full at its last answer.
    pub fn deposit(&self, budget: &RetryBudget, tokens: u32) {
        if !self.inner.settings.shared_budget {
            self.shared.local.deposit(budget, tokens);
            return;
        }
        if !self.inner.up.load(Ordering::Acquire) {
            let mine = share_budget(budget, self.inner.processes());
            self.shared.local.deposit(&mine, tokens);
        }
        if tokens == 0 || self.shared.full.load(Ordering::Acquire) {
            return;
        }
        self.remember(budget);
        self.shared.pending.fetch_add(tokens, Ordering::AcqRel);
    }

    /// The tokens left in the budget: the process's own, or the shared
    /// bucket's at its last answer (its capacity before any).
    pub fn tokens(&self, budget: &RetryBudget) -> u32 {
        if !self.inner.settings.shared_budget {
            return self.shared.local.tokens(budget);
        }
        match self.shared.left.load(Ordering::Acquire) {
            u32::MAX => budget.capacity(),
            n => n,
        }
    }

    fn remember(&self, budget: &RetryBudget) {
        let mut slot = self
            .shared
            .budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref() != Some(budget) {
            *slot = Some(*budget);
        }
    }

    fn noted(&self, budget: &RetryBudget, left: i64) {
        noted(&self.shared, &self.inner.draining, budget, left);
    }
}

/// A shared bucket answered with `left` tokens. `draining` counts the
/// buckets last seen below their capacity (the store is not at rest while
/// one is).
pub(crate) fn noted(shared: &Shared, draining: &AtomicUsize, budget: &RetryBudget, left: i64) {
    let left = u32::try_from(left.max(0)).unwrap_or(u32::MAX - 1);
    shared.left.store(left, Ordering::Release);
    let full = left >= budget.capacity();
    match (shared.full.swap(full, Ordering::AcqRel), full) {
        (true, false) => {
            draining.fetch_add(1, Ordering::AcqRel);
        }
        (false, true) => {
            draining.fetch_sub(1, Ordering::AcqRel);
        }
        _ => {}
    }
}

/// One endpoint of a [`RedisStore`](super::RedisStore) as the
/// [`StateStore`](crate::protection::store::StateStore) seam hands it to the engine: what needs no round trip is
/// answered at once (holds and hints from the local copy, a refusal this
/// process knows of, the fallback's answers, a budget kept per process);
/// a turn and a shared budget's payment that need Redis are
/// [`StoreStep::Pending`] calls; holds, hints and turns given back are
/// shared in the background, on the runtime the store was connected on.
#[derive(Debug)]
pub(crate) struct FleetState(pub(crate) FleetEndpoint);

fn turn_answer(result: Result<FleetTurn, FleetRefusal>) -> Answer<Result<Turn, Refused>> {
    match result {
        Ok(turn) => {
            let decided = turn.decided;
            Answer::new(Ok(turn.into_turn()), decided)
        }
        Err(refusal) => {
            let (refused, decided) = refusal.into_seam();
            Answer::new(Err(refused), decided)
        }
    }
}

impl FleetState {
    fn payment(&self, (paid, decided): (bool, Decided)) -> Answer<Result<(), Refused>> {
        let value = match (paid, decided, self.0.inner.settings.fallback) {
            (true, _, _) => Ok(()),
            (false, Decided::Fallback, Fallback::Refuse) => Err(Refused::Unavailable),
            (false, _, _) => Err(Refused::Exhausted),
        };
        Answer::new(value, decided)
    }
}

impl EndpointState for FleetState {
    /// The synchronous seam's withdrawal (the engine asks
    /// [`withdraw_step`](EndpointState::withdraw_step)): a budget kept per
    /// process, or this process's share of a shared one.
    fn withdraw(&self, budget: &RetryBudget, cost: u32) -> bool {
        match self.0.withdraw_now(budget, cost) {
            Some((paid, _)) => paid,
            None => {
                let mine = share_budget(budget, self.0.inner.processes());
                self.0.shared.local.withdraw(&mine, cost)
            }
        }
    }

    fn deposit(&self, budget: &RetryBudget, tokens: u32) {
        self.0.deposit(budget, tokens);
    }

    fn circuit(&self, update: &mut dyn FnMut(&mut crate::protection::CircuitState)) {
        self.0.shared.local.circuit(update);
    }

    fn blocked_until(&self, partition: Partition) -> Option<Instant> {
        self.0.blocked_until(partition)
    }

    fn block_until(&self, partition: Partition, until: Instant) {
        let wait = until.saturating_duration_since(now());
        if wait.is_zero() {
            return;
        }
        let (id, wait_ms) = self.0.note_hold(partition, wait);
        let endpoint = self.0.clone();
        self.0.inner.spawn(async move {
            endpoint.share_hold(id, wait_ms).await;
        });
    }

    fn holding(&self, now: Instant) -> bool {
        self.0.holding(now)
    }

    /// The synchronous seam's turn (the engine asks
    /// [`acquire_turn`](EndpointState::acquire_turn)): a refusal this
    /// process knows of, or this process's share of the limit; no round
    /// trip.
    fn acquire(
        &self,
        limit: &RateLimit,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Turn, Duration> {
        let answer = self
            .0
            .acquire_now(limit, 1, max_wait)
            .unwrap_or_else(|| self.0.fallback_acquire(limit, 1, max_wait, now));
        match answer {
            Ok(turn) => Ok(turn.into_turn()),
            Err(FleetRefusal::TooLong { wait, .. }) => Err(wait),
            Err(FleetRefusal::Unavailable) => Err(max_wait.saturating_add(Duration::from_nanos(1))),
        }
    }

    fn release(&self, _limit: &RateLimit, turn: Turn) {
        if let Some((tat, span)) = self.0.give_back_locally(turn) {
            let endpoint = self.0.clone();
            self.0.inner.spawn(async move {
                endpoint.release_remote(tat, span).await;
            });
        }
    }

    fn tokens(&self, budget: &RetryBudget) -> u32 {
        self.0.tokens(budget)
    }

    fn acquire_turn(
        &self,
        limit: &RateLimit,
        cost: u32,
        _now: Instant,
        max_wait: Duration,
    ) -> StoreStep<Result<Turn, Refused>> {
        if let Some(answer) = self.0.acquire_now(limit, cost, max_wait) {
            return StoreStep::Ready(turn_answer(answer));
        }
        let (endpoint, limit) = (self.0.clone(), *limit);
        StoreStep::Pending(Box::pin(async move {
            let answer = endpoint.acquire_remote(limit, cost, max_wait).await;
            StoreAnswer::Turn(turn_answer(answer))
        }))
    }

    fn withdraw_step(&self, budget: &RetryBudget, cost: u32) -> StoreStep<Result<(), Refused>> {
        if let Some(answer) = self.0.withdraw_now(budget, cost) {
            return StoreStep::Ready(self.payment(answer));
        }
        let (endpoint, budget) = (self.0.clone(), *budget);
        StoreStep::Pending(Box::pin(async move {
            let answer = endpoint.withdraw_remote(budget, cost).await;
            let state = FleetState(endpoint);
            StoreAnswer::Payment(state.payment(answer))
        }))
    }

    fn partition(&self, headers: &http::HeaderMap) -> Partition {
        self.0.inner.partition(headers)
    }

    fn open_hint(&self, now: Instant) -> Option<Instant> {
        self.0.open_until().filter(|until| *until > now)
    }

    fn opened(&self, until: Instant) {
        if let Some(wait_ms) = self.0.note_open(until.saturating_duration_since(now())) {
            let endpoint = self.0.clone();
            self.0.inner.spawn(async move {
                endpoint.share_open_remote(wait_ms).await;
            });
        }
    }
}

/// The most endpoints the fleet's index keeps.
pub(crate) const MAX_INDEX: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_a_limit_and_a_budget() {
        let limit = RateLimit::per_second(20).burst(5).build().unwrap();
        let mine = share_limit(&limit, 8);
        assert_eq!(fleet_interval(&mine), Duration::from_millis(400));
        assert_eq!(mine.burst(), 1);
        assert_eq!(share_limit(&limit, 1), limit);
        let budget = RetryBudget::default();
        assert_eq!(share_budget(&budget, 8).capacity(), 62);
        assert_eq!(share_budget(&budget, 1000).capacity(), 10);
        assert_eq!(share_budget(&budget, 1), budget);
        assert_eq!(params(&limit), Some((50_000, 200_000)));
        // 5,000 an hour over 10,000 processes: 10,000 hours (beyond 365
        // days) for 5,000 requests, written as one request every 2 hours.
        let hourly = RateLimit::per_hour(5000).burst(100).build().unwrap();
        let mine = share_limit(&hourly, 10_000);
        assert_eq!(mine.requests(), 1);
        assert_eq!(mine.period(), Duration::from_secs(7200));
        assert_eq!(mine.burst(), 1);
        assert_eq!(fleet_interval(&mine), fleet_interval(&hourly) * 10_000);
    }
}
