//! What a [`Hedging`](super::Hedging) learns: the recent latencies of each
//! endpoint, in bounded memory, and their percentile.

use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The most latencies kept per endpoint (the largest
/// [`samples`](super::HedgingBuilder::samples)).
pub(crate) const MAX_SAMPLES: usize = 1024;

/// The most endpoints one [`Hedging`](super::Hedging) keeps latencies
/// for; a new endpoint beyond it takes the place of the one that learned
/// least recently.
pub const MAX_LEARNED_ENDPOINTS: usize = 1024;

/// Every endpoint's window, under one lock (only requests under a policy
/// that learns its delay take it: twice a request, once to read the
/// figure at the first send and once to note a latency).
#[derive(Debug, Default)]
pub(crate) struct LatencyBook {
    inner: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    windows: hashbrown::HashMap<Key, Window>,
    /// Bumped at every latency noted: a window's `touched` says how
    /// recently it learned.
    clock: u64,
}

impl LatencyBook {
    pub(crate) fn new() -> LatencyBook {
        LatencyBook::default()
    }

    /// Notes `latency` for `host:port`, in a window of `capacity`.
    pub(crate) fn record(&self, host: &str, port: u16, latency: Duration, capacity: u32) {
        let mut book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        book.clock += 1;
        let clock = book.clock;
        let key = Borrowed { host, port };
        if !book.windows.contains_key(&key) && book.windows.len() >= MAX_LEARNED_ENDPOINTS {
            // Full: the endpoint that learned least recently goes.
            let stalest = book
                .windows
                .iter()
                .min_by_key(|(_, w)| w.touched)
                .map(|(k, _)| k.clone());
            if let Some(stalest) = stalest {
                book.windows.remove(&stalest);
            }
        }
        let window = book
            .windows
            .entry_ref(&key)
            .or_insert_with(|| Window::new(capacity));
        window.push(micros(latency));
        window.touched = clock;
    }

    /// The `p` percentile of the latencies noted for `host:port`, once
    /// there are `min_samples` of them.
    pub(crate) fn percentile(
        &self,
        host: &str,
        port: u16,
        p: f64,
        min_samples: u32,
    ) -> Option<Duration> {
        let mut book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let window = book.windows.get_mut(&Borrowed { host, port })?;
        if window.len() < min_samples as usize {
            return None;
        }
        Some(Duration::from_micros(u64::from(window.percentile(p))))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .windows
            .len()
    }
}

/// A latency in whole microseconds, at most `u32::MAX` (71 minutes).
fn micros(latency: Duration) -> u32 {
    u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)
}

/// The recent latencies of one endpoint: a ring of at most `capacity`
/// (made at the first one), and the percentile last worked out from it.
#[derive(Debug)]
pub(crate) struct Window {
    samples: Vec<u32>,
    capacity: usize,
    /// Where the next latency goes once the ring is full.
    next: usize,
    /// The percentile worked out since the last latency noted, and for
    /// which `p` (as bits).
    cached: Option<(u64, u32)>,
    touched: u64,
}

impl Window {
    pub(crate) fn new(capacity: u32) -> Window {
        let capacity = (capacity as usize).clamp(1, MAX_SAMPLES);
        Window {
            samples: Vec::with_capacity(capacity),
            capacity,
            next: 0,
            cached: None,
            touched: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(crate) fn push(&mut self, micros: u32) {
        if self.samples.len() < self.capacity {
            self.samples.push(micros);
        } else {
            self.samples[self.next] = micros;
            self.next = (self.next + 1) % self.capacity;
        }
        self.cached = None;
    }

    /// The `p` percentile by nearest rank: the smallest latency that at
    /// least `p` of the window do not exceed (`p` in (0, 1]; out of range,
    /// the nearest end). 0 for an empty window.
    pub(crate) fn percentile(&mut self, p: f64) -> u32 {
        if let Some((bits, value)) = self.cached
            && bits == p.to_bits()
        {
            return value;
        }
        let n = self.samples.len();
        if n == 0 {
            return 0;
        }
        let p = if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) };
        // Rank in 1..=n: ceil(p * n), computed in floating point and
        // clamped (for n <= 1024 the product is exact enough).
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        let mut sorted = [0u32; MAX_SAMPLES];
        let sorted = &mut sorted[..n];
        sorted.copy_from_slice(&self.samples);
        let (_, value, _) = sorted.select_nth_unstable(rank - 1);
        let value = *value;
        self.cached = Some((p.to_bits(), value));
        value
    }
}

/// An endpoint's key in the book: its host (compared and hashed without
/// regard to ASCII case) and port.
#[derive(Debug, Clone)]
struct Key {
    host: Box<str>,
    port: u16,
}

/// The borrowed form of a [`Key`], hashed and compared alike, so that a
/// lookup needs no allocation.
#[derive(Debug, Clone, Copy)]
struct Borrowed<'a> {
    host: &'a str,
    port: u16,
}

fn hash_key<H: Hasher>(host: &str, port: u16, state: &mut H) {
    for b in host.bytes() {
        state.write_u8(b.to_ascii_lowercase());
    }
    state.write_u8(0xff);
    state.write_u16(port);
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(&self.host, self.port, state);
    }
}

impl Hash for Borrowed<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.host, self.port, state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.port == other.port && self.host.eq_ignore_ascii_case(&other.host)
    }
}

impl Eq for Key {}

impl hashbrown::Equivalent<Key> for Borrowed<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.port == key.port && self.host.eq_ignore_ascii_case(&key.host)
    }
}

impl From<&Borrowed<'_>> for Key {
    fn from(key: &Borrowed<'_>) -> Key {
        Key {
            host: key.host.into(),
            port: key.port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest-rank percentile, the slow way.
    fn reference(samples: &[u32], p: f64) -> u32 {
        let mut v = samples.to_vec();
        v.sort_unstable();
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    #[test]
    fn nearest_rank() {
        let mut w = Window::new(100);
        for v in 1..=100 {
            w.push(v);
        }
        assert_eq!(w.percentile(0.95), 95);
        assert_eq!(w.percentile(0.5), 50);
        assert_eq!(w.percentile(1.0), 100);
        assert_eq!(w.percentile(0.001), 1);
        // Out of range: the nearest end, never a panic.
        assert_eq!(w.percentile(7.0), 100);
        assert_eq!(w.percentile(-1.0), 1);
        assert_eq!(w.percentile(f64::NAN), 100);
        assert_eq!(Window::new(4).percentile(0.5), 0);
    }

    #[test]
    fn the_ring_keeps_the_latest_and_no_more() {
        let mut w = Window::new(4);
        for v in [500, 600, 700, 800, 1, 2, 3] {
            w.push(v);
        }
        assert_eq!(w.len(), 4);
        // 800, 1, 2, 3 are left.
        assert_eq!(w.percentile(1.0), 800);
        w.push(4);
        assert_eq!(w.percentile(1.0), 4, "the cached figure is dropped");
        assert!(w.samples.capacity() >= 4 && w.samples.len() == 4);
    }

    #[test]
    fn the_book_is_bounded_and_forgets_the_stalest_endpoint() {
        let book = LatencyBook::new();
        let ms = Duration::from_millis;
        for i in 0..MAX_LEARNED_ENDPOINTS {
            book.record(&format!("h{i}"), 80, ms(5), 8);
        }
        // h0 learns again: h1 is now the stalest.
        book.record("h0", 80, ms(5), 8);
        book.record("new", 80, ms(7), 8);
        assert_eq!(book.len(), MAX_LEARNED_ENDPOINTS);
        assert_eq!(book.percentile("h1", 80, 0.5, 1), None, "forgotten");
        assert_eq!(book.percentile("h0", 80, 0.5, 1), Some(ms(5)));
        assert_eq!(book.percentile("NEW", 80, 0.5, 1), Some(ms(7)));
        assert_eq!(book.percentile("new", 80, 0.5, 2), None, "one sample");
        // A latency too long for the window's unit is kept as its largest.
        book.record("far", 1, Duration::from_secs(10_000), 8);
        assert_eq!(
            book.percentile("far", 1, 1.0, 1),
            Some(Duration::from_micros(u64::from(u32::MAX)))
        );
    }

    proptest::proptest! {
        #[test]
        fn the_window_agrees_with_the_reference(
            capacity in 1u32..64,
            samples in proptest::collection::vec(0u32..1_000_000, 1..200),
            p in 0.001f64..=1.0,
        ) {
            let mut w = Window::new(capacity);
            for &s in &samples {
                w.push(s);
            }
            let kept = &samples[samples.len().saturating_sub(capacity as usize)..];
            proptest::prop_assert_eq!(w.len(), kept.len());
            proptest::prop_assert_eq!(w.percentile(p), reference(kept, p));
            // Asked again, the cached figure is the same.
            proptest::prop_assert_eq!(w.percentile(p), reference(kept, p));
        }
    }
}
