//! Kernel tests (root) for how a run ends: nothing left behind after a normal end, Ctrl-C or
//! SIGKILL; usage and privilege errors have their exit codes and one-line messages.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

#[test]
fn kernel_lifecycle_normal_end_leaves_nothing() {
    if !require_root("kernel_lifecycle_normal_end_leaves_nothing") {
        return;
    }
    let before = snapshot();
    let out = ipctrace(&["run", "--total", "16MiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("events lost: 0 ·"));
    assert_nothing_left(&before, "normal end");
}

fn long_run() -> std::process::Child {
    Command::new(BIN)
        .args(["run", "--format", "json", "--total", "1024GiB", "--msg-size", "64KiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn kernel_lifecycle_ctrl_c_prints_partial_report_and_leaves_nothing() {
    if !require_root("kernel_lifecycle_ctrl_c_prints_partial_report_and_leaves_nothing") {
        return;
    }
    let before = snapshot();
    let child = long_run();
    wait_attached(&before);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "Ctrl-C still prints a report: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report after Ctrl-C");
    assert_eq!(r["partial"], true);
    assert_eq!(r["ended_by"], "interrupted");
    let run = &r["runs"][0];
    assert!(observed(process(run, "producer"), "write").1 > 0, "something was observed before Ctrl-C");
    assert_nothing_left(&before, "Ctrl-C");
}

#[test]
fn kernel_lifecycle_sigkill_leaves_nothing() {
    if !require_root("kernel_lifecycle_sigkill_leaves_nothing") {
        return;
    }
    let before = snapshot();
    let mut child = long_run();
    wait_attached(&before);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!snapshot().workload_processes.is_empty(), "workloads were running");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_nothing_left(&before, "SIGKILL");
}

#[test]
fn kernel_lifecycle_duration_ends_with_partial_report() {
    if !require_root("kernel_lifecycle_duration_ends_with_partial_report") {
        return;
    }
    let (code, r, stderr) = run_json(&["--total", "1024GiB", "--duration", "700ms"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["ended_by"], "duration");
    assert_eq!(r["partial"], true);
}

#[test]
fn kernel_lifecycle_unprivileged_user_gets_exit_4() {
    if !require_root("kernel_lifecycle_unprivileged_user_gets_exit_4") {
        return;
    }
    let out = as_nobody(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "privilege exit code; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("sudo"),
        "names the first missing privilege and the fix: {stderr}"
    );
    assert!(out.stdout.is_empty());
}
