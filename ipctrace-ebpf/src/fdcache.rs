//! What each fd of a target is, cached: classifying an fd walks eleven kernel pointers, most
//! of a traced write's cost. An entry is keyed by (process, generation, fd) and dropped when
//! the fd can change: close and dup2/dup3 onto it remove it; close_range and exec give the
//! process a new generation (`sched`); a process that sets up io_uring (which closes fds
//! without a syscall) or shares its fd table with another process is never cached. An fd with
//! no file is never cached (an open can fill it without a close).

use aya_ebpf::{helpers::bpf_get_prandom_u32, macros::map, maps::LruHashMap};
use ipctrace_common::target;

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
fn key(tgid: u32, t: u32, fd: u64) -> Key {
    Key { tgid, generation: t >> target::GEN_SHIFT, fd }
}

/// `fd` of target `tgid` (whose `TARGETS` value is `t`), from the cache or classified.
#[inline(always)]
pub(crate) fn fd(tgid: u32, t: u32, fd: u64) -> Fd {
    if t & target::NOCACHE != 0 {
        return fd_of_call(fd);
    }
    let k = key(tgid, t, fd);
    if let Some(f) = unsafe { FD_CACHE.get(&k) } {
        return *f;
    }
    let f = fd_of_call(fd);
    if f.open != 0 {
        let _ = FD_CACHE.insert(&k, &f, 0);
    }
    f
}

/// `fd` of target `tgid` is closed or replaced.
#[inline(always)]
pub(crate) fn forget(tgid: u32, t: u32, fd: u64) {
    let _ = FD_CACHE.remove(&key(tgid, t, fd));
}

/// A `TARGETS` value with a fresh generation (flags kept).
#[inline(always)]
pub(crate) fn new_generation(t: u32) -> u32 {
    let g = unsafe { bpf_get_prandom_u32() } << target::GEN_SHIFT;
    (t & ((1 << target::GEN_SHIFT) - 1)) | g
}
