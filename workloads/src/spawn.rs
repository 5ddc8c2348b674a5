//! Launcher side: starts a producer and a consumer by re-executing a binary (never by forking
//! a multi-threaded launcher), each with the parent-death signal set, in its own process group,
//! held at a start gate; reaps them with wait4 so their rusage is a witness too.

use std::{
    ffi::OsString,
    io::{Read, Write},
    os::{
        fd::AsRawFd,
        unix::{net::UnixStream, process::CommandExt},
    },
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    control::{READY, gate_message},
    role::{RingArgs, Role, ShapeArgs},
    stream::Rusage,
    transport::{Channel, Transport},
    witness::Witness,
};

/// How to start the role processes.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The binary to execute (ipctrace or workloads) ...
    pub exe: PathBuf,
    /// ... the name the processes show in `ps` ...
    pub arg0: OsString,
    /// ... and the arguments that select its role mode (`__workload` or `role`).
    pub lead: Vec<OsString>,
    pub transport: Transport,
    pub total: u64,
    pub msg_size: u64,
    pub corrupt_at: Option<u64>,
    /// Ring options (shm transports).
    pub ring: RingArgs,
    /// Time-bounded and/or ping-pong.
    pub shape: ShapeArgs,
    /// Pin the producer and the consumer to these CPUs.
    pub cpus: Option<[usize; 2]>,
    /// Prefix of shm object names, so a test can check none is left (`/PREFIX-PID-N-RANDOM`).
    pub shm_prefix: String,
    /// Socket transports: a named socket instead of a socketpair (`@name`: abstract).
    pub socket_path: Option<String>,
    /// POSIX mq: the queue's name (`/NAME`) instead of a random one.
    pub mq_name: Option<String>,
    /// POSIX mq: the queue's depth (messages) instead of the default (10, or the limit).
    pub mq_depth: Option<u64>,
}

/// How a role process ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ended {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub rusage: Rusage,
    /// The witness the process sent (kept in `model::Process::witness` for reports).
    #[serde(skip)]
    pub witness: Option<Witness>,
}

impl Ended {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// One role process.
pub struct Worker {
    pub role: Role,
    pub pid: u32,
    ctrl: UnixStream,
    /// Inodes of both ends of the control socket (a tracer ignores them).
    pub ctrl_inos: [u64; 2],
    pub ended: Option<Ended>,
}

/// A producer/consumer pair and the channel between them.
pub struct Pair {
    pub workers: Vec<Worker>,
    /// Inode of the data channel (pipe or FIFO); shm objects are created by the producer.
    pub channel_ino: Option<u64>,
    /// FIFO path or shm name.
    pub channel_path: Option<String>,
    /// Removes what the channel left (FIFO directory, shm name) when the pair is dropped.
    channel: Channel,
}

/// 64 random bits from the kernel (getrandom(2)).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom into a local buffer of the given length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Never predictable: fall back to the clock and the pid mixed.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32);
    }
    u64::from_ne_bytes(b)
}

fn spawn_one(l: &Launch, role: Role, ch: &Channel) -> Result<Worker> {
    let fds = &ch.fds[if role == Role::Producer { 0 } else { 1 }];
    let (data, ack, path) = (fds.data.as_ref(), fds.ack.as_ref(), ch.path.as_deref());
    let (ours, theirs) = UnixStream::pair().context("creating the control socket")?;
    let role_name = role.name();
    let mut cmd = Command::new(&l.exe);
    cmd.arg0(&l.arg0)
        .args(&l.lead)
        .args(["--transport", l.transport.name(), "--role", role_name])
        .arg(format!("--total={}", l.total))
        .arg(format!("--msg-size={}", l.msg_size))
        .args(["--ctrl-fd", "3", "--data-fd", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let (Some(c), Role::Producer) = (l.corrupt_at, role) {
        cmd.arg(format!("--corrupt-at={c}"));
    }
    if let Some(p) = path {
        cmd.arg(format!("--path={p}"));
    }
    if let Some(s) = l.ring.slot_size {
        cmd.arg(format!("--slot-size={s}"));
    }
    if let Some(s) = l.ring.slots {
        cmd.arg(format!("--slots={s}"));
    }
    cmd.arg(format!("--spin={}", l.ring.spin));
    if l.ring.populate {
        cmd.arg("--populate");
    }
    if let Some(ms) = l.shape.duration_ms {
        cmd.arg(format!("--duration-ms={ms}"));
    }
    if l.shape.ping_pong {
        cmd.arg("--ping-pong");
    }
    if l.shape.splice_consumer {
        cmd.arg("--splice-consumer");
    }
    if let Some(n) = l.shape.mq_priorities {
        cmd.arg(format!("--mq-priorities={n}"));
    }
    if let Some(b) = l.shape.recv_buffer {
        cmd.arg(format!("--recv-buffer={b}"));
    }
    if l.shape.sendfile_producer {
        cmd.arg("--sendfile-producer");
    }
    if let Some(cpus) = l.cpus {
        cmd.arg(format!("--cpu={}", cpus[if role == Role::Producer { 0 } else { 1 }]));
    }
    let ctrl_raw = theirs.as_raw_fd();
    let data_raw = data.map_or(-1, |d| d.as_raw_fd());
    let ack_raw = ack.map_or(-1, |d| d.as_raw_fd());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // SIGTERM, not SIGKILL: the workload's handler unlinks its shm name or FIFO first.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            // Own process group: a terminal's Ctrl-C reaches the launcher, which stops us.
            libc::setpgid(0, 0);
            let c = libc::fcntl(ctrl_raw, libc::F_DUPFD_CLOEXEC, 64);
            let dup_high = |fd: i32| if fd >= 0 { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) } else { -1 };
            let (d, a) = (dup_high(data_raw), dup_high(ack_raw));
            if c < 0
                || libc::dup2(c, 3) < 0
                || (data_raw >= 0 && (d < 0 || libc::dup2(d, 4) < 0))
                || (ack_raw >= 0 && (a < 0 || libc::dup2(a, 5) < 0))
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting the {role_name} ({})", l.exe.display()))?;
    ours.set_read_timeout(Some(Duration::from_secs(2)))?;
    let ino = |s: &UnixStream| nix::sys::stat::fstat(s).map(|st| st.st_ino).unwrap_or(0);
    let ctrl_inos = [ino(&ours), ino(&theirs)];
    Ok(Worker { role, pid: child.id(), ctrl: ours, ctrl_inos, ended: None })
}

/// Starts both sides of `l.transport`, held at their start gates.
pub fn spawn_pair(l: &Launch) -> Result<Pair> {
    let mut channel = (l.transport.spec().setup)(l)?;
    let mut workers = Vec::new();
    for role in [Role::Producer, Role::Consumer] {
        workers.push(spawn_one(l, role, &channel)?);
    }
    // Our copies of the ends close here, so the consumer sees EOF when the producer ends.
    channel.fds = Default::default();
    let mut pair = Pair { workers, channel_ino: channel.ino, channel_path: channel.path.clone(), channel };
    // Start-up (exec, loader, runtime) is over before anyone traces or times the pair.
    for w in &mut pair.workers {
        w.wait_ready()?;
    }
    Ok(pair)
}

impl Worker {
    /// Waits until the process has started up and blocks at its gate.
    pub fn wait_ready(&mut self) -> Result<()> {
        let mut b = [0u8; 1];
        self.ctrl.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = self.ctrl.read_exact(&mut b);
        self.ctrl.set_read_timeout(Some(Duration::from_secs(2)))?;
        match r {
            Ok(()) if b[0] == READY => {}
            _ => bail!("the {} (pid {}) did not start (no ready message)", self.role.name(), self.pid),
        }
        // It says ready just before blocking on the gate: wait until it sleeps there, so that
        // block (a context switch) happens before a tracer starts counting.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
            if stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('S')) {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// Lets the process start its transfer; tells it which pid its peer has.
    pub fn open_gate(&mut self, peer: u32) -> Result<()> {
        self.ctrl.write_all(&gate_message(peer)).context("opening the start gate")
    }

    /// Reaps the process if it has ended (non-blocking); true once it has.
    pub fn try_reap(&mut self) -> Result<bool> {
        if self.ended.is_some() {
            return Ok(true);
        }
        let mut status = 0;
        // SAFETY: plain wait4 on our own child with a zeroed rusage out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(self.pid as i32, &mut status, libc::WNOHANG, &mut ru) };
        if r == 0 {
            return Ok(false);
        }
        if r < 0 {
            bail!("wait4({}) failed: {}", self.pid, std::io::Error::last_os_error());
        }
        let rusage = Rusage::from_libc(&ru);
        let mut buf = Vec::new();
        let _ = self.ctrl.read_to_end(&mut buf);
        let witness = buf.split(|b| *b == b'\n').find_map(|l| serde_json::from_slice(l).ok());
        let (exit_code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else {
            (None, libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)))
        };
        self.ended = Some(Ended { exit_code, signal, rusage, witness });
        Ok(true)
    }

    /// Sends `sig` to the process (ignored if it has already been reaped).
    pub fn signal(&self, sig: i32) {
        if self.ended.is_none() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(self.pid as i32, sig) };
        }
    }
}

impl Pair {
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// The control sockets' inodes (both ends of each): not the workload's traffic.
    pub fn control_inodes(&self) -> Vec<u64> {
        self.workers.iter().flat_map(|w| w.ctrl_inos).filter(|&i| i != 0).collect()
    }

    pub fn open_gates(&mut self) -> Result<()> {
        let pids = self.pids();
        for (i, w) in self.workers.iter_mut().enumerate() {
            w.open_gate(pids[1 - i])?;
        }
        Ok(())
    }

    /// Reaps what has ended; true when every worker has.
    pub fn reap(&mut self) -> Result<bool> {
        let mut all = true;
        for w in &mut self.workers {
            all &= w.try_reap()?;
        }
        Ok(all)
    }

    /// Asks the workers to finish now (SIGUSR2: the producer ends its stream, the consumer
    /// drains it and both report their witness), waits up to `grace` for them, then stops
    /// whatever still runs.
    pub fn finish_early(&mut self, grace: Duration) {
        for w in &self.workers {
            w.signal(libc::SIGUSR2);
        }
        let t0 = std::time::Instant::now();
        while t0.elapsed() < grace {
            if self.reap().unwrap_or(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill_and_reap();
    }

    /// Stops every worker still running (SIGTERM, so it can unlink its names; SIGKILL after
    /// a second) and reaps it.
    pub fn kill_and_reap(&mut self) {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            for w in &self.workers {
                w.signal(sig);
            }
            for _ in 0..100 {
                if self.reap().unwrap_or(true) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Waits until every worker has ended (polling, 2 ms).
    pub fn wait_all(&mut self) -> Result<()> {
        while !self.reap()? {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The processes first; then `channel` drops and removes what they left.
        self.kill_and_reap();
        let _ = &self.channel;
    }
}
