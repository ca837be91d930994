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

/// The record as the wiring will make it: the wall clock (the policy's,
/// fixed here) read when the first attempt failed.
fn record(error: &Error) -> String {
    let first = error.report().history()[0].elapsed();
    let record = ErrorRecord::with_anchor(error, Some(WallAnchor::new(fixed_now(), first)));
    serde_json::to_string_pretty(&record).unwrap()
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
        // Without an anchor, no time: `at` is null, the key still there.
        assert_eq!(value["report"]["history"][0]["at"], serde_json::Value::Null);
        assert_eq!(value["report"]["total_backoff_ms"], 1200.0);
    }
}
