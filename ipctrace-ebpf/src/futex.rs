//! Futex syscalls on words inside a traced shm mapping: FUTEX_WAIT(_BITSET) and
//! FUTEX_WAKE(_BITSET) through futex(2), and the futex2 futex_wait/futex_wake syscalls.
//! Result classes and wait time per call (a derived figure at the syscall boundary).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use ipctrace_common::{Pending, kind, probe};

use crate::{
    current, is_target, now, pending_start,
    pipe::{arg, exit_call},
    shm_ino_of,
};

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
/// ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
const FUTEX_CMD_MASK: u64 = !(128 | 256);

#[inline(always)]
fn start(uaddr: u64, probe: u16) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    if let Some(ino) = shm_ino_of(tgid, uaddr) {
        pending_start(Pending { ino, start_ns: now(), len: 0, probe, kind: kind::SHM, _pad: 0 });
    }
    0
}

/// futex(uaddr, op, val, utime, uaddr2, val3)
#[tracepoint(category = "syscalls", name = "sys_enter_futex")]
pub fn sys_enter_futex(ctx: TracePointContext) -> u32 {
    let p = match arg(&ctx, 1) & FUTEX_CMD_MASK & 0xffff_ffff {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => probe::FUTEX_WAIT,
        FUTEX_WAKE | FUTEX_WAKE_BITSET => probe::FUTEX_WAKE,
        _ => return 0,
    };
    start(arg(&ctx, 0), p)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex")]
pub fn sys_exit_futex(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// futex2: futex_wait(uaddr, val, mask, flags, timeout, clockid)
#[tracepoint(category = "syscalls", name = "sys_enter_futex_wait")]
pub fn sys_enter_futex_wait(ctx: TracePointContext) -> u32 {
    start(arg(&ctx, 0), probe::FUTEX_WAIT)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex_wait")]
pub fn sys_exit_futex_wait(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// futex2: futex_wake(uaddr, mask, nr, flags)
#[tracepoint(category = "syscalls", name = "sys_enter_futex_wake")]
pub fn sys_enter_futex_wake(ctx: TracePointContext) -> u32 {
    start(arg(&ctx, 0), probe::FUTEX_WAKE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex_wake")]
pub fn sys_exit_futex_wake(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}
