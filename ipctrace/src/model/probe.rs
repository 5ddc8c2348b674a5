//! What the probe table decided on this kernel, as data in the report: per logical probe the
//! mechanism chosen (with its label and rule) and every implementation skipped, with why.

use serde::{Deserialize, Serialize};

use super::Label;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    Fentry,
    Kprobe,
    Tracepoint,
    #[serde(rename = "perf_event")]
    PerfEvent,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry/fexit",
            Self::Kprobe => "kprobe/kretprobe",
            Self::Tracepoint => "tracepoint",
            Self::PerfEvent => "perf_event (cpu-clock)",
        }
    }
}

/// What was decided for one logical probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Choice {
    pub probe: String,
    pub what: String,
    pub chosen: Option<Chosen>,
    /// Every implementation not used, in table order, with the real reason.
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chosen {
    pub mechanism: Mechanism,
    pub label: Label,
    pub rule: String,
    pub attach_points: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub mechanism: Mechanism,
    pub reason: String,
}
