//! How numbers are written in every format: grouped counts, durations, stage times, metric
//! values by unit (a missing value is `-`, never inf or NaN), labels.

use workloads::size::format_rate;

use crate::model::{Stage, StageTime, path::Unit};

/// 1234567 -> "1,234,567"
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ns(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

pub fn time(t: &StageTime) -> String {
    match *t {
        StageTime::Latency { p50_ns, p99_ns } => format!("p50 ≤{} p99 ≤{}", ns(p50_ns), ns(p99_ns)),
        StageTime::Total { ns: n } => format!("total {}", ns(n)),
    }
}

/// `derived`, `derived + sampled`, or `-` when not observed.
pub fn label(s: &Stage) -> String {
    match (s.label, s.also) {
        (Some(l), Some(a)) => format!("{} + {}", l.name(), a.name()),
        (Some(l), None) => l.name().into(),
        _ => "-".into(),
    }
}

/// A metric value written in its unit.
pub fn metric(unit: Unit, v: Option<f64>) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else { return "-".into() };
    match unit {
        Unit::Ratio => format!("{v:.2}"),
        Unit::PerMib => format!("{v:.1}"),
        Unit::Share => format!("{:.0}%", v * 100.0),
        Unit::Rate => format_rate(v.round() as u64, 1.0),
    }
}

/// Seconds of a duration in ns, two decimals.
pub fn secs(ns: u64) -> String {
    format!("{:.2} s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_infinite_values_are_dashes() {
        for u in [Unit::Ratio, Unit::PerMib, Unit::Share, Unit::Rate] {
            assert_eq!(metric(u, None), "-");
            assert_eq!(metric(u, Some(f64::INFINITY)), "-");
            assert_eq!(metric(u, Some(f64::NAN)), "-");
        }
        assert_eq!(metric(Unit::Ratio, Some(2.0)), "2.00");
        assert_eq!(metric(Unit::Share, Some(0.256)), "26%");
        assert_eq!(group(1234567), "1,234,567");
    }
}
