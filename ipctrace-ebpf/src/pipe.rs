//! The pipe transport, every tier. Syscall tier (entered from `syscalls`): write/writev,
//! read/readv, splice and vmsplice on fds classified as a pipe or FIFO (bytes = return values,
//! a derived figure). Function tier: fentry/fexit, then kprobe/kretprobe, on the pipe
//! write/read functions (exact; the names differ across kernels and are chosen at load time
//! from the probe table).

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use ipctrace_common::{ChannelKind, ProbeId, loss};

use crate::{
    call_exit,
    classify::{classify_fd, classify_file, is_pipe},
    count_loss, current, is_target, offsets, read_at, start_call, start_call_of,
};

/// Syscall tier: a call of thread `tid` of `tgid` (the current one) on a pipe or FIFO
/// (already classified).
#[inline(always)]
pub(crate) fn enter(tgid: u32, tid: u32, ino: u64, kind: ChannelKind, probe: ProbeId) {
    if is_pipe(kind) {
        start_call_of(tgid, tid, ino, probe, kind);
    }
}

/// splice(fd_in, off_in, fd_out, off_out, len, flags): pages move, no user copy.
#[inline(always)]
pub(crate) fn splice_enter(fd_in: u64, fd_out: u64) {
    let pipe = |fd| classify_fd(fd).filter(|(_, k)| is_pipe(*k));
    let (p, c) = match pipe(fd_in) {
        Some(c) => (ProbeId::SpliceOut, c),
        None => match pipe(fd_out) {
            Some(c) => (ProbeId::SpliceIn, c),
            None => return,
        },
    };
    start_call(c.0, p, c.1);
}

/// Does a page allocated during this call belong to the pipe (a write into it)?
#[inline(always)]
pub(crate) fn fills_pipe(probe: u16) -> bool {
    probe == ProbeId::PipeWrite as u16 || probe == ProbeId::SpliceIn as u16 || probe == ProbeId::Vmsplice as u16
}

/// Function tier: entry of pipe_write/pipe_read(struct kiocb *iocb, struct iov_iter *); the
/// file is iocb->ki_filp.
#[inline(always)]
fn pipe_entry(iocb: *const u8, probe: ProbeId) -> u32 {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return 0;
    }
    let file: *const u8 = match unsafe { read_at(iocb, offsets().kiocb_filp) } {
        Ok(f) => f,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            return 0;
        }
    };
    if let Ok(Some((ino, k))) = unsafe { classify_file(file) } {
        enter(tgid, tid, ino, k, probe);
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
