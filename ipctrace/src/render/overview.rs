//! The overview of an attach/trace report, as text lines shared by the terminal and Markdown
//! renderers: the process tree (the processes on the listed channels and their ancestors,
//! the others counted by name) and the channel table, the rest summed in one line; then the
//! notes (traffic not analysed, fds passed).

use std::collections::{BTreeMap, BTreeSet};

use workloads::size::format_size;

use super::fmt::{self, group};
use crate::model::{
    overview::{ChannelRow, Endpoint, Overview, ProcessNode},
    path::Unit,
};

fn end(e: &Option<Endpoint>) -> String {
    match e {
        Some(e) if e.external => format!("{} {} (external)", e.comm, e.pid),
        Some(e) => format!("{} {}", e.comm, e.pid),
        None => "external".into(),
    }
}

/// How a process ended, in a few words.
fn ended(p: &ProcessNode) -> String {
    match (&p.signal, p.exit_code) {
        (Some(s), _) => format!("killed by {s}"),
        (None, Some(c)) => format!("exit {c}"),
        _ => "running".into(),
    }
}

/// The process tree as indented lines. Without `all`, only the processes on `shown` channels
/// and their ancestors; the others are counted by name on one line.
pub fn tree_lines(o: &Overview, shown: &[&ChannelRow], all: bool) -> Vec<String> {
    let by_pid: BTreeMap<u32, &ProcessNode> = o.processes.iter().map(|p| (p.pid, p)).collect();
    let mut keep: BTreeSet<u32> = BTreeSet::new();
    if all {
        keep.extend(by_pid.keys());
    } else {
        for row in shown {
            for e in [&row.writer, &row.reader].into_iter().flatten() {
                let mut p = Some(e.pid);
                while let Some(pid) = p {
                    if !keep.insert(pid) {
                        break;
                    }
                    p = by_pid.get(&pid).and_then(|n| n.parent);
                }
            }
        }
        // The roots (the processes given, or the command) are always shown.
        keep.extend(o.processes.iter().filter(|p| p.parent.is_none_or(|pp| !by_pid.contains_key(&pp))).map(|p| p.pid));
    }
    let mut children: BTreeMap<Option<u32>, Vec<u32>> = BTreeMap::new();
    for p in &o.processes {
        let parent = p.parent.filter(|pp| by_pid.contains_key(pp));
        children.entry(parent).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    fn walk(
        pid: u32,
        depth: usize,
        by: &BTreeMap<u32, &ProcessNode>,
        kids: &BTreeMap<Option<u32>, Vec<u32>>,
        keep: &BTreeSet<u32>,
        out: &mut Vec<String>,
    ) {
        let p = by[&pid];
        if keep.contains(&pid) {
            let bpf = match p.own_in_bpf {
                0 => String::new(),
                b => format!(" ({b} in BPF programs: the tracing's own cost)"),
            };
            let own = match (&p.own_hottest, p.own_samples) {
                (_, 0) => String::new(),
                (Some(h), n) => format!(" · own CPU {n} samples{bpf}, hottest {h}"),
                (None, n) => format!(" · own CPU {n} samples{bpf} (user space)"),
            };
            let lead = if depth == 0 { String::new() } else { format!("{}└─ ", "   ".repeat(depth - 1)) };
            out.push(format!("{lead}{} {} ({}){own}", p.comm, p.pid, ended(p)));
        }
        for c in kids.get(&Some(pid)).into_iter().flatten() {
            walk(*c, depth + 1, by, kids, keep, out);
        }
    }
    for r in children.get(&None).into_iter().flatten() {
        walk(*r, 0, &by_pid, &children, &keep, &mut out);
    }
    let hidden: Vec<&ProcessNode> = o.processes.iter().filter(|p| !keep.contains(&p.pid)).collect();
    if !hidden.is_empty() {
        let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &hidden {
            *by_name.entry(p.comm.as_str()).or_default() += 1;
        }
        let mut names: Vec<(&str, usize)> = by_name.into_iter().collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = names.iter().take(6).map(|(n, c)| format!("{n} ×{c}")).collect();
        let more = if names.len() > 6 { ", ..." } else { "" };
        out.push(format!("+ {} other processes ({}{more}; --all lists them)", hidden.len(), list.join(", ")));
    }
    out
}

/// The channel table: header and rows (as cells), plus the summary line of the rest.
pub struct ChannelTable {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub rest: Option<String>,
}

pub fn channel_table(o: &Overview, listed: usize) -> ChannelTable {
    let header = vec!["#", "kind", "channel", "writer -> reader", "bytes", "calls", "copies/byte", "blocked", "label"];
    let rows = o
        .channels
        .iter()
        .take(listed)
        .map(|c| {
            vec![
                c.id.to_string(),
                c.kind.clone(),
                c.name.clone(),
                if c.writer.is_none() && c.reader.is_none() {
                    "(no traffic seen)".into()
                } else if c.mappers.is_empty() {
                    format!("{} -> {}", end(&c.writer), end(&c.reader))
                } else {
                    // A segment with more mappers: all of them, not a pair.
                    let more: Vec<String> = c.mappers.iter().map(|m| end(&Some(m.clone()))).collect();
                    format!("{}, {}, {} (all map it)", end(&c.writer), end(&c.reader), more.join(", "))
                },
                group(c.bytes),
                group(c.calls),
                fmt::metric(Unit::Ratio, c.copies_per_byte),
                if c.blocked_ns > 0 { fmt::ns(c.blocked_ns) } else { "-".into() },
                c.label.name().into(),
            ]
        })
        .collect();
    let others = &o.channels[listed.min(o.channels.len())..];
    let rest = (!others.is_empty()).then(|| {
        let bytes: u64 = others.iter().map(|c| c.bytes).sum();
        format!("+ {} channels, {} in all (--all lists them)", others.len(), format_size(bytes))
    });
    ChannelTable { header, rows, rest }
}

/// Notification lines listed before the rest is summed in one line.
const NOTES_LISTED: usize = 5;

/// What the channel table does not hold: traffic counted but not analysed, and fds passed
/// over sockets, one line each.
pub fn note_lines(o: &Overview) -> Vec<String> {
    let mut out = Vec::new();
    for n in &o.not_analysed {
        let ends: Vec<String> = n.ends.iter().map(|e| end(&Some(e.clone()))).collect();
        let between = match ends.len() {
            1 => format!("sent or received by {} (the other end not traced)", ends[0]),
            _ => format!("between {}", ends.join(" and ")),
        };
        let conns =
            if n.connections == 1 { "1 connection".to_string() } else { format!("{} connections", n.connections) };
        out.push(format!(
            "not analysed: {} over {} {between} ({conns}, {} calls; {})",
            format_size(n.bytes),
            n.what,
            group(n.calls),
            n.label.name()
        ));
    }
    // The busiest notifications (a shell's children all send it SIGCHLD); the rest summed.
    let mut notes: Vec<&crate::model::overview::Notification> = o.notifications.iter().collect();
    notes.sort_by_key(|n| std::cmp::Reverse(n.sent + n.read));
    let rest = notes.split_off(notes.len().min(NOTES_LISTED));
    for n in notes {
        let who = |e: &Option<Endpoint>| e.as_ref().map_or("?".to_string(), |e| end(&Some(e.clone())));
        let mut woke = if n.poll_wakeups > 0 {
            format!(", {} poll/epoll wake-ups led to the read", group(n.poll_wakeups))
        } else {
            String::new()
        };
        // The channel it is the sync stage of (derived: the only one between the two).
        let at = n.channel.map(|c| format!(" · sync of #{c}")).unwrap_or_default();
        woke.push_str(&at);
        out.push(if n.signal.is_none() && n.sent == 0 {
            format!("notification: {}: {} reads by {}{woke} ({})", n.what, group(n.read), who(&n.to), n.label.name())
        } else if n.signal.is_none() {
            format!(
                "notification: {}: {} writes by {}, {} reads by {}{woke} ({})",
                n.what,
                group(n.sent),
                who(&n.from),
                group(n.read),
                who(&n.to),
                n.label.name()
            )
        } else {
            let coalesced = if n.coalesced > 0 {
                format!(", {} coalesced (already pending)", group(n.coalesced))
            } else {
                String::new()
            };
            format!(
                "notification: {} ×{} from {} to {}{coalesced}{at} ({})",
                n.what,
                group(n.sent),
                who(&n.from),
                who(&n.to),
                n.label.name()
            )
        });
    }
    if !rest.is_empty() {
        let mut by: BTreeMap<&str, u64> = BTreeMap::new();
        for n in &rest {
            *by.entry(if n.signal.is_some() { n.what.as_str() } else { "eventfd writes" }).or_default() += n.sent;
        }
        let list: Vec<String> = by.iter().map(|(w, c)| format!("{w} ×{}", group(*c))).collect();
        out.push(format!("+ {} more notifications ({}; JSON lists them)", rest.len(), list.join(", ")));
    }
    for p in &o.fd_passes {
        let row = |id: Option<u32>| id.map(|i| format!(" (#{i})")).unwrap_or_default();
        let to = p.to.as_ref().map(|e| format!(" to {}", end(&Some(e.clone())))).unwrap_or_default();
        let times = if p.times == 1 { String::new() } else { format!(", {} times", p.times) };
        out.push(format!(
            "fd passed (SCM_RIGHTS): {} [{}]{} from {}{to} over socket ino {}{}{times}",
            p.name,
            p.kind,
            row(p.channel),
            end(&Some(p.from.clone())),
            p.via,
            row(p.via_channel)
        ));
    }
    out
}
