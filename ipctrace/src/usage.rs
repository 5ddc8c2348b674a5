//! Usage checks clap cannot express: ranges, conflicting options and the limits of this
//! machine (online CPUs, the perf sampling ceiling). They run before the privilege check and
//! before any tracing, so every user gets the same exit code 2 and one line saying what to fix.

use workloads::{size::format_size, transport::shm::Geometry};

use crate::cli::{Command, OutputArgs, ProbeArgs, RunArgs};

/// Largest message a producer writes at once (it keeps a pattern buffer of this size).
pub const MAX_MSG_SIZE: u64 = 1 << 30;
/// Largest shm ring (slots x slot stride): it lives in /dev/shm and is faulted in by the run.
pub const MAX_RING_BYTES: u64 = 1 << 30;
/// Most slots a ring may have.
pub const MAX_SLOTS: u64 = 1 << 16;
/// `--events-buffer` range (a BPF ring buffer is a power of two of pages, charged to the memcg).
pub const EVENTS_BUFFER_RANGE: (u64, u64) = (4096, 256 << 20);
/// Longest sweep point.
pub const MAX_SWEEP_MS: u64 = 600_000;

/// Checks the whole command line; Err is the one-line message for exit code 2.
pub fn check(cmd: &Command) -> Result<(), String> {
    match cmd {
        Command::Run(a) => check_run(a),
        Command::Attach(a) => {
            if a.pids.contains(&0) {
                return Err("--pid 0 is not a process; give the PID of a running process".into());
            }
            check_probes(&a.probes)?;
            check_outputs(&a.output, Some(&a.probes))
        }
        Command::Trace(a) => {
            check_probes(&a.probes)?;
            check_outputs(&a.output, Some(&a.probes))
        }
        Command::Probes(a) => check_probes(&a.probes),
        Command::Report(a) => check_outputs(&a.output, None),
        Command::Completions { .. } | Command::Manpage | Command::Workload(_) | Command::Gate { .. } => Ok(()),
    }
}

fn check_run(a: &RunArgs) -> Result<(), String> {
    if a.total == 0 {
        return Err("--total must be at least 1 byte".into());
    }
    if a.msg_size == 0 {
        return Err("--msg-size must be at least 1 byte".into());
    }
    if a.msg_size > MAX_MSG_SIZE {
        return Err(format!(
            "--msg-size {} is above the limit of {}",
            format_size(a.msg_size),
            format_size(MAX_MSG_SIZE)
        ));
    }
    if let Some(v) = &a.cpus {
        if v.len() != 2 {
            return Err("--cpus takes two CPU numbers: producer,consumer (e.g. 0,1; 0,0 for the same CPU)".into());
        }
        let online = online_cpus()?;
        if let Some(c) = v.iter().find(|c| !online.contains(&(**c as u32))) {
            return Err(format!("--cpus: CPU {c} is not online (online: {})", ranges(&online)));
        }
    }
    if a.sweep && !(1..=MAX_SWEEP_MS).contains(&a.sweep_ms) {
        return Err(format!("--sweep-ms must be between 1 and {MAX_SWEEP_MS}"));
    }
    if a.ring.slots == Some(0) || a.ring.slots.is_some_and(|s| s > MAX_SLOTS) {
        return Err(format!("--slots must be between 1 and {MAX_SLOTS}"));
    }
    if a.ring.slot_size == Some(0) {
        return Err("--slot-size must be at least 1 byte".into());
    }
    let shm: Vec<_> = a.transports().into_iter().filter(|t| t.is_shm()).collect();
    if !shm.is_empty() {
        // The sweep's largest message decides the ring of a sweep.
        let msg = if a.sweep { *workloads::sweep::SIZES.iter().max().unwrap_or(&a.msg_size) } else { a.msg_size };
        if a.ring.slot_size.is_some_and(|s| s > MAX_RING_BYTES) {
            return Err(format!("--slot-size is above the ring limit of {}", format_size(MAX_RING_BYTES)));
        }
        let g = Geometry::new(msg as usize, a.ring.slot_size.map(|s| s as usize), a.ring.slots.map(|s| s as usize))
            .map_err(|e| e.to_string())?;
        let ring = (g.slots * g.stride()) as u64;
        if ring > MAX_RING_BYTES {
            return Err(format!(
                "the shm ring would take {} ({} slots of {}); the limit is {}: lower --msg-size, --slot-size or --slots",
                format_size(ring),
                g.slots,
                format_size(g.slot_size as u64),
                format_size(MAX_RING_BYTES)
            ));
        }
    } else if a.ring.slot_size.is_some() || a.ring.slots.is_some() || a.ring.populate || a.ring.spin > 0 {
        return Err("--slot-size, --slots, --spin and --populate apply to the shm transports only".into());
    }
    if a.splice_consumer && !a.transports().iter().any(|t| t.can_splice()) {
        return Err("--splice-consumer applies to the pipe and fifo transports only".into());
    }
    if a.sendfile_producer && !a.transports().iter().any(|t| t.can_sendfile()) {
        return Err("--sendfile-producer applies to the unix-stream transport only".into());
    }
    if let Some(p) = &a.socket_path {
        if !a.transports().iter().any(|t| t.is_socket()) {
            return Err("--socket-path applies to the unix-socket transports only".into());
        }
        if !p.starts_with('@') && std::fs::symlink_metadata(p).is_ok() {
            return Err(format!("--socket-path {p} exists; give a path that does not (it is created and removed)"));
        }
    }
    if let Some(n) = &a.mq_name {
        if !a.transports().iter().any(|t| t.is_posix_mq()) {
            return Err("--mq-name applies to the mq transport only".into());
        }
        if !n.starts_with('/') || n.len() < 2 || n[1..].contains('/') || n.len() > 255 {
            return Err(format!("--mq-name {n:?}: a POSIX queue name is /NAME (one leading slash, no other)"));
        }
        if mq_exists(n) {
            return Err(format!(
                "--mq-name {n}: the message queue exists; give a name that does not (it is created and removed)"
            ));
        }
    }
    if let Some(n) = a.mq_priorities {
        if !a.transports().iter().any(|t| t.is_queue()) {
            return Err("--mq-priorities applies to the mq and sysv-msg transports only".into());
        }
        if !(1..=32).contains(&n) {
            return Err(format!("--mq-priorities {n}: give 1 to 32 priorities"));
        }
        if a.msg_size < 8 {
            return Err(
                "--mq-priorities needs --msg-size of at least 8 (each message carries its sequence number)".into()
            );
        }
    }
    if let Some(d) = a.mq_depth {
        if !a.transports().iter().any(|t| t.is_posix_mq()) {
            return Err("--mq-depth applies to the mq transport only".into());
        }
        let (max, why) = workloads::transport::mq::max_depth();
        if d == 0 || d > max {
            return Err(format!("--mq-depth {d} is outside 1..={max} (set by {why})"));
        }
    }
    // Message transports carry a message whole or refuse it: a size above the limit is a
    // usage error (a sweep marks those points n/a instead).
    if !a.sweep {
        for t in a.transports() {
            if let Some(why) = a.too_big(t) {
                return Err(why);
            }
        }
    }
    check_probes(&a.probes)?;
    check_outputs(&a.output, Some(&a.probes))
}

/// Whether POSIX message queue `name` exists (opening it for nothing: a queue another user
/// owns exists too).
fn mq_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else { return false };
    // SAFETY: mq_open without O_CREAT; the descriptor is closed at once.
    let fd = unsafe { libc::mq_open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
}

fn check_probes(p: &ProbeArgs) -> Result<(), String> {
    let (lo, hi) = EVENTS_BUFFER_RANGE;
    if !(lo..=hi).contains(&p.events_buffer) {
        return Err(format!("--events-buffer must be between {} and {}", format_size(lo), format_size(hi)));
    }
    if let Some(max) = max_sample_rate()
        && p.sample_hz > max
    {
        return Err(format!(
            "--sample-hz {} is above this kernel's limit of {max} (kernel.perf_event_max_sample_rate)",
            p.sample_hz
        ));
    }
    Ok(())
}

fn check_outputs(o: &OutputArgs, probes: Option<&ProbeArgs>) -> Result<(), String> {
    if probes.is_some_and(|p| p.sampling_hz() == 0) {
        for (flag, set) in [("--flamegraph", o.flamegraph.is_some()), ("--folded", o.folded.is_some())] {
            if set {
                return Err(format!(
                    "{flag} draws the sampled stacks, but sampling is off (--sample-hz 0 or --without sampling)"
                ));
            }
        }
    }
    let mut seen: Vec<&std::path::Path> = Vec::new();
    let events = probes.and_then(|p| p.events.as_deref());
    let perfetto = probes.and_then(|p| p.perfetto.as_deref());
    for p in [o.save.as_deref(), o.html.as_deref(), o.folded.as_deref(), o.flamegraph.as_deref(), events, perfetto]
        .into_iter()
        .flatten()
    {
        if seen.contains(&p) {
            return Err(format!("{} is given for two outputs; each output needs its own file", p.display()));
        }
        seen.push(p);
    }
    Ok(())
}

fn online_cpus() -> Result<Vec<u32>, String> {
    aya::util::online_cpus().map_err(|(f, e)| format!("cannot read the online CPUs ({f}): {e}"))
}

/// `0-3,6` style.
fn ranges(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    out.join(",")
}

fn max_sample_rate() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn usage(args: &[&str]) -> Result<(), String> {
        let mut full = vec!["ipctrace"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        check(&cli.command)
    }

    #[test]
    fn limits_and_conflicts_are_usage_errors() {
        for (args, want) in [
            (&["run", "--total", "0"][..], "--total"),
            (&["run", "--msg-size", "0"], "--msg-size"),
            (&["run", "--msg-size", "2GiB"], "limit"),
            (&["run", "--cpus", "0"], "two CPU numbers"),
            (&["run", "--cpus", "4095,4095"], "not online"),
            (&["run", "--slots", "0"], "--slots"),
            (&["run", "--slot-size", "0"], "--slot-size"),
            (&["run", "--slot-size", "8GiB"], "limit"),
            (&["run", "--transport", "pipe", "--slots", "4"], "shm transports only"),
            (&["run", "--transport", "shm-futex", "--splice-consumer"], "pipe and fifo"),
            (&["run", "--sweep", "--sweep-ms", "0"], "--sweep-ms"),
            (&["run", "--events-buffer", "64GiB"], "--events-buffer"),
            (&["run", "--sample-hz", "0", "--flamegraph", "f.svg"], "--sample-hz 0"),
            (&["run", "--sample-hz", "0", "--folded", "f"], "--sample-hz 0"),
            (&["run", "--save", "x", "--html", "x"], "two outputs"),
            (&["attach", "-p", "0"], "--pid 0"),
        ] {
            let e = usage(args).expect_err(&format!("{args:?} is refused"));
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(usage(&["run"]).is_ok());
        assert!(usage(&["run", "--cpus", "0,0", "--transport", "shm-futex", "--slots", "4"]).is_ok());
        assert!(usage(&["attach", "-p", "1", "--duration", "1s"]).is_ok());
    }

    #[test]
    fn cpu_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(ranges(&[1]), "1");
    }
}
