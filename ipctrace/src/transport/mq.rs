//! Message queues, POSIX (`mq`) and SysV (`sysv-msg`): the probe-table row (the syscall
//! dispatcher on mq_timedsend/mq_timedreceive and msgsnd/msgrcv), the path (copy into a
//! kernel message, handed to a waiting receiver or queued, writer blocked on a full queue,
//! reader woken, copy out), the observed-vs-witness rows, and how attach/trace find POSIX
//! queues (an fd on the mqueue filesystem) and pair a queue's senders and receivers. A SysV
//! queue has no fd: its channel id is `SYSV_MSG_ID | msqid`, seen through its calls.

use std::{collections::BTreeMap, path::Path};

use ipctrace_common::{ChannelKind, MQUEUE_MAGIC, ProbeId, SYSV_MSG_ID, sysop, sysrow};

use super::{Ends, Family, Side, busiest, copy_diagram};
use crate::{
    agree::push,
    discover::{Found, Scan},
    model::{
        Agreement, Label, Observed, Process, Stage, StageTime,
        diagram::{ArrowKind, Diagram},
    },
    path::{chain, copy_sample_share, latency, stage, woken_by},
    probes::{Attach, Impl, LogicalProbe, imp},
};

pub struct Mq;

pub static MQ: Mq = Mq;

const SEND: ProbeId = ProbeId::MqSend;
const RECV: ProbeId = ProbeId::MqRecv;

/// The kernel functions of a queue call (frames that mark it in a stack).
fn is_send_fn(f: &str) -> bool {
    matches!(f, "do_mq_timedsend" | "do_msgsnd" | "load_msg")
}

fn is_recv_fn(f: &str) -> bool {
    matches!(f, "do_mq_timedreceive" | "do_msgrcv" | "store_msg")
}

const MQ_SEND: &[&str] = &["do_mq_timedsend"];
const MQ_RECV: &[&str] = &["do_mq_timedreceive"];
// ksys_msgsnd/ksys_msgrcv exist but are inlined into the syscalls (6.1, 7.3): never called.
const MSGSND: &[&str] = &["do_msgsnd"];
const MSGRCV: &[&str] = &["do_msgrcv"];
const RULE_CALL_FN: &str = "counted at do_mq_timedsend/do_mq_timedreceive and do_msgsnd/do_msgrcv (all four or \
                            none, so both queue kinds carry one label): send bytes = the length asked when the \
                            function returned 0, receive bytes = its return value; hand-off as at the syscall tier";
const LOAD_MSG: &[&str] = &["load_msg"];
const STORE_MSG: &[&str] = &["store_msg"];
const RULE_COPY_FN: &str = "bytes = the length load_msg (store_msg) copied, at its exit, when it succeeded; both queue \
                            kinds copy through them";

static PROBES: &[LogicalProbe] = &[
    LogicalProbe {
        name: "msg_queue",
        what: "messages sent and received on POSIX and SysV message queues; hand-off to a waiting receiver or queued",
        ids: &[ProbeId::MqSend, ProbeId::MqRecv, ProbeId::MqHandoff, ProbeId::MqQueued, ProbeId::MqPriority],
        impls: &[
            imp(
                crate::model::probe::Mechanism::Fentry,
                Label::Exact,
                RULE_CALL_FN,
                &[
                    Attach::Fentry { prog: "fentry_mq_send", func: MQ_SEND },
                    Attach::Fexit { prog: "fexit_mq_send", func: MQ_SEND },
                    Attach::Fentry { prog: "fentry_mq_recv", func: MQ_RECV },
                    Attach::Fexit { prog: "fexit_mq_recv", func: MQ_RECV },
                    Attach::Fentry { prog: "fentry_msgsnd", func: MSGSND },
                    Attach::Fexit { prog: "fexit_msgsnd", func: MSGSND },
                    Attach::Fentry { prog: "fentry_msgrcv", func: MSGRCV },
                    Attach::Fexit { prog: "fexit_msgrcv", func: MSGRCV },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Kprobe,
                Label::Exact,
                RULE_CALL_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_mq_send", func: MQ_SEND },
                    Attach::Kretprobe { prog: "kretprobe_mq", func: MQ_SEND },
                    Attach::Kprobe { prog: "kprobe_mq_recv", func: MQ_RECV },
                    Attach::Kretprobe { prog: "kretprobe_mq", func: MQ_RECV },
                    Attach::Kprobe { prog: "kprobe_msgsnd", func: MSGSND },
                    Attach::Kretprobe { prog: "kretprobe_mq", func: MSGSND },
                    Attach::Kprobe { prog: "kprobe_msgrcv", func: MSGRCV },
                    Attach::Kretprobe { prog: "kretprobe_mq", func: MSGRCV },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Tracepoint,
                Label::Derived,
                "send bytes = the length asked at mq_timedsend/msgsnd's entry when the call returned 0; receive \
                 bytes = return values of mq_timedreceive/msgrcv; a send is a hand-off when the thread that last \
                 entered a receive on the same queue was blocked in it (off the CPU) at the send's entry, else queued",
                &[Attach::Syscalls {
                    row: sysrow::MQ,
                    ops: &[sysop::MQ_SEND, sysop::MQ_RECV, sysop::MSGSND, sysop::MSGRCV],
                }],
            ),
        ],
    },
    LogicalProbe {
        name: "msg_copy",
        what: "the copies of a message: user -> kernel message (load_msg) and back (store_msg)",
        ids: &[ProbeId::MqCopyIn, ProbeId::MqCopyOut],
        impls: &[
            imp(
                crate::model::probe::Mechanism::Fentry,
                Label::Exact,
                RULE_COPY_FN,
                &[
                    Attach::Fexit { prog: "fexit_load_msg", func: LOAD_MSG },
                    Attach::Fexit { prog: "fexit_store_msg", func: STORE_MSG },
                ],
            ),
            imp(
                crate::model::probe::Mechanism::Kprobe,
                Label::Exact,
                RULE_COPY_FN,
                &[
                    Attach::Kretprobe { prog: "kretprobe_load_msg", func: LOAD_MSG },
                    Attach::Kprobe { prog: "kprobe_store_msg", func: STORE_MSG },
                    Attach::Kretprobe { prog: "kretprobe_store_msg", func: STORE_MSG },
                ],
            ),
            Impl {
                mechanism: crate::model::probe::Mechanism::Tracepoint,
                label: Label::Derived,
                rule: "one copy in per byte sent and one copy out per byte received (the msg_queue figures)",
                attach: &[],
                uses: Some("msg_queue"),
            },
        ],
    },
];

/// Messages sent by a process, by priority (SysV: mtype), lowest first.
pub fn by_priority(o: &Observed) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for e in o.events.iter().filter(|e| e.probe == ProbeId::MqPriority.name()) {
        if let Ok(p) = e.sub.parse::<u64>() {
            *m.entry(p).or_default() += e.calls;
        }
    }
    m
}

fn total(t: u64) -> Option<StageTime> {
    Some(StageTime::Total { ns: t })
}

/// A chain of kernel frames seen under the call, if samples caught one.
fn seen(o: &Observed, leaf: fn(&str) -> bool) -> Option<String> {
    chain(o, &[ProbeId::OffCpu, ProbeId::Sample], leaf).map(|c| format!("chain seen: {c}"))
}

impl Family for Mq {
    fn name(&self) -> &'static str {
        "message-queue"
    }

    fn probes(&self) -> &'static [LogicalProbe] {
        PROBES
    }

    fn required(&self) -> &'static [&'static str] {
        &["msg_queue"]
    }

    fn stages(&self, e: &Ends) -> Vec<Stage> {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let s = p.sum(SEND, None);
        let mut v = vec![stage(
            "mq_send / msgsnd",
            0,
            s.calls,
            Some(s.bytes),
            latency(&p.hist(SEND)),
            p.label(SEND),
            seen(p, is_send_fn),
        )];
        let cin = p.sum(ProbeId::MqCopyIn, None);
        v.push(if cin.calls > 0 {
            stage(
                "copy user -> kernel message (load_msg: msg_msg allocated)",
                1,
                cin.calls,
                Some(cin.bytes),
                None,
                p.label(ProbeId::MqCopyIn),
                Some("counted at load_msg's exit".into()),
            )
        } else {
            stage(
                "copy user -> kernel message (load_msg: msg_msg allocated)",
                1,
                s.calls.saturating_sub(s.zero + s.eagain + s.etimedout + s.eintr + s.other_errors),
                Some(s.bytes),
                None,
                p.label(SEND),
                Some("one copy per byte sent, into a message allocated for it (derived)".into()),
            )
        });
        let hand = p.sum(ProbeId::MqHandoff, None);
        v.push(stage(
            "handed to a receiver already waiting",
            1,
            hand.calls,
            None,
            None,
            p.label(ProbeId::MqHandoff),
            Some("the receiver was blocked in a receive on the queue when the send entered (derived)".into()),
        ));
        let queued = p.sum(ProbeId::MqQueued, None);
        v.push(stage(
            "queued (no receiver waiting)",
            1,
            queued.calls,
            None,
            None,
            p.label(ProbeId::MqQueued),
            Some("no receiver was blocked on the queue when the send entered (derived)".into()),
        ));
        let prios = by_priority(p);
        if prios.len() > 1 {
            let list: Vec<String> = prios.iter().rev().map(|(pr, n)| format!("{pr}: {n}")).collect();
            v.push(stage(
                "messages by priority (SysV: mtype)",
                1,
                prios.values().sum(),
                None,
                None,
                p.label(ProbeId::MqPriority),
                Some(list.join(", ")),
            ));
        }
        let b = p.sum(ProbeId::Blocked, Some(SEND.name()));
        v.push(stage(
            "writer blocked: queue full",
            1,
            b.calls,
            None,
            total(b.time_ns),
            p.label(ProbeId::Blocked),
            Some("voluntary switches while a send was in flight".into()),
        ));
        v.push(stage(
            "reader woken by the writer",
            1,
            woken_by(c, e.producer.pid),
            None,
            None,
            Some(Label::Exact),
            None,
        ));
        let r = c.sum(RECV, None);
        v.push(stage(
            "mq_receive / msgrcv",
            0,
            r.calls,
            Some(r.bytes),
            latency(&c.hist(RECV)),
            c.label(RECV),
            seen(c, is_recv_fn),
        ));
        let cout = c.sum(ProbeId::MqCopyOut, None);
        v.push(if cout.calls > 0 {
            stage(
                "copy kernel message -> user (store_msg), message freed",
                1,
                cout.calls,
                Some(cout.bytes),
                None,
                c.label(ProbeId::MqCopyOut),
                Some("counted at store_msg's exit".into()),
            )
        } else {
            stage(
                "copy kernel message -> user (store_msg), message freed",
                1,
                r.calls.saturating_sub(r.zero + r.eagain + r.etimedout + r.eintr + r.other_errors),
                Some(r.bytes),
                None,
                c.label(RECV),
                Some("one copy per byte received (derived)".into()),
            )
        });
        let b = c.sum(ProbeId::Blocked, Some(RECV.name()));
        v.push(stage(
            "reader blocked: queue empty",
            1,
            b.calls,
            None,
            total(b.time_ns),
            c.label(ProbeId::Blocked),
            Some("voluntary switches while a receive was in flight".into()),
        ));
        v.push(stage(
            "writer woken by the reader",
            1,
            woken_by(p, e.consumer.pid),
            None,
            None,
            Some(Label::Exact),
            None,
        ));
        v
    }

    fn agreement(&self, p: &Process, out: &mut Vec<Agreement>) {
        let Some(w) = &p.witness else { return };
        let o = &p.observed;
        if p.role == "producer" {
            let s = o.sum(SEND, None);
            push(out, p, "send bytes", s.bytes, w.bytes, 0.0);
            push(out, p, "send calls", s.calls, w.calls, 0.0);
            let msgs = o.sum(ProbeId::MqHandoff, None).calls + o.sum(ProbeId::MqQueued, None).calls;
            push(out, p, "messages sent (handed off + queued)", msgs, w.messages, 0.0);
            let cin = o.sum(ProbeId::MqCopyIn, None);
            if cin.calls > 0 {
                // Every send attempt copies its message in, a retried one again.
                push(out, p, "bytes copied in (load_msg)", cin.bytes, w.offered_bytes.unwrap_or(w.bytes), 0.0);
            }
            // Messages per priority (SysV: mtype), as the kernel saw them at each send.
            let seen = by_priority(o);
            for &(key, n) in w.priorities.iter().flatten() {
                push(out, p, &format!("messages at priority {key}"), seen.get(&key).copied().unwrap_or(0), n, 0.0);
            }
        } else {
            let r = o.sum(RECV, None);
            push(out, p, "receive bytes", r.bytes, w.bytes, 0.0);
            push(out, p, "receive calls", r.calls, w.calls, 0.0);
            let cout = o.sum(ProbeId::MqCopyOut, None);
            if cout.calls > 0 {
                push(out, p, "bytes copied out (store_msg)", cout.bytes, w.bytes, 0.0);
            }
        }
    }

    /// The copies as load_msg/store_msg counted them (function tier), else the sends and
    /// receives (one copy each way).
    fn copied_bytes(&self, o: &Observed) -> u64 {
        let (cin, cout) = (o.sum(ProbeId::MqCopyIn, None), o.sum(ProbeId::MqCopyOut, None));
        if cin.calls + cout.calls > 0 {
            return cin.bytes + cout.bytes;
        }
        o.sum(SEND, None).bytes + o.sum(RECV, None).bytes
    }

    fn copies_label(&self, o: &Observed) -> Option<Label> {
        o.label(ProbeId::MqCopyIn).or(o.label(ProbeId::MqCopyOut)).or(o.label(SEND)).or(o.label(RECV))
    }

    fn data_calls(&self) -> &'static [ProbeId] {
        &[ProbeId::MqSend, ProbeId::MqRecv]
    }

    fn delivered(&self, consumer: &Observed) -> Option<u64> {
        Some(consumer.sum(RECV, None).bytes)
    }

    fn pair(
        &self,
        ino: u64,
        observed: &BTreeMap<u32, Observed>,
        _found: &BTreeMap<u32, Vec<Found>>,
    ) -> (Option<u32>, Option<u32>) {
        (busiest(observed, ino, &[SEND]), busiest(observed, ino, &[RECV]))
    }

    /// An fd on the mqueue filesystem (its link is the queue's name, `(deleted)` once
    /// unlinked).
    fn find_in_fd(&self, link: &str, fd: &Path, _scan: &Scan) -> Option<Found> {
        if !link.starts_with('/') {
            return None;
        }
        let fs = nix::sys::statfs::statfs(fd).ok()?;
        if fs.filesystem_type().0 as u64 != MQUEUE_MAGIC {
            return None;
        }
        let md = std::fs::metadata(fd).ok()?;
        Some(Found {
            kind: ChannelKind::MsgQueue.name().into(),
            ino: std::os::unix::fs::MetadataExt::ino(&md),
            path: Some(link.to_string()),
            peer: None,
        })
    }

    /// SysV queues whose last sender or receiver is `pid` (the queue has no fd to find).
    fn find_in_scan(&self, pid: u32, scan: &Scan) -> Vec<Found> {
        scan.sysv_msg
            .iter()
            .filter(|q| q.lspid == pid || q.lrpid == pid)
            .map(|q| Found {
                kind: ChannelKind::SysvMsg.name().into(),
                ino: SYSV_MSG_ID | q.msqid as u64,
                path: Some(format!("msqid {}", q.msqid)),
                peer: None,
            })
            .collect()
    }

    fn progress(&self) -> Option<ProbeId> {
        Some(RECV)
    }

    fn histograms(&self) -> &'static [ProbeId] {
        &[ProbeId::MqSend, ProbeId::MqRecv]
    }

    fn diagram(&self, e: &Ends) -> Diagram {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let side = |o: &Observed, copy: ProbeId, call: ProbeId, caption| {
            let s = o.sum(copy, None);
            let (bytes, label) =
                if s.calls > 0 { (s.bytes, o.label(copy)) } else { (o.sum(call, None).bytes, o.label(call)) };
            Side { caption, bytes, kind: ArrowKind::Copy, label, call }
        };
        let into = side(p, ProbeId::MqCopyIn, SEND, "copy user -> kernel message (load_msg)");
        let out = side(c, ProbeId::MqCopyOut, RECV, "copy kernel message -> user (store_msg)");
        let share = |o: &Observed, f: fn(&str) -> bool| copy_sample_share(o, f).unwrap_or((0, 0));
        let (a, b) = (share(p, is_send_fn), share(c, is_recv_fn));
        copy_diagram(e, "queued messages (msg_msg)", into, out, Some((a.0 + b.0, a.1 + b.1)))
    }

    fn section_name(&self, kind: ChannelKind) -> &'static str {
        if kind == ChannelKind::SysvMsg { "sysv-msg" } else { "mq" }
    }

    fn describe(&self, kind: ChannelKind, ino: u64, path: Option<&str>) -> String {
        match (kind, path) {
            (ChannelKind::SysvMsg, _) => format!("SysV msq {}", ino & !SYSV_MSG_ID),
            (_, Some(p)) => format!("mq {p}"),
            _ => format!("mq ino {ino}"),
        }
    }
}
