//! A tracing session: loads the eBPF object with the BTF offsets, attaches its programs, fills
//! the target filter and reads back the per-CPU aggregates and loss counters (summed).
//! Knows nothing about reports; hands raw sums to the model.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
};
use ipctrace_common::{AggKey, AggVal, Offsets, loss};

use crate::exit::{Code, fail};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ipctrace-ebpf.o"));

/// One program attachment: which program, where, and how it was measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub program: &'static str,
    pub mechanism: &'static str,
    pub attach_point: String,
}

/// Programs and their tracepoints (the tracepoint tier of the pipe data-path probes).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sys_enter_write", "syscalls", "sys_enter_write"),
    ("sys_exit_write", "syscalls", "sys_exit_write"),
    ("sys_enter_writev", "syscalls", "sys_enter_writev"),
    ("sys_exit_writev", "syscalls", "sys_exit_writev"),
    ("sys_enter_read", "syscalls", "sys_enter_read"),
    ("sys_exit_read", "syscalls", "sys_exit_read"),
    ("sys_enter_readv", "syscalls", "sys_enter_readv"),
    ("sys_exit_readv", "syscalls", "sys_exit_readv"),
];

pub struct Session {
    bpf: Ebpf,
    pub attachments: Vec<Attachment>,
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (< 5.11); later kernels
/// charge the memory cgroup, so a refusal there does not matter and is not reported.
fn bump_memlock() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        let rel = crate::kernel::release();
        let mut it = rel.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse::<u32>().ok());
        let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        if (maj, min) < (5, 11) {
            eprintln!("ipctrace: warning: could not raise RLIMIT_MEMLOCK on kernel {rel}; map creation may fail");
        }
    }
}

impl Session {
    /// Loads the programs (not yet attached).
    pub fn load(offsets: &Offsets) -> Result<Self> {
        bump_memlock();
        let bpf = EbpfLoader::new()
            .override_global("OFFSETS", offsets, true)
            .load(OBJECT)
            .map_err(|e| fail(Code::Runtime, format!("loading the eBPF object failed: {e}")))?;
        Ok(Self { bpf, attachments: Vec::new() })
    }

    /// Loads and attaches every tracepoint program; any failure is fatal (no other tier yet).
    pub fn attach(&mut self) -> Result<()> {
        for &(prog, cat, name) in TRACEPOINTS {
            let p: &mut TracePoint = self
                .bpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} missing from the eBPF object"))?
                .try_into()?;
            p.load().map_err(|e| fail(Code::Runtime, format!("loading {prog} failed: {e}")))?;
            p.attach(cat, name)
                .map_err(|e| fail(Code::Runtime, format!("attaching {prog} to {cat}:{name} failed: {e}")))?;
            self.attachments.push(Attachment {
                program: prog,
                mechanism: "tracepoint",
                attach_point: format!("{cat}:{name}"),
            });
        }
        Ok(())
    }

    /// Adds a process to the in-kernel filter.
    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        let mut t: HashMap<_, u32, u8> = HashMap::try_from(self.bpf.map_mut("TARGETS").context("TARGETS map")?)?;
        t.insert(tgid, 1, 0).with_context(|| format!("adding pid {tgid} to the target filter"))
    }

    /// Aggregates summed over CPUs.
    pub fn aggregates(&self) -> Result<BTreeMap<(u32, u16, u16, u64), AggVal>> {
        let m: PerCpuHashMap<_, AggKey, AggVal> = PerCpuHashMap::try_from(self.bpf.map("AGG").context("AGG map")?)?;
        let mut out = BTreeMap::new();
        for item in m.iter() {
            let (k, per_cpu) = item?;
            let mut sum = AggVal::default();
            for v in per_cpu.iter() {
                sum.calls += v.calls;
                sum.bytes += v.bytes;
                sum.errors += v.errors;
                sum.zero += v.zero;
                sum.time_ns += v.time_ns;
                for (s, x) in sum.hist.iter_mut().zip(v.hist.iter()) {
                    *s += x;
                }
            }
            out.insert((k.tgid, k.probe, k.kind, k.ino), sum);
        }
        Ok(out)
    }

    /// Loss counters summed over CPUs, indexed by `ipctrace_common::loss`.
    pub fn losses(&self) -> Result<[u64; loss::COUNT as usize]> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(self.bpf.map("LOSS").context("LOSS map")?)?;
        let mut out = [0u64; loss::COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = m.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}
