//! ipctrace: entry point. Parses the command line, checks privileges, makes tracefs
//! reachable (before any thread exists), then runs the command and maps errors to exit codes.

mod agree;
mod attach;
mod calltree;
mod cli;
mod discover;
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
        Command::Gate { cmd } => return attach::gate_then_exec(&cmd),
        Command::Run(args) => run_command(&args),
        Command::Probes(args) => probes_command(&args),
        Command::Report(args) => report_command(&args),
        Command::Attach(args) => traced_command("attach", &args.output, |rt| rt.block_on(attach::attach(&args))),
        Command::Trace(args) => traced_command("trace", &args.output, |rt| rt.block_on(attach::trace(&args))),
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
    render::emit(&outcome.report, &args.output)?;
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

fn report_command(args: &cli::ReportArgs) -> anyhow::Result<Code> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| fail(Code::Usage, format!("cannot read {}: {e}", args.file.display())))?;
    let report: model::Report = serde_json::from_str(&text)
        .map_err(|e| fail(Code::Usage, format!("{} is not an ipctrace report: {e}", args.file.display())))?;
    if report.schema_version != model::SCHEMA_VERSION {
        return Err(fail(
            Code::Usage,
            format!(
                "{} has schema_version {}; this ipctrace reads {}",
                args.file.display(),
                report.schema_version,
                model::SCHEMA_VERSION
            ),
        ));
    }
    render::emit(&report, &args.output)?;
    Ok(Code::Ok)
}

/// attach and trace: privileges, tracefs, then the report; no IPC observed is exit code 3.
fn traced_command(
    name: &str,
    output: &cli::OutputArgs,
    f: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<(model::Report, Option<String>)>,
) -> anyhow::Result<Code> {
    privileges::check(name)?;
    kernel::tracefs::ensure().map_err(|e| fail(Code::Runtime, format!("{e:#}")))?;
    let (report, nothing) = f(&runtime()?)?;
    render::emit(&report, output)?;
    match nothing {
        Some(msg) => Err(fail(Code::Target, msg)),
        None => Ok(Code::Ok),
    }
}
