//! The run's event stream kept for `--perfetto` (never serialized: the report's JSON holds
//! the aggregates, the trace file the events).

use std::collections::BTreeMap;

use ipctrace_common::Event;

/// The run's events as the stream delivered them, and what it could not keep.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub events: Vec<Event>,
    /// Events the ring buffer had no room for (counted in the aggregates only).
    pub lost: u64,
    /// Events delivered but not kept in memory (beyond the session's cap).
    pub not_kept: u64,
    /// Process names by pid.
    pub names: BTreeMap<u32, String>,
}
