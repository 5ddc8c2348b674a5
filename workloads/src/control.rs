//! The control channel between a launcher and a workload process: a Unix stream socket (not a
//! pipe, so ipctrace's pipe probes never count it) carrying the start gate and the witness.
//! Gate message: `GO` then the peer's pid as 4 little-endian bytes (0 if unknown).

use std::{
    io::{Read, Write},
    os::{fd::FromRawFd, unix::net::UnixStream},
};

use anyhow::{Context, Result, bail};

use crate::witness::Witness;

/// The byte that opens the gate.
pub const GO: u8 = b'g';
/// The byte a workload sends once it has started and is about to block at the gate.
pub const READY: u8 = b'r';

/// The gate message for a process whose peer is `peer`.
pub fn gate_message(peer: u32) -> [u8; 5] {
    let p = peer.to_le_bytes();
    [GO, p[0], p[1], p[2], p[3]]
}

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
        Self { sock: unsafe { UnixStream::from_raw_fd(fd) } }
    }

    /// Says "ready" (start-up is over), then blocks until the launcher opens the gate;
    /// returns the peer's pid (None if not given).
    pub fn wait_gate(&mut self) -> Result<Option<u32>> {
        self.sock.write_all(&[READY]).context("telling the launcher we are ready")?;
        let mut b = [0u8; 5];
        if self.sock.read_exact(&mut b).is_err() || b[0] != GO {
            bail!("the launcher went away before opening the start gate");
        }
        let peer = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        Ok((peer != 0).then_some(peer))
    }

    /// Sends the witness as one JSON line.
    pub fn report(&mut self, w: &Witness) -> Result<()> {
        let mut line = serde_json::to_vec(w)?;
        line.push(b'\n');
        self.sock.write_all(&line).context("sending the witness to the launcher")
    }
}
