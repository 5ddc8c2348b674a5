//! One side of a workload as its own process: parses the role arguments, waits at the start
//! gate, runs the transport's loop (`transport::Spec::run`), reports the witness on the
//! control socket and prints the summary line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{
    cleanup,
    control::Control,
    peer::Peer,
    size::parse_size,
    stream::{Rusage, StreamOpts},
    transport::{RoleCtx, Transport},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Producer,
    Consumer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// Ring options shared by the shm transports.
#[derive(Args, Clone, Debug, Default)]
pub struct RingArgs {
    /// shm: payload bytes per ring slot (default: the message size).
    #[arg(long, value_parser = parse_size)]
    pub slot_size: Option<u64>,
    /// shm: number of slots (default: about 4 MiB of ring, 2 to 256 slots).
    #[arg(long)]
    pub slots: Option<u64>,
    /// shm-futex: spin this many times before FUTEX_WAIT (default 0: no busy-waiting).
    #[arg(long, default_value_t = 0)]
    pub spin: u32,
    /// shm: map with MAP_POPULATE, so no first-touch page faults happen during the run.
    #[arg(long)]
    pub populate: bool,
}

/// How the stream runs: bounded by time instead of bytes, and/or ping-pong.
#[derive(Args, Clone, Debug, Default)]
pub struct ShapeArgs {
    /// Stop producing after this many milliseconds (a time-bounded run: --total is ignored).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Ping-pong: the producer waits for each message to be acknowledged and reports
    /// round-trip p50/p99 (shm rings then have one slot).
    #[arg(long)]
    pub ping_pong: bool,
    /// pipe/fifo: the consumer drains the pipe with splice(2) into /dev/null instead of
    /// read(2): pages leave the pipe without a copy to user memory (a zero-copy control; the
    /// bytes cannot be verified then).
    #[arg(long)]
    pub splice_consumer: bool,
    /// Test hook (unix-dgram, unix-seqpacket): the consumer reads each datagram into a buffer
    /// of this many bytes with MSG_TRUNC (the kernel copies only what fits).
    #[arg(long, hide = true)]
    pub recv_buffer: Option<u64>,
    /// unix-stream: the producer sends with sendfile(2) from a memfd holding the pattern: page
    /// references go into the socket, no copy from user memory (a zero-copy control).
    #[arg(long)]
    pub sendfile_producer: bool,
    /// mq, sysv-msg: send message i at priority i % N (SysV: mtype N - priority, received
    /// lowest mtype first); each message carries its sequence number in its first 8 bytes,
    /// so the consumer verifies it wherever the queue's order put it.
    #[arg(long, value_name = "N")]
    pub mq_priorities: Option<u64>,
}

/// Arguments of one workload process (set by the launcher, not typed by users).
#[derive(Args, Clone, Debug)]
pub struct RoleArgs {
    #[arg(long, value_enum)]
    pub transport: Transport,
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long, value_parser = parse_size)]
    pub total: u64,
    #[arg(long, value_parser = parse_size)]
    pub msg_size: u64,
    /// Control socket fd (start gate + witness).
    #[arg(long, default_value_t = 3)]
    pub ctrl_fd: i32,
    /// Data channel fd (pipe).
    #[arg(long, default_value_t = 4)]
    pub data_fd: i32,
    /// FIFO path, POSIX shm name, or named socket (`@name`: abstract).
    #[arg(long)]
    pub path: Option<String>,
    #[command(flatten)]
    pub ring: RingArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Acknowledgement channel fd (pipe ping-pong).
    #[arg(long, default_value_t = 5)]
    pub ack_fd: i32,
    /// Pin this process to one CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Test hook: flip the byte at this stream offset (producer only).
    #[arg(long, hide = true)]
    pub corrupt_at: Option<u64>,
}

/// Runs the role; returns the process exit code (0 ok, 1 failure).
pub fn main(args: RoleArgs) -> i32 {
    cleanup::install();
    crate::stream::install_stop();
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("workload {} {}: {e:#}", args.transport.name(), args.role.name());
            1
        }
    }
}

fn pin(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("CPU number out of range")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

fn run(a: &RoleArgs) -> Result<()> {
    if a.msg_size == 0 {
        bail!("--msg-size must be at least 1 byte");
    }
    if let Some(cpu) = a.cpu {
        pin(cpu)?;
    }
    // SAFETY: the launcher placed this fd here for us and nothing else owns it.
    let mut ctrl = unsafe { Control::from_fd(a.ctrl_fd) };
    let spec = a.transport.spec();
    (spec.prepare)(a)?;
    let peer_pid = ctrl.wait_gate()?;
    let peer = Peer::new(peer_pid)?;
    let rusage0 = Rusage::now();
    let stream = StreamOpts {
        total: a.total,
        msg_size: a.msg_size as usize,
        deadline: a.shape.duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
        ping_pong: a.shape.ping_pong,
        corrupt_at: a.corrupt_at,
    };
    let mut w = (spec.run)(&RoleCtx { args: a, peer: &peer, stream })?;
    w.rusage_run = Rusage::now().since(&rusage0);
    w.rusage_at_gate = rusage0;
    // Report first: even a failed check leaves the launcher a witness to show.
    ctrl.report(&w)?;
    println!("{}", w.summary_line());
    if a.role == Role::Consumer {
        // A run stopped early has no total to reach; the bytes it got are still verified.
        let bounded = a.shape.duration_ms.is_none() && !crate::stream::stopped_early();
        w.check_complete(bounded.then_some(a.total))?;
    }
    Ok(())
}
