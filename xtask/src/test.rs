//! `cargo xtask test` and `cargo xtask run`: the project's test command and quick start.
//! Kernel tests need root: when not root they are SKIPPED, and under CI=true that fails.

use std::{ffi::OsString, process::Command};

use anyhow::{Result, bail};

use crate::util::{cargo, in_ci, is_root, root, run};

/// The quick start: install ipctrace into /usr/local (so `sudo ipctrace ...` works from
/// here on) and run it.
pub fn run_ipctrace(args: &[OsString]) -> Result<()> {
    let prefix = std::path::PathBuf::from("/usr/local");
    crate::package::install(&crate::package::InstallArgs { prefix: prefix.clone() })?;
    let bin = prefix.join("bin/ipctrace");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        eprintln!("xtask: ipctrace needs root to trace; running it with sudo");
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    cmd.arg("run").args(args);
    let st = cmd.status()?;
    if !st.success() {
        bail!("ipctrace run exited with {st}");
    }
    Ok(())
}

pub fn test() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // Unit tests (no root, no BPF); the kernel tests are the `kernel_*` integration tests.
    run(cargo().args(["test", "--lib", "--bins"]))?;
    // The workloads' own tests (no root): exact totals, corruption, killed peers, C programs.
    run(cargo().args(["test", "--release", "-p", "workloads", "--test", "transports"]))?;
    // The Debian package, installed and removed by kernel_package.
    let deb = crate::package::deb()?;
    // SAFETY: single-threaded here; the kernel tests read it from their environment.
    unsafe { std::env::set_var("IPCTRACE_DEB", &deb) };
    kernel_tests()?;
    // The function tier, inside stock Debian kernels (6.1 and the newest backports kernel).
    crate::vm::vm_test(&crate::vm::VmArgs { kernels: vec!["bookworm".into(), "backports-latest".into()], timeout: 300 })
}

/// Builds the `kernel_*` test binaries as the user and runs them as root (directly when root,
/// else through sudo), one test at a time.
fn kernel_tests() -> Result<()> {
    let out = cargo()
        .args(["test", "--release", "-p", "ipctrace", "--test", "kernel_*", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the kernel tests failed");
    }
    let exes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["target"]["kind"][0] == "test" && v["target"]["name"].as_str().is_some_and(|n| n.starts_with("kernel_"))
        })
        .filter_map(|v| v["executable"].as_str().map(String::from))
        .collect();
    if exes.is_empty() {
        bail!("no kernel_* test binaries were built");
    }
    let sudo = !is_root();
    if sudo && !sudo_works() {
        let msg = "the kernel tests (ipctrace/tests/kernel_*.rs) load BPF programs and need root; \
                   run `cargo xtask test` as root or with sudo available";
        if in_ci() {
            bail!("{msg} (CI=true: a skipped kernel test is a failure)");
        }
        eprintln!("SKIPPED: {msg}");
        return Ok(());
    }
    for exe in exes {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(["--preserve-env=CI,IPCTRACE_DEB", "--", &exe]);
            c
        } else {
            Command::new(&exe)
        };
        run(cmd.arg("--test-threads=1").current_dir(root().join("ipctrace")))?;
    }
    Ok(())
}

fn sudo_works() -> bool {
    use std::io::IsTerminal;
    Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success()) || std::io::stdin().is_terminal()
}
