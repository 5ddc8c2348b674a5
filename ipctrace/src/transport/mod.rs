//! The registry of channel families ipctrace reconstructs a path for. Each family module
//! (`pipe`, `shm`) holds its probe-table rows, its path stages, its observed-vs-witness rows,
//! its part of the metrics, how `attach`/`trace` find and pair its channels, and what the
//! progress bar follows. Everything else reaches a family only through `family_of`, whose
//! match over `ChannelKind` fails to compile when a kind is added without a decision.

pub mod mq;
pub mod pipe;
pub mod shm;
pub mod socket;

use std::{collections::BTreeMap, path::Path};

use ipctrace_common::{ChannelKind, ProbeId};

use crate::{
    discover::{Found, Scan},
    model::{Agreement, Label, Observed, Process, Stage},
    probes::LogicalProbe,
};

/// The two ends of a channel (an end outside the targets is a process with pid 0).
pub struct Ends<'a> {
    pub producer: &'a Process,
    pub consumer: &'a Process,
}

/// One family of channels: what ipctrace knows about its kernel data path.
pub trait Family: Sync {
    /// The family's name in reports (`pipe`, `shm`).
    fn name(&self) -> &'static str;
    /// Its rows of the probe table, in order of preference within each row.
    fn probes(&self) -> &'static [LogicalProbe];
    /// The rows without which its path is empty: no tier attaching one is a runtime failure.
    fn required(&self) -> &'static [&'static str];
    /// The stages of its path, from both ends' observations and stacks.
    fn stages(&self, e: &Ends) -> Vec<Stage>;
    /// Observed-vs-witness rows that a built-in workload's witness supports.
    fn agreement(&self, p: &Process, out: &mut Vec<Agreement>);
    /// Bytes the kernel copied between this process's memory and the channel (observed).
    fn copied_bytes(&self, o: &Observed) -> u64;
    /// How the copied bytes were measured, if any were.
    fn copies_label(&self, o: &Observed) -> Option<Label>;
    /// The probes that count as data-path system calls.
    fn data_calls(&self) -> &'static [ProbeId];
    /// Bytes seen leaving the channel at the consumer (None: the kernel cannot see them).
    fn delivered(&self, consumer: &Observed) -> Option<u64>;
    /// attach/trace: who writes and who reads channel `ino`, among the traced processes
    /// (`observed`) and those that held it in /proc (`found`, by process).
    fn pair(
        &self,
        ino: u64,
        observed: &BTreeMap<u32, Observed>,
        found: &BTreeMap<u32, Vec<Found>>,
    ) -> (Option<u32>, Option<u32>);
    /// attach/trace: the objects (inodes) whose holder is the writer and the reader of
    /// channel `ino`, so an end outside the targets can be named (None: it cannot tell).
    fn end_objects(&self, _ino: u64, _found: &BTreeMap<u32, Vec<Found>>) -> (Option<u64>, Option<u64>) {
        (None, None)
    }
    /// attach/trace: the channel behind an entry of /proc/PID/fd (its link text and path).
    fn find_in_fd(&self, _link: &str, _fd: &Path, _scan: &Scan) -> Option<Found> {
        None
    }
    /// attach/trace: channels of process `pid` that have no fd or mapping, from a system-wide
    /// look (`Scan`: SysV message queues).
    fn find_in_scan(&self, _pid: u32, _scan: &Scan) -> Vec<Found> {
        Vec::new()
    }
    /// attach/trace: a channel in a /proc/PID/maps line's fields, with its address range.
    fn find_in_maps(&self, _fields: &[&str]) -> Option<(Found, u64, u64)> {
        None
    }
    /// The consumer-side probe whose bytes the progress bar follows (None: nothing to see).
    fn progress(&self) -> Option<ProbeId>;
    /// Latency histograms worth showing, per process.
    fn histograms(&self) -> &'static [ProbeId];
    /// attach/trace: the heading of a channel's section (`pipe`, `fifo`, `shm`).
    fn section_name(&self, kind: ChannelKind) -> &'static str;
    /// A channel in one phrase: `anon pipe ino 123`, `/dev/shm/NAME`.
    fn describe(&self, kind: ChannelKind, ino: u64, path: Option<&str>) -> String;
}

/// The traced process with the most traffic (bytes + calls) on channel `ino` through
/// `probes`, if any.
pub fn busiest(observed: &BTreeMap<u32, Observed>, ino: u64, probes: &[ProbeId]) -> Option<u32> {
    let on = |o: &Observed| -> u64 {
        o.events
            .iter()
            .filter(|e| probes.iter().any(|p| e.probe == p.name()) && e.channel.as_ref().is_some_and(|c| c.ino == ino))
            .map(|e| e.bytes + e.calls)
            .sum()
    };
    observed.iter().map(|(p, o)| (on(o), *p)).filter(|(b, _)| *b > 0).max().map(|x| x.1)
}

/// The processes that held object `ino` in /proc.
pub fn holders(found: &BTreeMap<u32, Vec<Found>>, ino: u64) -> Vec<u32> {
    found.iter().filter(|(_, fs)| fs.iter().any(|f| f.ino == ino)).map(|(p, _)| *p).collect()
}

/// Every family, in report order.
pub static FAMILIES: &[&dyn Family] = &[&pipe::PIPE, &shm::SHM, &socket::SOCKET, &mq::MQ];

/// The family that reconstructs the path of a channel kind; None for kinds ipctrace sees but
/// does not analyse yet.
pub fn family_of(kind: ChannelKind) -> Option<&'static dyn Family> {
    match kind {
        ChannelKind::AnonPipe | ChannelKind::Fifo => Some(&pipe::PIPE),
        ChannelKind::Shm => Some(&shm::SHM),
        ChannelKind::UnixStream | ChannelKind::UnixDgram | ChannelKind::UnixSeqpacket => Some(&socket::SOCKET),
        ChannelKind::MsgQueue | ChannelKind::SysvMsg => Some(&mq::MQ),
        ChannelKind::EventFd
        | ChannelKind::SignalFd
        | ChannelKind::TcpLoopback
        | ChannelKind::UdpLoopback
        | ChannelKind::Other => None,
    }
}

/// Kinds ipctrace counts but does not analyse, in words (`TCP loopback`).
pub fn not_analysed(kind: &str) -> Option<&'static str> {
    match *ChannelKind::ALL.iter().find(|k| k.name() == kind)? {
        ChannelKind::TcpLoopback => Some("TCP loopback"),
        ChannelKind::UdpLoopback => Some("UDP loopback"),
        _ => None,
    }
}

/// The family of a channel kind given by name (as in the model's `ChannelId`).
pub fn family_named(kind: &str) -> Option<(ChannelKind, &'static dyn Family)> {
    let k = *ChannelKind::ALL.iter().find(|k| k.name() == kind)?;
    family_of(k).map(|f| (k, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_reachable_and_listed() {
        for f in FAMILIES {
            assert!(
                ChannelKind::ALL.iter().any(|k| family_of(*k).is_some_and(|g| g.name() == f.name())),
                "{}",
                f.name()
            );
        }
        for k in ChannelKind::ALL {
            if let Some(f) = family_of(*k) {
                assert!(FAMILIES.iter().any(|g| g.name() == f.name()), "{} is in FAMILIES", f.name());
            }
        }
    }
}
