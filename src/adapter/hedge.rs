//! Attempts side by side: what both adapters share of a hedged request.
//! The engine decides (`engine/hedge.rs`); a [`Race`] only keeps the
//! attempts in flight, each within its own timer, and the timer of the next
//! hedge, and says which happened first. Dropping a race (or an attempt
//! taken out of it) is the cancellation: the attempt's future is dropped,
//! which closes its connection; its body is never read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::span::AttemptSpan;

/// How one attempt of a race ended.
pub(crate) enum LaneEnd<O> {
    /// Its future's output.
    Done(O),
    /// Its attempt timeout, of this long, ran out first.
    TimedOut(Duration),
}

/// What a [`Race`] saw first.
pub(crate) enum Event<O> {
    /// Attempt number `attempt` ended (it is no longer in the race).
    Ended(u32, LaneEnd<O>, Ended),
    /// The hedge timer fired: ask the engine (`hedge_now`).
    Due,
}

/// What an attempt that ended leaves for what follows.
pub(crate) struct Ended {
    /// Its span, if it had one (the engine decides in it).
    pub(crate) span: Option<AttemptSpan>,
    /// Its timer's deadline and length, if it has one: reading its body
    /// for the classifier stays within it.
    pub(crate) window: Option<(Instant, Duration)>,
}

/// One attempt in flight.
struct Lane<F> {
    attempt: u32,
    fut: Pin<Box<F>>,
    timer: Option<(Pin<Box<Sleep>>, Duration)>,
    /// Its span, if a subscriber wanted one: each poll enters it.
    span: Option<AttemptSpan>,
}

/// The attempts of a hedged request in flight, and the hedge timer.
pub(crate) struct Race<F> {
    lanes: Vec<Lane<F>>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Race<F> {
    /// A race with no attempt in it yet.
    pub(crate) fn new() -> Self {
        Race {
            lanes: Vec::with_capacity(2),
            timer: None,
        }
    }

    /// Adds attempt number `attempt`, sent now, within `timeout`, in
    /// `span` if it has one.
    pub(crate) fn start(
        &mut self,
        attempt: u32,
        fut: F,
        timeout: Option<Duration>,
        span: Option<AttemptSpan>,
    ) {
        self.lanes.push(Lane {
            attempt,
            fut: Box::pin(fut),
            timer: timeout.map(|after| (Box::pin(tokio::time::sleep(after)), after)),
            span,
        });
    }

    /// Sets the hedge timer to `at` (`None`: none).
    pub(crate) fn arm(&mut self, at: Option<std::time::Instant>) {
        self.timer = at.map(|at| Box::pin(tokio::time::sleep_until(Instant::from_std(at))));
    }

    /// The first thing to happen: an attempt ends (the oldest first, when
    /// several did), or the hedge timer fires.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Event<F::Output>> {
        for i in 0..self.lanes.len() {
            let lane = &mut self.lanes[i];
            let fut = &mut lane.fut;
            let polled = match &lane.span {
                Some(span) => span.in_scope(|| fut.as_mut().poll(cx)),
                None => fut.as_mut().poll(cx),
            };
            let end = match polled {
                Poll::Ready(output) => LaneEnd::Done(output),
                Poll::Pending => match &mut lane.timer {
                    Some((timer, after)) => {
                        if timer.as_mut().poll(cx).is_pending() {
                            continue;
                        }
                        LaneEnd::TimedOut(*after)
                    }
                    None => continue,
                },
            };
            let lane = self.lanes.remove(i);
            let ended = Ended {
                span: lane.span,
                window: lane.timer.map(|(timer, after)| (timer.deadline(), after)),
            };
            return Poll::Ready(Event::Ended(lane.attempt, end, ended));
        }
        if let Some(timer) = &mut self.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            self.timer = None;
            return Poll::Ready(Event::Due);
        }
        Poll::Pending
    }
}
