//! One side of a workload as its own process: parses the role arguments, waits at the start
//! gate, runs the loop, reports the witness on the control socket and prints the summary line.

use std::{
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{
    cleanup,
    control::Control,
    peer::Peer,
    pipe,
    shm::{self, Geometry, ShmArgs, SyncKind},
    size::parse_size,
    stream::{Rusage, StreamOpts},
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

/// Transports of the built-in workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleTransport {
    /// Anonymous pipe.
    Pipe,
    /// Named pipe in a private directory, opened by path by both sides.
    Fifo,
    /// POSIX shm ring synchronized with FUTEX_WAIT/FUTEX_WAKE.
    ShmFutex,
    /// POSIX shm ring synchronized with process-shared POSIX semaphores.
    ShmSem,
}

impl RoleTransport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pipe => "pipe",
            Self::Fifo => "fifo",
            Self::ShmFutex => "shm-futex",
            Self::ShmSem => "shm-sem",
        }
    }

    pub fn is_shm(self) -> bool {
        matches!(self, Self::ShmFutex | Self::ShmSem)
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
}

/// Arguments of one workload process (set by the launcher, not typed by users).
#[derive(Args, Clone, Debug)]
pub struct RoleArgs {
    #[arg(long, value_enum)]
    pub transport: RoleTransport,
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
    /// FIFO path or POSIX shm name.
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
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("workload {} {}: {e:#}", args.transport.name(), args.role.name());
            1
        }
    }
}

fn remove_fifo_names(path: &str) {
    // Both ends are open: the names (and their private directory) can go.
    for p in [path.to_string(), format!("{path}.ack")] {
        let _ = std::fs::remove_file(&p);
        cleanup::unregister_path(&p);
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::remove_dir(dir);
        cleanup::unregister_path(&dir.to_string_lossy());
    }
}

fn open_fifo(path: &str, role: Role) -> Result<OwnedFd> {
    let flags = match role {
        Role::Producer => nix::fcntl::OFlag::O_WRONLY,
        Role::Consumer => nix::fcntl::OFlag::O_RDONLY,
    } | nix::fcntl::OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).with_context(|| format!("opening the FIFO {path}"))
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
    let path = || a.path.as_deref().context("--path is required for this transport");
    if a.transport == RoleTransport::Fifo {
        let p = path()?;
        cleanup::register_path(p);
        cleanup::register_path(&format!("{p}.ack"));
        if let Some(dir) = std::path::Path::new(p).parent() {
            cleanup::register_path(&dir.to_string_lossy());
        }
    }
    let peer_pid = ctrl.wait_gate()?;
    let peer = Peer::new(peer_pid)?;
    let rusage0 = Rusage::now();
    let name = a.transport.name();
    let msg = a.msg_size as usize;
    let stream = StreamOpts {
        total: a.total,
        msg_size: msg,
        deadline: a.shape.duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
        ping_pong: a.shape.ping_pong,
        corrupt_at: a.corrupt_at,
    };
    let mut w = match a.transport {
        RoleTransport::Pipe | RoleTransport::Fifo => {
            let (data, ack) = if a.transport == RoleTransport::Pipe {
                // SAFETY: the launcher placed the pipe ends here.
                let data = unsafe { OwnedFd::from_raw_fd(a.data_fd) };
                let ack = a.shape.ping_pong.then(|| unsafe { OwnedFd::from_raw_fd(a.ack_fd) });
                (data, ack)
            } else {
                let p = path()?;
                // The ack FIFO is opened in the opposite direction, after the data FIFO.
                let data = open_fifo(p, a.role)?;
                let ack = if a.shape.ping_pong {
                    let other = if a.role == Role::Producer { Role::Consumer } else { Role::Producer };
                    Some(open_fifo(&format!("{p}.ack"), other)?)
                } else {
                    None
                };
                if a.role == Role::Consumer {
                    remove_fifo_names(p);
                }
                (data, ack)
            };
            match a.role {
                Role::Producer => pipe::produce(data, ack, name, &stream)?,
                Role::Consumer if a.shape.splice_consumer => pipe::consume_splice(data, name, &stream)?,
                Role::Consumer => pipe::consume(data, ack, name, &stream)?,
            }
        }
        RoleTransport::ShmFutex | RoleTransport::ShmSem => {
            let sync = if a.transport == RoleTransport::ShmFutex {
                SyncKind::Futex { spin: a.ring.spin }
            } else {
                SyncKind::Sem
            };
            let slots = if a.shape.ping_pong { Some(1) } else { a.ring.slots.map(|s| s as usize) };
            let sa = ShmArgs {
                name: path()?,
                transport: name,
                stream,
                geometry: Geometry::new(msg, a.ring.slot_size.map(|s| s as usize), slots)?,
                sync,
                populate: a.ring.populate,
            };
            match a.role {
                Role::Producer => shm::produce(&sa, &peer)?,
                Role::Consumer => shm::consume(&sa, &peer)?,
            }
        }
    };
    w.rusage_run = Rusage::now().since(&rusage0);
    w.rusage_at_gate = rusage0;
    // Report first: even a failed check leaves the launcher a witness to show.
    ctrl.report(&w)?;
    println!("{}", w.summary_line());
    if a.role == Role::Consumer {
        w.check_complete(a.shape.duration_ms.is_none().then_some(a.total))?;
    }
    Ok(())
}
