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
    v.push(Agreement {
        pid: p.pid,
        role: p.role.clone(),
        figure: figure.into(),
        observed,
        witness,
        tolerance_pct: tol,
        agrees,
    });
}

/// Every comparison that this process's witness supports.
pub fn compare(transport: &str, p: &Process) -> Vec<Agreement> {
    let mut v = Vec::new();
    let Some(w) = &p.witness else { return v };
    let o = &p.observed;
    if !transport.starts_with("shm") {
        // Out of the pipe: read(2) copies, splice(2) moves; a consumer does one or the other.
        let (what, s) = if p.role == "producer" {
            ("pipe_write", o.sum("pipe_write", None))
        } else {
            let (r, s) = (o.sum("pipe_read", None), o.sum("splice_out", None));
            ("pipe_read + splice_out", crate::model::Sum { calls: r.calls + s.calls, bytes: r.bytes + s.bytes, ..r })
        };
        push(&mut v, p, &format!("{what} bytes"), s.bytes, w.bytes, 0.0);
        push(&mut v, p, &format!("{what} calls"), s.calls, w.calls, 0.0);
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
    // Faults and switches: BPF counts from the filter insert (the process is blocked at its
    // gate) to the exit; the witness is the kernel's own accounting of the process (wait4 at
    // exit) minus what the process read with getrusage when the gate opened.
    let Some(end) = p.exit.as_ref().map(|e| e.rusage) else { return v };
    let g = w.rusage_at_gate;
    let mm = o.sum("mm_fault", None).calls;
    let faults = if mm > 0 { mm } else { o.sum("fault_user", None).calls + o.sum("fault_kernel", None).calls };
    if faults > 0 {
        push(
            &mut v,
            p,
            "page faults (minor + major)",
            faults,
            (end.minflt + end.majflt).saturating_sub(g.minflt + g.majflt),
            2.0,
        );
    }
    let switches = o.sum("sched_out", None).calls;
    if switches > 0 {
        push(&mut v, p, "context switches", switches, (end.nvcsw + end.nivcsw).saturating_sub(g.nvcsw + g.nivcsw), 5.0);
    }
    v
}
