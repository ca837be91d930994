//! The git recipe: the real `git` binary, run by `git::run` under the git
//! preset's rules, against a local smart-HTTP server (hyper, calling `git
//! http-backend` as a CGI) that fails on purpose: the first requests with
//! 503, or every push. Real processes, so real time: the backoff is
//! shortened to 10 ms and the bounds are generous.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use http_resilience::{Jitter, Preset, RetryPolicy, git};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// What the server is told to do, and what it saw.
#[derive(Default)]
struct State {
    /// Answer this many of the next requests with 503.
    fail_next: usize,
    /// Answer every push request (`service=git-receive-pack`, `/git-receive-pack`) with 503.
    fail_pushes: bool,
    /// Every request: when, method, path and query.
    seen: Vec<(Instant, String)>,
}

struct GitServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitServer {
    async fn start(root: PathBuf) -> GitServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let root = root.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        let root = root.clone();
                        async move { Ok::<_, Infallible>(handle(request, &state, &root).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GitServer { addr, state, task }
    }

    fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }

    fn seen(&self) -> Vec<(Instant, String)> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The gaps between the requests the server saw, in milliseconds.
    fn gaps_ms(&self) -> Vec<u128> {
        let seen = self.seen();
        seen.windows(2)
            .map(|w| (w[1].0 - w[0].0).as_millis())
            .collect()
    }
}

async fn handle(
    request: hyper::Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    root: &Path,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let line = format!("{} {path}?{query}", request.method());
    let fail = {
        let mut st = state.lock().unwrap();
        st.seen.push((Instant::now(), line));
        let push = query.contains("git-receive-pack") || path.ends_with("/git-receive-pack");
        if st.fail_pushes && push {
            true
        } else if st.fail_next > 0 {
            st.fail_next -= 1;
            true
        } else {
            false
        }
    };
    if fail {
        return hyper::Response::builder()
            .status(503)
            .body(Full::new(Bytes::from_static(b"busy, try again\n")))
            .unwrap();
    }
    cgi(request, root, &path, &query).await
}

/// Runs `git http-backend` for one request (RFC 3875 CGI).
async fn cgi(
    request: hyper::Request<hyper::body::Incoming>,
    root: &Path,
    path: &str,
    query: &str,
) -> hyper::Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (content_type, encoding, protocol) = (
        header("content-type"),
        header("content-encoding"),
        header("git-protocol"),
    );
    let method = request.method().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", encoding)
        .env("GIT_PROTOCOL", protocol)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.unwrap();
    let _ = writer.await;
    let out = output.stdout;
    let (head_end, body_start) = match find(&out, b"\r\n\r\n") {
        Some(i) => (i, i + 4),
        None => {
            let i = find(&out, b"\n\n").expect("a CGI head");
            (i, i + 2)
        }
    };
    let mut response = hyper::Response::builder();
    let mut status = 200;
    for line in String::from_utf8_lossy(&out[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value[..3].parse().unwrap();
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .status(status)
        .body(Full::new(Bytes::copy_from_slice(&out[body_start..])))
        .unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `git` command with no user or system configuration and no prompts.
fn git_std(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

fn sh(args: &[&str]) -> String {
    let output = git_std(args).output().unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The same, for `git::run`.
fn git_tokio(args: &[&str]) -> tokio::process::Command {
    git_std(args).into()
}

/// A fresh folder with a bare repository `repo.git` (one commit on
/// `main`, pushes over HTTP allowed) and a work tree `work` cloned from it.
struct Repos {
    dir: PathBuf,
}

impl Repos {
    fn new(name: &str) -> Repos {
        let dir = std::env::temp_dir().join(format!("hr-git-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        sh(&["init", "-q", "--bare", &format!("{d}/repo.git")]);
        sh(&[
            "-C",
            &format!("{d}/repo.git"),
            "config",
            "http.receivepack",
            "true",
        ]);
        sh(&["init", "-q", &format!("{d}/seed")]);
        std::fs::write(dir.join("seed/a.txt"), "one\n").unwrap();
        sh(&["-C", &format!("{d}/seed"), "add", "a.txt"]);
        sh(&["-C", &format!("{d}/seed"), "commit", "-qm", "one"]);
        sh(&[
            "-C",
            &format!("{d}/seed"),
            "push",
            "-q",
            &format!("{d}/repo.git"),
            "HEAD:refs/heads/main",
        ]);
        sh(&[
            "clone",
            "-q",
            &format!("{d}/repo.git"),
            &format!("{d}/work"),
        ]);
        Repos { dir }
    }
    fn path(&self, p: &str) -> String {
        self.dir.join(p).to_str().unwrap().to_owned()
    }
}

impl Drop for Repos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The git preset, with the backoff shortened for a test (10 ms doubling,
/// no jitter); its other rules as they are.
fn policy() -> RetryPolicy {
    Preset::Git
        .builder()
        .initial_backoff(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

#[tokio::test]
async fn ls_remote_recovers_from_two_503s() {
    let repos = Repos::new("ls");
    let server = GitServer::start(repos.dir.clone()).await;
    server.state.lock().unwrap().fail_next = 2;
    let url = server.url("repo.git");
    let output = git::run(&policy(), || git_tokio(&["ls-remote", &url]))
        .await
        .unwrap();
    let listed = String::from_utf8(output.stdout).unwrap();
    assert!(listed.contains("refs/heads/main"), "{listed}");
    let seen = server.seen();
    // Three runs of `git ls-remote`: two 503'd at their first request,
    // the third asking for the refs (protocol v2: `info/refs`, then the
    // `ls-refs` command as a POST).
    let refs = seen
        .iter()
        .filter(|(_, l)| l.contains("/repo.git/info/refs"))
        .count();
    assert_eq!(refs, 3, "{seen:?}");
    assert!(seen.len() <= 4, "{seen:?}");
    let gaps = server.gaps_ms();
    assert!(gaps[0] >= 10 && gaps[1] >= 20, "{gaps:?}");
    println!(
        "git figure: ls-remote after 503, 503: 3 runs of git, {} requests, gaps {gaps:?} ms",
        seen.len()
    );
}

#[tokio::test]
async fn fetch_recovers_from_a_503_and_gets_the_new_commit() {
    let repos = Repos::new("fetch");
    let server = GitServer::start(repos.dir.clone()).await;
    // A second commit on the server's side, and the work tree's remote
    // pointed at the HTTP server.
    let seed = repos.path("seed");
    std::fs::write(repos.dir.join("seed/a.txt"), "two\n").unwrap();
    sh(&["-C", &seed, "commit", "-qam", "two"]);
    sh(&[
        "-C",
        &seed,
        "push",
        "-q",
        &repos.path("repo.git"),
        "HEAD:refs/heads/main",
    ]);
    let work = repos.path("work");
    sh(&[
        "-C",
        &work,
        "remote",
        "set-url",
        "origin",
        &server.url("repo.git"),
    ]);
    server.state.lock().unwrap().fail_next = 1;
    git::run(&policy(), || {
        git_tokio(&["-C", &work, "fetch", "--quiet", "origin"])
    })
    .await
    .unwrap();
    let fetched = sh(&["-C", &work, "rev-parse", "origin/main"]);
    let want = sh(&["-C", &repos.path("repo.git"), "rev-parse", "main"]);
    assert_eq!(fetched, want);
    let seen = server.seen();
    // The 503'd run, then the run that asked for the refs and the pack.
    assert_eq!(
        seen.iter().filter(|(_, l)| l.contains("info/refs")).count(),
        2,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, l)| l.starts_with("POST /repo.git/git-upload-pack")),
        "{seen:?}"
    );
    println!(
        "git figure: fetch after one 503: {} requests ({} runs of git), gaps {:?} ms",
        seen.len(),
        2,
        server.gaps_ms()
    );
}

#[tokio::test]
async fn a_missing_repository_is_not_retried() {
    let repos = Repos::new("missing");
    let server = GitServer::start(repos.dir.clone()).await;
    let url = server.url("nope.git");
    let error = git::run(&policy(), || git_tokio(&["ls-remote", &url]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "NOT_RETRYABLE", "{error}");
    assert_eq!(error.report().attempts(), 1);
    assert_eq!(server.seen().len(), 1);
    let failure = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<git::GitFailure>())
        .expect("a GitFailure");
    assert!(
        failure.stderr().contains("not found"),
        "{}",
        failure.stderr()
    );
}

#[tokio::test]
async fn a_push_is_never_retried() {
    let repos = Repos::new("push");
    let server = GitServer::start(repos.dir.clone()).await;
    server.state.lock().unwrap().fail_pushes = true;
    let work = repos.path("work");
    std::fs::write(repos.dir.join("work/b.txt"), "b\n").unwrap();
    sh(&["-C", &work, "add", "b.txt"]);
    sh(&["-C", &work, "commit", "-qm", "b"]);
    let url = server.url("repo.git");
    let error = git::run(&policy(), || {
        git_tokio(&["-C", &work, "push", "--quiet", &url, "HEAD:refs/heads/main"])
    })
    .await
    .unwrap_err();
    // git said 503 (a transient message), but a push runs once.
    assert_eq!(error.code(), "NOT_RETRYABLE", "{error}");
    assert_eq!(error.report().attempts(), 1);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        error.to_string().contains("503")
            || format!("{:?}", std::error::Error::source(&error)).contains("503")
    );
    // And with the server healthy, the same push goes through (once).
    server.state.lock().unwrap().fail_pushes = false;
    git::run(&policy(), || {
        git_tokio(&["-C", &work, "push", "--quiet", &url, "HEAD:refs/heads/main"])
    })
    .await
    .unwrap();
    println!(
        "git figure: push against 503: {} request, not retried",
        seen.len()
    );
}

#[tokio::test]
async fn gives_up_after_the_presets_retries_without_leaking_credentials() {
    let repos = Repos::new("creds");
    let server = GitServer::start(repos.dir.clone()).await;
    server.state.lock().unwrap().fail_next = usize::MAX;
    let url = format!("http://ci-bot:s3cr3t-t0ken@{}/repo.git", server.addr);
    let error = git::run(&policy(), || git_tokio(&["ls-remote", &url]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "MAX_RETRIES_EXCEEDED", "{error}");
    // The preset's 3 retries: 4 runs.
    assert_eq!(error.report().attempts(), 4);
    assert_eq!(server.seen().len(), 4);
    let failure = std::error::Error::source(&error).unwrap();
    let all = format!("{error} {error:?} {failure} {failure:?}");
    assert!(!all.contains("s3cr3t"), "{all}");
    println!(
        "git figure: always 503: {} runs, gaps {:?} ms",
        server.seen().len(),
        server.gaps_ms()
    );
}
