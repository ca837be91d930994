//! Drives a `CircuitState` and the [`CircuitModel`](super::model) side by
//! side through a sequence of operations and checks, after every one, that
//! they agree and that the invariants hold:
//!
//! - never more probes in flight than `half_open_probes`, and exactly the
//!   probes admitted in this half-open episode and not yet settled;
//! - an open breaker refuses until its `until`, with `retry_in = until - now`;
//! - a half-open breaker with every probe out refuses until the latest has
//!   been out for `max_half_open_wait`, then starts a new round with one
//!   probe; every refusal's `retry_in` is true: asked again that much later
//!   (nothing else happening), the breaker admits a probe;
//! - a released probe frees its slot;
//! - a stale ticket (admitted before a change of state) changes nothing;
//! - a closed breaker opens only on a failure (never on a success), opens
//!   for exactly one break, and with `consecutive_failures(n)` opens at the
//!   n-th failure in a row at the latest.
//!
//! Shared by the property tests and the `circuit` fuzz target (both include
//! it with `#[path]`, next to `model.rs`).

use std::time::{Duration, Instant};

use http_resilience::CircuitBreaker;
use http_resilience::CircuitStatus;
use http_resilience::circuit::{CircuitState, Ticket, Verdict};

use super::model::{CircuitModel, ModelMode, ModelTicket, ModelVerdict};

/// One operation on the breaker.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Move the clock forward by this many milliseconds.
    Advance(u32),
    /// Ask to send an attempt.
    Admit,
    /// Record the outcome of the n-th outstanding ticket (modulo their
    /// number), failed or not.
    Record(u16, bool),
    /// Give up the n-th outstanding ticket without an outcome.
    Release(u16),
}

/// Runs `ops` against a fresh breaker with `config` (which must be valid)
/// and the model; `Err` names the first disagreement or broken invariant.
pub fn run_circuit(config: &CircuitBreaker, ops: &[Op]) -> Result<(), String> {
    let t0 = Instant::now();
    let mut elapsed: u128 = 0; // ns since t0
    let mut state = CircuitState::default();
    let mut model = CircuitModel::new(
        config.half_open_probes(),
        config.break_duration().as_nanos(),
        config.max_half_open_wait().as_nanos(),
    );
    let mut outstanding: Vec<(Ticket, ModelTicket)> = Vec::new();
    let at = |ns: u128| t0 + Duration::from_nanos(ns as u64);
    for (i, op) in ops.iter().enumerate() {
        let now = at(elapsed);
        let before = format!("{state:?}");
        match *op {
            Op::Advance(ms) => elapsed += u128::from(ms) * 1_000_000,
            Op::Admit => {
                let got = state.admit(config, now);
                let want = model.admit(elapsed);
                match (got, want) {
                    (Verdict::Allow(t), ModelVerdict::Allow(m)) => {
                        if t.is_probe() != m.probe {
                            return Err(format!("op {i}: probe {} != {}", t.is_probe(), m.probe));
                        }
                        outstanding.push((t, m));
                    }
                    (Verdict::Refuse { retry_in }, ModelVerdict::Refuse(ns))
                        if retry_in.as_nanos() == ns =>
                    {
                        if format!("{state:?}") != before {
                            return Err(format!("op {i}: a refusal changed the state"));
                        }
                        let mut later = state.clone();
                        if !matches!(later.admit(config, now + retry_in), Verdict::Allow(_)) {
                            return Err(format!(
                                "op {i}: refused again after retry_in {retry_in:?}"
                            ));
                        }
                    }
                    (got, want) => return Err(format!("op {i}: admit {got:?}, model {want:?}")),
                }
            }
            Op::Record(n, failed) if !outstanding.is_empty() => {
                let (t, m) = outstanding.swap_remove(usize::from(n) % outstanding.len());
                let closed = model.mode == ModelMode::Closed && m.episode == model.episode;
                let run = model.consecutive + u32::from(failed);
                state.record(config, t, failed, now);
                // A valid break is longer than zero: a breaker that just
                // opened reports `Open` at `now`.
                let opened = matches!(state.status(now), CircuitStatus::Open { .. });
                if closed && opened {
                    if !failed {
                        return Err(format!("op {i}: a success opened a closed breaker"));
                    }
                } else if closed
                    && failed
                    && config.consecutive_failures().is_some_and(|n| run >= n)
                {
                    return Err(format!("op {i}: {run} failures in a row did not open it"));
                }
                let stale = m.episode != model.episode;
                model.record(m, failed, elapsed, closed && opened);
                if stale && format!("{state:?}") != before {
                    return Err(format!("op {i}: a stale outcome changed the state"));
                }
            }
            Op::Release(n) if !outstanding.is_empty() => {
                let (t, m) = outstanding.swap_remove(usize::from(n) % outstanding.len());
                let in_flight = state.probes_in_flight();
                state.release(t);
                model.release(m);
                let current = m.episode == model.episode;
                if m.probe && current && state.probes_in_flight() + 1 != in_flight {
                    return Err(format!("op {i}: a released probe did not free its slot"));
                }
                if !(m.probe && current) && format!("{state:?}") != before {
                    return Err(format!("op {i}: releasing {m:?} changed the state"));
                }
            }
            Op::Record(..) | Op::Release(_) => {}
        }
        let now = at(elapsed);
        check(&state, &model, config, now, elapsed, &outstanding)
            .map_err(|e| format!("op {i} ({op:?}): {e}"))?;
    }
    Ok(())
}

fn check(
    state: &CircuitState,
    model: &CircuitModel,
    config: &CircuitBreaker,
    now: Instant,
    elapsed: u128,
    outstanding: &[(Ticket, ModelTicket)],
) -> Result<(), String> {
    let status = state.status(now);
    let want = match model.mode {
        ModelMode::Closed => CircuitStatus::Closed,
        ModelMode::Open { until } if elapsed < until => CircuitStatus::Open {
            until: now + Duration::from_nanos((until - elapsed) as u64),
        },
        _ => CircuitStatus::HalfOpen,
    };
    if status != want {
        return Err(format!("status {status:?}, model {:?}", model.mode));
    }
    let in_flight = state.probes_in_flight();
    if in_flight != model.in_flight() {
        return Err(format!(
            "{in_flight} probes in flight, model {}",
            model.in_flight()
        ));
    }
    if in_flight > config.half_open_probes() {
        return Err(format!(
            "{in_flight} probes in flight > {}",
            config.half_open_probes()
        ));
    }
    let real = outstanding
        .iter()
        .filter(|(_, m)| m.probe && m.episode == model.episode)
        .count();
    if real != in_flight as usize {
        return Err(format!("{real} probes outstanding, {in_flight} counted"));
    }
    Ok(())
}
