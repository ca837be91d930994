//! Downloads to a file that never leave a partial file where the finished
//! one belongs.
//!
//! [`Download`] sends a request through a `reqwest-middleware` client (and
//! so through [`RetryMiddleware`](crate::RetryMiddleware), if the client
//! has it) and writes the response's body to a temporary file beside the
//! target, `<name>.part`. Then, in order:
//!
//! 1. the length is checked (against [`expected_length`](Download::expected_length)
//!    or what the server announced), and the SHA-256 digest if one was
//!    given ([`sha256`](Download::sha256));
//! 2. the file is synced to disk;
//! 3. it is renamed to the target, atomically (the directory is synced
//!    too, on Unix).
//!
//! So the target name only ever holds a complete, verified file.
//!
//! **Resuming.** When the response has a strong validator and
//! `Accept-Ranges: bytes` (see [`resume`](crate::resume)), the validator is
//! saved beside the temporary file (`<name>.part.meta`, which holds no URL,
//! only its SHA-256), and:
//! - a body cut in the middle is resumed at once with a range request
//!   ([`ResumableBody`], limited by [`resume_limits`](Download::resume_limits));
//! - a temporary file left by an earlier run (a killed process, a failure
//!   that outlasted the resumes) is resumed by the next run: it asks for
//!   `Range: bytes=<its length>-` with `If-Range`, and appends what comes
//!   back after checking it. If the resource changed meanwhile, the
//!   server's `200` starts the file over. A temporary file whose length
//!   already is the whole length is verified and renamed without a request.
//!
//! On a failure, the temporary file is kept when it can be resumed (the
//! error's [`kept`](DownloadError::kept) says how many bytes), and removed
//! when it cannot: no validator, a digest or length mismatch, a changed
//! resource.
//!
//! Requests are sent with `Accept-Encoding: identity` unless the caller set
//! `Accept-Encoding`: the bytes written are then the bytes a range counts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), http_resilience::download::DownloadError> {
//! use http_resilience::download::Download;
//! use http_resilience::{RetryMiddleware, RetryPolicy};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryMiddleware::new(RetryPolicy::default()))
//!     .build();
//! let request = client.get("https://example.com/big.iso").build()?;
//! let done = Download::new(request)
//!     .sha256_hex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")?
//!     .on_progress(|p| println!("{} of {:?}", p.done, p.total))
//!     .to(&client, "big.iso")
//!     .await?;
//! println!("{} bytes, resumed from {:?}", done.len(), done.resumed_from());
//! # Ok(()) }
//! ```

use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use http::header::ACCEPT_ENCODING;
use http::{HeaderValue, Method, StatusCode};
use http_body::Body;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::adapter::middleware::into_box_error;
use crate::adapter::resume::{
    ReqwestResumer, ResumableBody, Resume, ResumeHandle, ResumeLimits, ResumeRecord,
};
use crate::engine::resume::{Continuation, Resumable, ResumeError, ResumeErrorKind, Validator};
use crate::error::BoxError;
use crate::report::{ResponseExt, RetryReport};

/// How far a download has come: passed to the
/// [`on_progress`](Download::on_progress) callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes in the file so far (a resumed file's earlier bytes included).
    pub done: u64,
    /// The whole length, when known.
    pub total: Option<u64>,
}

type ProgressFn = Box<dyn FnMut(Progress) + Send>;

/// A download of one request's response to a file. See the
/// [module docs](self).
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`expected_length`](Self::expected_length) | none: the server's announced length, if any |
/// | [`sha256`](Self::sha256) | none: no digest check |
/// | [`resume_limits`](Self::resume_limits) | [`ResumeLimits::default`] (3 resumes per run) |
/// | [`on_progress`](Self::on_progress) | none |
pub struct Download {
    request: reqwest::Request,
    length: Option<u64>,
    sha256: Option<[u8; 32]>,
    limits: ResumeLimits,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL is left out: its query may hold credentials.
        f.debug_struct("Download")
            .field("method", self.request.method())
            .field("length", &self.length)
            .field("sha256", &self.sha256.map(hex))
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct Downloaded {
    path: PathBuf,
    len: u64,
    resumed_from: Option<u64>,
    discarded: u64,
    resumes: Vec<ResumeRecord>,
    sha256: Option<[u8; 32]>,
    report: Option<RetryReport>,
}

impl Downloaded {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// `true` for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The length of an earlier run's temporary file that this run went on
    /// from, if it did.
    pub fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }
    /// Bytes of an earlier run's temporary file that were thrown away (the
    /// resource had changed, or the server sent it whole).
    pub fn discarded(&self) -> u64 {
        self.discarded
    }
    /// The resumes made in this run, after cuts.
    pub fn resumes(&self) -> &[ResumeRecord] {
        &self.resumes
    }
    /// The file's SHA-256, when one was asked for, as lowercase hex.
    pub fn sha256(&self) -> Option<String> {
        self.sha256.map(hex)
    }
    /// The retry report of the first request (none when a complete
    /// temporary file needed no request).
    pub fn report(&self) -> Option<&RetryReport> {
        self.report.as_ref()
    }
}

/// What went wrong with a download. See [`DownloadError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownloadErrorKind {
    /// The target has no file name.
    InvalidTarget,
    /// The request cannot be sent again (a streaming body).
    InvalidRequest,
    /// A SHA-256 given as hex that is not 64 hex digits.
    InvalidDigest,
    /// The request failed (the source is the client's error, an
    /// [`http_resilience::Error`](crate::Error) through the retry
    /// middleware).
    Request,
    /// The server answered with a status other than `200` or `206`.
    Status(StatusCode),
    /// The body failed and could not be resumed (the source says why,
    /// often a [`ResumeError`]).
    Interrupted,
    /// The file's length is not the one expected.
    LengthMismatch {
        /// The length expected.
        expected: u64,
        /// The length written.
        actual: u64,
    },
    /// The file's SHA-256 is not the one expected.
    DigestMismatch,
    /// Reading or writing the files failed.
    Io,
}

/// A failed download. Its message names no URL.
#[derive(Debug)]
pub struct DownloadError {
    kind: DownloadErrorKind,
    kept: Option<u64>,
    detail: Option<String>,
    source: Option<BoxError>,
}

impl DownloadError {
    fn new(kind: DownloadErrorKind) -> DownloadError {
        DownloadError {
            kind,
            kept: None,
            detail: None,
            source: None,
        }
    }
    fn source(mut self, e: impl Into<BoxError>) -> Self {
        self.source = Some(e.into());
        self
    }
    fn io(what: &'static str, e: io::Error) -> DownloadError {
        let mut error = DownloadError::new(DownloadErrorKind::Io).source(e);
        error.detail = Some(what.to_string());
        error
    }

    /// What went wrong.
    pub fn kind(&self) -> DownloadErrorKind {
        self.kind
    }

    /// The bytes kept in the temporary file for the next run, when it was
    /// kept; `None` when it was removed (or never written).
    pub fn kept(&self) -> Option<u64> {
        self.kept
    }

    /// A stable, machine-readable code:
    ///
    /// | kind | code |
    /// |---|---|
    /// | `InvalidTarget` | `DOWNLOAD_INVALID_TARGET` |
    /// | `InvalidRequest` | `DOWNLOAD_INVALID_REQUEST` |
    /// | `InvalidDigest` | `DOWNLOAD_INVALID_DIGEST` |
    /// | `Request` | `DOWNLOAD_REQUEST_FAILED` |
    /// | `Status` | `DOWNLOAD_UNEXPECTED_STATUS` |
    /// | `Interrupted` | `DOWNLOAD_INTERRUPTED` |
    /// | `LengthMismatch` | `DOWNLOAD_LENGTH_MISMATCH` |
    /// | `DigestMismatch` | `DOWNLOAD_DIGEST_MISMATCH` |
    /// | `Io` | `DOWNLOAD_IO` |
    pub fn code(&self) -> &'static str {
        match self.kind {
            DownloadErrorKind::InvalidTarget => "DOWNLOAD_INVALID_TARGET",
            DownloadErrorKind::InvalidRequest => "DOWNLOAD_INVALID_REQUEST",
            DownloadErrorKind::InvalidDigest => "DOWNLOAD_INVALID_DIGEST",
            DownloadErrorKind::Request => "DOWNLOAD_REQUEST_FAILED",
            DownloadErrorKind::Status(_) => "DOWNLOAD_UNEXPECTED_STATUS",
            DownloadErrorKind::Interrupted => "DOWNLOAD_INTERRUPTED",
            DownloadErrorKind::LengthMismatch { .. } => "DOWNLOAD_LENGTH_MISMATCH",
            DownloadErrorKind::DigestMismatch => "DOWNLOAD_DIGEST_MISMATCH",
            DownloadErrorKind::Io => "DOWNLOAD_IO",
        }
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DownloadErrorKind::InvalidTarget => {
                f.write_str("the download target has no file name")?
            }
            DownloadErrorKind::InvalidRequest => {
                f.write_str("the download request cannot be sent again (a streaming body)")?
            }
            DownloadErrorKind::InvalidDigest => {
                f.write_str("a SHA-256 digest is 64 hexadecimal digits")?
            }
            DownloadErrorKind::Request => f.write_str("the download request failed")?,
            DownloadErrorKind::Status(s) => {
                write!(f, "the server answered the download with {}", s.as_u16())?
            }
            DownloadErrorKind::Interrupted => f.write_str("the download was interrupted")?,
            DownloadErrorKind::LengthMismatch { expected, actual } => write!(
                f,
                "the downloaded file has {actual} bytes, {expected} were expected"
            )?,
            DownloadErrorKind::DigestMismatch => {
                f.write_str("the downloaded file's SHA-256 is not the one expected")?
            }
            DownloadErrorKind::Io => f.write_str("the download's files could not be written")?,
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(kept) = self.kept {
            write!(f, "; {kept} bytes kept for the next run")?;
        }
        Ok(())
    }
}

impl StdError for DownloadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<reqwest::Error> for DownloadError {
    fn from(e: reqwest::Error) -> Self {
        DownloadError::new(DownloadErrorKind::Request).source(e.without_url())
    }
}

/// The three paths of a download: the target, `<name>.part` and
/// `<name>.part.meta` beside it.
#[derive(Debug, Clone)]
struct Paths {
    target: PathBuf,
    part: PathBuf,
    meta: PathBuf,
    dir: PathBuf,
}

impl Paths {
    fn new(target: &Path) -> Result<Paths, DownloadError> {
        let name = target
            .file_name()
            .ok_or_else(|| DownloadError::new(DownloadErrorKind::InvalidTarget))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let with = |suffix: &str| {
            let mut n = OsString::from(name);
            n.push(suffix);
            dir.join(n)
        };
        Ok(Paths {
            target: target.to_path_buf(),
            part: with(".part"),
            meta: with(".part.meta"),
            dir,
        })
    }
}

/// The temporary file's paths for `target`: `<name>.part` and
/// `<name>.part.meta`, beside it (for tools that clean up, and tests).
pub fn temporary_paths(target: impl AsRef<Path>) -> Option<(PathBuf, PathBuf)> {
    let paths = Paths::new(target.as_ref()).ok()?;
    Some((paths.part, paths.meta))
}

/// What is saved beside the temporary file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    url: String,
    validator: Validator,
    total: Option<u64>,
}

const META_HEADER: &str = "http-resilience download 1";

impl Meta {
    fn encode(&self) -> Option<String> {
        let (kind, value) = match &self.validator {
            Validator::ETag(v) => ("etag", v),
            Validator::LastModified(v) => ("last-modified", v),
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        let value = value.to_str().ok()?;
        let total = self.total.map_or("unknown".to_string(), |t| t.to_string());
        Some(format!(
            "{META_HEADER}\nurl-sha256 {}\nvalidator {kind} {value}\nlength {total}\n",
            self.url
        ))
    }

    /// Anything unexpected is `None`: the partial file is then not resumed.
    fn decode(text: &str) -> Option<Meta> {
        let mut lines = text.lines();
        if lines.next()? != META_HEADER {
            return None;
        }
        let url = lines.next()?.strip_prefix("url-sha256 ")?.to_string();
        let validator = lines.next()?.strip_prefix("validator ")?;
        let (kind, value) = validator.split_once(' ')?;
        let value = HeaderValue::from_str(value).ok()?;
        let validator = match kind {
            "etag" => Validator::ETag(value),
            "last-modified" => Validator::LastModified(value),
            _ => return None,
        };
        let total = match lines.next()?.strip_prefix("length ")? {
            "unknown" => None,
            n => Some(n.parse().ok()?),
        };
        if lines.next().is_some() || url.len() != 64 {
            return None;
        }
        Some(Meta {
            url,
            validator,
            total,
        })
    }
}

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

async fn remove(path: &Path) -> Result<(), DownloadError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("removing a temporary file", e)),
    }
}

async fn write_meta(paths: &Paths, meta: &Meta) -> Result<bool, DownloadError> {
    let Some(text) = meta.encode() else {
        remove(&paths.meta).await?;
        return Ok(false);
    };
    // Written whole, then renamed: a side file is never half written.
    let mut tmp = paths.meta.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |e| DownloadError::io("writing the side file", e);
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    file.write_all(text.as_bytes()).await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    drop(file);
    tokio::fs::rename(&tmp, &paths.meta).await.map_err(io)?;
    Ok(true)
}

/// Hashes the first `len` bytes of an existing file.
async fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> Result<(), DownloadError> {
    use tokio::io::AsyncReadExt;
    let io = |e| DownloadError::io("reading the temporary file", e);
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut file = file.take(len);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(unix)]
async fn sync_dir(dir: &Path) -> Result<(), DownloadError> {
    let dir = dir.to_path_buf();
    let synced = tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await;
    match synced {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DownloadError::io("syncing the directory", e)),
        Err(e) => Err(DownloadError::io(
            "syncing the directory",
            io::Error::other(e),
        )),
    }
}

#[cfg(not(unix))]
async fn sync_dir(_dir: &Path) -> Result<(), DownloadError> {
    Ok(())
}

/// Where the first response leaves the file.
enum Start {
    /// Write from the first byte.
    Fresh { discarded: u64 },
    /// Append after the earlier run's `len` bytes.
    Append { len: u64, meta: Meta },
}

impl Download {
    /// A download of `request`'s response (a `GET` without a streaming
    /// body, so that it can be sent again to resume).
    pub fn new(request: reqwest::Request) -> Download {
        Download {
            request,
            length: None,
            sha256: None,
            limits: ResumeLimits::default(),
            progress: None,
        }
    }

    /// The file must have exactly `len` bytes.
    pub fn expected_length(mut self, len: u64) -> Self {
        self.length = Some(len);
        self
    }

    /// The file's SHA-256 must be `digest`.
    pub fn sha256(mut self, digest: [u8; 32]) -> Self {
        self.sha256 = Some(digest);
        self
    }

    /// [`sha256`](Self::sha256), from 64 hexadecimal digits.
    pub fn sha256_hex(self, digest: &str) -> Result<Self, DownloadError> {
        let digest = parse_hex(digest)
            .ok_or_else(|| DownloadError::new(DownloadErrorKind::InvalidDigest))?;
        Ok(self.sha256(digest))
    }

    /// The limits of the resumes after a cut, within one run.
    pub fn resume_limits(mut self, limits: ResumeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Called after each chunk written (and once at the start, with what an
    /// earlier run left).
    pub fn on_progress(mut self, f: impl FnMut(Progress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Runs the download through `client` to `target`.
    pub async fn to(
        mut self,
        client: &reqwest_middleware::ClientWithMiddleware,
        target: impl AsRef<Path>,
    ) -> Result<Downloaded, DownloadError> {
        let paths = Paths::new(target.as_ref())?;
        if !self.request.headers().contains_key(ACCEPT_ENCODING) {
            self.request
                .headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
        let url = hex(Sha256::digest(self.request.url().as_str().as_bytes()).into());
        let template = self
            .request
            .try_clone()
            .ok_or_else(|| DownloadError::new(DownloadErrorKind::InvalidRequest))?;

        // What an earlier run left, if it is for this URL and readable.
        let earlier = match tokio::fs::read_to_string(&paths.meta).await {
            Ok(text) => Meta::decode(&text).filter(|m| m.url == url),
            Err(_) => None,
        };
        let partial = match tokio::fs::metadata(&paths.part).await {
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        };
        let earlier = match earlier {
            Some(meta) if partial > 0 && meta.total.is_none_or(|t| partial <= t) => Some(meta),
            _ => {
                remove(&paths.part).await?;
                remove(&paths.meta).await?;
                None
            }
        };
        if let Some(meta) = &earlier
            && meta.total == Some(partial)
        {
            // Complete already (the earlier run stopped before the
            // rename): verify it and put it in place.
            self.report_progress(partial, meta.total);
            return self
                .finish(&paths, partial, None, 0, Vec::new(), None, meta.total)
                .await
                .map(|mut d| {
                    d.resumed_from = Some(partial);
                    d
                });
        }

        let mut request = template
            .try_clone()
            .ok_or_else(|| DownloadError::new(DownloadErrorKind::InvalidRequest))?;
        if let Some(meta) = &earlier {
            let ask = Resumable::from_parts(meta.validator.clone(), 0, meta.total).request(partial);
            ask.apply(request.headers_mut());
        }
        let response = client.execute(request).await.map_err(|e| {
            DownloadError::new(DownloadErrorKind::Request).source(into_box_error(e))
        })?;
        // Attached, or the clean report of a first-attempt success (which
        // carries none).
        let report = Some(response.retry_report().into_owned());
        let status = response.status();
        let keep = |kept: u64, e: DownloadError| DownloadError {
            kept: Some(kept).filter(|&k| k > 0),
            ..e
        };
        let start = match (&earlier, status) {
            (Some(meta), StatusCode::PARTIAL_CONTENT) => {
                let resumable = Resumable::from_parts(meta.validator.clone(), 0, meta.total);
                match resumable.check(partial, status, response.headers()) {
                    Ok(Continuation::Continue) => Start::Append {
                        len: partial,
                        meta: meta.clone(),
                    },
                    // A bad answer to a good partial file: it is kept.
                    Ok(_) => {
                        return Err(keep(
                            partial,
                            DownloadError::new(DownloadErrorKind::Interrupted),
                        ));
                    }
                    Err(e) => {
                        let error = DownloadError::new(DownloadErrorKind::Interrupted).source(e);
                        return Err(keep(partial, error));
                    }
                }
            }
            // The whole resource (changed, or the range ignored): start
            // over with it.
            (Some(_), StatusCode::OK) => Start::Fresh { discarded: partial },
            (None, StatusCode::OK) => Start::Fresh { discarded: 0 },
            (Some(_), StatusCode::RANGE_NOT_SATISFIABLE) => {
                remove(&paths.part).await?;
                remove(&paths.meta).await?;
                return Err(DownloadError::new(DownloadErrorKind::Status(status)));
            }
            (Some(_), other) => {
                return Err(keep(
                    partial,
                    DownloadError::new(DownloadErrorKind::Status(other)),
                ));
            }
            (None, other) => return Err(DownloadError::new(DownloadErrorKind::Status(other))),
        };

        let mut response = http::Response::<reqwest::Body>::from(response);
        // Under a policy with `resume_bodies`, the retry middleware handed
        // the request's state over: resumes then go by the policy (its
        // limits, deadline, budget and report), one attempt each through
        // the client. Otherwise by `resume_limits`, each resume request
        // retried by the client's middleware as any request.
        let state = ResumeHandle::take(response.extensions_mut());
        let mut extensions = http::Extensions::new();
        if let Some(state) = &state {
            extensions.insert(state.pass_through().clone());
        }
        let resumer: Box<dyn Resume<reqwest::Body> + Send> =
            Box::new(ReqwestResumer::new(client.clone(), template, extensions));
        let (mut body, offset, total, discarded, resumable) = match start {
            Start::Fresh { discarded } => {
                let response = match state {
                    Some(state) => ResumableBody::resuming(response, resumer, state),
                    None => {
                        ResumableBody::wrap(&Method::GET, response, resumer, self.limits.clone())
                    }
                };
                let (parts, body) = response.into_parts();
                let resumable =
                    Resumable::from_response(&Method::GET, parts.status, &parts.headers).ok();
                let total = resumable
                    .as_ref()
                    .and_then(Resumable::total)
                    .or_else(|| body.size_hint().exact());
                // Saved before the first byte: the partial file never
                // exists without what resuming it needs.
                let saved = match &resumable {
                    Some(r) => {
                        write_meta(
                            &paths,
                            &Meta {
                                url: url.clone(),
                                validator: r.validator().clone(),
                                total: r.total(),
                            },
                        )
                        .await?
                    }
                    None => {
                        remove(&paths.meta).await?;
                        false
                    }
                };
                (body, 0, total, discarded, saved)
            }
            Start::Append { len, meta } => {
                let (parts, body) = response.into_parts();
                let length = parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                let resumable = Resumable::from_parts(meta.validator.clone(), len, meta.total);
                let body = match state {
                    Some(state) => {
                        ResumableBody::resuming_from(resumable, length, body, resumer, state)
                    }
                    None => {
                        ResumableBody::new(resumable, length, body, resumer, self.limits.clone())
                    }
                };
                (body, len, meta.total, 0, true)
            }
        };
        let total = self.length.or(total);

        let io = |what| move |e| DownloadError::io(what, e);
        let mut file = if offset > 0 {
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(&paths.part)
                .await
                .map_err(io("opening the temporary file"))?
        } else {
            tokio::fs::File::create(&paths.part)
                .await
                .map_err(io("creating the temporary file"))?
        };
        let mut hasher = self.sha256.map(|_| Sha256::new());
        if let Some(h) = hasher.as_mut() {
            hash_prefix(&paths.part, offset, h).await?;
        }
        let mut done = offset;
        self.report_progress(done, total);
        let log = body.log();
        let failure = loop {
            let frame =
                match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
                {
                    None => break None,
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => break Some(e),
                };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if let Err(e) = file.write_all(&data).await {
                drop(file);
                return Err(keep_if(
                    resumable,
                    done,
                    DownloadError::io("writing the temporary file", e),
                ));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&data);
            }
            done += data.len() as u64;
            self.report_progress(done, total);
        };
        let flushed = file.flush().await;
        if let Some(cause) = failure {
            drop(file);
            let changed = cause
                .downcast_ref::<ResumeError>()
                .is_some_and(|e| e.kind() == ResumeErrorKind::ValidatorChanged);
            if changed || !resumable {
                remove(&paths.part).await?;
                remove(&paths.meta).await?;
            }
            let mut error = DownloadError::new(DownloadErrorKind::Interrupted);
            error.source = Some(cause);
            return Err(keep_if(resumable && !changed, done, error));
        }
        flushed.map_err(io("writing the temporary file"))?;
        file.sync_all()
            .await
            .map_err(io("syncing the temporary file"))?;
        drop(file);
        let digest = hasher.map(|h| h.finalize().into());
        // The whole report, resumes included, when they went by the policy.
        let report = log.report().or(report);
        self.finish(
            &paths,
            done,
            digest,
            discarded,
            log.records(),
            report,
            total,
        )
        .await
        .map(|mut d| {
            d.resumed_from = (offset > 0).then_some(offset);
            d
        })
    }

    fn report_progress(&mut self, done: u64, total: Option<u64>) {
        if let Some(f) = self.progress.as_mut() {
            f(Progress { done, total });
        }
    }

    /// Verifies the temporary file and renames it into place.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &mut self,
        paths: &Paths,
        len: u64,
        digest: Option<[u8; 32]>,
        discarded: u64,
        resumes: Vec<ResumeRecord>,
        report: Option<RetryReport>,
        total: Option<u64>,
    ) -> Result<Downloaded, DownloadError> {
        let digest = match (self.sha256, digest) {
            (Some(_), None) => {
                // A file left complete by an earlier run: hash it now.
                let mut h = Sha256::new();
                hash_prefix(&paths.part, len, &mut h).await?;
                Some(h.finalize().into())
            }
            (_, d) => d,
        };
        let expected = self.length.or(total);
        let bad = if let Some(expected) = expected.filter(|&e| e != len) {
            Some(DownloadError::new(DownloadErrorKind::LengthMismatch {
                expected,
                actual: len,
            }))
        } else if let (Some(want), Some(got)) = (self.sha256, digest)
            && want != got
        {
            let mut e = DownloadError::new(DownloadErrorKind::DigestMismatch);
            e.detail = Some(format!("expected {}, got {}", hex(want), hex(got)));
            Some(e)
        } else {
            None
        };
        if let Some(error) = bad {
            // A wrong file cannot be resumed into a right one.
            remove(&paths.part).await?;
            remove(&paths.meta).await?;
            return Err(error);
        }
        tokio::fs::rename(&paths.part, &paths.target)
            .await
            .map_err(|e| DownloadError::io("renaming the file into place", e))?;
        sync_dir(&paths.dir).await?;
        remove(&paths.meta).await?;
        Ok(Downloaded {
            path: paths.target.clone(),
            len,
            resumed_from: None,
            discarded,
            resumes,
            sha256: digest,
            report,
        })
    }
}

fn keep_if(resumable: bool, done: u64, mut error: DownloadError) -> DownloadError {
    if resumable && done > 0 {
        error.kept = Some(done);
    }
    error
}

/// Downloads `url` through `client` to `target`, with the defaults of
/// [`Download`].
pub async fn download(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    target: impl AsRef<Path>,
) -> Result<Downloaded, DownloadError> {
    let request = client.get(url).build()?;
    Download::new(request).to(client, target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_round_trip_and_junk_is_refused() {
        let meta = Meta {
            url: "a".repeat(64),
            validator: Validator::ETag(HeaderValue::from_static("\"v1\"")),
            total: Some(42),
        };
        let text = meta.encode().unwrap();
        assert_eq!(Meta::decode(&text), Some(meta.clone()));
        let dated = Meta {
            validator: Validator::LastModified(HeaderValue::from_static(
                "Tue, 14 Nov 2023 22:13:20 GMT",
            )),
            total: None,
            ..meta
        };
        assert_eq!(Meta::decode(&dated.encode().unwrap()), Some(dated));
        for junk in [
            "",
            "http-resilience download 2\n",
            &text.replace("length 42", "length -1"),
            &text.replace("etag", "crc"),
            &format!("{text}extra\n"),
            &text.replace(&"a".repeat(64), "short"),
        ] {
            assert_eq!(Meta::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn temporary_files_sit_beside_the_target() {
        let (part, meta) = temporary_paths("/data/big.iso").unwrap();
        assert_eq!(part, Path::new("/data/big.iso.part"));
        assert_eq!(meta, Path::new("/data/big.iso.part.meta"));
        let (part, _) = temporary_paths("big.iso").unwrap();
        assert_eq!(part, Path::new("./big.iso.part"));
        assert!(temporary_paths("/").is_none());
    }

    #[test]
    fn digests_parse_from_hex() {
        let d = parse_hex(&"0f".repeat(32)).unwrap();
        assert_eq!(d, [0x0f; 32]);
        assert_eq!(hex(d), "0f".repeat(32));
        assert!(parse_hex("0f").is_none());
        assert!(parse_hex(&"zz".repeat(32)).is_none());
        assert!(parse_hex(&"+f".repeat(32)).is_none());
    }
}
