//! Kernel tests (root) for `attach` and `trace`: the seed's C programs and a shell pipeline
//! started outside ipctrace, released after its READY line; bytes per channel equal what the
//! programs wrote; futex and fault figures as for `run`; exit codes and clean Ctrl-C.

mod common;

use std::{
    process::{Child, Command},
    time::Duration,
};

use common::*;
use serde_json::Value;
use workloads::c_programs::{PIPE_PC, SHM_PC};

fn attach(pids: &[i32], extra: &[&str]) -> Child {
    let pids: Vec<u32> = pids.iter().map(|p| *p as u32).collect();
    attach_json(&pids, extra)
}

fn finish(child: Child) -> (i32, Value) {
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("attach printed no JSON: {e}"));
    (out.status.code().unwrap_or(-1), v)
}

/// A C program held at its gate: (child, producer pid, consumer pid).
fn start_c(prog: &str, args: &[&str]) -> (Child, i32, i32) {
    let (child, p, c) = start_held(prog, args);
    (child, p as i32, c as i32)
}

/// Runs a C program under `attach`: started at its gate, attached, released, both collected.
/// Returns (producer pid, consumer pid, the program's summary lines, the report).
fn attached_c_run(prog: &str, args: &[&str]) -> (i32, i32, Vec<std::collections::HashMap<String, String>>, Value) {
    let (child, p, c) = start_c(prog, args);
    let at = attach(&[p, c], &[]);
    // SAFETY: signalling the program this test started.
    unsafe { libc::kill(p, libc::SIGUSR1) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let (code, r) = finish(at);
    assert_eq!(code, 0);
    (p, c, summaries(&String::from_utf8_lossy(&out.stdout)), r)
}

fn summaries(out: &str) -> Vec<std::collections::HashMap<String, String>> {
    out.lines()
        .filter(|l| l.starts_with("workload="))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Channels that carried payload while traced.
fn run_with_pipe(r: &Value) -> Vec<&Value> {
    r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["path"]["metrics"]["payload_bytes"].as_u64().unwrap_or(0) > 0)
        .collect()
}

#[test]
fn kernel_attach_pipe_pc_bytes_per_channel() {
    if !require_root("kernel_attach_pipe_pc_bytes_per_channel") {
        return;
    }
    let total = (64u64 << 20) + 4097;
    let (p, c, s, r) = attached_c_run(PIPE_PC, &["--total", &total.to_string(), "--msg-size", "65536"]);
    let wrote: u64 = s.iter().find(|m| m["role"] == "producer").unwrap()["bytes"].parse().unwrap();
    let runs = run_with_pipe(&r);
    assert_eq!(runs.len(), 1, "one channel carried data");
    let run = runs[0];
    assert_eq!(process(run, "producer")["pid"], p);
    assert_eq!(process(run, "consumer")["pid"], c);
    assert_eq!(observed(process(run, "producer"), "write").1, wrote);
    assert_eq!(observed(process(run, "consumer"), "read").1, wrote);
    assert_eq!(wrote, total);
}

#[test]
fn kernel_attach_shm_pc_futex_and_faults() {
    if !require_root("kernel_attach_shm_pc_futex_and_faults") {
        return;
    }
    let (p, _, s, r) = attached_c_run(SHM_PC, &["--total", "64MiB", "--msg-size", "4096"]);
    let shm: Vec<&Value> = r["runs"].as_array().unwrap().iter().filter(|x| x["transport"] == "shm").collect();
    assert_eq!(shm.len(), 1, "one shm object");
    let run = shm[0];
    for m in &s {
        let pid: u64 = m["pid"].parse().unwrap();
        let p = run["processes"].as_array().unwrap().iter().find(|x| x["pid"] == pid).expect("both ends traced");
        let n = |k: &str| m[k].parse::<u64>().unwrap();
        assert_eq!(sum(p, "futex_wait", None)["calls"], n("futex_wait"), "futex_wait of {pid}");
        assert_eq!(sum(p, "futex_wait", None)["zero"], n("woken"), "woken of {pid}");
        assert_eq!(sum(p, "futex_wait", None)["eagain"], n("eagain"), "EAGAIN of {pid}");
        assert_eq!(sum(p, "futex_wake", None)["calls"], n("futex_wake"), "futex_wake of {pid}");
    }
    // The producer (it sized the object) touched every page once.
    let prod = process(run, "producer");
    assert_eq!(prod["pid"], p);
    let mapped = sum(prod, "shm_mmap", None)["bytes"];
    let pages = mapped / 4096;
    let faults = sum(prod, "fault_user", Some("shm"))["calls"]
        + sum(prod, "fault_kernel", Some("shm"))["calls"]
        + sum(prod, "mm_fault", Some("shm"))["calls"];
    assert!(pages > 0 && faults.abs_diff(pages) * 50 <= pages, "producer faults {faults} vs {pages} pages");
}

/// The C reference with --eventfd: each eventfd is one notification line whose writes, reads
/// and poll wake-ups equal the program's own counts, attributed to the shm segment as its
/// sync stage (the only data channel between the two processes).
#[test]
fn kernel_attach_shm_pc_eventfd_is_the_segments_sync_stage() {
    if !require_root("kernel_attach_shm_pc_eventfd_is_the_segments_sync_stage") {
        return;
    }
    let (p, c, s, r) = attached_c_run(SHM_PC, &["--eventfd", "--total", "64MiB", "--msg-size", "4096"]);
    let shm_row =
        r["overview"]["channels"].as_array().unwrap().iter().find(|x| x["kind"] == "shm").expect("the segment");
    let id = shm_row["id"].as_u64().unwrap();
    let by_pid = |pid: i32| s.iter().find(|m| m["pid"] == pid.to_string()).expect("a summary line");
    let n = |m: &std::collections::HashMap<String, String>, k: &str| m[k].parse::<u64>().unwrap();
    let notes: Vec<&Value> = r["overview"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["what"].as_str().unwrap().starts_with("eventfd id "))
        .collect();
    // The data eventfd (producer -> consumer) is written whenever the consumer waited; the
    // space one (consumer -> producer) only if the ring ever filled.
    let mut used = 0;
    for (writer, reader) in [(p, c), (c, p)] {
        let writes = n(by_pid(writer), "eventfd_write");
        let note = notes.iter().find(|x| x["from"]["pid"] == writer);
        let Some(note) = note else {
            assert_eq!(writes, 0, "{writer} wrote an eventfd no notification shows: {notes:?}");
            continue;
        };
        used += 1;
        assert_eq!(note["to"]["pid"], reader);
        assert_eq!(note["sent"], writes, "writes by {writer}");
        assert_eq!(note["read"], n(by_pid(reader), "eventfd_read"), "reads by {reader}");
        assert_eq!(note["poll_wakeups"], n(by_pid(reader), "ready"), "polls of {reader} that woke");
        assert_eq!(note["channel"], id, "the sync stage of the segment");
    }
    assert!(used >= 1 && notes.len() == used, "one line per eventfd used: {notes:?}");
    assert!(n(by_pid(c), "eventfd_read") > 0, "the consumer waited: the comparison says something");
    let run = r["runs"].as_array().unwrap().iter().find(|x| x["data_channel_ino"] == shm_row["ino"]).unwrap();
    let syncs = run["path"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"].as_str().unwrap().starts_with("sync: eventfd id ") && x["label"] == "derived");
    assert_eq!(syncs.count(), used, "each eventfd is a stage of the segment's path");
}

#[test]
fn kernel_attach_follows_a_stopped_shell_pipeline() {
    if !require_root("kernel_attach_follows_a_stopped_shell_pipeline") {
        return;
    }
    let n = 500u64;
    let sh = Command::new("sh")
        .args(["-c", &format!("kill -STOP $$; dd if=/dev/zero bs=64k count={n} 2>/dev/null | cat > /dev/null")])
        .spawn()
        .unwrap();
    let pid = sh.id() as i32;
    // Wait until the shell has stopped itself.
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .trim_start()
        .starts_with('T')
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let at = attach(&[pid], &[]);
    // SAFETY: continuing the shell this test started.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let mut sh = sh;
    assert!(sh.wait().unwrap().success());
    let (code, r) = finish(at);
    assert_eq!(code, 0);
    let runs = run_with_pipe(&r);
    let run = runs.iter().find(|x| x["description"].as_str().unwrap().contains("dd ")).expect("the dd | cat pipe");
    assert!(run["description"].as_str().unwrap().contains("-> cat "), "{}", run["description"]);
    assert_eq!(observed(process(run, "producer"), "write").1, n * 65536);
    assert_eq!(observed(process(run, "consumer"), "read").1, n * 65536);
}

#[test]
fn kernel_trace_shows_both_pipes_of_a_pipeline() {
    if !require_root("kernel_trace_shows_both_pipes_of_a_pipeline") {
        return;
    }
    let out_file = std::env::temp_dir().join(format!("ipctrace-trace-{}", std::process::id()));
    let out = Command::new(BIN)
        .args(["trace", "--format", "json", "--", "sh", "-c"])
        .arg(format!("seq 1 200000 | sort | uniq > {}", out_file.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&out_file);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let descs: Vec<String> = run_with_pipe(&r).iter().map(|x| x["description"].as_str().unwrap().to_string()).collect();
    assert_eq!(descs.len(), 2, "two pipes: {descs:?}");
    assert!(descs.iter().any(|d| d.contains("seq ") && d.contains("-> sort ")), "{descs:?}");
    assert!(descs.iter().any(|d| d.contains("sort ") && d.contains("-> uniq ")), "{descs:?}");
}

#[test]
fn kernel_attach_ctrl_c_reports_and_leaves_nothing() {
    if !require_root("kernel_attach_ctrl_c_reports_and_leaves_nothing") {
        return;
    }
    let before = snapshot();
    let mut load = Command::new("sh").args(["-c", "yes | cat > /dev/null"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The pipeline's processes (children of the shell) are the targets.
    let kids: Vec<i32> = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", load.id()))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "yes and cat");
    let at = attach(&kids, &[]);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGINT to the ipctrace this test started.
    unsafe { libc::kill(at.id() as i32, libc::SIGINT) };
    let (code, r) = finish(at);
    let _ = Command::new("pkill").args(["-P", &load.id().to_string()]).status();
    let _ = load.kill();
    let _ = load.wait();
    assert_eq!(code, 0, "Ctrl-C prints the report");
    assert_eq!(r["ended_by"], "interrupted");
    assert!(!run_with_pipe(&r).is_empty(), "the yes | cat pipe was seen");
    assert_nothing_left(&before, "attach + Ctrl-C");
}

#[test]
fn kernel_attach_target_errors_have_exit_code_3() {
    if !require_root("kernel_attach_target_errors_have_exit_code_3") {
        return;
    }
    let out = ipctrace(&["attach", "--pid", "999999999"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process with PID"));
    let out = ipctrace(&["attach", "--pid", "2"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel thread"));
    let mut sleeper = Command::new("sleep").arg("1").spawn().unwrap();
    let out = ipctrace(&["attach", "--pid", &sleeper.id().to_string()]);
    sleeper.wait().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no IPC observed"), "{err}");
}

/// A reader already blocked in read(2) when ipctrace attaches (its writer, not traced, waits
/// for SIGUSR1 and then writes): the read in flight at attach is counted at its exit, so the
/// reader's bytes are what it got, not that less its first read.
const BLOCKED_READER: &str = r#"
import os, signal, sys
r, w = os.pipe()
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
writer = os.fork()
if writer == 0:
    os.close(r)
    signal.sigwait([signal.SIGUSR1])
    for i in range(300):
        os.write(w, b"z" * 3001)
    os._exit(0)
os.close(w)
print(f"traced={os.getpid()} release={writer}", flush=True)
got = reads = 0
while True:
    b = os.read(r, 65536)
    reads += 1
    if not b:
        break
    got += len(b)
os.waitpid(writer, 0)
print(f"got={got} reads={reads}", flush=True)
"#;

/// `key=N` of a line the Python programs print.
fn field(line: &str, k: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{k} in {line:?}"))
}

/// Runs Python `script`, which prints `traced=PID release=PID` and blocks: attaches to the
/// traced one, sends SIGUSR1 to the other, and returns (the script's last line, the traced pid,
/// attach's report once its target has exited).
fn attach_to_blocked(script: &str) -> (String, u64, Value) {
    use std::io::BufRead;
    let mut py =
        Command::new(system_python()).args(["-c", script]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let (traced, release) = (field(&line, "traced"), field(&line, "release"));
    // The traced process is in its call (nothing has moved yet) when ipctrace attaches.
    std::thread::sleep(Duration::from_millis(300));
    let tracer = attach_json(&[traced as u32], &[]);
    assert_eq!(unsafe { libc::kill(release as i32, libc::SIGUSR1) }, 0);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(py.wait().unwrap().success());
    let o = tracer.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "attach ends with its target");
    (line, traced, serde_json::from_slice(&o.stdout).unwrap())
}

/// The busiest pipe row whose `end` ("reader" or "writer") is `pid`.
fn busiest_pipe<'a>(r: &'a Value, end: &str, pid: u64) -> &'a Value {
    r["overview"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c[end]["pid"] == pid && c["kind"] == "anon_pipe")
        .unwrap_or_else(|| panic!("a pipe with {end} {pid}: {:#}", r["overview"]["channels"]))
}

#[test]
fn kernel_attach_counts_the_read_in_flight_at_attach() {
    if !require_root("kernel_attach_counts_the_read_in_flight_at_attach") {
        return;
    }
    let (line, reader, r) = attach_to_blocked(BLOCKED_READER);
    let row = busiest_pipe(&r, "reader", reader);
    // Observed against the reader's own counts: every byte, every read (the last one, EOF, too).
    assert_eq!(row["bytes"], field(&line, "got"), "{row:#}");
    assert_eq!(field(&line, "got"), 300 * 3001);
    assert_eq!(row["calls"], field(&line, "reads"), "{row:#}");
}

/// A writer already blocked in one 1 MiB write(2) (the pipe full, its reader, not traced,
/// waiting for SIGUSR1) when ipctrace attaches: the write wakes and blocks again many times
/// before it returns, and is counted whole at its exit.
const BLOCKED_WRITER: &str = r#"
import os, signal
r, w = os.pipe()
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
reader = os.fork()
if reader == 0:
    os.close(w)
    signal.sigwait([signal.SIGUSR1])
    while os.read(r, 4096):
        pass
    os._exit(0)
os.close(r)
print(f"traced={os.getpid()} release={reader}", flush=True)
wrote = os.write(w, b"w" * (1 << 20))
wrote += os.write(w, b"v" * 1000)
os.close(w)
os.waitpid(reader, 0)
print(f"wrote={wrote} writes=2", flush=True)
"#;

#[test]
fn kernel_attach_counts_the_write_in_flight_that_blocks_again() {
    if !require_root("kernel_attach_counts_the_write_in_flight_that_blocks_again") {
        return;
    }
    let (line, writer, r) = attach_to_blocked(BLOCKED_WRITER);
    // The busiest (the table is sorted so): the data pipe, not the one its lines go to.
    let row = busiest_pipe(&r, "writer", writer);
    // Observed against the writer's own counts.
    assert_eq!(row["bytes"], field(&line, "wrote"), "{row:#}");
    assert_eq!(row["calls"], field(&line, "writes"), "{row:#}");
}

/// `trace` follows what the command leaves running (as `strace -f` does): a pipeline started
/// in the background after the shell exits is traced to its end, its bytes counted, and
/// nothing of the tree is left afterwards.
#[test]
fn kernel_trace_follows_what_the_command_left_running() {
    if !require_root("kernel_trace_follows_what_the_command_left_running") {
        return;
    }
    let before = snapshot();
    let (_, r) = trace_saved(&["sh", "-c", "(sleep 0.5; head -c 123457 /dev/zero | cat > /dev/null) & echo started"]);
    let rows: Vec<&Value> = r["overview"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["writer"]["comm"] == "head" && c["reader"]["comm"] == "cat")
        .collect();
    assert_eq!(rows.len(), 1, "{:#}", r["overview"]["channels"]);
    // What head wrote (its -c count) arrived, though the shell had exited long before.
    assert_eq!(rows[0]["bytes"], 123457);
    assert_eq!(r["command_exit"]["exit_code"], 0);
    assert_nothing_left(&before, "trace of a command that left a pipeline running");
}
