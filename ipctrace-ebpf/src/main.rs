//! ipctrace's kernel-side programs: syscall tracepoints that classify the fd as a pipe/FIFO
//! and aggregate calls, bytes and latency per (tgid, probe, channel) in per-CPU maps.
//! Only targeted tgids are counted; every dropped event is counted in `LOSS`.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use ipctrace_common::{
    AggKey, AggVal, Offsets, PIPEFS_MAGIC, Pending, S_IFIFO, S_IFMT, kind, log2_bucket, loss, probe,
};

/// Filled by the loader from BTF before loading (global data).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets {
    task_files: u32::MAX,
    files_fdt: u32::MAX,
    fdt_max_fds: u32::MAX,
    fdt_fd: u32::MAX,
    file_inode: u32::MAX,
    inode_mode: u32::MAX,
    inode_ino: u32::MAX,
    inode_pipe: u32::MAX,
    inode_sb: u32::MAX,
    sb_magic: u32::MAX,
};

/// Target processes (tgid -> 1); filled by the loader before the workload's start gate opens.
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Calls in flight, by thread.
#[map]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// Aggregates per (tgid, probe, channel), per CPU.
#[map]
static AGG: PerCpuHashMap<AggKey, AggVal> = PerCpuHashMap::with_max_entries(8192, 0);

/// Dropped-event counters, indexed by `ipctrace_common::loss::*`.
#[map]
static LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record, and of `ret`
/// in a `syscalls:sys_exit_*` record (after the 8-byte common header and `__syscall_nr`).
const SYSCALL_ARG0: usize = 16;
const SYSCALL_RET: usize = 16;

#[inline(always)]
fn count_loss(idx: u32) {
    if let Some(p) = LOSS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    unsafe { TARGETS.get(&tgid).is_some() }
}

#[inline(always)]
unsafe fn read_at<T>(base: *const u8, off: u32) -> Result<T, i32> {
    if off == u32::MAX {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T) }
}

/// fd of the current task -> (inode number, channel kind) if it is a pipe or FIFO.
#[inline(always)]
unsafe fn pipe_of_fd(fd: u64) -> Result<Option<(u64, u16)>, i32> {
    let o = unsafe { core::ptr::read_volatile(&OFFSETS) };
    let task = unsafe { bpf_get_current_task() } as *const u8;
    unsafe {
        let files: *const u8 = read_at(task, o.task_files)?;
        if files.is_null() {
            return Ok(None);
        }
        let fdt: *const u8 = read_at(files, o.files_fdt)?;
        let max_fds: u32 = read_at(fdt, o.fdt_max_fds)?;
        if fd >= max_fds as u64 {
            return Ok(None);
        }
        let fd_array: *const u8 = read_at(fdt, o.fdt_fd)?;
        let file: *const u8 = bpf_probe_read_kernel(fd_array.add(fd as usize * 8) as *const *const u8)?;
        if file.is_null() {
            return Ok(None);
        }
        let inode: *const u8 = read_at(file, o.file_inode)?;
        let mode: u16 = read_at(inode, o.inode_mode)?;
        if mode & S_IFMT != S_IFIFO {
            return Ok(None);
        }
        let pipe: u64 = read_at(inode, o.inode_pipe)?;
        if pipe == 0 {
            return Ok(None);
        }
        let ino: u64 = read_at(inode, o.inode_ino)?;
        let sb: *const u8 = read_at(inode, o.inode_sb)?;
        let magic: u64 = read_at(sb, o.sb_magic)?;
        let k = if magic == PIPEFS_MAGIC { kind::ANON_PIPE } else { kind::FIFO };
        Ok(Some((ino, k)))
    }
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, probe: u16) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32) {
        return 0;
    }
    let fd: u64 = match unsafe { ctx.read_at::<u64>(SYSCALL_ARG0) } {
        Ok(fd) => fd,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            return 0;
        }
    };
    let (ino, k) = match unsafe { pipe_of_fd(fd) } {
        Ok(Some(p)) => p,
        Ok(None) => return 0,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            return 0;
        }
    };
    let p = Pending { ino, start_ns: unsafe { bpf_ktime_get_ns() }, probe, kind: k, _pad: 0 };
    if PENDING.insert(&id, &p, 0).is_err() {
        count_loss(loss::PENDING_FULL);
    }
    0
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let p = match unsafe { PENDING.get(&id) } {
        Some(p) => *p,
        None => return 0,
    };
    let _ = PENDING.remove(&id);
    let ret: i64 = unsafe { ctx.read_at::<i64>(SYSCALL_RET) }.unwrap_or(-1);
    let dt = unsafe { bpf_ktime_get_ns() }.saturating_sub(p.start_ns);
    let key = AggKey { tgid: (id >> 32) as u32, probe: p.probe, kind: p.kind, ino: p.ino };
    let val = match AGG.get_ptr_mut(&key) {
        Some(v) => v,
        None => {
            if AGG.insert(&key, &AggVal::default(), 0).is_err() {
                count_loss(loss::AGG_FULL);
                return 0;
            }
            match AGG.get_ptr_mut(&key) {
                Some(v) => v,
                None => {
                    count_loss(loss::AGG_FULL);
                    return 0;
                }
            }
        }
    };
    let v = unsafe { &mut *val };
    v.calls += 1;
    if ret > 0 {
        v.bytes += ret as u64;
    } else if ret == 0 {
        v.zero += 1;
    } else {
        v.errors += 1;
    }
    v.time_ns += dt;
    let b = log2_bucket(dt);
    if b < v.hist.len() {
        v.hist[b] += 1;
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, probe::SYS_WRITE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    on_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, probe::SYS_WRITE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_writev")]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    on_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, probe::SYS_READ)
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    on_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_readv")]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, probe::SYS_READ)
}

#[tracepoint(category = "syscalls", name = "sys_exit_readv")]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    on_exit(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
