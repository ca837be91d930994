//! The process's local copy of what the fleet shares in time (quota holds
//! and breaker hints), so that reading it costs no round trip; and the
//! clock that maps the Redis server's milliseconds to this process's
//! instants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protection::store::MAX_HOLDS;

/// Maps the Redis server's wall-clock milliseconds to this process's
/// instants (tokio's clock, as the adapters use). The offset is measured
/// at every reply that carries the server's time (the reply's midpoint);
/// before the first, the process's own wall clock stands in (for holds
/// noted while Redis was never reached, which stay local).
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    /// Server milliseconds minus local milliseconds since `origin`.
    offset: AtomicI64,
}

pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock {
            origin: now(),
            offset: AtomicI64::new(wall),
        }
    }
    fn local_ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.origin).as_millis() as i64
    }
    /// A reply sent at `sent`, received at `received`, said the server's
    /// time was `server_ms`.
    pub(crate) fn observe(&self, sent: Instant, received: Instant, server_ms: i64) {
        let mid = sent + received.saturating_duration_since(sent) / 2;
        self.offset
            .store(server_ms - self.local_ms(mid), Ordering::Relaxed);
    }
    /// The server's time at `at`, as far as this process knows.
    pub(crate) fn server_ms(&self, at: Instant) -> i64 {
        self.local_ms(at) + self.offset.load(Ordering::Relaxed)
    }
    /// The instant at which the server's clock reads `server_ms`, rounded
    /// up to the next millisecond (a hold is never over early).
    pub(crate) fn instant_of(&self, server_ms: i64) -> Instant {
        let local = server_ms + 1 - self.offset.load(Ordering::Relaxed);
        self.origin + Duration::from_millis(local.max(0) as u64)
    }
}

/// One hold: its end (server ms) and whether the fleet has it.
#[derive(Debug, Clone, Copy)]
struct Hold {
    until: i64,
    shared: bool,
}

/// What this process knows of one endpoint's shared times.
#[derive(Debug, Default)]
pub(crate) struct EndpointView {
    /// Partition id → hold; at most `MAX_HOLDS`.
    holds: Mutex<HashMap<u64, Hold>>,
    /// The latest hold's end (server ms), 0 for none: a read that finds it
    /// in the past takes no lock.
    latest_hold: AtomicI64,
    /// The breaker's "open until" hint (server ms), 0 for none.
    open_until: AtomicI64,
    /// Whether the fleet has the hint.
    open_shared: AtomicBool,
}

impl EndpointView {
    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Hold>> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a hold of `partition` until `until`, only if later; `true` if
    /// it was. A hold already known keeps `shared` once set.
    pub(crate) fn note_hold(&self, partition: u64, until: i64, shared: bool, now: i64) -> bool {
        let mut holds = self.holds();
        if holds.len() >= MAX_HOLDS && !holds.contains_key(&partition) {
            holds.retain(|_, h| h.until > now);
            if holds.len() >= MAX_HOLDS
                && let Some(first) = holds.iter().min_by_key(|(_, h)| h.until).map(|(p, _)| *p)
            {
                holds.remove(&first);
            }
        }
        let hold = holds.entry(partition).or_insert(Hold {
            until: 0,
            shared: false,
        });
        let later = until > hold.until;
        if later {
            hold.until = until;
            hold.shared = shared;
        } else if until == hold.until {
            hold.shared |= shared;
        }
        drop(holds);
        self.latest_hold.fetch_max(until, Ordering::AcqRel);
        later
    }

    /// The end of `partition`'s hold, if it lasts beyond `now`.
    pub(crate) fn hold(&self, partition: u64, now: i64) -> Option<i64> {
        if self.latest_hold.load(Ordering::Acquire) <= now {
            return None;
        }
        self.holds()
            .get(&partition)
            .map(|h| h.until)
            .filter(|&until| until > now)
    }

    /// Whether any hold lasts beyond `now`.
    pub(crate) fn holding(&self, now: i64) -> bool {
        self.latest_hold.load(Ordering::Acquire) > now
    }

    /// The holds lasting beyond `now` that the fleet does not have yet.
    pub(crate) fn unshared(&self, now: i64) -> Vec<(u64, i64)> {
        if !self.holding(now) {
            return Vec::new();
        }
        self.holds()
            .iter()
            .filter(|(_, h)| !h.shared && h.until > now)
            .map(|(p, h)| (*p, h.until))
            .collect()
    }

    /// Marks `partition`'s hold as one the fleet has (it answered with a
    /// hold of its own, within a few milliseconds of this process's).
    pub(crate) fn mark_shared(&self, partition: u64) {
        if let Some(h) = self.holds().get_mut(&partition) {
            h.shared = true;
        }
    }

    /// Notes the breaker's hint, only if later; `true` if it was.
    pub(crate) fn note_open(&self, until: i64, shared: bool) -> bool {
        let before = self.open_until.fetch_max(until, Ordering::AcqRel);
        if until > before {
            self.open_shared.store(shared, Ordering::Release);
            true
        } else {
            if until == before && shared {
                self.open_shared.store(true, Ordering::Release);
            }
            false
        }
    }

    /// The hint's end, if it lasts beyond `now`.
    pub(crate) fn open_until(&self, now: i64) -> Option<i64> {
        Some(self.open_until.load(Ordering::Acquire)).filter(|&until| until > now)
    }

    /// The hint, if it lasts beyond `now` and the fleet does not have it.
    pub(crate) fn unshared_open(&self, now: i64) -> Option<i64> {
        self.open_until(now)
            .filter(|_| !self.open_shared.load(Ordering::Acquire))
    }
}

/// Every endpoint's view, by endpoint tag, plus the latest end of any hold
/// (so that "is anything held anywhere" takes no lock).
#[derive(Debug, Default)]
pub(crate) struct View {
    endpoints: RwLock<HashMap<String, Arc<EndpointView>>>,
    latest_hold: AtomicI64,
}

impl View {
    /// The view of the endpoint with this tag, made on first use.
    pub(crate) fn endpoint(&self, tag: &str) -> Arc<EndpointView> {
        if let Some(found) = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tag)
        {
            return found.clone();
        }
        self.endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tag.to_owned())
            .or_default()
            .clone()
    }

    /// Notes a hold (see [`EndpointView::note_hold`]).
    pub(crate) fn note_hold(
        &self,
        view: &EndpointView,
        partition: u64,
        until: i64,
        shared: bool,
        now: i64,
    ) -> bool {
        self.latest_hold.fetch_max(until, Ordering::AcqRel);
        view.note_hold(partition, until, shared, now)
    }

    /// Whether a hold of any endpoint lasts beyond `now`.
    pub(crate) fn holding(&self, now: i64) -> bool {
        self.latest_hold.load(Ordering::Acquire) > now
    }

    /// Every endpoint's view (for re-sharing what the fleet missed).
    pub(crate) fn all(&self) -> Vec<(String, Arc<EndpointView>)> {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Forgets every hold (the fleet's partition key changed: the holds
    /// were keyed by the old one).
    pub(crate) fn forget_holds(&self) {
        for (_, view) in self.all() {
            view.holds().clear();
            view.latest_hold.store(0, Ordering::Release);
        }
        self.latest_hold.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_only_if_later_and_bounded() {
        let view = View::default();
        let e = view.endpoint("h:1");
        assert!(view.note_hold(&e, 7, 1_000, false, 0));
        assert!(
            !view.note_hold(&e, 7, 900, true, 0),
            "an earlier hold loses"
        );
        assert_eq!(e.hold(7, 0), Some(1_000));
        assert_eq!(e.unshared(0), vec![(7, 1_000)]);
        e.mark_shared(7);
        assert!(e.unshared(0).is_empty());
        assert_eq!(e.hold(7, 1_000), None, "over at its end");
        assert!(view.holding(999) && !view.holding(1_000));
        for p in 0..(MAX_HOLDS as u64 + 5) {
            view.note_hold(&e, 100 + p, 2_000 + p as i64, true, 0);
        }
        assert_eq!(e.holds().len(), MAX_HOLDS);
        assert_eq!(
            e.hold(100 + MAX_HOLDS as u64 + 4, 0),
            Some(2_000 + MAX_HOLDS as i64 + 4)
        );
    }

    #[test]
    fn open_hints_only_if_later() {
        let e = EndpointView::default();
        assert!(e.note_open(500, false));
        assert!(!e.note_open(400, true));
        assert_eq!(e.unshared_open(0), Some(500));
        assert!(!e.note_open(500, true));
        assert_eq!(e.unshared_open(0), None);
        assert_eq!(e.open_until(500), None);
    }

    #[test]
    fn the_clock_maps_server_time_both_ways() {
        let clock = Clock::new();
        let t = now();
        clock.observe(t, t + Duration::from_millis(2), 1_000_000);
        let server = clock.server_ms(t + Duration::from_millis(1));
        assert_eq!(server, 1_000_000);
        let at = clock.instant_of(1_000_500);
        let back = clock.server_ms(at);
        assert!((1_000_500..=1_000_501).contains(&back), "{back}");
    }
}
