//! The probe table: every logical probe with its implementations in order of preference
//! (fentry -> kprobe -> tracepoint -> sampling) and their attach points, as data. `select`
//! walks it against the running kernel, keeps the first implementation that loads and
//! attaches, and records the real error of every one it skipped.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::model::Label;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    Fentry,
    Kprobe,
    Tracepoint,
    #[serde(rename = "perf_event")]
    PerfEvent,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry/fexit",
            Self::Kprobe => "kprobe/kretprobe",
            Self::Tracepoint => "tracepoint",
            Self::PerfEvent => "perf_event (cpu-clock)",
        }
    }
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
    /// `required: false`: attached if the kernel has it (e.g. the futex2 syscalls).
    Tracepoint {
        prog: &'static str,
        category: &'static str,
        name: &'static str,
        required: bool,
    },
    CpuClock {
        prog: &'static str,
    },
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
    pub impls: &'static [Impl],
}

const PIPE_W: &[&str] = &["anon_pipe_write", "pipe_write"];
const PIPE_R: &[&str] = &["anon_pipe_read", "pipe_read"];
const MM_FAULT: &[&str] = &["handle_mm_fault"];
const FUTEX_WAIT: &[&str] = &["futex_wait"];
const FUTEX_WAKE: &[&str] = &["futex_wake"];
const COPY_FNS: &[&str] = &["copy_page_from_iter", "copy_page_to_iter", "_copy_from_iter", "_copy_to_iter"];

/// One implementation that attaches programs of its own.
const fn imp(mechanism: Mechanism, label: Label, rule: &'static str, attach: &'static [Attach]) -> Impl {
    Impl { mechanism, label, rule, attach, uses: None }
}

const fn tp(prog: &'static str, category: &'static str, name: &'static str) -> Attach {
    Attach::Tracepoint { prog, category, name, required: true }
}

const fn tp_opt(prog: &'static str, category: &'static str, name: &'static str) -> Attach {
    Attach::Tracepoint { prog, category, name, required: false }
}

pub const RULE_PIPE_FN: &str = "bytes = return values of the pipe write/read function (exit probe)";
pub const RULE_PIPE_SYSCALL: &str =
    "bytes = return values of write/writev (read/readv) on an fd whose inode is a pipe or FIFO";

pub static TABLE: &[LogicalProbe] = &[
    LogicalProbe {
        name: "pipe_write",
        what: "bytes written into pipes and FIFOs (copied user -> kernel)",
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Fentry { prog: "fentry_pipe_write", func: PIPE_W },
                    Attach::Fexit { prog: "fexit_pipe_write", func: PIPE_W },
                ],
            ),
            imp(
                Mechanism::Kprobe,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_pipe_write", func: PIPE_W },
                    Attach::Kretprobe { prog: "kretprobe_pipe_write", func: PIPE_W },
                ],
            ),
            imp(
                Mechanism::Tracepoint,
                Label::Derived,
                RULE_PIPE_SYSCALL,
                &[
                    tp("sys_enter_write", "syscalls", "sys_enter_write"),
                    tp("sys_exit_write", "syscalls", "sys_exit_write"),
                    tp("sys_enter_writev", "syscalls", "sys_enter_writev"),
                    tp("sys_exit_writev", "syscalls", "sys_exit_writev"),
                ],
            ),
        ],
    },
    LogicalProbe {
        name: "pipe_read",
        what: "bytes read from pipes and FIFOs (copied kernel -> user)",
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Fentry { prog: "fentry_pipe_read", func: PIPE_R },
                    Attach::Fexit { prog: "fexit_pipe_read", func: PIPE_R },
                ],
            ),
            imp(
                Mechanism::Kprobe,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_pipe_read", func: PIPE_R },
                    Attach::Kretprobe { prog: "kretprobe_pipe_read", func: PIPE_R },
                ],
            ),
            imp(
                Mechanism::Tracepoint,
                Label::Derived,
                RULE_PIPE_SYSCALL,
                &[
                    tp("sys_enter_read", "syscalls", "sys_enter_read"),
                    tp("sys_exit_read", "syscalls", "sys_exit_read"),
                    tp("sys_enter_readv", "syscalls", "sys_enter_readv"),
                    tp("sys_exit_readv", "syscalls", "sys_exit_readv"),
                ],
            ),
        ],
    },
    LogicalProbe {
        name: "pipe_splice",
        what: "pages moved into or out of pipes by splice/vmsplice (no copy to or from user memory)",
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Derived,
            "bytes = return values of splice/vmsplice with a pipe fd; counted as moved, not copied \
                   (vmsplice without SPLICE_F_GIFT still copies on the way in: counted as vmsplice bytes)",
            &[
                tp("sys_enter_splice", "syscalls", "sys_enter_splice"),
                tp("sys_exit_splice", "syscalls", "sys_exit_splice"),
                tp("sys_enter_vmsplice", "syscalls", "sys_enter_vmsplice"),
                tp("sys_exit_vmsplice", "syscalls", "sys_exit_vmsplice"),
            ],
        )],
    },
    LogicalProbe {
        name: "shm_setup",
        what: "shm set-up and teardown: openat/unlink of /dev/shm, ftruncate, mmap and munmap of shmem",
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "calls counted at the syscall tracepoints; the mappings they return define what \
                   counts as 'in the shm object' for faults and futexes",
            &[
                tp("sys_enter_openat", "syscalls", "sys_enter_openat"),
                tp("sys_enter_unlink", "syscalls", "sys_enter_unlink"),
                tp("sys_enter_ftruncate", "syscalls", "sys_enter_ftruncate"),
                tp("sys_enter_mmap", "syscalls", "sys_enter_mmap"),
                tp("sys_exit_mmap", "syscalls", "sys_exit_mmap"),
                tp("sys_enter_munmap", "syscalls", "sys_enter_munmap"),
            ],
        )],
    },
    LogicalProbe {
        name: "page_fault",
        what: "page faults, split by whether they hit a traced shm object",
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                "handle_mm_fault calls whose vma maps a shmem file (entry to exit = fault latency)",
                &[
                    Attach::Fentry { prog: "fentry_mm_fault", func: MM_FAULT },
                    Attach::Fexit { prog: "fexit_mm_fault", func: MM_FAULT },
                ],
            ),
            imp(
                Mechanism::Kprobe,
                Label::Exact,
                "handle_mm_fault calls whose vma maps a shmem file (entry to exit = fault latency)",
                &[
                    Attach::Kprobe { prog: "kprobe_mm_fault", func: MM_FAULT },
                    Attach::Kretprobe { prog: "kretprobe_mm_fault", func: MM_FAULT },
                ],
            ),
            imp(
                Mechanism::Tracepoint,
                Label::Derived,
                "exceptions:page_fault_user/page_fault_kernel events whose address lies in a \
                       mapping that mmap of a shmem fd returned (no latency at this tier)",
                &[
                    tp("page_fault_user", "exceptions", "page_fault_user"),
                    tp("page_fault_kernel", "exceptions", "page_fault_kernel"),
                ],
            ),
        ],
    },
    LogicalProbe {
        name: "futex",
        what: "futex waits and wakes on words inside a traced shm mapping",
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                "futex_wait/futex_wake calls on an address in a traced shm mapping; result from the exit",
                &[
                    Attach::Fentry { prog: "fentry_futex_wait", func: FUTEX_WAIT },
                    Attach::Fexit { prog: "fexit_futex_wait", func: FUTEX_WAIT },
                    Attach::Fentry { prog: "fentry_futex_wake", func: FUTEX_WAKE },
                    Attach::Fexit { prog: "fexit_futex_wake", func: FUTEX_WAKE },
                ],
            ),
            imp(
                Mechanism::Kprobe,
                Label::Exact,
                "futex_wait/futex_wake calls on an address in a traced shm mapping; result from the exit",
                &[
                    Attach::Kprobe { prog: "kprobe_futex_wait", func: FUTEX_WAIT },
                    Attach::Kprobe { prog: "kprobe_futex_wake", func: FUTEX_WAKE },
                    Attach::Kretprobe { prog: "kretprobe_futex", func: FUTEX_WAIT },
                    Attach::Kretprobe { prog: "kretprobe_futex", func: FUTEX_WAKE },
                ],
            ),
            imp(
                Mechanism::Tracepoint,
                Label::Derived,
                "futex(2) FUTEX_WAIT(_BITSET)/FUTEX_WAKE(_BITSET) (and futex2 futex_wait/futex_wake) \
                       on an address in a traced shm mapping; result = syscall return value",
                &[
                    tp("sys_enter_futex", "syscalls", "sys_enter_futex"),
                    tp("sys_exit_futex", "syscalls", "sys_exit_futex"),
                    tp_opt("sys_enter_futex_wait", "syscalls", "sys_enter_futex_wait"),
                    tp_opt("sys_exit_futex_wait", "syscalls", "sys_exit_futex_wait"),
                    tp_opt("sys_enter_futex_wake", "syscalls", "sys_enter_futex_wake"),
                    tp_opt("sys_exit_futex_wake", "syscalls", "sys_exit_futex_wake"),
                ],
            ),
        ],
    },
    LogicalProbe {
        name: "sched_switch",
        what: "context switches (voluntary = blocked, with where and how long) of the targets",
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "counted at the scheduler's own tracepoint; voluntary = prev_state not running/preempted",
            &[tp("sched_switch", "sched", "sched_switch")],
        )],
    },
    LogicalProbe {
        name: "sched_wakeup",
        what: "wake-ups of blocked targets, with the waker",
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "counted at sched:sched_waking (in the waker's context) for threads blocked since the trace started",
            &[tp("sched_waking", "sched", "sched_waking")],
        )],
    },
    LogicalProbe {
        name: "fork",
        what: "children of targets join the filter before they run",
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "sched:sched_process_fork adds the child; sched:sched_process_exec records its name",
            &[
                tp("sched_process_fork", "sched", "sched_process_fork"),
                tp("sched_process_exec", "sched", "sched_process_exec"),
            ],
        )],
    },
    LogicalProbe {
        name: "page_alloc",
        what: "pages allocated by the targets (pipe buffers, shmem pages), with kernel stacks",
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "kmem:mm_page_alloc in a target's context; the stack tells pipe buffer from shmem page",
            &[tp("mm_page_alloc", "kmem", "mm_page_alloc")],
        )],
    },
    LogicalProbe {
        name: "cpu_sample",
        what: "where the targets' CPU time goes (kernel and user stacks)",
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

/// What was decided for one logical probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Choice {
    pub probe: String,
    pub what: String,
    pub chosen: Option<Chosen>,
    /// Every implementation not used, in table order, with the real reason.
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chosen {
    pub mechanism: Mechanism,
    pub label: Label,
    pub rule: String,
    pub attach_points: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub mechanism: Mechanism,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ordered_and_complete() {
        for p in TABLE {
            assert!(!p.impls.is_empty(), "{}", p.name);
            let order = |m: Mechanism| match m {
                Mechanism::Fentry => 0,
                Mechanism::Kprobe => 1,
                Mechanism::Tracepoint => 2,
                Mechanism::PerfEvent => 3,
            };
            assert!(p.impls.windows(2).all(|w| order(w[0].mechanism) < order(w[1].mechanism)), "{}", p.name);
            for i in p.impls {
                assert!(i.uses.is_some() || !i.attach.is_empty(), "{}: an implementation attaches something", p.name);
                if let Some(u) = i.uses {
                    assert!(TABLE.iter().any(|q| q.name == u), "{}: uses unknown {u}", p.name);
                }
            }
        }
        // Both pipe name variants are tried, newest first.
        assert_eq!(PIPE_W, &["anon_pipe_write", "pipe_write"]);
    }

    #[test]
    fn overrides() {
        let f = &TABLE[0].impls[0];
        assert!(allowed(f, Tier::Function, false).is_ok());
        assert!(allowed(f, Tier::Function, true).unwrap_err().contains("--no-fentry"));
        assert!(allowed(&TABLE[0].impls[1], Tier::Function, true).is_ok());
        assert!(allowed(&TABLE[0].impls[2], Tier::Tracepoint, false).is_ok());
        assert!(allowed(&TABLE[0].impls[2], Tier::Sampling, false).is_err());
    }
}
