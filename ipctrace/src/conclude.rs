//! Puts a channel's report section together (path, histograms, agreement, call trees) and
//! finishes a report before anyone renders it: the comparison across runs, the verdict, and
//! a sweep's crossovers. Renderers only format what this leaves in the `Report`.

use crate::{
    agree, calltree,
    model::{
        ChannelId, Comparison, Crossover, Histogram, Report, TransportRun,
        overview::Overview,
        path::{ComparisonRow, METRICS},
    },
    model::{Metrics, Process},
    path,
    transport::Family,
};

/// What a channel section is made from.
pub struct Section {
    pub transport: String,
    pub description: String,
    pub total: u64,
    pub msg_size: u64,
    pub data_channel_ino: Option<u64>,
    pub channel_path: Option<String>,
    pub elapsed_ns: u64,
    pub channels: Vec<ChannelId>,
    pub processes: Vec<Process>,
    pub scope: path::Scope,
}

/// One channel's section of the report, reconstructed by its family.
pub fn section(f: &dyn Family, s: Section) -> TransportRun {
    let histograms = s
        .processes
        .iter()
        .flat_map(|p| {
            f.histograms().iter().filter_map(move |probe| {
                let buckets = p.observed.hist(*probe);
                buckets.iter().any(|&c| c > 0).then(|| Histogram {
                    pid: p.pid,
                    role: p.role.clone(),
                    probe: probe.name().into(),
                    buckets,
                })
            })
        })
        .collect();
    TransportRun {
        path: path::build(f, &s.processes, s.elapsed_ns, s.scope),
        agreement: s.processes.iter().flat_map(|p| agree::compare(f, p)).collect(),
        call_trees: calltree::build(&s.processes),
        histograms,
        transport: s.transport,
        description: s.description,
        total: s.total,
        msg_size: s.msg_size,
        data_channel_ino: s.data_channel_ino,
        channel_path: s.channel_path,
        elapsed_ns: s.elapsed_ns,
        channels: s.channels,
        processes: s.processes,
    }
}

/// Channels an attach/trace comparison compares, at most (the busiest).
pub const COMPARED_CHANNELS: usize = 5;

/// The comparison rows over the runs that carried something and have a figure: every
/// transport of a `run`, the busiest channels of attach/trace (never one column per channel).
fn comparison(r: &Report) -> Option<Comparison> {
    let mut cols: Vec<(String, &TransportRun)> = match &r.overview {
        None => r.runs.iter().map(|x| (x.transport.clone(), x)).collect(),
        Some(o) => o.channels.iter().zip(&r.runs).map(|(row, x)| (format!("#{} {}", row.id, x.transport), x)).collect(),
    };
    // A column with no figure at all (a channel the kernel sees no payload of, such as a
    // semaphore's segment) says nothing: it leaves its place to one that does.
    cols.retain(|(_, x)| !x.path.stages.is_empty() && METRICS.iter().any(|m| (m.get)(&x.path.metrics).is_some()));
    if r.overview.is_some() {
        cols.truncate(COMPARED_CHANNELS);
    }
    if cols.is_empty() {
        return None;
    }
    let (names, cols): (Vec<String>, Vec<&TransportRun>) = cols.into_iter().unzip();
    let label = cols.iter().map(|r| r.path.metrics.copies_label).next().unwrap_or_default();
    Some(Comparison {
        columns: names,
        rows: METRICS
            .iter()
            .map(|m| ComparisonRow {
                id: m.id.into(),
                name: m.name.into(),
                how: match (&r.overview, m.how_channel) {
                    (Some(_), Some(h)) => h,
                    _ => m.how,
                }
                .replace("{label}", label.name()),
                unit: m.unit,
                values: cols.iter().map(|r| (m.get)(&r.path.metrics)).collect(),
            })
            .collect(),
    })
}

/// What a transport's bytes cost, in a few words.
fn cost(name: &str, m: &Metrics) -> String {
    let mut s = match m.kernel_copies_per_byte {
        Some(c) => format!("{name} copied each byte {c:.1} times through the kernel"),
        None => format!("{name} moved no payload the kernel could count"),
    };
    if let Some(sys) = m.syscalls_per_mib {
        s.push_str(&format!(" and made {sys:.0} data-path syscalls per MiB"));
    }
    let extra: Vec<String> = [("futex waits", m.futex_waits_per_mib), ("faults", m.faults_per_mib)]
        .into_iter()
        .filter_map(|(n, v)| v.filter(|v| *v >= 0.5).map(|v| format!("{n} {v:.0}/MiB")))
        .collect();
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

/// Ranks the runs by throughput and says what each paid: one or two sentences. None with
/// fewer than two runs that moved a payload.
fn verdict(runs: &[TransportRun]) -> Option<String> {
    let mut ranked: Vec<(&str, &Metrics, f64)> = runs
        .iter()
        .filter_map(|r| r.path.metrics.throughput_bytes_per_s.map(|t| (r.transport.as_str(), &r.path.metrics, t)))
        .collect();
    if ranked.len() < 2 {
        return None;
    }
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2));
    let (fast, slow) = (ranked[0], ranked[ranked.len() - 1]);
    let ratio = fast.2 / slow.2;
    let head = if ratio >= 1.05 {
        format!("{} moved the payload {ratio:.1}x faster than {}", fast.0, slow.0)
    } else {
        format!("{} and {} ran at about the same speed", fast.0, slow.0)
    };
    let costs: Vec<String> = ranked.iter().map(|(n, m, _)| cost(n, m)).collect();
    Some(format!("{head}: {}.", costs.join("; ")))
}

/// attach/trace: what the busiest channels cost (at most two), one sentence. Channels carry
/// different payloads between different processes, so their speeds are not ranked.
fn channel_verdict(o: &Overview, runs: &[TransportRun]) -> Option<String> {
    let end = |e: &Option<crate::model::overview::Endpoint>| {
        e.as_ref()
            .map_or("?".to_string(), |e| if e.pid == 0 { e.comm.clone() } else { format!("{} {}", e.comm, e.pid) })
    };
    let parts: Vec<String> = o
        .channels
        .iter()
        .zip(runs)
        .filter(|(_, r)| r.path.metrics.payload_bytes > 0)
        .take(2)
        .map(|(row, r)| {
            let name = format!("#{} {} {} -> {}", row.id, row.kind, end(&row.writer), end(&row.reader));
            let m = &r.path.metrics;
            format!("{} ({} B): {}", name, crate::render::fmt::group(m.payload_bytes), cost("", m).trim_start())
        })
        .collect();
    match parts.len() {
        0 => None,
        1 => Some(format!("busiest channel: {}.", parts[0])),
        _ => Some(format!(
            "busiest channels: {}; {} (their payloads differ, so their speeds are not compared).",
            parts[0], parts[1]
        )),
    }
}

/// From which message size each transport moves more than the first one listed.
fn crossovers(points: &[crate::model::SweepPoint]) -> Vec<Crossover> {
    let Some(base) = points.first().map(|p| p.transport.clone()) else { return Vec::new() };
    let mut sizes: Vec<u64> = points.iter().map(|p| p.msg_size).collect();
    sizes.sort();
    sizes.dedup();
    let rate = |t: &str, s: u64| {
        points.iter().find(|p| p.transport == t && p.msg_size == s).and_then(|p| p.metrics.throughput_bytes_per_s)
    };
    let mut transports: Vec<&str> = Vec::new();
    for p in points {
        if p.transport != base && !transports.contains(&p.transport.as_str()) {
            transports.push(&p.transport);
        }
    }
    transports
        .into_iter()
        .filter_map(|t| {
            let from = sizes.iter().find(|&&s| matches!((rate(t, s), rate(&base, s)), (Some(a), Some(b)) if a > b))?;
            Some(Crossover { transport: t.into(), overtakes: base.clone(), from_msg_size: *from })
        })
        .collect()
}

/// Fills in the report's conclusions.
pub fn finish(r: &mut Report) {
    r.comparison = comparison(r);
    r.verdict = match &r.overview {
        Some(o) => channel_verdict(o, &r.runs),
        None => verdict(&r.runs),
    };
    r.crossovers = r.sweep.as_deref().map(crossovers).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SweepPoint;

    fn pt(t: &str, size: u64, rate: f64) -> SweepPoint {
        let metrics = Metrics { throughput_bytes_per_s: Some(rate), ..Default::default() };
        SweepPoint { transport: t.into(), msg_size: size, ok: true, not_run: None, metrics }
    }

    #[test]
    fn crossover_from_the_first_size_that_is_faster() {
        let pts = [pt("pipe", 64, 10.0), pt("shm-futex", 64, 5.0), pt("pipe", 4096, 10.0), pt("shm-futex", 4096, 20.0)];
        assert_eq!(
            crossovers(&pts),
            vec![Crossover { transport: "shm-futex".into(), overtakes: "pipe".into(), from_msg_size: 4096 }]
        );
    }

    #[test]
    fn no_verdict_without_two_payloads() {
        assert_eq!(verdict(&[]), None);
    }

    #[test]
    fn costs_never_print_missing_figures() {
        let s = cost("pipe", &Metrics::default());
        assert_eq!(s, "pipe moved no payload the kernel could count");
    }
}
