//! Last-resort cleanup in a workload process: on SIGTERM/SIGINT/SIGHUP (and the parent-death
//! signal, which is SIGTERM) unlink the registered shm name or FIFO path and remove the
//! registered SysV message queue, then exit. Only
//! async-signal-safe calls run in the handler.

use std::{
    ffi::CString,
    sync::atomic::{AtomicI32, AtomicPtr, Ordering},
};

const SLOTS: usize = 4;
static PATHS: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
static SHM: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
/// SysV message queue ids (+1, so 0 is empty).
static MSQ: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

extern "C" fn on_signal(sig: libc::c_int) {
    for p in &SHM {
        let c = p.load(Ordering::SeqCst);
        if !c.is_null() {
            // SAFETY: a leaked, NUL-terminated CString; shm_unlink is unlink(2) underneath.
            unsafe { libc::shm_unlink(c) };
        }
    }
    for m in &MSQ {
        let id = m.load(Ordering::SeqCst);
        if id != 0 {
            // SAFETY: msgctl is a plain system call.
            unsafe { libc::msgctl(id - 1, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
    for p in &PATHS {
        let c = p.load(Ordering::SeqCst);
        if !c.is_null() {
            // SAFETY: as above; unlink/rmdir are async-signal-safe.
            unsafe {
                libc::unlink(c);
                libc::rmdir(c);
            }
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) };
}

/// Installs the handler for SIGTERM, SIGINT and SIGHUP.
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing a handler that only makes async-signal-safe calls.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn register(table: &[AtomicPtr<libc::c_char>; SLOTS], s: &str) {
    let Ok(c) = CString::new(s) else { return };
    let raw = c.into_raw();
    if !table.iter().any(|p| p.compare_exchange(std::ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst).is_ok())
    {
        // SAFETY: raw came from into_raw just above and was not stored.
        drop(unsafe { CString::from_raw(raw) });
    }
}

fn unregister(table: &[AtomicPtr<libc::c_char>; SLOTS], s: &str) {
    for p in table {
        let c = p.load(Ordering::SeqCst);
        // SAFETY: non-null entries are leaked CStrings.
        if !c.is_null() && unsafe { std::ffi::CStr::from_ptr(c) }.to_bytes() == s.as_bytes() {
            p.store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

/// A POSIX shm name to unlink if the process is stopped by a signal.
pub fn register_shm(name: &str) {
    register(&SHM, name);
}

pub fn unregister_shm(name: &str) {
    unregister(&SHM, name);
}

/// A file (FIFO) or empty directory to remove if the process is stopped by a signal, in order.
pub fn register_path(path: &str) {
    register(&PATHS, path);
}

pub fn unregister_path(path: &str) {
    unregister(&PATHS, path);
}

/// A SysV message queue to remove if the process is stopped by a signal.
pub fn register_msq(id: i32) {
    let _ = MSQ.iter().find(|m| m.compare_exchange(0, id + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok());
}

pub fn unregister_msq(id: i32) {
    for m in &MSQ {
        let _ = m.compare_exchange(id + 1, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}
