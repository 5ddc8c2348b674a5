//! The kernel data path of one transport run, reconstructed from that run's observations and
//! stacks (never a template): ordered stages with counts, bytes, time and label; a stage with
//! no events says "not observed". Also the comparison metrics and the verdict across runs.

use serde::{Deserialize, Serialize};

use crate::model::{Label, Observed, Process, StackCount, hist_quantile};

/// One stage of the path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stage {
    /// e.g. `write(2) -> vfs_write -> anon_pipe_write`, `writer blocked: pipe full`.
    pub name: String,
    pub count: Option<u64>,
    pub bytes: Option<u64>,
    /// Human-readable time figure (latency percentiles, total blocked time).
    pub time: Option<String>,
    /// e.g. `exact`, `derived + sampled`; None when not observed.
    pub label: Option<String>,
    pub observed: bool,
    /// Extra facts: the call chain seen, per-process split, sample share.
    pub note: Option<String>,
}

/// The path of one run plus its comparison metrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PathModel {
    pub stages: Vec<Stage>,
    pub metrics: Metrics,
}

/// Figures per transport for the side-by-side comparison. Payload = the consumer's verified
/// bytes (its witness), the one definition valid for both pipes and shared memory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub payload_bytes: u64,
    /// Bytes copied by the kernel between user memory and a pipe (observed) / payload.
    pub kernel_copies_per_byte: f64,
    pub copies_label: String,
    pub syscalls_per_mib: f64,
    pub faults_per_mib: f64,
    pub context_switches_per_mib: f64,
    pub wakeups_per_mib: f64,
    pub futex_waits_per_mib: f64,
    /// Share of the targets' cpu-clock samples taken in the kernel (sampled); None without samples.
    pub kernel_cpu_share: Option<f64>,
    /// Share of the targets' CPU time in the kernel from their own getrusage (witness).
    pub kernel_cpu_share_witness: Option<f64>,
    pub throughput_bytes_per_s: f64,
}

/// Kernel frames that do the copying, by family (names differ by CPU and kernel).
pub fn is_copy_frame(f: &str) -> bool {
    ["copy_page_from_iter", "copy_page_to_iter", "_copy_from_iter", "_copy_to_iter", "copy_user", "rep_movs", "memcpy"]
        .iter()
        .any(|p| f.contains(p))
}

/// Page zeroing frames.
pub fn is_clear_frame(f: &str) -> bool {
    f.starts_with("clear_page") || f.contains("clear_user") || f.contains("folio_zero")
}

fn is_pipe_write_fn(f: &str) -> bool {
    f == "anon_pipe_write" || f == "pipe_write" || f == "fifo_pipe_write"
}

fn is_pipe_read_fn(f: &str) -> bool {
    f == "anon_pipe_read" || f == "pipe_read" || f == "fifo_pipe_read"
}

/// Stacks of `probe` whose frames satisfy `pred` (any frame).
fn stacks_with<'a>(
    o: &'a Observed,
    probe: &'a str,
    pred: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a StackCount> + 'a {
    o.stacks.iter().filter(move |s| s.probe == probe && s.kernel.iter().any(|f| pred(f)))
}

fn count_time<'a>(it: impl Iterator<Item = &'a StackCount>) -> (u64, u64) {
    it.fold((0, 0), |(c, t), s| (c + s.count, t + s.time_ns))
}

/// The chain from the syscall entry to `leaf_pred`'s frame, in the most frequent stack that has it.
fn chain(o: &Observed, probes: &[&str], leaf_pred: impl Fn(&str) -> bool) -> Option<String> {
    let s = o
        .stacks
        .iter()
        .filter(|s| probes.contains(&s.probe.as_str()) && s.kernel.iter().any(|f| leaf_pred(f)))
        .max_by_key(|s| s.count)?;
    let end = s.kernel.iter().position(|f| leaf_pred(f))?;
    let start = s
        .kernel
        .iter()
        .position(|f| f.starts_with("__x64_sys") || f.starts_with("ksys_") || f == "exc_page_fault")
        .unwrap_or(0);
    Some(s.kernel[start.min(end)..=end].join(" -> "))
}

/// The most frequent sampled kernel path of a process (outermost first), trimmed.
fn hottest(o: &Observed) -> Option<(String, u64, u64)> {
    let total: u64 = o.stacks.iter().filter(|s| s.probe == "sample").map(|s| s.count).sum();
    let s = o.stacks.iter().filter(|s| s.probe == "sample" && !s.kernel.is_empty()).max_by_key(|s| s.count)?;
    let frames: Vec<&str> = s.kernel.iter().rev().take(8).map(String::as_str).collect();
    Some((frames.join(" <- "), s.count, total))
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.2} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

fn latency(o: &Observed, probe: &str) -> Option<String> {
    let h = o.hist(probe);
    Some(format!("p50 ≤{} p99 ≤{}", fmt_ns(hist_quantile(&h, 0.5)?), fmt_ns(hist_quantile(&h, 0.99)?)))
}

fn stage(
    name: impl Into<String>,
    count: u64,
    bytes: Option<u64>,
    time: Option<String>,
    label: Option<Label>,
    note: Option<String>,
) -> Stage {
    let observed = count > 0 || bytes.is_some_and(|b| b > 0);
    Stage {
        name: name.into(),
        count: observed.then_some(count),
        bytes: bytes.filter(|_| observed),
        time: time.filter(|_| observed),
        label: if observed { label.map(|l| l.name().to_string()) } else { None },
        observed,
        note: if observed { note } else { Some("not observed".into()) },
    }
}

/// Share of a process's samples whose stack has a copy frame under `under`.
fn copy_sample_share(o: &Observed, under: impl Fn(&str) -> bool) -> Option<(u64, u64)> {
    let total: u64 = o.stacks.iter().filter(|s| s.probe == "sample").map(|s| s.count).sum();
    if total == 0 {
        return None;
    }
    let hits: u64 = o
        .stacks
        .iter()
        .filter(|s| s.probe == "sample")
        .filter(|s| {
            let u = s.kernel.iter().position(|f| under(f));
            let c = s.kernel.iter().rposition(|f| is_copy_frame(f));
            matches!((u, c), (Some(u), Some(c)) if c > u)
        })
        .map(|s| s.count)
        .sum();
    Some((hits, total))
}

fn pct(hits: u64, total: u64) -> String {
    format!("{:.1}% of {} samples", hits as f64 * 100.0 / total.max(1) as f64, total)
}

/// The pipe (or FIFO) path, from producer and consumer observations.
fn pipe_stages(producer: &Process, consumer: &Process) -> Vec<Stage> {
    let (p, c) = (&producer.observed, &consumer.observed);
    let w = p.sum("pipe_write", None);
    let r = c.sum("pipe_read", None);
    let wfn = chain(p, &["offcpu", "sample", "page_alloc"], is_pipe_write_fn);
    let rfn = chain(c, &["offcpu", "sample"], is_pipe_read_fn);
    let mut v = Vec::new();
    v.push(stage(
        "write(2) -> pipe write function",
        w.calls,
        Some(w.bytes),
        latency(p, "pipe_write"),
        p.label("pipe_write"),
        wfn.clone().map(|c| format!("chain seen: {c}")),
    ));
    let share = copy_sample_share(p, is_pipe_write_fn);
    v.push(stage(
        "  copy user -> kernel (into pipe buffer pages)",
        w.calls,
        Some(w.bytes),
        None,
        p.label("pipe_write"),
        Some(match share {
            Some((h, t)) => format!("one copy per byte written; copy frames under the write: {} (sampled)", pct(h, t)),
            None => "one copy per byte written; no samples".into(),
        }),
    ));
    // Counted in the kernel against the channel while the write was in flight.
    let buf = p
        .events
        .iter()
        .filter(|e| e.probe == "page_alloc" && e.channel.is_some())
        .fold((0, 0), |(c, b), e| (c + e.calls, b + e.bytes));
    v.push(stage(
        "  pipe buffer pages allocated",
        buf.0,
        Some(buf.1),
        None,
        Some(Label::Exact),
        Some("kmem:mm_page_alloc while the pipe write was in flight".into()),
    ));
    let b = p.sum("blocked", Some("pipe_write"));
    v.push(stage(
        "  writer blocked: pipe full",
        b.calls,
        None,
        Some(format!("total {}", fmt_ns(b.time_ns))),
        p.label("blocked"),
        Some("voluntary switches while a pipe write was in flight".into()),
    ));
    let woke_reader =
        c.events.iter().filter(|o| o.probe == "wakeup" && o.waker == Some(producer.pid)).map(|o| o.calls).sum::<u64>();
    v.push(stage("  reader woken by the writer", woke_reader, None, None, Some(Label::Exact), None));
    v.push(stage(
        "read(2) -> pipe read function",
        r.calls,
        Some(r.bytes),
        latency(c, "pipe_read"),
        c.label("pipe_read"),
        rfn.map(|c| format!("chain seen: {c}")),
    ));
    let share = copy_sample_share(c, is_pipe_read_fn);
    v.push(stage(
        "  copy kernel -> user",
        r.calls,
        Some(r.bytes),
        None,
        c.label("pipe_read"),
        Some(match share {
            Some((h, t)) => format!("one copy per byte read; copy frames under the read: {} (sampled)", pct(h, t)),
            None => "one copy per byte read; no samples".into(),
        }),
    ));
    let s = c.sum("splice_out", None);
    if s.calls > 0 {
        v.push(stage(
            "splice(2) out of the pipe (pages move, no copy to user)",
            s.calls,
            Some(s.bytes),
            latency(c, "splice_out"),
            c.label("splice_out"),
            None,
        ));
    }
    let b = c.sum("blocked", Some("pipe_read"));
    let bs = c.sum("blocked", Some("splice_out"));
    v.push(stage(
        "  reader blocked: pipe empty",
        b.calls + bs.calls,
        None,
        Some(format!("total {}", fmt_ns(b.time_ns + bs.time_ns))),
        c.label("blocked"),
        Some("voluntary switches while a pipe read (or splice) was in flight".into()),
    ));
    let woke_writer =
        p.events.iter().filter(|o| o.probe == "wakeup" && o.waker == Some(consumer.pid)).map(|o| o.calls).sum::<u64>();
    v.push(stage("  writer woken by the reader", woke_writer, None, None, Some(Label::Exact), None));
    v
}

fn shm_stages(producer: &Process, consumer: &Process) -> Vec<Stage> {
    let (p, c) = (&producer.observed, &consumer.observed);
    let both = |probe: &str| (p.sum(probe, None), c.sum(probe, None));
    let mut v = Vec::new();
    let (po, co) = both("shm_open");
    let (pt, ct) = both("shm_ftruncate");
    let (pm, cm) = both("shm_mmap");
    let setup = po.calls + co.calls + pt.calls + ct.calls + pm.calls + cm.calls;
    v.push(stage(
        "set-up: openat /dev/shm, ftruncate, mmap",
        setup,
        Some(pm.bytes + cm.bytes),
        None,
        p.label("shm_mmap").or(c.label("shm_mmap")),
        Some(format!(
            "producer {} openat, {} ftruncate, {} mmap; consumer {} openat, {} ftruncate, {} mmap (bytes = length mapped)",
            po.calls, pt.calls, pm.calls, co.calls, ct.calls, cm.calls
        )),
    ));
    // First touch: faults in the shm mapping (function tier: handle_mm_fault; else the fault tracepoints).
    let faults = |o: &Observed| {
        let f = o.sum("mm_fault", Some("shm"));
        if f.calls > 0 {
            f.calls
        } else {
            o.sum("fault_user", Some("shm")).calls + o.sum("fault_kernel", Some("shm")).calls
        }
    };
    let (pf, cf) = (faults(p), faults(c));
    let fault_label = p.label("mm_fault").or(p.label("fault_user")).or(c.label("fault_user"));
    let fault_chain = chain(p, &["page_alloc"], |f| f.starts_with("shmem_"))
        .or_else(|| chain(c, &["page_alloc"], |f| f.starts_with("shmem_")));
    let shmem_pages: u64 =
        [p, c].iter().map(|o| count_time(stacks_with(o, "page_alloc", |f| f.starts_with("shmem_"))).0).sum();
    let zeroing = [p, c].iter().any(|o| stacks_with(o, "sample", is_clear_frame).next().is_some());
    v.push(stage(
        "first touch: page faults in the shm mapping",
        pf + cf,
        None,
        latency(p, "mm_fault"),
        fault_label,
        Some(format!(
            "producer {pf}, consumer {cf} (the consumer's faults map up to 16 pages each: fault-around); \
             shmem pages allocated: {shmem_pages}{}{}",
            fault_chain.map(|c| format!("; path seen: {c}")).unwrap_or_default(),
            if zeroing { "; page zeroing seen in samples" } else { "" }
        )),
    ));
    let copies = p.sum("pipe_write", None).bytes + c.sum("pipe_read", None).bytes;
    v.push(Stage {
        name: "steady state: kernel copies".into(),
        count: Some(0),
        bytes: Some(copies),
        time: None,
        label: Some(Label::Derived.name().into()),
        observed: true,
        note: Some("bytes copied through the kernel = pipe/FIFO read and write bytes of these processes; the ring is written and read in place".into()),
    });
    let (pw, cw) = both("futex_wait");
    let (pk, ck) = both("futex_wake");
    let mut wait_h = p.hist("futex_wait");
    for (i, x) in c.hist("futex_wait").into_iter().enumerate() {
        if i < wait_h.len() {
            wait_h[i] += x;
        } else {
            wait_h.push(x);
        }
    }
    let wait_lat = match (hist_quantile(&wait_h, 0.5), hist_quantile(&wait_h, 0.99)) {
        (Some(a), Some(b)) => Some(format!("wait p50 ≤{} p99 ≤{}", fmt_ns(a), fmt_ns(b))),
        _ => None,
    };
    let lbl = p.label("futex_wait").or(c.label("futex_wait")).or(p.label("futex_wake"));
    v.push(stage(
        "steady state: futex_wait on the ring words",
        pw.calls + cw.calls,
        None,
        wait_lat,
        lbl,
        Some(format!(
            "slept and woken {}, EAGAIN {}, timed out {}, interrupted {} (producer {} / consumer {})",
            pw.zero + cw.zero,
            pw.eagain + cw.eagain,
            pw.etimedout + cw.etimedout,
            pw.eintr + cw.eintr,
            pw.calls,
            cw.calls
        )),
    ));
    v.push(stage(
        "steady state: futex_wake on the ring words",
        pk.calls + ck.calls,
        None,
        None,
        lbl,
        Some(format!("waiters woken {} (producer {} calls / consumer {})", pk.bytes + ck.bytes, pk.calls, ck.calls)),
    ));
    let (pu, cu) = both("shm_munmap");
    let (pl, cl) = both("shm_unlink");
    v.push(stage(
        "teardown: munmap, shm_unlink",
        pu.calls + cu.calls + pl.calls + cl.calls,
        None,
        None,
        p.label("shm_unlink").or(c.label("shm_unlink")),
        Some(format!(
            "munmap {} + {}, unlink {} + {} (exit unmaps implicitly)",
            pu.calls, cu.calls, pl.calls, cl.calls
        )),
    ));
    v
}

fn hottest_stages(procs: &[&Process]) -> Vec<Stage> {
    procs
        .iter()
        .filter_map(|pr| {
            let (path, n, total) = hottest(&pr.observed)?;
            Some(Stage {
                name: format!("hottest kernel path of the {} (sampled)", pr.role),
                count: Some(n),
                bytes: None,
                time: None,
                label: Some(Label::Sampled.name().into()),
                observed: true,
                note: Some(format!("{} · {}", path, pct(n, total))),
            })
        })
        .collect()
}

/// Builds the path and metrics of one run.
pub fn build(transport: &str, processes: &[Process], elapsed_ns: u64) -> PathModel {
    // attach/trace: one end may be outside the targets (an external peer, with no events).
    let external =
        |role: &str| Process { pid: 0, role: role.into(), observed: Default::default(), witness: None, exit: None };
    let (ep, ec) = (external("producer"), external("consumer"));
    let p = processes.iter().find(|p| p.role == "producer").unwrap_or(&ep);
    let c = processes.iter().find(|p| p.role == "consumer").unwrap_or(&ec);
    if p.pid == 0 && c.pid == 0 {
        return PathModel::default();
    }
    let mut stages = if transport.starts_with("shm") { shm_stages(p, c) } else { pipe_stages(p, c) };
    let present: Vec<&Process> = [p, c].into_iter().filter(|x| x.pid != 0).collect();
    stages.extend(hottest_stages(&present));
    PathModel { stages, metrics: metrics(processes, c, elapsed_ns) }
}

fn metrics(all: &[Process], consumer: &Process, elapsed_ns: u64) -> Metrics {
    // The consumer's verified bytes; a splicing consumer cannot verify, so its byte count;
    // a process ipctrace did not start has no witness: the bytes observed leaving the pipe.
    let payload = match &consumer.witness {
        Some(w) => w.verified_bytes.unwrap_or(w.bytes),
        None => consumer.observed.sum("pipe_read", None).bytes + consumer.observed.sum("splice_out", None).bytes,
    };
    let mib = (payload as f64 / (1u64 << 20) as f64).max(f64::MIN_POSITIVE);
    let sum =
        |probe: &str, sub: Option<&str>| all.iter().map(|p| p.observed.sum(probe, sub)).fold(0, |a, s| a + s.calls);
    let copies: u64 =
        all.iter().map(|p| p.observed.sum("pipe_write", None).bytes + p.observed.sum("pipe_read", None).bytes).sum();
    let copies_label = all
        .iter()
        .find_map(|p| p.observed.label("pipe_write").or(p.observed.label("pipe_read")))
        .map_or("derived".to_string(), |l| l.name().to_string());
    let syscalls = [
        "pipe_write",
        "pipe_read",
        "splice_out",
        "splice_in",
        "vmsplice",
        "futex_wait",
        "futex_wake",
        "shm_open",
        "shm_ftruncate",
        "shm_mmap",
        "shm_munmap",
        "shm_unlink",
    ]
    .iter()
    .map(|p| sum(p, None))
    .sum::<u64>();
    let faults = {
        let f = sum("mm_fault", None);
        if f > 0 { f } else { sum("fault_user", None) + sum("fault_kernel", None) }
    };
    let samples: u64 =
        all.iter().flat_map(|p| &p.observed.stacks).filter(|s| s.probe == "sample").map(|s| s.count).sum();
    let ksamples: u64 = all
        .iter()
        .flat_map(|p| &p.observed.stacks)
        .filter(|s| s.probe == "sample" && !s.kernel.is_empty())
        .map(|s| s.count)
        .sum();
    let (ut, st) = all
        .iter()
        .filter_map(|p| p.witness.as_ref())
        .fold((0, 0), |(u, s), w| (u + w.rusage_run.utime_us, s + w.rusage_run.stime_us));
    Metrics {
        payload_bytes: payload,
        kernel_copies_per_byte: if payload > 0 { copies as f64 / payload as f64 } else { 0.0 },
        copies_label,
        syscalls_per_mib: syscalls as f64 / mib,
        faults_per_mib: faults as f64 / mib,
        context_switches_per_mib: sum("sched_out", None) as f64 / mib,
        wakeups_per_mib: sum("wakeup", None) as f64 / mib,
        futex_waits_per_mib: sum("futex_wait", None) as f64 / mib,
        kernel_cpu_share: (samples > 0).then(|| ksamples as f64 / samples as f64),
        kernel_cpu_share_witness: (ut + st > 0).then(|| st as f64 / (ut + st) as f64),
        throughput_bytes_per_s: if elapsed_ns > 0 { payload as f64 / (elapsed_ns as f64 / 1e9) } else { 0.0 },
    }
}

/// A one- or two-sentence verdict computed from the runs' metrics.
pub fn verdict(runs: &[(&str, &Metrics)]) -> Option<String> {
    let pipe = runs.iter().find(|(t, _)| *t == "pipe" || *t == "fifo")?;
    let shm = runs
        .iter()
        .filter(|(t, _)| t.starts_with("shm"))
        .max_by(|a, b| a.1.throughput_bytes_per_s.total_cmp(&b.1.throughput_bytes_per_s))?;
    let ratio = shm.1.throughput_bytes_per_s / pipe.1.throughput_bytes_per_s.max(1.0);
    let faster = if ratio >= 1.05 {
        format!("{} moved the payload {ratio:.1}x faster than the {}", shm.0, pipe.0)
    } else if ratio <= 0.95 {
        format!("the {} was {:.1}x faster than {}", pipe.0, 1.0 / ratio, shm.0)
    } else {
        format!("{} and the {} ran at about the same speed", shm.0, pipe.0)
    };
    Some(format!(
        "{faster}: the {} copied each byte {:.1} times through the kernel and made {:.0} syscalls per MiB, \
         {} copied {:.1} times and made {:.0} (futex waits {:.0}/MiB, faults {:.0}/MiB).",
        pipe.0,
        pipe.1.kernel_copies_per_byte,
        pipe.1.syscalls_per_mib,
        shm.0,
        shm.1.kernel_copies_per_byte,
        shm.1.syscalls_per_mib,
        shm.1.futex_waits_per_mib,
        shm.1.faults_per_mib
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_families() {
        for f in [
            "_copy_from_iter",
            "copy_page_to_iter",
            "copy_user_enhanced_fast_string",
            "rep_movs_alternative",
            "__memcpy",
        ] {
            assert!(is_copy_frame(f), "{f}");
        }
        assert!(!is_copy_frame("anon_pipe_write"));
        assert!(is_clear_frame("clear_page_erms"));
    }

    #[test]
    fn stage_without_events_says_not_observed() {
        let s = stage("x", 0, Some(0), Some("t".into()), Some(Label::Exact), Some("n".into()));
        assert!(!s.observed);
        assert_eq!(s.note.as_deref(), Some("not observed"));
        assert_eq!(s.label, None);
    }
}
