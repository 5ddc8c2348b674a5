//! Sampling: a cpu-clock perf event on every CPU; samples of targets count their kernel
//! stacks (a sampled figure: where the CPU time went, statistically), each with the channel
//! whose call the thread had in flight (none: the process's own time). User stacks are not
//! walked: they were never symbolized, and the walk was most of a sample's cost.

use aya_ebpf::{macros::perf_event, programs::PerfEventContext};
use ipctrace_common::{ProbeId, StackKey};

use crate::{current, inflight, is_target, stack_add, stack_id};

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let kstack = stack_id(&ctx, 0);
    // The channel whose call this thread has in flight, if any: the sample is that channel's.
    let (kind, ino) = match inflight() {
        Some(p) => unsafe { ((*p).kind, (*p).ino) },
        None => (0, 0),
    };
    stack_add(&StackKey { tgid, probe: ProbeId::Sample as u16, kind, kstack, ustack: -1, ino }, 0);
    0
}
