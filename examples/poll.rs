//! A poll loop over a flaky store, with `RetryPolicy::retry`: transient
//! store errors are retried with backoff, a bad query is not, and after
//! every successful poll the next failure starts again at the initial
//! delay (each poll is a run of its own).
//!
//! ```sh
//! cargo run --example poll
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http_resilience::{ErrorClass, FailureKind, Jitter, RetryPolicy};

#[derive(Debug)]
enum StoreError {
    /// The store is restarting: try again.
    Unavailable,
    /// The store took too long: try again (a timeout costs the budget more).
    Timeout,
    /// The query is wrong: trying again will not help.
    BadQuery,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable => f.write_str("store unavailable"),
            StoreError::Timeout => f.write_str("store timed out"),
            StoreError::BadQuery => f.write_str("bad query"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A store that fails on a fixed pattern: call 1, 4, 5, 8, 9, 10 fail, and
/// call 12 is a bad query.
struct FlakyStore {
    calls: AtomicU32,
}

impl FlakyStore {
    async fn poll(&self) -> Result<Vec<String>, StoreError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
        match n {
            1 | 5 | 9 => Err(StoreError::Unavailable),
            4 | 8 | 10 => Err(StoreError::Timeout),
            12 => Err(StoreError::BadQuery),
            _ => Ok(vec![format!("job-{n}")]),
        }
    }
}

fn classify(e: &StoreError) -> ErrorClass {
    match e {
        StoreError::Unavailable => ErrorClass::transient(),
        StoreError::Timeout => ErrorClass::transient().kind(FailureKind::Timeout),
        StoreError::BadQuery => ErrorClass::permanent(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), http_resilience::ConfigError> {
    let policy = RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(200))
        .jitter(Jitter::None) // fixed waits, so the output shows the reset
        .max_retries(4)
        .attempt_timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(5))
        .build()?;
    let store = FlakyStore {
        calls: AtomicU32::new(0),
    };
    for poll in 1..=7 {
        let run = policy
            .operation("store.poll")
            .retry_with_report(|_attempt| store.poll(), classify)
            .await;
        match run {
            Ok((items, report)) => {
                let waits: Vec<Duration> =
                    report.history().iter().filter_map(|a| a.delay()).collect();
                let failures: Vec<&str> = report
                    .history()
                    .iter()
                    .filter_map(|a| Some(a.failure()?.as_str()))
                    .collect();
                println!(
                    "poll {poll}: {items:?}, {} retries, failures {failures:?}, waits {waits:?}",
                    report.retries()
                );
            }
            Err(e) => println!("poll {poll}: {} ({e})", e.code()),
        }
    }
    Ok(())
}
