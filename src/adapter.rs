//! What both adapters share: feeding an attempt's result to the engine and
//! turning the final decision into the caller's result. Crate-private; the
//! adapters themselves only move requests, responses and timers.

use std::error::Error as StdError;
use std::time::Instant;

use http::{Extensions, HeaderMap, StatusCode};

use crate::classify::{FailureKind, Outcome, RequestMeta};
use crate::engine::{Decision, RetryState};
use crate::error::{BoxError, Error, Last};
use crate::report::{RetryReport, StopReason};

/// A client's response type, as far as the adapters need it.
pub(crate) trait HttpResponse: Send + 'static {
    fn status(&self) -> StatusCode;
    fn headers(&self) -> &HeaderMap;
    fn extensions_mut(&mut self) -> &mut Extensions;
}

impl<B: Send + 'static> HttpResponse for http::Response<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }
    fn headers(&self) -> &HeaderMap {
        self.headers()
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

/// How many bytes of this attempt's response body the engine wants to see
/// before deciding (0 for none, or for a transport error).
pub(crate) fn body_to_inspect<R: HttpResponse>(
    engine: &RetryState,
    request: &RequestMeta<'_>,
    result: &Result<R, BoxError>,
) -> usize {
    match result {
        Ok(response) => engine.body_to_inspect(request, response.status(), response.headers()),
        Err(_) => 0,
    }
}

/// Hands one attempt's result (and the inspected start of its body, if
/// [`body_to_inspect`] asked for it) to the engine. `kind_of` maps the
/// client's transport errors.
pub(crate) fn decide<R: HttpResponse>(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    result: &Result<R, BoxError>,
    body: Option<&[u8]>,
    kind_of: impl FnOnce(&(dyn StdError + 'static)) -> FailureKind,
    now: Instant,
) -> Decision {
    match result {
        Ok(response) => engine.decide(
            request,
            &Outcome::Response {
                status: response.status(),
                headers: response.headers(),
                body,
            },
            now,
        ),
        Err(error) => {
            let error: &(dyn StdError + 'static) = &**error;
            let kind = kind_of(error);
            engine.decide(request, &Outcome::Error { kind, error }, now)
        }
    }
}

/// Turns a final (non-retry) decision into the caller's result: the
/// response with its report attached, or an [`Error`] that keeps the report
/// and the last response or error.
pub(crate) fn finish<R: HttpResponse>(
    decision: Decision,
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    result: Result<R, BoxError>,
) -> Result<R, Error> {
    let report = engine.take_report();
    match (decision, result) {
        (Decision::Return, Ok(mut response)) => {
            response.extensions_mut().insert(report);
            Ok(response)
        }
        (decision, result) => {
            let reason = match decision {
                Decision::Fail(reason) => reason,
                _ => StopReason::Permanent,
            };
            let last = match result {
                Ok(mut response) => {
                    response.extensions_mut().insert(report.clone());
                    Last::Response {
                        status: response.status(),
                        headers: response.headers().clone(),
                        response,
                    }
                }
                Err(e) => Last::Error(e),
            };
            Err(with_url(
                Error::from_stop(reason, report, last),
                engine,
                request,
            ))
        }
    }
}

/// Names the request in the error, redacted as the policy says.
fn with_url(error: Error, engine: &RetryState, request: &RequestMeta<'_>) -> Error {
    error.with_url(request.redacted_url(engine.policy().hide_paths()))
}

/// Load protection refused the next attempt before it was sent (see
/// [`RetryState::admit`]): an [`Error`] with the report so far.
pub(crate) fn refused(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    reason: StopReason,
) -> Error {
    let error = Error::from_stop::<()>(reason, engine.take_report(), Last::Nothing);
    with_url(error, engine, request)
}

/// The inner service failed to become ready (before the first attempt, or
/// before a retry): not retried, reported with what is known so far.
pub(crate) fn not_ready(report: RetryReport, error: BoxError) -> Error {
    Error::from_stop::<()>(StopReason::Permanent, report, Last::Error(error))
}

/// [`not_ready`] for a request the adapter had started.
pub(crate) fn not_ready_for(
    engine: &mut RetryState,
    request: &RequestMeta<'_>,
    error: BoxError,
) -> Error {
    let error = not_ready(engine.take_report(), error);
    with_url(error, engine, request)
}
