//! Sampled stacks out of a report: folded lines (`transport;role;frame;...;leaf count`, the
//! input format of flame graph tools) and an SVG flame graph drawn by inferno.

use anyhow::{Context, Result};

use crate::model::Report;

/// One folded line per distinct sampled stack of every target.
pub fn folded(r: &Report) -> Vec<String> {
    // Samples that differ only in their (unsymbolized) user stack fold into one line.
    let mut lines: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut add = |mut frames: Vec<String>, s: &crate::model::StackCount| {
        if s.kernel.is_empty() {
            frames.push("[user]".into());
        } else {
            if s.user {
                frames.push("[user]".into());
            }
            frames.extend(s.kernel.iter().cloned());
        }
        *lines.entry(frames.join(";")).or_default() += s.count;
    };
    for run in &r.runs {
        // A process at both ends of a channel is one process: its samples once.
        for p in crate::path::distinct(&run.processes) {
            for s in p.observed.stacks_of(ipctrace_common::ProbeId::Sample) {
                add(vec![run.transport.clone(), format!("{} {}", p.role, p.pid)], s);
            }
        }
    }
    // attach/trace: what each process did outside any channel's calls.
    for p in r.overview.iter().flat_map(|o| o.processes.iter()) {
        for s in p.own_stacks.iter().filter(|s| s.probe == ipctrace_common::ProbeId::Sample.name()) {
            add(vec!["(own time)".into(), format!("{} {}", p.comm, p.pid)], s);
        }
    }
    lines.into_iter().map(|(k, n)| format!("{k} {n}")).collect()
}

/// The folded lines as one text.
pub fn folded_text(r: &Report) -> String {
    let mut text = folded(r).join("\n");
    text.push('\n');
    text
}

/// An SVG flame graph of the sampled stacks; a report without samples gets a small SVG that
/// says so (the report itself is still printed).
pub fn flamegraph_svg(r: &Report) -> Result<Vec<u8>> {
    let lines = folded(r);
    if lines.is_empty() {
        return Ok(br#"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="40"><text x="10" y="25" font-family="sans-serif" font-size="14">ipctrace: no stack samples in this report (nothing ran long enough to be sampled)</text></svg>
"#
        .to_vec());
    }
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = format!("ipctrace · kernel {} · cpu-clock samples of the targets", r.kernel);
    opt.count_name = "samples".into();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out)
        .context("drawing the flame graph")?;
    Ok(out)
}
