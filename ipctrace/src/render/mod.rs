//! Renders a `model::Report`: terminal tables (default), JSON or Markdown; and the probe
//! table. Never computes figures the model does not hold; only formats and compares them.

pub mod html;
pub mod markdown;
pub mod stacks;
pub mod table;

use clap::ValueEnum;

use crate::{model::Report, probes::Choice};

/// The comparison rows the Markdown and HTML renderers share (the terminal table has more).
type MetricRow = (&'static str, fn(&crate::path::Metrics) -> String);
pub const METRIC_ROWS: [MetricRow; 6] = [
    ("kernel copies / payload byte", |m| format!("{:.2}", m.kernel_copies_per_byte)),
    ("data-path syscalls / MiB", |m| format!("{:.1}", m.syscalls_per_mib)),
    ("page faults / MiB", |m| format!("{:.1}", m.faults_per_mib)),
    ("context switches / MiB", |m| format!("{:.1}", m.context_switches_per_mib)),
    ("futex waits / MiB", |m| format!("{:.1}", m.futex_waits_per_mib)),
    ("throughput (MiB/s)", |m| format!("{:.0}", m.throughput_bytes_per_s / (1u64 << 20) as f64)),
];

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

pub fn render(r: &Report, f: Format) -> String {
    match f {
        Format::Table => table::render(r),
        Format::Json => serde_json::to_string_pretty(r).expect("report serializes") + "\n",
        Format::Markdown => markdown::render(r),
    }
}

/// Writes everything `o` asks for besides stdout, then prints the report.
pub fn emit(r: &Report, o: &crate::cli::OutputArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(p) = &o.save {
        std::fs::write(p, serde_json::to_string_pretty(r)? + "\n")
            .with_context(|| format!("saving {}", p.display()))?;
    }
    if let Some(p) = &o.html {
        std::fs::write(p, html::render(r)).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &o.folded {
        stacks::write_folded(r, p)?;
    }
    if let Some(p) = &o.flamegraph {
        stacks::write_flamegraph(r, p)?;
    }
    print!("{}", render(r, o.format));
    Ok(())
}

/// `ipctrace probes` output.
pub fn probes(choices: &[Choice], tier: &str, f: Format) -> String {
    match f {
        Format::Table | Format::Markdown => table::probes(choices, tier),
        Format::Json => {
            let v = serde_json::json!({
                "schema_version": crate::model::SCHEMA_VERSION,
                "kernel": crate::kernel::release(),
                "tier": tier,
                "probes": choices,
            });
            serde_json::to_string_pretty(&v).expect("probes serialize") + "\n"
        }
    }
}
