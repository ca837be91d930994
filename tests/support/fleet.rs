//! The HTTP server of the fleet tests (and of `examples/fleet.rs`): one
//! loopback server that many worker processes send to, recording every
//! request's arrival on the wall clock (which every process on this
//! machine shares, as the Redis server does), its path and its
//! credential.
//!
//! - `/rate`: 200;
//! - `/quota`: 200; once armed, the first request with credential
//!   `Bearer token-a` at or after the armed time gets GitHub's "quota
//!   gone" (`x-ratelimit-remaining: 0`, `x-ratelimit-reset` in epoch
//!   seconds, at least 3 s ahead);
//! - `/outage`: 503.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One request, as the server saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at_ms: i64,
    pub path: String,
    pub credential: String,
}

/// When the quota of `token-a` was announced gone, and its reset.
#[derive(Debug, Clone, Copy)]
pub struct QuotaGone {
    pub at_ms: i64,
    pub reset_ms: i64,
}

#[derive(Default)]
struct State {
    arrivals: Vec<Arrival>,
    armed_at: Option<i64>,
    gone: Option<QuotaGone>,
}

/// The server: its accept loop ends when it is dropped.
pub struct FleetServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FleetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FleetServer {
    pub async fn start() -> FleetServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FleetServer { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// From `after` on, the next request of `token-a` to `/quota` is told
    /// its quota is gone.
    pub fn arm_quota(&self, after: Duration) {
        self.state.lock().unwrap().armed_at = Some(wall_ms() + after.as_millis() as i64);
    }

    pub fn quota_gone(&self) -> Option<QuotaGone> {
        self.state.lock().unwrap().gone
    }

    pub fn arrivals(&self, path: &str) -> Vec<Arrival> {
        self.state
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|a| a.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.arrivals(path).len()
    }
}

fn answer(state: &Mutex<State>, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let at_ms = wall_ms();
    let path = req.uri().path().to_owned();
    let credential = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut state = state.lock().unwrap();
    let mut response = Response::builder();
    let status = match path.as_str() {
        "/outage" => 503,
        "/quota" => {
            let armed = state.armed_at.is_some_and(|t| at_ms >= t);
            if armed && state.gone.is_none() && credential == "Bearer token-a" {
                // GitHub's epoch seconds: the reset is at least 3 s ahead.
                let reset_s = (at_ms + 3_000 + 999) / 1000;
                state.gone = Some(QuotaGone {
                    at_ms,
                    reset_ms: reset_s * 1000,
                });
                response = response
                    .header("x-ratelimit-remaining", "0")
                    .header("x-ratelimit-reset", reset_s.to_string());
            }
            200
        }
        _ => 200,
    };
    state.arrivals.push(Arrival {
        at_ms,
        path,
        credential,
    });
    response
        .status(status)
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap()
}
