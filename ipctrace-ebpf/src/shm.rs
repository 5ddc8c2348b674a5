//! The shared-memory transport: set-up and teardown syscalls on shmem objects (openat and
//! unlink of /dev/shm paths, ftruncate, mmap, munmap; entered from `syscalls`), the mappings
//! they create (kept in `SHM_RANGES`), and page faults in those mappings — as raw
//! tracepoints, and on the function tier as fentry/fexit, then kprobes, on handle_mm_fault
//! (exact, with fault latency). The futex sync stage is in `futex`.

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use ipctrace_common::{ChannelKind, Pending, ProbeId, Range, SHARED_ANON, loss};

use crate::{
    RANGES_ZERO, SHM_RANGES, agg_call, agg_event,
    classify::{classify_fd, classify_file},
    count_loss, current, is_target, now, offsets, pending_start, read_at, shm_ino_of,
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

/// openat(dfd, filename, ...): shm_open becomes an openat of /dev/shm/NAME. Counted at the
/// exit, under the object the new fd names (a process may open several).
#[inline(always)]
pub(crate) fn open_enter(filename: u64) {
    if is_dev_shm(filename) {
        pending_start(Pending { ino: 0, start_ns: 0, len: 0, probe: ProbeId::ShmOpen as u16, kind: SHM, _pad: 0 });
    }
}

/// The exit of an openat of /dev/shm that returned `fd`: counted under its object's inode, or
/// under none (the process's) when it failed or opened something else than shmem.
#[inline(always)]
pub(crate) fn open_exit(tgid: u32, fd: i64) {
    let ino = match (fd >= 0).then(|| classify_fd(fd as u64)).flatten() {
        Some((ino, ChannelKind::Shm)) => ino,
        _ => 0,
    };
    agg_event(tgid, ProbeId::ShmOpen as u16, SHM, ino, 0);
}

/// unlink(pathname): shm_unlink becomes an unlink of /dev/shm/NAME.
#[inline(always)]
pub(crate) fn unlink_enter(tgid: u32, pathname: u64) {
    if is_dev_shm(pathname) {
        agg_event(tgid, ProbeId::ShmUnlink as u16, SHM, 0, 0);
    }
}

/// ftruncate(fd, length) of a shmem fd.
#[inline(always)]
pub(crate) fn ftruncate_enter(tgid: u32, fd: u64, length: u64) {
    if let Some((ino, ChannelKind::Shm)) = classify_fd(fd) {
        agg_event(tgid, ProbeId::ShmFtruncate as u16, SHM, ino, length);
    }
}

const MAP_SHARED: u64 = 0x01;
const MAP_ANONYMOUS: u64 = 0x20;

/// mmap(addr, len, prot, flags, fd, off) of a shmem fd, or a shared anonymous mapping
/// (`ino` 0 until the exit names it): remember the length until the exit.
#[inline(always)]
pub(crate) fn mmap_enter(fd: u64, len: u64, flags: u64) {
    let ino = if fd as i64 == -1 || fd == u32::MAX as u64 {
        if flags & MAP_SHARED == 0 || flags & MAP_ANONYMOUS == 0 {
            return;
        }
        0
    } else {
        match classify_fd(fd) {
            Some((ino, ChannelKind::Shm)) => ino,
            _ => return,
        }
    };
    pending_start(Pending { ino, start_ns: now(), len, probe: ProbeId::ShmMmap as u16, kind: SHM, _pad: 0 });
}

/// ... and at the exit, record the mapping [addr, addr + len) as the object's (a shared
/// anonymous one gets its id: `SHARED_ANON`).
#[inline(always)]
pub(crate) fn mmap_exit(tgid: u32, p: &Pending, addr: i64) {
    if addr < 0 && addr > -4096 {
        return;
    }
    let ino = if p.ino == 0 {
        SHARED_ANON | ((tgid as u64 & 0x1fff_ffff) << 32) | ((addr as u64 >> 12) & 0xffff_ffff)
    } else {
        p.ino
    };
    agg_event(tgid, ProbeId::ShmMmap as u16, SHM, ino, p.len);
    add_range(tgid, Range { start: addr as u64, end: addr as u64 + p.len, ino });
}

/// Adds a mapping to `tgid`'s ranges, in place (a full table is loss).
#[inline(always)]
fn add_range(tgid: u32, new: Range) {
    if unsafe { SHM_RANGES.get(&tgid) }.is_none() {
        let Some(zero) = RANGES_ZERO.get(0) else { return };
        if SHM_RANGES.insert(&tgid, zero, 0).is_err() {
            count_loss(loss::RANGES_FULL);
            return;
        }
    }
    let Some(rs) = SHM_RANGES.get_ptr_mut(&tgid) else { return };
    for r in unsafe { (*rs).r.iter_mut() } {
        if r.start == 0 {
            *r = new;
            return;
        }
    }
    count_loss(loss::RANGES_FULL);
}

/// A target forked: the child inherits its parent's mappings, shared ones included.
#[inline(always)]
pub(crate) fn fork(parent: u32, child: u32) {
    if let Some(rs) = unsafe { SHM_RANGES.get(&parent) } {
        let _ = SHM_RANGES.insert(&child, rs, 0);
    }
}

/// munmap(addr, len) of a traced mapping.
#[inline(always)]
pub(crate) fn munmap_enter(tgid: u32, addr: u64, len: u64) {
    if let Some(ino) = shm_ino_of(tgid, addr) {
        agg_event(tgid, ProbeId::ShmMunmap as u16, SHM, ino, len);
        // The range stays: the report keys faults by the object, and a reused address
        // would need a fresh mmap (which gets its own slot).
    }
}

/// The last fault of a target thread on this CPU (`tid` 0: none) and the traced mapping it was
/// in (`ino` 0: none): a page the fault allocates is that mapping's (`fault_channel`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastFault {
    tid: u32,
    _pad: u32,
    ino: u64,
}

#[map]
static LAST_FAULT: PerCpuArray<LastFault> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn fault_in(tid: u32, ino: u64) {
    if let Some(s) = LAST_FAULT.get_ptr_mut(0) {
        unsafe {
            (*s).tid = tid;
            (*s).ino = ino;
        }
    }
}

/// The traced mapping (its kind and object) of the fault thread `tid` is in on this CPU, if any: a page allocated
/// now is the mapping's when the allocation is the fault's (its stack says so: the report
/// counts a shmem page only under a fault's frames).
#[inline(always)]
pub(crate) fn fault_channel(tid: u32) -> Option<(u16, u64)> {
    let s = LAST_FAULT.get(0)?;
    (s.tid == tid && s.ino != 0).then_some((SHM, s.ino))
}

/// exceptions:page_fault_{user,kernel}(address, regs, error_code), as raw tracepoints.
#[inline(always)]
fn on_fault(ctx: &RawTracePointContext, probe: ProbeId) -> u32 {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return 0;
    }
    let addr: u64 = ctx.arg(0);
    // Kernel-mode faults on kernel addresses are not the process's memory.
    if addr >= 0x0000_8000_0000_0000 {
        return 0;
    }
    match shm_ino_of(tgid, addr) {
        Some(ino) => {
            fault_in(tid, ino);
            agg_event(tgid, probe as u16, SHM, ino, 0)
        }
        None => {
            fault_in(tid, 0);
            agg_event(tgid, probe as u16, ChannelKind::Other as u16, 0, 0)
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    on_fault(&ctx, ProbeId::FaultUser)
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    on_fault(&ctx, ProbeId::FaultKernel)
}

/// Faults in flight, by thread: separate from a thread's call slot (`threads`) because a fault nests inside a
/// pipe write or read (copy_from_user/copy_to_user on a page not yet mapped). Entries are
/// reused like a call slot (`probe` 0: none in flight).
#[map]
static PENDING_FAULT: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// Function tier: handle_mm_fault(struct vm_area_struct *vma, unsigned long address, ...):
/// in a traced mapping (by the id the mapping got), or is vma->vm_file shmem?
#[inline(always)]
fn fault_entry(vma: *const u8, address: u64) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let (ino, k) = match shm_ino_of(tgid, address) {
        Some(ino) => (ino, SHM),
        None => {
            let o = offsets();
            let file: *const u8 = unsafe { read_at(vma, o.vma_file) }.unwrap_or(core::ptr::null());
            match unsafe { classify_file(file) } {
                Ok(Some((ino, ChannelKind::Shm))) => {
                    // A shm mapping whose mmap the dispatcher did not see (mapped before
                    // tracing, or its sys_exit run skipped by the kernel): learnt here, so
                    // futex calls on words inside it are classified too.
                    let start: Result<u64, i32> = unsafe { read_at(vma, o.vma_start) };
                    let end: Result<u64, i32> = unsafe { read_at(vma, o.vma_end) };
                    if let (Ok(start), Ok(end)) = (start, end) {
                        add_range(tgid, Range { start, end, ino });
                    }
                    (ino, SHM)
                }
                _ => (0, ChannelKind::Other as u16),
            }
        }
    };
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    fault_in(id as u32, if k == SHM { ino } else { 0 });
    let p = Pending { ino, start_ns: now(), len: 0, probe: ProbeId::MmFault as u16, kind: k, _pad: 0 };
    if let Some(slot) = PENDING_FAULT.get_ptr_mut(&id) {
        unsafe { *slot = p };
    } else if PENDING_FAULT.insert(&id, &p, 0).is_err() {
        count_loss(loss::PENDING_FULL);
    }
    0
}

#[inline(always)]
fn fault_exit() -> u32 {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    if let Some(slot) = PENDING_FAULT.get_ptr_mut(&id)
        && unsafe { (*slot).probe } != 0
    {
        let p = unsafe { *slot };
        unsafe { (*slot).probe = 0 };
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
    fault_entry(ctx.arg(0), ctx.arg(1))
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
    fault_entry(ctx.arg(0).unwrap_or(core::ptr::null()), ctx.arg(1).unwrap_or(0))
}

#[kretprobe]
pub fn kretprobe_mm_fault(_ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fault_exit()
}

/// The current thread exits: its fault entry goes.
#[inline(always)]
pub(crate) fn thread_exit() {
    let _ = PENDING_FAULT.remove(&aya_ebpf::helpers::bpf_get_current_pid_tgid());
}
