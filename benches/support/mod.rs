//! What the bench binaries share: quick mode, the `tower::retry` policy that
//! stands in for ours, a loopback HTTP/1.1 server, an interleaved timing
//! loop for same-run ratios, and a counting global allocator.
//!
//! Each binary uses only part of this module.
#![allow(dead_code)]
// The counting global allocator implements `GlobalAlloc`, an unsafe trait.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;

/// `QUICK` set in the environment: the whole set in well under two minutes.
pub fn quick() -> bool {
    std::env::var_os("QUICK").is_some()
}

/// Criterion's configuration for every bench, shortened under `QUICK`.
pub fn config() -> Criterion {
    let c = Criterion::default();
    if quick() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c
    }
}

// ---------------------------------------------------------------------------
// The decision core's three cases (benches `core` and `alloc`)

/// What the decision-core cases borrow: request and response headers, and
/// the transport error.
pub struct CoreInputs {
    request_headers: http::HeaderMap,
    empty: http::HeaderMap,
    retry_after: http::HeaderMap,
    io_error: std::io::Error,
}

impl CoreInputs {
    pub fn new() -> CoreInputs {
        let mut retry_after = http::HeaderMap::new();
        retry_after.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        CoreInputs {
            request_headers: http::HeaderMap::new(),
            empty: http::HeaderMap::new(),
            retry_after,
            io_error: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        }
    }

    /// `GET https://api.example.com/v1/items`.
    pub fn request(&self) -> http_resilience::RequestMeta<'_> {
        http_resilience::RequestMeta::new(
            &http::Method::GET,
            "https",
            "api.example.com",
            "/v1/items",
            &self.request_headers,
        )
    }

    /// (criterion id, table label, outcome): a 200, a 503 with
    /// `Retry-After: 2`, a connection reset.
    pub fn cases(&self) -> [(&'static str, &'static str, http_resilience::Outcome<'_>); 3] {
        use http_resilience::{FailureKind, Outcome};
        [
            (
                "200_success",
                "200 success",
                Outcome::response(StatusCode::OK, &self.empty),
            ),
            (
                "503_retry_after_2",
                "503 + Retry-After: 2",
                Outcome::response(StatusCode::SERVICE_UNAVAILABLE, &self.retry_after),
            ),
            (
                "connection_reset",
                "connection reset",
                Outcome::Error {
                    kind: FailureKind::ConnectionReset,
                    error: &self.io_error,
                },
            ),
        ]
    }
}

// ---------------------------------------------------------------------------
// tower::retry with a policy equivalent to `RetryPolicy::default()`

/// `tower::retry::Policy` doing what the default [`RetryPolicy`] does on
/// the paths benched here: up to 3 retries of 408, 429 and 5xx (but 501 and
/// 505) and of transport errors, with exponential backoff from 500 ms
/// capped at 30 s (tower's own jitter, which adds up to 100% rather than
/// drawing in full); the request is cloned for each attempt, as ours is.
///
/// [`RetryPolicy`]: http_resilience::RetryPolicy
#[derive(Clone)]
pub struct TowerPolicy {
    retries_left: u32,
    backoff: ExponentialBackoff<HasherRng>,
}

impl TowerPolicy {
    pub fn new() -> Self {
        let mut maker = ExponentialBackoffMaker::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            1.0,
            HasherRng::default(),
        )
        .expect("valid backoff");
        TowerPolicy {
            retries_left: 3,
            backoff: maker.make_backoff(),
        }
    }
}

fn transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429)
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

impl<B: Clone, R, E> tower::retry::Policy<Request<B>, Response<R>, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<Self::Future> {
        let again = match result {
            Ok(response) => transient(response.status()),
            Err(_) => true,
        };
        if again && self.retries_left > 0 {
            self.retries_left -= 1;
            Some(self.backoff.next_backoff())
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Some(req.clone())
    }
}

// ---------------------------------------------------------------------------
// Loopback server

/// What the loopback server answers.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    /// 200 with a 13-byte body, always.
    Ok,
    /// 503 to every odd-numbered request it receives (1st, 3rd, ...), 200
    /// to the others: a client that retries once per 503 sees each of its
    /// requests fail once and then succeed.
    FailEveryOther,
}

pub const BODY: &[u8] = b"hello, world\n";

/// Starts an HTTP/1.1 server on 127.0.0.1:0 on its own thread (a
/// current-thread runtime, so it uses one core at most) and returns its
/// address. It lives until the process ends.
pub fn start_server(script: Script) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("report address");
                let seen = Arc::new(AtomicU64::new(0));
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                            let n = seen.fetch_add(1, Ordering::Relaxed);
                            let status = match script {
                                Script::FailEveryOther if n.is_multiple_of(2) => {
                                    StatusCode::SERVICE_UNAVAILABLE
                                }
                                _ => StatusCode::OK,
                            };
                            let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                            *response.status_mut() = status;
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })
        .expect("spawn server thread");
    rx.recv().expect("server address")
}

// ---------------------------------------------------------------------------
// Same-run ratios

/// One contender in an interleaved comparison: `run(n)` does `n` operations
/// and returns how long they took.
pub struct Contender<'a> {
    pub name: &'static str,
    pub run: Box<dyn FnMut(u64) -> Duration + 'a>,
}

/// Runs the contenders in turn, `rounds` times, each for `per_round`
/// operations, and returns each one's median nanoseconds per operation.
/// Interleaving the rounds spreads machine noise (other builds on a shared
/// box, frequency changes) over all contenders alike, so the ratios are
/// steadier than those of separate criterion runs.
pub fn interleaved(contenders: &mut [Contender<'_>], rounds: usize, per_round: u64) -> Vec<f64> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); contenders.len()];
    // One untimed round first: connections, caches, lazy statics.
    for c in contenders.iter_mut() {
        (c.run)(per_round.div_ceil(4).max(1));
    }
    for _ in 0..rounds {
        for (i, c) in contenders.iter_mut().enumerate() {
            let took = (c.run)(per_round);
            samples[i].push(took.as_nanos() as f64 / per_round as f64);
        }
    }
    samples.into_iter().map(median).collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A boxed, non-`Send` future, for contenders kept in one list.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

// ---------------------------------------------------------------------------
// Counting allocator

/// A global allocator that forwards to [`System`] and counts. Allocation
/// counts are per thread and only while [`Counting::track`] is on for that
/// thread (so a server thread in the same process is left out); live and
/// peak bytes are process-wide.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TRACK_PEAK: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

impl Counting {
    /// Turns per-thread counting on or off for the calling thread.
    pub fn track(on: bool) {
        TRACK.with(|t| t.set(on));
    }
    /// (allocations, bytes allocated) on this thread while tracked.
    pub fn counts() -> (u64, u64) {
        (ALLOCS.with(Cell::get), BYTES.with(Cell::get))
    }
    /// Bytes live now, process-wide.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }
    /// Starts tracking the high-water mark from the current live bytes.
    pub fn reset_peak() {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        TRACK_PEAK.store(true, Ordering::Relaxed);
    }
    /// The high-water mark of live bytes since [`Counting::reset_peak`].
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }

    fn on_alloc(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if TRACK_PEAK.load(Ordering::Relaxed) {
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        // `try_with`: the thread-locals may be gone while a thread exits.
        let _ = TRACK.try_with(|t| {
            if t.get() {
                ALLOCS.with(|a| a.set(a.get() + 1));
                BYTES.with(|b| b.set(b.get() + size as u64));
            }
        });
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping
// only touches atomics and const-initialised thread-locals, which do not
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Counting::on_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Counting::on_alloc(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A realloc counts as one allocation of the new size.
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Counting::on_alloc(new_size);
        }
        p
    }
}

/// The default policy (retry budget and server-quota holds on) and the
/// same with load protection off, for the benches that compare them.
pub fn protection_on_off() -> (http_resilience::RetryPolicy, http_resilience::RetryPolicy) {
    let on = http_resilience::RetryPolicy::default();
    let off = http_resilience::RetryPolicy::builder()
        .retry_budget(None)
        .server_limits(false)
        .build()
        .expect("valid policy");
    assert!(on.retry_budget().is_some() && on.server_limits());
    (on, off)
}
