//! Call trees: the symbolized kernel stacks of one channel's processes merged into a tree per
//! kind of stack (CPU samples, blocked time, page allocations), with counts.

use std::collections::BTreeMap;

use ipctrace_common::ProbeId;

use crate::model::{CallTrees, Process, calltree::TreeNode};

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

fn tree(processes: &[Process], probe: ProbeId) -> Vec<TreeNode> {
    let mut b = Builder::default();
    for p in processes {
        for s in p.observed.stacks_of(probe).filter(|s| !s.kernel.is_empty()) {
            b.add(&s.kernel, s.count, s.time_ns);
        }
    }
    b.finish()
}

pub fn build(processes: &[Process]) -> CallTrees {
    CallTrees {
        cpu: tree(processes, ProbeId::Sample),
        blocked: tree(processes, ProbeId::OffCpu),
        page_alloc: tree(processes, ProbeId::PageAlloc),
    }
}
