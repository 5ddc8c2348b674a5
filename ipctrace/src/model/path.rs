//! The reconstructed path as data: stages (with their depth, numbers and label), the
//! comparison metrics of a run, and the metric rows every renderer shows, defined once.
//! Numbers, never pre-formatted text: a figure without a denominator is `None`, never inf.

use serde::{Deserialize, Serialize};

use super::Label;

/// One stage of the path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stage {
    /// e.g. `write(2) -> pipe write function`, `writer blocked: pipe full`.
    pub name: String,
    /// 0 = a call or phase; 1 = a step inside the stage above.
    pub depth: u8,
    pub count: Option<u64>,
    pub bytes: Option<u64>,
    pub time: Option<StageTime>,
    /// None when not observed.
    pub label: Option<Label>,
    /// A second mechanism the figure also rests on (e.g. sampled copy frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<Label>,
    pub observed: bool,
    /// Extra facts: the call chain seen, per-process split, sample share; "not observed".
    pub note: Option<String>,
}

/// A stage's time figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageTime {
    /// Upper bounds of the log2 buckets holding the 50th and 99th percentiles.
    Latency { p50_ns: u64, p99_ns: u64 },
    /// Total time (e.g. blocked).
    Total { ns: u64 },
}

/// The path of one run plus its comparison metrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PathModel {
    pub stages: Vec<Stage>,
    pub metrics: Metrics,
    /// The same path as a picture (absent in reports saved before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagram: Option<super::diagram::Diagram>,
}

/// Figures per transport for the side-by-side comparison. Payload = the consumer's verified
/// bytes (its witness), the one definition valid for every transport. Each per-MiB or
/// per-byte figure is None when there is no payload to divide by.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub payload_bytes: u64,
    /// Bytes copied by the kernel between user memory and the channel (observed) / payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_copies_per_byte: Option<f64>,
    pub copies_label: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_per_mib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults_per_mib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_switches_per_mib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakeups_per_mib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futex_waits_per_mib: Option<f64>,
    /// Share of the targets' cpu-clock samples taken in the kernel (sampled); None without samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cpu_share: Option<f64>,
    /// Share of the targets' CPU time in the kernel from their own getrusage (witness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cpu_share_witness: Option<f64>,
    /// Payload / wall clock; None when nothing was delivered or no time passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_bytes_per_s: Option<f64>,
}

/// How a metric is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Two decimals (copies per byte).
    Ratio,
    /// One decimal (events per MiB).
    PerMib,
    /// A share, written as a percentage.
    Share,
    /// Bytes per second, written with a binary unit.
    Rate,
}

/// One row of the comparison.
pub struct MetricDef {
    pub id: &'static str,
    pub name: &'static str,
    /// How it is measured (`{label}` is replaced by the copies' label): in a `run`, whose
    /// processes are the transport's own ...
    pub how: &'static str,
    /// ... and where the columns are channels of attach/trace, whose processes may use others
    /// (None: as in a run).
    pub how_channel: Option<&'static str>,
    pub unit: Unit,
    pub get: fn(&Metrics) -> Option<f64>,
}

/// The comparison rows, in order: the one list every renderer shows.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        id: "kernel_copies_per_byte",
        name: "kernel copies / payload byte",
        how: "{label}: bytes copied between user memory and the channel / payload",
        how_channel: None,
        unit: Unit::Ratio,
        get: |m| m.kernel_copies_per_byte,
    },
    MetricDef {
        id: "syscalls_per_mib",
        name: "data-path syscalls / MiB",
        how: "calls on the channel, its sync words and its set-up",
        how_channel: None,
        unit: Unit::PerMib,
        get: |m| m.syscalls_per_mib,
    },
    MetricDef {
        id: "faults_per_mib",
        name: "page faults / MiB",
        how: "all faults of the transport's processes",
        how_channel: Some("faults on the channel's mapping (shared memory; other channels have none)"),
        unit: Unit::PerMib,
        get: |m| m.faults_per_mib,
    },
    MetricDef {
        id: "context_switches_per_mib",
        name: "context switches / MiB",
        how: "exact (sched_switch)",
        how_channel: Some("exact (sched_switch): blocks in calls on the channel"),
        unit: Unit::PerMib,
        get: |m| m.context_switches_per_mib,
    },
    MetricDef {
        id: "wakeups_per_mib",
        name: "wake-ups / MiB",
        how: "exact (sched_waking)",
        how_channel: Some("not per channel: wake-ups are counted by waker, not by channel"),
        unit: Unit::PerMib,
        get: |m| m.wakeups_per_mib,
    },
    MetricDef {
        id: "futex_waits_per_mib",
        name: "futex waits / MiB",
        how: "on words in the shared mapping",
        how_channel: None,
        unit: Unit::PerMib,
        get: |m| m.futex_waits_per_mib,
    },
    MetricDef {
        id: "kernel_cpu_share",
        name: "CPU in kernel",
        how: "sampled (share of cpu-clock samples in the kernel)",
        how_channel: Some("sampled; not per channel: the process tree shows each process's own CPU"),
        unit: Unit::Share,
        get: |m| m.kernel_cpu_share,
    },
    MetricDef {
        id: "kernel_cpu_share_witness",
        name: "CPU in kernel (getrusage)",
        how: "witness: the processes' own stime / (utime + stime)",
        how_channel: None,
        unit: Unit::Share,
        get: |m| m.kernel_cpu_share_witness,
    },
    MetricDef {
        id: "throughput",
        name: "throughput",
        how: "payload / wall clock (gate to exit)",
        how_channel: Some("payload / the traced window"),
        unit: Unit::Rate,
        get: |m| m.throughput_bytes_per_s,
    },
];

/// The comparison across a report's runs, finished before rendering.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Comparison {
    /// Column headings: the transports (run) or channels compared.
    pub columns: Vec<String>,
    pub rows: Vec<ComparisonRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub id: String,
    pub name: String,
    pub how: String,
    pub unit: Unit,
    /// One per column; None = no denominator (shown as `-`).
    pub values: Vec<Option<f64>>,
}

/// A sweep's finding: from which message size one transport moved more than another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crossover {
    pub transport: String,
    pub overtakes: String,
    pub from_msg_size: u64,
}

/// A latency histogram worth showing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Histogram {
    pub pid: u32,
    pub role: String,
    pub probe: String,
    /// log2 buckets: bucket i counts calls that took [2^i, 2^(i+1)) ns.
    pub buckets: Vec<u64>,
}
