//! Kernel tests (root) for the message queues (POSIX `mq`, SysV `sysv-msg`): bytes, messages
//! and calls per direction equal the workloads' own counters and strace of the same run; 2.0
//! copies per byte; hand-off vs queued forced both ways by the C reference (a receiver
//! confirmed blocked before each send; a receiver started after every send); priorities
//! received in order and counted per priority as the sender counted them; bad input is exit
//! 2 and leaves no queue behind, SIGKILL of ipctrace included.

mod common;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;
use workloads::c_programs::MQ_PC;

const QUEUES: [&str; 2] = ["mq", "sysv-msg"];

/// The SysV queues of the system (msqids).
fn sysv_queues() -> Vec<String> {
    std::fs::read_to_string("/proc/sysvipc/msg")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect()
}

#[test]
fn kernel_mq_every_queue_is_counted_exactly_and_copies_twice() {
    if !require_root("kernel_mq_every_queue_is_counted_exactly_and_copies_twice") {
        return;
    }
    for (total, msg) in [((16u64 << 20) + 5, "4096"), ((4u64 << 20) + 1, "8192"), (100_003, "1")] {
        let (code, r, stderr) =
            run_json(&["--transport", &QUEUES.join(","), "--total", &total.to_string(), "--msg-size", msg]);
        assert_eq!(code, 0, "{stderr}");
        for run in r["runs"].as_array().unwrap() {
            let t = run["transport"].as_str().unwrap();
            let a = run["agreement"].as_array().unwrap();
            assert!(a.iter().any(|x| x["figure"] == "messages sent (handed off + queued)"), "{a:?}");
            for x in a {
                assert_eq!(x["agrees"], true, "{t} msg {msg}: {x}");
            }
            let (p, c) = (process(run, "producer"), process(run, "consumer"));
            let (pw, cw) = (&p["witness"], &c["witness"]);
            assert_eq!(sum(p, "mq_send", None)["bytes"], pw["bytes"].as_u64().unwrap(), "{t}");
            assert_eq!(sum(c, "mq_recv", None)["bytes"], cw["bytes"].as_u64().unwrap(), "{t}");
            assert_eq!(cw["bytes"], total, "{t}");
            let msgs = sum(p, "mq_handoff", None)["calls"] + sum(p, "mq_queued", None)["calls"];
            assert_eq!(msgs, pw["messages"].as_u64().unwrap(), "{t}: every message once");
            assert_eq!(sum(c, "mq_recv", None)["calls"], cw["calls"].as_u64().unwrap(), "{t}");
            assert_eq!(run["path"]["metrics"]["kernel_copies_per_byte"].as_f64(), Some(2.0), "{t}");
            // Both ends count on one channel: the queue.
            let ch = |x: &Value, probe: &str| {
                x["observed"]["events"].as_array().unwrap().iter().find(|e| e["probe"] == probe).unwrap()["channel"]
                    .clone()
            };
            assert_eq!(ch(p, "mq_send"), ch(c, "mq_recv"), "{t}");
        }
    }
}

#[test]
fn kernel_mq_calls_agree_with_strace() {
    if !require_root("kernel_mq_calls_agree_with_strace") {
        return;
    }
    let (r, text) = run_under_strace(
        "mq_timedsend,mq_timedreceive,msgsnd,msgrcv",
        &["--transport", "mq,sysv-msg", "--total", "8MiB", "--msg-size", "4096"],
    );
    for run in r["runs"].as_array().unwrap() {
        let (send, recv) =
            if run["transport"] == "mq" { ("mq_timedsend", "mq_timedreceive") } else { ("msgsnd", "msgrcv") };
        let (p, c) = (process(run, "producer"), process(run, "consumer"));
        let (pp, cp) = (p["pid"].as_u64().unwrap(), c["pid"].as_u64().unwrap());
        let sent = strace_calls(&text, pp, send, "");
        assert!(sent > 2048, "{}: strace saw the sends ({sent})", run["transport"]);
        assert_eq!(sum(p, "mq_send", None)["calls"], sent, "{}", run["transport"]);
        assert_eq!(sum(c, "mq_recv", None)["calls"], strace_calls(&text, cp, recv, ""), "{}", run["transport"]);
    }
}

/// `ipctrace trace --save` of mq_pc with `args`: (the program's output, the report).
fn trace_mq_pc(args: &[&str]) -> (String, Value) {
    trace_saved(&[&[MQ_PC], args].concat())
}

/// The section of the queue (the one run whose transport is `t`).
fn queue_run<'a>(r: &'a Value, t: &str) -> &'a Value {
    let runs: Vec<&Value> = r["runs"].as_array().unwrap().iter().filter(|x| x["transport"] == t).collect();
    assert_eq!(runs.len(), 1, "one {t} channel: {:#}", r["overview"]["channels"]);
    runs[0]
}

fn field(out: &str, tag: &str, key: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(tag))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} of {tag} in {out:?}"))
}

#[test]
fn kernel_mq_handoff_and_queued_forced_both_ways() {
    if !require_root("kernel_mq_handoff_and_queued_forced_both_ways") {
        return;
    }
    for (t, extra) in [("mq", &[][..]), ("sysv-msg", &["--sysv"][..])] {
        // Each send only once the consumer is blocked in its receive: every message handed off.
        let mut args = vec!["--total", "64KiB", "--msg-size", "4096", "--handoff"];
        args.extend_from_slice(extra);
        let (out, r) = trace_mq_pc(&args);
        let n = field(&out, &format!("workload={t} role=producer"), "messages");
        assert_eq!(n, 16);
        let p = process(queue_run(&r, t), "producer");
        assert_eq!(sum(p, "mq_handoff", None)["calls"], n, "{t}: hand-offs == messages");
        assert_eq!(sum(p, "mq_queued", None)["calls"], 0, "{t}");
        // The consumer starts only once every message is queued: none handed off.
        // (8 messages of 1 KiB fit a POSIX queue of depth 10 and SysV's 16 KiB.)
        let mut args = vec!["--total", "8KiB", "--msg-size", "1024", "--queue-first"];
        args.extend_from_slice(extra);
        let (out, r) = trace_mq_pc(&args);
        let n = field(&out, &format!("workload={t} role=producer"), "messages");
        assert_eq!(n, 8);
        let p = process(queue_run(&r, t), "producer");
        assert_eq!(sum(p, "mq_handoff", None)["calls"], 0, "{t}: nobody was waiting");
        assert_eq!(sum(p, "mq_queued", None)["calls"], n, "{t}: queued == messages");
    }
}

#[test]
fn kernel_mq_priorities_arrive_in_order_and_are_counted() {
    if !require_root("kernel_mq_priorities_arrive_in_order_and_are_counted") {
        return;
    }
    for (t, extra) in [("mq", &[][..]), ("sysv-msg", &["--sysv"][..])] {
        let mut args = vec!["--total", "9KiB", "--msg-size", "1024", "--priorities", "3", "--queue-first"];
        args.extend_from_slice(extra);
        let (out, r) = trace_mq_pc(&args);
        assert_eq!(field(&out, "priorities role=consumer", "in_order"), 1, "{t}: {out}");
        let p = process(queue_run(&r, t), "producer");
        let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
        for e in p["observed"]["events"].as_array().unwrap().iter().filter(|e| e["probe"] == "mq_priority") {
            *seen.entry(e["sub"].as_str().unwrap().parse().unwrap()).or_default() += e["calls"].as_u64().unwrap();
        }
        // The program's priority p is SysV mtype 3 - p.
        let want: BTreeMap<u64, u64> = (0..3)
            .map(|pr| {
                let n = field(&out, "priorities role=producer", &format!("prio{pr}"));
                (if t == "mq" { pr } else { 3 - pr }, n)
            })
            .collect();
        assert_eq!(seen, want, "{t}: per-priority counts (SysV: mtype)");
        assert_eq!(want.values().sum::<u64>(), 9);
    }
    // The built-in transports with --mq-priorities: every message verified wherever the queue
    // put it, and the per-priority counts the kernel saw == the producer's own.
    let total = (2u64 << 20) + 100;
    let (code, r, stderr) = run_json(&[
        "--transport",
        &QUEUES.join(","),
        "--total",
        &total.to_string(),
        "--msg-size",
        "4096",
        "--mq-priorities",
        "3",
    ]);
    assert_eq!(code, 0, "{stderr}");
    for run in r["runs"].as_array().unwrap() {
        let rows: Vec<&Value> = run["agreement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["figure"].as_str().unwrap().starts_with("messages at priority"))
            .collect();
        assert_eq!(rows.len(), 3, "{}: {rows:?}", run["transport"]);
        for a in run["agreement"].as_array().unwrap() {
            assert_eq!(a["agrees"], true, "{}: {a}", run["transport"]);
        }
        assert_eq!(process(run, "consumer")["witness"]["verified_bytes"], total, "{}", run["transport"]);
    }
}

#[test]
fn kernel_mq_bad_input_is_exit_2_and_nothing_is_left() {
    if !require_root("kernel_mq_bad_input_is_exit_2_and_nothing_is_left") {
        return;
    }
    let before = sysv_queues();
    for args in [
        &["run", "--transport", "mq", "--msg-size", "64KiB"][..],
        &["run", "--transport", "sysv-msg", "--msg-size", "1MiB"][..],
        &["run", "--transport", "mq", "--mq-name", "no-slash"][..],
        &["run", "--transport", "pipe", "--mq-name", "/x"][..],
    ] {
        let out = ipctrace(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let line = first_err_line(&out);
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "one line: {line}");
        if args.contains(&"64KiB") {
            assert!(line.contains("8192 bytes") || line.contains("bytes, set by"), "the limit is named: {line}");
        }
    }
    // An existing queue name is refused, and left as it was.
    let name = format!("/ipctrace-test-{}", std::process::id());
    let c = std::ffi::CString::new(name.clone()).unwrap();
    // SAFETY: creating and later removing a queue of this test's own.
    let fd = unsafe {
        libc::mq_open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600, std::ptr::null_mut::<libc::mq_attr>())
    };
    assert!(fd >= 0, "mq_open: {}", std::io::Error::last_os_error());
    let out = ipctrace(&["run", "--transport", "mq", "--msg-size", "4096", "--total", "1MiB", "--mq-name", &name]);
    // SAFETY: closing and unlinking the test's queue; the unlink must succeed (it was left).
    let unlinked = unsafe {
        libc::close(fd);
        libc::mq_unlink(c.as_ptr())
    };
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(first_err_line(&out).contains("exists"), "{}", first_err_line(&out));
    assert_eq!(unlinked, 0, "the user's queue was not removed");
    // A given name is gone after the run.
    let out = ipctrace(&["run", "--transport", "mq", "--msg-size", "4096", "--total", "1MiB", "--mq-name", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // SAFETY: as above; ENOENT is expected.
    assert!(unsafe { libc::mq_unlink(c.as_ptr()) } != 0, "the queue name outlived the run");
    // SIGKILL of ipctrace mid-run: the SysV queue goes with its workloads.
    let mut child = Command::new(BIN)
        .args(["run", "--transport", "sysv-msg", "--total", "64GiB", "--msg-size", "4096"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while sysv_queues().len() <= before.len() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sysv_queues().len() > before.len(), "the run made its queue");
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = std::time::Instant::now();
    while sysv_queues() != before && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sysv_queues(), before, "no SysV queue left after SIGKILL of ipctrace");
}

#[test]
fn kernel_mq_attach_finds_both_queue_kinds_and_channel_takes_a_msqid() {
    if !require_root("kernel_mq_attach_finds_both_queue_kinds_and_channel_takes_a_msqid") {
        return;
    }
    use std::io::{BufRead, BufReader};
    for (kind, extra) in [("mqueue", &[][..]), ("sysv_msg", &["--sysv"][..])] {
        let mut args = vec!["--total", "8MiB", "--msg-size", "4096"];
        args.extend_from_slice(extra);
        let (prog, p, c) = start_held(MQ_PC, &args);
        let saved = std::env::temp_dir().join(format!("ipctrace-mq-attach-{}.json", std::process::id()));
        let mut at = Command::new(BIN)
            .args(["attach", "--pid", &p.to_string(), "--pid", &c.to_string(), "--save", &saved.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(at.stderr.take().unwrap());
        let mut l = String::new();
        while !l.contains("READY pids=") {
            l.clear();
            assert!(err.read_line(&mut l).unwrap() > 0, "attach ended before READY");
        }
        // SAFETY: releasing the program this test started.
        unsafe { libc::kill(p as i32, libc::SIGUSR1) };
        let out = prog.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(at.wait().unwrap().success());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let wrote = field(&stdout, "workload=", "bytes");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
        let rows: Vec<&Value> =
            r["overview"]["channels"].as_array().unwrap().iter().filter(|x| x["kind"] == kind).collect();
        assert_eq!(rows.len(), 1, "{kind}: {:#}", r["overview"]["channels"]);
        let row = rows[0];
        assert_eq!(row["writer"]["pid"], p);
        assert_eq!(row["reader"]["pid"], c);
        assert_eq!(row["bytes"], wrote, "{kind}: bytes == what the producer sent");
        if kind == "sysv_msg" {
            // --channel msq:ID picks the queue by its msqid.
            let msqid = row["ino"].as_u64().unwrap() & 0xffff_ffff;
            let shown = Command::new(BIN)
                .args([
                    "report",
                    &saved.to_string_lossy(),
                    "--format",
                    "markdown",
                    "--channel",
                    &format!("msq:{msqid}"),
                ])
                .output()
                .unwrap();
            assert!(shown.status.success());
            let text = String::from_utf8_lossy(&shown.stdout);
            // The sections shown in full: the queue's only (the overview still lists all).
            let heads: Vec<&str> = text.lines().filter(|l| l.starts_with("## ") && l.contains(" · ")).collect();
            assert!(heads.iter().any(|h| h.contains(&format!("SysV msq {msqid}"))), "{heads:?}");
            assert!(heads.iter().all(|h| !h.contains("anon pipe")), "{heads:?}");
        }
        let _ = std::fs::remove_file(&saved);
    }
}
