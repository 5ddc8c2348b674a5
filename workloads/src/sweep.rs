//! What the untraced benchmark (`cargo xtask bench`) and the traced sweep (`ipctrace run
//! --sweep`) share: the message sizes, the order of the points, and running one time-bounded
//! point of a transport, with a hook that runs while both sides wait at their gates (where
//! ipctrace puts them in its filter).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    spawn::{Launch, Pair, spawn_pair},
    transport::Transport,
};

/// Message sizes of every sweep.
pub const SIZES: [u64; 4] = [64, 4096, 65536, 1 << 20];

/// One point: a transport at a message size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub transport: Transport,
    pub msg_size: u64,
}

/// Size-major order, so a slow size does not bunch up one transport's points.
pub fn points(transports: &[Transport]) -> Vec<Point> {
    SIZES.iter().flat_map(|&msg_size| transports.iter().map(move |&transport| Point { transport, msg_size })).collect()
}

/// What one point measured, from the workloads' own counts and clocks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub throughput_bytes_per_s: f64,
    pub messages_per_s: f64,
    /// user + system CPU seconds of both processes (wait4 rusage).
    pub cpu_s: f64,
    pub rtt_p50_ns: Option<u64>,
    pub rtt_p99_ns: Option<u64>,
    pub ok: bool,
}

/// Starts `base` at point `p`, bounded to `run_ms` milliseconds, held at the gates.
pub fn start_point(base: &Launch, p: Point, run_ms: u64) -> Result<Pair> {
    let mut l = base.clone();
    l.transport = p.transport;
    l.msg_size = p.msg_size;
    l.shape.duration_ms = Some(run_ms);
    spawn_pair(&l)
}

/// What a finished (reaped) point measured, from the workloads' own counts and `elapsed`.
pub fn measure(pair: &Pair, p: Point, elapsed: Duration) -> Measured {
    let ended: Vec<_> = pair.workers.iter().filter_map(|w| w.ended.clone()).collect();
    let consumer = ended.iter().filter_map(|e| e.witness.as_ref()).find(|w| w.role == "consumer");
    let producer = ended.iter().filter_map(|e| e.witness.as_ref()).find(|w| w.role == "producer");
    let bytes = consumer.map_or(0, |w| w.bytes);
    let secs = elapsed.as_secs_f64().max(1e-9);
    Measured {
        bytes,
        elapsed_ns: elapsed.as_nanos() as u64,
        throughput_bytes_per_s: bytes as f64 / secs,
        messages_per_s: bytes as f64 / p.msg_size as f64 / secs,
        cpu_s: ended.iter().map(|e| (e.rusage.utime_us + e.rusage.stime_us) as f64 / 1e6).sum(),
        rtt_p50_ns: producer.and_then(|w| w.rtt.as_ref()).map(|r| r.p50_ns),
        rtt_p99_ns: producer.and_then(|w| w.rtt.as_ref()).map(|r| r.p99_ns),
        ok: ended.len() == 2 && ended.iter().all(|e| e.success()),
    }
}

/// Runs `base` at point `p` for `run_ms` milliseconds; `at_gate` sees the pids before they start.
pub fn run_point(
    base: &Launch,
    p: Point,
    run_ms: u64,
    mut at_gate: impl FnMut(&[u32]) -> Result<()>,
) -> Result<(Pair, Measured)> {
    let mut pair = start_point(base, p, run_ms)?;
    at_gate(&pair.pids())?;
    let t0 = Instant::now();
    pair.open_gates()?;
    while !pair.reap()? {
        std::thread::sleep(Duration::from_millis(2));
    }
    let m = measure(&pair, p, t0.elapsed());
    Ok((pair, m))
}
