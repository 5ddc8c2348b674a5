//! One side of a workload as its own process: parses the role arguments, waits at the start
//! gate, runs the loop, reports the witness on the control socket and prints the summary line.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use crate::{control::Control, pipe, size::parse_size};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Producer,
    Consumer,
}

/// Transports a role process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleTransport {
    Pipe,
    Fifo,
}

impl RoleTransport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pipe => "pipe",
            Self::Fifo => "fifo",
        }
    }
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
    /// Data channel fd.
    #[arg(long, default_value_t = 4)]
    pub data_fd: i32,
    /// Test hook: flip the byte at this stream offset (producer only).
    #[arg(long, hide = true)]
    pub corrupt_at: Option<u64>,
}

/// Runs the role; returns the process exit code (0 ok, 1 failure).
pub fn main(args: RoleArgs) -> i32 {
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("workload {} {:?}: {e:#}", args.transport.name(), args.role);
            1
        }
    }
}

fn run(a: &RoleArgs) -> Result<()> {
    if a.msg_size == 0 {
        bail!("--msg-size must be at least 1 byte");
    }
    // SAFETY: the launcher placed these fds here for us and nothing else owns them.
    let mut ctrl = unsafe { Control::from_fd(a.ctrl_fd) };
    let data = unsafe { OwnedFd::from_raw_fd(a.data_fd) };
    ctrl.wait_gate()?;
    let name = a.transport.name();
    let msg = a.msg_size as usize;
    let w = match a.role {
        Role::Producer => pipe::produce(data, name, a.total, msg, a.corrupt_at)?,
        Role::Consumer => pipe::consume(data, name, msg)?,
    };
    // Report first: even a failed check leaves the launcher a witness to show.
    ctrl.report(&w)?;
    println!("{}", w.summary_line());
    if a.role == Role::Consumer {
        pipe::check_consumer(&w, a.total)?;
    }
    Ok(())
}
