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
    model::{
        Agreement, Label, Observed, Process, Stage,
        diagram::{Arrow, ArrowKind, Diagram},
    },
    path::woken_by,
    probes::LogicalProbe,
};

/// The two ends of a channel (an end outside the targets is a process with pid 0), and any
/// other process that shares it (a shared segment's further mappers).
pub struct Ends<'a> {
    pub producer: &'a Process,
    pub consumer: &'a Process,
    pub others: Vec<&'a Process>,
}

impl<'a> Ends<'a> {
    /// Every traced process of the channel: the two ends, then the others.
    pub fn all(&self) -> impl Iterator<Item = &'a Process> + '_ {
        [self.producer, self.consumer].into_iter().filter(|p| p.pid != 0).chain(self.others.iter().copied())
    }
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
    /// Does the data live in a mapping the processes share (faults on it are the channel's)?
    fn mapped(&self) -> bool {
        false
    }
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
    /// attach/trace: the processes besides the pair that share channel `ino` (a shared
    /// segment's other mappers; none for a channel with two ends).
    fn others(
        &self,
        _ino: u64,
        _observed: &BTreeMap<u32, Observed>,
        _found: &BTreeMap<u32, Vec<Found>>,
        _pair: (Option<u32>, Option<u32>),
    ) -> Vec<u32> {
        Vec::new()
    }
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
    /// The picture of its path in this run (processes, kernel object, arrows with numbers).
    fn diagram(&self, e: &Ends) -> Diagram;
}

/// The processes of a picture: `producer PID` and `consumer PID` (or `external peer`).
pub fn diagram_names(e: &Ends) -> Vec<String> {
    [e.producer, e.consumer]
        .into_iter()
        .chain(e.others.iter().copied())
        .map(|p| if p.pid == 0 { "external peer".to_string() } else { format!("{} {}", p.role, p.pid) })
        .collect()
}

/// One side of a copying channel's picture: the bytes it moved, how (`Copy`, or `Move` for
/// page references), with what label, and the call it blocks in.
pub struct Side {
    pub caption: &'static str,
    pub bytes: u64,
    pub kind: ArrowKind,
    pub label: Option<Label>,
    pub call: ProbeId,
}

/// The picture of a channel that copies: producer -> kernel object -> consumer, each side's
/// blocking, the wake-ups either way, and the share of the sides' CPU samples spent in the
/// copy routines (`sampled`: (hits, samples) of the two sides).
pub fn copy_diagram(e: &Ends, object: &str, into: Side, out: Side, sampled: Option<(u64, u64)>) -> Diagram {
    use crate::model::diagram::{End::*, Unit};
    let (p, c) = (&e.producer.observed, &e.consumer.observed);
    let blocked = |o: &Observed, call: ProbeId| o.sum(ProbeId::Blocked, Some(call.name())).time_ns;
    let mut arrows = vec![
        Arrow::new("copy_in", into.kind, (Process(0), Object), into.caption, Unit::Bytes, into.bytes, into.label),
        Arrow::new(
            "block_writer",
            ArrowKind::Block,
            (Process(0), Object),
            "writer blocked",
            Unit::Ns,
            blocked(p, into.call),
            p.label(ProbeId::Blocked),
        ),
        Arrow::new(
            "wake_reader",
            ArrowKind::Wake,
            (Process(0), Process(1)),
            "reader woken",
            Unit::Count,
            woken_by(c, e.producer.pid),
            Some(Label::Exact),
        ),
        Arrow::new("copy_out", out.kind, (Object, Process(1)), out.caption, Unit::Bytes, out.bytes, out.label),
        Arrow::new(
            "block_reader",
            ArrowKind::Block,
            (Process(1), Object),
            "reader blocked",
            Unit::Ns,
            blocked(c, out.call),
            c.label(ProbeId::Blocked),
        ),
        Arrow::new(
            "wake_writer",
            ArrowKind::Wake,
            (Process(1), Process(0)),
            "writer woken",
            Unit::Count,
            woken_by(p, e.consumer.pid),
            Some(Label::Exact),
        ),
    ];
    // Bytes per payload byte of each copy: the copy out per byte the consumer got (its
    // verified bytes, else what it got), the copy in per byte the producer sent (its own count,
    // else the same: a run that ended early got less than was sent).
    let payload = e.consumer.witness.as_ref().map(|w| w.verified_bytes.unwrap_or(w.bytes)).unwrap_or(out.bytes);
    let sent = e.producer.witness.as_ref().map_or(payload, |w| w.bytes);
    for a in arrows.iter_mut().filter(|a| matches!(a.kind, ArrowKind::Copy | ArrowKind::Move)) {
        let base = if a.id == "copy_in" { sent } else { payload };
        a.per_byte = a.value.filter(|_| base > 0).map(|v| v as f64 / base as f64);
    }
    arrows.push(sampled_arrow(sampled));
    Diagram { processes: diagram_names(e), object: object.into(), shared: false, arrows, note: None }
}

/// The share of CPU samples in the copy routines, per mille of the samples taken in the
/// channel's calls (not observed without samples).
pub fn sampled_arrow(sampled: Option<(u64, u64)>) -> Arrow {
    use crate::model::diagram::{End::Object, Unit};
    let mut a = Arrow::new(
        "copy_samples",
        ArrowKind::Sampled,
        (Object, Object),
        "CPU samples in the copy routines",
        Unit::PerMille,
        0,
        None,
    );
    if let Some((hits, total)) = sampled.filter(|(_, t)| *t > 0) {
        a.value = Some(hits * 1000 / total);
        a.label = Some(Label::Sampled);
    }
    a
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
