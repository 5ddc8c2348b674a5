//! Kernel tests (root) for the shared-memory transports: futex figures by result equal the
//! workload's own counters; faults on the shm mapping match the mapped pages; every process's
//! faults and switches match the kernel's accounting; shm-sem agrees with strace.

mod common;

use std::collections::HashMap;

use common::*;

#[test]
fn kernel_shm_futex_figures_equal_the_witness() {
    if !require_root("kernel_shm_futex_figures_equal_the_witness") {
        return;
    }
    let total = 256u64 << 20;
    let (code, r, stderr) =
        run_json(&["--transport", "shm-futex", "--total", &total.to_string(), "--msg-size", "4096"]);
    assert_eq!(code, 0, "{stderr}");
    let run = &r["runs"][0];
    for a in run["agreement"].as_array().unwrap() {
        assert_eq!(a["agrees"], true, "observed vs witness: {a}");
    }
    let figures: Vec<&str> =
        run["agreement"].as_array().unwrap().iter().map(|a| a["figure"].as_str().unwrap()).collect();
    for f in [
        "futex_wait calls",
        "futex_wait woken",
        "futex_wait EAGAIN",
        "futex_wake calls",
        "page faults (minor + major)",
        "context switches",
    ] {
        assert!(figures.contains(&f), "{f} compared");
    }
    let prod = process(run, "producer");
    let cons = process(run, "consumer");
    let w = &prod["witness"];
    // The consumer waits at 4 KiB: the comparison is not vacuous.
    assert!(cons["witness"]["futex"]["wait_calls"].as_u64().unwrap() > 0);
    assert_eq!(sum(cons, "futex_wait", None)["calls"], cons["witness"]["futex"]["wait_calls"].as_u64().unwrap());
    // The producer touches every page of the object once: faults in the mapping == pages (2%).
    let pages = w["shm"]["pages"].as_u64().unwrap();
    let faults = sum(prod, "fault_user", Some("shm"))["calls"]
        + sum(prod, "fault_kernel", Some("shm"))["calls"]
        + sum(prod, "mm_fault", Some("shm"))["calls"];
    assert!(faults.abs_diff(pages) * 50 <= pages, "producer shm faults {faults} vs {pages} pages");
    // shmem page allocations (stacks through shmem_*) == pages (2%).
    let shmem: u64 = run["processes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| stacks(p, "page_alloc"))
        .filter(|(f, _)| f.iter().any(|x| x.starts_with("shmem_")))
        .map(|(_, n)| n)
        .sum();
    assert!(shmem.abs_diff(pages) * 50 <= pages, "shmem page allocations {shmem} vs {pages} pages");
    // No byte went through a pipe.
    assert_eq!(run["path"]["metrics"]["kernel_copies_per_byte"], 0.0);
    assert_eq!(run["channels"].as_array().unwrap().iter().filter(|c| c["kind"] != "shm").count(), 0);
}

/// (pid -> [start, end) of the /dev/shm mapping) and futex (wait, wake) counts on addresses in
/// it, from an strace -f log.
fn strace_futex(log: &str) -> HashMap<u32, (u64, u64)> {
    let mut shm_fd: HashMap<u32, String> = HashMap::new();
    // An mmap of the shm fd whose result is still to come (strace split the line).
    let mut pending: HashMap<u32, u64> = HashMap::new();
    let mut open_pending: std::collections::HashSet<u32> = Default::default();
    let mut range: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut counts: HashMap<u32, (u64, u64)> = HashMap::new();
    let result_addr = |l: &str| {
        l.rsplit("= 0x").next().filter(|_| l.contains("= 0x")).and_then(|a| u64::from_str_radix(a.trim(), 16).ok())
    };
    for l in log.lines() {
        let Some((pid, rest)) = l.split_once(' ') else { continue };
        let Ok(pid) = pid.trim().parse::<u32>() else { continue };
        let rest = rest.trim();
        let fd_result = |l: &str| l.rsplit(") = ").next().filter(|_| l.contains(") = ")).map(|f| f.trim().to_string());
        if rest.starts_with("openat(") && rest.contains("\"/dev/shm/") {
            match fd_result(rest) {
                Some(fd) => {
                    shm_fd.insert(pid, fd);
                }
                None => {
                    open_pending.insert(pid);
                }
            }
        } else if rest.starts_with("<... openat resumed>") && open_pending.remove(&pid) {
            if let Some(fd) = rest.rsplit("= ").next() {
                shm_fd.insert(pid, fd.trim().to_string());
            }
        } else if rest.starts_with("mmap(") && rest.contains("MAP_SHARED") {
            let args: Vec<&str> = rest["mmap(".len()..].split(", ").collect();
            if args.len() >= 5 && shm_fd.get(&pid).is_some_and(|fd| args[4] == fd) {
                let len: u64 = args[1].parse().unwrap();
                match result_addr(rest) {
                    Some(addr) => {
                        range.insert(pid, (addr, addr + len));
                    }
                    None => {
                        pending.insert(pid, len);
                    }
                }
            }
        } else if rest.starts_with("<... mmap resumed>") {
            if let (Some(len), Some(addr)) = (pending.remove(&pid), result_addr(rest)) {
                range.insert(pid, (addr, addr + len));
            }
        } else if let Some(a) = rest.strip_prefix("futex(0x") {
            let addr = u64::from_str_radix(a.split(',').next().unwrap(), 16).unwrap();
            if range.get(&pid).is_some_and(|(s, e)| (*s..*e).contains(&addr)) {
                let c = counts.entry(pid).or_default();
                if rest.contains("FUTEX_WAKE") {
                    c.1 += 1;
                } else if rest.contains("FUTEX_WAIT") {
                    c.0 += 1;
                }
            }
        }
    }
    counts
}

/// glibc's semaphores do not say when they enter the kernel: strace on the same run is the
/// witness. Same run, also read/write counts of the pipe workload.
#[test]
fn kernel_shm_sem_and_pipe_agree_with_strace() {
    if !require_root("kernel_shm_sem_and_pipe_agree_with_strace") {
        return;
    }
    let log = std::env::temp_dir().join(format!("ipctrace-strace-{}.log", std::process::id()));
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,mmap,futex,read,write", "-o"])
        .arg(&log)
        .args([BIN, "run", "--format", "json", "--transport", "shm-sem,pipe", "--total", "16MiB", "--msg-size", "4096"])
        .output()
        .expect("strace (cargo xtask setup installs it)");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let straced = strace_futex(&text);
    let sem = &r["runs"][0];
    let mut total_waits = 0;
    for p in sem["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap() as u32;
        let (waits, wakes) = straced.get(&pid).copied().unwrap_or_default();
        assert_eq!(sum(p, "futex_wait", None)["calls"], waits, "futex waits of {pid} vs strace");
        assert_eq!(sum(p, "futex_wake", None)["calls"], wakes, "futex wakes of {pid} vs strace");
        total_waits += waits;
    }
    assert!(total_waits > 0, "the semaphores never slept: the comparison says nothing");
    // Pipe: the data fd is 4 in both role processes.
    let pipe = &r["runs"][1];
    for p in pipe["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap();
        let (call, op) = if p["role"] == "producer" { ("write(4,", "write") } else { ("read(4,", "read") };
        let n = text.lines().filter(|l| l.starts_with(&format!("{pid} ")) && l.contains(call)).count() as u64;
        assert_eq!(observed(p, op).0, n, "{op} calls of {pid} vs strace");
    }
}

/// shm-eventfd: eventfd writes and reads, the polls that waited for them and the wake-ups
/// attributed to the eventfd equal the workload's own counters; in the same run shm-futex
/// (the negative control) shows no eventfd or poll call at all.
#[test]
fn kernel_shm_eventfd_calls_equal_the_witness() {
    if !require_root("kernel_shm_eventfd_calls_equal_the_witness") {
        return;
    }
    let (code, r, stderr) =
        run_json(&["--transport", "shm-eventfd,shm-futex", "--total", "64MiB", "--msg-size", "4096"]);
    assert_eq!(code, 0, "{stderr}");
    let run = &r["runs"][0];
    assert_eq!(run["transport"], "shm-eventfd");
    for a in run["agreement"].as_array().unwrap() {
        assert_eq!(a["agrees"], true, "observed vs witness: {a}");
    }
    let figures: Vec<&str> =
        run["agreement"].as_array().unwrap().iter().map(|a| a["figure"].as_str().unwrap()).collect();
    for f in ["eventfd writes", "eventfd reads", "poll waits", "poll wake-ups followed by an eventfd read"] {
        assert_eq!(figures.iter().filter(|x| **x == f).count(), 2, "{f} compared for both processes");
    }
    let cons = process(run, "consumer");
    let prod = process(run, "producer");
    // At 4 KiB the consumer waits: the comparison is not vacuous.
    let reads = cons["witness"]["eventfd"]["reads"].as_u64().unwrap();
    assert!(reads > 0, "the consumer never waited");
    assert_eq!(sum(cons, "eventfd_read", None)["calls"], reads);
    assert_eq!(sum(prod, "eventfd_write", None)["calls"], prod["witness"]["eventfd"]["writes"].as_u64().unwrap());
    // The wake-ups are counted on the eventfd the consumer read, and that is the fd the
    // producer wrote.
    let ino = |p: &serde_json::Value, probe: &str| -> Vec<u64> {
        p["observed"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["probe"] == probe)
            .filter_map(|e| e["channel"]["ino"].as_u64())
            .collect()
    };
    let woke = ino(cons, "poll_wake");
    assert_eq!(woke.len(), 1, "one eventfd woke the consumer: {woke:?}");
    assert!(ino(prod, "eventfd_write").contains(&woke[0]), "the producer wrote that eventfd");
    // The stage says what woke the ring.
    let stages: Vec<&str> =
        run["path"]["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(stages.iter().any(|s| s.contains("eventfd write")), "{stages:?}");
    // Negative control: the futex ring in the same run made no eventfd call and was never
    // woken out of a poll (its only polls are zero-timeout checks of the peer's pidfd).
    let futex = &r["runs"][1];
    assert_eq!(futex["transport"], "shm-futex");
    for p in futex["processes"].as_array().unwrap() {
        for probe in ["eventfd_write", "eventfd_read", "poll_wake"] {
            assert_eq!(sum(p, probe, None)["calls"], 0, "{probe} in shm-futex");
        }
        let polls = sum(p, "poll_wait", None);
        assert_eq!(polls["zero"], polls["calls"], "shm-futex polls that returned ready");
    }
}
