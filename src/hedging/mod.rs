//! Hedged requests: a second copy of a slow request, sent before the first
//! has failed.
//!
//! Retries handle failures; they do nothing for a request that is merely
//! slow. A policy with [`Hedging`] sends another attempt of a request that
//! may be sent twice when no response has arrived after a *hedge delay*,
//! without cancelling the first: the first acceptable response wins, and
//! the other attempts are cancelled (their futures dropped, which closes
//! their connections; their bodies are never read). This is "The Tail at
//! Scale" (Dean and Barroso): a backup request after the 95th percentile
//! cuts the tail sharply for a few percent more load. Polly and .NET's
//! standard hedging handler, gRPC's `hedgingPolicy`, Finagle's backup
//! requests and `tower::hedge` do the same.
//!
//! # Which requests
//!
//! Only requests that may be sent twice are hedged: idempotent methods
//! (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), requests carrying an
//! `Idempotency-Key` (which the policy can add with
//! [`auto_idempotency_key`](crate::RetryPolicyBuilder::auto_idempotency_key);
//! every attempt carries the same key and the same body), and requests a
//! classifier declares safe
//! ([`Classify::retry_safety`](crate::Classify::retry_safety)).
//! [`retry_non_idempotent`](crate::RetryPolicyBuilder::retry_non_idempotent)
//! does not extend to hedges: it allows a retry after a failure, and a
//! hedge is sent while the first attempt may still be running. A streamed
//! body kept in a replay buffer is hedged with
//! [`ReplayBody::fork`](crate::replay::ReplayBody::fork) (the copies read
//! side by side; past the buffer's limit the body is committed to the
//! copy furthest along); a stream sent without a buffer is not hedged.
//!
//! # The delay
//!
//! [`delay`](HedgingBuilder::delay) is the fixed delay. With a
//! [`percentile`](HedgingBuilder::percentile) (for example 0.95), the delay
//! is learned instead, per endpoint (host and port, or the whole policy
//! under [`Scope::Policy`](crate::Scope::Policy)): the given percentile of
//! the latency of the endpoint's recent attempts, once
//! [`min_samples`](HedgingBuilder::min_samples) of them were seen (before
//! that, the fixed delay). An attempt's latency runs from its send to its
//! response head. What is learned:
//!
//! - the latency of every attempt that succeeded (the first, a retry or a
//!   hedge);
//! - for an attempt cancelled because another won, the time it had been
//!   out when it was cancelled: a lower bound of its latency. Without it
//!   the slow attempts, always cancelled, would never be seen, and the
//!   learned delay would sink below the real percentile.
//!
//! The last [`samples`](HedgingBuilder::samples) latencies of each
//! endpoint are kept (4 bytes each), for at most [`MAX_LEARNED_ENDPOINTS`]
//! endpoints per [`Hedging`] (the endpoint learned least recently makes
//! room for a new one): with the defaults, at most 512 KiB, whatever the
//! traffic. The figure is worked out once per request, when its first
//! attempt is sent. Every clone of a [`Hedging`] (and of the policies
//! built with it) shares what was learned.
//!
//! A second hedge (with [`max_hedges`](HedgingBuilder::max_hedges) above
//! 1) goes one delay after the one before it.
//!
//! # Bounded load
//!
//! - Each hedge draws [`retry_cost`](crate::RetryBudget::retry_cost)
//!   tokens from the endpoint's [retry budget](crate::protection#retry-budget),
//!   and is not refunded when the request succeeds (a retry is): in a slow
//!   outage, where every request would be hedged, the budget runs dry and
//!   the load falls back to one attempt per request. With the default
//!   budget (500 tokens, 5 a hedge, 1 back per first-attempt success), an
//!   endpoint sustains hedges for up to a fifth of its requests. A policy
//!   without a budget bounds hedges by `max_hedges` alone.
//! - At most [`max_hedges`](HedgingBuilder::max_hedges) hedges per request
//!   (default 1).
//! - Never while the endpoint's [circuit breaker](crate::protection#circuit-breaker)
//!   is open or half-open, while a server quota is held for the request's
//!   credential, or when the local [rate limit](crate::protection#rate-limit)
//!   has no turn free at once: a hedge never waits.
//! - Never with no time left before the deadline; every attempt, hedges
//!   included, has its own attempt timeout, clamped to the deadline.
//!
//! # Retries and hedges together
//!
//! A transient failure of one attempt while another is still in flight
//! does not start a retry at once: the request waits for the attempt in
//! flight to end, or for one hedge delay from the failure (and at least the
//! failure's own wait: a `Retry-After` or the backoff), whichever comes
//! first. Then a retry is sent, with the usual rules (`max_retries`, the
//! budget, the breaker); if the attempt in flight failed too, its own
//! decision applies, as for any retry. A hedge is not a retry:
//! `max_retries` counts retries only. A response whose body the
//! classifier must read before deciding (GitHub's ambiguous 403s) ends
//! the race: the others are cancelled, and it is decided as a lone
//! attempt. The [report](crate::RetryReport) lists every attempt in the
//! order it was sent: whether it was a hedge
//! ([`is_hedge`](crate::AttemptRecord::is_hedge)), when it was sent
//! ([`sent_at`](crate::AttemptRecord::sent_at)), which one won
//! ([`winner`](crate::RetryReport::winner)) and which were cancelled
//! ([`is_cancelled`](crate::AttemptRecord::is_cancelled)).
//!
//! A hedge takes no circuit-breaker ticket: the breaker hears the outcome
//! of the attempt that was admitted (the first, or a retry), so one slow
//! request is one sample, however many copies it sent.
//!
//! ```
//! use std::time::Duration;
//! use http_resilience::{Hedging, RetryPolicy};
//!
//! // A second copy after 50 ms without a response.
//! let fixed = RetryPolicy::builder()
//!     .hedging(Hedging::builder().delay(Duration::from_millis(50)).build()?)
//!     .build()?;
//! assert_eq!(fixed.hedging().unwrap().delay(), Duration::from_millis(50));
//!
//! // After each endpoint's p95, learned from its last 128 attempts once 20
//! // were seen (200 ms until then).
//! let learned = Hedging::builder()
//!     .delay(Duration::from_millis(200))
//!     .percentile(0.95)
//!     .build()?;
//! assert_eq!(learned.percentile(), Some(0.95));
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! # When it helps, and when not
//!
//! Hedging cuts a tail that comes from *some* attempts being slow for
//! reasons that a second attempt avoids: a slow replica or connection, a
//! garbage-collection pause, a queue behind a slow request. It does not
//! help when the work itself is slow (every copy takes as long; hedging
//! only adds load), nor for requests that must not run twice. Keep the
//! delay near the percentile the tail starts at (p95 is the classic
//! choice): a shorter one sends more extra requests for little gain.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::validate::{self, Check, ConfigError};

mod flight;
mod latency;

pub(crate) use flight::{Extra, Flight, Slot};
pub use latency::MAX_LEARNED_ENDPOINTS;
pub(crate) use latency::{LatencyBook, MAX_SAMPLES};

/// The most hedges a request may have ([`max_hedges`](HedgingBuilder::max_hedges)).
pub const MAX_HEDGES: u32 = 4;

/// The settings of hedged requests. See the [module docs](self). Made with
/// [`Hedging::builder`], which checks them, or [`Hedging::default`]; set
/// on a policy with
/// [`RetryPolicyBuilder::hedging`](crate::RetryPolicyBuilder::hedging).
///
/// # Default
///
/// | setting | default | source |
/// |---|---|---|
/// | [`delay`](HedgingBuilder::delay) | 2 s | Polly, .NET's standard hedging handler |
/// | [`max_hedges`](HedgingBuilder::max_hedges) | 1 | Polly, .NET |
/// | [`percentile`](HedgingBuilder::percentile) | none (the fixed delay) | |
/// | [`min_samples`](HedgingBuilder::min_samples) | 20 | |
/// | [`samples`](HedgingBuilder::samples) | 128 | |
///
/// Cheap to clone: the clones share what was learned.
#[derive(Clone)]
pub struct Hedging {
    delay: Duration,
    max_hedges: u32,
    percentile: Option<f64>,
    min_samples: u32,
    samples: u32,
    learned: Arc<LatencyBook>,
}

impl Default for Hedging {
    fn default() -> Self {
        Hedging::builder().build().expect("the defaults are valid")
    }
}

impl Hedging {
    /// A builder holding the defaults (see [`Hedging`]).
    pub fn builder() -> HedgingBuilder {
        HedgingBuilder {
            delay: Duration::from_secs(2),
            max_hedges: 1,
            percentile: None,
            min_samples: 20,
            samples: 128,
        }
    }
    /// The fixed delay (and, with a [`percentile`](Self::percentile), the
    /// delay until enough was learned).
    pub fn delay(&self) -> Duration {
        self.delay
    }
    /// The most hedges a request may have.
    pub fn max_hedges(&self) -> u32 {
        self.max_hedges
    }
    /// The latency percentile the delay is learned at, if any.
    pub fn percentile(&self) -> Option<f64> {
        self.percentile
    }
    /// How many latencies an endpoint needs before its learned delay is
    /// used.
    pub fn min_samples(&self) -> u32 {
        self.min_samples
    }
    /// How many recent latencies are kept per endpoint.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The delay a request to `host:port` would be hedged after now: the
    /// learned percentile once [`min_samples`](Self::min_samples)
    /// latencies were seen for it, else the fixed [`delay`](Self::delay).
    /// (Under [`Scope::Policy`](crate::Scope::Policy), every host shares
    /// the figure of host `""`, port 0.)
    ///
    /// ```
    /// use std::time::Duration;
    /// let hedging = http_resilience::Hedging::builder()
    ///     .delay(Duration::from_millis(300))
    ///     .percentile(0.9)
    ///     .build()?;
    /// // Nothing learned yet: the fixed delay.
    /// assert_eq!(hedging.delay_for("api.example.com", 443), Duration::from_millis(300));
    /// # Ok::<(), http_resilience::ConfigError>(())
    /// ```
    pub fn delay_for(&self, host: &str, port: u16) -> Duration {
        self.delay_at(host, port)
    }

    /// The delay for the endpoint `host:port` (see [`delay_for`](Self::delay_for)).
    #[inline]
    pub(crate) fn delay_at(&self, host: &str, port: u16) -> Duration {
        match self.percentile {
            None => self.delay,
            Some(p) => self
                .learned
                .percentile(host, port, p, self.min_samples)
                .unwrap_or(self.delay),
        }
    }

    /// Notes an attempt's latency for the endpoint `host:port` (only when
    /// the delay is learned).
    #[inline]
    pub(crate) fn learn(&self, host: &str, port: u16, latency: Duration) {
        if self.percentile.is_some() {
            self.learned.record(host, port, latency, self.samples);
        }
    }

    /// How many endpoints have latencies noted.
    #[cfg(test)]
    pub(crate) fn learned_endpoints(&self) -> usize {
        self.learned.len()
    }
}

impl fmt::Debug for Hedging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedging")
            .field("delay", &self.delay)
            .field("max_hedges", &self.max_hedges)
            .field("percentile", &self.percentile)
            .field("min_samples", &self.min_samples)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

/// Two settings are equal when they would hedge alike (what was learned is
/// not compared).
impl PartialEq for Hedging {
    fn eq(&self, other: &Self) -> bool {
        self.delay == other.delay
            && self.max_hedges == other.max_hedges
            && self.percentile == other.percentile
            && self.min_samples == other.min_samples
            && self.samples == other.samples
    }
}

/// Builds a [`Hedging`]; [`build`](Self::build) checks the settings.
/// Defaults as [`Hedging`] lists them.
///
/// ```
/// use std::time::Duration;
/// let hedging = http_resilience::Hedging::builder()
///     .delay(Duration::from_millis(50))
///     .max_hedges(2)
///     .build()?;
/// assert_eq!(hedging.max_hedges(), 2);
/// let err = http_resilience::Hedging::builder().max_hedges(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_hedges");
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct HedgingBuilder {
    delay: Duration,
    max_hedges: u32,
    percentile: Option<f64>,
    min_samples: u32,
    samples: u32,
}

impl HedgingBuilder {
    /// How long after an attempt is sent, without a response, the next
    /// copy goes; with a [`percentile`](Self::percentile), the delay until
    /// enough latencies were learned. Default 2 s. Must be positive and at
    /// most 365 days.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// The most hedges a request may have, in `1..=`[`MAX_HEDGES`]; each
    /// goes one delay after the one before it. Default 1.
    pub fn max_hedges(mut self, hedges: u32) -> Self {
        self.max_hedges = hedges;
        self
    }
    /// Learn the delay per endpoint: this percentile of its recent
    /// attempts' latencies, in (0, 1] (0.95 for the p95). Default: none,
    /// the fixed [`delay`](Self::delay).
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.percentile = Some(percentile);
        self
    }
    /// How many latencies an endpoint needs before its learned delay is
    /// used, in `1..=samples`. Default 20.
    pub fn min_samples(mut self, samples: u32) -> Self {
        self.min_samples = samples;
        self
    }
    /// How many recent latencies are kept per endpoint (4 bytes each), in
    /// `1..=1024`. Default 128.
    pub fn samples(mut self, samples: u32) -> Self {
        self.samples = samples;
        self
    }

    /// Checks the settings, in the order of the setters; the first problem
    /// is reported.
    pub fn build(self) -> Result<Hedging, ConfigError> {
        validate::positive(self.delay).at("delay")?;
        validate::nonzero(self.max_hedges).at("max_hedges")?;
        if self.max_hedges > MAX_HEDGES {
            return Err(ConfigError::new(
                "max_hedges",
                format!("must be at most {MAX_HEDGES} (got {})", self.max_hedges),
            ));
        }
        if let Some(p) = self.percentile {
            validate::share(p).at("percentile")?;
        }
        validate::nonzero(self.samples).at("samples")?;
        if self.samples as usize > MAX_SAMPLES {
            return Err(ConfigError::new(
                "samples",
                format!("must be at most {MAX_SAMPLES} (got {})", self.samples),
            ));
        }
        validate::nonzero(self.min_samples).at("min_samples")?;
        if self.min_samples > self.samples {
            return Err(ConfigError::new(
                "min_samples",
                format!(
                    "must not exceed samples ({} > {})",
                    self.min_samples, self.samples
                ),
            ));
        }
        Ok(Hedging {
            delay: self.delay,
            max_hedges: self.max_hedges,
            percentile: self.percentile,
            min_samples: self.min_samples,
            samples: self.samples,
            learned: Arc::new(LatencyBook::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let h = Hedging::default();
        assert_eq!(h.delay(), Duration::from_secs(2));
        assert_eq!(h.max_hedges(), 1);
        assert_eq!(h.percentile(), None);
        assert_eq!(h.min_samples(), 20);
        assert_eq!(h.samples(), 128);
        assert_eq!(h.delay_for("a", 1), Duration::from_secs(2));
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let b = Hedging::builder;
        let cases = [
            (b().delay(Duration::ZERO), "delay"),
            (b().delay(Duration::MAX), "delay"),
            (b().max_hedges(0), "max_hedges"),
            (b().max_hedges(MAX_HEDGES + 1), "max_hedges"),
            (b().percentile(0.0), "percentile"),
            (b().percentile(1.5), "percentile"),
            (b().percentile(f64::NAN), "percentile"),
            (b().percentile(-0.5), "percentile"),
            (b().samples(0), "samples"),
            (b().samples(MAX_SAMPLES as u32 + 1), "samples"),
            (b().min_samples(0), "min_samples"),
            (b().samples(10).min_samples(11), "min_samples"),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(b().percentile(1.0).build().is_ok());
        assert!(b().max_hedges(MAX_HEDGES).build().is_ok());
        assert!(
            b().samples(MAX_SAMPLES as u32)
                .min_samples(MAX_SAMPLES as u32)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn the_learned_delay_replaces_the_fixed_one_once_there_are_enough_samples() {
        let ms = Duration::from_millis;
        let h = Hedging::builder()
            .delay(ms(300))
            .percentile(0.9)
            .min_samples(10)
            .samples(10)
            .build()
            .unwrap();
        for i in 1..=9 {
            h.learn("api.example.com", 443, ms(i * 10));
        }
        assert_eq!(h.delay_for("api.example.com", 443), ms(300), "9 of 10");
        h.learn("API.example.com", 443, ms(100));
        // 10, 20, ..., 100: the p90 by nearest rank is the 9th, 90 ms.
        assert_eq!(h.delay_for("api.example.com", 443), ms(90));
        assert_eq!(h.delay_for("api.example.com", 80), ms(300), "per port");
        assert_eq!(h.learned_endpoints(), 1, "hosts compared without case");
        // Clones share what was learned; a fixed delay learns nothing.
        assert_eq!(h.clone().delay_for("api.example.com", 443), ms(90));
        let fixed = Hedging::builder().delay(ms(50)).build().unwrap();
        fixed.learn("a", 1, ms(1));
        assert_eq!(fixed.learned_endpoints(), 0);
        assert_eq!(fixed.delay_for("a", 1), ms(50));
    }
}
