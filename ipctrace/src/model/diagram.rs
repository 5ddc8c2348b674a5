//! The picture of one transport's data path, as data: the processes above the user/kernel
//! line, the kernel object below it, and arrows (copies, page moves, wake-ups, blocking,
//! faults) each carrying this run's number and its label, or drawn as not observed. Each
//! transport builds its own (`Family::diagram`); the renderers draw it (an SVG in the HTML
//! page, a few lines of text in the terminal) and never compute a figure.

use serde::{Deserialize, Serialize};

use super::Label;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Diagram {
    /// The processes, left to right (`producer 123`).
    pub processes: Vec<String>,
    /// The kernel object the data goes through (or that every process maps).
    pub object: String,
    /// The object is mapped into the processes' address spaces (shared memory).
    #[serde(default)]
    pub shared: bool,
    pub arrows: Vec<Arrow>,
    /// One line said beside the picture (e.g. "no copy through the kernel").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An end of an arrow: a process (by index) or the kernel object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Process(usize),
    Object,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrowKind {
    /// Bytes copied between user memory and the kernel object.
    Copy,
    /// Pages handed over by reference (splice, sendfile): no copy.
    Move,
    /// One process woke the other.
    Wake,
    /// A process slept in the kernel waiting on the object.
    Block,
    /// First-touch page faults on the shared object.
    Fault,
    /// A figure from CPU samples.
    Sampled,
    /// A notification from one process to another (a signal, eventfd writes, a signalfd's
    /// reads) that is this channel's sync stage.
    Notify,
}

/// What an arrow's number counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    Count,
    Ns,
    /// Per mille (a share of samples).
    PerMille,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Arrow {
    /// Stable name (`copy_in`, `wake_reader`, ...).
    pub id: String,
    pub kind: ArrowKind,
    pub from: End,
    pub to: End,
    /// What it shows, in a few words (`copy user -> pipe buffer`).
    pub caption: String,
    pub unit: Unit,
    /// This run's number; None: not observed.
    pub value: Option<u64>,
    pub label: Option<Label>,
    /// A copy or move: its bytes per payload byte (None without a payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_byte: Option<f64>,
}

impl Arrow {
    /// An arrow whose number is `value` (0: not observed).
    pub fn new(
        id: &str,
        kind: ArrowKind,
        (from, to): (End, End),
        caption: &str,
        unit: Unit,
        value: u64,
        label: Option<Label>,
    ) -> Self {
        let seen = value > 0;
        Self {
            id: id.into(),
            kind,
            from,
            to,
            caption: caption.into(),
            unit,
            value: seen.then_some(value),
            label: if seen { label } else { None },
            per_byte: None,
        }
    }

    pub fn observed(&self) -> bool {
        self.value.is_some()
    }
}
