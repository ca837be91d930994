//! The attempts of one hedged request that are in flight, and when the
//! next one is due: the timing rules of hedging, as plain arithmetic on
//! the times they are given (the engine adds the load protection).

use std::time::{Duration, Instant};

use crate::protection::Ticket;

use super::MAX_HEDGES;

/// One attempt in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its place in the request's report (0 for the first attempt).
    pub(crate) attempt: u32,
    /// When it was sent.
    pub(crate) sent: Instant,
    /// Whether it is a hedge (else the first attempt or a retry).
    pub(crate) hedge: bool,
    /// The circuit breaker's ticket it carries, if it took one.
    pub(crate) ticket: Option<Ticket>,
}

/// What the next attempt that [`Flight::due`] names is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extra {
    /// A copy of the request alongside those in flight.
    Hedge,
    /// The retry owed after a transient failure while another attempt was
    /// in flight.
    Retry,
}

/// A retry owed after a transient failure while another attempt was in
/// flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed {
    /// The earliest it may go: the failure's end plus its own wait (a
    /// `Retry-After`, or the backoff).
    earliest: Instant,
    /// Whether the failure was a timeout (the budget charges it more).
    after_timeout: bool,
}

/// The attempts of one request in flight, and the rules for the next.
///
/// - A hedge is due one `delay` after the latest attempt in flight was
///   sent, while fewer than `max_hedges` hedges were sent and none was
///   refused since the last attempt that was not a hedge.
/// - After a transient failure while another attempt is in flight, a
///   retry is owed: due when the latest attempt in flight has been out for
///   one `delay`, and not before the failure's own wait has passed. It
///   takes the place of the next hedge. If the attempts in flight all end
///   first, it is merged into their own decision ([`Flight::settle`]).
#[derive(Debug, Clone)]
pub(crate) struct Flight {
    delay: Duration,
    max_hedges: u32,
    hedges: u32,
    slots: [Option<Slot>; 1 + MAX_HEDGES as usize],
    owed: Option<Owed>,
    /// A hedge was refused: none until the next attempt that is not one.
    held: bool,
    /// Where the current round's records start in the report.
    pub(crate) round_start: u32,
    /// The attempt that just ended, for the decision on it.
    pub(crate) last_ended: Option<Slot>,
    /// The attempt handed over to be decided alone, and the index its
    /// record will have.
    pub(crate) handed: Option<(usize, Slot)>,
}

impl Flight {
    /// The flight of a request whose hedges go `delay` apart, at most
    /// `max_hedges` of them (at most [`MAX_HEDGES`]).
    pub(crate) fn new(delay: Duration, max_hedges: u32) -> Flight {
        Flight {
            delay,
            max_hedges: max_hedges.min(MAX_HEDGES),
            hedges: 0,
            slots: [None; 1 + MAX_HEDGES as usize],
            owed: None,
            held: false,
            round_start: 0,
            last_ended: None,
            handed: None,
        }
    }

    /// Retries in flight (attempts that are not hedges, after the first).
    pub(crate) fn retries_in_flight(&self) -> u32 {
        self.slots
            .iter()
            .flatten()
            .filter(|s| !s.hedge && s.attempt > 0)
            .count() as u32
    }

    /// Hedges sent so far.
    #[cfg(test)]
    pub(crate) fn hedges(&self) -> u32 {
        self.hedges
    }

    /// Attempts in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether a slot is free for one more attempt.
    pub(crate) fn has_room(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    /// The latest send among the attempts in flight.
    fn latest(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|s| s.sent).max()
    }

    /// When the next attempt alongside those in flight is due, and what it
    /// is; `None` when none is (nothing in flight, hedges used up or held,
    /// no room).
    pub(crate) fn due(&self) -> Option<(Instant, Extra)> {
        let latest = self.latest()?;
        if !self.has_room() {
            return None;
        }
        let after = latest.checked_add(self.delay)?;
        if let Some(owed) = self.owed {
            return Some((after.max(owed.earliest), Extra::Retry));
        }
        if self.hedges < self.max_hedges && !self.held {
            return Some((after, Extra::Hedge));
        }
        None
    }

    /// An attempt went out. A hedge counts against `max_hedges`; any other
    /// attempt (a retry) pays the retry that was owed, if any, and lets
    /// hedges go again after a refusal. `false` if no slot was free (the
    /// attempt is then not tracked).
    pub(crate) fn sent(&mut self, slot: Slot) -> bool {
        let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) else {
            return false;
        };
        *free = Some(slot);
        if slot.hedge {
            self.hedges += 1;
        } else {
            self.owed = None;
            self.held = false;
        }
        true
    }

    /// The attempt numbered `attempt` ended: its slot, if it was in flight.
    pub(crate) fn ended(&mut self, attempt: u32) -> Option<Slot> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_some_and(|s| s.attempt == attempt))?;
        slot.take()
    }

    /// A transient failure, with a wait of `wait` after its end at `at`,
    /// while other attempts are in flight: a retry is owed (the later of
    /// two owed ones counts).
    pub(crate) fn owe(&mut self, at: Instant, wait: Duration, after_timeout: bool) {
        let earliest = at.checked_add(wait).unwrap_or(at);
        let owed = match self.owed {
            Some(o) if o.earliest >= earliest => Owed {
                after_timeout: o.after_timeout || after_timeout,
                ..o
            },
            Some(o) => Owed {
                earliest,
                after_timeout: o.after_timeout || after_timeout,
            },
            None => Owed {
                earliest,
                after_timeout,
            },
        };
        self.owed = Some(owed);
    }

    /// Whether the retry owed was for a timeout.
    pub(crate) fn owed_after_timeout(&self) -> bool {
        self.owed.is_some_and(|o| o.after_timeout)
    }

    /// The retry owed will not go (load protection refused it): the
    /// request rests on the attempts in flight.
    pub(crate) fn forgive(&mut self) {
        self.owed = None;
    }

    /// A hedge was refused: none until the next attempt that is not one.
    pub(crate) fn hold(&mut self) {
        self.held = true;
    }

    /// The last attempt in flight failed and a retry follows after `wait`:
    /// the wait it must keep, at least what an owed retry still had to
    /// wait at `now` (the owed retry is merged into it).
    pub(crate) fn settle(&mut self, now: Instant, wait: Duration) -> Duration {
        match self.owed.take() {
            Some(owed) => wait.max(owed.earliest.saturating_duration_since(now)),
            None => wait,
        }
    }

    /// The attempts still in flight, taken out (another won: they are
    /// cancelled).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Slot> + '_ {
        self.owed = None;
        self.slots.iter_mut().filter_map(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn slot(attempt: u32, sent: Instant, hedge: bool) -> Slot {
        Slot {
            attempt,
            sent,
            hedge,
            ticket: None,
        }
    }

    #[test]
    fn hedges_go_one_delay_apart_up_to_the_most() {
        let t0 = Instant::now();
        let mut f = Flight::new(ms(50), 2);
        assert_eq!(f.due(), None, "nothing in flight");
        f.sent(slot(0, t0, false));
        assert_eq!(f.due(), Some((t0 + ms(50), Extra::Hedge)));
        f.sent(slot(1, t0 + ms(50), true));
        assert_eq!(f.due(), Some((t0 + ms(100), Extra::Hedge)));
        f.sent(slot(2, t0 + ms(100), true));
        assert_eq!(f.due(), None, "two hedges: the most");
        assert_eq!(f.hedges(), 2);
        assert_eq!(f.in_flight(), 3);
        assert_eq!(f.ended(1).map(|s| s.hedge), Some(true));
        assert_eq!(f.ended(1), None, "ended once");
        let rest: Vec<u32> = f.drain().map(|s| s.attempt).collect();
        assert_eq!(rest, [0, 2]);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn a_refused_hedge_holds_the_next_until_a_retry() {
        let t0 = Instant::now();
        let mut f = Flight::new(ms(50), 3);
        f.sent(slot(0, t0, false));
        f.hold();
        assert_eq!(f.due(), None);
        f.ended(0);
        f.sent(slot(1, t0 + ms(300), false));
        assert_eq!(f.due(), Some((t0 + ms(350), Extra::Hedge)));
    }

    #[test]
    fn a_failure_while_another_is_in_flight_owes_a_retry() {
        let t0 = Instant::now();
        let mut f = Flight::new(ms(50), 1);
        f.sent(slot(0, t0, false));
        f.sent(slot(1, t0 + ms(50), true));
        // The first fails at 60 ms with a 20 ms backoff: the retry waits
        // for the hedge to have been out 50 ms (100 ms).
        f.ended(0);
        f.owe(t0 + ms(60), ms(20), false);
        assert_eq!(f.due(), Some((t0 + ms(100), Extra::Retry)));
        // A longer wait of its own (Retry-After: 1s) is kept.
        f.owe(t0 + ms(60), ms(1000), true);
        assert_eq!(f.due(), Some((t0 + ms(1060), Extra::Retry)));
        assert!(f.owed_after_timeout());
        // The retry goes: nothing owed any more, and hedges are used up.
        f.sent(slot(2, t0 + ms(1060), false));
        assert_eq!(f.due(), None);
        assert!(!f.owed_after_timeout());
    }

    #[test]
    fn an_owed_retry_merges_into_the_last_attempts_own_decision() {
        let t0 = Instant::now();
        let mut f = Flight::new(ms(50), 1);
        f.sent(slot(0, t0, false));
        f.sent(slot(1, t0 + ms(50), true));
        f.ended(0);
        f.owe(t0 + ms(60), ms(500), false);
        // The hedge fails at 80 ms with a 100 ms backoff of its own: the
        // retry keeps the longer of the two (the first's 500 ms, from 60).
        f.ended(1);
        assert_eq!(f.settle(t0 + ms(80), ms(100)), ms(480));
        // Nothing owed afterwards.
        assert_eq!(f.settle(t0 + ms(80), ms(100)), ms(100));
        f.owe(t0, ms(10), false);
        f.forgive();
        assert_eq!(f.settle(t0, ms(1)), ms(1));
    }

    #[test]
    fn no_more_attempts_than_slots() {
        let t0 = Instant::now();
        let mut f = Flight::new(ms(10), 99);
        for n in 0..=MAX_HEDGES {
            assert!(f.sent(slot(n, t0, n > 0)));
        }
        assert!(!f.has_room());
        assert!(!f.sent(slot(9, t0, true)));
        assert_eq!(f.due(), None);
        assert_eq!(f.hedges(), MAX_HEDGES);
    }
}
