//! Call trees as indented text: branches under a share of the total pruned, single-child
//! chains joined with " -> ".

use crate::model::calltree::TreeNode;

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
    use crate::model::calltree::has_chain;

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
