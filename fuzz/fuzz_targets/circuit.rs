//! `circuit::CircuitState` under an arbitrary sequence of admit / record /
//! release operations and clock steps, against the state-machine model in
//! `tests/properties/model.rs` through `tests/properties/circuit_harness.rs`
//! (the property tests use the same harness): never more probes in flight
//! than `half_open_probes`, an open breaker refuses until its `until`, a
//! half-open one with every probe out until the latest has been out for
//! `max_half_open_wait`, every refusal's `retry_in` is true, a released
//! probe frees its slot, stale tickets change nothing, no panic and no
//! overflow (the targets are built with overflow checks).
//!
//! Input: 8 bytes of configuration, then one operation per 2 bytes (see
//! `ops` below). The maximum half-open wait comes from the high bits of the
//! 8th byte (1 ms to 31 s), so corpora from before it still apply.
#![no_main]

use std::time::Duration;

use http_resilience::CircuitBreaker;
use http_resilience_fuzz::circuit_harness::{Op, run_circuit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut config = CircuitBreaker::builder()
        .half_open_probes(1 + u32::from(head[0] % 4))
        .minimum_throughput(1 + u32::from(head[1] % 20))
        .failure_ratio(f64::from(1 + head[2] % 100) / 100.0)
        .sampling_window(Duration::from_millis(
            1 + u64::from(u16::from_le_bytes([head[3], head[4]])),
        ))
        .break_duration(Duration::from_millis(
            1 + u64::from(u16::from_le_bytes([head[5], head[6]])),
        )).build().unwrap();
    if head[7] % 8 != 0 {
        config = config.consecutive_failures(u32::from(head[7] % 8));
    }
    config = config.max_half_open_wait(Duration::from_millis(
        1 + u64::from(head[7] >> 3) * 1000,
    ));
    let ops: Vec<Op> = rest
        .chunks_exact(2)
        .map(|op| match op[0] % 4 {
            // Steps from 0 to 65 s, finer below a second.
            0 => Op::Advance(if op[0] & 0x80 != 0 {
                u32::from(op[1]) * 256
            } else {
                u32::from(op[1])
            }),
            1 => Op::Admit,
            2 => Op::Record(u16::from(op[1] >> 1), op[1] & 1 == 1),
            _ => Op::Release(u16::from(op[1])),
        })
        .collect();
    if let Err(e) = run_circuit(&config, &ops) {
        panic!("{e}\nconfig {config:?}\nops {ops:?}");
    }
});
