//! Eight real processes, one loopback HTTP server, one real Redis: what a
//! fleet shares through `RedisStore`, measured at the server.
//!
//! Each scenario re-runs this test binary eight times as a worker
//! (`fleet_worker`, an ignored test that runs only with `FLEET_WORKER`
//! set), all against one `FleetServer` (`tests/support/fleet.rs`) and one
//! `redis-server` (`tests/support/redis.rs`); the scenarios take turns (a
//! lock), so that 2 cores run 8 workers at a time, not 32. A worker drives
//! the store as the engine will once it is wired (a turn before every
//! attempt, a hold noted from a response, a withdrawal before every
//! retry), with reqwest.
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
//! - **Redis killed**: killed 3 s into a 9 s run under the shared limit,
//!   restarted at 6 s: every worker goes on under its share (nothing
//!   waits longer than the call timeout), and then returns to the shared
//!   limit without a restart.

#[path = "support/fleet.rs"]
mod fleet_support;
#[path = "support/redis.rs"]
mod redis_support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fleet_support::{FleetServer, wall_ms};
use http_resilience::retry_after::quota_reset;
use http_resilience::store::redis::FleetRefusal;
use http_resilience::store::{Decided, RedisStore};
use http_resilience::{EndpointKey, RateLimit, RetryBudget};
use redis_support::RedisServer;

const WORKERS: usize = 8;
const RATE: u32 = 20;
const BURST: u32 = 5;

/// The scenarios take turns.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------
// The worker.

struct Config {
    mode: String,
    redis: String,
    http: String,
    prefix: String,
    /// Seconds to run for; for `outage`, requests to send.
    amount: u64,
    shared_budget: bool,
}

impl Config {
    fn from_env() -> Option<Config> {
        let var = |k: &str| std::env::var(k).ok();
        Some(Config {
            mode: var("FLEET_WORKER")?,
            redis: var("FLEET_REDIS")?,
            http: var("FLEET_HTTP")?,
            prefix: var("FLEET_PREFIX")?,
            amount: var("FLEET_AMOUNT")?.parse().ok()?,
            shared_budget: var("FLEET_SHARED_BUDGET").as_deref() == Some("1"),
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

async fn work(config: Config) -> Vec<(String, String)> {
    let store = RedisStore::builder(&config.redis)
        .prefix(config.prefix.clone())
        .call_timeout(Duration::from_millis(50))
        .heartbeat(Duration::from_millis(200))
        .retry_interval(Duration::from_millis(200))
        .shared_budget(config.shared_budget)
        .connect()
        .await
        .expect("the store");
    let addr: std::net::SocketAddr = config.http.parse().unwrap();
    let endpoint = store.endpoint(&EndpointKey::new("127.0.0.1", addr.port()));
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| out.push((k.into(), v));
    match config.mode.as_str() {
        "rate" => {
            #[derive(Default)]
            struct Tally {
                sent: u64,
                refused: u64,
                fleet: u64,
                fallback: u64,
                other: u64,
                max_call: Duration,
            }
            let tally = Arc::new(Mutex::new(Tally::default()));
            let limit = RateLimit::per_second(RATE).burst(BURST).build().unwrap();
            let end = Instant::now() + Duration::from_secs(config.amount);
            let mut offer = tokio::time::interval(Duration::from_millis(10));
            let mut tasks = tokio::task::JoinSet::new();
            while Instant::now() < end {
                offer.tick().await;
                let (endpoint, client, tally) = (endpoint.clone(), client.clone(), tally.clone());
                let target = url("/rate");
                tasks.spawn(async move {
                    let asked = Instant::now();
                    let turn = endpoint
                        .acquire(&limit, 1, Duration::from_millis(250))
                        .await;
                    let took = asked.elapsed();
                    {
                        let mut t = tally.lock().unwrap();
                        t.max_call = t.max_call.max(took);
                        match &turn {
                            Ok(turn) if turn.decided() == Decided::Fleet => t.fleet += 1,
                            Ok(_) => t.fallback += 1,
                            Err(FleetRefusal::TooLong { decided, .. }) => {
                                t.refused += 1;
                                if *decided == Decided::Fleet {
                                    t.fleet += 1
                                } else {
                                    t.fallback += 1
                                }
                            }
                            Err(_) => t.other += 1,
                        }
                    }
                    if let Ok(turn) = turn {
                        tokio::time::sleep_until(turn.at().into()).await;
                        if client.get(&target).send().await.is_ok() {
                            tally.lock().unwrap().sent += 1;
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let t = tally.lock().unwrap();
            put("sent", t.sent.to_string());
            put("refused", t.refused.to_string());
            put("fleet", t.fleet.to_string());
            put("fallback", t.fallback.to_string());
            put("other", t.other.to_string());
            put("max_call_ms", t.max_call.as_millis().to_string());
        }
        "quota" => {
            let tokens = ["Bearer token-a", "Bearer token-b"];
            let mut sent = [0u64; 2];
            let mut held = [0u64; 2];
            let mut saw_hold: Option<i64> = None;
            let mut noted = false;
            let end = Instant::now() + Duration::from_secs(config.amount);
            let mut offer = tokio::time::interval(Duration::from_millis(25));
            let mut i = 0usize;
            while Instant::now() < end {
                offer.tick().await;
                let which = i % 2;
                i += 1;
                let mut headers = http::HeaderMap::new();
                headers.insert("authorization", tokens[which].parse().unwrap());
                let partition = store.partition(&headers);
                if endpoint
                    .blocked_until(partition)
                    .is_some_and(|until| until > Instant::now())
                {
                    held[which] += 1;
                    saw_hold.get_or_insert_with(wall_ms);
                    continue;
                }
                let Ok(response) = client
                    .get(url("/quota"))
                    .header("authorization", tokens[which])
                    .send()
                    .await
                else {
                    continue;
                };
                sent[which] += 1;
                if let Some((wait, _)) = quota_reset(response.headers(), SystemTime::now()) {
                    endpoint.block_for(partition, wait).await;
                    noted = true;
                }
            }
            put("sent_a", sent[0].to_string());
            put("sent_b", sent[1].to_string());
            put("held_a", held[0].to_string());
            put("held_b", held[1].to_string());
            put("noted", noted.to_string());
            put("saw_hold_ms", saw_hold.unwrap_or(0).to_string());
        }
        "outage" => {
            let budget = RetryBudget::default();
            let (mut sent, mut retries) = (0u64, 0u64);
            for _ in 0..config.amount {
                let _ = client.get(url("/outage")).send().await;
                sent += 1;
                for _ in 0..3 {
                    if !endpoint.withdraw(&budget, 5).await.0 {
                        break;
                    }
                    let _ = client.get(url("/outage")).send().await;
                    retries += 1;
                }
            }
            put("sent", sent.to_string());
            put("retries", retries.to_string());
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

fn spawn_workers(
    mode: &str,
    redis: &RedisServer,
    server: &FleetServer,
    prefix: &str,
    amount: u64,
    shared_budget: bool,
) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "fleet_worker",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("FLEET_WORKER", mode)
                .env("FLEET_REDIS", redis.url())
                .env("FLEET_HTTP", server.addr().to_string())
                .env("FLEET_PREFIX", prefix)
                .env("FLEET_AMOUNT", amount.to_string())
                .env("FLEET_SHARED_BUDGET", if shared_budget { "1" } else { "0" })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_keep_one_shared_rate_limit() {
    let _turn = TURNS.lock().await;
    let redis = RedisServer::start();
    let server = FleetServer::start().await;
    let children = spawn_workers("rate", &redis, &server, "rate", 5, false);
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
    println!(
        "fleet rate limit {RATE}/s burst {BURST}, {WORKERS} processes: offered {offered}, \
         server saw {seen} in {span} ms (limit {:.0}, floor {:.0}), {trips} round trips, \
         {known} refusals known without one",
        allowed(BURST, RATE, span, 0),
        0.9 * allowed(BURST, RATE, span, 0),
    );
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
        assert_eq!(r["shared_at_end"], "true");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_gone_in_one_process_holds_that_credential_in_all() {
    let _turn = TURNS.lock().await;
    let redis = RedisServer::start();
    let server = FleetServer::start().await;
    server.arm_quota(Duration::from_millis(1_500));
    let children = spawn_workers("quota", &redis, &server, "quota", 7, false);
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
    let noted = reports.iter().filter(|r| r["noted"] == "true").count();
    let reached: Vec<i64> = reports
        .iter()
        .map(|r| num(r, "saw_hold_ms") - gone.at_ms)
        .collect();
    println!(
        "fleet quota hold: token-a gone at +0 ms until +{window} ms (noted by {noted} worker); \
         token-a at the server during the hold: {held_a} (+{in_flight} already on their way), \
         after it: {a_after}; token-b during the hold: {b_during}; first held request per \
         worker at +{reached:?} ms"
    );
    assert_eq!(noted, 1, "one worker was told");
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
            *ms >= 0 && *ms < 1_000,
            "a worker saw the hold {ms} ms late"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_seen_by_eight_processes_is_amplified_as_for_one_with_a_shared_budget() {
    let _turn = TURNS.lock().await;
    let redis = RedisServer::start();
    let mut totals = Vec::new();
    for shared in [true, false] {
        let server = FleetServer::start().await;
        let prefix = if shared {
            "outage-shared"
        } else {
            "outage-local"
        };
        // 100 requests per worker, each retried up to 3 times.
        let children = spawn_workers("outage", &redis, &server, prefix, 100, shared);
        let reports = reports(children, Duration::from_secs(60)).await;
        let sent: i64 = reports.iter().map(|r| num(r, "sent")).sum();
        let retries: i64 = reports.iter().map(|r| num(r, "retries")).sum();
        let seen = server.count("/outage") as i64;
        assert_eq!(seen, sent + retries);
        totals.push((sent, seen));
    }
    let ((sent, shared), (_, local)) = (totals[0], totals[1]);
    println!(
        "fleet outage, {WORKERS} processes x 100 requests, 3 retries each: the server saw \
         {shared} requests with one shared budget ({:.2}x), {local} with {WORKERS} local \
         budgets ({:.2}x)",
        shared as f64 / sent as f64,
        local as f64 / sent as f64
    );
    assert_eq!(sent, 800);
    assert_eq!(
        shared,
        800 + 100,
        "500 tokens, 5 a retry: 100 retries for the fleet"
    );
    assert!(shared as f64 <= 1.2 * sent as f64);
    assert_eq!(local, 800 + 8 * 100, "100 retries per process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_each_process_keeps_its_share_then_the_fleet_is_back() {
    let _turn = TURNS.lock().await;
    let mut redis = RedisServer::start();
    let server = FleetServer::start().await;
    let started = wall_ms();
    let children = spawn_workers("rate", &redis, &server, "kill", 9, false);
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
    let max_call = reports.iter().map(|r| num(r, "max_call_ms")).max().unwrap();
    println!(
        "fleet with Redis killed at +{} ms and restarted at +{} ms: per second {per_second:?}; \
         while gone {local} in {local_span} ms (bound {local_bound:.0}), after {back} in \
         {back_span} ms (bound {:.0}); longest store call {max_call} ms",
        killed - started,
        restarted - started,
        allowed(BURST, RATE, back_span, 100),
    );
    assert!(local as f64 <= local_bound, "{local} > {local_bound:.1}");
    assert!(
        local as f64 >= 0.5 * f64::from(RATE) * local_span as f64 / 1000.0,
        "the workers kept working while Redis was gone: {local}"
    );
    assert!(max_call <= 1_000, "a store call took {max_call} ms");
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
        assert!(num(r, "fallback") > 0, "{r:?}");
        assert_eq!(r["shared_at_end"], "true", "{r:?}");
    }
}
