//! `workloads`: run a built-in producer/consumer pair without tracing (or one role of it).
//! `--wait-start` holds both sides until SIGUSR1, so a tracer can attach first.

use std::{ffi::OsString, process::ExitCode, time::Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use workloads::{
    role::{self, RingArgs, RoleArgs, ShapeArgs},
    size::{format_rate, parse_size},
    spawn::{Ended, Launch, spawn_pair},
    transport::Transport,
};

#[derive(Parser)]
#[command(
    version,
    about = "ipctrace's built-in producer/consumer workloads, untraced: `workloads TRANSPORT [OPTIONS]`",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The transport to run.
    #[arg(value_enum, required = true)]
    transport: Option<Transport>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct Common {
    /// Total payload (B, K/KiB, M/MiB, G/GiB; K = KiB = 1024).
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    total: u64,
    /// Message size (same units).
    #[arg(long, value_parser = parse_size, default_value = "64KiB")]
    msg_size: u64,
    #[command(flatten)]
    ring: RingArgs,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Pin the producer and the consumer to these two CPUs (e.g. 0,1; 0,0 for the same CPU).
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "A,B")]
    cpus: Option<Vec<usize>>,
    /// Hold both sides at their start gate until this process receives SIGUSR1.
    #[arg(long)]
    wait_start: bool,
    /// Prefix of the POSIX shm object names (/PREFIX-PID-N-RANDOM).
    #[arg(long, default_value = "workloads")]
    shm_prefix: String,
    /// Socket transports: a named socket at PATH (`@name`: abstract) instead of a socketpair;
    /// an existing path is refused.
    #[arg(long, value_name = "PATH")]
    socket_path: Option<String>,
    /// mq: the POSIX queue's name (`/NAME`) instead of a random one; an existing name is refused.
    #[arg(long, value_name = "/NAME")]
    mq_name: Option<String>,
    /// mq: the queue's depth in messages (default 10, or fs.mqueue.msg_max if lower).
    #[arg(long, value_name = "N")]
    mq_depth: Option<u64>,
    /// Print one JSON object (witnesses, rusage, elapsed) instead of summary lines.
    #[arg(long)]
    json: bool,
    /// Test hook: the producer corrupts the byte at this stream offset.
    #[arg(long, hide = true)]
    corrupt_at: Option<u64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// One side of a workload (used by launchers; not for direct use).
    #[command(hide = true)]
    Role(RoleArgs),
}

#[derive(Serialize)]
struct RunOutput {
    transport: &'static str,
    total: u64,
    msg_size: u64,
    elapsed_ns: u64,
    processes: Vec<Ended>,
    witnesses: Vec<workloads::witness::Witness>,
}

fn wait_for_sigusr1() -> Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGUSR1);
    set.wait().context("waiting for SIGUSR1")?;
    Ok(())
}

fn cpu_pair(v: &Option<Vec<usize>>) -> Result<Option<[usize; 2]>> {
    match v.as_deref() {
        None => Ok(None),
        Some([a, b]) => Ok(Some([*a, *b])),
        Some(_) => anyhow::bail!("--cpus takes two CPU numbers: producer,consumer"),
    }
}

fn run(t: Transport, c: Common) -> Result<bool> {
    let launch = Launch {
        exe: std::env::current_exe()?,
        arg0: OsString::from("workloads"),
        lead: vec![OsString::from("role")],
        transport: t,
        total: c.total,
        msg_size: c.msg_size,
        corrupt_at: c.corrupt_at,
        ring: c.ring.clone(),
        shape: c.shape.clone(),
        cpus: cpu_pair(&c.cpus)?,
        shm_prefix: c.shm_prefix.clone(),
        socket_path: c.socket_path.clone(),
        mq_name: c.mq_name.clone(),
        mq_depth: c.mq_depth,
    };
    if c.wait_start {
        // Blocked before the children exist, so the signal is never lost.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGUSR1);
        set.thread_block()?;
    }
    let mut pair = spawn_pair(&launch)?;
    if c.wait_start {
        let p = pair.pids();
        eprintln!(
            "workloads: ready {} producer={} consumer={} launcher={}: send SIGUSR1 to the launcher to start",
            t.name(),
            p[0],
            p[1],
            std::process::id()
        );
        wait_for_sigusr1()?;
    }
    let t0 = Instant::now();
    pair.open_gates()?;
    pair.wait_all()?;
    let elapsed = t0.elapsed();
    let ended: Vec<Ended> = pair.workers.iter().map(|w| w.ended.clone().unwrap_or_default()).collect();
    let ok = ended.iter().all(Ended::success);
    let witnesses: Vec<_> = ended.iter().filter_map(|e| e.witness.clone()).collect();
    if c.json {
        let out = RunOutput {
            transport: t.name(),
            total: c.total,
            msg_size: c.msg_size,
            elapsed_ns: elapsed.as_nanos() as u64,
            processes: ended,
            witnesses,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for w in &witnesses {
            println!("{}", w.summary_line());
        }
        let moved = witnesses.iter().find(|w| w.role == "consumer").map_or(0, |w| w.bytes);
        println!("throughput={}", format_rate(moved, elapsed.as_secs_f64()));
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (t, c) = match (cli.cmd, cli.transport) {
        (Some(Cmd::Role(a)), _) => return ExitCode::from(role::main(a) as u8),
        (None, Some(t)) => (t, cli.common),
        (None, None) => unreachable!("clap requires a transport"),
    };
    // A message transport carries a message whole or not at all: a usage error.
    if let Some((max, why)) = t.max_message_with(c.mq_depth).filter(|(m, _)| c.msg_size > *m) {
        eprintln!(
            "workloads: --msg-size {} is above the largest {t} message this machine carries ({max} bytes, set by {why})",
            c.msg_size
        );
        return ExitCode::from(2);
    }
    if let Some(d) = c.mq_depth
        && let (max, why) = workloads::transport::mq::max_depth()
        && (d == 0 || d > max)
    {
        eprintln!("workloads: --mq-depth {d} is outside 1..={max} (set by {why})");
        return ExitCode::from(2);
    }
    match run(t, c) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("workloads: {e:#}");
            ExitCode::FAILURE
        }
    }
}
