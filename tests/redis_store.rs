//! `RedisStore` against a real `redis-server` (started by the tests on a
//! free loopback port, see `tests/support/redis.rs`):
//!
//! - the server-side scripts' rules, run as they are (`EVAL`) on the
//!   server's own clock, against the models the property tests use: the
//!   fleet's GCRA against the crate's `RateLimitState` (driven with the
//!   times the server read) and against the limit itself
//!   (`model::rate_limit_holds`, `model::earliest_turn_of_cost`); holds
//!   and hints set only if later, expiring at the reset, bounded and
//!   published; the shared budget against `Tokens`; the heartbeat's
//!   members and partition key;
//! - the store: partitions and holds shared between two stores (two
//!   processes' worth), read without a round trip, by subscription or by
//!   polling; a refusal remembered; every key expiring; one budget for the
//!   fleet;
//! - when Redis is gone: killed (local share, allow, refuse, and back to
//!   the shared state without a restart), hung (an answer at exactly the
//!   call timeout, under a paused clock), unreachable at start (a typed
//!   error that never shows the URL's password, or a local start that
//!   joins when Redis comes), a bad URL, bad settings; and the `WARN`
//!   events of the switches.

#[path = "support/redis.rs"]
mod redis_support;

#[path = "properties/model.rs"]
#[allow(dead_code)]
mod model;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http_resilience::protection::{RateLimitState, Tokens, Turn};
use http_resilience::store::redis::{FleetRefusal, fleet_interval, scripts};
use http_resilience::store::{Decided, Fallback, HoldSync, Partition, RedisStore, StoreError};
use http_resilience::{EndpointKey, RateLimit, RetryBudget};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis_support::{RedisServer, Reply};

/// The path the store had before it moved under `store` still resolves.
type _EarlierPath = http_resilience::redis_store::RedisStore;

static KEYS: AtomicU64 = AtomicU64::new(0);

/// A key no other case uses.
fn fresh(what: &str) -> String {
    format!("t:{{{}}}:{what}", KEYS.fetch_add(1, Ordering::Relaxed))
}

fn eval(redis: &RedisServer, script: &str, keys: &[&str], args: &[String]) -> Reply {
    let n = keys.len().to_string();
    let mut all: Vec<&str> = vec!["EVAL", script, &n];
    all.extend_from_slice(keys);
    all.extend(args.iter().map(String::as_str));
    let reply = redis.cmd(&all);
    if let Reply::Error(e) = &reply {
        panic!("script error: {e}");
    }
    reply
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------
// The scripts' rules.

#[derive(Debug, Clone)]
enum LimitOp {
    /// Ask for a turn of cost `1 + pick % burst`, within `max_ms` (none:
    /// unbounded).
    Acquire(u8, Option<u16>),
    /// Give back the latest turn taken (the schedule's last).
    ReleaseLast,
    /// Give back an earlier one (not the last: lost, the schedule stays).
    ReleaseEarlier(u8),
    /// Let the server's clock move (a real sleep, a few ms).
    Sleep(u8),
}

fn limit_op() -> impl Strategy<Value = LimitOp> {
    prop_oneof![
        6 => (any::<u8>(), prop::option::weighted(0.7, 0u16..400)).prop_map(|(c, w)| LimitOp::Acquire(c, w)),
        1 => Just(LimitOp::ReleaseLast),
        1 => any::<u8>().prop_map(LimitOp::ReleaseEarlier),
        1 => (0u8..6).prop_map(LimitOp::Sleep),
    ]
}

struct Grant {
    tat: i64,
    span: i64,
    at_us: i64,
    cost: u32,
    turns: Vec<Turn>,
}

/// The fleet's GCRA, run on Redis with the times Redis reads, is the
/// crate's GCRA (`RateLimitState`, driven with the same times) with a
/// cost: a request of cost `c` takes `c` turns and goes at the last; it
/// keeps the limit (the window rule over every turn taken), and each turn
/// is the earliest the limit allows; a refusal is exactly a turn beyond
/// the max wait and takes nothing; the last turn given back comes off
/// exactly, an earlier one is lost.
#[test]
fn the_fleet_gcra_is_the_crates_gcra_with_a_cost_and_keeps_the_limit() {
    let redis = RedisServer::start();
    let strategy = (
        1u32..40,
        20u64..1500,
        1u32..6,
        prop::collection::vec(limit_op(), 1..50),
    );
    let mut runner = TestRunner::new(config(48));
    let result = runner.run(&strategy, |(requests, period_ms, burst, ops)| {
        let limit = RateLimit::builder(requests, Duration::from_millis(period_ms))
            .burst(burst)
            .build()
            .unwrap();
        let interval_us = fleet_interval(&limit).as_micros() as i64;
        let tolerance_us = interval_us * i64::from(burst - 1);
        // The crate's GCRA with the same interval (the fleet rounds it up
        // to a microsecond).
        let exact = RateLimit::builder(
            requests,
            Duration::from_micros(interval_us as u64 * u64::from(requests)),
        )
        .burst(burst)
        .build()
        .unwrap();
        let mut crate_state = RateLimitState::new(&exact);
        let t0 = Instant::now();
        let mut origin_us: Option<i64> = None;
        let key = fresh("limit");
        let mut grants: Vec<Grant> = Vec::new();
        // Every turn taken, in ns from the first server time seen.
        let mut taken: Vec<u128> = Vec::new();
        let mut last_server_us = 0i64;
        let mut last_seen = Instant::now();
        // The crate's `release` is exact for the one turn it handed out
        // last; past a give-back, only the limit itself is the model (the
        // script's give-back restores the schedule exactly).
        let mut crate_exact = true;
        for (i, op) in ops.iter().enumerate() {
            match *op {
                LimitOp::Acquire(pick, max_ms) => {
                    let cost = 1 + u32::from(pick) % burst;
                    let max_us: i64 = max_ms.map_or(1 << 50, |ms| i64::from(ms) * 1000);
                    let reply = eval(
                        &redis,
                        scripts::ACQUIRE,
                        &[&key],
                        &[
                            interval_us.to_string(),
                            tolerance_us.to_string(),
                            cost.to_string(),
                            max_us.to_string(),
                        ],
                    )
                    .ints();
                    let (granted, now_us, x, tat) = (reply[0], reply[1], reply[2], reply[3]);
                    last_server_us = now_us;
                    last_seen = Instant::now();
                    let origin = *origin_us.get_or_insert(now_us);
                    prop_assert!(now_us >= origin, "op {}: the server's clock went back", i);
                    let at_instant = |us: i64| t0 + Duration::from_micros((us - origin) as u64);
                    let ns = |us: i64| ((us - origin) as u128) * 1000;
                    let now = at_instant(now_us);
                    // The crate: `cost` turns in a row, the request at the
                    // last; refused if that one is beyond the max wait.
                    let mut trial = crate_state.clone();
                    let turns: Vec<Turn> = (0..cost)
                        .map(|_| trial.acquire(now, Duration::MAX).unwrap())
                        .collect();
                    let last = turns.last().unwrap().at();
                    let crate_wait = (last - now).as_micros() as i64;
                    // The in-process limiter's own rule for a request of
                    // several turns (`acquire_cost`) is the same turn.
                    if crate_exact {
                        let mut whole = crate_state.clone();
                        let turn = whole.acquire_cost(now, Duration::MAX, cost).unwrap();
                        prop_assert_eq!(turn.at(), last, "op {}: acquire_cost", i);
                        prop_assert_eq!(turn.cost(), cost);
                    }
                    // The limit itself: the earliest time `cost` turns fit.
                    let mut sorted = taken.clone();
                    sorted.sort_unstable();
                    let earliest = model::earliest_turn_of_cost(
                        &sorted,
                        ns(now_us),
                        interval_us as u128 * 1000,
                        burst,
                        cost,
                    );
                    if granted == 1 {
                        prop_assert!(x - now_us <= max_us, "op {}: beyond the max wait", i);
                        if crate_exact {
                            prop_assert_eq!(
                                x - now_us,
                                crate_wait,
                                "op {}: not the crate's turn",
                                i
                            );
                        }
                        prop_assert_eq!(ns(x), earliest, "op {}: not the earliest turn", i);
                        crate_state = trial;
                        taken.extend(std::iter::repeat_n(ns(x), cost as usize));
                        grants.push(Grant {
                            tat,
                            span: interval_us * i64::from(cost),
                            at_us: x,
                            cost,
                            turns,
                        });
                    } else {
                        prop_assert!(x > max_us, "op {}: refused within the max wait", i);
                        if crate_exact {
                            prop_assert_eq!(x, crate_wait, "op {}: not the crate's wait", i);
                        }
                        prop_assert_eq!(ns(now_us) + x as u128 * 1000, earliest, "op {}", i);
                    }
                }
                LimitOp::ReleaseLast => {
                    // Only a turn still to come is given back (with a
                    // margin for the time since the server was last read).
                    let server_now = last_server_us + last_seen.elapsed().as_micros() as i64;
                    let Some(g) = grants.last() else { continue };
                    if g.at_us <= server_now + 20_000 {
                        continue;
                    }
                    let g = grants.pop().unwrap();
                    // It is the schedule's last unless the turns after it
                    // were lost (given back out of order).
                    let tat_of = || {
                        redis
                            .cmd(&["GET", &key])
                            .text()
                            .map(|t| t.parse::<i64>().unwrap())
                    };
                    let last = tat_of() == Some(g.tat);
                    let out = eval(
                        &redis,
                        scripts::RELEASE,
                        &[&key],
                        &[g.tat.to_string(), g.span.to_string()],
                    )
                    .int();
                    prop_assert_eq!(out == 1, last, "op {}: the last turn did not come off", i);
                    if !last {
                        // Lost: still counted as taken.
                        continue;
                    }
                    let after = tat_of();
                    prop_assert!(
                        after.is_none() || after == Some(g.tat - g.span),
                        "op {}: {:?} after giving back",
                        i,
                        after
                    );
                    for turn in g.turns.into_iter().rev() {
                        crate_state.release(turn);
                    }
                    crate_exact = false;
                    let origin = origin_us.unwrap();
                    let at_ns = ((g.at_us - origin) as u128) * 1000;
                    for _ in 0..g.cost {
                        let k = taken.iter().rposition(|&t| t == at_ns).unwrap();
                        taken.remove(k);
                    }
                }
                LimitOp::ReleaseEarlier(pick) => {
                    if grants.len() < 2 {
                        continue;
                    }
                    let k = usize::from(pick) % (grants.len() - 1);
                    let g = grants.remove(k);
                    let out = eval(
                        &redis,
                        scripts::RELEASE,
                        &[&key],
                        &[g.tat.to_string(), g.span.to_string()],
                    )
                    .int();
                    prop_assert_eq!(out, 0, "op {}: an earlier turn moved the schedule", i);
                    // Lost: still counted as taken, by the model and the crate.
                }
                LimitOp::Sleep(ms) => std::thread::sleep(Duration::from_millis(u64::from(ms))),
            }
        }
        let mut all = taken;
        all.sort_unstable();
        prop_assert!(
            model::rate_limit_holds(&all, interval_us as u128 * 1000, burst),
            "{:?}",
            all
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The key of the limit expires when its time has passed (a missing key
/// and a time in the past give the same answers).
#[test]
fn the_limits_key_expires_at_its_time() {
    let redis = RedisServer::start();
    let key = fresh("limit");
    let args = |cost: u32| {
        vec![
            "100000".to_string(),
            "0".to_string(),
            cost.to_string(),
            (1i64 << 50).to_string(),
        ]
    };
    let r = eval(&redis, scripts::ACQUIRE, &[&key], &args(1)).ints();
    let tat_ms = r[3] / 1000;
    let expire = redis.cmd(&["PEXPIRETIME", &key]).int();
    assert!(
        (tat_ms..=tat_ms + 1).contains(&expire),
        "{expire} vs {tat_ms}"
    );
}

#[derive(Debug, Clone)]
enum HoldOp {
    Hold(u8, u16),
    Check,
}

/// Holds are set only if later (per partition), expire with the latest,
/// drop the holds that are over, keep at most `max` (the one that ends
/// first gives way), and every hold set is published.
#[test]
fn holds_are_set_only_if_later_expire_at_the_reset_and_are_published() {
    let redis = RedisServer::start();
    let channel = "t:events";
    let events = std::cell::RefCell::new(redis.subscribe(channel));
    let strategy = prop::collection::vec(
        prop_oneof![
            4 => (0u8..5, 1u16..3000).prop_map(|(p, w)| HoldOp::Hold(p, w)),
            1 => Just(HoldOp::Check),
        ],
        1..40,
    );
    let max = 3usize;
    let mut runner = TestRunner::new(config(40));
    let result = runner.run(&strategy, |ops| {
        let key = fresh("holds");
        let mut model: HashMap<String, i64> = HashMap::new();
        let mut now_ms = 0;
        for (i, op) in ops.iter().enumerate() {
            match *op {
                HoldOp::Hold(p, wait) => {
                    let partition = format!("{:016x}", p);
                    let r = eval(
                        &redis,
                        scripts::HOLD,
                        &[&key],
                        &[
                            partition.clone(),
                            wait.to_string(),
                            max.to_string(),
                            channel.into(),
                            "h:1".into(),
                        ],
                    )
                    .ints();
                    let (set, now, until) = (r[0], r[1], r[2]);
                    now_ms = now;
                    model.retain(|_, u| *u > now);
                    let want = now + i64::from(wait);
                    let current = model.get(&partition).copied();
                    let later = current.is_none_or(|c| want > c);
                    prop_assert_eq!(set == 1, later, "op {}", i);
                    if later {
                        if current.is_none() && model.len() >= max {
                            // the ones that end first (then by name) go
                            let mut all: Vec<(i64, String)> =
                                model.iter().map(|(p, u)| (*u, p.clone())).collect();
                            all.sort();
                            for (_, p) in all.into_iter().take(model.len() + 1 - max) {
                                model.remove(&p);
                            }
                        }
                        model.insert(partition.clone(), want);
                        prop_assert_eq!(until, want);
                        let message = events.borrow_mut().next();
                        prop_assert_eq!(message, format!("hold h:1 {partition} {want}"));
                    } else {
                        prop_assert_eq!(until, current.unwrap());
                    }
                }
                HoldOp::Check => {
                    let got = redis.cmd(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]);
                    let items = got.array();
                    // Holds that may have ended since the last reply are
                    // left out (the key may have expired meanwhile).
                    let safe = now_ms + 1_000;
                    let mut stored: HashMap<String, i64> = HashMap::new();
                    for pair in items.chunks(2) {
                        let until = pair[1].int();
                        if until > safe {
                            stored.insert(pair[0].text().unwrap(), until);
                        }
                    }
                    let live: HashMap<String, i64> = model
                        .iter()
                        .filter(|(_, u)| **u > safe)
                        .map(|(p, u)| (p.clone(), *u))
                        .collect();
                    prop_assert_eq!(&stored, &live, "op {}", i);
                    prop_assert!(items.len() / 2 <= max);
                    if let Some(latest) = model.values().max() {
                        let expire = redis.cmd(&["PEXPIRETIME", &key]).int();
                        prop_assert!(
                            expire == *latest || expire == -2,
                            "{} vs {}",
                            expire,
                            latest
                        );
                    }
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The breaker's hint: set only if later, expiring at its end, published.
#[test]
fn the_open_hint_is_set_only_if_later_and_expires_at_its_end() {
    let redis = RedisServer::start();
    let mut events = redis.subscribe("t:events");
    let key = fresh("open");
    let open = |wait: u32| {
        eval(
            &redis,
            scripts::OPEN,
            &[&key],
            &[wait.to_string(), "t:events".into(), "h:1".into()],
        )
        .ints()
    };
    let first = open(5_000);
    assert_eq!(first[0], 1);
    assert_eq!(first[2], first[1] + 5_000);
    assert_eq!(events.next(), format!("open h:1 - {}", first[2]));
    let shorter = open(1_000);
    assert_eq!(
        (shorter[0], shorter[2]),
        (0, first[2]),
        "an earlier end loses"
    );
    assert_eq!(redis.cmd(&["PEXPIRETIME", &key]).int(), first[2]);
    let longer = open(9_000);
    assert_eq!(longer[0], 1);
    assert_eq!(redis.cmd(&["PEXPIRETIME", &key]).int(), longer[2]);
}

#[derive(Debug, Clone)]
enum BudgetOp {
    Withdraw(u32),
    Deposit(u32),
    Both(u32, u32),
}

/// The shared budget is `Tokens`: deposits capped at the capacity, a
/// withdrawal only if there are enough; a full bucket is no key at all,
/// another expires after the idle time.
#[test]
fn the_shared_budget_is_the_crates_tokens() {
    let redis = RedisServer::start();
    let strategy = (
        10u32..120,
        prop::collection::vec(
            prop_oneof![
                (1u32..25).prop_map(BudgetOp::Withdraw),
                (0u32..40).prop_map(BudgetOp::Deposit),
                (0u32..40, 1u32..25).prop_map(|(d, w)| BudgetOp::Both(d, w)),
            ],
            1..60,
        ),
    );
    let mut runner = TestRunner::new(config(64));
    let result = runner.run(&strategy, |(capacity, ops)| {
        let budget = RetryBudget::builder()
            .capacity(capacity)
            .retry_cost(1)
            .timeout_cost(1)
            .build()
            .unwrap();
        let key = fresh("budget");
        let mut tokens = Tokens::full(&budget);
        for (i, op) in ops.iter().enumerate() {
            let (deposit, withdraw) = match *op {
                BudgetOp::Withdraw(w) => (0, w),
                BudgetOp::Deposit(d) => (d, 0),
                BudgetOp::Both(d, w) => (d, w),
            };
            let r = eval(
                &redis,
                scripts::BUDGET,
                &[&key],
                &[
                    capacity.to_string(),
                    deposit.to_string(),
                    withdraw.to_string(),
                    "600000".into(),
                ],
            )
            .ints();
            tokens.deposit(&budget, deposit);
            let paid = withdraw == 0 || tokens.withdraw(withdraw);
            prop_assert_eq!(r[0] == 1, paid, "op {}", i);
            prop_assert_eq!(r[1], i64::from(tokens.0), "op {}", i);
            let ttl = redis.cmd(&["PTTL", &key]).int();
            if tokens.0 == capacity {
                prop_assert_eq!(ttl, -2, "op {}: a full bucket is no key", i);
            } else {
                prop_assert!(ttl > 0 && ttl <= 600_000, "op {}: ttl {}", i, ttl);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Heartbeats count the live processes and drop the silent ones; the
/// partition key is set once, by the first.
#[test]
fn heartbeats_count_processes_and_the_partition_key_is_set_once() {
    let redis = RedisServer::start();
    let members = fresh("members");
    let key = format!("{}-key", members);
    let beat = |process: &str, candidate: &str, live_ms: u32| {
        let reply = eval(
            &redis,
            scripts::HEARTBEAT,
            &[&members, &key],
            &[
                process.into(),
                live_ms.to_string(),
                candidate.into(),
                "90000000".into(),
            ],
        );
        let items = reply.array();
        (items[1].int(), items[2].text().unwrap())
    };
    assert_eq!(beat("a", "key-a", 60_000), (1, "key-a".into()));
    assert_eq!(beat("b", "key-b", 60_000), (2, "key-a".into()), "set once");
    assert_eq!(beat("a", "key-a", 60_000).0, 2, "the same process once");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        beat("c", "key-c", 20).0,
        1,
        "silent for longer than 20 ms: gone"
    );
    let ttl = redis.cmd(&["PTTL", &members]).int();
    assert!(ttl > 0 && ttl <= 20, "{ttl}");
    assert!(redis.cmd(&["PTTL", &key]).int() > 89_000_000);
}

// ---------------------------------------------------------------------
// The store.

fn headers(token: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", http::HeaderValue::from_static(token));
    h
}

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix("test")
        .connect()
        .await
        .expect("store")
}

/// Waits (real time, bounded) until `ok` holds.
async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Two stores (two processes' worth) give a credential the same partition
/// (and not the process's own); a hold noted by one reaches the other by
/// subscription, and reading it costs no round trip; the other
/// credential is not held.
#[tokio::test]
async fn a_hold_reaches_every_process_and_reading_it_costs_nothing() {
    let redis = RedisServer::start();
    let a = store(&redis).await;
    let b = store(&redis).await;
    let token = headers("Bearer token-a");
    let other = headers("Bearer token-b");
    assert_eq!(a.partition(&token), b.partition(&token));
    assert_ne!(
        a.partition(&token),
        Partition::of(&token),
        "the fleet's key"
    );
    assert_ne!(a.partition(&token), a.partition(&other));
    assert_eq!(a.partition(&HeaderMap::new()), Partition::ANONYMOUS);
    let key = EndpointKey::new("api.github.com", 443);
    let (ea, eb) = (a.endpoint(&key), b.endpoint(&key));
    let noted = Instant::now();
    assert_eq!(
        ea.block_for(a.partition(&token), Duration::from_secs(3))
            .await,
        Decided::Fleet
    );
    let before = b.stats().round_trips;
    eventually("the hold to reach b", || {
        eb.blocked_until(b.partition(&token)).is_some()
    })
    .await;
    let until = eb.blocked_until(b.partition(&token)).unwrap();
    let ahead = until.saturating_duration_since(noted);
    assert!(
        ahead > Duration::from_millis(2_900) && ahead <= Duration::from_millis(3_100),
        "{ahead:?}"
    );
    assert_eq!(eb.blocked_until(b.partition(&other)), None);
    assert!(eb.holding(Instant::now()) && b.holding(Instant::now()));
    assert!(
        !b.endpoint(&EndpointKey::new("other", 1))
            .holding(Instant::now())
    );
    assert_eq!(b.stats().round_trips, before, "reads are local");
    // A later process finds the hold at its start (the fleet's index).
    let c = store(&redis).await;
    assert!(
        c.endpoint(&key)
            .blocked_until(c.partition(&token))
            .is_some()
    );
}

/// With polling instead of a subscription, a hold reaches the others
/// within the poll interval.
#[tokio::test]
async fn a_hold_reaches_a_polling_process() {
    let redis = RedisServer::start();
    let a = store(&redis).await;
    let b = RedisStore::builder(redis.url())
        .prefix("test")
        .hold_sync(HoldSync::Poll(Duration::from_millis(50)))
        .connect()
        .await
        .unwrap();
    let token = headers("Bearer t");
    let key = EndpointKey::new("h", 1);
    let eb = b.endpoint(&key);
    a.endpoint(&key)
        .block_for(a.partition(&token), Duration::from_secs(5))
        .await;
    eventually("the poll", || {
        eb.blocked_until(b.partition(&token)).is_some()
    })
    .await;
}

/// The fleet's limit: one turn between two stores; a refusal says how
/// long, and the next ask that cannot be served in time is answered
/// without a round trip; a cost above the burst is refused at once.
#[tokio::test]
async fn one_limit_for_the_fleet_and_a_known_refusal_costs_no_round_trip() {
    let redis = RedisServer::start();
    let a = store(&redis).await;
    let b = store(&redis).await;
    let key = EndpointKey::new("api", 443);
    let (ea, eb) = (a.endpoint(&key), b.endpoint(&key));
    let limit = RateLimit::per_second(1).burst(1).build().unwrap();
    let turn = ea.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    assert_eq!(turn.decided(), Decided::Fleet);
    let refused = eb.acquire(&limit, 1, Duration::ZERO).await.unwrap_err();
    let FleetRefusal::TooLong { wait, decided } = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(decided, Decided::Fleet);
    assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
    let trips = b.stats().round_trips;
    let again = eb.acquire(&limit, 1, Duration::from_millis(100)).await;
    assert!(matches!(again, Err(FleetRefusal::TooLong { .. })));
    assert_eq!(b.stats().round_trips, trips, "known: no round trip");
    assert_eq!(b.stats().known_refusals, 1);
    // a place in line within the max wait
    let reserved = eb.acquire(&limit, 1, Duration::from_secs(2)).await.unwrap();
    assert!(reserved.at() > Instant::now() + Duration::from_millis(800));
    assert_eq!(b.stats().round_trips, trips + 1);
    eb.release(reserved).await;
    // A request that costs more than the burst waits for its turns, as in
    // the in-process limiter: 2 turns of a limit of 1 a second, the second
    // a second after the first free one.
    let heavy = eb.acquire(&limit, 2, Duration::MAX).await.unwrap();
    assert!(heavy.at() > Instant::now() + Duration::from_millis(1_800));
    assert_eq!(heavy.into_turn().cost(), 2);
}

/// Every key the store leaves expires; an endpoint's keys share one hash
/// tag; no key holds a credential.
#[tokio::test]
async fn every_key_expires_and_none_holds_a_credential() {
    let redis = RedisServer::start();
    let s = RedisStore::builder(redis.url())
        .prefix("app")
        .shared_budget(true)
        .share_open_circuits(true)
        .connect()
        .await
        .unwrap();
    let e = s.endpoint(&EndpointKey::new("API.example.com", 443));
    let token = headers("Bearer secret-token");
    let _turn = e
        .acquire(
            &RateLimit::per_second(1).build().unwrap(),
            1,
            Duration::ZERO,
        )
        .await
        .unwrap();
    e.block_for(s.partition(&token), Duration::from_secs(30))
        .await;
    assert_eq!(e.share_open(Duration::from_secs(5)).await, Decided::Fleet);
    let budget = RetryBudget::default();
    assert_eq!(e.withdraw(&budget, 5).await, (true, Decided::Fleet));
    let keys = redis.keys_and_ttls();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "app:{api.example.com:443}:budget",
            "app:{api.example.com:443}:holds",
            "app:{api.example.com:443}:limit",
            "app:{api.example.com:443}:open",
            "app:{app}:index",
            "app:{app}:members",
            "app:{app}:partition-key",
        ]
    );
    for (key, ttl) in &keys {
        assert!(*ttl > 0, "{key} does not expire ({ttl})");
        let dump = redis.cmd_bytes(&[b"DUMP", key.as_bytes()]);
        let text = format!("{dump:?}");
        assert!(!text.contains("secret-token"), "{key}: {text}");
    }
    // A process that stops leaves the fleet at once.
    drop((s, e));
    eventually("left", || {
        redis.cmd(&["ZCARD", "app:{app}:members"]).int() == 0
    })
    .await;
}

/// A shared budget is one bucket for the fleet: two stores get 100
/// retries of 5 out of 500 between them; refunds are batched (sent with
/// the next withdrawal) and none is sent while the bucket is full.
#[tokio::test]
async fn a_shared_budget_is_one_bucket_for_the_fleet() {
    let redis = RedisServer::start();
    let shared = |url: String| async move {
        RedisStore::builder(url)
            .prefix("test")
            .shared_budget(true)
            .connect()
            .await
            .unwrap()
    };
    let a = shared(redis.url()).await;
    let b = shared(redis.url()).await;
    let key = EndpointKey::new("api", 443);
    let (ea, eb) = (a.endpoint(&key), b.endpoint(&key));
    let budget = RetryBudget::default();
    let trips = a.stats().round_trips;
    ea.deposit(&budget, 1);
    assert_eq!(a.stats().round_trips, trips, "a full bucket: nothing sent");
    let mut paid = 0;
    for i in 0..150 {
        let e = if i % 2 == 0 { &ea } else { &eb };
        if e.withdraw(&budget, 5).await.0 {
            paid += 1;
        }
    }
    assert_eq!(paid, 100, "500 tokens, 5 a retry, for both");
    assert_eq!(ea.tokens(&budget), 0);
    for _ in 0..5 {
        ea.deposit(&budget, 1);
    }
    assert_eq!(
        ea.withdraw(&budget, 5).await,
        (true, Decided::Fleet),
        "the refunds went with it"
    );
    assert!(!eb.withdraw(&budget, 5).await.0);
    // A local budget (the default) is the process's own.
    let local = store(&redis).await;
    let el = local.endpoint(&key);
    assert_eq!(el.withdraw(&budget, 5).await, (true, Decided::Process));
    assert_eq!(el.tokens(&budget), 495);
}

fn capture() -> (
    tracing::subscriber::DefaultGuard,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    #[derive(Clone)]
    struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for W {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let w = W(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    (tracing::subscriber::set_default(subscriber), buf)
}

/// Redis killed: each process keeps to its share of the limit (the limit
/// over the live processes), with `WARN` events for the switch and the
/// return; restarted (empty): back to the shared limit, without a
/// restart, with holds noted meanwhile shared and the partition key put
/// back.
#[tokio::test]
async fn redis_killed_then_back_local_share_then_shared_again() {
    let (_guard, logs) = capture();
    let mut redis = RedisServer::start();
    let make = |url: String| async move {
        RedisStore::builder(url)
            .prefix("test")
            .heartbeat(Duration::from_millis(100))
            .retry_interval(Duration::from_millis(50))
            .connect()
            .await
            .unwrap()
    };
    let a = make(redis.url()).await;
    let b = make(redis.url()).await;
    eventually("both counted", || a.processes() == 2).await;
    let token = headers("Bearer t");
    let partition = a.partition(&token);
    let key = EndpointKey::new("api", 443);
    let e = a.endpoint(&key);
    let limit = RateLimit::per_second(10).burst(4).build().unwrap();
    redis.kill();
    // The first call finds Redis gone (refused at once); the fallback
    // decides, with a's share: 5 a second, a burst of 2.
    let first = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    assert_eq!(first.decided(), Decided::Fallback);
    assert!(!a.is_shared());
    let second = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    assert_eq!(second.decided(), Decided::Fallback);
    let refused = e.acquire(&limit, 1, Duration::ZERO).await.unwrap_err();
    let FleetRefusal::TooLong { wait, decided } = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(decided, Decided::Fallback);
    assert!(
        wait > Duration::from_millis(190) && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    let trips = a.stats().round_trips;
    let _ = e.acquire(&limit, 1, Duration::ZERO).await;
    assert_eq!(a.stats().round_trips, trips, "no call while local");
    // a hold noted while local stays here, and is shared on return
    assert_eq!(
        e.block_for(partition, Duration::from_secs(20)).await,
        Decided::Fallback
    );
    assert!(e.blocked_until(partition).is_some());
    redis.restart();
    eventually("a back", || a.is_shared()).await;
    eventually("b back", || b.is_shared()).await;
    assert_eq!(
        a.partition(&token),
        partition,
        "the partition key was put back"
    );
    assert_eq!(b.partition(&token), partition);
    eventually("the hold shared", || {
        b.endpoint(&key).blocked_until(partition).is_some()
    })
    .await;
    let turn = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    assert_eq!(turn.decided(), Decided::Fleet);
    let stats = a.stats();
    assert_eq!((stats.went_local, stats.came_back), (1, 1));
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("WARN") && text.contains("redis store unreachable: deciding locally"),
        "{text}"
    );
    assert!(text.contains("redis store reachable again"), "{text}");
    assert!(
        text.contains("fallback=\"local\"") || text.contains("fallback=local"),
        "{text}"
    );
}

/// Redis hung (SIGSTOP: connections are accepted, nothing answers): the
/// call answers at exactly the call timeout, from the fallback; the next
/// calls answer at once without asking; after SIGCONT the store is shared
/// again.
#[tokio::test]
async fn a_hung_redis_answers_at_the_call_timeout() {
    let redis = RedisServer::start();
    let s = RedisStore::builder(redis.url())
        .prefix("test")
        .call_timeout(Duration::from_millis(40))
        .retry_interval(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let e = s.endpoint(&EndpointKey::new("api", 443));
    let limit = RateLimit::per_second(100).build().unwrap();
    assert_eq!(
        e.acquire(&limit, 1, Duration::ZERO)
            .await
            .unwrap()
            .decided(),
        Decided::Fleet
    );
    redis.pause();
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let turn = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    // (tokio's timers tick in whole milliseconds: the clock was paused
    // between two ticks)
    let waited = tokio::time::Instant::now() - start;
    assert!(
        waited >= Duration::from_millis(40) && waited <= Duration::from_millis(41),
        "{waited:?}"
    );
    assert_eq!(turn.decided(), Decided::Fallback);
    let start = tokio::time::Instant::now();
    let turn = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    assert_eq!(tokio::time::Instant::now() - start, Duration::ZERO);
    assert_eq!(turn.decided(), Decided::Fallback);
    let budget = RetryBudget::default();
    assert_eq!(e.withdraw(&budget, 5).await, (true, Decided::Process));
    tokio::time::resume();
    redis.resume();
    eventually("shared again", || s.is_shared()).await;
    assert_eq!(
        e.acquire(&limit, 1, Duration::ZERO)
            .await
            .unwrap()
            .decided(),
        Decided::Fleet
    );
}

/// The other fallbacks: allow lets every request through the limit and
/// pays every retry; refuse refuses both.
#[tokio::test]
async fn fallbacks_allow_and_refuse() {
    let mut redis = RedisServer::start();
    let make = |fallback: Fallback| {
        let url = redis.url();
        async move {
            RedisStore::builder(url)
                .prefix("test")
                .shared_budget(true)
                .fallback(fallback)
                .retry_interval(Duration::from_secs(60))
                .connect()
                .await
                .unwrap()
        }
    };
    let allow = make(Fallback::Allow).await;
    let refuse = make(Fallback::Refuse).await;
    let local = make(Fallback::Local).await;
    redis.kill();
    let key = EndpointKey::new("api", 443);
    let limit = RateLimit::per_second(1).burst(1).build().unwrap();
    let budget = RetryBudget::default();
    for _ in 0..5 {
        let turn = allow
            .endpoint(&key)
            .acquire(&limit, 1, Duration::ZERO)
            .await;
        assert_eq!(turn.unwrap().decided(), Decided::Fallback);
        assert_eq!(
            allow.endpoint(&key).withdraw(&budget, 5).await,
            (true, Decided::Fallback)
        );
        assert_eq!(
            refuse
                .endpoint(&key)
                .acquire(&limit, 1, Duration::ZERO)
                .await
                .unwrap_err(),
            FleetRefusal::Unavailable
        );
        assert_eq!(
            refuse.endpoint(&key).withdraw(&budget, 5).await,
            (false, Decided::Fallback)
        );
    }
    // local: the process's share of the capacity (three processes: 166
    // tokens of 500, 33 retries)
    assert_eq!(local.processes(), 3);
    let el = local.endpoint(&key);
    let mut paid = 0;
    while el.withdraw(&budget, 5).await.0 {
        paid += 1;
    }
    assert_eq!(paid, 33);
    assert_eq!(allow.fallback(), Fallback::Allow);
}

/// A bad URL, bad settings, an unreachable server: typed errors with
/// stable codes that never show the URL's password; asked to, a store
/// starts without Redis (deciding locally) and joins when it comes.
#[tokio::test]
async fn bad_urls_bad_settings_and_unreachable_servers_are_typed_errors() {
    let err = RedisStore::builder("http://example.com")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.code(), "REDIS_INVALID_URL");
    assert!(!err.to_string().contains("example.com"), "{err}");
    let err = RedisStore::builder("redis://127.0.0.1:1")
        .prefix("a b")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.code(), "REDIS_INVALID_SETTING");
    assert!(err.to_string().contains("prefix"), "{err}");
    for (b, field) in [
        (
            RedisStore::builder("redis://127.0.0.1:1").call_timeout(Duration::ZERO),
            "call_timeout",
        ),
        (
            RedisStore::builder("redis://127.0.0.1:1").heartbeat(Duration::from_secs(7200)),
            "heartbeat",
        ),
        (
            RedisStore::builder("redis://127.0.0.1:1").expected_processes(0),
            "expected_processes",
        ),
        (
            RedisStore::builder("redis://127.0.0.1:1").hold_sync(HoldSync::Poll(Duration::ZERO)),
            "hold_sync",
        ),
    ] {
        let checked = b.check().unwrap_err();
        assert_eq!(checked.field(), field);
        let err = b.connect().await.unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
        assert_eq!(err, StoreError::InvalidSetting(checked));
    }
    let err = RedisStore::builder("redis://127.0.0.1:1")
        .retry_interval(Duration::from_secs(3601))
        .check()
        .unwrap_err();
    assert_eq!(err.reason(), "must be at most 1 hour (got 3601s)");
    let port = RedisServer::unused_port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/3");
    let err = RedisStore::builder(&url)
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.code(), "REDIS_UNREACHABLE");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("user"),
        "{text}"
    );
    let builder = RedisStore::builder(&url);
    assert!(!format!("{builder:?}").contains("hunter2"));
    // asked to: a local start, then the fleet when Redis comes
    let s = RedisStore::builder(format!("redis://127.0.0.1:{port}"))
        .start_without_redis(true)
        .expected_processes(4)
        .retry_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    assert!(!s.is_shared());
    assert_eq!(s.processes(), 4);
    assert!(!format!("{s:?}").contains("hunter2"));
    let limit = RateLimit::per_second(40).burst(8).build().unwrap();
    let e = s.endpoint(&EndpointKey::new("api", 443));
    let first = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    assert_eq!(first.decided(), Decided::Fallback);
    let second = e.acquire(&limit, 1, Duration::ZERO).await.unwrap();
    let third = e.acquire(&limit, 1, Duration::ZERO).await;
    assert!(
        matches!(third, Err(FleetRefusal::TooLong { .. })),
        "a quarter: a burst of 2"
    );
    e.release(second).await;
    let _given_back = e
        .acquire(&limit, 1, Duration::ZERO)
        .await
        .expect("given back");
    let _redis = RedisServer::start_on(port);
    eventually("joined", || s.is_shared()).await;
    assert_eq!(s.processes(), 1);
}

/// A configuration file's `[store]`: read and checked without a network,
/// then connected once; every policy of the set keeps its state in the
/// one store. An unreachable server is an error at connect, not a silent
/// local mode (unless the file asks for it).
#[cfg(feature = "serde")]
#[tokio::test]
async fn a_configuration_file_connects_every_policy_to_one_store() {
    use http_resilience::config::Config;
    use std::sync::Arc;
    let redis = RedisServer::start();
    let text = format!(
        r#"
        well_known = true
        store = {{ redis = "{}", prefix = "from-a-file", call_timeout = "30ms" }}
        [default]
        rate_limit = {{ requests = 20, per = "1s" }}
        [[routes]]
        host = "api.example.com"
        policy = {{ max_retries = 1 }}
        "#,
        redis.url()
    );
    let policies = Config::from_toml_str(&text)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let default = policies.default_policy();
    assert!(format!("{:?}", default.state_store()).contains("from-a-file"));
    assert_eq!(default.rate_limit().unwrap().requests(), 20);
    let mut stores = vec![default.state_store().clone()];
    stores.extend(policies.routes().map(|(_, p)| p.state_store().clone()));
    assert!(stores.len() > 2, "the file's route and the well-known ones");
    assert!(
        stores.iter().all(|s| Arc::ptr_eq(s, &stores[0])),
        "one store for every policy"
    );
    let (_, route) = policies.routes().next().unwrap();
    assert_eq!(route.max_retries(), 1);

    let port = RedisServer::unused_port();
    let dead =
        format!("store = {{ redis = \"redis://127.0.0.1:{port}\", connect_timeout = \"200ms\" }}");
    let err = Config::from_toml_str(&dead)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.code(), "REDIS_UNREACHABLE");
    let local = format!(
        "store = {{ redis = \"redis://127.0.0.1:{port}\", connect_timeout = \"200ms\", start_without_redis = true }}"
    );
    let policies = Config::from_toml_str(&local)
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(format!("{:?}", policies.default_policy().state_store()).contains("shared: false"));
}
