//! The state store at scale (`InMemoryStore`):
//!
//! - **memory for 1,000,000 distinct hosts**: a crawler's pattern, each
//!   host looked up once through `StateStore::endpoint` (one retry paid
//!   and refunded, so the entry ends at rest, as after a 503 then a 200),
//!   with the default store and with smaller capacities; then the same
//!   with 1% of the hosts failing for good (their budget stays drained, so
//!   their entries are not at rest and are kept). Peak and retained live
//!   bytes are counted by a global allocator that counts only while this
//!   part runs.
//! - **contention on one hot endpoint**: requests per second through the
//!   decision core (`RetryState::new` + `admit` + `decide` for a 200) with
//!   load protection on and a store that is *not* quiet (another
//!   endpoint's bucket is below capacity), so every request looks its
//!   endpoint up; with the default policy, with a circuit breaker, and with
//!   a (never binding) rate limit; and the lookup alone
//!   (`InMemoryStore::endpoint`). Each on a multi-thread tokio runtime with
//!   1, 2 and 8 worker threads, 64 tasks sharing the work: operations per
//!   second (wall clock) and CPU time per operation (every thread's, from
//!   `/proc/self/task/*/schedstat`), the best of 7 rounds, since a round in
//!   which another process held a core says nothing about this one.
//!
//! A plain `main` (`harness = false`): `cargo bench --bench store`
//! (about a minute; `QUICK=1` for a few seconds); `STORE_ONLY=memory` or
//! `STORE_ONLY=contention` for one part.
// The counting global allocator implements `GlobalAlloc`, an unsafe trait.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http_resilience::{
    CircuitBreaker, EndpointKey, InMemoryStore, Outcome, RateLimit, RetryBudget, RetryPolicy,
    RetryState, StateStore,
};

use support::CoreInputs;

// ---------------------------------------------------------------------------
// A global allocator that counts live bytes only while `COUNT` is on, so
// that the contention part pays one uncontended load per allocation and
// shares no counter between threads.

struct Gated;

static COUNT: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping
// only touches atomics.
unsafe impl GlobalAlloc for Gated {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        on_free(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_free(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Gated = Gated;

fn on_alloc(size: usize) {
    if COUNT.load(Ordering::Relaxed) {
        let live = LIVE.fetch_add(size as isize, Ordering::Relaxed) + size as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

fn on_free(size: usize) {
    if COUNT.load(Ordering::Relaxed) {
        LIVE.fetch_sub(size as isize, Ordering::Relaxed);
    }
}

/// Counts from zero (frees of older allocations count as negative).
fn count_from_zero() {
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNT.store(true, Ordering::Relaxed);
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Memory for 1,000,000 distinct hosts

const HOSTS: usize = 1_000_000;

struct MemoryRow {
    store: String,
    failing: &'static str,
    entries: usize,
    peak: isize,
    retained: isize,
    took: Duration,
}

/// One host's request as the engine makes it: the endpoint looked up, a
/// retry paid; then either refunded (a 200 after the retry: at rest) or
/// not (it failed for good: the bucket stays below capacity).
fn crawl(store: &InMemoryStore, budget: &RetryBudget, fail_every: Option<usize>) {
    let mut host = String::with_capacity(32);
    for i in 0..HOSTS {
        use std::fmt::Write;
        host.clear();
        write!(host, "host-{i}.example.com").unwrap();
        let endpoint = store.endpoint(&EndpointKey::new(&host, 443));
        assert!(endpoint.withdraw(budget, budget.retry_cost()));
        if fail_every.is_none_or(|n| i % n != 0) {
            endpoint.deposit(budget, budget.retry_cost());
        }
    }
}

fn memory_row(
    name: String,
    make: impl FnOnce() -> InMemoryStore,
    fail_every: Option<usize>,
) -> MemoryRow {
    let budget = RetryBudget::default();
    count_from_zero();
    let store = make();
    let start = Instant::now();
    crawl(&store, &budget, fail_every);
    let took = start.elapsed();
    let retained = live();
    let peak = peak();
    let entries = store.len();
    drop(store);
    COUNT.store(false, Ordering::Relaxed);
    MemoryRow {
        store: name,
        failing: if fail_every.is_some() { "1%" } else { "none" },
        entries,
        peak,
        retained,
        took,
    }
}

fn memory() {
    let sized = |capacity: usize| {
        move || {
            InMemoryStore::builder()
                .capacity(capacity)
                .idle_timeout(Duration::from_secs(365 * 24 * 3600))
                .build()
                .expect("valid store")
        }
    };
    let rows = vec![
        memory_row("default (capacity 10,000)".into(), InMemoryStore::new, None),
        memory_row(
            "default (capacity 10,000)".into(),
            InMemoryStore::new,
            Some(100),
        ),
        memory_row("capacity 100,000".into(), sized(100_000), None),
        memory_row(
            "capacity 1,000,000 (nothing evicted)".into(),
            sized(1_000_000),
            None,
        ),
    ];
    println!(
        "\nmemory: {HOSTS} distinct hosts through `StateStore::endpoint`, each paying a retry (refunded unless failing)"
    );
    println!(
        "| store | hosts failing for good | entries kept | peak live bytes | retained live bytes | bytes per entry kept | time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} s |",
            r.store,
            r.failing,
            r.entries,
            r.peak,
            r.retained,
            r.retained as f64 / r.entries.max(1) as f64,
            r.took.as_secs_f64()
        );
    }
    // The bound the default capacity implies: 10,000 entries of at most
    // 256 bytes each (key, map slot and sweep order included).
    let bound = 10_000 * 256;
    let default = &rows[0];
    assert!(
        default.peak <= bound as isize,
        "{} bytes at peak, beyond {bound}",
        default.peak
    );
    println!(
        "(default store: peak {} bytes, within capacity x 256 bytes = {bound})",
        default.peak
    );
}

// ---------------------------------------------------------------------------
// Contention on one hot endpoint

const TASKS: usize = 64;

#[derive(Clone, Copy)]
enum Case {
    /// `RetryState::new` + `admit` + `decide` for a 200.
    Core,
    /// `InMemoryStore::endpoint`, the `Arc` dropped.
    Lookup,
}

/// CPU time of this process's threads alive now, from the scheduler's
/// per-thread figures (`/proc/self/task/*/schedstat`, in nanoseconds);
/// `None` off Linux. Taken inside the runtime, so that its workers count.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// (ops per second, CPU nanoseconds per op) with `workers` worker threads:
/// `TASKS` tasks share `ops` operations, yielding every 256.
fn throughput(
    workers: usize,
    ops: usize,
    case: Case,
    policy: &RetryPolicy,
    store: &Arc<InMemoryStore>,
) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .expect("runtime");
    let per_task = ops / TASKS;
    let start = Instant::now();
    let cpu = rt.block_on(async {
        let cpu = cpu_time();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let policy = policy.clone();
            let store = store.clone();
            tasks.spawn(async move {
                let inputs = CoreInputs::new();
                let meta = inputs.request();
                let empty = http::HeaderMap::new();
                let key = EndpointKey::new("api.example.com", 443);
                let t0 = Instant::now();
                for i in 0..per_task {
                    match case {
                        Case::Core => {
                            let ok = Outcome::response(StatusCode::OK, &empty);
                            let mut state = RetryState::new(&policy, &meta, t0);
                            black_box(state.admit(&meta, t0));
                            black_box(state.decide(&meta, &ok, t0));
                        }
                        Case::Lookup => {
                            black_box(store.endpoint(black_box(&key)));
                        }
                    }
                    if i % 256 == 255 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        cpu.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a))
    });
    let took = start.elapsed();
    let done = (per_task * TASKS) as f64;
    let cpu = cpu.map_or(f64::NAN, |cpu| cpu.as_nanos() as f64 / done);
    (done / took.as_secs_f64(), cpu)
}

fn contention() {
    let quick = support::quick();
    let (ops, rounds) = if quick { (400_000, 3) } else { (2_000_000, 7) };
    let store = Arc::new(InMemoryStore::new());
    let policy = |b: http_resilience::RetryPolicyBuilder| {
        b.state_store(store.clone()).build().expect("valid policy")
    };
    let default = policy(RetryPolicy::builder());
    let breaker = policy(RetryPolicy::builder().circuit_breaker(CircuitBreaker::default()));
    let limited = policy(
        RetryPolicy::builder().rate_limit(
            RateLimit::builder(1_000_000_000, Duration::from_secs(1))
                .burst(u32::MAX)
                .build()
                .expect("valid limit"),
        ),
    );
    // Not quiet: another endpoint's bucket is below capacity, so every
    // request looks its own endpoint up.
    let budget = RetryBudget::default();
    assert!(
        store
            .endpoint(&EndpointKey::new("elsewhere.example.com", 443))
            .withdraw(&budget, 5)
    );
    assert!(!store.quiet(tokio::time::Instant::now().into_std()));

    let cases: [(&str, Case, &RetryPolicy); 4] = [
        ("decision core, 200, default policy", Case::Core, &default),
        (
            "decision core, 200, with a circuit breaker",
            Case::Core,
            &breaker,
        ),
        (
            "decision core, 200, with a rate limit",
            Case::Core,
            &limited,
        ),
        ("`InMemoryStore::endpoint` alone", Case::Lookup, &default),
    ];
    // `STORE_CASE=0..3` and `STORE_WORKERS=n`: one case at one worker
    // count, for `perf`.
    let only_case: Option<usize> = std::env::var("STORE_CASE")
        .ok()
        .map(|c| c.parse().expect("a case number"));
    let workers: Vec<usize> = match std::env::var("STORE_WORKERS") {
        Ok(n) => vec![n.parse().expect("a worker count")],
        Err(_) => vec![1, 2, 8],
    };
    println!(
        "\ncontention: one endpoint, store not quiet, {TASKS} tasks; million ops/s (ratio to 1 worker) and CPU ns per op, best of {rounds} rounds of {ops}; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| case | 1 worker | 2 workers | 8 workers | CPU ns per op, 1 / 2 / 8 workers |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, case, policy)) in cases.into_iter().enumerate() {
        if only_case.is_some_and(|c| c != i) {
            continue;
        }
        let mut row = Vec::new();
        let mut cpu = Vec::new();
        for &w in &workers {
            throughput(w, ops / 10, case, policy, &store);
            let runs: Vec<(f64, f64)> = (0..rounds)
                .map(|_| throughput(w, ops, case, policy, &store))
                .collect();
            // The best round: the machine is shared, and a round in which
            // another process took a core says nothing about ours.
            row.push(runs.iter().map(|r| r.0).fold(0.0, f64::max));
            cpu.push(runs.iter().map(|r| r.1).fold(f64::INFINITY, f64::min));
        }
        let cells: Vec<String> = row
            .iter()
            .map(|r| format!("{:.2} ({:.2}x)", r / 1e6, r / row[0]))
            .collect();
        let cpu: Vec<String> = cpu.iter().map(|c| format!("{c:.0}")).collect();
        println!("| {name} | {} | {} |", cells.join(" | "), cpu.join(" / "));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not run
    // this binary's work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    match std::env::var("STORE_ONLY").as_deref() {
        Ok("memory") => memory(),
        Ok("contention") => contention(),
        Ok(other) => panic!("STORE_ONLY={other}: memory or contention"),
        Err(_) => {
            memory();
            contention();
        }
    }
}
