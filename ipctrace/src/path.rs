//! Builds the kernel data path of one channel from that run's observations and stacks (never
//! a template): the transport's own stages (through the registry), the hottest sampled paths,
//! and the comparison metrics. Also the helpers transports build their stages with; a stage
//! with no events says "not observed".

use ipctrace_common::{COPY_FRAME_PATTERNS, ProbeId};

use crate::{
    model::{Label, Metrics, Observed, PathModel, Process, StackCount, Stage, StageTime, hist_quantile, merge_hist},
    transport::{Ends, Family},
};

/// Kernel frames that do the copying, by family (names differ by CPU and kernel).
pub fn is_copy_frame(f: &str) -> bool {
    COPY_FRAME_PATTERNS.iter().any(|p| f.contains(p))
}

/// Page zeroing frames.
pub fn is_clear_frame(f: &str) -> bool {
    f.starts_with("clear_page") || f.contains("clear_user") || f.contains("folio_zero")
}

/// Stacks of `probe` whose frames satisfy `pred` (any frame).
pub fn stacks_with<'a>(
    o: &'a Observed,
    probe: ProbeId,
    pred: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a StackCount> + 'a {
    o.stacks_of(probe).filter(move |s| s.kernel.iter().any(|f| pred(f)))
}

/// The chain from the syscall entry to `leaf_pred`'s frame, in the most frequent stack of
/// `probes` that has it.
pub fn chain(o: &Observed, probes: &[ProbeId], leaf_pred: impl Fn(&str) -> bool) -> Option<String> {
    let s = o
        .stacks
        .iter()
        .filter(|s| probes.iter().any(|p| s.probe == p.name()) && s.kernel.iter().any(|f| leaf_pred(f)))
        .max_by_key(|s| s.count)?;
    let end = s.kernel.iter().position(|f| leaf_pred(f))?;
    let start = s
        .kernel
        .iter()
        .position(|f| f.starts_with("__x64_sys") || f.starts_with("ksys_") || f == "exc_page_fault")
        .unwrap_or(0);
    Some(s.kernel[start.min(end)..=end].join(" -> "))
}

/// The most frequent sampled kernel path of a process (outermost first), trimmed.
fn hottest(o: &Observed) -> Option<(String, u64, u64)> {
    let total: u64 = o.stacks_of(ProbeId::Sample).map(|s| s.count).sum();
    // Not a sample inside ipctrace's own programs (the tracing's cost, not the path).
    let s = o.stacks_of(ProbeId::Sample).filter(|s| !s.kernel.is_empty() && !s.in_bpf()).max_by_key(|s| s.count)?;
    let frames: Vec<&str> = s.kernel.iter().rev().take(8).map(String::as_str).collect();
    Some((frames.join(" <- "), s.count, total))
}

/// p50/p99 of a latency histogram.
pub fn latency(h: &[u64]) -> Option<StageTime> {
    Some(StageTime::Latency { p50_ns: hist_quantile(h, 0.5)?, p99_ns: hist_quantile(h, 0.99)? })
}

/// Merged histogram of `probe` over several processes.
pub fn hist_of(procs: &[&Observed], probe: ProbeId) -> Vec<u64> {
    let mut h = Vec::new();
    for o in procs {
        merge_hist(&mut h, &o.hist(probe));
    }
    h
}

/// A stage; observed when anything was counted (otherwise it says "not observed").
pub fn stage(
    name: impl Into<String>,
    depth: u8,
    count: u64,
    bytes: Option<u64>,
    time: Option<StageTime>,
    label: Option<Label>,
    note: Option<String>,
) -> Stage {
    let observed = count > 0 || bytes.is_some_and(|b| b > 0);
    Stage {
        name: name.into(),
        depth,
        count: observed.then_some(count),
        bytes: bytes.filter(|_| observed),
        time: time.filter(|_| observed),
        label: if observed { label } else { None },
        also: None,
        observed,
        note: if observed { note } else { Some("not observed".into()) },
    }
}

/// Share of a process's samples whose stack has a copy frame under a frame matching `under`.
pub fn copy_sample_share(o: &Observed, under: impl Fn(&str) -> bool) -> Option<(u64, u64)> {
    let total: u64 = o.stacks_of(ProbeId::Sample).map(|s| s.count).sum();
    if total == 0 {
        return None;
    }
    let hits: u64 = o
        .stacks_of(ProbeId::Sample)
        .filter(|s| {
            let u = s.kernel.iter().position(|f| under(f));
            let c = s.kernel.iter().rposition(|f| is_copy_frame(f));
            matches!((u, c), (Some(u), Some(c)) if c > u)
        })
        .map(|s| s.count)
        .sum();
    Some((hits, total))
}

pub fn pct(hits: u64, total: u64) -> String {
    format!("{:.1}% of {} samples", hits as f64 * 100.0 / total.max(1) as f64, total)
}

/// Wake-ups of `woken` whose waker was `waker`.
pub fn woken_by(woken: &Observed, waker: u32) -> u64 {
    woken.events.iter().filter(|o| o.probe == ProbeId::Wakeup.name() && o.waker == Some(waker)).map(|o| o.calls).sum()
}

fn hottest_stages(procs: &[&Process]) -> Vec<Stage> {
    procs
        .iter()
        .filter_map(|pr| {
            let (path, n, total) = hottest(&pr.observed)?;
            Some(Stage {
                name: format!("hottest kernel path of the {} (sampled)", pr.role),
                depth: 0,
                count: Some(n),
                bytes: None,
                time: None,
                label: Some(Label::Sampled),
                also: None,
                observed: true,
                note: Some(format!("{} · {}", path, pct(n, total))),
            })
        })
        .collect()
}

/// The role of a process that shares a channel besides its two ends (a shared segment's
/// third and further mappers).
pub const MAPPER: &str = "mapper";

/// A process ipctrace did not trace (an external peer): no events.
pub fn external(role: &str) -> Process {
    Process { pid: 0, role: role.into(), observed: Default::default(), witness: None, exit: None }
}

/// What a section's processes are: a `run`'s own pair (everything they did is the
/// transport's), or the processes of one channel `ino` among others (attach/trace: a process
/// may use several channels, so process-wide counts are not the channel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Run,
    Channel(u64),
}

/// Builds the path and metrics of one channel of family `f`.
pub fn build(f: &dyn Family, processes: &[Process], elapsed_ns: u64, scope: Scope) -> PathModel {
    // attach/trace: one end may be outside the targets (an external peer, with no events).
    let (ep, ec) = (external("producer"), external("consumer"));
    let p = processes.iter().find(|p| p.role == "producer").unwrap_or(&ep);
    let c = processes.iter().find(|p| p.role == "consumer").unwrap_or(&ec);
    if p.pid == 0 && c.pid == 0 {
        return PathModel::default();
    }
    let others: Vec<&Process> = processes.iter().filter(|x| x.role == MAPPER).collect();
    let ends = Ends { producer: p, consumer: c, others };
    let mut stages = f.stages(&ends);
    let present: Vec<&Process> = ends.all().collect();
    stages.extend(hottest_stages(&present));
    PathModel { stages, metrics: metrics(f, processes, c, elapsed_ns, scope), diagram: Some(f.diagram(&ends)) }
}

/// The least payload a per-MiB figure is given for: below it the figure extrapolates more
/// than 16 times (a 5-byte pipe of a traced script would show its processes' start-up faults
/// as hundreds of millions per MiB).
pub const PER_MIB_MIN_PAYLOAD: u64 = 64 << 10;

/// `n / mib`, or None without enough payload (`PER_MIB_MIN_PAYLOAD`).
fn per_mib(n: u64, payload: u64) -> Option<f64> {
    (payload >= PER_MIB_MIN_PAYLOAD).then(|| n as f64 / (payload as f64 / (1u64 << 20) as f64))
}

/// Each process of `all` once: both ends of a self-pipe (or a socket pair a process reads
/// and writes itself) are one process, whose events would otherwise count twice. External
/// ends (pid 0, no events) are all kept.
pub fn distinct(all: &[Process]) -> Vec<&Process> {
    let mut seen = std::collections::BTreeSet::new();
    all.iter().filter(|p| p.pid == 0 || seen.insert(p.pid)).collect()
}

/// Calls of `probes` on channel `ino` by `all` (each process once).
fn on_channel(all: &[Process], probes: &[ProbeId], ino: u64) -> u64 {
    distinct(all)
        .into_iter()
        .flat_map(|p| p.observed.events.iter())
        .filter(|e| probes.iter().any(|x| e.probe == x.name()) && e.channel.as_ref().is_some_and(|c| c.ino == ino))
        .map(|e| e.calls)
        .sum()
}

/// Faults on channel `ino`'s mapping; None for a channel without one.
fn channel_faults(f: &dyn Family, all: &[Process], ino: u64) -> Option<u64> {
    f.mapped().then(|| match on_channel(all, &[ProbeId::MmFault], ino) {
        0 => on_channel(all, &[ProbeId::FaultUser, ProbeId::FaultKernel], ino),
        mm => mm,
    })
}

fn metrics(f: &dyn Family, processes: &[Process], consumer: &Process, elapsed_ns: u64, scope: Scope) -> Metrics {
    let all = distinct(processes);
    // The consumer's verified bytes; a splicing consumer cannot verify, so its byte count; a
    // process ipctrace did not start has no witness: the bytes observed leaving the channel.
    let payload = match &consumer.witness {
        Some(w) => w.verified_bytes.unwrap_or(w.bytes),
        None => f.delivered(&consumer.observed).unwrap_or(0),
    };
    let calls = |probes: &[ProbeId]| all.iter().map(|p| p.observed.sum_of(probes).calls).sum::<u64>();
    let copies: u64 = all.iter().map(|p| f.copied_bytes(&p.observed)).sum();
    let copies_label = all.iter().find_map(|p| f.copies_label(&p.observed)).unwrap_or(Label::Derived);
    // A run's processes are its transport's; a channel's are not only the channel's: there its
    // faults are those on its mapping (a channel without one has none to show), its switches
    // the blocks in calls on it, and neither wake-ups (counted by waker, not by channel) nor a
    // CPU share (samples are tied to a channel only inside its calls, which are all kernel
    // time) are given.
    let (faults, switches, wakeups) = match scope {
        Scope::Run => {
            let mm = calls(&[ProbeId::MmFault]);
            let faults = if mm > 0 { mm } else { calls(&[ProbeId::FaultUser, ProbeId::FaultKernel]) };
            (Some(faults), calls(&[ProbeId::SchedOut]), Some(calls(&[ProbeId::Wakeup])))
        }
        Scope::Channel(ino) => {
            (channel_faults(f, processes, ino), on_channel(processes, &[ProbeId::Blocked], ino), None)
        }
    };
    let samples: u64 = all.iter().flat_map(|p| p.observed.stacks_of(ProbeId::Sample)).map(|s| s.count).sum();
    let ksamples: u64 = all
        .iter()
        .flat_map(|p| p.observed.stacks_of(ProbeId::Sample))
        .filter(|s| !s.kernel.is_empty())
        .map(|s| s.count)
        .sum();
    let (ut, st) = all
        .iter()
        .filter_map(|p| p.witness.as_ref())
        .fold((0, 0), |(u, s), w| (u + w.rusage_run.utime_us, s + w.rusage_run.stime_us));
    Metrics {
        payload_bytes: payload,
        kernel_copies_per_byte: (payload > 0).then(|| copies as f64 / payload as f64),
        copies_label,
        syscalls_per_mib: per_mib(calls(f.data_calls()), payload),
        faults_per_mib: faults.and_then(|n| per_mib(n, payload)),
        context_switches_per_mib: per_mib(switches, payload),
        wakeups_per_mib: wakeups.and_then(|n| per_mib(n, payload)),
        futex_waits_per_mib: per_mib(calls(&[ProbeId::FutexWait]), payload),
        kernel_cpu_share: (scope == Scope::Run && samples > 0).then(|| ksamples as f64 / samples as f64),
        kernel_cpu_share_witness: (ut + st > 0).then(|| st as f64 / (ut + st) as f64),
        throughput_bytes_per_s: (payload > 0 && elapsed_ns > 0).then(|| payload as f64 / (elapsed_ns as f64 / 1e9)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_families() {
        for f in [
            "_copy_from_iter",
            "copy_page_to_iter",
            "copy_user_enhanced_fast_string",
            "rep_movs_alternative",
            "__memcpy",
        ] {
            assert!(is_copy_frame(f), "{f}");
        }
        assert!(!is_copy_frame("anon_pipe_write"));
        assert!(is_clear_frame("clear_page_erms"));
    }

    #[test]
    fn stage_without_events_says_not_observed() {
        let s = stage("x", 0, 0, Some(0), Some(StageTime::Total { ns: 1 }), Some(Label::Exact), Some("n".into()));
        assert!(!s.observed);
        assert_eq!(s.note.as_deref(), Some("not observed"));
        assert_eq!(s.label, None);
        assert_eq!(s.time, None);
    }

    #[test]
    fn no_payload_no_ratio() {
        assert_eq!(per_mib(10, 0), None);
        assert_eq!(per_mib(10, 5), None, "5 bytes are no base for a per-MiB figure");
        assert_eq!(per_mib(1, 64 << 10), Some(16.0));
        assert_eq!(per_mib(10, 1 << 20), Some(10.0));
    }

    fn ev(probe: ProbeId, ino: Option<u64>, waker: Option<u32>, calls: u64) -> crate::model::Observation {
        serde_json::from_value(serde_json::json!({
            "probe": probe.name(), "sub": "x",
            "channel": ino.map(|i| serde_json::json!({"kind": "anon_pipe", "ino": i})),
            "waker": waker, "calls": calls, "bytes": 0, "errors": 0, "zero": 0, "eagain": 0,
            "etimedout": 0, "eintr": 0, "time_ns": 0, "latency_log2_ns": [], "label": "exact", "rule": ""
        }))
        .unwrap()
    }

    #[test]
    fn a_process_at_both_ends_counts_once() {
        // A self-pipe: one process wrote 1,000 bytes in 4 calls and read them in 4.
        let mut o = crate::model::Observed::default();
        for (probe, calls) in [(ProbeId::PipeWrite, 4), (ProbeId::PipeRead, 4)] {
            let mut e = ev(probe, Some(5), None, calls);
            e.bytes = 1000;
            e.sub = "anon_pipe".into();
            o.events.push(e);
        }
        let end = |role: &str| Process { pid: 7, role: role.into(), observed: o.clone(), witness: None, exit: None };
        let all = [end("producer"), end("consumer")];
        let f = crate::transport::family_of(ipctrace_common::ChannelKind::AnonPipe).unwrap();
        let m = metrics(f, &all, &all[1], 1, Scope::Channel(5));
        assert_eq!(m.payload_bytes, 1000);
        assert_eq!(m.kernel_copies_per_byte, Some(2.0), "one copy in, one out: not four");
        assert_eq!(distinct(&all).len(), 1);
        assert_eq!(
            distinct(&[external("producer"), external("consumer")]).len(),
            2,
            "external ends are not one process"
        );
    }

    #[test]
    fn a_channel_counts_only_what_is_its_own() {
        // Two processes on channel 5; each also uses channel 6 and was woken by a third (9).
        let proc_ = |pid: u32, other: u32| Process {
            pid,
            role: if pid == 1 { "producer" } else { "consumer" }.into(),
            observed: crate::model::Observed {
                events: vec![
                    ev(ProbeId::SchedOut, None, None, 100),
                    ev(ProbeId::Blocked, Some(5), None, 3),
                    ev(ProbeId::Blocked, Some(6), None, 40),
                    ev(ProbeId::Wakeup, None, Some(other), 2),
                    ev(ProbeId::Wakeup, None, Some(9), 50),
                    ev(ProbeId::FaultUser, None, None, 70),
                    ev(ProbeId::FaultUser, Some(5), None, 1),
                ],
                stacks: vec![],
            },
            witness: None,
            exit: None,
        };
        let all = [proc_(1, 2), proc_(2, 1)];
        let f = crate::transport::family_of(ipctrace_common::ChannelKind::AnonPipe).unwrap();
        let payload = 1u64 << 20;
        let mut c = all[1].clone();
        let mut read = ev(ProbeId::PipeRead, Some(5), None, 1);
        read.bytes = payload;
        read.sub = "anon_pipe".into();
        c.observed.events.push(read);
        let fake = |scope| metrics(f, &all, &c, 1, scope);
        let ch = fake(Scope::Channel(5));
        assert_eq!(ch.context_switches_per_mib, Some(6.0), "blocks in calls on channel 5 only");
        assert_eq!(ch.wakeups_per_mib, None, "wake-ups are counted by waker, not by channel");
        assert_eq!(ch.faults_per_mib, None, "a pipe has no mapping: no figure rather than an exact zero");
        let shm = crate::transport::family_of(ipctrace_common::ChannelKind::Shm).unwrap();
        assert_eq!(channel_faults(shm, &all, 5), Some(2), "faults on the channel's mapping only");
        assert_eq!(ch.kernel_cpu_share, None);
        // Both ends one process (a self-pipe): its blocks once.
        let same = [all[0].clone(), Process { role: "consumer".into(), ..all[0].clone() }];
        assert_eq!(on_channel(&same, &[ProbeId::Blocked], 5), 3);
        let run = fake(Scope::Run);
        assert_eq!(run.context_switches_per_mib, Some(200.0));
        assert_eq!(run.wakeups_per_mib, Some(104.0));
        assert_eq!(run.faults_per_mib, Some(142.0));
    }

    #[test]
    fn the_hottest_path_is_never_the_tracing_itself() {
        let st = |frames: &[&str], count| crate::model::StackCount {
            probe: ProbeId::Sample.name().into(),
            channel: None,
            count,
            time_ns: 0,
            kernel: frames.iter().map(|f| f.to_string()).collect(),
            user: false,
            label: Label::Sampled,
        };
        let o = crate::model::Observed {
            events: vec![],
            stacks: vec![
                st(
                    &[
                        "do_syscall_64",
                        "syscall_trace_enter",
                        "bpf_trace_run2",
                        "bpf_prog_a37f_raw_sys_enter",
                        "read_tsc",
                    ],
                    9,
                ),
                st(&["do_syscall_64", "ksys_write", "anon_pipe_write"], 5),
            ],
        };
        assert!(o.stacks[0].in_bpf() && !o.stacks[1].in_bpf());
        let (path, n, total) = hottest(&o).unwrap();
        assert_eq!((path.as_str(), n, total), ("anon_pipe_write <- ksys_write <- do_syscall_64", 5, 14));
    }
}
