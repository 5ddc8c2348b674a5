//! A tracing session: loads the eBPF object with the kernel's offsets, walks the probe table
//! (attaching the first implementation of each logical probe that the kernel accepts), fills
//! the target filter, and reads back per-CPU aggregates, stack counts, stacks and losses.
//! Knows nothing about reports; hands raw sums to the model.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::{
        BtfTracePoint, FEntry, FExit, KProbe, PerfEvent, Program, RawTracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use std::io::Write;

use aya::maps::{MapData, RingBuf};
use ipctrace_common::{
    AggKey, AggSlot, AggVal, ChannelKind, Event, FdPassKey, Offsets, ProbeId, Ranges, SYSCALL_SLOTS, StackKey,
    StackVal, TargetSlot, loss, sysop,
};

use crate::{
    exit::{Code, fail},
    kernel::{symbols::KernelFunctions, tracefs},
    model::{
        ProgramStat, StreamSummary,
        probe::{Choice, Chosen, Skipped},
    },
    probes::{Attach, FD_CACHE_OPS, Impl, SYSCALL_PROGS, Tier, allowed, btf_version, syscalls_of, table},
};

pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ipctrace-ebpf.o"));

/// Options that decide which implementations are tried.
#[derive(Clone)]
pub struct ProbeOptions {
    /// Probe-table rows left out (`--without`).
    pub without_rows: Vec<&'static str>,
    pub tier: Tier,
    pub no_fentry: bool,
    /// cpu-clock sampling frequency (Hz); 0 disables sampling.
    pub sample_hz: u64,
    /// The transport families whose rows are attached (the rows every run needs always are).
    pub families: Vec<&'static dyn crate::transport::Family>,
}

pub struct Session {
    bpf: Ebpf,
    pub choices: Vec<Choice>,
    stream: Option<Stream>,
    /// The syscall dispatcher's raw tracepoints are attached (once, for every row using them).
    /// How the syscall programs were attached, once they were.
    syscalls_attached: Option<String>,
    /// Raw tracepoint programs attached so far (a program two rows use is attached once).
    raw_attached: Vec<(&'static str, String)>,
    /// Whether the programs count pipe pages from the per-CPU counters, or why not.
    page_counters: Result<(), String>,
    /// The processes this session put in the filter (the programs add their children, and
    /// record each in `PARENTS`).
    added: std::collections::BTreeSet<u32>,
}

/// `--events`/`--perfetto`: the ring buffer, the JSON-lines file it is drained into, and the
/// events kept for the Perfetto trace.
struct Stream {
    ring: RingBuf<MapData>,
    out: Option<std::io::BufWriter<std::fs::File>>,
    path: Option<std::path::PathBuf>,
    /// Events kept for `--perfetto` (at most `KEPT_MAX`; the rest counted in `not_kept`).
    kept: Option<Vec<Event>>,
    not_kept: u64,
    buffer_bytes: u32,
    written: u64,
    /// Events with a probe id this ipctrace does not know (not written under any name).
    unknown: u64,
}

/// Events kept in memory for a Perfetto trace (48 bytes each: about 190 MiB at most).
pub const KEPT_MAX: usize = 4 << 20;

/// Sums of everything the programs aggregated, keyed like the maps.
#[derive(Default)]
pub struct Snapshot {
    pub aggs: BTreeMap<AggKey, AggVal>,
    pub stacks: BTreeMap<StackKey, StackVal>,
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
            crate::warn(&format!(
                "ipctrace: warning: could not raise RLIMIT_MEMLOCK on kernel {rel}; map creation may fail"
            ));
        }
    }
}

fn unload(bpf: &mut Ebpf, prog: &str) {
    let _ = match bpf.program_mut(prog) {
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::RawTracePoint(p)) => p.unload(),
        Some(Program::BtfTracePoint(p)) => p.unload(),
        Some(Program::PerfEvent(p)) => p.unload(),
        _ => Ok(()),
    };
}

/// An error and its causes on one line (aya puts the errno in the source chain); a verifier
/// log is cut to the line that says why, and causes repeated by their parent are dropped.
fn short<E: std::error::Error>(e: E) -> String {
    if std::env::var_os("IPCTRACE_DEBUG_VERIFIER").is_some() {
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(x) = src {
            eprintln!("{x}");
            src = x.source();
        }
    }
    let clean = |s: String| {
        let s = match s.split_once("Verifier output:") {
            Some((head, log)) => match verifier_reason(log) {
                Some(why) => format!("{}: verifier: {why}", head.trim_end().trim_end_matches('.')),
                None => head.to_string(),
            },
            None => s,
        };
        s.trim_end().trim_end_matches('.').to_string()
    };
    let mut parts = vec![clean(e.to_string())];
    let mut src = e.source();
    while let Some(s) = src {
        let p = clean(s.to_string());
        if !parts.iter().any(|q| q.contains(&p)) {
            parts.push(p);
        }
        src = s.source();
    }
    let s = parts.join(": ");
    if s.is_empty() { "unknown error".into() } else { s }
}

/// The verifier's reason for a refusal: the last line of its log that is not an instruction,
/// a source comment, register state or the closing statistics.
fn verifier_reason(log: &str) -> Option<&str> {
    let stats = ["verification time", "stack depth", "processed ", "caller", "callee", "frame", "R10=", "from "];
    log.lines().map(str::trim).rev().find(|l| {
        !l.is_empty()
            && !l.starts_with(|c: char| c.is_ascii_digit() || c == ';')
            && !stats.iter().any(|p| l.starts_with(p))
    })
}

/// How a tracepoint's program was attached.
enum TpHow {
    /// As a BTF tracepoint.
    Btf,
    /// As a raw tracepoint; why not as a BTF one, if it has a BTF version that was refused.
    Raw { btf_refused: Option<String> },
}

impl TpHow {
    /// The attach point as the probe table shows it.
    fn point(&self, category: &str, name: &str) -> String {
        match self {
            TpHow::Btf => format!("tp_btf:{category}:{name}"),
            TpHow::Raw { btf_refused: None } => format!("raw_tp:{category}:{name}"),
            TpHow::Raw { btf_refused: Some(why) } => format!("raw_tp:{category}:{name} (tp_btf refused: {why})"),
        }
    }
}

/// Kernel-side state an attempt needs.
struct Kernel {
    funcs: KernelFunctions,
    btf: Option<Btf>,
    btf_err: String,
    cpus: Vec<u32>,
}

/// Adds one CPU's values of a key to the sum.
fn add_val(sum: &mut AggVal, v: &AggVal) {
    sum.calls += v.calls;
    sum.bytes += v.bytes;
    sum.errors += v.errors;
    sum.zero += v.zero;
    sum.time_ns += v.time_ns;
    for (s, x) in sum.err.iter_mut().zip(v.err.iter()) {
        *s += x;
    }
    for (s, x) in sum.hist.iter_mut().zip(v.hist.iter()) {
        *s += x;
    }
    sum.aux_calls += v.aux_calls;
    sum.aux_bytes += v.aux_bytes;
    sum.aux_base += v.aux_base;
}

impl Session {
    /// Loads the object (maps created, programs not yet loaded). `events`: stream every event
    /// into this (opened) JSON-lines file through a ring buffer of `buffer` bytes.
    /// `floor`: every program returns at once (the benchmark's floor); `block_stacks`: capture
    /// the kernel stacks of blocked time.
    pub fn load(
        offsets: &Offsets,
        events: Option<(Option<&mut crate::outputs::OutFile>, u64, bool)>,
        floor: bool,
        block_stacks: bool,
        late_calls: bool,
    ) -> Result<Self> {
        bump_memlock();
        let mut offsets = *offsets;
        let page_counters = if !offsets.page_counters() {
            Err("the per-CPU page-allocation counters (runqueues, vm_event_states, PGALLOC_*) are not in this \
                 kernel's BTF, or --without page-alloc"
                .to_string())
        } else if events.is_some() {
            Err("--events/--perfetto: every page is an event there, so each is counted where it is allocated".into())
        } else {
            Ok(())
        };
        if page_counters.is_err() {
            offsets.pgalloc_count = 0;
        }
        let offsets = &offsets;
        let mut loader = EbpfLoader::new();
        let fops = crate::kernel::symbols::file_ops();
        let (floor, block_stacks) = (u8::from(floor), u8::from(block_stacks));
        loader
            .override_global("OFFSETS", offsets, true)
            .override_global("FILE_OPS", &fops, true)
            .override_global("FLOOR", &floor, true)
            .override_global("BLOCK_STACKS", &block_stacks, true);
        // attach: calls targets were already in are counted at their exit.
        let late_calls = u8::from(late_calls);
        loader.override_global("LATE_CALLS", &late_calls, true);
        // The direct-mapped aggregate table, sized for the machine's CPUs.
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
        let agg_slots = ipctrace_common::agg_slots_for(cpus);
        loader.map_max_entries("AGG_CACHE", agg_slots).override_global("AGG_CACHE_SLOTS", &agg_slots, true);
        // A ring buffer is a power-of-two number of pages.
        let buffer_bytes = events.as_ref().map(|(_, b, _)| b.max(&4096).next_power_of_two() as u32);
        if let Some(b) = buffer_bytes {
            loader.map_max_entries("EVENTS", b).override_global("EVENTS_ON", &1u8, true);
        }
        let mut bpf =
            loader.load(OBJECT).map_err(|e| fail(Code::Runtime, format!("loading the eBPF object failed: {e}")))?;
        let stream = match (events, buffer_bytes) {
            (Some((file, _, keep)), Some(buffer_bytes)) => {
                let ring = RingBuf::try_from(bpf.take_map("EVENTS").context("EVENTS map")?)?;
                let (out, path) = match file {
                    Some(file) => {
                        let f = file.stream().with_context(|| format!("writing {}", file.path.display()))?;
                        (Some(std::io::BufWriter::new(f)), Some(file.path.clone()))
                    }
                    None => (None, None),
                };
                Some(Stream {
                    ring,
                    out,
                    path,
                    kept: keep.then(Vec::new),
                    not_kept: 0,
                    buffer_bytes,
                    written: 0,
                    unknown: 0,
                })
            }
            _ => None,
        };
        Ok(Self {
            bpf,
            choices: Vec::new(),
            stream,
            syscalls_attached: None,
            raw_attached: Vec::new(),
            page_counters,
            added: Default::default(),
        })
    }

    /// `--events`: moves what the ring buffer holds into the file.
    pub fn drain(&mut self) -> Result<()> {
        let Some(s) = self.stream.as_mut() else { return Ok(()) };
        while let Some(item) = s.ring.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the programs submit whole `Event`s; read unaligned from the ring.
            let e: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            let Some(probe) = ProbeId::from_u16(e.probe) else {
                s.unknown += 1;
                continue;
            };
            // These carry sub-keys (a signal number, a priority), not channel kinds, in `kind`.
            let kind = match probe {
                ProbeId::SchedOut | ProbeId::Wakeup | ProbeId::Blocked | ProbeId::Signal | ProbeId::MqPriority => {
                    serde_json::json!(e.kind)
                }
                _ => serde_json::json!(ChannelKind::name_of(e.kind).unwrap_or("unknown")),
            };
            if let Some(k) = s.kept.as_mut() {
                if k.len() < KEPT_MAX {
                    k.push(e);
                } else {
                    s.not_kept += 1;
                }
            }
            s.written += 1;
            let Some(out) = s.out.as_mut() else { continue };
            let line = serde_json::json!({
                "ts_ns": e.ts_ns,
                "pid": e.tgid,
                "tid": e.tid,
                "other_tid": e.other,
                "probe": probe.name(),
                "kind": kind,
                "ino": e.ino,
                "value": e.value,
                "dur_ns": e.dur_ns,
            });
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// `--perfetto`: the events kept, what the ring buffer lost, and `names` for the tracks.
    pub fn take_timeline(&mut self, names: BTreeMap<u32, String>) -> Result<Option<crate::model::timeline::Timeline>> {
        let lost = self.losses()?.get(loss::RINGBUF_FULL as usize).copied().unwrap_or(0);
        let Some(s) = self.stream.as_mut() else { return Ok(None) };
        let Some(events) = s.kept.take() else { return Ok(None) };
        Ok(Some(crate::model::timeline::Timeline { events, lost, not_kept: s.not_kept, names }))
    }

    /// Events of the stream whose probe id was unknown.
    pub fn unknown_stream_ids(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.unknown)
    }

    /// Flushes the stream and says what it delivered.
    pub fn finish_stream(&mut self) -> Result<Option<StreamSummary>> {
        self.drain()?;
        let lost = self.losses()?.get(loss::RINGBUF_FULL as usize).copied().unwrap_or(0);
        let Some(s) = self.stream.as_mut() else { return Ok(None) };
        if let Some(out) = s.out.as_mut() {
            out.flush()?;
        }
        Ok(Some(StreamSummary {
            file: s.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            buffer_bytes: s.buffer_bytes,
            written: s.written,
            lost,
        }))
    }

    fn prog<'a, T>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
    where
        &'a mut T: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
    {
        let p = bpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
        p.try_into().map_err(short)
    }

    /// Attaches one program; returns its attach point.
    fn attach_one(
        &mut self,
        a: &Attach,
        k: &Kernel,
        sample_hz: u64,
        loaded: &mut Vec<&'static str>,
    ) -> Result<String, String> {
        let func = |variants: &[&str]| -> Result<String, String> {
            let name = k
                .funcs
                .first_present(variants)
                .ok_or_else(|| format!("none of {} is a function of this kernel", variants.join(", ")))?;
            match k.funcs.check(name) {
                Some(why) => Err(why),
                None => Ok(name.to_string()),
            }
        };
        match *a {
            Attach::Fentry { prog, func: f } | Attach::Fexit { prog, func: f } => {
                let name = func(f)?;
                let btf = k.btf.as_ref().ok_or_else(|| format!("kernel BTF unavailable: {}", k.btf_err))?;
                loaded.push(prog);
                let is_entry = matches!(a, Attach::Fentry { .. });
                let load_err = |e: aya::programs::ProgramError| {
                    let s = short(e);
                    // The verifier log is empty when trampolines are refused outright.
                    format!("load of {prog} for {name} refused: {s}")
                };
                if is_entry {
                    let p: &mut FEntry = Self::prog(&mut self.bpf, prog)?;
                    p.load(&name, btf).map_err(load_err)?;
                    p.attach().map_err(|e| format!("attach to {name} failed: {}", short(e)))?;
                    Ok(format!("fentry:{name}"))
                } else {
                    let p: &mut FExit = Self::prog(&mut self.bpf, prog)?;
                    p.load(&name, btf).map_err(load_err)?;
                    p.attach().map_err(|e| format!("attach to {name} failed: {}", short(e)))?;
                    Ok(format!("fexit:{name}"))
                }
            }
            Attach::Kprobe { prog, func: f } | Attach::Kretprobe { prog, func: f } => {
                let name = func(f)?;
                loaded.push(prog);
                let p: &mut KProbe = Self::prog(&mut self.bpf, prog)?;
                if p.fd().is_err() {
                    p.load().map_err(|e| format!("load of {prog} refused: {}", short(e)))?;
                }
                p.attach(&name, 0).map_err(|e| format!("attach to {name} failed: {}", short(e)))?;
                let kind = if matches!(a, Attach::Kprobe { .. }) { "kprobe" } else { "kretprobe" };
                Ok(format!("{kind}:{name}"))
            }
            Attach::RawTracepoint { prog, category, name, required } => {
                if !tracefs::event_exists(category, name) {
                    return if required {
                        Err(format!("tracepoint {category}:{name} does not exist on this kernel"))
                    } else {
                        Ok(String::new())
                    };
                }
                if let Some((_, point)) = self.raw_attached.iter().find(|(p, _)| *p == prog) {
                    return Ok(point.clone());
                }
                loaded.push(prog);
                loaded.extend(btf_version(prog));
                let point = self.attach_raw(prog, name, k.btf.as_ref())?.point(category, name);
                self.raw_attached.push((prog, point.clone()));
                Ok(point)
            }
            Attach::Syscalls { row, ops } => {
                if self.syscalls_attached.is_none() {
                    let mut how = Vec::new();
                    for (prog, name) in SYSCALL_PROGS.into_iter().zip(["sys_enter", "sys_exit"]) {
                        match self.attach_raw(prog, name, k.btf.as_ref()) {
                            Ok(h) => how.push(h.point("raw_syscalls", name)),
                            Err(e) => {
                                SYSCALL_PROGS
                                    .into_iter()
                                    .flat_map(|p| std::iter::once(p).chain(btf_version(p)))
                                    .for_each(|p| unload(&mut self.bpf, p));
                                return Err(e);
                            }
                        }
                    }
                    self.syscalls_attached = Some(how.join(" + "));
                    self.want_syscalls(0, FD_CACHE_OPS)?;
                }
                let names = self.want_syscalls(row, ops)?;
                Ok(format!("{} ({})", self.syscalls_attached.as_deref().unwrap_or_default(), names.join(", ")))
            }
            Attach::CpuClock { prog } => {
                if sample_hz == 0 {
                    return Err("sampling disabled (--sample-hz 0)".into());
                }
                loaded.push(prog);
                let p: &mut PerfEvent = Self::prog(&mut self.bpf, prog)?;
                p.load().map_err(|e| format!("load of {prog} refused: {}", short(e)))?;
                for &cpu in &k.cpus {
                    p.attach(
                        PerfEventConfig::Software(SoftwareEvent::CpuClock),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Frequency(sample_hz),
                        false,
                    )
                    .map_err(|e| format!("perf_event_open(cpu-clock) on CPU {cpu} failed: {}", short(e)))?;
                }
                Ok(format!("perf_event:cpu-clock@{sample_hz}Hz x {} CPUs", k.cpus.len()))
            }
            Attach::IfPresent(inner) => {
                let present = match *inner {
                    Attach::Fentry { func: f, .. }
                    | Attach::Fexit { func: f, .. }
                    | Attach::Kprobe { func: f, .. }
                    | Attach::Kretprobe { func: f, .. } => k.funcs.first_present(f).is_some(),
                    _ => true,
                };
                if present { self.attach_one(inner, k, sample_hz, loaded) } else { Ok(String::new()) }
            }
            Attach::PageCounters => match &self.page_counters {
                Ok(()) => {
                    Ok("per-CPU counters: vm_event_states PGALLOC_* (read by the syscall and sched_switch programs)"
                        .into())
                }
                Err(why) => Err(why.clone()),
            },
            Attach::CheckOnly { func: f, why_no_program } => {
                for name in f {
                    if let Some(why) = k.funcs.check(name) {
                        return Err(why);
                    }
                }
                Err(why_no_program.into())
            }
        }
    }

    /// Attaches raw tracepoint program `prog`'s work to tracepoint `name`: as its BTF version
    /// (`btf_version`: fields read directly, no helper call per field) where there is one and
    /// the kernel takes it, else as `prog` itself. Returns which: "tp_btf" or "raw_tp".
    fn attach_raw(&mut self, prog: &str, name: &str, btf: Option<&Btf>) -> Result<TpHow, String> {
        let mut refused = None;
        if let (Some(bprog), Some(btf)) = (btf_version(prog), btf)
            && std::env::var("IPCTRACE_RAW_TP").map_or(true, |v| v != "1")
        {
            let p: &mut BtfTracePoint = Self::prog(&mut self.bpf, bprog)?;
            match p.load(name, btf).map_err(short).and_then(|()| p.attach().map(|_| ()).map_err(short)) {
                Ok(()) => return Ok(TpHow::Btf),
                Err(e) => {
                    unload(&mut self.bpf, bprog);
                    refused = Some(e);
                }
            }
        }
        let p: &mut RawTracePoint = Self::prog(&mut self.bpf, prog)?;
        p.load().map_err(|e| format!("load of {prog} refused: {}", short(e)))?;
        p.attach(name).map_err(|e| format!("attach to raw tracepoint {name} failed: {}", short(e)))?;
        Ok(TpHow::Raw { btf_refused: refused })
    }

    /// Tells the syscall dispatcher that row `row` wants operations `ops`; returns the
    /// syscalls they stand for.
    fn want_syscalls(&mut self, row: u32, ops: &[u32]) -> Result<Vec<&'static str>, String> {
        let map = self.bpf.map_mut("SYSCALLS").ok_or("SYSCALLS map missing from the eBPF object")?;
        let mut m: Array<_, u32> = Array::try_from(map).map_err(short)?;
        let mut names = Vec::new();
        for &op in ops {
            for &(name, nr) in syscalls_of(op) {
                let Ok(nr) = u32::try_from(nr) else { continue };
                if nr >= SYSCALL_SLOTS {
                    continue;
                }
                let cur = m.get(&nr, 0).map_err(short)?;
                m.set(nr, (cur & !sysop::MASK) | row | op, 0).map_err(short)?;
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Tries one implementation; on failure detaches what it attached.
    fn try_impl(&mut self, i: &Impl, k: &Kernel, sample_hz: u64) -> Result<Vec<String>, String> {
        let mut loaded = Vec::new();
        let mut points = Vec::new();
        for a in i.attach {
            match self.attach_one(a, k, sample_hz, &mut loaded) {
                Ok(p) if p.is_empty() => {}
                Ok(p) => points.push(p),
                Err(e) => {
                    self.raw_attached.retain(|(p, _)| !loaded.contains(p));
                    for prog in loaded {
                        unload(&mut self.bpf, prog);
                    }
                    return Err(e);
                }
            }
        }
        Ok(points)
    }

    /// Walks the probe table, recording for every logical probe what was chosen and why the
    /// other implementations were not.
    pub fn attach(&mut self, opts: ProbeOptions) -> Result<()> {
        let (btf, btf_err) = match Btf::from_sys_fs() {
            Ok(b) => (Some(b), String::new()),
            Err(e) => (None, short(e)),
        };
        let cpus =
            aya::util::online_cpus().map_err(|(_, e)| fail(Code::Runtime, format!("reading online CPUs: {e}")))?;
        let k = Kernel { funcs: KernelFunctions::load(), btf, btf_err, cpus };
        for p in table(&opts.families) {
            let mut choice = Choice { probe: p.name.into(), what: p.what.into(), chosen: None, skipped: Vec::new() };
            if opts.without_rows.contains(&p.name) {
                choice.skipped.push(Skipped {
                    mechanism: p.impls[0].mechanism,
                    reason: format!("skipped: --without {}", p.name.replace('_', "-")),
                });
                self.choices.push(choice);
                continue;
            }
            for i in p.impls {
                if choice.chosen.is_some() {
                    choice
                        .skipped
                        .push(Skipped { mechanism: i.mechanism, reason: "not needed: an earlier tier works".into() });
                    continue;
                }
                if let Err(why) = allowed(i, opts.tier, opts.no_fentry) {
                    choice.skipped.push(Skipped { mechanism: i.mechanism, reason: why });
                    continue;
                }
                let result = match i.uses {
                    Some(other) => match self.choices.iter().find(|c| c.probe == other).and_then(|c| c.chosen.as_ref())
                    {
                        Some(_) => Ok(vec![format!("(stacks of {other})")]),
                        None => Err(format!("needs {other}, which is not attached")),
                    },
                    None => self.try_impl(i, &k, opts.sample_hz),
                };
                match result {
                    Ok(points) => {
                        choice.chosen = Some(Chosen {
                            mechanism: i.mechanism,
                            label: i.label,
                            rule: i.rule.into(),
                            attach_points: points,
                        })
                    }
                    Err(e) => choice.skipped.push(Skipped { mechanism: i.mechanism, reason: e }),
                }
            }
            self.choices.push(choice);
        }
        Ok(())
    }

    /// Fails (exit 1, one line with every reason) unless each of `probes` has an implementation.
    pub fn require(&self, families: &[&'static dyn crate::transport::Family]) -> Result<()> {
        for needed in families.iter().flat_map(|f| f.required().iter()) {
            if let Some(c) = self.choices.iter().find(|c| c.probe == *needed && c.chosen.is_none()) {
                let why: Vec<String> =
                    c.skipped.iter().map(|s| format!("{}: {}", s.mechanism.name(), s.reason)).collect();
                return Err(fail(Code::Runtime, format!("no probe tier could attach {needed} ({})", why.join("; "))));
            }
        }
        Ok(())
    }

    /// Adds a process to the in-kernel filter: its slot of `TARGET_SLOTS` (tgid mod the slot
    /// count) if free, else the `TARGETS` hash map, with the slot marked spilled (as the
    /// programs do: `ipctrace-ebpf`'s `targets`).
    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        // A random fd-cache generation: a reused pid never meets an earlier process's entries.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ tgid.rotate_left(13));
        let value = u64::from(ipctrace_common::target::IS | (generation << ipctrace_common::target::GEN_SHIFT))
            | (u64::from(generation.rotate_left(7)) << ipctrace_common::target::EPOCH_SHIFT);
        let what = || format!("adding pid {tgid} to the target filter");
        self.added.insert(tgid);
        let index = tgid & (ipctrace_common::TARGET_SLOT_COUNT - 1);
        let mut slots: Array<_, TargetSlot> =
            Array::try_from(self.bpf.map_mut("TARGET_SLOTS").context("TARGET_SLOTS map")?)?;
        let slot = slots.get(&index, 0).with_context(what)?;
        if slot.tgid == tgid || slot.tgid == 0 {
            return slots.set(index, TargetSlot { tgid, _pad: 0, t: value }, 0).with_context(what);
        }
        // The slot is another target's: only the spill mark is written (never the slot, whose
        // value the programs may be changing).
        let mut t: HashMap<_, u32, u64> = HashMap::try_from(self.bpf.map_mut("TARGETS").context("TARGETS map")?)?;
        t.insert(tgid, value, 0).with_context(what)?;
        let mut marks: Array<_, u32> =
            Array::try_from(self.bpf.map_mut("TARGET_SPILLED").context("TARGET_SPILLED map")?)?;
        marks.set(index, 1, 0).with_context(what)
    }

    /// A channel ipctrace itself uses with its targets (by inode): never counted.
    pub fn ignore_channel(&mut self, ino: u64) -> Result<()> {
        let mut m: HashMap<_, u64, u8> = HashMap::try_from(self.bpf.map_mut("IGNORED").context("IGNORED map")?)?;
        m.insert(ino, 1, 0).context("adding a channel to ignore")
    }

    /// Every process in the in-kernel filter (those added, and every child they forked).
    pub fn targets(&self) -> Vec<u32> {
        // Those added here and every child the programs followed (its parent recorded): a
        // few map entries, where reading the whole slot table would be thousands of reads
        // at every rescan.
        let mut out: std::collections::BTreeSet<u32> = self.added.clone();
        out.extend(self.parents().into_keys());
        out.into_iter().collect()
    }

    /// Aggregates summed over CPUs.
    pub fn aggregates(&self) -> Result<BTreeMap<AggKey, AggVal>> {
        let m: PerCpuHashMap<_, AggKey, AggVal> = PerCpuHashMap::try_from(self.bpf.map("AGG").context("AGG map")?)?;
        let embryos = self.embryos();
        let mut out: BTreeMap<AggKey, AggVal> = BTreeMap::new();
        // Counted under a socket's address before it was accepted: moved to its inode.
        let mut add = |mut k: AggKey, v: &AggVal| {
            if let Some(&ino) = embryos.get(&k.ino) {
                k.ino = ino;
            }
            add_val(out.entry(k).or_default(), v);
        };
        for item in m.iter() {
            let (k, per_cpu) = item?;
            for v in per_cpu.iter() {
                add(k, v);
            }
        }
        // The direct-mapped table (`ipctrace-ebpf`: `agg_slot`): every CPU's claimed slots.
        let c: PerCpuArray<_, AggSlot> = PerCpuArray::try_from(self.bpf.map("AGG_CACHE").context("AGG_CACHE map")?)?;
        for i in 0..c.len() {
            for s in c.get(&i, 0)?.iter().filter(|s| s.key.tgid != 0) {
                add(s.key, &s.val);
            }
        }
        Self::add_folded(&mut out);
        Ok(out)
    }

    /// What calls added up while in flight (`AggVal::aux_*`: a pipe write's buffer pages, a
    /// send's skbs), counted by the programs in the call's own update, under their own probes.
    /// Where only some calls were measured (pipe pages from the per-CPU counters), the
    /// measured sums are scaled by the bytes all calls moved over the bytes the measured ones did.
    fn add_folded(out: &mut BTreeMap<AggKey, AggVal>) {
        use ipctrace_common::scale_aux;
        let extra: Vec<(AggKey, u64, u64)> = out
            .iter()
            .filter(|(_, v)| v.aux_calls > 0 || v.aux_bytes > 0)
            .filter_map(|(k, v)| {
                let probe = ipctrace_common::aux_probe(k.probe)? as u16;
                let (calls, bytes) = if v.aux_base > 0 && v.aux_calls > 0 {
                    // The bytes as the calls were scaled (a page stays 4 KiB after rounding).
                    let calls = scale_aux(v.aux_calls, v.bytes, v.aux_base);
                    (calls, scale_aux(v.aux_bytes, calls, v.aux_calls))
                } else {
                    (v.aux_calls, v.aux_bytes)
                };
                Some((AggKey { probe, ..*k }, calls, bytes))
            })
            .collect();
        for (k, calls, bytes) in extra {
            let v = out.entry(k).or_default();
            v.calls += calls;
            v.bytes += bytes;
        }
    }

    /// Sockets sent to before they were accepted: address -> the inode they got (accepted
    /// ones only).
    fn embryos(&self) -> BTreeMap<u64, u64> {
        let Some(m) = self.bpf.map("EMBRYOS") else { return BTreeMap::new() };
        let Ok(m) = HashMap::<_, u64, u64>::try_from(m) else { return BTreeMap::new() };
        m.iter().flatten().filter(|(_, ino)| *ino != 0).collect()
    }

    /// Everything at once, for the report.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let m: PerCpuHashMap<_, StackKey, StackVal> =
            PerCpuHashMap::try_from(self.bpf.map("STACK_COUNTS").context("STACK_COUNTS map")?)?;
        let embryos = self.embryos();
        let mut stacks: BTreeMap<StackKey, StackVal> = BTreeMap::new();
        for item in m.iter() {
            let (mut k, per_cpu) = item?;
            if let Some(&ino) = embryos.get(&k.ino) {
                k.ino = ino;
            }
            let v = stacks.entry(k).or_default();
            for x in per_cpu.iter() {
                v.count += x.count;
                v.time_ns += x.time_ns;
            }
        }
        Ok(Snapshot { aggs: self.aggregates()?, stacks })
    }

    /// Names recorded in the kernel at fork/exec, by pid.
    pub fn comms(&self) -> BTreeMap<u32, String> {
        let Some(m) = self.bpf.map("COMMS") else { return BTreeMap::new() };
        let Ok(m) = HashMap::<_, u32, [u8; 16]>::try_from(m) else { return BTreeMap::new() };
        m.iter()
            .flatten()
            .map(|(k, v)| {
                let end = v.iter().position(|&b| b == 0).unwrap_or(16);
                (k, String::from_utf8_lossy(&v[..end]).into_owned())
            })
            .collect()
    }

    /// A u32 -> u32 map of the programs, read whole (empty if unreadable).
    fn u32_map(&self, name: &str) -> BTreeMap<u32, u32> {
        let Some(m) = self.bpf.map(name) else { return BTreeMap::new() };
        let Ok(m) = HashMap::<_, u32, u32>::try_from(m) else { return BTreeMap::new() };
        m.iter().flatten().collect()
    }

    /// fds the targets passed over Unix sockets (SCM_RIGHTS), with how many times; the socket
    /// they went over is a receiving socket's inode (an embryo's moved to its inode).
    pub fn fd_passes(&self) -> Vec<(FdPassKey, u64)> {
        let Some(m) = self.bpf.map("FD_PASSES") else { return Vec::new() };
        let Ok(m) = HashMap::<_, FdPassKey, u64>::try_from(m) else { return Vec::new() };
        let embryos = self.embryos();
        m.iter()
            .flatten()
            .map(|(mut k, n)| {
                if let Some(&ino) = embryos.get(&k.via) {
                    k.via = ino;
                }
                (k, n)
            })
            .collect()
    }

    /// The parent of every target forked while tracing (child -> parent).
    pub fn parents(&self) -> BTreeMap<u32, u32> {
        self.u32_map("PARENTS")
    }

    /// Exit codes of targets that exited while tracing (wait(2) encoding).
    pub fn exits(&self) -> BTreeMap<u32, u32> {
        self.u32_map("EXITS")
    }

    /// Tells the programs about shm mappings that existed before tracing (attach).
    pub fn add_ranges(&mut self, tgid: u32, r: &Ranges) -> Result<()> {
        let mut m: HashMap<_, u32, Ranges> = HashMap::try_from(self.bpf.map_mut("SHM_RANGES").context("SHM_RANGES")?)?;
        m.insert(tgid, *r, 0).context("adding shm ranges")
    }

    /// Instruction pointers of stack `id` (innermost first).
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let m: StackTraceMap<_> = StackTraceMap::try_from(self.bpf.map("STACKS")?).ok()?;
        let st = m.get(&(id as u32), 0).ok()?;
        Some(st.frames().iter().map(|f| f.ip).collect())
    }

    /// Each loaded program's counters from its fdinfo: runs the kernel skipped
    /// (`recursion_misses`, 5.12+: the program was already running on that CPU; on kernels
    /// where syscall tracepoints run their programs preemptible, a task preempted inside one
    /// makes the others on that CPU miss it), and, while BPF statistics are enabled
    /// (`kernel.bpf_stats_enabled=1` or a `BPF_ENABLE_STATS` fd), its runs and their time.
    pub fn program_stats(&self) -> Vec<ProgramStat> {
        use std::os::fd::{AsFd, AsRawFd};
        let mut out: BTreeMap<String, ProgramStat> = BTreeMap::new();
        for (name, prog) in self.bpf.programs() {
            let Ok(fd) = prog.fd() else { continue };
            let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let e = out
                .entry(name.to_string())
                .or_insert_with(|| ProgramStat { name: name.to_string(), ..Default::default() });
            e.runs += field("run_cnt");
            e.run_time_ns += field("run_time_ns");
            e.skipped_runs += field("recursion_misses");
        }
        out.into_values().collect()
    }

    /// Loss counters summed over CPUs, indexed by `ipctrace_common::loss`.
    pub fn losses(&self) -> Result<Vec<u64>> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(self.bpf.map("LOSS").context("LOSS map")?)?;
        (0..loss::COUNT).map(|i| Ok(m.get(&i, 0)?.iter().sum())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_counts_come_back_under_their_own_probes() {
        let key = |probe: ProbeId, ino| AggKey { tgid: 7, probe: probe as u16, kind: 1, ino };
        let mut out = BTreeMap::new();
        out.insert(
            key(ProbeId::PipeWrite, 5),
            AggVal { calls: 16, bytes: 1 << 20, aux_calls: 250, aux_bytes: 250 << 12, ..Default::default() },
        );
        out.insert(key(ProbeId::SockSend, 6), AggVal { calls: 3, bytes: 300, aux_calls: 3, ..Default::default() });
        out.insert(key(ProbeId::PipeRead, 5), AggVal { calls: 16, aux_calls: 9, ..Default::default() });
        // Pages measured on a quarter of the bytes another write channel moved: scaled up.
        out.insert(
            key(ProbeId::PipeWrite, 8),
            AggVal {
                calls: 64,
                bytes: 4 << 20,
                aux_calls: 250,
                aux_bytes: 250 << 12,
                aux_base: 1 << 20,
                ..Default::default()
            },
        );
        Session::add_folded(&mut out);
        let pages = &out[&key(ProbeId::PipePage, 5)];
        assert_eq!((pages.calls, pages.bytes), (250, 250 << 12), "the write's pages, on its channel");
        let scaled = &out[&key(ProbeId::PipePage, 8)];
        assert_eq!((scaled.calls, scaled.bytes), (1000, 1000 << 12), "measured on 1 MiB of 4 MiB");
        assert_eq!(out[&key(ProbeId::SkbQueued, 6)].calls, 3);
        assert_eq!(out.len(), 7, "a read adds nothing up: {out:?}");
    }

    /// The rule the report prints says how many pipe writes the programs measure.
    #[test]
    fn the_pages_rule_names_the_measured_share() {
        use ipctrace_common::{PAGES_EVERY, PAGES_WARMUP};
        let rule = crate::transport::pipe::RULE_PAGES_COUNTERS;
        assert!(rule.contains(&format!("first {PAGES_WARMUP} writes on each CPU")), "{rule}");
        assert!(rule.contains(&format!("random 1 in {PAGES_EVERY}")), "{rule}");
    }

    #[test]
    fn the_aggregate_table_is_sized_for_the_cpus() {
        use ipctrace_common::{AGG_CACHE_BYTES, AggSlot, agg_slot_index, agg_slots_for};
        for cpus in [1u64, 2, 8, 64, 256, 1024, 8192] {
            let n = agg_slots_for(cpus);
            assert!(n.is_power_of_two() && (64..=512).contains(&n), "{cpus} CPUs: {n} slots");
            let bytes = u64::from(n) * std::mem::size_of::<AggSlot>() as u64 * cpus;
            assert!(n == 64 || bytes <= AGG_CACHE_BYTES, "{cpus} CPUs: {bytes} bytes");
        }
        assert_eq!(agg_slots_for(2), 512);
        // Keys spread over the slots: a pipe run's dozen keys rarely share one.
        let k = |tgid, probe, ino| AggKey { tgid, probe, kind: 1, ino };
        let slots: std::collections::BTreeSet<u32> =
            (0..8).flat_map(|p| [k(1000, p, 5), k(1001, p, 5)]).map(|x| agg_slot_index(&x, 512)).collect();
        assert!(slots.len() >= 14, "{slots:?}");
    }

    #[test]
    fn verifier_logs_are_cut_to_the_reason() {
        let log = "0: R1=ctx() R10=fp0\n; x @ a.rs:1\n6165: (7b) *(u64 *)(r4 +8) = r3\nR3 !read_ok\n\
                   verification time 13255 usec\nstack depth 0+368\nprocessed 1017 insns (limit 1000000)\n";
        assert_eq!(verifier_reason(log), Some("R3 !read_ok"));
        assert_eq!(verifier_reason("0: (85) call pc+2\nprocessed 3 insns\n"), None);
    }
}
