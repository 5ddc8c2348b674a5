//! Futex waits and wakes on words inside a traced shm mapping (the shm transport's sync
//! stage), every tier. Syscall tier: FUTEX_WAIT(_BITSET)/FUTEX_WAKE(_BITSET) through futex(2)
//! and the futex2 futex_wait/futex_wake syscalls (derived). Function tier: fentry/fexit, then
//! kprobes, on futex_wait/futex_wake (exact). Result classes and wait time per call.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use ipctrace_common::{ChannelKind, Pending, ProbeId};

use crate::{
    current, is_target, now, pending_start,
    pipe::{arg, call_exit, exit_call},
    shm_ino_of,
};

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
/// ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
const FUTEX_CMD_MASK: u64 = !(128 | 256);

#[inline(always)]
fn start(uaddr: u64, probe: ProbeId) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    if let Some(ino) = shm_ino_of(tgid, uaddr) {
        pending_start(Pending {
            ino,
            start_ns: now(),
            len: 0,
            probe: probe as u16,
            kind: ChannelKind::Shm as u16,
            _pad: 0,
        });
    }
    0
}

/// futex(uaddr, op, val, utime, uaddr2, val3)
#[tracepoint(category = "syscalls", name = "sys_enter_futex")]
pub fn sys_enter_futex(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let p = match arg(&ctx, 1) & FUTEX_CMD_MASK & 0xffff_ffff {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => ProbeId::FutexWait,
        FUTEX_WAKE | FUTEX_WAKE_BITSET => ProbeId::FutexWake,
        _ => return 0,
    };
    start(arg(&ctx, 0), p)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex")]
pub fn sys_exit_futex(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

/// futex2: futex_wait(uaddr, val, mask, flags, timeout, clockid)
#[tracepoint(category = "syscalls", name = "sys_enter_futex_wait")]
pub fn sys_enter_futex_wait(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    start(arg(&ctx, 0), ProbeId::FutexWait)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex_wait")]
pub fn sys_exit_futex_wait(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

/// futex2: futex_wake(uaddr, mask, nr, flags)
#[tracepoint(category = "syscalls", name = "sys_enter_futex_wake")]
pub fn sys_enter_futex_wake(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    start(arg(&ctx, 0), ProbeId::FutexWake)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex_wake")]
pub fn sys_exit_futex_wake(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    exit_call(&ctx)
}

#[fentry(function = "futex_wait")]
pub fn fentry_futex_wait(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    start(ctx.arg(0), ProbeId::FutexWait)
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
    start(ctx.arg(0), ProbeId::FutexWake)
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
    start(ctx.arg(0).unwrap_or(0), ProbeId::FutexWait)
}

#[kprobe]
pub fn kprobe_futex_wake(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    start(ctx.arg(0).unwrap_or(0), ProbeId::FutexWake)
}

/// futex functions return int: sign-extend the low 32 bits.
#[kretprobe]
pub fn kretprobe_futex(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    call_exit(ctx.ret::<i64>() as i32 as i64)
}
