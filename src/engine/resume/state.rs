//! [`ResumeState`]: a request's retry state carried past hand-over into a
//! response body that resumes under the request's policy.
//!
//! A resume is one more attempt of the same request: it counts against the
//! policy's `max_resumes` and `deadline`, pays the endpoint's retry budget
//! like a retry, waits the policy's backoff (or a server's `Retry-After`),
//! passes the load protection in front of every attempt (a server quota
//! held for the credential, the local rate limit, the circuit breaker), and
//! is written into the request's report. The body
//! (`adapter/resume.rs`'s `ResumableBody`) asks, in its order: may it
//! resume after a failure ([`ResumeState::plan`]), may the resume go now
//! ([`ResumeState::admit`]), and what its answer means
//! ([`ResumeState::answered`], [`ResumeState::request_failed`]). No I/O and
//! no timer here, as in the rest of the engine.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};

use super::{Continuation, Resumable, ResumeErrorKind, ResumeLog, ResumeRecord};
use crate::classify::{Class, FailureKind, Outcome, RequestMeta};
use crate::engine::endpoint::{Guard, Payment, PendingRetry};
use crate::engine::trace;
use crate::engine::{Admission, Now, RetryState};
use crate::error::Error;
use crate::policy::{LongHint, RetryPolicy};
use crate::report::{AttemptRecord, RetryReport, StopReason};
use crate::retry_after::DelaySource;

/// The request a resumable response answered, owned: what load protection,
/// the classifier and tracing read of it (a borrowed `RequestMeta` cannot
/// live in a body). Its headers stay in memory only; nothing prints them.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    method: Method,
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
    path: Box<str>,
    headers: HeaderMap,
}

impl Head {
    pub(crate) fn of(request: &RequestMeta<'_>) -> Head {
        Head {
            method: request.method().clone(),
            scheme: request.scheme().into(),
            host: request.host().into(),
            port: request.port(),
            path: request.path().into(),
            headers: request.headers().clone(),
        }
    }

    fn meta(&self) -> RequestMeta<'_> {
        RequestMeta::new(
            &self.method,
            &self.scheme,
            &self.host,
            &self.path,
            &self.headers,
        )
        .with_port(self.port)
    }
}

/// The engine's part of a response body that resumes under its request's
/// policy. Made at hand-over by [`RetryState::resume_state`], only when the
/// policy has `resume_bodies` and the response can be resumed.
#[derive(Debug)]
pub(crate) struct ResumeState {
    head: Head,
    resumable: Resumable,
    /// What each resume request is sent under, through the same adapter.
    pass_through: RetryPolicy,
    core: Core,
}

/// What the decisions change.
#[derive(Debug)]
struct Core {
    /// The request's own state: its policy, the deadline's start, its
    /// backoff, its hold on the endpoint (budget, breaker, turns, quota
    /// holds), its report.
    engine: RetryState,
    resumes: u32,
    log: ResumeLog,
}

/// [`ResumeState::admit`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeAdmission {
    /// Send the resume now, under this timeout (the policy's
    /// `attempt_timeout`, clamped to the deadline).
    Send { timeout: Option<Duration> },
    /// Wait, then ask again.
    Wait(Duration),
    /// Do not: the body fails with this.
    Fail(ResumeErrorKind),
    /// The state store must be asked first (a turn of a rate limit shared
    /// by many processes): poll [`ResumeState::poll_store_call`] until
    /// ready, then ask again.
    Consult,
}

/// What the answer to a resume request means ([`ResumeState::answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// It passed the checks: the stream goes on.
    Go(Continuation),
    /// A transient status: one more resume, perhaps after the server's
    /// wait.
    Again(Option<(Duration, DelaySource)>),
    /// The body fails with this.
    Fail(ResumeErrorKind),
}

/// `now`, as the engine's lazy clock.
fn at(now: Instant) -> Now<fn() -> Instant> {
    Now {
        read: None,
        at: now,
    }
}

impl RetryState {
    /// At the hand-over of a final response, when the policy has
    /// `resume_bodies`: the state its body resumes with, if the response
    /// can be resumed at all ([`Resumable::from_response`]). The request's
    /// retry state is moved into it (its hold on the endpoint and its
    /// backoff; a copy of its report), so that resumes go on where its
    /// attempts stopped; what is left here has nothing to give back.
    pub(crate) fn resume_state(
        &mut self,
        request: &RequestMeta<'_>,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Box<ResumeState>> {
        let resumable = Resumable::from_response(request.method(), status, headers).ok()?;
        let engine = RetryState {
            policy: self.policy.clone(),
            backoff: self.backoff.take(),
            started: self.started,
            safety: self.safety,
            replayable: self.replayable,
            report: self.report.clone(),
            sent: self.sent,
            guard: self.guard.take(),
        };
        let log = ResumeLog::default();
        log.set_report(&engine.report);
        Some(Box::new(ResumeState {
            pass_through: engine.policy.pass_through(),
            head: Head::of(request),
            resumable,
            core: Core {
                engine,
                resumes: 0,
                log,
            },
        }))
    }
}

impl ResumeState {
    /// What the first response said of its body.
    pub(crate) fn resumable(&self) -> &Resumable {
        &self.resumable
    }

    /// The log of the resumes (and the report), shared with the body and
    /// the response's extensions.
    pub(crate) fn log(&self) -> &ResumeLog {
        &self.core.log
    }

    /// The policy of each resume request (see
    /// [`RetryPolicy::pass_through`]).
    pub(crate) fn pass_through(&self) -> &RetryPolicy {
        &self.pass_through
    }

    /// How long the body may deliver nothing before it is resumed.
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.core.engine.policy.body_idle_timeout()
    }

    /// How many resumes were planned.
    pub(crate) fn resumes(&self) -> u32 {
        self.core.resumes
    }

    /// The request's report, the resumes included.
    pub(crate) fn report(&self) -> RetryReport {
        let mut report = self.core.engine.report.clone();
        report.set_resumes(self.core.log.records());
        report
    }

    /// See [`Core::plan`].
    pub(crate) fn plan(
        &mut self,
        offset: u64,
        failure: Option<FailureKind>,
        hint: Option<(Duration, DelaySource)>,
        now: Instant,
    ) -> Result<Duration, ResumeErrorKind> {
        self.core
            .plan(&self.head.meta(), offset, failure, hint, now)
    }

    /// See [`Core::admit`].
    pub(crate) fn admit(&mut self, offset: u64, now: Instant) -> ResumeAdmission {
        self.core.admit(&self.head.meta(), offset, now)
    }

    /// Polls the store call an admission asked for
    /// ([`ResumeAdmission::Consult`]) until the store has answered.
    pub(crate) fn poll_store_call(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.core.engine.poll_store_call(cx)
    }

    /// See [`Core::answered`].
    pub(crate) fn answered(
        &mut self,
        resumable: &Resumable,
        offset: u64,
        status: StatusCode,
        headers: &HeaderMap,
        now: Instant,
    ) -> Answer {
        self.core
            .answered(&self.head.meta(), resumable, offset, status, headers, now)
    }

    /// See [`Core::request_failed`].
    pub(crate) fn request_failed(
        &mut self,
        error: &(dyn StdError + 'static),
        now: Instant,
    ) -> FailureKind {
        self.core.request_failed(&self.head.meta(), error, now)
    }
}

impl Core {
    /// The body failed at representation offset `offset` (the first
    /// response's start plus what the caller has read), because of
    /// `failure` (its kind, if known; a timeout costs a timeout's tokens),
    /// or because a resume was answered with a transient status whose
    /// `hint` (the server's wait) is given. In order:
    /// 1. `max_resumes` used up → `LimitExceeded`;
    /// 2. the deadline reached → `DeadlineExceeded`;
    /// 3. the wait: the hint (above `max_retry_after`: `RetryAfterTooLong`,
    ///    or the backoff under `LongHint::UseBackoff`), else the backoff;
    /// 4. the wait would cross the deadline → `DeadlineExceeded`;
    /// 5. the breaker open past the wait → `CircuitOpen`;
    /// 6. the budget cannot pay (a retry's cost) → `BudgetExhausted`;
    /// 7. otherwise resume after the wait (recorded in the report and the
    ///    log).
    fn plan(
        &mut self,
        meta: &RequestMeta<'_>,
        offset: u64,
        failure: Option<FailureKind>,
        hint: Option<(Duration, DelaySource)>,
        now: Instant,
    ) -> Result<Duration, ResumeErrorKind> {
        let p = self.engine.policy.inner();
        if self.resumes >= p.resumes.max {
            return Err(self.refuse(meta, offset, ResumeErrorKind::LimitExceeded));
        }
        let elapsed = now.saturating_duration_since(self.engine.started);
        if p.deadline.is_some_and(|d| elapsed >= d) {
            return Err(self.refuse(meta, offset, ResumeErrorKind::DeadlineExceeded));
        }
        let computed = self
            .engine
            .backoff
            .get_or_insert_with(|| Box::new(self.engine.policy.backoff()))
            .next_delay();
        let (delay, source) = match hint {
            Some((h, _)) if h > p.max_retry_after => match p.on_long_hint {
                LongHint::UseBackoff => (computed, DelaySource::Backoff),
                _ => {
                    return Err(self.refuse(meta, offset, ResumeErrorKind::RetryAfterTooLong));
                }
            },
            Some(hint) => hint,
            None => (computed, DelaySource::Backoff),
        };
        if p.deadline
            .is_some_and(|d| elapsed.saturating_add(delay) >= d)
        {
            return Err(self.refuse(meta, offset, ResumeErrorKind::DeadlineExceeded));
        }
        if p.protection.active() {
            if p.protection.circuit.is_some()
                && let Some(until) = self.engine.guard.as_ref().and_then(|g| g.open_until(now))
                && until > now + delay
            {
                return Err(self.refuse(meta, offset, ResumeErrorKind::CircuitOpen));
            }
            if let Some(budget) = &p.protection.budget {
                let cost = budget.cost(failure == Some(FailureKind::Timeout));
                let retry = PendingRetry {
                    delay,
                    source,
                    is_response: false,
                    cost,
                };
                match Guard::of(&mut self.engine.guard, &p.protection, meta).pay(budget, retry) {
                    Payment::Paid => {}
                    Payment::Refused(_) => {
                        return Err(self.refuse(meta, offset, ResumeErrorKind::BudgetExhausted));
                    }
                    // A budget shared by many processes would be asked
                    // over the network; a resume is planned inside a
                    // body's poll without a store round trip, so it is
                    // paid from nothing shared (the call is dropped
                    // unsent): the store's fail-open rule.
                    Payment::Consult => drop(self.engine.take_store_call()),
                }
            }
        }
        self.resumes += 1;
        let report = &mut self.engine.report;
        if let Some(last) = report.last_mut() {
            last.delay = Some(delay);
            last.delay_source = Some(source);
        }
        self.log.push(ResumeRecord::new(offset, delay));
        self.log.set_report(&self.engine.report);
        trace::resuming(&self.engine.policy, meta, offset, self.resumes, delay);
        Ok(delay)
    }

    /// Whether the planned resume may be sent at `now`: the load protection
    /// in front of every attempt (see [`RetryState::admit`]). A wait is
    /// added to the resume's record.
    fn admit(&mut self, meta: &RequestMeta<'_>, offset: u64, now: Instant) -> ResumeAdmission {
        match self.engine.admit(meta, now) {
            Admission::Send => ResumeAdmission::Send {
                timeout: self.engine.attempt_timeout(now),
            },
            Admission::Wait { delay, .. } => {
                self.log
                    .update(|r| r.waited = r.waited.saturating_add(delay));
                self.log.set_report(&self.engine.report);
                ResumeAdmission::Wait(delay)
            }
            Admission::Fail(reason) => {
                let kind = match reason {
                    StopReason::CircuitOpen { .. } => ResumeErrorKind::CircuitOpen,
                    StopReason::RateLimitedLocally { .. } => ResumeErrorKind::RateLimited,
                    StopReason::RetryAfterTooLong { .. } => ResumeErrorKind::RetryAfterTooLong,
                    StopReason::BudgetExhausted => ResumeErrorKind::BudgetExhausted,
                    _ => ResumeErrorKind::DeadlineExceeded,
                };
                ResumeAdmission::Fail(self.refuse(meta, offset, kind))
            }
            Admission::Consult => ResumeAdmission::Consult,
        }
    }

    /// The resume request of `offset` was answered `status` with `headers`
    /// at `now`: recorded (an attempt of the request, told to the breaker
    /// and the quota holds), classified by the policy's classifier, and
    /// checked against the first response ([`Resumable::check`]).
    fn answered(
        &mut self,
        meta: &RequestMeta<'_>,
        resumable: &Resumable,
        offset: u64,
        status: StatusCode,
        headers: &HeaderMap,
        now: Instant,
    ) -> Answer {
        let outcome = Outcome::response(status, headers);
        let class = self
            .engine
            .policy
            .inner()
            .classifier
            .classify(meta, &outcome);
        self.record(meta, &outcome, class, now);
        let answer = match resumable.check_kind(offset, status, headers) {
            Ok(continuation) => {
                self.engine.refund_success(meta, &at(now));
                Answer::Go(continuation)
            }
            Err(ResumeErrorKind::UnexpectedStatus(_)) if class == Class::Transient => {
                let p = self.engine.policy.inner();
                let retries = self.engine.report.retries();
                let hint = p.classifier.hint(meta, &outcome, p.clock.now(), retries);
                Answer::Again(hint.map(|h| (h.delay, h.source)))
            }
            Err(kind) => Answer::Fail(self.refuse(meta, offset, kind)),
        };
        self.log.set_report(&self.engine.report);
        answer
    }

    /// The resume request of `offset` failed at `now` with `error` (no
    /// response): recorded as an attempt of the request; its kind is
    /// returned, for [`plan`](Self::plan).
    fn request_failed(
        &mut self,
        meta: &RequestMeta<'_>,
        error: &(dyn StdError + 'static),
        now: Instant,
    ) -> FailureKind {
        // Sent through the adapter, which knew its client's errors best:
        // its report names the kind.
        let kind = Error::find(error)
            .and_then(|e| e.report().last()?.failure())
            .unwrap_or_else(|| FailureKind::from_error(error));
        let source = Error::find(error)
            .and_then(|e| StdError::source(e))
            .unwrap_or(error);
        let outcome = Outcome::Error {
            kind,
            error: source,
        };
        let class = self
            .engine
            .policy
            .inner()
            .classifier
            .classify(meta, &outcome);
        self.record(meta, &outcome, class, now);
        self.log.set_report(&self.engine.report);
        kind
    }

    fn record(
        &mut self,
        meta: &RequestMeta<'_>,
        outcome: &Outcome<'_>,
        class: Class,
        now: Instant,
    ) {
        let elapsed = now.saturating_duration_since(self.engine.started);
        self.engine.report.push(AttemptRecord {
            status: outcome.status(),
            failure: outcome.failure(),
            class,
            delay: None,
            delay_source: None,
            elapsed: crate::report::nanos(elapsed),
            sent_at: crate::report::UNKNOWN,
            hedge: false,
            cancelled: false,
        });
        if self.engine.policy.inner().protection.active() {
            self.engine.observe(meta, outcome, class, &mut at(now));
        }
        if let Some(status) = outcome.status() {
            self.log.update(|r| r.status = Some(status));
        }
    }

    /// No resume: what the resume held is given back (tokens paid, a
    /// rate-limit turn), and the refusal is traced.
    fn refuse(
        &mut self,
        meta: &RequestMeta<'_>,
        offset: u64,
        kind: ResumeErrorKind,
    ) -> ResumeErrorKind {
        self.engine.refund();
        self.engine.give_back_turn();
        self.log.set_report(&self.engine.report);
        trace::resume_failed(&self.engine.policy, meta, offset, self.resumes, kind);
        kind
    }
}
