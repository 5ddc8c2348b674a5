//! FUTEX_WAIT / FUTEX_WAKE made directly (shared, not private: the words live in a MAP_SHARED
//! mapping), each call counted by result so the workload is a witness for the futex probes.

use std::{sync::atomic::AtomicU32, time::Duration};

use serde::{Deserialize, Serialize};

/// What this process did with futexes on its ring words.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FutexWitness {
    /// FUTEX_WAIT system calls, all results.
    pub wait_calls: u64,
    /// ... that slept and were woken (returned 0).
    pub wait_woken: u64,
    /// ... that returned EAGAIN at once (the word had already changed).
    pub wait_eagain: u64,
    /// ... that timed out (ipctrace's workloads wait with a timeout to notice a dead peer).
    pub wait_timedout: u64,
    /// ... interrupted by a signal (EINTR).
    pub wait_eintr: u64,
    /// ... that failed otherwise (any other errno: a bug, counted rather than filed as EINTR).
    #[serde(default)]
    pub wait_other: u64,
    /// FUTEX_WAKE system calls.
    pub wake_calls: u64,
    /// Waiters those calls woke (sum of return values).
    pub woken: u64,
}

/// Result of one wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    Woken,
    Again,
    TimedOut,
    Interrupted,
    Failed,
}

impl FutexWitness {
    /// FUTEX_WAIT on `word` while it holds `expected`, for at most `timeout`.
    pub fn wait(&mut self, word: &AtomicU32, expected: u32, timeout: Duration) -> Waited {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        self.wait_calls += 1;
        // SAFETY: word points into a live shared mapping; ts outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
                0,
                0,
            )
        };
        if r == 0 {
            self.wait_woken += 1;
            return Waited::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => {
                self.wait_eagain += 1;
                Waited::Again
            }
            Some(libc::ETIMEDOUT) => {
                self.wait_timedout += 1;
                Waited::TimedOut
            }
            Some(libc::EINTR) => {
                self.wait_eintr += 1;
                Waited::Interrupted
            }
            _ => {
                self.wait_other += 1;
                Waited::Failed
            }
        }
    }

    /// FUTEX_WAKE one waiter on `word`.
    pub fn wake(&mut self, word: &AtomicU32) {
        self.wake_calls += 1;
        // SAFETY: word points into a live shared mapping.
        let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1, 0, 0, 0) };
        if r > 0 {
            self.woken += r as u64;
        }
    }
}
