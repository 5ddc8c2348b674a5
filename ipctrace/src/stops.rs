//! The signals that end tracing (Ctrl-C, SIGTERM, SIGHUP), caught from the moment a traced
//! command starts: one arriving while the programs load or the workloads start is kept and
//! ends the run at its first wait, with a report, instead of killing ipctrace.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Stops {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stops {
    pub fn catch() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits up to `d`; true if a stop signal came (now or before).
    pub async fn within(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = self.int.recv() => true,
            _ = self.term.recv() => true,
            _ = self.hup.recv() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }
}
