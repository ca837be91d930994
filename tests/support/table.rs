//! The checks every behaviour table runs on one row through one adapter:
//! outcome, attempts (as the report and as the server saw them), waits and
//! their spacing on the server's (paused) clock, the last response's body,
//! and the same body and `Idempotency-Key` on every attempt.

use std::time::Duration;

use http_resilience::DelaySource;

use super::clients::{Got, Req};
use super::{Seen, Step};

/// A row's final result: a response status, or an error code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    Status(u16),
    Code(&'static str),
}

/// What a row expects.
pub struct Expected<'a> {
    pub expect: Expect,
    pub attempts: u32,
    /// Each wait in ms and where it came from.
    pub waits: &'a [(u64, DelaySource)],
    /// The server's script (to know the last response's body and which
    /// attempts hung).
    pub script: &'a [Step],
    /// The policy's attempt timeout: a hanging attempt's extra gap.
    pub attempt_timeout: Option<Duration>,
}

/// Every way `got` (and what the server `seen`) differs from `expected`.
pub fn problems(got: &Got, seen: &[Seen], req: &Req, expected: &Expected<'_>) -> Vec<String> {
    let ms = Duration::from_millis;
    let outcome = match got.code {
        Some(code) => Expect::Code(code),
        None => Expect::Status(got.status.expect("a status or a code")),
    };
    let waits: Vec<(u64, DelaySource)> = got
        .waits()
        .into_iter()
        .map(|(d, s)| (d.as_millis() as u64, s))
        .collect();
    let mut problems = vec![];
    if outcome != expected.expect {
        problems.push(format!(
            "outcome {outcome:?}, expected {:?}",
            expected.expect
        ));
    }
    if got.report.attempts() != expected.attempts {
        problems.push(format!(
            "report says {} attempts, expected {}",
            got.report.attempts(),
            expected.attempts
        ));
    }
    if seen.len() as u32 != expected.attempts {
        problems.push(format!(
            "server saw {} attempts, expected {}",
            seen.len(),
            expected.attempts
        ));
    }
    if waits != expected.waits {
        problems.push(format!("waits {waits:?}, expected {:?}", expected.waits));
    }
    let total: u64 = expected.waits.iter().map(|(ms, _)| ms).sum();
    if got.report.total_backoff() != ms(total) {
        problems.push(format!("total_backoff {:?}", got.report.total_backoff()));
    }
    // The gaps between attempts at the server are exactly the waits (plus
    // the timeout of a hanging attempt): paused clock.
    for (n, pair) in seen.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let wait = ms(expected.waits.get(n).map_or(0, |w| w.0));
        let timeout = expected
            .attempt_timeout
            .filter(|_| matches!(expected.script.get(n), Some(Step::Hang)))
            .unwrap_or_default();
        if gap != wait + timeout {
            problems.push(format!(
                "gap {n} was {gap:?}, expected {:?}",
                wait + timeout
            ));
        }
    }
    // Nothing lost: the body of the last response is readable, from the
    // response or from inside the error.
    let script = expected.script;
    let last_step = &script[(seen.len().max(1) - 1).min(script.len() - 1)];
    if let Step::Respond { body, .. } = last_step
        && got.body.as_deref() != Some(body.as_str())
    {
        problems.push(format!("body {:?}, expected {body:?}", got.body));
    }
    // The same body and Idempotency-Key arrive on every attempt.
    for s in seen {
        if s.body != req.body.as_bytes() {
            problems.push(format!(
                "attempt body {:?}",
                String::from_utf8_lossy(&s.body)
            ));
        }
        if s.header("idempotency-key") != seen[0].header("idempotency-key") {
            problems.push("Idempotency-Key changed between attempts".into());
        }
    }
    problems
}
