//! Metrics through the `metrics` facade (feature `metrics`), read back with
//! `metrics-util`'s debugging recorder: what both adapters record for a
//! request, against the real scripted server on loopback, under tokio's
//! paused clock. Each case installs a recorder of its own on the test's
//! thread (the runtime is current-thread, so the engine records there) and
//! builds a fresh policy (whose metric handles register with it).

mod support;

use std::time::Duration;

use http_resilience::metrics::{
    ATTEMPTS, BUDGET_TOKENS, CIRCUIT_STATE, POLICY, REFUSALS, REQUEST_RETRIES, RETRY_DELAY,
    THROTTLES, enable,
};
use http_resilience::{ErrorClass, Jitter, RateLimit, RetryBudget, RetryPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::clients::{BOTH, Client, Req, breaker_policy, get, send};
use support::{Server, Step};

/// One series: name, labels (sorted), value.
type Series = (String, Vec<(String, String)>, DebugValue);

/// Everything recorded, sorted by name and labels.
fn read(snap: &Snapshotter) -> Vec<Series> {
    let mut out: Vec<Series> = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            (key.name().to_owned(), labels, value)
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// The endpoint's labels plus `extra`, sorted.
fn labels(host: &str, port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let port = port.to_string();
    let mut v: Vec<(String, String)> = [("server.address", host), ("server.port", &port)]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

fn histogram(values: &[f64]) -> DebugValue {
    DebugValue::Histogram(values.iter().map(|v| (*v).into()).collect())
}

/// The series named `name`.
fn named<'a>(got: &'a [Series], name: &str) -> Vec<&'a Series> {
    got.iter().filter(|(n, ..)| n == name).collect()
}

/// A recorder on this thread, recording switched on.
fn recorder() -> (DebuggingRecorder, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    (recorder, snap)
}

fn policy() -> http_resilience::RetryPolicyBuilder {
    support::clients::base()
}

#[tokio::test(start_paused = true)]
async fn two_retries_record_two_delays_that_add_up_to_the_reports_backoff() {
    let server = Server::start().await;
    let port = server.addr().port();
    for via in BOTH {
        let (recorder, snap) = recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        enable();
        let path = format!("/flaky/{via:?}");
        server.script(
            &path,
            vec![Step::status(503), Step::status(503), Step::status(200)],
        );
        let got = send(via, policy().build().unwrap(), &server.url(&path), &get()).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        assert_eq!(got.report.retries(), 2);
        let all = read(&snap);
        let ours = |extra: &[(&str, &str)]| labels("127.0.0.1", port, extra);
        assert_eq!(
            named(&all, ATTEMPTS),
            [
                &(
                    ATTEMPTS.to_owned(),
                    ours(&[("outcome", "success")]),
                    DebugValue::Counter(1)
                ),
                &(
                    ATTEMPTS.to_owned(),
                    ours(&[("outcome", "transient")]),
                    DebugValue::Counter(2)
                ),
            ],
            "{via:?}"
        );
        assert_eq!(
            named(&all, REQUEST_RETRIES),
            [&(REQUEST_RETRIES.to_owned(), ours(&[]), histogram(&[2.0]))],
            "{via:?}"
        );
        let delays = named(&all, RETRY_DELAY);
        assert_eq!(
            delays,
            [&(
                RETRY_DELAY.to_owned(),
                ours(&[("source", "backoff")]),
                histogram(&[0.1, 0.2])
            )],
            "{via:?}"
        );
        let DebugValue::Histogram(values) = &delays[0].2 else {
            unreachable!()
        };
        let total: f64 = values.iter().map(|v| v.into_inner()).sum();
        assert_eq!(
            Duration::from_secs_f64(total).as_millis(),
            got.report.total_backoff().as_millis(),
            "{via:?}: the delays recorded are the report's total backoff"
        );
        // Nothing else but the budget's gauge (the default budget paid for
        // the two retries and was refunded by the success).
        let others: Vec<&Series> = all
            .iter()
            .filter(|(n, ..)| ![ATTEMPTS, REQUEST_RETRIES, RETRY_DELAY].contains(&n.as_str()))
            .collect();
        assert_eq!(
            others,
            [&(
                BUDGET_TOKENS.to_owned(),
                ours(&[]),
                DebugValue::Gauge(500.0.into())
            )],
            "{via:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_run_records_one_successful_attempt_and_nothing_else() {
    let server = Server::start().await;
    let port = server.addr().port();
    server.script("/ok", vec![Step::status(200)]);
    for via in BOTH {
        let (recorder, snap) = recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        enable();
        let got = send(via, policy().build().unwrap(), &server.url("/ok"), &get()).await;
        assert_eq!(got.status, Some(200));
        assert_eq!(
            read(&snap),
            [(
                ATTEMPTS.to_owned(),
                labels("127.0.0.1", port, &[("outcome", "success")]),
                DebugValue::Counter(1)
            )],
            "{via:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_refusal_is_counted_once() {
    let server = Server::start().await;
    let port = server.addr().port();
    server.script("/down", vec![Step::status(503)]);
    for via in BOTH {
        let (recorder, snap) = recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        enable();
        // 10 tokens, 5 a retry: two retries, the third refused.
        let p = policy()
            .max_retries(5)
            .retry_budget(RetryBudget::builder().capacity(10).build().unwrap())
            .build()
            .unwrap();
        let got = send(via, p, &server.url("/down"), &get()).await;
        assert_eq!(got.code, Some("RETRY_BUDGET_EXHAUSTED"), "{via:?}");
        let all = read(&snap);
        let ours = |extra: &[(&str, &str)]| labels("127.0.0.1", port, extra);
        assert_eq!(
            named(&all, REFUSALS),
            [&(
                REFUSALS.to_owned(),
                ours(&[("reason", "budget_exhausted")]),
                DebugValue::Counter(1)
            )],
            "{via:?}"
        );
        assert_eq!(
            named(&all, REQUEST_RETRIES),
            [&(REQUEST_RETRIES.to_owned(), ours(&[]), histogram(&[2.0]))]
        );
        assert_eq!(
            named(&all, BUDGET_TOKENS),
            [&(
                BUDGET_TOKENS.to_owned(),
                ours(&[]),
                DebugValue::Gauge(0.0.into())
            )],
            "{via:?}: the budget is empty"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_breakers_state_and_its_refusals() {
    let server = Server::start().await;
    let port = server.addr().port();
    server.script("/down", vec![Step::status(503)]);
    for via in BOTH {
        let (recorder, snap) = recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        enable();
        let before = server.count("/down");
        let client = Client::new(via, breaker_policy(2, Duration::from_secs(5)));
        let url = server.url("/down");
        client.send(&url, &get()).await;
        let gauge = |all: &[Series]| match named(all, CIRCUIT_STATE).first() {
            Some((_, labels, DebugValue::Gauge(v))) => Some((labels.clone(), v.into_inner())),
            _ => None,
        };
        let ours = labels("127.0.0.1", port, &[]);
        assert_eq!(
            gauge(&read(&snap)),
            Some((ours.clone(), 0.0)),
            "{via:?}: closed after one failure"
        );
        client.send(&url, &get()).await;
        assert_eq!(
            gauge(&read(&snap)),
            Some((ours.clone(), 2.0)),
            "{via:?}: open after two"
        );
        let got = client.send(&url, &get()).await;
        assert_eq!(got.code, Some("CIRCUIT_OPEN"), "{via:?}");
        let all = read(&snap);
        assert_eq!(
            named(&all, REFUSALS),
            [&(
                REFUSALS.to_owned(),
                labels("127.0.0.1", port, &[("reason", "circuit_open")]),
                DebugValue::Counter(1)
            )],
            "{via:?}"
        );
        // A snapshot drains the counters: this one holds what the refused
        // request added since the last read, no attempt.
        assert_eq!(
            named(&all, ATTEMPTS),
            [&(
                ATTEMPTS.to_owned(),
                labels("127.0.0.1", port, &[("outcome", "transient")]),
                DebugValue::Counter(0)
            )],
            "{via:?}: the refused request sent nothing"
        );
        assert_eq!(server.count("/down") - before, 2, "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_wait_is_a_throttle() {
    let server = Server::start().await;
    let port = server.addr().port();
    server.script("/ok", vec![Step::status(200)]);
    for via in BOTH {
        let (recorder, snap) = recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        enable();
        let limit = RateLimit::per_second(1).build().unwrap();
        let client = Client::new(via, policy().rate_limit(limit).build().unwrap());
        let url = server.url("/ok");
        client.send(&url, &get()).await;
        let got = client.send(&url, &get()).await;
        assert_eq!(got.report.throttles().len(), 1, "{via:?}");
        let all = read(&snap);
        assert_eq!(
            named(&all, THROTTLES),
            [&(
                THROTTLES.to_owned(),
                labels("127.0.0.1", port, &[("reason", "local_rate_limit")]),
                DebugValue::Counter(1)
            )],
            "{via:?}"
        );
        assert!(named(&all, REQUEST_RETRIES).is_empty(), "{via:?}: no retry");
    }
}

#[tokio::test(start_paused = true)]
async fn labels_carry_the_endpoint_and_the_policys_name_and_never_a_secret() {
    let server = Server::start().await;
    let port = server.addr().port();
    for via in BOTH {
        // The scripted server keys by path and query.
        let target = format!("/v1/sekrit-path/{via:?}?token=sekrit-query");
        server.script(&target, vec![Step::status(503), Step::status(200)]);
        let (recorder, snap) = recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        enable();
        let url = format!("http://user:sekrit-pw@127.0.0.1:{port}{target}");
        let req = Req {
            headers: vec![("authorization", "Bearer sekrit-token")],
            ..get()
        };
        let p = policy().name("billing").build().unwrap();
        let got = send(via, p, &url, &req).await;
        assert_eq!(got.status, Some(200), "{via:?}");
        let all = read(&snap);
        assert!(!all.is_empty());
        for (name, labels, _) in &all {
            let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            let allowed = [POLICY, "server.address", "server.port", "outcome", "source"];
            assert!(
                keys.iter().all(|k| allowed.contains(k)),
                "{via:?}: {name} {labels:?}"
            );
            assert!(
                labels.contains(&(POLICY.to_owned(), "billing".to_owned())),
                "{via:?}: {name} {labels:?}"
            );
            let text = format!("{labels:?}");
            for secret in ["sekrit", "user", "/v1"] {
                assert!(!text.contains(secret), "{via:?}: {secret} in {name} {text}");
            }
        }
    }
}

/// `retry` for any operation records under the operation's name, port 0.
#[tokio::test(start_paused = true)]
async fn an_operations_runs_are_recorded_under_its_name() {
    let (recorder, snap) = recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    enable();
    let p = RetryPolicy::builder()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let mut failures = 3;
    let (value, report) = p
        .operation("store.poll")
        .retry_with_report(
            |_| {
                let fail = failures > 0;
                failures -= 1;
                async move { if fail { Err("busy") } else { Ok(7) } }
            },
            |_: &&str| ErrorClass::transient(),
        )
        .await
        .unwrap();
    assert_eq!((value, report.retries()), (7, 3));
    let all = read(&snap);
    let ours = |extra: &[(&str, &str)]| labels("store.poll", 0, extra);
    assert_eq!(
        named(&all, ATTEMPTS),
        [
            &(
                ATTEMPTS.to_owned(),
                ours(&[("outcome", "success")]),
                DebugValue::Counter(1)
            ),
            &(
                ATTEMPTS.to_owned(),
                ours(&[("outcome", "transient")]),
                DebugValue::Counter(3)
            ),
        ]
    );
    assert_eq!(
        named(&all, RETRY_DELAY),
        [&(
            RETRY_DELAY.to_owned(),
            ours(&[("source", "backoff")]),
            histogram(&[0.005, 0.010, 0.020])
        )]
    );
    assert_eq!(
        named(&all, REQUEST_RETRIES),
        [&(REQUEST_RETRIES.to_owned(), ours(&[]), histogram(&[3.0]))]
    );
}
