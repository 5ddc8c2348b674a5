//! From the session's raw sums to the model: each aggregate of a process decoded (probe ids
//! and channel kinds in one place, `ipctrace_common`), labelled with the mechanism the probe
//! table chose for it, its stacks symbolized; an id this ipctrace does not know is counted,
//! never given a name.

use std::collections::BTreeMap;

use ipctrace_common::{AggKey, AggVal, ChannelKind, ProbeId, StackKey, StackVal, err, loss, sched};

use crate::{
    model::{ChannelId, Label, Loss, Observation, Observed, ProgramStat, StackCount, probe::Choice},
    probes,
};

/// The sub-key name of an aggregate (`None`: a kind this ipctrace does not know).
fn sub_name(p: ProbeId, k: u16) -> Option<&'static str> {
    Some(match p {
        ProbeId::SchedOut if k == sched::VOLUNTARY => "voluntary",
        ProbeId::SchedOut => "involuntary",
        ProbeId::Wakeup => "waker",
        _ => ChannelKind::name_of(k)?,
    })
}

fn trim_hist(h: &[u64]) -> Vec<u64> {
    let end = h.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    h[..end].to_vec()
}

/// Turns the session's sums for `tgid` into labelled observations. `choices` gives each
/// figure its label and rule; `stack` resolves stack ids to symbolized kernel frames;
/// aggregates with an unknown probe id or kind are added to `unknown`.
pub fn observe(
    tgid: u32,
    aggs: &BTreeMap<AggKey, AggVal>,
    stacks: &BTreeMap<StackKey, StackVal>,
    choices: &[Choice],
    stack: &mut dyn FnMut(i32) -> Vec<String>,
    unknown: &mut u64,
) -> Observed {
    let label_of = |p: ProbeId| {
        let c = choices.iter().find(|c| c.probe == probes::logical_of(p));
        let chosen = c.and_then(|c| c.chosen.as_ref());
        (chosen.map_or(Label::Derived, |c| c.label), chosen.map_or(String::new(), |c| c.rule.clone()))
    };
    let mut events = Vec::new();
    let lo = AggKey { tgid, probe: 0, kind: 0, ino: 0 };
    let hi = AggKey { tgid, probe: u16::MAX, kind: u16::MAX, ino: u64::MAX };
    for (k, v) in aggs.range(lo..=hi) {
        let Some(p) = ProbeId::from_u16(k.probe) else {
            *unknown += 1;
            continue;
        };
        // BLOCKED packs the in-flight probe and the channel kind into `kind`.
        let decoded = if p == ProbeId::Blocked {
            let inflight = k.kind / 16;
            let sub = if inflight == 0 { Some("other") } else { ProbeId::name_of(inflight) };
            sub.map(String::from).zip(ChannelKind::from_u16(k.kind % 16))
        } else if p == ProbeId::Signal {
            // SIGNAL keys the signal number in `kind` and the sender's pid in `ino`.
            Some((format!("{}", k.kind), ChannelKind::Other))
        } else if p == ProbeId::MqPriority {
            // MQ_PRIORITY packs the message's priority (SysV: mtype) and the kind the same way.
            Some((format!("{}", k.kind / 16), ChannelKind::from_u16(k.kind % 16).unwrap_or(ChannelKind::Other)))
        } else {
            let kind = match p {
                ProbeId::SchedOut | ProbeId::Wakeup => Some(ChannelKind::Other),
                _ => ChannelKind::from_u16(k.kind),
            };
            sub_name(p, k.kind).map(String::from).zip(kind)
        };
        let Some((sub, kind)) = decoded else {
            *unknown += 1;
            continue;
        };
        let (label, rule) = label_of(p);
        events.push(Observation {
            probe: p.name().into(),
            sub,
            channel: (kind != ChannelKind::Other && k.ino != 0)
                .then(|| ChannelId { kind: kind.name().into(), ino: k.ino }),
            waker: matches!(p, ProbeId::Wakeup | ProbeId::Signal).then_some(k.ino as u32),
            calls: v.calls,
            bytes: v.bytes,
            errors: v.errors,
            zero: v.zero,
            eagain: v.err[err::EAGAIN],
            etimedout: v.err[err::ETIMEDOUT],
            eintr: v.err[err::EINTR],
            other_errors: v.err[err::OTHER],
            time_ns: v.time_ns,
            latency_log2_ns: trim_hist(&v.hist),
            label,
            rule,
        });
    }
    let lo = StackKey { tgid, probe: 0, kind: 0, kstack: i32::MIN, ustack: i32::MIN, ino: 0 };
    let hi = StackKey { tgid, probe: u16::MAX, kind: u16::MAX, kstack: i32::MAX, ustack: i32::MAX, ino: u64::MAX };
    let mut out_stacks = Vec::new();
    for (k, v) in stacks.range(lo..=hi) {
        let (Some(p), Some(kind)) = (ProbeId::from_u16(k.probe), ChannelKind::from_u16(k.kind)) else {
            *unknown += 1;
            continue;
        };
        out_stacks.push(StackCount {
            probe: p.name().into(),
            channel: (kind != ChannelKind::Other && k.ino != 0)
                .then(|| ChannelId { kind: kind.name().into(), ino: k.ino }),
            count: v.count,
            time_ns: v.time_ns,
            kernel: stack(k.kstack),
            user: k.ustack >= 0,
            // Samples, and block stacks (captured for one in BLOCK_STACK_EVERY explained blocks).
            label: if matches!(p, ProbeId::Sample | ProbeId::OffCpu) { Label::Sampled } else { Label::Exact },
        });
    }
    Observed { events, stacks: out_stacks }
}

/// Program runs the kernel skipped, by program (programs with none left out).
pub fn skipped_runs(stats: &[ProgramStat]) -> BTreeMap<String, u64> {
    stats.iter().filter(|s| s.skipped_runs > 0).map(|s| (s.name.clone(), s.skipped_runs)).collect()
}

/// What the programs cost, when BPF statistics were on (programs that ran), else nothing.
pub fn program_costs(stats: &[ProgramStat]) -> Vec<ProgramStat> {
    stats.iter().filter(|s| s.run_time_ns > 0).cloned().collect()
}

/// The loss counters, summed and split by what they affect; `skipped`: program runs the
/// kernel skipped, by program (counted as lost events).
pub fn loss_from(raw: &[u64], unknown_ids: u64, skipped: BTreeMap<String, u64>) -> Loss {
    let counters: BTreeMap<String, u64> =
        loss::NAMES.iter().zip(raw).map(|(n, v)| (n.replace([' ', '-'], "_"), *v)).collect();
    let stacks =
        [loss::STACK_FAILED, loss::STACK_COUNT_FULL].iter().map(|&i| raw.get(i as usize).copied().unwrap_or(0)).sum();
    let stream = raw.get(loss::RINGBUF_FULL as usize).copied().unwrap_or(0);
    let total: u64 = counters.values().sum();
    let runs: u64 = skipped.values().sum();
    Loss {
        counters,
        events: total - stacks - stream + runs,
        stacks,
        stream,
        unknown_ids,
        skipped_runs: skipped,
        total: total + unknown_ids + runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_filtered_by_tgid_and_decoded() {
        let mut aggs = BTreeMap::new();
        let mut v = AggVal { calls: 3, bytes: 300, ..Default::default() };
        v.hist[4] = 3;
        let pw = ProbeId::PipeWrite as u16;
        let pipe = ChannelKind::AnonPipe as u16;
        aggs.insert(AggKey { tgid: 10, probe: pw, kind: pipe, ino: 77 }, v);
        aggs.insert(AggKey { tgid: 11, probe: ProbeId::PipeRead as u16, kind: pipe, ino: 77 }, v);
        // An id no ProbeId has, and a kind no ChannelKind has: counted, never named.
        aggs.insert(AggKey { tgid: 10, probe: 999, kind: pipe, ino: 1 }, v);
        aggs.insert(AggKey { tgid: 10, probe: pw, kind: 15, ino: 2 }, v);
        let mut unknown = 0;
        let o = observe(10, &aggs, &BTreeMap::new(), &[], &mut |_| vec![], &mut unknown);
        assert_eq!(o.events.len(), 1);
        assert_eq!(unknown, 2);
        assert_eq!(o.events[0].probe, "pipe_write");
        assert_eq!(o.events[0].bytes, 300);
        assert_eq!(o.events[0].latency_log2_ns, vec![0, 0, 0, 0, 3]);
        assert_eq!(o.events[0].channel, Some(ChannelId { kind: "anon_pipe".into(), ino: 77 }));
        assert_eq!(o.sum(ProbeId::PipeWrite, None).calls, 3);
        assert_eq!(o.sum(ProbeId::PipeRead, None).calls, 0);
    }

    #[test]
    fn loss_sums() {
        let l = loss_from(&[1, 2, 3, 4, 0, 0, 0, 5], 2, [("raw_sys_enter".to_string(), 7)].into());
        assert_eq!(l.total, 24);
        assert_eq!(l.stacks, 4);
        assert_eq!(l.stream, 5);
        assert_eq!(l.events, 13);
        assert_eq!(l.unknown_ids, 2);
        assert_eq!(l.counters["in_flight_map_full"], 1);
    }
}
