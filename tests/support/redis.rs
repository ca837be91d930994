//! A real `redis-server` for the tests: started on a free loopback port
//! with no persistence, stopped on drop, and killed, paused (SIGSTOP: a
//! hung server whose port still accepts connections), resumed and
//! restarted on the same port at will. No test depends on a Redis already
//! running. `.ci/run` installs `redis-server` when it is missing.
//!
//! [`RedisServer::cmd`] is a minimal synchronous RESP client for looking at
//! the keys the store leaves (types, TTLs) and for running the scripts
//! directly.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One reply of the RESP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).unwrap().parse().unwrap(),
            other => panic!("not a number: {other:?}"),
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
    pub fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
    pub fn ints(&self) -> Vec<i64> {
        self.array().iter().map(Reply::int).collect()
    }
}

/// A `redis-server` child process of the test.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: std::env::temp_dir().join(format!("hr-redis-{}", uuid_like())),
                child: None,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port (5 tries)");
    }

    /// A port that nothing listens on, for a server that is never started.
    pub fn unused_port() -> u16 {
        free_port()
    }

    /// Starts one on `port` (for a test that starts its store first).
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            port,
            dir: std::env::temp_dir().join(format!("hr-redis-{}", uuid_like())),
            child: None,
        };
        assert!(server.spawn(), "redis-server did not start on port {port}");
        server
    }

    fn spawn(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run redis-server ({e}): install it with `apt-get install -y redis-server` \
                 (.ci/run does)"
            ),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Exited: the port was taken meanwhile.
                let _ = status;
                self.child = None;
                return false;
            }
            if self.try_cmd(&["PING"]).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle on a server started by someone else (for another thread):
    /// it does not stop it.
    pub fn attach(port: u16) -> RedisServer {
        RedisServer {
            port,
            dir: PathBuf::new(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: connections are reset, the port refuses.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGSTOP: the server hangs (the kernel still accepts connections).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends one command on a new connection and reads its reply.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        self.try_cmd(args).expect("redis command")
    }

    /// [`cmd`](Self::cmd) with byte arguments.
    pub fn cmd_bytes(&self, args: &[&[u8]]) -> Reply {
        let mut conn = self.connect().expect("connect");
        send(&mut conn, args).expect("send");
        read_reply(&mut BufReader::new(conn)).expect("reply")
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut conn = self.connect()?;
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        send(&mut conn, &bytes)?;
        read_reply(&mut BufReader::new(conn))
    }

    /// A connection subscribed to `channel`: read its messages with
    /// [`Subscriber::next`].
    pub fn subscribe(&self, channel: &str) -> Subscriber {
        let mut conn = self.connect().unwrap();
        send(&mut conn, &[b"SUBSCRIBE", channel.as_bytes()]).unwrap();
        let mut reader = BufReader::new(conn);
        let confirm = read_reply(&mut reader).unwrap();
        assert_eq!(confirm.array()[0].text().as_deref(), Some("subscribe"));
        Subscriber { reader }
    }

    /// The commands clients sent (not those scripts ran) for `wait`, as
    /// `MONITOR` shows them.
    pub fn monitor(&self, wait: Duration) -> Vec<String> {
        let mut conn = self.connect().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        send(&mut conn, &[b"MONITOR"]).unwrap();
        let mut reader = BufReader::new(conn);
        let end = Instant::now() + wait;
        let mut lines = Vec::new();
        while Instant::now() < end {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.starts_with('+') && line != "+OK\r\n" && !line.contains("[0 lua]") {
                        lines.push(line.trim_end().to_owned());
                    }
                }
                Err(_) => continue,
            }
        }
        lines
    }

    /// Every key, with its remaining time to live in ms (-1: none).
    pub fn keys_and_ttls(&self) -> Vec<(String, i64)> {
        let keys = self.cmd(&["KEYS", "*"]);
        let mut out: Vec<(String, i64)> = keys
            .array()
            .iter()
            .map(|k| {
                let k = k.text().unwrap();
                let ttl = self.cmd(&["PTTL", &k]).int();
                (k, ttl)
            })
            .collect();
        out.sort();
        out
    }
}

/// A subscribed connection.
pub struct Subscriber {
    reader: BufReader<TcpStream>,
}

impl Subscriber {
    /// The next message's payload (within 5 s).
    pub fn next(&mut self) -> String {
        let reply = read_reply(&mut self.reader).expect("a message");
        let items = reply.array();
        assert_eq!(items[0].text().as_deref(), Some("message"));
        items[2].text().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn send(conn: &mut TcpStream, args: &[&[u8]]) -> std::io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    conn.write_all(&out)
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let body = line.trim_end_matches("\r\n");
    let (kind, rest) = body.split_at(1);
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().unwrap()),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        other => panic!("unexpected RESP type {other:?} in {line:?}"),
    })
}
