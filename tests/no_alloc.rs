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
