//! Workload tests (no root needed): every transport moves exactly the requested bytes and
//! verifies them, catches a corrupted byte, notices a killed peer, and leaves no shm object.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use workloads::transport::Transport;

const BIN: &str = env!("CARGO_BIN_EXE_workloads");
/// Every built-in transport, from the registry.
const TRANSPORTS: [Transport; Transport::ALL.len()] = Transport::ALL;

fn prefix(test: &str) -> String {
    format!("wltest-{test}-{}", std::process::id())
}

fn shm_left(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn run(transport: &str, total: u64, msg: u64, extra: &[&str], prefix: &str) -> (i32, Value) {
    let out = Command::new(BIN)
        .args([
            transport,
            "--json",
            "--total",
            &total.to_string(),
            "--msg-size",
            &msg.to_string(),
            "--shm-prefix",
            prefix,
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{transport}: no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

fn witness<'a>(v: &'a Value, role: &str) -> &'a Value {
    v["witnesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["role"] == role)
        .unwrap_or_else(|| panic!("no {role} witness: {v}"))
}

#[test]
fn every_transport_moves_and_verifies_exact_totals() {
    let p = prefix("exact");
    for t in TRANSPORTS {
        for (msg, total) in
            [(1u64, 100_003u64), (4097, (8 << 20) + 12345), (65536, (8 << 20) + 777), (1 << 20, (16 << 20) + 5)]
        {
            // A message transport refuses a size above its limit, naming it.
            if let Some((max, _)) = t.max_message().filter(|(m, _)| msg > *m) {
                let out = Command::new(BIN)
                    .args([t.name(), "--total", &total.to_string(), "--msg-size", &msg.to_string()])
                    .output()
                    .unwrap();
                assert_eq!(out.status.code(), Some(2), "{t} msg {msg}");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(&format!("({max} bytes")), "{t} msg {msg}: {err}");
                continue;
            }
            let (code, v) = run(t.name(), total, msg, &[], &p);
            assert_eq!(code, 0, "{t} msg {msg}: {v}");
            let c = witness(&v, "consumer");
            let pr = witness(&v, "producer");
            assert_eq!(c["verified_bytes"].as_u64(), Some(total), "{t} msg {msg}");
            assert_eq!(c["bytes"].as_u64(), Some(total), "{t} msg {msg}");
            assert_eq!(pr["bytes"].as_u64(), Some(total), "{t} msg {msg}");
            assert_eq!(pr["messages"].as_u64(), Some(total.div_ceil(msg)), "{t} msg {msg}");
            if t.is_shm() {
                // Message boundaries survive a ring; a pipe may split or merge them.
                assert_eq!(c["messages"], pr["messages"], "{t} msg {msg}");
                assert_eq!(pr["calls"], 0, "no data system calls on shm");
            }
        }
    }
    assert!(shm_left(&p).is_empty(), "shm objects left: {:?}", shm_left(&p));
}

#[test]
fn futex_witness_is_consistent() {
    let p = prefix("futex");
    let (code, v) = run("shm-futex", 64 << 20, 4096, &[], &p);
    assert_eq!(code, 0);
    for role in ["producer", "consumer"] {
        let f = &witness(&v, role)["futex"];
        let calls = f["wait_calls"].as_u64().unwrap();
        // Nothing signals these processes and every wait is well-formed: a wait that failed with
        // another errno (EINVAL, EFAULT: a bug in the ring) is its own class, not EINTR.
        assert_eq!(f["wait_eintr"], 0, "{role}: no signal interrupted a wait");
        assert_eq!(f["wait_other"], 0, "{role}: no wait failed with an unexpected errno");
        let parts: u64 = ["wait_woken", "wait_eagain", "wait_timedout"].iter().map(|k| f[k].as_u64().unwrap()).sum();
        assert_eq!(calls, parts, "{role}: every wait slept and was woken, found the word changed, or timed out");
    }
    // Each wait that slept was ended by one FUTEX_WAKE of the other side that woke a waiter.
    let n = |role: &str, k: &str| witness(&v, role)["futex"][k].as_u64().unwrap();
    assert_eq!(n("consumer", "wait_woken"), n("producer", "woken"));
    assert_eq!(n("producer", "wait_woken"), n("consumer", "woken"));
    assert!(n("producer", "woken") <= n("producer", "wake_calls"));
    assert!(n("consumer", "wait_calls") > 0, "a 64 MiB run at 4 KiB makes the consumer wait");
    assert!(shm_left(&p).is_empty());
}

#[test]
fn a_corrupted_byte_is_detected_on_every_transport() {
    let p = prefix("corrupt");
    for t in TRANSPORTS {
        let (code, v) = run(t.name(), 1 << 20, 4096, &["--corrupt-at", "123457"], &p);
        assert_ne!(code, 0, "{t}: corruption must fail the run");
        let c = witness(&v, "consumer");
        assert_eq!(c["first_mismatch"], 123457, "{t}");
        assert_eq!(c["verified_bytes"], 123457, "{t}");
    }
    assert!(shm_left(&p).is_empty());
}

/// Starts a long run held at its gate; returns (launcher, producer pid, consumer pid).
fn start_long(t: Transport, prefix: &str) -> (std::process::Child, i32, i32) {
    let msg = t.max_message().map_or(65536, |(m, _)| m.min(65536)).to_string();
    let mut child = Command::new(BIN)
        .args([t.name(), "--json", "--wait-start", "--total", "1000GiB", "--msg-size", &msg, "--shm-prefix", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let field = |k: &str| -> i32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim_end_matches(':').parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    let (prod, cons, launcher) = (field("producer"), field("consumer"), field("launcher"));
    // SAFETY: signalling processes this test started.
    unsafe { libc::kill(launcher, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(300));
    (child, prod, cons)
}

fn wait_bounded(mut child: std::process::Child, secs: u64) -> Value {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "the survivor hung after its peer was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn killing_one_side_makes_the_other_exit_nonzero() {
    let p = prefix("kill");
    for t in TRANSPORTS {
        for (victim, survivor) in [(1usize, 0usize), (0, 1)] {
            let (child, prod, cons) = start_long(t, &p);
            let pids = [prod, cons];
            // SAFETY: SIGKILL to a process this test started.
            unsafe { libc::kill(pids[victim], libc::SIGKILL) };
            let v = wait_bounded(child, 10);
            let procs = v["processes"].as_array().unwrap();
            assert_eq!(procs[victim]["signal"], 9, "{t}: the victim died of SIGKILL");
            let code = procs[survivor]["exit_code"].as_i64();
            assert!(code.is_some_and(|c| c != 0), "{t}: the survivor must exit non-zero, got {:?}", procs[survivor]);
        }
    }
    assert!(shm_left(&p).is_empty(), "shm objects left after kills: {:?}", shm_left(&p));
}

#[test]
fn c_programs_verify_and_print_the_same_summary() {
    use workloads::c_programs::{MQ_PC, PIPE_PC, SHM_PC, UDS_PC};
    // The C shm program names its object /shm_pc-<its own pid>: collect those pids.
    let mut pids = Vec::new();
    let mut run_c = |prog: &str, args: &[&str]| {
        let child = Command::new(prog).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        pids.push(child.id());
        child.wait_with_output().unwrap()
    };
    let programs: [(&str, &str, &[&str]); 7] = [
        (PIPE_PC, "pipe", &[]),
        (SHM_PC, "shm-futex", &[]),
        (UDS_PC, "unix-stream", &["--type", "stream"]),
        (UDS_PC, "unix-dgram", &["--type", "dgram"]),
        (UDS_PC, "unix-seqpacket", &["--type", "seqpacket"]),
        (MQ_PC, "mq", &[]),
        (MQ_PC, "sysv-msg", &["--sysv"]),
    ];
    for (prog, transport, extra) in programs {
        // The queues take what their limits allow (8 KiB by default).
        let sizes: &[(u64, u64)] = if prog == MQ_PC {
            &[(1, 50_001), (4097, (8 << 20) + 12345), (8192, (8 << 20) + 1)]
        } else {
            &[(1, 50_001), (4097, (8 << 20) + 12345), (65536, (8 << 20) + 1), (1 << 20, 16 << 20)]
        };
        for &(msg, total) in sizes {
            let mut args = vec!["--total".to_string(), total.to_string(), "--msg-size".into(), msg.to_string()];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_c(prog, &args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{prog} msg {msg}: {}", String::from_utf8_lossy(&out.stderr));
            let cons = stdout.lines().find(|l| l.contains("role=consumer")).expect("consumer summary");
            assert!(cons.starts_with(&format!("workload={transport} role=consumer ")), "{cons}");
            assert!(
                cons.contains(&format!(" bytes={total} "))
                    && cons.contains(&format!(" verified={total} "))
                    && cons.ends_with("result=ok"),
                "{cons}"
            );
        }
        let mut args = vec!["--total", "1MiB", "--msg-size", "4096", "--corrupt-at", "99999"];
        args.extend_from_slice(extra);
        let out = run_c(prog, &args);
        assert!(!out.status.success(), "{prog}: corruption must fail");
        assert!(String::from_utf8_lossy(&out.stdout).contains("result=mismatch@99999"));
    }
    let left: Vec<String> =
        shm_left("shm_pc-").into_iter().filter(|n| pids.iter().any(|p| *n == format!("shm_pc-{p}"))).collect();
    assert!(left.is_empty(), "the C shm program left its objects: {left:?}");
}
