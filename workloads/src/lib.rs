//! ipctrace's built-in producer/consumer workloads and the witnesses they report.
//! A library (used by ipctrace and by the `workloads` binary) plus the role processes' code.

pub mod cleanup;
pub mod control;
pub mod eventfd;
pub mod futex;
pub mod pattern;
pub mod peer;
pub mod role;
pub mod size;
pub mod spawn;
pub mod stream;
pub mod sweep;
pub mod transport;
pub mod witness;

/// The seed's C programs, built by `build.rs` (the foreign programs attach tests target).
pub mod c_programs {
    /// fork + pipe producer/consumer.
    pub const PIPE_PC: &str = env!("IPCTRACE_PIPE_PC");
    /// shm_open + mmap ring with direct futex calls (or eventfds with --eventfd).
    pub const SHM_PC: &str = env!("IPCTRACE_SHM_PC");
    /// fork + socketpair (or a named socket) producer/consumer, --type stream|dgram|seqpacket.
    pub const UDS_PC: &str = env!("IPCTRACE_UDS_PC");
    /// fork + POSIX message queue (or SysV with --sysv) producer/consumer.
    pub const MQ_PC: &str = env!("IPCTRACE_MQ_PC");
}
