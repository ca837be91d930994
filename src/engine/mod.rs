//! The sans-IO core: one request's retry state and the decision after each
//! attempt.
//!
//! [`RetryState`] knows nothing of tower, reqwest, sockets or timers. An
//! adapter creates one per request, asks it for each attempt's timeout,
//! sends the attempt, and hands the outcome to [`RetryState::decide`]
//! together with the current time. The answer is a [`Decision`]: return the
//! outcome, wait and retry, or fail. Every adapter goes through this one
//! path, so they cannot disagree.
//!
//! The checks, in order, for an outcome the classifier calls transient:
//! 1. the deadline was reached during the attempt → fail (`DEADLINE_EXCEEDED`);
//! 2. the request is not idempotent, has no `Idempotency-Key`, the policy
//!    does not opt in, and the outcome does not prove that the server did
//!    not act on it ([`Classify::not_processed`](crate::Classify::not_processed):
//!    a refused connection, 408, 425, 429, a rate-limit 403) → return it as
//!    it is;
//! 3. the body cannot be replayed (a stream sent once, or one committed
//!    past its replay buffer: [`RetryState::decide_with`]) → return it as
//!    it is;
//! 4. `max_retries` used up → fail (`MAX_RETRIES_EXCEEDED`);
//! 5. the server's hint is above `max_retry_after` → fail
//!    (`RETRY_AFTER_TOO_LONG`), or use the backoff if the policy says so;
//! 6. the wait would cross the deadline → fail (`DEADLINE_EXCEEDED`);
//! 7. the circuit breaker is open and will still be at the retry → fail
//!    (`CIRCUIT_OPEN`);
//! 8. the endpoint's retry budget cannot pay → fail (`RETRY_BUDGET_EXHAUSTED`);
//! 9. otherwise retry after the hint or the computed backoff.
//!
//! Before every attempt, the first included, the adapter asks
//! [`RetryState::admit`], which applies the load protection in front of
//! the attempt (a server quota's reset, the local rate limit, the circuit
//! breaker): send it, wait and ask again, or fail. An adapter that cannot
//! send an admitted attempt after all (its transport not ready before the
//! deadline, no time left) gives it back with [`RetryState::withdraw`]. A
//! refusal before a retry means what a refusal right after the last
//! attempt would ([`RetryState::refusal`]): the adapter keeps the last
//! response through the wait and hands it over.
//!
//! A custom adapter looks like this (timers and I/O are the adapter's):
//!
//! ```
//! use std::time::Instant;
//! use http::{HeaderMap, Method, StatusCode};
//! use http_resilience::{Admission, Decision, Outcome, RequestMeta, RetryPolicy, RetryState};
//!
//! let policy = RetryPolicy::default();
//! let headers = HeaderMap::new();
//! let request = RequestMeta::new(&Method::GET, "https", "example.com", "/", &headers);
//! let mut state = RetryState::new(&policy, &request, Instant::now());
//! assert_eq!(state.admit(&request, Instant::now()), Admission::Send);
//! let response_headers = HeaderMap::new();
//! let outcome = Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &response_headers);
//! match state.decide(&request, &outcome, Instant::now()) {
//!     Decision::Retry { delay, source } => println!("wait {delay:?} ({source})"),
//!     Decision::Return => println!("hand the response over"),
//!     Decision::Fail(reason) => println!("fail: {}", reason.as_str()),
//!     _ => {}
//! }
//! ```

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::backoff::Backoff;
use crate::classify::{
    Class, FailureKind, IDEMPOTENCY_KEY, MAX_INSPECTED_BODY, Outcome, RequestMeta,
    is_idempotent_method,
};
use crate::policy::{LongHint, RetryPolicy};
use crate::protection::store::{Refused, StoreAnswer, StoreCall};
use crate::report::{
    AttemptRecord, Committed, RetryReport, StopReason, ThrottleReason, UNKNOWN, WallAnchor, nanos,
};
use crate::retry_after::DelaySource;

mod endpoint;
// Hedged requests: the decisions around attempts side by side.
mod hedge;
// What `admit` and `decide` record in the metrics.
#[cfg(feature = "metrics")]
mod metrics;
pub(crate) mod resume;
#[cfg(test)]
mod tests;
mod trace;

use endpoint::{Guard, NoTurn, Payment, PendingRetry, endpoint_label};
pub(crate) use hedge::{Hedge, Raced};

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Stop and hand the response to the caller as it is. (The engine never
    /// returns this for a transport error.)
    Return,
    /// Wait `delay`, then send the request again.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// Where the wait came from.
        source: DelaySource,
    },
    /// Stop and fail with the [`Error`](crate::Error) for this reason.
    Fail(StopReason),
    /// The retry's payment is a store call (a retry budget shared by many
    /// processes): await [`RetryState::take_store_call`], hand its answer
    /// to [`RetryState::store_answered`], then finish the decision with
    /// [`RetryState::decide_after_store`]. Never with an
    /// [`InMemoryStore`](crate::InMemoryStore).
    Consult,
}

/// What to do before an attempt: [`RetryState::admit`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Send the attempt now.
    Send,
    /// Wait `delay`, then ask again.
    Wait {
        /// How long.
        delay: Duration,
        /// Why.
        reason: ThrottleReason,
    },
    /// Do not send it: fail with the [`Error`](crate::Error) for this
    /// reason.
    Fail(StopReason),
    /// The attempt's rate-limit turn is a store call (a limit shared by
    /// many processes): await [`RetryState::take_store_call`], hand its
    /// answer to [`RetryState::store_answered`], then ask again. Never with
    /// an [`InMemoryStore`](crate::InMemoryStore).
    Consult,
}

/// One request's retry state. See the [module docs](self).
#[derive(Debug)]
pub struct RetryState {
    policy: RetryPolicy,
    /// Made at the first retry: most requests never need one. Boxed: that
    /// one allocation on a request's first retry keeps every request's
    /// state 136 bytes smaller to move (inline, it cost each request about
    /// 450 instructions through the reqwest middleware).
    backoff: Option<Box<Backoff>>,
    started: Instant,
    /// Whether the request may be repeated: worked out at its first
    /// transient outcome (a request that succeeds never needs it), then
    /// kept.
    safety: Option<Safety>,
    replayable: bool,
    report: RetryReport,
    /// Whether the first attempt was sent (the deadline counts from it).
    sent: bool,
    /// Made when the endpoint's state is first needed: a request that
    /// succeeds at once while the store is at rest never needs it, and the
    /// state every request carries stays small.
    guard: Option<Box<Guard>>,
}

impl RetryState {
    /// Starts the state of one request; `now` is the start of its first
    /// attempt (the deadline counts from it).
    pub fn new(policy: &RetryPolicy, request: &RequestMeta<'_>, now: Instant) -> RetryState {
        RetryState::with_policy(policy.clone(), request, now)
    }

    /// [`new`](Self::new), taking the policy by value.
    #[inline]
    pub(crate) fn with_policy(
        policy: RetryPolicy,
        request: &RequestMeta<'_>,
        now: Instant,
    ) -> RetryState {
        // The request's safety is worked out at its first transient
        // outcome, from the request `decide` is given.
        let _ = request;
        RetryState {
            guard: None,
            sent: false,
            backoff: None,
            started: now,
            safety: None,
            policy,
            replayable: true,
            report: RetryReport::new(),
        }
    }

    /// Marks the request's body as one that cannot be sent again (a
    /// stream): transient failures are then returned instead of retried.
    pub fn set_replayable(&mut self, replayable: bool) {
        self.replayable = replayable;
    }

    /// The policy in use.
    #[inline]
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The timeout for the next attempt: the policy's `attempt_timeout`,
    /// clamped to what is left of the `deadline`. `None`: no timeout.
    #[inline]
    pub fn attempt_timeout(&self, now: Instant) -> Option<Duration> {
        let p = self.policy.inner();
        match (p.attempt_timeout, self.left(p.deadline, now)) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        }
    }

    /// What is left of the `deadline` at `now` (`None`: no deadline), as
    /// [`attempt_timeout`](Self::attempt_timeout) clamps to it: the
    /// deadline counts from the first attempt's admission. An adapter that
    /// waits for its transport after [`admit`](Self::admit) bounds that
    /// wait by it.
    #[inline]
    pub fn deadline_left(&self, now: Instant) -> Option<Duration> {
        self.left(self.policy.inner().deadline, now)
    }

    #[inline]
    fn left(&self, deadline: Option<Duration>, now: Instant) -> Option<Duration> {
        deadline.map(|d| d.saturating_sub(now.saturating_duration_since(self.started)))
    }

    /// How many bytes of this response's body the policy's classifier needs
    /// to see before [`decide`](Self::decide) (at most
    /// [`MAX_INSPECTED_BODY`]); `0` for none, the usual case. An adapter
    /// reads that prefix, passes it as the outcome's `body`, and hands the
    /// caller the whole body.
    #[inline]
    pub fn body_to_inspect(
        &self,
        request: &RequestMeta<'_>,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> usize {
        self.policy
            .inner()
            .classifier
            .inspect_body(request, status, headers)
            .min(MAX_INSPECTED_BODY)
    }

    /// The report so far.
    #[inline]
    pub fn report(&self) -> &RetryReport {
        &self.report
    }

    /// Takes the report out (the adapter attaches it to the result).
    #[inline]
    pub fn take_report(&mut self) -> RetryReport {
        // (Only a hedged round that handed an attempt over has anything
        // to add; a request that never looked its endpoint up, none.)
        if self.guard.is_some() {
            self.settle_handover();
        }
        std::mem::replace(&mut self.report, RetryReport::new())
    }

    /// Asks whether the next attempt (the first included) may be sent at
    /// `now`, applying the load protection in front of it, in order: a
    /// quota the server said is gone for the request's credential (wait
    /// for its reset, plus a small spread), the local rate limit (take the
    /// next turn in line and wait for it), the circuit breaker (refuse while
    /// open, or while half-open with every probe out).
    /// On [`Admission::Wait`], sleep and ask again; the waits are recorded
    /// in the report. A wait before a retry that would cross the deadline
    /// fails with `DEADLINE_EXCEEDED`; the deadline itself starts when the
    /// first attempt is sent.
    pub fn admit(&mut self, request: &RequestMeta<'_>, now: Instant) -> Admission {
        let p = self.policy.inner();
        let protection = &p.protection;
        // With only a budget and server quotas (the defaults), a store at
        // rest (no quota held anywhere) has nothing to say: no lookup.
        let look = protection.circuit.is_some()
            || protection.rate_limit.is_some()
            || (protection.server_limits && !protection.store.quiet(now));
        if !look {
            self.sending(now);
            return Admission::Send;
        }
        let guard = Guard::of(&mut self.guard, protection, request);
        let turn_started = guard.turn_started(self.started, now);
        // 1. A quota the server said is gone for this credential.
        let mut wait = None;
        if protection.server_limits
            && let Some(until) = guard.held_until(request, now)
        {
            let delay = until - now;
            if delay <= p.max_retry_after {
                // Released over a small spread after the reset, not all in
                // the same millisecond.
                let delay = delay + p.release_spread(delay);
                wait = Some((delay, ThrottleReason::ServerQuota));
            } else if p.on_long_hint != LongHint::UseBackoff {
                let reason = StopReason::RetryAfterTooLong { hint: delay };
                return self.refuse(request, reason, Some(now));
            }
            // A policy that ignores long hints ignores a far reset too.
        }
        // 2. The local rate limit: the attempt's place in line.
        if let Some(limit) = &protection.rate_limit {
            let waited = now.saturating_duration_since(turn_started);
            let left = limit.max_wait().saturating_sub(waited);
            let cost = protection.cost.of(request);
            let turn = guard.take_turn(limit, cost, now, left, wait.is_some());
            if guard.take_fallback() {
                self.report
                    .note_decided_locally(|| endpoint_label(protection, request));
            }
            match turn {
                Ok(Some(delay)) => wait = Some((delay, ThrottleReason::LocalRateLimit)),
                Ok(None) => {}
                Err(NoTurn::Beyond(delay)) => {
                    let wait = waited + delay;
                    let reason = StopReason::RateLimitedLocally { wait };
                    return self.refuse(request, reason, Some(now));
                }
                Err(NoTurn::Unavailable) => {
                    return self.refuse(request, StopReason::StoreUnavailable, Some(now));
                }
                Err(NoTurn::Consult) => return Admission::Consult,
            }
        }
        if let Some((delay, reason)) = wait {
            if self.sent
                && p.deadline.is_some_and(|d| {
                    now.saturating_duration_since(self.started)
                        .saturating_add(delay)
                        >= d
                })
            {
                return self.refuse(request, StopReason::Deadline, Some(now));
            }
            self.report.add_throttle(reason, delay);
            self.report
                .set_endpoint(|| endpoint_label(protection, request));
            trace::waiting(request, reason, delay, self.report.attempts() + 1);
            let wait = Admission::Wait { delay, reason };
            #[cfg(feature = "metrics")]
            self.record_admission(request, &wait, now);
            return wait;
        }
        // 3. The circuit breaker.
        if let Some(breaker) = &protection.circuit
            && let Err(retry_in) = guard.pass_breaker(breaker, now)
        {
            return self.refuse(request, StopReason::CircuitOpen { retry_in }, Some(now));
        }
        self.sending(now);
        Admission::Send
    }

    /// The attempt is being sent at `now`.
    #[inline]
    fn sending(&mut self, now: Instant) {
        if !self.sent {
            self.sent = true;
            self.started = now;
        }
        if let Some(guard) = &mut self.guard {
            guard.sending();
        }
    }

    /// Gives up, for `reason`, on the attempt [`admit`](Self::admit) just
    /// let through, before it is sent: the adapter's inner service did not
    /// become ready before the deadline, no time was left to send it, or
    /// its body was no longer the one the first attempt had. Whatever the
    /// admission took is given back (a breaker's probe slot, the tokens
    /// paid for the retry; a local rate limit's turn is spent), and the
    /// refusal is recorded as [`admit`](Self::admit) records its own.
    /// Returns the same [`Admission::Fail`], which the adapter then treats
    /// as any refusal (see [`refusal`](Self::refusal)).
    ///
    /// ```
    /// use std::time::Instant;
    /// use http::{HeaderMap, Method};
    /// use http_resilience::{Admission, RequestMeta, RetryPolicy, RetryState, StopReason};
    ///
    /// let policy = RetryPolicy::default();
    /// let headers = HeaderMap::new();
    /// let request = RequestMeta::new(&Method::GET, "https", "example.com", "/", &headers);
    /// let now = Instant::now();
    /// let mut state = RetryState::new(&policy, &request, now);
    /// assert_eq!(state.admit(&request, now), Admission::Send);
    /// // ... but the transport cannot take it before the deadline:
    /// let refused = state.withdraw(&request, StopReason::Deadline);
    /// assert_eq!(refused, Admission::Fail(StopReason::Deadline));
    /// assert_eq!(state.report().stop_reason(), Some(StopReason::Deadline));
    /// ```
    pub fn withdraw(&mut self, request: &RequestMeta<'_>, reason: StopReason) -> Admission {
        if let Some(guard) = &mut self.guard {
            guard.withdrawn();
        }
        self.refuse(request, reason, None)
    }

    /// What a refusal before the next attempt ([`Admission::Fail`] from
    /// [`admit`](Self::admit) or [`withdraw`](Self::withdraw)) means for
    /// the request: the same as if [`decide`](Self::decide) had refused the
    /// retry right after the last attempt. `last_was_response`: whether the
    /// last attempt got a response, which the adapter kept through the wait.
    ///
    /// - before the first attempt, or after a transport error: fail with
    ///   the reason ([`Decision::Fail`]);
    /// - after a response: [`Decision::Return`] it if the policy's
    ///   `return_last_response` is set or the reason is not one of giving
    ///   up (a body that cannot be sent again), else fail with it attached.
    ///
    /// ```
    /// use http_resilience::{Decision, RetryPolicy, RetryState, RequestMeta, StopReason};
    /// # use http::{HeaderMap, Method};
    /// # let headers = HeaderMap::new();
    /// # let request = RequestMeta::new(&Method::GET, "https", "example.com", "/", &headers);
    /// let policy = RetryPolicy::builder().return_last_response(true).build()?;
    /// let state = RetryState::new(&policy, &request, std::time::Instant::now());
    /// assert_eq!(state.refusal(StopReason::Deadline, true), Decision::Return);
    /// assert_eq!(state.refusal(StopReason::Deadline, false), Decision::Fail(StopReason::Deadline));
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    #[inline]
    pub fn refusal(&self, reason: StopReason, last_was_response: bool) -> Decision {
        if !last_was_response || (gives_up(reason) && !self.policy.inner().return_last_response) {
            Decision::Fail(reason)
        } else {
            Decision::Return
        }
    }

    /// Refuses the next attempt before it is sent (at `now`, when known).
    fn refuse(
        &mut self,
        request: &RequestMeta<'_>,
        reason: StopReason,
        now: Option<Instant>,
    ) -> Admission {
        self.refund();
        self.give_back_turn();
        if let Some(guard) = &mut self.guard {
            guard.forget_consult();
        }
        self.report.set_stop(reason);
        let p = self.policy.inner();
        self.report
            .set_endpoint(|| endpoint_label(&p.protection, request));
        // Anchored already unless no attempt was made: then the refusal's
        // time stands for the request's.
        self.report
            .anchor(|| WallAnchor::new(p.clock.now(), Duration::ZERO));
        trace::refusing(request, reason, self.report.attempts());
        let refused = Admission::Fail(reason);
        #[cfg(feature = "metrics")]
        self.record_admission(request, &refused, now.unwrap_or(self.started));
        #[cfg(not(feature = "metrics"))]
        let _ = now;
        refused
    }

    /// Decides what follows an attempt that ended at `now` with `outcome`.
    pub fn decide(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: Instant,
    ) -> Decision {
        self.decide_at(request, outcome, || now, || None)
    }

    /// [`decide`](Self::decide), for a request whose body may not be
    /// sendable again (a stream kept in a replay buffer): `replay` says
    /// whether it is committed ([`Committed`]), and is asked only when a
    /// retry is otherwise allowed, at step 3 of the
    /// [module docs](self) (after the deadline and the idempotency rules,
    /// before `max_retries`, the backoff and the budget, so a committed
    /// body costs no token). A committed body stops the request with
    /// [`StopReason::BodyCommitted`]; a buffer of 0 bytes
    /// (`Committed::TooLarge { limit: 0 }`) with
    /// [`StopReason::BodyNotReplayable`].
    ///
    /// ```
    /// use std::time::Instant;
    /// use http::{HeaderMap, Method, StatusCode};
    /// use http_resilience::replay::Committed;
    /// use http_resilience::{Decision, Outcome, RequestMeta, RetryPolicy, RetryState, StopReason};
    ///
    /// let policy = RetryPolicy::default();
    /// let headers = HeaderMap::new();
    /// let request = RequestMeta::new(&Method::PUT, "https", "example.com", "/", &headers);
    /// let mut state = RetryState::new(&policy, &request, Instant::now());
    /// let none = HeaderMap::new();
    /// let outcome = Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &none);
    /// let too_large = || Some(Committed::TooLarge { limit: 65536 });
    /// assert_eq!(state.decide_with(&request, &outcome, Instant::now(), too_large), Decision::Return);
    /// assert_eq!(
    ///     state.report().stop_reason(),
    ///     Some(StopReason::BodyCommitted { reason: Committed::TooLarge { limit: 65536 } })
    /// );
    /// ```
    pub fn decide_with(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: Instant,
        replay: impl FnOnce() -> Option<Committed>,
    ) -> Decision {
        self.decide_at(request, outcome, || now, replay)
    }

    /// [`decide`](Self::decide), reading the clock only if the decision
    /// needs it: a first attempt that succeeds with nothing held does not
    /// (its report is not kept: its attempt's `elapsed` reads as zero, as
    /// [`RetryReport::clean`] says).
    #[inline]
    pub(crate) fn decide_at(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: impl FnOnce() -> Instant,
        replay: impl FnOnce() -> Option<Committed>,
    ) -> Decision {
        let decision = self.decide_attempt(request, outcome, now, replay);
        #[cfg(feature = "metrics")]
        self.record_decision(request, &decision);
        decision
    }

    /// [`decide_at`](Self::decide_at) without the metrics.
    #[inline]
    fn decide_attempt(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: impl FnOnce() -> Instant,
        replay: impl FnOnce() -> Option<Committed>,
    ) -> Decision {
        let class = self.policy.inner().classifier.classify(request, outcome);
        let is_response = matches!(outcome, Outcome::Response { .. });
        let mut now = Now {
            read: Some(now),
            at: self.started,
        };
        let at_once = class == Class::Success && is_response && self.report.attempts() == 0;
        let clean = at_once && self.guard.is_none();
        let elapsed = if clean {
            Duration::ZERO
        } else {
            now.get().saturating_duration_since(self.started)
        };
        self.report.push(AttemptRecord {
            status: outcome.status(),
            failure: outcome.failure(),
            class,
            delay: None,
            delay_source: None,
            // (Known to be zero for a clean success: no conversion.)
            elapsed: if clean { 0 } else { nanos(elapsed) },
            sent_at: UNKNOWN,
            hedge: false,
            cancelled: false,
        });
        // Every request but a first-attempt success with nothing else to
        // say reads the wall clock once, to date its attempts.
        if !(at_once && (self.guard.is_none() || !self.report.has_extras())) {
            let clock = &self.policy.inner().clock;
            self.report.anchor(|| WallAnchor::new(clock.now(), elapsed));
        }
        if self.policy.inner().protection.active() {
            self.observe(request, outcome, class, &mut now);
        }
        let p = self.policy.inner();

        match class {
            Class::Transient => {}
            Class::Success if is_response => {
                self.refund_success(request, &now);
                return self.stop(request, StopReason::Success, true);
            }
            _ => return self.stop(request, StopReason::Permanent, is_response),
        }
        let now = now.get();
        if p.deadline.is_some_and(|d| elapsed >= d) {
            return self.stop(request, StopReason::Deadline, is_response);
        }
        let safety = *self
            .safety
            .get_or_insert_with(|| match p.classifier.retry_safety(request) {
                Some(true) => Safety::Safe,
                Some(false) => Safety::Never,
                None if request.is_idempotent() => Safety::Safe,
                None => Safety::Unsafe,
            });
        let forbidden = match safety {
            Safety::Safe => false,
            Safety::Unsafe => {
                !p.retry_non_idempotent && !p.classifier.not_processed(request, outcome)
            }
            Safety::Never => true,
        };
        if forbidden {
            return self.stop(request, StopReason::NotIdempotent, is_response);
        }
        if !self.replayable {
            return self.stop(request, StopReason::BodyNotReplayable, is_response);
        }
        if let Some(reason) = replay() {
            return self.stop(request, committed(reason), is_response);
        }
        if self.report.retries() >= p.max_retries {
            return self.stop(request, StopReason::MaxRetries, is_response);
        }

        let computed = self
            .backoff
            .get_or_insert_with(|| Box::new(self.policy.backoff()))
            .next_delay();
        // Asked for transport errors too: the built-in classifiers have
        // nothing to say of them, an operation's may (`ErrorClass::retry_after`).
        let hint = p
            .classifier
            .hint(request, outcome, p.clock.now(), self.report.retries());
        let (delay, source) = match hint {
            Some(h) if h.delay > p.max_retry_after => match p.on_long_hint {
                LongHint::UseBackoff => (computed, DelaySource::Backoff),
                _ => {
                    let reason = StopReason::RetryAfterTooLong { hint: h.delay };
                    return self.stop(request, reason, is_response);
                }
            },
            Some(h) => (h.delay, h.source),
            None => (computed, DelaySource::Backoff),
        };
        if p.deadline
            .is_some_and(|d| elapsed.saturating_add(delay) >= d)
        {
            return self.stop(request, StopReason::Deadline, is_response);
        }
        if p.protection.active() {
            // The breaker open past the retry: it would be refused.
            if p.protection.circuit.is_some()
                && let Some(until) = self.guard.as_ref().and_then(|g| g.open_until(now))
                && until > now + delay
            {
                let retry_in = until - now;
                return self.stop(request, StopReason::CircuitOpen { retry_in }, is_response);
            }
            if let Some(budget) = &p.protection.budget {
                let cost = budget.cost(outcome.failure() == Some(FailureKind::Timeout));
                let retry = PendingRetry {
                    delay,
                    source,
                    is_response,
                    cost,
                };
                let guard = Guard::of(&mut self.guard, &p.protection, request);
                let payment = guard.pay(budget, retry);
                if guard.take_fallback() {
                    let protection = &p.protection;
                    self.report
                        .note_decided_locally(|| endpoint_label(protection, request));
                }
                match payment {
                    Payment::Paid => {}
                    Payment::Refused(Refused::Unavailable) => {
                        return self.store_unavailable(request, is_response);
                    }
                    Payment::Refused(_) => {
                        return self.stop(request, StopReason::BudgetExhausted, is_response);
                    }
                    Payment::Consult => return Decision::Consult,
                }
            }
        }
        self.retry(request, delay, source)
    }

    /// The retry decided: its wait recorded and traced.
    fn retry(
        &mut self,
        request: &RequestMeta<'_>,
        delay: Duration,
        source: DelaySource,
    ) -> Decision {
        if let Some(last) = self.report.last_mut() {
            last.delay = Some(delay);
            last.delay_source = Some(source);
        }
        trace::retrying(&self.policy, request, &self.report, delay, source);
        Decision::Retry { delay, source }
    }

    /// The store call that [`Admission::Consult`] or
    /// [`Decision::Consult`] asks the adapter to await (a round trip to a
    /// store shared by many processes, bounded by the store's own timeout).
    /// `None` if there is none out (it was taken already): ask again
    /// ([`admit`](Self::admit)), or finish the decision
    /// ([`decide_after_store`](Self::decide_after_store)).
    ///
    /// An adapter's part, whatever its timers:
    ///
    /// ```
    /// use std::time::Instant;
    /// use http_resilience::{Admission, RequestMeta, RetryState};
    ///
    /// async fn admitted(state: &mut RetryState, request: &RequestMeta<'_>) -> Admission {
    ///     let mut admission = state.admit(request, Instant::now());
    ///     while admission == Admission::Consult {
    ///         if let Some(call) = state.take_store_call() {
    ///             let answer = call.await;
    ///             state.store_answered(answer);
    ///         }
    ///         admission = state.admit(request, Instant::now());
    ///     }
    ///     admission // Send, Wait or Fail, as without a shared store
    /// }
    /// # let _ = admitted;
    /// ```
    pub fn take_store_call(&mut self) -> Option<StoreCall> {
        self.guard.as_mut()?.take_call()
    }

    /// Hands the engine what a store call
    /// ([`take_store_call`](Self::take_store_call)) answered. A decision the
    /// store's fallback made (what it shares could not answer in time) is
    /// noted in the report ([`RetryReport::decided_locally`]).
    pub fn store_answered(&mut self, answer: StoreAnswer) {
        let Some(guard) = &mut self.guard else {
            return;
        };
        // Who decided is noted in the report by the `admit` or
        // `decide_after_store` that reads the answer (they know the
        // endpoint's name).
        guard.answered(answer);
    }

    /// Awaits the store call a [`Admission::Consult`] or
    /// [`Decision::Consult`] asked for ([`poll_store_call`](Self::poll_store_call)
    /// until the store has answered): the one way the middleware, `retry`
    /// and `send_rebuilt` wait for the store.
    pub(crate) async fn store_call(&mut self) {
        std::future::poll_fn(|cx| self.poll_store_call(cx)).await
    }

    /// Polls the store call out in place (for an adapter that keeps no
    /// future of its own, as the tower layer's): once it has answered, the
    /// answer is the engine's, as by
    /// [`store_answered`](Self::store_answered). Ready at once if no call
    /// is out.
    pub(crate) fn poll_store_call(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let Some(guard) = &mut self.guard else {
            return std::task::Poll::Ready(());
        };
        if let Some(answer) = std::task::ready!(guard.poll_call(cx)) {
            guard.answered(answer);
        }
        std::task::Poll::Ready(())
    }

    /// Finishes a decision that [`Decision::Consult`] left to a store call
    /// (the retry's payment), once its answer is in
    /// ([`store_answered`](Self::store_answered)), at `now`: the retry,
    /// or the stop (`RETRY_BUDGET_EXHAUSTED`; `STORE_UNAVAILABLE` when the
    /// store could not answer and its fallback refuses; `DEADLINE_EXCEEDED`
    /// if the answer came too late for the wait to fit before the
    /// deadline). Called without a decision waiting, it stops with
    /// `STORE_UNAVAILABLE`.
    pub fn decide_after_store(&mut self, request: &RequestMeta<'_>, now: Instant) -> Decision {
        let decision = self.decide_paid(request, now);
        #[cfg(feature = "metrics")]
        self.record_decision(request, &decision);
        decision
    }

    /// [`decide_after_store`](Self::decide_after_store) without the metrics.
    fn decide_paid(&mut self, request: &RequestMeta<'_>, now: Instant) -> Decision {
        let Some(guard) = &mut self.guard else {
            return self.store_unavailable(request, false);
        };
        let paid = guard.paid_retry();
        if guard.take_fallback() {
            let protection = &self.policy.inner().protection;
            self.report
                .note_decided_locally(|| endpoint_label(protection, request));
        }
        let Some((retry, payment)) = paid else {
            return self.store_unavailable(request, false);
        };
        match payment {
            Ok(()) => {}
            Err(Refused::Unavailable) => {
                return self.store_unavailable(request, retry.is_response);
            }
            Err(_) => return self.stop(request, StopReason::BudgetExhausted, retry.is_response),
        }
        // The call took time: the wait must still fit before the deadline.
        let elapsed = now.saturating_duration_since(self.started);
        if self
            .policy
            .inner()
            .deadline
            .is_some_and(|d| elapsed.saturating_add(retry.delay) >= d)
        {
            self.refund();
            return self.stop(request, StopReason::Deadline, retry.is_response);
        }
        self.retry(request, retry.delay, retry.source)
    }

    #[inline]
    fn stop(
        &mut self,
        request: &RequestMeta<'_>,
        reason: StopReason,
        is_response: bool,
    ) -> Decision {
        self.report.set_stop(reason);
        if matches!(
            reason,
            StopReason::BudgetExhausted | StopReason::CircuitOpen { .. }
        ) {
            let protection = &self.policy.inner().protection;
            self.report
                .set_endpoint(|| endpoint_label(protection, request));
        }
        trace::stopped(&self.policy, request, reason, &self.report);
        self.refusal(reason, is_response)
    }

    /// [`stop`](Self::stop) with `STORE_UNAVAILABLE`, naming the endpoint
    /// as a load-protection refusal does (kept out of `stop`, which every
    /// request runs).
    #[cold]
    fn store_unavailable(&mut self, request: &RequestMeta<'_>, is_response: bool) -> Decision {
        let protection = &self.policy.inner().protection;
        self.report
            .set_endpoint(|| endpoint_label(protection, request));
        self.stop(request, StopReason::StoreUnavailable, is_response)
    }
}

/// The clock, read once and only if needed; before that, `at` is the
/// attempt's start.
pub(crate) struct Now<F: FnOnce() -> Instant> {
    read: Option<F>,
    at: Instant,
}

impl<F: FnOnce() -> Instant> Now<F> {
    /// The time, reading the clock the first time.
    pub(crate) fn get(&mut self) -> Instant {
        if let Some(read) = self.read.take() {
            self.at = read();
        }
        self.at
    }
    /// The time read so far: the attempt's start if the clock was not read.
    pub(crate) fn last(&self) -> Instant {
        self.at
    }
}

/// The stop reason of a body committed for `reason`: a buffer of 0 bytes
/// (replay turned off) is no buffer at all, as for a body that cannot be
/// replayed.
pub(crate) fn committed(reason: Committed) -> StopReason {
    match reason {
        Committed::TooLarge { limit: 0 } => StopReason::BodyNotReplayable,
        reason => StopReason::BodyCommitted { reason },
    }
}

/// Whether stopping for `reason` is giving up on a response that was worth
/// retrying (an error, unless `return_last_response`), rather than handing
/// it over as it is.
fn gives_up(reason: StopReason) -> bool {
    matches!(
        reason,
        StopReason::StoreUnavailable
            | StopReason::MaxRetries
            | StopReason::RetryAfterTooLong { .. }
            | StopReason::Deadline
            | StopReason::BudgetExhausted
            | StopReason::CircuitOpen { .. }
            | StopReason::RateLimitedLocally { .. }
    )
}

/// Whether the request may be repeated.
#[derive(Debug, Clone, Copy)]
enum Safety {
    /// Idempotent, keyed, or declared safe by the classifier.
    Safe,
    /// Retried only if the policy opts in or the server provably did not
    /// act on it.
    Unsafe,
    /// Declared never retryable by the classifier.
    Never,
}

/// Adds a generated `Idempotency-Key` to a non-idempotent request that lacks
/// one, if the policy asks for it. Adapters call this once, before the first
/// attempt, so every attempt carries the same key.
pub fn prepare_request(policy: &RetryPolicy, method: &Method, headers: &mut HeaderMap) {
    if policy.auto_idempotency_key()
        && !is_idempotent_method(method)
        && !headers.contains_key(IDEMPOTENCY_KEY)
    {
        let mut buf = uuid::Uuid::encode_buffer();
        let key = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        if let Ok(value) = HeaderValue::from_str(key) {
            headers.insert(IDEMPOTENCY_KEY, value);
        }
    }
}

/// Whether [`prepare_request`] would add a key to `request` under
/// `policy`: adapters then describe the request again after it, and only
/// then.
#[inline]
pub(crate) fn needs_idempotency_key(policy: &RetryPolicy, request: &RequestMeta<'_>) -> bool {
    policy.auto_idempotency_key()
        && !is_idempotent_method(request.method())
        && !request.has_idempotency_key()
}
