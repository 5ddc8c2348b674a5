//! The shared-memory side: set-up and teardown syscalls on /dev/shm objects (openat, ftruncate,
//! mmap, munmap, unlink), the mappings they create (kept in `SHM_RANGES`), page faults in
//! those mappings, and page allocations with their kernel stacks.

use aya_ebpf::{helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext};
use ipctrace_common::{Pending, Range, Ranges, StackKey, kind, loss, probe};

use crate::{
    PENDING, SHM_RANGES, agg_event, classify_fd, count_loss, current, emit, is_target, now, pending_start,
    pending_take,
    pipe::{arg, ret},
    shm_ino_of, stack_add, stack_id, tp_field, tp_offsets,
};

const DEV_SHM: &[u8; 9] = b"/dev/shm/";

/// Does the user string at `ptr` start with /dev/shm/?
#[inline(always)]
fn is_dev_shm(ptr: u64) -> bool {
    let mut buf = [0u8; 16];
    match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut buf) } {
        Ok(s) => s.len() >= DEV_SHM.len() && &s[..DEV_SHM.len()] == DEV_SHM,
        Err(_) => false,
    }
}

/// openat(dfd, filename, ...): shm_open becomes an openat of /dev/shm/NAME.
#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if is_target(tgid) && is_dev_shm(arg(&ctx, 1)) {
        agg_event(tgid, probe::SHM_OPEN, kind::SHM, 0, 0);
    }
    0
}

/// unlink(pathname): shm_unlink becomes an unlink of /dev/shm/NAME.
#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if is_target(tgid) && is_dev_shm(arg(&ctx, 0)) {
        agg_event(tgid, probe::SHM_UNLINK, kind::SHM, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_ftruncate")]
pub fn sys_enter_ftruncate(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    if let Some((ino, kind::SHM)) = classify_fd(arg(&ctx, 0)) {
        agg_event(tgid, probe::SHM_FTRUNCATE, kind::SHM, ino, arg(&ctx, 1));
    }
    0
}

/// mmap(addr, len, prot, flags, fd, off) of a shmem fd: remember the length until the exit.
#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    let fd = arg(&ctx, 4);
    if fd as i64 == -1 || fd == u32::MAX as u64 {
        return 0;
    }
    if let Some((ino, kind::SHM)) = classify_fd(fd) {
        pending_start(Pending {
            ino,
            start_ns: now(),
            len: arg(&ctx, 1),
            probe: probe::SHM_MMAP,
            kind: kind::SHM,
            _pad: 0,
        });
    }
    0
}

/// ... and at the exit, record the mapping [ret, ret + len) as the object's.
#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let Some((tgid, p)) = pending_take() else { return 0 };
    let addr = ret(&ctx);
    if addr < 0 && addr > -4096 {
        return 0;
    }
    agg_event(tgid, probe::SHM_MMAP, kind::SHM, p.ino, p.len);
    let mut rs = unsafe { SHM_RANGES.get(&tgid) }.copied().unwrap_or(Ranges::default());
    let new = Range { start: addr as u64, end: addr as u64 + p.len, ino: p.ino };
    let mut placed = false;
    for r in rs.r.iter_mut() {
        if !placed && r.start == 0 {
            *r = new;
            placed = true;
        }
    }
    if !placed {
        count_loss(loss::RANGES_FULL);
        return 0;
    }
    let _ = SHM_RANGES.insert(&tgid, &rs, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_munmap")]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let addr = arg(&ctx, 0);
    if let Some(ino) = shm_ino_of(tgid, addr) {
        agg_event(tgid, probe::SHM_MUNMAP, kind::SHM, ino, arg(&ctx, 1));
        // The range stays: the report keys faults by the object, and a reused address
        // would need a fresh mmap (which gets its own slot).
    }
    0
}

#[inline(always)]
fn on_fault(ctx: &TracePointContext, probe: u16) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let Ok(addr) = (unsafe { tp_field::<u64, _>(ctx, tp_offsets().fault_address) }) else {
        count_loss(loss::READ_FAILED);
        return 0;
    };
    // Kernel-mode faults on kernel addresses are not the process's memory.
    if addr >= 0x0000_8000_0000_0000 {
        return 0;
    }
    match shm_ino_of(tgid, addr) {
        Some(ino) => agg_event(tgid, probe, kind::SHM, ino, 0),
        None => agg_event(tgid, probe, kind::OTHER, 0, 0),
    }
    0
}

#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    on_fault(&ctx, probe::FAULT_USER)
}

#[tracepoint(category = "exceptions", name = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    on_fault(&ctx, probe::FAULT_KERNEL)
}

/// Page allocations in the context of a target. An allocation during a pipe write in flight
/// (the thread's pending call) is a pipe buffer page: counted against that channel, no stack
/// walk (a 1 GiB pipe run allocates 262,144 of them). Any other allocation keeps its kernel
/// stack, which tells a shmem page from the rest.
#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let order: u32 = unsafe { tp_field(&ctx, tp_offsets().alloc_order) }.unwrap_or(0);
    let bytes = 4096u64 << (order & 15);
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    if let Some(p) = PENDING.get_ptr_mut(&id)
        && matches!(unsafe { (*p).probe }, probe::PIPE_WRITE | probe::SPLICE_IN | probe::VMSPLICE)
    {
        // Added up in the call in flight; counted once at its exit (`pipe::flush_pages`).
        emit(tgid, probe::PAGE_ALLOC, unsafe { (*p).kind }, unsafe { (*p).ino }, bytes as i64, 0);
        unsafe {
            (*p)._pad += 1;
            (*p).len += bytes;
        }
        return 0;
    }
    agg_event(tgid, probe::PAGE_ALLOC, kind::OTHER, 0, bytes);
    let kstack = stack_id(&ctx, 0);
    stack_add(&StackKey { tgid, probe: probe::PAGE_ALLOC, kind: kind::OTHER, kstack, ustack: -1 }, 0);
    0
}
