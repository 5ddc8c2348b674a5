//! Syscall tier of the pipe data path: write/writev/read/readv, splice and vmsplice on fds
//! whose inode is a pipe or FIFO. Bytes are the return values (a derived figure).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use ipctrace_common::{Pending, probe};

use crate::{agg_add, agg_call, classify_fd, current, is_target, now, pending_start, pending_take};

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
fn enter_fd(ctx: &TracePointContext, probe: u16) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    if let Some((ino, k)) = classify_fd(arg(ctx, 0)).filter(|(_, k)| *k != ipctrace_common::kind::SHM) {
        pending_start(Pending { ino, start_ns: now(), len: 0, probe, kind: k, _pad: 0 });
    }
    0
}

/// Shared by every syscall exit: completes whatever the thread's entry started.
#[inline(always)]
pub(crate) fn exit_call(ctx: &TracePointContext) -> u32 {
    if let Some((tgid, p)) = pending_take() {
        agg_call(tgid, &p, ret(ctx), now().saturating_sub(p.start_ns));
        flush_pages(tgid, &p);
    }
    0
}

/// Pipe buffer pages allocated during a write (added up by `mm_page_alloc` in the pending
/// call's `_pad` and `len`): one aggregate update per call instead of one per page.
#[inline(always)]
pub(crate) fn flush_pages(tgid: u32, p: &Pending) {
    if p._pad > 0 && matches!(p.probe, probe::PIPE_WRITE | probe::SPLICE_IN | probe::VMSPLICE) {
        agg_add(tgid, probe::PAGE_ALLOC, p.kind, p.ino, p._pad as u64, p.len);
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter_fd(&ctx, probe::PIPE_WRITE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter_fd(&ctx, probe::PIPE_WRITE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_writev")]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter_fd(&ctx, probe::PIPE_READ)
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_readv")]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter_fd(&ctx, probe::PIPE_READ)
}

#[tracepoint(category = "syscalls", name = "sys_exit_readv")]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// splice(fd_in, off_in, fd_out, off_out, len, flags): pages move, no user copy.
#[tracepoint(category = "syscalls", name = "sys_enter_splice")]
pub fn sys_enter_splice(ctx: TracePointContext) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    let pipe = |fd| classify_fd(fd).filter(|(_, k)| *k != ipctrace_common::kind::SHM);
    let (p, c) = match (pipe(arg(&ctx, 0)), pipe(arg(&ctx, 2))) {
        (Some(c), _) => (probe::SPLICE_OUT, c),
        (None, Some(c)) => (probe::SPLICE_IN, c),
        _ => return 0,
    };
    pending_start(Pending { ino: c.0, start_ns: now(), len: 0, probe: p, kind: c.1, _pad: 0 });
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_splice")]
pub fn sys_exit_splice(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_vmsplice")]
pub fn sys_enter_vmsplice(ctx: TracePointContext) -> u32 {
    enter_fd(&ctx, probe::VMSPLICE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_vmsplice")]
pub fn sys_exit_vmsplice(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}
