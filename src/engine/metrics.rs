//! What the engine records in the metrics (feature `metrics`), one
//! function per recording point: after each [`Admission`] that is not a
//! send, and after each [`Decision`]. The instruments, their labels and
//! the per-endpoint handles are the [`metrics`](crate::metrics) room's;
//! this file only says which of them each answer of the engine moves.
//!
//! The engine calls [`RetryState::record_decision`] at the end of every
//! `decide` and [`RetryState::record_admission`] on every wait and
//! refusal of `admit` (a send records nothing): each is one relaxed load
//! until [`enable`](crate::metrics::enable), then one lookup of the
//! endpoint's handles. The two protection gauges are read from the
//! request's hold on its endpoint, when it has one (a request that never
//! looked its endpoint up has nothing new to say of it).

use std::sync::Arc;
use std::time::Instant;

use crate::classify::RequestMeta;
use crate::metrics::{EndpointMetrics, HedgeEvent, Refusal, is_enabled};
use crate::protection::CircuitStatus;
use crate::protection::store::Scope;
use crate::report::RetryReport;

use super::{Admission, Decision, RetryState};

impl RetryState {
    /// After `decide`: the attempt, its retry or the request's end, and the
    /// endpoint's gauges.
    #[inline(always)]
    pub(super) fn record_decision(&self, request: &RequestMeta<'_>, decision: &Decision) {
        // The gate inline, the recording out of line: what every request
        // pays until `enable` is one load and a branch.
        if is_enabled() {
            self.record_enabled(request, decision);
        }
    }

    #[cold]
    #[inline(never)]
    fn record_enabled(&self, request: &RequestMeta<'_>, decision: &Decision) {
        let Some(m) = self.endpoint_metrics(request) else {
            return;
        };
        decided(&m, decision, &self.report);
        // When the attempt ended (the decision's own reading of the clock).
        let at = self.started
            + self
                .report
                .last()
                .map_or_else(Default::default, |r| r.elapsed());
        self.gauges(&m, at);
    }

    /// After `admit`, for a wait or a refusal at `now`.
    #[cold]
    pub(super) fn record_admission(
        &self,
        request: &RequestMeta<'_>,
        admission: &Admission,
        now: Instant,
    ) {
        let Some(m) = self.endpoint_metrics(request) else {
            return;
        };
        admitted(&m, admission, &self.report);
        self.gauges(&m, now);
    }

    /// A hedge sent, won, or due and not sent.
    #[cold]
    pub(super) fn record_hedge(&self, request: &RequestMeta<'_>, event: HedgeEvent) {
        if let Some(m) = self.endpoint_metrics(request) {
            m.hedged(event);
        }
    }

    /// The request's endpoint's handles; `None` until `enable`. Checked
    /// first: the request's host and port are worked out only when needed.
    #[inline]
    fn endpoint_metrics(&self, request: &RequestMeta<'_>) -> Option<Arc<EndpointMetrics>> {
        if !is_enabled() {
            return None;
        }
        self.policy
            .inner()
            .metrics
            .get(request.host(), request.port())
    }

    /// The breaker's state and the budget's tokens of the endpoint the
    /// request holds, at `now`, in `m`, the request's endpoint's handles.
    /// Under [`Scope::Policy`] the one state is the whole policy's,
    /// recorded as `server.address="_policy"`, port 0.
    #[cold]
    fn gauges(&self, m: &Arc<EndpointMetrics>, now: Instant) {
        let Some(endpoint) = self.guard.as_deref().map(|g| g.endpoint()) else {
            return;
        };
        let p = self.policy.inner();
        let protection = &p.protection;
        let whole;
        let m = match protection.scope {
            Scope::Policy => match p.metrics.get("_policy", 0) {
                Some(found) => {
                    whole = found;
                    &whole
                }
                None => return,
            },
            _ => m,
        };
        if protection.circuit.is_some() {
            let mut status = CircuitStatus::Closed;
            endpoint.circuit(&mut |state| status = state.status(now));
            m.circuit(status);
        }
        if let Some(budget) = &protection.budget {
            m.budget_tokens(endpoint.tokens(budget));
        }
    }
}

/// After [`RetryState::decide`](super::RetryState::decide): the attempt
/// (its class is the report's last), the retry's delay, a budget or
/// breaker refusal, and the retries of a request that ends.
pub(super) fn decided(m: &EndpointMetrics, decision: &Decision, report: &RetryReport) {
    if let Some(last) = report.last() {
        m.attempted(last.class());
    }
    match *decision {
        Decision::Retry { delay, source } => m.retrying(delay, source),
        // Recorded once the store has answered (`decide_after_store`).
        Decision::Consult => {}
        Decision::Fail(reason) => {
            if let Some(refusal) = Refusal::of(reason, false) {
                m.refused(refusal);
            }
            m.ended(report);
        }
        _ => m.ended(report),
    }
}

/// After [`RetryState::admit`](super::RetryState::admit): a wait, or a
/// refusal (which ends the request). A send records nothing.
pub(super) fn admitted(m: &EndpointMetrics, admission: &Admission, report: &RetryReport) {
    match *admission {
        // A send, or a store call before the admission: nothing yet.
        Admission::Send | Admission::Consult => {}
        Admission::Wait { reason, .. } => m.throttled(reason),
        Admission::Fail(reason) => {
            if let Some(refusal) = Refusal::of(reason, true) {
                m.refused(refusal);
            }
            m.ended(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{HeaderMap, Method, StatusCode};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;
    use crate::backoff::Jitter;
    use crate::classify::{Class, Outcome, RequestMeta};
    use crate::engine::RetryState;
    use crate::metrics::tests::{Series, histogram, labels, read};
    use crate::metrics::{
        ATTEMPTS, BUDGET_TOKENS, CIRCUIT_STATE, MetricsCache, POLICY, REFUSALS, REQUEST_RETRIES,
        RETRY_DELAY, THROTTLES, enable,
    };
    use crate::policy::{RetryPolicy, RetryPolicyBuilder};
    use crate::protection::RetryBudget;
    use crate::report::{AttemptRecord, StopReason, ThrottleReason};
    use crate::retry_after::DelaySource;

    fn policy() -> RetryPolicyBuilder {
        RetryPolicy::builder()
            .initial_backoff(Duration::from_millis(5))
            .max_backoff(Duration::from_millis(20))
            .jitter(Jitter::None)
    }

    /// Runs one request through the engine with `statuses` as the
    /// attempts' outcomes; the engine records in the policy's own cache
    /// after every `admit` and every `decide`. Returns the report.
    fn run(policy: &RetryPolicy, statuses: &[u16], t0: Instant) -> RetryReport {
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/p", &headers);
        let mut now = t0;
        let mut state = RetryState::new(policy, &meta, now);
        for &status in statuses {
            if state.admit(&meta, now) != Admission::Send {
                break;
            }
            let h = HeaderMap::new();
            let outcome = Outcome::response(StatusCode::from_u16(status).unwrap(), &h);
            match state.decide(&meta, &outcome, now) {
                Decision::Retry { delay, .. } => now += delay,
                _ => break,
            }
        }
        state.take_report()
    }

    /// What was recorded, without the protection gauges (their own tests
    /// are in tests/metrics.rs).
    fn counted(snap: &Snapshotter) -> Vec<Series> {
        read(snap)
            .into_iter()
            .filter(|(name, ..)| name != BUDGET_TOKENS && name != CIRCUIT_STATE)
            .collect()
    }

    #[test]
    fn two_retries_record_their_delays_and_the_retry_count() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let p = policy().build().unwrap();
        let report = run(&p, &[503, 503, 200], Instant::now());
        assert_eq!(report.retries(), 2);
        assert_eq!(report.total_backoff(), Duration::from_millis(15));
        let got = counted(&snap);
        assert_eq!(
            got,
            vec![
                (
                    ATTEMPTS.into(),
                    labels(&[("outcome", "success")]),
                    DebugValue::Counter(1)
                ),
                (
                    ATTEMPTS.into(),
                    labels(&[("outcome", "transient")]),
                    DebugValue::Counter(2)
                ),
                (REQUEST_RETRIES.into(), labels(&[]), histogram(&[2.0])),
                (
                    RETRY_DELAY.into(),
                    labels(&[("source", "backoff")]),
                    histogram(&[0.005, 0.010])
                ),
            ]
        );
        // The delays recorded add up to the report's total backoff.
        let recorded: f64 = [0.005, 0.010].iter().sum();
        assert_eq!(
            Duration::from_secs_f64(recorded).as_millis(),
            report.total_backoff().as_millis()
        );
        assert_eq!(report.total_backoff().as_secs_f64(), recorded);
    }

    #[test]
    fn a_clean_run_records_one_successful_attempt_and_nothing_else() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        run(
            &policy().name("github").build().unwrap(),
            &[200],
            Instant::now(),
        );
        assert_eq!(
            read(&snap),
            vec![(
                ATTEMPTS.into(),
                labels(&[("outcome", "success"), (POLICY, "github")]),
                DebugValue::Counter(1)
            )]
        );
    }

    #[test]
    fn a_budget_refusal_is_counted_once() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        // 10 tokens, 5 a retry: two retries, and the third is refused.
        let p = policy()
            .max_retries(5)
            .retry_budget(RetryBudget::builder().capacity(10).build().unwrap())
            .build()
            .unwrap();
        let report = run(&p, &[503; 6], Instant::now());
        assert_eq!(report.stop_reason(), Some(StopReason::BudgetExhausted));
        let got = counted(&snap);
        let refusals: Vec<_> = got.iter().filter(|(name, ..)| name == REFUSALS).collect();
        assert_eq!(
            refusals,
            vec![&(
                REFUSALS.to_owned(),
                labels(&[("reason", "budget_exhausted")]),
                DebugValue::Counter(1)
            )]
        );
        assert!(got.contains(&(
            ATTEMPTS.into(),
            labels(&[("outcome", "transient")]),
            DebugValue::Counter(3)
        )));
        assert!(got.contains(&(REQUEST_RETRIES.into(), labels(&[]), histogram(&[2.0]))));
    }

    #[test]
    fn waits_and_refusals_before_an_attempt() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let m = MetricsCache::new(None).get("h", 80).unwrap();
        let report = RetryReport::new();
        admitted(
            &m,
            &Admission::Wait {
                delay: Duration::from_secs(1),
                reason: ThrottleReason::ServerQuota,
            },
            &report,
        );
        admitted(
            &m,
            &Admission::Fail(StopReason::RetryAfterTooLong {
                hint: Duration::from_secs(600),
            }),
            &report,
        );
        admitted(
            &m,
            &Admission::Fail(StopReason::RateLimitedLocally {
                wait: Duration::from_secs(9),
            }),
            &report,
        );
        // A deadline is not load protection: no refusal.
        admitted(&m, &Admission::Fail(StopReason::Deadline), &report);
        // A send records nothing.
        admitted(&m, &Admission::Send, &report);
        assert_eq!(
            read(&snap),
            vec![
                (
                    REFUSALS.into(),
                    labels(&[("reason", "quota_held")]),
                    DebugValue::Counter(1)
                ),
                (
                    REFUSALS.into(),
                    labels(&[("reason", "rate_limited")]),
                    DebugValue::Counter(1)
                ),
                (
                    THROTTLES.into(),
                    labels(&[("reason", "server_quota")]),
                    DebugValue::Counter(1)
                ),
            ]
        );
    }

    #[test]
    fn a_returned_success_and_a_quota_retry() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let m = MetricsCache::new(None).get("h", 80).unwrap();
        decided(
            &m,
            &Decision::Retry {
                delay: Duration::from_millis(1),
                source: DelaySource::RateLimitReset,
            },
            &RetryReport::new(),
        );
        let mut report = RetryReport::new();
        report.push(AttemptRecord {
            status: Some(StatusCode::OK),
            failure: None,
            class: Class::Success,
            delay: None,
            delay_source: None,
            elapsed: crate::report::nanos(Duration::ZERO),
            sent_at: crate::report::UNKNOWN,
            hedge: false,
            cancelled: false,
        });
        decided(&m, &Decision::Return, &report);
        assert_eq!(
            read(&snap),
            vec![
                (
                    ATTEMPTS.into(),
                    labels(&[("outcome", "success")]),
                    DebugValue::Counter(1)
                ),
                (
                    RETRY_DELAY.into(),
                    labels(&[("source", "quota")]),
                    histogram(&[0.001])
                ),
            ]
        );
    }

    /// Issue 17: a hedge sent and won, and a hedge skipped (the budget
    /// empty), each counted once under `http_resilience.hedges`.
    #[test]
    fn hedges_sent_won_and_skipped() {
        use crate::engine::Raced;
        use crate::hedging::Hedging;
        use crate::metrics::HEDGES;
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        enable();
        let ms = Duration::from_millis;
        let p = policy()
            .retry_budget(
                RetryBudget::builder()
                    .capacity(5)
                    .retry_cost(5)
                    .timeout_cost(5)
                    .build()
                    .unwrap(),
            )
            .hedging(Hedging::builder().delay(ms(50)).build().unwrap())
            .build()
            .unwrap();
        let headers = HeaderMap::new();
        let meta = RequestMeta::new(&Method::GET, "http", "h", "/p", &headers);
        let ok = Outcome::response(StatusCode::OK, &headers);
        let t0 = Instant::now();
        // Sent at 50 ms, answers at 60 ms and wins (the budget pays 5 of 5).
        let mut state = RetryState::new(&p, &meta, t0);
        assert_eq!(state.admit(&meta, t0), Admission::Send);
        state.hedge_start(|| meta, t0);
        assert_eq!(
            state.hedge_now(&meta, t0 + ms(50)),
            crate::engine::Hedge::Send { attempt: 1 }
        );
        state.race_ended(1);
        let decision = state.decide(&meta, &ok, t0 + ms(60));
        assert_eq!(
            state.race_settle(&meta, decision, t0 + ms(60)),
            Raced::Done(Decision::Return)
        );
        // The next request finds the budget empty: its hedge is skipped.
        let mut state = RetryState::new(&p, &meta, t0);
        assert_eq!(state.admit(&meta, t0), Admission::Send);
        state.hedge_start(|| meta, t0);
        assert_eq!(
            state.hedge_now(&meta, t0 + ms(50)),
            crate::engine::Hedge::Skip
        );
        let hedges: Vec<_> = counted(&snap)
            .into_iter()
            .filter(|(name, ..)| name == HEDGES)
            .collect();
        let one = |outcome| {
            (
                HEDGES.to_owned(),
                labels(&[("outcome", outcome)]),
                DebugValue::Counter(1),
            )
        };
        assert_eq!(hedges, vec![one("sent"), one("skipped"), one("won")]);
    }
}
