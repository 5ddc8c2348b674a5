//! xtask: the project's own commands (`cargo xtask <cmd>`): set-up, run, test, install, deb,
//! vm-test, bench.
//! Each command sets up first, so the README's two commands work on a fresh machine.

mod bench;
mod overhead;
mod package;
mod setup;
mod test;
mod util;
mod vm;

use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "ipctrace's project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the BPF toolchain and test tools this machine lacks (idempotent).
    Setup,
    /// Set up, install ipctrace (`install` into /usr/local) and run `ipctrace run ARGS...`
    /// (sudo only for the install and that run).
    Run {
        /// Arguments for `ipctrace run` (default: the built-in default run).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, then fmt --check, clippy -D warnings, unit tests, the root kernel tests, and the
    /// function-tier tests inside stock Debian kernels under QEMU (vm-test).
    Test,
    /// Boot stock Debian kernels under QEMU and test the function tier (fentry/kprobe) inside.
    VmTest(vm::VmArgs),
    /// Build ipctrace (release) and install it with its man page and shell completions.
    Install(package::InstallArgs),
    /// Build a Debian package (target/debian/ipctrace_*.deb) with cargo-deb.
    Deb,
    /// Benchmark the transports untraced (and traced vs untraced, as root): table, JSON, SVG.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Run { args } => setup::setup().and_then(|()| test::run_ipctrace(&args)),
        Cmd::Test => setup::setup().and_then(|()| test::test()),
        Cmd::Install(a) => setup::setup().and_then(|()| package::install(&a)),
        Cmd::Deb => setup::setup().and_then(|()| package::deb().map(|_| ())),
        Cmd::VmTest(a) => setup::setup().and_then(|()| vm::vm_test(&a)),
        Cmd::Bench(a) => setup::setup().and_then(|()| bench::bench(&a)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
