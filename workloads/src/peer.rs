//! Notices when the other side of a workload has died (pidfd_open + poll), so a process
//! blocked on a ring never hangs: its waits time out periodically and it checks here.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Result, bail};

pub struct Peer {
    pid: u32,
    fd: Option<OwnedFd>,
    /// The peer had already exited when we started watching (a fast producer can finish and
    /// be reaped before its consumer leaves the gate): not an error until we need it alive.
    gone: bool,
    /// poll(2) calls made by `check` (part of a witness that counts a process's polls).
    polls: std::cell::Cell<u64>,
}

impl Peer {
    /// Watches `pid` (None: nothing to watch, `alive` always succeeds).
    pub fn new(pid: Option<u32>) -> Result<Self> {
        let Some(pid) = pid else {
            return Ok(Self { pid: 0, fd: None, gone: false, polls: Default::default() });
        };
        // SAFETY: pidfd_open(2) has no memory arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(Self { pid, fd: None, gone: true, polls: Default::default() });
            }
            bail!("watching the peer process {pid} failed: {err}");
        }
        // SAFETY: a fresh fd from pidfd_open.
        Ok(Self { pid, fd: Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }), gone: false, polls: Default::default() })
    }

    /// Fails if the peer has exited.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.gone {
            bail!("the {what} (pid {}) exited; giving up", self.pid);
        }
        let Some(fd) = &self.fd else { return Ok(()) };
        let mut p = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(fd), events: libc::POLLIN, revents: 0 };
        self.polls.set(self.polls.get() + 1);
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r > 0 {
            bail!("the {what} (pid {}) died; giving up", self.pid);
        }
        Ok(())
    }

    /// poll(2) calls `check` made (each returned 0, or the check failed).
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }
}
