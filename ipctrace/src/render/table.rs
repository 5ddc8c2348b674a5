//! The terminal report: a header saying how things were measured, then per transport run the
//! reconstructed path (stage table) and observed-against-witness checks, then the comparison
//! across transports with its verdict, then loss. Also the `ipctrace probes` table.

use std::fmt::Write;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use workloads::size::{format_rate, format_size};

use crate::{
    model::{Report, SweepPoint, TransportRun},
    path::{self, Metrics},
    probes::Choice,
};

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    // Wrap to the terminal only when there is a real one (a serial console reports width 0).
    let wide = std::io::IsTerminal::is_terminal(&std::io::stdout()) && t.width().is_some_and(|w| w >= 80);
    t.set_content_arrangement(if wide { ContentArrangement::Dynamic } else { ContentArrangement::Disabled });
    t
}

/// 1234567 -> "1,234,567"
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn header(out: &mut String, r: &TransportRun) {
    let secs = r.elapsed_ns as f64 / 1e9;
    let pid = |role: &str| r.processes.iter().find(|p| p.role == role).map_or("?".into(), |p| p.pid.to_string());
    let channel = match (r.channels.first(), &r.channel_path) {
        (Some(c), _) if c.kind != "shm" => format!("{} ino {}", c.kind.replace('_', " "), c.ino),
        (_, Some(path)) if r.transport.starts_with("shm") => format!("/dev/shm{path}"),
        (Some(c), _) => format!("{} ino {}", c.kind, c.ino),
        _ => "no channel observed".into(),
    };
    if let Some(d) = &r.description {
        let rate = if r.path.stages.is_empty() {
            String::new()
        } else {
            format!(" · {}", format_rate(r.path.metrics.payload_bytes, secs))
        };
        let _ = writeln!(out, "\n{}  {d} · {:.2} s{rate}", r.transport.to_uppercase(), secs);
        return;
    }
    let _ = writeln!(
        out,
        "\n{}  {channel} · producer {} -> consumer {} · {} in {} messages · {:.2} s · {}",
        r.transport.to_uppercase(),
        pid("producer"),
        pid("consumer"),
        format_size(r.total),
        format_size(r.msg_size),
        secs,
        format_rate(r.path.metrics.payload_bytes, secs)
    );
    let others: Vec<String> = r
        .channels
        .iter()
        .filter(|c| r.data_channel_ino.is_some_and(|d| d != c.ino) && c.kind != "shm")
        .map(|c| format!("{} ino {}", c.kind, c.ino))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "  other channels used by the targets: {}", others.join(", "));
    }
}

fn stages(out: &mut String, r: &TransportRun) {
    if r.path.stages.is_empty() {
        return;
    }
    let mut t = table();
    t.set_header(vec!["stage (this run)", "count", "bytes", "time", "label", "detail"]);
    for s in &r.path.stages {
        let dim = |c: Cell| if s.observed { c } else { c.fg(Color::DarkGrey) };
        t.add_row(vec![
            dim(Cell::new(&s.name)),
            dim(Cell::new(s.count.map_or("-".into(), group))),
            dim(Cell::new(s.bytes.map_or("-".into(), group))),
            dim(Cell::new(s.time.clone().unwrap_or_else(|| "-".into()))),
            dim(Cell::new(s.label.clone().unwrap_or_else(|| "-".into()))),
            dim(Cell::new(s.note.clone().unwrap_or_default())),
        ]);
    }
    let _ = writeln!(out, "{t}");
}

/// The merged kernel call trees, compact: branches under 5% pruned, chains joined.
fn trees(out: &mut String, r: &TransportRun) {
    for (title, roots, unit) in [
        ("call tree of the CPU samples (sampled)", &r.call_trees.cpu, "samples"),
        (
            "call tree of the blocked time (sampled: every unexplained block, 1 in 16 of the others)",
            &r.call_trees.blocked,
            "blocks",
        ),
    ] {
        let lines = crate::calltree::render(roots, 0.05, unit);
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title}:");
        for l in lines.iter().take(14) {
            let _ = writeln!(out, "    {l}");
        }
        if lines.len() > 14 {
            let _ = writeln!(out, "    ... {} more lines in --format json / --flamegraph", lines.len() - 14);
        }
    }
}

fn agreement(out: &mut String, r: &TransportRun) {
    if r.agreement.is_empty() {
        return;
    }
    let mut t = table();
    t.set_header(vec!["process", "figure", "observed (BPF)", "witness (process)", "agree"]);
    for a in &r.agreement {
        let tol = if a.tolerance_pct == 0.0 { "exact".to_string() } else { format!("±{}%", a.tolerance_pct) };
        let ok = if a.agrees {
            Cell::new(format!("yes ({tol})")).fg(Color::Green)
        } else {
            Cell::new(format!("NO ({tol}, {:+})", a.observed as i128 - a.witness as i128)).fg(Color::Red)
        };
        t.add_row(vec![
            Cell::new(format!("{} {}", a.role, a.pid)),
            Cell::new(&a.figure),
            Cell::new(group(a.observed)),
            Cell::new(group(a.witness)),
            ok,
        ]);
    }
    let _ = writeln!(out, "{t}");
    for p in &r.processes {
        if let Some(v) = p.witness.as_ref().and_then(|w| w.verified_bytes) {
            let _ = writeln!(
                out,
                "  {} {} verified {} of {} bytes against the pattern",
                p.role,
                p.pid,
                group(v),
                group(r.total)
            );
        }
        match &p.exit {
            Some(e) if !e.success() => {
                let how = e.signal.map_or(format!("exit code {:?}", e.exit_code), |s| format!("signal {s}"));
                let _ = writeln!(out, "  {} {} ended abnormally ({how}); its witness may be missing", p.role, p.pid);
            }
            None => {
                let _ = writeln!(out, "  {} {} was still running when the trace stopped", p.role, p.pid);
            }
            _ => {}
        }
    }
}

fn comparison(out: &mut String, runs: &[TransportRun]) {
    // Channels that carried nothing have no metrics to compare.
    let runs: Vec<TransportRun> = runs.iter().filter(|r| !r.path.stages.is_empty()).cloned().collect();
    let runs = &runs[..];
    if runs.is_empty() {
        return;
    }
    let mut t = table();
    let mut head = vec![if runs.len() > 1 { "COMPARISON" } else { "SUMMARY" }.to_string()];
    head.extend(runs.iter().map(|r| r.transport.clone()));
    head.push("how measured".into());
    t.set_header(head);
    let row = |name: &str, f: &dyn Fn(&Metrics) -> String, how: &str| {
        let mut v = vec![name.to_string()];
        v.extend(runs.iter().map(|r| f(&r.path.metrics)));
        v.push(how.into());
        v
    };
    let label = runs.iter().map(|r| r.path.metrics.copies_label.as_str()).find(|l| !l.is_empty()).unwrap_or("derived");
    let copies_how = format!("{label} (pipe bytes in + out) / payload");
    t.add_row(row("kernel copies / payload byte", &|m| format!("{:.2}", m.kernel_copies_per_byte), &copies_how));
    t.add_row(row(
        "data-path syscalls / MiB",
        &|m| format!("{:.1}", m.syscalls_per_mib),
        "pipe, splice, futex and shm set-up calls",
    ));
    t.add_row(row("page faults / MiB", &|m| format!("{:.1}", m.faults_per_mib), "all faults of the targets"));
    t.add_row(row("context switches / MiB", &|m| format!("{:.1}", m.context_switches_per_mib), "exact (sched_switch)"));
    t.add_row(row("wake-ups / MiB", &|m| format!("{:.1}", m.wakeups_per_mib), "exact (sched_waking)"));
    t.add_row(row("futex waits / MiB", &|m| format!("{:.1}", m.futex_waits_per_mib), "on the ring words"));
    t.add_row(row(
        "CPU in kernel",
        &|m| m.kernel_cpu_share.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
        "sampled (share of cpu-clock samples in the kernel)",
    ));
    t.add_row(row(
        "CPU in kernel (getrusage)",
        &|m| m.kernel_cpu_share_witness.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
        "witness: the processes' own stime / (utime + stime)",
    ));
    t.add_row(row(
        "throughput",
        &|m| format_rate(m.payload_bytes, m.payload_bytes as f64 / m.throughput_bytes_per_s.max(1.0)),
        "payload / wall clock (gate to exit)",
    ));
    let _ = writeln!(out, "\n{t}");
    let ms: Vec<(&str, &Metrics)> = runs.iter().map(|r| (r.transport.as_str(), &r.path.metrics)).collect();
    if let Some(v) = path::verdict(&ms) {
        let _ = writeln!(out, "verdict: {v}");
    }
}

/// The sweep: per message size and transport, throughput and path metrics; where shm overtakes.
fn sweep(out: &mut String, points: &[SweepPoint]) {
    let mut t = table();
    t.set_header(vec![
        "msg size",
        "transport",
        "throughput",
        "copies/byte",
        "syscalls/MiB",
        "switches/MiB",
        "futex waits/MiB",
        "faults/MiB",
    ]);
    for p in points {
        let m = &p.metrics;
        let secs = m.payload_bytes as f64 / m.throughput_bytes_per_s.max(1.0);
        t.add_row(vec![
            format_size(p.msg_size),
            format!("{}{}", p.transport, if p.ok { "" } else { " (FAILED)" }),
            format_rate(m.payload_bytes, secs),
            format!("{:.2}", m.kernel_copies_per_byte),
            format!("{:.1}", m.syscalls_per_mib),
            format!("{:.1}", m.context_switches_per_mib),
            format!("{:.1}", m.futex_waits_per_mib),
            format!("{:.1}", m.faults_per_mib),
        ]);
    }
    let _ = writeln!(out, "\nSWEEP (traced, time-bounded points)\n{t}");
    let mut sizes: Vec<u64> = points.iter().map(|p| p.msg_size).collect();
    sizes.dedup();
    let rate = |tr: &str, s: u64| {
        points.iter().find(|p| p.transport == tr && p.msg_size == s).map(|p| p.metrics.throughput_bytes_per_s)
    };
    let over: Vec<String> = ["shm-futex", "shm-sem"]
        .iter()
        .filter_map(|shm| {
            let first =
                sizes.iter().find(|&&s| matches!((rate(shm, s), rate("pipe", s)), (Some(a), Some(b)) if a > b))?;
            Some(format!("{shm} overtakes the pipe from {} messages", format_size(*first)))
        })
        .collect();
    if !over.is_empty() {
        let _ = writeln!(out, "{}", over.join("; "));
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ipctrace {} · kernel {} · tiers: {}", r.ipctrace_version, r.kernel, r.tier);
    if r.partial {
        let _ = writeln!(out, "PARTIAL REPORT: the run was {:?} before the workloads finished", r.ended_by);
    }
    for run in &r.runs {
        header(&mut out, run);
        stages(&mut out, run);
        trees(&mut out, run);
        agreement(&mut out, run);
    }
    comparison(&mut out, &r.runs);
    if let Some(points) = &r.sweep {
        sweep(&mut out, points);
    }
    let _ = writeln!(out, "\nobserved = counted by ipctrace's BPF programs; witness = the workload's own counters.");
    let _ = writeln!(
        out,
        "labels: exact = counted where the event happens; derived = computed from tracepoint values by the rule in `ipctrace probes`; sampled = from stack samples."
    );
    let disagreements: Vec<String> = r
        .runs
        .iter()
        .flat_map(|run| {
            run.agreement
                .iter()
                .filter(|a| !a.agrees)
                .map(move |a| format!("{} {} {}", run.transport, a.role, a.figure))
        })
        .collect();
    let agree = if disagreements.is_empty() { "yes".to_string() } else { disagreements.join(", ") };
    let detail: Vec<String> =
        r.loss.counters.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
    if let Some(s) = &r.event_stream {
        let _ = writeln!(
            out,
            "event stream: {} events written to {} ({} lost: ring buffer of {} full)",
            group(s.written),
            s.file,
            group(s.lost),
            format_size(s.buffer_bytes as u64)
        );
    }
    let line = format!("events lost: {} · stacks lost: {} · witnesses agree: {agree}", r.loss.events, r.loss.stacks);
    if r.loss.total == 0 {
        let _ = writeln!(out, "{line}");
    } else {
        let why = if r.loss.events > 0 {
            "counted figures may be low"
        } else if r.loss.stacks == 0 {
            "only the --events file misses events; counts are complete"
        } else {
            "counts are complete; stack-based stages may miss those events"
        };
        let _ = writeln!(out, "WARNING: {line} ({}: {why})", detail.join(", "));
    }
    out
}

/// `ipctrace probes`: logical probe | chosen mechanism | attach point | label | why others were skipped.
pub fn probes(choices: &[Choice], tier: &str) -> String {
    let mut t = table();
    t.set_header(vec!["logical probe", "chosen", "attach points", "label", "not used, and why"]);
    for c in choices {
        let (mech, points, label) = match &c.chosen {
            Some(ch) => (ch.mechanism.name().to_string(), ch.attach_points.join("\n"), ch.label.name().to_string()),
            None => ("UNAVAILABLE".into(), "-".into(), "-".into()),
        };
        let skipped: Vec<String> = c.skipped.iter().map(|s| format!("{}: {}", s.mechanism.name(), s.reason)).collect();
        t.add_row(vec![format!("{}\n({})", c.probe, c.what), mech, points, label, skipped.join("\n")]);
    }
    format!("ipctrace {} · kernel {} · tiers: {tier}\n{t}\n", env!("CARGO_PKG_VERSION"), crate::kernel::release())
}
