//! Reading the start of a response body for a classifier, without taking
//! the body away from the caller.
//!
//! Some decisions need the body: GitHub tells a secondary rate limit from a
//! permission error only in the message of a 403. When a policy's
//! classifier asks for it ([`Classify::inspect_body`](crate::Classify::inspect_body)),
//! an adapter reads at most [`MAX_INSPECTED_BODY`](crate::MAX_INSPECTED_BODY)
//! bytes of the body, hands them to the engine, and returns a
//! [`ResponseBody`] that replays those bytes and then the rest of the
//! stream. Nothing is lost, and at most 64 KiB (plus the one chunk that
//! crosses the limit) is held in memory.
//!
//! Reading that prefix is part of the attempt: it ends when the attempt's
//! timer does (`attempt_timeout`, clamped to the `deadline`, counted from
//! the send), and a body that stalls or trickles past it makes the attempt
//! an attempt timeout, as a head that does not arrive would.
//!
//! Responses whose body is not inspected (all of them, unless a preset such
//! as [`RetryPolicy::github`](crate::RetryPolicy::github) asks) pass through
//! untouched, at no cost.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::replay::{Committed, ReplayBody};

pin_project! {
    /// The body of a response returned by the tower [`Retry`](crate::Retry)
    /// service: the inner service's body, as it was, or (after a
    /// classifier inspected its start) the inspected bytes followed by the
    /// rest of the stream.
    ///
    /// It is an [`http_body::Body`] with the same data and error types as
    /// the inner body; read it as usual (for example with
    /// `http_body_util::BodyExt::collect`).
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Plain { #[pin] inner: B },
        // Boxed: inspected bodies are rare, and a small `ResponseBody` keeps
        // every response cheap to move.
        Replay { replay: Box<Replay<B>> },
    }
}

/// An inspected body: the chunks read so far, then whatever the stream had
/// not yet delivered.
pub(crate) struct Replay<B: Body> {
    chunks: VecDeque<Bytes>,
    /// A non-data frame (trailers) or an error met while reading the prefix.
    pending: Option<Result<Frame<Bytes>, B::Error>>,
    /// The stream had ended while reading the prefix.
    ended: bool,
    rest: Pin<Box<B>>,
}

impl<B: Body> ResponseBody<B> {
    /// Wraps a body that was not inspected.
    pub fn new(inner: B) -> Self {
        ResponseBody {
            kind: Kind::Plain { inner },
        }
    }

    pub(crate) fn replay(replay: Replay<B>) -> Self {
        ResponseBody {
            kind: Kind::Replay {
                replay: Box::new(replay),
            },
        }
    }

    /// `true` if a classifier read the start of this body (it is replayed
    /// from memory, then streamed).
    pub fn is_inspected(&self) -> bool {
        matches!(self.kind, Kind::Replay { .. })
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inspected", &self.is_inspected())
            .finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Plain { inner } => inner.poll_frame(cx),
            KindProj::Replay { replay } => replay.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { inner } => inner.is_end_stream(),
            Kind::Replay { replay } => replay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { inner } => inner.size_hint(),
            Kind::Replay { replay } => replay.size_hint(),
        }
    }
}

impl<B: Body<Data = Bytes>> Replay<B> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(frame) = self.pending.take() {
            return Poll::Ready(Some(frame));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        self.rest.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.pending.is_none()
            && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        if self.ended {
            return SizeHint::with_exact(buffered);
        }
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

/// Reads up to `limit` bytes from the start of a body. Resolves to the
/// contiguous prefix (exactly `min(limit, body length)` bytes, for the
/// classifier) and the [`Replay`] that gives the caller the whole body.
pub(crate) struct Inspect<B: Body> {
    replay: Option<Replay<B>>,
    prefix: Vec<u8>,
    limit: usize,
}

impl<B: Body> Inspect<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Inspect {
            replay: Some(Replay {
                chunks: VecDeque::new(),
                pending: None,
                ended: false,
                rest: Box::pin(body),
            }),
            prefix: Vec::new(),
            limit,
        }
    }
}

// Nothing in `Inspect` is structurally pinned (the body is boxed).
impl<B: Body> Unpin for Inspect<B> {}

impl<B: Body<Data = Bytes>> Future for Inspect<B> {
    type Output = (Vec<u8>, Replay<B>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(replay) = this.replay.as_mut() else {
            // Polled after completion: a bug in the caller; never panic.
            return Poll::Pending;
        };
        while this.prefix.len() < this.limit && !replay.ended && replay.pending.is_none() {
            match replay.rest.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => replay.ended = true,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let room = this.limit - this.prefix.len();
                        this.prefix.extend_from_slice(&data[..data.len().min(room)]);
                        if !data.is_empty() {
                            replay.chunks.push_back(data);
                        }
                    }
                    Err(frame) => replay.pending = Some(Ok(frame)),
                },
                Poll::Ready(Some(Err(e))) => replay.pending = Some(Err(e)),
            }
        }
        let prefix = std::mem::take(&mut this.prefix);
        match this.replay.take() {
            Some(replay) => Poll::Ready((prefix, replay)),
            None => Poll::Pending,
        }
    }
}

/// A request body the tower layer can send again, attempt after attempt.
///
/// Every body that is `Clone` is one: each attempt sends a clone (the cheap
/// path: `Full<Bytes>`, `Empty<Bytes>`, `String`, ...). A body that cannot
/// be cloned (a stream) becomes one when wrapped in a
/// [`ReplayBody`](crate::replay::ReplayBody), which keeps what it sends up
/// to a limit; [`RetryLayer::replay_bodies`](crate::RetryLayer::replay_bodies)
/// wraps every request body so, with the policy's
/// [`replay_buffer`](crate::RetryPolicyBuilder::replay_buffer).
///
/// Implement it for a body type of your own whose copies are made some
/// other way (reopening a file, say); a copy must send every byte of the
/// body from the first.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use http_resilience::body::RetryBody;
/// use http_resilience::replay::ReplayBody;
///
/// // Clonable: a copy is a clone.
/// let full = Full::new(Bytes::from("abc"));
/// assert!(full.try_replay().is_ok());
/// // A stream: a copy replays what the buffer kept.
/// let stream = ReplayBody::new(Full::new(Bytes::from("abc")).boxed_unsync());
/// assert!(stream.try_replay().is_ok());
/// ```
pub trait RetryBody: Sized {
    /// A copy of the body for the next attempt, which sends every byte from
    /// the first, or why there can be none: the body is
    /// [committed](Committed) to the attempts already made.
    fn try_replay(&self) -> Result<Self, Committed>;

    /// Whether a copy could be made now ([`try_replay`](Self::try_replay)
    /// without keeping it). The tower layer asks it when a retry is being
    /// decided (only then); for a [`ReplayBody`] it also cuts off the copy of
    /// the attempt just made, so that nothing can read it past the limit
    /// before the retry's copy is sent.
    fn can_replay(&self) -> Result<(), Committed> {
        self.try_replay().map(drop)
    }

    /// A copy of the body for a hedge: one sent while the attempts before
    /// it may still be reading theirs. The same as
    /// [`try_replay`](Self::try_replay) for a `Clone` body; a
    /// [`ReplayBody`] [forks](ReplayBody::fork) (the copies read side by
    /// side) instead of superseding the copies in flight.
    fn try_hedge(&self) -> Result<Self, Committed> {
        self.try_replay()
    }

    /// A copy of the whole request for a hedge: its method, URI, version,
    /// headers and extensions, with [`try_hedge`](Self::try_hedge) of its
    /// body. (For a `Clone` body, the same as
    /// [`try_replay_request`](Self::try_replay_request).)
    fn try_hedge_request(request: &http::Request<Self>) -> Result<http::Request<Self>, Committed> {
        let mut copy = http::Request::new(request.body().try_hedge()?);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Ok(copy)
    }

    /// A copy of the whole request for the next attempt: its method, URI,
    /// version, headers and extensions, with [`try_replay`](Self::try_replay)
    /// of its body. (For a `Clone` body, the request's own `clone()`.)
    fn try_replay_request(request: &http::Request<Self>) -> Result<http::Request<Self>, Committed> {
        let mut copy = http::Request::new(request.body().try_replay()?);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Ok(copy)
    }
}

impl<T: Clone> RetryBody for T {
    #[inline]
    fn try_replay(&self) -> Result<Self, Committed> {
        Ok(self.clone())
    }
    #[inline]
    fn can_replay(&self) -> Result<(), Committed> {
        Ok(())
    }
    #[inline]
    fn try_replay_request(request: &http::Request<Self>) -> Result<http::Request<Self>, Committed> {
        Ok(request.clone())
    }
    // The same function as a retry's copy, not a second clone of the
    // request written out: with one call site, the clone stays inlined
    // into it (a second made `Uri::clone` a call of its own, +22
    // instructions on the success path).
    fn try_hedge_request(request: &http::Request<Self>) -> Result<http::Request<Self>, Committed> {
        Self::try_replay_request(request)
    }
}

/// `ReplayBody` is deliberately not `Clone`: a copy may be refused
/// ([`Committed`]), which a `Clone` could not say.
impl<B> RetryBody for ReplayBody<B> {
    fn try_replay(&self) -> Result<Self, Committed> {
        self.replay()
    }
    fn try_hedge(&self) -> Result<Self, Committed> {
        self.fork()
    }
}

/// What a request body says of itself before it is read: its size hint and
/// whether it is at its end. The tower adapter notes it at the first send
/// and compares the copy for each retry against it. A copy that no longer
/// says the same was not independent (a `Clone` that shares one stream, as
/// octocrab's `OctoBody` does): the first attempt drained it, and sending
/// it would send a shorter body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyShape {
    lower: u64,
    /// The upper bound (`u64::MAX >> 1` and above: none), its top bit
    /// `is_end_stream` (two words, not three: the tower future carries it).
    upper_end: u64,
}

impl BodyShape {
    const END: u64 = 1 << 63;

    pub(crate) fn of<B: Body>(body: &B) -> BodyShape {
        let hint = body.size_hint();
        let upper = hint.upper().map_or(!Self::END, |u| u.min(!Self::END));
        let end = if body.is_end_stream() { Self::END } else { 0 };
        BodyShape {
            lower: hint.lower(),
            upper_end: upper | end,
        }
    }

    /// Whether `body` still says what it said when this was noted.
    pub(crate) fn matches<B: Body>(&self, body: &B) -> bool {
        BodyShape::of(body) == *self
    }
}

/// Whether a request body is known to hold nothing more: it says it is at
/// its end (a stream that has already ended, an empty body), its exact
/// size is 0, or the request says `Content-Length: 0`. Sending an empty
/// body again then sends what the first attempt sent.
#[cfg(feature = "reqwest")]
pub(crate) fn known_empty<B: Body>(body: &B, headers: &http::HeaderMap) -> bool {
    body.is_end_stream()
        || body.size_hint().exact() == Some(0)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    /// A body delivered in the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    #[tokio::test]
    async fn prefix_is_bounded_and_the_whole_body_is_replayed() {
        let body = chunks(&[b"hello ", b"secondary rate ", b"limit exceeded"]);
        let (prefix, replay) = Inspect::new(body, 10).await;
        assert_eq!(prefix, b"hello seco");
        let all = ResponseBody::replay(replay)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&all[..], b"hello secondary rate limit exceeded");
    }

    #[tokio::test]
    async fn short_bodies_are_read_whole() {
        let (prefix, replay) = Inspect::new(chunks(&[b"abc"]), 64).await;
        assert_eq!(prefix, b"abc");
        let body = ResponseBody::replay(replay);
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
    }
}
