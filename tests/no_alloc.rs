//! Selecting a request's policy from an endpoint set allocates nothing,
//! whatever the number of rules, the host's case, wildcard depth or a
//! per-request override. Checked with a counting global allocator (this
//! test binary only).

// A counting global allocator implements `GlobalAlloc`, an unsafe trait.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{Extensions, HeaderMap, Method};
use http_resilience::{EndpointPolicies, RequestMeta, RetryPolicy, Route};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// thread-local counter is const-initialised, so counting never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn selecting_a_policy_does_not_allocate() {
    let mut b = EndpointPolicies::builder();
    for i in 0..300 {
        b = b.route(
            Route::host(format!("svc{i}.example.com")).path_prefix("/v1/"),
            RetryPolicy::default(),
        );
    }
    let set = b
        .route(
            Route::host("*.example.org").path_glob("**/items"),
            RetryPolicy::github(),
        )
        .route(Route::any().methods([Method::POST]), RetryPolicy::openai())
        .build()
        .unwrap();
    let headers = HeaderMap::new();
    let mut ext = Extensions::new();
    let requests = [
        RequestMeta::new(&Method::GET, "https", "svc7.example.com", "/v1/x", &headers),
        RequestMeta::new(
            &Method::GET,
            "https",
            "A.B.Example.ORG",
            "/shop/items",
            &headers,
        ),
        RequestMeta::new(&Method::POST, "https", "unknown.net", "/", &headers),
        RequestMeta::new(&Method::GET, "https", "", "/", &headers),
    ];
    let mut picked = Vec::with_capacity(requests.len());
    let n = allocations_during(|| {
        for req in &requests {
            picked.push(set.select_with(&ext, req).preset());
        }
    });
    assert_eq!(n, 0, "selection allocated {n} times");
    use http_resilience::Preset;
    assert_eq!(
        picked,
        [None, Some(Preset::GitHub), Some(Preset::OpenAi), None]
    );

    ext.insert(RetryPolicy::disabled());
    let n = allocations_during(|| {
        assert_eq!(set.select_with(&ext, &requests[1]).max_retries(), 0);
    });
    assert_eq!(n, 0, "an override allocated {n} times");
}

/// The success path allocates nothing: a first-attempt success through the
/// tower layer (default policy: retry budget and server-quota holds on)
/// makes no allocation of the crate's (no report attached, no endpoint
/// looked up), and the decision core alone none either. A retried request
/// stays bounded. The inner service and the requests are the test's and
/// allocate nothing themselves.
#[test]
fn the_success_path_allocates_nothing() {
    use std::convert::Infallible;
    use std::time::Instant;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode, Uri};
    use http_body_util::Full;
    use http_resilience::{
        Admission, Decision, Jitter, Outcome, ResponseExt, RetryLayer, RetryState,
    };
    use tower::{Layer, Service};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let uri = Uri::from_static("http://api.example.com/v1/items");
    let request = || {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri.clone();
        request
    };
    // 503 on every other call when `flaky`, else 200.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = |flaky: bool| {
        let calls = calls.clone();
        tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let status = if flaky && n.is_multiple_of(2) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            *response.status_mut() = status;
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let policy = RetryPolicy::builder().jitter(Jitter::None).build().unwrap();
    let mut svc = RetryLayer::new(policy.clone()).layer(service(false));
    rt.block_on(async {
        // Warm up (the runtime's and the timer's own first allocations).
        let _ = svc.call(request()).await.unwrap();
        let before = ALLOCATIONS.with(Cell::get);
        let response = svc.call(request()).await.unwrap();
        let attempts = response.retry_report().attempts();
        drop(response);
        let n = ALLOCATIONS.with(Cell::get) - before;
        assert_eq!(n, 0, "a first-attempt success allocated {n} times");
        assert_eq!(attempts, 1);
    });

    // The decision core: new, admit and decide for a 200.
    let headers = HeaderMap::new();
    let response_headers = HeaderMap::new();
    let meta = RequestMeta::new(&Method::GET, "https", "api.example.com", "/", &headers);
    let n = allocations_during(|| {
        let now = Instant::now();
        let mut state = RetryState::new(&policy, &meta, now);
        assert_eq!(state.admit(&meta, now), Admission::Send);
        let outcome = Outcome::response(StatusCode::OK, &response_headers);
        assert_eq!(state.decide(&meta, &outcome, now), Decision::Return);
    });
    assert_eq!(n, 0, "the decision core allocated {n} times");

    // A request that succeeds after one retry: its history, its backoff,
    // the wait (with the 503 kept through it) and the report attached to
    // the response (the map, its table and the boxed value).
    let mut svc = RetryLayer::new(policy).layer(service(true));
    rt.block_on(async {
        // Warm up the timer (its first sleep allocates its wheel).
        let _ = svc.call(request()).await.unwrap();
        let before = ALLOCATIONS.with(Cell::get);
        let response = svc.call(request()).await.unwrap();
        let attempts = response.retry_report().attempts();
        drop(response);
        let n = ALLOCATIONS.with(Cell::get) - before;
        assert_eq!(attempts, 2);
        assert!(n <= 7, "a retried request allocated {n} times");
    });
}
