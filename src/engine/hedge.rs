//! Hedged requests, the engine's part: whether a request is hedged, when a
//! copy goes and whether load protection lets it, and what follows each
//! attempt's end while others are in flight. The timing rules are the
//! flight's ([`Flight`]); the adapters only start attempts, poll them side
//! by side and drop the losers.
//!
//! An adapter drives a hedged request so:
//! 1. after [`admit`](RetryState::admit) lets a first attempt or a retry
//!    through, [`hedge_start`](RetryState::hedge_start): `Some(attempt)`
//!    if the request is hedged (its number among the request's sends);
//! 2. while attempts are in flight, a timer at
//!    [`hedge_due`](RetryState::hedge_due); when it fires,
//!    [`hedge_now`](RetryState::hedge_now): send a copy, wait, or not;
//! 3. when an attempt ends, [`race_ended`](RetryState::race_ended), the
//!    usual `decide`, then [`race_settle`](RetryState::race_settle): keep racing (a transient
//!    failure while another attempt is out), or what the request does
//!    now (the others are then cancelled: the adapter drops them);
//! 4. a response whose body the classifier reads first ends the race
//!    ([`race_handover`](RetryState::race_handover)): the others are
//!    cancelled, and it is decided as a lone attempt.

use std::time::{Duration, Instant};

use super::endpoint::Guard;
use super::{Decision, RetryState};
use crate::classify::{Class, FailureKind, RequestMeta};
use crate::hedging::{Extra, Flight, Slot};
#[cfg(feature = "metrics")]
use crate::metrics::HedgeEvent;
use crate::protection::store::Scope;
use crate::report::{AttemptRecord, HedgeSkip, UNKNOWN, nanos};

/// What [`RetryState::hedge_now`] says when the hedge timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hedge {
    /// Send another attempt now, numbered `attempt` (a hedge, or the retry
    /// owed after a failure while another attempt was in flight).
    Send { attempt: u32 },
    /// Not yet: ask again after this long.
    Wait(Duration),
    /// Not at all (the report says why); the attempts in flight go on.
    Skip,
}

/// What [`RetryState::race_settle`] says after an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Raced {
    /// Another attempt is still in flight: keep this result as the last
    /// one, and go on polling the others.
    Keep,
    /// What the request does now, as after a lone attempt; any other
    /// attempt in flight is cancelled (unless the decision is a retry,
    /// for which none is left in flight).
    Done(Decision),
}

impl RetryState {
    /// Whether the attempt [`admit`](Self::admit) just let through at
    /// `now` (the first, or a retry) starts a hedged round: with hedging
    /// on, for a request that may be sent twice (an idempotent method, an
    /// `Idempotency-Key`, or the classifier's say) whose body can be sent
    /// again. `Some(attempt)`: its number among the request's sends. With
    /// hedging off, one load and a branch.
    /// (`request` makes the request's description, only then.)
    #[inline]
    pub(crate) fn hedge_start<'a>(
        &mut self,
        request: impl FnOnce() -> RequestMeta<'a>,
        now: Instant,
    ) -> Option<u32> {
        self.policy.inner().hedging.as_ref()?;
        self.start_round(&request(), now)
    }

    #[cold]
    fn start_round(&mut self, request: &RequestMeta<'_>, now: Instant) -> Option<u32> {
        self.settle_handover();
        let p = self.policy.inner();
        let hedging = p.hedging.as_ref()?;
        let twice = match p.classifier.retry_safety(request) {
            Some(safe) => safe,
            None => request.is_idempotent(),
        };
        if !twice || !self.replayable {
            return None;
        }
        let (host, port) = learned_key(p.protection.scope, request);
        let guard = Guard::of(&mut self.guard, &p.protection, request);
        // Made at the request's first send (its delay worked out once);
        // kept across retries: `max_hedges` is per request.
        let flight = guard.flight.get_or_insert_with(|| {
            Box::new(Flight::new(
                hedging.delay_at(host, port),
                hedging.max_hedges(),
            ))
        });
        let attempt = self.report.attempts() + flight.in_flight() as u32;
        if flight.in_flight() == 0 {
            flight.round_start = self.report.attempts();
        }
        flight.sent(Slot {
            attempt,
            sent: now,
            hedge: false,
            ticket: None,
        });
        Some(attempt)
    }

    /// When the engine wants [`hedge_now`](Self::hedge_now) asked (a
    /// hedge, or a retry owed), if it does.
    pub(crate) fn hedge_due(&self) -> Option<Instant> {
        let flight = self.guard.as_ref()?.flight.as_ref()?;
        flight.due().map(|(at, _)| at)
    }

    /// The hedge timer fired at `now`: whether another attempt goes now.
    /// In order: the flight says one is due (a hedge within `max_hedges`,
    /// or a retry owed); for a retry owed, the retries made and in flight
    /// are fewer than `max_retries` (hedges do not count: `max_hedges`
    /// bounds them); time is left before the deadline; no server
    /// quota is held for the request's credential; the endpoint's breaker
    /// is closed; the local rate limit has a turn free at once (a hedge
    /// never waits for one); the retry budget pays (`retry_cost` for a
    /// hedge, never refunded: in a slow outage the budget runs dry and the
    /// load falls back to one attempt per request; a retry owed pays as a
    /// retry does, refunded on success). A skip is noted in the report and
    /// holds further hedges until the next retry.
    pub(crate) fn hedge_now(&mut self, request: &RequestMeta<'_>, now: Instant) -> Hedge {
        let p = self.policy.inner();
        let protection = &p.protection;
        let sends = self.report.attempts();
        let retries = self.report.retries();
        let left = self.deadline_left(now);
        let Some(guard) = self.guard.as_deref_mut() else {
            return Hedge::Skip;
        };
        let Some((at, extra)) = guard.flight.as_ref().and_then(|f| f.due()) else {
            return Hedge::Skip;
        };
        if at > now {
            return Hedge::Wait(at - now);
        }
        let flight = guard.flight.as_deref();
        let in_flight = flight.map_or(0, |f| f.in_flight()) as u32;
        // A retry owed counts against `max_retries`, with the retries in
        // flight (a hedge does not: `max_hedges` bounds those).
        let retries_out = flight.map_or(0, |f| f.retries_in_flight());
        let skip = if extra == Extra::Retry && retries + retries_out >= p.max_retries {
            Some(HedgeSkip::MaxRetries)
        } else if left.is_some_and(|l| l.is_zero()) {
            Some(HedgeSkip::Deadline)
        } else if protection.server_limits && guard.held_until(request, now).is_some() {
            Some(HedgeSkip::ServerQuota)
        } else if protection.circuit.is_some() && !guard.breaker_closed(now) {
            Some(HedgeSkip::CircuitOpen)
        } else if let Some(limit) = &protection.rate_limit
            && !guard.turn_now(limit, now)
        {
            Some(HedgeSkip::LocalRateLimit)
        } else if let Some(budget) = &protection.budget {
            let after_timeout = extra == Extra::Retry
                && guard
                    .flight
                    .as_ref()
                    .is_some_and(|f| f.owed_after_timeout());
            let cost = match extra {
                Extra::Hedge => budget.retry_cost(),
                Extra::Retry => budget.cost(after_timeout),
            };
            if guard.withdraw(budget, cost, extra == Extra::Retry) {
                None
            } else {
                Some(HedgeSkip::BudgetExhausted)
            }
        } else {
            None
        };
        let attempt = sends + in_flight;
        let Some(flight) = guard.flight.as_deref_mut() else {
            return Hedge::Skip;
        };
        if let Some(skip) = skip {
            match extra {
                Extra::Hedge => flight.hold(),
                Extra::Retry => flight.forgive(),
            }
            self.report.note_hedge_skipped(skip);
            #[cfg(feature = "metrics")]
            if extra == Extra::Hedge {
                self.record_hedge(request, HedgeEvent::Skipped);
            }
            return Hedge::Skip;
        }
        flight.sent(Slot {
            attempt,
            sent: now,
            hedge: extra == Extra::Hedge,
            ticket: None,
        });
        #[cfg(feature = "metrics")]
        if extra == Extra::Hedge {
            self.record_hedge(request, HedgeEvent::Sent);
        }
        Hedge::Send { attempt }
    }

    /// The attempt [`hedge_now`](Self::hedge_now) let go could not be sent
    /// after all (its transport not ready at once, its body committed):
    /// it is forgotten, and no further hedge goes until the next retry.
    pub(crate) fn hedge_unsent(&mut self, attempt: u32) {
        if let Some(flight) = flight_of(&mut self.guard) {
            flight.ended(attempt);
            flight.hold();
        }
    }

    /// Attempt number `attempt` of a hedged round ended: asked right
    /// before the `decide` on its outcome, whose record is then noted as
    /// this attempt's (its send time, whether a hedge).
    pub(crate) fn race_ended(&mut self, attempt: u32) {
        if let Some(flight) = flight_of(&mut self.guard) {
            flight.last_ended = flight.ended(attempt);
        }
    }

    /// `decide` answered `decision` at `now` for the attempt
    /// [`race_ended`](Self::race_ended) named (its record is the report's
    /// last). A transient failure while another attempt is in flight does
    /// not start a retry: its payment is given back, and a retry is owed
    /// (sent by [`hedge_now`](Self::hedge_now) once the latest attempt
    /// in flight has been out one hedge delay, and not before the
    /// failure's own wait), unless the attempts in flight end first.
    /// Anything else is what the request does now; a final answer cancels
    /// the attempts still in flight and names the winner, and the round's
    /// records are put in the order they were sent.
    pub(crate) fn race_settle(
        &mut self,
        request: &RequestMeta<'_>,
        decision: Decision,
        now: Instant,
    ) -> Raced {
        let started = self.started;
        let Some(flight) = flight_of(&mut self.guard) else {
            return Raced::Done(decision);
        };
        let slot = flight.last_ended.take();
        let in_flight = flight.in_flight();
        let round_start = flight.round_start as usize;
        let sent_at = slot.map(|s| nanos(s.sent.saturating_duration_since(started)));
        if let Some(slot) = slot {
            self.report
                .note_sent(sent_at.unwrap_or(UNKNOWN), slot.hedge);
        }
        let last = self.report.last().map(|r| (r.class, r.status.is_some()));
        if last.is_some_and(|(class, _)| class == Class::Transient) && in_flight > 0 {
            match decision {
                Decision::Retry { delay, .. } => {
                    // Paid by `decide`: given back, paid again if the owed
                    // retry goes.
                    self.refund();
                    let after_timeout = self
                        .report
                        .last()
                        .is_some_and(|r| r.failure == Some(FailureKind::Timeout));
                    if let Some(flight) = flight_of(&mut self.guard) {
                        flight.owe(now, delay, after_timeout);
                    }
                    if let Some(last) = self.report.last_mut() {
                        last.delay = None;
                        last.delay_source = None;
                    }
                }
                Decision::Consult => {
                    if let Some(guard) = &mut self.guard {
                        guard.forget_consult();
                    }
                }
                _ => {}
            }
            self.report.clear_stop();
            return Raced::Keep;
        }
        let decision = match decision {
            Decision::Retry { delay, source } => {
                let delay = flight.settle(now, delay);
                if let Some(last) = self.report.last_mut() {
                    last.delay = Some(delay);
                }
                Decision::Retry { delay, source }
            }
            decision => decision,
        };
        if !matches!(decision, Decision::Retry { .. } | Decision::Consult) {
            if let (Some(slot), Some((Class::Success, true))) = (slot, last) {
                self.learn(request, slot.sent, now);
            }
            self.cancel_in_flight(request, now);
        }
        let winner = self
            .report
            .order_round(round_start, sent_at.unwrap_or(UNKNOWN));
        if decision == Decision::Return
            && let Some(winner) = winner
        {
            self.report.set_winner(winner as u32);
            #[cfg(feature = "metrics")]
            if slot.is_some_and(|s| s.hedge) {
                self.record_hedge(request, HedgeEvent::Won);
            }
        }
        Raced::Done(decision)
    }

    /// The response of attempt number `attempt` needs its body read before
    /// it can be decided: the race ends with it. The others in flight are
    /// cancelled; it is then decided as a lone attempt.
    pub(crate) fn race_handover(&mut self, attempt: u32, request: &RequestMeta<'_>, now: Instant) {
        let Some(flight) = flight_of(&mut self.guard) else {
            return;
        };
        let slot = flight.ended(attempt);
        self.cancel_in_flight(request, now);
        // Its record is the next one `decide` pushes: noted as this
        // attempt's when the report is next taken or a round starts.
        let index = self.report.attempts() as usize;
        if let Some(flight) = flight_of(&mut self.guard) {
            flight.handed = slot.map(|slot| (index, slot));
        }
    }

    /// Notes the send time and hedge flag of an attempt that was handed
    /// over ([`race_handover`](Self::race_handover)) on its record, now
    /// that it has one.
    #[cold]
    pub(super) fn settle_handover(&mut self) {
        let started = self.started;
        let Some(flight) = flight_of(&mut self.guard) else {
            return;
        };
        if let Some((index, slot)) = flight.handed.take() {
            let sent_at = nanos(slot.sent.saturating_duration_since(started));
            self.report.note_sent_at(index, sent_at, slot.hedge);
        }
    }

    /// The attempts still in flight are cancelled at `now` (another won):
    /// each gets its record, and teaches the endpoint its age (a lower
    /// bound of its latency: without it the slow attempts, always
    /// cancelled, would never be seen, and the learned delay would sink).
    fn cancel_in_flight(&mut self, request: &RequestMeta<'_>, now: Instant) {
        let started = self.started;
        let Some(flight) = flight_of(&mut self.guard) else {
            return;
        };
        let slots: Vec<Slot> = flight.drain().collect();
        for slot in slots {
            let sent_at = slot.sent.saturating_duration_since(started);
            let elapsed = now.saturating_duration_since(started);
            self.report
                .push(AttemptRecord::cancelled(elapsed, sent_at, slot.hedge));
            self.learn(request, slot.sent, now);
        }
    }

    /// Notes an attempt's latency (sent at `sent`, answered or cancelled at
    /// `now`) for the endpoint, if the policy learns its delay.
    fn learn(&self, request: &RequestMeta<'_>, sent: Instant, now: Instant) {
        let p = self.policy.inner();
        if let Some(hedging) = &p.hedging {
            let (host, port) = learned_key(p.protection.scope, request);
            hedging.learn(host, port, now.saturating_duration_since(sent));
        }
    }
}

/// The request's flight, if it is hedged (a function of the guard's slot,
/// not of the whole state, so that the report can be written meanwhile).
fn flight_of(guard: &mut Option<Box<Guard>>) -> Option<&mut Flight> {
    guard.as_mut()?.flight.as_deref_mut()
}

/// The endpoint a latency is learned for: host and port, or one figure for
/// the whole policy under [`Scope::Policy`].
fn learned_key<'a>(scope: Scope, request: &RequestMeta<'a>) -> (&'a str, u16) {
    match scope {
        Scope::Policy => ("", 0),
        _ => (request.host(), request.port()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{HeaderMap, Method, StatusCode};

    use super::{Hedge, Raced};
    use crate::backoff::Jitter;
    use crate::classify::{Outcome, RequestMeta};
    use crate::engine::{Admission, Decision, RetryState};
    use crate::hedging::Hedging;
    use crate::policy::RetryPolicy;
    use crate::protection::RetryBudget;
    use crate::report::HedgeSkip;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(budget: Option<RetryBudget>) -> RetryPolicy {
        RetryPolicy::builder()
            .jitter(Jitter::None)
            .initial_backoff(ms(100))
            .retry_budget(budget)
            .hedging(Hedging::builder().delay(ms(50)).build().unwrap())
            .build()
            .unwrap()
    }

    /// Sends the first attempt at `t0`; its number.
    fn first(state: &mut RetryState, meta: &RequestMeta<'_>, t0: Instant) -> Option<u32> {
        assert_eq!(state.admit(meta, t0), Admission::Send);
        state.hedge_start(|| *meta, t0)
    }

    #[test]
    fn only_requests_that_may_be_sent_twice_start_a_race() {
        let headers = HeaderMap::new();
        let t0 = Instant::now();
        for (method, hedged) in [
            (Method::GET, true),
            (Method::PUT, true),
            (Method::POST, false),
        ] {
            let meta = RequestMeta::new(&method, "http", "h", "/p", &headers);
            let mut state = RetryState::new(&policy(None), &meta, t0);
            assert_eq!(first(&mut state, &meta, t0).is_some(), hedged, "{method}");
        }
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "k".parse().unwrap());
        let meta = RequestMeta::new(&Method::POST, "http", "h", "/p", &keyed);
        let mut state = RetryState::new(&policy(None), &meta, t0);
        assert_eq!(first(&mut state, &meta, t0), Some(0));
        // Hedging off: no race, whatever the method.
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/p", &headers);
        let mut state = RetryState::new(&RetryPolicy::default(), &meta, t0);
        assert_eq!(first(&mut state, &meta, t0), None);
        assert_eq!(state.hedge_due(), None);
    }

    #[test]
    fn a_hedge_goes_one_delay_after_the_send_and_the_first_answer_wins() {
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/p", &headers);
        let t0 = Instant::now();
        let mut state = RetryState::new(&policy(None), &meta, t0);
        assert_eq!(first(&mut state, &meta, t0), Some(0));
        assert_eq!(state.hedge_due(), Some(t0 + ms(50)));
        assert_eq!(state.hedge_now(&meta, t0 + ms(20)), Hedge::Wait(ms(30)));
        assert_eq!(
            state.hedge_now(&meta, t0 + ms(50)),
            Hedge::Send { attempt: 1 }
        );
        assert_eq!(state.hedge_due(), None, "max_hedges 1: no more");
        // The hedge answers at 60 ms: it wins, the first is cancelled.
        let ok = Outcome::response(StatusCode::OK, &headers);
        state.race_ended(1);
        let decision = state.decide(&meta, &ok, t0 + ms(60));
        assert_eq!(
            state.race_settle(&meta, decision, t0 + ms(60)),
            Raced::Done(Decision::Return)
        );
        let report = state.report();
        assert_eq!(report.attempts(), 2);
        assert_eq!((report.hedges(), report.retries()), (1, 0));
        let h = report.history();
        assert!(h[0].is_cancelled() && !h[0].is_hedge());
        assert_eq!(h[0].sent_at(), Some(ms(0)));
        assert!(h[1].is_hedge() && !h[1].is_cancelled());
        assert_eq!((h[1].sent_at(), h[1].elapsed()), (Some(ms(50)), ms(60)));
        assert_eq!(report.winner(), Some(1));
        assert_eq!(
            report.to_string(),
            "2 attempts [cancelled at 60ms, hedge at 50ms: 200 (won)]"
        );
    }

    #[test]
    fn a_failure_while_the_hedge_is_out_owes_a_retry_and_an_empty_budget_sends_no_hedge() {
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/p", &headers);
        let t0 = Instant::now();
        let mut state = RetryState::new(&policy(None), &meta, t0);
        first(&mut state, &meta, t0);
        assert_eq!(
            state.hedge_now(&meta, t0 + ms(50)),
            Hedge::Send { attempt: 1 }
        );
        // The first fails at 60 ms (backoff 100 ms): keep racing; the
        // retry is owed at 160 ms (the failure's own wait).
        let busy = Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &headers);
        state.race_ended(0);
        let decision = state.decide(&meta, &busy, t0 + ms(60));
        assert!(matches!(decision, Decision::Retry { .. }));
        assert_eq!(state.race_settle(&meta, decision, t0 + ms(60)), Raced::Keep);
        assert_eq!(state.report().stop_reason(), None);
        assert_eq!(state.hedge_due(), Some(t0 + ms(160)));
        assert_eq!(
            state.hedge_now(&meta, t0 + ms(160)),
            Hedge::Send { attempt: 2 }
        );
        assert_eq!(state.report().retries(), 0, "the retry is in flight");

        // A budget with room for no hedge: the hedge is skipped, and says why.
        let empty = RetryBudget::builder()
            .capacity(5)
            .retry_cost(5)
            .timeout_cost(5)
            .build()
            .unwrap();
        let policy = policy(Some(empty));
        let mut state = RetryState::new(&policy, &meta, t0);
        first(&mut state, &meta, t0);
        assert_eq!(
            state.hedge_now(&meta, t0 + ms(50)),
            Hedge::Send { attempt: 1 }
        );
        let mut state = RetryState::new(&policy, &meta, t0);
        first(&mut state, &meta, t0);
        assert_eq!(state.hedge_now(&meta, t0 + ms(50)), Hedge::Skip);
        assert_eq!(
            state.report().hedge_skipped(),
            Some(HedgeSkip::BudgetExhausted)
        );
        assert_eq!(state.hedge_due(), None, "held until the next retry");
    }
}
