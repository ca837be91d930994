//! A scripted HTTP/1.1 server on 127.0.0.1:0 for the adapter tests.
//!
//! Each path has a script: one [`Step`] per attempt, the last one repeating.
//! A step answers with a status, headers and body, or misbehaves at the
//! TCP level (reset, clean close before any response, hang). Every request
//! is recorded (time on tokio's clock, method, headers, body) for
//! assertions. The server runs as a task on the test's runtime, so it works
//! under a paused clock.

#![allow(dead_code)]

pub mod clients;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A fixed "now" shared by the server (to write HTTP-dates and resets) and
/// the policies under test (through `wall_clock`).
pub fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// What the server does for one attempt.
#[derive(Clone, Debug)]
pub enum Step {
    /// Answer with this status, headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then reset the connection (RST).
    Reset,
    /// Read the request head, then close the connection cleanly without a
    /// response.
    Close,
    /// Read the request and never answer.
    Hang,
}

impl Step {
    pub fn status(status: u16) -> Step {
        Step::Respond {
            status,
            headers: vec![],
            body: format!("body of {status}"),
        }
    }
    pub fn with(status: u16, headers: &[(&str, &str)]) -> Step {
        Step::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: format!("body of {status}"),
        }
    }
    pub fn body(status: u16, body: &str) -> Step {
        Step::Respond {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Vec<Step>>,
    seen: Vec<Seen>,
}

pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Server { addr, state, task }
    }

    /// Sets the script of `path`.
    pub fn script(&self, path: &str, steps: Vec<Step>) {
        assert!(!steps.is_empty());
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_string(), steps);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request seen on `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// An address on which nothing listens: connections are refused.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
    // dropped here: the port is closed
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(seen) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let step = {
            let mut st = state.lock().unwrap();
            let n = st.seen.iter().filter(|s| s.path == seen.path).count();
            let step = st
                .scripts
                .get(&seen.path)
                .map(|steps| steps[n.min(steps.len() - 1)].clone())
                .unwrap_or_else(|| Step::status(404));
            st.seen.push(seen);
            step
        };
        match step {
            Step::Respond {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in &headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                if stream.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
            Step::Close => {
                let _ = stream.shutdown().await;
                return;
            }
            Step::Hang => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Reads one request (head and body, Content-Length or chunked).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let (head_len, method, path, headers) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (
                n,
                req.method.unwrap().to_string(),
                req.path.unwrap().to_string(),
                headers,
            );
        }
        if !read_more(stream, buf).await {
            return None;
        }
    };
    buf.drain(..head_len);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        let len: usize = len.trim().parse().ok()?;
        while buf.len() < len {
            if !read_more(stream, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..len));
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !read_more(stream, buf).await {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !read_more(stream, buf).await {
                    return None;
                }
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    Some(Seen {
        at: Instant::now(),
        method,
        path,
        headers,
        body,
    })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
