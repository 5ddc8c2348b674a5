//! Renders a `model::Report`: a terminal table (default) or JSON. Never computes figures the
//! model does not hold; only formats and compares them.

pub mod table;

use clap::ValueEnum;

use crate::model::Report;

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
