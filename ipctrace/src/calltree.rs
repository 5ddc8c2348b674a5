//! Call trees: the symbolized kernel stacks of one transport run (both processes) merged into
//! a tree per kind of stack (CPU samples, blocked time, page allocations), with counts and
//! shares; rendered compactly (single-child chains joined, small branches pruned).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Process;

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

#[derive(Default)]
struct Builder {
    count: u64,
    time_ns: u64,
    children: BTreeMap<String, Builder>,
}

impl Builder {
    fn add(&mut self, frames: &[String], count: u64, time_ns: u64) {
        let mut node = self;
        node.count += count;
        node.time_ns += time_ns;
        for f in frames {
            node = node.children.entry(f.clone()).or_default();
            node.count += count;
            node.time_ns += time_ns;
        }
    }

    fn finish(self) -> Vec<TreeNode> {
        let mut v: Vec<TreeNode> = self
            .children
            .into_iter()
            .map(|(frame, b)| TreeNode { frame, count: b.count, time_ns: b.time_ns, children: b.finish() })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.frame.cmp(&b.frame)));
        v
    }
}

fn tree(processes: &[Process], probe: &str) -> Vec<TreeNode> {
    let mut b = Builder::default();
    for p in processes {
        for s in p.observed.stacks.iter().filter(|s| s.probe == probe && !s.kernel.is_empty()) {
            b.add(&s.kernel, s.count, s.time_ns);
        }
    }
    b.finish()
}

pub fn build(processes: &[Process]) -> CallTrees {
    CallTrees {
        cpu: tree(processes, "sample"),
        blocked: tree(processes, "offcpu"),
        page_alloc: tree(processes, "page_alloc"),
    }
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

/// Indented text, pruning branches under `min_share` of the total and joining single-child
/// chains with " -> ".
pub fn render(roots: &[TreeNode], min_share: f64, unit: &str) -> Vec<String> {
    let total: u64 = roots.iter().map(|r| r.count).sum();
    let mut out = Vec::new();
    fn go(n: &TreeNode, depth: usize, total: u64, min: f64, unit: &str, out: &mut Vec<String>) {
        let mut names = vec![n.frame.as_str()];
        let mut cur = n;
        while cur.children.len() == 1 && cur.children[0].count == cur.count {
            cur = &cur.children[0];
            names.push(cur.frame.as_str());
        }
        let share = cur.count as f64 * 100.0 / total.max(1) as f64;
        out.push(format!("{}{:5.1}%  {} {unit}  {}", "  ".repeat(depth), share, cur.count, names.join(" -> ")));
        for c in cur.children.iter().filter(|c| c.count as f64 >= min * total as f64) {
            go(c, depth + 1, total, min, unit, out);
        }
    }
    for r in roots.iter().filter(|r| r.count as f64 >= min_share * total as f64) {
        go(r, 0, total, min_share, unit, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(f: &str, c: u64, ch: Vec<TreeNode>) -> TreeNode {
        TreeNode { frame: f.into(), count: c, time_ns: 0, children: ch }
    }

    #[test]
    fn chains_and_rendering() {
        let t = vec![leaf(
            "entry",
            10,
            vec![leaf("vfs_write", 10, vec![leaf("anon_pipe_write", 8, vec![]), leaf("x", 2, vec![])])],
        )];
        assert!(has_chain(&t, &["vfs_write", "anon_pipe_write"]));
        assert!(!has_chain(&t, &["entry", "anon_pipe_write"]));
        let lines = render(&t, 0.25, "samples");
        assert_eq!(lines[0].trim_start(), "100.0%  10 samples  entry -> vfs_write");
        assert_eq!(lines.len(), 2, "the 20% branch is pruned at 25%: {lines:?}");
    }
}
