//! Draws a transport's `Diagram`: a compact text block for the terminal and Markdown (plain
//! characters, at most 100 columns), and a self-contained SVG for the HTML page — the
//! processes above the user/kernel line, the kernel object below, one arrow per figure with
//! its number and label, a figure not observed drawn grey and dashed. Every `<g class="arrow">`
//! carries its id, kind, value and label as data attributes, so a browser test can read them.

use std::fmt::Write;

use workloads::size::format_size;

use super::fmt::{group, ns};
use crate::model::diagram::{Arrow, ArrowKind, Diagram, End, Unit};

/// The number of an arrow in its unit, or "not observed".
pub fn value(a: &Arrow) -> String {
    match a.value {
        None => "not observed".into(),
        Some(v) => match a.unit {
            Unit::Bytes => format_size(v),
            Unit::Count => format!("{}×", group(v)),
            Unit::Ns => ns(v),
            Unit::PerMille => format!("{:.1}%", v as f64 / 10.0),
        },
    }
}

fn with_label(a: &Arrow) -> String {
    let per = match (a.per_byte, a.kind) {
        (Some(p), ArrowKind::Copy) if p.is_finite() => format!(", {p:.2} copy/B"),
        (Some(p), ArrowKind::Move) if p.is_finite() => format!(", {p:.2} B moved/B"),
        _ => String::new(),
    };
    match a.label {
        Some(l) => format!("{}{per} ({})", value(a), l.name()),
        None => format!("{}{per}", value(a)),
    }
}

fn end_name(d: &Diagram, e: End) -> &str {
    match e {
        End::Process(i) => d.processes.get(i).map_or("?", String::as_str),
        End::Object => "kernel",
    }
}

fn verb(k: ArrowKind) -> &'static str {
    match k {
        ArrowKind::Copy => "copy",
        ArrowKind::Move => "move",
        ArrowKind::Wake => "wake",
        ArrowKind::Block => "sleep",
        ArrowKind::Fault => "fault",
        ArrowKind::Sampled => "cpu",
        ArrowKind::Notify => "notify",
    }
}

const COLUMNS: usize = 100;

fn clip(s: String) -> String {
    if s.chars().count() <= COLUMNS {
        return s;
    }
    let mut t: String = s.chars().take(COLUMNS - 1).collect();
    t.push('…');
    t
}

fn pad(s: &str, w: usize) -> String {
    format!("{s:<w$}", w = w.max(s.chars().count() + 1))
}

/// The arrow between process `i` and the object that carries data or touches its pages.
fn vertical(d: &Diagram, i: usize) -> Option<&Arrow> {
    d.arrows.iter().find(|a| {
        matches!(a.kind, ArrowKind::Copy | ArrowKind::Move | ArrowKind::Fault)
            && (a.from == End::Process(i) || a.to == End::Process(i))
    })
}

/// The picture as a few lines of text: the processes above, the object below, the data
/// arrows between them; then the sleeps and wake-ups, the sampled share and the note.
pub fn text_block(d: &Diagram) -> Vec<String> {
    let name = |i: usize| d.processes.get(i).cloned().unwrap_or_default();
    let arrow = |i: usize| {
        vertical(d, i).map_or(String::new(), |a| {
            let head = if a.to == End::Process(i) { "^" } else { "v" };
            format!("{head} {} {}", verb(a.kind), with_label(a))
        })
    };
    let (a0, a1) = (arrow(0), arrow(1));
    let w =
        [name(0).chars().count(), a0.chars().count(), d.object.chars().count() + 10].into_iter().max().unwrap_or(0) + 4;
    let mut out = vec![
        format!("  user    {}{}", pad(&name(0), w), name(1)),
        format!("          {}{}", pad(&a0, w), a1),
        format!("  kernel  '--> [{}] {}'", d.object, "-".repeat(w.saturating_sub(d.object.chars().count() + 8))),
    ];
    // A segment's further mappers: one line each, their arrow beside the name.
    for i in 2..d.processes.len() {
        out.push(format!("  also    {}  {}", name(i), arrow(i)));
    }
    let list = |kind: ArrowKind| -> Vec<String> {
        d.arrows.iter().filter(|a| a.kind == kind).map(|a| format!("{} {}", a.caption, with_label(a))).collect()
    };
    let wakes = list(ArrowKind::Wake);
    let notes = list(ArrowKind::Notify);
    let sleeps: Vec<String> = d
        .arrows
        .iter()
        .filter(|a| a.kind == ArrowKind::Block)
        .map(|a| format!("{} {}", end_name(d, a.from).split(' ').next().unwrap_or(""), with_label(a)))
        .collect();
    if !sleeps.is_empty() {
        out.push(format!("  sleep: {}", sleeps.join(", ")));
    }
    if !wakes.is_empty() {
        out.push(format!("  wake:  {}", wakes.join(", ")));
    }
    if !notes.is_empty() {
        out.push(format!("  notify: {}", notes.join(", ")));
    }
    for a in d.arrows.iter().filter(|a| a.kind == ArrowKind::Sampled) {
        out.push(format!("  cpu: {} {}", a.caption, with_label(a)));
    }
    if let Some(n) = &d.note {
        out.push(format!("  {n}"));
    }
    out.into_iter().map(|l| clip(l.trim_end().to_string())).collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(a: &Arrow) -> &'static str {
    if !a.observed() {
        return "#9e9e9e";
    }
    match a.kind {
        ArrowKind::Copy => "#c62828",
        ArrowKind::Move => "#1565c0",
        ArrowKind::Wake => "#2e7d32",
        ArrowKind::Block => "#6d4c41",
        ArrowKind::Fault => "#ef6c00",
        ArrowKind::Sampled => "#6a1b9a",
        ArrowKind::Notify => "#00838f",
    }
}

const W: f64 = 720.0;
const BOX_W: f64 = 170.0;
const BOX_H: f64 = 40.0;
const PROC_Y: f64 = 70.0;
const LINE_Y: f64 = 170.0;
const OBJ_Y: f64 = 300.0;

/// The SVG of one diagram (`title` above it).
pub fn svg(d: &Diagram, title: &str) -> String {
    let n = d.processes.len().max(1);
    // Two processes at a quarter from each side; more, evenly.
    let px = |i: usize| if n == 2 { W * (0.25 + 0.5 * i as f64) } else { W * (i as f64 + 1.0) / (n as f64 + 1.0) };
    let sampled: Vec<&Arrow> = d.arrows.iter().filter(|a| a.kind == ArrowKind::Sampled).collect();
    let drawn: Vec<&Arrow> = d.arrows.iter().filter(|a| a.kind != ArrowKind::Sampled).collect();
    let h = OBJ_Y + BOX_H + 40.0 + 16.0 * (sampled.len() + usize::from(d.note.is_some())) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"diagram\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" \
         font-family=\"sans-serif\" font-size=\"10.5\"><defs>"
    );
    for c in ["#c62828", "#1565c0", "#2e7d32", "#6d4c41", "#ef6c00", "#00838f", "#9e9e9e"] {
        let id = &c[1..];
        let _ = write!(
            s,
            "<marker id=\"h{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" \
             orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{c}\"/></marker>"
        );
    }
    let _ = write!(s, "</defs><text x=\"8\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>", esc(title));
    // The user/kernel line.
    let _ = write!(
        s,
        "<line x1=\"0\" y1=\"{LINE_Y}\" x2=\"{W}\" y2=\"{LINE_Y}\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>\
         <text x=\"{x}\" y=\"{}\" fill=\"#555\" text-anchor=\"middle\">user space</text>\
         <text x=\"{x}\" y=\"{}\" fill=\"#555\" text-anchor=\"middle\">kernel</text>",
        LINE_Y - 6.0,
        LINE_Y + 14.0,
        x = W / 2.0
    );
    for (i, p) in d.processes.iter().enumerate() {
        let x = px(i) - BOX_W / 2.0;
        let _ = write!(
            s,
            "<g class=\"process\"><rect x=\"{x}\" y=\"{PROC_Y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" \
             fill=\"#e3f2fd\" stroke=\"#1565c0\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
            px(i),
            PROC_Y + 24.0,
            esc(p)
        );
    }
    let ox = W / 2.0 - 150.0;
    let fill = if d.shared { "#fff3e0" } else { "#fce4ec" };
    let _ = write!(
        s,
        "<g class=\"object\"><rect x=\"{ox}\" y=\"{OBJ_Y}\" width=\"300\" height=\"{BOX_H}\" rx=\"6\" fill=\"{fill}\" \
         stroke=\"#555\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
        W / 2.0,
        OBJ_Y + 24.0,
        esc(&d.object)
    );
    // Arrows between a process and the object: side by side under the process box.
    let mut slot = vec![0usize; n + 1];
    // Notifications: one band each under the process boxes, above the user/kernel line.
    let mut band = 0usize;
    for a in &drawn {
        let (x1, y1, x2, y2, tx, ty, anchor) = match (a.from, a.to) {
            (End::Process(i), End::Object) | (End::Object, End::Process(i)) => {
                let k = slot[i];
                slot[i] += 1;
                let x = px(i) - 45.0 + 30.0 * k as f64;
                let xo = W / 2.0 + (x - W / 2.0) * 0.5;
                let (top, bottom) = ((x, PROC_Y + BOX_H), (xo, OBJ_Y));
                let ((x1, y1), (x2, y2)) = if a.from == End::Object { (bottom, top) } else { (top, bottom) };
                // Captions in the kernel half, outside the arrows (which converge inwards).
                let left = px(i) < W / 2.0;
                let ty = LINE_Y + 30.0 + 30.0 * k as f64;
                let tx = if left { 6.0 } else { W - 6.0 };
                (x1, y1, x2, y2, tx, ty, if left { "start" } else { "end" })
            }
            (End::Process(i), End::Process(j)) if a.kind == ArrowKind::Notify => {
                let y = PROC_Y + BOX_H + 10.0 + 11.0 * band as f64;
                band += 1;
                let (xi, xj) = (px(i), px(j));
                (xi, y, xj, y, (xi + xj) / 2.0, y - 2.0, "middle")
            }
            (End::Process(i), End::Process(j)) => {
                // Above the boxes: left to right nearer, right to left higher.
                let (xi, xj) = (px(i), px(j));
                let y = if xi < xj { PROC_Y - 10.0 } else { PROC_Y - 32.0 };
                (xi, y, xj, y, W / 2.0, y - 4.0, "middle")
            }
            _ => continue,
        };
        let c = color(a);
        let dash = match (a.observed(), a.kind) {
            (false, _) => " stroke-dasharray=\"3 3\"",
            (true, ArrowKind::Move) => " stroke-dasharray=\"8 3\"",
            (true, ArrowKind::Fault) => " stroke-dasharray=\"2 2\"",
            _ => "",
        };
        let width = if a.kind == ArrowKind::Copy && a.observed() { 3 } else { 1 };
        let _ = write!(
            s,
            "<g class=\"arrow\" data-id=\"{}\" data-kind=\"{}\" data-observed=\"{}\" data-value=\"{}\" data-label=\"{}\">\
             <line x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\" stroke=\"{c}\" stroke-width=\"{width}\"{dash} \
             marker-end=\"url(#h{})\"/><text x=\"{tx:.0}\" y=\"{ty:.0}\" text-anchor=\"{anchor}\" fill=\"{c}\"><tspan>{}{}</tspan></text></g>",
            esc(&a.id),
            verb(a.kind),
            a.observed(),
            a.value.map(|v| v.to_string()).unwrap_or_default(),
            a.label.map(|l| l.name()).unwrap_or(""),
            &c[1..],
            esc(&a.caption),
            // Between a process and the object: the number on a second line, so the text
            // stays clear of the arrows; between processes, on one line.
            if matches!((a.from, a.to), (End::Process(_), End::Process(_))) {
                format!(": {}", esc(&with_label(a)))
            } else {
                format!("</tspan><tspan x=\"{tx:.0}\" dy=\"12\">{}", esc(&with_label(a)))
            }
        );
    }
    let mut y = OBJ_Y + BOX_H + 20.0;
    for a in &sampled {
        let _ = write!(
            s,
            "<g class=\"arrow\" data-id=\"{}\" data-kind=\"cpu\" data-observed=\"{}\" data-value=\"{}\" data-label=\"{}\">\
             <text x=\"{}\" y=\"{y}\" text-anchor=\"middle\" fill=\"{}\">{}: {}</text></g>",
            esc(&a.id),
            a.observed(),
            a.value.map(|v| v.to_string()).unwrap_or_default(),
            a.label.map(|l| l.name()).unwrap_or(""),
            W / 2.0,
            color(a),
            esc(&a.caption),
            esc(&with_label(a))
        );
        y += 16.0;
    }
    if let Some(note) = &d.note {
        let _ =
            write!(s, "<text class=\"note\" x=\"{}\" y=\"{y}\" text-anchor=\"middle\">{}</text>", W / 2.0, esc(note));
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Label, diagram::Arrow};

    fn pipe() -> Diagram {
        Diagram {
            processes: vec!["producer 1".into(), "consumer 2".into()],
            object: "pipe buffer pages".into(),
            shared: false,
            arrows: vec![
                Arrow::new(
                    "copy_in",
                    ArrowKind::Copy,
                    (End::Process(0), End::Object),
                    "copy user -> pipe buffer",
                    Unit::Bytes,
                    1 << 30,
                    Some(Label::Exact),
                ),
                Arrow::new(
                    "wake_reader",
                    ArrowKind::Wake,
                    (End::Process(0), End::Process(1)),
                    "reader woken",
                    Unit::Count,
                    0,
                    None,
                ),
            ],
            note: None,
        }
    }

    #[test]
    fn text_fits_and_says_what_was_not_observed() {
        let lines = text_block(&pipe());
        assert!(lines.iter().all(|l| l.chars().count() <= COLUMNS), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("v copy 1 GiB (exact)")), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("reader woken not observed")), "{lines:#?}");
        assert!(lines[2].starts_with("  kernel  '--> [pipe buffer pages]"), "{lines:#?}");
    }

    #[test]
    fn svg_carries_each_figure() {
        let s = svg(&pipe(), "pipe <1>");
        assert!(s.contains("data-id=\"copy_in\" data-kind=\"copy\" data-observed=\"true\" data-value=\"1073741824\""));
        assert!(s.contains("data-id=\"wake_reader\" data-kind=\"wake\" data-observed=\"false\" data-value=\"\""));
        assert!(s.contains("pipe &lt;1&gt;") && !s.contains("NaN") && !s.contains("inf"));
    }
}
