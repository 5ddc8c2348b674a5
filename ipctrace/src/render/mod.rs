//! Renders a finished `model::Report`: terminal tables (default), JSON, Markdown, HTML,
//! folded stacks and flame graphs; and the probe table. Functions of the report (and the
//! output options) alone: they compute nothing the model does not hold and never read the
//! live kernel.

pub mod diagram;
pub mod fmt;
pub mod html;
pub mod markdown;
pub mod overview;
pub mod stacks;
pub mod table;
pub mod trees;

use clap::ValueEnum;

use crate::{
    exit::{Code, fail},
    model::{Report, probe::Choice},
    outputs::{OutFile, Outputs},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    #[default]
    Table,
    /// One JSON document (see docs/json-schema.md).
    Json,
    /// Markdown tables.
    Markdown,
}

/// What the reader asked to see of an attach/trace report: the busiest `top` channels in full,
/// or the chosen ones, or everything (`all`). JSON always holds everything.
#[derive(Clone, Debug)]
pub struct View {
    pub top: usize,
    pub channels: Vec<u64>,
    pub all: bool,
}

impl Default for View {
    fn default() -> Self {
        Self { top: 5, channels: Vec::new(), all: false }
    }
}

/// Rows of the channel table listed before the rest is summed in one line.
pub const LISTED_ROWS: usize = 20;

impl View {
    pub fn of(o: &crate::cli::OutputArgs) -> Self {
        Self { top: o.top, channels: o.channels.clone(), all: o.all }
    }

    /// Indexes of the runs to show in full.
    pub fn detailed(&self, r: &Report) -> Vec<usize> {
        let Some(o) = &r.overview else { return (0..r.runs.len()).collect() };
        if self.all {
            return (0..r.runs.len()).collect();
        }
        if !self.channels.is_empty() {
            return o
                .channels
                .iter()
                .enumerate()
                .filter(|(_, row)| self.channels.iter().any(|&c| c == row.id as u64 || c == row.ino))
                .map(|(i, _)| i)
                .collect();
        }
        // The busiest channels that carried something.
        (0..r.runs.len()).filter(|&i| r.runs[i].path.stages.iter().any(|s| s.observed)).take(self.top).collect()
    }

    /// The `--channel` values that name no channel of report `r` (by # or inode).
    pub fn unknown_channels(&self, r: &Report) -> Vec<u64> {
        let rows = r.overview.as_ref().map(|o| o.channels.as_slice()).unwrap_or_default();
        self.channels.iter().copied().filter(|&c| !rows.iter().any(|row| c == row.id as u64 || c == row.ino)).collect()
    }

    /// How many rows of the channel table to list.
    pub fn listed(&self, r: &Report) -> usize {
        let n = r.overview.as_ref().map_or(0, |o| o.channels.len());
        if self.all { n } else { n.min(LISTED_ROWS.max(self.top)) }
    }
}

pub fn render(r: &Report, f: Format, v: &View) -> String {
    match f {
        Format::Table => table::render(r, v),
        Format::Json => serde_json::to_string_pretty(r).expect("report serializes") + "\n",
        Format::Markdown => markdown::render(r, v),
    }
}

/// Writes every requested file, then prints the report on stdout. The report is printed even
/// when a file fails (exit 1 afterwards, naming the file); a closed stdout ends quietly with
/// 141, as if by SIGPIPE, after the files are written.
pub fn emit(r: &Report, o: &crate::cli::OutputArgs, out: &mut Outputs) -> anyhow::Result<Code> {
    let view = View::of(o);
    let unknown = view.unknown_channels(r);
    if !view.channels.is_empty() && r.overview.is_none() {
        crate::warn("ipctrace: --channel: this report has no channel table (a run shows each transport in full)");
    } else if !unknown.is_empty() {
        let n = r.overview.as_ref().map_or(0, |o| o.channels.len());
        let ids: Vec<String> = unknown.iter().map(|c| c.to_string()).collect();
        crate::warn(&format!(
            "ipctrace: --channel {}: no such channel in this report ({}; a channel is its # or its inode)",
            ids.join(", "),
            match n {
                0 => "it has none".to_string(),
                1 => "it has #1".to_string(),
                n => format!("it has #1-#{n}"),
            }
        ));
    }
    let mut failed: Vec<String> = Vec::new();
    let mut put = |f: &mut Option<OutFile>, data: &dyn Fn() -> anyhow::Result<Vec<u8>>| {
        if let Some(f) = f.as_mut()
            && let Err(e) = data().and_then(|d| Ok(f.write_all(&d)?))
        {
            failed.push(format!("writing {} failed: {e:#}", f.path.display()));
        }
    };
    put(&mut out.save, &|| Ok((serde_json::to_string_pretty(r)? + "\n").into_bytes()));
    put(&mut out.html, &|| Ok(html::render(r, &view).into_bytes()));
    put(&mut out.folded, &|| Ok(stacks::folded_text(r).into_bytes()));
    put(&mut out.flamegraph, &|| stacks::flamegraph_svg(r));
    put(&mut out.perfetto, &|| Ok(r.timeline.as_ref().map(crate::perfetto::encode).unwrap_or_default()));
    if let Code::ClosedStdout = print_stdout(&render(r, o.format, &view))? {
        return Ok(Code::ClosedStdout);
    }
    if failed.is_empty() {
        return Ok(Code::Ok);
    }
    for f in &failed[1..] {
        crate::warn(&format!("ipctrace: {f}"));
    }
    Err(fail(Code::Runtime, failed[0].clone()))
}

/// Writes `text` to stdout. A reader that went away (EPIPE) is `Code::ClosedStdout`; any other
/// write error is a runtime failure with one line.
pub fn print_stdout(text: &str) -> anyhow::Result<Code> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(Code::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Code::ClosedStdout),
        Err(e) => Err(fail(Code::Runtime, format!("writing the report to stdout failed: {e}"))),
    }
}

/// `ipctrace probes` output for kernel `kernel`.
pub fn probes(choices: &[Choice], kernel: &str, tier: &str, f: Format) -> String {
    match f {
        Format::Table | Format::Markdown => table::probes(choices, kernel, tier),
        Format::Json => {
            let v = serde_json::json!({
                "schema_version": crate::model::SCHEMA_VERSION,
                "kernel": kernel,
                "tier": tier,
                "probes": choices,
            });
            serde_json::to_string_pretty(&v).expect("probes serialize") + "\n"
        }
    }
}
