//! Call trees as data: a run's symbolized kernel stacks merged into trees (CPU samples, blocked
//! time, page allocations). Built by `crate::calltree`; drawn by the renderers.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TreeNode {
    pub frame: String,
    /// Samples or events through this frame.
    pub count: u64,
    /// Off-CPU time through this frame (blocked trees), ns.
    pub time_ns: u64,
    pub children: Vec<TreeNode>,
}

/// The trees of a run: `cpu` (sampled), `blocked` (voluntary switches, with time) and
/// `page_alloc` (exact), each a list of roots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CallTrees {
    pub cpu: Vec<TreeNode>,
    pub blocked: Vec<TreeNode>,
    pub page_alloc: Vec<TreeNode>,
}

/// Does the tree hold `chain` as consecutive frames on some root-to-leaf path?
#[cfg(test)]
pub fn has_chain(roots: &[TreeNode], chain: &[&str]) -> bool {
    fn walk(n: &TreeNode, chain: &[&str], matched: usize) -> bool {
        let m = if n.frame == chain[matched] {
            matched + 1
        } else if n.frame == chain[0] {
            1
        } else {
            0
        };
        if m == chain.len() {
            return true;
        }
        n.children.iter().any(|c| walk(c, chain, m))
    }
    !chain.is_empty() && roots.iter().any(|r| walk(r, chain, 0))
}
