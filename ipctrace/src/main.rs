//! ipctrace: entry point. Parses and checks the command line (usage errors are exit 2 for
//! every user), checks privileges, makes tracefs reachable (before any thread exists), opens
//! the output files, then runs the command and maps errors to exit codes.

mod agree;
mod attach;
mod calltree;
mod cli;
mod conclude;
mod discover;
mod exit;
mod kernel;
mod model;
mod observe;
mod outputs;
mod path;
mod perfetto;
mod privileges;
mod probes;
mod render;
mod run;
mod sections;
mod session;
mod stops;
mod transport;
mod usage;

#[cfg(test)]
mod layout_tests;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::{
    cli::{Cli, Command},
    exit::{Code, code_of, fail},
    outputs::Outputs,
};

/// One line on stderr; a closed or full stderr is not worth dying for.
pub fn warn(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn main() -> ExitCode {
    // A bug must still end with one line, not a backtrace over the user's terminal.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        warn(&format!("ipctrace: internal error{at}: {msg} (this is a bug; please report it)"));
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help/--version print to stdout and exit 0; errors go to stderr with exit 2.
            let code = if e.use_stderr() { Code::Usage as u8 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The hidden modes ipctrace re-executes itself in.
    if matches!(cli.command, Command::Workload(_) | Command::Gate { .. }) {
        return match cli.command {
            Command::Workload(args) => ExitCode::from(workloads::role::main(args) as u8),
            Command::Gate { cmd } => attach::gate_then_exec(&cmd),
            _ => unreachable!(),
        };
    }
    if let Err(msg) = usage::check(&cli.command) {
        warn(&format!("ipctrace: {msg}"));
        return ExitCode::from(Code::Usage as u8);
    }
    let result = std::panic::catch_unwind(|| dispatch(cli)).unwrap_or_else(|_| Ok(Code::Runtime));
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            warn(&format!("ipctrace: {e:#}"));
            ExitCode::from(code_of(&e) as u8)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Code> {
    match cli.command {
        Command::Workload(_) | Command::Gate { .. } => unreachable!("handled in main"),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ipctrace", &mut out);
            render::print_stdout(&String::from_utf8_lossy(&out))
        }
        Command::Manpage => render::print_stdout(&manpage()?),
        Command::Run(args) => traced("run", &args.output, &args.probes, |outs| {
            let o = runtime()?.block_on(run::run(&args, outs.events.as_mut()))?;
            Ok((o.report, o.target_failure))
        }),
        Command::Probes(args) => probes_command(&args),
        Command::Report(args) => report_command(&args),
        Command::Attach(args) => traced("attach", &args.output, &args.probes, |outs| {
            runtime()?.block_on(attach::attach(&args, outs.events.as_mut()))
        }),
        Command::Trace(args) => traced("trace", &args.output, &args.probes, |outs| {
            runtime()?.block_on(attach::trace(&args, outs.events.as_mut()))
        }),
    }
}

/// One man page for the whole tool: the overview, then each command with its options (as
/// subsections, so `man ipctrace` holds everything).
fn manpage() -> anyhow::Result<String> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ipctrace {}", sub.get_name());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.extend(format!(".SH \"{}\"\n{}\n", name.to_uppercase(), about.replace('-', "\\-")).into_bytes());
        let m = clap_mangen::Man::new(sub.clone().bin_name(name));
        let mut part = Vec::new();
        m.render_synopsis_section(&mut part)?;
        m.render_options_section(&mut part)?;
        out.extend(String::from_utf8_lossy(&part).replace(".SH ", ".SS ").into_bytes());
    }
    man.render_version_section(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the workloads' parent-death signal is tied to the thread that spawned them.
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn probes_command(args: &cli::ProbesArgs) -> anyhow::Result<Code> {
    privileges::check("probes")?;
    kernel::tracefs::ensure().map_err(|e| fail(Code::Runtime, format!("{e:#}")))?;
    let session = run::open_session(&args.probes, None, transport::FAMILIES, false)?;
    let tier = run::tier_summary(&session.choices);
    render::print_stdout(&render::probes(&session.choices, &kernel::release(), &tier, args.format))
}

fn report_command(args: &cli::ReportArgs) -> anyhow::Result<Code> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| fail(Code::Usage, format!("cannot read {}: {e}", args.file.display())))?;
    let report = model::Report::from_json(&text, &args.file.display().to_string())?;
    let mut outs = Outputs::open(&args.output, None, None)?;
    render::emit(&report, &args.output, &mut outs)
}

/// run, attach and trace: privileges, tracefs, output files, then tracing and the report. A
/// target problem (`Some(message)`) is exit code 3 after the report is printed.
fn traced(
    name: &str,
    output: &cli::OutputArgs,
    probes: &cli::ProbeArgs,
    f: impl FnOnce(&mut Outputs) -> anyhow::Result<(model::Report, Option<String>)>,
) -> anyhow::Result<Code> {
    privileges::check(name)?;
    kernel::tracefs::ensure().map_err(|e| fail(Code::Runtime, format!("{e:#}")))?;
    let mut outs = Outputs::open(output, probes.events.as_deref(), probes.perfetto.as_deref())?;
    let (report, target_problem) = f(&mut outs)?;
    let code = render::emit(&report, output, &mut outs);
    match (code, target_problem) {
        (Ok(Code::Ok), Some(msg)) => Err(fail(Code::Target, msg)),
        (Err(e), Some(msg)) => {
            warn(&format!("ipctrace: {msg}"));
            Err(e)
        }
        (code, _) => code,
    }
}
