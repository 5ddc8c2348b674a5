//! Kernel tests (root) for the Unix-socket transports: bytes and calls per direction equal the
//! workloads' own counters and strace of the same run; 2.0 copies per byte; controls no
//! template passes: sendfile moves pages (1.0 copies per byte), a short MSG_TRUNC read copies
//! what fits (the copy counts, not the return value), a pipe and a socket of one process stay
//! apart (bytes and samples), untargeted socket traffic changes nothing.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;
use workloads::transport::Transport;

fn sockets() -> Vec<Transport> {
    Transport::ALL.into_iter().filter(|t| t.is_socket()).collect()
}

fn agree_all(run: &Value) {
    let a = run["agreement"].as_array().unwrap();
    assert!(a.iter().any(|x| x["figure"] == "send bytes") && a.iter().any(|x| x["figure"] == "recv calls"), "{a:?}");
    for x in a {
        assert_eq!(x["agrees"], true, "{} observed vs witness: {x}", run["transport"]);
    }
}

#[test]
fn kernel_socket_every_transport_is_exact_and_copies_twice() {
    if !require_root("kernel_socket_every_transport_is_exact_and_copies_twice") {
        return;
    }
    let names: Vec<&str> = sockets().iter().map(|t| t.name()).collect();
    for (total, msg) in [(64u64 << 20, "64KiB"), ((8u64 << 20) + 4097, "4097")] {
        let (code, r, stderr) =
            run_json(&["--transport", &names.join(","), "--total", &total.to_string(), "--msg-size", msg]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(r["loss"]["events"], 0);
        for run in r["runs"].as_array().unwrap() {
            agree_all(run);
            let p = process(run, "producer");
            let c = process(run, "consumer");
            assert_eq!(sum(p, "sock_send", None)["bytes"], total, "{}", run["transport"]);
            assert_eq!(sum(c, "sock_recv", None)["bytes"], total, "{}", run["transport"]);
            // Copies: out of the skb, as the copy tracepoint saw them.
            assert_eq!(sum(c, "skb_copy_out", None)["bytes"], total, "{}", run["transport"]);
            let copies = run["path"]["metrics"]["kernel_copies_per_byte"].as_f64().unwrap();
            assert_eq!(copies, 2.0, "{}", run["transport"]);
            // The direction's id is the receiving socket: both ends count on it.
            let ino = |x: &Value, probe: &str| {
                x["observed"]["events"].as_array().unwrap().iter().find(|e| e["probe"] == probe).unwrap()["channel"]["ino"]
                    .clone()
            };
            assert_eq!(ino(p, "sock_send"), ino(c, "sock_recv"), "one channel per direction");
            assert_eq!(ino(c, "sock_recv"), run["data_channel_ino"]);
        }
    }
}

#[test]
fn kernel_socket_calls_agree_with_strace() {
    if !require_root("kernel_socket_calls_agree_with_strace") {
        return;
    }
    let (r, text) = run_under_strace(
        "sendto,recvfrom",
        &["--transport", "unix-stream,unix-dgram", "--total", "16MiB", "--msg-size", "4096"],
    );
    for run in r["runs"].as_array().unwrap() {
        let p = process(run, "producer");
        let c = process(run, "consumer");
        let (pp, cp) = (p["pid"].as_u64().unwrap(), c["pid"].as_u64().unwrap());
        assert_eq!(sum(p, "sock_send", None)["calls"], strace_calls(&text, pp, "sendto", "4,"), "{}", run["transport"]);
        assert_eq!(
            sum(c, "sock_recv", None)["calls"],
            strace_calls(&text, cp, "recvfrom", "4,"),
            "{}",
            run["transport"]
        );
    }
}

#[test]
fn kernel_socket_sendfile_moves_pages_and_msg_trunc_counts_the_copy() {
    if !require_root("kernel_socket_sendfile_moves_pages_and_msg_trunc_counts_the_copy") {
        return;
    }
    let (code, r, stderr) =
        run_json(&["--transport", "unix-stream", "--sendfile-producer", "--total", "64MiB", "--msg-size", "64KiB"]);
    assert_eq!(code, 0, "{stderr}");
    let run = &r["runs"][0];
    agree_all(run);
    let copies = run["path"]["metrics"]["kernel_copies_per_byte"].as_f64().unwrap();
    assert!((copies - 1.0).abs() < 0.01, "sendfile: {copies} copies per byte");
    assert_eq!(sum(process(run, "producer"), "sock_sendfile", None)["bytes"], 64 << 20);
    // A datagram consumer reading 1000 of every 4096 bytes: 1000 bytes copied per datagram.
    let (code, r, stderr) =
        run_json(&["--transport", "unix-dgram", "--total", "4MiB", "--msg-size", "4096", "--recv-buffer", "1000"]);
    assert_eq!(code, 0, "{stderr}");
    let run = &r["runs"][0];
    let c = process(run, "consumer");
    let msgs = c["witness"]["messages"].as_u64().unwrap();
    assert_eq!(msgs, 1024);
    assert_eq!(sum(c, "skb_copy_out", None)["bytes"], 1000 * msgs, "the copy, not the return value");
    assert_eq!(sum(c, "sock_recv", None)["bytes"], 4 << 20, "recv returned each datagram's length");
    agree_all(run);
}

/// One process writes a pipe and a socket at once (a reader thread per channel on the other
/// side): each channel's bytes are exact and its samples hold no frame of the other.
#[test]
fn kernel_socket_a_pipe_and_a_socket_of_one_process_stay_apart() {
    if !require_root("kernel_socket_a_pipe_and_a_socket_of_one_process_stay_apart") {
        return;
    }
    let (np, ns) = (30_000_000u64, 50_000_000u64);
    let py = format!(
        r#"
import os, socket, threading
a, b = socket.socketpair()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    a.close(); os.close(w)
    def drain(read):
        while read(65536):
            pass
    t = threading.Thread(target=drain, args=(lambda n: os.read(r, n),))
    t.start()
    drain(b.recv)
    t.join()
    os._exit(0)
b.close(); os.close(r)
chunk = b"x" * 65536
sent_p = sent_s = 0
while sent_p < {np} or sent_s < {ns}:
    if sent_p < {np}:
        sent_p += os.write(w, chunk[: min(65536, {np} - sent_p)])
    if sent_s < {ns}:
        sent_s += a.send(chunk[: min(65536, {ns} - sent_s)])
os.close(w); a.close()
os.waitpid(pid, 0)
"#
    );
    let saved = std::env::temp_dir().join(format!("ipctrace-sockpipe-{}.json", std::process::id()));
    let out = Command::new(BIN)
        .args(["trace", "--sample-hz", "999", "--save", &saved.to_string_lossy(), "--", "python3", "-c", &py])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let _ = std::fs::remove_file(&saved);
    let rows = r["overview"]["channels"].as_array().unwrap();
    let row = |kind: &str| rows.iter().position(|c| c["kind"] == kind && c["bytes"].as_u64() > Some(0)).unwrap();
    let (pi, si) = (row("anon_pipe"), row("unix_stream"));
    assert_eq!(rows[pi]["bytes"], np, "the pipe's bytes");
    assert_eq!(rows[si]["bytes"], ns, "the socket's bytes");
    let frames = |i: usize| -> Vec<String> {
        r["runs"][i]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| stacks(p, "sample"))
            .flat_map(|(f, _)| f)
            .collect()
    };
    let (pipe_frames, sock_frames) = (frames(pi), frames(si));
    assert!(!pipe_frames.iter().any(|f| f.starts_with("unix_")), "socket frames in the pipe's samples");
    assert!(
        !sock_frames.iter().any(|f| f.contains("pipe_write") || f.contains("pipe_read")),
        "pipe frames in the socket's"
    );
    assert!(sock_frames.iter().any(|f| f.starts_with("unix_stream")), "the socket's own calls were sampled");
}

#[test]
fn kernel_socket_untargeted_traffic_is_not_counted() {
    if !require_root("kernel_socket_untargeted_traffic_is_not_counted") {
        return;
    }
    // Socket traffic of a process ipctrace does not trace, for the whole run.
    let mut noise = Command::new("python3")
        .args([
            "-c",
            "import socket,time\na,b=socket.socketpair()\nt=time.time()+20\nwhile time.time()<t:\n a.send(b'y'*4096); b.recv(4096)\n",
        ])
        .spawn()
        .unwrap();
    let (code, r, stderr) = run_json(&["--transport", "unix-stream,unix-seqpacket", "--total", "32MiB"]);
    let _ = noise.kill();
    let _ = noise.wait();
    assert_eq!(code, 0, "{stderr}");
    for run in r["runs"].as_array().unwrap() {
        agree_all(run);
        assert_eq!(run["channels"].as_array().unwrap().len(), 1, "only the workload's direction: {}", run["channels"]);
    }
}
