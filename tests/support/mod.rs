//! The fault-injection server of the whole suite: scripted HTTP/1.1 on
//! 127.0.0.1:0.
//!
//! Each path has a script: one [`Step`] per attempt, the last one repeating.
//! A step answers with a status, headers and body, or misbehaves: a TCP
//! reset before any response, a clean close before any response, a hang
//! (until the client goes away), raw bytes written in timed parts (a head
//! then a reset mid-body, a slow trickle, malformed header values), or a
//! seeded coin toss between two steps (the soak's injected failures).
//! Every request is recorded (time on tokio's clock, method, headers, body)
//! for assertions; recording can be switched off for long runs, and
//! per-path attempt counts are always kept. The server runs as tasks on
//! the test's runtime, so it works under a paused clock; dropping the
//! [`Server`] ends its accept loop and every connection task.

#![allow(dead_code)]

pub mod capture;
pub mod clients;
#[cfg(all(feature = "reqwest", feature = "hyper-util"))]
pub mod net;
pub mod spans;
pub mod table;
#[cfg(all(feature = "reqwest", feature = "hyper-util"))]
pub mod tls;

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

/// Epoch seconds `secs` after [`fixed_now`], as `x-ratelimit-reset` writes
/// them.
pub fn epoch_after(secs: u64) -> String {
    (fixed_now().duration_since(UNIX_EPOCH).unwrap().as_secs() + secs).to_string()
}

/// A 200 saying the endpoint's quota is gone until `secs` after
/// [`fixed_now`] (`x-ratelimit-remaining: 0` and `x-ratelimit-reset`, as
/// GitHub sends them).
pub fn quota_gone(secs: u64) -> Step {
    let reset = epoch_after(secs);
    Step::with(
        200,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", reset.as_str()),
        ],
    )
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
    /// Read the request and never answer (the connection task ends when
    /// the client closes the connection).
    Hang,
    /// Write `parts` in order, each after its delay, then end the
    /// connection as `end` says. The bytes are written as they are, so they
    /// can be any response, well-formed or not.
    Raw {
        parts: Vec<(Duration, Vec<u8>)>,
        end: End,
    },
    /// A seeded coin toss per attempt: `fail` with probability
    /// `fail_per_million` / 1,000,000, else `ok`. The toss depends only on
    /// the path's attempt number and `seed`, so runs are reproducible.
    Chance {
        fail_per_million: u32,
        seed: u64,
        fail: Box<Step>,
        ok: Box<Step>,
    },
    /// A deterministic pattern: the path's n-th attempt gets
    /// `steps[n % steps.len()]` (a tail of slow responses, one in twenty).
    Cycle(Vec<Step>),
    /// Wait `after`, watching the connection, then do `then`. A client
    /// that goes away meanwhile (a cancelled attempt: its connection
    /// closed) is recorded ([`Server::cancelled`]) and nothing is sent.
    Delay { after: Duration, then: Box<Step> },
}

/// How a [`Step::Raw`] ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    /// Keep the connection for the next request (the parts must then be one
    /// complete response).
    KeepAlive,
    /// Close cleanly (FIN).
    Close,
    /// Reset (RST).
    Reset,
}

impl Step {
    /// A response with this status, headers and body.
    pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Step {
        Step::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
        }
    }
    pub fn status(status: u16) -> Step {
        Step::with(status, &[])
    }
    pub fn with(status: u16, headers: &[(&str, &str)]) -> Step {
        Step::respond(status, headers, &format!("body of {status}"))
    }
    pub fn body(status: u16, body: &str) -> Step {
        Step::respond(status, &[], body)
    }
    /// A head announcing `declared` body bytes, then `sent` of them, then a
    /// reset: the response arrives, its body fails midway.
    pub fn head_then_reset(status: u16, declared: usize, sent: &str) -> Step {
        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {declared}\r\n\r\n{sent}");
        Step::Raw {
            parts: vec![(Duration::ZERO, head.into_bytes())],
            end: End::Reset,
        }
    }
    /// A complete response whose body arrives one byte every `every`.
    pub fn trickle_body(status: u16, body: &str, every: Duration) -> Step {
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut parts = vec![(Duration::ZERO, head.into_bytes())];
        parts.extend(body.bytes().map(|b| (every, vec![b])));
        Step::Raw {
            parts,
            end: End::KeepAlive,
        }
    }
    /// A complete response whose head (and body) arrives one byte every
    /// `every`: with a short attempt timeout the head never completes in
    /// time.
    pub fn trickle_head(status: u16, every: Duration) -> Step {
        let all = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
        Step::Raw {
            parts: all.bytes().map(|b| (every, vec![b])).collect(),
            end: End::KeepAlive,
        }
    }
    /// A complete response with raw header lines (`name: value` bytes,
    /// without CRLF), which may hold bytes no header value should.
    pub fn raw_headers(status: u16, lines: &[&[u8]], body: &str) -> Step {
        let mut out =
            format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len()).into_bytes();
        for line in lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        Step::Raw {
            parts: vec![(Duration::ZERO, out)],
            end: End::KeepAlive,
        }
    }
    /// `then`, after `after` (see [`Step::Delay`]).
    pub fn after(after: Duration, then: Step) -> Step {
        Step::Delay {
            after,
            then: Box::new(then),
        }
    }
    /// One attempt in `every` (the last of each run of `every`) answered
    /// by `slow`, the others by `fast`: a deterministic tail.
    pub fn one_in(every: usize, slow: Step, fast: Step) -> Step {
        assert!(every > 0);
        let mut steps = vec![fast; every - 1];
        steps.push(slow);
        Step::Cycle(steps)
    }
    /// `fail` for about `p` of the attempts (seeded), `ok` otherwise.
    pub fn chance(p: f64, seed: u64, fail: Step, ok: Step) -> Step {
        Step::Chance {
            fail_per_million: (p.clamp(0.0, 1.0) * 1_000_000.0).round() as u32,
            seed,
            fail: Box::new(fail),
            ok: Box::new(ok),
        }
    }
}

/// SplitMix64: a good 64-bit mix of the attempt number and the seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Resolves coin tosses down to a plain step.
fn resolve(step: &Step, n: usize) -> Step {
    match step {
        Step::Chance {
            fail_per_million,
            seed,
            fail,
            ok,
        } => {
            let roll = mix(seed ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)) % 1_000_000;
            if roll < u64::from(*fail_per_million) {
                resolve(fail, n)
            } else {
                resolve(ok, n)
            }
        }
        Step::Cycle(steps) if !steps.is_empty() => resolve(&steps[n % steps.len()], n),
        other => other.clone(),
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
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    scripts: HashMap<String, Vec<Step>>,
    /// Attempts per path, recorded or not.
    counts: HashMap<String, usize>,
    recording: bool,
    seen: Vec<Seen>,
    /// Attempts whose client went away before they were answered (a
    /// [`Step::Delay`] that saw its connection close): path and when.
    cancelled: Vec<(String, Instant)>,
    /// Responses the client stopped reading: path, when the write failed,
    /// and how many bytes of the whole response had been written.
    unread: Vec<(String, Instant, usize)>,
}

impl Default for State {
    fn default() -> State {
        State {
            scripts: HashMap::new(),
            counts: HashMap::new(),
            recording: true,
            seen: Vec::new(),
            cancelled: Vec::new(),
            unread: Vec::new(),
        }
    }
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
            // Aborting this task drops the set, which aborts every
            // connection task: nothing outlives the server.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                while connections.try_join_next().is_some() {}
                connections.spawn(serve(stream, shared.clone()));
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

    /// Switches recording of requests on or off (on by default). Attempt
    /// counts are kept either way.
    pub fn set_recording(&self, on: bool) {
        self.state.lock().unwrap().recording = on;
    }

    /// How many requests `path` received.
    pub fn count(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .counts
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// How many requests were received on every path together.
    pub fn total(&self) -> usize {
        self.state.lock().unwrap().counts.values().sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When each attempt on `path` whose client went away before it was
    /// answered saw its connection close ([`Step::Delay`]).
    pub fn cancelled(&self, path: &str) -> Vec<Instant> {
        let st = self.state.lock().unwrap();
        st.cancelled
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, at)| *at)
            .collect()
    }

    /// The responses on `path` that could not be written whole because the
    /// client stopped reading and closed the connection: when, and how
    /// many bytes (head included) had gone out.
    pub fn unread(&self, path: &str) -> Vec<(Instant, usize)> {
        let st = self.state.lock().unwrap();
        st.unread
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, at, n)| (*at, *n))
            .collect()
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
        let path = seen.path.clone();
        let mut step = {
            let mut st = state.lock().unwrap();
            let count = st.counts.entry(seen.path.clone()).or_insert(0);
            let n = *count;
            *count += 1;
            let step = st
                .scripts
                .get(&seen.path)
                .map(|steps| resolve(&steps[n.min(steps.len() - 1)], n))
                .unwrap_or_else(|| Step::status(404));
            if st.recording {
                st.seen.push(seen);
            }
            step
        };
        while let Step::Delay { after, then } = step {
            let until = Instant::now() + after;
            // Anything the client sends meanwhile is kept for the next
            // request; only its going away ends the wait.
            let gone = loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break false,
                    more = read_more(&mut stream, &mut buf) => if !more { break true },
                }
            };
            if gone {
                state.lock().unwrap().cancelled.push((path, Instant::now()));
                return;
            }
            step = *then;
        }
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
                if let Err(written) = write_counting(&mut stream, out.as_bytes()).await {
                    state
                        .lock()
                        .unwrap()
                        .unread
                        .push((path, Instant::now(), written));
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
                // Never answer; notice the client going away.
                while read_more(&mut stream, &mut buf).await {}
                return;
            }
            Step::Raw { parts, end } => {
                for (delay, bytes) in parts {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                match end {
                    End::KeepAlive => {}
                    End::Close => {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    End::Reset => {
                        let _ = stream.set_zero_linger();
                        return;
                    }
                }
            }
            Step::Chance { .. } | Step::Cycle(_) => unreachable!("resolved above"),
            Step::Delay { .. } => unreachable!("waited out above"),
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

/// Writes `bytes` whole; `Err` with how many went out if the connection
/// failed first.
async fn write_counting(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]).await {
            Ok(0) | Err(_) => return Err(written),
            Ok(n) => written += n,
        }
    }
    Ok(())
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
