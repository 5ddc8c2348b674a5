//! Function tier (stock kernels with BPF trampolines or kprobes): the pipe write/read
//! functions, handle_mm_fault and futex_wait/futex_wake, as fentry/fexit and as
//! kprobe/kretprobe. Attach points are chosen at load time from the probe table (names differ
//! across kernels: pipe_write vs anon_pipe_write). Figures from here are exact.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use ipctrace_common::{Pending, kind, loss, probe};

use crate::{
    agg_call, classify_file, count_loss, current, is_target, now, offsets, pending_start, pending_take, read_at,
    shm_ino_of,
};

/// Faults in flight, by thread: separate from `PENDING` because a fault nests inside a
/// pipe write or read (copy_from_user/copy_to_user on a page not yet mapped).
#[map]
static PENDING_FAULT: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// Entry of pipe_write/pipe_read(struct kiocb *iocb, struct iov_iter *): the file is iocb->ki_filp.
#[inline(always)]
fn pipe_entry(iocb: *const u8, probe: u16) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    let file: *const u8 = match unsafe { read_at(iocb, offsets().kiocb_filp) } {
        Ok(f) => f,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            return 0;
        }
    };
    if let Ok(Some((ino, k))) = unsafe { classify_file(file) }
        && k != kind::SHM
    {
        pending_start(Pending { ino, start_ns: now(), len: 0, probe, kind: k, _pad: 0 });
    }
    0
}

#[inline(always)]
fn call_exit(ret: i64) -> u32 {
    if let Some((tgid, p)) = pending_take() {
        agg_call(tgid, &p, ret, now().saturating_sub(p.start_ns));
        crate::pipe::flush_pages(tgid, &p);
    }
    0
}

#[fentry(function = "anon_pipe_write")]
pub fn fentry_pipe_write(ctx: FEntryContext) -> u32 {
    pipe_entry(ctx.arg(0), probe::PIPE_WRITE)
}

#[fexit(function = "anon_pipe_write")]
pub fn fexit_pipe_write(ctx: FExitContext) -> u32 {
    call_exit(ctx.arg::<i64>(2))
}

#[fentry(function = "anon_pipe_read")]
pub fn fentry_pipe_read(ctx: FEntryContext) -> u32 {
    pipe_entry(ctx.arg(0), probe::PIPE_READ)
}

#[fexit(function = "anon_pipe_read")]
pub fn fexit_pipe_read(ctx: FExitContext) -> u32 {
    call_exit(ctx.arg::<i64>(2))
}

#[kprobe]
pub fn kprobe_pipe_write(ctx: ProbeContext) -> u32 {
    pipe_entry(ctx.arg(0).unwrap_or(core::ptr::null()), probe::PIPE_WRITE)
}

#[kprobe]
pub fn kprobe_pipe_read(ctx: ProbeContext) -> u32 {
    pipe_entry(ctx.arg(0).unwrap_or(core::ptr::null()), probe::PIPE_READ)
}

#[kretprobe]
pub fn kretprobe_pipe_write(ctx: RetProbeContext) -> u32 {
    call_exit(ctx.ret::<i64>())
}

#[kretprobe]
pub fn kretprobe_pipe_read(ctx: RetProbeContext) -> u32 {
    call_exit(ctx.ret::<i64>())
}

/// handle_mm_fault(struct vm_area_struct *vma, unsigned long address, ...): is vma->vm_file shmem?
#[inline(always)]
fn fault_entry(vma: *const u8) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let file: *const u8 = unsafe { read_at(vma, offsets().vma_file) }.unwrap_or(core::ptr::null());
    let (ino, k) = match unsafe { classify_file(file) } {
        Ok(Some((ino, kind::SHM))) => (ino, kind::SHM),
        _ => (0, kind::OTHER),
    };
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let p = Pending { ino, start_ns: now(), len: 0, probe: probe::MM_FAULT, kind: k, _pad: 0 };
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
    fault_entry(ctx.arg(0))
}

#[fexit(function = "handle_mm_fault")]
pub fn fexit_mm_fault(_ctx: FExitContext) -> u32 {
    fault_exit()
}

#[kprobe]
pub fn kprobe_mm_fault(ctx: ProbeContext) -> u32 {
    fault_entry(ctx.arg(0).unwrap_or(core::ptr::null()))
}

#[kretprobe]
pub fn kretprobe_mm_fault(_ctx: RetProbeContext) -> u32 {
    fault_exit()
}

/// futex_wait/futex_wake(u32 __user *uaddr, ...): only words in a traced shm mapping.
#[inline(always)]
fn futex_entry(uaddr: u64, probe: u16) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    if let Some(ino) = shm_ino_of(tgid, uaddr) {
        pending_start(Pending { ino, start_ns: now(), len: 0, probe, kind: kind::SHM, _pad: 0 });
    }
    0
}

#[fentry(function = "futex_wait")]
pub fn fentry_futex_wait(ctx: FEntryContext) -> u32 {
    futex_entry(ctx.arg(0), probe::FUTEX_WAIT)
}

#[fexit(function = "futex_wait")]
pub fn fexit_futex_wait(ctx: FExitContext) -> u32 {
    call_exit(ctx.ret::<i64>().unwrap_or(-1) as i32 as i64)
}

#[fentry(function = "futex_wake")]
pub fn fentry_futex_wake(ctx: FEntryContext) -> u32 {
    futex_entry(ctx.arg(0), probe::FUTEX_WAKE)
}

#[fexit(function = "futex_wake")]
pub fn fexit_futex_wake(ctx: FExitContext) -> u32 {
    call_exit(ctx.ret::<i64>().unwrap_or(-1) as i32 as i64)
}

#[kprobe]
pub fn kprobe_futex_wait(ctx: ProbeContext) -> u32 {
    futex_entry(ctx.arg(0).unwrap_or(0), probe::FUTEX_WAIT)
}

#[kprobe]
pub fn kprobe_futex_wake(ctx: ProbeContext) -> u32 {
    futex_entry(ctx.arg(0).unwrap_or(0), probe::FUTEX_WAKE)
}

/// futex functions return int: sign-extend the low 32 bits.
#[kretprobe]
pub fn kretprobe_futex(ctx: RetProbeContext) -> u32 {
    call_exit(ctx.ret::<i64>() as i32 as i64)
}
