//! Kernel tests (root) for shared memory with more than two mappers and the notifications
//! between them: a POSIX segment mapped by three processes, one writing and waking the other
//! two (by SIGUSR1 to a reader asleep in epoll_wait on a signalfd, and by an eventfd); and a
//! MAP_SHARED|MAP_ANONYMOUS region inherited across fork.

mod common;

use common::*;
use serde_json::Value;

/// The program (see its header): three mappers of one segment and their notifications.
const PROGRAM: &str = include_str!("common/mappers.py");

fn fault_count(p: &Value) -> u64 {
    ["fault_user", "fault_kernel", "mm_fault"].iter().map(|f| sum(p, f, Some("shm"))["calls"]).sum()
}

#[test]
fn kernel_trace_three_mappers_and_their_notifications() {
    if !require_root("kernel_trace_three_mappers_and_their_notifications") {
        return;
    }
    let (stdout, r) = trace_python(PROGRAM);
    let said: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let who = |role: &str| said.iter().find(|x| x["role"] == role).unwrap_or_else(|| panic!("{role}: {said:?}"));
    let (w, s, e) = (who("writer"), who("signalfd"), who("eventfd"));
    let pid = |v: &Value| v["pid"].as_u64().unwrap();
    // One shared-memory channel with the three processes.
    let rows: Vec<&Value> =
        r["overview"]["channels"].as_array().unwrap().iter().filter(|c| c["kind"] == "shm").collect();
    assert_eq!(rows.len(), 1, "one segment: {rows:?}");
    let row = rows[0];
    let mut mappers: Vec<u64> = [&row["writer"], &row["reader"]]
        .into_iter()
        .chain(row["mappers"].as_array().unwrap())
        .filter_map(|e| e["pid"].as_u64())
        .collect();
    mappers.sort();
    let mut want = vec![pid(w), pid(s), pid(e)];
    want.sort();
    assert_eq!(mappers, want, "the three processes map it");
    // Each mapper's faults in the segment == what getrusage saw around its own touches.
    let run = r["runs"].as_array().unwrap().iter().find(|x| x["data_channel_ino"] == row["ino"]).unwrap();
    for me in [w, s, e] {
        let p = run["processes"].as_array().unwrap().iter().find(|p| p["pid"] == me["pid"]).expect("in the section");
        let (seen, own) = (fault_count(p), me["faults"].as_u64().unwrap());
        assert!(own > 0, "{me}: touched nothing");
        assert!(seen.abs_diff(own) <= (own / 50).max(2), "{me}: ipctrace saw {seen} faults in the segment");
    }
    let notes = r["overview"]["notifications"].as_array().unwrap();
    let id = &row["id"];
    // SIGUSR1 writer -> reader 1, as many as it sent, the sync of the segment.
    let sig = notes
        .iter()
        .find(|n| n["what"] == "SIGUSR1" && n["from"]["pid"] == w["pid"] && n["to"]["pid"] == s["pid"])
        .unwrap_or_else(|| panic!("SIGUSR1 from the writer: {notes:?}"));
    assert_eq!(sig["sent"], w["signals"]);
    assert_eq!(&sig["channel"], id);
    // Reader 1's signalfd: its reads and the epoll wake-ups that led to them.
    let sfd = notes
        .iter()
        .find(|n| n["what"].as_str().unwrap().starts_with("signalfd of") && n["to"]["pid"] == s["pid"])
        .unwrap_or_else(|| panic!("reader 1's signalfd: {notes:?}"));
    assert_eq!(sfd["read"], s["reads"]);
    assert_eq!(sfd["poll_wakeups"], s["wakeups"]);
    assert_eq!(&sfd["channel"], id, "its reads follow the writer's signals");
    // The eventfd the writer writes and reader 2 reads.
    let efd = notes
        .iter()
        .find(|n| n["what"].as_str().unwrap().starts_with("eventfd id ") && n["from"]["pid"] == w["pid"])
        .unwrap_or_else(|| panic!("the writer's eventfd: {notes:?}"));
    assert_eq!(efd["to"]["pid"], e["pid"]);
    assert_eq!(efd["sent"], w["writes"]);
    assert_eq!(efd["read"], e["reads"]);
    assert_eq!(efd["poll_wakeups"], e["wakeups"]);
    assert_eq!(&efd["channel"], id);
}

/// A parent and a forked child sharing a MAP_SHARED|MAP_ANONYMOUS region: one shared-memory
/// channel with both; the child's write faults == the pages, the parent's read faults fewer
/// (fault-around) but some.
#[test]
fn kernel_trace_shared_anonymous_mapping_is_one_channel() {
    if !require_root("kernel_trace_shared_anonymous_mapping_is_one_channel") {
        return;
    }
    let script = r#"
import mmap, os
N = 1024
m = mmap.mmap(-1, N * 4096)
pid = os.fork()
if pid == 0:
    for i in range(N):
        m[i * 4096] = 1
    os._exit(0)
os.waitpid(pid, 0)
print("child", pid, "sum", sum(m[i * 4096] for i in range(N)))
"#;
    let (stdout, r) = trace_python(script);
    assert!(stdout.contains("sum 1024"), "{stdout}");
    let child: u64 = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    let rows: Vec<&Value> =
        r["overview"]["channels"].as_array().unwrap().iter().filter(|c| c["kind"] == "shm").collect();
    assert_eq!(rows.len(), 1, "one shared region: {rows:?}");
    let row = rows[0];
    assert!(row["name"].as_str().unwrap().starts_with("shared anonymous mapping"), "{row}");
    let ends = [row["writer"]["pid"].as_u64(), row["reader"]["pid"].as_u64()];
    assert!(ends.contains(&Some(child)) && ends.iter().all(|p| p.is_some()), "parent and child: {row}");
    let run = r["runs"].as_array().unwrap().iter().find(|x| x["data_channel_ino"] == row["ino"]).unwrap();
    let p = run["processes"].as_array().unwrap().iter().find(|p| p["pid"] == child).unwrap();
    let faults = fault_count(p);
    assert!(faults.abs_diff(1024) <= 20, "the child's write faults {faults} vs 1024 pages");
}

/// Signals sent while one of the same number is pending coalesce: the report counts them as
/// such (signal_generate's result), and the negative control (each one taken before the next
/// is sent) has none.
#[test]
fn kernel_trace_coalesced_signals_are_counted() {
    if !require_root("kernel_trace_coalesced_signals_are_counted") {
        return;
    }
    // The child blocks SIGUSR1 and SIGUSR2; the parent sends 5 SIGUSR1 at once (1 pending, 4
    // coalesced), then 3 SIGUSR2 one at a time, each taken by sigwait before the next.
    let script = r#"
import os, signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
rd, wr = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(wr)
    os.read(rd, 1)
    signal.sigwait({signal.SIGUSR1})
    for _ in range(3):
        signal.sigwait({signal.SIGUSR2})
        os.kill(os.getppid(), signal.SIGUSR2)
    os._exit(0)
os.close(rd)
for _ in range(5):
    os.kill(pid, signal.SIGUSR1)
os.write(wr, b"x")
for _ in range(3):
    os.kill(pid, signal.SIGUSR2)
    signal.sigwait({signal.SIGUSR2})
os.waitpid(pid, 0)
print("child", pid)
"#;
    let (stdout, r) = trace_python(script);
    let child: u64 = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    let notes = r["overview"]["notifications"].as_array().unwrap();
    let to_child = |sig: &str| {
        notes
            .iter()
            .find(|n| n["what"] == sig && n["to"]["pid"] == child)
            .unwrap_or_else(|| panic!("{sig} to the child: {notes:?}"))
    };
    let usr1 = to_child("SIGUSR1");
    assert_eq!(usr1["sent"], 5);
    assert_eq!(usr1["coalesced"], 4, "{usr1}");
    let usr2 = to_child("SIGUSR2");
    assert_eq!(usr2["sent"], 3);
    assert!(usr2.get("coalesced").is_none_or(|c| c == 0), "taken one by one: {usr2}");
}

/// One process with a pipe and three /dev/shm objects it opens (once each) and maps; it fills
/// the first object's 1,024 pages. Its page allocations name no channel, yet they are the
/// segment's shmem pages (the process has a pipe too, and other objects); and each object
/// counts the one openat that opened it, not the process's three.
const SEGMENTS_AND_A_PIPE: &str = r#"
import os, mmap
r, w = os.pipe()
os.write(w, b"x" * 1000); os.read(r, 1000)
maps = []
for i in range(3):
    path = f"/dev/shm/ipctrace-test-{os.getpid()}-{i}"
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    os.ftruncate(fd, 4 << 20); maps.append(mmap.mmap(fd, 4 << 20)); os.close(fd)
    os.unlink(path)
pages = 0
for i in range(0, 4 << 20, 4096):
    maps[0][i] = 1; pages += 1
for m in maps[1:]:
    m[0] = 1
os.write(w, b"y" * 10); os.read(r, 10)
print(f"segs pid={os.getpid()} pages={pages} opens_each=1", flush=True)
"#;

#[test]
fn kernel_trace_shm_pages_and_opens_are_each_segment_s_own() {
    if !require_root("kernel_trace_shm_pages_and_opens_are_each_segment_s_own") {
        return;
    }
    let (stdout, r) = trace_python(SEGMENTS_AND_A_PIPE);
    let line = stdout.lines().find(|l| l.starts_with("segs")).unwrap_or_else(|| panic!("{stdout}"));
    let field = |k: &str| -> u64 {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap().parse().unwrap()
    };
    let runs: Vec<&Value> = r["runs"].as_array().unwrap().iter().filter(|x| x["transport"] == "shm").collect();
    assert_eq!(runs.len(), 3, "three segments: {:?}", r["overview"]["channels"]);
    let stage_note = |run: &Value, prefix: &str| -> String {
        let s =
            run["path"]["stages"].as_array().unwrap().iter().find(|s| s["name"].as_str().unwrap().starts_with(prefix));
        s.unwrap_or_else(|| panic!("{prefix} in {run}"))["note"].as_str().unwrap().to_string()
    };
    let mut filled = 0;
    for run in &runs {
        let p = run["processes"].as_array().unwrap().iter().find(|p| p["pid"] == field("pid")).unwrap();
        // Observed (the object's openat) against the program's own count.
        assert_eq!(sum(p, "shm_open", None)["calls"], field("opens_each"), "{run}");
        let note = stage_note(run, "first touch");
        let shmem: u64 = note
            .split("shmem pages allocated: ")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{note}"));
        if shmem > 1 {
            filled += 1;
            // The program's pages (a page allocation per first touch of a shmem page).
            assert!(
                shmem.abs_diff(field("pages")) <= field("pages") / 50,
                "{shmem} against {}: {note}",
                field("pages")
            );
        }
    }
    assert_eq!(filled, 1, "one segment filled");
}
