//! One observed-against-witness comparison: a figure BPF measured next to what the process
//! counted about itself, with the tolerance allowed. Built by `crate::agree`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agreement {
    pub pid: u32,
    pub role: String,
    pub figure: String,
    pub observed: u64,
    pub witness: u64,
    /// Allowed relative difference (0 = exact) ...
    pub tolerance_pct: f64,
    /// ... or absolute difference, whichever is more.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tolerance_abs: u64,
    pub agrees: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
