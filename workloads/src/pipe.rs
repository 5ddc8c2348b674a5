//! Pipe and FIFO producer/consumer loops over an already-open fd: plain write(2)/read(2),
//! one call counted per system call, so the witness can be compared with what BPF saw.

use std::{
    os::fd::{AsFd, OwnedFd},
    time::Instant,
};

use anyhow::{Result, bail};
use nix::errno::Errno;

use crate::{
    pattern::{PatternBuf, first_mismatch},
    witness::Witness,
};

fn witness(role: &str, transport: &str) -> Witness {
    Witness {
        transport: transport.into(),
        role: role.into(),
        pid: std::process::id(),
        ..Default::default()
    }
}

/// Writes `total` pattern bytes in messages of `msg_size` (the last may be shorter).
/// `corrupt_at` flips one byte of the stream (a test hook for the consumer's verification).
pub fn produce(
    fd: OwnedFd,
    transport: &str,
    total: u64,
    msg_size: usize,
    corrupt_at: Option<u64>,
) -> Result<Witness> {
    let pat = PatternBuf::new(msg_size);
    let mut w = witness("producer", transport);
    let start = Instant::now();
    let mut scratch = vec![0u8; msg_size];
    let mut off = 0u64;
    while off < total {
        let len = msg_size.min((total - off) as usize);
        let mut msg: &[u8] = pat.window(off, len);
        if let Some(c) = corrupt_at.filter(|c| (off..off + len as u64).contains(c)) {
            scratch[..len].copy_from_slice(msg);
            scratch[(c - off) as usize] ^= 0xff;
            msg = &scratch[..len];
        }
        let mut done = 0;
        while done < len {
            w.calls += 1;
            match nix::unistd::write(fd.as_fd(), &msg[done..]) {
                Ok(n) => done += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => bail!(
                    "the consumer closed the {transport} after {} of {total} bytes",
                    off + done as u64
                ),
                Err(e) => bail!("write to the {transport} failed: {e}"),
            }
        }
        off += len as u64;
        w.messages += 1;
    }
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}

/// Reads until EOF in reads of at most `msg_size`, verifying every byte; fails if the stream
/// was corrupted or not exactly `total` bytes long.
pub fn consume(fd: OwnedFd, transport: &str, msg_size: usize) -> Result<Witness> {
    let pat = PatternBuf::new(msg_size);
    let mut w = witness("consumer", transport);
    let start = Instant::now();
    let mut buf = vec![0u8; msg_size];
    let mut off = 0u64;
    loop {
        w.calls += 1;
        let n = match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("read from the {transport} failed: {e}"),
        };
        if w.first_mismatch.is_none() {
            w.first_mismatch = first_mismatch(&pat, off, &buf[..n]);
        }
        off += n as u64;
        w.messages += 1;
    }
    w.bytes = off;
    w.verified_bytes = Some(w.first_mismatch.unwrap_or(off));
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}
