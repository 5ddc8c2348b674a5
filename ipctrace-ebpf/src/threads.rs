//! Per-thread state (`ipctrace_common::Thread`), found without a hash lookup: a thread's
//! entry is slot `tid mod THREAD_SLOTS` of an array, tagged with its tid, when that slot is
//! free; a thread whose slot another live thread holds spills into a hash map. Array lookups
//! are inlined by the verifier, and a traced pipe looks a thread up about nine times per
//! message (entry, exit, both sides of two switches, a wake-up), so this is most of what a
//! hash lookup per event cost. A thread with no entry (most tasks a switch or a wake-up
//! names) is told so with no hash lookup, unless a thread ever spilled from its slot.
//!
//! A slot is only claimed by its own thread (its first traced call or block) and freed at
//! its exit; two threads whose tids share a slot claiming it in the same instant is the one
//! race left, and it needs both to start being traced at once.

use core::ptr::write_volatile;

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use ipctrace_common::{THREAD_SLOTS, Thread};

use crate::count_loss;

#[map]
static SLOTS: Array<Thread> = Array::with_max_entries(THREAD_SLOTS, 0);

/// Threads whose slot was taken, by tid.
#[map]
static SPILL: HashMap<u32, Thread> = HashMap::with_max_entries(16384, 0);

/// One all-zero `Thread`, never written: what an entry is made from.
#[map]
static ZERO: Array<Thread> = Array::with_max_entries(1, 0);

#[inline(always)]
fn slot(tid: u32) -> Option<*mut Thread> {
    SLOTS.get_ptr_mut(tid & (THREAD_SLOTS - 1))
}

/// Has a thread ever spilled from slot `s`? (`Thread::_pad`, set then and never cleared:
/// only then is a thread that does not hold the slot looked for in `SPILL`.)
#[inline(always)]
fn spilled(s: *const Thread) -> bool {
    unsafe { (*s)._pad != 0 }
}

/// Thread `tid`'s entry, if it has one.
#[inline(always)]
pub(crate) fn get(tid: u32) -> Option<*mut Thread> {
    if tid == 0 {
        return None;
    }
    let s = slot(tid)?;
    if unsafe { (*s).tid } == tid {
        return Some(s);
    }
    if spilled(s) { SPILL.get_ptr_mut(&tid) } else { None }
}

/// Thread `tid`'s entry, made (all zero) if it has none yet; when neither its slot nor the
/// spill map has room, loss `full` is counted (what was to be kept: a call, a block).
#[inline(always)]
pub(crate) fn get_or_make(tid: u32, full: u32) -> Option<*mut Thread> {
    if tid == 0 {
        return None;
    }
    let s = slot(tid)?;
    let owner = unsafe { (*s).tid };
    if owner == tid {
        return Some(s);
    }
    // A thread that spilled while its slot was taken keeps its spilled entry after the slot
    // frees up (taking the slot would leave that entry behind, never removed).
    if spilled(s)
        && let Some(t) = SPILL.get_ptr_mut(&tid)
    {
        return Some(t);
    }
    if owner == 0 {
        // Field by field, volatile (neighbouring zero stores would become a memset, a
        // byte-by-byte loop in BPF); the spill mark stays.
        unsafe {
            let c = &raw mut (*s).call;
            write_volatile(&raw mut (*c).ino, 0);
            write_volatile(&raw mut (*c).start_ns, 0);
            write_volatile(&raw mut (*c).len, 0);
            write_volatile(&raw mut (*c).probe, 0);
            write_volatile(&raw mut (*c).kind, 0);
            write_volatile(&raw mut (*c)._pad, 0);
            write_volatile(&raw mut (*s).off.ts, 0);
            write_volatile(&raw mut (*s).memo.open, 0);
            write_volatile(&raw mut (*s).woke_at, 0);
            write_volatile(&raw mut (*s).unentered, crate::late_calls() as u32);
            (*s).tid = tid;
        }
        return Some(s);
    }
    let zero = ZERO.get(0)?;
    // Marked before the insert, so that no lookup misses an entry being made.
    unsafe { (*s)._pad = 1 };
    if SPILL.insert(&tid, zero, 0).is_err() {
        count_loss(full);
        return None;
    }
    let t = SPILL.get_ptr_mut(&tid)?;
    unsafe { (*t).unentered = crate::late_calls() as u32 };
    Some(t)
}

/// Thread `tid` exits: its entry goes.
#[inline(always)]
pub(crate) fn remove(tid: u32) {
    if tid == 0 {
        return;
    }
    let Some(s) = slot(tid) else { return };
    if unsafe { (*s).tid } == tid {
        unsafe {
            (*s).call.probe = 0;
            (*s).off.ts = 0;
            (*s).woke_at = 0;
            (*s).tid = 0;
        }
    } else if spilled(s) {
        let _ = SPILL.remove(&tid);
    }
}
