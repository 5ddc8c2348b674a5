//! Page allocations in a target's context (`kmem:mm_page_alloc`, a raw tracepoint). One made
//! while a pipe write is in flight is a pipe buffer page: added up in that call and counted
//! against its channel at the call's exit, with no stack walk (a 1 GiB pipe run allocates
//! 262,144 of them). Any other allocation keeps its kernel stack, which tells a shmem page
//! from the rest. The call in flight is looked up first: it exists only for targets, so the
//! hot case costs one lookup.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use ipctrace_common::{ChannelKind, ProbeId, StackKey};

use crate::{PENDING, agg_event, emit, is_target, pipe::fills_pipe, stack_add, stack_id};

/// mm_page_alloc(page, order, gfp_flags, migratetype).
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let order = ctx.arg::<u64>(1) as u32;
    let bytes = 4096u64 << (order & 15);
    let tgid = (id >> 32) as u32;
    if let Some(p) = PENDING.get_ptr_mut(&id)
        && fills_pipe(unsafe { (*p).probe })
    {
        // Added up in the call in flight; counted once at its exit (`pipe::flush_pages`).
        emit(tgid, ProbeId::PageAlloc as u16, unsafe { (*p).kind }, unsafe { (*p).ino }, bytes as i64, 0);
        unsafe {
            (*p)._pad += 1;
            (*p).len += bytes;
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
