//! Finding out about processes ipctrace did not start: whether a PID exists and is a user
//! process, its name, and its IPC channels from /proc — every fd and every shared mapping is
//! offered to each transport family (`Family::find_in_fd`, `Family::find_in_maps`), with what
//! sock_diag says of the Unix sockets and /proc/sysvipc/msg of the SysV queues at the same
//! moment (`Scan`, `Family::find_in_scan`); and who outside the targets holds a socket. Reads
//! only.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use ipctrace_common::{RANGES_PER_PROCESS, Range, Ranges};
use serde::{Deserialize, Serialize};

use crate::{
    exit::{Code, fail},
    transport::FAMILIES,
};

/// A channel found in /proc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// A `ChannelKind` name.
    pub kind: String,
    pub ino: u64,
    /// FIFO path, shm object path (`/dev/shm/NAME`, `/memfd:NAME`, `/SYSV...`), socket name.
    pub path: Option<String>,
    /// A connected socket's peer (its inode): the other direction of the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
}

/// What one look at the system says beyond /proc/PID/fd: every Unix socket's type, peer and
/// name (sock_diag; empty if the dump failed), and every SysV message queue with the last
/// process that sent to it and received from it (/proc/sysvipc/msg).
#[derive(Default)]
pub struct Scan {
    pub unix: BTreeMap<u64, crate::kernel::sockdiag::UnixSock>,
    pub sysv_msg: Vec<SysvMsq>,
}

/// A SysV message queue as /proc/sysvipc/msg shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysvMsq {
    pub msqid: u32,
    pub lspid: u32,
    pub lrpid: u32,
}

impl Scan {
    pub fn now() -> Self {
        Self { unix: crate::kernel::sockdiag::unix_sockets().unwrap_or_default(), sysv_msg: sysv_msg_queues() }
    }
}

/// /proc/sysvipc/msg: `key msqid perms cbytes qnum lspid lrpid ...` after a header line.
fn sysv_msg_queues() -> Vec<SysvMsq> {
    let text = std::fs::read_to_string("/proc/sysvipc/msg").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(SysvMsq {
                msqid: f.get(1)?.parse().ok()?,
                lspid: f.get(5)?.parse().ok()?,
                lrpid: f.get(6)?.parse().ok()?,
            })
        })
        .collect()
}

/// The processes holding each of `inodes` as a socket fd (`socket:[INO]`), among every
/// process of the system: one walk of /proc/*/fd.
pub fn socket_holders(inodes: &BTreeSet<u64>) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    if inodes.is_empty() {
        return out;
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        for e in std::fs::read_dir(p.path().join("fd")).into_iter().flatten().flatten() {
            let Ok(t) = std::fs::read_link(e.path()) else { continue };
            let Some(ino) = t.to_str().and_then(|s| s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()) else {
                continue;
            };
            if inodes.contains(&ino) {
                out.entry(ino).or_insert(pid);
            }
        }
        if out.len() == inodes.len() {
            break;
        }
    }
    out
}

/// The process a thread id belongs to (`Tgid:` in /proc/TID/status); None if there is no
/// such thread.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

/// Checks that `pid` is a live user process; returns its name. Exit code 3 otherwise.
pub fn check_pid(pid: u32) -> anyhow::Result<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| fail(Code::Target, format!("no process with PID {pid}")))?;
    // Field 9 (after the parenthesized comm) is the flags word; PF_KTHREAD = 0x00200000.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    if flags & 0x0020_0000 != 0 {
        return Err(fail(
            Code::Target,
            format!("PID {pid} ({comm}) is a kernel thread: it has no user-space IPC to trace"),
        ));
    }
    if fields.first() == Some(&"Z") {
        return Err(fail(Code::Target, format!("PID {pid} ({comm}) has already exited (zombie)")));
    }
    Ok(comm)
}

/// Is the process gone (or a zombie)?
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => true,
    }
}

/// The channels among the process's open files.
fn fd_channels(pid: u32, scan: &Scan) -> Vec<Found> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else { continue };
        let link = target.to_string_lossy();
        if let Some(f) = FAMILIES.iter().find_map(|f| f.find_in_fd(&link, &e.path(), scan)) {
            out.push(f);
        }
    }
    out
}

/// Shared mappings that are channels: (channel, address range).
fn map_channels(pid: u32) -> Vec<(Found, u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            FAMILIES.iter().find_map(|fam| fam.find_in_maps(&f))
        })
        .collect()
}

/// Everything a process has open now; its shared mappings also as the programs' range table.
pub fn channels(pid: u32, scan: &Scan) -> (Vec<Found>, Ranges) {
    let mut found = fd_channels(pid, scan);
    found.extend(FAMILIES.iter().flat_map(|f| f.find_in_scan(pid, scan)));
    let mut ranges = Ranges::default();
    for (i, (c, start, end)) in map_channels(pid).into_iter().enumerate() {
        if i < RANGES_PER_PROCESS {
            ranges.r[i] = Range { start, end, ino: c.ino };
        }
        found.push(c);
    }
    found.sort_by(|a, b| (a.kind.as_str(), a.ino).cmp(&(b.kind.as_str(), b.ino)));
    found.dedup();
    (found, ranges)
}

/// True if `path` names this process's own executable (used to refuse tracing ipctrace itself).
pub fn is_self(pid: u32) -> bool {
    pid == std::process::id()
        || Path::new(&format!("/proc/{pid}")).canonicalize().ok() == Path::new("/proc/self").canonicalize().ok()
}
