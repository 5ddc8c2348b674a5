//! The report as Markdown (for issues, notes, READMEs): the same sections as the terminal
//! table, as GitHub-flavoured Markdown tables.

use std::fmt::Write;

use workloads::size::{format_rate, format_size};

use super::table::group;
use crate::model::Report;

fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# ipctrace {} · kernel {}\n", r.ipctrace_version, r.kernel);
    let _ = writeln!(o, "Tiers: {}\n", esc(&r.tier));
    if r.partial {
        let _ = writeln!(o, "**Partial report**: the run was {:?} before the workloads finished.\n", r.ended_by);
    }
    for run in &r.runs {
        let secs = run.elapsed_ns as f64 / 1e9;
        let _ = writeln!(
            o,
            "## {} · {} in {} messages · {:.2} s · {}\n",
            run.transport,
            format_size(run.total),
            format_size(run.msg_size),
            secs,
            format_rate(run.path.metrics.payload_bytes, secs)
        );
        let _ =
            writeln!(o, "| stage (this run) | count | bytes | time | label | detail |\n|---|---:|---:|---|---|---|");
        for s in &run.path.stages {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                esc(s.name.trim()),
                s.count.map_or("-".into(), group),
                s.bytes.map_or("-".into(), group),
                esc(s.time.as_deref().unwrap_or("-")),
                s.label.as_deref().unwrap_or("-"),
                esc(s.note.as_deref().unwrap_or(""))
            );
        }
        let _ =
            writeln!(o, "\n| process | figure | observed (BPF) | witness (process) | agree |\n|---|---|---:|---:|---|");
        for a in &run.agreement {
            let _ = writeln!(
                o,
                "| {} {} | {} | {} | {} | {} |",
                a.role,
                a.pid,
                esc(&a.figure),
                group(a.observed),
                group(a.witness),
                if a.agrees { "yes" } else { "**NO**" }
            );
        }
        let _ = writeln!(o);
    }
    if !r.runs.is_empty() {
        let _ = write!(o, "## Comparison\n\n| metric |");
        for run in &r.runs {
            let _ = write!(o, " {} |", run.transport);
        }
        let _ = writeln!(o, "\n|---|{}", "---:|".repeat(r.runs.len()));
        for (name, f) in super::METRIC_ROWS {
            let _ = write!(o, "| {name} |");
            for run in &r.runs {
                let _ = write!(o, " {} |", f(&run.path.metrics));
            }
            let _ = writeln!(o);
        }
        let ms: Vec<_> = r.runs.iter().map(|x| (x.transport.as_str(), &x.path.metrics)).collect();
        if let Some(v) = crate::path::verdict(&ms) {
            let _ = writeln!(o, "\n**Verdict:** {v}");
        }
    }
    let _ = writeln!(o, "\nEvents lost: {} · stacks lost: {}", r.loss.events, r.loss.stacks);
    o
}
