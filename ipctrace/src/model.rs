//! The report data model: what BPF observed (each figure with its label and rule) kept apart
//! from what the workloads witnessed about themselves. Built from a session snapshot by
//! `observe`; the path model (`path.rs`) and the renderers only read it.
//! `SCHEMA_VERSION` changes whenever a field changes meaning or disappears.

use std::collections::BTreeMap;

use ipctrace_common::{AggKey, AggVal, StackKey, StackVal, err, kind, loss, probe};
use serde::{Deserialize, Serialize};
use workloads::{spawn::Ended, witness::Witness};

use crate::{path::PathModel, probes::Choice};

pub const SCHEMA_VERSION: u32 = 2;

/// How a figure was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Counted at the kernel function (fentry/fexit, kprobe) or at the event's own tracepoint.
    Exact,
    /// Computed from tracepoint values by a stated rule.
    Derived,
    /// Statistical, from stack samples.
    Sampled,
}

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Derived => "derived",
            Self::Sampled => "sampled",
        }
    }
}

/// Why the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// Every workload finished its transfer.
    Completed,
    /// Ctrl-C / SIGTERM / SIGHUP.
    Interrupted,
    /// `--duration` elapsed.
    Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub ipctrace_version: String,
    pub kernel: String,
    pub command: String,
    pub ended_by: EndedBy,
    /// True when the report covers only part of what was asked (interrupted, duration).
    pub partial: bool,
    /// One line: which mechanisms measured this run and why.
    pub tier: String,
    /// The probe table as decided for this kernel.
    pub probes: Vec<Choice>,
    pub runs: Vec<TransportRun>,
    /// `--events`: the per-event stream's file and what it lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_stream: Option<crate::session::StreamSummary>,
    /// `run --sweep`: every transport at every message size (time-bounded, traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<SweepPoint>>,
    /// `trace`: how the traced command ended (None while it was still running at the stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_exit: Option<CommandExit>,
    pub loss: Loss,
}

/// How a traced command ended: its exit code, or the signal that killed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandExit {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// e.g. `SIGTERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// True when ipctrace ended it (Ctrl-C, SIGTERM or --duration reached ipctrace).
    pub stopped_by_ipctrace: bool,
}

impl Report {
    /// Parses a saved report; a file of another schema version is refused with the version
    /// named (exit code 2), as is anything that is not a report.
    pub fn from_json(text: &str, name: &str) -> anyhow::Result<Self> {
        use crate::exit::{Code, fail};
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| fail(Code::Usage, format!("{name} is not an ipctrace report: {e}")))?;
        match v.get("schema_version").and_then(|x| x.as_u64()) {
            Some(n) if n == SCHEMA_VERSION as u64 => {}
            Some(n) => {
                return Err(fail(
                    Code::Usage,
                    format!("{name} has schema_version {n}; this ipctrace reads {SCHEMA_VERSION}"),
                ));
            }
            None => return Err(fail(Code::Usage, format!("{name} is not an ipctrace report (no schema_version)"))),
        }
        serde_json::from_value(v).map_err(|e| fail(Code::Usage, format!("{name} is not an ipctrace report: {e}")))
    }
}

/// One point of a sweep: a transport at a message size, with its path metrics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub transport: String,
    pub msg_size: u64,
    /// Both workload processes exited cleanly.
    pub ok: bool,
    pub metrics: crate::path::Metrics,
}

/// One built-in workload run over one transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransportRun {
    pub transport: String,
    pub total: u64,
    pub msg_size: u64,
    /// Inode of the pipe or FIFO ipctrace created (none for shm: the producer creates it).
    pub data_channel_ino: Option<u64>,
    /// FIFO path or POSIX shm name.
    pub channel_path: Option<String>,
    /// From opening the start gate to the last workload's exit (wall clock, measured by ipctrace).
    pub elapsed_ns: u64,
    /// Every channel the targets used, as observed by BPF.
    pub channels: Vec<ChannelId>,
    /// attach/trace: which processes are on each end (`external peer` when not traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub processes: Vec<Process>,
    /// The kernel data path reconstructed from this run's events and stacks.
    pub path: PathModel,
    /// Observed figures against the processes' own counts.
    pub agreement: Vec<crate::agree::Agreement>,
    /// This run's kernel stacks merged into trees (CPU samples, blocked time, page allocations).
    #[serde(default)]
    pub call_trees: crate::calltree::CallTrees,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId {
    /// `anon_pipe`, `fifo` or `shm`.
    pub kind: String,
    pub ino: u64,
}

/// A target process: BPF's view and its own, side by side but never mixed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub role: String,
    pub observed: Observed,
    pub witness: Option<Witness>,
    /// How the process ended, with its wait4 rusage (also a witness).
    pub exit: Option<Ended>,
}

/// Everything BPF saw for one process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Observed {
    pub events: Vec<Observation>,
    /// Symbolized kernel stacks with their counts, per probe (sched_out, offcpu, wakeup, page_alloc, sample).
    pub stacks: Vec<StackCount>,
}

/// One aggregate: a probe's events for one (sub-key, channel) of a process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Observation {
    /// `pipe_write`, `pipe_read`, `splice_out`, `splice_in`, `vmsplice`, `futex_wait`,
    /// `futex_wake`, `fault_user`, `fault_kernel`, `mm_fault`, `page_alloc`, `sched_out`,
    /// `wakeup`, `shm_open`, `shm_ftruncate`, `shm_mmap`, `shm_munmap`, `shm_unlink`.
    pub probe: String,
    /// Channel kind or sub-key: `anon_pipe`, `fifo`, `shm`, `other`, `voluntary`, `involuntary`.
    pub sub: String,
    pub channel: Option<ChannelId>,
    /// WAKEUP: the waker's pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker: Option<u32>,
    pub calls: u64,
    /// Sum of positive return values (bytes; for futex_wake the waiters woken), bytes allocated or mapped.
    pub bytes: u64,
    pub errors: u64,
    /// Calls that returned 0 (EOF on read; woken on futex_wait; faults handled).
    pub zero: u64,
    pub eagain: u64,
    pub etimedout: u64,
    pub eintr: u64,
    pub time_ns: u64,
    /// log2 buckets: bucket i counts calls that took [2^i, 2^(i+1)) ns.
    pub latency_log2_ns: Vec<u64>,
    pub label: Label,
    pub rule: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackCount {
    /// `sched_out` is not kept; `offcpu` (voluntary switch, with time), `wakeup` (the waker's stack),
    /// `page_alloc`, `sample`.
    pub probe: String,
    pub count: u64,
    pub time_ns: u64,
    /// Kernel frames, outermost first (`entry_SYSCALL_64 ... leaf`); empty if not captured.
    pub kernel: Vec<String>,
    /// True when the sample also had a user stack (user frames are not symbolized yet).
    pub user: bool,
    pub label: Label,
}

/// Everything the programs had to drop. `events`: events not counted (figures are low);
/// `stacks`: events counted without their stack (only stack-based stages are affected);
/// `stream`: events missing from the `--events` file only.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Loss {
    pub counters: BTreeMap<String, u64>,
    pub events: u64,
    pub stacks: u64,
    #[serde(default)]
    pub stream: u64,
    pub total: u64,
}

pub fn probe_name(p: u16) -> &'static str {
    match p {
        probe::PIPE_WRITE => "pipe_write",
        probe::PIPE_READ => "pipe_read",
        probe::SPLICE_OUT => "splice_out",
        probe::SPLICE_IN => "splice_in",
        probe::VMSPLICE => "vmsplice",
        probe::FUTEX_WAIT => "futex_wait",
        probe::FUTEX_WAKE => "futex_wake",
        probe::FAULT_USER => "fault_user",
        probe::FAULT_KERNEL => "fault_kernel",
        probe::MM_FAULT => "mm_fault",
        probe::PAGE_ALLOC => "page_alloc",
        probe::SCHED_OUT => "sched_out",
        probe::WAKEUP => "wakeup",
        probe::SHM_OPEN => "shm_open",
        probe::SHM_FTRUNCATE => "shm_ftruncate",
        probe::SHM_MMAP => "shm_mmap",
        probe::SHM_MUNMAP => "shm_munmap",
        probe::SHM_UNLINK => "shm_unlink",
        probe::SAMPLE => "sample",
        probe::OFFCPU => "offcpu",
        probe::BLOCKED => "blocked",
        _ => "unknown",
    }
}

/// The logical probe (probe-table row) an aggregate comes from.
pub fn logical_probe(p: u16) -> &'static str {
    match p {
        probe::PIPE_WRITE => "pipe_write",
        probe::PIPE_READ => "pipe_read",
        probe::SPLICE_OUT | probe::SPLICE_IN | probe::VMSPLICE => "pipe_splice",
        probe::FUTEX_WAIT | probe::FUTEX_WAKE => "futex",
        probe::FAULT_USER | probe::FAULT_KERNEL | probe::MM_FAULT => "page_fault",
        probe::PAGE_ALLOC => "page_alloc",
        probe::SCHED_OUT | probe::OFFCPU | probe::BLOCKED => "sched_switch",
        probe::WAKEUP => "sched_wakeup",
        probe::SAMPLE => "cpu_sample",
        _ => "shm_setup",
    }
}

fn sub_name(p: u16, k: u16) -> &'static str {
    match (p, k) {
        (probe::SCHED_OUT, kind::VOLUNTARY) => "voluntary",
        (probe::SCHED_OUT, kind::INVOLUNTARY) => "involuntary",
        (probe::WAKEUP, _) => "waker",
        (_, kind::ANON_PIPE) => "anon_pipe",
        (_, kind::FIFO) => "fifo",
        (_, kind::SHM) => "shm",
        _ => "other",
    }
}

fn trim_hist(h: &[u64]) -> Vec<u64> {
    let end = h.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    h[..end].to_vec()
}

/// Turns the session's sums for `tgid` into labelled observations. `choices` gives each
/// figure its label and rule; `stack` resolves stack ids to symbolized kernel frames.
pub fn observe(
    tgid: u32,
    aggs: &BTreeMap<AggKey, AggVal>,
    stacks: &BTreeMap<StackKey, StackVal>,
    choices: &[Choice],
    stack: &mut dyn FnMut(i32) -> Vec<String>,
) -> Observed {
    let label_of = |p: u16| {
        let c = choices.iter().find(|c| c.probe == logical_probe(p));
        let chosen = c.and_then(|c| c.chosen.as_ref());
        (chosen.map_or(Label::Derived, |c| c.label), chosen.map_or(String::new(), |c| c.rule.clone()))
    };
    let events = aggs
        .range(
            AggKey { tgid, probe: 0, kind: 0, ino: 0 }..=AggKey {
                tgid,
                probe: u16::MAX,
                kind: u16::MAX,
                ino: u64::MAX,
            },
        )
        .map(|(k, v)| {
            let (label, rule) = label_of(k.probe);
            // BLOCKED packs the in-flight probe and the channel kind into `kind`.
            let (sub, chan_kind) = if k.probe == probe::BLOCKED {
                let inflight = k.kind / 16;
                (if inflight == 0 { "other" } else { probe_name(inflight) }, k.kind % 16)
            } else {
                (sub_name(k.probe, k.kind), k.kind)
            };
            let is_channel =
                matches!(chan_kind, kind::ANON_PIPE | kind::FIFO | kind::SHM) && k.probe != probe::SCHED_OUT;
            Observation {
                probe: probe_name(k.probe).into(),
                sub: sub.into(),
                channel: (is_channel && k.ino != 0)
                    .then(|| ChannelId { kind: sub_name(0, chan_kind).into(), ino: k.ino }),
                waker: (k.probe == probe::WAKEUP).then_some(k.ino as u32),
                calls: v.calls,
                bytes: v.bytes,
                errors: v.errors,
                zero: v.zero,
                eagain: v.err[err::EAGAIN],
                etimedout: v.err[err::ETIMEDOUT],
                eintr: v.err[err::EINTR],
                time_ns: v.time_ns,
                latency_log2_ns: trim_hist(&v.hist),
                label,
                rule,
            }
        })
        .collect();
    let stacks = stacks
        .range(
            StackKey { tgid, probe: 0, kind: 0, kstack: i32::MIN, ustack: i32::MIN }..=StackKey {
                tgid,
                probe: u16::MAX,
                kind: u16::MAX,
                kstack: i32::MAX,
                ustack: i32::MAX,
            },
        )
        .map(|(k, v)| StackCount {
            probe: probe_name(k.probe).into(),
            count: v.count,
            time_ns: v.time_ns,
            kernel: stack(k.kstack),
            user: k.ustack >= 0,
            // Samples, and block stacks (captured for one in BLOCK_STACK_EVERY explained blocks).
            label: if matches!(k.probe, probe::SAMPLE | probe::OFFCPU) { Label::Sampled } else { Label::Exact },
        })
        .collect();
    Observed { events, stacks }
}

pub fn loss_from(raw: &[u64]) -> Loss {
    let counters: BTreeMap<String, u64> =
        loss::NAMES.iter().zip(raw).map(|(n, v)| (n.replace([' ', '-'], "_"), *v)).collect();
    let stacks =
        [loss::STACK_FAILED, loss::STACK_COUNT_FULL].iter().map(|&i| raw.get(i as usize).copied().unwrap_or(0)).sum();
    let stream = raw.get(loss::RINGBUF_FULL as usize).copied().unwrap_or(0);
    let total: u64 = counters.values().sum();
    Loss { counters, events: total - stacks - stream, stacks, stream, total }
}

/// Sums over a process's observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum {
    pub calls: u64,
    pub bytes: u64,
    pub zero: u64,
    pub eagain: u64,
    pub etimedout: u64,
    pub eintr: u64,
    pub time_ns: u64,
}

impl Observed {
    /// Sum of every observation of `probe` whose sub-key is `sub` (None: any).
    pub fn sum(&self, probe: &str, sub: Option<&str>) -> Sum {
        self.events.iter().filter(|o| o.probe == probe && sub.is_none_or(|s| o.sub == s)).fold(
            Sum::default(),
            |a, o| Sum {
                calls: a.calls + o.calls,
                bytes: a.bytes + o.bytes,
                zero: a.zero + o.zero,
                eagain: a.eagain + o.eagain,
                etimedout: a.etimedout + o.etimedout,
                eintr: a.eintr + o.eintr,
                time_ns: a.time_ns + o.time_ns,
            },
        )
    }

    /// Merged latency histogram of `probe`.
    pub fn hist(&self, probe: &str) -> Vec<u64> {
        let mut h: Vec<u64> = Vec::new();
        for o in self.events.iter().filter(|o| o.probe == probe) {
            if h.len() < o.latency_log2_ns.len() {
                h.resize(o.latency_log2_ns.len(), 0);
            }
            for (a, b) in h.iter_mut().zip(&o.latency_log2_ns) {
                *a += b;
            }
        }
        h
    }

    pub fn label(&self, probe: &str) -> Option<Label> {
        self.events.iter().find(|o| o.probe == probe).map(|o| o.label)
    }
}

/// Quantile of a log2 histogram: the upper bound of the bucket holding it (ns).
pub fn hist_quantile(h: &[u64], q: f64) -> Option<u64> {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let target = (total as f64 * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in h.iter().enumerate() {
        acc += c;
        if acc >= target {
            return Some(1u64 << (i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_filtered_by_tgid_and_labelled() {
        let mut aggs = BTreeMap::new();
        let mut v = AggVal { calls: 3, bytes: 300, ..Default::default() };
        v.hist[4] = 3;
        aggs.insert(AggKey { tgid: 10, probe: probe::PIPE_WRITE, kind: kind::ANON_PIPE, ino: 77 }, v);
        aggs.insert(AggKey { tgid: 11, probe: probe::PIPE_READ, kind: kind::ANON_PIPE, ino: 77 }, v);
        let o = observe(10, &aggs, &BTreeMap::new(), &[], &mut |_| vec![]);
        assert_eq!(o.events.len(), 1);
        assert_eq!(o.events[0].probe, "pipe_write");
        assert_eq!(o.events[0].bytes, 300);
        assert_eq!(o.events[0].latency_log2_ns, vec![0, 0, 0, 0, 3]);
        assert_eq!(o.events[0].channel, Some(ChannelId { kind: "anon_pipe".into(), ino: 77 }));
        assert_eq!(o.sum("pipe_write", None).calls, 3);
        assert_eq!(o.sum("pipe_read", None).calls, 0);
    }

    #[test]
    fn quantiles() {
        assert_eq!(hist_quantile(&[0, 0, 0, 0, 3], 0.5), Some(32));
        assert_eq!(hist_quantile(&[1, 0, 0, 0, 99], 0.01), Some(2));
        assert_eq!(hist_quantile(&[], 0.5), None);
    }

    #[test]
    fn loss_sums() {
        let l = loss_from(&[1, 2, 3, 4, 0, 0, 0, 5]);
        assert_eq!(l.total, 15);
        assert_eq!(l.stacks, 4);
        assert_eq!(l.stream, 5);
        assert_eq!(l.events, 6);
        assert_eq!(l.counters["in_flight_map_full"], 1);
    }
}
