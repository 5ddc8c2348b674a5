//! The overview of an `attach` or `trace` report, read first: the process tree (who forked
//! whom, names, how each ended, the CPU time no channel explains) and one row per channel,
//! sorted by bytes; then what was counted but not analysed (TCP/UDP loopback) and the fds
//! passed over sockets. The sections (`runs`) follow in the same order; row `id` N is
//! `runs[N-1]`.

use serde::{Deserialize, Serialize};

use super::Label;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Overview {
    pub processes: Vec<ProcessNode>,
    pub channels: Vec<ChannelRow>,
    /// Traffic counted but not analysed (TCP/UDP over loopback), per kind and set of ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_analysed: Vec<NotAnalysed>,
    /// fds passed over Unix sockets (SCM_RIGHTS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fd_passes: Vec<FdPass>,
    /// Notifications between processes: signals, eventfd writes and reads, signalfd reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Signals from one process to another, or the writes and reads of one eventfd or signalfd.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    /// `SIGUSR1`, `eventfd id 3` (its eventfd-id in /proc/PID/fdinfo), `signalfd of postgres 45`.
    pub what: String,
    /// The signal's number (absent for an eventfd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The sender or writer (the busiest, for an eventfd), when traced or known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Endpoint>,
    /// The receiver or reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Endpoint>,
    /// Signals generated, or eventfd writes.
    pub sent: u64,
    /// Signals that found one of their number already pending (coalesced: the receiver sees
    /// them once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub coalesced: u64,
    /// eventfd or signalfd reads (signals: 0; how they were consumed shows in the receiver's
    /// calls, or in its signalfd's line).
    pub read: u64,
    /// Poll-family waits (poll, select, epoll) that returned ready and were followed by a
    /// read of this fd by the same thread: the wake-ups it caused (derived).
    #[serde(default)]
    pub poll_wakeups: u64,
    /// The data channel (its row id) this notification is the sync stage of: the only data
    /// channel between its sender and its receiver (derived; None: no single channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
    pub label: Label,
}

/// Traffic of a kind ipctrace counts but does not analyse, between the same processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotAnalysed {
    /// `TCP loopback`, `UDP loopback`.
    pub what: String,
    /// Bytes sent (return values of the sends; derived).
    pub bytes: u64,
    /// Sends and receives.
    pub calls: u64,
    /// Connections (port pairs) summed here.
    pub connections: u32,
    /// The traced processes that sent or received (the other end may be untraced).
    pub ends: Vec<Endpoint>,
    pub label: Label,
}

/// An fd passed over a Unix socket with SCM_RIGHTS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FdPass {
    /// The sender.
    pub from: Endpoint,
    /// The holder of the receiving socket, where /proc showed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Endpoint>,
    /// What was passed: its kind, inode and name.
    pub kind: String,
    pub ino: u64,
    pub name: String,
    /// Its row in `channels`, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
    /// The socket it went over (the receiving socket's inode) and its row, if it is one.
    pub via: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_channel: Option<u32>,
    /// sendmsg calls that passed it.
    pub times: u64,
}

/// One traced process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessNode {
    pub pid: u32,
    /// The target that forked it (None: a process ipctrace was given, or whose parent was
    /// not traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    pub comm: String,
    /// How it ended (both None: still running when tracing stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// cpu-clock samples taken while no channel call was in flight (the process's own time).
    pub own_samples: u64,
    /// Of those, the samples taken inside BPF programs (tracing's own cost: ipctrace's
    /// probes run in the process's context on its syscalls and switches).
    #[serde(default)]
    pub own_in_bpf: u64,
    /// The most frequent kernel path among those samples, outside BPF programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_hottest: Option<String>,
    /// Those samples' stacks (the folded stacks and the flame graph hold them beside the
    /// channels' own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub own_stacks: Vec<super::StackCount>,
}

/// One end of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub pid: u32,
    pub comm: String,
    /// A process outside the targets (named from /proc and sock_diag; nothing of it traced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// One channel, as a row of the overview table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelRow {
    /// 1-based position (by bytes); `--channel ID` takes it.
    pub id: u32,
    pub kind: String,
    pub ino: u64,
    /// Path, POSIX name or `kind ino N`.
    pub name: String,
    /// None: an external peer ipctrace could not name, or nobody wrote/read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<Endpoint>,
    /// Shared memory: the processes besides `writer` and `reader` that map the segment (its
    /// third and further mappers; `writer` is the one that sized or first mapped it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mappers: Vec<Endpoint>,
    /// Bytes that crossed the channel as the kernel saw them (0 where it cannot: shared memory).
    pub bytes: u64,
    /// Data-path calls on the channel by both ends.
    pub calls: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies_per_byte: Option<f64>,
    /// Time both ends spent blocked in calls on the channel.
    pub blocked_ns: u64,
    pub label: Label,
}
