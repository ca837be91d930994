//! Callers keep the checks they already wrote: with the middleware (or the
//! layer) installed, the crate's `Error` answers `is_timeout()`,
//! `is_connect()` and `url()` as `reqwest::Error` did, through both
//! adapters; and once an SDK has boxed the middleware's error, the crate's
//! error can still be found in it.

mod support;

use std::time::Duration;

use http_resilience::Error;
use support::clients::{BOTH, base, get, send};
use support::{Server, Step, refused_addr};

/// One failure and what a caller's checks should say about it.
struct Case {
    name: &'static str,
    step: Option<Step>,
    policy: fn() -> http_resilience::RetryPolicyBuilder,
    code: &'static str,
    is_timeout: bool,
    is_connect: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "refused",
            step: None,
            policy: || base().max_retries(1),
            code: "MAX_RETRIES_EXCEEDED",
            is_timeout: false,
            is_connect: true,
        },
        Case {
            name: "attempt timeout",
            step: Some(Step::Hang),
            policy: || {
                base()
                    .max_retries(1)
                    .attempt_timeout(Duration::from_secs(1))
            },
            code: "MAX_RETRIES_EXCEEDED",
            is_timeout: true,
            is_connect: false,
        },
        Case {
            name: "deadline",
            step: Some(Step::Hang),
            policy: || base().deadline(Duration::from_secs(2)),
            code: "DEADLINE_EXCEEDED",
            is_timeout: true,
            is_connect: false,
        },
        Case {
            name: "reset",
            step: Some(Step::Reset),
            policy: || base().max_retries(1),
            code: "MAX_RETRIES_EXCEEDED",
            is_timeout: false,
            is_connect: false,
        },
        Case {
            name: "503",
            step: Some(Step::status(503)),
            policy: || base().max_retries(1),
            code: "MAX_RETRIES_EXCEEDED",
            is_timeout: false,
            is_connect: false,
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn the_error_answers_is_timeout_is_connect_and_url() {
    let server = Server::start().await;
    let refused = refused_addr().await;
    let mut failures = vec![];
    for case in cases() {
        for via in BOTH {
            let path = format!("/checks/{}/{via:?}", case.name.replace(' ', "-"));
            let url = match &case.step {
                Some(step) => {
                    server.script(&path, vec![step.clone()]);
                    server.url(&path)
                }
                None => format!("http://{refused}{path}"),
            };
            let got = send(via, (case.policy)().build().unwrap(), &url, &get()).await;
            let e = got.error.as_ref().expect("an error");
            let label = format!("{} via {via:?}", case.name);
            if e.code() != case.code {
                failures.push(format!("{label}: code {}", e.code()));
            }
            if e.is_timeout() != case.is_timeout {
                failures.push(format!("{label}: is_timeout {}", e.is_timeout()));
            }
            if e.is_connect() != case.is_connect {
                failures.push(format!("{label}: is_connect {}", e.is_connect()));
            }
            if e.url() != Some(url.as_str()) {
                failures.push(format!("{label}: url {:?}, expected {url}", e.url()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// reqwest's own client timeout (`ClientBuilder::timeout`) is a timeout
/// too, as it was before the middleware.
#[tokio::test(start_paused = true)]
async fn reqwests_own_timeout_is_a_timeout() {
    let server = Server::start().await;
    server.script("/own-timeout", vec![Step::Hang]);
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .with(http_resilience::RetryMiddleware::new(
        base().max_retries(1).build().unwrap(),
    ))
    .build();
    let e = client
        .get(server.url("/own-timeout"))
        .send()
        .await
        .map_err(|e| Error::from_middleware(e).expect("the crate's error"))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(!e.is_connect(), "{e}");
    assert_eq!(server.seen("/own-timeout").len(), 2);
}

/// SDKs built on reqwest-middleware turn its error into a boxed error with
/// `.into()`: `Error::find` still finds the crate's error in it, and
/// `into_box_error` makes a box that downcasts.
#[tokio::test(start_paused = true)]
async fn a_boxed_middleware_error_still_yields_the_crates_error() {
    let server = Server::start().await;
    server.script("/boxed", vec![Step::status(503)]);
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(http_resilience::RetryMiddleware::new(
        base().max_retries(1).build().unwrap(),
    ))
    .build();

    // As SDKs do it: a plain `.into()`.
    let boxed: Box<dyn std::error::Error + Send + Sync> = client
        .get(server.url("/boxed"))
        .send()
        .await
        .unwrap_err()
        .into();
    assert!(
        boxed.downcast_ref::<Error>().is_none(),
        "a plain box hides the crate's error"
    );
    let found = Error::find(&*boxed).expect("found through the box");
    assert_eq!(found.code(), "MAX_RETRIES_EXCEEDED");
    assert_eq!(found.status().map(|s| s.as_u16()), Some(503));

    // Deeper: wrapped again by an SDK error type whose source is the box.
    #[derive(Debug)]
    struct SdkError(Box<dyn std::error::Error + Send + Sync>);
    impl std::fmt::Display for SdkError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("sdk request failed")
        }
    }
    impl std::error::Error for SdkError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }
    let sdk = SdkError(boxed);
    assert_eq!(Error::find(&sdk).unwrap().report().attempts(), 2);

    // The documented conversion: a box that downcasts.
    let e = client.get(server.url("/boxed")).send().await.unwrap_err();
    let boxed = http_resilience::middleware::into_box_error(e);
    let ours = boxed.downcast::<Error>().expect("downcasts");
    assert_eq!(ours.code(), "MAX_RETRIES_EXCEEDED");

    // A failure that is not the crate's is boxed as it is.
    let plain = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
    let e = plain.get("http://[::1]:0/").send().await.unwrap_err();
    let boxed = http_resilience::middleware::into_box_error(e);
    assert!(boxed.downcast_ref::<Error>().is_none());
    assert!(Error::find(&*boxed).is_none());
}
