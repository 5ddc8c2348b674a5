//! `workloads`: run a built-in producer/consumer pair without tracing, or one role of it.

use std::{ffi::OsString, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use workloads::{
    role::{self, RoleArgs, RoleTransport},
    size::{format_rate, parse_size},
    spawn::{Launch, spawn_pair},
};

#[derive(Parser)]
#[command(
    version,
    about = "ipctrace's built-in producer/consumer workloads, untraced"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a producer and a consumer over an anonymous pipe and print both summaries.
    Pipe {
        /// Total payload (B, KiB, MiB, GiB; K = KiB = 1024).
        #[arg(long, value_parser = parse_size, default_value = "256MiB")]
        total: u64,
        /// Message size (same units).
        #[arg(long, value_parser = parse_size, default_value = "64KiB")]
        msg_size: u64,
    },
    /// One side of a workload (used by launchers; not for direct use).
    #[command(hide = true)]
    Role(RoleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Role(a) => ExitCode::from(role::main(a) as u8),
        Cmd::Pipe { total, msg_size } => {
            let launch = Launch {
                exe: std::env::current_exe().expect("current_exe"),
                arg0: OsString::from("workloads"),
                lead: vec![OsString::from("role")],
                transport: RoleTransport::Pipe,
                total,
                msg_size,
                corrupt_at: None,
            };
            let run = || -> anyhow::Result<bool> {
                let mut pair = spawn_pair(&launch)?;
                let t0 = std::time::Instant::now();
                pair.open_gates()?;
                while !pair.reap()? {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let secs = t0.elapsed().as_secs_f64();
                let mut ok = true;
                for w in &pair.workers {
                    let e = w.ended.as_ref().unwrap();
                    ok &= e.success();
                    if let Some(wit) = &e.witness {
                        println!("{}", wit.summary_line());
                    }
                }
                println!("throughput={}", format_rate(total, secs));
                Ok(ok)
            };
            match run() {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("workloads: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
