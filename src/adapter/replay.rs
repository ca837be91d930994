//! Bounded replay of request bodies that cannot be cloned.
//!
//! A streamed request body (a file read in chunks, a proxied upload, a
//! `reqwest::Body::wrap_stream`) can be read only once, so a request that
//! carries one could never be sent again. [`ReplayBody`] wraps such a body
//! and copies what is sent into a buffer, up to a limit
//! ([`DEFAULT_REPLAY_LIMIT`], 64 KiB, as linkerd and Pingora use). When an
//! attempt fails, [`ReplayBody::replay`] makes a new copy of the body for
//! the next attempt:
//!
//! - if everything read so far fitted in the buffer, the copy sends those
//!   bytes again, byte for byte, and then goes on reading the original
//!   stream where the earlier attempt stopped (a server that answered
//!   before the whole body was sent); nothing is skipped and nothing is
//!   sent twice;
//! - if more than the limit was read, the buffer is dropped and the body is
//!   **committed**: [`replay`](ReplayBody::replay) returns the reason
//!   ([`Committed`]), and the request is not retried. The attempt that
//!   crossed the limit still sends the whole body: only the copies for
//!   later attempts are refused.
//!
//! Replay makes a retry *possible*, not *safe*: the idempotency rules are
//! the same as for any other body.
//!
//! A retry's copy supersedes every older copy at once: if the connection
//! that sent an earlier attempt still polls its copy (the server answered
//! early, before reading the whole body), it gets
//! [`ReplayError::Superseded`] and ends that request, instead of taking
//! bytes that the new attempt needs. So the answer of
//! [`replay`](ReplayBody::replay) stays true until the copy is sent: no
//! other copy can read on past the limit in between. For attempts that run
//! at the same time (a hedge), [`fork`](ReplayBody::fork) makes a copy that
//! reads alongside the others instead: the one ahead reads the stream, the
//! others catch up from the buffer, and past the limit the body is
//! committed to the one furthest along. Nothing panics, whatever the order
//! in which copies are polled or dropped.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use http_resilience::replay::ReplayBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A body that can be read only once (a boxed body is not `Clone`).
//! let once = Full::new(Bytes::from("hello world")).boxed_unsync();
//! let body = ReplayBody::new(once);
//! // The first attempt sends a copy...
//! let first = body.replay().expect("nothing read yet: replayable");
//! assert_eq!(&first.collect().await.unwrap().to_bytes()[..], b"hello world");
//! // ... and the retry another, with the same bytes.
//! let retry = body.replay().expect("11 bytes fit in the buffer");
//! assert_eq!(&retry.collect().await.unwrap().to_bytes()[..], b"hello world");
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;
pub use crate::report::Committed;

/// The default limit of a [`ReplayBody`]'s buffer: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// The error a [`ReplayBody`] copy yields on its own account (the stream's
/// own errors are passed on as they are, boxed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// A newer copy of the body (the next attempt's) has been polled: this
    /// copy, an earlier attempt's, may no longer read the stream.
    Superseded,
    /// The bytes this copy would send next were dropped from the buffer
    /// (the body outgrew its limit), or the stream failed: this copy
    /// cannot be sent whole.
    Committed(Committed),
}

impl ReplayError {
    /// A stable snake_case name: `replay_superseded`, or the
    /// [`Committed`] reason's.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ReplayError::Superseded => "replay_superseded",
            ReplayError::Committed(c) => c.as_str(),
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Superseded => f.write_str("a later attempt took over the request body"),
            ReplayError::Committed(c) => fmt::Display::fmt(c, f),
        }
    }
}

impl StdError for ReplayError {}

/// A request body that copies what it sends, up to a limit, so that the
/// request can be sent again. See the [module docs](self).
///
/// Every copy ([`replay`](Self::replay)) shares one buffer and the one
/// original stream. A copy's [`size_hint`](Body::size_hint) before it is
/// polled is the original body's, so every attempt is framed alike
/// (`Content-Length` or chunked).
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// This copy's number: copies made later have higher numbers.
    generation: u64,
    /// The next buffered chunk this copy sends.
    next: usize,
    /// How many bytes this copy has sent.
    sent: u64,
    /// This copy has been polled.
    started: bool,
    trailers_sent: bool,
    /// The original body's hint and emptiness, kept outside the lock.
    hint: SizeHint,
    was_empty: bool,
}

struct Shared<B> {
    /// The original stream, until it ends or fails.
    source: Option<Pin<Box<B>>>,
    /// Every chunk read so far, while they fit in `limit`.
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    /// Bytes read from the original stream, buffered or not.
    read: u64,
    /// Set once more than `limit` bytes were read (or from the start, when
    /// the size hint says the body is longer): `chunks` is empty and stays
    /// so. The body is committed once anything was read past it.
    capped: bool,
    end: End,
    /// Copies numbered below it are superseded: the newest
    /// [`replay`](ReplayBody::replay) (its [`fork`](ReplayBody::fork)s, made
    /// later, are above it and read alongside).
    floor: u64,
    next_generation: u64,
    /// The wakers of the copies that last found the stream pending, by
    /// copy: woken when a newer copy supersedes them (so that an earlier
    /// connection sees the end of its body instead of waiting forever),
    /// when another copy reads on (what it read is theirs to send from the
    /// buffer), and when the copy the stream would wake is dropped.
    waiting: Vec<(u64, Waker)>,
}

enum End {
    Reading,
    Ended { trailers: Option<HeaderMap> },
    Failed,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = lock(&self.shared);
        f.debug_struct("ReplayBody")
            .field("generation", &self.generation)
            .field("sent", &self.sent)
            .field("read", &shared.read)
            .field("buffered", &shared.buffered)
            .field("limit", &shared.limit)
            .field("committed", &shared.committed())
            .finish_non_exhaustive()
    }
}

fn lock<B>(shared: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    // A panic inside the original body's `poll_frame` poisons the lock; the
    // state is still consistent (it is only changed after that call
    // returns), so later copies carry on.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B> Shared<B> {
    fn committed(&self) -> Option<Committed> {
        // Nothing read yet: a copy still sends every byte from the stream
        // itself, whatever the buffer could have held.
        if self.capped && self.read > 0 {
            Some(Committed::TooLarge { limit: self.limit })
        } else if matches!(self.end, End::Failed) {
            Some(Committed::Failed)
        } else {
            None
        }
    }
}

impl<B: Body<Data = Bytes>> ReplayBody<B> {
    /// Wraps `body` with a buffer of [`DEFAULT_REPLAY_LIMIT`] (64 KiB).
    pub fn new(body: B) -> Self {
        Self::with_limit(body, DEFAULT_REPLAY_LIMIT)
    }

    /// Sets the buffer's limit of a body not yet read (the tower layer
    /// wraps a body before its policy, and so its limit, is chosen).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        let capped = !self.was_empty && self.hint.lower() > limit as u64;
        let mut shared = lock(&self.shared);
        debug_assert_eq!(shared.read, 0, "the limit is set before the body is read");
        shared.limit = limit;
        shared.capped = capped;
    }

    /// Wraps `body` with a buffer of at most `limit` bytes. A body whose
    /// size hint already says it is longer is not buffered at all: it can
    /// be sent again only while nothing of it has been read (an attempt
    /// refused before it sent its body), and is committed from its first
    /// byte read. An empty body is always replayable.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use http_resilience::replay::{Committed, ReplayBody};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let big = ReplayBody::with_limit(Full::new(Bytes::from(vec![0u8; 1024])), 100);
    /// let first = big.replay().expect("nothing read yet");
    /// assert_eq!(first.collect().await.unwrap().to_bytes().len(), 1024);
    /// assert_eq!(big.committed(), Some(Committed::TooLarge { limit: 100 }));
    /// assert!(big.replay().is_err());
    /// # }
    /// ```
    pub fn with_limit(body: B, limit: usize) -> Self {
        let hint = body.size_hint();
        let was_empty = body.is_end_stream();
        let capped = !was_empty && hint.lower() > limit as u64;
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(Box::pin(body)),
                chunks: Vec::new(),
                buffered: 0,
                limit,
                read: 0,
                capped,
                end: End::Reading,
                floor: 0,
                next_generation: 1,
                waiting: Vec::new(),
            })),
            generation: 0,
            next: 0,
            sent: 0,
            started: false,
            trailers_sent: false,
            hint,
            was_empty,
        }
    }
}

impl<B> ReplayBody<B> {
    /// A new copy of the body, to send with the next attempt: it sends
    /// every byte from the first, the buffered ones again and then the rest
    /// of the stream. Fails if the body is [committed](Committed).
    ///
    /// The new copy supersedes every older one at once (see the
    /// [module docs](self)). Any copy can make a new one.
    pub fn replay(&self) -> Result<ReplayBody<B>, Committed> {
        self.copy(true)
    }

    /// A copy that reads **alongside** the others instead of superseding
    /// them: for an attempt sent while another is still in flight (a
    /// hedge). Every live copy sends every byte from the first; the one
    /// ahead reads the stream and the others catch up from the buffer. If
    /// the one ahead reads past the limit, the copies behind it can no
    /// longer be sent whole and end with [`ReplayError::Committed`]: the
    /// body is committed to the attempt furthest along (gRPC's rule for
    /// hedged calls). A later [`replay`](Self::replay) supersedes every
    /// copy, forks included.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use http_resilience::replay::ReplayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = ReplayBody::new(Full::new(Bytes::from("hedged")).boxed_unsync());
    /// let first = body.replay().unwrap();
    /// let hedge = first.fork().unwrap();
    /// let (a, b) = tokio::join!(first.collect(), hedge.collect());
    /// assert_eq!(&a.unwrap().to_bytes()[..], b"hedged");
    /// assert_eq!(&b.unwrap().to_bytes()[..], b"hedged");
    /// # }
    /// ```
    pub fn fork(&self) -> Result<ReplayBody<B>, Committed> {
        self.copy(false)
    }

    fn copy(&self, supersede: bool) -> Result<ReplayBody<B>, Committed> {
        let mut shared = lock(&self.shared);
        if let Some(committed) = shared.committed() {
            return Err(committed);
        }
        let generation = shared.next_generation;
        shared.next_generation += 1;
        if supersede {
            shared.floor = generation;
            // The copies that were reading must notice that they no
            // longer may.
            for (_, waker) in shared.waiting.drain(..) {
                waker.wake();
            }
        }
        drop(shared);
        Ok(ReplayBody {
            shared: self.shared.clone(),
            generation,
            next: 0,
            sent: 0,
            started: false,
            trailers_sent: false,
            hint: self.hint,
            was_empty: self.was_empty,
        })
    }

    /// `true` if a newer copy has been made: this one may no longer be
    /// sent.
    pub fn is_superseded(&self) -> bool {
        self.generation < lock(&self.shared).floor
    }

    /// Why the body can no longer be sent again, if it cannot.
    pub fn committed(&self) -> Option<Committed> {
        lock(&self.shared).committed()
    }

    /// The buffer's limit, in bytes.
    pub fn limit(&self) -> usize {
        lock(&self.shared).limit
    }

    /// Bytes held in the buffer now (0 once committed).
    pub fn buffered(&self) -> usize {
        lock(&self.shared).buffered
    }

    /// Bytes read from the original stream so far.
    pub fn read(&self) -> u64 {
        lock(&self.shared).read
    }

    /// Bytes this copy has sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// `true` once the original stream has ended, whole (its end or its
    /// trailers were read).
    pub fn is_complete(&self) -> bool {
        matches!(lock(&self.shared).end, End::Ended { .. })
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        this.started = true;
        if this.generation < shared.floor {
            return Poll::Ready(Some(Err(Box::new(ReplayError::Superseded))));
        }
        // The bytes read before this copy was polled (by earlier copies).
        if this.sent < shared.read {
            if shared.capped {
                let committed = Committed::TooLarge {
                    limit: shared.limit,
                };
                return Poll::Ready(Some(Err(Box::new(ReplayError::Committed(committed)))));
            }
            if let Some(chunk) = shared.chunks.get(this.next).cloned() {
                this.next += 1;
                this.sent += chunk.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        match &shared.end {
            End::Ended { trailers } => {
                if !this.trailers_sent
                    && let Some(trailers) = trailers
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
                }
                return Poll::Ready(None);
            }
            End::Failed => {
                let error = ReplayError::Committed(Committed::Failed);
                return Poll::Ready(Some(Err(Box::new(error))));
            }
            End::Reading => {}
        }
        // At the frontier: read the original stream.
        let Some(source) = shared.source.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = source.as_mut().poll_frame(cx);
        if polled.is_ready() {
            // What this copy reads (or the end it meets) is for the others
            // waiting at the frontier too.
            let generation = this.generation;
            shared.waiting.retain(|(g, waker)| {
                if *g != generation {
                    waker.wake_by_ref();
                }
                false
            });
        }
        match polled {
            Poll::Pending => {
                let generation = this.generation;
                match shared.waiting.iter_mut().find(|(g, _)| *g == generation) {
                    Some((_, w)) if w.will_wake(cx.waker()) => {}
                    Some((_, w)) => *w = cx.waker().clone(),
                    None => shared.waiting.push((generation, cx.waker().clone())),
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                shared.end = End::Ended { trailers: None };
                shared.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                shared.end = End::Failed;
                shared.source = None;
                shared.chunks = Vec::new();
                shared.buffered = 0;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let len = data.len();
                    shared.read += len as u64;
                    this.sent += len as u64;
                    if !shared.capped && len > 0 {
                        if shared.buffered + len > shared.limit {
                            // Over the limit: later copies are refused; this
                            // one still sends everything.
                            shared.capped = true;
                            shared.chunks = Vec::new();
                            shared.buffered = 0;
                        } else {
                            shared.buffered += len;
                            shared.chunks.push(data.clone());
                            this.next = shared.chunks.len();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        shared.end = End::Ended {
                            trailers: Some(trailers.clone()),
                        };
                        shared.source = None;
                        this.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // A frame that is neither data nor trailers (none exist
                    // in http-body 1): passed on, not replayed.
                    Err(other) => Poll::Ready(Some(Ok(other))),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.was_empty {
            return true;
        }
        if !self.started {
            return false;
        }
        let shared = lock(&self.shared);
        if self.generation < shared.floor || self.sent < shared.read {
            return false;
        }
        match &shared.end {
            End::Ended { trailers } => self.trailers_sent || trailers.is_none(),
            End::Failed => false,
            End::Reading => shared.source.as_ref().is_none_or(|s| s.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if !self.started {
            return self.hint;
        }
        let shared = lock(&self.shared);
        let behind = shared.read.saturating_sub(self.sent);
        match (&shared.end, shared.source.as_ref()) {
            (End::Reading, Some(source)) => {
                let rest = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(behind));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(behind));
                }
                hint
            }
            _ => SizeHint::with_exact(behind),
        }
    }
}

/// A copy dropped while it waited at the frontier may have been the one the
/// stream would wake: the others waiting there are woken to poll it
/// themselves. (A copy that never waited takes no lock.)
impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let mut shared = lock(&self.shared);
        let generation = self.generation;
        if shared.waiting.iter().any(|(g, _)| *g == generation) {
            for (g, waker) in shared.waiting.drain(..) {
                if g != generation {
                    waker.wake();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A body that can be read once, from scripted frames; `Pending` once
    /// before each frame when `stutter` is set.
    struct Once {
        frames: VecDeque<Result<Frame<Bytes>, std::io::Error>>,
        polls: Arc<AtomicUsize>,
        stutter: bool,
        ready: bool,
        hint: Option<u64>,
    }

    impl Once {
        fn new(chunks: &[&[u8]]) -> Once {
            Once {
                frames: chunks
                    .iter()
                    .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                    .collect(),
                polls: Arc::new(AtomicUsize::new(0)),
                stutter: false,
                ready: false,
                hint: None,
            }
        }
        fn with_trailers(mut self, name: &'static str, value: &'static str) -> Once {
            let mut map = HeaderMap::new();
            map.insert(name, value.parse().unwrap());
            self.frames.push_back(Ok(Frame::trailers(map)));
            self
        }
        fn then_error(mut self) -> Once {
            self.frames
                .push_back(Err(std::io::Error::other("the stream broke")));
            self
        }
        fn exact(mut self, len: u64) -> Once {
            self.hint = Some(len);
            self
        }
    }

    impl Body for Once {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.stutter && !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            Poll::Ready(self.frames.pop_front())
        }
        fn size_hint(&self) -> SizeHint {
            match self.hint {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::new(),
            }
        }
    }

    async fn all(body: ReplayBody<Once>) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes().to_vec(), trailers))
    }

    async fn next_data(body: &mut ReplayBody<Once>) -> Vec<u8> {
        body.frame()
            .await
            .expect("a frame")
            .expect("no error")
            .into_data()
            .expect("data")
            .to_vec()
    }

    #[tokio::test]
    async fn a_replay_sends_the_same_bytes_and_trailers() {
        let body = ReplayBody::new(Once::new(&[b"ab", b"cd", b"ef"]).with_trailers("x-sum", "1"));
        let (first, t1) = all(body.replay().unwrap()).await.unwrap();
        assert_eq!(first, b"abcdef");
        let (again, t2) = all(body.replay().unwrap()).await.unwrap();
        assert_eq!(again, b"abcdef");
        let (thrice, t3) = all(body.replay().unwrap()).await.unwrap();
        assert_eq!(thrice, b"abcdef");
        for t in [t1, t2, t3] {
            assert_eq!(t.unwrap()["x-sum"], "1");
        }
    }

    #[tokio::test]
    async fn a_body_past_its_limit_is_committed_but_sent_whole_once() {
        let body = ReplayBody::with_limit(Once::new(&[b"0123", b"4567", b"89"]), 8);
        let mut first = body.replay().unwrap();
        assert_eq!(next_data(&mut first).await, b"0123");
        // Made while the body still fitted; the earlier copy is superseded.
        let mut retry = body.replay().unwrap();
        assert!(first.is_superseded());
        assert_eq!(next_data(&mut retry).await, b"0123");
        let rest = retry.collect().await.unwrap().to_bytes();
        assert_eq!(
            &rest[..],
            b"456789",
            "the copy that crossed the limit sends all"
        );
        assert_eq!(body.replay().unwrap_err(), Committed::TooLarge { limit: 8 });
        assert_eq!(body.buffered(), 0);
        // The superseded copy never sends a byte more.
        let err = all(first).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<ReplayError>(),
            Some(&ReplayError::Superseded)
        );
    }

    #[tokio::test]
    async fn exactly_the_limit_is_still_replayable() {
        let keep = ReplayBody::with_limit(Once::new(&[b"0123", b"4567"]), 8);
        all(keep.replay().unwrap()).await.unwrap();
        assert_eq!(keep.committed(), None);
        assert_eq!(keep.buffered(), 8);
        let again = keep.replay().unwrap();
        assert_eq!(all(again).await.unwrap().0, b"01234567");
    }

    #[tokio::test]
    async fn a_size_hint_past_the_limit_buffers_nothing_and_commits_at_the_first_byte() {
        let body = ReplayBody::with_limit(Once::new(&[b"0123", b"456789"]).exact(10), 4);
        // Nothing read: a copy still sends it all, from the stream.
        assert_eq!(body.committed(), None);
        let unsent = body.replay().unwrap();
        drop(unsent); // an attempt refused before its body was read
        let mut first = body.replay().expect("still nothing read");
        assert_eq!(first.size_hint().exact(), Some(10));
        assert_eq!(next_data(&mut first).await, b"0123");
        assert_eq!(body.buffered(), 0, "nothing is buffered");
        assert_eq!(body.committed(), Some(Committed::TooLarge { limit: 4 }));
        assert_eq!(body.replay().unwrap_err(), Committed::TooLarge { limit: 4 });
        let rest = first.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"456789", "the copy that read it sends it all");
    }

    #[tokio::test]
    async fn a_stream_error_reaches_the_attempt_and_commits_the_body() {
        let keep = ReplayBody::new(Once::new(&[b"abc"]).then_error());
        let err = all(keep.replay().unwrap()).await.unwrap_err();
        assert_eq!(err.to_string(), "the stream broke");
        assert_eq!(keep.committed(), Some(Committed::Failed));
        assert_eq!(keep.replay().unwrap_err(), Committed::Failed);
        assert_eq!(Committed::Failed.as_str(), "body_failed");
    }

    /// linkerd2-proxy #3216: the response came before the body was sent
    /// whole; the earlier attempt's copy is still alive (and may still be
    /// polled) when the retry starts. No panic, and the retry sends every
    /// byte once: the buffered ones, then the never-read rest.
    #[tokio::test]
    async fn an_early_response_hands_the_stream_to_the_retry() {
        let keep = ReplayBody::new(Once::new(&[b"he", b"ll", b"o!"]));
        let mut first = keep.replay().unwrap();
        assert_eq!(next_data(&mut first).await, b"he");
        // The server answered here; the retry starts while `first` lives.
        let mut retry = keep.replay().unwrap();
        assert_eq!(next_data(&mut retry).await, b"he");
        // The earlier connection polls its copy again: it is superseded,
        // and takes nothing from the stream.
        let err = first.frame().await.unwrap().unwrap_err();
        assert_eq!(
            err.downcast_ref::<ReplayError>(),
            Some(&ReplayError::Superseded)
        );
        assert!(!first.is_end_stream());
        let rest = retry.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"llo!");
        drop(first);
    }

    /// linkerd2-proxy #4621: a retry whose body the earlier attempt never
    /// polled sends each chunk exactly once.
    #[tokio::test]
    async fn a_body_never_polled_is_not_duplicated() {
        let mut source = Once::new(&[b"one,", b"two,", b"three"]);
        source.stutter = true;
        let polls = source.polls.clone();
        let keep = ReplayBody::new(source);
        let first = keep.replay().unwrap();
        drop(first); // the first attempt failed before its body was read
        assert_eq!(polls.load(Ordering::SeqCst), 0);
        let retry = keep.replay().unwrap();
        assert_eq!(all(retry).await.unwrap().0, b"one,two,three");
    }

    #[tokio::test]
    async fn a_superseded_copy_that_waited_is_woken() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let body = ReplayBody::new(Channel(rx));
        let mut first = body.replay().unwrap();
        let waiter = tokio::spawn(async move { first.frame().await.map(|f| f.is_err()) });
        tokio::task::yield_now().await;
        // Making the retry's copy wakes the waiting one, which fails.
        let retry = body.replay().unwrap();
        assert_eq!(waiter.await.unwrap(), Some(true));
        let reader = tokio::spawn(async move { retry.collect().await.map(|c| c.to_bytes()) });
        tx.send(Bytes::from_static(b"data")).await.unwrap();
        drop(tx);
        assert_eq!(&reader.await.unwrap().unwrap()[..], b"data");
    }

    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);
    impl Body for Channel {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn forks_read_alongside_and_send_the_same_bytes() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let body = ReplayBody::new(Channel(rx));
        let first = body.replay().unwrap();
        let hedge = first.fork().unwrap();
        assert!(!first.is_superseded() && !hedge.is_superseded());
        let a = tokio::spawn(async move { first.collect().await.map(|c| c.to_bytes()) });
        let b = tokio::spawn(async move { hedge.collect().await.map(|c| c.to_bytes()) });
        for chunk in [&b"he"[..], b"dg", b"ed"] {
            tokio::task::yield_now().await;
            tx.send(Bytes::from_static(chunk)).await.unwrap();
        }
        drop(tx);
        assert_eq!(&a.await.unwrap().unwrap()[..], b"hedged");
        assert_eq!(&b.await.unwrap().unwrap()[..], b"hedged");
        assert_eq!(body.read(), 6, "the stream was read once");
    }

    #[tokio::test]
    async fn a_fork_left_behind_past_the_limit_is_committed() {
        let body = ReplayBody::with_limit(Once::new(&[b"0123", b"4567", b"89"]), 8);
        let ahead = body.replay().unwrap();
        let behind = ahead.fork().unwrap();
        assert_eq!(all(ahead).await.unwrap().0, b"0123456789");
        let err = all(behind).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<ReplayError>(),
            Some(&ReplayError::Committed(Committed::TooLarge { limit: 8 }))
        );
    }

    #[tokio::test]
    async fn a_replay_supersedes_every_fork() {
        let body = ReplayBody::new(Once::new(&[b"x"]));
        let a = body.replay().unwrap();
        let b = a.fork().unwrap();
        let c = b.replay().unwrap();
        assert!(a.is_superseded() && b.is_superseded() && !c.is_superseded());
        assert_eq!(all(c).await.unwrap().0, b"x");
    }

    /// The stream keeps only the last waker it was given: when that copy is
    /// dropped, the other copy waiting at the frontier is woken to poll it
    /// again, instead of hanging.
    #[tokio::test]
    async fn dropping_the_copy_the_stream_would_wake_wakes_the_others() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let body = ReplayBody::new(Channel(rx));
        let mut a = body.replay().unwrap();
        let mut b = a.fork().unwrap();
        let reader = tokio::spawn(async move { a.frame().await.map(|f| f.is_ok()) });
        tokio::task::yield_now().await;
        // `b` polls last: the channel now wakes `b` only.
        assert!(futures_poll(&mut b).is_pending());
        drop(b);
        tx.send(Bytes::from_static(b"data")).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the other copy was woken");
        assert_eq!(got.unwrap(), Some(true));
    }

    fn futures_poll(
        body: &mut ReplayBody<Channel>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(body).poll_frame(&mut cx)
    }

    #[tokio::test]
    async fn an_older_copy_is_refused_once_a_newer_one_exists() {
        let body = ReplayBody::new(Once::new(&[b"x"]));
        let old = body.replay().unwrap();
        let new = body.replay().unwrap();
        assert!(old.is_superseded() && !new.is_superseded());
        assert_eq!(all(new).await.unwrap().0, b"x");
        let err = all(old).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "a later attempt took over the request body"
        );
    }

    #[tokio::test]
    async fn empty_bodies_end_at_once_and_replay() {
        let body = ReplayBody::with_limit(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(body.is_end_stream());
        let again = body.replay().unwrap();
        assert!(again.is_end_stream());
        assert_eq!(again.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn unpolled_copies_keep_the_original_framing() {
        let body = ReplayBody::new(Once::new(&[b"abcd"]).exact(4));
        all(body.replay().unwrap()).await.unwrap();
        // Sent with a Content-Length the first time: the same the second.
        let again = body.replay().unwrap();
        assert_eq!(again.size_hint().exact(), Some(4));
        assert!(!again.is_end_stream());
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(Committed::TooLarge { limit: 1 }.as_str(), "body_too_large");
        assert_eq!(ReplayError::Superseded.as_str(), "replay_superseded");
        assert_eq!(
            ReplayError::Committed(Committed::TooLarge { limit: 1 }).as_str(),
            "body_too_large"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn rt() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        }

        proptest! {
            /// Any chunking, any limit, any point at which the earlier
            /// attempt stopped reading: a replay sends exactly the original
            /// bytes when it is allowed, and it is allowed exactly when no
            /// more than the limit had been read.
            #[test]
            fn replays_are_byte_identical_or_refused(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
                limit in 0usize..300,
                stop_after in 0usize..14,
                stutter in any::<bool>(),
                retries in 1usize..4,
            ) {
                let original: Vec<u8> = chunks.concat();
                let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
                let mut source = Once::new(&slices);
                source.stutter = stutter;
                rt().block_on(async {
                    let mut attempt = ReplayBody::with_limit(source, limit);
                    for _ in 0..retries {
                        // The attempt reads some frames, then fails.
                        for _ in 0..stop_after {
                            match attempt.frame().await {
                                Some(Ok(_)) => {}
                                _ => break,
                            }
                        }
                        let read = attempt.read() as usize;
                        match attempt.replay() {
                            Ok(next) => {
                                prop_assert!(read <= limit);
                                attempt = next;
                            }
                            Err(Committed::TooLarge { limit: l }) => {
                                prop_assert_eq!(l, limit);
                                prop_assert!(read > limit);
                                return Ok(());
                            }
                            Err(other) => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    // The last copy reads on past the limit if it must: it
                    // is at the front of the stream once it has replayed.
                    let all = attempt.collect().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(all.to_bytes().to_vec(), original);
                    Ok(())
                })?;
            }
        }
    }
}
