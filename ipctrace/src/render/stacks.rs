//! Sampled stacks out of a report: folded lines (`transport;role;frame;...;leaf count`, the
//! input format of flame graph tools) and an SVG flame graph drawn by inferno.

use anyhow::{Context, Result};

use crate::model::Report;

/// One folded line per distinct sampled stack of every target.
pub fn folded(r: &Report) -> Vec<String> {
    // Samples that differ only in their (unsymbolized) user stack fold into one line.
    let mut lines: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for run in &r.runs {
        for p in &run.processes {
            for s in p.observed.stacks.iter().filter(|s| s.probe == "sample") {
                let mut frames = vec![run.transport.clone(), format!("{} {}", p.role, p.pid)];
                if s.kernel.is_empty() {
                    frames.push("[user]".into());
                } else {
                    if s.user {
                        frames.push("[user]".into());
                    }
                    frames.extend(s.kernel.iter().cloned());
                }
                *lines.entry(frames.join(";")).or_default() += s.count;
            }
        }
    }
    lines.into_iter().map(|(k, n)| format!("{k} {n}")).collect()
}

pub fn write_folded(r: &Report, path: &std::path::Path) -> Result<()> {
    let mut text = folded(r).join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn write_flamegraph(r: &Report, path: &std::path::Path) -> Result<()> {
    let lines = folded(r);
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = format!("ipctrace · kernel {} · cpu-clock samples of the targets", r.kernel);
    opt.count_name = "samples".into();
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if lines.is_empty() {
        anyhow::bail!("no stack samples in this report (sampling disabled or nothing ran): no flame graph to draw");
    }
    inferno::flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), std::io::BufWriter::new(f))
        .with_context(|| format!("drawing {}", path.display()))
}
