//! Telemetry through both adapters. In a test binary of its own: tracing
//! caches per-callsite interest process-wide, and a thread-local subscriber
//! racing other tests' first calls could miss events.

mod support;

use support::capture::Captured;
use support::clients::{BOTH, Req, base, get, send};
use support::{Server, Step};

#[tokio::test(start_paused = true)]
async fn tracing_one_event_per_retry_and_no_secrets() {
    use tracing_subscriber::util::SubscriberInitExt;
    let captured = Captured::default();
    let writer = captured.clone();
    let _guard = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    let server = Server::start().await;
    for via in BOTH {
        let secret_req = Req {
            headers: vec![
                ("authorization", "Bearer secret-token"),
                ("cookie", "session=secret-cookie"),
                ("x-api-key", "secret-key"),
            ],
            ..get()
        };
        let path = format!("/ok/{via:?}");
        server.script(&path, vec![Step::status(200)]);
        send(
            via,
            base().build().unwrap(),
            &server.url(&path),
            &secret_req,
        )
        .await;
        let logs = captured.take();
        assert!(
            !logs.contains("http_resilience"),
            "{via:?}: nothing for a first-attempt success: {logs}"
        );

        let path = format!("/flaky/{via:?}");
        server.script(&path, vec![Step::status(503)]);
        send(
            via,
            base().max_retries(2).build().unwrap(),
            &server.url(&path),
            &secret_req,
        )
        .await;
        let logs = captured.take();
        let ours: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("http_resilience"))
            .collect();
        let retries = ours
            .iter()
            .filter(|l| l.contains("retrying request"))
            .count();
        let give_ups = ours
            .iter()
            .filter(|l| l.contains("giving up on request"))
            .count();
        assert_eq!((retries, give_ups), (2, 1), "{via:?}: {ours:#?}");
        let first = ours[0];
        for field in [
            "attempt=1",
            "delay_ms=100",
            "source=\"backoff\"",
            "reason=status 503",
            "method=GET",
            "host=\"127.0.0.1\"",
            &format!("path=\"{path}\""),
        ] {
            assert!(first.contains(field), "{via:?}: {field} missing in {first}");
        }
        assert!(ours.last().unwrap().contains("reason=\"max_retries\""));
        for secret in ["secret-token", "secret-cookie", "secret-key", "Bearer"] {
            assert!(!logs.contains(secret), "{via:?}: {secret} leaked: {logs}");
        }
    }
}
