//! Observed against witness: for each process, the figures BPF measured next to what the
//! process counted about itself, with the tolerance each comparison allows and why. The
//! transport adds its data-path rows; faults and switches are compared here for all.
//! Never compares a witness with itself.

use ipctrace_common::ProbeId;

use crate::{
    model::{Agreement, Process},
    transport::Family,
};

/// Adds one comparison (`tol`: percent allowed; 0 = exact).
pub fn push(v: &mut Vec<Agreement>, p: &Process, figure: &str, observed: u64, witness: u64, tol: f64) {
    push_with(v, p, figure, observed, witness, tol, 0);
}

/// Adds one comparison allowing `tol` percent or `slack` events, whichever is more.
pub fn push_with(v: &mut Vec<Agreement>, p: &Process, figure: &str, observed: u64, witness: u64, tol: f64, slack: u64) {
    let diff = observed.abs_diff(witness);
    let agrees = if tol == 0.0 && slack == 0 {
        observed == witness
    } else {
        diff <= slack || diff as f64 <= tol / 100.0 * witness.max(1) as f64
    };
    v.push(Agreement {
        pid: p.pid,
        role: p.role.clone(),
        figure: figure.into(),
        observed,
        witness,
        tolerance_pct: tol,
        tolerance_abs: slack,
        agrees,
    });
}

/// Every comparison that this process's witness supports.
pub fn compare(f: &dyn Family, p: &Process) -> Vec<Agreement> {
    let mut v = Vec::new();
    let Some(w) = &p.witness else { return v };
    f.agreement(p, &mut v);
    // Faults and switches: BPF counts from the filter insert (the process is blocked at its
    // gate) to the exit; the witness is the kernel's own accounting of the process (wait4 at
    // exit) minus what the process read with getrusage when the gate opened.
    let Some(end) = p.exit.as_ref().map(|e| e.rusage) else { return v };
    let g = w.rusage_at_gate;
    let o = &p.observed;
    let mm = o.sum(ProbeId::MmFault, None).calls;
    let faults = if mm > 0 { mm } else { o.sum_of(&[ProbeId::FaultUser, ProbeId::FaultKernel]).calls };
    if faults > 0 {
        // A fault the kernel retries (VM_FAULT_RETRY) enters handle_mm_fault twice but is
        // accounted once: 2% or 2 faults.
        let witness = (end.minflt + end.majflt).saturating_sub(g.minflt + g.majflt);
        push_with(&mut v, p, "page faults (minor + major)", faults, witness, 2.0, 2);
    }
    let switches = o.sum(ProbeId::SchedOut, None).calls;
    if switches > 0 {
        // The switch away at exit is seen by sched_switch after the kernel's last rusage
        // update: 5% or 2 switches.
        let witness = (end.nvcsw + end.nivcsw).saturating_sub(g.nvcsw + g.nivcsw);
        push_with(&mut v, p, "context switches", switches, witness, 5.0, 2);
    }
    v
}
