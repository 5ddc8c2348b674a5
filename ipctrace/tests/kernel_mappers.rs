//! Kernel tests (root) for shared memory with more than two mappers and the notifications
//! between them: a POSIX segment mapped by three processes, one writing and waking the other
//! two (by SIGUSR1 to a reader asleep in epoll_wait on a signalfd, and by an eventfd); and a
//! MAP_SHARED|MAP_ANONYMOUS region inherited across fork.

mod common;

use common::*;
use serde_json::Value;

/// The writer fills ROUNDS regions of the segment; after each it signals reader 1 (SIGUSR1,
/// taken through a signalfd the reader sleeps on in epoll_wait) and writes an eventfd reader 2
/// sleeps on. Each reader reads the region and acknowledges (SIGUSR2 / a second eventfd), so
/// no notification coalesces. Every process counts its own notifications, epoll wake-ups and
/// the faults getrusage saw around its own touches of the segment, and prints them as JSON.
const PROGRAM: &str = r#"
import ctypes, json, mmap, os, resource, select, signal, sys, time
NAME = "/dev/shm/ipctrace-mappers-%d" % os.getpid()
PAGES, ROUNDS, PAGE = 2048, 4, 4096
PER = PAGES // ROUNDS
libc = ctypes.CDLL(None, use_errno=True)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
efd, ack_efd = os.eventfd(0), os.eventfd(0)

SCRATCH = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE)

def say(d):
    # One write(2) per line: the three processes share stdout.
    os.write(1, (json.dumps(d) + "\n").encode())

def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def segment():
    while True:
        try:
            fd = os.open(NAME, os.O_RDWR)
            if os.fstat(fd).st_size == PAGES * PAGE:
                break
            os.close(fd)
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    m = mmap.mmap(fd, PAGES * PAGE)
    os.close(fd)
    return m

def touch(m, r, write):
    # The offsets are made before the count starts: the loop itself allocates nothing.
    offs = [i * PAGE for i in range(r * PER, (r + 1) * PER)]
    # The same steps on a private page first: the copy-on-write faults a forked interpreter
    # takes when it first touches its objects (refcounts) fall outside the count.
    for o in offs[:1]:
        SCRATCH[0] = 1
        SCRATCH[0]
    minflt()
    t0 = minflt()
    if write:
        for o in offs:
            m[o] = 1
    else:
        for o in offs:
            m[o]
    return minflt() - t0

def reader(kind):
    m = segment()
    ep = select.epoll()
    if kind == "signalfd":
        mask = (ctypes.c_ulong * 16)()
        libc.sigemptyset(ctypes.byref(mask))
        libc.sigaddset(ctypes.byref(mask), signal.SIGUSR1)
        fd = libc.signalfd(-1, ctypes.byref(mask), os.O_CLOEXEC)
    else:
        fd = efd
    ep.register(fd, select.EPOLLIN)
    faults = wakeups = reads = 0
    for r in range(ROUNDS):
        while not ep.poll():
            pass
        wakeups += 1
        os.read(fd, 128 if kind == "signalfd" else 8)
        reads += 1
        faults += touch(m, r, False)
        if kind == "signalfd":
            os.kill(WRITER, signal.SIGUSR2)
        else:
            os.eventfd_write(ack_efd, 1)
    say({"role": kind, "pid": os.getpid(), "faults": faults, "wakeups": wakeups, "reads": reads})

def writer(r1):
    fd = os.open(NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, PAGES * PAGE)
    m = mmap.mmap(fd, PAGES * PAGE)
    os.close(fd)
    faults = signals = writes = 0
    for r in range(ROUNDS):
        faults += touch(m, r, True)
        os.kill(r1, signal.SIGUSR1)
        signals += 1
        os.eventfd_write(efd, 1)
        writes += 1
        signal.sigwait({signal.SIGUSR2})
        os.eventfd_read(ack_efd)
    os.unlink(NAME)
    say({"role": "writer", "pid": os.getpid(), "faults": faults, "signals": signals, "writes": writes})

"#;

/// The program's main: the writer's pid reaches reader 1 through a pipe from the parent (not
/// a channel between two mappers).
const MAIN: &str = r#"
rd, wr = os.pipe()
r1 = os.fork()
if r1 == 0:
    os.close(wr)
    WRITER = int(os.read(rd, 16))
    os.close(rd)
    reader("signalfd")
    os._exit(0)
r2 = os.fork()
if r2 == 0:
    os.close(rd); os.close(wr)
    reader("eventfd")
    os._exit(0)
w = os.fork()
if w == 0:
    os.close(rd); os.close(wr)
    writer(r1)
    os._exit(0)
os.close(rd)
os.write(wr, str(w).encode())
os.close(wr)
for p in (r1, r2, w):
    os.waitpid(p, 0)
"#;

fn fault_count(p: &Value) -> u64 {
    ["fault_user", "fault_kernel", "mm_fault"].iter().map(|f| sum(p, f, Some("shm"))["calls"]).sum()
}

#[test]
fn kernel_trace_three_mappers_and_their_notifications() {
    if !require_root("kernel_trace_three_mappers_and_their_notifications") {
        return;
    }
    let script = format!("{PROGRAM}{MAIN}");
    let saved = std::env::temp_dir().join(format!("ipctrace-mappers-{}.json", std::process::id()));
    let out = std::process::Command::new(BIN)
        .args(["trace", "--save", &saved.to_string_lossy(), "--", &system_python(), "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let _ = std::fs::remove_file(&saved);
    let said: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
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
    let saved = std::env::temp_dir().join(format!("ipctrace-anon-{}.json", std::process::id()));
    let out = std::process::Command::new(BIN)
        .args(["trace", "--save", &saved.to_string_lossy(), "--", &system_python(), "-c", script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let _ = std::fs::remove_file(&saved);
    let stdout = String::from_utf8_lossy(&out.stdout);
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
