//! The Unix domain socket transports: `unix-stream`, `unix-dgram` and `unix-seqpacket`. By
//! default a socketpair the launcher hands over as fds; with `--socket-path PATH` a named
//! socket (`@name`: the abstract namespace) the launcher binds (refusing an existing path) and
//! the consumer accepts on, the producer connecting by name. The loops are send(2)/recv(2),
//! one call counted per system call; every byte is verified. A datagram stream ends with a
//! 0-byte datagram (a closed datagram peer gives no EOF). Datagram sizes above what the socket
//! takes are refused with the limit named (`max_datagram`).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Channel, ChannelKind, Cleanup, RoleCtx, RoleFds, Spec};
use crate::{
    cleanup,
    pattern::{PatternBuf, first_mismatch},
    role::{Role, RoleArgs},
    spawn::Launch,
    stream::{RttRecorder, StreamOpts, witness},
    witness::Witness,
};

pub static UNIX_STREAM: Spec =
    Spec { name: "unix-stream", kind: ChannelKind::UnixStream, setup, prepare, run: run_role };
pub static UNIX_DGRAM: Spec = Spec { name: "unix-dgram", kind: ChannelKind::UnixDgram, setup, prepare, run: run_role };
pub static UNIX_SEQPACKET: Spec =
    Spec { name: "unix-seqpacket", kind: ChannelKind::UnixSeqpacket, setup, prepare, run: run_role };

/// Receive timeout: a blocked side looks at its peer this often.
const WAIT: Duration = Duration::from_millis(250);

fn sock_type(k: ChannelKind) -> libc::c_int {
    match k {
        ChannelKind::UnixDgram => libc::SOCK_DGRAM,
        ChannelKind::UnixSeqpacket => libc::SOCK_SEQPACKET,
        _ => libc::SOCK_STREAM,
    }
}

/// Message-preserving (datagram, seqpacket): each send is one message, read whole.
fn is_message(k: ChannelKind) -> bool {
    k != ChannelKind::UnixStream
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int> {
    if r < 0 {
        bail!("{what} failed: {}", std::io::Error::last_os_error());
    }
    Ok(r)
}

fn socket(k: ChannelKind) -> Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = check(unsafe { libc::socket(libc::AF_UNIX, sock_type(k) | libc::SOCK_CLOEXEC, 0) }, "socket(AF_UNIX)")?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sockaddr_un` for a path, or for `@name` in the abstract namespace; with its length.
fn address(path: &str) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, abstract_ns) = match path.strip_prefix('@') {
        Some(name) => (name.as_bytes(), true),
        None => (path.as_bytes(), false),
    };
    let start = usize::from(abstract_ns);
    if bytes.len() + start >= a.sun_path.len() {
        bail!("socket path {path:?} is longer than the {} bytes a sockaddr_un holds", a.sun_path.len() - 1);
    }
    for (i, b) in bytes.iter().enumerate() {
        a.sun_path[start + i] = *b as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    let len = base + start + bytes.len() + usize::from(!abstract_ns);
    Ok((a, len as libc::socklen_t))
}

/// The largest datagram a socket of this kind carries once its send buffer is raised as far
/// as this process may (SO_SNDBUFFORCE with CAP_NET_ADMIN, else SO_SNDBUF up to
/// net.core.wmem_max): the kernel refuses a datagram above `sk_sndbuf - 32` (EMSGSIZE).
pub fn max_datagram(k: ChannelKind) -> Result<u64> {
    let s = socket(k)?;
    raise_buffers(&s);
    let mut v: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int.
    check(
        unsafe {
            libc::getsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&mut v as *mut i32).cast(), &mut l)
        },
        "getsockopt(SO_SNDBUF)",
    )?;
    Ok((v as u64).saturating_sub(32))
}

/// Raises a socket's buffers as far as allowed (the kernel doubles what is set).
fn raise_buffers(s: &OwnedFd) {
    let want: libc::c_int = 64 << 20;
    for (force, plain) in [(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF), (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)] {
        let set = |opt| {
            // SAFETY: setsockopt with a local int.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&want as *const i32).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            // Without CAP_NET_ADMIN: up to net.core.{w,r}mem_max.
            let _ = set(plain);
        }
    }
}

/// The launcher: a socketpair (the producer's end at fd 4, the consumer's at fd 4), or a
/// named socket bound here and handed to the consumer.
fn setup(l: &Launch) -> Result<Channel> {
    let k = l.transport.kind();
    if is_message(k) && l.msg_size > max_datagram(k)? {
        bail!(
            "{} messages of {} bytes are above the largest datagram this socket takes ({} bytes)",
            l.transport,
            l.msg_size,
            max_datagram(k)?
        );
    }
    match &l.socket_path {
        None => {
            let mut fds = [0; 2];
            // SAFETY: socketpair into a local array.
            check(
                unsafe { libc::socketpair(libc::AF_UNIX, sock_type(k) | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) },
                "socketpair",
            )?;
            // SAFETY: two fresh fds we own.
            let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            raise_buffers(&a);
            raise_buffers(&b);
            let ino = nix::sys::stat::fstat(&b).context("fstat of the consumer's socket")?.st_ino;
            Ok(Channel {
                fds: [RoleFds { data: Some(a), ack: None }, RoleFds { data: Some(b), ack: None }],
                ino: Some(ino),
                ..Default::default()
            })
        }
        Some(path) => {
            let s = socket(k)?;
            raise_buffers(&s);
            let (addr, len) = address(path)?;
            // SAFETY: bind with a valid sockaddr_un of `len` bytes.
            let r = unsafe { libc::bind(s.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                bail!("binding the socket {path} failed: {e}");
            }
            // The launcher created it: it removes it if the run never got to.
            let cleanup = (!path.starts_with('@')).then(|| Cleanup::Path(path.into()));
            if k != ChannelKind::UnixDgram {
                check(unsafe { libc::listen(s.as_raw_fd(), 1) }, "listen")?;
            }
            let ino = nix::sys::stat::fstat(&s).context("fstat of the bound socket")?.st_ino;
            Ok(Channel {
                fds: [RoleFds::default(), RoleFds { data: Some(s), ack: None }],
                ino: Some(ino),
                path: Some(path.clone()),
                cleanup,
            })
        }
    }
}

/// A named socket's file goes if the process is killed before the run removes it.
fn prepare(a: &RoleArgs) -> Result<()> {
    if let Some(p) = a.path.as_deref().filter(|p| !p.starts_with('@')) {
        cleanup::register_path(p);
    }
    Ok(())
}

fn remove_name(a: &RoleArgs) {
    if let Some(p) = a.path.as_deref().filter(|p| !p.starts_with('@')) {
        let _ = std::fs::remove_file(p);
        cleanup::unregister_path(p);
    }
}

/// The data socket of this role: inherited, accepted on the named socket, or connected to it.
fn data_socket(a: &RoleArgs, k: ChannelKind) -> Result<OwnedFd> {
    let named = a.path.is_some();
    // SAFETY: the launcher placed this fd here for us (socketpair end, or the bound socket).
    let inherited = || unsafe { OwnedFd::from_raw_fd(a.data_fd) };
    match (named, a.role) {
        (false, _) => Ok(inherited()),
        (true, Role::Consumer) if k == ChannelKind::UnixDgram => Ok(inherited()),
        (true, Role::Consumer) => {
            let l = inherited();
            // SAFETY: accept on our listening socket.
            let fd = check(
                unsafe { libc::accept4(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) },
                "accept",
            )?;
            // Connected: the name is no longer needed.
            remove_name(a);
            // SAFETY: a fresh fd from accept.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        (true, Role::Producer) => {
            let s = socket(k)?;
            raise_buffers(&s);
            let (addr, len) = address(a.path.as_deref().unwrap_or_default())?;
            // SAFETY: connect with a valid sockaddr_un.
            check(
                unsafe { libc::connect(s.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) },
                "connect to the named socket",
            )?;
            Ok(s)
        }
    }
}

fn set_recv_timeout(s: &OwnedFd) -> Result<()> {
    let tv = libc::timeval { tv_sec: 0, tv_usec: WAIT.as_micros() as libc::suseconds_t };
    // SAFETY: setsockopt with a local timeval.
    check(
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        },
        "setsockopt(SO_RCVTIMEO)",
    )?;
    Ok(())
}

/// One send(2); Err(errno) on failure.
fn send(s: &OwnedFd, buf: &[u8]) -> std::result::Result<usize, i32> {
    // SAFETY: send from a valid buffer; MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE.
    let n = unsafe { libc::send(s.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(n as usize) }
}

/// One recv(2) into `buf` with `flags`; Err(errno) on failure.
fn recv(s: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> std::result::Result<usize, i32> {
    // SAFETY: recv into a valid buffer.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(n as usize) }
}

fn run_role(c: &RoleCtx) -> Result<Witness> {
    let a = c.args;
    let k = a.transport.kind();
    let s = data_socket(a, k)?;
    set_recv_timeout(&s)?;
    let name = a.transport.name();
    let w = match a.role {
        Role::Producer => produce(&s, k, name, c)?,
        Role::Consumer => consume(&s, k, name, c)?,
    };
    if a.role == Role::Consumer {
        remove_name(a);
    }
    Ok(w)
}

/// Waits for a one-byte acknowledgement (ping-pong) on the same socket.
fn wait_ack(s: &OwnedFd, c: &RoleCtx) -> Result<()> {
    let mut b = [0u8; 1];
    loop {
        match recv(s, &mut b, 0) {
            Ok(1) => return Ok(()),
            Ok(_) => bail!("the consumer went away (no acknowledgement)"),
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => c.peer.check("consumer")?,
            Err(e) => bail!("reading the acknowledgement failed: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// A memfd holding `len` pattern bytes from stream offset 0 (sendfile's source).
fn pattern_memfd(len: usize) -> Result<OwnedFd> {
    let name = std::ffi::CString::new("ipctrace-pattern")?;
    // SAFETY: memfd_create with a valid name.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) }, "memfd_create")?;
    // SAFETY: a fresh fd we own.
    let f = unsafe { OwnedFd::from_raw_fd(fd) };
    let pat = PatternBuf::new(len);
    let data = pat.window(0, len);
    let mut done = 0;
    while done < len {
        // SAFETY: write from a valid buffer.
        let n = unsafe { libc::write(f.as_raw_fd(), data[done..].as_ptr().cast(), len - done) };
        check(n as libc::c_int, "writing the pattern into the memfd")?;
        done += n as usize;
    }
    Ok(f)
}

/// The producer with sendfile(2): each message is spliced from the memfd at the pattern's
/// phase (`off % PERIOD`), so the consumer verifies it as usual.
fn produce_sendfile(s: &OwnedFd, transport: &str, c: &RoleCtx) -> Result<Witness> {
    let o: &StreamOpts = &c.stream;
    let mut w = witness("producer", transport);
    let start = Instant::now();
    let src = pattern_memfd(o.msg_size + crate::pattern::PERIOD)?;
    let mut off = 0u64;
    while let Some(len) = o.next_len(off, w.messages) {
        let mut done = 0usize;
        while done < len {
            let mut at = ((off + done as u64) % crate::pattern::PERIOD as u64) as libc::off_t;
            w.calls += 1;
            // SAFETY: sendfile between two fds we own, with a local offset.
            let n = unsafe { libc::sendfile(s.as_raw_fd(), src.as_raw_fd(), &mut at, len - done) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => c.peer.check("consumer")?,
                    Some(libc::EPIPE | libc::ECONNRESET) => {
                        bail!("the consumer closed the {transport} socket after {} bytes", off + done as u64)
                    }
                    _ => bail!("sendfile into the {transport} socket failed: {}", std::io::Error::last_os_error()),
                }
                continue;
            }
            done += n as usize;
        }
        off += len as u64;
        w.messages += 1;
    }
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}

fn produce(s: &OwnedFd, k: ChannelKind, transport: &str, c: &RoleCtx) -> Result<Witness> {
    if c.args.shape.sendfile_producer {
        if k != ChannelKind::UnixStream {
            bail!("--sendfile-producer applies to unix-stream only");
        }
        return produce_sendfile(s, transport, c);
    }
    let o: &StreamOpts = &c.stream;
    let pat = PatternBuf::new(o.msg_size);
    let mut w = witness("producer", transport);
    let start = Instant::now();
    let mut scratch = vec![0u8; o.msg_size];
    let mut rtt = RttRecorder::default();
    let mut off = 0u64;
    while let Some(len) = o.next_len(off, w.messages) {
        let mut msg: &[u8] = pat.window(off, len);
        if let Some(x) = o.corrupt_at.filter(|x| (off..off + len as u64).contains(x)) {
            scratch[..len].copy_from_slice(msg);
            scratch[(x - off) as usize] ^= 0xff;
            msg = &scratch[..len];
        }
        let t0 = Instant::now();
        let mut done = 0;
        while done < len {
            w.calls += 1;
            match send(s, &msg[done..]) {
                // A message socket sends the whole message or nothing.
                Ok(n) => done += if is_message(k) { len } else { n },
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN | libc::ENOBUFS) => c.peer.check("consumer")?,
                Err(libc::EPIPE | libc::ECONNREFUSED | libc::ECONNRESET) => {
                    bail!("the consumer closed the {transport} socket after {} bytes", off + done as u64)
                }
                Err(e) => bail!("send on the {transport} socket failed: {}", std::io::Error::from_raw_os_error(e)),
            }
        }
        off += len as u64;
        w.messages += 1;
        if o.ping_pong {
            wait_ack(s, c)?;
            rtt.record(t0.elapsed());
        }
    }
    if k == ChannelKind::UnixDgram {
        // The end of the stream: a closed datagram peer gives the consumer no EOF.
        w.calls += 1;
        if let Err(e) = send(s, &[]) {
            bail!("sending the end marker failed: {}", std::io::Error::from_raw_os_error(e));
        }
    }
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    w.rtt = rtt.summary();
    Ok(w)
}

fn consume(s: &OwnedFd, k: ChannelKind, transport: &str, c: &RoleCtx) -> Result<Witness> {
    let o: &StreamOpts = &c.stream;
    let pat = PatternBuf::new(o.msg_size);
    let mut w = witness("consumer", transport);
    let start = Instant::now();
    // A test hook reads datagrams into a shorter buffer with MSG_TRUNC: recv returns the
    // datagram's length, the kernel copies only what fits.
    let short = c.args.shape.recv_buffer.filter(|_| is_message(k)).map(|b| b as usize);
    let mut buf = vec![0u8; short.unwrap_or(o.msg_size).max(1)];
    let flags = if short.is_some() { libc::MSG_TRUNC } else { 0 };
    let (mut off, mut copied) = (0u64, 0u64);
    loop {
        w.calls += 1;
        let n = match recv(s, &mut buf, flags) {
            Ok(0) => break,
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => {
                c.peer.check("producer")?;
                continue;
            }
            Err(e) => bail!("recv on the {transport} socket failed: {}", std::io::Error::from_raw_os_error(e)),
        };
        let landed = n.min(buf.len());
        if w.first_mismatch.is_none() {
            w.first_mismatch = first_mismatch(&pat, off, &buf[..landed]);
        }
        copied += landed as u64;
        off += n as u64;
        w.messages += 1;
        if o.ping_pong {
            loop {
                match send(s, b"a") {
                    Ok(_) => break,
                    Err(libc::EINTR) => continue,
                    Err(e) => bail!("acknowledging failed: {}", std::io::Error::from_raw_os_error(e)),
                }
            }
        }
    }
    w.bytes = off;
    if short.is_some() {
        // Only what landed in the buffer was checked (first_mismatch); the rest of each
        // datagram was dropped by the kernel, so nothing counts as verified.
        w.copied_bytes = Some(copied);
    } else {
        w.verified_bytes = Some(w.first_mismatch.unwrap_or(off));
    }
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let (a, len) = address("/tmp/x.sock").unwrap();
        assert_eq!(a.sun_path[0], b'/' as libc::c_char);
        assert_eq!(len as usize, 2 + "/tmp/x.sock".len() + 1);
        let (a, len) = address("@ipctrace").unwrap();
        assert_eq!(a.sun_path[0], 0, "abstract: leading NUL");
        assert_eq!(len as usize, 2 + 1 + "ipctrace".len());
        assert!(address(&"x".repeat(200)).is_err());
    }

    #[test]
    fn datagrams_have_a_limit() {
        let m = max_datagram(ChannelKind::UnixDgram).unwrap();
        assert!(m >= 200_000, "at least the default buffer: {m}");
    }
}
