//! The pipe transports: an anonymous pipe the launcher creates and hands over as fds, and a
//! FIFO in a private directory both sides open by path. The loops are plain write(2)/read(2),
//! one call counted per system call, so the witness can be compared with what BPF saw. In
//! ping-pong mode the consumer acknowledges each message with one byte on a second channel.

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;

use super::{Channel, ChannelKind, Cleanup, RoleCtx, RoleFds, Spec, nothing_to_prepare};
use crate::{
    cleanup,
    pattern::{PatternBuf, first_mismatch},
    role::{Role, RoleArgs},
    spawn::Launch,
    stream::{RttRecorder, StreamOpts, witness},
    witness::Witness,
};

pub static PIPE: Spec =
    Spec { name: "pipe", kind: ChannelKind::AnonPipe, setup: setup_pipe, prepare: nothing_to_prepare, run: run_pipe };

pub static FIFO: Spec =
    Spec { name: "fifo", kind: ChannelKind::Fifo, setup: setup_fifo, prepare: prepare_fifo, run: run_fifo };

/// The data pipe, and in ping-pong mode an acknowledgement pipe the other way.
fn setup_pipe(l: &Launch) -> Result<Channel> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the data pipe")?;
    let ino = nix::sys::stat::fstat(&r).context("fstat of the data pipe")?.st_ino;
    let (ack_r, ack_w) = match l.shape.ping_pong {
        true => {
            let (a, b) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the ack pipe")?;
            (Some(a), Some(b))
        }
        false => (None, None),
    };
    // The producer reads acknowledgements, the consumer writes them.
    Ok(Channel {
        fds: [RoleFds { data: Some(w), ack: ack_r }, RoleFds { data: Some(r), ack: ack_w }],
        ino: Some(ino),
        ..Default::default()
    })
}

/// A FIFO (and its ack FIFO) in a fresh private directory.
fn setup_fifo(l: &Launch) -> Result<Channel> {
    let mode = nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR;
    let dir = nix::unistd::mkdtemp("/tmp/ipctrace-fifo-XXXXXX").context("creating a private directory for the FIFO")?;
    let ch = Channel { cleanup: Some(Cleanup::Dir(dir.clone())), ..Default::default() };
    let path = dir.join("fifo");
    nix::unistd::mkfifo(&path, mode).context("mkfifo")?;
    if l.shape.ping_pong {
        nix::unistd::mkfifo(&dir.join("fifo.ack"), mode).context("mkfifo")?;
    }
    let ino = nix::sys::stat::stat(&path)?.st_ino;
    Ok(Channel { ino: Some(ino), path: Some(path.to_string_lossy().into_owned()), ..ch })
}

fn fifo_path(a: &RoleArgs) -> Result<&str> {
    a.path.as_deref().context("--path is required for the fifo transport")
}

/// The FIFO names (and their directory) go if the process is killed at the gate.
fn prepare_fifo(a: &RoleArgs) -> Result<()> {
    let p = fifo_path(a)?;
    cleanup::register_path(p);
    cleanup::register_path(&format!("{p}.ack"));
    if let Some(dir) = std::path::Path::new(p).parent() {
        cleanup::register_path(&dir.to_string_lossy());
    }
    Ok(())
}

fn remove_fifo_names(path: &str) {
    // Both ends are open: the names (and their private directory) can go.
    for p in [path.to_string(), format!("{path}.ack")] {
        let _ = std::fs::remove_file(&p);
        cleanup::unregister_path(&p);
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::remove_dir(dir);
        cleanup::unregister_path(&dir.to_string_lossy());
    }
}

fn open_fifo(path: &str, role: Role) -> Result<OwnedFd> {
    let flags = match role {
        Role::Producer => nix::fcntl::OFlag::O_WRONLY,
        Role::Consumer => nix::fcntl::OFlag::O_RDONLY,
    } | nix::fcntl::OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).with_context(|| format!("opening the FIFO {path}"))
}

fn run_pipe(c: &RoleCtx) -> Result<Witness> {
    let a = c.args;
    // SAFETY: the launcher placed the pipe ends here.
    let data = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(a.data_fd) };
    let ack = a.shape.ping_pong.then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(a.ack_fd) });
    run_role(c, data, ack)
}

fn run_fifo(c: &RoleCtx) -> Result<Witness> {
    let a = c.args;
    let p = fifo_path(a)?;
    // The ack FIFO is opened in the opposite direction, after the data FIFO.
    let data = open_fifo(p, a.role)?;
    let ack = if a.shape.ping_pong {
        let other = if a.role == Role::Producer { Role::Consumer } else { Role::Producer };
        Some(open_fifo(&format!("{p}.ack"), other)?)
    } else {
        None
    };
    if a.role == Role::Consumer {
        remove_fifo_names(p);
    }
    run_role(c, data, ack)
}

fn run_role(c: &RoleCtx, data: OwnedFd, ack: Option<OwnedFd>) -> Result<Witness> {
    let name = c.args.transport.name();
    match c.args.role {
        Role::Producer => produce(data, ack, name, &c.stream),
        Role::Consumer if c.args.shape.splice_consumer => consume_splice(data, name, &c.stream),
        Role::Consumer => consume(data, ack, name, &c.stream),
    }
}

/// Writes the stream in messages of `o.msg_size` (the last may be shorter).
fn produce(fd: OwnedFd, ack: Option<OwnedFd>, transport: &str, o: &StreamOpts) -> Result<Witness> {
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
fn consume(fd: OwnedFd, ack: Option<OwnedFd>, transport: &str, o: &StreamOpts) -> Result<Witness> {
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
fn consume_splice(fd: OwnedFd, transport: &str, o: &StreamOpts) -> Result<Witness> {
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
