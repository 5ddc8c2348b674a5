//! A self-contained HTML page of a report: per transport the reconstructed path as a diagram
//! (inline SVG), latency histograms, observed-vs-witness checks; the comparison; and, when the
//! report holds a sweep, throughput against message size. No scripts, no external resources.

use std::fmt::Write;

use workloads::size::format_size;

use super::{
    View,
    fmt::{self, group},
    overview,
};
use crate::model::{Label, Report, Stage, TransportRun, path::Unit};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn label_color(l: Option<Label>) -> &'static str {
    match l {
        Some(Label::Exact) => "#2e7d32",
        Some(Label::Derived) => "#1565c0",
        Some(Label::Sampled) => "#6a1b9a",
        None => "#9e9e9e",
    }
}

/// The path as a vertical flow of boxes; steps inside a stage (depth 1) are offset right.
fn diagram(stages: &[Stage]) -> String {
    let (w, bh, gap) = (760, 46, 14);
    let h = stages.len() * (bh + gap) + 10;
    let mut s = format!(
        r#"<svg class="chart path-diagram" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="reconstructed data path">"#
    );
    s.push_str(r##"<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="4" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>"##);
    for (i, st) in stages.iter().enumerate() {
        let x = 10 + 50 * st.depth as usize;
        let y = 5 + i * (bh + gap);
        let color = label_color(st.label);
        let fill = if st.observed { "#ffffff" } else { "#f2f2f2" };
        let dash = if st.observed { "" } else { r#" stroke-dasharray="4 3""# };
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{y}" width="{}" height="{bh}" rx="6" fill="{fill}" stroke="{color}" stroke-width="2"{dash}/>"#,
            w - x - 10
        );
        let figures = match (st.count, st.bytes) {
            (Some(c), Some(b)) if b > 0 => format!("{} calls · {} bytes", group(c), group(b)),
            (Some(c), _) => group(c),
            _ => "not observed".into(),
        };
        let label = st.label.map(|_| fmt::label(st));
        let tail = [st.time.as_ref().map(fmt::time), label].into_iter().flatten().collect::<Vec<_>>().join(" · ");
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
            x + 8,
            y + 18,
            esc(&st.name)
        );
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="12" fill="#333">{} {}</text>"##,
            x + 8,
            y + 36,
            esc(&figures),
            esc(&if tail.is_empty() { String::new() } else { format!("· {tail}") })
        );
        if i + 1 < stages.len() {
            let _ = write!(
                s,
                r##"<line x1="30" y1="{}" x2="30" y2="{}" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>"##,
                y + bh,
                y + bh + gap - 2
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A log2 latency histogram as bars.
fn histogram(title: &str, h: &[u64]) -> Option<String> {
    let max = *h.iter().max()?;
    if max == 0 {
        return None;
    }
    let first = h.iter().position(|&c| c > 0)?;
    let bars = &h[first..];
    let (bw, ch, w) = (26usize, 120usize, 40 + bars.len() * 26);
    let mut s = format!(
        r#"<figure><figcaption>{}</figcaption><svg class="chart histogram" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img" aria-label="{}">"#,
        esc(title),
        ch + 40,
        esc(title)
    );
    for (i, &c) in bars.iter().enumerate() {
        let bh = (c as f64 / max as f64 * ch as f64).round() as usize;
        let x = 20 + i * bw;
        let _ = write!(
            s,
            r##"<rect x="{x}" y="{}" width="{}" height="{bh}" fill="#1565c0"><title>{} calls in [2^{}, 2^{}) ns</title></rect>"##,
            10 + ch - bh,
            bw - 4,
            c,
            first + i,
            first + i + 1
        );
        if i % 2 == 0 {
            let ns = 1u64 << (first + i);
            let lbl = if ns >= 1_000_000 {
                format!("{}ms", ns / 1_000_000)
            } else if ns >= 1000 {
                format!("{}µs", ns / 1000)
            } else {
                format!("{ns}ns")
            };
            let _ = write!(s, r#"<text x="{x}" y="{}" font-size="9">{lbl}</text>"#, ch + 25);
        }
    }
    s.push_str("</svg></figure>");
    Some(s)
}

fn run_section(o: &mut String, r: &TransportRun, id: Option<u32>) {
    let id = id.map(|i| format!("#{i} ")).unwrap_or_default();
    let size = if r.total > 0 {
        format!(" · {} in {} messages", format_size(r.total), format_size(r.msg_size))
    } else {
        String::new()
    };
    let _ = write!(
        o,
        "<section class=\"run\"><h2>{id}{} · {}{size} · {} · {}</h2>",
        esc(&r.transport),
        esc(&r.description),
        fmt::secs(r.elapsed_ns),
        esc(&fmt::metric(Unit::Rate, r.path.metrics.throughput_bytes_per_s))
    );
    o.push_str("<h3>Reconstructed path (this run's events and stacks)</h3>");
    o.push_str(&diagram(&r.path.stages));
    o.push_str("<table><tr><th>stage</th><th>detail</th></tr>");
    for s in &r.path.stages {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(&s.name), esc(s.note.as_deref().unwrap_or("")));
    }
    o.push_str("</table><h3>Latency (log2 histograms)</h3><div class=\"hists\">");
    for h in &r.histograms {
        if let Some(svg) = histogram(&format!("{} {}: {}", h.role, h.pid, h.probe), &h.buckets) {
            o.push_str(&svg);
        }
    }
    o.push_str("</div>");
    if !r.agreement.is_empty() {
        o.push_str("<h3>Observed (BPF) against witness (the processes' own counts)</h3><table><tr><th>process</th><th>figure</th><th>observed</th><th>witness</th><th>agree</th></tr>");
        for a in &r.agreement {
            let _ = write!(
                o,
                "<tr><td>{} {}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{}\">{}</td></tr>",
                esc(&a.role),
                a.pid,
                esc(&a.figure),
                group(a.observed),
                group(a.witness),
                if a.agrees { "ok" } else { "bad" },
                if a.agrees { "yes" } else { "NO" }
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");
}

/// Throughput against message size, one line per transport (from a sweep).
fn sweep_chart(r: &Report) -> Option<String> {
    let pts = r.sweep.as_ref()?;
    if pts.is_empty() {
        return None;
    }
    let (w, h, ml, mb) = (720.0f64, 360.0f64, 60.0f64, 40.0f64);
    let xs: Vec<f64> = pts.iter().map(|p| (p.msg_size as f64).log2()).collect();
    let (xmin, xmax) =
        (xs.iter().cloned().fold(f64::MAX, f64::min), xs.iter().cloned().fold(f64::MIN, f64::max).max(xs[0] + 1.0));
    let ymax = pts.iter().filter_map(|p| p.metrics.throughput_bytes_per_s).fold(1.0, f64::max) * 1.1;
    let px = |x: f64| ml + (x - xmin) / (xmax - xmin) * (w - ml - 20.0);
    let py = |y: f64| h - mb - y / ymax * (h - mb - 20.0);
    let mut s = format!(
        r#"<svg class="chart sweep" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="throughput against message size">"#
    );
    let _ = write!(
        s,
        r##"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="#000"/><line x1="{ml}" y1="20" x2="{ml}" y2="{}" stroke="#000"/>"##,
        h - mb,
        w - 20.0,
        h - mb,
        h - mb
    );
    let _ = write!(s, r#"<text x="5" y="15" font-size="12">GiB/s (max {:.1})</text>"#, ymax / (1u64 << 30) as f64);
    let mut sizes: Vec<u64> = pts.iter().map(|p| p.msg_size).collect();
    sizes.sort();
    sizes.dedup();
    for sz in sizes {
        let x = px((sz as f64).log2());
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="11">{}</text>"#,
            x - 14.0,
            h - mb + 16.0,
            esc(&format_size(sz))
        );
    }
    let colors = ["#c62828", "#1565c0", "#2e7d32", "#6a1b9a"];
    let mut transports: Vec<&str> = pts.iter().map(|p| p.transport.as_str()).collect();
    transports.dedup();
    transports.sort();
    transports.dedup();
    for (i, t) in transports.iter().enumerate() {
        let c = colors[i % colors.len()];
        let mut line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.transport == *t)
            .filter_map(|p| Some((px((p.msg_size as f64).log2()), py(p.metrics.throughput_bytes_per_s?))))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#, path.join(" "));
        for (x, y) in &line {
            let _ = write!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{c}"/>"#);
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="12" fill="{c}">{}</text>"#,
            w - 150.0,
            30.0 + i as f64 * 16.0,
            esc(t)
        );
    }
    s.push_str("</svg>");
    Some(s)
}

/// The process tree and the channel table of attach/trace.
fn overview_section(o: &mut String, r: &Report, v: &View) {
    let Some(ov) = &r.overview else { return };
    let detailed: Vec<_> = v.detailed(r).into_iter().filter_map(|i| ov.channels.get(i)).collect();
    o.push_str("<h2>Processes</h2><pre class=\"tree\">");
    for l in overview::tree_lines(ov, &detailed, v.all) {
        let _ = writeln!(o, "{}", esc(&l));
    }
    o.push_str("</pre><h2>Channels (busiest first)</h2><table class=\"channels\"><tr>");
    let ct = overview::channel_table(ov, v.listed(r));
    for h in &ct.header {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr>");
    for row in ct.rows {
        o.push_str("<tr>");
        for c in row {
            let _ = write!(o, "<td>{}</td>", esc(&c));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    if let Some(rest) = ct.rest {
        let _ = write!(o, "<p>{}</p>", esc(&rest));
    }
    for l in overview::note_lines(ov) {
        let _ = write!(o, "<p class=\"note\">{}</p>", esc(&l));
    }
}

pub fn render(r: &Report, v: &View) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ipctrace report</title><style>");
    o.push_str("body{font-family:sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}td.n{text-align:right}td.ok{color:#2e7d32}td.bad{color:#c62828;font-weight:bold}.hists{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px}.legend span{margin-right:14px}.diagrams{display:flex;flex-wrap:wrap;gap:16px;width:max-content;max-width:calc(100vw - 48px)}svg.diagram{border:1px solid #ddd;background:#fff}");
    o.push_str("</style></head><body>");
    let _ = write!(
        o,
        "<h1>ipctrace {} · kernel {}</h1><p>Tiers: {}</p>",
        esc(&r.ipctrace_version),
        esc(&r.kernel),
        esc(&r.tier)
    );
    o.push_str("<p class=\"legend\">Labels: <span style=\"color:#2e7d32\">■ exact</span><span style=\"color:#1565c0\">■ derived</span><span style=\"color:#6a1b9a\">■ sampled</span><span style=\"color:#9e9e9e\">□ not observed</span></p>");
    if r.partial {
        let _ =
            write!(o, "<p><strong>Partial report</strong>: {} before the workloads finished.</p>", r.ended_by.why());
    }
    overview_section(&mut o, r, v);
    // The data paths side by side, one picture per transport (per channel shown in full).
    let pictures: Vec<String> = v
        .detailed(r)
        .into_iter()
        .filter_map(|i| {
            let run = &r.runs[i];
            let id = r.overview.as_ref().and_then(|ov| ov.channels.get(i)).map(|row| format!("#{} ", row.id));
            let title = format!("{}{}", id.unwrap_or_default(), run.transport);
            run.path.diagram.as_ref().map(|d| super::diagram::svg(d, &title))
        })
        .collect();
    if !pictures.is_empty() {
        o.push_str("<h2>Data paths (this run)</h2><div class=\"diagrams\">");
        for p in pictures {
            o.push_str(&p);
        }
        o.push_str("</div>");
    }
    for i in v.detailed(r) {
        run_section(&mut o, &r.runs[i], r.overview.as_ref().and_then(|ov| ov.channels.get(i)).map(|row| row.id));
    }
    if let Some(c) = &r.comparison {
        o.push_str("<h2>Comparison</h2><table><tr><th>metric</th>");
        for col in &c.columns {
            let _ = write!(o, "<th>{}</th>", esc(col));
        }
        o.push_str("<th>how measured</th></tr>");
        for row in &c.rows {
            let _ = write!(o, "<tr><td>{}</td>", esc(&row.name));
            for v in &row.values {
                let _ = write!(o, "<td class=\"n\">{}</td>", esc(&fmt::metric(row.unit, *v)));
            }
            let _ = write!(o, "<td>{}</td></tr>", esc(&row.how));
        }
        o.push_str("</table>");
        if let Some(v) = &r.verdict {
            let _ = write!(o, "<p><strong>Verdict:</strong> {}</p>", esc(v));
        }
    }
    o.push_str("<h2>Throughput against message size</h2>");
    match sweep_chart(r) {
        Some(c) => {
            o.push_str(&c);
            for c in &r.crossovers {
                let _ = write!(
                    o,
                    "<p>{} overtakes {} from {} messages.</p>",
                    esc(&c.transport),
                    esc(&c.overtakes),
                    esc(&format_size(c.from_msg_size))
                );
            }
        }
        None => o.push_str("<p>This report holds no sweep: run <code>ipctrace run --sweep</code> for this chart.</p>"),
    }
    let _ = writeln!(o, "<p>Events lost: {} · stacks lost: {}</p></body></html>", r.loss.events, r.loss.stacks);
    o
}
