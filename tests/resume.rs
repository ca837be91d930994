//! Resumable response bodies against a real server that cuts, stalls or
//! mishandles ranges, through both adapters as they are: the first request
//! and every resume go through the tower layer (over hyper-util's client)
//! or the reqwest middleware, and `ResumableBody` continues the stream.

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
    NotResumable, ResumableBody, ResumeError, ResumeLimits, ResumeLog, ResumeRecord, ResumeRequest,
};
use http_resilience::{
    BoxError, Jitter, ResponseExt, RetryLayer, RetryMiddleware, RetryPolicy, RetryReport,
};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

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
