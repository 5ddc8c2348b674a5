//! Page allocations in a target's context (`kmem:mm_page_alloc`, a raw tracepoint). One made
//! while a pipe write is in flight is a pipe buffer page: added up in that call and counted
//! against its channel at the call's exit, with no stack walk (a 1 GiB pipe run allocates
//! 262,144 of them). Any other allocation keeps its kernel stack, which tells a shmem page
//! from the rest.
//!
//! The write in flight is found without a hash lookup while it stays on its CPU: its start
//! claims this CPU's `PIPE_PAGES` slot, where the pages are added up; the slot is emptied into
//! the call (its thread's `THREADS` entry) when the writer leaves the CPU and at the call's exit. Allocations
//! after the writer moved to another CPU find the call there.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, macros::raw_tracepoint, maps::PerCpuArray,
    programs::RawTracePointContext,
};
use ipctrace_common::{ChannelKind, Pending, ProbeId, StackKey};

use crate::{agg_event, emit, events_on, inflight, is_target, pipe::fills_pipe, stack_add, stack_id};

/// Pages allocated by the pipe write that claimed this CPU (`id`: its pid_tgid, 0: none).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PageSlot {
    id: u64,
    pages: u64,
    bytes: u64,
}

#[map]
static PIPE_PAGES: PerCpuArray<PageSlot> = PerCpuArray::with_max_entries(1, 0);

/// A pipe write of the current thread starts on this CPU: it owns the slot.
#[inline(always)]
pub(crate) fn claim() {
    if let Some(s) = PIPE_PAGES.get_ptr_mut(0) {
        unsafe { *s = PageSlot { id: bpf_get_current_pid_tgid(), pages: 0, bytes: 0 } };
    }
}

/// Moves what this CPU's slot holds for the current thread into its call `p`.
#[inline(always)]
pub(crate) fn settle(p: &mut Pending) {
    if let Some(s) = PIPE_PAGES.get_ptr_mut(0) {
        unsafe {
            if (*s).id == bpf_get_current_pid_tgid() {
                p._pad += (*s).pages as u32;
                p.len += (*s).bytes;
                *s = PageSlot { id: 0, pages: 0, bytes: 0 };
            }
        }
    }
}

/// mm_page_alloc(page, order, gfp_flags, migratetype).
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let order = ctx.arg::<u64>(1) as u32;
    let bytes = 4096u64 << (order & 15);
    let tgid = (id >> 32) as u32;
    let mut counted = false;
    if let Some(s) = PIPE_PAGES.get_ptr_mut(0)
        && unsafe { (*s).id } == id
    {
        unsafe {
            (*s).pages += 1;
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
        emit(tgid, ProbeId::PageAlloc as u16, unsafe { (*p).kind }, unsafe { (*p).ino }, bytes as i64, 0, 0);
        if !counted {
            unsafe {
                (*p)._pad += 1;
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
    stack_add(&StackKey { tgid, probe: ProbeId::PageAlloc as u16, kind: other, kstack, ustack: -1, ino: 0 }, 0);
    0
}
