//! The target filter, asked by nearly every program about nearly every event of the machine
//! (a syscall, a switch, a page allocation, a sample): is this process traced? A process's
//! entry is slot `tgid mod TARGET_SLOT_COUNT` of an array, tagged with its tgid, so the
//! answer is an inlined array lookup, not a hash lookup; a target whose slot another holds
//! goes to the `TARGETS` hash map, and its slot is marked (`TARGET_SPILLED`) so that the map
//! is asked only for processes that hash there. The loader adds targets the same way
//! (`Session::add_target`), never writing a slot another target holds.
//! Entries stay after a process exits (the report names every target).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use ipctrace_common::{TARGET_SLOT_COUNT, TargetSlot};

#[map]
static TARGET_SLOTS: Array<TargetSlot> = Array::with_max_entries(TARGET_SLOT_COUNT, 0);

/// 1 for a slot some target spilled from (set, never cleared).
#[map]
static TARGET_SPILLED: Array<u32> = Array::with_max_entries(TARGET_SLOT_COUNT, 0);

/// Targets whose slot was taken (tgid -> `ipctrace_common::target` value).
#[map]
static TARGETS: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
fn slot(tgid: u32) -> Option<*mut TargetSlot> {
    TARGET_SLOTS.get_ptr_mut(tgid & (TARGET_SLOT_COUNT - 1))
}

#[inline(always)]
fn spilled(tgid: u32) -> bool {
    TARGET_SPILLED.get(tgid & (TARGET_SLOT_COUNT - 1)).is_some_and(|m| *m != 0)
}

/// Target `tgid`'s value (flags, fd-cache generation, fd epoch), if it is a target.
#[inline(always)]
pub(crate) fn get(tgid: u32) -> Option<*mut u64> {
    if tgid == 0 {
        return None;
    }
    let s = slot(tgid)?;
    if unsafe { (*s).tgid } == tgid {
        return Some(unsafe { &raw mut (*s).t });
    }
    if spilled(tgid) { TARGETS.get_ptr_mut(&tgid) } else { None }
}

/// Is `tgid` a target?
#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    get(tgid).is_some()
}

/// Makes `tgid` a target with value `t` (or sets its value).
#[inline(always)]
pub(crate) fn insert(tgid: u32, t: u64) {
    if tgid == 0 {
        return;
    }
    let Some(s) = slot(tgid) else { return };
    let owner = unsafe { (*s).tgid };
    if owner == tgid || owner == 0 {
        // The value before the tag: whoever sees the tag sees the value.
        unsafe {
            (*s).t = t;
            (*s).tgid = tgid;
        }
        return;
    }
    if let Some(m) = TARGET_SPILLED.get_ptr_mut(tgid & (TARGET_SLOT_COUNT - 1)) {
        unsafe { *m = 1 };
    }
    let _ = TARGETS.insert(&tgid, &t, 0);
}
