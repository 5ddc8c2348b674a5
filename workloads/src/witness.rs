//! What a workload process says about its own run (the witness ipctrace's observations are
//! checked against), and the one-line summary every workload, Rust or C, prints.

use serde::{Deserialize, Serialize};

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
    /// Consumer only: stream offset of the first wrong byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_mismatch: Option<u64>,
    /// Wall time from the start gate to the end of the transfer, in ns.
    pub elapsed_ns: u64,
}

impl Witness {
    /// `workload=pipe role=consumer pid=.. bytes=.. messages=.. calls=.. verified=.. result=ok`
    pub fn summary_line(&self) -> String {
        let verified = self
            .verified_bytes
            .map(|v| format!(" verified={v}"))
            .unwrap_or_default();
        let result = match self.first_mismatch {
            Some(off) => format!("mismatch@{off}"),
            None => "ok".into(),
        };
        format!(
            "workload={} role={} pid={} bytes={} messages={} calls={}{} result={}",
            self.transport,
            self.role,
            self.pid,
            self.bytes,
            self.messages,
            self.calls,
            verified,
            result
        )
    }
}
