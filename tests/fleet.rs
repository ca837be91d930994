//! Eight real processes, one loopback HTTP server, one real Redis: what a
//! fleet shares through `RedisStore`, measured at the server, with every
//! request sent through the crate's adapters (the engine consulting the
//! store): half the fleet through the reqwest middleware, half through the
//! tower layer over hyper-util's client.
//!
//! Each scenario re-runs this test binary eight times as a worker
//! (`fleet_worker`, an ignored test that runs only with `FLEET_WORKER`
//! set), all against one `FleetServer` (`tests/support/fleet.rs`) and one
//! `redis-server` (`tests/support/redis.rs`); the scenarios take turns (a
//! lock), so that 2 cores run 8 workers at a time, not 32. A worker builds
//! a `RetryPolicy` whose state store is the `RedisStore` and sends through
//! `RetryMiddleware` or `RetryLayer` (`support::clients`, `FLEET_VIA`).
//!
//! - **shared limit**: 20 a second, burst 5, each worker offering 100 a
//!   second for 5 s: the server sees at most `burst + rate × span` (plus 2:
//!   100 ms of arrival jitter) and at least 90% of it;
//! - **quota hold**: one worker is told `token-a`'s quota is gone for 3 s:
//!   no request of `token-a` reaches the server until the reset but those
//!   already on their way (within 50 ms of the announcement), while
//!   `token-b`'s keep flowing;
//! - **outage**: every request fails with 503, 3 retries each: with the
//!   shared budget the server sees 100 retries for the fleet (at most 1.2
//!   times the requests sent), against 100 per worker with local budgets;
//!   with a mixed fleet and with each adapter alone;
//! - **Redis killed**: killed 3 s into a 9 s run under the shared limit,
//!   restarted at 6 s: every worker goes on under its share (no request
//!   waits on the store longer than its call timeout), and then returns to
//!   the shared limit without a restart.

mod support;

#[path = "support/fleet.rs"]
mod fleet_support;
#[path = "support/redis.rs"]
mod redis_support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_support::{FleetServer, wall_ms};
use http_resilience::store::RedisStore;
use http_resilience::{Jitter, RateLimit, RetryPolicy, ThrottleReason};
use redis_support::RedisServer;
use support::clients::{Client, Via, get};

const WORKERS: usize = 8;
const RATE: u32 = 20;
const BURST: u32 = 5;

/// The scenarios take turns.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------
// The worker.

struct Config {
    mode: String,
    via: Via,
    redis: String,
    http: String,
    prefix: String,
    /// Seconds to run for; for `outage`, requests to send.
    amount: u64,
    shared_budget: bool,
    /// The store's call timeout.
    call_timeout: Duration,
}

impl Config {
    fn from_env() -> Option<Config> {
        let var = |k: &str| std::env::var(k).ok();
        Some(Config {
            mode: var("FLEET_WORKER")?,
            via: match var("FLEET_VIA")?.as_str() {
                "tower" => Via::Tower,
                _ => Via::Reqwest,
            },
            redis: var("FLEET_REDIS")?,
            http: var("FLEET_HTTP")?,
            prefix: var("FLEET_PREFIX")?,
            amount: var("FLEET_AMOUNT")?.parse().ok()?,
            shared_budget: var("FLEET_SHARED_BUDGET").as_deref() == Some("1"),
            call_timeout: Duration::from_millis(var("FLEET_CALL_TIMEOUT_MS")?.parse().ok()?),
        })
    }
}

/// The worker process: runs only when a scenario starts it.
#[test]
#[ignore = "a worker process of the fleet tests, started by them with FLEET_WORKER set"]
fn fleet_worker() {
    let Some(config) = Config::from_env() else {
        eprintln!("fleet_worker runs only as a worker of the fleet tests");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(work(config));
    let line: Vec<String> = result.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("FLEET-RESULT {}", line.join(" "));
}

#[derive(Default)]
struct Tally {
    /// Answered by the server.
    sent: u64,
    /// Refused by the rate limit (`RATE_LIMITED_LOCALLY`).
    refused: u64,
    /// Any other outcome.
    other: u64,
    /// Requests some decision of which the fallback made.
    local: u64,
    /// The longest a request took, and the longest a refusal took.
    max: Duration,
    max_refused: Duration,
}

async fn work(config: Config) -> Vec<(String, String)> {
    let store = RedisStore::builder(&config.redis)
        .prefix(config.prefix.clone())
        .call_timeout(config.call_timeout)
        .heartbeat(Duration::from_millis(200))
        .retry_interval(Duration::from_millis(200))
        .shared_budget(config.shared_budget)
        .connect()
        .await
        .expect("the store");
    let base = || RetryPolicy::builder().state_store(store.clone());
    let url = |path: &str| format!("http://{}{path}", config.http);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| out.push((k.into(), v));
    put("via", format!("{:?}", config.via));
    match config.mode.as_str() {
        "rate" => {
            let limit = RateLimit::per_second(RATE)
                .burst(BURST)
                .max_wait(Duration::from_millis(250))
                .build()
                .unwrap();
            let policy = base().rate_limit(limit).max_retries(0).build().unwrap();
            let client = Client::new(config.via, policy);
            let tally = Arc::new(Mutex::new(Tally::default()));
            let end = Instant::now() + Duration::from_secs(config.amount);
            let mut offer = tokio::time::interval(Duration::from_millis(10));
            let mut tasks = tokio::task::JoinSet::new();
            while Instant::now() < end {
                offer.tick().await;
                let (client, tally, target) = (client.clone(), tally.clone(), url("/rate"));
                tasks.spawn(async move {
                    let got = client.send(&target, &get()).await;
                    let mut t = tally.lock().unwrap();
                    t.max = t.max.max(got.elapsed);
                    t.local += u64::from(got.report.decided_locally());
                    match (got.status, got.code) {
                        (Some(200), _) => t.sent += 1,
                        (_, Some("RATE_LIMITED_LOCALLY")) => {
                            t.refused += 1;
                            t.max_refused = t.max_refused.max(got.elapsed);
                        }
                        _ => t.other += 1,
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let t = tally.lock().unwrap();
            put("sent", t.sent.to_string());
            put("refused", t.refused.to_string());
            put("other", t.other.to_string());
            put("local", t.local.to_string());
            put("max_ms", t.max.as_millis().to_string());
            put("max_refused_ms", t.max_refused.as_millis().to_string());
        }
        "quota" => {
            // The defaults hold a credential whose quota is gone; the
            // held requests go out over the release spread after it.
            let client = Client::new(config.via, base().max_retries(0).build().unwrap());
            let tokens = ["Bearer token-a", "Bearer token-b"];
            #[derive(Default)]
            struct Seen {
                sent: [u64; 2],
                held: [u64; 2],
                /// When the first request held by the quota was made.
                first_held: Option<i64>,
            }
            let seen = Arc::new(Mutex::new(Seen::default()));
            let end = Instant::now() + Duration::from_secs(config.amount);
            let mut offer = tokio::time::interval(Duration::from_millis(25));
            let mut tasks = tokio::task::JoinSet::new();
            let mut i = 0usize;
            while Instant::now() < end {
                offer.tick().await;
                let which = i % 2;
                i += 1;
                let (client, seen, target) = (client.clone(), seen.clone(), url("/quota"));
                tasks.spawn(async move {
                    let asked = wall_ms();
                    let mut req = get();
                    req.headers = vec![("authorization", tokens[which])];
                    let got = client.send(&target, &req).await;
                    let held = got
                        .report
                        .throttles()
                        .iter()
                        .any(|t| t.reason() == ThrottleReason::ServerQuota);
                    let mut s = seen.lock().unwrap();
                    if got.status.is_some() {
                        s.sent[which] += 1;
                    }
                    if held {
                        s.held[which] += 1;
                        if which == 0 {
                            s.first_held = Some(s.first_held.map_or(asked, |t| t.min(asked)));
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let s = seen.lock().unwrap();
            put("sent_a", s.sent[0].to_string());
            put("sent_b", s.sent[1].to_string());
            put("held_a", s.held[0].to_string());
            put("held_b", s.held[1].to_string());
            put("first_held_ms", s.first_held.unwrap_or(0).to_string());
        }
        "outage" => {
            let policy = base()
                .max_retries(3)
                .initial_backoff(Duration::from_millis(1))
                .max_backoff(Duration::from_millis(1))
                .jitter(Jitter::None)
                .build()
                .unwrap();
            let client = Client::new(config.via, policy);
            let (mut sent, mut retries) = (0u64, 0u64);
            let mut codes: HashMap<&'static str, u64> = HashMap::new();
            for _ in 0..config.amount {
                let got = client.send(&url("/outage"), &get()).await;
                sent += 1;
                retries += u64::from(got.report.retries());
                *codes.entry(got.code.unwrap_or("none")).or_default() += 1;
            }
            put("sent", sent.to_string());
            put("retries", retries.to_string());
            let mut codes: Vec<String> = codes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            codes.sort();
            put("codes", codes.join(","));
        }
        other => panic!("unknown mode {other}"),
    }
    let stats = store.stats();
    put("round_trips", stats.round_trips.to_string());
    put("known_refusals", stats.known_refusals.to_string());
    put("went_local", stats.went_local.to_string());
    put("came_back", stats.came_back.to_string());
    put("shared_at_end", store.is_shared().to_string());
    out
}

// ---------------------------------------------------------------------
// The scenarios.

type Report = HashMap<String, String>;

fn num(r: &Report, k: &str) -> i64 {
    r.get(k)
        .unwrap_or_else(|| panic!("no {k} in {r:?}"))
        .parse()
        .unwrap()
}

/// Which adapter each of the eight workers sends through.
#[derive(Clone, Copy, Debug)]
enum Fleet {
    /// Four through the reqwest middleware, four through the tower layer.
    Mixed,
    /// All eight through one adapter.
    All(Via),
}

impl Fleet {
    fn via(self, worker: usize) -> Via {
        match self {
            Fleet::Mixed if worker.is_multiple_of(2) => Via::Reqwest,
            Fleet::Mixed => Via::Tower,
            Fleet::All(via) => via,
        }
    }
}

/// The workers' store settings that a scenario chooses.
#[derive(Clone, Copy)]
struct Store {
    shared_budget: bool,
    call_timeout_ms: u64,
}

/// A local budget, the store's default call timeout as the worker sets it.
const STORE: Store = Store {
    shared_budget: false,
    call_timeout_ms: 50,
};

fn spawn_workers(
    mode: &str,
    fleet: Fleet,
    redis: &RedisServer,
    server: &FleetServer,
    prefix: &str,
    amount: u64,
    store: Store,
) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..WORKERS)
        .map(|worker| {
            let via = match fleet.via(worker) {
                Via::Reqwest => "reqwest",
                Via::Tower => "tower",
            };
            Command::new(&exe)
                .args([
                    "fleet_worker",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("FLEET_WORKER", mode)
                .env("FLEET_VIA", via)
                .env("FLEET_REDIS", redis.url())
                .env("FLEET_HTTP", server.addr().to_string())
                .env("FLEET_PREFIX", prefix)
                .env("FLEET_AMOUNT", amount.to_string())
                .env(
                    "FLEET_SHARED_BUDGET",
                    if store.shared_budget { "1" } else { "0" },
                )
                .env("FLEET_CALL_TIMEOUT_MS", store.call_timeout_ms.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a worker")
        })
        .collect()
}

/// Waits for every worker (at most `limit`) and reads its report.
async fn reports(children: Vec<Child>, limit: Duration) -> Vec<Report> {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + limit;
        children
            .into_iter()
            .map(|mut child| {
                while child.try_wait().unwrap().is_none() {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("a worker hung past {limit:?}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let output = child.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout);
                let line = stdout
                    .lines()
                    .find_map(|l| l.split_once("FLEET-RESULT ").map(|(_, r)| r))
                    .unwrap_or_else(|| {
                        panic!(
                            "a worker reported nothing ({}):\n{stdout}\n{}",
                            output.status,
                            String::from_utf8_lossy(&output.stderr)
                        )
                    });
                line.split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    })
    .await
    .unwrap()
}

/// At most `burst + rate × span` turns in any span: the largest count the
/// limit allows for arrivals spread over `span_ms`, plus `slack_ms` of
/// arrival jitter.
fn allowed(burst: u32, rate: u32, span_ms: i64, slack_ms: i64) -> f64 {
    f64::from(burst) + f64::from(rate) * (span_ms + slack_ms) as f64 / 1000.0
}

/// The sums over the workers of `key`, per adapter.
fn by_adapter(reports: &[Report], key: &str) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for r in reports {
        *out.entry(r["via"].clone()).or_default() += num(r, key);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_keep_one_shared_rate_limit() {
    let _turn = TURNS.lock().await;
    let redis = RedisServer::start();
    let server = FleetServer::start().await;
    // The shared limit itself: a call timeout long enough that a loaded
    // machine's slow replies do not move a process to its local share (the
    // fallback is the kill scenario's).
    let children = spawn_workers(
        "rate",
        Fleet::Mixed,
        &redis,
        &server,
        "rate",
        5,
        Store {
            call_timeout_ms: 1_000,
            ..STORE
        },
    );
    let reports = reports(children, Duration::from_secs(60)).await;
    let arrivals = server.arrivals("/rate");
    let first = arrivals.iter().map(|a| a.at_ms).min().unwrap();
    let last = arrivals.iter().map(|a| a.at_ms).max().unwrap();
    let span = last - first;
    let seen = arrivals.len();
    let bound = allowed(BURST, RATE, span, 100);
    let sent: i64 = reports.iter().map(|r| num(r, "sent")).sum();
    let offered: i64 = reports
        .iter()
        .map(|r| num(r, "sent") + num(r, "refused"))
        .sum();
    let trips: i64 = reports.iter().map(|r| num(r, "round_trips")).sum();
    let known: i64 = reports.iter().map(|r| num(r, "known_refusals")).sum();
    let per_adapter = by_adapter(&reports, "sent");
    let local: i64 = reports.iter().map(|r| num(r, "local")).sum();
    println!(
        "fleet rate limit {RATE}/s burst {BURST}, {WORKERS} processes (4 reqwest, 4 tower): \
         offered {offered}, server saw {seen} in {span} ms (limit {:.0}, floor {:.0}), sent by \
         adapter {per_adapter:?}, {trips} round trips, {known} refusals known without one, \
         {local} decided locally",
        allowed(BURST, RATE, span, 0),
        0.9 * allowed(BURST, RATE, span, 0),
    );
    // First: every turn was the fleet's (a local share would explain any
    // excess below).
    assert_eq!(local, 0, "decisions made by the fallback: {reports:?}");
    assert_eq!(sent as usize, seen, "every turn taken was sent");
    assert!(
        offered >= 8 * 300,
        "each worker offered 5x the limit: {offered}"
    );
    assert!(seen as f64 <= bound, "{seen} > {bound:.1}");
    assert!(
        seen as f64 >= 0.9 * allowed(BURST, RATE, span, 0),
        "{seen} below 90%"
    );
    assert!(span >= 4_500, "the run lasted {span} ms");
    assert!(
        per_adapter.values().all(|&n| n > 0),
        "both adapters sent: {per_adapter:?}"
    );
    // Between any two arrivals: no more than the limit allows, at any scale
    // (a sliding check of the window rule, with the jitter's slack).
    let mut times: Vec<i64> = arrivals.iter().map(|a| a.at_ms).collect();
    times.sort_unstable();
    for i in 0..times.len() {
        for j in (i + 1)..times.len() {
            let n = (j - i + 1) as f64;
            assert!(
                n <= allowed(BURST, RATE, times[j] - times[i], 100),
                "{n} arrivals in {} ms",
                times[j] - times[i]
            );
        }
    }
    for r in &reports {
        assert_eq!(num(r, "other"), 0, "{r:?}");
        assert_eq!(num(r, "local"), 0, "{r:?}");
        assert_eq!(r["shared_at_end"], "true");
        // a refusal waits for nothing: the store answers within its call
        // timeout, or this process already knew
        assert!(num(r, "max_refused_ms") <= 1_000, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_gone_in_one_process_holds_that_credential_in_all() {
    let _turn = TURNS.lock().await;
    let redis = RedisServer::start();
    let server = FleetServer::start().await;
    server.arm_quota(Duration::from_millis(1_500));
    let children = spawn_workers("quota", Fleet::Mixed, &redis, &server, "quota", 7, STORE);
    let reports = reports(children, Duration::from_secs(60)).await;
    let gone = server.quota_gone().expect("the quota was announced gone");
    let arrivals = server.arrivals("/quota");
    let of = |token: &str, from: i64, to: i64| {
        arrivals
            .iter()
            .filter(|a| a.credential == token && a.at_ms > from && a.at_ms < to)
            .count()
    };
    let in_flight = of("Bearer token-a", gone.at_ms, gone.at_ms + 50);
    let held_a = of("Bearer token-a", gone.at_ms + 50, gone.reset_ms);
    let b_during = of("Bearer token-b", gone.at_ms, gone.reset_ms);
    let a_after = of("Bearer token-a", gone.reset_ms, i64::MAX);
    let window = gone.reset_ms - gone.at_ms;
    let reached: Vec<i64> = reports
        .iter()
        .map(|r| num(r, "first_held_ms") - gone.at_ms)
        .collect();
    println!(
        "fleet quota hold, {WORKERS} processes (4 reqwest, 4 tower): token-a gone at +0 ms until \
         +{window} ms; token-a at the server during the hold: {held_a} (+{in_flight} already on \
         their way), after it: {a_after}; token-b during the hold: {b_during}; first held \
         request per worker at +{reached:?} ms; token-a requests held per adapter {:?}",
        by_adapter(&reports, "held_a"),
    );
    assert_eq!(
        held_a, 0,
        "no token-a request reached the server before the reset"
    );
    assert!(in_flight <= WORKERS, "{in_flight}");
    // token-b: 8 workers × 20 a second over the hold, at least half of it
    let expected_b = WORKERS as f64 * 20.0 * window as f64 / 1000.0;
    assert!(
        b_during as f64 >= 0.5 * expected_b,
        "{b_during} < {expected_b}/2"
    );
    assert!(a_after > 0, "token-a flows again after the reset");
    for (r, ms) in reports.iter().zip(&reached) {
        assert!(num(r, "held_a") > 0, "every worker held token-a: {r:?}");
        assert_eq!(num(r, "held_b"), 0, "{r:?}");
        assert!(
            *ms >= -50 && *ms < 1_000,
            "a worker held its first token-a request {ms} ms after the announcement"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_seen_by_eight_processes_is_amplified_as_for_one_with_a_shared_budget() {
    let _turn = TURNS.lock().await;
    let redis = RedisServer::start();
    for fleet in [
        Fleet::Mixed,
        Fleet::All(Via::Reqwest),
        Fleet::All(Via::Tower),
    ] {
        let mut totals = Vec::new();
        for shared in [true, false] {
            let server = FleetServer::start().await;
            let prefix = format!(
                "outage-{}-{fleet:?}",
                if shared { "shared" } else { "local" }
            )
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
            // 100 requests per worker, each retried up to 3 times.
            let children = spawn_workers(
                "outage",
                fleet,
                &redis,
                &server,
                &prefix,
                100,
                Store {
                    shared_budget: shared,
                    ..STORE
                },
            );
            let reports = reports(children, Duration::from_secs(60)).await;
            let sent: i64 = reports.iter().map(|r| num(r, "sent")).sum();
            let retries: i64 = reports.iter().map(|r| num(r, "retries")).sum();
            let seen = server.count("/outage") as i64;
            assert_eq!(seen, sent + retries, "{fleet:?}: {reports:?}");
            totals.push((sent, seen));
        }
        let ((sent, shared), (_, local)) = (totals[0], totals[1]);
        println!(
            "fleet outage, {WORKERS} processes ({fleet:?}) x 100 requests, 3 retries each: the \
             server saw {shared} requests with one shared budget ({:.2}x), {local} with \
             {WORKERS} local budgets ({:.2}x)",
            shared as f64 / sent as f64,
            local as f64 / sent as f64
        );
        assert_eq!(sent, 800);
        assert_eq!(
            shared,
            800 + 100,
            "{fleet:?}: 500 tokens, 5 a retry: 100 retries for the fleet"
        );
        assert!(shared as f64 <= 1.2 * sent as f64);
        assert_eq!(local, 800 + 8 * 100, "{fleet:?}: 100 retries per process");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_each_process_keeps_its_share_then_the_fleet_is_back() {
    let _turn = TURNS.lock().await;
    let mut redis = RedisServer::start();
    let server = FleetServer::start().await;
    let started = wall_ms();
    let children = spawn_workers("rate", Fleet::Mixed, &redis, &server, "kill", 9, STORE);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = wall_ms();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = wall_ms();
    redis.restart();
    let reports = reports(children, Duration::from_secs(60)).await;
    let arrivals = server.arrivals("/rate");
    let count = |from: i64, to: i64| {
        arrivals
            .iter()
            .filter(|a| a.at_ms >= from && a.at_ms < to)
            .count()
    };
    let end = arrivals.iter().map(|a| a.at_ms).max().unwrap();
    // Local: each of the 8 keeps to 20/8 a second, a burst of 1.
    let local_window = (killed + 500, restarted);
    let local = count(local_window.0, local_window.1);
    let local_span = local_window.1 - local_window.0;
    let local_bound = allowed(WORKERS as u32, RATE, local_span, 100);
    // Back: the shared limit again once every worker has returned (its
    // heartbeats and retries run every 200 ms).
    let back_window = (restarted + 1_500, end);
    let back = count(back_window.0, back_window.1 + 1);
    let back_span = back_window.1 - back_window.0;
    let per_second: Vec<usize> = (0..((end - started) / 1000 + 1))
        .map(|s| count(started + s * 1000, started + (s + 1) * 1000))
        .collect();
    let max = reports.iter().map(|r| num(r, "max_ms")).max().unwrap();
    let max_refused = reports
        .iter()
        .map(|r| num(r, "max_refused_ms"))
        .max()
        .unwrap();
    let local_decisions: i64 = reports.iter().map(|r| num(r, "local")).sum();
    println!(
        "fleet with Redis killed at +{} ms and restarted at +{} ms, {WORKERS} processes (4 \
         reqwest, 4 tower): per second {per_second:?}; while gone {local} in {local_span} ms \
         (bound {local_bound:.0}), after {back} in {back_span} ms (bound {:.0}); {local_decisions} \
         requests decided locally; longest request {max} ms, longest refusal {max_refused} ms",
        killed - started,
        restarted - started,
        allowed(BURST, RATE, back_span, 100),
    );
    assert!(local as f64 <= local_bound, "{local} > {local_bound:.1}");
    assert!(
        local as f64 >= 0.5 * f64::from(RATE) * local_span as f64 / 1000.0,
        "the workers kept working while Redis was gone: {local}"
    );
    // Nothing hangs: a request waits at most its turn (max_wait 250 ms)
    // and one call timeout (50 ms), plus the machine's slack.
    assert!(max <= 1_500, "a request took {max} ms");
    assert!(max_refused <= 1_000, "a refusal took {max_refused} ms");
    assert!(
        back as f64 <= allowed(BURST, RATE, back_span, 100),
        "{back}"
    );
    assert!(
        back as f64 >= 0.9 * f64::from(RATE) * back_span as f64 / 1000.0,
        "{back}"
    );
    for r in &reports {
        assert!(num(r, "went_local") >= 1, "{r:?}");
        assert!(num(r, "came_back") >= 1, "{r:?}");
        assert!(
            num(r, "local") > 0,
            "{r:?}: its reports say when it decided locally"
        );
        assert_eq!(num(r, "other"), 0, "{r:?}");
        assert_eq!(r["shared_at_end"], "true", "{r:?}");
    }
}
