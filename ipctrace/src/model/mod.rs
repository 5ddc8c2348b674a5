//! The report data model: what BPF observed (each figure with its label and rule) kept apart
//! from what the workloads witnessed about themselves, and the report's conclusions (the
//! comparison, the verdict, a sweep's crossovers) finished before any renderer sees it.
//! Depends on nothing above it in ipctrace (only `exit` for the error a bad file gets).
//! `SCHEMA_VERSION` changes whenever a field changes meaning or disappears.

pub mod agree;
pub mod calltree;
pub mod diagram;
pub mod overview;
pub mod path;
pub mod probe;
pub mod timeline;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use workloads::{spawn::Ended, witness::Witness};

pub use self::{
    agree::Agreement,
    calltree::CallTrees,
    path::{Comparison, Crossover, Histogram, Metrics, PathModel, Stage, StageTime},
    probe::Choice,
};

/// 3: stages have `depth` and structured `time`, labels are values; metrics without a
/// denominator are absent (never inf); the report holds its `comparison`, `verdict` and
/// `crossovers`; runs hold `description` and `histograms`; `command_exit` (trace);
/// `overview` (attach/trace); stacks name their `channel`.
pub const SCHEMA_VERSION: u32 = 4;

/// How a figure was measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Counted at the kernel function (fentry/fexit, kprobe) or at the event's own tracepoint.
    Exact,
    /// Computed from tracepoint values by a stated rule.
    #[default]
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

impl EndedBy {
    /// How the run ended, said to the reader.
    pub fn why(&self) -> &'static str {
        match self {
            EndedBy::Completed => "the run completed",
            EndedBy::Interrupted => "the run was interrupted (Ctrl-C or a signal)",
            EndedBy::Duration => "the run reached its --duration",
        }
    }
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
    /// attach/trace: the process tree and the channel table (rows in the order of `runs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overview: Option<overview::Overview>,
    /// One section per transport run (`run`), or per channel sorted by bytes (attach/trace).
    pub runs: Vec<TransportRun>,
    /// The runs side by side (runs that carried nothing are left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// One or two sentences computed from the comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// `--events`: the per-event stream's file and what it lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_stream: Option<StreamSummary>,
    /// `run --sweep`: every transport at every message size (time-bounded, traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<SweepPoint>>,
    /// `run --sweep`: where one transport overtakes another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crossovers: Vec<Crossover>,
    /// `trace`: how the traced command ended (None while it was still running at the stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_exit: Option<CommandExit>,
    pub loss: Loss,
    /// What each program cost in the kernel, when BPF statistics were enabled during the run
    /// (`sysctl kernel.bpf_stats_enabled=1`; `cargo xtask bench --overhead` enables them for
    /// its profile runs): programs that ran, by name. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub program_costs: Vec<ProgramStat>,
    /// `--perfetto`: the events, for the trace file (not part of the JSON).
    #[serde(skip)]
    pub timeline: Option<timeline::Timeline>,
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

/// What the `--events` stream delivered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamSummary {
    pub file: String,
    pub buffer_bytes: u32,
    pub written: u64,
    /// Events the ring buffer had no room for (they are still in the aggregates).
    pub lost: u64,
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
                    format!(
                        "{name} has schema_version {n}; this ipctrace reads {SCHEMA_VERSION} \
                         (re-record it, or render it with the ipctrace that wrote it)"
                    ),
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
    /// Why the point was not run (e.g. a datagram above what the socket takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
    pub metrics: Metrics,
}

/// One built-in workload run over one transport, or (attach/trace) one channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransportRun {
    /// The built-in transport (`pipe`, `shm-futex`, ...) or, for attach/trace, the channel
    /// family (`pipe`, `fifo`, `shm`).
    pub transport: String,
    /// The channel and its ends, e.g. `anon pipe ino 123 · producer 10 -> consumer 11`.
    pub description: String,
    pub total: u64,
    pub msg_size: u64,
    /// Inode of the data channel, when known.
    pub data_channel_ino: Option<u64>,
    /// FIFO path or POSIX shm name.
    pub channel_path: Option<String>,
    /// From opening the start gate to the last workload's exit (wall clock, measured by ipctrace).
    pub elapsed_ns: u64,
    /// Every channel the targets used, as observed by BPF.
    pub channels: Vec<ChannelId>,
    pub processes: Vec<Process>,
    /// The kernel data path reconstructed from this run's events and stacks.
    pub path: PathModel,
    /// Latency histograms worth showing (the transport decides which).
    #[serde(default)]
    pub histograms: Vec<Histogram>,
    /// Observed figures against the processes' own counts.
    pub agreement: Vec<Agreement>,
    /// This run's kernel stacks merged into trees (CPU samples, blocked time, page allocations).
    #[serde(default)]
    pub call_trees: CallTrees,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId {
    /// A `ChannelKind` name: `anon_pipe`, `fifo`, `shm`, ...
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
    /// Symbolized kernel stacks with their counts, per probe (offcpu, page_alloc, sample).
    pub stacks: Vec<StackCount>,
}

/// One aggregate: a probe's events for one (sub-key, channel) of a process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Observation {
    /// A `ProbeId` name.
    pub probe: String,
    /// Channel kind or sub-key: a `ChannelKind` name, `voluntary`, `involuntary`, `waker`;
    /// for `blocked`, the call in flight.
    pub sub: String,
    pub channel: Option<ChannelId>,
    /// WAKEUP: the waker's pid; SIGNAL: the sender's pid.
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
    /// Failed calls with any other errno.
    #[serde(default)]
    pub other_errors: u64,
    pub time_ns: u64,
    /// log2 buckets: bucket i counts calls that took [2^i, 2^(i+1)) ns.
    pub latency_log2_ns: Vec<u64>,
    pub label: Label,
    pub rule: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackCount {
    /// `offcpu` (voluntary switch, with time), `page_alloc`, `sample`.
    pub probe: String,
    /// The channel whose call the thread had in flight (None: the process's own time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
    pub count: u64,
    pub time_ns: u64,
    /// Kernel frames, outermost first (`entry_SYSCALL_64 ... leaf`); empty if not captured.
    pub kernel: Vec<String>,
    /// True when the sample also had a user stack. User stacks are not walked (they were
    /// never symbolized, and the walk was most of a sample's cost): false.
    pub user: bool,
    pub label: Label,
}

/// Everything the programs had to drop. `events`: events not counted (figures are low);
/// `stacks`: events counted without their stack (only stack-based stages are affected);
/// `stream`: events missing from the `--events` file only; `unknown_ids`: aggregates whose
/// probe id this ipctrace does not know (not shown under any name).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Loss {
    pub counters: BTreeMap<String, u64>,
    pub events: u64,
    pub stacks: u64,
    #[serde(default)]
    pub stream: u64,
    #[serde(default)]
    pub unknown_ids: u64,
    /// Runs of a program the kernel skipped (its recursion guard: the program was already
    /// running on that CPU, e.g. preempted inside it), by program: events never seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_runs: BTreeMap<String, u64>,
    pub total: u64,
}

/// One program's counters from its fdinfo: `runs` and `run_time_ns` (kernel time in the
/// program, counted only while BPF statistics are enabled), `skipped_runs` (its recursion
/// guard's misses, always counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStat {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
    pub skipped_runs: u64,
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
    pub other_errors: u64,
    pub time_ns: u64,
}

impl std::ops::Add for Sum {
    type Output = Sum;
    fn add(self, o: Sum) -> Sum {
        Sum {
            calls: self.calls + o.calls,
            bytes: self.bytes + o.bytes,
            zero: self.zero + o.zero,
            eagain: self.eagain + o.eagain,
            etimedout: self.etimedout + o.etimedout,
            eintr: self.eintr + o.eintr,
            other_errors: self.other_errors + o.other_errors,
            time_ns: self.time_ns + o.time_ns,
        }
    }
}

impl Sum {
    /// Calls that failed, whatever the errno.
    pub fn errors(&self) -> u64 {
        self.eagain + self.etimedout + self.eintr + self.other_errors
    }
}

use ipctrace_common::ProbeId;

impl Observed {
    /// Sum of every observation of `probe` whose sub-key is `sub` (None: any).
    pub fn sum(&self, probe: ProbeId, sub: Option<&str>) -> Sum {
        self.events.iter().filter(|o| o.probe == probe.name() && sub.is_none_or(|s| o.sub == s)).fold(
            Sum::default(),
            |a, o| {
                a + Sum {
                    calls: o.calls,
                    bytes: o.bytes,
                    zero: o.zero,
                    eagain: o.eagain,
                    etimedout: o.etimedout,
                    eintr: o.eintr,
                    other_errors: o.other_errors,
                    time_ns: o.time_ns,
                }
            },
        )
    }

    /// Sum over several probes.
    pub fn sum_of(&self, probes: &[ProbeId]) -> Sum {
        probes.iter().fold(Sum::default(), |a, p| a + self.sum(*p, None))
    }

    /// Merged latency histogram of `probe`.
    pub fn hist(&self, probe: ProbeId) -> Vec<u64> {
        let mut h: Vec<u64> = Vec::new();
        for o in self.events.iter().filter(|o| o.probe == probe.name()) {
            merge_hist(&mut h, &o.latency_log2_ns);
        }
        h
    }

    pub fn label(&self, probe: ProbeId) -> Option<Label> {
        self.events.iter().find(|o| o.probe == probe.name()).map(|o| o.label)
    }

    /// Stack counts of `probe`.
    pub fn stacks_of(&self, probe: ProbeId) -> impl Iterator<Item = &StackCount> {
        self.stacks.iter().filter(move |s| s.probe == probe.name())
    }
}

impl StackCount {
    /// Was this sample taken inside a BPF program: tracing's own cost in the traced
    /// process's context (ipctrace's probes run on its syscalls and switches), not its work.
    pub fn in_bpf(&self) -> bool {
        self.kernel.iter().any(|f| f.starts_with("bpf_prog_") || f.starts_with("bpf_trace_run"))
    }
}

/// Adds histogram `b` into `a`.
pub fn merge_hist(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
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
    fn saved_files_of_another_version_are_refused_with_the_version_named() {
        let e = Report::from_json(r#"{"schema_version": 2, "runs": []}"#, "old.json").unwrap_err();
        assert!(e.to_string().contains("old.json has schema_version 2"), "{e}");
        assert_eq!(crate::exit::code_of(&e), crate::exit::Code::Usage);
        assert!(Report::from_json("{}", "x").is_err());
        assert!(Report::from_json("not json", "x").is_err());
    }

    #[test]
    fn quantiles() {
        assert_eq!(hist_quantile(&[0, 0, 0, 0, 3], 0.5), Some(32));
        assert_eq!(hist_quantile(&[1, 0, 0, 0, 99], 0.01), Some(2));
        assert_eq!(hist_quantile(&[], 0.5), None);
    }
}
