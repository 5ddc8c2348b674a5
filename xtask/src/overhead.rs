//! `cargo xtask bench --overhead`: what tracing costs, in one interleaved sitting. Every
//! configuration runs the same pipe workload (64 KiB messages, 1 GiB, both sides on CPU 0) and
//! its throughput comes from the workload's own clock; configurations take turns, round after
//! round, and each round's runs are divided by that round's untraced run. Besides the default
//! run: each probe group left out in turn, the floor (the same hooks with programs that return
//! at once), an untargeted workload while ipctrace traces something else, and optionally
//! another ipctrace build (`--compare`). Reported as medians with interquartile ranges.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::util::root;

const GIB: f64 = (1u64 << 30) as f64;
const TOTAL: &str = "1GiB";
/// The seed of each round's random order of configurations.
const ORDER_SEED: u64 = 0x1bc7_2ace;

/// Median and quartiles of repeated measurements.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quartiles {
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub n: usize,
}

impl Quartiles {
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            let x = p * (s.len() - 1) as f64;
            let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
            s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
        };
        Self { median: q(0.5), p25: q(0.25), p75: q(0.75), n: s.len() }
    }

    pub fn show(&self, digits: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!("{:.d$} ({:.d$}-{:.d$})", self.median, self.p25, self.p75, d = digits)
    }
}

/// One configuration's results over the rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigResult {
    pub name: String,
    pub what: String,
    pub gib_s: Quartiles,
    /// Each round's GiB/s, in round order.
    pub gib_s_per_round: Vec<f64>,
    /// This configuration / the same round's untraced run.
    pub ratio: Quartiles,
    /// Workload CPU seconds per GiB (both processes, wait4 rusage).
    pub cpu_s_per_gib: Quartiles,
    /// ipctrace's own CPU seconds (user + system) per run, and its peak RSS in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_cpu_s: Option<Quartiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_max_rss_mib: Option<Quartiles>,
    /// Events the tracer had to drop (should be 0).
    pub events_lost: u64,
}

#[derive(Debug, Serialize)]
pub struct OverheadReport {
    pub workload: String,
    pub rounds: usize,
    /// The seed of the configurations' order in each round (a new random order per round).
    pub order_seed: u64,
    pub configs: Vec<ConfigResult>,
    /// The default run / the floor, per round: what ipctrace's programs add to their hooks.
    pub default_over_floor: Quartiles,
    /// `--compare`: this build's default run / the other build's, per round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_over_compare: Option<Quartiles>,
    /// One more run of the traced configurations with BPF statistics on (after the rounds,
    /// not part of the ratios: the statistics add a clock read per program run): kernel
    /// time per program.
    pub program_costs: Vec<ConfigCosts>,
}

/// What each program cost in one run of a configuration (BPF statistics on).
#[derive(Clone, Debug, Serialize)]
pub struct ConfigCosts {
    pub name: String,
    /// 64 KiB messages the run moved.
    pub messages: u64,
    pub programs: Vec<ProgramCost>,
    /// All programs' kernel time per message.
    pub ns_per_message: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub ns_per_run: f64,
    pub ns_per_message: f64,
}

/// How a configuration runs.
enum Kind {
    Untraced,
    /// `ipctrace run` with these extra arguments, of this binary.
    Traced {
        bin: PathBuf,
        args: Vec<&'static str>,
    },
    /// The untraced workload while `ipctrace attach` traces an idle process.
    Untargeted,
}

struct Config {
    name: &'static str,
    what: String,
    kind: Kind,
}

/// One measurement.
#[derive(Default)]
struct Sample {
    gib_s: f64,
    cpu_s_per_gib: f64,
    tracer: Option<(f64, f64)>,
    lost: u64,
    /// Consumer bytes, and the report's `program_costs` (empty unless BPF statistics were on).
    bytes: f64,
    programs: Vec<Value>,
}

/// BPF statistics on while this lives (`BPF_ENABLE_STATS`: off again when the fd closes,
/// whatever ends the bench).
struct StatsOn {
    _fd: std::os::fd::OwnedFd,
}

impl StatsOn {
    fn enable() -> Result<Self> {
        use std::os::fd::FromRawFd;
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr { struct { __u32 type; } enable_stats; }: BPF_STATS_RUN_TIME = 0.
        let attr = [0u8; 16];
        // SAFETY: bpf(2) reads `attr` (its size given) and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), attr.len() as u32) };
        if fd < 0 {
            bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(Self { _fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) } })
    }
}

fn costs_of(name: &str, s: &Sample) -> ConfigCosts {
    let messages = (s.bytes / 65536.0).round() as u64;
    let per_msg = |ns: f64| ns / (messages.max(1) as f64);
    let programs: Vec<ProgramCost> = s
        .programs
        .iter()
        .filter_map(|p| {
            let runs = p["runs"].as_u64()?;
            let ns = p["run_time_ns"].as_f64()?;
            Some(ProgramCost {
                name: p["name"].as_str()?.to_string(),
                runs,
                ns_per_run: ns / runs.max(1) as f64,
                ns_per_message: per_msg(ns),
            })
        })
        .collect();
    let total = programs.iter().map(|p| p.ns_per_message).sum();
    ConfigCosts { name: name.into(), messages, programs, ns_per_message: total }
}

fn rate_of(witnesses: &[Value]) -> Result<f64> {
    let bytes =
        witnesses.iter().find(|w| w["role"] == "consumer").and_then(|w| w["bytes"].as_f64()).context("bytes")?;
    let ns = witnesses.iter().filter_map(|w| w["elapsed_ns"].as_f64()).fold(0.0, f64::max);
    Ok(bytes / GIB / (ns / 1e9))
}

fn cpu_per_gib(rusages: &[&Value], witnesses: &[Value]) -> f64 {
    let bytes = witnesses.iter().find(|w| w["role"] == "consumer").and_then(|w| w["bytes"].as_f64()).unwrap_or(0.0);
    let us: f64 =
        rusages.iter().map(|r| r["utime_us"].as_f64().unwrap_or(0.0) + r["stime_us"].as_f64().unwrap_or(0.0)).sum();
    us / 1e6 / (bytes / GIB).max(1e-9)
}

fn untraced() -> Result<Sample> {
    let out = Command::new(root().join("target/release/workloads"))
        .args(["pipe", "--json", "--msg-size", "64KiB", "--cpus", "0,0", "--total", TOTAL])
        .output()?;
    if !out.status.success() {
        bail!("workloads pipe failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let ws = v["witnesses"].as_array().context("witnesses")?.clone();
    let rus: Vec<&Value> = v["processes"].as_array().context("processes")?.iter().map(|p| &p["rusage"]).collect();
    Ok(Sample { gib_s: rate_of(&ws)?, cpu_s_per_gib: cpu_per_gib(&rus, &ws), ..Default::default() })
}

/// Runs a command to its end; its stdout and its own rusage (CPU seconds, peak RSS MiB).
fn run_with_rusage(cmd: &mut Command) -> Result<(Vec<u8>, f64, f64)> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as i32;
    let out = {
        let mut child = child;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(child.stdout.as_mut().context("stdout")?, &mut buf)?;
        // Reap by hand to get the rusage (std::process::Child does not give it).
        let mut st = 0;
        // SAFETY: wait4 on our own child into locals.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut st, 0, &mut ru) };
        if r != pid || !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(e, &mut err);
            }
            bail!("{:?} failed: {err}", cmd.get_program());
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (buf, secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss as f64 / 1024.0)
    };
    Ok(out)
}

fn traced(bin: &Path, extra: &[&str]) -> Result<Sample> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "run",
        "--format",
        "json",
        "--transport",
        "pipe",
        "--msg-size",
        "64KiB",
        "--cpus",
        "0,0",
        "--total",
        TOTAL,
    ]);
    cmd.args(extra);
    let (stdout, cpu, rss) = run_with_rusage(&mut cmd)?;
    let r: Value = serde_json::from_slice(&stdout)?;
    let procs = r["runs"][0]["processes"].as_array().context("processes")?;
    let ws: Vec<Value> = procs.iter().map(|p| p["witness"].clone()).collect();
    let rus: Vec<&Value> = procs.iter().map(|p| &p["exit"]["rusage"]).collect();
    Ok(Sample {
        gib_s: rate_of(&ws)?,
        cpu_s_per_gib: cpu_per_gib(&rus, &ws),
        tracer: Some((cpu, rss)),
        lost: r["loss"]["events"].as_u64().unwrap_or(0),
        bytes: ws.iter().find(|w| w["role"] == "consumer").and_then(|w| w["bytes"].as_f64()).unwrap_or(0.0),
        programs: r["program_costs"].as_array().cloned().unwrap_or_default(),
    })
}

/// The untraced workload while ipctrace attaches to an idle `sleep`: what its hooks cost a
/// process it does not trace.
fn untargeted(bin: &Path) -> Result<Sample> {
    let mut sleeper = Command::new("sleep").arg("120").spawn()?;
    let mut tracer = Command::new(bin)
        .args(["attach", "-p", &sleeper.id().to_string(), "--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Tracing starts with the READY line.
    let mut line = String::new();
    let mut err = std::io::BufReader::new(tracer.stderr.take().context("stderr")?);
    while !line.contains("READY") {
        line.clear();
        if std::io::BufRead::read_line(&mut err, &mut line)? == 0 {
            bail!("ipctrace attach ended before tracing");
        }
    }
    let s = untraced();
    // SAFETY: signalling our own children.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let _ = tracer.wait();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    s
}

pub fn overhead(rounds: usize, compare: Option<&Path>) -> Result<OverheadReport> {
    let this = root().join("target/release/ipctrace");
    let mut configs = vec![
        Config { name: "untraced", what: "the workload alone".into(), kind: Kind::Untraced },
        Config {
            name: "default",
            what: "`ipctrace run`, default probes".into(),
            kind: Kind::Traced { bin: this.clone(), args: vec![] },
        },
        Config {
            name: "floor",
            what: "the default run's hooks, every program returning at once".into(),
            kind: Kind::Traced { bin: this.clone(), args: vec!["--floor"] },
        },
        Config {
            name: "without sampling",
            what: "default, no cpu-clock sampling".into(),
            kind: Kind::Traced { bin: this.clone(), args: vec!["--without", "sampling"] },
        },
        Config {
            name: "without page-alloc",
            what: "default, no page-allocation counting".into(),
            kind: Kind::Traced { bin: this.clone(), args: vec!["--without", "page-alloc"] },
        },
        Config {
            name: "without block-stacks",
            what: "default, no kernel stacks of blocked time".into(),
            kind: Kind::Traced { bin: this.clone(), args: vec!["--without", "block-stacks"] },
        },
        Config {
            name: "untargeted",
            what: "the workload alone while ipctrace traces an idle process".into(),
            kind: Kind::Untargeted,
        },
    ];
    if let Some(other) = compare {
        configs.push(Config {
            name: "compare",
            what: format!("`ipctrace run` default, of {}", other.display()),
            kind: Kind::Traced { bin: other.to_path_buf(), args: vec![] },
        });
    }
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    let mut rng = fastrand::Rng::with_seed(ORDER_SEED);
    for round in 0..rounds {
        // Each round runs the configurations in a new random order (seeded, so a sitting can
        // be repeated), so none always runs just after the same other (a release of the
        // previous run's programs, a cache warmed by it) or at the same place in the round.
        let mut order: Vec<usize> = (0..configs.len()).collect();
        rng.shuffle(&mut order);
        for i in order {
            let c = &configs[i];
            eprint!("\rbench overhead: round {}/{rounds} · {:<22}", round + 1, c.name);
            let s = match &c.kind {
                Kind::Untraced => untraced()?,
                Kind::Traced { bin, args } => traced(bin, args)?,
                Kind::Untargeted => untargeted(&this)?,
            };
            samples[i].push(s);
            // Let the machine settle between runs (program release is asynchronous).
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!();
    let mut program_costs = Vec::new();
    // Without BPF statistics (a kernel or a sandbox that refuses them) the rounds still stand.
    match StatsOn::enable() {
        Err(e) => eprintln!("bench overhead: no kernel time per program: {e:#}"),
        Ok(_stats) => {
            for c in &configs {
                if let Kind::Traced { bin, args } = &c.kind {
                    eprint!("\rbench overhead: program costs · {:<22}", c.name);
                    program_costs.push(costs_of(c.name, &traced(bin, args)?));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            eprintln!();
        }
    }
    let base: Vec<f64> = samples[0].iter().map(|s| s.gib_s).collect();
    let results = configs
        .iter()
        .zip(&samples)
        .map(|(c, ss)| {
            let tracer: Vec<(f64, f64)> = ss.iter().filter_map(|s| s.tracer).collect();
            ConfigResult {
                name: c.name.into(),
                what: c.what.clone(),
                gib_s: Quartiles::of(&ss.iter().map(|s| s.gib_s).collect::<Vec<_>>()),
                gib_s_per_round: ss.iter().map(|s| s.gib_s).collect(),
                ratio: Quartiles::of(&ss.iter().zip(&base).map(|(s, b)| s.gib_s / b).collect::<Vec<_>>()),
                cpu_s_per_gib: Quartiles::of(&ss.iter().map(|s| s.cpu_s_per_gib).collect::<Vec<_>>()),
                tracer_cpu_s: (!tracer.is_empty())
                    .then(|| Quartiles::of(&tracer.iter().map(|t| t.0).collect::<Vec<_>>())),
                tracer_max_rss_mib: (!tracer.is_empty())
                    .then(|| Quartiles::of(&tracer.iter().map(|t| t.1).collect::<Vec<_>>())),
                events_lost: ss.iter().map(|s| s.lost).sum(),
            }
        })
        .collect();
    let per_round = |a: usize, b: usize| {
        Quartiles::of(&samples[a].iter().zip(&samples[b]).map(|(x, y)| x.gib_s / y.gib_s).collect::<Vec<_>>())
    };
    let idx = |n: &str| configs.iter().position(|c| c.name == n);
    let (default, floor) = (idx("default").unwrap_or(1), idx("floor").unwrap_or(2));
    Ok(OverheadReport {
        workload: format!("pipe, 64 KiB messages, {TOTAL} per run, producer and consumer on CPU 0"),
        rounds,
        order_seed: ORDER_SEED,
        configs: results,
        default_over_floor: per_round(default, floor),
        this_over_compare: idx("compare").map(|c| per_round(default, c)),
        program_costs,
    })
}

/// The overhead table, as printed and put in the README.
pub fn table(r: &OverheadReport) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "configuration",
        "GiB/s",
        "/ untraced",
        "workload CPU s/GiB",
        "ipctrace CPU s",
        "ipctrace peak RSS MiB",
        "events lost",
    ]);
    for c in &r.configs {
        t.add_row(vec![
            format!("{} ({})", c.name, c.what),
            c.gib_s.show(2),
            c.ratio.show(2),
            c.cpu_s_per_gib.show(2),
            c.tracer_cpu_s.as_ref().map_or("-".into(), |q| q.show(2)),
            c.tracer_max_rss_mib.as_ref().map_or("-".into(), |q| q.show(0)),
            c.events_lost.to_string(),
        ]);
    }
    t
}

/// Kernel time per 64 KiB message, per program (columns) and configuration (rows).
pub fn costs_table(r: &OverheadReport) -> comfy_table::Table {
    let mut names: Vec<&str> = Vec::new();
    for c in &r.program_costs {
        for p in &c.programs {
            if p.ns_per_message >= 1.0 && !names.contains(&p.name.as_str()) {
                names.push(&p.name);
            }
        }
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["ns per message (ns per run)".to_string()];
    header.extend(names.iter().map(|n| n.to_string()));
    header.push("all".into());
    t.set_header(header);
    // A build without BPF statistics in its report (an older `--compare` build) has no row.
    for c in r.program_costs.iter().filter(|c| !c.programs.is_empty()) {
        let mut row = vec![c.name.clone()];
        for n in &names {
            row.push(
                c.programs
                    .iter()
                    .find(|p| p.name == *n)
                    .map_or("-".into(), |p| format!("{:.0} ({:.0})", p.ns_per_message, p.ns_per_run)),
            );
        }
        row.push(format!("{:.0}", c.ns_per_message));
        t.add_row(row);
    }
    t
}
