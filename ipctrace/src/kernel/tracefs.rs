//! Makes tracefs reachable for tracepoint attachment. If it is not mounted, ipctrace mounts it
//! in a private mount namespace of its own, which vanishes with the process: nothing is left.
//! Must run before any thread is started (unshare(CLONE_NEWNS) is per-thread otherwise).
//! Also says which tracepoints the kernel has.

use std::path::Path;

use anyhow::{Context, Result};
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
