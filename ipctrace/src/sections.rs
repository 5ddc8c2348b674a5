//! attach/trace: from one session to the report's channel sections and its overview. Every
//! channel observed or found in /proc becomes a section, built by its transport family; the
//! sections are sorted by bytes, and the overview lists the process tree and one row per
//! channel, then the traffic counted but not analysed (TCP/UDP loopback) and the fds passed
//! over sockets. A process's stacks go to the channel whose call was in flight; the rest
//! stays with the process (its own time), except when it uses a single channel.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use ipctrace_common::{ChannelKind, ProbeId};

use crate::{
    conclude, discover,
    kernel::symbols::KernelSymbols,
    model::{
        ChannelId, Label, Observed, Process, TransportRun,
        diagram::{Arrow, ArrowKind, End, Unit},
        overview::{ChannelRow, Endpoint, FdPass, NotAnalysed, Notification, Overview, ProcessNode},
    },
    observe,
    session::Session,
    transport,
};

/// Channels found in /proc while tracing, per process (scanned again while processes live,
/// so short-lived ones and channels opened later keep their names and paths), and who
/// outside the targets holds the other end of their sockets.
#[derive(Default)]
pub struct Discovery {
    pub found: BTreeMap<u32, Vec<discover::Found>>,
    /// Processes outside the targets holding a peer of a target's socket: inode -> pid.
    pub outside: BTreeMap<u64, u32>,
    /// Their names, read while they lived.
    pub outside_names: BTreeMap<u32, String>,
}

/// What a scan saw that the session needs now.
#[derive(Default)]
pub struct Seen {
    /// Shm mappings of the targets (for the programs' range table).
    pub ranges: Vec<(u32, ipctrace_common::Ranges)>,
    /// Processes outside the targets found holding a peer socket for the first time.
    pub new_peers: Vec<u32>,
}

impl Discovery {
    /// Looks at every live process of `pids` again, with one sock_diag dump for all.
    pub fn scan(&mut self, pids: impl IntoIterator<Item = u32>) -> Seen {
        let pids: BTreeSet<u32> = pids.into_iter().collect();
        let scan = discover::Scan::now();
        let mut seen = Seen::default();
        for &pid in &pids {
            if discover::exited(pid) {
                continue;
            }
            let (now, r) = discover::channels(pid, &scan);
            let f = self.found.entry(pid).or_default();
            for c in now {
                if !f.contains(&c) {
                    f.push(c);
                }
            }
            if r.r.iter().any(|x| x.start != 0) {
                seen.ranges.push((pid, r));
            }
        }
        // Peers no target holds, not yet placed: one walk of /proc for all of them.
        let held: BTreeSet<u64> = self.found.values().flatten().map(|f| f.ino).collect();
        let unplaced: BTreeSet<u64> = self
            .found
            .values()
            .flatten()
            .filter_map(|f| f.peer)
            .filter(|p| !held.contains(p) && !self.outside.contains_key(p))
            .collect();
        for (ino, pid) in discover::socket_holders(&unplaced) {
            if pids.contains(&pid) {
                continue;
            }
            self.outside.insert(ino, pid);
            if let std::collections::btree_map::Entry::Vacant(e) = self.outside_names.entry(pid) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                e.insert(comm.trim().to_string());
                seen.new_peers.push(pid);
            }
        }
        seen
    }
}

/// Which of a process's observations are about channel `ino`: its events (and process events
/// without a channel: switches, faults), and its stacks — CPU samples and blocks taken during
/// a call on it (the rest is the process's own time, shown in the process tree), and page
/// allocations (never tied to a call) when the process used no other channel.
fn for_channel(o: &Observed, ino: u64) -> Observed {
    let channels: BTreeSet<u64> = o.events.iter().filter_map(|e| e.channel.as_ref()).map(|c| c.ino).collect();
    // Page allocations outside pipe writes name no channel: they are a mapping's (its shmem
    // pages, told apart by their stacks) when the process has one mapped channel, whatever
    // other channels (a pipe, a socket) it also uses.
    let mapped: BTreeSet<u64> = o
        .events
        .iter()
        .filter_map(|e| e.channel.as_ref())
        .filter(|c| transport::family_named(&c.kind).is_some_and(|(_, f)| f.mapped()))
        .map(|c| c.ino)
        .collect();
    let single = channels.len() <= 1 || (mapped.len() == 1 && mapped.contains(&ino));
    Observed {
        events: o.events.iter().filter(|e| e.channel.as_ref().is_none_or(|c| c.ino == ino)).cloned().collect(),
        stacks: o
            .stacks
            .iter()
            .filter(|s| match &s.channel {
                Some(c) => c.ino == ino,
                None => single && s.probe == ProbeId::PageAlloc.name(),
            })
            .cloned()
            .collect(),
    }
}

/// Names and the process tree.
pub struct Processes {
    pub comms: BTreeMap<u32, String>,
    pub parents: BTreeMap<u32, u32>,
    pub exits: BTreeMap<u32, u32>,
}

impl Processes {
    pub fn read(session: &Session, initial: &[(u32, String)]) -> Self {
        let mut comms = session.comms();
        for (pid, n) in initial {
            comms.entry(*pid).or_insert_with(|| n.clone());
        }
        Self { comms, parents: session.parents(), exits: session.exits() }
    }

    pub fn name(&self, pid: u32) -> String {
        self.comms
            .get(&pid)
            .cloned()
            .or_else(|| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    }
}

/// The bytes a channel row sorts by, and its calls and blocked time.
fn row_figures(run: &TransportRun, f: &dyn transport::Family) -> (u64, u64, u64) {
    let distinct = crate::path::distinct(&run.processes);
    let ends: Vec<&Observed> = distinct.iter().map(|p| &p.observed).collect();
    let role = |r: &str| run.processes.iter().find(|p| p.role == r && p.pid != 0).map(|p| p.pid);
    // A process at both ends (a self-pipe) copied each byte in and out: what it sent is its
    // copies less what it received.
    let self_channel = role("producer").is_some() && role("producer") == role("consumer");
    let bytes = distinct
        .iter()
        .map(|p| {
            let delivered = f.delivered(&p.observed).unwrap_or(0);
            match p.role.as_str() {
                "producer" if self_channel => f.copied_bytes(&p.observed).saturating_sub(delivered).max(delivered),
                "producer" => f.copied_bytes(&p.observed).max(delivered),
                _ => delivered,
            }
        })
        .max()
        .unwrap_or(0);
    let calls = ends.iter().map(|o| o.sum_of(f.data_calls()).calls).sum();
    let ino = run.data_channel_ino.unwrap_or(0);
    let blocked = ends
        .iter()
        .flat_map(|o| o.events.iter())
        .filter(|e| e.probe == ProbeId::Blocked.name() && e.channel.as_ref().is_some_and(|c| c.ino == ino))
        .map(|e| e.time_ns)
        .sum();
    (bytes, calls, blocked)
}

/// Builds the sections (sorted by bytes) and the overview.
pub fn build(
    session: &Session,
    procs: &Processes,
    roots: &[u32],
    discovery: &Discovery,
    elapsed_ns: u64,
    unknown: &mut u64,
) -> Result<(Vec<TransportRun>, Overview)> {
    let found = &discovery.found;
    let snap = session.snapshot()?;
    let mut tgids: BTreeSet<u32> = roots.iter().copied().collect();
    tgids.extend(snap.aggs.keys().map(|k| k.tgid));
    tgids.extend(found.keys().copied());
    let mut syms = KernelSymbols::default();
    let mut stack = |id: i32| -> Vec<String> { session.stack(id).map(|ips| syms.stack(&ips)).unwrap_or_default() };
    let observed: BTreeMap<u32, Observed> = tgids
        .iter()
        .map(|&t| (t, observe::observe(t, &snap.aggs, &snap.stacks, &session.choices, &mut stack, unknown)))
        .collect();
    // Every channel: observed ones, plus what /proc showed.
    let mut chans: BTreeMap<u64, (String, Option<String>)> = BTreeMap::new();
    for o in observed.values() {
        for c in o.events.iter().filter_map(|e| e.channel.as_ref()) {
            chans.entry(c.ino).or_insert((c.kind.clone(), None));
        }
    }
    for fs in found.values() {
        for f in fs {
            let e = chans.entry(f.ino).or_insert((f.kind.clone(), None));
            if e.1.is_none() {
                e.1 = f.path.clone();
            }
        }
    }
    let mut sections: Vec<(TransportRun, ChannelRow)> = Vec::new();
    let mut chans_named: BTreeMap<u64, String> = BTreeMap::new();
    for (ino, (kind_name, chan_path)) in chans {
        let Some((kind, family)) = transport::family_named(&kind_name) else { continue };
        let holders = transport::holders(found, ino);
        let (producer, consumer) = family.pair(ino, &observed, found);
        // An end outside the targets, named where its object's holder is known.
        let (w_obj, r_obj) = family.end_objects(ino, found);
        let outside = |obj: Option<u64>| {
            let pid = *discovery.outside.get(&obj?)?;
            let comm = discovery.outside_names.get(&pid).cloned().unwrap_or_else(|| "?".into());
            Some(Endpoint { pid, comm, external: true })
        };
        let (w_out, r_out) = (
            producer.is_none().then(|| outside(w_obj)).flatten(),
            consumer.is_none().then(|| outside(r_obj)).flatten(),
        );
        let others = family.others(ino, &observed, found, (producer, consumer));
        let mut processes = Vec::new();
        let more = others.iter().map(|p| (Some(*p), crate::path::MAPPER));
        for (pid, role) in [(producer, "producer"), (consumer, "consumer")].into_iter().chain(more) {
            if let Some(pid) = pid {
                processes.push(Process {
                    pid,
                    role: role.into(),
                    observed: for_channel(observed.get(&pid).unwrap_or(&Observed::default()), ino),
                    witness: None,
                    exit: None,
                });
            }
        }
        let side = |p: Option<u32>, out: &Option<Endpoint>| match (p, out) {
            (Some(p), _) => format!("{} {p}", procs.name(p)),
            (None, Some(e)) => format!("external peer {} {}", e.comm, e.pid),
            (None, None) => "external peer".to_string(),
        };
        let what = family.describe(kind, ino, chan_path.as_deref());
        chans_named.insert(ino, what.clone());
        let description = if producer.is_none() && consumer.is_none() {
            let held: Vec<String> = holders.iter().map(|p| format!("{} {p}", procs.name(*p))).collect();
            format!("{what} · held by {} · no traffic observed", held.join(", "))
        } else if !others.is_empty() {
            let all: Vec<String> = [producer, consumer]
                .into_iter()
                .flatten()
                .chain(others.iter().copied())
                .map(|p| format!("{} {p}", procs.name(p)))
                .collect();
            format!("{what} · mapped by {} ({} processes)", all.join(", "), all.len())
        } else {
            format!("{what} · {} -> {}", side(producer, &w_out), side(consumer, &r_out))
        };
        let run = conclude::section(
            family,
            conclude::Section {
                transport: family.section_name(kind).to_string(),
                description,
                total: 0,
                msg_size: 0,
                data_channel_ino: Some(ino),
                channel_path: chan_path,
                elapsed_ns,
                channels: vec![ChannelId { kind: kind_name.clone(), ino }],
                processes,
                scope: crate::path::Scope::Channel(ino),
            },
        );
        let (bytes, calls, blocked_ns) = row_figures(&run, family);
        let end = |p: Option<u32>, out: Option<Endpoint>| {
            p.map(|pid| Endpoint { pid, comm: procs.name(pid), external: false }).or(out)
        };
        let row = ChannelRow {
            id: 0,
            kind: kind_name,
            ino,
            name: what,
            writer: end(producer, w_out),
            reader: end(consumer, r_out),
            mappers: others.iter().map(|&pid| Endpoint { pid, comm: procs.name(pid), external: false }).collect(),
            bytes,
            calls,
            copies_per_byte: run.path.metrics.kernel_copies_per_byte,
            blocked_ns,
            label: run.processes.iter().find_map(|p| family.copies_label(&p.observed)).unwrap_or(Label::Derived),
        };
        sections.push((run, row));
    }
    // Busiest first: bytes, then calls; ties by inode for a stable order.
    sections.sort_by(|a, b| (b.1.bytes, b.1.calls, a.1.ino).cmp(&(a.1.bytes, a.1.calls, b.1.ino)));
    let mut runs = Vec::new();
    let mut rows = Vec::new();
    for (i, (run, mut row)) in sections.into_iter().enumerate() {
        row.id = i as u32 + 1;
        runs.push(run);
        rows.push(row);
    }
    let fd_passes = fd_passes(session, procs, discovery, &chans_named, &rows);
    let mut notes = notifications(procs, &observed);
    notes.sort_by_key(|n| std::cmp::Reverse(n.sent + n.read));
    attribute(&mut notes, &rows, &mut runs);
    Ok((
        runs,
        Overview {
            processes: tree(procs, &tgids, &observed),
            channels: rows,
            not_analysed: not_analysed(procs, &observed),
            fd_passes,
            notifications: notes,
        },
    ))
}

/// Signals between processes (keyed by the receiver, with the sender as `waker`), and each
/// eventfd's or signalfd's writes and reads with its busiest writer and reader and the poll
/// wake-ups attributed to it.
fn notifications(procs: &Processes, observed: &BTreeMap<u32, Observed>) -> Vec<Notification> {
    let end = |pid: u32| Endpoint { pid, comm: procs.name(pid), external: false };
    let mut out = Vec::new();
    // (sender, receiver, signal) -> (count, coalesced)
    let mut signals: BTreeMap<(u32, u32, i32), (u64, u64)> = BTreeMap::new();
    // (fd kind, id, reader for a signalfd) -> (writes by pid, reads by pid, poll wake-ups).
    // Every signalfd shares one anon inode and reads its own process's signals: one line per
    // reading process.
    type PerPid = BTreeMap<u32, u64>;
    let mut efds: BTreeMap<(&str, u64, u32), (PerPid, PerPid, u64)> = BTreeMap::new();
    for (&pid, o) in observed {
        for e in &o.events {
            if e.probe == ProbeId::Signal.name() {
                let sig = e.sub.parse().unwrap_or(0);
                let s = signals.entry((e.waker.unwrap_or(0), pid, sig)).or_default();
                s.0 += e.calls;
                s.1 += e.bytes;
            } else if let Some(c) = &e.channel {
                // The sub-key of these calls is the fd's kind: eventfd or signalfd.
                let reader = if ipctrace_common::eventfd_id(c.ino).is_some() { 0 } else { pid };
                let slot = efds.entry((e.sub.as_str(), c.ino, reader));
                if e.probe == ProbeId::EventfdWrite.name() {
                    *slot.or_default().0.entry(pid).or_default() += e.calls;
                } else if e.probe == ProbeId::EventfdRead.name() || e.probe == ProbeId::SignalfdRead.name() {
                    *slot.or_default().1.entry(pid).or_default() += e.calls;
                } else if e.probe == ProbeId::PollWake.name() {
                    slot.or_default().2 += e.calls;
                }
            }
        }
    }
    // Who sent each receiver most of its signals: a signalfd's reads are theirs (derived).
    let mut senders: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
    for (&(from, to, _), &(n, _)) in &signals {
        let e = senders.entry(to).or_default();
        if from != 0 && n > e.0 {
            *e = (n, from);
        }
    }
    for ((from, to, sig), (n, coalesced)) in signals {
        out.push(Notification {
            what: crate::run::signal_name(sig),
            signal: Some(sig),
            from: (from != 0).then(|| end(from)),
            to: Some(end(to)),
            sent: n,
            coalesced,
            read: 0,
            poll_wakeups: 0,
            channel: None,
            label: Label::Exact,
        });
    }
    for ((what, ino, reader), (writes, reads, woke)) in efds {
        let busiest = |m: &PerPid| m.iter().max_by_key(|(_, n)| **n).map(|(p, _)| end(*p));
        let name = match ipctrace_common::eventfd_id(ino) {
            Some(id) => format!("{what} id {id}"),
            None => format!("{what} of {} {reader}", procs.name(reader)),
        };
        // A signalfd is written by whoever signals its reader: the busiest sender.
        let from = busiest(&writes).or_else(|| senders.get(&reader).filter(|s| s.1 != 0).map(|s| end(s.1)));
        out.push(Notification {
            what: name,
            signal: None,
            from,
            to: busiest(&reads),
            sent: writes.values().sum(),
            coalesced: 0,
            read: reads.values().sum(),
            poll_wakeups: woke,
            channel: None,
            label: Label::Derived,
        });
    }
    out
}

/// Notification arrows drawn in one channel's picture (the band between the processes and the
/// user/kernel line holds this many).
const MAX_NOTIFY_ARROWS: usize = 4;

/// The rule that makes a notification the sync stage of a channel.
pub const SYNC_RULE: &str = "the only data channel between the notification's sender and receiver (either way; SIGCHLD, which announces an exit, never)";

/// Each notification whose sender and receiver (two different processes) share exactly one
/// data channel becomes that channel's sync stage: a stage in its section, and the row id in
/// the notification. The others stay in the notifications list alone.
fn attribute(notes: &mut [Notification], rows: &[ChannelRow], runs: &mut [TransportRun]) {
    for n in notes.iter_mut() {
        let (Some(from), Some(to)) = (n.from.as_ref().map(|e| e.pid), n.to.as_ref().map(|e| e.pid)) else { continue };
        if from == to || n.signal == Some(libc::SIGCHLD) {
            continue;
        }
        // Both among the channel's processes: its two ends and a segment's other mappers.
        let pair = |r: &ChannelRow| {
            let has = |pid: u32| {
                [&r.writer, &r.reader]
                    .into_iter()
                    .flatten()
                    .chain(r.mappers.iter())
                    .any(|e| e.pid == pid && !e.external)
            };
            has(from) && has(to)
        };
        let mut shared = rows.iter().enumerate().filter(|(_, r)| pair(r));
        let (Some((i, row)), None) = (shared.next(), shared.next()) else { continue };
        n.channel = Some(row.id);
        let who = |e: &Option<Endpoint>| e.as_ref().map_or("?".to_string(), |e| format!("{} {}", e.comm, e.pid));
        let woke = if n.poll_wakeups > 0 {
            format!(", {} poll/epoll wake-ups led to a read", n.poll_wakeups)
        } else {
            String::new()
        };
        let note = if n.signal.is_some() {
            format!("{} ×{} from {} to {}", n.what, n.sent, who(&n.from), who(&n.to))
        } else if n.sent == 0 {
            // A signalfd: read by its process, written by whoever signals it.
            format!("{}: {} reads by {} (signals from {}){woke}", n.what, n.read, who(&n.to), who(&n.from))
        } else {
            format!("{}: {} writes by {}, {} reads by {}{woke}", n.what, n.sent, who(&n.from), n.read, who(&n.to))
        };
        // Drawn as an arrow between the two in the channel's picture (the busiest
        // MAX_NOTIFY_ARROWS: `notes` comes sorted).
        let index = |pid: u32| {
            let procs = &runs[i].processes;
            let at = |role: &str| procs.iter().find(|p| p.role == role).map(|p| p.pid);
            let mappers = procs.iter().filter(|p| p.role == crate::path::MAPPER).map(|p| p.pid);
            if at("producer") == Some(pid) {
                Some(0)
            } else if at("consumer") == Some(pid) {
                Some(1)
            } else {
                mappers.into_iter().position(|p| p == pid).map(|k| k + 2)
            }
        };
        if let (Some(a), Some(b)) = (index(from), index(to))
            && let Some(d) = runs[i].path.diagram.as_mut()
        {
            let drawn = d.arrows.iter().filter(|x| x.kind == ArrowKind::Notify).count();
            if drawn < MAX_NOTIFY_ARROWS {
                let label = if n.signal.is_some() { Label::Exact } else { Label::Derived };
                d.arrows.push(Arrow::new(
                    &format!("notify_{drawn}"),
                    ArrowKind::Notify,
                    (End::Process(a), End::Process(b)),
                    &n.what,
                    Unit::Count,
                    n.sent.max(n.read),
                    Some(label),
                ));
            }
        }
        runs[i].path.stages.push(crate::model::path::Stage {
            name: format!("sync: {}", n.what),
            depth: 0,
            count: Some(n.sent.max(n.read)),
            bytes: None,
            time: None,
            label: Some(Label::Derived),
            also: None,
            observed: true,
            note: Some(format!("{note}; attributed to this channel as {SYNC_RULE}")),
        });
    }
}

/// Traffic counted but not analysed (TCP/UDP over loopback): per connection, the bytes sent
/// and who sent or received; then one entry per kind and set of processes.
fn not_analysed(procs: &Processes, observed: &BTreeMap<u32, Observed>) -> Vec<NotAnalysed> {
    let (send, recv) = (ProbeId::InetSend.name(), ProbeId::InetRecv.name());
    // (what, ino) -> (bytes sent, calls, pids)
    let mut conns: BTreeMap<(&'static str, u64), (u64, u64, BTreeSet<u32>)> = BTreeMap::new();
    for (&pid, o) in observed {
        for e in o.events.iter().filter(|e| e.probe == send || e.probe == recv) {
            let Some(c) = &e.channel else { continue };
            let Some(what) = transport::not_analysed(&c.kind) else { continue };
            let v = conns.entry((what, c.ino)).or_default();
            if e.probe == send {
                v.0 += e.bytes;
            }
            v.1 += e.calls;
            v.2.insert(pid);
        }
    }
    let mut groups: BTreeMap<(&'static str, BTreeSet<u32>), NotAnalysed> = BTreeMap::new();
    for ((what, _), (bytes, calls, pids)) in conns {
        let ends = pids.iter().map(|&pid| Endpoint { pid, comm: procs.name(pid), external: false }).collect();
        let g = groups.entry((what, pids)).or_insert_with(|| NotAnalysed {
            what: what.into(),
            bytes: 0,
            calls: 0,
            connections: 0,
            ends,
            label: Label::Derived,
        });
        g.bytes += bytes;
        g.calls += calls;
        g.connections += 1;
    }
    let mut out: Vec<NotAnalysed> = groups.into_values().collect();
    out.sort_by_key(|n| std::cmp::Reverse(n.bytes));
    out
}

/// The fds the targets passed over Unix sockets, named, with the rows of what was passed and
/// of the socket it went over.
fn fd_passes(
    session: &Session,
    procs: &Processes,
    discovery: &Discovery,
    names: &BTreeMap<u64, String>,
    rows: &[ChannelRow],
) -> Vec<FdPass> {
    let row_of = |ino: u64| rows.iter().find(|r| r.ino == ino);
    let mut out: Vec<FdPass> = session
        .fd_passes()
        .into_iter()
        .filter_map(|(k, times)| {
            let kind = ChannelKind::name_of(k.kind)?;
            // The receiver: the reader of the socket's direction, else who held the socket.
            let to = row_of(k.via)
                .and_then(|r| r.reader.clone())
                .filter(|e| e.pid != k.tgid)
                .or_else(|| {
                    let pid = transport::holders(&discovery.found, k.via).into_iter().find(|&p| p != k.tgid)?;
                    Some(Endpoint { pid, comm: procs.name(pid), external: false })
                })
                .or_else(|| {
                    let pid = *discovery.outside.get(&k.via)?;
                    let comm = discovery.outside_names.get(&pid).cloned().unwrap_or_else(|| "?".into());
                    Some(Endpoint { pid, comm, external: true })
                });
            Some(FdPass {
                from: Endpoint { pid: k.tgid, comm: procs.name(k.tgid), external: false },
                to,
                kind: kind.into(),
                ino: k.ino,
                name: names.get(&k.ino).cloned().unwrap_or_else(|| format!("{kind} ino {}", k.ino)),
                channel: row_of(k.ino).map(|r| r.id),
                via: k.via,
                via_channel: row_of(k.via).map(|r| r.id),
                times,
            })
        })
        .collect();
    out.sort_by_key(|p| (p.from.pid, p.ino));
    out
}

/// The process tree, flat (parents first where known), with each process's own CPU time.
fn tree(procs: &Processes, tgids: &BTreeSet<u32>, observed: &BTreeMap<u32, Observed>) -> Vec<ProcessNode> {
    tgids
        .iter()
        .map(|&pid| {
            let own: Vec<_> = observed
                .get(&pid)
                .map(|o| o.stacks_of(ProbeId::Sample).filter(|s| s.channel.is_none()).collect())
                .unwrap_or_default();
            let own_samples = own.iter().map(|s| s.count).sum();
            let own_in_bpf = own.iter().filter(|s| s.in_bpf()).map(|s| s.count).sum();
            let own_hottest =
                own.iter().filter(|s| !s.kernel.is_empty() && !s.in_bpf()).max_by_key(|s| s.count).map(|s| {
                    let frames: Vec<&str> = s.kernel.iter().rev().take(6).map(String::as_str).collect();
                    frames.join(" <- ")
                });
            let (exit_code, signal) = match procs.exits.get(&pid) {
                Some(&st) if st & 0x7f == 0 => (Some(((st >> 8) & 0xff) as i32), None),
                Some(&st) => (None, Some(crate::run::signal_name((st & 0x7f) as i32))),
                None => (None, None),
            };
            ProcessNode {
                pid,
                parent: procs.parents.get(&pid).copied().filter(|p| tgids.contains(p)),
                comm: procs.name(pid),
                exit_code,
                signal,
                own_samples,
                own_in_bpf,
                own_hottest,
                own_stacks: own.into_iter().cloned().collect(),
            }
        })
        .collect()
}
