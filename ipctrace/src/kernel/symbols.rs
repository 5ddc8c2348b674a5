//! Kernel symbols: symbolizing stack addresses (blazesym over /proc/kallsyms) and checking
//! whether a kernel function exists and is traceable before a probe is attached to it.

use std::collections::HashMap;

use blazesym::{
    MaybeDefault,
    symbolize::{Input, Symbolized, Symbolizer, source::Kernel, source::Source},
};

/// Symbolizes kernel addresses, caching each address once.
pub struct KernelSymbols {
    symbolizer: Symbolizer,
    cache: HashMap<u64, String>,
}

impl Default for KernelSymbols {
    fn default() -> Self {
        Self { symbolizer: Symbolizer::new(), cache: HashMap::new() }
    }
}

impl KernelSymbols {
    /// Function names for `addrs` (`0x...` where unknown).
    pub fn names(&mut self, addrs: &[u64]) -> Vec<String> {
        let missing: Vec<u64> = addrs.iter().copied().filter(|a| !self.cache.contains_key(a)).collect();
        if !missing.is_empty() {
            // kallsyms only: a vmlinux with DWARF is rarely installed, and kallsyms has every function name.
            let src = Source::Kernel(Kernel { vmlinux: MaybeDefault::None, debug_syms: false, ..Default::default() });
            let syms = self.symbolizer.symbolize(&src, Input::AbsAddr(&missing)).unwrap_or_default();
            for (i, a) in missing.iter().enumerate() {
                let name = match syms.get(i) {
                    Some(Symbolized::Sym(s)) => s.name.to_string(),
                    _ => format!("0x{a:x}"),
                };
                self.cache.insert(*a, name);
            }
        }
        addrs.iter().map(|a| self.cache.get(a).cloned().unwrap_or_else(|| format!("0x{a:x}"))).collect()
    }

    /// A captured stack (innermost first) as frames outermost first, without the tracing
    /// machinery on top (the program, the raw tracepoint's dispatch): those are ipctrace's
    /// frames, not the traced path.
    pub fn stack(&mut self, addrs: &[u64]) -> Vec<String> {
        let mut frames = self.names(addrs);
        let tracing = frames.iter().take_while(|f| is_tracing_frame(f)).count();
        frames.drain(..tracing);
        frames.reverse();
        frames
    }
}

/// Frames a BPF program's stack capture adds above the tracepoint's caller.
fn is_tracing_frame(f: &str) -> bool {
    ["bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "bpf_get_stack", "__bpf_get_stack", "bpf_perf_"]
        .iter()
        .any(|p| f.starts_with(p))
        || f.starts_with("0x")
}

/// Function names of the running kernel that kprobes/fentry could target, from
/// /proc/kallsyms (text symbols) and, where readable, tracefs available_filter_functions.
pub struct KernelFunctions {
    kallsyms: std::collections::HashSet<String>,
    /// None when available_filter_functions cannot be read (e.g. EPERM with ftrace locked down).
    traceable: Option<std::collections::HashSet<String>>,
}

impl KernelFunctions {
    pub fn load() -> Self {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (_, ty, name) = (it.next()?, it.next()?, it.next()?);
                matches!(ty, "t" | "T").then(|| name.to_string())
            })
            .collect();
        let path = std::path::Path::new(super::tracefs::root()).join("available_filter_functions");
        let traceable = std::fs::read_to_string(path)
            .ok()
            .map(|t| t.lines().filter_map(|l| l.split_whitespace().next().map(String::from)).collect());
        Self { kallsyms, traceable }
    }

    /// Why `name` cannot be probed, or None if it looks probeable.
    pub fn check(&self, name: &str) -> Option<String> {
        if !self.kallsyms.contains(name) {
            return Some(format!("{name} is not a function of this kernel (not in /proc/kallsyms)"));
        }
        match &self.traceable {
            Some(t) if !t.contains(name) => {
                Some(format!("{name} is not traceable (notrace: absent from available_filter_functions)"))
            }
            _ => None,
        }
    }

    /// The first of `variants` this kernel has (pipe_write on < 6.15, anon_pipe_write after).
    pub fn first_present<'a>(&self, variants: &[&'a str]) -> Option<&'a str> {
        variants.iter().copied().find(|v| self.kallsyms.contains(*v))
    }
}

/// Addresses of kernel symbols from /proc/kallsyms (0 where absent or hidden).
fn symbol_addrs(names: &[&str]) -> Vec<u64> {
    let mut out = vec![0u64; names.len()];
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (f.next(), f.next(), f.next()) else { continue };
        if let Some(i) = names.iter().position(|n| *n == name) {
            out[i] = u64::from_str_radix(addr, 16).unwrap_or(0);
        }
    }
    out
}

/// The read functions that mark an eventfd and a signalfd (compared with
/// `file->f_op->read_iter`: the `*_fops` tables themselves are data symbols, which kallsyms
/// lists only with CONFIG_KALLSYMS_ALL).
pub fn file_ops() -> ipctrace_common::FileOps {
    let a = symbol_addrs(&["eventfd_read", "signalfd_read_iter"]);
    ipctrace_common::FileOps { eventfd: a[0], signalfd: a[1] }
}
