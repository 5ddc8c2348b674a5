//! `--perfetto FILE`: the run's event stream as a Perfetto trace (protobuf `Trace` of
//! `TracePacket`s). A track per process and a thread track per traced thread; each call a
//! slice (from its start to its return, with bytes, result and channel as arguments), each
//! blocked interval a slice on the blocked thread, faults and other events instants; a
//! wake-up an instant on the waker's thread with a flow to an instant on the woken thread and
//! on to the call that thread makes next;
//! bytes in flight per channel as counter tracks; an instant with the loss counts at the end.
//! The messages are prost structs for the fields used, with the field numbers of Perfetto's
//! `protos/perfetto/trace/` (trace.proto, trace_packet.proto, track_event/*.proto); all
//! packets are on one sequence, whose first packet clears the incremental state.

use std::collections::{BTreeMap, BTreeSet};

use ipctrace_common::{ChannelKind, Event, ProbeId};
use prost::Message;

pub use crate::model::timeline::Timeline;

#[derive(Clone, PartialEq, Message)]
struct Trace {
    #[prost(message, repeated, tag = "1")]
    packet: Vec<TracePacket>,
}

#[derive(Clone, PartialEq, Message)]
struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    track_event: Option<TrackEvent>,
    #[prost(uint32, optional, tag = "13")]
    sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(message, optional, tag = "3")]
    process: Option<ProcessDescriptor>,
    #[prost(message, optional, tag = "4")]
    thread: Option<ThreadDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ThreadDescriptor {
    #[prost(int32, optional, tag = "1")]
    pid: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    tid: Option<i32>,
    #[prost(string, optional, tag = "5")]
    thread_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct CounterDescriptor {
    /// UNIT_SIZE_BYTES = 3.
    #[prost(int32, optional, tag = "3")]
    unit: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    debug_annotations: Vec<DebugAnnotation>,
    /// TYPE_SLICE_BEGIN = 1, TYPE_SLICE_END = 2, TYPE_INSTANT = 3, TYPE_COUNTER = 4.
    #[prost(int32, optional, tag = "9")]
    r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    track_uuid: Option<u64>,
    #[prost(string, repeated, tag = "22")]
    categories: Vec<String>,
    #[prost(string, optional, tag = "23")]
    name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    counter_value: Option<i64>,
    #[prost(fixed64, repeated, tag = "47")]
    flow_ids: Vec<u64>,
    #[prost(fixed64, repeated, tag = "48")]
    terminating_flow_ids: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct DebugAnnotation {
    #[prost(uint64, optional, tag = "3")]
    uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const COUNTER: i32 = 4;
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
const SEQUENCE: u32 = 1;

fn uint(name: &str, v: u64) -> DebugAnnotation {
    DebugAnnotation { name: Some(name.into()), uint_value: Some(v), ..Default::default() }
}

fn int(name: &str, v: i64) -> DebugAnnotation {
    DebugAnnotation { name: Some(name.into()), int_value: Some(v), ..Default::default() }
}

fn text(name: &str, v: String) -> DebugAnnotation {
    DebugAnnotation { name: Some(name.into()), string_value: Some(v), ..Default::default() }
}

/// Calls that put bytes into a channel, and calls that take them out (for the counters).
const INTO: &[ProbeId] = &[
    ProbeId::PipeWrite,
    ProbeId::SpliceIn,
    ProbeId::Vmsplice,
    ProbeId::SockSend,
    ProbeId::SockSendfile,
    ProbeId::MqSend,
];
const OUT: &[ProbeId] = &[ProbeId::PipeRead, ProbeId::SpliceOut, ProbeId::SockRecv, ProbeId::MqRecv];

fn process_uuid(pid: u32) -> u64 {
    (1 << 40) | pid as u64
}

fn thread_uuid(tid: u32) -> u64 {
    (2 << 40) | tid as u64
}

/// One track event to be written, with the order it takes among events at the same time.
struct Pending {
    ts: u64,
    /// Ends first, then instants and counters, then begins; among ends the later-started
    /// first, among begins the longer first (so slices nest).
    order: (u8, i64),
    event: TrackEvent,
}

/// Encodes the timeline as a Perfetto trace.
pub fn encode(t: &Timeline) -> Vec<u8> {
    let mut packets = vec![TracePacket {
        trusted_packet_sequence_id: Some(SEQUENCE),
        sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
        track_descriptor: Some(TrackDescriptor {
            uuid: Some(3 << 40),
            name: Some("ipctrace".into()),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let name_of = |pid: u32| t.names.get(&pid).cloned().unwrap_or_else(|| format!("pid {pid}"));
    // The thread each event is about, and its process.
    let subject = |e: &Event| -> (u32, u32) {
        match ProbeId::from_u16(e.probe) {
            Some(ProbeId::Blocked) if e.other != 0 => (e.tgid, e.other),
            // A wake-up is drawn on the waker: its process is `ino`, its thread `tid`.
            Some(ProbeId::Wakeup | ProbeId::Signal) => (e.ino as u32, e.tid),
            _ => (e.tgid, e.tid),
        }
    };
    let targets: BTreeSet<u32> = t.events.iter().map(|e| e.tgid).collect();
    let mut threads: BTreeMap<u32, u32> = BTreeMap::new();
    for e in &t.events {
        let (pid, tid) = subject(e);
        threads.insert(tid, pid);
        if ProbeId::from_u16(e.probe) == Some(ProbeId::Wakeup) && e.other != 0 {
            threads.insert(e.other, e.tgid);
        }
    }
    let pids: BTreeSet<u32> = threads.values().copied().collect();
    for &pid in &pids {
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(process_uuid(pid)),
            process: Some(ProcessDescriptor { pid: Some(pid as i32), process_name: Some(name_of(pid)) }),
            ..Default::default()
        }));
    }
    for (&tid, &pid) in &threads {
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(thread_uuid(tid)),
            parent_uuid: Some(process_uuid(pid)),
            thread: Some(ThreadDescriptor {
                pid: Some(pid as i32),
                tid: Some(tid as i32),
                thread_name: Some(format!("{} {pid}/{tid}", name_of(pid))),
            }),
            ..Default::default()
        }));
    }
    // Counter tracks: bytes in flight per channel.
    let mut channels: BTreeMap<(u16, u64), (u64, i64)> = BTreeMap::new();
    let mut out: Vec<Pending> = Vec::new();
    let mut flow = 0u64;
    let mut last_ts = 0u64;
    for e in &t.events {
        let Some(probe) = ProbeId::from_u16(e.probe) else { continue };
        let (pid, tid) = subject(e);
        last_ts = last_ts.max(e.ts_ns);
        let channel = ChannelKind::from_u16(e.kind)
            .filter(|k| *k != ChannelKind::Other && e.ino != 0 && !matches!(probe, ProbeId::Blocked | ProbeId::Wakeup));
        let mut args = vec![int("value", e.value)];
        if let Some(k) = channel {
            // Ids that are not inode numbers read as what they name.
            let name = match (ipctrace_common::eventfd_id(e.ino), ipctrace_common::shared_anon(e.ino)) {
                (Some(id), _) => format!("{} id {id}", k.name()),
                (None, Some((pid, addr))) => format!("{} shared anonymous mapping of pid {pid} at {addr:#x}", k.name()),
                _ => format!("{} {}", k.name(), e.ino),
            };
            args.push(text("channel", name));
        }
        if probe == ProbeId::Wakeup {
            // A flow from waker to woken when both are targets; a waker outside the targets
            // (an interrupt, a kernel thread, another program) only gets its instant.
            let cross = targets.contains(&pid);
            if cross {
                flow += 1;
            }
            out.push(Pending {
                ts: e.ts_ns,
                order: (1, 0),
                event: TrackEvent {
                    r#type: Some(INSTANT),
                    track_uuid: Some(thread_uuid(tid)),
                    name: Some(format!("wakes {}", e.other)),
                    debug_annotations: vec![uint("woken_tid", e.other as u64)],
                    flow_ids: if cross { vec![flow] } else { Vec::new() },
                    ..Default::default()
                },
            });
            if !cross {
                continue;
            }
            out.push(Pending {
                ts: e.ts_ns,
                order: (1, 1),
                event: TrackEvent {
                    r#type: Some(INSTANT),
                    track_uuid: Some(thread_uuid(e.other)),
                    name: Some(format!("woken by {tid}")),
                    debug_annotations: vec![uint("waker_tid", tid as u64)],
                    // Continued to the call the woken thread makes next (below).
                    flow_ids: vec![flow],
                    ..Default::default()
                },
            });
            continue;
        }
        if probe == ProbeId::Signal {
            // On the sender's thread: the number, the receiving thread, the result.
            out.push(Pending {
                ts: e.ts_ns,
                order: (1, 2),
                event: TrackEvent {
                    r#type: Some(INSTANT),
                    track_uuid: Some(thread_uuid(tid)),
                    name: Some(format!("signal {} to {}", e.kind, e.other)),
                    categories: vec!["ipc".into()],
                    debug_annotations: vec![
                        uint("signal", e.kind as u64),
                        uint("to_tid", e.other as u64),
                        int("result", e.value),
                    ],
                    ..Default::default()
                },
            });
            continue;
        }
        let name = if probe == ProbeId::Blocked {
            let inflight = e.kind / 16;
            format!("blocked in {}", if inflight == 0 { "other" } else { ProbeId::name_of(inflight).unwrap_or("?") })
        } else {
            probe.name().to_string()
        };
        let track = Some(thread_uuid(tid));
        let _ = pid;
        if e.dur_ns > 0 {
            let start = e.ts_ns.saturating_sub(e.dur_ns);
            if probe != ProbeId::Blocked && e.value >= 0 {
                args.push(uint("bytes", e.value as u64));
            }
            args.push(uint("dur_ns", e.dur_ns));
            out.push(Pending {
                ts: start,
                order: (2, -(e.dur_ns as i64)),
                event: TrackEvent {
                    r#type: Some(SLICE_BEGIN),
                    track_uuid: track,
                    name: Some(name),
                    categories: vec!["ipc".into()],
                    debug_annotations: args,
                    ..Default::default()
                },
            });
            out.push(Pending {
                ts: e.ts_ns,
                order: (0, -(start as i64)),
                event: TrackEvent { r#type: Some(SLICE_END), track_uuid: track, ..Default::default() },
            });
        } else {
            out.push(Pending {
                ts: e.ts_ns,
                order: (1, 2),
                event: TrackEvent {
                    r#type: Some(INSTANT),
                    track_uuid: track,
                    name: Some(name),
                    categories: vec!["ipc".into()],
                    debug_annotations: args,
                    ..Default::default()
                },
            });
        }
        // Bytes in flight: what went in minus what came out.
        if let Some(k) = channel
            && e.value > 0
        {
            let sign = if INTO.contains(&probe) {
                1
            } else if OUT.contains(&probe) {
                -1
            } else {
                0
            };
            if sign != 0 {
                let n = channels.len() as u64;
                let c = channels.entry((k as u16, e.ino)).or_insert((4 << 40 | n, 0));
                c.1 += sign * e.value;
                out.push(Pending {
                    ts: e.ts_ns,
                    order: (1, 3),
                    event: TrackEvent {
                        r#type: Some(COUNTER),
                        track_uuid: Some(c.0),
                        counter_value: Some(c.1),
                        ..Default::default()
                    },
                });
            }
        }
    }
    for ((k, ino), (uuid, _)) in &channels {
        let kind = ChannelKind::name_of(*k).unwrap_or("?");
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(*uuid),
            name: Some(format!("bytes in flight: {kind} {ino}")),
            counter: Some(CounterDescriptor { unit: Some(3) }),
            ..Default::default()
        }));
    }
    // Loss: one instant with the counts, at the end.
    out.push(Pending {
        ts: last_ts,
        order: (3, 0),
        event: TrackEvent {
            r#type: Some(INSTANT),
            track_uuid: Some(3 << 40),
            name: Some("ipctrace event stream".into()),
            debug_annotations: vec![
                uint("delivered", t.events.len() as u64 + t.not_kept),
                uint("lost", t.lost),
                uint("not_kept", t.not_kept),
                uint("counted", t.events.len() as u64 + t.not_kept + t.lost),
            ],
            ..Default::default()
        },
    });
    out.sort_by_key(|p| (p.ts, p.order));
    end_flows(&mut out);
    packets.extend(out.into_iter().map(|p| TracePacket {
        timestamp: Some(p.ts),
        trusted_packet_sequence_id: Some(SEQUENCE),
        sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
        track_event: Some(p.event),
        ..Default::default()
    }));
    Trace { packet: packets }.encode_to_vec()
}

/// Each flow goes waker -> woken thread -> the call that thread starts next: the first slice
/// beginning on its track at or after the wake-up ends the flow (where there is none, the
/// woken instant does). `out` is in time order.
fn end_flows(out: &mut [Pending]) {
    let mut open: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    for (i, p) in out.iter_mut().enumerate() {
        let e = &mut p.event;
        let track = e.track_uuid.unwrap_or(0);
        if e.r#type == Some(INSTANT) && e.name.as_deref().is_some_and(|n| n.starts_with("woken by")) {
            if let Some(&f) = e.flow_ids.first() {
                open.entry(track).or_default().push((i, f));
            }
            continue;
        }
        // A block is not a call: a wake-up may be drawn before the switch that blocks ends
        // (it came first), and the flow goes on to the call after it.
        if e.r#type == Some(SLICE_BEGIN)
            && !e.name.as_deref().is_some_and(|n| n.starts_with("blocked in"))
            && let Some(flows) = open.remove(&track)
        {
            e.terminating_flow_ids = flows.iter().map(|(_, f)| *f).collect();
        }
    }
    // No call followed: the flow ends at the woken thread.
    for (i, f) in open.into_values().flatten() {
        out[i].event.flow_ids.clear();
        out[i].event.terminating_flow_ids.push(f);
    }
}

fn descriptor(d: TrackDescriptor) -> TracePacket {
    TracePacket { trusted_packet_sequence_id: Some(SEQUENCE), track_descriptor: Some(d), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_a_slice_and_a_wakeup_a_flow() {
        let ev = |probe: ProbeId, tgid, tid, dur, other, ino| Event {
            ts_ns: 1000,
            tgid,
            tid,
            probe: probe as u16,
            kind: ChannelKind::AnonPipe as u16,
            other,
            ino,
            value: 10,
            dur_ns: dur,
        };
        let t = Timeline {
            events: vec![ev(ProbeId::PipeWrite, 1, 1, 100, 0, 7), ev(ProbeId::Wakeup, 2, 1, 0, 2, 1)],
            ..Default::default()
        };
        let trace = Trace::decode(encode(&t).as_slice()).unwrap();
        assert_eq!(trace.packet[0].sequence_flags, Some(SEQ_INCREMENTAL_STATE_CLEARED));
        let events: Vec<&TrackEvent> = trace.packet.iter().filter_map(|p| p.track_event.as_ref()).collect();
        assert!(events.iter().any(|e| e.r#type == Some(SLICE_BEGIN) && e.name.as_deref() == Some("pipe_write")));
        let starts: Vec<&&TrackEvent> = events.iter().filter(|e| !e.flow_ids.is_empty()).collect();
        let ends: Vec<&&TrackEvent> = events.iter().filter(|e| !e.terminating_flow_ids.is_empty()).collect();
        assert_eq!((starts.len(), ends.len()), (1, 1));
        assert_eq!(starts[0].track_uuid, Some(thread_uuid(1)), "from the waker");
        assert_eq!(ends[0].track_uuid, Some(thread_uuid(2)), "to the woken");
    }
}
