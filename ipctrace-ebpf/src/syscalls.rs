//! The syscall tier of every transport: one pair of raw tracepoints on raw_syscalls
//! sys_enter/sys_exit instead of a classic `syscalls:*` tracepoint per call (which fills a
//! perf record on every call of every process). The cheapest check comes first: the syscall
//! number is looked up in `SYSCALLS` (an array the loader fills with what each number means
//! and which probe-table rows want it); then the target filter; then the fd is classified
//! once and the call handed to its transport (`pipe`, `shm`, `futex`, `sock`, `inet`; fds passed in
//! a sendmsg to `fdpass`). The exit ends
//! whatever the entry started.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use ipctrace_common::{ProbeId, SYSCALL_SLOTS, sysop, sysrow, target};

use crate::{
    SYSCALLS, current, fdcache, fdpass, finish, futex, inet,
    kmem::{Direct, Kmem, Probe},
    mq, notify, offsets, pending_take, pipe, shm, sock,
};

/// x86's TS_COMPAT: the task is in a 32-bit syscall, whose numbers are not these.
const TS_COMPAT: u32 = 0x0002;

/// What the loader asked for syscall `nr` (0: nothing).
#[inline(always)]
fn wanted(nr: i64) -> u32 {
    if nr < 0 || nr >= SYSCALL_SLOTS as i64 {
        return 0;
    }
    SYSCALLS.get(nr as u32).copied().unwrap_or(0)
}

/// Syscall argument `i` from the saved registers.
#[inline(always)]
fn arg<K: Kmem>(regs: *const u8, i: usize) -> u64 {
    let off = offsets().regs_args.get(i).copied().unwrap_or(u32::MAX);
    unsafe { K::read::<u64>(regs, off) }.unwrap_or(u64::MAX)
}

/// Target `tgid`'s `TARGETS` entry, if it is a target making 64-bit syscalls. Whether it
/// makes 32-bit ones (whose numbers and arguments are not these) is read from the task at its
/// first traced syscall (and again after an exec), then kept in the entry: a 32-bit process
/// is one for life. (A 64-bit process entering by `int 0x80` is not told apart.)
#[inline(always)]
fn target64(tgid: u32) -> Option<*mut u64> {
    let t = crate::targets::get(tgid)?;
    let flags = unsafe { *t };
    if flags & target::CHECKED as u64 == 0 {
        let c = if compat() { target::COMPAT } else { 0 };
        unsafe { *t = flags | (target::CHECKED | c) as u64 };
        return (c == 0).then_some(t);
    }
    (flags & target::COMPAT as u64 == 0).then_some(t)
}

/// Is the current task in a 32-bit compat syscall?
#[inline(always)]
fn compat() -> bool {
    let off = offsets().task_ti_status;
    if off == u32::MAX {
        return false;
    }
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    crate::task_field::<u32>(task, off).is_ok_and(|s| s & TS_COMPAT != 0)
}

/// The syscall's target and what it asked for: the process, its `TARGETS` value, the rows
/// and operation (`w`), the saved registers, the thread's entry.
struct Call {
    tgid: u32,
    tid: u32,
    t: u64,
    w: u32,
    regs: *const u8,
    /// The calling thread's entry (its fd memo), or null. A raw pointer, not an Option: LLVM
    /// may read an Option's undefined payload on the None path, which the verifier refuses.
    th: *mut ipctrace_common::Thread,
}

/// A call on an fd (the first argument) that the pipe row `pipe_row` counts as `pipe_probe`
/// when it is a pipe and the socket row `sock_row` as `sock_probe` when it is a Unix socket
/// (a call on a loopback inet socket is counted by the `INET` row). Returns the socket, if
/// the fd is one.
#[inline(always)]
fn on_fd<K: Kmem>(
    c: &Call,
    pipe_row: u32,
    pipe_probe: ProbeId,
    sock_row: u32,
    sock_probe: ProbeId,
) -> Option<*const u8> {
    let f = fdcache::fd(c.tgid, c.t, arg::<K>(c.regs, 0), c.th);
    if f.sk != 0 {
        let sk = f.sk as *const u8;
        if c.w & sock_row != 0 {
            sock::start(sk, sock_probe);
        }
        if c.w & sysrow::INET != 0 {
            inet::start(sk, if sock_probe == ProbeId::SockRecv { ProbeId::InetRecv } else { ProbeId::InetSend });
        }
        return Some(sk);
    }
    if let Some(kind) = f.channel() {
        if c.w & pipe_row != 0 {
            pipe::enter(c.tgid, c.tid, f.ino, kind, pipe_probe);
        }
        if c.w & sysrow::NOTIFY != 0 {
            notify::enter(f.ino, kind, pipe_probe == ProbeId::PipeRead);
        }
    }
    None
}

/// sys_enter(regs, id), as a raw tracepoint (the saved registers read by helper calls).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    sys_enter::<Probe>(ctx.arg::<u64>(1) as i64, ctx.arg(0))
}

/// sys_enter(regs, id), as a BTF tracepoint (the saved registers read directly).
#[btf_tracepoint(function = "sys_enter")]
pub fn btf_sys_enter(ctx: BtfTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    sys_enter::<Direct>(ctx.arg::<u64>(1) as i64, ctx.arg(0))
}

/// A syscall `nr` enters with its saved registers `regs`.
#[inline(always)]
fn sys_enter<K: Kmem>(nr: i64, regs: *const u8) -> u32 {
    let w = wanted(nr);
    if w == 0 {
        return 0;
    }
    let (tgid, tid) = current();
    let Some(tp) = target64(tgid) else { return 0 };
    // The thread's entry, for its fd memo (made by its first call's start, not here).
    let th = crate::threads::get(tid).unwrap_or(core::ptr::null_mut());
    let c = Call { tgid, tid, t: unsafe { *tp }, w, regs, th };
    match w & sysop::MASK {
        sysop::WRITE => {
            on_fd::<K>(&c, sysrow::PIPE_WRITE, ProbeId::PipeWrite, sysrow::UNIX_SEND, ProbeId::SockSend);
        }
        sysop::READ => {
            on_fd::<K>(&c, sysrow::PIPE_READ, ProbeId::PipeRead, sysrow::UNIX_RECV, ProbeId::SockRecv);
        }
        sysop::SEND => {
            on_fd::<K>(&c, 0, ProbeId::PipeWrite, sysrow::UNIX_SEND, ProbeId::SockSend);
        }
        // sendmsg(fd, msg, flags): a send that may pass fds (SCM_RIGHTS).
        sysop::SENDMSG => {
            if let Some(sk) = on_fd::<K>(&c, 0, ProbeId::PipeWrite, sysrow::UNIX_SEND, ProbeId::SockSend)
                && w & sysrow::FD_PASS != 0
            {
                fdpass::sendmsg(tgid, sk, arg::<K>(regs, 1));
            }
        }
        sysop::RECV => {
            on_fd::<K>(&c, 0, ProbeId::PipeRead, sysrow::UNIX_RECV, ProbeId::SockRecv);
        }
        // sendfile(out_fd, in_fd, offset, count): into a socket, pages move without a copy.
        sysop::SENDFILE => {
            on_fd::<K>(&c, 0, ProbeId::PipeWrite, sysrow::UNIX_SEND, ProbeId::SockSendfile);
        }
        sysop::VMSPLICE => {
            on_fd::<K>(&c, sysrow::PIPE_SPLICE, ProbeId::Vmsplice, 0, ProbeId::SockSend);
        }
        // mq_timedsend(mqd, msg, len, prio, timeout), mq_timedreceive(mqd, ...).
        sysop::MQ_SEND => {
            mq::posix(&fdcache::fd(tgid, c.t, arg::<K>(regs, 0), th), Some((arg::<K>(regs, 2), arg::<K>(regs, 3))))
        }
        sysop::MQ_RECV => mq::posix(&fdcache::fd(tgid, c.t, arg::<K>(regs, 0), th), None),
        // msgsnd(msqid, msgp, msgsz, flags), msgrcv(msqid, msgp, msgsz, type, flags).
        sysop::MSGSND => mq::sysv(arg::<K>(regs, 0), Some((arg::<K>(regs, 2), arg::<K>(regs, 1)))),
        sysop::MSGRCV => mq::sysv(arg::<K>(regs, 0), None),
        sysop::POLL => notify::poll_enter(),
        sysop::SPLICE => pipe::splice_enter(arg::<K>(regs, 0), arg::<K>(regs, 2)),
        sysop::OPEN => shm::open_enter(arg::<K>(regs, 0)),
        sysop::OPENAT => shm::open_enter(arg::<K>(regs, 1)),
        sysop::UNLINK => shm::unlink_enter(tgid, arg::<K>(regs, 0)),
        sysop::FTRUNCATE => shm::ftruncate_enter(tgid, arg::<K>(regs, 0), arg::<K>(regs, 1)),
        sysop::MMAP => shm::mmap_enter(arg::<K>(regs, 4), arg::<K>(regs, 1), arg::<K>(regs, 3)),
        sysop::MUNMAP => shm::munmap_enter(tgid, arg::<K>(regs, 0), arg::<K>(regs, 1)),
        sysop::FUTEX => futex::futex_enter(tgid, arg::<K>(regs, 0), arg::<K>(regs, 1)),
        sysop::FUTEX_WAIT => futex::start(tgid, arg::<K>(regs, 0), ProbeId::FutexWait),
        sysop::FUTEX_WAKE => futex::start(tgid, arg::<K>(regs, 0), ProbeId::FutexWake),
        sysop::CLOSE => fdcache::forget(tgid, tp, c.t, arg::<K>(regs, 0)),
        sysop::DUP2 => fdcache::forget(tgid, tp, c.t, arg::<K>(regs, 1)),
        sysop::CLOSE_RANGE => unsafe { *tp = fdcache::new_generation(c.t) },
        sysop::IO_URING => unsafe { *tp = c.t | target::NOCACHE as u64 },
        _ => {}
    }
    // attach: this thread's entries are seen from now on (its exits end only calls they
    // started), whatever the call was (an entry-side count such as ftruncate's must not be
    // made again at the exit).
    if crate::late_calls()
        && let Some(t) = crate::threads::get_or_make(tid, ipctrace_common::loss::PENDING_FULL)
    {
        unsafe { (*t).unentered = 0 };
    }
    0
}

/// sys_exit(regs, ret). The cheapest check is the thread's call in flight (an array
/// lookup): only a call its entry started is in flight at a syscall's exit (a function-tier
/// call ends at its function's return, before), so the syscall number (a kernel read of the
/// saved orig_ax) is not needed. A target thread with no entry at all is at its first exit
/// since tracing began (`late_exit`).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let ret = ctx.arg::<u64>(1) as i64;
    let (tgid, tid) = current();
    let t = crate::threads::get(tid);
    if let Some(t) = t {
        let p = unsafe { (*t).call };
        if p.probe != 0 {
            unsafe { (*t).call.probe = 0 };
            exit_call(tgid, tid, p, ret);
            return 0;
        }
    }
    // attach: a target thread with no entry, or one made by a block (or a wake-up) before its
    // syscall entry was ever seen: the call it ends began before tracing. (One call site: the
    // entry's logic is inlined there.)
    if crate::late_calls() {
        let unseen = match t {
            Some(t) => unsafe { (*t).unentered != 0 },
            None => crate::targets::is_target(tgid),
        };
        if unseen {
            late_exit(ctx.arg(0), tgid, tid, ret);
        }
    }
    0
}

/// Ends call `p` of the current thread, `tid` of `tgid`, which returned `ret`.
#[inline(always)]
fn exit_call(tgid: u32, tid: u32, p: ipctrace_common::Pending, ret: i64) {
    if p.probe == ProbeId::ShmMmap as u16 {
        shm::mmap_exit(tgid, &p, ret);
    } else if p.probe == ProbeId::ShmOpen as u16 {
        shm::open_exit(tgid, ret);
    } else {
        finish(tgid, tid, p, ret);
    }
}

/// `attach`: the first exit of target thread `tid` whose entry was not seen. The syscall it
/// ends was in flight when tracing began (a reader blocked in read(2) when ipctrace attached):
/// it is classified now, from the saved registers (its number and arguments are still there),
/// and counted, untimed (its start was not seen). The thread's entry is then marked entered,
/// whatever the call was (`sys_enter` returns early for one nothing wants), so this is done
/// once per thread.
#[inline(always)]
fn late_exit(regs: *const u8, tgid: u32, tid: u32, ret: i64) {
    let nr = unsafe { Probe::read::<u64>(regs, offsets().regs_orig_ax) }.map_or(-1, |n| n as i64);
    sys_enter::<Probe>(nr, regs);
    if let Some((_, _, mut p)) = pending_take() {
        p._pad |= ipctrace_common::CALL_UNTIMED;
        exit_call(tgid, tid, p, ret);
    }
    if let Some(t) = crate::threads::get_or_make(tid, ipctrace_common::loss::PENDING_FULL) {
        unsafe { (*t).unentered = 0 };
    }
}
