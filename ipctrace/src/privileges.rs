//! Start-up privilege check: capget(2) on the effective set, naming the first capability
//! missing. Runs before anything touches the kernel, so the failure is one clear line.

use caps::{CapSet, Capability};

use crate::exit::{Code, fail};

/// What ipctrace needs, in the order they are checked, and why.
pub const REQUIRED: [(Capability, &str); 6] = [
    (Capability::CAP_BPF, "load BPF programs and maps"),
    (Capability::CAP_PERFMON, "attach tracepoints and perf events"),
    (Capability::CAP_SYS_ADMIN, "mount tracefs in a private namespace"),
    (Capability::CAP_SYS_PTRACE, "read other users' /proc/PID"),
    (Capability::CAP_DAC_READ_SEARCH, "read /proc and /sys files of other users"),
    (Capability::CAP_SYSLOG, "read real addresses from /proc/kallsyms"),
];

/// Fails with exit code 4 naming the first required capability not in the effective set.
pub fn check(command: &str) -> anyhow::Result<()> {
    for (cap, why) in REQUIRED {
        let has = caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
        if !has {
            return Err(fail(
                Code::Privileges,
                format!(
                    "missing privilege {cap} (needed to {why}); run as root, e.g. `sudo ipctrace {command}`, \
                     or grant CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_SYSLOG"
                ),
            ));
        }
    }
    Ok(())
}
