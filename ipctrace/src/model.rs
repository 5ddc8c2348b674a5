//! The report data model: what BPF observed (with its label and rule) kept apart from what the
//! workloads witnessed about themselves. Built from session sums; rendered by `render`.
//! `SCHEMA_VERSION` changes whenever a field changes meaning or disappears.

use std::collections::BTreeMap;

use ipctrace_common::{AggVal, kind, loss, probe};
use serde::{Deserialize, Serialize};
use workloads::{spawn::Ended, witness::Witness};

pub const SCHEMA_VERSION: u32 = 1;

/// How a figure was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Counted at the kernel function itself (fentry/fexit, kprobe).
    Exact,
    /// Computed from tracepoint values by a stated rule.
    Derived,
    /// Statistical, from stack samples.
    Sampled,
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
    pub tier: Tier,
    pub runs: Vec<TransportRun>,
    pub loss: Loss,
}

/// Which mechanisms measured this run, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tier {
    pub name: String,
    pub why: String,
    pub attach_points: Vec<String>,
}

/// One built-in workload run over one transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransportRun {
    pub transport: String,
    pub total: u64,
    pub msg_size: u64,
    /// Inode of the pipe or FIFO ipctrace created for the workload (none for shm: the
    /// producer creates that object).
    pub data_channel_ino: Option<u64>,
    /// FIFO path or POSIX shm name.
    pub channel_path: Option<String>,
    /// From opening the start gate to the last workload's exit (wall clock, measured by ipctrace).
    pub elapsed_ns: u64,
    /// Every channel the targets used, as observed by BPF.
    pub channels: Vec<ChannelId>,
    pub processes: Vec<Process>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId {
    /// `anon_pipe` or `fifo`.
    pub kind: String,
    pub ino: u64,
}

/// A target process: BPF's view and its own, side by side but never mixed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub role: String,
    pub observed: Vec<ObservedCalls>,
    pub witness: Option<Witness>,
    /// How the process ended, with its wait4 rusage (also a witness).
    pub exit: Option<Ended>,
}

/// Calls of one kind on one channel by one process, as BPF saw them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObservedCalls {
    pub channel: ChannelId,
    /// `write` (write/writev) or `read` (read/readv).
    pub op: String,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Calls that returned 0 (EOF on read).
    pub zero: u64,
    pub time_ns: u64,
    /// log2 buckets of call latency: bucket i counts calls in [2^i, 2^(i+1)) ns.
    pub latency_log2_ns: Vec<u64>,
    pub label: Label,
    pub rule: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Loss {
    pub counters: BTreeMap<String, u64>,
    pub total: u64,
}

pub const RULE_SYSCALL_BYTES: &str = "bytes = sum of positive return values of write/writev (or read/readv) on an fd whose inode is a pipe or FIFO (syscall tracepoints)";

pub fn kind_name(k: u16) -> &'static str {
    match k {
        kind::ANON_PIPE => "anon_pipe",
        kind::FIFO => "fifo",
        _ => "unknown",
    }
}

pub fn op_name(p: u16) -> &'static str {
    match p {
        probe::SYS_WRITE => "write",
        probe::SYS_READ => "read",
        _ => "unknown",
    }
}

/// Observed calls of `tgid`, from the session's summed aggregates.
pub fn observed_for(aggs: &BTreeMap<(u32, u16, u16, u64), AggVal>, tgid: u32) -> Vec<ObservedCalls> {
    aggs.range((tgid, 0, 0, 0)..=(tgid, u16::MAX, u16::MAX, u64::MAX))
        .map(|(&(_, p, k, ino), v)| ObservedCalls {
            channel: ChannelId { kind: kind_name(k).into(), ino },
            op: op_name(p).into(),
            calls: v.calls,
            bytes: v.bytes,
            errors: v.errors,
            zero: v.zero,
            time_ns: v.time_ns,
            latency_log2_ns: trim_hist(&v.hist),
            label: Label::Derived,
            rule: RULE_SYSCALL_BYTES.into(),
        })
        .collect()
}

/// Observed bytes of `tgid` for `op` (`read` or `write`) across channels.
pub fn observed_bytes(aggs: &BTreeMap<(u32, u16, u16, u64), AggVal>, tgid: u32, op: &str) -> u64 {
    observed_for(aggs, tgid).iter().filter(|o| o.op == op).map(|o| o.bytes).sum()
}

fn trim_hist(h: &[u64]) -> Vec<u64> {
    let end = h.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    h[..end].to_vec()
}

pub fn loss_from(raw: &[u64]) -> Loss {
    let counters: BTreeMap<String, u64> =
        loss::NAMES.iter().zip(raw).map(|(n, v)| (n.replace([' ', '-'], "_"), *v)).collect();
    let total = counters.values().sum();
    Loss { counters, total }
}

impl Process {
    /// Observed totals for one op across channels.
    pub fn observed_op(&self, op: &str) -> (u64, u64) {
        self.observed.iter().filter(|o| o.op == op).fold((0, 0), |(c, b), o| (c + o.calls, b + o.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_is_filtered_by_tgid_and_labelled() {
        let mut aggs = BTreeMap::new();
        let mut v = AggVal { calls: 3, bytes: 300, ..Default::default() };
        v.hist[4] = 3;
        aggs.insert((10, probe::SYS_WRITE, kind::ANON_PIPE, 77), v);
        aggs.insert((11, probe::SYS_READ, kind::ANON_PIPE, 77), v);
        let o = observed_for(&aggs, 10);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].op, "write");
        assert_eq!(o[0].bytes, 300);
        assert_eq!(o[0].latency_log2_ns, vec![0, 0, 0, 0, 3]);
        assert_eq!(o[0].label, Label::Derived);
        assert_eq!(o[0].channel, ChannelId { kind: "anon_pipe".into(), ino: 77 });
    }

    #[test]
    fn loss_sums() {
        let l = loss_from(&[1, 2, 3]);
        assert_eq!(l.total, 6);
        assert_eq!(l.counters["in_flight_map_full"], 1);
    }
}
