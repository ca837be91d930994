//! A request's hold on its endpoint's load-protection state: the
//! bookkeeping beside the decisions. Budget payments and refunds, the
//! breaker's tickets, the rate limiter's turns and the quota holds a
//! response announces are all kept here, so that [`admit`](super::RetryState::admit)
//! and [`decide`](super::RetryState::decide) read as their documented steps.
//!
//! The request's identity as load protection sees it is made here once,
//! when first needed: its endpoint key (host and port, or the whole policy)
//! when the endpoint is looked up, and its credential partition when a
//! quota is seen gone or the endpoint holds one. Later steps read them from
//! the [`Guard`].

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Now, RetryState, trace};
use crate::classify::{Class, Outcome, RequestMeta};
use crate::hedging::Flight;
use crate::policy::Protection;
use crate::protection::store::{
    Decided, EndpointKey, EndpointState, Partition, Refused, Scope, StoreAnswer, StoreCall,
    StoreStep,
};
use crate::protection::{
    CircuitBreaker, CircuitStatus, RateLimit, RetryBudget, Ticket, Turn, Verdict,
};
use crate::retry_after::DelaySource;
use crate::retry_after::quota_reset_at;

/// A request's hold on its endpoint's load-protection state (given back on
/// drop: see `RetryState`'s `Drop`). Made when first needed: a request
/// that succeeds at once while the store is at rest never looks its
/// endpoint up.
#[derive(Debug)]
pub(super) struct Guard {
    endpoint: Arc<dyn EndpointState>,
    /// The breaker's ticket of the attempt in flight.
    ticket: Option<Ticket>,
    /// Tokens paid for the retry about to be sent.
    paid: u32,
    /// Tokens paid for retries already sent (refunded on success).
    spent: u32,
    /// Of `spent`, the tokens of the attempt last let through: given back
    /// if the adapter withdraws it unsent ([`RetryState::withdraw`]).
    admitted: u32,
    /// When the attempt about to be sent first asked to go, in nanoseconds
    /// after `RetryState::started`, plus one; 0 for not yet (a word, not an
    /// `Option<Instant>`'s two: the state is moved with every request).
    turn_started: u64,
    /// The request's credential partition for server quota holds, worked
    /// out (a keyed hash of its credential headers) when first needed: when
    /// a quota is seen gone, or when the endpoint holds some.
    partition: Option<Partition>,
    /// The rate-limit turn the next attempt holds: a reservation it waits
    /// for, or a turn that has come and is used when the attempt is sent.
    /// Given back if the attempt is refused or the request dropped.
    turn: Option<Turn>,
    /// What the store is asked over the network: the call until the
    /// adapter takes it, then what it answered. Boxed, and only for a
    /// store that shares its state (an in-memory one answers at once).
    consult: Option<Box<Consult>>,
    /// Whether a store's fallback made a decision since the engine last
    /// looked ([`take_fallback`](Self::take_fallback)).
    fallback: bool,
    /// A hedged request's attempts in flight (see `engine/hedge.rs`).
    pub(super) flight: Option<Box<Flight>>,
}

/// A store call the adapter awaits, and what comes of it.
#[derive(Default)]
pub(super) struct Consult {
    /// The call, until the adapter takes it. (In a `Mutex`, never locked:
    /// only `get_mut` and `into_inner`, so that the state stays `Sync`
    /// though a store's future need not be.)
    call: Option<Mutex<StoreCall>>,
    /// A refusal the store answered, for the next `admit`.
    refused: Option<Refused>,
    /// The payment the store answered, for `decide_after_store`.
    payment: Option<Result<(), Refused>>,
    /// The retry `decide` was deciding when it asked for the payment.
    retry: Option<PendingRetry>,
}

impl std::fmt::Debug for Consult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consult")
            .field("call", &self.call.is_some())
            .field("refused", &self.refused)
            .field("payment", &self.payment)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A retry decided up to its payment, which a store call answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingRetry {
    pub(super) delay: Duration,
    pub(super) source: DelaySource,
    pub(super) is_response: bool,
    pub(super) cost: u32,
}

/// Why an attempt gets no turn now: beyond `max_wait` (how far), the store
/// cannot answer and its fallback refuses, or a store call must be awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoTurn {
    Beyond(Duration),
    Unavailable,
    Consult,
}

/// What came of a retry's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payment {
    Paid,
    Refused(Refused),
    Consult,
}

impl Guard {
    /// The request's hold, made (and the endpoint looked up by the
    /// request's key) on first need.
    pub(super) fn of<'a>(
        slot: &'a mut Option<Box<Guard>>,
        protection: &Protection,
        request: &RequestMeta<'_>,
    ) -> &'a mut Guard {
        slot.get_or_insert_with(|| {
            Box::new(Guard {
                endpoint: protection
                    .store
                    .endpoint(&endpoint_key(protection, request)),
                ticket: None,
                paid: 0,
                spent: 0,
                admitted: 0,
                turn_started: 0,
                partition: None,
                turn: None,
                consult: None,
                fallback: false,
                flight: None,
            })
        })
    }

    /// The endpoint's state (for the metrics' gauges).
    #[cfg(feature = "metrics")]
    pub(super) fn endpoint(&self) -> &dyn EndpointState {
        &*self.endpoint
    }

    /// The request's partition: the store's hash of its credential (a
    /// shared store's is the same in every process).
    fn partition(&mut self, request: &RequestMeta<'_>) -> Partition {
        let endpoint = &self.endpoint;
        *self
            .partition
            .get_or_insert_with(|| endpoint.partition(request.headers()))
    }

    /// Notes who decided a store's answer.
    fn decided(&mut self, decided: Decided) {
        self.fallback |= decided == Decided::Fallback;
    }

    /// Whether a store's fallback decided something since the last call.
    pub(super) fn take_fallback(&mut self) -> bool {
        std::mem::take(&mut self.fallback)
    }

    fn consult(&mut self) -> &mut Consult {
        self.consult.get_or_insert_with(Box::default)
    }

    /// The store call to await, if one is out.
    pub(super) fn take_call(&mut self) -> Option<StoreCall> {
        let call = self.consult.as_mut()?.call.take()?;
        Some(call.into_inner().unwrap_or_else(PoisonError::into_inner))
    }

    /// Polls the store call out, if one is: its answer once it has one
    /// (the call is then gone), `Ready(None)` if none is out.
    pub(super) fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<Option<StoreAnswer>> {
        let Some(slot) = self.consult.as_mut().map(|c| &mut c.call) else {
            return Poll::Ready(None);
        };
        let Some(call) = slot else {
            return Poll::Ready(None);
        };
        let call = call.get_mut().unwrap_or_else(PoisonError::into_inner);
        let answer = std::task::ready!(call.as_mut().poll(cx));
        *slot = None;
        Poll::Ready(Some(answer))
    }

    /// What a store call answered.
    pub(super) fn answered(&mut self, answer: StoreAnswer) {
        match answer {
            StoreAnswer::Turn(answer) => {
                self.decided(answer.decided);
                match answer.value {
                    Ok(turn) => self.turn = Some(turn),
                    Err(refused) => self.consult().refused = Some(refused),
                }
            }
            StoreAnswer::Payment(answer) => {
                self.decided(answer.decided);
                self.consult().payment = Some(answer.value);
            }
        }
    }

    /// The retry waiting for its payment, and the payment (a store that
    /// did not answer cannot pay).
    pub(super) fn paid_retry(&mut self) -> Option<(PendingRetry, Result<(), Refused>)> {
        let consult = self.consult.as_mut()?;
        let retry = consult.retry.take()?;
        let payment = consult.payment.take().unwrap_or(Err(Refused::Unavailable));
        if payment.is_ok() {
            self.paid = retry.cost;
        }
        Some((retry, payment))
    }

    /// Drops any store call and answer still out: the attempt they were for
    /// will not be sent.
    pub(super) fn forget_consult(&mut self) {
        self.consult = None;
    }

    /// When the attempt about to be sent first asked to go (its waits for
    /// a turn count against the rate limit's `max_wait` from then).
    pub(super) fn turn_started(&mut self, started: Instant, now: Instant) -> Instant {
        if self.turn_started == 0 {
            let since = now.saturating_duration_since(started).as_nanos();
            self.turn_started = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
        }
        started + Duration::from_nanos(self.turn_started - 1)
    }

    /// Until when a server said the quota of the request's credential is
    /// gone, if it did and that is after `now`. The partition is worked out
    /// only if the endpoint holds some quota.
    pub(super) fn held_until(
        &mut self,
        request: &RequestMeta<'_>,
        now: Instant,
    ) -> Option<Instant> {
        if !self.endpoint.holding(now) {
            return None;
        }
        let partition = self.partition(request);
        self.endpoint
            .blocked_until(partition)
            .filter(|until| *until > now)
    }

    /// The attempt's turn under `limit`: `Ok(None)` to go now, `Ok(Some(wait))`
    /// to wait for the turn it holds (one ask per attempt, however many
    /// wait), `Err(NoTurn::Beyond(delay))` when the next turn lies beyond
    /// what is `left` of `max_wait` (no turn taken). `held`: a server quota holds the attempt
    /// anyway, so a turn taken before is given back and none is taken.
    ///
    /// The turn is the store's ([`EndpointState::acquire_turn`], for the
    /// request's `cost`): answered at once, or a call the adapter awaits
    /// ([`NoTurn::Consult`]) whose answer the next ask finds.
    pub(super) fn take_turn(
        &mut self,
        limit: &RateLimit,
        cost: u32,
        now: Instant,
        left: Duration,
        held: bool,
    ) -> Result<Option<Duration>, NoTurn> {
        if let Some(consult) = &mut self.consult {
            if consult.call.is_some() {
                return Err(NoTurn::Consult);
            }
            match consult.refused.take() {
                Some(Refused::Unavailable) => return Err(NoTurn::Unavailable),
                Some(Refused::TooLong(wait)) => return Err(NoTurn::Beyond(wait)),
                Some(_) | None => {}
            }
        }
        let turn = match self.turn.take() {
            Some(turn) if held => {
                self.endpoint.release(limit, turn);
                return Ok(None);
            }
            Some(turn) => turn,
            None if held => return Ok(None),
            None => match self.endpoint.acquire_turn(limit, cost, now, left) {
                StoreStep::Ready(answer) => {
                    self.decided(answer.decided);
                    match answer.value {
                        Ok(turn) => turn,
                        Err(Refused::TooLong(wait)) => return Err(NoTurn::Beyond(wait)),
                        Err(_) => return Err(NoTurn::Unavailable),
                    }
                }
                StoreStep::Pending(call) => {
                    self.consult().call = Some(Mutex::new(call));
                    return Err(NoTurn::Consult);
                }
            },
        };
        let wait = (turn.at() > now).then(|| turn.at() - now);
        self.turn = Some(turn);
        Ok(wait)
    }

    /// Asks the endpoint's breaker to let the attempt through; `Err` with
    /// when it will let a probe through.
    pub(super) fn pass_breaker(
        &mut self,
        breaker: &CircuitBreaker,
        now: Instant,
    ) -> Result<(), Duration> {
        // Another process's breaker is open (a shared store's hint).
        if let Some(until) = self.endpoint.open_hint(now) {
            return Err(until - now);
        }
        let mut verdict = None;
        self.endpoint
            .circuit(&mut |state| verdict = Some(state.admit(breaker, now)));
        match verdict {
            Some(Verdict::Allow(ticket)) => self.ticket = Some(ticket),
            Some(Verdict::Refuse { retry_in }) => return Err(retry_in),
            None => {}
        }
        Ok(())
    }

    /// Until when the endpoint's breaker is open, if it is at `now`: its
    /// own, or as other processes said (a shared store's hint).
    pub(super) fn open_until(&self, now: Instant) -> Option<Instant> {
        let mut status = CircuitStatus::Closed;
        self.endpoint
            .circuit(&mut |state| status = state.status(now));
        let local = match status {
            CircuitStatus::Open { until } => Some(until),
            _ => None,
        };
        local.max(self.endpoint.open_hint(now))
    }

    /// Pays `retry.cost` tokens for the retry about to be decided, or says
    /// why the endpoint's budget does not.
    ///
    /// The payment is the store's ([`EndpointState::withdraw_step`]):
    /// answered at once, or a call the adapter awaits
    /// ([`Payment::Consult`]; `retry` is kept for
    /// [`paid_retry`](Self::paid_retry)).
    pub(super) fn pay(&mut self, budget: &RetryBudget, retry: PendingRetry) -> Payment {
        match self.endpoint.withdraw_step(budget, retry.cost) {
            StoreStep::Ready(answer) => {
                self.decided(answer.decided);
                match answer.value {
                    Ok(()) => {
                        self.paid = retry.cost;
                        Payment::Paid
                    }
                    Err(refused) => Payment::Refused(refused),
                }
            }
            StoreStep::Pending(call) => {
                let consult = self.consult();
                consult.call = Some(Mutex::new(call));
                consult.retry = Some(retry);
                Payment::Consult
            }
        }
    }

    /// Whether the endpoint's breaker is closed at `now` (a hedge is never
    /// sent while it is open or half-open: its probes are scarce).
    pub(super) fn breaker_closed(&self, now: Instant) -> bool {
        if self.endpoint.open_hint(now).is_some() {
            return false;
        }
        let mut status = CircuitStatus::Closed;
        self.endpoint
            .circuit(&mut |state| status = state.status(now));
        status == CircuitStatus::Closed
    }

    /// A turn under `limit` free at `now`, taken (and spent) if there is
    /// one: a hedge never waits for one.
    pub(super) fn turn_now(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.endpoint.acquire(limit, now, Duration::ZERO).is_ok()
    }

    /// Takes `cost` tokens from the budget at once (a hedge never waits
    /// for a store shared by many processes: such a store answers from
    /// this process's share). `refundable`: counted with the retries'
    /// tokens, given back if the request succeeds (a retry owed); a
    /// hedge's are not.
    pub(super) fn withdraw(&mut self, budget: &RetryBudget, cost: u32, refundable: bool) -> bool {
        let paid = self.endpoint.withdraw(budget, cost);
        if paid && refundable {
            self.spent += cost;
        }
        paid
    }

    /// The attempt is being sent: what was paid for it is spent, its turn
    /// used.
    pub(super) fn sending(&mut self) {
        self.turn_started = 0;
        self.admitted = std::mem::take(&mut self.paid);
        self.spent += self.admitted;
        self.turn = None;
    }

    /// The attempt let through will not be sent after all: its probe slot
    /// is freed and its tokens are owed back (refunded with the refusal).
    pub(super) fn withdrawn(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.endpoint.circuit(&mut |state| state.release(ticket));
        }
        let admitted = std::mem::take(&mut self.admitted);
        self.spent = self.spent.saturating_sub(admitted);
        self.paid = self.paid.saturating_add(admitted);
    }
}

impl RetryState {
    /// Tells the endpoint's breaker how the attempt went, and notes a quota
    /// the response says is gone.
    #[inline]
    pub(super) fn observe(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        class: Class,
        now: &mut Now<impl FnOnce() -> Instant>,
    ) {
        let p = self.policy.inner();
        if let Some(guard) = &mut self.guard {
            // The attempt was sent: no longer one to withdraw. (Only load
            // protection makes a guard, so this is the only place needed.)
            guard.admitted = 0;
            if let (Some(ticket), Some(breaker)) = (guard.ticket.take(), &p.protection.circuit) {
                let failed = match (class, outcome) {
                    (Class::Transient, _) => Some(true),
                    (_, Outcome::Response { .. }) => Some(false),
                    // A permanent transport error (TLS, a bad URL) says
                    // nothing about the server's health.
                    (_, Outcome::Error { .. }) => None,
                };
                let now = now.get();
                // A failure that opens the breaker is told to the store (a
                // shared one may tell the other processes).
                let mut opened = None;
                guard.endpoint.circuit(&mut |state| match failed {
                    Some(true) => {
                        let was_open = matches!(state.status(now), CircuitStatus::Open { .. });
                        state.record(breaker, ticket, true, now);
                        if let (false, CircuitStatus::Open { until }) =
                            (was_open, state.status(now))
                        {
                            opened = Some(until);
                        }
                    }
                    Some(false) => state.record(breaker, ticket, false, now),
                    None => state.release(ticket),
                });
                if let Some(until) = opened {
                    guard.endpoint.opened(until);
                }
            }
        }
        if p.protection.server_limits
            && let Some(headers) = outcome.headers()
            && let Some((wait, which)) = quota_reset_at(headers, || p.clock.now())
        {
            // A reset absurdly far ahead (the year 2100) is garbage: holding
            // it would refuse every request for the life of the process.
            if wait <= p.protection.max_quota_reset {
                let guard = Guard::of(&mut self.guard, &p.protection, request);
                let partition = guard.partition(request);
                guard.endpoint.block_until(partition, now.get() + wait);
                trace::quota_held(request, which, wait, !partition.is_anonymous());
            } else {
                trace::quota_ignored(request, which, wait, p.protection.max_quota_reset);
            }
        }
    }

    /// A success: a first attempt puts back `success_refund` (nothing to
    /// do while the store is at rest: every bucket is full), a retried
    /// request what its retries cost.
    pub(super) fn refund_success(
        &mut self,
        request: &RequestMeta<'_>,
        now: &Now<impl FnOnce() -> Instant>,
    ) {
        let p = self.policy.inner();
        let Some(budget) = &p.protection.budget else {
            return;
        };
        let spent = self
            .guard
            .as_mut()
            .map_or(0, |g| std::mem::take(&mut g.spent));
        let tokens = match spent {
            // An earlier `now` (the attempt's start, when the clock was
            // not read) can only make the store look less quiet: a
            // lookup too many, never one too few.
            0 if self.guard.is_none() && p.protection.store.quiet(now.last()) => return,
            0 => budget.success_refund(),
            spent => spent,
        };
        Guard::of(&mut self.guard, &p.protection, request)
            .endpoint
            .deposit(budget, tokens);
    }

    /// Gives back the rate-limit turn the next attempt held: it will not be
    /// sent in it.
    pub(super) fn give_back_turn(&mut self) {
        if let Some(guard) = &mut self.guard
            && let Some(turn) = guard.turn.take()
            && let Some(limit) = self.policy.rate_limit()
        {
            guard.endpoint.release(limit, turn);
        }
    }

    /// Gives back the tokens paid for a retry that will not be sent.
    pub(super) fn refund(&mut self) {
        if let Some(guard) = &mut self.guard
            && let Some(budget) = self.policy.retry_budget()
        {
            let paid = std::mem::take(&mut guard.paid);
            if paid > 0 {
                guard.endpoint.deposit(budget, paid);
            }
        }
    }
}

/// A dropped request (a cancelled future) gives back what it held and did
/// not use: the tokens paid for a retry not yet sent, its place in the rate
/// limiter's line, a half-open probe's slot.
impl Drop for RetryState {
    fn drop(&mut self) {
        self.refund();
        self.give_back_turn();
        if let Some(guard) = &mut self.guard
            && let Some(ticket) = guard.ticket.take()
        {
            guard.endpoint.circuit(&mut |state| state.release(ticket));
        }
    }
}

/// The endpoint's name for reports: `host:port`, or `(policy)`.
pub(super) fn endpoint_label(protection: &Protection, request: &RequestMeta<'_>) -> String {
    endpoint_key(protection, request).to_string()
}

fn endpoint_key<'a>(protection: &Protection, request: &RequestMeta<'a>) -> EndpointKey<'a> {
    match protection.scope {
        Scope::Policy => EndpointKey::whole_policy(),
        _ => EndpointKey::new(request.host(), request.port()),
    }
}
