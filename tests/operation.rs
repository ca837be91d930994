//! `RetryPolicy::retry` for any async operation: the seed cases (a poll
//! loop that survives transient store errors and resets its backoff after
//! a success; a trial run classified by failure type, with its history),
//! and the policy's deadline, attempt timeout, budget and breaker. Waits
//! under tokio's paused clock, to the millisecond.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use http_resilience::{
    Attempt, CircuitBreaker, Class, ErrorClass, FailureKind, Jitter, RetryBudget, RetryPolicy,
    RetryPolicyBuilder, StopReason,
};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum StoreError {
    Unavailable,
    Throttled,
    BadQuery,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store error: {self:?}")
    }
}

impl std::error::Error for StoreError {}

fn classify(e: &StoreError) -> ErrorClass {
    match e {
        StoreError::Unavailable | StoreError::Throttled => ErrorClass::transient(),
        StoreError::BadQuery => ErrorClass::permanent(),
    }
}

/// 5 ms doubling to 20 ms, no jitter.
fn policy() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .jitter(Jitter::None)
}

/// A store whose answers are scripted, one per call.
struct Script(RefCell<VecDeque<Result<u32, StoreError>>>);

impl Script {
    fn new(answers: impl IntoIterator<Item = Result<u32, StoreError>>) -> Script {
        Script(RefCell::new(answers.into_iter().collect()))
    }
    async fn call(&self) -> Result<u32, StoreError> {
        self.0
            .borrow_mut()
            .pop_front()
            .expect("more calls than scripted")
    }
    fn left(&self) -> usize {
        self.0.borrow().len()
    }
}

fn delays(report: &http_resilience::RetryReport) -> Vec<Duration> {
    report.history().iter().filter_map(|r| r.delay()).collect()
}

#[tokio::test(start_paused = true)]
async fn three_failures_at_5_10_20_ms_report_35_ms_and_three_retries() {
    let p = policy().max_retries(3).build().unwrap();
    let store = Script::new([
        Err(StoreError::Unavailable),
        Err(StoreError::Throttled),
        Err(StoreError::Unavailable),
        Ok(7),
    ]);
    let started = Instant::now();
    let (value, report) = p
        .operation("store.poll")
        .retry_with_report(|_| store.call(), classify)
        .await
        .unwrap();
    assert_eq!(value, 7);
    assert_eq!(report.retries(), 3);
    assert_eq!(report.total_backoff(), Duration::from_millis(35));
    assert_eq!(started.elapsed(), Duration::from_millis(35));
    assert_eq!(
        delays(&report),
        [5, 10, 20].map(Duration::from_millis).to_vec()
    );
    assert_eq!(report.stop_reason(), Some(StopReason::Success));
    let last = report.last().unwrap();
    assert_eq!(
        (last.class(), last.status(), last.failure()),
        (Class::Success, None, None)
    );
    assert_eq!(store.left(), 0);
}

/// Issue 1956: a poll loop survives transient store errors, and after a
/// success the next failure waits the initial delay again.
#[tokio::test(start_paused = true)]
async fn fail_success_fail_restarts_at_the_initial_delay() {
    let p = policy().build().unwrap();
    let store = Script::new([
        Err(StoreError::Unavailable),
        Ok(1),
        Err(StoreError::Unavailable),
        Err(StoreError::Throttled),
        Ok(2),
        Err(StoreError::Unavailable),
        Ok(3),
    ]);
    let mut firsts = vec![];
    let mut items = vec![];
    for _ in 0..3 {
        let (item, report) = p
            .operation("store.poll")
            .retry_with_report(|_| store.call(), classify)
            .await
            .unwrap();
        items.push(item);
        firsts.push(delays(&report));
    }
    assert_eq!(items, [1, 2, 3]);
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    assert_eq!(firsts, [ms(&[5]), ms(&[5, 10]), ms(&[5])]);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_returns_at_once_with_it_as_the_source() {
    let p = policy().build().unwrap();
    let store = Script::new([Err(StoreError::BadQuery)]);
    let started = Instant::now();
    let error = p.retry(|_| store.call(), classify).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(error.code(), "NOT_RETRYABLE");
    assert_eq!(error.report().attempts(), 1);
    assert_eq!(error.report().stop_reason(), Some(StopReason::Permanent));
    let source = std::error::Error::source(&error).unwrap();
    assert_eq!(
        source.downcast_ref::<StoreError>(),
        Some(&StoreError::BadQuery)
    );
    let first = error.report().history()[0];
    assert_eq!(first.class(), Class::Permanent);
    assert_eq!(first.failure(), Some(FailureKind::Other));
}

/// Session 60: a trial run classified by failure type, with its history.
#[tokio::test(start_paused = true)]
async fn retries_exhausted_keep_the_history_and_the_last_error() {
    #[derive(Debug)]
    enum Trial {
        Timeout,
        Crashed(i32),
    }
    impl std::fmt::Display for Trial {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    impl std::error::Error for Trial {}

    let p = policy().max_retries(2).build().unwrap();
    let mut runs = 0;
    let error = p
        .operation("trial.run")
        .retry(
            |attempt: Attempt| {
                runs += 1;
                assert_eq!(attempt.number(), runs);
                assert_eq!(attempt.is_retry(), runs > 1);
                let outcome: Result<(), Trial> = if runs % 2 == 1 {
                    Err(Trial::Timeout)
                } else {
                    Err(Trial::Crashed(139))
                };
                async move { outcome }
            },
            |e: &Trial| match e {
                Trial::Timeout => ErrorClass::transient().kind(FailureKind::Timeout),
                // A segfault may not happen again; a bad exit code will.
                Trial::Crashed(139) => ErrorClass::transient(),
                Trial::Crashed(_) => ErrorClass::permanent(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    let kinds: Vec<_> = error
        .report()
        .history()
        .iter()
        .map(|r| r.failure())
        .collect();
    assert_eq!(
        kinds,
        [
            Some(FailureKind::Timeout),
            Some(FailureKind::Other),
            Some(FailureKind::Timeout)
        ]
    );
    assert!(error.is_timeout(), "the last attempt timed out");
    let last = std::error::Error::source(&error).unwrap();
    assert!(matches!(last.downcast_ref::<Trial>(), Some(Trial::Timeout)));
    assert_eq!(
        error.report().to_string(),
        "3 attempts [timeout -> wait 5ms (backoff), other -> wait 10ms (backoff), timeout]"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_never_overshot() {
    let p = policy()
        .deadline(Duration::from_millis(12))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut calls = 0;
    let error = p
        .retry(
            |_| {
                calls += 1;
                async { Err::<(), _>(StoreError::Unavailable) }
            },
            classify,
        )
        .await
        .unwrap_err();
    // 5 ms, then 10 ms would end at 15 > 12: stop at once.
    assert_eq!(error.code(), "DEADLINE_EXCEEDED");
    assert_eq!(calls, 2);
    assert_eq!(started.elapsed(), Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_hangs_times_out_as_a_transient_timeout() {
    let p = policy()
        .max_retries(1)
        .attempt_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut timeouts = vec![];
    let error = p
        .retry(
            |attempt| {
                timeouts.push(attempt.timeout());
                std::future::pending::<Result<(), StoreError>>()
            },
            classify,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(started.elapsed(), Duration::from_millis(105));
    assert_eq!(timeouts, [Some(Duration::from_millis(50)); 2]);
    assert!(error.is_timeout());
    let source = std::error::Error::source(&error).unwrap();
    assert!(source.is::<http_resilience::AttemptTimedOut>());
}

/// Every run of one operation pays from one budget; another operation has
/// its own.
#[tokio::test(start_paused = true)]
async fn the_budget_is_the_operations_across_runs() {
    // 10 tokens, 5 a retry.
    let p = policy()
        .max_retries(5)
        .retry_budget(RetryBudget::builder().capacity(10).build().unwrap())
        .build()
        .unwrap();
    let failing = |calls: &mut u32| {
        *calls += 1;
        async { Err::<(), _>(StoreError::Unavailable) }
    };
    let mut calls = 0;
    let error = p
        .operation("queue.pull")
        .retry(|_| failing(&mut calls), classify)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "RETRY_BUDGET_EXHAUSTED");
    assert_eq!(calls, 3, "two retries paid, the third refused");
    // The next run of the same operation cannot retry at all.
    let mut calls = 0;
    let error = p
        .operation("queue.pull")
        .retry(|_| failing(&mut calls), classify)
        .await
        .unwrap_err();
    assert_eq!((error.code(), calls), ("RETRY_BUDGET_EXHAUSTED", 1));
    // Another operation's budget is untouched.
    let mut calls = 0;
    let error = p
        .operation("queue.push")
        .retry(|_| failing(&mut calls), classify)
        .await
        .unwrap_err();
    assert_eq!((error.code(), calls), ("RETRY_BUDGET_EXHAUSTED", 3));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_a_run_before_calling_the_operation() {
    let p = policy()
        .max_retries(0)
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(2)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    for _ in 0..2 {
        let error = p
            .operation("svc")
            .retry(
                |_| async { Err::<(), _>(StoreError::Unavailable) },
                classify,
            )
            .await
            .unwrap_err();
        assert_ne!(error.code(), "CIRCUIT_OPEN");
    }
    let mut called = false;
    let error = p
        .operation("svc")
        .retry(
            |_| {
                called = true;
                async { Ok::<_, StoreError>(()) }
            },
            classify,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "CIRCUIT_OPEN");
    assert!(!called);
    assert_eq!(error.report().attempts(), 0);
    assert_eq!(error.retry_in(), Some(Duration::from_secs(5)));
    // After the break a probe goes, and its success closes the breaker.
    tokio::time::advance(Duration::from_secs(5)).await;
    let ok = p
        .operation("svc")
        .retry(|_| async { Ok::<_, StoreError>(9) }, classify)
        .await
        .unwrap();
    assert_eq!(ok, 9);
    let again = p
        .operation("svc")
        .retry(|_| async { Ok::<_, StoreError>(10) }, classify)
        .await;
    assert_eq!(again.unwrap(), 10);
}

#[tokio::test(start_paused = true)]
async fn any_error_type_and_a_class_as_the_answer() {
    // A String error (no std::error::Error of its own) and `Class` as the
    // classifier's answer.
    let p = policy().build().unwrap();
    let mut n = 0;
    let got = p
        .retry(
            |_| {
                n += 1;
                let r = if n < 3 {
                    Err(format!("try {n}"))
                } else {
                    Ok(n)
                };
                async move { r }
            },
            |_: &String| Class::Transient,
        )
        .await
        .unwrap();
    assert_eq!(got, 3);
}

#[test]
fn a_run_is_send_when_its_parts_are() {
    fn is_send<T: Send>(_: &T) {}
    let p = RetryPolicy::default();
    let run = p.retry(|_| async { Ok::<_, StoreError>(1) }, classify);
    is_send(&run);
}

/// An error may carry the wait its service asked for: waited for, to the
/// millisecond, and recorded as `retry_after`.
#[tokio::test(start_paused = true)]
async fn a_hint_is_waited_for_and_recorded_as_retry_after() {
    use http_resilience::DelaySource;
    let p = policy().build().unwrap();
    let store = Script::new([Err(StoreError::Throttled), Ok(1)]);
    let started = Instant::now();
    let (_, report) = p
        .operation("store.poll")
        .retry_with_report(
            |_| store.call(),
            |e: &StoreError| match e {
                StoreError::Throttled => {
                    ErrorClass::transient().retry_after(Duration::from_millis(30))
                }
                other => classify(other),
            },
        )
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    let first = report.history()[0];
    assert_eq!(first.delay(), Some(Duration::from_millis(30)));
    assert_eq!(first.delay_source(), Some(DelaySource::RetryAfter));
    // A zero hint is none: the backoff.
    let store = Script::new([Err(StoreError::Throttled), Ok(1)]);
    let (_, report) = p
        .operation("store.poll")
        .retry_with_report(
            |_| store.call(),
            |_: &StoreError| ErrorClass::transient().retry_after(Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(
        report.history()[0].delay_source(),
        Some(DelaySource::Backoff)
    );
}

/// A hint above `max_retry_after` stops the run at once, or is ignored for
/// the backoff under `LongHint::UseBackoff`.
#[tokio::test(start_paused = true)]
async fn a_hint_above_max_retry_after_gives_up_or_uses_the_backoff() {
    use http_resilience::{DelaySource, LongHint};
    let long = |_: &StoreError| ErrorClass::transient().retry_after(Duration::from_secs(600));
    let p = policy()
        .max_retry_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let store = Script::new([Err(StoreError::Throttled)]);
    let started = Instant::now();
    let error = p.retry(|_| store.call(), long).await.unwrap_err();
    assert_eq!(error.code(), "RETRY_AFTER_TOO_LONG");
    assert_eq!(error.retry_in(), Some(Duration::from_secs(600)));
    assert_eq!(started.elapsed(), Duration::ZERO);
    let p = policy()
        .max_retry_after(Duration::from_secs(60))
        .on_long_hint(LongHint::UseBackoff)
        .build()
        .unwrap();
    let store = Script::new([Err(StoreError::Throttled), Ok(2)]);
    let started = Instant::now();
    let (value, report) = p
        .operation("store.poll")
        .retry_with_report(|_| store.call(), long)
        .await
        .unwrap();
    assert_eq!(value, 2);
    assert_eq!(started.elapsed(), Duration::from_millis(5));
    assert_eq!(
        report.history()[0].delay_source(),
        Some(DelaySource::Backoff)
    );
}
