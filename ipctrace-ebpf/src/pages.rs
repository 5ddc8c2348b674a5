//! Page allocations. A pipe write's buffer pages are added up in the write itself, counted one
//! of two ways (the loader picks, `Offsets::pgalloc_count` non-zero for the first):
//!
//! - **per-CPU counters** (derived): the kernel's own page-allocation counters of the CPU the
//!   write runs on (`vm_event_states.event[PGALLOC_*]`) are read when the write starts or comes
//!   back to a CPU (`claim`) and when it leaves it or ends (`settle`); the growth is the write's.
//!   No hook fires per page, so a pipe run no longer pays `kmem:mm_page_alloc` on every page of
//!   every process (14 per 64 KiB write). An interrupt's allocation on that CPU meanwhile is
//!   counted too, as it would be at the tracepoint (it runs in the writer's context). The four
//!   reads a write costs are paid for a channel's first `PAGES_WARMUP` writes on a CPU and then
//!   for a random one in `PAGES_EVERY` (`start`); the loader scales the measured pages by the
//!   bytes all writes moved over the bytes the measured ones did (`AggVal::aux_base`).
//! - **`kmem:mm_page_alloc`** (exact): each allocation in the writer's context is added to the
//!   slot its write claimed (used with `--events`, where every page is an event, and where the
//!   counters are not found).
//!
//! The write in flight owns its CPU's `PIPE_PAGES` slot while it runs there, so neither way
//! needs a lookup per page. Any other allocation by a target (only when the tracepoint is
//! attached: shared memory is traced) keeps its kernel stack, which tells a shmem page from
//! the rest.

use core::ptr::write_volatile;

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_prandom_u32, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use ipctrace_common::{AggKey, ChannelKind, PAGES_EVERY, PAGES_WARMUP, PGALLOC_MAX, Pending, ProbeId, StackKey};

use crate::{
    agg_event, current, emit, events_on, inflight, is_target, offsets, pipe::fills_pipe, read_at, stack_add, stack_id,
    task_field,
};

/// What the pipe write that claimed this CPU allocated (`tid`: its thread, 0: none): pages
/// and bytes counted at the tracepoint, or the counters' sum when it claimed the CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PageSlot {
    tid: u32,
    _pad: u32,
    base: u64,
    pages: u64,
    bytes: u64,
}

#[map]
static PIPE_PAGES: PerCpuArray<PageSlot> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's first `PGALLOC_*` counter, once found (0: not yet): a CPU's counters never move.
#[map]
static COUNTERS_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Are pipe pages counted from the per-CPU counters?
#[inline(always)]
fn by_counters() -> bool {
    offsets().pgalloc_count != 0
}

/// The sum of this CPU's page-allocation counters (pages, all zones). The counters are found
/// from the current task's runqueue (`task->se.cfs_rq->rq`, this CPU's `runqueues`) and the two
/// variables' places in the per-CPU section.
#[inline(always)]
fn counters_now() -> Option<u64> {
    let o = offsets();
    let at = COUNTERS_AT.get_ptr_mut(0)?;
    let mut a = unsafe { *at };
    if a == 0 {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let cfs_rq: u64 = task_field(task, o.task_se_cfs_rq).ok()?;
        let rq: u64 = unsafe { read_at(cfs_rq as *const u8, o.cfs_rq_rq) }.ok()?;
        if rq == 0 {
            return None;
        }
        a = (rq - o.percpu_runqueues as u64) + o.percpu_vm_events as u64 + 8 * o.pgalloc_first as u64;
        unsafe { *at = a };
    }
    let v = unsafe { bpf_probe_read_kernel(a as *const [u64; PGALLOC_MAX as usize]) }.ok()?;
    let mut sum = 0u64;
    for (i, x) in v.iter().enumerate() {
        if (i as u32) < o.pgalloc_count {
            sum += *x;
        }
    }
    Some(sum)
}

/// Pipe write `p` of thread `tid` of `tgid` starts on this CPU: is it measured? Counted at the
/// tracepoint, every write is; from the counters (four kernel reads per write), a channel's
/// first `PAGES_WARMUP` writes on this CPU (by its aggregate's count: a small channel is
/// measured whole) and then a random one in `PAGES_EVERY` (random, so that no periodic pattern
/// of writes hides one channel from the sample). A measured write claims the slot; any other
/// frees it (so no stale claim is settled into it).
#[inline(always)]
pub(crate) fn start(tgid: u32, tid: u32, p: &Pending) -> bool {
    let measured = !by_counters() || {
        let key = AggKey { tgid, probe: p.probe, kind: p.kind, ino: p.ino };
        crate::agg_calls_here(&key) < PAGES_WARMUP as u64 || unsafe { bpf_get_prandom_u32() } % PAGES_EVERY == 0
    };
    if measured {
        claim(tid);
    } else if let Some(s) = PIPE_PAGES.get_ptr_mut(0) {
        unsafe { (*s).tid = 0 };
    }
    measured
}

/// A measured pipe write of thread `tid` starts, or comes back, on this CPU: it owns the slot.
#[inline(always)]
pub(crate) fn claim(tid: u32) {
    let base = if by_counters() { counters_now().unwrap_or(0) } else { 0 };
    if let Some(s) = PIPE_PAGES.get_ptr_mut(0) {
        // Field by field, volatile: LLVM turns neighbouring zero stores into a memset, a
        // byte-by-byte loop in BPF.
        unsafe {
            (*s).tid = tid;
            (*s).base = base;
            write_volatile(&raw mut (*s).pages, 0);
            write_volatile(&raw mut (*s).bytes, 0);
        }
    }
}

/// Moves what this CPU's slot holds for thread `tid` (the current one) into its call `p`.
#[inline(always)]
pub(crate) fn settle(p: &mut Pending, tid: u32) {
    let Some(s) = PIPE_PAGES.get_ptr_mut(0) else { return };
    let slot = unsafe { *s };
    if slot.tid == 0 || slot.tid != tid {
        return;
    }
    let (pages, bytes) = if by_counters() {
        // 0 if the counters could not be read at the claim (base 0) or now.
        let n = match counters_now() {
            Some(now) if slot.base != 0 => now.saturating_sub(slot.base),
            _ => 0,
        };
        (n, n * 4096)
    } else {
        (slot.pages, slot.bytes)
    };
    p._pad += pages as u32;
    p.len += bytes;
    unsafe { (*s).tid = 0 };
}

/// mm_page_alloc(page, order, gfp_flags, migratetype).
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, tid) = current();
    let order = ctx.arg::<u64>(1) as u32;
    // Pages, as the per-CPU counters count them: an order-n allocation is 2^n pages.
    let pages = 1u64 << (order & 15);
    let bytes = 4096 * pages;
    let counters = by_counters();
    let mut counted = false;
    if let Some(s) = PIPE_PAGES.get_ptr_mut(0)
        && tid != 0
        && unsafe { (*s).tid } == tid
    {
        if counters {
            // The write's counters count it.
            return 0;
        }
        unsafe {
            (*s).pages += pages;
            (*s).bytes += bytes;
        }
        counted = true;
    }
    if counted && !events_on() {
        return 0;
    }
    if let Some(p) = inflight()
        && fills_pipe(unsafe { (*p).probe })
    {
        // Added up in the call in flight; counted once with the call at its exit (`agg_call`: `aux_calls`, `aux_bytes`).
        emit(tgid, ProbeId::PipePage as u16, unsafe { (*p).kind }, unsafe { (*p).ino }, bytes as i64, 0, 0);
        if !counted && !counters {
            unsafe {
                (*p)._pad += pages as u32;
                (*p).len += bytes;
            }
        }
        return 0;
    }
    if !is_target(tgid) {
        return 0;
    }
    let other = ChannelKind::Other as u16;
    agg_event(tgid, ProbeId::PageAlloc as u16, other, 0, bytes);
    let kstack = stack_id(&ctx, 0);
    // In a fault in a traced mapping: the stack is kept under the mapping's object.
    let (kind, ino) = crate::shm::fault_channel(tid).unwrap_or((other, 0));
    stack_add(&StackKey { tgid, probe: ProbeId::PageAlloc as u16, kind, kstack, ustack: -1, ino }, 0);
    0
}
