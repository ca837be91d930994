//! [`FleetEndpoint`]: one endpoint's shared state, as a request uses it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::keys::{EndpointKeys, endpoint_tag};
use super::scripts::SCRIPTS;
use super::view::{EndpointView, now};
use super::{Decided, Fallback, Inner};
use crate::protection::store::{EndpointKey, EndpointState, MAX_HOLDS, Partition, StateStore};
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
#[must_use]
pub struct FleetTurn {
    at: Instant,
    decided: Decided,
    back: GiveBack,
}

enum GiveBack {
    Nothing,
    /// The schedule's time the acquire set, and cost × interval (µs).
    Fleet {
        tat: i64,
        span: i64,
    },
    /// Turns of the fallback's limiter, of its generation.
    Local {
        generation: u64,
        turns: Vec<Turn>,
    },
}

impl fmt::Debug for FleetTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetTurn")
            .field("at", &self.at)
            .field("decided", &self.decided)
            .finish_non_exhaustive()
    }
}

impl FleetTurn {
    /// When the attempt may be sent (now, or later for a place in line).
    pub fn at(&self) -> Instant {
        self.at
    }
    /// Who decided: [`Decided::Fleet`], or [`Decided::Fallback`] when
    /// Redis could not answer.
    pub fn decided(&self) -> Decided {
        self.decided
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
    /// The request costs more than the limit's burst: it could never be
    /// sent (a turn of that cost never conforms).
    CostAboveBurst {
        /// The request's cost.
        cost: u32,
        /// The limit's burst.
        burst: u32,
    },
    /// Redis could not answer and the fallback is [`Fallback::Refuse`].
    Unavailable,
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
    /// is beyond `max_wait` (a refusal said so). When Redis cannot answer,
    /// the [`Fallback`] decides.
    pub async fn acquire(
        &self,
        limit: &RateLimit,
        cost: u32,
        max_wait: Duration,
    ) -> Result<FleetTurn, FleetRefusal> {
        let cost = cost.max(1);
        let burst = limit.burst().max(1);
        if cost > burst {
            return Err(FleetRefusal::CostAboveBurst { cost, burst });
        }
        let t = now();
        let Some((interval, tolerance)) = params(limit) else {
            return Ok(FleetTurn {
                at: t,
                decided: Decided::Fleet,
                back: GiveBack::Nothing,
            });
        };
        let extra = Duration::from_micros(interval.saturating_mul(u64::from(cost - 1)));
        if let Some(wait) = self.known_wait(t, extra)
            && wait > max_wait
        {
            self.inner
                .counters
                .known_refusals
                .fetch_add(1, Ordering::Relaxed);
            return Err(FleetRefusal::TooLong {
                wait,
                decided: Decided::Fleet,
            });
        }
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
                    Ok(FleetTurn {
                        at: received + after,
                        decided: Decided::Fleet,
                        back: GiveBack::Fleet {
                            tat,
                            span: (interval * u64::from(cost)) as i64,
                        },
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
            None => self.fallback_acquire(limit, cost, max_wait, t),
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
                at: t,
                decided: Decided::Fallback,
                back: GiveBack::Nothing,
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
                let mut turns = Vec::with_capacity(cost as usize);
                for _ in 0..cost {
                    match share.state.acquire(t, max_wait) {
                        Ok(turn) => turns.push(turn),
                        Err(wait) => {
                            for turn in turns.into_iter().rev() {
                                share.state.release(turn);
                            }
                            return Err(FleetRefusal::TooLong {
                                wait,
                                decided: Decided::Fallback,
                            });
                        }
                    }
                }
                let at = turns.last().map_or(t, Turn::at);
                Ok(FleetTurn {
                    at,
                    decided: Decided::Fallback,
                    back: GiveBack::Local {
                        generation: share.generation,
                        turns,
                    },
                })
            }
        }
    }

    /// Gives back a turn that will not be used (its request was dropped or
    /// refused): the fleet's schedule moves back if it is still the last
    /// turn (otherwise it is lost, and the limit holds either way); a
    /// fallback turn goes back to the local limiter. One round trip for a
    /// fleet turn.
    pub async fn release(&self, turn: FleetTurn) {
        match turn.back {
            GiveBack::Nothing => {}
            GiveBack::Fleet { tat, span } => {
                let mut call = SCRIPTS.release.key(&self.shared.keys.limit);
                call.arg(tat).arg(span);
                let _ = self.inner.call::<i64>(&call).await;
            }
            GiveBack::Local { generation, turns } => {
                let mut share = self.shared.lock_share();
                if let Some(share) = share.as_mut().filter(|s| s.generation == generation) {
                    for turn in turns.into_iter().rev() {
                        share.state.release(turn);
                    }
                }
            }
        }
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
        if !self.inner.settings.share_open {
            return Decided::Process;
        }
        let wait_ms = open_for.as_micros().div_ceil(1000).max(1) as i64;
        let server_now = self.inner.clock.server_ms(now());
        self.shared.view.note_open(server_now + wait_ms, false);
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
        if !self.inner.settings.shared_budget {
            return (self.shared.local.withdraw(budget, cost), Decided::Process);
        }
        self.remember(budget);
        let pending = self.shared.pending.swap(0, Ordering::AcqRel);
        let mut call = SCRIPTS.budget.key(&self.shared.keys.budget);
        call.arg(budget.capacity())
            .arg(pending)
            .arg(cost)
            .arg(BUDGET_IDLE.as_millis() as u64);
        match self.inner.call::<(i64, i64)>(&call).await {
            Some(((paid, left), _, _)) => {
                self.noted(budget, left);
                (paid == 1, Decided::Fleet)
            }
            None => {
                self.shared.pending.fetch_add(pending, Ordering::AcqRel);
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
        }
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
        noted(&self.shared, budget, left);
    }
}

/// A shared bucket answered with `left` tokens.
pub(crate) fn noted(shared: &Shared, budget: &RetryBudget, left: i64) {
    let left = u32::try_from(left.max(0)).unwrap_or(u32::MAX - 1);
    shared.left.store(left, Ordering::Release);
    shared
        .full
        .store(left >= budget.capacity(), Ordering::Release);
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
