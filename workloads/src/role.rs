//! One side of a workload as its own process: parses the role arguments, waits at the start
//! gate, runs the loop, reports the witness on the control socket and prints the summary line.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{
    cleanup,
    control::Control,
    peer::Peer,
    pipe,
    shm::{self, Geometry, ShmArgs, SyncKind},
    size::parse_size,
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
            eprintln!(
                "workload {} {}: {e:#}",
                args.transport.name(),
                args.role.name()
            );
            1
        }
    }
}

fn open_fifo(path: &str, role: Role) -> Result<OwnedFd> {
    let flags = match role {
        Role::Producer => nix::fcntl::OFlag::O_WRONLY,
        Role::Consumer => nix::fcntl::OFlag::O_RDONLY,
    } | nix::fcntl::OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("opening the FIFO {path}"))?;
    if role == Role::Consumer {
        // Both ends are open: the name (and its private directory) can go.
        let _ = std::fs::remove_file(path);
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::remove_dir(dir);
            cleanup::unregister_path(&dir.to_string_lossy());
        }
        cleanup::unregister_path(path);
    }
    Ok(fd)
}

fn run(a: &RoleArgs) -> Result<()> {
    if a.msg_size == 0 {
        bail!("--msg-size must be at least 1 byte");
    }
    // SAFETY: the launcher placed this fd here for us and nothing else owns it.
    let mut ctrl = unsafe { Control::from_fd(a.ctrl_fd) };
    let path = || {
        a.path
            .as_deref()
            .context("--path is required for this transport")
    };
    if a.transport == RoleTransport::Fifo {
        let p = path()?;
        cleanup::register_path(p);
        if let Some(dir) = std::path::Path::new(p).parent() {
            cleanup::register_path(&dir.to_string_lossy());
        }
    }
    let peer_pid = ctrl.wait_gate()?;
    let peer = Peer::new(peer_pid)?;
    let name = a.transport.name();
    let msg = a.msg_size as usize;
    let w = match a.transport {
        RoleTransport::Pipe | RoleTransport::Fifo => {
            let data = if a.transport == RoleTransport::Pipe {
                // SAFETY: the launcher placed the pipe end here.
                unsafe { OwnedFd::from_raw_fd(a.data_fd) }
            } else {
                open_fifo(path()?, a.role)?
            };
            match a.role {
                Role::Producer => pipe::produce(data, name, a.total, msg, a.corrupt_at)?,
                Role::Consumer => pipe::consume(data, name, msg)?,
            }
        }
        RoleTransport::ShmFutex | RoleTransport::ShmSem => {
            let sync = if a.transport == RoleTransport::ShmFutex {
                SyncKind::Futex { spin: a.ring.spin }
            } else {
                SyncKind::Sem
            };
            let sa = ShmArgs {
                name: path()?,
                transport: name,
                total: a.total,
                msg_size: msg,
                geometry: Geometry::new(
                    msg,
                    a.ring.slot_size.map(|s| s as usize),
                    a.ring.slots.map(|s| s as usize),
                )?,
                sync,
                populate: a.ring.populate,
                corrupt_at: a.corrupt_at,
            };
            match a.role {
                Role::Producer => shm::produce(&sa, &peer)?,
                Role::Consumer => shm::consume(&sa, &peer)?,
            }
        }
    };
    // Report first: even a failed check leaves the launcher a witness to show.
    ctrl.report(&w)?;
    println!("{}", w.summary_line());
    if a.role == Role::Consumer {
        w.check_complete(a.total)?;
    }
    Ok(())
}
