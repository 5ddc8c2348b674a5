//! Kernel tests (root) for `--perfetto`: the file is decoded with the official Perfetto protos
//! (the `perfetto` package from PyPI, in the virtual environment `cargo xtask setup` makes),
//! independently of ipctrace's writer. Every event of the same run's `--events` file is a
//! slice or an instant on its thread's track; slices nest and time never goes backwards on a
//! track; one flow per wake-up between targets, from the waker's track to the woken's; bytes
//! per channel summed from the trace equal the report's; the loss instant holds the stream's
//! counts, at the default buffer (nothing lost) and at a tiny one.

mod common;

use std::{collections::HashMap, path::PathBuf, process::Command};

use common::*;
use serde_json::Value;

/// Reads a trace with perfetto_trace_pb2 and the events file, and says what it found.
const CHECK: &str = r#"
import sys, json, collections
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
trace = pb.Trace(); trace.ParseFromString(open(sys.argv[1], 'rb').read())
events = [json.loads(l) for l in open(sys.argv[2])]
first = trace.packet[0]
tid_of = {}; names = {}
slices = collections.Counter(); instants = collections.Counter()
stacks = collections.defaultdict(list); last = {}
problems = []; flows_from = {}; flows_to = {}; bytes_by = collections.Counter(); loss = {}
for p in trace.packet:
    if p.HasField('track_descriptor'):
        d = p.track_descriptor
        if d.HasField('thread'):
            tid_of[d.uuid] = d.thread.tid
        continue
    if not p.HasField('track_event'):
        continue
    e = p.track_event; ts = p.timestamp; tr = e.track_uuid
    if ts < last.get(tr, 0):
        problems.append('time went backwards on track %d' % tr)
    last[tr] = ts
    tid = tid_of.get(tr)
    args = {a.name: getattr(a, a.WhichOneof('value')) for a in e.debug_annotations if a.WhichOneof('value')}
    for f in e.flow_ids:
        flows_from.setdefault(f, tid)
    for f in e.terminating_flow_ids:
        flows_to[f] = tid
    if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
        stacks[tr].append((ts, e.name, args))
    elif e.type == pb.TrackEvent.TYPE_SLICE_END:
        if not stacks[tr]:
            problems.append('slice end with no slice open on track %d' % tr)
            continue
        start, name, a = stacks[tr].pop()
        slices[(tid, start, ts, name.split(' ')[0])] += 1
        if 'channel' in a and 'bytes' in a:
            bytes_by[(name, a['channel'])] += a['bytes']
    elif e.type == pb.TrackEvent.TYPE_INSTANT:
        if tid is None and e.name == 'ipctrace event stream':
            loss = args
        elif tid is not None:
            instants[(tid, ts, e.name.split(' ')[0])] += 1
for tr, st in stacks.items():
    if st:
        problems.append('%d slices left open on track %d' % (len(st), tr))
missing = 0
for ev in events:
    probe = ev['probe']
    tid = ev['other_tid'] if probe == 'blocked' and ev['other_tid'] else ev['tid']
    name = {'blocked': 'blocked', 'wakeup': 'wakes'}.get(probe, probe)
    if ev['dur_ns'] > 0:
        key = (tid, ev['ts_ns'] - ev['dur_ns'], ev['ts_ns'], name); bag = slices
    else:
        key = (tid, ev['ts_ns'], name); bag = instants
    if bag[key] > 0:
        bag[key] -= 1
    else:
        missing += 1
        if missing < 5:
            problems.append('event not in the trace: %s' % json.dumps(ev))
ends = [(flows_from.get(f), flows_to.get(f)) for f in set(flows_from) | set(flows_to)]
print(json.dumps({
    'first_flags': first.sequence_flags, 'events': len(events), 'missing': missing,
    'problems': problems, 'flows': len(ends), 'flow_ends': ends,
    'bytes': [[k[0], k[1], v] for k, v in bytes_by.items()], 'loss': loss,
}))
"#;

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/perfetto-venv/bin/python")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ipctrace-perfetto-{}-{name}", std::process::id()))
}

/// Runs `ipctrace run` with --perfetto (and with `events`, --events): (the checker's
/// findings, the report).
fn traced(args: &[&str], with_events: bool) -> (Value, Value) {
    let (trace, events) = (tmp("trace.pftrace"), tmp("events.jsonl"));
    let mut full = vec!["--perfetto", trace.to_str().unwrap()];
    if with_events {
        full.extend(["--events", events.to_str().unwrap()]);
    } else {
        std::fs::write(&events, "").unwrap();
    }
    full.extend_from_slice(args);
    let (code, r, stderr) = run_json(&full);
    assert_eq!(code, 0, "{stderr}");
    let py = python();
    assert!(py.exists(), "{} is missing: run `cargo xtask setup`", py.display());
    let out = Command::new(&py).arg("-c").arg(CHECK).arg(&trace).arg(&events).output().unwrap();
    assert!(out.status.success(), "checker: {}", String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(&trace).unwrap().len();
    let _ = std::fs::remove_file(&trace);
    let _ = std::fs::remove_file(&events);
    let mut found: Value = serde_json::from_slice(&out.stdout).unwrap();
    found["file_bytes"] = size.into();
    (found, r)
}

#[test]
fn kernel_perfetto_every_event_on_its_track_flows_and_bytes() {
    if !require_root("kernel_perfetto_every_event_on_its_track_flows_and_bytes") {
        return;
    }
    let (f, r) = traced(&["--transport", "pipe,shm-futex", "--total", "64MiB"], true);
    assert_eq!(f["first_flags"], 1, "the first packet clears the incremental state");
    assert!(f["events"].as_u64().unwrap() > 1000, "{f}");
    assert_eq!(f["missing"], 0, "{}", f["problems"]);
    assert_eq!(f["problems"].as_array().unwrap().len(), 0, "{}", f["problems"]);
    // Wake-ups between targets, as the report counts them: one flow each, waker -> woken.
    let mut wakeups = 0;
    let mut pids = Vec::new();
    for run in r["runs"].as_array().unwrap() {
        for p in run["processes"].as_array().unwrap() {
            pids.push(p["pid"].as_u64().unwrap());
        }
    }
    for run in r["runs"].as_array().unwrap() {
        for p in run["processes"].as_array().unwrap() {
            for e in p["observed"]["events"].as_array().unwrap().iter().filter(|e| e["probe"] == "wakeup") {
                if pids.contains(&e["waker"].as_u64().unwrap()) {
                    wakeups += e["calls"].as_u64().unwrap();
                }
            }
        }
    }
    assert!(wakeups > 0);
    assert_eq!(f["flows"], wakeups, "one flow per wake-up between targets");
    for end in f["flow_ends"].as_array().unwrap() {
        assert!(end[0].is_u64() && end[1].is_u64() && end[0] != end[1], "waker's track to the woken's: {end}");
    }
    // Bytes per channel: the trace's pipe_write slices == the report's pipe_write bytes.
    let pipe = &r["runs"][0];
    let written = sum(process(pipe, "producer"), "pipe_write", None)["bytes"];
    let from_trace: u64 =
        f["bytes"].as_array().unwrap().iter().filter(|b| b[0] == "pipe_write").map(|b| b[2].as_u64().unwrap()).sum();
    assert_eq!(from_trace, written, "{}", f["bytes"]);
    let per_channel: HashMap<String, u64> = f["bytes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b[0] == "pipe_read")
        .map(|b| (b[1].as_str().unwrap().to_string(), b[2].as_u64().unwrap()))
        .collect();
    assert_eq!(per_channel.len(), 1, "one pipe read from: {per_channel:?}");
    assert_eq!(per_channel.values().sum::<u64>(), sum(process(pipe, "consumer"), "pipe_read", None)["bytes"]);
    // The stream's counts, in the trace.
    assert_eq!(f["loss"]["delivered"], r["event_stream"]["written"]);
    assert_eq!(f["loss"]["lost"].as_u64().unwrap_or(0), r["event_stream"]["lost"].as_u64().unwrap());
    eprintln!(
        "perfetto: {} events, {} bytes ({:.1} MB per million events)",
        f["events"],
        f["file_bytes"],
        f["file_bytes"].as_f64().unwrap() / f["events"].as_f64().unwrap()
    );
}

#[test]
fn kernel_perfetto_loss_is_in_the_trace() {
    if !require_root("kernel_perfetto_loss_is_in_the_trace") {
        return;
    }
    // 1 GiB at the default buffer: nothing lost.
    let (f, r) = traced(&["--transport", "pipe", "--total", "1GiB"], false);
    assert_eq!(r["event_stream"]["lost"], 0, "{}", r["event_stream"]);
    assert_eq!(f["loss"]["lost"].as_u64().unwrap_or(0), 0);
    assert_eq!(f["loss"]["delivered"], r["event_stream"]["written"]);
    assert!(r["event_stream"]["written"].as_u64().unwrap() > 100_000, "{}", r["event_stream"]);
    assert_eq!(f["problems"].as_array().unwrap().len(), 0, "{}", f["problems"]);
    // A tiny buffer at 64 B messages: written + lost == counted, and the trace says so.
    let (f, r) =
        traced(&["--transport", "pipe", "--total", "16MiB", "--msg-size", "64", "--events-buffer", "4KiB"], true);
    let (written, lost) = (r["event_stream"]["written"].as_u64().unwrap(), r["event_stream"]["lost"].as_u64().unwrap());
    assert!(lost > 0, "a 4 KiB ring loses events at 64 B messages");
    assert_eq!(f["loss"]["delivered"], written);
    assert_eq!(f["loss"]["lost"], lost);
    // Counted: every event the aggregates hold (independent of the stream).
    let counted = events_counted(&r);
    assert_eq!(written + lost, counted, "written + lost == counted");
    assert_eq!(f["loss"]["counted"], counted, "the loss instant holds the count");
    assert_eq!(f["events"], written, "every delivered event is in the events file");
    assert_eq!(f["missing"], 0, "{}", f["problems"]);
}

/// A parent signals its child (blocked in pause) five times with SIGUSR1, then the child exits.
const SIGNALS: &str = r#"
import os, signal, time
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    got = 0
    def on(*_):
        global got
        got += 1
    signal.signal(signal.SIGUSR1, on)
    os.write(w, b"r")
    while got < 5:
        signal.pause()
    os._exit(0)
os.read(r, 1)
time.sleep(0.1)
for _ in range(5):
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.05)
os.waitpid(pid, 0)
print(f"parent={os.getpid()} child={pid} sent=5", flush=True)
"#;

#[test]
fn kernel_perfetto_signals_are_instants_on_the_sender() {
    if !require_root("kernel_perfetto_signals_are_instants_on_the_sender") {
        return;
    }
    let py = system_python();
    let (trace, events) = (tmp("sig.pftrace"), tmp("sig.jsonl"));
    let out = Command::new(BIN)
        .args(["trace", "--perfetto", trace.to_str().unwrap(), "--events", events.to_str().unwrap()])
        .args(["--format", "json", "--", &py, "-c", SIGNALS])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text.lines().find(|l| l.starts_with("parent=")).expect("the program's line");
    let field = |k: &str| -> u64 {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).unwrap().parse().unwrap()
    };
    let (parent, child) = (field("parent"), field("child"));
    // The events file: five SIGUSR1 from the parent to the child, delivered.
    let lines: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["probe"] == "signal" && e["kind"] == libc::SIGUSR1)
        .collect();
    assert_eq!(lines.len() as u64, field("sent"), "{lines:?}");
    for e in &lines {
        assert_eq!((e["pid"].as_u64(), e["ino"].as_u64(), e["value"].as_i64()), (Some(child), Some(parent), Some(0)));
    }
    // The trace: each an instant on the parent's thread naming the child.
    let checked = Command::new(python()).arg("-c").arg(CHECK).arg(&trace).arg(&events).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let f: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(f["missing"], 0, "{}", f["problems"]);
    let _ = std::fs::remove_file(&trace);
    let _ = std::fs::remove_file(&events);
}
