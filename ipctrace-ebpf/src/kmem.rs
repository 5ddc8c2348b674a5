//! How a program reads a kernel structure it was handed a pointer to. A raw tracepoint's
//! arguments are plain numbers to the verifier, so each field costs a `bpf_probe_read_kernel`
//! call (about 40 ns on a CPU whose returns go through a speculation-safe thunk). A BTF
//! tracepoint's (`tp_btf`) are typed pointers: with the offset a constant (`OFFSETS` is in a
//! frozen read-only map, so the verifier knows its values), the field is read by one load the
//! verifier checked against the kernel's BTF. The programs the syscall, `sched_switch` and
//! `sched_waking` hooks run are written once over this choice; the loader takes the BTF
//! version where the kernel accepts it, else the raw one.

use crate::{current, offsets, read_at};

pub(crate) trait Kmem {
    /// `*(base + off)` as a `T`; Err for an unknown offset (`u32::MAX`) or a null base.
    ///
    /// # Safety
    /// `base` is a pointer of the program's context (or read from one) and `off` a field offset
    /// from `OFFSETS`.
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Result<T, i32>;

    /// (tgid, tid) of `task`, which is the current task.
    fn ids_of_current(task: *const u8) -> (u32, u32);
}

/// Raw tracepoints: `bpf_probe_read_kernel`.
pub(crate) struct Probe;

/// BTF tracepoints: direct loads.
pub(crate) struct Direct;

impl Kmem for Probe {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Result<T, i32> {
        unsafe { read_at(base, off) }
    }

    /// One helper call (cheaper than two kernel reads).
    #[inline(always)]
    fn ids_of_current(_task: *const u8) -> (u32, u32) {
        current()
    }
}

impl Kmem for Direct {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, off: u32) -> Result<T, i32> {
        if off == u32::MAX || base.is_null() {
            return Err(-1);
        }
        Ok(unsafe { core::ptr::read(base.add(off as usize) as *const T) })
    }

    #[inline(always)]
    fn ids_of_current(task: *const u8) -> (u32, u32) {
        let o = offsets();
        let tgid = unsafe { Self::read::<u32>(task, o.task_tgid) };
        let tid = unsafe { Self::read::<u32>(task, o.task_pid) };
        match (tgid, tid) {
            (Ok(g), Ok(t)) => (g, t),
            _ => current(),
        }
    }
}
