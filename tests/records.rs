//! The JSON records (feature `serde`): the shape pinned by a snapshot,
//! made from real errors through both adapters, with no secret in them.

mod support;

use http_resilience::Error;
use http_resilience::record::{ErrorRecord, WallAnchor};
use support::clients::{BOTH, Req, Via, base, get, send};
use support::{Server, Step, fixed_now};

const MARK: &str = "sekrit";

fn with_secrets() -> Req {
    Req {
        headers: vec![
            ("authorization", "Bearer sekrit-token"),
            ("cookie", "session=sekrit-cookie"),
            ("x-api-key", "sekrit-key"),
        ],
        ..get()
    }
}

/// 503 with `Retry-After: 1`, a reset, 503: `MAX_RETRIES_EXCEEDED` after
/// two retries, through `via`.
async fn failed(via: Via, server: &Server, hide_paths: bool) -> Error {
    let path = format!("/v1/items/{via:?}?token=sekrit-query");
    server.script(
        &path,
        vec![
            Step::with(503, &[("retry-after", "1")]),
            Step::Reset,
            Step::status(503),
        ],
    );
    let url = format!("http://user:sekrit-pw@{}{path}", server.addr());
    let policy = base()
        .max_retries(2)
        .hide_paths(hide_paths)
        .build()
        .unwrap();
    let got = send(via, policy, &url, &with_secrets()).await;
    got.error.expect("an error")
}

/// The error's record: each attempt's time comes from the report's anchor,
/// the policy's wall clock (fixed here) read when the first attempt failed.
fn record(error: &Error) -> String {
    let anchor = error
        .report()
        .wall_anchor()
        .expect("a failed request is anchored");
    let first = error.report().history()[0].elapsed();
    assert_eq!(anchor, WallAnchor::new(fixed_now(), first));
    serde_json::to_string_pretty(&ErrorRecord::from(error)).unwrap()
}

/// The pinned shape (the port and the adapter's name in the path
/// replaced). A change here is a CHANGELOG entry.
const SNAPSHOT: &str = r#"{
  "code": "MAX_RETRIES_EXCEEDED",
  "message": "gave up after 2 retries; last status 503 Service Unavailable (3 attempts [503 -> wait 1s (retry_after), connection_reset -> wait 200ms (backoff), 503])",
  "url": "http://127.0.0.1:PORT/v1/items/VIA",
  "status": 503,
  "retry_in_ms": null,
  "report": {
    "attempts": 3,
    "retries": 2,
    "stop_reason": "max_retries",
    "stop_wait_ms": null,
    "total_backoff_ms": 1200.0,
    "total_throttled_ms": 0.0,
    "endpoint": null,
    "history": [
      {
        "at": "2023-11-14T22:13:20.000Z",
        "elapsed_ms": 0.0,
        "class": "transient",
        "status": 503,
        "failure": null,
        "delay_ms": 1000.0,
        "delay_source": "retry_after"
      },
      {
        "at": "2023-11-14T22:13:21.000Z",
        "elapsed_ms": 1000.0,
        "class": "transient",
        "status": null,
        "failure": "connection_reset",
        "delay_ms": 200.0,
        "delay_source": "backoff"
      },
      {
        "at": "2023-11-14T22:13:21.200Z",
        "elapsed_ms": 1200.0,
        "class": "transient",
        "status": 503,
        "failure": null,
        "delay_ms": null,
        "delay_source": null
      }
    ],
    "throttles": []
  }
}"#;

#[tokio::test(start_paused = true)]
async fn the_error_record_has_a_stable_shape_and_no_secret() {
    let server = Server::start().await;
    for via in BOTH {
        let error = failed(via, &server, false).await;
        let json = record(&error);
        assert!(
            !json.contains(MARK),
            "{via:?}: a secret in the record:\n{json}"
        );
        let port = server.addr().port().to_string();
        let json = json
            .replace(&port, "PORT")
            .replace(&format!("{via:?}"), "VIA");
        assert_eq!(
            json, SNAPSHOT,
            "{via:?}: the shape changed (a CHANGELOG entry):\n{json}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn hidden_paths_stay_out_of_the_record() {
    let server = Server::start().await;
    for via in BOTH {
        let error = failed(via, &server, true).await;
        let json = serde_json::to_string(&error).unwrap();
        assert!(!json.contains(MARK), "{via:?}: {json}");
        assert!(
            !json.contains("/v1/items"),
            "{via:?}: the path shows: {json}"
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["url"],
            format!("http://127.0.0.1:{}", server.addr().port()),
            "{via:?}"
        );
        // `Serialize for Error` is the same record, times included.
        assert_eq!(
            value["report"]["history"][1]["at"],
            "2023-11-14T22:13:21.000Z"
        );
        assert_eq!(value["report"]["total_backoff_ms"], 1200.0);
    }
}

/// Each attempt's wall-clock time, from the report itself.
#[tokio::test(start_paused = true)]
async fn every_attempt_has_its_wall_clock_time() {
    use std::time::Duration;
    let server = Server::start().await;
    for via in BOTH {
        let error = failed(via, &server, false).await;
        let report = error.report();
        let times: Vec<_> = (0..report.attempts())
            .map(|i| report.attempt_time(i as usize).expect("a time"))
            .collect();
        assert_eq!(
            times,
            [
                fixed_now(),
                fixed_now() + Duration::from_secs(1),
                fixed_now() + Duration::from_millis(1200)
            ],
            "{via:?}"
        );
        assert_eq!(report.attempt_time(3), None);
    }
}

/// A request that succeeds at its first attempt carries no report (the
/// success path reads no clock and allocates nothing for it): its record is
/// the clean one-attempt record, with no time.
#[tokio::test(start_paused = true)]
async fn a_clean_success_has_the_clean_record_without_a_time() {
    use http_resilience::record::ReportRecord;
    let server = Server::start().await;
    server.script("/ok", vec![Step::status(200)]);
    for via in BOTH {
        let got = send(via, base().build().unwrap(), &server.url("/ok"), &get()).await;
        assert_eq!(got.status, Some(200));
        assert_eq!(got.report.wall_anchor(), None, "{via:?}");
        let json = serde_json::to_value(ReportRecord::from(&got.report)).unwrap();
        assert_eq!(json["attempts"], 1);
        assert_eq!(json["stop_reason"], "success");
        assert_eq!(json["history"][0]["at"], serde_json::Value::Null);
        assert_eq!(json["history"][0]["status"], 200);
    }
}

/// A request refused before its first attempt is anchored too (its error
/// record names when), with an empty history.
#[tokio::test(start_paused = true)]
async fn a_refusal_before_any_attempt_is_anchored() {
    use std::time::Duration;
    let server = Server::start().await;
    server.script("/down", vec![Step::status(503)]);
    for via in BOTH {
        let client = support::clients::Client::new(
            via,
            support::clients::breaker_policy(1, Duration::from_secs(5)),
        );
        client.send(&server.url("/down"), &get()).await;
        let got = client.send(&server.url("/down"), &get()).await;
        let error = got.error.expect("refused");
        assert_eq!(error.code(), "CIRCUIT_OPEN");
        assert_eq!(
            error.report().wall_anchor(),
            Some(WallAnchor::new(fixed_now(), Duration::ZERO)),
            "{via:?}"
        );
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["report"]["attempts"], 0);
        assert_eq!(json["report"]["stop_reason"], "circuit_open");
        assert_eq!(json["report"]["stop_wait_ms"], 5000.0);
    }
}
