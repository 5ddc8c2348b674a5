//! Types shared by ipctrace's eBPF programs and its userspace loader.
//! Everything here is `#[repr(C)]` plain data; no logic beyond constants and tiny helpers.
#![no_std]

/// Kernel struct field offsets (bytes), read from `/sys/kernel/btf/vmlinux` at start-up.
/// Rust eBPF built with aya has no CO-RE relocations, so the loader hands these over as
/// global data. A value of `u32::MAX` means "field not found".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_pipe: u32,
    pub inode_sb: u32,
    pub sb_magic: u32,
}

/// Logical probes, used as part of the aggregation key.
pub mod probe {
    /// write(2) / writev(2) on a pipe fd (syscall tracepoints).
    pub const SYS_WRITE: u16 = 1;
    /// read(2) / readv(2) on a pipe fd (syscall tracepoints).
    pub const SYS_READ: u16 = 2;
}

/// Channel kinds, part of the aggregation key.
pub mod kind {
    /// Anonymous pipe (inode on pipefs).
    pub const ANON_PIPE: u16 = 1;
    /// Named pipe (FIFO on a real filesystem).
    pub const FIFO: u16 = 2;
}

/// `PIPEFS_MAGIC` from `include/uapi/linux/magic.h`.
pub const PIPEFS_MAGIC: u64 = 0x5049_5045;
/// `S_IFMT` and `S_IFIFO` from `include/uapi/linux/stat.h`.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFIFO: u16 = 0o010000;

/// Number of log2 latency buckets (bucket i holds durations in [2^i, 2^(i+1)) ns).
pub const HIST_BUCKETS: usize = 32;

/// Aggregation key: one per (process, logical probe, channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub tgid: u32,
    pub probe: u16,
    pub kind: u16,
    pub ino: u64,
}

/// Aggregated values for one key, per CPU; the loader sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggVal {
    /// Completed calls (the exit was seen).
    pub calls: u64,
    /// Sum of positive return values (bytes moved).
    pub bytes: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls that returned 0 (EOF on read).
    pub zero: u64,
    /// Sum of enter->exit durations in ns.
    pub time_ns: u64,
    /// log2 histogram of enter->exit durations.
    pub hist: [u64; HIST_BUCKETS],
}

impl Default for AggVal {
    fn default() -> Self {
        Self { calls: 0, bytes: 0, errors: 0, zero: 0, time_ns: 0, hist: [0; HIST_BUCKETS] }
    }
}

/// A call in flight, keyed by thread (pid_tgid) between syscall entry and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    pub ino: u64,
    pub start_ns: u64,
    pub probe: u16,
    pub kind: u16,
    pub _pad: u32,
}

/// Indexes into the per-CPU `LOSS` array: every event the programs had to drop.
pub mod loss {
    /// The in-flight map was full at syscall entry: the call is not counted.
    pub const PENDING_FULL: u32 = 0;
    /// The aggregation map was full at syscall exit: the call is not counted.
    pub const AGG_FULL: u32 = 1;
    /// A kernel read (fd -> file -> inode) failed: the call could not be classified.
    pub const READ_FAILED: u32 = 2;
    pub const COUNT: u32 = 3;
    pub const NAMES: [&str; COUNT as usize] = ["in-flight map full", "aggregation map full", "kernel read failed"];
}

/// log2 bucket of a duration in ns, clamped to the histogram.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let b = 63 - v.leading_zeros() as usize;
    if b >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { b }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for AggKey {}
    unsafe impl aya::Pod for AggVal {}
    unsafe impl aya::Pod for Pending {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
