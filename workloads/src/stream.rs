//! What every producer/consumer loop shares: the stream options (total or deadline, message
//! size, ping-pong, corruption hook), the round-trip histogram, and the run's rusage delta.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::witness::Witness;

/// How much to move and how.
#[derive(Clone, Debug)]
pub struct StreamOpts {
    /// Payload bytes; ignored (unbounded) when `deadline` is set.
    pub total: u64,
    pub msg_size: usize,
    /// Stop producing at this instant (time-bounded runs).
    pub deadline: Option<Instant>,
    /// Wait for the consumer to acknowledge each message before sending the next.
    pub ping_pong: bool,
    /// Test hook: the producer flips the byte at this stream offset.
    pub corrupt_at: Option<u64>,
}

/// Set by SIGUSR2: the launcher asks the workload to finish now (a tracer stopping early).
/// The producer ends its stream at the next message boundary; the consumer drains what was
/// sent and reports it, so a partial run still has its witness.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the SIGUSR2 handler (`STOP`) without SA_RESTART: a call it interrupts returns
/// EINTR once, which the loops count and retry like the kernel does (a restarted call would
/// be seen twice by a tracer and once by the workload).
pub fn install_stop() {
    // SAFETY: a zeroed sigaction with our handler, which only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}

/// Was this workload asked to finish early?
pub fn stopped_early() -> bool {
    STOP.load(Ordering::Relaxed)
}

impl StreamOpts {
    /// Bytes of the next message at stream offset `off`, or None when the producer is done
    /// (its total sent, its deadline passed, or asked to stop).
    pub fn next_len(&self, off: u64, messages: u64) -> Option<usize> {
        if STOP.load(Ordering::Relaxed) {
            return None;
        }
        match self.deadline {
            // Reading the clock every 16 messages keeps it off the 64-byte fast path.
            Some(d) => (!messages.is_multiple_of(16) || Instant::now() < d).then_some(self.msg_size),
            None => (off < self.total).then(|| self.msg_size.min((self.total - off) as usize)),
        }
    }

    /// Bytes the consumer should expect in the message starting at `off` (ping-pong reads whole messages).
    pub fn expect_len(&self, off: u64) -> usize {
        match self.deadline {
            Some(_) => self.msg_size,
            None => self.msg_size.min(self.total.saturating_sub(off) as usize),
        }
    }
}

/// Round-trip times of ping-pong messages (producer side).
pub struct RttRecorder {
    h: Histogram<u64>,
}

impl Default for RttRecorder {
    fn default() -> Self {
        Self { h: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds") }
    }
}

impl RttRecorder {
    pub fn record(&mut self, d: Duration) {
        let _ = self.h.record((d.as_nanos() as u64).max(1));
    }

    pub fn summary(&self) -> Option<Rtt> {
        (!self.h.is_empty()).then(|| Rtt {
            count: self.h.len(),
            p50_ns: self.h.value_at_quantile(0.5),
            p99_ns: self.h.value_at_quantile(0.99),
            max_ns: self.h.max(),
        })
    }
}

/// Round-trip latency percentiles, from the producer's own clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtt {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// getrusage(RUSAGE_SELF) counters, for the delta over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rusage {
    pub minflt: u64,
    pub majflt: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
    pub utime_us: u64,
    pub stime_us: u64,
}

impl Rusage {
    pub fn from_libc(ru: &libc::rusage) -> Self {
        let tv_us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Self {
            minflt: ru.ru_minflt as u64,
            majflt: ru.ru_majflt as u64,
            nvcsw: ru.ru_nvcsw as u64,
            nivcsw: ru.ru_nivcsw as u64,
            utime_us: tv_us(ru.ru_utime),
            stime_us: tv_us(ru.ru_stime),
        }
    }

    pub fn now() -> Self {
        // SAFETY: getrusage into a zeroed local.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        Self::from_libc(&ru)
    }

    pub fn since(&self, start: &Self) -> Self {
        Self {
            minflt: self.minflt - start.minflt,
            majflt: self.majflt - start.majflt,
            nvcsw: self.nvcsw - start.nvcsw,
            nivcsw: self.nivcsw - start.nivcsw,
            utime_us: self.utime_us - start.utime_us,
            stime_us: self.stime_us - start.stime_us,
        }
    }
}

/// A fresh witness for this process.
pub fn witness(role: &str, transport: &str) -> Witness {
    Witness { transport: transport.into(), role: role.into(), pid: std::process::id(), ..Default::default() }
}
