//! The built-in transports, registered in one list. Each family module (`pipe`, `shm`) holds,
//! per transport, the channel set-up the launcher does, the role loops and the witness they
//! fill; this file maps a `Transport` to its `Spec` and to the kernel object it uses
//! (`ChannelKind`), so a transport without an implementation does not compile.

pub mod mq;
pub mod pipe;
pub mod shm;
pub mod uds;

use std::{os::fd::OwnedFd, path::PathBuf};

use anyhow::Result;
use clap::ValueEnum;
pub use ipctrace_common::ChannelKind;

use crate::{peer::Peer, role::RoleArgs, spawn::Launch, stream::StreamOpts, witness::Witness};

/// Transports of the built-in workloads (`--transport` values are the kebab-case names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Transport {
    /// Anonymous pipe.
    Pipe,
    /// Named pipe in a private directory, opened by path by both sides.
    Fifo,
    /// POSIX shm ring synchronized with FUTEX_WAIT/FUTEX_WAKE.
    ShmFutex,
    /// POSIX shm ring synchronized with process-shared POSIX semaphores.
    ShmSem,
    /// POSIX shm ring synchronized with two eventfds (write to notify, poll + read to wait).
    ShmEventfd,
    /// AF_UNIX stream socket (a socketpair, or --socket-path).
    UnixStream,
    /// AF_UNIX datagram socket: one datagram per message.
    UnixDgram,
    /// AF_UNIX seqpacket socket: connected, one message per send.
    UnixSeqpacket,
    /// POSIX message queue (mq_timedsend/mq_timedreceive).
    Mq,
    /// SysV message queue (msgsnd/msgrcv).
    SysvMsg,
}

impl Transport {
    /// Every built-in transport, in the order reports, benches and tests list them.
    pub const ALL: [Transport; 10] = [
        Transport::Pipe,
        Transport::Fifo,
        Transport::ShmFutex,
        Transport::ShmSem,
        Transport::ShmEventfd,
        Transport::UnixStream,
        Transport::UnixDgram,
        Transport::UnixSeqpacket,
        Transport::Mq,
        Transport::SysvMsg,
    ];

    /// What `ipctrace run` compares when no transport is named: the seed's comparison.
    pub const DEFAULT: [Transport; 2] = [Transport::Pipe, Transport::ShmFutex];

    /// The implementation of this transport.
    pub fn spec(self) -> &'static Spec {
        match self {
            Transport::Pipe => &pipe::PIPE,
            Transport::Fifo => &pipe::FIFO,
            Transport::ShmFutex => &shm::SHM_FUTEX,
            Transport::ShmSem => &shm::SHM_SEM,
            Transport::ShmEventfd => &shm::SHM_EVENTFD,
            Transport::UnixStream => &uds::UNIX_STREAM,
            Transport::UnixDgram => &uds::UNIX_DGRAM,
            Transport::UnixSeqpacket => &uds::UNIX_SEQPACKET,
            Transport::Mq => &mq::MQ,
            Transport::SysvMsg => &mq::SYSV_MSG,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kernel object the transport moves its data through.
    pub fn kind(self) -> ChannelKind {
        self.spec().kind
    }

    /// Shared memory: nothing is copied through the kernel after set-up.
    pub fn is_shm(self) -> bool {
        self.kind() == ChannelKind::Shm
    }

    /// Whether `--splice-consumer` applies (a pipe the consumer can splice from).
    pub fn can_splice(self) -> bool {
        matches!(self.kind(), ChannelKind::AnonPipe | ChannelKind::Fifo)
    }

    /// Whether `--sendfile-producer` applies (a stream socket).
    pub fn can_sendfile(self) -> bool {
        self.kind() == ChannelKind::UnixStream
    }

    /// Whether `--socket-path` applies.
    pub fn is_socket(self) -> bool {
        matches!(self.kind(), ChannelKind::UnixStream | ChannelKind::UnixDgram | ChannelKind::UnixSeqpacket)
    }

    /// A message queue (POSIX or SysV).
    pub fn is_queue(self) -> bool {
        matches!(self.kind(), ChannelKind::MsgQueue | ChannelKind::SysvMsg)
    }

    /// Whether `--mq-name` applies.
    pub fn is_posix_mq(self) -> bool {
        self.kind() == ChannelKind::MsgQueue
    }

    /// The largest message this transport carries on this machine, if it has a limit
    /// (datagrams, queues), with what sets it.
    pub fn max_message(self) -> Option<(u64, String)> {
        self.max_message_with(None)
    }

    /// `max_message` for a POSIX queue of `mq_depth` messages (the default depth if None).
    pub fn max_message_with(self, mq_depth: Option<u64>) -> Option<(u64, String)> {
        match self.kind() {
            ChannelKind::UnixDgram | ChannelKind::UnixSeqpacket => uds::max_datagram(self.kind())
                .ok()
                .map(|m| (m, "the socket's send buffer (SO_SNDBUF, net.core.wmem_max)".to_string())),
            ChannelKind::MsgQueue | ChannelKind::SysvMsg => mq::max_message(self.kind(), mq_depth),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One transport's implementation.
pub struct Spec {
    pub name: &'static str,
    pub kind: ChannelKind,
    /// Launcher side: creates the channel before the role processes start.
    pub setup: fn(&Launch) -> Result<Channel>,
    /// Role side, before the start gate (e.g. registering names to remove if killed there).
    pub prepare: fn(&RoleArgs) -> Result<()>,
    /// Role side, after the gate: moves the data and returns the witness.
    pub run: fn(&RoleCtx) -> Result<Witness>,
}

/// What a role's loop gets.
pub struct RoleCtx<'a> {
    pub args: &'a RoleArgs,
    pub peer: &'a Peer,
    pub stream: StreamOpts,
}

/// Fds a role process inherits: data at fd 4, acknowledgements (ping-pong) at fd 5.
#[derive(Default)]
pub struct RoleFds {
    pub data: Option<OwnedFd>,
    pub ack: Option<OwnedFd>,
}

/// The channel the launcher made, and what to remove when the pair is gone.
#[derive(Default)]
pub struct Channel {
    /// Producer's and consumer's fds (closed in the launcher once both have started).
    pub fds: [RoleFds; 2],
    /// Inode of the data channel when the launcher knows it (pipe, FIFO).
    pub ino: Option<u64>,
    /// Passed to both roles as `--path`: FIFO path or POSIX shm name.
    pub path: Option<String>,
    pub cleanup: Option<Cleanup>,
}

/// Removed when dropped with its `Channel` (the workloads remove their names themselves; this
/// covers runs that never got there).
pub enum Cleanup {
    Dir(PathBuf),
    /// A file (a named socket).
    Path(PathBuf),
    ShmName(String),
    /// The process that holds a SysV message queue (`mq::setup_sysv`): SIGTERM makes it
    /// remove the queue and exit.
    Keeper(i32),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Cleanup::Path(p) => {
                let _ = std::fs::remove_file(p);
            }
            Cleanup::ShmName(name) => {
                if let Ok(c) = std::ffi::CString::new(name.as_str()) {
                    // SAFETY: valid C string; ENOENT (already unlinked) is the normal case.
                    unsafe { libc::shm_unlink(c.as_ptr()) };
                }
            }
            Cleanup::Keeper(pid) => {
                // SAFETY: signalling and reaping our own child.
                unsafe {
                    libc::kill(*pid, libc::SIGTERM);
                    libc::waitpid(*pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// A `prepare` that has nothing to do.
pub fn nothing_to_prepare(_: &RoleArgs) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_cli_values() {
        for t in Transport::ALL {
            assert_eq!(t.to_possible_value().unwrap().get_name(), t.name());
            assert_eq!(Transport::from_name(t.name()), Some(t));
        }
        assert_eq!(Transport::value_variants().len(), Transport::ALL.len(), "ALL lists every transport");
    }
}
