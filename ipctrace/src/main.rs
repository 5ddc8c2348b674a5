//! ipctrace: entry point. Parses the command line, checks privileges, makes tracefs
//! reachable (before any thread exists), then runs the command and maps errors to exit codes.

mod agree;
mod cli;
mod exit;
mod kernel;
mod model;
mod path;
mod privileges;
mod probes;
mod render;
mod run;
mod session;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    exit::{Code, code_of, fail},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Workload(args) => return ExitCode::from(workloads::role::main(args) as u8),
        Command::Run(args) => run_command(&args),
        Command::Probes(args) => probes_command(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("ipctrace: {e:#}");
            ExitCode::from(code_of(&e) as u8)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the workloads' parent-death signal is tied to the thread that spawned them.
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run_command(args: &cli::RunArgs) -> anyhow::Result<Code> {
    privileges::check("run")?;
    kernel::tracefs::ensure().map_err(|e| fail(Code::Runtime, format!("{e:#}")))?;
    let outcome = runtime()?.block_on(run::run(args))?;
    print!("{}", render::render(&outcome.report, args.format));
    match outcome.target_failure {
        Some(msg) => Err(fail(Code::Target, msg)),
        None => Ok(Code::Ok),
    }
}

fn probes_command(args: &cli::ProbesArgs) -> anyhow::Result<Code> {
    privileges::check("probes")?;
    kernel::tracefs::ensure().map_err(|e| fail(Code::Runtime, format!("{e:#}")))?;
    let session = run::open_session(&args.probes)?;
    let tier = run::tier_summary(&session.choices);
    print!("{}", render::probes(&session.choices, &tier, args.format));
    Ok(Code::Ok)
}
