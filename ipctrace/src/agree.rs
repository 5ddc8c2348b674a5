//! Observed against witness: for each process, the figures BPF measured next to what the
//! process counted about itself, with the tolerance each comparison allows and why.
//! Never compares a witness with itself.

use serde::{Deserialize, Serialize};

use crate::model::Process;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agreement {
    pub pid: u32,
    pub role: String,
    pub figure: String,
    pub observed: u64,
    pub witness: u64,
    /// Allowed relative difference (0 = exact).
    pub tolerance_pct: f64,
    pub agrees: bool,
}

fn push(v: &mut Vec<Agreement>, p: &Process, figure: &str, observed: u64, witness: u64, tol: f64) {
    let diff = observed.abs_diff(witness) as f64;
    let agrees = if tol == 0.0 { observed == witness } else { diff <= tol / 100.0 * witness.max(1) as f64 };
    v.push(Agreement { pid: p.pid, role: p.role.clone(), figure: figure.into(), observed, witness, tolerance_pct: tol, agrees });
}

/// Every comparison that this process's witness supports.
pub fn compare(transport: &str, p: &Process) -> Vec<Agreement> {
    let mut v = Vec::new();
    let Some(w) = &p.witness else { return v };
    let o = &p.observed;
    if !transport.starts_with("shm") {
        let op = if p.role == "producer" { "pipe_write" } else { "pipe_read" };
        let s = o.sum(op, None);
        push(&mut v, p, &format!("{op} bytes"), s.bytes, w.bytes, 0.0);
        push(&mut v, p, &format!("{op} calls"), s.calls, w.calls, 0.0);
    }
    if let Some(f) = &w.futex {
        let wait = o.sum("futex_wait", None);
        let wake = o.sum("futex_wake", None);
        push(&mut v, p, "futex_wait calls", wait.calls, f.wait_calls, 0.0);
        push(&mut v, p, "futex_wait woken", wait.zero, f.wait_woken, 0.0);
        push(&mut v, p, "futex_wait EAGAIN", wait.eagain, f.wait_eagain, 0.0);
        push(&mut v, p, "futex_wait timed out", wait.etimedout, f.wait_timedout, 0.0);
        push(&mut v, p, "futex_wake calls", wake.calls, f.wake_calls, 0.0);
        push(&mut v, p, "futex_wake waiters woken", wake.bytes, f.woken, 0.0);
    }
    // Faults and switches: BPF counts from the filter insert to the exit, the witness from the
    // start gate to the end of the transfer; the difference is the few events around them.
    let mm = o.sum("mm_fault", None).calls;
    let faults = if mm > 0 { mm } else { o.sum("fault_user", None).calls + o.sum("fault_kernel", None).calls };
    if faults > 0 {
        push(&mut v, p, "page faults (minor + major)", faults, w.rusage_run.minflt + w.rusage_run.majflt, 2.0);
    }
    let switches = o.sum("sched_out", None).calls;
    if switches > 0 {
        push(&mut v, p, "context switches", switches, w.rusage_run.nvcsw + w.rusage_run.nivcsw, 5.0);
    }
    v
}
