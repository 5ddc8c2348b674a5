//! Pipe and FIFO producer/consumer loops over already-open fds: plain write(2)/read(2), one
//! call counted per system call, so the witness can be compared with what BPF saw. In
//! ping-pong mode the consumer acknowledges each message with one byte on a second channel.

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    time::Instant,
};

use anyhow::{Result, bail};
use nix::errno::Errno;

use crate::{
    pattern::{PatternBuf, first_mismatch},
    stream::{RttRecorder, StreamOpts, witness},
    witness::Witness,
};

/// Writes the stream in messages of `o.msg_size` (the last may be shorter).
pub fn produce(fd: OwnedFd, ack: Option<OwnedFd>, transport: &str, o: &StreamOpts) -> Result<Witness> {
    let pat = PatternBuf::new(o.msg_size);
    let mut w = witness("producer", transport);
    let start = Instant::now();
    let mut scratch = vec![0u8; o.msg_size];
    let mut rtt = RttRecorder::default();
    let mut off = 0u64;
    while let Some(len) = o.next_len(off, w.messages) {
        let mut msg: &[u8] = pat.window(off, len);
        if let Some(c) = o.corrupt_at.filter(|c| (off..off + len as u64).contains(c)) {
            scratch[..len].copy_from_slice(msg);
            scratch[(c - off) as usize] ^= 0xff;
            msg = &scratch[..len];
        }
        let t0 = Instant::now();
        let mut done = 0;
        while done < len {
            w.calls += 1;
            match nix::unistd::write(fd.as_fd(), &msg[done..]) {
                Ok(n) => done += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => bail!("the consumer closed the {transport} after {} bytes", off + done as u64),
                Err(e) => bail!("write to the {transport} failed: {e}"),
            }
        }
        off += len as u64;
        w.messages += 1;
        if let Some(ack) = &ack {
            let mut b = [0u8; 1];
            loop {
                match nix::unistd::read(ack.as_fd(), &mut b) {
                    Ok(1) => break,
                    Ok(_) => bail!("the consumer went away (no acknowledgement)"),
                    Err(Errno::EINTR) => continue,
                    Err(e) => bail!("reading the acknowledgement failed: {e}"),
                }
            }
            rtt.record(t0.elapsed());
        }
    }
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    w.rtt = rtt.summary();
    Ok(w)
}

/// Reads until EOF, verifying every byte; in ping-pong mode reads whole messages and
/// acknowledges each.
pub fn consume(fd: OwnedFd, ack: Option<OwnedFd>, transport: &str, o: &StreamOpts) -> Result<Witness> {
    let pat = PatternBuf::new(o.msg_size);
    let mut w = witness("consumer", transport);
    let start = Instant::now();
    let mut buf = vec![0u8; o.msg_size];
    let mut off = 0u64;
    let mut in_msg = 0usize;
    loop {
        let want = if ack.is_some() { o.expect_len(off - in_msg as u64) - in_msg } else { o.msg_size };
        let want = want.max(1);
        w.calls += 1;
        let n = match nix::unistd::read(fd.as_fd(), &mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("read from the {transport} failed: {e}"),
        };
        if w.first_mismatch.is_none() {
            w.first_mismatch = first_mismatch(&pat, off, &buf[..n]);
        }
        off += n as u64;
        match &ack {
            Some(ack) => {
                in_msg += n;
                if in_msg == o.expect_len(off - in_msg as u64) {
                    in_msg = 0;
                    w.messages += 1;
                    nix::unistd::write(ack.as_fd(), b"a").map_err(|e| anyhow::anyhow!("acknowledging failed: {e}"))?;
                }
            }
            None => w.messages += 1,
        }
    }
    w.bytes = off;
    w.verified_bytes = Some(w.first_mismatch.unwrap_or(off));
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}

/// Drains the pipe with splice(2) into /dev/null until EOF: the pages leave the pipe without a
/// copy to user memory. Counts calls and bytes; cannot verify content (it never sees it).
pub fn consume_splice(fd: OwnedFd, transport: &str, o: &StreamOpts) -> Result<Witness> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let mut w = witness("consumer", transport);
    let start = Instant::now();
    let mut off = 0u64;
    loop {
        w.calls += 1;
        // SAFETY: splice between two fds we own, no offsets.
        let n = unsafe {
            libc::splice(fd.as_raw_fd(), std::ptr::null_mut(), null.as_raw_fd(), std::ptr::null_mut(), o.msg_size, 0)
        };
        match n {
            0 => break,
            n if n > 0 => {
                off += n as u64;
                w.messages += 1;
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                bail!("splice from the {transport} failed: {e}");
            }
        }
    }
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}
