//! The shared-memory transport: set-up and teardown syscalls on shmem objects (openat and
//! unlink of /dev/shm paths, ftruncate, mmap, munmap), the mappings they create (kept in
//! `SHM_RANGES`), and page faults in those mappings — as tracepoints, and on the function tier
//! as fentry/fexit, then kprobes, on handle_mm_fault (exact, with fault latency). The futex
//! sync stage is in `futex`.

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use ipctrace_common::{ChannelKind, Pending, ProbeId, Range, Ranges, loss};

use crate::{
    SHM_RANGES, agg_call, agg_event,
    classify::{classify_fd, classify_file},
    count_loss, current, is_target, now, offsets, pending_start, pending_take,
    pipe::{arg, ret},
    read_at, shm_ino_of, tp_field, tp_offsets,
};

const SHM: u16 = ChannelKind::Shm as u16;

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
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if is_target(tgid) && is_dev_shm(arg(&ctx, 1)) {
        agg_event(tgid, ProbeId::ShmOpen as u16, SHM, 0, 0);
    }
    0
}

/// unlink(pathname): shm_unlink becomes an unlink of /dev/shm/NAME.
#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if is_target(tgid) && is_dev_shm(arg(&ctx, 0)) {
        agg_event(tgid, ProbeId::ShmUnlink as u16, SHM, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_ftruncate")]
pub fn sys_enter_ftruncate(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    if let Some((ino, ChannelKind::Shm)) = classify_fd(arg(&ctx, 0)) {
        agg_event(tgid, ProbeId::ShmFtruncate as u16, SHM, ino, arg(&ctx, 1));
    }
    0
}

/// mmap(addr, len, prot, flags, fd, off) of a shmem fd: remember the length until the exit.
#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    if !is_target(current().0) {
        return 0;
    }
    let fd = arg(&ctx, 4);
    if fd as i64 == -1 || fd == u32::MAX as u64 {
        return 0;
    }
    if let Some((ino, ChannelKind::Shm)) = classify_fd(fd) {
        pending_start(Pending {
            ino,
            start_ns: now(),
            len: arg(&ctx, 1),
            probe: ProbeId::ShmMmap as u16,
            kind: SHM,
            _pad: 0,
        });
    }
    0
}

/// ... and at the exit, record the mapping [ret, ret + len) as the object's.
#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    let Some((tgid, p)) = pending_take() else { return 0 };
    let addr = ret(&ctx);
    if addr < 0 && addr > -4096 {
        return 0;
    }
    agg_event(tgid, ProbeId::ShmMmap as u16, SHM, p.ino, p.len);
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
    if crate::floor() {
        return 0;
    }
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let addr = arg(&ctx, 0);
    if let Some(ino) = shm_ino_of(tgid, addr) {
        agg_event(tgid, ProbeId::ShmMunmap as u16, SHM, ino, arg(&ctx, 1));
        // The range stays: the report keys faults by the object, and a reused address
        // would need a fresh mmap (which gets its own slot).
    }
    0
}

#[inline(always)]
fn on_fault(ctx: &TracePointContext, probe: ProbeId) -> u32 {
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
        Some(ino) => agg_event(tgid, probe as u16, SHM, ino, 0),
        None => agg_event(tgid, probe as u16, ChannelKind::Other as u16, 0, 0),
    }
    0
}

#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    on_fault(&ctx, ProbeId::FaultUser)
}

#[tracepoint(category = "exceptions", name = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    on_fault(&ctx, ProbeId::FaultKernel)
}

/// Faults in flight, by thread: separate from `PENDING` because a fault nests inside a
/// pipe write or read (copy_from_user/copy_to_user on a page not yet mapped).
#[map]
static PENDING_FAULT: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// Function tier: handle_mm_fault(struct vm_area_struct *vma, ...): is vma->vm_file shmem?
#[inline(always)]
fn fault_entry(vma: *const u8) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let file: *const u8 = unsafe { read_at(vma, offsets().vma_file) }.unwrap_or(core::ptr::null());
    let (ino, k) = match unsafe { classify_file(file) } {
        Ok(Some((ino, ChannelKind::Shm))) => (ino, SHM),
        _ => (0, ChannelKind::Other as u16),
    };
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let p = Pending { ino, start_ns: now(), len: 0, probe: ProbeId::MmFault as u16, kind: k, _pad: 0 };
    if PENDING_FAULT.insert(&id, &p, 0).is_err() {
        count_loss(loss::PENDING_FULL);
    }
    0
}

#[inline(always)]
fn fault_exit() -> u32 {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    if let Some(p) = unsafe { PENDING_FAULT.get(&id) }.copied() {
        let _ = PENDING_FAULT.remove(&id);
        // vm_fault_t is a bit mask, not a length: count the fault as completed (zero).
        agg_call((id >> 32) as u32, &p, 0, now().saturating_sub(p.start_ns));
    }
    0
}

#[fentry(function = "handle_mm_fault")]
pub fn fentry_mm_fault(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fault_entry(ctx.arg(0))
}

#[fexit(function = "handle_mm_fault")]
pub fn fexit_mm_fault(_ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fault_exit()
}

#[kprobe]
pub fn kprobe_mm_fault(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fault_entry(ctx.arg(0).unwrap_or(core::ptr::null()))
}

#[kretprobe]
pub fn kretprobe_mm_fault(_ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fault_exit()
}
