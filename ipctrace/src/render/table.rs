//! The terminal report: a header saying how things were measured, then per transport run a
//! comfy-table of observed (BPF) beside witness (workload) figures, then loss.

use std::fmt::Write;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use workloads::size::{format_rate, format_size};

use crate::model::{Label, Process, Report, TransportRun};

fn label(l: Label) -> &'static str {
    match l {
        Label::Exact => "exact",
        Label::Derived => "derived",
        Label::Sampled => "sampled",
    }
}

fn agree(observed: u64, witness: Option<u64>) -> Cell {
    match witness {
        None => Cell::new("-"),
        Some(w) if w == observed => Cell::new("yes").fg(Color::Green),
        Some(w) => Cell::new(format!("NO ({:+})", observed as i128 - w as i128)).fg(Color::Red),
    }
}

fn process_rows(t: &mut Table, p: &Process) {
    let (op, wcalls, wbytes) = match p.role.as_str() {
        "producer" => ("write", p.witness.as_ref().map(|w| w.calls), p.witness.as_ref().map(|w| w.bytes)),
        _ => ("read", p.witness.as_ref().map(|w| w.calls), p.witness.as_ref().map(|w| w.bytes)),
    };
    let (calls, bytes) = p.observed_op(op);
    let lbl = p.observed.iter().find(|o| o.op == op).map(|o| label(o.label)).unwrap_or("not observed");
    let time_ns: u64 = p.observed.iter().filter(|o| o.op == op).map(|o| o.time_ns).sum();
    let mean = if calls > 0 { format!("{:.1} µs", time_ns as f64 / calls as f64 / 1000.0) } else { "-".into() };
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    t.add_row(vec![
        Cell::new(format!("{} {}", p.role, p.pid)),
        Cell::new(format!("{op}(2)")),
        Cell::new(calls),
        Cell::new(bytes),
        Cell::new(opt(wcalls)),
        Cell::new(opt(wbytes)),
        agree(bytes, wbytes),
        Cell::new(mean),
        Cell::new(lbl),
    ]);
}

fn run_section(out: &mut String, r: &TransportRun) {
    let secs = r.elapsed_ns as f64 / 1e9;
    let producer = r.processes.iter().find(|p| p.role == "producer").map(|p| p.pid);
    let consumer = r.processes.iter().find(|p| p.role == "consumer").map(|p| p.pid);
    let _ = writeln!(
        out,
        "\n{}  {} in {} messages · {:.2} s · {} (wall clock, gate to exit)",
        r.transport.to_uppercase(),
        format_size(r.total),
        format_size(r.msg_size),
        secs,
        format_rate(r.total, secs)
    );
    for c in &r.channels {
        let data = if Some(c.ino) == r.data_channel_ino { "data channel" } else { "other channel" };
        let _ = writeln!(
            out,
            "  {} ino {} ({data}) · producer {} -> consumer {}",
            c.kind.replace('_', " "),
            c.ino,
            producer.map_or("?".into(), |p| p.to_string()),
            consumer.map_or("?".into(), |p| p.to_string()),
        );
    }
    if r.channels.is_empty() {
        let _ = writeln!(out, "  no pipe traffic observed");
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(vec![
        "process",
        "call",
        "calls observed",
        "bytes observed",
        "calls witness",
        "bytes witness",
        "bytes agree",
        "mean latency",
        "label",
    ]);
    for p in &r.processes {
        process_rows(&mut t, p);
    }
    let _ = writeln!(out, "{t}");
    for p in &r.processes {
        if let Some(v) = p.witness.as_ref().and_then(|w| w.verified_bytes) {
            let _ = writeln!(out, "  {} {} verified {} of {} bytes against the pattern", p.role, p.pid, v, r.total);
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

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ =
        writeln!(out, "ipctrace {} · kernel {} · tier: {} ({})", r.ipctrace_version, r.kernel, r.tier.name, r.tier.why);
    if r.partial {
        let _ = writeln!(out, "PARTIAL REPORT: the run was {:?} before the workloads finished", r.ended_by);
    }
    for run in &r.runs {
        run_section(&mut out, run);
    }
    let _ = writeln!(out, "\nobserved = counted by ipctrace's BPF programs; witness = the workload's own counters.");
    let _ = writeln!(out, "derived: {}", crate::model::RULE_SYSCALL_BYTES);
    if r.loss.total == 0 {
        let _ = writeln!(out, "events lost: 0");
    } else {
        let detail: Vec<String> =
            r.loss.counters.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "WARNING: events lost: {} ({}); observed figures are low by at least that many calls",
            r.loss.total,
            detail.join(", ")
        );
    }
    out
}
