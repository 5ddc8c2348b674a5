//! Kernel test (root): the Debian package `cargo xtask deb` builds installs with dpkg, runs
//! from /usr/bin (probes and a short run) with its man page and completions in place, and
//! removes without leaving a file behind. `cargo xtask test` builds the package and passes
//! its path in IPCTRACE_DEB; under CI=true a missing package is a failure.

mod common;

use std::{path::Path, process::Command};

use common::*;

const FILES: [&str; 5] = [
    "/usr/bin/ipctrace",
    "/usr/share/man/man1/ipctrace.1",
    "/usr/share/bash-completion/completions/ipctrace",
    "/usr/share/zsh/vendor-completions/_ipctrace",
    "/usr/share/fish/vendor_completions.d/ipctrace.fish",
];

fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("dpkg").args(args).output().expect("dpkg")
}

#[test]
fn kernel_package_installs_runs_and_removes_cleanly() {
    if !require_root("kernel_package_installs_runs_and_removes_cleanly") {
        return;
    }
    let Some(deb) = std::env::var_os("IPCTRACE_DEB") else {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("IPCTRACE_DEB is not set: `cargo xtask test` builds the package (cargo xtask deb) first");
        }
        eprintln!("SKIPPED kernel_package: set IPCTRACE_DEB=target/debian/ipctrace_*.deb (cargo xtask deb)");
        return;
    };
    let installed_before = dpkg(&["-s", "ipctrace"]).status.success();
    assert!(
        installed_before || !Path::new("/usr/bin/ipctrace").exists(),
        "/usr/bin/ipctrace exists outside the package; not overwriting it"
    );
    let before = snapshot();
    let out = dpkg(&["-i", &deb.to_string_lossy()]);
    assert!(out.status.success(), "dpkg -i: {}", String::from_utf8_lossy(&out.stderr));
    for f in FILES {
        assert!(Path::new(f).is_file(), "{f} installed by the package");
    }
    let man = std::fs::read_to_string("/usr/share/man/man1/ipctrace.1").unwrap();
    assert!(man.contains(".TH ipctrace") && man.contains("attach"), "a real man page");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/ipctrace").unwrap();
    assert!(bash.contains("--transport") && bash.contains("complete"), "bash completion knows the options");
    let probes = Command::new("/usr/bin/ipctrace").arg("probes").output().unwrap();
    assert_eq!(probes.status.code(), Some(0), "{}", String::from_utf8_lossy(&probes.stderr));
    assert!(String::from_utf8_lossy(&probes.stdout).contains("pipe_write"));
    let run = Command::new("/usr/bin/ipctrace").args(["run", "--total", "4MiB"]).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("events lost: 0 ·"));
    let out = dpkg(&["--purge", "ipctrace"]);
    assert!(out.status.success(), "dpkg --purge: {}", String::from_utf8_lossy(&out.stderr));
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} removed with the package");
    }
    assert!(!Path::new("/usr/share/doc/ipctrace").exists(), "doc directory removed");
    assert_nothing_left(&before, "package run");
    if installed_before {
        eprintln!("note: an ipctrace package was installed before this test and is now removed");
    }
}
