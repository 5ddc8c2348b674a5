//! Launcher side: starts a producer and a consumer by re-executing a binary (never by forking
//! a multi-threaded launcher), each with the parent-death signal set, in its own process group,
//! held at a start gate; reaps them with wait4 so their rusage is a witness too.

use std::{
    ffi::OsString,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{net::UnixStream, process::CommandExt},
    },
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    control::GO,
    role::{Role, RoleTransport},
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
    pub transport: RoleTransport,
    pub total: u64,
    pub msg_size: u64,
    pub corrupt_at: Option<u64>,
}

/// Resource usage of a reaped process, from wait4(2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rusage {
    pub minflt: u64,
    pub majflt: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
    pub utime_us: u64,
    pub stime_us: u64,
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
    pub ended: Option<Ended>,
}

/// A producer/consumer pair and the channel between them.
pub struct Pair {
    pub workers: Vec<Worker>,
    /// Inode of the data channel (pipe or FIFO).
    pub channel_ino: u64,
    // Keeps a FIFO's private directory alive until the pair is dropped.
    _dir: Option<tempdir::TempDir>,
}

mod tempdir {
    //! A private directory removed on drop (for FIFOs).
    use std::path::PathBuf;
    pub struct TempDir(pub PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn spawn_one(l: &Launch, role: Role, data: &OwnedFd) -> Result<Worker> {
    let (ours, theirs) = UnixStream::pair().context("creating the control socket")?;
    let role_name = match role {
        Role::Producer => "producer",
        Role::Consumer => "consumer",
    };
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
    let ctrl_raw = theirs.as_raw_fd();
    let data_raw = data.as_raw_fd();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            // Own process group: a terminal's Ctrl-C reaches the launcher, which stops us.
            libc::setpgid(0, 0);
            let c = libc::fcntl(ctrl_raw, libc::F_DUPFD_CLOEXEC, 64);
            let d = libc::fcntl(data_raw, libc::F_DUPFD_CLOEXEC, 64);
            if c < 0 || d < 0 || libc::dup2(c, 3) < 0 || libc::dup2(d, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the {role_name} ({})", l.exe.display()))?;
    ours.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(Worker {
        role,
        pid: child.id(),
        ctrl: ours,
        ended: None,
    })
}

/// Starts both sides of `l.transport`, held at their start gates.
pub fn spawn_pair(l: &Launch) -> Result<Pair> {
    match l.transport {
        RoleTransport::Pipe => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .context("creating the data pipe")?;
            let ino = nix::sys::stat::fstat(&r)
                .context("fstat of the data pipe")?
                .st_ino;
            let producer = spawn_one(l, Role::Producer, &w)?;
            let consumer = spawn_one(l, Role::Consumer, &r)?;
            // Our copies of the ends close here, so the consumer sees EOF when the producer ends.
            drop((r, w));
            Ok(Pair {
                workers: vec![producer, consumer],
                channel_ino: ino,
                _dir: None,
            })
        }
        RoleTransport::Fifo => bail!("fifo workloads are not implemented yet"),
    }
}

impl Worker {
    /// Lets the process start its transfer.
    pub fn open_gate(&mut self) -> Result<()> {
        self.ctrl.write_all(&[GO]).context("opening the start gate")
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
            bail!(
                "wait4({}) failed: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        let tv_us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        let rusage = Rusage {
            minflt: ru.ru_minflt as u64,
            majflt: ru.ru_majflt as u64,
            nvcsw: ru.ru_nvcsw as u64,
            nivcsw: ru.ru_nivcsw as u64,
            utime_us: tv_us(ru.ru_utime),
            stime_us: tv_us(ru.ru_stime),
        };
        let mut buf = Vec::new();
        let _ = self.ctrl.read_to_end(&mut buf);
        let witness = buf
            .split(|b| *b == b'\n')
            .find_map(|l| serde_json::from_slice(l).ok());
        let (exit_code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else {
            (
                None,
                libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            )
        };
        self.ended = Some(Ended {
            exit_code,
            signal,
            rusage,
            witness,
        });
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

    pub fn open_gates(&mut self) -> Result<()> {
        self.workers.iter_mut().try_for_each(Worker::open_gate)
    }

    /// Reaps what has ended; true when every worker has.
    pub fn reap(&mut self) -> Result<bool> {
        let mut all = true;
        for w in &mut self.workers {
            all &= w.try_reap()?;
        }
        Ok(all)
    }

    /// Stops every worker still running (SIGKILL) and reaps it.
    pub fn kill_and_reap(&mut self) {
        for w in &self.workers {
            w.signal(libc::SIGKILL);
        }
        for _ in 0..200 {
            if self.reap().unwrap_or(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}
