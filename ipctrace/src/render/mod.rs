//! Renders a `model::Report`: terminal tables (default), JSON or Markdown; and the probe
//! table. Never computes figures the model does not hold; only formats and compares them.

pub mod table;

use clap::ValueEnum;

use crate::{model::Report, probes::Choice};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    #[default]
    Table,
    /// One JSON document (see docs/json-schema.md).
    Json,
}

pub fn render(r: &Report, f: Format) -> String {
    match f {
        Format::Table => table::render(r),
        Format::Json => serde_json::to_string_pretty(r).expect("report serializes") + "\n",
    }
}

/// `ipctrace probes` output.
pub fn probes(choices: &[Choice], tier: &str, f: Format) -> String {
    match f {
        Format::Table => table::probes(choices, tier),
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
