//! The pipe transport, every tier. Syscall tier: write/writev/read/readv, splice and vmsplice
//! on fds classified as a pipe or FIFO (bytes = return values, a derived figure). Function
//! tier: fentry/fexit, then kprobe/kretprobe, on the pipe write/read functions (exact; the
//! names differ across kernels and are chosen at load time from the probe table).

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use ipctrace_common::{Pending, ProbeId, loss};

use crate::{
    agg_add, agg_call,
    classify::{classify_fd, classify_file, is_pipe},
    count_loss, current, is_target, now, offsets, pending_start, pending_take, read_at,
};

/// Argument i of a `syscalls:sys_enter_*` record, and `ret` of a `sys_exit_*` record.
#[inline(always)]
pub(crate) fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(u64::MAX)
}

#[inline(always)]
pub(crate) fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

#[inline(always)]
fn start(ino: u64, probe: ProbeId, kind: ipctrace_common::ChannelKind) {
    pending_start(Pending { ino, start_ns: now(), len: 0, probe: probe as u16, kind: kind as u16, _pad: 0 });
}

#[inline(always)]
fn enter_fd(ctx: &TracePointContext, probe: ProbeId) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    if let Some((ino, k)) = classify_fd(arg(ctx, 0)).filter(|(_, k)| is_pipe(*k)) {
        start(ino, probe, k);
    }
    0
}

/// Ends the current thread's call with its return value: counts it, and the pipe buffer
/// pages it allocated.
#[inline(always)]
pub(crate) fn call_exit(ret: i64) -> u32 {
    if let Some((tgid, p)) = pending_take() {
        agg_call(tgid, &p, ret, now().saturating_sub(p.start_ns));
        flush_pages(tgid, &p);
        crate::sock::flush(tgid, &p);
    }
    0
}

/// Shared by every syscall exit: completes whatever the thread's entry started.
#[inline(always)]
pub(crate) fn exit_call(ctx: &TracePointContext) -> u32 {
    call_exit(ret(ctx))
}

/// Does a page allocated during this call belong to the pipe (a write into it)?
#[inline(always)]
pub(crate) fn fills_pipe(probe: u16) -> bool {
    probe == ProbeId::PipeWrite as u16 || probe == ProbeId::SpliceIn as u16 || probe == ProbeId::Vmsplice as u16
}

/// Pipe buffer pages allocated during a write (added up by `mm_page_alloc` in the pending
/// call's `_pad` and `len`): one aggregate update per call instead of one per page.
#[inline(always)]
fn flush_pages(tgid: u32, p: &Pending) {
    if p._pad > 0 && fills_pipe(p.probe) {
        agg_add(tgid, ProbeId::PageAlloc as u16, p.kind, p.ino, p._pad as u64, p.len);
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    enter_fd(&ctx, ProbeId::PipeWrite)
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    enter_fd(&ctx, ProbeId::PipeWrite)
}

#[tracepoint(category = "syscalls", name = "sys_exit_writev")]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    enter_fd(&ctx, ProbeId::PipeRead)
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_readv")]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    enter_fd(&ctx, ProbeId::PipeRead)
}

#[tracepoint(category = "syscalls", name = "sys_exit_readv")]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

/// splice(fd_in, off_in, fd_out, off_out, len, flags): pages move, no user copy.
#[tracepoint(category = "syscalls", name = "sys_enter_splice")]
pub fn sys_enter_splice(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    if !is_target(current().0) {
        return 0;
    }
    let pipe = |fd| classify_fd(fd).filter(|(_, k)| is_pipe(*k));
    let (p, c) = match (pipe(arg(&ctx, 0)), pipe(arg(&ctx, 2))) {
        (Some(c), _) => (ProbeId::SpliceOut, c),
        (None, Some(c)) => (ProbeId::SpliceIn, c),
        _ => return 0,
    };
    start(c.0, p, c.1);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_splice")]
pub fn sys_exit_splice(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_vmsplice")]
pub fn sys_enter_vmsplice(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    enter_fd(&ctx, ProbeId::Vmsplice)
}

#[tracepoint(category = "syscalls", name = "sys_exit_vmsplice")]
pub fn sys_exit_vmsplice(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

/// Function tier: entry of pipe_write/pipe_read(struct kiocb *iocb, struct iov_iter *); the
/// file is iocb->ki_filp.
#[inline(always)]
fn pipe_entry(iocb: *const u8, probe: ProbeId) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    let file: *const u8 = match unsafe { read_at(iocb, offsets().kiocb_filp) } {
        Ok(f) => f,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            return 0;
        }
    };
    if let Ok(Some((ino, k))) = unsafe { classify_file(file) }
        && is_pipe(k)
    {
        start(ino, probe, k);
    }
    0
}

#[fentry(function = "anon_pipe_write")]
pub fn fentry_pipe_write(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    pipe_entry(ctx.arg(0), ProbeId::PipeWrite)
}

#[fexit(function = "anon_pipe_write")]
pub fn fexit_pipe_write(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.arg::<i64>(2))
}

#[fentry(function = "anon_pipe_read")]
pub fn fentry_pipe_read(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    pipe_entry(ctx.arg(0), ProbeId::PipeRead)
}

#[fexit(function = "anon_pipe_read")]
pub fn fexit_pipe_read(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.arg::<i64>(2))
}

#[kprobe]
pub fn kprobe_pipe_write(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    pipe_entry(ctx.arg(0).unwrap_or(core::ptr::null()), ProbeId::PipeWrite)
}

#[kprobe]
pub fn kprobe_pipe_read(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    pipe_entry(ctx.arg(0).unwrap_or(core::ptr::null()), ProbeId::PipeRead)
}

#[kretprobe]
pub fn kretprobe_pipe_write(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>())
}

#[kretprobe]
pub fn kretprobe_pipe_read(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>())
}
