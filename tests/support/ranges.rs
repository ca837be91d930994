//! A loopback server of one resource that honours (or, as scripted,
//! mishandles) byte ranges: the test bed of resumable bodies and
//! downloads. Raw HTTP/1.1 over tokio's TCP, so that a cut is exact: the
//! bytes before the cut are written and flushed, then the connection is
//! closed (FIN) before the announced length, and the client has read
//! exactly those bytes when it sees the body fail.
//!
//! Each request gets the next [`Fault`] of the script (the last one
//! repeats); every request's `Range` and `If-Range` are recorded. One
//! response per connection (`connection: close`).
//!
//! Also used by `examples/download.rs` (through `#[path]`), so it needs
//! nothing from the rest of `tests/support`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve it right: `Range: bytes=N-` with a matching (or no) `If-Range`
    /// gets a 206 from `N`; anything else the whole resource.
    Honest,
    /// Serve it right, but close the connection after `n` body bytes of
    /// this response.
    CutAfter(usize),
    /// Serve it right, but reset the connection (RST) after `n` body
    /// bytes: the client may lose some of what was sent.
    ResetAfter(usize),
    /// Serve it right, but stop after `n` body bytes and send nothing more
    /// until the client goes away.
    StallAfter(usize),
    /// Serve it right, but one chunk of `chunk` bytes at a time, waiting
    /// each time for [`RangeServer::release`] before the next.
    Paced { chunk: usize },
    /// Ignore `Range`: a 200 with the whole resource.
    IgnoreRange,
    /// A 206 as if the range started at `start`, with those bytes.
    WrongStart(u64),
    /// Answer as if the resource had another validator (`ETag`) and
    /// content: a 200 with the changed content (the `If-Range` fails).
    Changed,
    /// The 206 carries a weak `ETag`.
    WeakTag,
    /// The 206's `Content-Range` is impossible (`bytes 500-400/...`).
    ImpossibleRange,
    /// The 206 says the whole length is `n`.
    WrongTotal(u64),
    /// This status, an empty body.
    Status(u16),
    /// A `503` with `Retry-After: <secs>`, an empty body.
    Unavailable { retry_after: u64 },
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct SeenRange {
    pub method: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub accept_encoding: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes written for it.
    pub written: usize,
}

/// How the resource validates.
#[derive(Clone, Debug)]
pub enum Validation {
    /// `ETag: "<tag>"` (weak with `W/` if `weak`).
    ETag { tag: String, weak: bool },
    /// `Last-Modified`, with a `Date` one hour later (a strong date).
    LastModified,
    /// None at all.
    None,
}

struct State {
    content: Arc<Vec<u8>>,
    validation: Validation,
    accept_ranges: bool,
    script: Vec<Fault>,
    seen: Vec<SeenRange>,
}

pub struct RangeServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Notified each time a response stalls or finishes a paced chunk.
    progress: Arc<Notify>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
pub const DATE: &str = "Tue, 14 Nov 2023 23:13:20 GMT";

/// Deterministic content: `len` bytes of a xorshift stream.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl RangeServer {
    /// Serves `content` with `ETag: "v1"` and `Accept-Ranges: bytes`.
    pub async fn start(content: Vec<u8>, script: Vec<Fault>) -> RangeServer {
        Self::with(
            content,
            Validation::ETag {
                tag: "v1".into(),
                weak: false,
            },
            true,
            script,
        )
        .await
    }

    pub async fn with(
        content: Vec<u8>,
        validation: Validation,
        accept_ranges: bool,
        script: Vec<Fault>,
    ) -> RangeServer {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            content: Arc::new(content),
            validation,
            accept_ranges,
            script,
            seen: Vec::new(),
        }));
        let progress = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (s, p, r) = (state.clone(), progress.clone(), release.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                while connections.try_join_next().is_some() {}
                connections.spawn(serve(stream, s.clone(), p.clone(), r.clone()));
            }
        });
        RangeServer {
            addr,
            state,
            progress,
            release,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<SeenRange> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn set_script(&self, script: Vec<Fault>) {
        self.state.lock().unwrap().script = script;
    }

    /// Waits until some response stalls (or a paced chunk is written).
    pub async fn progressed(&self) {
        self.progress.notified().await;
    }

    /// Lets a paced response write its next chunk.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

fn etag_header(validation: &Validation) -> Option<String> {
    match validation {
        Validation::ETag { tag, weak: false } => Some(format!("\"{tag}\"")),
        Validation::ETag { tag, weak: true } => Some(format!("W/\"{tag}\"")),
        _ => None,
    }
}

async fn serve(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    progress: Arc<Notify>,
    release: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let (method, headers) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        if let Ok(httparse::Status::Complete(_)) = req.parse(&buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (req.method.unwrap_or("").to_string(), headers);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let range = header("range");
    let if_range = header("if-range");
    let (index, fault, content, validation, accept_ranges) = {
        let mut st = state.lock().unwrap();
        let n = st.seen.len();
        let fault = st.script[n.min(st.script.len() - 1)].clone();
        st.seen.push(SeenRange {
            method: method.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            accept_encoding: header("accept-encoding"),
            status: 0,
            written: 0,
        });
        (
            n,
            fault,
            st.content.clone(),
            st.validation.clone(),
            st.accept_ranges,
        )
    };
    let len = content.len() as u64;
    let mut validator_lines = Vec::new();
    let current_tag = etag_header(&validation);
    if let Some(tag) = &current_tag {
        validator_lines.push(format!("etag: {tag}"));
    }
    if let Validation::LastModified = validation {
        validator_lines.push(format!("last-modified: {LAST_MODIFIED}"));
        validator_lines.push(format!("date: {DATE}"));
    }
    if accept_ranges {
        validator_lines.push("accept-ranges: bytes".into());
    }
    // The honest reading of the request.
    let asked = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let if_range_ok = match (&if_range, &validation) {
        (None, _) => true,
        (Some(v), Validation::LastModified) => v == LAST_MODIFIED,
        (Some(v), _) => Some(v) == current_tag.as_ref(),
    };
    let honest_start = match asked {
        Some(n) if if_range_ok => Some(n),
        _ => None,
    };

    let (status, lines, body): (u16, Vec<String>, Vec<u8>) = match (&fault, honest_start) {
        (Fault::Status(code), _) => (*code, vec![], vec![]),
        (Fault::Unavailable { retry_after }, _) => {
            (503, vec![format!("retry-after: {retry_after}")], vec![])
        }
        (Fault::Changed, _) => {
            let other = changed_content(&content);
            (
                200,
                vec!["etag: \"v2\"".into(), "accept-ranges: bytes".into()],
                other,
            )
        }
        (Fault::IgnoreRange, _) | (_, None) => (200, validator_lines.clone(), content.to_vec()),
        (_, Some(n)) if n >= len => (416, vec![format!("content-range: bytes */{len}")], vec![]),
        (Fault::WrongStart(start), Some(_)) => {
            let s = (*start).min(len - 1);
            let mut l = validator_lines.clone();
            l.push(format!("content-range: bytes {s}-{}/{len}", len - 1));
            (206, l, content[s as usize..].to_vec())
        }
        (Fault::WeakTag, Some(n)) => {
            let mut l: Vec<String> = validator_lines
                .iter()
                .filter(|x| !x.starts_with("etag"))
                .cloned()
                .collect();
            l.push("etag: W/\"v1\"".into());
            l.push(format!("content-range: bytes {n}-{}/{len}", len - 1));
            (206, l, content[n as usize..].to_vec())
        }
        (Fault::ImpossibleRange, Some(n)) => {
            let mut l = validator_lines.clone();
            l.push(format!("content-range: bytes {}-{n}/{len}", n + 100));
            (206, l, content[n as usize..].to_vec())
        }
        (Fault::WrongTotal(total), Some(n)) => {
            let mut l = validator_lines.clone();
            l.push(format!("content-range: bytes {n}-{}/{total}", len - 1));
            (206, l, content[n as usize..].to_vec())
        }
        (_, Some(n)) => {
            let mut l = validator_lines.clone();
            l.push(format!("content-range: bytes {n}-{}/{len}", len - 1));
            (206, l, content[n as usize..].to_vec())
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for line in &lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let record = |written: usize| {
        let mut st = state.lock().unwrap();
        let seen = &mut st.seen[index];
        seen.status = status;
        seen.written = written;
    };
    let reset = matches!(fault, Fault::ResetAfter(_));
    let (limit, stall, paced) = match fault {
        Fault::CutAfter(n) | Fault::ResetAfter(n) => (n.min(body.len()), false, None),
        Fault::StallAfter(n) => (n.min(body.len()), true, None),
        Fault::Paced { chunk } => (body.len(), false, Some(chunk.max(1))),
        _ => (body.len(), false, None),
    };
    let mut written = 0;
    match paced {
        Some(chunk) => {
            while written < limit {
                let end = (written + chunk).min(limit);
                if stream.write_all(&body[written..end]).await.is_err() {
                    record(written);
                    return;
                }
                let _ = stream.flush().await;
                written = end;
                record(written);
                progress.notify_one();
                if written < limit {
                    release.notified().await;
                }
            }
        }
        None => {
            if stream.write_all(&body[..limit]).await.is_err() {
                record(0);
                return;
            }
            written = limit;
        }
    }
    let _ = stream.flush().await;
    record(written);
    if reset {
        let _ = stream.set_zero_linger();
        return;
    }
    if stall {
        progress.notify_one();
        // Nothing more; notice the client going away.
        let mut sink = [0u8; 1024];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        return;
    }
    let _ = stream.shutdown().await;
}

/// The "changed" resource: the same length, other bytes.
fn changed_content(content: &[u8]) -> Vec<u8> {
    content.iter().map(|b| b.wrapping_add(1)).collect()
}
