//! `ipctrace run`: starts each built-in workload held at its gate, puts its processes in the
//! kernel filter, opens the gate, waits (Ctrl-C, --duration and the workloads' exit all end
//! it cleanly) and assembles the report from the session's sums and the workloads' witnesses.

use std::{
    ffi::OsString,
    io::{IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use ipctrace_common::{AggKey, ProbeId};
use workloads::{
    spawn::{Launch, Pair, spawn_pair},
    sweep,
    transport::Transport,
};

use crate::{
    cli::RunArgs,
    conclude,
    exit::{Code, fail},
    kernel,
    kernel::symbols::KernelSymbols,
    model::{self, ChannelId, EndedBy, Process, Report, SweepPoint, probe::Choice},
    observe,
    outputs::OutFile,
    path,
    probes::Mechanism,
    render::Format,
    session::{ProbeOptions, Session},
    stops::Stops,
    transport::{Family, family_of},
};

/// The family that reconstructs a built-in transport's path (every built-in transport has one).
fn family(t: Transport) -> &'static dyn Family {
    family_of(t.kind()).unwrap_or_else(|| panic!("no path family for the built-in transport {t}"))
}

/// The outcome of `run`: the report, and an error to report after it (exit code 3) if a
/// workload failed.
pub struct Outcome {
    pub report: Report,
    pub target_failure: Option<String>,
}

/// The progress bar of one transport: the consumer's observed bytes where the kernel sees
/// them, else a spinner with the elapsed time (shared memory moves no byte through the kernel).
fn progress(show: bool, total: u64, t: Transport) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let (pb, template) = match family(t).progress() {
        Some(_) => (
            ProgressBar::new(total),
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} (observed bytes out of the channel)",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{prefix:>10} {spinner} {elapsed} (the payload never crosses the kernel: nothing to count)",
        ),
    };
    pb.set_style(ProgressStyle::with_template(template).ok()?.progress_chars("=> "));
    pb.set_prefix(t.name().to_string());
    Some(pb)
}

/// Waits for the pair to finish, for a signal or for the deadline; returns why it stopped.
async fn wait(
    pair: &mut Pair,
    session: &mut Session,
    stops: &mut Stops,
    deadline: Option<Instant>,
    pb: Option<(&ProgressBar, Option<ProbeId>)>,
) -> Result<EndedBy> {
    let consumer = pair.workers.iter().find(|w| w.role == workloads::role::Role::Consumer).map(|w| w.pid);
    // The bar is read from the aggregates (a few hundred map reads): four times a second,
    // not at every 20 ms check, so that it does not load the CPUs it measures.
    let mut last_read = Instant::now();
    loop {
        if pair.reap()? {
            return Ok(EndedBy::Completed);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(EndedBy::Duration);
        }
        session.drain()?;
        match (pb, consumer) {
            (Some((pb, Some(probe))), Some(c)) if last_read.elapsed() >= Duration::from_millis(250) => {
                last_read = Instant::now();
                if let Ok(aggs) = session.aggregates() {
                    let p = probe as u16;
                    let lo = AggKey { tgid: c, probe: p, kind: 0, ino: 0 };
                    let hi = AggKey { tgid: c, probe: p, kind: u16::MAX, ino: u64::MAX };
                    pb.set_position(aggs.range(lo..=hi).map(|(_, v)| v.bytes).sum());
                }
            }
            (Some((pb, None)), _) => pb.tick(),
            _ => {}
        }
        if stops.within(Duration::from_millis(20)).await {
            return Ok(EndedBy::Interrupted);
        }
    }
}

/// How `run` starts its workloads: this binary re-executed in its hidden role mode.
fn base_launch(args: &RunArgs) -> Launch {
    Launch {
        exe: PathBuf::from("/proc/self/exe"),
        arg0: OsString::from("ipctrace"),
        lead: vec![OsString::from("__workload")],
        // Set per run; any transport will do here.
        transport: Transport::ALL[0],
        total: args.total,
        msg_size: args.msg_size,
        corrupt_at: args.corrupt_at,
        ring: args.ring.clone(),
        shape: workloads::role::ShapeArgs {
            splice_consumer: args.splice_consumer,
            sendfile_producer: args.sendfile_producer,
            recv_buffer: args.recv_buffer,
            mq_priorities: args.mq_priorities,
            ..Default::default()
        },
        cpus: args.cpus(),
        shm_prefix: "ipctrace".into(),
        socket_path: args.socket_path.clone(),
        mq_name: args.mq_name.clone(),
        mq_depth: args.mq_depth,
    }
}

/// BPF's view of each process of a finished pair, and the channels they used; aggregates
/// with ids this ipctrace does not know are added to `unknown`.
fn collect(session: &Session, pair: &Pair, unknown: &mut u64) -> Result<(Vec<Process>, Vec<ChannelId>)> {
    let snap = session.snapshot()?;
    let mut syms = KernelSymbols::default();
    let mut stack = |id: i32| -> Vec<String> { session.stack(id).map(|ips| syms.stack(&ips)).unwrap_or_default() };
    let mut channels: Vec<ChannelId> = Vec::new();
    let processes: Vec<Process> = pair
        .workers
        .iter()
        .map(|w| {
            let observed = observe::observe(w.pid, &snap.aggs, &snap.stacks, &session.choices, &mut stack, unknown);
            for c in observed.events.iter().filter_map(|o| o.channel.as_ref()) {
                if !channels.contains(c) {
                    channels.push(c.clone());
                }
            }
            let exit = w.ended.clone();
            Process {
                pid: w.pid,
                role: w.role.name().into(),
                witness: exit.as_ref().and_then(|e| e.witness.clone()),
                observed,
                exit,
            }
        })
        .collect();
    channels.sort();
    Ok((processes, channels))
}

/// Puts a pair in the kernel filter, its control sockets out of the figures.
fn targets(session: &mut Session, pair: &Pair) -> Result<()> {
    for ino in pair.control_inodes() {
        session.ignore_channel(ino)?;
    }
    for pid in pair.pids() {
        session.add_target(pid)?;
    }
    Ok(())
}

/// `--sweep`: every transport at every message size, time-bounded, traced; the same points
/// and runner as the untraced benchmark (`workloads::sweep`). Ctrl-C and `--duration` end it
/// between or during points: the points finished so far are kept, the one cut short is not.
async fn run_sweep(
    args: &RunArgs,
    session: &mut Session,
    stops: &mut Stops,
    deadline: Option<Instant>,
    unknown: &mut u64,
) -> Result<(Vec<SweepPoint>, EndedBy)> {
    let base = base_launch(args);
    let pts = sweep::points(&args.transports());
    let mut out = Vec::new();
    let tty = std::io::stderr().is_terminal();
    let mut ended_by = EndedBy::Completed;
    for (i, p) in pts.iter().enumerate() {
        if tty {
            let _ = write!(
                std::io::stderr(),
                "\rsweep: {}/{} {} at {}      ",
                i + 1,
                pts.len(),
                p.transport.name(),
                workloads::size::format_size(p.msg_size)
            );
        }
        if let Some((max, why)) = p.transport.max_message().filter(|(max, _)| p.msg_size > *max) {
            out.push(SweepPoint {
                transport: p.transport.name().into(),
                msg_size: p.msg_size,
                ok: false,
                not_run: Some(format!("n/a: above the largest message ({max} bytes, set by {why})")),
                metrics: Default::default(),
            });
            continue;
        }
        if p.transport.is_shm() {
            check_dev_shm(&Launch { transport: p.transport, msg_size: p.msg_size, ..base.clone() })?;
        }
        let mut pair = sweep::start_point(&base, *p, args.sweep_ms)?;
        targets(session, &pair)?;
        let t0 = Instant::now();
        pair.open_gates()?;
        let why = wait(&mut pair, session, stops, deadline, None).await?;
        if why != EndedBy::Completed {
            pair.kill_and_reap();
            ended_by = why;
            break;
        }
        let m = sweep::measure(&pair, *p, t0.elapsed());
        session.drain()?;
        let (processes, _) = collect(session, &pair, unknown)?;
        let metrics = path::build(family(p.transport), &processes, m.elapsed_ns, path::Scope::Run).metrics;
        out.push(SweepPoint {
            transport: p.transport.name().into(),
            msg_size: p.msg_size,
            ok: m.ok,
            not_run: None,
            metrics,
        });
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
    Ok((out, ended_by))
}

/// A shm workload whose ring does not fit in /dev/shm would die of SIGBUS at first touch:
/// say so before starting it (exit code 3).
fn check_dev_shm(l: &Launch) -> Result<()> {
    let g = workloads::transport::shm::Geometry::new(
        l.msg_size as usize,
        l.ring.slot_size.map(|s| s as usize),
        l.ring.slots.map(|s| s as usize),
    )?;
    let need = g.region_bytes() as u64;
    if let Ok(st) = nix::sys::statvfs::statvfs("/dev/shm") {
        let free = st.blocks_available() * st.fragment_size();
        if free < need {
            return Err(fail(
                Code::Target,
                format!(
                    "/dev/shm has {} free; the {} ring needs {}",
                    workloads::size::format_size(free),
                    l.transport.name(),
                    workloads::size::format_size(need)
                ),
            ));
        }
    }
    Ok(())
}

/// Why a run's workloads failed, cause first: a process killed by a signal before one that
/// exited because its peer went away. None when both succeeded.
pub fn failure_message(transport: Transport, processes: &[Process]) -> Option<String> {
    let mut failed: Vec<&Process> =
        processes.iter().filter(|p| !p.exit.as_ref().is_some_and(|e| e.success())).collect();
    if failed.is_empty() {
        return None;
    }
    failed.sort_by_key(|p| p.exit.as_ref().and_then(|e| e.signal).is_none());
    let mut sigbus = false;
    let parts: Vec<String> = failed
        .iter()
        .map(|p| {
            let how = match p.exit.as_ref() {
                Some(e) => match (e.signal, e.exit_code) {
                    (Some(s), _) => {
                        sigbus |= s == libc::SIGBUS;
                        format!("was killed by {}", signal_name(s))
                    }
                    (None, Some(c)) => format!("exited with code {c}"),
                    (None, None) => "ended abnormally".into(),
                },
                None => "did not finish".into(),
            };
            format!("the {transport} {} (pid {}) {how}", p.role, p.pid)
        })
        .collect();
    let mut msg = parts.join("; then ");
    if sigbus && transport.is_shm() {
        msg.push_str(" (SIGBUS in a shared-memory workload: is /dev/shm full?)");
    } else if failed.iter().any(|p| p.exit.as_ref().is_some_and(|e| e.exit_code.is_some())) {
        msg.push_str("; see the workload's message above");
    }
    Some(msg)
}

/// `SIGKILL` for 9.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map_or(format!("signal {sig}"), |s| s.as_str().to_string())
}

/// Loads the programs and attaches the probe table for this kernel; `events` is the opened
/// `--events` file.
pub fn open_session(
    p: &crate::cli::ProbeArgs,
    events: Option<&mut OutFile>,
    families: &[&'static dyn Family],
    late_calls: bool,
) -> Result<Session> {
    let mut offsets = kernel::btf::offsets().map_err(|e| fail(Code::Runtime, format!("{e:#}")))?;
    let without_pages = p.without.contains(&crate::cli::ProbeGroup::PageAlloc);
    if without_pages {
        // Nor are pipe pages counted from the per-CPU counters.
        offsets.pgalloc_count = 0;
    }
    // The event stream feeds --events, --perfetto or both.
    let keep = p.perfetto.is_some();
    let events = (events.is_some() || keep).then_some((events, p.events_buffer, keep));
    let block_stacks = !p.without.contains(&crate::cli::ProbeGroup::BlockStacks);
    let mut session = Session::load(&offsets, events, p.floor, block_stacks, late_calls)?;
    let mut without_rows = Vec::new();
    if without_pages {
        without_rows.extend(["page_alloc", "pipe_pages"]);
    }
    session.attach(ProbeOptions {
        without_rows,
        tier: p.tier,
        no_fentry: p.no_fentry,
        sample_hz: p.sampling_hz(),
        families: families.to_vec(),
    })?;
    Ok(session)
}

/// One line saying which mechanisms measure the data path and why the better ones were not used.
pub fn tier_summary(choices: &[Choice]) -> String {
    let mut mechs: Vec<&str> = Vec::new();
    for c in choices.iter().filter_map(|c| c.chosen.as_ref()) {
        let m = match c.mechanism {
            Mechanism::Fentry | Mechanism::Kprobe => "function",
            Mechanism::Tracepoint => "tracepoint",
            Mechanism::PerfEvent => "sampling",
        };
        if !mechs.contains(&m) {
            mechs.push(m);
        }
    }
    // The first data-path row that fell back says why the better tiers were not used.
    let why: Vec<String> = choices
        .iter()
        .find(|c| c.chosen.is_some() && c.skipped.iter().any(|s| !s.reason.starts_with("not needed")))
        .map(|c| {
            c.skipped
                .iter()
                .filter(|s| !s.reason.starts_with("not needed"))
                .map(|s| {
                    // The last two parts of the error chain say enough; `ipctrace probes` has it all.
                    let parts: Vec<&str> = s.reason.split(": ").collect();
                    format!("{}: {}", s.mechanism.name(), parts[parts.len().saturating_sub(2)..].join(": "))
                })
                .collect()
        })
        .unwrap_or_default();
    if why.is_empty() { mechs.join("+") } else { format!("{} ({})", mechs.join("+"), why.join("; ")) }
}

pub async fn run(args: &RunArgs, events: Option<&mut OutFile>) -> Result<Outcome> {
    let mut stops = Stops::catch()?;
    for (t, why) in args.skipped() {
        crate::warn(&format!("ipctrace: --transport all: {t} not run: {why}"));
    }
    // Only the hooks the chosen transports need (some fire for all network traffic).
    let mut families: Vec<&'static dyn Family> = Vec::new();
    for t in args.transports() {
        let f = family(t);
        if !families.iter().any(|g| g.name() == f.name()) {
            families.push(f);
        }
    }
    let mut session = open_session(&args.probes, events, &families, false)?;
    session.require(&families)?;
    let show_progress = args.output.format == Format::Table && std::io::stderr().is_terminal();
    let deadline = args.duration.map(|d| Instant::now() + d);

    let mut runs = Vec::new();
    let mut ended_by = EndedBy::Completed;
    let mut target_failure = None;
    let mut sweep = None;
    let mut unknown = 0;
    if args.sweep {
        let (points, why) = run_sweep(args, &mut session, &mut stops, deadline, &mut unknown).await?;
        sweep = Some(points);
        ended_by = why;
    }
    for &t in args.transports().iter().filter(|_| !args.sweep) {
        let name = t.name();
        let launch = Launch { transport: t, ..base_launch(args) };
        if t.is_shm() {
            check_dev_shm(&launch)?;
        }
        let mut pair = spawn_pair(&launch)?;
        targets(&mut session, &pair)?;
        let f = family(t);
        let pb = progress(show_progress, args.total, t);
        let t0 = Instant::now();
        pair.open_gates()?;
        let progress = pb.as_ref().map(|pb| (pb, f.progress()));
        let why = wait(&mut pair, &mut session, &mut stops, deadline, progress).await?;
        let elapsed_ns = t0.elapsed().as_nanos() as u64;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        if why != EndedBy::Completed {
            // What moved until the stop, with the workloads' own account of it.
            pair.finish_early(Duration::from_secs(2));
            ended_by = why;
        }
        let elapsed_ns = if why == EndedBy::Completed { elapsed_ns } else { t0.elapsed().as_nanos() as u64 };
        let (processes, channels) = collect(&session, &pair, &mut unknown)?;
        if why == EndedBy::Completed && target_failure.is_none() {
            target_failure = failure_message(t, &processes);
        }
        let pid = |role: &str| processes.iter().find(|p| p.role == role).map_or(0, |p| p.pid);
        let what = f.describe(t.kind(), pair.channel_ino.unwrap_or(0), pair.channel_path.as_deref());
        let description = format!("{what} · producer {} -> consumer {}", pid("producer"), pid("consumer"));
        runs.push(conclude::section(
            f,
            conclude::Section {
                transport: name.into(),
                description,
                total: args.total,
                msg_size: args.msg_size,
                data_channel_ino: pair.channel_ino,
                channel_path: pair.channel_path.clone(),
                elapsed_ns,
                channels,
                processes,
                scope: path::Scope::Run,
            },
        ));
        if why != EndedBy::Completed {
            break;
        }
    }
    let stream = session.finish_stream()?;
    unknown += session.unknown_stream_ids();
    // The workloads' tracks are named by transport and role.
    let mut names = session.comms();
    for run in &runs {
        for p in &run.processes {
            names.insert(p.pid, format!("{} {}", run.transport, p.role));
        }
    }
    let timeline = session.take_timeline(names)?;
    let stats = session.program_stats();
    let mut report = Report {
        schema_version: model::SCHEMA_VERSION,
        ipctrace_version: env!("CARGO_PKG_VERSION").into(),
        kernel: kernel::release(),
        command: "run".into(),
        ended_by,
        partial: ended_by != EndedBy::Completed,
        tier: tier_summary(&session.choices),
        probes: session.choices.clone(),
        overview: None,
        runs,
        comparison: None,
        verdict: None,
        event_stream: stream,
        sweep,
        crossovers: Vec::new(),
        command_exit: None,
        loss: observe::loss_from(&session.losses()?, unknown, observe::skipped_runs(&stats)),
        program_costs: observe::program_costs(&stats),
        timeline,
    };
    conclude::finish(&mut report);
    Ok(Outcome { report, target_failure })
}

#[cfg(test)]
mod tests {
    use workloads::spawn::Ended;

    use super::*;

    fn proc(pid: u32, role: &str, exit_code: Option<i32>, signal: Option<i32>) -> Process {
        let exit = Some(Ended { exit_code, signal, ..Default::default() });
        Process { pid, role: role.into(), observed: Default::default(), witness: None, exit }
    }

    #[test]
    fn failures_name_the_cause_first() {
        let ok = [proc(1, "producer", Some(0), None), proc(2, "consumer", Some(0), None)];
        assert_eq!(failure_message(Transport::Pipe, &ok), None);
        let killed = [proc(1, "producer", Some(1), None), proc(2, "consumer", None, Some(libc::SIGKILL))];
        assert_eq!(
            failure_message(Transport::Pipe, &killed).unwrap(),
            "the pipe consumer (pid 2) was killed by SIGKILL; then the pipe producer (pid 1) exited with code 1; \
             see the workload's message above"
        );
        let bus = [proc(1, "producer", None, Some(libc::SIGBUS)), proc(2, "consumer", Some(1), None)];
        assert!(
            failure_message(Transport::ShmFutex, &bus)
                .unwrap()
                .ends_with("(SIGBUS in a shared-memory workload: is /dev/shm full?)")
        );
    }
}
