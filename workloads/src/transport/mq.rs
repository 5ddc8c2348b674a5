//! The message-queue transports: `mq` (POSIX: mq_timedsend/mq_timedreceive on a queue the
//! launcher creates with O_EXCL and unlinks at once, so no name outlives the run whatever
//! kills it; both roles inherit the descriptor at fd 4) and `sysv-msg` (msgsnd/msgrcv on a
//! private queue whose id the roles get as `--path`, held by a keeper process that removes it
//! when the run ends or the launcher dies; the consumer also removes it at the end, and a
//! role's signal handler if it is stopped). One message per call; a 0-byte
//! message ends the stream; every byte is verified. A message above what the queue takes is
//! refused with the limit named (`max_message`).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{Channel, ChannelKind, Cleanup, RoleCtx, RoleFds, Spec};
use crate::{
    cleanup,
    pattern::{PatternBuf, first_mismatch},
    role::{Role, RoleArgs},
    spawn::{Launch, random_u64},
    stream::witness,
    witness::Witness,
};

pub static MQ: Spec = Spec { name: "mq", kind: ChannelKind::MsgQueue, setup: setup_mq, prepare, run: run_role };
pub static SYSV_MSG: Spec =
    Spec { name: "sysv-msg", kind: ChannelKind::SysvMsg, setup: setup_sysv, prepare, run: run_role };

/// A blocked side looks at its peer this often.
const WAIT: Duration = Duration::from_millis(250);
/// The default POSIX queue depth (messages), bounded by `fs.mqueue.msg_max`.
const DEPTH: u64 = 10;
/// The kernel's hard limit on a POSIX queue's depth with CAP_SYS_RESOURCE (HARD_MSGMAX).
const HARD_MSGMAX: u64 = 65536;
/// The kernel's hard limit on a POSIX message with CAP_SYS_RESOURCE (HARD_MSGSIZEMAX).
const HARD_MSGSIZEMAX: u64 = 16 << 20;

fn sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether this process has CAP_SYS_RESOURCE (capability 24, which lifts
/// `fs.mqueue.msgsize_max`).
fn has_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The deepest POSIX queue this process may create, with what sets it.
pub fn max_depth() -> (u64, &'static str) {
    if has_sys_resource() {
        return (HARD_MSGMAX, "the kernel's hard limit (CAP_SYS_RESOURCE lifts fs.mqueue.msg_max)");
    }
    (sysctl("/proc/sys/fs/mqueue/msg_max").unwrap_or(DEPTH), "fs.mqueue.msg_max (without CAP_SYS_RESOURCE)")
}

/// POSIX queue depth: `--mq-depth`, else `DEPTH` or fewer where `fs.mqueue.msg_max` says so.
fn mq_depth(asked: Option<u64>) -> u64 {
    asked.unwrap_or_else(|| max_depth().0.clamp(1, DEPTH))
}

/// The largest message of `kind` this process may send, with what sets it.
pub fn max_message(kind: ChannelKind, depth: Option<u64>) -> Option<(u64, String)> {
    match kind {
        ChannelKind::MsgQueue => {
            let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit into a local struct.
            unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut rl) };
            // The queue's bytes (depth x (size + the kernel's per-message bookkeeping)) count
            // against RLIMIT_MSGQUEUE.
            let by_rlimit = (rl.rlim_cur / mq_depth(depth)).saturating_sub(128);
            if has_sys_resource() {
                return Some((
                    HARD_MSGSIZEMAX.min(by_rlimit),
                    "the kernel's hard limit and RLIMIT_MSGQUEUE (CAP_SYS_RESOURCE lifts fs.mqueue.msgsize_max)".into(),
                ));
            }
            let max = sysctl("/proc/sys/fs/mqueue/msgsize_max").unwrap_or(8192);
            Some((max.min(by_rlimit), "fs.mqueue.msgsize_max (without CAP_SYS_RESOURCE)".into()))
        }
        ChannelKind::SysvMsg => {
            let max = sysctl("/proc/sys/kernel/msgmax").unwrap_or(8192);
            let mnb = sysctl("/proc/sys/kernel/msgmnb").unwrap_or(16384);
            Some((max.min(mnb), "kernel.msgmax and kernel.msgmnb".into()))
        }
        _ => None,
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A random queue name, or the user's (which must start with `/` and hold no other `/`).
fn queue_name(l: &Launch) -> Result<String> {
    match &l.mq_name {
        Some(n) if !n.starts_with('/') || n[1..].contains('/') || n.len() < 2 => {
            bail!("--mq-name {n:?}: a POSIX queue name is `/NAME` with no other `/`")
        }
        Some(n) => Ok(n.clone()),
        None => Ok(format!("/{}-{}-{:016x}", l.shm_prefix, std::process::id(), random_u64())),
    }
}

/// The launcher: creates the queue (refusing an existing name), unlinks the name at once and
/// hands the descriptor to both roles.
/// A message above the queue's limit: refused before anything is created.
fn check_size(l: &Launch) -> Result<()> {
    if let Some((max, why)) = max_message(l.transport.kind(), l.mq_depth).filter(|(m, _)| l.msg_size > *m) {
        bail!(
            "{} messages of {} bytes are above the largest this queue takes ({max} bytes, set by {why})",
            l.transport,
            l.msg_size
        );
    }
    Ok(())
}

fn setup_mq(l: &Launch) -> Result<Channel> {
    check_size(l)?;
    let name = queue_name(l)?;
    let c = std::ffi::CString::new(name.clone())?;
    // SAFETY: a zeroed mq_attr with the two fields mq_open reads.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    let depth = mq_depth(l.mq_depth);
    attr.mq_maxmsg = depth as _;
    attr.mq_msgsize = l.msg_size.max(1) as _;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: mq_open with a valid name and attributes.
    let fd = unsafe { libc::mq_open(c.as_ptr(), flags, 0o600 as libc::mode_t, &mut attr as *mut libc::mq_attr) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            bail!("the message queue {name} exists; give a name that does not (it is created and removed)");
        }
        bail!("creating the message queue {name} ({depth} messages of {} bytes) failed: {e}", l.msg_size);
    }
    // SAFETY: unlinking the name we just created; the descriptors keep the queue.
    unsafe { libc::mq_unlink(c.as_ptr()) };
    // SAFETY: an mqd_t is an fd on Linux, fresh and ours.
    let a = unsafe { OwnedFd::from_raw_fd(fd) };
    let b = a.try_clone()?;
    let ino = nix::sys::stat::fstat(&a).map(|s| s.st_ino).ok();
    Ok(Channel {
        fds: [RoleFds { data: Some(a), ack: None }, RoleFds { data: Some(b), ack: None }],
        ino,
        path: Some(name),
        cleanup: None,
    })
}

/// The queue the keeper process holds (-1: none yet).
static KEEPER_QUEUE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn keeper_exit(_: libc::c_int) {
    let id = KEEPER_QUEUE.load(Ordering::SeqCst);
    // SAFETY: msgctl and _exit are async-signal-safe.
    unsafe {
        if id >= 0 {
            libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
        libc::_exit(0);
    }
}

/// The launcher: a private SysV queue, created by a keeper process that removes it when it
/// gets SIGTERM — from the launcher when the channel is dropped, or as its parent-death
/// signal if the launcher dies (SIGKILL included) — so no queue outlives the run, whatever
/// ends it. (A queue has no name to unlink early, and removing it wakes its users with EIDRM.)
fn setup_sysv(l: &Launch) -> Result<Channel> {
    check_size(l)?;
    let mut p = [0; 2];
    // SAFETY: pipe2 into a local array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2 failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fds we own from now on.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SIGTERM is blocked across the fork: the keeper takes it only once the queue id is
    // stored where its handler looks.
    // SAFETY: signal-mask calls on local sets.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    // SAFETY: between fork and _exit the child makes async-signal-safe calls only.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above: sigaction, prctl, getppid, msgget, write, sigprocmask, pause.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = keeper_exit as *const () as libc::sighandler_t;
            libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            let id = libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
            KEEPER_QUEUE.store(id, Ordering::SeqCst);
            let b = id.to_ne_bytes();
            libc::write(wr.as_raw_fd(), b.as_ptr().cast(), b.len());
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: restoring this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        bail!("fork failed: {}", std::io::Error::last_os_error());
    }
    drop(wr);
    let keeper = Cleanup::Keeper(pid);
    let mut b = [0u8; 4];
    let n = nix::unistd::read(&rd, &mut b).unwrap_or(0);
    let id = i32::from_ne_bytes(b);
    if n != 4 || id < 0 {
        drop(keeper);
        bail!("creating a SysV message queue failed (msgget in the keeper process)");
    }
    Ok(Channel {
        fds: Default::default(),
        ino: Some(ipctrace_common::SYSV_MSG_ID | id as u64),
        path: Some(id.to_string()),
        cleanup: Some(keeper),
    })
}

/// A SysV queue goes if the process is killed before the run removes it.
fn prepare(a: &RoleArgs) -> Result<()> {
    if a.transport.kind() == ChannelKind::SysvMsg
        && let Some(id) = a.path.as_deref().and_then(|p| p.parse().ok())
    {
        cleanup::register_msq(id);
    }
    Ok(())
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// SIGALRM every `WAIT` without SA_RESTART: a blocked msgsnd/msgrcv returns EINTR, so the
/// loop can look at its peer (SysV calls take no timeout).
fn start_alarm() {
    // SAFETY: a handler that does nothing, and a periodic real-time timer.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let t = libc::timeval { tv_sec: 0, tv_usec: WAIT.as_micros() as libc::suseconds_t };
        let it = libc::itimerval { it_interval: t, it_value: t };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

fn stop_alarm() {
    // SAFETY: disarming the timer.
    unsafe {
        let z = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let it = libc::itimerval { it_interval: z, it_value: z };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

/// The queue of this role.
enum Queue {
    Posix(OwnedFd),
    Sysv(i32),
}

/// `WAIT` from now on CLOCK_REALTIME (mq_timed* take an absolute time).
fn deadline() -> libc::timespec {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let ns = ts.tv_nsec + WAIT.as_nanos() as i64;
    ts.tv_sec += (ns / 1_000_000_000) as libc::time_t;
    ts.tv_nsec = (ns % 1_000_000_000) as _;
    ts
}

impl Queue {
    /// One send of `msg` with `key` (POSIX: the priority; SysV: the mtype, at least 1; a
    /// SysV message is `buf`: mtype then text); Err(errno).
    fn send(&self, msg: &[u8], buf: &mut Vec<u8>, key: u64) -> std::result::Result<(), i32> {
        let r = match self {
            Queue::Posix(fd) => {
                let ts = deadline();
                // SAFETY: mq_timedsend from a valid buffer.
                unsafe { libc::mq_timedsend(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), key as u32, &ts) }
            }
            Queue::Sysv(id) => {
                buf.clear();
                buf.extend_from_slice(&(key.max(1) as i64).to_ne_bytes());
                buf.extend_from_slice(msg);
                // SAFETY: msgsnd of a struct msgbuf of msg.len() text bytes.
                unsafe { libc::msgsnd(*id, buf.as_ptr().cast(), msg.len(), 0) }
            }
        };
        if r < 0 { Err(errno()) } else { Ok(()) }
    }

    /// One receive into `buf` (room for mtype + text; SysV `msgtyp` 0: in order, -N: lowest
    /// mtype first): the text's length and its key (priority or mtype), or Err(errno).
    fn recv(&self, buf: &mut [u8], msgtyp: i64) -> std::result::Result<(usize, u64), i32> {
        let mut prio = 0u32;
        let r = match self {
            Queue::Posix(fd) => {
                let ts = deadline();
                let text = &mut buf[8..];
                // SAFETY: mq_timedreceive into a valid buffer of at least mq_msgsize bytes.
                unsafe { libc::mq_timedreceive(fd.as_raw_fd(), text.as_mut_ptr().cast(), text.len(), &mut prio, &ts) }
            }
            // SAFETY: msgrcv into a struct msgbuf with buf.len() - 8 text bytes.
            Queue::Sysv(id) => unsafe { libc::msgrcv(*id, buf.as_mut_ptr().cast(), buf.len() - 8, msgtyp, 0) },
        };
        if r < 0 {
            return Err(errno());
        }
        let key = match self {
            Queue::Posix(_) => prio as u64,
            Queue::Sysv(_) => i64::from_ne_bytes(buf[..8].try_into().unwrap_or_default()).max(0) as u64,
        };
        Ok((r as usize, key))
    }
}

fn run_role(c: &RoleCtx) -> Result<Witness> {
    let a = c.args;
    let name = a.transport.name();
    let q = match a.transport.kind() {
        ChannelKind::MsgQueue => {
            // SAFETY: the launcher placed the queue descriptor here for us.
            Queue::Posix(unsafe { OwnedFd::from_raw_fd(a.data_fd) })
        }
        _ => {
            let id = a.path.as_deref().and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("no queue id"))?;
            start_alarm();
            Queue::Sysv(id)
        }
    };
    let w = match a.role {
        Role::Producer => produce(&q, name, c),
        Role::Consumer => consume(&q, name, c),
    };
    stop_alarm();
    if let (Queue::Sysv(id), Role::Consumer) = (&q, a.role) {
        // SAFETY: removing our queue; the producer has sent its last message.
        unsafe { libc::msgctl(*id, libc::IPC_RMID, std::ptr::null_mut()) };
        cleanup::unregister_msq(*id);
    }
    w
}

/// `--mq-priorities N` when it means something (N > 1).
fn priorities(c: &RoleCtx) -> Option<u64> {
    c.args.shape.mq_priorities.filter(|n| *n > 1)
}

fn produce(q: &Queue, transport: &str, c: &RoleCtx) -> Result<Witness> {
    let o = &c.stream;
    let pat = PatternBuf::new(o.msg_size);
    let mut w = witness("producer", transport);
    let start = Instant::now();
    let mut scratch = vec![0u8; o.msg_size];
    let mut buf = Vec::with_capacity(o.msg_size + 8);
    let mut off = 0u64;
    let n = priorities(c);
    let mut per_key: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let send = |msg: &[u8], w: &mut Witness, buf: &mut Vec<u8>, off: u64, key: u64| -> Result<()> {
        loop {
            w.calls += 1;
            *w.offered_bytes.get_or_insert(0) += msg.len() as u64;
            match q.send(msg, buf, key) {
                Ok(()) => return Ok(()),
                Err(libc::EINTR | libc::ETIMEDOUT | libc::EAGAIN) => c.peer.check("consumer")?,
                Err(libc::EIDRM | libc::EINVAL) if w.messages > 0 => {
                    bail!("the {transport} queue was removed after {off} bytes")
                }
                Err(e) => bail!("sending on the {transport} queue failed: {}", std::io::Error::from_raw_os_error(e)),
            }
        }
    };
    while let Some(len) = o.next_len(off, w.messages) {
        let corrupt = o.corrupt_at.filter(|x| (off..off + len as u64).contains(x));
        // With priorities the sequence number goes first: the queue may deliver out of order.
        let numbered = n.is_some() && len >= 8;
        let msg: &[u8] = if corrupt.is_some() || numbered {
            scratch[..len].copy_from_slice(pat.window(off, len));
            if let Some(x) = corrupt {
                scratch[(x - off) as usize] ^= 0xff;
            }
            if numbered {
                scratch[..8].copy_from_slice(&w.messages.to_le_bytes());
            }
            &scratch[..len]
        } else {
            pat.window(off, len)
        };
        let key = match n {
            Some(n) => {
                let prio = w.messages % n;
                let key = if matches!(q, Queue::Sysv(_)) { n - prio } else { prio };
                *per_key.entry(key).or_default() += 1;
                key
            }
            None => 0,
        };
        send(msg, &mut w, &mut buf, off, key)?;
        off += len as u64;
        w.messages += 1;
    }
    // The end of the stream: a queue has no EOF (sent last, at the lowest priority: POSIX 0,
    // SysV the highest mtype).
    let last = match (n, q) {
        (Some(n), Queue::Sysv(_)) => n,
        _ => 0,
    };
    send(&[], &mut w, &mut buf, off, last)?;
    if n.is_some() {
        w.priorities = Some(per_key.into_iter().collect());
    }
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}

fn consume(q: &Queue, transport: &str, c: &RoleCtx) -> Result<Witness> {
    let o = &c.stream;
    let pat = PatternBuf::new(o.msg_size);
    let mut w = witness("consumer", transport);
    let start = Instant::now();
    let mut buf = vec![0u8; o.msg_size.max(1) + 8];
    let mut off = 0u64;
    let prios = priorities(c);
    let msgtyp = prios.map_or(0, |n| -(n as i64));
    let mut per_key: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    loop {
        w.calls += 1;
        let n = match q.recv(&mut buf, msgtyp) {
            Ok((0, _)) => break,
            Ok((n, key)) => {
                if prios.is_some() {
                    *per_key.entry(key).or_default() += 1;
                }
                n
            }
            Err(libc::EINTR | libc::ETIMEDOUT | libc::EAGAIN) => {
                c.peer.check("producer")?;
                continue;
            }
            Err(e) => bail!("receiving on the {transport} queue failed: {}", std::io::Error::from_raw_os_error(e)),
        };
        if w.first_mismatch.is_none() {
            w.first_mismatch = match prios {
                // Each message where its sequence number puts it (a short last one: at the end).
                Some(_) if n >= 8 => {
                    let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
                    let at = seq * o.msg_size as u64;
                    first_mismatch(&pat, at + 8, &buf[16..8 + n])
                }
                Some(_) => first_mismatch(&pat, o.total.saturating_sub(n as u64), &buf[8..8 + n]),
                None => first_mismatch(&pat, off, &buf[8..8 + n]),
            };
        }
        off += n as u64;
        w.messages += 1;
    }
    if prios.is_some() {
        w.priorities = Some(per_key.into_iter().collect());
    }
    w.bytes = off;
    w.verified_bytes = Some(w.first_mismatch.unwrap_or(off));
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    Ok(w)
}
