//! `cargo xtask bench`: untraced transport benchmark (throughput, messages/s, CPU s/GiB,
//! ping-pong round trip), same-CPU and cross-CPU, repeated and interleaved, with `dd | dd`
//! and memcpy baselines, plus traced-vs-untraced pairs (root). Writes a table, JSON and SVG.
//! Measures; never asserts (targets are reported, not enforced).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use workloads::{
    spawn::Launch,
    sweep::{Point, SIZES, points, run_point},
    transport::Transport,
};

use crate::util::{cargo, is_root, root, run};

/// Every built-in transport, from the registry.
const TRANSPORTS: [Transport; Transport::ALL.len()] = Transport::ALL;
const PLACEMENTS: [(&str, [usize; 2]); 2] = [("same-cpu", [0, 0]), ("cross-cpu", [0, 1])];

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Repetitions of every configuration (interleaved).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Length of each throughput run, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub run_ms: u64,
    /// Length of each ping-pong run, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub pingpong_ms: u64,
    /// Only the tracing-overhead measurement (as root), not the transport table.
    #[arg(long)]
    pub overhead: bool,
    /// Rounds of the overhead measurement (every configuration once per round, interleaved;
    /// 0 skips it).
    #[arg(long, default_value_t = 9)]
    pub overhead_rounds: usize,
    /// Another ipctrace binary to compare with, round by round (e.g. the build before a change).
    #[arg(long, value_name = "IPCTRACE")]
    pub compare: Option<PathBuf>,
    /// Output directory for bench.json and throughput.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// Median and spread of repeated measurements.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let m = s.len();
        let median = if m % 2 == 1 { s[m / 2] } else { (s[m / 2 - 1] + s[m / 2]) / 2.0 };
        Self { median, min: s[0], max: s[m - 1], n: m }
    }

    fn show(&self, scale: f64, digits: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!("{:.*} ({:.*}-{:.*})", digits, self.median * scale, digits, self.min * scale, digits, self.max * scale)
    }
}

#[derive(Default)]
struct Samples {
    not_run: Option<String>,
    gib_s: Vec<f64>,
    msgs_s: Vec<f64>,
    cpu_s_per_gib: Vec<f64>,
    rtt_p50_us: Vec<f64>,
    rtt_p99_us: Vec<f64>,
}

#[derive(Serialize)]
struct Row {
    transport: String,
    msg_size: u64,
    placement: String,
    /// Why this point was not measured (a datagram above what the socket takes here).
    #[serde(skip_serializing_if = "Option::is_none")]
    not_run: Option<String>,
    throughput_gib_s: Stat,
    messages_per_s: Stat,
    cpu_s_per_gib: Stat,
    rtt_p50_us: Stat,
    rtt_p99_us: Stat,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    kernel: String,
    reps: usize,
    run_ms: u64,
    memcpy_gib_s: Stat,
    memcpy_4mib_gib_s: Stat,
    rows: Vec<Row>,
    targets: Vec<(String, String)>,
    tracing_overhead: Option<crate::overhead::OverheadReport>,
}

const GIB: f64 = (1u64 << 30) as f64;

fn workloads_bin() -> PathBuf {
    root().join("target/release/workloads")
}

/// The launch every point starts from: the release `workloads` binary, pinned.
fn base_launch(cpus: [usize; 2]) -> Launch {
    Launch {
        exe: workloads_bin(),
        arg0: "workloads".into(),
        lead: vec!["role".into()],
        transport: Transport::ALL[0],
        total: 0,
        msg_size: 1,
        corrupt_at: None,
        ring: Default::default(),
        shape: Default::default(),
        cpus: Some(cpus),
        shm_prefix: "ipctrace-bench".into(),
        socket_path: None,
        mq_name: None,
        mq_depth: None,
    }
}

fn measure(s: &mut Samples, p: Point, cpus: [usize; 2], a: &BenchArgs) -> Result<()> {
    if s.not_run.is_some() {
        return Ok(());
    }
    if let Some((max, why)) = p.transport.max_message().filter(|(m, _)| p.msg_size > *m) {
        s.not_run = Some(format!("n/a: above the largest message ({max} bytes, set by {why})"));
        return Ok(());
    }
    let mut base = base_launch(cpus);
    let (_, m) = run_point(&base, p, a.run_ms, |_| Ok(()))?;
    if !m.ok {
        bail!("{} at {} B failed", p.transport.name(), p.msg_size);
    }
    s.gib_s.push(m.throughput_bytes_per_s / GIB);
    s.msgs_s.push(m.messages_per_s);
    s.cpu_s_per_gib.push(m.cpu_s / (m.bytes as f64 / GIB));
    base.shape.ping_pong = true;
    let (_, m) = run_point(&base, p, a.pingpong_ms, |_| Ok(()))?;
    if let (Some(p50), Some(p99)) = (m.rtt_p50_ns, m.rtt_p99_ns) {
        s.rtt_p50_us.push(p50 as f64 / 1e3);
        s.rtt_p99_us.push(p99 as f64 / 1e3);
    }
    Ok(())
}

/// `dd if=/dev/zero bs=S | dd of=/dev/null bs=S`, pinned, stopped after `ms`; GiB/s from the reader's own report.
fn dd_pipe(msg: u64, cpus: [usize; 2], ms: u64) -> Result<f64> {
    let bs = format!("bs={msg}");
    let mut writer = Command::new("taskset")
        .args(["-c", &cpus[0].to_string(), "dd", "if=/dev/zero", &bs, "status=none"])
        .stdout(Stdio::piped())
        .spawn()
        .context("taskset/dd")?;
    let reader = Command::new("taskset")
        .args(["-c", &cpus[1].to_string(), "dd", "of=/dev/null", &bs])
        .stdin(writer.stdout.take().unwrap())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(ms));
    writer.kill()?;
    writer.wait()?;
    let out = reader.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    // "... 123456 bytes (...) copied, 0.3 s, ..."
    let line = text.lines().find(|l| l.contains("bytes")).context("dd printed no summary")?;
    let bytes: f64 = line.split_whitespace().next().and_then(|b| b.parse().ok()).context("dd byte count")?;
    let secs: f64 = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" s").and_then(|s| s.trim().parse().ok()))
        .context("dd seconds")?;
    Ok(bytes / GIB / secs)
}

/// Single-thread memcpy bandwidth over `size`-byte buffers: 64 MiB is DRAM-bound (the
/// physical limit for a copy); 4 MiB, the size of a default shm ring, mostly stays in cache.
fn memcpy_gib_s(ms: u64, size: usize) -> f64 {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_millis(ms) {
        dst.copy_from_slice(std::hint::black_box(&src));
        n += 1;
    }
    std::hint::black_box(&dst);
    (n as f64 * size as f64) / GIB / t0.elapsed().as_secs_f64()
}

fn size_label(s: u64) -> String {
    match s {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn chart(path: &Path, rows: &[Row], memcpy: f64) -> Result<()> {
    use plotters::prelude::*;
    let root_area = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root_area.fill(&WHITE)?;
    let panels = root_area.split_evenly((1, 2));
    let ymax = rows.iter().map(|r| r.throughput_gib_s.max).fold(memcpy, f64::max) * 1.1;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, RGBColor(230, 140, 0), RGBColor(120, 80, 40)];
    for (panel, (place, _)) in panels.iter().zip(PLACEMENTS) {
        let mut c = ChartBuilder::on(panel)
            .caption(format!("throughput vs message size ({place})"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(5.5f64..20.5f64, 0f64..ymax)?;
        c.configure_mesh()
            .x_desc("message size (log2 bytes)")
            .y_desc("GiB/s")
            .x_label_formatter(&|x| size_label(1u64 << (*x as u32)))
            .draw()?;
        for (t, color) in TRANSPORTS.iter().map(|t| t.name()).zip(colors) {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.transport == t && r.placement == place && r.not_run.is_none())
                .map(|r| ((r.msg_size as f64).log2(), r.throughput_gib_s.median))
                .collect();
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(t)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        c.draw_series(LineSeries::new(vec![(5.5, memcpy), (20.5, memcpy)], BLACK.stroke_width(1)))?
            .label("memcpy (1 thread)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root_area.present()?;
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{n} x {cpu}")
}

/// The overhead part alone (`--overhead`), or none when not root.
fn overhead_part(a: &BenchArgs) -> Result<Option<crate::overhead::OverheadReport>> {
    if a.overhead_rounds == 0 {
        return Ok(None);
    }
    if !is_root() {
        eprintln!("bench: skipping the tracing overhead (ipctrace needs root)");
        return Ok(None);
    }
    let o = crate::overhead::overhead(a.overhead_rounds, a.compare.as_deref())?;
    println!("tracing overhead: {} · {} interleaved rounds · median (interquartile range)", o.workload, o.rounds);
    println!("{}", crate::overhead::table(&o));
    println!("kernel time per program, one more run each with BPF statistics on:");
    println!("{}", crate::overhead::costs_table(&o));
    println!("default / floor: {}", o.default_over_floor.show(2));
    if let Some(c) = &o.this_over_compare {
        println!("this build / --compare build: {}", c.show(2));
    }
    Ok(Some(o))
}

pub fn bench(a: &BenchArgs) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "workloads", "-p", "ipctrace"]))?;
    if a.overhead {
        let o = overhead_part(a)?;
        std::fs::create_dir_all(&a.out)?;
        std::fs::write(a.out.join("overhead.json"), serde_json::to_string_pretty(&o)?)?;
        eprintln!("bench: wrote {}", a.out.join("overhead.json").display());
        return Ok(());
    }
    let started = Instant::now();
    let memcpy: Vec<f64> = (0..a.reps).map(|_| memcpy_gib_s(300, 64 << 20)).collect();
    let memcpy_cached: Vec<f64> = (0..a.reps).map(|_| memcpy_gib_s(300, 4 << 20)).collect();
    let mut samples: BTreeMap<(String, u64, &str), Samples> = BTreeMap::new();
    let mut dd: BTreeMap<(u64, &str), Vec<f64>> = BTreeMap::new();
    let total_runs = a.reps * PLACEMENTS.len() * SIZES.len() * (TRANSPORTS.len() + 1);
    let mut done = 0;
    for rep in 0..a.reps {
        for (place, cpus) in PLACEMENTS {
            for p in points(&TRANSPORTS) {
                measure(samples.entry((p.transport.name().to_string(), p.msg_size, place)).or_default(), p, cpus, a)?;
                done += 1;
                if p.transport == TRANSPORTS[TRANSPORTS.len() - 1] {
                    dd.entry((p.msg_size, place)).or_default().push(dd_pipe(p.msg_size, cpus, a.run_ms)?);
                    done += 1;
                }
                eprint!(
                    "\rbench: rep {}/{} · {done}/{total_runs} runs · {:.0} s",
                    rep + 1,
                    a.reps,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    eprintln!();
    let mut rows: Vec<Row> = samples
        .into_iter()
        .map(|((t, msg, place), s)| Row {
            transport: t,
            msg_size: msg,
            placement: place.into(),
            not_run: s.not_run,
            throughput_gib_s: Stat::of(&s.gib_s),
            messages_per_s: Stat::of(&s.msgs_s),
            cpu_s_per_gib: Stat::of(&s.cpu_s_per_gib),
            rtt_p50_us: Stat::of(&s.rtt_p50_us),
            rtt_p99_us: Stat::of(&s.rtt_p99_us),
        })
        .collect();
    for ((msg, place), v) in &dd {
        rows.push(Row {
            transport: "dd | dd".into(),
            msg_size: *msg,
            placement: (*place).into(),
            not_run: None,
            throughput_gib_s: Stat::of(v),
            messages_per_s: Stat::of(&v.iter().map(|g| g * GIB / *msg as f64).collect::<Vec<_>>()),
            cpu_s_per_gib: Stat::default(),
            rtt_p50_us: Stat::default(),
            rtt_p99_us: Stat::default(),
        });
    }
    rows.sort_by(|x, y| {
        (x.placement.as_str(), x.msg_size, x.transport.as_str()).cmp(&(
            y.placement.as_str(),
            y.msg_size,
            y.transport.as_str(),
        ))
    });
    let memcpy = Stat::of(&memcpy);
    let get = |t: &str, m: u64, p: &str| rows.iter().find(|r| r.transport == t && r.msg_size == m && r.placement == p);
    let mut targets = Vec::new();
    for (place, _) in PLACEMENTS {
        let (Some(pipe64k), Some(dd64k), Some(shm64k), Some(shm1m)) = (
            get("pipe", 65536, place),
            get("dd | dd", 65536, place),
            get("shm-futex", 65536, place),
            get("shm-futex", 1 << 20, place),
        ) else {
            continue;
        };
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let r1 = pipe64k.throughput_gib_s.median / dd64k.throughput_gib_s.median;
        targets.push((format!("{place}: pipe >= 0.95x dd|dd at 64 KiB"), format!("{r1:.2}x: {}", verdict(r1 >= 0.95))));
        let r2 = shm64k.throughput_gib_s.median / pipe64k.throughput_gib_s.median;
        targets.push((format!("{place}: shm-futex >= 3x pipe at 64 KiB"), format!("{r2:.2}x: {}", verdict(r2 >= 3.0))));
        let r3 = shm1m.throughput_gib_s.median / memcpy.median;
        targets
            .push((format!("{place}: shm-futex >= 0.5x memcpy at 1 MiB"), format!("{r3:.2}x: {}", verdict(r3 >= 0.5))));
        if let (Some(s), Some(p)) = (get("shm-futex", 64, place), get("pipe", 64, place)) {
            let ok = s.rtt_p50_us.median < p.rtt_p50_us.median;
            targets.push((
                format!("{place}: shm round trip below the pipe's at 64 B"),
                format!("{:.1} us vs {:.1} us: {}", s.rtt_p50_us.median, p.rtt_p50_us.median, verdict(ok)),
            ));
        }
    }
    let overhead = overhead_part(a)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let report = Report {
        machine: machine(),
        kernel,
        reps: a.reps,
        run_ms: a.run_ms,
        memcpy_gib_s: memcpy,
        memcpy_4mib_gib_s: Stat::of(&memcpy_cached),
        rows,
        targets,
        tracing_overhead: overhead,
    };

    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["placement", "msg", "transport", "GiB/s", "Mmsg/s", "CPU s/GiB", "RTT p50 µs", "RTT p99 µs"]);
    for r in &report.rows {
        t.add_row(vec![
            r.placement.clone(),
            size_label(r.msg_size),
            r.transport.clone(),
            r.throughput_gib_s.show(1.0, 2),
            r.messages_per_s.show(1e-6, 3),
            r.cpu_s_per_gib.show(1.0, 2),
            r.rtt_p50_us.show(1.0, 1),
            r.rtt_p99_us.show(1.0, 1),
        ]);
    }
    println!(
        "machine: {} · kernel {} · {} reps of {} ms, interleaved · median (min-max)",
        report.machine, report.kernel, report.reps, report.run_ms
    );
    println!("{t}");
    println!(
        "memcpy, 1 thread: {} GiB/s with 64 MiB buffers (DRAM), {} GiB/s with 4 MiB buffers (a default ring's size: cache)",
        report.memcpy_gib_s.show(1.0, 2),
        report.memcpy_4mib_gib_s.show(1.0, 2)
    );
    for (k, v) in &report.targets {
        println!("target {k}: {v}");
    }

    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("bench.json"), serde_json::to_string_pretty(&report)?)?;
    chart(&a.out.join("throughput.svg"), &report.rows, report.memcpy_gib_s.median)?;
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        a.out.join("bench.json").display(),
        a.out.join("throughput.svg").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
