//! The terminal report: a header saying how things were measured, then per run the
//! reconstructed path (stage table), call trees and observed-against-witness checks, then the
//! comparison with its verdict, a sweep, and loss. Also the `ipctrace probes` table.

use std::fmt::Write;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use workloads::size::format_size;

use super::{
    View,
    fmt::{self, group},
    overview, trees,
};
use crate::model::{
    Report, SweepPoint, TransportRun,
    path::{METRICS, Unit},
    probe::Choice,
};

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    // Wrap to the terminal only when there is a real one (a serial console reports width 0).
    let wide = std::io::IsTerminal::is_terminal(&std::io::stdout()) && t.width().is_some_and(|w| w >= 80);
    t.set_content_arrangement(if wide { ContentArrangement::Dynamic } else { ContentArrangement::Disabled });
    t
}

fn rate(r: &TransportRun) -> String {
    fmt::metric(Unit::Rate, r.path.metrics.throughput_bytes_per_s)
}

/// `id`: the channel's # in the overview (attach/trace).
fn header(out: &mut String, r: &TransportRun, id: Option<u32>) {
    let secs = fmt::secs(r.elapsed_ns);
    let id = id.map(|i| format!("#{i} ")).unwrap_or_default();
    if r.total == 0 {
        // attach/trace: a channel, not a planned transfer.
        let _ = writeln!(out, "\n{id}{}  {} · {secs} · {}", r.transport.to_uppercase(), r.description, rate(r));
        return;
    }
    let _ = writeln!(
        out,
        "\n{id}{}  {} · {} in {} messages · {secs} · {}",
        r.transport.to_uppercase(),
        r.description,
        format_size(r.total),
        format_size(r.msg_size),
        rate(r)
    );
    let others: Vec<String> = r
        .channels
        .iter()
        .filter(|c| r.data_channel_ino.is_some_and(|d| d != c.ino))
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
            dim(Cell::new(format!("{}{}", "  ".repeat(s.depth as usize), s.name))),
            dim(Cell::new(s.count.map_or("-".into(), group))),
            dim(Cell::new(s.bytes.map_or("-".into(), group))),
            dim(Cell::new(s.time.as_ref().map_or("-".into(), fmt::time))),
            dim(Cell::new(fmt::label(s))),
            dim(Cell::new(s.note.clone().unwrap_or_default())),
        ]);
    }
    let _ = writeln!(out, "{t}");
}

/// The merged kernel call trees, compact: branches under 5% pruned, chains joined; at most
/// `max_lines` lines each.
/// The blocked-time call tree's title: how its stacks were sampled.
static BLOCKED_TREE_TITLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "call tree of the blocked time (sampled: every unexplained block, 1 in {} of the others)",
        ipctrace_common::BLOCK_STACK_EVERY
    )
});

fn call_trees(out: &mut String, r: &TransportRun, max_lines: usize) {
    for (title, roots, unit) in [
        ("call tree of the CPU samples (sampled)", &r.call_trees.cpu, "samples"),
        (BLOCKED_TREE_TITLE.as_str(), &r.call_trees.blocked, "blocks"),
    ] {
        let lines = trees::render(roots, 0.05, unit);
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title}:");
        for l in lines.iter().take(max_lines) {
            let _ = writeln!(out, "    {l}");
        }
        if lines.len() > max_lines {
            let _ = writeln!(out, "    ... {} more lines in --format json / --flamegraph", lines.len() - max_lines);
        }
    }
}

fn agreement(out: &mut String, r: &TransportRun) {
    if !r.agreement.is_empty() {
        let mut t = table();
        t.set_header(vec!["process", "figure", "observed (BPF)", "witness (process)", "agree"]);
        for a in &r.agreement {
            let tol = match (a.tolerance_pct, a.tolerance_abs) {
                (0.0, 0) => "exact".to_string(),
                (p, 0) => format!("±{p}%"),
                (p, n) => format!("±{p}% or ±{n}"),
            };
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
    }
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
        if r.total == 0 {
            continue;
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

fn comparison(out: &mut String, r: &Report) {
    let Some(c) = &r.comparison else { return };
    let mut t = table();
    let mut head = vec![if c.columns.len() > 1 { "COMPARISON" } else { "SUMMARY" }.to_string()];
    head.extend(c.columns.iter().cloned());
    head.push("how measured".into());
    t.set_header(head);
    for row in &c.rows {
        let mut v = vec![row.name.clone()];
        v.extend(row.values.iter().map(|x| fmt::metric(row.unit, *x)));
        v.push(row.how.clone());
        t.add_row(v);
    }
    let _ = writeln!(out, "\n{t}");
    if let Some(v) = &r.verdict {
        let _ = writeln!(out, "verdict: {v}");
    }
}

/// The sweep: per message size and transport, throughput and path metrics; where one overtakes.
fn sweep(out: &mut String, r: &Report, points: &[SweepPoint]) {
    let cols = [
        "throughput",
        "kernel_copies_per_byte",
        "syscalls_per_mib",
        "context_switches_per_mib",
        "futex_waits_per_mib",
        "faults_per_mib",
    ];
    let defs: Vec<_> = cols.iter().filter_map(|id| METRICS.iter().find(|m| m.id == *id)).collect();
    let mut t = table();
    let mut head = vec!["msg size".to_string(), "transport".to_string()];
    head.extend(defs.iter().map(|d| d.name.to_string()));
    t.set_header(head);
    for p in points {
        if let Some(why) = &p.not_run {
            let mut row = vec![format_size(p.msg_size), p.transport.clone(), why.clone()];
            row.extend(defs.iter().skip(1).map(|_| "-".to_string()));
            t.add_row(row);
            continue;
        }
        let mut row = vec![format_size(p.msg_size), format!("{}{}", p.transport, if p.ok { "" } else { " (FAILED)" })];
        row.extend(defs.iter().map(|d| fmt::metric(d.unit, (d.get)(&p.metrics))));
        t.add_row(row);
    }
    let _ = writeln!(out, "\nSWEEP (traced, time-bounded points)\n{t}");
    let over: Vec<String> = r
        .crossovers
        .iter()
        .map(|c| format!("{} overtakes {} from {} messages", c.transport, c.overtakes, format_size(c.from_msg_size)))
        .collect();
    if !over.is_empty() {
        let _ = writeln!(out, "{}", over.join("; "));
    }
}

/// The overview of attach/trace: the process tree and the channel table.
fn overview_section(out: &mut String, r: &Report, v: &View) {
    let Some(o) = &r.overview else { return };
    let detailed: Vec<&crate::model::overview::ChannelRow> =
        v.detailed(r).into_iter().filter_map(|i| o.channels.get(i)).collect();
    let _ = writeln!(out, "\nPROCESSES");
    for l in overview::tree_lines(o, &detailed, v.all) {
        let _ = writeln!(out, "  {l}");
    }
    let ct = overview::channel_table(o, v.listed(r));
    let _ = writeln!(out, "\nCHANNELS (busiest first; bytes as the kernel saw them)");
    if ct.rows.is_empty() {
        let _ = writeln!(out, "  none observed");
    } else {
        let mut t = table();
        t.set_header(ct.header);
        for row in ct.rows {
            t.add_row(row);
        }
        let _ = writeln!(out, "{t}");
    }
    if let Some(rest) = ct.rest {
        let _ = writeln!(out, "  {rest}");
    }
    for l in overview::note_lines(o) {
        let _ = writeln!(out, "  {l}");
    }
}

pub fn render(r: &Report, v: &View) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ipctrace {} · kernel {} · tiers: {}", r.ipctrace_version, r.kernel, r.tier);
    if r.partial {
        let _ = writeln!(out, "PARTIAL REPORT: {} before the workloads finished", r.ended_by.why());
    }
    if let Some(e) = &r.command_exit {
        let how = match (&e.signal, e.exit_code) {
            (Some(s), _) => format!("was killed by {s}"),
            (None, Some(c)) => format!("exited with code {c}"),
            _ => "ended".into(),
        };
        let by = if e.stopped_by_ipctrace { " (ipctrace stopped it)" } else { "" };
        let _ = writeln!(out, "command (pid {}) {how}{by}", e.pid);
    }
    overview_section(&mut out, r, v);
    let detailed = v.detailed(r);
    // attach/trace sections are many: shorter call trees unless everything was asked for.
    let tree_lines = if r.overview.is_some() && !v.all { 6 } else { 14 };
    for i in detailed {
        let run = &r.runs[i];
        header(&mut out, run, r.overview.as_ref().and_then(|o| o.channels.get(i)).map(|row| row.id));
        if let Some(d) = &run.path.diagram {
            for l in super::diagram::text_block(d) {
                let _ = writeln!(out, "{l}");
            }
        }
        stages(&mut out, run);
        call_trees(&mut out, run, tree_lines);
        agreement(&mut out, run);
    }
    comparison(&mut out, r);
    if let Some(points) = &r.sweep {
        sweep(&mut out, r, points);
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
    let mut detail: Vec<String> =
        r.loss.counters.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
    if r.loss.unknown_ids > 0 {
        detail.push(format!("unknown probe ids {}", r.loss.unknown_ids));
    }
    for (prog, n) in &r.loss.skipped_runs {
        detail.push(format!("{prog} runs the kernel skipped {n}"));
    }
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
        } else if r.loss.unknown_ids > 0 {
            "aggregates with ids this ipctrace does not know were left out"
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
pub fn probes(choices: &[Choice], kernel: &str, tier: &str) -> String {
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
    format!("ipctrace {} · kernel {kernel} · tiers: {tier}\n{t}\n", env!("CARGO_PKG_VERSION"))
}
