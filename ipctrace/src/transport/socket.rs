//! Unix domain sockets (stream, datagram, seqpacket): the probe-table rows (the unix_* send and
//! receive functions, their syscall fallback, the socket-layer and skb tracepoints), the path
//! (copy user -> skb, skb queued for the peer, receiver woken, writer blocked, copy skb ->
//! user, skb freed), the observed-vs-witness rows, and how attach/trace pair a direction: the
//! channel id is the receiving socket's inode, so the sender and the receiver share it.

use std::{collections::BTreeMap, path::Path};

use ipctrace_common::{ChannelKind, ProbeId, sysop, sysrow};

use super::{Ends, Family, Side, busiest, copy_diagram};
use crate::{
    agree::push,
    discover::{Found, Scan},
    model::{
        Agreement, Label, Observed, Process, Stage, StageTime,
        diagram::{ArrowKind, Diagram},
        probe::Mechanism,
    },
    path::{chain, copy_sample_share, latency, pct, stage, woken_by},
    probes::{Attach, LogicalProbe, imp, tp, tp_opt},
};

pub struct Socket;

pub static SOCKET: Socket = Socket;

const STREAM_SEND: &[&str] = &["unix_stream_sendmsg"];
const STREAM_RECV: &[&str] = &["unix_stream_recvmsg"];
const DGRAM_SEND: &[&str] = &["unix_dgram_sendmsg"];
/// Before 6.5 sendfile/splice into a stream socket goes through this (no copy).
const STREAM_SENDPAGE: &[&str] = &["unix_stream_sendpage"];
/// Some kernels (6.1, 7.3) receive seqpacket through `__unix_dgram_recvmsg`, not
/// `unix_dgram_recvmsg`: probed at their own entry (a nested probed call counts once).
const SEQ_SEND: &[&str] = &["unix_seqpacket_sendmsg"];
const SEQ_RECV: &[&str] = &["unix_seqpacket_recvmsg"];
const DGRAM_RECV: &[&str] = &["unix_dgram_recvmsg"];
const RULE_FN: &str = "bytes = return values of unix_stream_sendmsg/unix_dgram_sendmsg (recvmsg), exit probe; \
                       seqpacket sockets go through the dgram functions; a send with MSG_SPLICE_PAGES (6.5+) or \
                       through unix_stream_sendpage (before) is a splice: moved, not copied";
const RULE_SYSCALL: &str = "bytes = return values of write/writev/sendto/sendmsg (read/readv/recvfrom/recvmsg) on an \
                            fd that is an AF_UNIX socket; sendfile into one is counted as moved";

const SEND: ProbeId = ProbeId::SockSend;
const RECV: ProbeId = ProbeId::SockRecv;
const INTO: &[ProbeId] = &[ProbeId::SockSend, ProbeId::SockSendfile];

fn is_send_fn(f: &str) -> bool {
    f == "unix_stream_sendmsg" || f == "unix_dgram_sendmsg" || f == "unix_seqpacket_sendmsg"
}

fn is_recv_fn(f: &str) -> bool {
    f == "unix_stream_recvmsg" || f == "unix_dgram_recvmsg" || f == "unix_seqpacket_recvmsg"
}

static PROBES: &[LogicalProbe] = &[
    LogicalProbe {
        name: "unix_send",
        what: "bytes sent on AF_UNIX sockets (copied user -> skb), and sendfile into them (moved)",
        ids: &[ProbeId::SockSend, ProbeId::SockSendfile],
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                RULE_FN,
                &[
                    Attach::Fentry { prog: "fentry_unix_stream_send", func: STREAM_SEND },
                    Attach::Fexit { prog: "fexit_unix_stream_send", func: STREAM_SEND },
                    Attach::Fentry { prog: "fentry_unix_dgram_send", func: DGRAM_SEND },
                    Attach::Fexit { prog: "fexit_unix_dgram_send", func: DGRAM_SEND },
                    Attach::IfPresent(&Attach::Fentry { prog: "fentry_unix_stream_sendpage", func: STREAM_SENDPAGE }),
                    Attach::IfPresent(&Attach::Fexit { prog: "fexit_unix_stream_sendpage", func: STREAM_SENDPAGE }),
                    Attach::IfPresent(&Attach::Fentry { prog: "fentry_unix_seqpacket_send", func: SEQ_SEND }),
                    Attach::IfPresent(&Attach::Fexit { prog: "fexit_unix_seqpacket_send", func: SEQ_SEND }),
                ],
            ),
            imp(
                Mechanism::Kprobe,
                Label::Exact,
                RULE_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_unix_stream_send", func: STREAM_SEND },
                    Attach::Kprobe { prog: "kprobe_unix_dgram_send", func: DGRAM_SEND },
                    Attach::Kretprobe { prog: "kretprobe_unix_sock", func: STREAM_SEND },
                    Attach::Kretprobe { prog: "kretprobe_unix_sock", func: DGRAM_SEND },
                    Attach::IfPresent(&Attach::Kprobe { prog: "kprobe_unix_stream_sendpage", func: STREAM_SENDPAGE }),
                    Attach::IfPresent(&Attach::Kretprobe { prog: "kretprobe_unix_sock", func: STREAM_SENDPAGE }),
                    Attach::IfPresent(&Attach::Kprobe { prog: "kprobe_unix_seqpacket_send", func: SEQ_SEND }),
                    Attach::IfPresent(&Attach::Kretprobe { prog: "kretprobe_unix_sock", func: SEQ_SEND }),
                ],
            ),
            imp(
                Mechanism::Tracepoint,
                Label::Derived,
                RULE_SYSCALL,
                &[Attach::Syscalls {
                    row: sysrow::UNIX_SEND,
                    ops: &[sysop::WRITE, sysop::SEND, sysop::SENDMSG, sysop::SENDFILE],
                }],
            ),
        ],
    },
    LogicalProbe {
        name: "unix_recv",
        what: "bytes received on AF_UNIX sockets",
        ids: &[ProbeId::SockRecv],
        impls: &[
            imp(
                Mechanism::Fentry,
                Label::Exact,
                RULE_FN,
                &[
                    Attach::Fentry { prog: "fentry_unix_stream_recv", func: STREAM_RECV },
                    Attach::Fexit { prog: "fexit_unix_stream_recv", func: STREAM_RECV },
                    Attach::Fentry { prog: "fentry_unix_dgram_recv", func: DGRAM_RECV },
                    Attach::Fexit { prog: "fexit_unix_dgram_recv", func: DGRAM_RECV },
                    Attach::IfPresent(&Attach::Fentry { prog: "fentry_unix_seqpacket_recv", func: SEQ_RECV }),
                    Attach::IfPresent(&Attach::Fexit { prog: "fexit_unix_seqpacket_recv", func: SEQ_RECV }),
                ],
            ),
            imp(
                Mechanism::Kprobe,
                Label::Exact,
                RULE_FN,
                &[
                    Attach::Kprobe { prog: "kprobe_unix_stream_recv", func: STREAM_RECV },
                    Attach::Kprobe { prog: "kprobe_unix_dgram_recv", func: DGRAM_RECV },
                    Attach::Kretprobe { prog: "kretprobe_unix_sock", func: STREAM_RECV },
                    Attach::Kretprobe { prog: "kretprobe_unix_sock", func: DGRAM_RECV },
                    Attach::IfPresent(&Attach::Kprobe { prog: "kprobe_unix_seqpacket_recv", func: SEQ_RECV }),
                    Attach::IfPresent(&Attach::Kretprobe { prog: "kretprobe_unix_sock", func: SEQ_RECV }),
                ],
            ),
            imp(
                Mechanism::Tracepoint,
                Label::Derived,
                RULE_SYSCALL,
                &[Attach::Syscalls { row: sysrow::UNIX_RECV, ops: &[sysop::READ, sysop::RECV] }],
            ),
        ],
    },
    LogicalProbe {
        name: "sock_length",
        what: "the socket layer's own byte counts of AF_UNIX sends and receives (kernels from ~6.3)",
        ids: &[ProbeId::SockSendBytes, ProbeId::SockRecvBytes],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "sock:sock_send_length / sock_recv_length with family AF_UNIX: ret of each sock_sendmsg / \
             sock_recvmsg (a receive with MSG_TRUNC returns the datagram's length, not what was copied)",
            &[tp("sock_send_length", "sock", "sock_send_length"), tp("sock_recv_length", "sock", "sock_recv_length")],
        )],
    },
    LogicalProbe {
        name: "fd_passing",
        what: "fds passed over AF_UNIX sockets (SCM_RIGHTS): which channel went to whom",
        ids: &[],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "at sendmsg's entry on an AF_UNIX socket, the SCM_RIGHTS control messages read from the sender's \
             memory (up to 2 messages of 8 fds); each fd that is a channel is counted with the socket it went over",
            &[Attach::Syscalls { row: sysrow::FD_PASS, ops: &[sysop::SENDMSG] }],
        )],
    },
    LogicalProbe {
        name: "skb",
        what: "skbs of a socket call in flight: queued for the receiver, copied out, freed",
        ids: &[ProbeId::SkbQueued, ProbeId::SkbCopyOut, ProbeId::SkbFreed],
        impls: &[imp(
            Mechanism::Tracepoint,
            Label::Exact,
            "during a send: sock:sk_data_ready (an skb queued, the receiver made readable); during a receive: \
             skb:skb_copy_datagram_iovec len (bytes copied skb -> user), skb:consume_skb (skbs freed)",
            &[
                tp_opt("sk_data_ready", "sock", "sk_data_ready"),
                tp("skb_copy_datagram_iovec", "skb", "skb_copy_datagram_iovec"),
                tp("consume_skb", "skb", "consume_skb"),
            ],
        )],
    },
];

fn total(t: u64) -> Option<StageTime> {
    Some(StageTime::Total { ns: t })
}

fn sum_bytes(o: &Observed, p: ProbeId) -> u64 {
    o.sum(p, None).bytes
}

impl Family for Socket {
    fn name(&self) -> &'static str {
        "unix-socket"
    }

    fn probes(&self) -> &'static [LogicalProbe] {
        PROBES
    }

    fn required(&self) -> &'static [&'static str] {
        &["unix_send", "unix_recv"]
    }

    fn stages(&self, e: &Ends) -> Vec<Stage> {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let s = p.sum(SEND, None);
        let moved = p.sum(ProbeId::SockSendfile, None);
        let layer = sum_bytes(p, ProbeId::SockSendBytes);
        let mut hist = p.hist(SEND);
        crate::model::merge_hist(&mut hist, &p.hist(ProbeId::SockSendfile));
        let mut v = vec![stage(
            "send(2) -> unix_*_sendmsg",
            0,
            s.calls + moved.calls,
            Some(s.bytes + moved.bytes),
            latency(&hist),
            p.label(SEND).or(p.label(ProbeId::SockSendfile)),
            Some(match (chain(p, &[ProbeId::OffCpu, ProbeId::Sample], is_send_fn), layer) {
                (Some(c), 0) => format!("chain seen: {c}"),
                (Some(c), l) => format!("chain seen: {c}; the socket layer counted {l} bytes (sock_send_length)"),
                (None, 0) => String::new(),
                (None, l) => format!("the socket layer counted {l} bytes (sock_send_length)"),
            }),
        )];
        let share = copy_sample_share(p, is_send_fn);
        let mut copy = stage(
            "copy user -> skb (skb_copy_datagram_from_iter)",
            1,
            s.calls,
            Some(s.bytes),
            None,
            p.label(SEND),
            Some(match share {
                Some((h, t)) => format!("one copy per byte sent; copy frames under the send: {} (sampled)", pct(h, t)),
                None => "one copy per byte sent; no samples".into(),
            }),
        );
        if copy.observed && share.is_some() {
            copy.also = Some(Label::Sampled);
        }
        v.push(copy);
        if moved.calls > 0 {
            v.push(stage(
                "sendfile/splice into the socket: page references, no copy",
                1,
                moved.calls,
                Some(moved.bytes),
                None,
                p.label(ProbeId::SockSendfile),
                None,
            ));
        }
        let q = p.sum(ProbeId::SkbQueued, None);
        v.push(stage(
            "skbs queued for the peer (receiver made readable)",
            1,
            q.calls,
            None,
            None,
            p.label(ProbeId::SkbQueued),
            Some("sock:sk_data_ready while a send was in flight".into()),
        ));
        let b = p.sum(ProbeId::Blocked, Some(SEND.name()));
        v.push(stage(
            "writer blocked: send buffer full",
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
        let layer = sum_bytes(c, ProbeId::SockRecvBytes);
        v.push(stage(
            "recv(2) -> unix_*_recvmsg",
            0,
            r.calls,
            Some(r.bytes),
            latency(&c.hist(RECV)),
            c.label(RECV),
            Some(match (chain(c, &[ProbeId::OffCpu, ProbeId::Sample], is_recv_fn), layer) {
                (Some(ch), 0) => format!("chain seen: {ch}"),
                (Some(ch), l) => format!("chain seen: {ch}; the socket layer counted {l} bytes (sock_recv_length)"),
                (None, 0) => String::new(),
                (None, l) => format!("the socket layer counted {l} bytes (sock_recv_length)"),
            }),
        ));
        let out = c.sum(ProbeId::SkbCopyOut, None);
        let share = copy_sample_share(c, is_recv_fn);
        let mut copy = stage(
            "copy skb -> user (skb_copy_datagram_iter)",
            1,
            out.calls,
            Some(out.bytes),
            None,
            c.label(ProbeId::SkbCopyOut),
            Some(match share {
                Some((h, t)) => {
                    format!("skb:skb_copy_datagram_iovec len; copy frames under the receive: {} (sampled)", pct(h, t))
                }
                None => "skb:skb_copy_datagram_iovec len".into(),
            }),
        );
        if copy.observed && share.is_some() {
            copy.also = Some(Label::Sampled);
        }
        v.push(copy);
        let f = c.sum(ProbeId::SkbFreed, None);
        v.push(stage(
            "skbs freed after the read",
            1,
            f.calls,
            None,
            None,
            c.label(ProbeId::SkbFreed),
            Some("skb:consume_skb while a receive was in flight".into()),
        ));
        let b = c.sum(ProbeId::Blocked, Some(RECV.name()));
        v.push(stage(
            "reader blocked: nothing queued",
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
            let s = o.sum_of(INTO);
            push(out, p, "send bytes", s.bytes, w.bytes, 0.0);
            // A sendfile seen inside the kernel comes in pieces (sendpage per page before 6.5,
            // sendmsg per splice batch after): its calls are the system calls only at the
            // syscall tier.
            let moved = o.sum(ProbeId::SockSendfile, None);
            if moved.calls == 0 || o.label(ProbeId::SockSendfile) == Some(Label::Derived) {
                push(out, p, "send calls", s.calls, w.calls, 0.0);
            }
            let layer = o.sum(ProbeId::SockSendBytes, None);
            if layer.calls > 0 {
                push(out, p, "bytes the socket layer sent (sock_send_length)", layer.bytes, w.bytes, 0.0);
            }
        } else {
            let r = o.sum(RECV, None);
            push(out, p, "recv bytes", r.bytes, w.bytes, 0.0);
            push(out, p, "recv calls", r.calls, w.calls, 0.0);
            let layer = o.sum(ProbeId::SockRecvBytes, None);
            if layer.calls > 0 {
                push(out, p, "bytes the socket layer received (sock_recv_length)", layer.bytes, w.bytes, 0.0);
            }
            if let Some(copied) = w.copied_bytes {
                push(out, p, "bytes copied skb -> user", o.sum(ProbeId::SkbCopyOut, None).bytes, copied, 0.0);
            }
        }
    }

    fn copied_bytes(&self, o: &Observed) -> u64 {
        // Out: what the skb copy tracepoint saw, else what the receives returned.
        let out = o.sum(ProbeId::SkbCopyOut, None).bytes;
        let recv = if out > 0 { out } else { o.sum(RECV, None).bytes };
        o.sum(SEND, None).bytes + recv
    }

    fn copies_label(&self, o: &Observed) -> Option<Label> {
        o.label(SEND).or(o.label(RECV))
    }

    fn data_calls(&self) -> &'static [ProbeId] {
        &[ProbeId::SockSend, ProbeId::SockRecv, ProbeId::SockSendfile]
    }

    fn delivered(&self, consumer: &Observed) -> Option<u64> {
        Some(consumer.sum(RECV, None).bytes)
    }

    /// The sender and the receiver seen on the channel; where one was not seen, the traced
    /// holder of the peer socket (the writer's end) or of the socket itself (the reader's).
    fn pair(
        &self,
        ino: u64,
        observed: &BTreeMap<u32, Observed>,
        found: &BTreeMap<u32, Vec<Found>>,
    ) -> (Option<u32>, Option<u32>) {
        let (w, r) = self.end_objects(ino, found);
        let held = |obj: Option<u64>| obj.and_then(|o| super::holders(found, o).into_iter().next());
        (busiest(observed, ino, INTO).or_else(|| held(w)), busiest(observed, ino, &[RECV]).or_else(|| held(r)))
    }

    /// A direction's reader holds the receiving socket (the channel's id), its writer the
    /// receiving socket's peer.
    fn end_objects(&self, ino: u64, found: &BTreeMap<u32, Vec<Found>>) -> (Option<u64>, Option<u64>) {
        let peer = found.values().flatten().find(|f| f.ino == ino).and_then(|f| f.peer);
        (peer, Some(ino))
    }

    /// `socket:[INO]` of a Unix socket that sock_diag knows (a listening socket carries no
    /// data and is not a channel); named by its bound name or its peer's.
    fn find_in_fd(&self, link: &str, _fd: &Path, scan: &Scan) -> Option<Found> {
        let ino: u64 = link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
        let s = scan.unix.get(&ino)?;
        if s.listening || s.kind == ChannelKind::Other {
            return None;
        }
        let path = s.name.clone().or_else(|| s.peer.and_then(|p| scan.unix.get(&p)?.name.clone()));
        Some(Found { kind: s.kind.name().into(), ino, path, peer: s.peer })
    }

    fn progress(&self) -> Option<ProbeId> {
        Some(RECV)
    }

    fn histograms(&self) -> &'static [ProbeId] {
        &[ProbeId::SockSend, ProbeId::SockRecv]
    }

    fn diagram(&self, e: &Ends) -> Diagram {
        let (p, c) = (&e.producer.observed, &e.consumer.observed);
        let moved = p.sum(ProbeId::SockSendfile, None);
        let into = if moved.calls > 0 && p.sum(SEND, None).calls == 0 {
            Side {
                caption: "sendfile into the socket (pages, no copy)",
                bytes: moved.bytes,
                kind: ArrowKind::Move,
                label: p.label(ProbeId::SockSendfile),
                call: ProbeId::SockSendfile,
            }
        } else {
            Side {
                caption: "copy user -> skb",
                bytes: p.sum(SEND, None).bytes,
                kind: ArrowKind::Copy,
                label: p.label(SEND),
                call: SEND,
            }
        };
        let copied_out = c.sum(ProbeId::SkbCopyOut, None);
        let (bytes, label) = if copied_out.calls > 0 {
            (copied_out.bytes, c.label(ProbeId::SkbCopyOut))
        } else {
            (c.sum(RECV, None).bytes, c.label(RECV))
        };
        let out = Side { caption: "copy skb -> user", bytes, kind: ArrowKind::Copy, label, call: RECV };
        let share = |o: &Observed, f: fn(&str) -> bool| copy_sample_share(o, f).unwrap_or((0, 0));
        let (a, b) = (share(p, is_send_fn), share(c, is_recv_fn));
        copy_diagram(e, "skb queue of the receiving socket", into, out, Some((a.0 + b.0, a.1 + b.1)))
    }

    fn section_name(&self, kind: ChannelKind) -> &'static str {
        match kind {
            ChannelKind::UnixDgram => "unix-dgram",
            ChannelKind::UnixSeqpacket => "unix-seqpacket",
            _ => "unix-stream",
        }
    }

    fn describe(&self, kind: ChannelKind, ino: u64, path: Option<&str>) -> String {
        let what = match kind {
            ChannelKind::UnixDgram => "unix datagram socket",
            ChannelKind::UnixSeqpacket => "unix seqpacket socket",
            _ => "unix stream socket",
        };
        match path {
            Some(p) => format!("{what} {p} (receiver ino {ino})"),
            None => format!("{what} (receiver ino {ino})"),
        }
    }
}
