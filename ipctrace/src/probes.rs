//! The probe table: every logical probe with its implementations in order of preference
//! (fentry -> kprobe -> tracepoint -> sampling) and their attach points, as data. Each
//! transport contributes its rows (through the registry); the rows every run needs
//! (scheduling, forks, sampling) are here. The session walks the table
//! against the running kernel and keeps the first implementation that loads and attaches.

use clap::ValueEnum;
use ipctrace_common::ProbeId;
use serde::{Deserialize, Serialize};

pub use crate::model::probe::Mechanism;
use crate::{
    model::Label,
    transport::{FAMILIES, Family},
};

/// Which implementations may be tried (a user or test override).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// fentry/fexit, then kprobes, then tracepoints, then sampling (the default).
    #[default]
    Function,
    /// Tracepoints and sampling only.
    Tracepoint,
    /// cpu-clock sampling only: no tracepoints or function probes (`run` refuses it, as the
    /// pipe figures need a tracepoint at least; useful with `probes`).
    Sampling,
}

/// One program attachment. Function names are variants across kernels, first match wins.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    Fentry {
        prog: &'static str,
        func: &'static [&'static str],
    },
    Fexit {
        prog: &'static str,
        func: &'static [&'static str],
    },
    Kprobe {
        prog: &'static str,
        func: &'static [&'static str],
    },
    Kretprobe {
        prog: &'static str,
        func: &'static [&'static str],
    },
    /// A raw tracepoint: the program gets the tracepoint's own arguments, with no perf record
    /// filled. `category` is where tracefs lists it; `required: false`: attached if the kernel
    /// has it.
    RawTracepoint {
        prog: &'static str,
        category: &'static str,
        name: &'static str,
        required: bool,
    },
    /// The syscall dispatcher (`raw_syscalls` sys_enter/sys_exit as raw tracepoints, attached
    /// once for every row that uses it) serving row `row` (`ipctrace_common::sysrow`) for the
    /// operations `ops` (`ipctrace_common::sysop`).
    Syscalls {
        row: u32,
        ops: &'static [u32],
    },
    CpuClock {
        prog: &'static str,
    },
    /// Attached where the kernel has the function (e.g. one a later kernel removed), skipped
    /// where it does not.
    IfPresent(&'static Attach),
    /// The kernel's per-CPU page-allocation counters, read by the syscall and scheduler
    /// programs (no attachment of its own): available when the loader found them in BTF.
    PageCounters,
    /// Only checks that the function could be probed; ipctrace has no program for it.
    CheckOnly {
        func: &'static [&'static str],
        why_no_program: &'static str,
    },
}

/// One way to implement a logical probe.
#[derive(Clone, Copy, Debug)]
pub struct Impl {
    pub mechanism: Mechanism,
    pub label: Label,
    /// How the figure is computed from what this implementation sees.
    pub rule: &'static str,
    pub attach: &'static [Attach],
    /// Another logical probe whose data this one reads (no attachment of its own).
    pub uses: Option<&'static str>,
}

pub struct LogicalProbe {
    pub name: &'static str,
    pub what: &'static str,
    /// The probe ids whose figures this row's chosen implementation measures.
    pub ids: &'static [ProbeId],
    pub impls: &'static [Impl],
}

/// The copy routines: never probeable so far (checked, not attached).
const COPY_FNS: &[&str] = &["copy_page_from_iter", "copy_page_to_iter", "_copy_from_iter", "_copy_to_iter"];

/// One implementation that attaches programs of its own.
pub const fn imp(mechanism: Mechanism, label: Label, rule: &'static str, attach: &'static [Attach]) -> Impl {
    Impl { mechanism, label, rule, attach, uses: None }
}

pub const fn tp(prog: &'static str, category: &'static str, name: &'static str) -> Attach {
    Attach::RawTracepoint { prog, category, name, required: true }
}

pub const fn tp_opt(prog: &'static str, category: &'static str, name: &'static str) -> Attach {
    Attach::RawTracepoint { prog, category, name, required: false }
}

/// The programs of the syscall dispatcher.
pub const SYSCALL_PROGS: [&str; 2] = ["raw_sys_enter", "raw_sys_exit"];

/// The BTF-tracepoint version of raw tracepoint program `prog`, if it has one: the same work
/// with the fields of the tracepoint's pointers read by direct loads instead of helper calls
/// (`ipctrace-ebpf` kmem). The loader attaches it where the kernel takes it.
pub fn btf_version(prog: &str) -> Option<&'static str> {
    match prog {
        "raw_sys_enter" => Some("btf_sys_enter"),
        "sched_switch" => Some("btf_sched_switch"),
        "sched_waking" => Some("btf_sched_waking"),
        _ => None,
    }
}

/// What the dispatcher's fd cache must see, whichever rows use it (`ipctrace-ebpf` fdcache).
pub const FD_CACHE_OPS: &[u32] = &[
    ipctrace_common::sysop::CLOSE,
    ipctrace_common::sysop::DUP2,
    ipctrace_common::sysop::CLOSE_RANGE,
    ipctrace_common::sysop::IO_URING,
];

/// The syscalls an operation of the dispatcher stands for, by name and by this
/// architecture's number.
pub fn syscalls_of(op: u32) -> &'static [(&'static str, i64)] {
    use ipctrace_common::sysop;
    match op {
        sysop::WRITE => &[("write", libc::SYS_write), ("writev", libc::SYS_writev)],
        sysop::READ => &[("read", libc::SYS_read), ("readv", libc::SYS_readv)],
        sysop::SEND => &[("sendto", libc::SYS_sendto)],
        sysop::SENDMSG => &[("sendmsg", libc::SYS_sendmsg)],
        sysop::MQ_SEND => &[("mq_timedsend", libc::SYS_mq_timedsend)],
        sysop::MQ_RECV => &[("mq_timedreceive", libc::SYS_mq_timedreceive)],
        sysop::MSGSND => &[("msgsnd", libc::SYS_msgsnd)],
        sysop::MSGRCV => &[("msgrcv", libc::SYS_msgrcv)],
        #[cfg(target_arch = "x86_64")]
        sysop::POLL => &[
            ("poll", libc::SYS_poll),
            ("ppoll", libc::SYS_ppoll),
            ("select", libc::SYS_select),
            ("pselect6", libc::SYS_pselect6),
            ("epoll_wait", libc::SYS_epoll_wait),
            ("epoll_pwait", libc::SYS_epoll_pwait),
            // epoll_pwait2 (5.11+), numbered alike on every architecture.
            ("epoll_pwait2", 441),
        ],
        #[cfg(not(target_arch = "x86_64"))]
        sysop::POLL => &[
            ("ppoll", libc::SYS_ppoll),
            ("pselect6", libc::SYS_pselect6),
            ("epoll_pwait", libc::SYS_epoll_pwait),
            ("epoll_pwait2", 441),
        ],
        sysop::RECV => &[("recvfrom", libc::SYS_recvfrom), ("recvmsg", libc::SYS_recvmsg)],
        sysop::SENDFILE => &[("sendfile", libc::SYS_sendfile)],
        sysop::SPLICE => &[("splice", libc::SYS_splice)],
        sysop::VMSPLICE => &[("vmsplice", libc::SYS_vmsplice)],
        #[cfg(target_arch = "x86_64")]
        sysop::OPEN => &[("open", libc::SYS_open)],
        sysop::OPENAT => &[("openat", libc::SYS_openat)],
        #[cfg(target_arch = "x86_64")]
        sysop::UNLINK => &[("unlink", libc::SYS_unlink)],
        sysop::FTRUNCATE => &[("ftruncate", libc::SYS_ftruncate)],
        sysop::MMAP => &[("mmap", libc::SYS_mmap)],
        sysop::MUNMAP => &[("munmap", libc::SYS_munmap)],
        sysop::FUTEX => &[("futex", libc::SYS_futex)],
        // futex2 (6.7+), numbered alike on every architecture; a kernel without it never
        // calls them.
        sysop::FUTEX_WAIT => &[("futex_wait", 455)],
        sysop::FUTEX_WAKE => &[("futex_wake", 454)],
        sysop::CLOSE => &[("close", libc::SYS_close)],
        #[cfg(target_arch = "x86_64")]
        sysop::DUP2 => &[("dup2", libc::SYS_dup2), ("dup3", libc::SYS_dup3)],
        sysop::CLOSE_RANGE => &[("close_range", libc::SYS_close_range)],
        sysop::IO_URING => &[("io_uring_setup", libc::SYS_io_uring_setup)],
        _ => &[],
    }
}

/// The rows of `families` (every family when empty), then the rows every run needs.
pub fn table(families: &[&'static dyn Family]) -> Vec<&'static LogicalProbe> {
    let fams: Vec<&'static dyn Family> = if families.is_empty() { FAMILIES.to_vec() } else { families.to_vec() };
    fams.into_iter().flat_map(|f| f.probes().iter()).chain(COMMON.iter()).collect()
}

/// The logical probe (table row) whose implementation measures `id`.
pub fn logical_of(id: ProbeId) -> &'static str {
    table(&[]).into_iter().find(|p| p.ids.contains(&id)).map_or("", |p| p.name)
}

/// The rows every run needs, whatever the transports.
static COMMON: &[LogicalProbe] = &[
    LogicalProbe {
        name: "sched_switch",
        what: "context switches (voluntary = blocked, with where and how long) of the targets",
        ids: &[ProbeId::SchedOut, ProbeId::OffCpu, ProbeId::Blocked],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "counted at the scheduler's own tracepoint; voluntary = prev_state not running/preempted; blocked \
             time = from the switch out to the switch back in (bpf_ktime_get_ns)",
            &[tp("sched_switch", "sched", "sched_switch")],
        )],
    },
    LogicalProbe {
        name: "sched_wakeup",
        what: "wake-ups of blocked targets, with the waker",
        ids: &[ProbeId::Wakeup],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "the waker kept at sched:sched_waking (in the waker's context) and counted when the woken thread's \
             block ends at sched_switch: one per block seen since the trace started, its last waker's",
            &[tp("sched_waking", "sched", "sched_waking")],
        )],
    },
    LogicalProbe {
        name: "signals",
        what: "signals targets receive: sender -> receiver, number, result (delivered, ignored, coalesced)",
        ids: &[ProbeId::Signal],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "counted at signal:signal_generate in the sender's context when the receiver is a target",
            &[tp("signal_generate", "signal", "signal_generate")],
        )],
    },
    LogicalProbe {
        name: "notify_calls",
        what: "eventfd writes (notifications) and reads (taking them), signalfd reads, by targets",
        ids: &[ProbeId::EventfdWrite, ProbeId::EventfdRead, ProbeId::SignalfdRead],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Derived,
            "calls = write(2)/read(2) on an fd whose file operations are eventfd's (read(2) on a \
             signalfd's), with their results",
            &[Attach::Syscalls {
                row: ipctrace_common::sysrow::NOTIFY,
                ops: &[ipctrace_common::sysop::READ, ipctrace_common::sysop::WRITE],
            }],
        )],
    },
    LogicalProbe {
        name: "poll_waits",
        what: "poll/select/epoll waits by targets, and the notification each ready return led to",
        ids: &[ProbeId::PollWait, ProbeId::PollWake],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Derived,
            "calls = poll, ppoll, select, pselect6, epoll_wait, epoll_pwait(2) with their results and \
             blocked time; a wake-up (ready return) is attributed to an eventfd or signalfd when the \
             thread's next traced call reads it (needs notify_calls)",
            &[Attach::Syscalls { row: ipctrace_common::sysrow::POLL, ops: &[ipctrace_common::sysop::POLL] }],
        )],
    },
    LogicalProbe {
        name: "fork",
        what: "children of targets join the filter before they run; the process tree and exit codes",
        ids: &[],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "sched:sched_process_fork adds the child (and its parent); sched:sched_process_exec records \
             its name; sched:sched_process_exit its exit code",
            &[
                tp("sched_process_fork", "sched", "sched_process_fork"),
                tp("sched_process_exec", "sched", "sched_process_exec"),
                tp("sched_process_exit", "sched", "sched_process_exit"),
            ],
        )],
    },
    // Not a transport ipctrace analyses: counted so that targets talking over TCP/UDP loopback
    // are named ("not analysed"), not reported as no IPC.
    LogicalProbe {
        name: "inet_loopback",
        what: "TCP and UDP over loopback between targets (counted, not analysed)",
        ids: &[ProbeId::InetSend, ProbeId::InetRecv],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Derived,
            "bytes = return values of write/writev/sendto/sendmsg (read/readv/recvfrom/recvmsg) on a connected \
             AF_INET/AF_INET6 socket whose peer address is loopback",
            &[Attach::Syscalls {
                row: ipctrace_common::sysrow::INET,
                ops: &[
                    ipctrace_common::sysop::WRITE,
                    ipctrace_common::sysop::SEND,
                    ipctrace_common::sysop::SENDMSG,
                    ipctrace_common::sysop::READ,
                    ipctrace_common::sysop::RECV,
                ],
            }],
        )],
    },
    LogicalProbe {
        name: "cpu_sample",
        what: "where the targets' CPU time goes (kernel stacks)",
        ids: &[ProbeId::Sample],
        impls: &[imp(
            Mechanism::PerfEvent,
            Label::Sampled,
            "cpu-clock samples on every CPU at the sampling frequency, kept for target processes",
            &[Attach::CpuClock { prog: "cpu_sample" }],
        )],
    },
    LogicalProbe {
        name: "copy_routines",
        what: "the copy itself (copy_page_from_iter / copy_page_to_iter and below)",
        ids: &[],
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                "",
                &[Attach::CheckOnly {
                    func: COPY_FNS,
                    why_no_program: "the copy routines are notrace on every kernel checked (6.1 to 7.3): \
                                     fentry gets EBUSY, kprobe EINVAL",
                }],
            ),
            Impl {
                mechanism: Mechanism::PerfEvent,
                label: Label::Sampled,
                rule: "share of cpu-clock samples whose kernel stack holds a copy frame \
                       (copy_page_*_iter, _copy_*_iter, copy_user*, rep_movs*, memcpy*)",
                attach: &[],
                uses: Some("cpu_sample"),
            },
        ],
    },
];

/// Is this implementation allowed under the user's overrides? Err(reason) if not.
pub fn allowed(i: &Impl, tier: Tier, no_fentry: bool) -> Result<(), String> {
    match (i.mechanism, tier) {
        (Mechanism::Fentry, _) if no_fentry => Err("skipped: --no-fentry".into()),
        (Mechanism::Fentry | Mechanism::Kprobe, Tier::Tracepoint | Tier::Sampling) => {
            Err(format!("skipped: --tier {}", tier_name(tier)))
        }
        (Mechanism::Tracepoint, Tier::Sampling) => Err("skipped: --tier sampling".into()),
        _ => Ok(()),
    }
}

pub fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Function => "function",
        Tier::Tracepoint => "tracepoint",
        Tier::Sampling => "sampling",
    }
}

/// Every eBPF program name the table attaches.
#[cfg(test)]
pub fn program_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = table(&[])
        .iter()
        .flat_map(|p| p.impls.iter())
        .flat_map(|i| i.attach.iter())
        .flat_map(|a| match *a {
            Attach::Fentry { prog, .. }
            | Attach::Fexit { prog, .. }
            | Attach::Kprobe { prog, .. }
            | Attach::Kretprobe { prog, .. }
            | Attach::RawTracepoint { prog, .. }
            | Attach::CpuClock { prog } => vec![prog],
            Attach::IfPresent(Attach::Fentry { prog, .. })
            | Attach::IfPresent(Attach::Fexit { prog, .. })
            | Attach::IfPresent(Attach::Kprobe { prog, .. })
            | Attach::IfPresent(Attach::Kretprobe { prog, .. }) => vec![*prog],
            Attach::Syscalls { .. } => SYSCALL_PROGS.to_vec(),
            Attach::IfPresent(_) | Attach::CheckOnly { .. } | Attach::PageCounters => Vec::new(),
        })
        .collect();
    let btf: Vec<&str> = v.iter().filter_map(|p| btf_version(p)).collect();
    v.extend(btf);
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ordered_and_complete() {
        let table = table(&[]);
        for p in &table {
            assert!(!p.impls.is_empty(), "{}", p.name);
            let order = |m: Mechanism| match m {
                Mechanism::Fentry => 0,
                Mechanism::Kprobe => 1,
                Mechanism::Tracepoint => 2,
                Mechanism::PerfEvent => 3,
            };
            assert!(p.impls.windows(2).all(|w| order(w[0].mechanism) <= order(w[1].mechanism)), "{}", p.name);
            for i in p.impls {
                assert!(i.uses.is_some() || !i.attach.is_empty(), "{}: an implementation attaches something", p.name);
                if let Some(u) = i.uses {
                    assert!(table.iter().any(|q| q.name == u), "{}: uses unknown {u}", p.name);
                }
            }
        }
        // Every probe id is measured by exactly one row (its label comes from that row).
        for id in ProbeId::ALL {
            let rows: Vec<&str> = table.iter().filter(|p| p.ids.contains(id)).map(|p| p.name).collect();
            assert_eq!(rows.len(), 1, "{} is measured by {rows:?}", id.name());
        }
        let names: Vec<&str> = table.iter().map(|p| p.name).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len(), "logical probe names are unique");
    }

    #[test]
    fn overrides() {
        let pipe_write = table(&[])[0];
        let f = &pipe_write.impls[0];
        assert!(allowed(f, Tier::Function, false).is_ok());
        assert!(allowed(f, Tier::Function, true).unwrap_err().contains("--no-fentry"));
        assert!(allowed(&pipe_write.impls[1], Tier::Function, true).is_ok());
        assert!(allowed(&pipe_write.impls[2], Tier::Tracepoint, false).is_ok());
        assert!(allowed(&pipe_write.impls[2], Tier::Sampling, false).is_err());
    }

    /// The built eBPF object holds exactly the programs the table names (no root needed).
    #[test]
    fn ebpf_object_and_table_name_the_same_programs() {
        let obj = aya_obj::Object::parse(crate::session::OBJECT).expect("the built eBPF object parses");
        let mut in_object: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        in_object.sort();
        assert_eq!(in_object, program_names(), "programs in the object vs programs the probe table attaches");
    }
}
