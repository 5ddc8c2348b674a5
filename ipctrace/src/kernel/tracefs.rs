//! Makes tracefs reachable for tracepoint attachment. If it is not mounted, ipctrace mounts it
//! in a private mount namespace of its own, which vanishes with the process: nothing is left.
//! Must run before any thread is started (unshare(CLONE_NEWNS) is per-thread otherwise).
//! Also reads tracepoint record layouts from the `format` files.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use ipctrace_common::TpOffsets;
use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

fn populated(p: &str) -> bool {
    Path::new(p).read_dir().map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// How tracefs was made available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracefs {
    AlreadyMounted,
    MountedPrivately,
}

/// Ensures tracefs is mounted where aya looks for it.
pub fn ensure() -> Result<Tracefs> {
    if populated(TRACEFS) || populated(DEBUGFS_TRACING) {
        return Ok(Tracefs::AlreadyMounted);
    }
    unshare(CloneFlags::CLONE_NEWNS).context("tracefs is not mounted and unshare(CLONE_NEWNS) failed")?;
    // Stop our mounts from propagating back to the host namespace.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making the private mount namespace private")?;
    mount(Some("nodev"), TRACEFS, Some("tracefs"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting tracefs on {TRACEFS} in a private namespace"))?;
    Ok(Tracefs::MountedPrivately)
}

/// The tracefs directory in use (after `ensure`).
pub fn root() -> &'static str {
    if populated(TRACEFS) { TRACEFS } else { DEBUGFS_TRACING }
}

/// Does `category:name` exist on this kernel?
pub fn event_exists(category: &str, name: &str) -> bool {
    Path::new(root()).join("events").join(category).join(name).is_dir()
}

/// Offset of `field` in the record of tracepoint `category:name`, from its format file.
pub fn field_offset(category: &str, name: &str, field: &str) -> Result<u32> {
    let path = Path::new(root()).join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_field_offset(&text, field).ok_or_else(|| anyhow!("field {field} not in {}", path.display()))
}

/// `field:pid_t child_pid;\toffset:20;\tsize:4;...` -> 20 for `child_pid`.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|l| {
        let decl = l.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        l.split(';').find_map(|p| p.trim().strip_prefix("offset:")?.parse().ok())
    })
}

/// Every tracepoint field offset the programs read; a missing one stays UNKNOWN (u32::MAX)
/// and the program that needs it records nothing rather than reading garbage.
pub fn tp_offsets() -> TpOffsets {
    let get = |c: &str, n: &str, f: &str| field_offset(c, n, f).unwrap_or(u32::MAX);
    TpOffsets {
        sock_len_sk: get("sock", "sock_send_length", "sk"),
        sock_len_family: get("sock", "sock_send_length", "family"),
        sock_len_ret: get("sock", "sock_send_length", "ret"),
        skb_copy_len: get("skb", "skb_copy_datagram_iovec", "len"),
        fork_parent_pid: get("sched", "sched_process_fork", "parent_pid"),
        fork_child_pid: get("sched", "sched_process_fork", "child_pid"),
        switch_prev_state: get("sched", "sched_switch", "prev_state"),
        switch_next_pid: get("sched", "sched_switch", "next_pid"),
        wakeup_pid: get("sched", "sched_waking", "pid"),
        fault_address: get("exceptions", "page_fault_user", "address"),
        alloc_order: get("kmem", "mm_page_alloc", "order"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_format_files() {
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(new, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(new, "parent_comm"), Some(8));
        let old = "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n";
        assert_eq!(parse_field_offset(old, "prev_comm"), Some(8));
        assert_eq!(parse_field_offset(old, "prev_state"), Some(32));
        assert_eq!(parse_field_offset(old, "state"), None);
    }
}
