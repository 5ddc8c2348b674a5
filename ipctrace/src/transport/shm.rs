//! Shared memory: the probe-table rows (shm set-up syscalls, page faults in the mapping, futex
//! waits and wakes on its words), the path (set-up, first touch, steady state with no kernel
//! copy, futex sync, teardown), the futex observed-vs-witness rows, and how attach/trace find
//! segments (`/proc/PID/maps`: /dev/shm, memfd, SysV) and pick their two ends.

use std::collections::BTreeMap;

use ipctrace_common::{ChannelKind, ProbeId, sysop, sysrow};

use super::{Ends, Family};
use crate::{
    agree::push,
    discover::Found,
    model::{
        Agreement, Label, Observed, Process, Stage,
        diagram::{Arrow, ArrowKind, Diagram},
        probe::Mechanism,
    },
    path::{chain, hist_of, is_clear_frame, latency, stacks_with, stage, woken_by},
    probes::{Attach, LogicalProbe, imp, tp},
};

pub struct Shm;

pub static SHM: Shm = Shm;

const MM_FAULT: &[&str] = &["handle_mm_fault"];
const FUTEX_WAIT: &[&str] = &["futex_wait"];
const FUTEX_WAKE: &[&str] = &["futex_wake"];
const SETUP: &[ProbeId] =
    &[ProbeId::ShmOpen, ProbeId::ShmFtruncate, ProbeId::ShmMmap, ProbeId::ShmMunmap, ProbeId::ShmUnlink];
/// Calls that copy bytes between user memory and the kernel (a shm ring should make none).
const COPYING: &[ProbeId] = &[ProbeId::PipeWrite, ProbeId::PipeRead, ProbeId::SockSend, ProbeId::SockRecv];
/// The sub-key of observations in the shm object.
const IN_SHM: &str = ChannelKind::Shm.name();

static PROBES: &[LogicalProbe] = &[
    LogicalProbe {
        name: "shm_setup",
        what: "shm set-up and teardown: openat/unlink of /dev/shm, ftruncate, mmap and munmap of shmem",
        ids: SETUP,
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "calls counted at the raw syscall tracepoints; the mappings they return define what \
             counts as 'in the shm object' for faults and futexes",
            &[Attach::Syscalls {
                row: sysrow::SHM_SETUP,
                ops: &[sysop::OPEN, sysop::OPENAT, sysop::UNLINK, sysop::FTRUNCATE, sysop::MMAP, sysop::MUNMAP],
            }],
        )],
    },
    LogicalProbe {
        name: "page_fault",
        what: "page faults, split by whether they hit a traced shm object",
        ids: &[ProbeId::FaultUser, ProbeId::FaultKernel, ProbeId::MmFault],
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
        ids: &[ProbeId::FutexWait, ProbeId::FutexWake],
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
                &[Attach::Syscalls { row: sysrow::FUTEX, ops: &[sysop::FUTEX, sysop::FUTEX_WAIT, sysop::FUTEX_WAKE] }],
            ),
        ],
    },
    LogicalProbe {
        name: "page_alloc",
        what: "pages allocated by the targets outside pipe writes (shmem pages), with kernel stacks",
        ids: &[ProbeId::PageAlloc],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "kmem:mm_page_alloc in a target's context; the stack tells a shmem page from the rest",
            &[tp("mm_page_alloc", "kmem", "mm_page_alloc")],
        )],
    },
];

/// Faults in the shm mapping: handle_mm_fault on the function tier, else the tracepoints.
fn faults(o: &Observed) -> u64 {
    let f = o.sum(ProbeId::MmFault, Some(IN_SHM));
    if f.calls > 0 {
        f.calls
    } else {
        o.sum(ProbeId::FaultUser, Some(IN_SHM)).calls + o.sum(ProbeId::FaultKernel, Some(IN_SHM)).calls
    }
}

/// The segment's mappers besides the two ends: each one's faults in it, futex calls on its
/// words and eventfd calls.
fn further_mappers(e: &Ends) -> Stage {
    let mut faults_all = 0;
    let each: Vec<String> = e
        .others
        .iter()
        .map(|m| {
            let o = &m.observed;
            let f = faults(o);
            faults_all += f;
            format!(
                "{} {}: {f} faults, {} futex_wait, {} futex_wake, {} eventfd writes, {} eventfd reads",
                m.role,
                m.pid,
                o.sum(ProbeId::FutexWait, None).calls,
                o.sum(ProbeId::FutexWake, None).calls,
                o.sum(ProbeId::EventfdWrite, None).calls,
                o.sum(ProbeId::EventfdRead, None).calls
            )
        })
        .collect();
    let label =
        e.others.iter().find_map(|m| m.observed.label(ProbeId::MmFault).or(m.observed.label(ProbeId::FaultUser)));
    stage(
        format!("further mappers ({}): faults in the shm mapping", e.others.len()),
        0,
        faults_all,
        None,
        None,
        label,
        Some(format!("{} (a read fault maps up to 16 pages: fault-around)", each.join("; "))),
    )
}

/// Every process that maps segment `ino` (in /proc) or made calls on it, by pid.
fn mappers(ino: u64, observed: &BTreeMap<u32, Observed>, found: &BTreeMap<u32, Vec<Found>>) -> Vec<u32> {
    let users = observed
        .iter()
        .filter(|(_, o)| o.events.iter().any(|e| e.channel.as_ref().is_some_and(|c| c.ino == ino)))
        .map(|(p, _)| *p);
    let mut all: Vec<u32> = users.chain(super::holders(found, ino)).collect();
    all.sort();
    all.dedup();
    all
}

fn is_shmem_frame(f: &str) -> bool {
    f.starts_with("shmem_")
}

impl Family for Shm {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn probes(&self) -> &'static [LogicalProbe] {
        PROBES
    }

    fn required(&self) -> &'static [&'static str] {
        &["shm_setup"]
    }

    fn stages(&self, e: &Ends) -> Vec<Stage> {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let both = |probe: ProbeId| (p.sum(probe, None), c.sum(probe, None));
        let mut v = Vec::new();
        let (po, co) = both(ProbeId::ShmOpen);
        let (pt, ct) = both(ProbeId::ShmFtruncate);
        let (pm, cm) = both(ProbeId::ShmMmap);
        let setup = po.calls + co.calls + pt.calls + ct.calls + pm.calls + cm.calls;
        v.push(stage(
            "set-up: openat /dev/shm, ftruncate, mmap",
            0,
            setup,
            Some(pm.bytes + cm.bytes),
            None,
            p.label(ProbeId::ShmMmap).or(c.label(ProbeId::ShmMmap)),
            Some(format!(
                "producer {} openat, {} ftruncate, {} mmap; consumer {} openat, {} ftruncate, {} mmap (bytes = length mapped)",
                po.calls, pt.calls, pm.calls, co.calls, ct.calls, cm.calls
            )),
        ));
        let (pf, cf) = (faults(p), faults(c));
        let fault_label = p.label(ProbeId::MmFault).or(p.label(ProbeId::FaultUser)).or(c.label(ProbeId::FaultUser));
        let fault_chain =
            chain(p, &[ProbeId::PageAlloc], is_shmem_frame).or_else(|| chain(c, &[ProbeId::PageAlloc], is_shmem_frame));
        let shmem_pages: u64 = [p, c]
            .iter()
            .map(|o| stacks_with(o, ProbeId::PageAlloc, is_shmem_frame).map(|s| s.count).sum::<u64>())
            .sum();
        let zeroing = [p, c].iter().any(|o| stacks_with(o, ProbeId::Sample, is_clear_frame).next().is_some());
        v.push(stage(
            "first touch: page faults in the shm mapping",
            0,
            pf + cf,
            None,
            latency(&p.hist(ProbeId::MmFault)),
            fault_label,
            Some(format!(
                "producer {pf}, consumer {cf} (a read fault maps up to 16 pages: fault-around); \
                 shmem pages allocated: {shmem_pages}{}{}",
                fault_chain.map(|c| format!("; path seen: {c}")).unwrap_or_default(),
                if zeroing { "; page zeroing seen in samples" } else { "" }
            )),
        ));
        let copies = self.copied_bytes(p) + self.copied_bytes(c);
        v.push(Stage {
            name: "steady state: kernel copies".into(),
            depth: 0,
            count: Some(0),
            bytes: Some(copies),
            time: None,
            label: Some(Label::Derived),
            also: None,
            observed: true,
            note: Some(
                "bytes these processes copied through the kernel with pipe or socket calls; \
                 the ring is written and read in place"
                    .into(),
            ),
        });
        let (pw, cw) = both(ProbeId::FutexWait);
        let (pk, ck) = both(ProbeId::FutexWake);
        let lbl = p.label(ProbeId::FutexWait).or(c.label(ProbeId::FutexWait)).or(p.label(ProbeId::FutexWake));
        v.push(stage(
            "steady state: futex_wait on the ring words",
            0,
            pw.calls + cw.calls,
            None,
            latency(&hist_of(&[p, c], ProbeId::FutexWait)),
            lbl,
            Some(format!(
                "slept and woken {}, EAGAIN {}, timed out {}, interrupted {}, other errors {} (producer {} / consumer {})",
                pw.zero + cw.zero,
                pw.eagain + cw.eagain,
                pw.etimedout + cw.etimedout,
                pw.eintr + cw.eintr,
                pw.other_errors + cw.other_errors,
                pw.calls,
                cw.calls
            )),
        ));
        v.push(stage(
            "steady state: futex_wake on the ring words",
            0,
            pk.calls + ck.calls,
            None,
            None,
            lbl,
            Some(format!(
                "waiters woken {} (producer {} calls / consumer {})",
                pk.bytes + ck.bytes,
                pk.calls,
                ck.calls
            )),
        ));
        // shm-eventfd, or any pair that signals through an eventfd beside its segment.
        let (pe, ce) = both(ProbeId::EventfdWrite);
        let (pr, cr) = both(ProbeId::EventfdRead);
        if pe.calls + ce.calls + pr.calls + cr.calls > 0 {
            let lbl = p.label(ProbeId::EventfdWrite).or(c.label(ProbeId::EventfdRead));
            let (pp, cp) = both(ProbeId::PollWait);
            let (pw, cw) = both(ProbeId::PollWake);
            let blocked = |o: &Observed| o.sum(ProbeId::Blocked, Some(ProbeId::PollWait.name())).time_ns;
            v.push(stage(
                "steady state: poll/epoll waits for the eventfd",
                0,
                pp.calls + cp.calls,
                None,
                latency(&hist_of(&[p, c], ProbeId::PollWait)),
                p.label(ProbeId::PollWait).or(c.label(ProbeId::PollWait)),
                Some(format!(
                    "returned ready {}, timed out {} (producer {} / consumer {}); blocked {} ms; \
                     wake-ups followed by an eventfd read: {} (derived: the thread's next traced call)",
                    (pp.calls + cp.calls).saturating_sub(pp.zero + cp.zero + pp.errors() + cp.errors()),
                    pp.zero + cp.zero,
                    pp.calls,
                    cp.calls,
                    (blocked(p) + blocked(c)) / 1_000_000,
                    pw.calls + cw.calls
                )),
            ));
            v.push(stage(
                "steady state: eventfd write (notify)",
                0,
                pe.calls + ce.calls,
                None,
                None,
                lbl,
                Some(format!("producer {} / consumer {} writes", pe.calls, ce.calls)),
            ));
            v.push(stage(
                "steady state: eventfd read (take the notification)",
                0,
                pr.calls + cr.calls,
                None,
                None,
                lbl,
                Some(format!(
                    "producer {} / consumer {} reads, {} found nothing (EAGAIN)",
                    pr.calls,
                    cr.calls,
                    pr.eagain + cr.eagain
                )),
            ));
        }
        if !e.others.is_empty() {
            v.push(further_mappers(e));
        }
        let (pu, cu) = both(ProbeId::ShmMunmap);
        let (pl, cl) = both(ProbeId::ShmUnlink);
        v.push(stage(
            "teardown: munmap, shm_unlink",
            0,
            pu.calls + cu.calls + pl.calls + cl.calls,
            None,
            None,
            p.label(ProbeId::ShmUnlink).or(c.label(ProbeId::ShmUnlink)),
            Some(format!(
                "munmap {} + {} (exit unmaps implicitly); unlink {} + {}: each process's unlinks of /dev/shm \
                 paths, whichever objects they named (a path names no object once unlinked: with several \
                 objects in a process they are not told apart)",
                pu.calls, cu.calls, pl.calls, cl.calls
            )),
        ));
        v
    }

    fn agreement(&self, p: &Process, out: &mut Vec<Agreement>) {
        if let Some(e) = p.witness.as_ref().and_then(|w| w.eventfd.as_ref()) {
            let writes = p.observed.sum(ProbeId::EventfdWrite, None);
            let reads = p.observed.sum(ProbeId::EventfdRead, None);
            push(out, p, "eventfd writes", writes.calls, e.writes, 0.0);
            push(out, p, "eventfd reads", reads.calls, e.reads, 0.0);
            push(out, p, "eventfd reads that found nothing (EAGAIN)", reads.eagain, e.reads_eagain, 0.0);
            let polls = p.observed.sum(ProbeId::PollWait, None);
            push(out, p, "poll waits", polls.calls, e.polls, 0.0);
            push(out, p, "poll waits timed out", polls.zero, e.polls_timedout, 0.0);
            // Each of the workload's reads follows a poll that returned ready.
            let woke = p.observed.sum(ProbeId::PollWake, None).calls;
            push(out, p, "poll wake-ups followed by an eventfd read", woke, e.polls_ready, 0.0);
        }
        let Some(f) = p.witness.as_ref().and_then(|w| w.futex.as_ref()) else { return };
        let wait = p.observed.sum(ProbeId::FutexWait, None);
        let wake = p.observed.sum(ProbeId::FutexWake, None);
        push(out, p, "futex_wait calls", wait.calls, f.wait_calls, 0.0);
        push(out, p, "futex_wait woken", wait.zero, f.wait_woken, 0.0);
        push(out, p, "futex_wait EAGAIN", wait.eagain, f.wait_eagain, 0.0);
        push(out, p, "futex_wait timed out", wait.etimedout, f.wait_timedout, 0.0);
        push(out, p, "futex_wait interrupted (EINTR)", wait.eintr, f.wait_eintr, 0.0);
        push(out, p, "futex_wait other errors", wait.other_errors, f.wait_other, 0.0);
        push(out, p, "futex_wake calls", wake.calls, f.wake_calls, 0.0);
        push(out, p, "futex_wake waiters woken", wake.bytes, f.woken, 0.0);
    }

    fn mapped(&self) -> bool {
        true
    }

    fn copied_bytes(&self, o: &Observed) -> u64 {
        o.sum_of(COPYING).bytes
    }

    fn copies_label(&self, _o: &Observed) -> Option<Label> {
        Some(Label::Derived)
    }

    fn data_calls(&self) -> &'static [ProbeId] {
        &[
            ProbeId::FutexWait,
            ProbeId::FutexWake,
            ProbeId::EventfdWrite,
            ProbeId::EventfdRead,
            ProbeId::ShmOpen,
            ProbeId::ShmFtruncate,
            ProbeId::ShmMmap,
            ProbeId::ShmMunmap,
            ProbeId::ShmUnlink,
        ]
    }

    fn delivered(&self, _consumer: &Observed) -> Option<u64> {
        None
    }

    fn pair(
        &self,
        ino: u64,
        observed: &BTreeMap<u32, Observed>,
        found: &BTreeMap<u32, Vec<Found>>,
    ) -> (Option<u32>, Option<u32>) {
        let all = mappers(ino, observed, found);
        // The producer sizes the object (ftruncate); otherwise the lower pid.
        let sizer =
            all.iter().copied().find(|p| observed.get(p).is_some_and(|o| o.sum(ProbeId::ShmFtruncate, None).calls > 0));
        let prod = sizer.or(all.first().copied());
        let cons = all.iter().copied().find(|p| Some(*p) != prod);
        (prod, cons)
    }

    /// Every other process that maps the segment or made calls on it.
    fn others(
        &self,
        ino: u64,
        observed: &BTreeMap<u32, Observed>,
        found: &BTreeMap<u32, Vec<Found>>,
        (prod, cons): (Option<u32>, Option<u32>),
    ) -> Vec<u32> {
        mappers(ino, observed, found).into_iter().filter(|p| Some(*p) != prod && Some(*p) != cons).collect()
    }

    fn find_in_maps(&self, f: &[&str]) -> Option<(Found, u64, u64)> {
        // start-end perms offset dev inode path; shared mappings only.
        if f.len() < 6 || !f[1].contains('s') {
            return None;
        }
        let path = f[5..].join(" ");
        // A MAP_SHARED|MAP_ANONYMOUS region shows as /dev/zero (deleted): its shmem file.
        if !(path.starts_with("/dev/shm/")
            || path.starts_with("/memfd:")
            || path.starts_with("/SYSV")
            || path.starts_with("/dev/zero"))
        {
            return None;
        }
        let (a, b) = f[0].split_once('-')?;
        let (start, end, ino) =
            (u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?, f[4].parse::<u64>().ok()?);
        let path = path.trim_end_matches(" (deleted)").to_string();
        Some((Found { kind: ChannelKind::Shm.name().into(), ino, path: Some(path), peer: None }, start, end))
    }

    fn progress(&self) -> Option<ProbeId> {
        None
    }

    fn histograms(&self) -> &'static [ProbeId] {
        &[ProbeId::FutexWait, ProbeId::MmFault]
    }

    /// Both processes map the same pages: first-touch faults into them, futex waits (blocked
    /// time) and the wake-ups either way; no copy arrow.
    fn diagram(&self, e: &Ends) -> Diagram {
        use crate::model::diagram::{End::*, Unit};
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let fault_label = |o: &Observed| o.label(ProbeId::MmFault).or(o.label(ProbeId::FaultUser));
        // Woken by eventfd writes (shm-eventfd) or by futex_wake, as seen; a section of
        // `attach` holds only the segment's own calls, so neither may show.
        let seen = |probe: ProbeId| p.sum(probe, None).calls + c.sum(probe, None).calls > 0;
        let (wait_in, blocked_cap, wake) = if seen(ProbeId::EventfdWrite) {
            (ProbeId::PollWait, "poll blocked (eventfd)", " (eventfd write)")
        } else if seen(ProbeId::FutexWake) {
            (ProbeId::FutexWait, "futex_wait blocked", " (futex_wake)")
        } else {
            (ProbeId::FutexWait, "futex_wait blocked", "")
        };
        let waited = |o: &Observed| o.sum(ProbeId::Blocked, Some(wait_in.name())).time_ns;
        let (woke_consumer, woke_producer) = (format!("consumer woken{wake}"), format!("producer woken{wake}"));
        let samples = |o: &Observed| -> (u64, u64) {
            let all: Vec<_> = o.stacks_of(ProbeId::Sample).collect();
            (all.iter().filter(|s| !s.kernel.is_empty()).map(|s| s.count).sum(), all.iter().map(|s| s.count).sum())
        };
        let (a, b) = (samples(p), samples(c));
        let mut kernel_share = super::sampled_arrow(Some((a.0 + b.0, a.1 + b.1)));
        kernel_share.id = "kernel_samples".into();
        kernel_share.caption = "CPU samples in the kernel".into();
        let arrows = vec![
            Arrow::new(
                "fault_producer",
                ArrowKind::Fault,
                (Process(0), Object),
                "first-touch faults",
                Unit::Count,
                faults(p),
                fault_label(p),
            ),
            Arrow::new(
                "fault_consumer",
                ArrowKind::Fault,
                (Process(1), Object),
                "first-touch faults",
                Unit::Count,
                faults(c),
                fault_label(c),
            ),
            Arrow::new(
                "wait_producer",
                ArrowKind::Block,
                (Process(0), Object),
                blocked_cap,
                Unit::Ns,
                waited(p),
                p.label(ProbeId::Blocked),
            ),
            Arrow::new(
                "wake_consumer",
                ArrowKind::Wake,
                (Process(0), Process(1)),
                &woke_consumer,
                Unit::Count,
                woken_by(c, e.producer.pid),
                Some(Label::Exact),
            ),
            Arrow::new(
                "wait_consumer",
                ArrowKind::Block,
                (Process(1), Object),
                blocked_cap,
                Unit::Ns,
                waited(c),
                c.label(ProbeId::Blocked),
            ),
            Arrow::new(
                "wake_producer",
                ArrowKind::Wake,
                (Process(1), Process(0)),
                &woke_producer,
                Unit::Count,
                woken_by(p, e.consumer.pid),
                Some(Label::Exact),
            ),
            kernel_share,
        ];
        let mut arrows = arrows;
        for (i, m) in e.others.iter().enumerate() {
            let id = format!("fault_mapper_{}", i + 2);
            let lbl = fault_label(&m.observed);
            arrows.push(Arrow::new(
                &id,
                ArrowKind::Fault,
                (Process(i + 2), Object),
                "first-touch faults",
                Unit::Count,
                faults(&m.observed),
                lbl,
            ));
        }
        let copied = self.copied_bytes(p) + self.copied_bytes(c);
        let by = if e.others.is_empty() { "both".to_string() } else { format!("{} processes", 2 + e.others.len()) };
        Diagram {
            processes: super::diagram_names(e),
            object: format!("shared pages (shmem), mapped by {by}"),
            shared: true,
            arrows,
            note: Some(format!("no copy through the kernel: both map the same pages ({copied} bytes copied by calls)")),
        }
    }

    fn section_name(&self, _kind: ChannelKind) -> &'static str {
        "shm"
    }

    fn describe(&self, _kind: ChannelKind, ino: u64, path: Option<&str>) -> String {
        if let Some((pid, addr)) = ipctrace_common::shared_anon(ino) {
            return format!("shared anonymous mapping of pid {pid} at {addr:#x}");
        }
        match path {
            Some("/dev/zero") => format!("shared anonymous mapping (ino {ino})"),
            Some(p) if p.starts_with("/dev/shm/") || p.starts_with("/memfd:") || p.starts_with("/SYSV") => p.into(),
            Some(p) => format!("/dev/shm{p}"),
            None => format!("shm ino {ino}"),
        }
    }
}
