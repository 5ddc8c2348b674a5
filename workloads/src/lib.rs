//! ipctrace's built-in producer/consumer workloads and the witnesses they report.
//! A library (used by ipctrace and by the `workloads` binary) plus the role processes' code.

pub mod control;
pub mod pattern;
pub mod pipe;
pub mod role;
pub mod size;
pub mod spawn;
pub mod witness;
