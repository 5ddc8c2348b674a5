//! What a workload process says about its own run (the witness ipctrace's observations are
//! checked against), and the one-line summary every workload, Rust or C, prints.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    eventfd::EventfdWitness,
    futex::FutexWitness,
    stream::{Rtt, Rusage},
    transport::shm::{SemWitness, ShmInfo},
};

/// Counters a workload process keeps about itself; never filled from BPF.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    pub transport: String,
    pub role: String,
    pub pid: u32,
    /// Payload bytes this side wrote (producer) or read (consumer).
    pub bytes: u64,
    /// Messages written or read (a read returning fewer bytes than asked still counts as one).
    pub messages: u64,
    /// write(2)/read(2) system calls on the data channel, including the final read that sees EOF.
    pub calls: u64,
    /// Consumer only: bytes that matched the pattern before the first wrong one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_bytes: Option<u64>,
    /// Consumer only, datagrams read into a shorter buffer (MSG_TRUNC): the bytes that landed
    /// in the buffer (`bytes` counts the datagrams' full lengths, as recv returned them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_bytes: Option<u64>,
    /// mq/sysv-msg producer: bytes passed to every send call, retried ones included (the
    /// kernel copies a message in before the call waits for room, so a send interrupted by the
    /// workload's timeout and made again is copied twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_bytes: Option<u64>,
    /// mq/sysv-msg with priorities: messages sent (producer) or received (consumer) per
    /// priority as the kernel sees it (POSIX msg_prio; SysV mtype), as (key, count) pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<Vec<(u64, u64)>>,
    /// Consumer only: stream offset of the first wrong byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_mismatch: Option<u64>,
    /// Wall time from the start gate to the end of the transfer, in ns.
    pub elapsed_ns: u64,
    /// shm transports: the object and ring geometry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm: Option<ShmInfo>,
    /// shm-futex: FUTEX_WAIT/FUTEX_WAKE calls on the ring words, by result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futex: Option<FutexWitness>,
    /// shm-sem: sem_wait/sem_post calls (user level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sem: Option<SemWitness>,
    /// shm-eventfd: eventfd writes, reads and the polls that waited for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventfd: Option<EventfdWitness>,
    /// Ping-pong mode (producer): round-trip times measured with the producer's own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<Rtt>,
    /// getrusage(RUSAGE_SELF) delta from the start gate to the end of the transfer.
    #[serde(default)]
    pub rusage_run: Rusage,
    /// getrusage(RUSAGE_SELF) when the gate opened: with wait4's totals at exit, the
    /// process's own accounting from the gate to its exit (the window BPF sees).
    #[serde(default)]
    pub rusage_at_gate: Rusage,
}

impl Witness {
    /// `workload=pipe role=consumer pid=.. bytes=.. messages=.. calls=.. verified=.. result=ok`
    pub fn summary_line(&self) -> String {
        let verified = self.verified_bytes.map(|v| format!(" verified={v}")).unwrap_or_default();
        let result = match self.first_mismatch {
            Some(off) => format!("mismatch@{off}"),
            None => "ok".into(),
        };
        let futex = self
            .futex
            .as_ref()
            .map(|f| {
                format!(
                    " futex_wait={} woken={} eagain={} timedout={} futex_wake={}",
                    f.wait_calls, f.wait_woken, f.wait_eagain, f.wait_timedout, f.wake_calls
                )
            })
            .unwrap_or_default();
        let sem = self
            .sem
            .as_ref()
            .map(|s| format!(" sem_wait={} sem_post={}", s.wait_calls, s.post_calls))
            .unwrap_or_default();
        let efd = self
            .eventfd
            .as_ref()
            .map(|e| {
                format!(
                    " eventfd_write={} eventfd_read={} eagain={} poll={} ready={} timedout={}",
                    e.writes, e.reads, e.reads_eagain, e.polls, e.polls_ready, e.polls_timedout
                )
            })
            .unwrap_or_default();
        format!(
            "workload={} role={} pid={} bytes={} messages={} calls={}{}{}{}{} result={}",
            self.transport,
            self.role,
            self.pid,
            self.bytes,
            self.messages,
            self.calls,
            verified,
            futex,
            sem,
            efd,
            result
        )
    }

    /// The checks a consumer applies after the run; `Err` is what the workload exits with.
    /// `total`: the bytes expected (None for time-bounded runs).
    pub fn check_complete(&self, total: Option<u64>) -> Result<()> {
        if let Some(off) = self.first_mismatch {
            bail!("data corrupted: byte {off} of the stream differs from the pattern");
        }
        if let Some(total) = total.filter(|t| *t != self.bytes) {
            bail!("the producer went away: received {} of {total} bytes", self.bytes);
        }
        Ok(())
    }
}
