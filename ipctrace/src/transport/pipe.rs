//! Pipes and FIFOs: the probe-table rows (pipe write/read functions, their syscall fallback,
//! splice), the path (copy in, buffer pages, writer blocked, reader woken, copy out), the
//! observed-vs-witness rows, and how attach/trace find and pair them (`pipe:[ino]` links,
//! FIFO paths; the writer is the producer, the reader the consumer).

use std::{collections::BTreeMap, os::unix::fs::FileTypeExt, path::Path};

use ipctrace_common::{ChannelKind, ProbeId, sysop, sysrow};

use super::{Ends, Family, Side, busiest, copy_diagram};
use crate::{
    agree::push,
    discover::{Found, Scan},
    model::{
        Agreement, Label, Observed, Process, Stage, StageTime,
        diagram::{ArrowKind, Diagram},
    },
    path::{chain, copy_sample_share, latency, pct, stage, woken_by},
    probes::{Attach, LogicalProbe, imp},
};

pub struct Pipe;

pub static PIPE: Pipe = Pipe;

const PIPE_W: &[&str] = &["anon_pipe_write", "pipe_write"];
const PIPE_R: &[&str] = &["anon_pipe_read", "pipe_read"];
pub const RULE_PIPE_FN: &str = "bytes = return values of the pipe write/read function (exit probe)";
pub const RULE_PIPE_SYSCALL: &str =
    "bytes = return values of write/writev (read/readv) on an fd whose inode is a pipe or FIFO";

/// The pipe functions (names of every kernel version that has them); also the frames that
/// mark a pipe call in a stack (`fifo_pipe_*` wrap them for FIFOs).
fn is_write_fn(f: &str) -> bool {
    PIPE_W.contains(&f) || f == "fifo_pipe_write"
}

fn is_read_fn(f: &str) -> bool {
    PIPE_R.contains(&f) || f == "fifo_pipe_read"
}

const WRITE: ProbeId = ProbeId::PipeWrite;
const READ: ProbeId = ProbeId::PipeRead;
/// Into the pipe: written (copied) or spliced (moved).
const INTO: &[ProbeId] = &[ProbeId::PipeWrite, ProbeId::SpliceIn, ProbeId::Vmsplice];
/// Out of the pipe: read (copied) or spliced (moved).
const OUT: &[ProbeId] = &[ProbeId::PipeRead, ProbeId::SpliceOut];

static PROBES: &[LogicalProbe] = &[
    LogicalProbe {
        name: "pipe_write",
        what: "bytes written into pipes and FIFOs (copied user -> kernel)",
        ids: &[ProbeId::PipeWrite],
        impls: &[
            imp(
                crate::model::probe::Mechanism::Fentry,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Fentry { prog: "fentry_pipe_write", func: PIPE_W },
                    Attach::Fexit { prog: "fexit_pipe_write", func: PIPE_W },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Kprobe,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_pipe_write", func: PIPE_W },
                    Attach::Kretprobe { prog: "kretprobe_pipe_write", func: PIPE_W },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Tracepoint,
                Label::Derived,
                RULE_PIPE_SYSCALL,
                &[Attach::Syscalls { row: sysrow::PIPE_WRITE, ops: &[sysop::WRITE] }],
            ),
        ],
    },
    LogicalProbe {
        name: "pipe_read",
        what: "bytes read from pipes and FIFOs (copied kernel -> user)",
        ids: &[ProbeId::PipeRead],
        impls: &[
            imp(
                crate::model::probe::Mechanism::Fentry,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Fentry { prog: "fentry_pipe_read", func: PIPE_R },
                    Attach::Fexit { prog: "fexit_pipe_read", func: PIPE_R },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Kprobe,
                Label::Exact,
                RULE_PIPE_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_pipe_read", func: PIPE_R },
                    Attach::Kretprobe { prog: "kretprobe_pipe_read", func: PIPE_R },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Tracepoint,
                Label::Derived,
                RULE_PIPE_SYSCALL,
                &[Attach::Syscalls { row: sysrow::PIPE_READ, ops: &[sysop::READ] }],
            ),
        ],
    },
    LogicalProbe {
        name: "pipe_splice",
        what: "pages moved into or out of pipes by splice/vmsplice (no copy to or from user memory)",
        ids: &[ProbeId::SpliceOut, ProbeId::SpliceIn, ProbeId::Vmsplice],
        impls: &[imp(
            crate::model::probe::Mechanism::Tracepoint,
            Label::Derived,
            "bytes = return values of splice/vmsplice with a pipe fd; counted as moved, not copied \
             (vmsplice without SPLICE_F_GIFT still copies on the way in: counted as vmsplice bytes)",
            &[Attach::Syscalls { row: sysrow::PIPE_SPLICE, ops: &[sysop::SPLICE, sysop::VMSPLICE] }],
        )],
    },
    LogicalProbe {
        name: "pipe_pages",
        what: "pages pipe writes allocated for the pipe's buffer (a page per 4 KiB the pipe had no spare page for)",
        ids: &[ProbeId::PipePage],
        impls: &[
            imp(
                crate::model::probe::Mechanism::Tracepoint,
                Label::Derived,
                RULE_PAGES_COUNTERS,
                &[Attach::PageCounters],
            ),
            imp(
                crate::model::probe::Mechanism::Tracepoint,
                Label::Exact,
                RULE_PAGES_TRACEPOINT,
                &[crate::probes::tp("mm_page_alloc", "kmem", "mm_page_alloc")],
            ),
        ],
    },
];

pub const RULE_PAGES_COUNTERS: &str = "pages = growth of the kernel's per-CPU page-allocation counters \
     (vm_event_states PGALLOC_*) while the write ran on that CPU: read where the write starts, leaves or comes \
     back to a CPU, and ends (an interrupt's allocation on that CPU meanwhile counts too); no hook per page; \
     measured on each channel's first 64 writes on each CPU and then on a random 1 in 8, and scaled by the \
     bytes all writes moved over the bytes the measured ones did";
pub const RULE_PAGES_TRACEPOINT: &str = "kmem:mm_page_alloc in the writer's context while the pipe write was in flight";

fn total(t: u64) -> Option<StageTime> {
    Some(StageTime::Total { ns: t })
}

/// One copy per byte moved, and where the sampled copy frames sat (`dir`: written or read,
/// `call`: the write or the read).
fn copy_stage(
    name: &str,
    calls: u64,
    bytes: u64,
    label: Option<Label>,
    share: Option<(u64, u64)>,
    (dir, call): (&str, &str),
) -> Stage {
    let mut s = stage(
        name,
        1,
        calls,
        Some(bytes),
        None,
        label,
        Some(match share {
            Some((h, t)) => format!("one copy per byte {dir}; copy frames under the {call}: {} (sampled)", pct(h, t)),
            None => format!("one copy per byte {dir}; no samples"),
        }),
    );
    if s.observed && share.is_some() {
        s.also = Some(Label::Sampled);
    }
    s
}

impl Family for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }

    fn probes(&self) -> &'static [LogicalProbe] {
        PROBES
    }

    fn required(&self) -> &'static [&'static str] {
        &["pipe_write", "pipe_read"]
    }

    fn stages(&self, e: &Ends) -> Vec<Stage> {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let w = p.sum(WRITE, None);
        let r = c.sum(READ, None);
        let mut v = vec![stage(
            "write(2) -> pipe write function",
            0,
            w.calls,
            Some(w.bytes),
            latency(&p.hist(WRITE)),
            p.label(WRITE),
            chain(p, &[ProbeId::OffCpu, ProbeId::Sample], is_write_fn).map(|c| format!("chain seen: {c}")),
        )];
        v.push(copy_stage(
            "copy user -> kernel (into pipe buffer pages)",
            w.calls,
            w.bytes,
            p.label(WRITE),
            copy_sample_share(p, is_write_fn),
            ("written", "write"),
        ));
        // Counted in the kernel against the channel while the write was in flight.
        let buf = p
            .events
            .iter()
            .filter(|e| e.probe == ProbeId::PipePage.name() && e.channel.is_some())
            .fold((0, 0), |(c, b), e| (c + e.calls, b + e.bytes));
        let pages_label = p.label(ProbeId::PipePage);
        v.push(stage(
            "pipe buffer pages allocated",
            1,
            buf.0,
            Some(buf.1),
            None,
            pages_label,
            Some(
                match pages_label {
                    Some(Label::Derived) => {
                        "per-CPU page-allocation counters while the pipe write ran (a channel's first 64 writes per \
                         CPU, then a random 1 in 8, scaled by bytes)"
                    }
                    _ => "kmem:mm_page_alloc while the pipe write was in flight",
                }
                .into(),
            ),
        ));
        let b = p.sum(ProbeId::Blocked, Some(WRITE.name()));
        v.push(stage(
            "writer blocked: pipe full",
            1,
            b.calls,
            None,
            total(b.time_ns),
            p.label(ProbeId::Blocked),
            Some("voluntary switches while a pipe write was in flight".into()),
        ));
        let woke = woken_by(c, e.producer.pid);
        v.push(stage("reader woken by the writer", 1, woke, None, None, Some(Label::Exact), None));
        v.push(stage(
            "read(2) -> pipe read function",
            0,
            r.calls,
            Some(r.bytes),
            latency(&c.hist(READ)),
            c.label(READ),
            chain(c, &[ProbeId::OffCpu, ProbeId::Sample], is_read_fn).map(|c| format!("chain seen: {c}")),
        ));
        v.push(copy_stage(
            "copy kernel -> user",
            r.calls,
            r.bytes,
            c.label(READ),
            copy_sample_share(c, is_read_fn),
            ("read", "read"),
        ));
        let s = c.sum(ProbeId::SpliceOut, None);
        if s.calls > 0 {
            v.push(stage(
                "splice(2) out of the pipe (pages move, no copy to user)",
                0,
                s.calls,
                Some(s.bytes),
                latency(&c.hist(ProbeId::SpliceOut)),
                c.label(ProbeId::SpliceOut),
                None,
            ));
        }
        let b = c.sum(ProbeId::Blocked, Some(READ.name())) + c.sum(ProbeId::Blocked, Some(ProbeId::SpliceOut.name()));
        v.push(stage(
            "reader blocked: pipe empty",
            1,
            b.calls,
            None,
            total(b.time_ns),
            c.label(ProbeId::Blocked),
            Some("voluntary switches while a pipe read (or splice) was in flight".into()),
        ));
        let woke = woken_by(p, e.consumer.pid);
        v.push(stage("writer woken by the reader", 1, woke, None, None, Some(Label::Exact), None));
        v
    }

    fn agreement(&self, p: &Process, out: &mut Vec<Agreement>) {
        let Some(w) = &p.witness else { return };
        let o = &p.observed;
        // Out of the pipe: read(2) copies, splice(2) moves; a consumer does one or the other.
        let (what, s) = if p.role == "producer" {
            ("pipe_write", o.sum(WRITE, None))
        } else {
            ("pipe_read + splice_out", o.sum_of(OUT))
        };
        push(out, p, &format!("{what} bytes"), s.bytes, w.bytes, 0.0);
        push(out, p, &format!("{what} calls"), s.calls, w.calls, 0.0);
    }

    fn copied_bytes(&self, o: &Observed) -> u64 {
        o.sum(WRITE, None).bytes + o.sum(READ, None).bytes
    }

    fn copies_label(&self, o: &Observed) -> Option<Label> {
        o.label(WRITE).or(o.label(READ))
    }

    fn data_calls(&self) -> &'static [ProbeId] {
        &[ProbeId::PipeWrite, ProbeId::PipeRead, ProbeId::SpliceOut, ProbeId::SpliceIn, ProbeId::Vmsplice]
    }

    fn delivered(&self, consumer: &Observed) -> Option<u64> {
        Some(consumer.sum_of(OUT).bytes)
    }

    fn pair(
        &self,
        ino: u64,
        observed: &BTreeMap<u32, Observed>,
        _found: &BTreeMap<u32, Vec<Found>>,
    ) -> (Option<u32>, Option<u32>) {
        (busiest(observed, ino, INTO), busiest(observed, ino, OUT))
    }

    fn find_in_fd(&self, link: &str, fd: &Path, _scan: &Scan) -> Option<Found> {
        if let Some(ino) = link.strip_prefix("pipe:[").and_then(|r| r.strip_suffix(']')).and_then(|i| i.parse().ok()) {
            return Some(Found { kind: ChannelKind::AnonPipe.name().into(), ino, path: None, peer: None });
        }
        let md = std::fs::metadata(fd).ok()?;
        (link.starts_with('/') && md.file_type().is_fifo()).then(|| Found {
            kind: ChannelKind::Fifo.name().into(),
            ino: std::os::unix::fs::MetadataExt::ino(&md),
            path: Some(link.to_string()),
            peer: None,
        })
    }

    fn progress(&self) -> Option<ProbeId> {
        Some(READ)
    }

    fn histograms(&self) -> &'static [ProbeId] {
        &[ProbeId::PipeWrite, ProbeId::PipeRead, ProbeId::SpliceOut]
    }

    fn section_name(&self, kind: ChannelKind) -> &'static str {
        if kind == ChannelKind::Fifo { "fifo" } else { "pipe" }
    }

    fn diagram(&self, e: &Ends) -> Diagram {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let spliced = c.sum(ProbeId::SpliceOut, None);
        let out = if spliced.calls > 0 {
            Side {
                caption: "splice to the consumer (pages, no copy)",
                bytes: spliced.bytes,
                kind: ArrowKind::Move,
                label: c.label(ProbeId::SpliceOut),
                call: ProbeId::SpliceOut,
            }
        } else {
            Side {
                caption: "copy pipe buffer -> user",
                bytes: c.sum(READ, None).bytes,
                kind: ArrowKind::Copy,
                label: c.label(READ),
                call: READ,
            }
        };
        let into = Side {
            caption: "copy user -> pipe buffer",
            bytes: p.sum(WRITE, None).bytes,
            kind: ArrowKind::Copy,
            label: p.label(WRITE),
            call: WRITE,
        };
        let share = |o: &Observed, f: fn(&str) -> bool| copy_sample_share(o, f).unwrap_or((0, 0));
        let (a, b) = (share(p, is_write_fn), share(c, is_read_fn));
        copy_diagram(e, "pipe buffer pages", into, out, Some((a.0 + b.0, a.1 + b.1)))
    }

    fn describe(&self, kind: ChannelKind, ino: u64, path: Option<&str>) -> String {
        match (kind, path) {
            (ChannelKind::Fifo, Some(p)) => format!("fifo {p} (ino {ino})"),
            (ChannelKind::Fifo, None) => format!("fifo ino {ino}"),
            _ => format!("anon pipe ino {ino}"),
        }
    }
}
