//! The engine's tracing events, in one place. Each is a function that
//! compiles to nothing without the `tracing` feature (the model is hyper's
//! `src/trace.rs`), so the decision code reads the same either way and the
//! events' fields are written once.
//!
//! The rules every event keeps: nothing for a request that succeeds at its
//! first attempt; one `INFO` per retry and one `WARN` when giving up; an
//! `INFO` for each load-protection wait and each server quota noted, a
//! `WARN` for each refusal; method, host, port and (unless the policy hides
//! paths) path, never a header value. An operation run by
//! [`retry`](crate::policy::RetryPolicy::retry) is named by its
//! `operation` field instead.

#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

use std::time::Duration;

#[cfg(feature = "tracing")]
use super::resume::ResumeError;
use super::resume::ResumeErrorKind;
use crate::classify::RequestMeta;
use crate::policy::RetryPolicy;
use crate::report::{RetryReport, StopReason, ThrottleReason};
use crate::retry_after::{DelaySource, QuotaHeaders};

/// A wait before an attempt that load protection imposed.
#[inline]
pub(super) fn waiting(
    request: &RequestMeta<'_>,
    reason: ThrottleReason,
    delay: Duration,
    attempt: u32,
) {
    #[cfg(feature = "tracing")]
    if is_operation(request) {
        tracing::info!(
            target: "http_resilience",
            reason = reason.as_str(),
            delay_ms = delay.as_millis() as u64,
            attempt,
            operation = request.host(),
            "waiting before attempt"
        );
    } else {
        tracing::info!(
            target: "http_resilience",
            reason = reason.as_str(),
            delay_ms = delay.as_millis() as u64,
            attempt,
            method = %request.method(),
            host = request.host(),
            port = request.port(),
            "waiting before attempt"
        );
    }
}

/// Load protection refused the next attempt before it was sent.
#[inline]
pub(super) fn refusing(request: &RequestMeta<'_>, reason: StopReason, attempts: u32) {
    #[cfg(feature = "tracing")]
    if is_operation(request) {
        tracing::warn!(
            target: "http_resilience",
            reason = reason.as_str(),
            attempts,
            operation = request.host(),
            "refusing operation"
        );
    } else {
        tracing::warn!(
            target: "http_resilience",
            reason = reason.as_str(),
            attempts,
            method = %request.method(),
            host = request.host(),
            port = request.port(),
            "refusing request"
        );
    }
}

/// A retry was decided.
#[inline]
pub(super) fn retrying(
    policy: &RetryPolicy,
    request: &RequestMeta<'_>,
    report: &RetryReport,
    delay: Duration,
    source: DelaySource,
) {
    #[cfg(feature = "tracing")]
    if is_operation(request) {
        tracing::info!(
            target: "http_resilience",
            attempt = report.attempts(),
            delay_ms = delay.as_millis() as u64,
            source = source.as_str(),
            reason = %Reason(report.last()),
            operation = request.host(),
            "retrying operation"
        );
    } else {
        tracing::info!(
            target: "http_resilience",
            attempt = report.attempts(),
            delay_ms = delay.as_millis() as u64,
            source = source.as_str(),
            reason = %Reason(report.last()),
            method = %request.method(),
            host = request.host(),
            port = request.port(),
            path = shown_path(policy, request),
            "retrying request"
        );
    }
}

/// The engine stopped for `reason`; silent for a success and a permanent
/// outcome, which the caller sees as they are.
#[inline]
pub(super) fn stopped(
    policy: &RetryPolicy,
    request: &RequestMeta<'_>,
    reason: StopReason,
    report: &RetryReport,
) {
    #[cfg(feature = "tracing")]
    if matches!(reason, StopReason::Success | StopReason::Permanent) {
        // The caller sees these as they are.
    } else if is_operation(request) {
        let last = report.last();
        tracing::warn!(
            target: "http_resilience",
            attempts = report.attempts(),
            reason = reason.as_str(),
            last_failure = last.and_then(|r| r.failure()).map(|k| k.as_str()),
            operation = request.host(),
            "giving up on operation"
        );
    } else {
        let last = report.last();
        tracing::warn!(
            target: "http_resilience",
            attempts = report.attempts(),
            reason = reason.as_str(),
            last_status = last.and_then(|r| r.status()).map(|s| s.as_u16()),
            last_failure = last.and_then(|r| r.failure()).map(|k| k.as_str()),
            method = %request.method(),
            host = request.host(),
            port = request.port(),
            path = shown_path(policy, request),
            "giving up on request"
        );
    }
}

/// A response said the request's quota is gone until `wait` from now.
#[inline]
pub(super) fn quota_held(
    request: &RequestMeta<'_>,
    which: QuotaHeaders,
    wait: Duration,
    credential: bool,
) {
    #[cfg(feature = "tracing")]
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
}

/// A quota reset too far ahead to be true, ignored.
#[inline]
pub(super) fn quota_ignored(
    request: &RequestMeta<'_>,
    which: QuotaHeaders,
    wait: Duration,
    max: Duration,
) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "http_resilience",
        reason = "server_quota",
        headers = which.as_str(),
        reset_ms = wait.as_millis() as u64,
        max_quota_reset_ms = max.as_millis() as u64,
        method = %request.method(),
        host = request.host(),
        port = request.port(),
        "server quota reset beyond max_quota_reset ignored as invalid"
    );
}

/// A response body that failed while read is resumed at `offset`.
#[inline]
pub(super) fn resuming(
    policy: &RetryPolicy,
    request: &RequestMeta<'_>,
    offset: u64,
    resume: u32,
    delay: Duration,
) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: "http_resilience",
        offset,
        resume,
        delay_ms = delay.as_millis() as u64,
        method = %request.method(),
        host = request.host(),
        port = request.port(),
        path = shown_path(policy, request),
        "resuming body"
    );
}

/// A response body that failed while read is not resumed (any more).
#[inline]
pub(super) fn resume_failed(
    policy: &RetryPolicy,
    request: &RequestMeta<'_>,
    offset: u64,
    resumes: u32,
    kind: ResumeErrorKind,
) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "http_resilience",
        offset,
        resumes,
        code = ResumeError::new(kind, offset, resumes).code(),
        method = %request.method(),
        host = request.host(),
        port = request.port(),
        path = shown_path(policy, request),
        "not resuming body"
    );
}

/// Whether `request` stands for an operation run by
/// [`retry`](crate::policy::RetryPolicy::retry): its events name the
/// operation, not a method and a host.
#[cfg(feature = "tracing")]
#[inline]
fn is_operation(request: &RequestMeta<'_>) -> bool {
    request.is_operation()
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
struct Reason<'a>(Option<&'a crate::report::AttemptRecord>);

#[cfg(feature = "tracing")]
impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.map(|r| (r.status(), r.failure())) {
            Some((Some(status), _)) => write!(f, "status {}", status.as_u16()),
            Some((None, Some(kind))) => f.write_str(kind.as_str()),
            _ => f.write_str("unknown"),
        }
    }
}
