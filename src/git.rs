//! git on the command line: the HTTP client most programs use for git is
//! the `git` binary itself, run as a subprocess (`git clone`, `git fetch`).
//!
//! [`classify_stderr`] reads what `git` printed when it failed and says
//! whether it is worth running again; [`is_read_only`] tells a command that
//! only reads from the remote (`fetch`, `ls-remote`, `clone`, `pull`) from one
//! that writes to it (`push`), which is never repeated (as
//! [`RetryPolicy::git`](crate::RetryPolicy::git) never resends a `POST .../git-receive-pack`); with
//! the feature `git`, [`run`] runs a command under a policy through the
//! [any-operation driver](crate::op) with both, and hands back its output
//! or the crate's [`Error`](crate::Error) with a [`GitFailure`] inside.
//!
//! ```
//! use http_resilience::{Class, FailureKind};
//! use http_resilience::git::classify_stderr;
//!
//! let busy = "fatal: unable to access 'https://example.com/r.git/': The requested URL returned error: 503";
//! assert_eq!(classify_stderr(busy).class(), Class::Transient);
//! let dns = "fatal: unable to access 'https://exmaple.com/r.git/': Could not resolve host: exmaple.com";
//! assert_eq!(classify_stderr(dns).failure_kind(), FailureKind::Connect);
//! let denied = "remote: Invalid username or token.\nfatal: Authentication failed for 'https://example.com/r.git/'";
//! assert_eq!(classify_stderr(denied).class(), Class::Permanent);
//! ```
//!
//! # The messages
//!
//! Matched without regard to case, anywhere in the text; a permanent one
//! wins over a transient one (an authentication failure after a reset is
//! still an authentication failure); anything else is permanent (retrying
//! an unknown failure of a command that may write is the worse mistake).
//!
//! | git prints | class | kind |
//! |---|---|---|
//! | `Authentication failed`, `could not read Username`, `could not read Password`, `Invalid username or password`, `Permission denied`, `Repository not found`, `repository '…' not found`, `does not appear to be a git repository`, `not a git repository`, `couldn't find remote ref`, `unknown revision`, `invalid refspec`, `SSL certificate problem`, `server certificate verification failed`, `[rejected]`, `non-fast-forward`, `pre-receive hook declined`, `protected branch` | permanent | other (`SSL`: tls) |
//! | `The requested URL returned error: N` | by N: 408, 429, 5xx except 501 and 505 transient; any other permanent | other |
//! | `Could not resolve host`, `Could not resolve proxy`, `Failed to connect`, `Connection refused`, `Couldn't connect to server` | transient | connect |
//! | `Operation timed out`, `Connection timed out`, `timed out` | transient | timeout |
//! | `Connection reset`, `Recv failure`, `SSL_read`, `GnuTLS recv error`, `OpenSSL SSL_read` | transient | connection_reset |
//! | `RPC failed`, `early EOF`, `the remote end hung up unexpectedly`, `unexpected disconnect`, `Empty reply from server`, `HTTP/2 stream`, `transfer closed with outstanding read data`, `index-pack failed`, `fetch-pack: invalid index-pack output` | transient | connection_closed |
//! | anything else | permanent | other |

use std::fmt;

use crate::classify::FailureKind;
use crate::op::ErrorClass;

/// Messages that say a run again will fail the same way.
const PERMANENT: &[&str] = &[
    "authentication failed",
    "could not read username",
    "could not read password",
    "invalid username or password",
    "permission denied",
    "repository not found",
    "does not appear to be a git repository",
    "not a git repository",
    "couldn't find remote ref",
    "unknown revision",
    "invalid refspec",
    "[rejected]",
    "non-fast-forward",
    "pre-receive hook declined",
    "protected branch",
];

/// TLS messages: permanent, kind `tls`.
const TLS: &[&str] = &[
    "ssl certificate problem",
    "server certificate verification failed",
];

/// Transient messages, with their kind.
const TRANSIENT: &[(&str, FailureKind)] = &[
    ("could not resolve host", FailureKind::Connect),
    ("could not resolve proxy", FailureKind::Connect),
    ("failed to connect", FailureKind::Connect),
    ("connection refused", FailureKind::Connect),
    ("couldn't connect to server", FailureKind::Connect),
    ("operation timed out", FailureKind::Timeout),
    ("connection timed out", FailureKind::Timeout),
    ("timed out", FailureKind::Timeout),
    ("connection reset", FailureKind::ConnectionReset),
    ("recv failure", FailureKind::ConnectionReset),
    ("ssl_read", FailureKind::ConnectionReset),
    ("gnutls recv error", FailureKind::ConnectionReset),
    ("rpc failed", FailureKind::ConnectionClosed),
    ("early eof", FailureKind::ConnectionClosed),
    (
        "the remote end hung up unexpectedly",
        FailureKind::ConnectionClosed,
    ),
    ("unexpected disconnect", FailureKind::ConnectionClosed),
    ("empty reply from server", FailureKind::ConnectionClosed),
    ("http/2 stream", FailureKind::ConnectionClosed),
    (
        "transfer closed with outstanding read data",
        FailureKind::ConnectionClosed,
    ),
    ("index-pack failed", FailureKind::ConnectionClosed),
    ("invalid index-pack output", FailureKind::ConnectionClosed),
];

/// The marker git (through curl) prints before an HTTP status.
const RETURNED_ERROR: &str = "the requested url returned error: ";

/// Whether what `git` printed on its standard error (`stderr`) when it
/// failed is worth running the command again for (see the [module
/// docs](self) for the table), with the failure's kind for the report.
pub fn classify_stderr(stderr: &str) -> ErrorClass {
    let text = stderr.to_ascii_lowercase();
    if TLS.iter().any(|m| text.contains(m)) {
        return ErrorClass::permanent().kind(FailureKind::Tls);
    }
    // "repository 'https://…/x.git/' not found": the URL sits in between.
    let not_found = text
        .lines()
        .any(|l| l.contains("repository '") && l.trim_end().ends_with("not found"));
    if not_found || PERMANENT.iter().any(|m| text.contains(m)) {
        return ErrorClass::permanent();
    }
    if let Some(status) = returned_status(&text) {
        return match status {
            408 | 429 => ErrorClass::transient(),
            501 | 505 => ErrorClass::permanent(),
            500..=599 => ErrorClass::transient(),
            _ => ErrorClass::permanent(),
        };
    }
    match TRANSIENT.iter().find(|(m, _)| text.contains(m)) {
        Some((_, kind)) => ErrorClass::transient().kind(*kind),
        None => ErrorClass::permanent(),
    }
}

/// The status in "The requested URL returned error: 503", if git printed
/// one.
fn returned_status(lowercase: &str) -> Option<u16> {
    let at = lowercase.find(RETURNED_ERROR)? + RETURNED_ERROR.len();
    let digits: String = lowercase[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether the git command with these arguments (without the program
/// name) only reads from its remote: `fetch`, `ls-remote`, `clone`,
/// `pull` (which writes only to the local repository), `remote update`
/// and `remote show`, `archive --remote`, `submodule update`. `push`, and
/// anything unknown, is not. Global options before the subcommand (`-C
/// dir`, `-c key=value`, `--git-dir=…`) are skipped.
///
/// ```
/// use http_resilience::git::is_read_only;
/// assert!(is_read_only(["-C", "repo", "fetch", "origin"]));
/// assert!(is_read_only(["-c", "http.extraHeader=X: y", "ls-remote", "https://example.com/r.git"]));
/// assert!(!is_read_only(["push", "origin", "main"]));
/// assert!(!is_read_only(["gc"]));
/// ```
pub fn is_read_only<I, S>(args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut args = args.into_iter();
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        let Some(arg) = arg.as_ref().to_str().map(str::to_owned) else {
            return false;
        };
        match arg.as_str() {
            // Global options that take a value as the next argument.
            "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path" => {
                args.next();
            }
            a if a.starts_with('-') && words.is_empty() => {}
            _ => {
                words.push(arg);
                if words.len() == 2 {
                    break;
                }
            }
        }
    }
    let sub = words.first().map(String::as_str);
    let second = words.get(1).map(String::as_str);
    match sub {
        Some("fetch" | "ls-remote" | "clone" | "pull" | "archive") => true,
        Some("remote") => matches!(second, Some("update" | "show" | "prune")),
        Some("submodule") => matches!(second, Some("update")),
        _ => false,
    }
}

/// A git command that failed: what the crate's [`Error`](crate::Error)
/// holds as its `source()` when [`run`] gives up. Its text and fields
/// never hold a URL's user info or query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFailure {
    command: String,
    code: Option<i32>,
    stderr: String,
}

impl GitFailure {
    /// A failure of the command `args` (without the program name), which
    /// exited with `code` (`None`: killed by a signal) and printed
    /// `stderr`. URLs in both lose their user info and query string
    /// (`hide_paths`: their path too).
    pub fn new<I, S>(args: I, code: Option<i32>, stderr: &str, hide_paths: bool) -> GitFailure
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let words: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        GitFailure {
            command: redact_urls(&format!("git {}", words.join(" ")), hide_paths),
            code,
            stderr: redact_urls(stderr.trim_end(), hide_paths),
        }
    }

    /// The command line, redacted.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The exit code (`None`: killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// What git printed on its standard error, redacted.
    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// [`classify_stderr`] of what it printed.
    pub fn class(&self) -> ErrorClass {
        classify_stderr(&self.stderr)
    }
}

impl fmt::Display for GitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "`{}` exited with {code}", self.command)?,
            None => write!(f, "`{}` was killed by a signal", self.command)?,
        }
        // The last line is git's conclusion ("fatal: ...").
        match self.stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(last) => write!(f, ": {}", last.trim()),
            None => Ok(()),
        }
    }
}

impl std::error::Error for GitFailure {}

/// Removes the user info and the query string (and with `hide_paths`,
/// the path) of every `scheme://` URL in `text`.
pub(crate) fn redact_urls(text: &str, hide_paths: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        out.push_str(&rest[..at + 3]);
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>' | '`'))
            .unwrap_or(after.len());
        let url = &after[..end];
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let authority = &url[..authority_end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        out.push_str(host);
        let tail = &url[authority_end..];
        let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
        if hide_paths {
            if !tail.is_empty() {
                out.push_str("/…");
            }
        } else {
            out.push_str(&tail[..path_end]);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(feature = "git")]
pub use self::process::run;

#[cfg(feature = "git")]
mod process {
    use std::process::Output;

    use super::{GitFailure, is_read_only};
    use crate::error::Error;
    use crate::op::ErrorClass;
    use crate::policy::RetryPolicy;

    /// Runs the git command that `command` makes (called once per attempt:
    /// a `tokio::process::Command` is used up by its run) under `policy`,
    /// through [`RetryPolicy::operation`]: a failure that
    /// [`classify_stderr`](super::classify_stderr) calls transient is run
    /// again after the policy's backoff, within its `max_retries`,
    /// deadline and attempt timeout (a run that overstays it is killed).
    /// A command that is not [read-only](super::is_read_only) (a push) is
    /// run once, whatever it printed. Load protection is kept under the
    /// operation name `git <subcommand>`.
    ///
    /// The answer is the successful run's [`Output`], or the crate's
    /// [`Error`] whose `source()` is the last [`GitFailure`] (exit code and
    /// standard error, URLs redacted). The standard error of each run is
    /// read in full (git's progress lines included: pass `--quiet` or
    /// `--no-progress` to keep it short).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), http_resilience::Error> {
    /// use http_resilience::{RetryPolicy, git};
    ///
    /// let policy = RetryPolicy::git();
    /// let output = git::run(&policy, || {
    ///     let mut command = tokio::process::Command::new("git");
    ///     command.args(["-C", "checkout", "fetch", "--quiet", "origin"]);
    ///     command
    /// })
    /// .await?;
    /// assert!(output.status.success());
    /// # Ok(()) }
    /// ```
    pub async fn run<F>(policy: &RetryPolicy, mut command: F) -> Result<Output, Error>
    where
        F: FnMut() -> tokio::process::Command,
    {
        let probe = command();
        let args: Vec<_> = probe.as_std().get_args().map(|a| a.to_owned()).collect();
        drop(probe);
        let read_only = is_read_only(&args);
        let name = operation_name(&args);
        let hide = policy.hide_paths();
        policy
            .operation(&name)
            .retry(
                |_attempt| {
                    let mut cmd = command();
                    cmd.kill_on_drop(true)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped());
                    let args = &args;
                    async move {
                        let output = cmd.output().await.map_err(|e| {
                            GitFailure::new(args, None, &format!("cannot run git: {e}"), hide)
                        })?;
                        if output.status.success() {
                            Ok(output)
                        } else {
                            let stderr = String::from_utf8_lossy(&output.stderr);
                            Err(GitFailure::new(args, output.status.code(), &stderr, hide))
                        }
                    }
                },
                |failure: &GitFailure| {
                    if read_only {
                        failure.class()
                    } else {
                        ErrorClass::permanent().kind(failure.class().failure_kind())
                    }
                },
            )
            .await
    }

    /// `git fetch`, `git ls-remote`, ...: the subcommand, for the
    /// operation's name (few and fixed, as metric labels must be).
    fn operation_name(args: &[std::ffi::OsString]) -> String {
        let mut skip = false;
        for arg in args {
            if skip {
                skip = false;
                continue;
            }
            let Some(arg) = arg.to_str() else { break };
            if matches!(
                arg,
                "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace"
            ) {
                skip = true;
            } else if !arg.starts_with('-') {
                if arg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return format!("git {arg}");
                }
                break;
            }
        }
        "git".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Class;

    #[test]
    fn messages() {
        let cases: &[(&str, Class, FailureKind)] = &[
            (
                "fatal: unable to access 'https://h/r.git/': The requested URL returned error: 503",
                Class::Transient,
                FailureKind::Other,
            ),
            (
                "fatal: unable to access 'https://h/r.git/': The requested URL returned error: 429",
                Class::Transient,
                FailureKind::Other,
            ),
            (
                "fatal: unable to access 'https://h/r.git/': The requested URL returned error: 403",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "fatal: unable to access 'https://h/r.git/': The requested URL returned error: 501",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502\nfatal: expected flush after ref listing",
                Class::Transient,
                FailureKind::Other,
            ),
            (
                "error: RPC failed; curl 56 GnuTLS recv error (-110): The TLS connection was non-properly terminated.",
                Class::Transient,
                FailureKind::ConnectionReset,
            ),
            (
                "error: RPC failed; curl 18 transfer closed with outstanding read data remaining\nfatal: early EOF",
                Class::Transient,
                FailureKind::ConnectionClosed,
            ),
            (
                "fatal: unable to access 'https://nohost/r.git/': Could not resolve host: nohost",
                Class::Transient,
                FailureKind::Connect,
            ),
            (
                "fatal: unable to access 'http://127.0.0.1:9/r.git/': Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't connect to server",
                Class::Transient,
                FailureKind::Connect,
            ),
            (
                "fatal: unable to access 'https://h/r.git/': Recv failure: Connection reset by peer",
                Class::Transient,
                FailureKind::ConnectionReset,
            ),
            (
                "fatal: unable to access 'https://h/r.git/': Operation timed out after 300000 milliseconds",
                Class::Transient,
                FailureKind::Timeout,
            ),
            (
                "fetch-pack: unexpected disconnect while reading sideband packet\nfatal: early EOF\nfatal: fetch-pack: invalid index-pack output",
                Class::Transient,
                FailureKind::ConnectionClosed,
            ),
            (
                "fatal: the remote end hung up unexpectedly",
                Class::Transient,
                FailureKind::ConnectionClosed,
            ),
            (
                "remote: Invalid username or password.\nfatal: Authentication failed for 'https://h/r.git/'",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "fatal: could not read Username for 'https://h': terminal prompts disabled",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "remote: Repository not found.\nfatal: repository 'https://h/nope.git/' not found",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "fatal: repository 'http://127.0.0.1:5/nope.git/' not found",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "fatal: couldn't find remote ref refs/heads/nope",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "fatal: unable to access 'https://h/r.git/': SSL certificate problem: self-signed certificate",
                Class::Permanent,
                FailureKind::Tls,
            ),
            (
                " ! [rejected]        main -> main (non-fast-forward)",
                Class::Permanent,
                FailureKind::Other,
            ),
            // A reset, then an authentication failure: permanent wins.
            (
                "error: Connection reset\nfatal: Authentication failed for 'https://h/r.git/'",
                Class::Permanent,
                FailureKind::Other,
            ),
            (
                "fatal: something nobody has seen before",
                Class::Permanent,
                FailureKind::Other,
            ),
            ("", Class::Permanent, FailureKind::Other),
        ];
        for (text, class, kind) in cases {
            let got = classify_stderr(text);
            assert_eq!(got.class(), *class, "{text}");
            assert_eq!(got.failure_kind(), *kind, "{text}");
        }
    }

    #[test]
    fn read_only_commands() {
        for args in [
            &["fetch"][..],
            &["ls-remote", "https://h/r.git"],
            &["clone", "--depth=1", "https://h/r.git", "dir"],
            &["-C", "push", "fetch"],
            &["--git-dir", "x", "pull"],
            &["remote", "update"],
            &["submodule", "update", "--init"],
        ] {
            assert!(is_read_only(args), "{args:?}");
        }
        for args in [
            &["push"][..],
            &["-C", "fetch", "push", "origin"],
            &["remote", "add", "o", "u"],
            &["commit"],
            &[],
            &["--version"],
        ] {
            assert!(!is_read_only(args), "{args:?}");
        }
    }

    #[test]
    fn urls_lose_their_secrets() {
        let text = "fatal: unable to access 'https://user:tok3n@h.example:8443/org/r.git/?x=secret': The requested URL returned error: 503";
        let plain = redact_urls(text, false);
        assert_eq!(
            plain,
            "fatal: unable to access 'https://h.example:8443/org/r.git/': The requested URL returned error: 503"
        );
        let hidden = redact_urls(text, true);
        assert!(!hidden.contains("org/r.git"), "{hidden}");
        assert!(!hidden.contains("tok3n") && !hidden.contains("secret"));
        assert_eq!(redact_urls("no url here", false), "no url here");
        assert_eq!(redact_urls("x://", false), "x://");
        let failure = GitFailure::new(
            ["fetch", "https://u:pw@h/r.git?t=1"],
            Some(128),
            "fatal: Authentication failed for 'https://u:pw@h/r.git/'\n",
            false,
        );
        assert_eq!(failure.command(), "git fetch https://h/r.git");
        assert_eq!(
            failure.to_string(),
            "`git fetch https://h/r.git` exited with 128: fatal: Authentication failed for 'https://h/r.git/'"
        );
    }
}
