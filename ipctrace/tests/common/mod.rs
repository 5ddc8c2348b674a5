//! Helpers shared by the kernel integration tests: the root gate (a skip fails under CI=true),
//! running ipctrace, and snapshots of what a run must not leave behind.
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ipctrace");

/// True if the test may load BPF. Not root: SKIPPED, or a failure under CI=true.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: kernel tests need root and CI=true forbids skipping them");
    }
    eprintln!("SKIPPED {test}: needs root to load BPF programs");
    false
}

pub fn ipctrace(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("starting ipctrace")
}

/// Runs ipctrace as `nobody` with no capabilities (a world-readable copy of the binary).
pub fn as_nobody(args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("ipctrace-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("ipctrace");
    if !bin.exists() {
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"])
        .arg(&bin)
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("setpriv (util-linux)")
}

/// The first line of stderr, checked to be a one-line `ipctrace:` message with no panic text.
pub fn first_err_line(out: &Output) -> String {
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE") && !e.contains("internal error"), "panic: {e}");
    e.lines().next().unwrap_or("").to_string()
}

/// Runs `ipctrace run --format json ARGS` and returns (exit code, report, stderr).
pub fn run_json(args: &[&str]) -> (i32, Value, String) {
    run_json_env(&[], args)
}

/// `run_json` with environment variables `env` set for ipctrace.
pub fn run_json_env(env: &[(&str, &str)], args: &[&str]) -> (i32, Value, String) {
    let mut full = vec!["run", "--format", "json"];
    full.extend_from_slice(args);
    let out = Command::new(BIN).args(&full).envs(env.iter().copied()).output().expect("starting ipctrace");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ipctrace printed no JSON ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The process with `role` in a transport run.
pub fn process<'a>(run: &'a Value, role: &str) -> &'a Value {
    run["processes"].as_array().unwrap().iter().find(|p| p["role"] == role).unwrap_or_else(|| panic!("no {role}"))
}

/// Sum of observed (calls, bytes) for pipe `op` (`write`/`read`) across channels.
pub fn observed(p: &Value, op: &str) -> (u64, u64) {
    let s = sum(p, &format!("pipe_{op}"), None);
    (s["calls"], s["bytes"])
}

/// Sums of a process's observations of `probe` (optionally only sub-key `sub`), by field.
pub fn sum(p: &Value, probe: &str, sub: Option<&str>) -> std::collections::HashMap<&'static str, u64> {
    let mut out = std::collections::HashMap::new();
    for o in p["observed"]["events"].as_array().unwrap() {
        if o["probe"] != probe || sub.is_some_and(|s| o["sub"] != s) {
            continue;
        }
        for k in ["calls", "bytes", "errors", "zero", "eagain", "etimedout", "eintr", "time_ns"] {
            *out.entry(k).or_insert(0) += o[k].as_u64().unwrap();
        }
    }
    for k in ["calls", "bytes", "errors", "zero", "eagain", "etimedout", "eintr", "time_ns"] {
        out.entry(k).or_insert(0);
    }
    out
}

/// The kernel stacks (outermost first) of `probe` for a process, with their counts.
pub fn stacks(p: &Value, probe: &str) -> Vec<(Vec<String>, u64)> {
    p["observed"]["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["probe"] == probe)
        .map(|s| {
            let frames = s["kernel"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
            (frames, s["count"].as_u64().unwrap())
        })
        .collect()
}

/// Copy-family kernel frames (names differ by CPU and kernel): the list the report uses.
pub fn is_copy_frame(f: &str) -> bool {
    ipctrace_common::COPY_FRAME_PATTERNS.iter().any(|p| f.contains(p))
}

/// What must be identical before and after any ipctrace run.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub bpf_prog_ids: BTreeSet<u64>,
    pub tracefs_mounts: usize,
    pub dev_shm: BTreeSet<String>,
    pub workload_processes: BTreeSet<u32>,
}

pub fn snapshot() -> Snapshot {
    let out =
        Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (cargo xtask setup installs it)");
    let progs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    let bpf_prog_ids = progs.as_array().unwrap().iter().filter_map(|p| p["id"].as_u64()).collect();
    let tracefs_mounts =
        std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(" tracefs ")).count();
    let dev_shm = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let workload_processes = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let s = String::from_utf8_lossy(&c);
                s.contains("ipctrace") && s.contains("__workload")
            })
        })
        .collect();
    Snapshot { bpf_prog_ids, tracefs_mounts, dev_shm, workload_processes }
}

/// Waits (up to 10 s: program release after a process dies is asynchronous) until nothing is
/// there that was not there `before` (programs of an earlier test may still be going away),
/// then asserts it.
pub fn assert_nothing_left(before: &Snapshot, what: &str) {
    let t0 = Instant::now();
    loop {
        let now = snapshot();
        if now.bpf_prog_ids.is_subset(&before.bpf_prog_ids)
            && now.tracefs_mounts == before.tracefs_mounts
            && now.dev_shm == before.dev_shm
            && now.workload_processes == before.workload_processes
        {
            return;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            panic!("{what}: left something behind\nbefore: {before:?}\nafter:  {now:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a BPF program is loaded that was not in `before` (ipctrace has attached).
pub fn wait_attached(before: &Snapshot) {
    let t0 = Instant::now();
    while snapshot().bpf_prog_ids.is_subset(&before.bpf_prog_ids) {
        assert!(t0.elapsed() < Duration::from_secs(30), "ipctrace never loaded its programs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `ipctrace attach --format json` on `pids` (with `extra`) and waits for its READY
/// line; its stderr is drained in the background from then on.
pub fn attach_json(pids: &[u32], extra: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let mut cmd = Command::new(BIN);
    cmd.args(["attach", "--format", "json"]);
    for p in pids {
        cmd.args(["--pid", &p.to_string()]);
    }
    let mut child =
        cmd.args(extra).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY pids=") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "attach ended before its READY line");
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

/// Starts a C workload with `--wait-start` and reads its `producer=P consumer=C` line:
/// (the program, producer pid, consumer pid). It starts on SIGUSR1 to the producer.
pub fn start_held(prog: &str, args: &[&str]) -> (std::process::Child, u32, u32) {
    use std::io::BufRead;
    let mut child = Command::new(prog)
        .args(args)
        .arg("--wait-start")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    let field = |k: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim_end_matches(':').parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line:?}"))
    };
    let (p, c) = (field("producer"), field("consumer"));
    (child, p, c)
}

/// Calls of `call` by `pid` in an `strace -f` log whose first argument starts with `first`
/// (e.g. `"4,"` for fd 4; empty for any).
pub fn strace_calls(log: &str, pid: u64, call: &str, first: &str) -> u64 {
    log.lines().filter(|l| l.starts_with(&format!("{pid} ")) && l.contains(&format!("{call}({first}"))).count() as u64
}

/// Every event the aggregates of a `run` report counted (calls of every observation).
pub fn events_counted(r: &Value) -> u64 {
    r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|run| run["processes"].as_array().unwrap())
        .flat_map(|p| p["observed"]["events"].as_array().unwrap())
        .map(|e| e["calls"].as_u64().unwrap())
        .sum()
}

/// `ipctrace run --format json ARGS` under `strace -f -e trace=CALLS`: (the report, the
/// strace log). Exit code 0 asserted.
pub fn run_under_strace(calls: &str, args: &[&str]) -> (Value, String) {
    let log = std::env::temp_dir().join(format!("ipctrace-strace-{}-{}.log", std::process::id(), calls.len()));
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", &format!("trace={calls}"), "-o"])
        .arg(&log)
        .args([BIN, "run", "--format", "json"])
        .args(args)
        .output()
        .expect("strace is installed by `cargo xtask setup`");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), text)
}

/// The real Python interpreter (`python3` may be a shim script that forks shells, which would
/// show up as processes of the traced program).
pub fn system_python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed by these tests");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `ipctrace trace --save F -- CMD...`: (what the command and the report printed, the saved
/// report). Exit code 0 asserted.
pub fn trace_saved(cmd: &[&str]) -> (String, Value) {
    let saved = std::env::temp_dir().join(format!("ipctrace-trace-{}-{}.json", std::process::id(), cmd.concat().len()));
    let out = Command::new(BIN).args(["trace", "--save", &saved.to_string_lossy(), "--"]).args(cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let _ = std::fs::remove_file(&saved);
    (String::from_utf8_lossy(&out.stdout).into_owned(), r)
}

/// `trace_saved` of `python3 -c SCRIPT` with the real interpreter.
pub fn trace_python(script: &str) -> (String, Value) {
    trace_saved(&[&system_python(), "-c", script])
}
