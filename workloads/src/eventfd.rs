//! Eventfd notifications made directly (`shm-eventfd`): write(2) of 1 to tell the peer,
//! poll(2) on the fd to wait for it (with a timeout, so a dead peer is noticed), then a
//! non-blocking read(2) to take it; each call counted by result so the workload is a witness
//! for ipctrace's eventfd and poll counts.

use std::{os::fd::RawFd, time::Duration};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// What this process did with its eventfds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventfdWitness {
    /// write(2) calls on an eventfd (each a notification of the peer).
    pub writes: u64,
    /// read(2) calls on an eventfd, all results.
    pub reads: u64,
    /// ... that returned EAGAIN (nothing there: the notification was taken already).
    pub reads_eagain: u64,
    /// poll(2) calls of this process after the gate: waits for an eventfd, and the
    /// zero-timeout checks of the peer's pidfd (`Peer::check`) made while the ring was idle.
    pub polls: u64,
    /// ... that returned with the fd readable (woken by the peer's write, or it was there).
    pub polls_ready: u64,
    /// ... that timed out.
    pub polls_timedout: u64,
}

/// Two eventfds for the launcher to hand to both roles (`data` at fd 4: the consumer waits
/// there; `space` at fd 5: the producer waits there). Non-blocking: a read is made only after
/// poll said the fd is readable, and never sleeps.
pub fn pair() -> Result<[std::os::fd::OwnedFd; 2]> {
    let make = || -> Result<std::os::fd::OwnedFd> {
        // SAFETY: eventfd with valid flags; the fd is ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            bail!("eventfd failed: {}", std::io::Error::last_os_error());
        }
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    };
    Ok([make()?, make()?])
}

impl EventfdWitness {
    /// Tells the peer waiting on `fd`.
    pub fn notify(&mut self, fd: RawFd) {
        let one: u64 = 1;
        self.writes += 1;
        // SAFETY: an 8-byte write from a local into an eventfd.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }

    /// Waits up to `timeout` for `fd` to be readable and takes what is there: true if it was
    /// readable (a notification arrived), false on timeout.
    pub fn wait(&mut self, fd: RawFd, timeout: Duration) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        self.polls += 1;
        // SAFETY: poll on one local pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
        if r <= 0 {
            if r == 0 {
                self.polls_timedout += 1;
            }
            return false;
        }
        self.polls_ready += 1;
        let mut v: u64 = 0;
        self.reads += 1;
        // SAFETY: an 8-byte read into a local from a non-blocking eventfd.
        if unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) } < 0 {
            self.reads_eagain += 1;
        }
        true
    }
}
