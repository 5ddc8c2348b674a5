//! Message queues, POSIX and SysV, at the syscall tier (entered from `syscalls`):
//! mq_timedsend/mq_timedreceive on an fd classified as an mqueue file (the channel is its
//! inode), msgsnd/msgrcv on a msqid (the channel is `SYSV_ID | msqid`: a SysV queue has no
//! fd or inode). A send returns 0: its bytes are the length asked at the entry when the call
//! succeeded (derived); a receive returns the message's length. Each send is also counted as
//! a hand-off (the thread that last entered a receive on the same queue was blocked in it
//! when the send entered: the kernel gives the message to the waiting receiver, derived) or
//! queued. With several receivers on one queue only the last to enter is looked at. Function
//! tier: fentry/fexit (then kprobes) on do_mq_timedsend/do_mq_timedreceive and
//! do_msgsnd/do_msgrcv for the calls, and on load_msg and store_msg, the copies in and out
//! that both queue kinds share (exact).

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use ipctrace_common::{ChannelKind, Pending, ProbeId, SYSV_MSG_ID};

use crate::{
    agg_event, call_exit,
    classify::{Fd, fd_of_call},
    current, inflight, is_target, start_call,
};

/// The thread that last entered a receive on each queue (0: its receive returned).
#[map]
static RECEIVER: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);

/// A POSIX queue call on fd `f`: a send (`Some((len, priority))`) or a receive.
#[inline(always)]
pub(crate) fn posix(f: &Fd, send: Option<(u64, u64)>) {
    if f.channel() == Some(ChannelKind::MsgQueue) {
        call(f.ino, ChannelKind::MsgQueue, send);
    }
}

/// A SysV queue call on `msqid`: a send (`Some((len, msgp))`, whose mtype is read from the
/// sender's memory) or a receive.
#[inline(always)]
pub(crate) fn sysv(msqid: u64, send: Option<(u64, u64)>) {
    let send = send.map(|(len, msgp)| {
        let mtype = unsafe { bpf_probe_read_user(msgp as *const i64) }.unwrap_or(0);
        (len, mtype.max(0) as u64)
    });
    call(SYSV_MSG_ID | (msqid & 0x7fff_ffff), ChannelKind::SysvMsg, send);
}

#[inline(always)]
fn call(id: u64, kind: ChannelKind, send: Option<(u64, u64)>) {
    match send {
        Some((len, prio)) => send_start(id, kind, len, prio),
        None => recv_start(id, kind),
    }
}

/// `Pending._pad` of a send: bit 31 a receiver waiting, the low bits the priority.
const WAITING: u32 = 1 << 31;
const MAX_PRIO: u64 = 4095;

/// A send of `len` bytes on queue `id` of `kind`; whether a receiver waits is decided now.
#[inline(always)]
fn send_start(id: u64, kind: ChannelKind, len: u64, prio: u64) {
    let prio = prio.min(MAX_PRIO) as u32;
    let Some(r) = RECEIVER.get_ptr_mut(&id) else { return start(id, kind, len, prio) };
    let waiting = unsafe { *r } != 0 && blocked_on(unsafe { *r }, id);
    if waiting {
        // That receiver takes this message: it waits for no other until its next receive.
        unsafe { *r = 0 };
    }
    start(id, kind, len, prio | if waiting { WAITING } else { 0 });
}

#[inline(always)]
fn start(id: u64, kind: ChannelKind, len: u64, flags: u32) {
    start_call(id, ProbeId::MqSend, kind);
    if let Some(p) = inflight() {
        unsafe {
            (*p).len = len;
            (*p)._pad = flags;
        }
    }
}

/// Is thread `tid` off the CPU in a receive on queue `id`?
#[inline(always)]
fn blocked_on(tid: u32, id: u64) -> bool {
    crate::threads::get(tid)
        .map(|t| unsafe { &*t })
        .is_some_and(|t| t.off.ts != 0 && t.off.probe == ProbeId::MqRecv as u16 && t.off.ino == id)
}

/// A receive on queue `id` of `kind`.
#[inline(always)]
fn recv_start(id: u64, kind: ChannelKind) {
    start_call(id, ProbeId::MqRecv, kind);
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let _ = RECEIVER.insert(&id, &tid, 0);
}

/// At a call's exit: the receive leaves the queue's count; a successful send gets its bytes
/// (the length asked) and is counted as handed off or queued. Returns the value to count.
#[inline(always)]
pub(crate) fn exit(tgid: u32, p: &Pending, ret: i64) -> i64 {
    if p.probe == ProbeId::MqRecv as u16 {
        let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
        if let Some(t) = RECEIVER.get_ptr_mut(&p.ino)
            && unsafe { *t } == tid
        {
            unsafe { *t = 0 };
        }
        return ret;
    }
    if p.probe != ProbeId::MqSend as u16 || ret != 0 {
        return ret;
    }
    // A 0-byte message (an end marker) carries nothing: not counted as a message.
    if p.len == 0 {
        return 0;
    }
    let how = if p._pad & WAITING != 0 { ProbeId::MqHandoff } else { ProbeId::MqQueued };
    agg_event(tgid, how as u16, p.kind, p.ino, p.len);
    let prio = (p._pad & !WAITING) as u16;
    agg_event(tgid, ProbeId::MqPriority as u16, prio * 16 + p.kind, p.ino, p.len);
    p.len as i64
}

/// Function tier: the copies themselves, inside a send or receive the dispatcher started.
/// load_msg(src, len) copies a message in (allocating it; an error pointer on failure);
/// store_msg(dest, msg, len) copies it out (0 on success).
#[inline(always)]
fn copied(probe: ProbeId, during: ProbeId, ok: bool, len: Option<u64>) -> u32 {
    let Some(p) = inflight() else { return 0 };
    let p = unsafe { *p };
    let len = len.unwrap_or(p.len);
    if p.probe == during as u16 && ok && len > 0 {
        let (tgid, _) = crate::current();
        agg_event(tgid, probe as u16, p.kind, p.ino, len);
    }
    0
}

/// An error pointer (the last page of the address space).
#[inline(always)]
fn is_err(ptr: u64) -> bool {
    ptr >= u64::MAX - 4095
}

#[fexit(function = "load_msg")]
pub fn fexit_load_msg(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let len: u64 = ctx.arg(1);
    copied(ProbeId::MqCopyIn, ProbeId::MqSend, !is_err(ctx.arg::<u64>(2)), Some(len))
}

#[fexit(function = "store_msg")]
pub fn fexit_store_msg(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let len: u64 = ctx.arg(2);
    copied(ProbeId::MqCopyOut, ProbeId::MqRecv, ctx.arg::<i64>(3) == 0, Some(len))
}

#[kretprobe]
pub fn kretprobe_load_msg(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    // The send's own length (load_msg copies all of it).
    copied(ProbeId::MqCopyIn, ProbeId::MqSend, !is_err(ctx.ret::<u64>()), None)
}

/// store_msg's entry: its length kept in the receive's entry for the return probe.
#[kprobe]
pub fn kprobe_store_msg(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    if let Some(p) = inflight()
        && unsafe { (*p).probe } == ProbeId::MqRecv as u16
    {
        unsafe { (*p).len = ctx.arg::<u64>(2).unwrap_or(0) };
    }
    0
}

#[kretprobe]
pub fn kretprobe_store_msg(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    copied(ProbeId::MqCopyOut, ProbeId::MqRecv, ctx.ret::<i64>() == 0, None)
}

/// Function tier of the calls themselves (used when the kernel has all four as functions):
/// do_mq_timedsend(mqdes, u_msg_ptr, msg_len, msg_prio, ts) and
/// do_mq_timedreceive(mqdes, u_msg_ptr, msg_len, u_msg_prio, ts) for POSIX queues,
/// do_msgsnd(msqid, mtype, mtext, msgsz, msgflg) and do_msgrcv(msqid, buf, bufsz, msgtyp,
/// msgflg, handler) for SysV (ksys_msgsnd is inlined into the syscall on the kernels tried);
/// each exit ends the call as the dispatcher's exit would. `send`: (length, priority or mtype).
#[inline(always)]
fn fn_call(first: u64, send: Option<(u64, u64)>, posix: bool) -> u32 {
    if crate::floor() || !is_target(current().0) {
        return 0;
    }
    if posix {
        self::posix(&fd_of_call(first), send);
    } else {
        call(SYSV_MSG_ID | (first & 0x7fff_ffff), ChannelKind::SysvMsg, send);
    }
    0
}

#[fentry(function = "do_mq_timedsend")]
pub fn fentry_mq_send(ctx: FEntryContext) -> u32 {
    fn_call(ctx.arg::<i32>(0) as u64, Some((ctx.arg(2), ctx.arg::<u32>(3) as u64)), true)
}

#[fentry(function = "do_mq_timedreceive")]
pub fn fentry_mq_recv(ctx: FEntryContext) -> u32 {
    fn_call(ctx.arg::<i32>(0) as u64, None, true)
}

#[fentry(function = "do_msgsnd")]
pub fn fentry_msgsnd(ctx: FEntryContext) -> u32 {
    fn_call(ctx.arg::<i32>(0) as u64, Some((ctx.arg(3), ctx.arg::<i64>(1).max(0) as u64)), false)
}

#[fentry(function = "do_msgrcv")]
pub fn fentry_msgrcv(ctx: FEntryContext) -> u32 {
    fn_call(ctx.arg::<i32>(0) as u64, None, false)
}

/// do_mq_timed* return int (the upper half of the register is not theirs).
#[fexit(function = "do_mq_timedsend")]
pub fn fexit_mq_send(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.arg::<i64>(5) as i32 as i64)
}

#[fexit(function = "do_mq_timedreceive")]
pub fn fexit_mq_recv(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.arg::<i64>(5) as i32 as i64)
}

#[fexit(function = "do_msgsnd")]
pub fn fexit_msgsnd(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.arg::<i64>(5))
}

#[fexit(function = "do_msgrcv")]
pub fn fexit_msgrcv(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.arg::<i64>(6))
}

#[kprobe]
pub fn kprobe_mq_send(ctx: ProbeContext) -> u32 {
    let (fd, len, prio) =
        (ctx.arg::<i32>(0).unwrap_or(-1), ctx.arg::<u64>(2).unwrap_or(0), ctx.arg::<u32>(3).unwrap_or(0));
    fn_call(fd as u64, Some((len, prio as u64)), true)
}

#[kprobe]
pub fn kprobe_mq_recv(ctx: ProbeContext) -> u32 {
    fn_call(ctx.arg::<i32>(0).unwrap_or(-1) as u64, None, true)
}

#[kprobe]
pub fn kprobe_msgsnd(ctx: ProbeContext) -> u32 {
    let (id, mtype, len) =
        (ctx.arg::<i32>(0).unwrap_or(-1), ctx.arg::<i64>(1).unwrap_or(0), ctx.arg::<u64>(3).unwrap_or(0));
    fn_call(id as u64, Some((len, mtype.max(0) as u64)), false)
}

#[kprobe]
pub fn kprobe_msgrcv(ctx: ProbeContext) -> u32 {
    fn_call(ctx.arg::<i32>(0).unwrap_or(-1) as u64, None, false)
}

/// The return of any of the four (int or long: an int's sign is kept either way).
#[kretprobe]
pub fn kretprobe_mq(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>() as i32 as i64)
}
