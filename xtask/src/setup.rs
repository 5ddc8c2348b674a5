//! `cargo xtask setup`: makes this machine able to build and test ipctrace. Idempotent: it
//! checks first, acts only on what is missing, and says in one line when nothing was needed.
//! Routes: rustup nightly + rust-src (standard aya), else Debian's rustc-web (tested: Debian 12).

use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use crate::util::{self, is_root, output, run, which};

/// Debian packages the tests use.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("strace", "/usr/bin/strace"),
    ("bpftool", "/usr/sbin/bpftool"),
    // vm-test: boots stock kernels under QEMU with a busybox initramfs.
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/usr/bin/cpio"),
    // The HTML report is rendered in headless Chromium by the tests.
    ("chromium", "/usr/bin/chromium"),
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds the Debian package (`cargo xtask deb`); 3.8 builds with Rust 1.95.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

struct Plan {
    found: Vec<String>,
    did: Vec<String>,
}

fn apt_install(pkgs: &[&str], plan: &mut Plan) -> Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    if which("apt-get").is_none() {
        bail!(
            "missing {} and this is not a Debian-like system; install the equivalents by hand \
             (or use rustup nightly with rust-src: `rustup toolchain install nightly --component rust-src`)",
            pkgs.join(", ")
        );
    }
    let sudo = |args: &[&str]| {
        let mut c = if is_root() {
            Command::new(args[0])
        } else {
            let mut c = Command::new("sudo");
            c.arg(args[0]);
            c
        };
        c.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut sudo(&["apt-get", "update", "-q"]))?;
    let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(pkgs);
    run(&mut sudo(&args))?;
    plan.did.push(format!("installed {}", pkgs.join(" ")));
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// rustup nightly with rust-src: the standard aya route.
fn nightly_with_rust_src() -> bool {
    output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .is_some_and(|s| Path::new(s.trim()).join("lib/rustlib/src/rust/library/core").is_dir())
}

/// LLVM major version of a rustc, from `rustc -vV`.
fn llvm_major(rustc: &str) -> Option<u32> {
    let out = output(Command::new(rustc).arg("-vV"))?;
    let line = out.lines().find(|l| l.starts_with("LLVM version:"))?;
    line.split(':').nth(1)?.trim().split('.').next()?.parse().ok()
}

/// Is bpf-linker installed (by cargo install) at our version with the given LLVM feature?
fn bpf_linker_ok(llvm_feature: Option<&str>) -> bool {
    if which("bpf-linker").is_none() && !home_bin("bpf-linker").is_file() {
        return false;
    }
    let Some(feature) = llvm_feature else {
        return true;
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    let Ok(text) = std::fs::read_to_string(cargo_home.join(".crates2.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v["installs"].as_object().is_some_and(|m| {
        m.iter().any(|(k, info)| {
            k.starts_with(&format!("bpf-linker {BPF_LINKER_VERSION} "))
                && info["features"].as_array().is_some_and(|f| f.iter().any(|x| x == feature))
        })
    })
}

fn home_bin(name: &str) -> std::path::PathBuf {
    Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin").join(name)
}

pub fn setup() -> Result<()> {
    let mut plan = Plan { found: Vec::new(), did: Vec::new() };
    if nightly_with_rust_src() {
        plan.found.push("rustup nightly with rust-src (standard aya route)".into());
        if !bpf_linker_ok(None) {
            run(util::cargo().args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"]))?;
            plan.did.push(format!("built bpf-linker {BPF_LINKER_VERSION}"));
        }
    } else {
        // Debian route: rustc-web ships a prebuilt `core` for the bpf targets.
        let mut missing: Vec<&str> = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf", "libzstd-dev"]
            .into_iter()
            .filter(|p| !dpkg_installed(p))
            .collect();
        if !missing.is_empty() && !Path::new("/etc/debian_version").exists() {
            bail!(
                "no BPF-capable Rust toolchain: install a rustup nightly with rust-src \
                 (`rustup toolchain install nightly --component rust-src`) and re-run `cargo xtask setup`"
            );
        }
        apt_install(&missing, &mut plan)?;
        let Some(llvm) = llvm_major("/usr/bin/rustc") else {
            bail!("/usr/bin/rustc -vV did not report an LLVM version; is rustc-web installed?");
        };
        plan.found.push(format!("Debian rustc-web (LLVM {llvm}) with the prebuilt bpf core"));
        let llvm_dev = format!("llvm-{llvm}-dev");
        missing = if dpkg_installed(&llvm_dev) { vec![] } else { vec![llvm_dev.as_str()] };
        apt_install(&missing, &mut plan)?;
        let feature = format!("llvm-{llvm}");
        if bpf_linker_ok(Some(&feature)) {
            plan.found.push(format!("bpf-linker {BPF_LINKER_VERSION} for LLVM {llvm}"));
        } else {
            run(util::cargo()
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}"))
                .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--no-default-features"])
                .args(["--features", &format!("{feature},llvm-link-static")]))?;
            plan.did.push(format!("built bpf-linker {BPF_LINKER_VERSION} for LLVM {llvm}"));
        }
    }
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(p, bin)| !Path::new(bin).exists() && !dpkg_installed(p))
        .map(|(p, _)| *p)
        .collect();
    apt_install(&missing, &mut plan)?;
    if util::cargo().args(["deb", "--version"]).output().is_ok_and(|o| o.status.success()) {
        plan.found.push("cargo-deb".into());
    } else {
        run(util::cargo().args(["install", &format!("cargo-deb@{CARGO_DEB_VERSION}"), "--locked"]))?;
        plan.did.push(format!("built cargo-deb {CARGO_DEB_VERSION}"));
    }
    perfetto_venv(&mut plan)?;
    if plan.did.is_empty() {
        eprintln!("setup: nothing to do ({}; test tools present)", plan.found.join("; "));
    } else {
        eprintln!("setup: found {}", plan.found.join("; "));
        eprintln!("setup: {}", plan.did.join("; "));
    }
    Ok(())
}

/// The official Perfetto protos for the tests that read `--perfetto` files: the `perfetto`
/// package from PyPI ships `perfetto_trace_pb2`, which needs a newer `protobuf` than Debian
/// 12's, so both go into a virtual environment under target/.
pub const PERFETTO_VERSION: &str = "0.59.1";

pub fn perfetto_venv_dir() -> std::path::PathBuf {
    util::root().join("target/perfetto-venv")
}

fn perfetto_venv(plan: &mut Plan) -> Result<()> {
    let dir = perfetto_venv_dir();
    let py = dir.join("bin/python");
    let check = || {
        Command::new(&py)
            .args(["-c", "from perfetto.protos.perfetto.trace import perfetto_trace_pb2"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if check() {
        plan.found.push(format!("perfetto {PERFETTO_VERSION} protos in {}", dir.display()));
        return Ok(());
    }
    let venv = |p: &mut Plan| -> Result<()> {
        if Command::new("python3").arg("-m").arg("venv").arg(&dir).output().is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        // Debian's python3 needs its venv module installed.
        apt_install(&["python3-venv"], p)?;
        run(Command::new("python3").arg("-m").arg("venv").arg(&dir))
    };
    venv(plan)?;
    run(Command::new(&py).args([
        "-m",
        "pip",
        "install",
        "-q",
        &format!("perfetto=={PERFETTO_VERSION}"),
        "protobuf>=5.26",
    ]))?;
    if !check() {
        bail!("the perfetto protos did not import from {}", py.display());
    }
    plan.did.push(format!("installed perfetto {PERFETTO_VERSION} protos in {}", dir.display()));
    Ok(())
}
