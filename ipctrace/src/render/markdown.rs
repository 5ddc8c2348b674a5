//! The report as Markdown (for issues, notes, READMEs): the same sections as the terminal
//! table, as GitHub-flavoured Markdown tables.

use std::fmt::Write;

use workloads::size::format_size;

use super::{
    View,
    fmt::{self, group},
    overview,
};
use crate::model::Report;

fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The process tree and the channel table of attach/trace.
fn overview_section(o: &mut String, r: &Report, v: &View) {
    let Some(ov) = &r.overview else { return };
    let detailed: Vec<_> = v.detailed(r).into_iter().filter_map(|i| ov.channels.get(i)).collect();
    let _ = writeln!(o, "## Processes\n\n```");
    for l in overview::tree_lines(ov, &detailed, v.all) {
        let _ = writeln!(o, "{l}");
    }
    let _ = writeln!(o, "```\n\n## Channels (busiest first)\n");
    let ct = overview::channel_table(ov, v.listed(r));
    let _ = writeln!(o, "| {} |", ct.header.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(ct.header.len()));
    for row in ct.rows {
        let cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    if let Some(rest) = ct.rest {
        let _ = writeln!(o, "\n{rest}");
    }
    for l in overview::note_lines(ov) {
        let _ = writeln!(o, "\n{}", esc(&l));
    }
    let _ = writeln!(o);
}

pub fn render(r: &Report, v: &View) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# ipctrace {} · kernel {}\n", r.ipctrace_version, r.kernel);
    let _ = writeln!(o, "Tiers: {}\n", esc(&r.tier));
    if r.partial {
        let _ = writeln!(o, "**Partial report**: {} before the workloads finished.\n", r.ended_by.why());
    }
    overview_section(&mut o, r, v);
    for i in v.detailed(r) {
        let run = &r.runs[i];
        let id = r
            .overview
            .as_ref()
            .and_then(|ov| ov.channels.get(i))
            .map(|row| format!("#{} ", row.id))
            .unwrap_or_default();
        let size = if run.total > 0 {
            format!(" · {} in {} messages", format_size(run.total), format_size(run.msg_size))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "## {id}{} · {}{size} · {} · {}\n",
            run.transport,
            esc(&run.description),
            fmt::secs(run.elapsed_ns),
            fmt::metric(crate::model::path::Unit::Rate, run.path.metrics.throughput_bytes_per_s)
        );
        if let Some(d) = &run.path.diagram {
            let _ = writeln!(o, "```\n{}\n```\n", super::diagram::text_block(d).join("\n"));
        }
        let _ =
            writeln!(o, "| stage (this run) | count | bytes | time | label | detail |\n|---|---:|---:|---|---|---|");
        for s in &run.path.stages {
            let _ = writeln!(
                o,
                "| {}{} | {} | {} | {} | {} | {} |",
                "&nbsp;&nbsp;".repeat(s.depth as usize),
                esc(&s.name),
                s.count.map_or("-".into(), group),
                s.bytes.map_or("-".into(), group),
                esc(&s.time.as_ref().map_or("-".into(), fmt::time)),
                fmt::label(s),
                esc(s.note.as_deref().unwrap_or(""))
            );
        }
        if !run.agreement.is_empty() {
            let _ = writeln!(
                o,
                "\n| process | figure | observed (BPF) | witness (process) | agree |\n|---|---|---:|---:|---|"
            );
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
        }
        let _ = writeln!(o);
    }
    if let Some(c) = &r.comparison {
        let _ = write!(o, "## Comparison\n\n| metric |");
        for col in &c.columns {
            let _ = write!(o, " {} |", esc(col));
        }
        let _ = writeln!(o, " how measured |\n|---|{}---|", "---:|".repeat(c.columns.len()));
        for row in &c.rows {
            let _ = write!(o, "| {} |", row.name);
            for v in &row.values {
                let _ = write!(o, " {} |", fmt::metric(row.unit, *v));
            }
            let _ = writeln!(o, " {} |", esc(&row.how));
        }
        if let Some(v) = &r.verdict {
            let _ = writeln!(o, "\n**Verdict:** {}", esc(v));
        }
    }
    for c in &r.crossovers {
        let _ =
            writeln!(o, "\n{} overtakes {} from {} messages.", c.transport, c.overtakes, format_size(c.from_msg_size));
    }
    let _ = writeln!(o, "\nEvents lost: {} · stacks lost: {}", r.loss.events, r.loss.stacks);
    o
}
