//! Resumable response bodies against a real server that cuts, stalls or
//! mishandles ranges, through both adapters.
//!
//! The first half: under the policy (`resume_bodies`), as a user sets it
//! up: tower through `ResumeLayer` outside `RetryLayer`, reqwest with
//! `ResumeExt::send_resumable`. Resumes then count against the policy's
//! `max_resumes`, its deadline and the retry budget, wait its backoff (or a
//! `Retry-After`), and are in the request's report.
//!
//! The second half: a `ResumableBody` made by the caller with its own
//! `ResumeLimits` and resumer (each resume request a request of its own
//! through the adapter).

#[path = "support/ranges.rs"]
mod ranges;
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::header::{IF_RANGE, RANGE};
use http::{Method, Request};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use http_resilience::resume::{
    NotResumable, ResumableBody, ResumeError, ResumeExt, ResumeLayer, ResumeLimits, ResumeLog,
    ResumeRecord, ResumeRequest,
};
use http_resilience::{
    BoxError, Jitter, ResponseExt, RetryBudget, RetryLayer, RetryMiddleware, RetryPolicy,
    RetryPolicyBuilder, RetryReport,
};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

use ranges::{Fault, RangeServer, Validation, content};
use support::clients::{BOTH, Via};

const LEN: usize = 200_000;
/// 40% of the body.
const CUT: usize = 80_000;

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_secs(1))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What the caller read.
struct Read {
    bytes: Vec<u8>,
    error: Option<BoxError>,
    log: ResumeLog,
    not_resumable: Option<NotResumable>,
    report: RetryReport,
    elapsed: Duration,
}

impl Read {
    fn resume_error(&self) -> &ResumeError {
        self.error
            .as_ref()
            .and_then(|e| e.downcast_ref::<ResumeError>())
            .unwrap_or_else(|| panic!("a ResumeError, got {:?}", self.error))
    }
    fn records(&self) -> Vec<ResumeRecord> {
        self.log.records()
    }
}

async fn drain<B>(mut body: B) -> (Vec<u8>, Option<BoxError>)
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) => return (bytes, Some(e)),
        }
    }
    (bytes, None)
}

/// GETs `url` through `via`, wrapping the response in a `ResumableBody`
/// whose resumes go through the same adapter, and reads it all.
async fn fetch(via: Via, url: &str, limits: ResumeLimits) -> Read {
    let start = Instant::now();
    let url = url.to_string();
    let mut read = match via {
        Via::Tower => {
            let client = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let svc = RetryLayer::new(policy()).layer(client);
            let request = Request::get(&url).body(Empty::new()).unwrap();
            let response = svc.clone().oneshot(request).await.expect("a response");
            let report = response.retry_report().into_owned();
            let resumer = move |resume: ResumeRequest| {
                let svc = svc.clone();
                let mut request = Request::get(&url).body(Empty::new()).unwrap();
                resume.apply(request.headers_mut());
                async move { svc.oneshot(request).await.map_err(BoxError::from) }
            };
            let response = ResumableBody::wrap(&Method::GET, response, resumer, limits);
            let body = response.into_body();
            let (log, not_resumable) = (body.log(), body.not_resumable());
            let (bytes, error) = drain(body).await;
            Read {
                bytes,
                error,
                log,
                not_resumable,
                report,
                elapsed: Duration::ZERO,
            }
        }
        Via::Reqwest => {
            let client = reqwest_middleware::ClientBuilder::new(
                reqwest::Client::builder().no_proxy().build().unwrap(),
            )
            .with(RetryMiddleware::new(policy()))
            .build();
            let response = client.get(&url).send().await.expect("a response");
            let report = response.retry_report().into_owned();
            let resumer = move |resume: ResumeRequest| {
                let request = client
                    .get(&url)
                    .header(RANGE, resume.range())
                    .header(IF_RANGE, resume.if_range());
                async move {
                    let response = request
                        .send()
                        .await
                        .map_err(http_resilience::middleware::into_box_error)?;
                    Ok(http::Response::<reqwest::Body>::from(response))
                }
            };
            let response = http::Response::<reqwest::Body>::from(response);
            let response = ResumableBody::wrap(&Method::GET, response, resumer, limits);
            let body = response.into_body();
            let (log, not_resumable) = (body.log(), body.not_resumable());
            let (bytes, error) = drain(body).await;
            Read {
                bytes,
                error,
                log,
                not_resumable,
                report,
                elapsed: Duration::ZERO,
            }
        }
    };
    read.elapsed = start.elapsed();
    read
}

/// A deterministic policy that resumes bodies: no jitter, 100 ms doubling.
fn resuming() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_secs(1))
        .jitter(Jitter::None)
        .resume_bodies(true)
}

/// What the caller read of a body resumed under the policy.
struct Resumed {
    bytes: Vec<u8>,
    /// The error that ended the body, if one did (reqwest wraps it).
    error: Option<BoxError>,
    /// The log from the response's extensions.
    log: Option<ResumeLog>,
    elapsed: Duration,
}

impl Resumed {
    fn resume_error(&self) -> &ResumeError {
        let mut current: Option<&(dyn std::error::Error + 'static)> = self
            .error
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<ResumeError>() {
                return found;
            }
            current = e.source();
        }
        panic!("a ResumeError, got {:?}", self.error)
    }
    fn log(&self) -> &ResumeLog {
        self.log
            .as_ref()
            .expect("a ResumeLog in the response's extensions")
    }
    fn report(&self) -> RetryReport {
        self.log().report().expect("the request's report")
    }
}

/// GETs `url` through `via` under `policy`, as a user sets it up, and
/// reads the body to its end.
async fn get_resumable(via: Via, url: &str, policy: RetryPolicy) -> Resumed {
    let start = Instant::now();
    let mut read = match via {
        Via::Tower => {
            let client = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let svc = ServiceBuilder::new()
                .layer(ResumeLayer::new())
                .layer(RetryLayer::new(policy))
                .service(client);
            let request = Request::get(url).body(Empty::new()).unwrap();
            let response = svc.oneshot(request).await.expect("a response");
            let log = response.extensions().get::<ResumeLog>().cloned();
            let (bytes, error) = drain(response.into_body()).await;
            Resumed {
                bytes,
                error,
                log,
                elapsed: Duration::ZERO,
            }
        }
        Via::Reqwest => {
            let client = reqwest_middleware::ClientBuilder::new(
                reqwest::Client::builder().no_proxy().build().unwrap(),
            )
            .with(RetryMiddleware::new(policy))
            .build();
            let mut response = client.get(url).send_resumable().await.expect("a response");
            let log = response.extensions().get::<ResumeLog>().cloned();
            let mut bytes = Vec::new();
            let error = loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                    Ok(None) => break None,
                    Err(e) => break Some(BoxError::from(e)),
                }
            };
            Resumed {
                bytes,
                error,
                log,
                elapsed: Duration::ZERO,
            }
        }
    };
    read.elapsed = start.elapsed();
    read
}

#[tokio::test(start_paused = true)]
async fn under_the_policy_a_body_cut_at_40_percent_resumes_where_the_caller_stopped() {
    let original = content(LEN, 3);
    for via in BOTH {
        let server =
            RangeServer::start(original.clone(), vec![Fault::CutAfter(CUT), Fault::Honest]).await;
        let read = get_resumable(via, &server.url("/file"), resuming().build().unwrap()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        let records = read.log().records();
        assert_eq!(records.len(), 1, "{via:?}: one resume");
        assert_eq!(records[0].offset(), CUT as u64, "{via:?}");
        assert_eq!(records[0].status(), Some(http::StatusCode::PARTIAL_CONTENT));
        assert_eq!(records[0].fetched(), (LEN - CUT) as u64, "{via:?}");
        assert_eq!(records[0].waited(), Duration::from_millis(100), "{via:?}");
        // The request's report: the first attempt, the resume's.
        let report = read.report();
        assert_eq!(
            report.to_string(),
            "2 attempts [200 -> wait 100ms (backoff), 206]; resumed at byte 80000 (120000 bytes)",
            "{via:?}"
        );
        assert_eq!(report.resumes(), &records[..], "{via:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "{via:?}");
        assert_eq!(seen[0].range, None);
        assert_eq!(seen[0].written, CUT);
        assert_eq!(
            seen[0].accept_encoding.as_deref(),
            Some("identity"),
            "{via:?}"
        );
        assert_eq!(seen[1].range.as_deref(), Some("bytes=80000-"), "{via:?}");
        assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""), "{via:?}");
        assert_eq!(
            read.elapsed,
            Duration::from_millis(100),
            "{via:?}: the backoff"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn under_the_policy_bad_servers_fail_with_their_own_code_and_never_corrupt_bytes() {
    let original = content(LEN, 5);
    let cases = [
        (Fault::Changed, "RESUME_VALIDATOR_CHANGED"),
        (Fault::WrongStart(0), "RESUME_WRONG_START"),
        (Fault::WrongStart(CUT as u64 + 10), "RESUME_WRONG_START"),
        (Fault::WeakTag, "RESUME_WEAK_VALIDATOR"),
        (Fault::ImpossibleRange, "RESUME_INVALID_RANGE"),
        (Fault::WrongTotal(LEN as u64 * 2), "RESUME_LENGTH_CHANGED"),
        (Fault::Status(404), "RESUME_UNEXPECTED_STATUS"),
    ];
    for via in BOTH {
        for (fault, code) in &cases {
            let server =
                RangeServer::start(original.clone(), vec![Fault::CutAfter(CUT), fault.clone()])
                    .await;
            let read = get_resumable(via, &server.url("/file"), resuming().build().unwrap()).await;
            let error = read.resume_error();
            assert_eq!(error.code(), *code, "{via:?} {fault:?}: {error}");
            assert_eq!(error.offset(), CUT as u64, "{via:?} {fault:?}");
            assert_eq!(read.bytes[..], original[..CUT], "{via:?} {fault:?}");
            let report = error.report().expect("the request's report");
            assert_eq!(report.attempts(), 2, "{via:?} {fault:?}: {report}");
            assert_eq!(report.resumes().len(), 1, "{via:?} {fault:?}");
            assert_eq!(
                server.seen().len(),
                2,
                "{via:?} {fault:?}: no further request"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn under_the_policy_resumes_count_against_max_resumes() {
    let original = content(LEN, 7);
    let cut = 30_000;
    for via in BOTH {
        let server = RangeServer::start(original.clone(), vec![Fault::CutAfter(cut)]).await;
        let policy = resuming().max_resumes(2).build().unwrap();
        let read = get_resumable(via, &server.url("/file"), policy).await;
        let error = read.resume_error();
        assert_eq!(error.code(), "RESUME_LIMIT_EXCEEDED", "{via:?}");
        assert_eq!(error.resumes(), 2);
        assert_eq!(error.offset(), 3 * cut as u64);
        assert_eq!(read.bytes[..], original[..3 * cut], "{via:?}");
        let offsets: Vec<u64> = read
            .log()
            .records()
            .iter()
            .map(ResumeRecord::offset)
            .collect();
        assert_eq!(offsets, [cut as u64, 2 * cut as u64], "{via:?}");
        // The waits: the policy's backoff, 100 ms then 200 ms.
        assert_eq!(read.elapsed, Duration::from_millis(300), "{via:?}");
    }
}

/// A resume pays the retry budget like a retry: with tokens for one, the
/// second resume (after the first was answered with a 503) cannot be paid.
#[tokio::test(start_paused = true)]
async fn under_the_policy_resumes_pay_the_retry_budget() {
    let original = content(LEN, 11);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::CutAfter(CUT), Fault::Status(503)],
        )
        .await;
        let budget = RetryBudget::builder()
            .capacity(5)
            .retry_cost(5)
            .timeout_cost(5)
            .build()
            .unwrap();
        let policy = resuming().retry_budget(budget).build().unwrap();
        let read = get_resumable(via, &server.url("/file"), policy).await;
        let error = read.resume_error();
        assert_eq!(error.code(), "RESUME_BUDGET_EXHAUSTED", "{via:?}: {error}");
        assert_eq!(error.resumes(), 1, "{via:?}");
        assert_eq!(read.bytes[..], original[..CUT], "{via:?}");
        assert_eq!(server.seen().len(), 2, "{via:?}: one range request");
    }
}

#[tokio::test(start_paused = true)]
async fn under_the_policy_resumes_respect_the_deadline() {
    let original = content(LEN, 13);
    let cut = 30_000;
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::CutAfter(cut), Fault::CutAfter(cut), Fault::Honest],
        )
        .await;
        // The first resume waits 100 ms; the second would wait 200 ms more,
        // past the deadline.
        let policy = resuming()
            .deadline(Duration::from_millis(250))
            .build()
            .unwrap();
        let read = get_resumable(via, &server.url("/file"), policy).await;
        let error = read.resume_error();
        assert_eq!(error.code(), "RESUME_DEADLINE_EXCEEDED", "{via:?}");
        assert_eq!(read.bytes[..], original[..2 * cut], "{via:?}");
        assert_eq!(server.seen().len(), 2, "{via:?}");
        assert_eq!(read.elapsed, Duration::from_millis(100), "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn under_the_policy_an_idle_body_resumes_after_exactly_the_timeout() {
    let original = content(LEN, 17);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::StallAfter(CUT), Fault::Honest],
        )
        .await;
        let policy = resuming()
            .body_idle_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let read = get_resumable(via, &server.url("/file"), policy).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        assert_eq!(
            read.elapsed,
            Duration::from_secs(10) + Duration::from_millis(100),
            "{via:?}: the idle timeout, then the backoff"
        );
        assert_eq!(read.log().records()[0].offset(), CUT as u64);
        assert_eq!(server.seen()[1].range.as_deref(), Some("bytes=80000-"));
    }
}

/// A `503` with `Retry-After` on the range request is one more resume,
/// after the server's wait.
#[tokio::test(start_paused = true)]
async fn under_the_policy_a_503_on_the_range_request_waits_its_retry_after() {
    let original = content(LEN, 19);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![
                Fault::CutAfter(CUT),
                Fault::Unavailable { retry_after: 2 },
                Fault::Honest,
            ],
        )
        .await;
        let read = get_resumable(via, &server.url("/file"), resuming().build().unwrap()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        let waits: Vec<Duration> = read
            .log()
            .records()
            .iter()
            .map(ResumeRecord::waited)
            .collect();
        assert_eq!(
            waits,
            [Duration::from_millis(100), Duration::from_secs(2)],
            "{via:?}"
        );
        assert_eq!(
            read.report().to_string(),
            "3 attempts [200 -> wait 100ms (backoff), 503 -> wait 2s (retry_after), 206]; \
             resumed at byte 80000 (0 bytes), at byte 80000 (120000 bytes)",
            "{via:?}"
        );
        let ranges: Vec<Option<String>> = server.seen().into_iter().map(|s| s.range).collect();
        assert_eq!(ranges[1], ranges[2], "{via:?}: the same range again");
        assert_eq!(read.elapsed, Duration::from_millis(2100), "{via:?}");
    }
}

/// Without `resume_bodies` (and without a strong validator), nothing is
/// resumed, whatever the adapter's setup: the cut reaches the caller as the
/// transport reported it.
#[tokio::test(start_paused = true)]
async fn under_the_policy_nothing_is_resumed_when_it_may_not_be() {
    let original = content(LEN, 23);
    let weak = Validation::ETag {
        tag: "v1".into(),
        weak: true,
    };
    let cases = [
        (
            "resume_bodies off",
            Validation::ETag {
                tag: "v1".into(),
                weak: false,
            },
            false,
        ),
        ("a weak ETag", weak, true),
        ("no validator", Validation::None, true),
    ];
    for via in BOTH {
        for (name, validation, on) in &cases {
            let server = RangeServer::with(
                original.clone(),
                validation.clone(),
                true,
                vec![Fault::CutAfter(CUT), Fault::Honest],
            )
            .await;
            let policy = resuming().resume_bodies(*on).build().unwrap();
            let read = get_resumable(via, &server.url("/file"), policy).await;
            let error = read.error.as_ref().expect("the cut is an error");
            assert!(
                format!("{error:?}").find("ResumeError").is_none(),
                "{via:?} {name}: {error:?}"
            );
            assert_eq!(read.bytes[..], original[..CUT], "{via:?} {name}");
            assert!(read.log.is_none(), "{via:?} {name}: no log");
            assert_eq!(server.seen().len(), 1, "{via:?} {name}: no range request");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_at_40_percent_resumes_where_the_caller_stopped() {
    let original = content(LEN, 7);
    for via in BOTH {
        let server =
            RangeServer::start(original.clone(), vec![Fault::CutAfter(CUT), Fault::Honest]).await;
        let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        assert_eq!(read.report.attempts(), 1, "{via:?}");
        let records = read.records();
        assert_eq!(records.len(), 1, "{via:?}: one resume");
        assert_eq!(records[0].offset(), CUT as u64, "{via:?}");
        assert_eq!(records[0].status(), Some(http::StatusCode::PARTIAL_CONTENT));
        assert_eq!(records[0].fetched(), (LEN - CUT) as u64, "{via:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "{via:?}");
        assert_eq!(seen[0].range, None);
        assert_eq!(seen[0].written, CUT);
        assert_eq!(seen[1].range.as_deref(), Some("bytes=80000-"), "{via:?}");
        assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""), "{via:?}");
        assert_eq!(
            read.elapsed,
            Duration::ZERO,
            "{via:?}: no wait before a resume"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bad_servers_fail_with_their_own_code_and_never_corrupt_bytes() {
    let original = content(LEN, 11);
    let cases = [
        (Fault::Changed, "RESUME_VALIDATOR_CHANGED"),
        (Fault::WrongStart(0), "RESUME_WRONG_START"),
        (Fault::WrongStart(CUT as u64 + 10), "RESUME_WRONG_START"),
        (Fault::WeakTag, "RESUME_WEAK_VALIDATOR"),
        (Fault::ImpossibleRange, "RESUME_INVALID_RANGE"),
        (Fault::WrongTotal(LEN as u64 * 2), "RESUME_LENGTH_CHANGED"),
        (Fault::Status(404), "RESUME_UNEXPECTED_STATUS"),
    ];
    for via in BOTH {
        for (fault, code) in &cases {
            let server =
                RangeServer::start(original.clone(), vec![Fault::CutAfter(CUT), fault.clone()])
                    .await;
            let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
            let error = read.resume_error();
            assert_eq!(error.code(), *code, "{via:?} {fault:?}: {error}");
            assert_eq!(error.offset(), CUT as u64, "{via:?} {fault:?}");
            // Exactly the bytes before the cut, never one from the bad answer.
            assert_eq!(read.bytes.len(), CUT, "{via:?} {fault:?}");
            assert_eq!(read.bytes[..], original[..CUT], "{via:?} {fault:?}");
            // The failure that asked for the resume is the error's source.
            assert!(
                std::error::Error::source(error).is_some(),
                "{via:?} {fault:?}"
            );
            assert_eq!(
                server.seen().len(),
                2,
                "{via:?} {fault:?}: no further request"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ignores_the_range_is_skipped_to_the_offset() {
    let original = content(LEN, 13);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::CutAfter(CUT), Fault::IgnoreRange],
        )
        .await;
        let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        let records = read.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].status(), Some(http::StatusCode::OK));
        assert_eq!(records[0].skipped(), CUT as u64, "{via:?}");
        assert_eq!(records[0].fetched(), LEN as u64, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_strong_last_modified_resumes_with_the_date() {
    let original = content(LEN, 17);
    for via in BOTH {
        let server = RangeServer::with(
            original.clone(),
            Validation::LastModified,
            true,
            vec![Fault::CutAfter(CUT), Fault::Honest],
        )
        .await;
        let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        assert_eq!(
            server.seen()[1].if_range.as_deref(),
            Some(ranges::LAST_MODIFIED)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_strong_validator_or_byte_ranges_nothing_is_resumed() {
    let original = content(LEN, 19);
    let cases = [
        (
            Validation::ETag {
                tag: "v1".into(),
                weak: true,
            },
            true,
            NotResumable::WeakValidator,
        ),
        (Validation::None, true, NotResumable::NoValidator),
        (
            Validation::ETag {
                tag: "v1".into(),
                weak: false,
            },
            false,
            NotResumable::NoRanges,
        ),
    ];
    for via in BOTH {
        for (validation, ranges, why) in &cases {
            let server = RangeServer::with(
                original.clone(),
                validation.clone(),
                *ranges,
                vec![Fault::CutAfter(CUT), Fault::Honest],
            )
            .await;
            let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
            assert_eq!(read.not_resumable, Some(*why), "{via:?}");
            // The cut reaches the caller as the transport reported it.
            let error = read.error.as_ref().expect("the cut is an error");
            assert!(error.downcast_ref::<ResumeError>().is_none(), "{via:?}");
            assert_eq!(read.bytes[..], original[..CUT], "{via:?}");
            assert!(read.log.is_empty());
            assert_eq!(server.seen().len(), 1, "{via:?} {why:?}: no range request");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_resumes_after_the_idle_timeout() {
    let original = content(LEN, 23);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::StallAfter(CUT), Fault::Honest],
        )
        .await;
        let limits = ResumeLimits::default().idle_timeout(Duration::from_secs(10));
        let read = fetch(via, &server.url("/file"), limits).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        assert_eq!(read.elapsed, Duration::from_secs(10), "{via:?}");
        assert_eq!(read.records()[0].offset(), CUT as u64);
        assert_eq!(server.seen()[1].range.as_deref(), Some("bytes=80000-"));
    }
}

#[tokio::test(start_paused = true)]
async fn resumes_are_limited_and_the_limit_is_a_typed_error() {
    let original = content(LEN, 29);
    let cut = 30_000;
    for via in BOTH {
        let server = RangeServer::start(original.clone(), vec![Fault::CutAfter(cut)]).await;
        let limits = ResumeLimits::default().max_resumes(2);
        let read = fetch(via, &server.url("/file"), limits).await;
        let error = read.resume_error();
        assert_eq!(error.code(), "RESUME_LIMIT_EXCEEDED", "{via:?}");
        assert_eq!(error.resumes(), 2);
        assert_eq!(error.offset(), 3 * cut as u64);
        assert_eq!(read.bytes[..], original[..3 * cut], "{via:?}");
        let offsets: Vec<u64> = read.records().iter().map(ResumeRecord::offset).collect();
        assert_eq!(offsets, [cut as u64, 2 * cut as u64], "{via:?}");
        let ranges: Vec<Option<String>> = server.seen().into_iter().map(|s| s.range).collect();
        assert_eq!(
            ranges,
            [
                None,
                Some("bytes=30000-".into()),
                Some("bytes=60000-".into())
            ],
            "{via:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn resumes_wait_their_backoff_and_respect_the_deadline() {
    let original = content(LEN, 31);
    let cut = 30_000;
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::CutAfter(cut), Fault::CutAfter(cut), Fault::Honest],
        )
        .await;
        let limits = ResumeLimits::default().backoff(policy().backoff());
        let read = fetch(via, &server.url("/file"), limits).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original));
        let waits: Vec<Duration> = read.records().iter().map(ResumeRecord::waited).collect();
        assert_eq!(
            waits,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(read.elapsed, Duration::from_millis(300), "{via:?}");

        // A deadline the next wait would cross: no resume at all.
        let server =
            RangeServer::start(original.clone(), vec![Fault::CutAfter(cut), Fault::Honest]).await;
        let limits = ResumeLimits::default()
            .backoff(policy().backoff())
            .deadline(Instant::now() + Duration::from_millis(50));
        let read = fetch(via, &server.url("/file"), limits).await;
        assert_eq!(
            read.resume_error().code(),
            "RESUME_DEADLINE_EXCEEDED",
            "{via:?}"
        );
        assert_eq!(read.bytes[..], original[..cut]);
        assert_eq!(server.seen().len(), 1, "{via:?}");
    }
}

/// The resume request goes through the adapter like any request: a 503 on
/// it is retried by the adapter's policy (after its 100 ms backoff), and
/// the body still continues at the right byte.
#[tokio::test(start_paused = true)]
async fn a_503_on_the_range_request_is_retried_by_the_adapter() {
    let original = content(LEN, 37);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::CutAfter(CUT), Fault::Status(503), Fault::Honest],
        )
        .await;
        let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original));
        assert_eq!(
            read.records().len(),
            1,
            "{via:?}: one resume, retried inside"
        );
        assert_eq!(read.elapsed, Duration::from_millis(100), "{via:?}");
        let ranges: Vec<Option<String>> = server.seen().into_iter().map(|s| s.range).collect();
        assert_eq!(
            ranges[1], ranges[2],
            "{via:?}: the retry asks for the same range"
        );
    }
}

/// A reset (RST) may lose bytes the server wrote: the resume asks for what
/// the caller has read, not for what the server sent.
#[tokio::test(start_paused = true)]
async fn a_reset_resumes_at_what_the_caller_read() {
    let original = content(LEN, 41);
    for via in BOTH {
        let server = RangeServer::start(
            original.clone(),
            vec![Fault::ResetAfter(CUT), Fault::Honest],
        )
        .await;
        let read = fetch(via, &server.url("/file"), ResumeLimits::default()).await;
        assert!(read.error.is_none(), "{via:?}: {:?}", read.error);
        assert_eq!(digest(&read.bytes), digest(&original), "{via:?}");
        let records = read.records();
        assert_eq!(records.len(), 1, "{via:?}");
        let offset = records[0].offset();
        assert!(offset <= CUT as u64, "{via:?}: {offset}");
        let asked = format!("bytes={offset}-");
        assert_eq!(
            server.seen()[1].range.as_deref(),
            Some(asked.as_str()),
            "{via:?}"
        );
    }
}
