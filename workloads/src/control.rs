//! The control channel between a launcher and a workload process: a Unix stream socket (not a
//! pipe, so ipctrace's pipe probes never count it) carrying the start gate and the witness.

use std::{
    io::{Read, Write},
    os::{fd::FromRawFd, unix::net::UnixStream},
};

use anyhow::{Context, Result, bail};

use crate::witness::Witness;

/// The byte that opens the gate.
pub const GO: u8 = b'g';

/// Workload side: the control socket passed as fd `fd`.
pub struct Control {
    sock: UnixStream,
}

impl Control {
    /// Takes ownership of the inherited fd.
    ///
    /// # Safety
    /// `fd` must be an open Unix stream socket owned by nothing else in this process.
    pub unsafe fn from_fd(fd: i32) -> Self {
        Self {
            sock: unsafe { UnixStream::from_raw_fd(fd) },
        }
    }

    /// Blocks until the launcher opens the gate; fails if it closed the channel instead.
    pub fn wait_gate(&mut self) -> Result<()> {
        let mut b = [0u8; 1];
        let n = self.sock.read(&mut b).context("reading the start gate")?;
        if n != 1 || b[0] != GO {
            bail!("the launcher went away before opening the start gate");
        }
        Ok(())
    }

    /// Sends the witness as one JSON line.
    pub fn report(&mut self, w: &Witness) -> Result<()> {
        let mut line = serde_json::to_vec(w)?;
        line.push(b'\n');
        self.sock
            .write_all(&line)
            .context("sending the witness to the launcher")
    }
}
