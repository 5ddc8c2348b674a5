//! Kernel tests (root) for Unix sockets in `attach` and `trace`, on programs ipctrace did not
//! start and Python programs no one here wrote the transport of: bytes per direction equal
//! what the programs say they wrote (their own counts, or `/proc/self/io` wchar deltas); an
//! end outside the targets is named, `--follow-peers` traces it; an fd passed with SCM_RIGHTS
//! (a memfd) is found as a shared-memory channel of its receiver; TCP over loopback is "not
//! analysed", never a Unix channel.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
};

use common::*;
use serde_json::Value;
use workloads::c_programs::UDS_PC;

fn python() -> String {
    system_python()
}

fn attach(pids: &[u32], extra: &[&str]) -> Child {
    attach_json(pids, extra)
}

fn report(out: Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON report: {e}"))
}

/// `key=value` words of the line of `out` that starts with `tag`.
fn fields(out: &str, tag: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no {tag} line in {out:?}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(m: &std::collections::HashMap<String, String>, k: &str) -> u64 {
    m[k].parse().unwrap_or_else(|_| panic!("{k} in {m:?}"))
}

/// The overview's channel rows of `kind` written by `writer`.
fn rows<'a>(r: &'a Value, kind: &str, writer: u64) -> Vec<&'a Value> {
    r["overview"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind && c["writer"]["pid"] == writer)
        .collect()
}

fn one_row<'a>(r: &'a Value, kind: &str, writer: u64, reader: u64) -> &'a Value {
    let all = rows(r, kind, writer);
    let found: Vec<&Value> = all.iter().copied().filter(|c| c["reader"]["pid"] == reader).collect();
    assert_eq!(found.len(), 1, "one {kind} channel {writer} -> {reader} in {:#}", r["overview"]["channels"]);
    found[0]
}

#[test]
fn kernel_attach_uds_pc_on_a_named_socket_counts_each_direction() {
    if !require_root("kernel_attach_uds_pc_on_a_named_socket_counts_each_direction") {
        return;
    }
    let path = std::env::temp_dir().join(format!("ipctrace-uds-{}.sock", std::process::id()));
    let total = (32u64 << 20) + 4097;
    let (child, p, c) = start_held(
        UDS_PC,
        &["--socket-path", &path.to_string_lossy(), "--total", &total.to_string(), "--msg-size", "65536"],
    );
    // The producer connects after the gate: a socket made while attached.
    let at = attach(&[p, c], &[]);
    // SAFETY: releasing the program this test started.
    unsafe { libc::kill(p as i32, libc::SIGUSR1) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let wrote = num(&fields(&stdout, "workload=unix-stream role=producer"), "bytes");
    let r = report(at.wait_with_output().unwrap());
    assert_eq!(wrote, total);
    let row = one_row(&r, "unix_stream", p as u64, c as u64);
    assert_eq!(row["bytes"], wrote, "{row:#}");
    assert!(!path.exists(), "the socket file is removed");
    // Nothing flowed the other way.
    assert!(rows(&r, "unix_stream", c as u64).iter().all(|x| x["bytes"] == 0), "{:#}", r["overview"]);
}

/// A server on a named socket: accepts one client, reads N bytes, answers M, lingers.
const SERVER: &str = r#"
import socket, sys, time
path, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); got = 0
while got < n:
    d = c.recv(65536)
    if not d: break
    got += len(d)
c.sendall(b"r" * m)
print(f"server got={got} sent={m}", flush=True)
time.sleep(1.0)
"#;

/// Its client: sends N bytes, reads M, lingers.
const CLIENT: &str = r#"
import socket, sys, time
path, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.socket(socket.AF_UNIX); c.connect(path)
c.sendall(b"q" * n); got = 0
while got < m:
    d = c.recv(65536)
    if not d: break
    got += len(d)
print(f"client sent={n} got={got}", flush=True)
time.sleep(1.0)
"#;

/// A Python server attached before its client connects; with `follow`, `--follow-peers`.
/// Returns (server pid, client pid, the programs' lines, the report).
fn server_and_client(follow: bool) -> (u64, u64, String, Value) {
    let py = python();
    let path = std::env::temp_dir().join(format!("ipctrace-py-{}-{follow}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (n, m) = (5_000_000u64 + 13, 700_001u64);
    let args = |s: &str| {
        vec!["-c".to_string(), s.to_string(), path.to_string_lossy().to_string(), n.to_string(), m.to_string()]
    };
    let mut server = Command::new(&py).args(args(SERVER)).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let extra: &[&str] = if follow { &["--follow-peers"] } else { &[] };
    let at = attach(&[server.id()], extra);
    let client = Command::new(&py).args(args(CLIENT)).stdout(Stdio::piped()).spawn().unwrap();
    let cpid = client.id() as u64;
    let cout = client.wait_with_output().unwrap();
    assert!(cout.status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(server.wait().unwrap().success());
    let _ = std::fs::remove_file(&path);
    let lines = format!("{rest}{}", String::from_utf8_lossy(&cout.stdout));
    (server.id() as u64, cpid, lines, report(at.wait_with_output().unwrap()))
}

#[test]
fn kernel_attach_one_end_names_the_other_and_follow_peers_traces_it() {
    if !require_root("kernel_attach_one_end_names_the_other_and_follow_peers_traces_it") {
        return;
    }
    for follow in [false, true] {
        let (s, c, lines, r) = server_and_client(follow);
        let srv = fields(&lines, "server");
        let cli = fields(&lines, "client");
        // client -> server: received by the attached server, every byte.
        let up = one_row(&r, "unix_stream", c, s);
        assert_eq!(up["bytes"], num(&cli, "sent"), "follow={follow}: {up:#}");
        assert_eq!(num(&srv, "got"), num(&cli, "sent"));
        // server -> client: sent by the attached server.
        let down = one_row(&r, "unix_stream", s, c);
        assert_eq!(down["bytes"], num(&srv, "sent"), "follow={follow}: {down:#}");
        let traced: Vec<u64> =
            r["overview"]["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
        if follow {
            assert_eq!(up["writer"]["external"], Value::Null, "the client is followed, not external: {up:#}");
            assert!(traced.contains(&c), "the client joined the targets: {traced:?}");
        } else {
            assert_eq!(up["writer"]["external"], true, "{up:#}");
            assert_eq!(up["writer"]["comm"], "python3", "{up:#}");
            assert!(!traced.contains(&c), "the client is not traced: {traced:?}");
        }
    }
}

/// multiprocessing.Pipe() (a socketpair) between a parent and a forked child, each way; each
/// side measures what it wrote by its /proc/self/io wchar (headers included).
const MP_PIPE: &str = r#"
import multiprocessing as mp, os
def wchar():
    for l in open("/proc/self/io"):
        if l.startswith("wchar:"): return int(l.split()[1])
def send(conn, n, fill):
    w0 = wchar()
    for size in [65536] * (n // 65536) + [n % 65536, 0]:
        conn.send_bytes(fill * size)
    return wchar() - w0
def drain(conn):
    got = 0
    while True:
        b = conn.recv_bytes()
        if not b: return got
        got += len(b)
def child(conn):
    got = drain(conn)
    wrote = send(conn, 3_000_017, b"c")
    print(f"child pid={os.getpid()} wrote={wrote} got={got}", flush=True)
if __name__ == "__main__":
    mp.set_start_method("fork")
    a, b = mp.Pipe()
    p = mp.Process(target=child, args=(b,)); p.start()
    wrote = send(a, 9_000_011, b"p")
    got = drain(a); p.join()
    print(f"parent pid={os.getpid()} wrote={wrote} got={got}", flush=True)
"#;

#[test]
fn kernel_trace_python_multiprocessing_pipe_bytes_per_direction() {
    if !require_root("kernel_trace_python_multiprocessing_pipe_bytes_per_direction") {
        return;
    }
    let (stdout, r) = trace_python(MP_PIPE);
    let (p, c) = (fields(&stdout, "parent"), fields(&stdout, "child"));
    assert_eq!(num(&c, "got"), 9_000_011);
    let (pp, cp) = (num(&p, "pid"), num(&c, "pid"));
    let down = one_row(&r, "unix_stream", pp, cp);
    assert_eq!(down["bytes"], num(&p, "wrote"), "{down:#}");
    let up = one_row(&r, "unix_stream", cp, pp);
    assert_eq!(up["bytes"], num(&c, "wrote"), "{up:#}");
    // The headers are on the wire too: more than the payload, by 4 bytes a message.
    assert!(num(&p, "wrote") > 9_000_011);
    // The terminal report names both ends of both directions.
    for (w, r) in [(pp, cp), (cp, pp)] {
        assert!(stdout.contains(&format!("python3 {w} -> python3 {r}")), "{stdout}");
    }
}

/// A parent passes a memfd to its child over a socketpair (SCM_RIGHTS); the child maps it,
/// writes one byte per page, and says how many pages it touched.
const MEMFD: &str = r#"
import socket, os, mmap, time
size = 1 << 20
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    _, fds, _, _ = socket.recv_fds(b, 16, 1)
    m = mmap.mmap(fds[0], size)
    pages = 0
    for i in range(0, size, 4096):
        m[i] = 7; pages += 1
    print(f"child pid={os.getpid()} pages={pages}", flush=True)
    time.sleep(0.6); m.close(); b.send(b"done"); os._exit(0)
b.close()
fd = os.memfd_create("ipctrace-ring"); os.ftruncate(fd, size)
socket.send_fds(a, [b"fd"], [fd])
a.recv(4); os.waitpid(pid, 0)
print(f"parent pid={os.getpid()}", flush=True)
"#;

#[test]
fn kernel_trace_memfd_passed_over_a_socket_is_a_shm_channel() {
    if !require_root("kernel_trace_memfd_passed_over_a_socket_is_a_shm_channel") {
        return;
    }
    let (stdout, r) = trace_python(MEMFD);
    let (pp, c) = (num(&fields(&stdout, "parent"), "pid"), fields(&stdout, "child"));
    let cp = num(&c, "pid");
    let shm: Vec<&Value> = r["overview"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "shm" && x["name"].as_str().unwrap().contains("memfd:ipctrace-ring"))
        .collect();
    assert_eq!(shm.len(), 1, "the memfd is a shm channel: {:#}", r["overview"]["channels"]);
    assert!([&shm[0]["writer"]["pid"], &shm[0]["reader"]["pid"]].contains(&&Value::from(cp)), "{:#}", shm[0]);
    // The passing: from the parent, to the child, naming that channel and the socket.
    let passes = r["overview"]["fd_passes"].as_array().expect("fd_passes");
    let pass = passes.iter().find(|x| x["kind"] == "shm").unwrap_or_else(|| panic!("{passes:#?}"));
    assert_eq!(pass["from"]["pid"], pp);
    assert_eq!(pass["to"]["pid"], cp);
    assert_eq!(pass["channel"], shm[0]["id"]);
    assert_eq!(pass["times"], 1);
    // The child's writes fault the pages in: one fault per page it touched.
    let run = &r["runs"][shm[0]["id"].as_u64().unwrap() as usize - 1];
    let child = run["processes"].as_array().unwrap().iter().find(|x| x["pid"] == cp).expect("the child's end");
    let faults = sum(child, "fault_user", Some("shm"))["calls"]
        + sum(child, "fault_kernel", Some("shm"))["calls"]
        + sum(child, "mm_fault", Some("shm"))["calls"];
    assert_eq!(faults, num(&c, "pages"), "child faults in the memfd");
    // Negative control: the socket that carried it is a unix channel, the memfd is not.
    assert_ne!(pass["via_channel"], pass["channel"]);
}

/// A client sends N bytes to its parent over TCP on 127.0.0.1.
const TCP: &str = r#"
import socket, os
n = 6_000_007
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
pid = os.fork()
if pid == 0:
    c = socket.create_connection(srv.getsockname()); c.sendall(b"t" * n); c.close()
    print(f"client pid={os.getpid()} sent={n}", flush=True); os._exit(0)
conn, _ = srv.accept(); got = 0
while True:
    d = conn.recv(65536)
    if not d: break
    got += len(d)
os.waitpid(pid, 0)
print(f"server pid={os.getpid()} got={got}", flush=True)
"#;

#[test]
fn kernel_trace_tcp_loopback_is_not_analysed_and_not_a_unix_channel() {
    if !require_root("kernel_trace_tcp_loopback_is_not_analysed_and_not_a_unix_channel") {
        return;
    }
    // Exit 0 (trace_python asserts it), not "no IPC observed" (3): the loopback traffic is named.
    let (stdout, r) = trace_python(TCP);
    let (cl, sv) = (fields(&stdout, "client"), fields(&stdout, "server"));
    assert_eq!(num(&sv, "got"), num(&cl, "sent"));
    let na = r["overview"]["not_analysed"].as_array().expect("not_analysed");
    assert_eq!(na.len(), 1, "{na:#?}");
    assert_eq!(na[0]["what"], "TCP loopback");
    assert_eq!(na[0]["bytes"], num(&cl, "sent"));
    let ends: Vec<u64> = na[0]["ends"].as_array().unwrap().iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert!(ends.contains(&num(&cl, "pid")) && ends.contains(&num(&sv, "pid")), "{ends:?}");
    // Never a unix channel: no socket channel carried the bytes.
    for c in r["overview"]["channels"].as_array().unwrap() {
        assert!(!c["kind"].as_str().unwrap().starts_with("unix") || c["bytes"].as_u64().unwrap() < 1000, "{c:#}");
    }
    assert!(stdout.contains("not analysed: ") && stdout.contains("over TCP loopback between"), "{stdout}");
}

/// A parent notifies its child through an eventfd (7 writes, 7 blocking reads), then with
/// three SIGUSR1; each side prints its own counts.
const NOTIFY: &str = r#"
import os, signal, time
efd = os.eventfd(0)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    got = 0
    def on(*_):
        global got
        got += 1
    signal.signal(signal.SIGUSR1, on)
    os.write(w, b"r")
    reads = 0
    for _ in range(7):
        os.eventfd_read(efd); reads += 1
    while got < 3:
        signal.pause()
    print(f"child pid={os.getpid()} reads={reads} signals={got}", flush=True)
    os._exit(0)
os.read(r, 1)
writes = kills = 0
for _ in range(7):
    os.eventfd_write(efd, 1); writes += 1; time.sleep(0.02)
for _ in range(3):
    os.kill(pid, signal.SIGUSR1); kills += 1; time.sleep(0.05)
os.waitpid(pid, 0)
print(f"parent pid={os.getpid()} writes={writes} kills={kills}", flush=True)
"#;

#[test]
fn kernel_trace_notifications_signals_and_eventfd() {
    if !require_root("kernel_trace_notifications_signals_and_eventfd") {
        return;
    }
    let (stdout, r) = trace_python(NOTIFY);
    let (p, c) = (fields(&stdout, "parent"), fields(&stdout, "child"));
    let (pp, cp) = (num(&p, "pid"), num(&c, "pid"));
    let notes = r["overview"]["notifications"].as_array().expect("notifications");
    let usr1: Vec<&Value> = notes.iter().filter(|n| n["what"] == "SIGUSR1").collect();
    assert_eq!(usr1.len(), 1, "{notes:#?}");
    assert_eq!((usr1[0]["from"]["pid"].as_u64(), usr1[0]["to"]["pid"].as_u64()), (Some(pp), Some(cp)));
    assert_eq!(usr1[0]["sent"], num(&p, "kills"), "signals == the sender's count");
    assert_eq!(num(&c, "signals"), num(&p, "kills"));
    let efd: Vec<&Value> = notes.iter().filter(|n| n["what"].as_str().unwrap().starts_with("eventfd")).collect();
    assert_eq!(efd.len(), 1, "{notes:#?}");
    assert_eq!(efd[0]["sent"], num(&p, "writes"), "eventfd writes == the writer's count");
    assert_eq!(efd[0]["read"], num(&c, "reads"), "eventfd reads == the reader's count");
    assert_eq!((efd[0]["from"]["pid"].as_u64(), efd[0]["to"]["pid"].as_u64()), (Some(pp), Some(cp)));
    assert!(stdout.contains("notification: SIGUSR1 ×3 from python3"), "{stdout}");
}

/// One process writes a pipe and reads it back (a self-pipe, as event loops use for wake-ups),
/// with a different size every call so that a doubled count cannot pass for the real one.
const SELF_PIPE: &str = r#"
import os
r, w = os.pipe()
wrote = got = calls = 0
for i in range(1, 101):
    wrote += os.write(w, b"x" * (100 + i)); got += len(os.read(r, 4096)); calls += 2
print(f"self pid={os.getpid()} wrote={wrote} got={got} calls={calls}", flush=True)
"#;

#[test]
fn kernel_trace_self_pipe_counts_each_byte_once() {
    if !require_root("kernel_trace_self_pipe_counts_each_byte_once") {
        return;
    }
    let (stdout, r) = trace_python(SELF_PIPE);
    let s = fields(&stdout, "self");
    let pid = num(&s, "pid");
    assert_eq!(num(&s, "wrote"), num(&s, "got"));
    let row = one_row(&r, "anon_pipe", pid, pid);
    // Observed (the channel row) against the program's own counts (the witness).
    assert_eq!(row["bytes"], num(&s, "wrote"), "{row:#}");
    assert_eq!(row["calls"], num(&s, "calls"), "{row:#}");
    assert_eq!(row["copies_per_byte"], 2.0, "one copy in and one out per byte: {row:#}");
}
