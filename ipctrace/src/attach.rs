//! `ipctrace attach --pid ...` and `ipctrace trace -- CMD`: trace processes ipctrace did not
//! build, report every channel between them in the same path model as `run`. Channels are
//! found and paired by their transport family (`Family::pair`: for a pipe the writer is the
//! producer, the reader the consumer); a side outside the targets is an "external peer".

use std::{
    io::Write,
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    cli::{AttachArgs, TraceArgs},
    conclude, discover,
    exit::{Code, fail},
    kernel,
    model::{self, EndedBy, Report},
    observe,
    outputs::OutFile,
    run::{open_session, tier_summary},
    sections::{self, Discovery, Processes},
    session::Session,
    stops::Stops,
    transport,
};

/// Why tracing should stop now, if it should.
enum Stop {
    Signal,
    Deadline,
    Exited,
}

/// How often /proc is read again for the targets' channels while tracing.
const RESCAN: Duration = Duration::from_millis(200);

/// Traces until `done`, a signal or the deadline; meanwhile drains the event stream and looks
/// at the targets' channels in /proc again (new processes, channels opened later).
async fn wait_until(
    session: &mut Session,
    stops: &mut Stops,
    found: &mut Discovery,
    deadline: Option<Instant>,
    follow_peers: bool,
    mut done: impl FnMut() -> bool,
) -> Result<Stop> {
    let mut last_scan = Instant::now();
    loop {
        session.drain()?;
        if last_scan.elapsed() >= RESCAN {
            rescan(session, found, follow_peers)?;
            last_scan = Instant::now();
        }
        if done() {
            return Ok(Stop::Exited);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Stop::Deadline);
        }
        if stops.within(Duration::from_millis(50)).await {
            return Ok(Stop::Signal);
        }
    }
}

/// Reads the live targets' channels again; new shm mappings go to the programs' range table,
/// and with `follow_peers` the processes at the other end of their sockets become targets.
fn rescan(session: &mut Session, found: &mut Discovery, follow_peers: bool) -> Result<()> {
    let seen = found.scan(session.targets());
    for (pid, r) in seen.ranges {
        session.add_ranges(pid, &r)?;
    }
    if follow_peers && !seen.new_peers.is_empty() {
        for &pid in &seen.new_peers {
            session.add_target(pid)?;
        }
        let names: Vec<String> = seen.new_peers.iter().map(|p| format!("{p} ({})", found.outside_names[p])).collect();
        crate::warn(&format!("ipctrace: following socket peers: {}", names.join(", ")));
        // Their channels and mappings, now.
        for (pid, r) in found.scan(seen.new_peers.iter().copied()).ranges {
            session.add_ranges(pid, &r)?;
        }
    }
    Ok(())
}

/// The report of an attach or trace session.
fn report(
    session: &mut Session,
    command: &str,
    stop: &Stop,
    initial: &[(u32, String)],
    found: &Discovery,
    elapsed_ns: u64,
    command_exit: Option<model::CommandExit>,
) -> Result<Report> {
    let mut unknown = 0;
    let procs = Processes::read(session, initial);
    let roots: Vec<u32> = initial.iter().map(|(p, _)| *p).collect();
    let (runs, overview) = sections::build(session, &procs, &roots, found, elapsed_ns, &mut unknown)?;
    let ended_by = match stop {
        Stop::Signal => EndedBy::Interrupted,
        Stop::Deadline => EndedBy::Duration,
        Stop::Exited => EndedBy::Completed,
    };
    let stream = session.finish_stream()?;
    let unknown = unknown + session.unknown_stream_ids();
    let timeline = session.take_timeline(procs.comms.clone())?;
    let stats = session.program_stats();
    let mut r = Report {
        schema_version: model::SCHEMA_VERSION,
        ipctrace_version: env!("CARGO_PKG_VERSION").into(),
        kernel: kernel::release(),
        command: command.into(),
        ended_by,
        // Attach has no planned end: a report cut by Ctrl-C or --duration is complete for its window.
        partial: false,
        tier: tier_summary(&session.choices),
        probes: session.choices.clone(),
        overview: Some(overview),
        runs,
        comparison: None,
        verdict: None,
        event_stream: stream,
        sweep: None,
        crossovers: Vec::new(),
        command_exit,
        loss: observe::loss_from(&session.losses()?, unknown, observe::skipped_runs(&stats)),
        program_costs: observe::program_costs(&stats),
        timeline,
    };
    conclude::finish(&mut r);
    Ok(r)
}

/// What a report without any channel says, for exit code 3.
fn nothing_observed(r: &Report, pids: &[u32]) -> Option<String> {
    if r.runs.iter().any(|run| run.path.stages.iter().any(|s| s.observed))
        || r.overview.as_ref().is_some_and(|o| !o.not_analysed.is_empty())
    {
        return None;
    }
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let families: Vec<&str> = transport::FAMILIES.iter().map(|f| f.name()).collect();
    Some(format!(
        "no IPC observed for PID {} (no traffic on any channel ipctrace analyses ({}) while tracing; tiers: {})",
        list.join(", "),
        families.join(", "),
        r.tier
    ))
}

pub async fn attach(args: &AttachArgs, events: Option<&mut OutFile>) -> Result<(Report, Option<String>)> {
    let mut stops = Stops::catch()?;
    let mut names: Vec<(u32, String)> = Vec::new();
    let mut pids: Vec<u32> = Vec::new();
    for &given in &args.pids {
        if discover::is_self(given) {
            return Err(fail(Code::Usage, format!("PID {given} is ipctrace itself")));
        }
        // A thread id stands for its process: the filter and /proc discovery work per process.
        let pid = match discover::tgid_of(given) {
            Some(tgid) if tgid != given => {
                crate::warn(&format!("ipctrace: {given} is a thread of process {tgid}; tracing process {tgid}"));
                tgid
            }
            _ => given,
        };
        if pids.contains(&pid) {
            continue;
        }
        names.push((pid, discover::check_pid(pid)?));
        pids.push(pid);
    }
    let mut session = open_session(&args.probes, events, transport::FAMILIES, true)?;
    session.require(transport::FAMILIES)?;
    let mut found = Discovery::default();
    for &pid in &pids {
        session.add_target(pid)?;
    }
    rescan(&mut session, &mut found, args.follow_peers)?;
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    // Machine-readable: scripts and tests start the traffic after this line.
    let shown: Vec<String> = names.iter().map(|(p, n)| format!("{p} ({n})")).collect();
    crate::warn(&format!(
        "ipctrace: READY pids={} · attached to {} · Ctrl-C to stop",
        list.join(","),
        shown.join(", ")
    ));
    let t0 = Instant::now();
    let deadline = args.duration.map(|d| t0 + d);
    let targets = pids.clone();
    let follow = args.follow_peers;
    let stop = wait_until(&mut session, &mut stops, &mut found, deadline, follow, || {
        targets.iter().all(|&p| discover::exited(p))
    })
    .await?;
    // Channels opened at the last moment count too.
    rescan(&mut session, &mut found, follow)?;
    let r = report(&mut session, "attach", &stop, &names, &found, t0.elapsed().as_nanos() as u64, None)?;
    let why = nothing_observed(&r, &pids);
    Ok((r, why))
}

/// The traced command's first process, reaped by hand: as a child subreaper ipctrace also
/// reaps the command's orphans, and `waitpid(-1)` may return the root among them.
struct Root {
    pid: u32,
    status: Option<i32>,
    /// The root has ended and its descendants were said to be still running.
    told: bool,
}

impl Root {
    /// Reaps every ended child (the root's status is kept); true once the root has ended.
    fn reap(&mut self) -> bool {
        self.reap_all().0
    }

    /// Reaps every ended child: (has the root ended, has ipctrace children left). ipctrace is
    /// the tree's subreaper, so every live descendant of the command (a daemon that left its
    /// shell, a `setsid` one) is a child of ipctrace or below one.
    fn reap_all(&mut self) -> (bool, bool) {
        let more = loop {
            let mut st = 0;
            // SAFETY: waitpid on our own children, non-blocking.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r < 0 {
                // ECHILD: none left (an interrupted call says nothing: asked again next time).
                break std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD);
            }
            if r == 0 {
                break true;
            }
            if r as u32 == self.pid {
                self.status = Some(st);
            }
        };
        (self.status.is_some(), more)
    }

    /// Is the traced tree over: the command ended and no descendant of it is left? (Like
    /// `strace -f`, ipctrace follows what the command left running until it ends, or until
    /// Ctrl-C or `--duration`, which end it.)
    fn tree_ended(&mut self, cmd: &str) -> bool {
        let (root, more) = self.reap_all();
        if root && more && !self.told {
            self.told = true;
            crate::warn(&format!(
                "ipctrace: {cmd} exited; tracing what it left running until that ends too (Ctrl-C or --duration ends it)"
            ));
        }
        root && !more
    }

    fn exit(&self, stopped_by_ipctrace: bool) -> Option<model::CommandExit> {
        let st = self.status?;
        let (exit_code, signal) = if libc::WIFEXITED(st) {
            (Some(libc::WEXITSTATUS(st)), None)
        } else {
            (None, libc::WIFSIGNALED(st).then(|| crate::run::signal_name(libc::WTERMSIG(st))))
        };
        Some(model::CommandExit { pid: self.pid, exit_code, signal, stopped_by_ipctrace })
    }
}

/// Is `pid` a live descendant of this process? (The kernel filter keeps tgids that may have
/// exited; a recycled pid is never a descendant of ours.)
fn is_descendant(pid: u32) -> bool {
    let me = std::process::id();
    let mut p = pid;
    for _ in 0..256 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid: u32 = after.split_whitespace().nth(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        if ppid == me {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        p = ppid;
    }
    false
}

/// Ends the whole command tree: every process the filter followed from the command that is
/// still our descendant gets SIGTERM, then SIGKILL after a second; all are reaped.
fn end_tree(session: &Session, root: &mut Root) {
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let alive: Vec<u32> = session.targets().into_iter().filter(|&p| is_descendant(p)).collect();
        if alive.is_empty() {
            break;
        }
        for pid in &alive {
            // SAFETY: kill(2) on a live descendant.
            unsafe { libc::kill(*pid as i32, sig) };
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            root.reap();
            if !alive.iter().any(|&p| is_descendant(p) && !discover::exited(p)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    root.reap();
}

pub async fn trace(args: &TraceArgs, events: Option<&mut OutFile>) -> Result<(Report, Option<String>)> {
    // A command that cannot run is said before anything is traced (as a shell would find it:
    // PATH, or the path given).
    if which::which(&args.cmd[0]).is_err() {
        let what =
            if args.cmd[0].to_string_lossy().contains('/') { "not an executable file" } else { "not found in PATH" };
        return Err(fail(Code::Target, format!("cannot run {}: {what}", args.cmd[0].to_string_lossy())));
    }
    let mut stops = Stops::catch()?;
    let mut session = open_session(&args.probes, events, transport::FAMILIES, false)?;
    session.require(transport::FAMILIES)?;
    // Orphans of the command (`cmd &` in a shell that exits) are reparented to ipctrace, so
    // Ctrl-C can end the whole tree and nothing stays a zombie.
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    // The command starts as this binary in its `__gate` mode (same pid), which waits on fd 3
    // until the pid is in the filter and then execs the command: nothing it does is missed.
    // A Unix socket, not a pipe: the gate byte must not count as the command's IPC.
    let (gate_w, gate_r) = std::os::unix::net::UnixStream::pair()?;
    let gate_fd = std::os::fd::AsRawFd::as_raw_fd(&gate_r);
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(&args.cmd[0]).args(["__gate", "--"]).args(&args.cmd);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Until the gate opens the command dies with ipctrace; the gate clears this
            // before exec, so a SIGKILLed ipctrace leaves the command running (as strace does).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if libc::dup2(gate_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        fail(Code::Runtime, format!("cannot start the gate for {}: {e}", args.cmd[0].to_string_lossy()))
    })?;
    let mut root = Root { pid: child.id(), status: None, told: false };
    drop(child);
    // The gate is ipctrace's channel, not the command's.
    for s in [&gate_w, &gate_r] {
        session.ignore_channel(nix::sys::stat::fstat(s)?.st_ino)?;
    }
    drop(gate_r);
    session.add_target(root.pid)?;
    (&gate_w).write_all(b"g")?;
    drop(gate_w);
    crate::warn(&format!(
        "ipctrace: READY pids={} · tracing {} and its children",
        root.pid,
        args.cmd[0].to_string_lossy()
    ));
    let t0 = Instant::now();
    let deadline = args.duration.map(|d| t0 + d);
    let mut found = Discovery::default();
    let cmd_name = args.cmd[0].to_string_lossy().into_owned();
    let stop = wait_until(&mut session, &mut stops, &mut found, deadline, false, || root.tree_ended(&cmd_name)).await?;
    let stopped = !matches!(stop, Stop::Exited);
    if stopped {
        end_tree(&session, &mut root);
    }
    let name = args.cmd[0].to_string_lossy().rsplit('/').next().unwrap_or("?").to_string();
    let elapsed = t0.elapsed().as_nanos() as u64;
    let r = report(&mut session, "trace", &stop, &[(root.pid, name)], &found, elapsed, root.exit(stopped))?;
    let why = nothing_observed(&r, &[root.pid]);
    Ok((r, why))
}

/// The `__gate` mode: block until ipctrace writes a byte on fd 3, then become the command.
pub fn gate_then_exec(cmd: &[std::ffi::OsString]) -> std::process::ExitCode {
    let mut b = [0u8; 1];
    // SAFETY: fd 3 was placed by the parent; closing it after the read.
    let n = unsafe { libc::read(3, b.as_mut_ptr().cast(), 1) };
    unsafe { libc::close(3) };
    if n != 1 {
        crate::warn(&format!("ipctrace: the tracer went away before starting {}", cmd[0].to_string_lossy()));
        return std::process::ExitCode::from(1);
    }
    // From here the command outlives a SIGKILLed ipctrace, as it would under strace.
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    let err = Command::new(&cmd[0]).args(&cmd[1..]).exec();
    crate::warn(&format!("ipctrace: cannot run {}: {err}", cmd[0].to_string_lossy()));
    std::process::ExitCode::from(127)
}
