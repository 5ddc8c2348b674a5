//! Scheduling: who left the CPU and why (voluntary = blocked, with the kernel stack where it
//! blocked, and for how long), who woke whom, fork-following of the target set (with each
//! child's parent), the exit code of every target, and the signals targets send or receive.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_comm,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, tracing::StackIdContext},
};
use ipctrace_common::{BLOCK_STACK_EVERY, OffCpu, Pending, ProbeId, StackKey, blocked_kind, loss, sched, target};

use crate::{
    BLOCK_TICK, COMMS, EXITS, PARENTS, agg_call, agg_event, current, is_target,
    kmem::{Direct, Kmem, Probe},
    now, offsets, stack_add, stack_id, task_field, threads,
};

/// `TASK_DEAD` in a task's state: its last switch, after its exit.
const TASK_DEAD: u32 = 0x80;

/// Is this block's stack to be captured? Every block no in-flight call explains, and one in
/// BLOCK_STACK_EVERY of the others (per CPU).
#[inline(always)]
fn take_block_stack(explained: bool) -> bool {
    if !crate::block_stacks() {
        return false;
    }
    if !explained {
        return true;
    }
    match BLOCK_TICK.get_ptr_mut(0) {
        Some(t) => unsafe {
            *t += 1;
            *t % BLOCK_STACK_EVERY == 1
        },
        None => false,
    }
}

/// sched_switch(preempt, prev, next[, prev_state]), as a raw tracepoint (tasks' fields read by
/// helper calls).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    switch::<Probe, _>(&ctx)
}

/// sched_switch as a BTF tracepoint (tasks' fields read directly).
#[btf_tracepoint(function = "sched_switch")]
pub fn btf_sched_switch(ctx: BtfTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    switch::<Direct, _>(&ctx)
}

/// Argument `n` of a tracepoint (raw or BTF: both are an array of u64).
#[inline(always)]
fn arg<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u64).add(n) }
}

/// A context switch: `prev` (`current`) leaves the CPU, `next` comes in.
#[inline(always)]
fn switch<K: Kmem, C: StackIdContext>(ctx: &C) -> u32 {
    let prev = arg(ctx, 1) as *const u8;
    let (tgid, tid) = K::ids_of_current(prev);
    // One clock read serves both sides (the block that starts and the one that ends).
    let mut clock = 0u64;
    let mut now_once = || {
        if clock == 0 {
            clock = now();
        }
        clock
    };
    if tid != 0 && is_target(tgid) {
        let thread = threads::get(tid);
        let call = thread.map(|t| unsafe { &raw mut (*t).call }).filter(|c| unsafe { (**c).probe } != 0);
        if let Some(c) = call
            && crate::pipe::fills_pipe(unsafe { (*c).probe })
        {
            // A pipe write in flight takes the pages it allocated on this CPU with it.
            crate::pages::settle(unsafe { &mut *c }, tid);
        }
        let preempt = arg(ctx, 0) & 1 != 0;
        // Blocked = not preempted and not left runnable (a yield). Before 5.18 the state is
        // not an argument and is read from the task.
        let state = if offsets().switch_state_arg != 0 {
            arg(ctx, 3) as u32
        } else {
            unsafe { K::read::<u32>(prev, offsets().task_state) }.unwrap_or(0)
        };
        let voluntary = !preempt && state != 0;
        let sub = if voluntary { sched::VOLUNTARY } else { sched::INVOLUNTARY };
        agg_event(tgid, ProbeId::SchedOut as u16, sub, 0, 0);
        if voluntary {
            // Where it blocked: the call in flight (pipe write, futex wait, ...) says it exactly.
            let (p, k, ino) = match call {
                Some(c) => unsafe { ((*c).probe, (*c).kind, (*c).ino) },
                None => (0, 0, 0),
            };
            let kstack = if take_block_stack(p != 0) { stack_id(ctx, 0) } else { -1 };
            let o = OffCpu { ts: now_once(), tgid, kstack, probe: p, kind: k, _pad: 0, ino };
            if state & TASK_DEAD != 0 {
                // A dying thread's last switch: it never runs again. Its entry goes here (one
                // made again by a sleep on the exit path after sched_process_exit included).
                if thread.is_some() {
                    threads::remove(tid);
                }
            } else if let Some(t) = thread.or_else(|| threads::get_or_make(tid, loss::OFFCPU_FULL)) {
                unsafe { (*t).off = o };
            }
        }
    }
    // The task coming in: a pipe write of its in flight claims this CPU's page count; its
    // off-CPU interval closes.
    let next: u32 = unsafe { K::read(arg(ctx, 2) as *const u8, offsets().task_pid) }.unwrap_or(0);
    let Some(t) = threads::get(next) else { return 0 };
    if crate::pipe::fills_pipe(unsafe { (*t).call.probe })
        && unsafe { (*t).call._pad } & ipctrace_common::PAGES_MEASURED != 0
    {
        crate::pages::claim(next);
    }
    if unsafe { (*t).off.ts } != 0 {
        let o = unsafe { (*t).off };
        unsafe { (*t).off.ts = 0 };
        let dt = now_once().saturating_sub(o.ts);
        let p = Pending {
            ino: o.ino,
            start_ns: o.ts,
            len: 0,
            probe: ProbeId::Blocked as u16,
            kind: blocked_kind(o.probe, o.kind),
            _pad: next,
        };
        agg_call(o.tgid, &p, 0, dt);
        woken(t, o.tgid, next);
        if o.kstack >= 0 {
            let key = StackKey {
                tgid: o.tgid,
                probe: ProbeId::OffCpu as u16,
                kind: o.kind,
                kstack: o.kstack,
                ustack: -1,
                ino: o.ino,
            };
            stack_add(&key, dt);
        }
    }
    0
}

/// A target thread is being woken (sched_waking runs in the waker's context, unlike
/// sched_wakeup, which may run on the target CPU). The waker is kept in the thread's entry and
/// counted when the block ends (`switch`): the thread may not have switched out yet (its
/// waker runs on another CPU while it is on its way into the scheduler), or may not block at
/// all (woken between setting its state and testing its condition), so whether this wake-up
/// ends a block is only known then. A block's wake-up is its last one.
#[raw_tracepoint(tracepoint = "sched_waking")]
pub fn sched_waking(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    waking::<Probe>(ctx.arg(0))
}

/// sched_waking as a BTF tracepoint (the task's pid read directly).
#[btf_tracepoint(function = "sched_waking")]
pub fn btf_sched_waking(ctx: BtfTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    waking::<Direct>(ctx.arg(0))
}

/// Task `p` is being woken.
#[inline(always)]
fn waking<K: Kmem>(p: *const u8) -> u32 {
    let pid: u32 = unsafe { K::read(p, offsets().task_pid) }.unwrap_or(0);
    let Some(t) = threads::get(pid) else { return 0 };
    let (waker, waker_tid) = current();
    // The time only for the event stream (a clock read is not free); any non-zero value marks it.
    let at = if crate::events_on() { now() } else { 1 };
    unsafe {
        (*t).waker_tgid = waker;
        (*t).waker_tid = waker_tid;
        (*t).woke_at = at;
    }
    0
}

/// Blocked thread `tid` of `tgid` runs again: its last wake-up, if one was seen, is counted
/// against its waker (without a stack walk: the block's own stack already says where the wait
/// was, and a walk per wake-up would double the cost of tracing a pipe).
#[inline(always)]
fn woken(t: *mut ipctrace_common::Thread, tgid: u32, tid: u32) {
    let at = unsafe { (*t).woke_at };
    if at == 0 {
        return;
    }
    let (waker, waker_tid) = unsafe { ((*t).waker_tgid, (*t).waker_tid) };
    unsafe { (*t).woke_at = 0 };
    // Drawn on the waker's thread, at the moment of the wake-up.
    crate::emit_as(at, tgid, waker_tid, ProbeId::Wakeup as u16, 0, waker as u64, 0, 0, tid);
    crate::agg_add(tgid, ProbeId::Wakeup as u16, 0, waker as u64, 1, 0);
}

/// Children of targets become targets before they run (sched_process_fork(parent, child); a
/// new thread of a target is already one).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let child_task: *const u8 = ctx.arg(1);
    let child: u32 = task_field(child_task, offsets().task_tgid).unwrap_or(0);
    if child != 0 && child != tgid {
        // A child sharing its parent's fd table (clone with CLONE_FILES) could close an fd
        // of either without the other's syscalls showing it: neither is fd-cached.
        let files = |task: *const u8| task_field::<u64>(task, offsets().task_files).unwrap_or(0);
        let parent_task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
        let mut t = crate::fdcache::new_generation(target::IS as u64);
        if files(child_task) == files(parent_task)
            && let Some(p) = crate::targets::get(tgid)
        {
            t |= target::NOCACHE as u64;
            unsafe { *p |= target::NOCACHE as u64 };
        }
        crate::targets::insert(child, t);
        let _ = PARENTS.insert(&child, &tgid, 0);
        crate::shm::fork(tgid, child);
        if let Ok(comm) = bpf_get_current_comm() {
            let _ = COMMS.insert(&child, &comm, 0);
        }
    }
    0
}

/// A target's thread exits: its per-thread entries go. Its thread-group leader's exit keeps
/// the exit code (wait(2) encoding: the exit status in bits 8-15, or the signal in bits 0-6),
/// for the process tree of the report.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return 0;
    }
    threads::remove(tid);
    crate::shm::thread_exit();
    if tid != tgid {
        return 0;
    }
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    if let Ok(code) = task_field::<i32>(task, offsets().task_exit_code) {
        let _ = EXITS.insert(&tgid, &(code as u32), 0);
    }
    0
}

/// A target exec'd: remember its new name (processes may be gone when the report is made).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if let Some(t) = crate::targets::get(tgid) {
        // The new program's bitness is checked again at its first syscall; close-on-exec fds
        // are gone, so cached ones are too (a new generation).
        unsafe { *t = crate::fdcache::new_generation((*t & target::NOCACHE as u64) | target::IS as u64) };
        if let Ok(comm) = bpf_get_current_comm() {
            let _ = COMMS.insert(&tgid, &comm, 0);
        }
    }
    0
}

/// signal_generate(sig, info, task, group, result), in the sender's context: counted against
/// the receiver (by sender pid and signal number) when the receiver is a target (a signal a
/// target sends elsewhere, e.g. SIGCHLD to ipctrace, has no target to be counted under); the
/// event carries the result (so coalesced signals show as such) and the receiving thread.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (sender, _) = current();
    let task: *const u8 = ctx.arg(2);
    let receiver: u32 = task_field(task, offsets().task_tgid).unwrap_or(0);
    if receiver == 0 || !is_target(receiver) {
        return 0;
    }
    let tid: u32 = task_field(task, offsets().task_pid).unwrap_or(0);
    let sig = ctx.arg::<u64>(0) as u16;
    let result = ctx.arg::<u64>(4) as i32 as i64;
    crate::emit(receiver, ProbeId::Signal as u16, sig, sender as u64, result, 0, tid);
    // The aggregate's `bytes` counts the signals that found one already pending (coalesced:
    // TRACE_SIGNAL_ALREADY_PENDING), which the receiver will see once.
    crate::agg_add(receiver, ProbeId::Signal as u16, sig, sender as u64, 1, (result == 2) as u64);
    0
}
