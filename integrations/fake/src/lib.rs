//! The integrations' fake API: scripted HTTP/1.1 on 127.0.0.1:0. Each path
//! has a script, one [`Reply`] per request, the last one repeating; every
//! request is recorded with its time on tokio's clock (so waits can be
//! read under a paused clock), method, headers and body. Dropping the
//! [`FakeApi`] stops it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }
    /// The same, with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Vec<Reply>>,
    served: HashMap<String, usize>,
    seen: Vec<Seen>,
}

pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(request, &state).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi { addr, state, task }
    }

    /// Sets the script of `path` (without the query string).
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty());
        let mut st = self.state.lock().unwrap();
        st.scripts.insert(path.into(), replies);
        st.served.remove(path);
    }

    /// `http://127.0.0.1:port`, no trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests to `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        let st = self.state.lock().unwrap();
        st.seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    /// The gaps between the requests to `path`.
    pub fn gaps(&self, path: &str) -> Vec<Duration> {
        let seen = self.seen(path);
        seen.windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    state: &Mutex<State>,
) -> hyper::Response<Full<Bytes>> {
    let at = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let reply = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen {
            at,
            method,
            path: path.clone(),
            headers,
            body,
        });
        let n = {
            let served = st.served.entry(path.clone()).or_insert(0);
            *served += 1;
            *served - 1
        };
        st.scripts
            .get(&path)
            .map(|script| script[n.min(script.len() - 1)].clone())
            .unwrap_or_else(|| Reply::json(404, "{\"message\":\"Not Found\"}"))
    };
    let mut response = hyper::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        response = response.header(k, v);
    }
    response.body(Full::new(Bytes::from(reply.body))).unwrap()
}
