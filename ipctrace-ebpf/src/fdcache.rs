//! What each fd of a target is, cached: classifying an fd walks eleven kernel pointers, most
//! of a traced write's cost. An entry is keyed by (process, generation, fd) and dropped when
//! the fd can change: close and dup2/dup3 onto it remove it; close_range and exec give the
//! process a new generation (`sched`); a process that sets up io_uring (which closes fds
//! without a syscall) or shares its fd table with another process is never cached. An fd with
//! no file is never cached (an open can fill it without a close).
//!
//! Before the cache (a hash lookup), a thread's memo of the last fd it named
//! (`ipctrace_common::FdMemo`, in its `threads` entry): good while the process's `TARGETS`
//! value is unchanged, and every close, dup2/dup3, close_range and exec draws a new random
//! epoch into it. A loop of reads or writes on one fd then classifies it with no lookup.

use core::ptr::write_volatile;

use aya_ebpf::{helpers::bpf_get_prandom_u32, macros::map, maps::LruHashMap};
use ipctrace_common::{Thread, target};

use crate::classify::{Fd, fd_of_call};

#[repr(C)]
#[derive(Clone, Copy)]
struct Key {
    tgid: u32,
    generation: u32,
    fd: u64,
}

#[map]
static FD_CACHE: LruHashMap<Key, Fd> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn key(tgid: u32, t: u64, fd: u64) -> Key {
    Key { tgid, generation: (t as u32) >> target::GEN_SHIFT, fd }
}

/// `fd` of target `tgid` (whose `TARGETS` value is `t`), from the calling thread's memo (`th`:
/// its entry, or null), the cache, or classified.
#[inline(always)]
pub(crate) fn fd(tgid: u32, t: u64, fd: u64, th: *mut Thread) -> Fd {
    if t & target::NOCACHE as u64 != 0 {
        return fd_of_call(fd);
    }
    if !th.is_null() {
        let m = unsafe { &(*th).memo };
        if m.open != 0 && m.fd == fd && m.t == t {
            return Fd { kind: m.kind, open: m.open, _pad: 0, ino: m.ino, sk: m.sk };
        }
    }
    let k = key(tgid, t, fd);
    let f = match unsafe { FD_CACHE.get(&k) } {
        Some(f) => *f,
        None => {
            let f = fd_of_call(fd);
            if f.open != 0 {
                let _ = FD_CACHE.insert(&k, &f, 0);
            }
            f
        }
    };
    if f.open != 0 && !th.is_null() {
        // Field by field, volatile: a struct copy is a byte-by-byte memmove in BPF.
        unsafe {
            let m = &raw mut (*th).memo;
            write_volatile(&raw mut (*m).t, t);
            write_volatile(&raw mut (*m).fd, fd);
            write_volatile(&raw mut (*m).kind, f.kind);
            write_volatile(&raw mut (*m).open, f.open);
            write_volatile(&raw mut (*m).ino, f.ino);
            write_volatile(&raw mut (*m).sk, f.sk);
        }
    }
    f
}

/// `fd` of target `tgid` (whose `TARGETS` value `tp` was `t` at the call's entry) is closed
/// or replaced: its cache entry goes, and the process gets a new epoch (every thread's memo
/// is stale). Only the epoch half of the value is stored: flags or a generation another CPU
/// set meanwhile (io_uring, close_range, a fork sharing the fd table) stay.
#[inline(always)]
pub(crate) fn forget(tgid: u32, tp: *mut u64, t: u64, fd: u64) {
    let _ = FD_CACHE.remove(&key(tgid, t, fd));
    let e = unsafe { bpf_get_prandom_u32() };
    // The value's high half (x86 and arm64 eBPF are little-endian).
    unsafe { *(tp as *mut u32).add(1) = e };
}

/// A `TARGETS` value with a fresh fd epoch (flags and generation kept).
#[inline(always)]
fn new_epoch(t: u64) -> u64 {
    let e = unsafe { bpf_get_prandom_u32() } as u64;
    (t & 0xffff_ffff) | (e << target::EPOCH_SHIFT)
}

/// A `TARGETS` value with a fresh generation and epoch (flags kept).
#[inline(always)]
pub(crate) fn new_generation(t: u64) -> u64 {
    let g = unsafe { bpf_get_prandom_u32() } << target::GEN_SHIFT;
    new_epoch(((t as u32 & ((1 << target::GEN_SHIFT) - 1)) | g) as u64)
}
