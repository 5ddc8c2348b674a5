//! Futex waits and wakes on words inside a traced shm mapping (the shm transport's sync
//! stage), every tier. Syscall tier (entered from `syscalls`): FUTEX_WAIT(_BITSET) and
//! FUTEX_WAKE(_BITSET) through futex(2), and the futex2 futex_wait/futex_wake syscalls
//! (derived). Function tier: fentry/fexit, then
//! kprobes, on futex_wait/futex_wake (exact). Result classes and wait time per call.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use ipctrace_common::{ChannelKind, ProbeId};

use crate::{call_exit, current, is_target, shm_ino_of, start_call};

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
/// ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
const FUTEX_CMD_MASK: u64 = !(128 | 256);

/// A wait or wake on `uaddr` (futex2's futex_wait/futex_wake syscalls come here directly).
#[inline(always)]
pub(crate) fn start(tgid: u32, uaddr: u64, probe: ProbeId) {
    if let Some(ino) = shm_ino_of(tgid, uaddr) {
        start_call(ino, probe, ChannelKind::Shm);
    }
}

/// Function tier: the same, for a target.
#[inline(always)]
fn fn_start(uaddr: u64, probe: ProbeId) -> u32 {
    let (tgid, _) = current();
    if is_target(tgid) {
        start(tgid, uaddr, probe);
    }
    0
}

/// futex(uaddr, op, val, utime, uaddr2, val3): waits and wakes only.
#[inline(always)]
pub(crate) fn futex_enter(tgid: u32, uaddr: u64, op: u64) {
    let p = match op & FUTEX_CMD_MASK & 0xffff_ffff {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => ProbeId::FutexWait,
        FUTEX_WAKE | FUTEX_WAKE_BITSET => ProbeId::FutexWake,
        _ => return,
    };
    start(tgid, uaddr, p);
}

#[fentry(function = "futex_wait")]
pub fn fentry_futex_wait(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fn_start(ctx.arg(0), ProbeId::FutexWait)
}

#[fexit(function = "futex_wait")]
pub fn fexit_futex_wait(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>().unwrap_or(-1) as i32 as i64)
}

#[fentry(function = "futex_wake")]
pub fn fentry_futex_wake(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fn_start(ctx.arg(0), ProbeId::FutexWake)
}

#[fexit(function = "futex_wake")]
pub fn fexit_futex_wake(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>().unwrap_or(-1) as i32 as i64)
}

#[kprobe]
pub fn kprobe_futex_wait(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fn_start(ctx.arg(0).unwrap_or(0), ProbeId::FutexWait)
}

#[kprobe]
pub fn kprobe_futex_wake(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fn_start(ctx.arg(0).unwrap_or(0), ProbeId::FutexWake)
}

/// futex functions return int: sign-extend the low 32 bits.
#[kretprobe]
pub fn kretprobe_futex(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>() as i32 as i64)
}
