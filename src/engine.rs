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
//! 3. the body cannot be replayed → return it as it is;
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::backoff::Backoff;
use crate::classify::{
    Class, FailureKind, IDEMPOTENCY_KEY, MAX_INSPECTED_BODY, Outcome, RequestMeta,
    is_idempotent_method,
};
use crate::policy::{LongHint, Protection, RetryPolicy};
use crate::protection::Turn;
use crate::protection::store::{EndpointKey, EndpointState, Partition, Scope};
use crate::protection::{CircuitStatus, Ticket, Verdict};
use crate::report::{AttemptRecord, RetryReport, StopReason, ThrottleReason};
use crate::retry_after::{DelaySource, quota_reset_at};

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
    safety: Safety,
    replayable: bool,
    report: RetryReport,
    /// Whether the first attempt was sent (the deadline counts from it).
    sent: bool,
    /// Made when the endpoint's state is first needed: a request that
    /// succeeds at once while the store is at rest never needs it, and the
    /// state every request carries stays small.
    guard: Option<Box<Guard>>,
}

/// A request's hold on its endpoint's load-protection state (given back on
/// drop: see `RetryState`'s `Drop`). The endpoint is looked up when first
/// needed: a request that succeeds at once while the store is at rest never
/// looks it up.
#[derive(Debug)]
struct Guard {
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
}

impl Guard {
    fn partition(&mut self, request: &RequestMeta<'_>) -> Partition {
        *self
            .partition
            .get_or_insert_with(|| Partition::of(request.headers()))
    }
}

impl RetryState {
    /// Starts the state of one request; `now` is the start of its first
    /// attempt (the deadline counts from it).
    pub fn new(policy: &RetryPolicy, request: &RequestMeta<'_>, now: Instant) -> RetryState {
        RetryState::with_policy(policy.clone(), request, now)
    }

    /// [`new`](Self::new), taking the policy by value.
    pub(crate) fn with_policy(
        policy: RetryPolicy,
        request: &RequestMeta<'_>,
        now: Instant,
    ) -> RetryState {
        RetryState {
            guard: None,
            sent: false,
            backoff: None,
            started: now,
            safety: match policy.inner().classifier.retry_safety(request) {
                Some(true) => Safety::Safe,
                Some(false) => Safety::Never,
                None if request.is_idempotent() => Safety::Safe,
                None => Safety::Unsafe,
            },
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
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The timeout for the next attempt: the policy's `attempt_timeout`,
    /// clamped to what is left of the `deadline`. `None`: no timeout.
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
    pub fn report(&self) -> &RetryReport {
        &self.report
    }

    /// Takes the report out (the adapter attaches it to the result).
    pub fn take_report(&mut self) -> RetryReport {
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
        let guard = guard_of(&mut self.guard, protection, request);
        if guard.turn_started == 0 {
            let since = now.saturating_duration_since(self.started).as_nanos();
            guard.turn_started = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
        }
        let turn_started = self.started + Duration::from_nanos(guard.turn_started - 1);
        let endpoint = &guard.endpoint;
        let mut wait = None;
        // The partition is worked out only if the endpoint holds a quota.
        if protection.server_limits && endpoint.holding(now) {
            let partition = *guard
                .partition
                .get_or_insert_with(|| Partition::of(request.headers()));
            if let Some(until) = endpoint.blocked_until(partition)
                && until > now
            {
                let delay = until - now;
                if delay <= p.max_retry_after {
                    // Released over a small spread after the reset, not all
                    // in the same millisecond.
                    let delay = delay + p.release_spread(delay);
                    wait = Some((delay, ThrottleReason::ServerQuota));
                } else if p.on_long_hint != LongHint::UseBackoff {
                    return self.refuse(request, StopReason::RetryAfterTooLong { hint: delay });
                }
                // A policy that ignores long hints ignores a far reset too.
            }
        }
        if let Some(limit) = &protection.rate_limit {
            match guard.turn.take() {
                // Held by a server quota after all: the turn will not be
                // used at its time.
                Some(turn) if wait.is_some() => endpoint.release(limit, turn),
                Some(turn) => {
                    if turn.at() > now {
                        wait = Some((turn.at() - now, ThrottleReason::LocalRateLimit));
                    }
                    guard.turn = Some(turn);
                }
                None if wait.is_some() => {}
                None => {
                    // The place in line: one ask, however many wait.
                    let waited = now.saturating_duration_since(turn_started);
                    let left = limit.max_wait().saturating_sub(waited);
                    match endpoint.acquire(limit, now, left) {
                        Ok(turn) => {
                            if turn.at() > now {
                                wait = Some((turn.at() - now, ThrottleReason::LocalRateLimit));
                            }
                            guard.turn = Some(turn);
                        }
                        Err(delay) => {
                            let wait = waited + delay;
                            return self.refuse(request, StopReason::RateLimitedLocally { wait });
                        }
                    }
                }
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
                return self.refuse(request, StopReason::Deadline);
            }
            self.report.add_throttle(reason, delay);
            self.report
                .set_endpoint(|| endpoint_label(protection, request));
            #[cfg(feature = "tracing")]
            tracing::info!(
                target: "http_resilience",
                reason = reason.as_str(),
                delay_ms = delay.as_millis() as u64,
                attempt = self.report.attempts() + 1,
                method = %request.method(),
                host = request.host(),
                port = request.port(),
                "waiting before attempt"
            );
            return Admission::Wait { delay, reason };
        }
        if let Some(breaker) = &protection.circuit {
            let mut verdict = None;
            endpoint.circuit(&mut |state| verdict = Some(state.admit(breaker, now)));
            match verdict {
                Some(Verdict::Allow(ticket)) => guard.ticket = Some(ticket),
                Some(Verdict::Refuse { retry_in }) => {
                    return self.refuse(request, StopReason::CircuitOpen { retry_in });
                }
                None => {}
            }
        }
        self.sending(now);
        Admission::Send
    }

    /// The attempt is being sent at `now`.
    fn sending(&mut self, now: Instant) {
        if !self.sent {
            self.sent = true;
            self.started = now;
        }
        if let Some(guard) = &mut self.guard {
            guard.turn_started = 0;
            guard.admitted = std::mem::take(&mut guard.paid);
            guard.spent += guard.admitted;
            // Used: the attempt goes in its turn.
            guard.turn = None;
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
            if let Some(ticket) = guard.ticket.take() {
                guard.endpoint.circuit(&mut |state| state.release(ticket));
            }
            let admitted = std::mem::take(&mut guard.admitted);
            guard.spent = guard.spent.saturating_sub(admitted);
            guard.paid = guard.paid.saturating_add(admitted);
        }
        self.refuse(request, reason)
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

    /// Refuses the next attempt before it is sent.
    fn refuse(&mut self, request: &RequestMeta<'_>, reason: StopReason) -> Admission {
        self.refund();
        self.give_back_turn();
        self.report.set_stop(reason);
        let protection = &self.policy.inner().protection;
        self.report
            .set_endpoint(|| endpoint_label(protection, request));
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "http_resilience",
            reason = reason.as_str(),
            attempts = self.report.attempts(),
            method = %request.method(),
            host = request.host(),
            port = request.port(),
            "refusing request"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = request;
        Admission::Fail(reason)
    }

    /// Decides what follows an attempt that ended at `now` with `outcome`.
    pub fn decide(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        now: Instant,
    ) -> Decision {
        let elapsed = now.saturating_duration_since(self.started);
        let class = self.policy.inner().classifier.classify(request, outcome);
        self.report.push(AttemptRecord {
            status: outcome.status(),
            failure: outcome.failure(),
            class,
            delay: None,
            delay_source: None,
            elapsed,
        });
        let is_response = matches!(outcome, Outcome::Response { .. });
        if self.policy.inner().protection.active() {
            self.observe(request, outcome, class, now);
        }
        let p = self.policy.inner();

        match class {
            Class::Transient => {}
            Class::Success if is_response => {
                self.refund_success(request, now);
                return self.stop(request, StopReason::Success, true);
            }
            _ => return self.stop(request, StopReason::Permanent, is_response),
        }
        if p.deadline.is_some_and(|d| elapsed >= d) {
            return self.stop(request, StopReason::Deadline, is_response);
        }
        let forbidden = match self.safety {
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
        if self.report.retries() >= p.max_retries {
            return self.stop(request, StopReason::MaxRetries, is_response);
        }

        let computed = self
            .backoff
            .get_or_insert_with(|| Box::new(self.policy.backoff()))
            .next_delay();
        let hint = match outcome {
            Outcome::Response { .. } => {
                p.classifier
                    .hint(request, outcome, p.clock.now(), self.report.retries())
            }
            Outcome::Error { .. } => None,
        };
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
            if p.protection.circuit.is_some()
                && let Some(guard) = &self.guard
            {
                let endpoint = &guard.endpoint;
                let mut status = CircuitStatus::Closed;
                endpoint.circuit(&mut |state| status = state.status(now));
                if let CircuitStatus::Open { until } = status
                    && until > now + delay
                {
                    let retry_in = until - now;
                    return self.stop(request, StopReason::CircuitOpen { retry_in }, is_response);
                }
            }
            if let Some(budget) = &p.protection.budget {
                let cost = budget.cost(outcome.failure() == Some(FailureKind::Timeout));
                let guard = guard_of(&mut self.guard, &p.protection, request);
                if !guard.endpoint.withdraw(budget, cost) {
                    return self.stop(request, StopReason::BudgetExhausted, is_response);
                }
                guard.paid = cost;
            }
        }

        if let Some(last) = self.report.last_mut() {
            last.delay = Some(delay);
            last.delay_source = Some(source);
        }
        self.report.add_backoff(delay);
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "http_resilience",
            attempt = self.report.attempts(),
            delay_ms = delay.as_millis() as u64,
            source = source.as_str(),
            reason = %Reason(outcome),
            method = %request.method(),
            host = request.host(),
            port = request.port(),
            path = shown_path(&self.policy, request),
            "retrying request"
        );
        Decision::Retry { delay, source }
    }

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
        #[cfg(feature = "tracing")]
        if !matches!(reason, StopReason::Success | StopReason::Permanent) {
            let last = self.report.last().copied();
            tracing::warn!(
                target: "http_resilience",
                attempts = self.report.attempts(),
                reason = reason.as_str(),
                last_status = last.and_then(|r| r.status()).map(|s| s.as_u16()),
                last_failure = last.and_then(|r| r.failure()).map(|k| k.as_str()),
                method = %request.method(),
                host = request.host(),
                port = request.port(),
                path = shown_path(&self.policy, request),
                "giving up on request"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = request;
        self.refusal(reason, is_response)
    }
}

impl RetryState {
    /// Tells the endpoint's breaker how the attempt went, and notes a quota
    /// the response says is gone.
    fn observe(
        &mut self,
        request: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        class: Class,
        now: Instant,
    ) {
        let p = self.policy.inner();
        if let Some(guard) = &mut self.guard {
            // The attempt was sent: no longer one to withdraw. (Only load
            // protection makes a guard, so this is the only place needed.)
            guard.admitted = 0;
        }
        if let Some(guard) = &mut self.guard
            && let (Some(ticket), Some(breaker)) = (guard.ticket.take(), &p.protection.circuit)
        {
            let endpoint = &guard.endpoint;
            let failed = match (class, outcome) {
                (Class::Transient, _) => Some(true),
                (_, Outcome::Response { .. }) => Some(false),
                // A permanent transport error (TLS, a bad URL) says nothing
                // about the server's health.
                (_, Outcome::Error { .. }) => None,
            };
            endpoint.circuit(&mut |state| match failed {
                Some(failed) => state.record(breaker, ticket, failed, now),
                None => state.release(ticket),
            });
        }
        if p.protection.server_limits
            && let Some(headers) = outcome.headers()
            && let Some((wait, which)) = quota_reset_at(headers, || p.clock.now())
        {
            // A reset absurdly far ahead (the year 2100) is garbage: holding
            // it would refuse every request for the life of the process.
            let valid = wait <= p.protection.max_quota_reset;
            let mut credential = false;
            if valid {
                let guard = guard_of(&mut self.guard, &p.protection, request);
                let partition = guard.partition(request);
                credential = !partition.is_anonymous();
                guard.endpoint.block_until(partition, now + wait);
            }
            #[cfg(feature = "tracing")]
            if valid {
                tracing::info!(
                    target: "http_resilience",
                    reason = "server_quota",
                    headers = which.as_str(),
                    reset_ms = wait.as_millis() as u64,
                    credential,
                    method = %request.method(),
                    host = request.host(),
                    port = request.port(),
                    "server quota exhausted; holding the requests with this credential until the reset"
                );
            } else {
                tracing::warn!(
                    target: "http_resilience",
                    reason = "server_quota",
                    headers = which.as_str(),
                    reset_ms = wait.as_millis() as u64,
                    max_quota_reset_ms = p.protection.max_quota_reset.as_millis() as u64,
                    method = %request.method(),
                    host = request.host(),
                    port = request.port(),
                    "server quota reset beyond max_quota_reset ignored as invalid"
                );
            }
            #[cfg(not(feature = "tracing"))]
            let _ = (request, which, credential);
        }
        #[cfg(not(feature = "tracing"))]
        let _ = request;
    }
}

impl RetryState {
    /// A success: a first attempt puts back `success_refund` (nothing to
    /// do while the store is at rest: every bucket is full), a retried
    /// request what its retries cost.
    fn refund_success(&mut self, request: &RequestMeta<'_>, now: Instant) {
        let p = self.policy.inner();
        let Some(budget) = &p.protection.budget else {
            return;
        };
        let spent = self
            .guard
            .as_mut()
            .map_or(0, |g| std::mem::take(&mut g.spent));
        let tokens = match spent {
            0 if self.guard.is_none() && p.protection.store.quiet(now) => return,
            0 => budget.success_refund(),
            spent => spent,
        };
        guard_of(&mut self.guard, &p.protection, request)
            .endpoint
            .deposit(budget, tokens);
    }

    /// Gives back the rate-limit turn the next attempt held: it will not be
    /// sent in it.
    fn give_back_turn(&mut self) {
        if let Some(guard) = &mut self.guard
            && let Some(turn) = guard.turn.take()
            && let Some(limit) = self.policy.rate_limit()
        {
            guard.endpoint.release(limit, turn);
        }
    }

    /// Gives back the tokens paid for a retry that will not be sent.
    fn refund(&mut self) {
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

/// Whether stopping for `reason` is giving up on a response that was worth
/// retrying (an error, unless `return_last_response`), rather than handing
/// it over as it is.
fn gives_up(reason: StopReason) -> bool {
    matches!(
        reason,
        StopReason::MaxRetries
            | StopReason::RetryAfterTooLong { .. }
            | StopReason::Deadline
            | StopReason::BudgetExhausted
            | StopReason::CircuitOpen { .. }
            | StopReason::RateLimitedLocally { .. }
    )
}

/// The endpoint's name for reports: `host:port`, or `(policy)`.
fn endpoint_label(protection: &Protection, request: &RequestMeta<'_>) -> String {
    endpoint_key(protection, request).to_string()
}

fn endpoint_key<'a>(protection: &Protection, request: &RequestMeta<'a>) -> EndpointKey<'a> {
    match protection.scope {
        Scope::Policy => EndpointKey::whole_policy(),
        _ => EndpointKey::new(request.host(), request.port()),
    }
}

/// The request's hold on its endpoint, made (and the endpoint looked up)
/// on first need.
fn guard_of<'a>(
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
        })
    })
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

/// The path as tracing shows it: `(hidden)` under `hide_paths`.
#[cfg(feature = "tracing")]
fn shown_path<'a>(policy: &RetryPolicy, request: &RequestMeta<'a>) -> &'a str {
    if policy.hide_paths() {
        "(hidden)"
    } else {
        request.path()
    }
}

#[cfg(feature = "tracing")]
struct Reason<'a>(&'a Outcome<'a>);

#[cfg(feature = "tracing")]
impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Outcome::Response { status, .. } => write!(f, "status {}", status.as_u16()),
            Outcome::Error { kind, .. } => f.write_str(kind.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FailureKind, Jitter};
    use std::time::{SystemTime, UNIX_EPOCH};

    const NONE: &[(&str, &str)] = &[];

    /// A response (status and headers) or a transport failure.
    type Scripted = Result<(u16, &'static [(&'static str, &'static str)]), FailureKind>;

    struct Case {
        method: Method,
        req_headers: Vec<(&'static str, &'static str)>,
    }

    fn policy() -> crate::RetryPolicyBuilder {
        let fixed = UNIX_EPOCH + Duration::from_secs(1_000_000);
        RetryPolicy::builder()
            .initial_backoff(Duration::from_millis(5))
            .max_backoff(Duration::from_millis(20))
            .jitter(Jitter::None)
            .wall_clock(move || fixed)
    }

    fn run(
        policy: &RetryPolicy,
        case: &Case,
        outcomes: &[Scripted],
    ) -> (Vec<Decision>, RetryReport) {
        let mut headers = HeaderMap::new();
        for (k, v) in &case.req_headers {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        let meta = RequestMeta::new(&case.method, "http", "h", "/p", &headers);
        let t0 = Instant::now();
        let mut now = t0;
        let mut state = RetryState::new(policy, &meta, now);
        let mut out = vec![];
        let err = std::io::Error::other("x");
        for o in outcomes {
            let mut h = HeaderMap::new();
            let d = match o {
                Ok((status, pairs)) => {
                    for (k, v) in pairs.iter() {
                        h.append(*k, HeaderValue::from_static(v));
                    }
                    let outcome = Outcome::response(StatusCode::from_u16(*status).unwrap(), &h);
                    state.decide(&meta, &outcome, now)
                }
                Err(kind) => state.decide(
                    &meta,
                    &Outcome::Error {
                        kind: *kind,
                        error: &err,
                    },
                    now,
                ),
            };
            out.push(d);
            match d {
                Decision::Retry { delay, .. } => now += delay,
                _ => break,
            }
        }
        (out, state.take_report())
    }

    fn get() -> Case {
        Case {
            method: Method::GET,
            req_headers: vec![],
        }
    }
    fn post() -> Case {
        Case {
            method: Method::POST,
            req_headers: vec![],
        }
    }

    #[test]
    fn exact_backoff_figures() {
        let p = policy().build().unwrap();
        let (d, report) = run(
            &p,
            &get(),
            &[
                Ok((503, NONE)),
                Ok((503, NONE)),
                Ok((503, NONE)),
                Ok((200, NONE)),
            ],
        );
        assert_eq!(d.last(), Some(&Decision::Return));
        assert_eq!(report.retries(), 3);
        assert_eq!(report.total_backoff(), Duration::from_millis(35));
        assert_eq!(report.stop_reason(), Some(StopReason::Success));
    }

    #[test]
    fn exhaustion_fails() {
        let p = policy().max_retries(2).build().unwrap();
        let (d, report) = run(&p, &get(), &[Ok((503, NONE)); 3]);
        assert_eq!(d.last(), Some(&Decision::Fail(StopReason::MaxRetries)));
        assert_eq!(report.attempts(), 3);
        let p = policy()
            .max_retries(2)
            .return_last_response(true)
            .build()
            .unwrap();
        let (d, _) = run(&p, &get(), &[Ok((503, NONE)); 3]);
        assert_eq!(d.last(), Some(&Decision::Return));
    }

    #[test]
    fn hints() {
        let p = policy().build().unwrap();
        let (d, _) = run(&p, &get(), &[Ok((503, &[("retry-after", "3")]))]);
        assert_eq!(
            d[0],
            Decision::Retry {
                delay: Duration::from_secs(3),
                source: DelaySource::RetryAfter
            }
        );
        let (d, _) = run(&p, &get(), &[Ok((429, &[("retry-after", "121")]))]);
        assert_eq!(
            d[0],
            Decision::Fail(StopReason::RetryAfterTooLong {
                hint: Duration::from_secs(121)
            })
        );
        let p2 = policy().on_long_hint(LongHint::UseBackoff).build().unwrap();
        let (d, _) = run(&p2, &get(), &[Ok((429, &[("retry-after", "121")]))]);
        assert_eq!(
            d[0],
            Decision::Retry {
                delay: Duration::from_millis(5),
                source: DelaySource::Backoff
            }
        );
        // GitHub primary limit: reset 30 s after the fixed clock
        let (d, _) = run(
            &p,
            &get(),
            &[Ok((
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1000030"),
                ],
            ))],
        );
        assert_eq!(
            d[0],
            Decision::Retry {
                delay: Duration::from_secs(30),
                source: DelaySource::RateLimitReset
            }
        );
        let _ = SystemTime::now();
    }

    #[test]
    fn deadline_is_never_overshot() {
        let p = policy()
            .deadline(Duration::from_millis(12))
            .build()
            .unwrap();
        // 5 ms, then 10 ms would end at 15 > 12: stop at once.
        let (d, report) = run(&p, &get(), &[Ok((503, NONE)), Ok((503, NONE))]);
        assert_eq!(d[1], Decision::Fail(StopReason::Deadline));
        assert_eq!(report.total_backoff(), Duration::from_millis(5));
        let (d, _) = run(&p, &get(), &[Ok((503, &[("retry-after", "1")]))]);
        assert_eq!(d[0], Decision::Fail(StopReason::Deadline));
    }

    #[test]
    fn attempt_timeout_is_clamped_to_the_deadline() {
        let p = policy()
            .deadline(Duration::from_secs(10))
            .attempt_timeout(Duration::from_secs(4))
            .build()
            .unwrap();
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/", &headers);
        let t0 = Instant::now();
        let state = RetryState::new(&p, &meta, t0);
        assert_eq!(state.attempt_timeout(t0), Some(Duration::from_secs(4)));
        assert_eq!(
            state.attempt_timeout(t0 + Duration::from_secs(8)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            state.attempt_timeout(t0 + Duration::from_secs(11)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn idempotency_rules() {
        let p = policy().build().unwrap();
        // POST 503: may have been acted on, returned as is
        let (d, r) = run(&p, &post(), &[Ok((503, NONE))]);
        assert_eq!(d[0], Decision::Return);
        assert_eq!(r.stop_reason(), Some(StopReason::NotIdempotent));
        // POST reset: fails without retry
        let (d, _) = run(&p, &post(), &[Err(FailureKind::ConnectionReset)]);
        assert_eq!(d[0], Decision::Fail(StopReason::NotIdempotent));
        // POST 429 and refused connection: safe
        let (d, _) = run(&p, &post(), &[Ok((429, NONE))]);
        assert!(matches!(d[0], Decision::Retry { .. }));
        let (d, _) = run(&p, &post(), &[Err(FailureKind::Connect)]);
        assert!(matches!(d[0], Decision::Retry { .. }));
        // with a key, or opted in
        let keyed = Case {
            method: Method::POST,
            req_headers: vec![("idempotency-key", "k")],
        };
        let (d, _) = run(&p, &keyed, &[Ok((503, NONE))]);
        assert!(matches!(d[0], Decision::Retry { .. }));
        let p2 = policy().retry_non_idempotent(true).build().unwrap();
        let (d, _) = run(&p2, &post(), &[Ok((503, NONE))]);
        assert!(matches!(d[0], Decision::Retry { .. }));
    }

    #[test]
    fn permanent_and_errors() {
        let p = policy().build().unwrap();
        let (d, _) = run(&p, &get(), &[Ok((404, NONE))]);
        assert_eq!(d[0], Decision::Return);
        let (d, _) = run(&p, &get(), &[Err(FailureKind::Tls)]);
        assert_eq!(d[0], Decision::Fail(StopReason::Permanent));
        let (d, r) = run(&p, &get(), &[Err(FailureKind::Timeout); 4]);
        assert_eq!(d[3], Decision::Fail(StopReason::MaxRetries));
        assert_eq!(r.history()[0].failure(), Some(FailureKind::Timeout));
    }

    mod protection {
        use super::*;
        use crate::{CircuitBreaker, EndpointKey, RetryBudget, ThrottleReason};

        fn meta(headers: &HeaderMap) -> RequestMeta<'_> {
            RequestMeta::new(&Method::GET, "http", "h", "/p", headers)
        }

        fn respond<'a>(status: u16, headers: &'a HeaderMap) -> Outcome<'a> {
            Outcome::response(StatusCode::from_u16(status).unwrap(), headers)
        }

        #[test]
        fn the_budget_pays_for_retries_until_it_cannot() {
            let budget = RetryBudget::builder().capacity(10).build().unwrap();
            let p = policy()
                .max_retries(5)
                .retry_budget(budget)
                .build()
                .unwrap();
            let h = HeaderMap::new();
            let t0 = Instant::now();
            let mut state = RetryState::new(&p, &meta(&h), t0);
            let mut decisions = vec![];
            for _ in 0..3 {
                assert_eq!(state.admit(&meta(&h), t0), Admission::Send);
                decisions.push(state.decide(&meta(&h), &respond(503, &h), t0));
            }
            assert!(matches!(decisions[0], Decision::Retry { .. }));
            assert!(matches!(decisions[1], Decision::Retry { .. }));
            assert_eq!(decisions[2], Decision::Fail(StopReason::BudgetExhausted));
            let endpoint = p.state_store().endpoint(&EndpointKey::new("h", 80));
            assert_eq!(endpoint.tokens(&budget), 0);
        }

        #[test]
        fn a_dropped_request_refunds_a_retry_it_paid_for() {
            let budget = RetryBudget::builder().capacity(10).build().unwrap();
            let p = policy().retry_budget(budget).build().unwrap();
            let h = HeaderMap::new();
            let t0 = Instant::now();
            let mut state = RetryState::new(&p, &meta(&h), t0);
            state.admit(&meta(&h), t0);
            assert!(matches!(
                state.decide(&meta(&h), &respond(503, &h), t0),
                Decision::Retry { .. }
            ));
            let endpoint = p.state_store().endpoint(&EndpointKey::new("h", 80));
            assert_eq!(endpoint.tokens(&budget), 5);
            drop(state);
            assert_eq!(endpoint.tokens(&budget), 10);
        }

        #[test]
        fn a_withdrawn_attempt_gives_back_its_tokens_and_its_probe_slot() {
            let budget = RetryBudget::builder().capacity(10).build().unwrap();
            let p = policy().retry_budget(budget).build().unwrap();
            let h = HeaderMap::new();
            let t0 = Instant::now();
            let endpoint = p.state_store().endpoint(&EndpointKey::new("h", 80));
            // A retry paid for and admitted, then withdrawn: its 5 tokens
            // come back, as if it had been refused at admission.
            let mut state = RetryState::new(&p, &meta(&h), t0);
            assert_eq!(state.admit(&meta(&h), t0), Admission::Send);
            assert_eq!(
                state.decide(&meta(&h), &respond(429, &h), t0),
                Decision::Retry {
                    delay: Duration::from_millis(5),
                    source: DelaySource::Backoff
                }
            );
            assert_eq!(endpoint.tokens(&budget), 5);
            let t1 = t0 + Duration::from_millis(5);
            assert_eq!(state.admit(&meta(&h), t1), Admission::Send);
            assert_eq!(
                state.withdraw(&meta(&h), StopReason::Deadline),
                Admission::Fail(StopReason::Deadline)
            );
            assert_eq!(endpoint.tokens(&budget), 10);
            assert_eq!(state.report().stop_reason(), Some(StopReason::Deadline));
            assert_eq!(
                state.refusal(StopReason::Deadline, true),
                Decision::Fail(StopReason::Deadline)
            );
            drop(state);
            assert_eq!(endpoint.tokens(&budget), 10, "nothing paid twice");

            // Open the breaker, then admit the half-open probe and withdraw
            // it: the slot is free for the next request.
            let p = policy()
                .circuit_breaker(
                    CircuitBreaker::builder()
                        .consecutive_failures(1)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            let mut opener = RetryState::new(&p, &meta(&h), t0);
            assert_eq!(opener.admit(&meta(&h), t0), Admission::Send);
            opener.decide(&meta(&h), &respond(503, &h), t0);
            let five = t0 + Duration::from_secs(5);
            let mut probe = RetryState::new(&p, &meta(&h), five);
            assert_eq!(probe.admit(&meta(&h), five), Admission::Send);
            probe.withdraw(&meta(&h), StopReason::Deadline);
            let mut next = RetryState::new(&p, &meta(&h), five);
            assert_eq!(next.admit(&meta(&h), five), Admission::Send);
        }

        #[test]
        fn a_refusal_before_a_retry_returns_the_last_response_only_when_asked() {
            let h = HeaderMap::new();
            let t0 = Instant::now();
            let plain = policy().build().unwrap();
            let keep = policy().return_last_response(true).build().unwrap();
            let local = StopReason::RateLimitedLocally {
                wait: Duration::from_secs(1),
            };
            for reason in [
                StopReason::Deadline,
                StopReason::CircuitOpen {
                    retry_in: Duration::from_secs(1),
                },
                StopReason::RetryAfterTooLong {
                    hint: Duration::from_secs(600),
                },
                local,
            ] {
                let state = RetryState::new(&plain, &meta(&h), t0);
                assert_eq!(state.refusal(reason, true), Decision::Fail(reason));
                assert_eq!(state.refusal(reason, false), Decision::Fail(reason));
                let state = RetryState::new(&keep, &meta(&h), t0);
                assert_eq!(state.refusal(reason, true), Decision::Return);
                assert_eq!(state.refusal(reason, false), Decision::Fail(reason));
            }
            // A body that cannot be sent again: the response as it is.
            let state = RetryState::new(&plain, &meta(&h), t0);
            let not_replayable = StopReason::BodyNotReplayable;
            assert_eq!(state.refusal(not_replayable, true), Decision::Return);
            assert_eq!(
                state.refusal(not_replayable, false),
                Decision::Fail(not_replayable)
            );
        }

        #[test]
        fn a_quota_gone_holds_the_next_request_until_the_reset() {
            let p = policy()
                .quota_release_spread(Duration::ZERO)
                .build()
                .unwrap();
            let none = HeaderMap::new();
            let mut gone = HeaderMap::new();
            gone.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            // the fixed wall clock is at 1,000,000 s
            gone.insert("x-ratelimit-reset", HeaderValue::from_static("1000030"));
            let t0 = Instant::now();
            let mut first = RetryState::new(&p, &meta(&none), t0);
            assert_eq!(first.admit(&meta(&none), t0), Admission::Send);
            assert_eq!(
                first.decide(&meta(&none), &respond(200, &gone), t0),
                Decision::Return
            );

            let later = t0 + Duration::from_secs(10);
            let mut next = RetryState::new(&p, &meta(&none), later);
            assert_eq!(
                next.admit(&meta(&none), later),
                Admission::Wait {
                    delay: Duration::from_secs(20),
                    reason: ThrottleReason::ServerQuota
                }
            );
            let at_reset = t0 + Duration::from_secs(30);
            assert_eq!(next.admit(&meta(&none), at_reset), Admission::Send);
            assert_eq!(next.report().total_throttled(), Duration::from_secs(20));

            // a reset beyond max_retry_after (120 s; the wall clock is fixed,
            // so 600 s from it): refused at once
            let mut far = HeaderMap::new();
            far.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            far.insert("x-ratelimit-reset", HeaderValue::from_static("1000600"));
            next.decide(&meta(&none), &respond(200, &far), at_reset);
            let mut refused = RetryState::new(&p, &meta(&none), at_reset);
            assert_eq!(
                refused.admit(&meta(&none), at_reset),
                Admission::Fail(StopReason::RetryAfterTooLong {
                    hint: Duration::from_secs(600)
                })
            );
        }

        #[test]
        fn a_hold_is_the_credentials_and_is_released_over_the_spread() {
            let p = policy().seed(1).build().unwrap();
            let mut gone = HeaderMap::new();
            gone.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            gone.insert("x-ratelimit-reset", HeaderValue::from_static("1000030"));
            let mut a = HeaderMap::new();
            a.insert("authorization", HeaderValue::from_static("token a"));
            let mut b = HeaderMap::new();
            b.insert("authorization", HeaderValue::from_static("token b"));
            let none = HeaderMap::new();
            let t0 = Instant::now();
            let mut first = RetryState::new(&p, &meta(&a), t0);
            assert_eq!(first.admit(&meta(&a), t0), Admission::Send);
            first.decide(&meta(&a), &respond(200, &gone), t0);
            let thirty = Duration::from_secs(30);
            let mut delays = vec![];
            for _ in 0..20 {
                let mut held = RetryState::new(&p, &meta(&a), t0);
                match held.admit(&meta(&a), t0) {
                    Admission::Wait { delay, reason } => {
                        assert_eq!(reason, ThrottleReason::ServerQuota);
                        assert!(delay >= thirty && delay <= thirty + Duration::from_secs(1));
                        delays.push(delay);
                    }
                    other => panic!("{other:?}"),
                }
            }
            delays.dedup();
            assert!(delays.len() > 1, "spread: {delays:?}");
            for other in [&b, &none] {
                let mut free = RetryState::new(&p, &meta(other), t0);
                assert_eq!(free.admit(&meta(other), t0), Admission::Send);
            }
        }

        #[test]
        fn a_reset_beyond_max_quota_reset_holds_nothing() {
            let none = HeaderMap::new();
            let t0 = Instant::now();
            // the fixed wall clock is at 1,000,000 s; the maximum is 1 h
            for (reset, held) in [("1003599", true), ("1003601", false), ("4102444800", false)] {
                let mut gone = HeaderMap::new();
                gone.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                gone.insert("x-ratelimit-reset", HeaderValue::from_static(reset));
                let p = policy()
                    .max_quota_reset(Duration::from_secs(3600))
                    .build()
                    .unwrap();
                let mut first = RetryState::new(&p, &meta(&none), t0);
                first.admit(&meta(&none), t0);
                first.decide(&meta(&none), &respond(200, &gone), t0);
                let mut next = RetryState::new(&p, &meta(&none), t0);
                let got = next.admit(&meta(&none), t0);
                assert_eq!(got != Admission::Send, held, "{reset}: {got:?}");
            }
        }

        #[test]
        fn an_open_breaker_refuses_and_a_failure_that_opens_it_stops_at_once() {
            let p = policy()
                .circuit_breaker(
                    CircuitBreaker::builder()
                        .consecutive_failures(1)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            let h = HeaderMap::new();
            let t0 = Instant::now();
            let mut first = RetryState::new(&p, &meta(&h), t0);
            assert_eq!(first.admit(&meta(&h), t0), Admission::Send);
            let five = Duration::from_secs(5);
            assert_eq!(
                first.decide(&meta(&h), &respond(503, &h), t0),
                Decision::Fail(StopReason::CircuitOpen { retry_in: five })
            );
            let mut second = RetryState::new(&p, &meta(&h), t0);
            assert_eq!(
                second.admit(&meta(&h), t0 + Duration::from_secs(1)),
                Admission::Fail(StopReason::CircuitOpen {
                    retry_in: Duration::from_secs(4)
                })
            );
            // at 5 s: one probe; a second request meanwhile is refused
            let mut probe = RetryState::new(&p, &meta(&h), t0 + five);
            assert_eq!(probe.admit(&meta(&h), t0 + five), Admission::Send);
            let mut other = RetryState::new(&p, &meta(&h), t0 + five);
            assert!(matches!(
                other.admit(&meta(&h), t0 + five),
                Admission::Fail(StopReason::CircuitOpen { .. })
            ));
            assert_eq!(
                probe.decide(&meta(&h), &respond(200, &h), t0 + five),
                Decision::Return
            );
            let mut after = RetryState::new(&p, &meta(&h), t0 + five);
            assert_eq!(after.admit(&meta(&h), t0 + five), Admission::Send);
        }
    }

    #[test]
    fn auto_key_only_for_non_idempotent_without_one() {
        let p = policy().auto_idempotency_key(true).build().unwrap();
        let mut h = HeaderMap::new();
        prepare_request(&p, &Method::GET, &mut h);
        assert!(h.is_empty());
        prepare_request(&p, &Method::POST, &mut h);
        let key = h.get(IDEMPOTENCY_KEY).unwrap().clone();
        assert_eq!(key.len(), 36);
        prepare_request(&p, &Method::POST, &mut h);
        assert_eq!(
            h.get(IDEMPOTENCY_KEY),
            Some(&key),
            "an existing key is kept"
        );
        let mut h2 = HeaderMap::new();
        prepare_request(&policy().build().unwrap(), &Method::POST, &mut h2);
        assert!(h2.is_empty(), "off by default");
    }
}
