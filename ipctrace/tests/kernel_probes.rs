//! Kernel tests (root) for the probe table: every logical probe is decided with a reason for
//! each implementation not used, and the --tier / --no-fentry overrides are honoured.

mod common;

use common::*;
use serde_json::Value;

fn probes(args: &[&str]) -> Value {
    let mut full = vec!["probes", "--format", "json"];
    full.extend_from_slice(args);
    let out = ipctrace(&full);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("probes JSON")
}

fn probe<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["probes"].as_array().unwrap().iter().find(|p| p["probe"] == name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn kernel_probes_every_probe_is_decided_with_reasons() {
    if !require_root("kernel_probes_every_probe_is_decided_with_reasons") {
        return;
    }
    let v = probes(&[]);
    for p in v["probes"].as_array().unwrap() {
        for s in p["skipped"].as_array().unwrap() {
            assert!(!s["reason"].as_str().unwrap().is_empty(), "{p}");
        }
    }
    for name in [
        "pipe_write",
        "pipe_read",
        "pipe_pages",
        "shm_setup",
        "page_fault",
        "futex",
        "sched_switch",
        "page_alloc",
        "cpu_sample",
    ] {
        assert!(!probe(&v, name)["chosen"].is_null(), "{name} has no implementation on this kernel");
    }
    // Whatever was chosen for the pipe, every better implementation carries its real error.
    let pw = probe(&v, "pipe_write");
    let chosen = pw["chosen"]["mechanism"].as_str().unwrap();
    let order = ["fentry", "kprobe", "tracepoint"];
    let better = &order[..order.iter().position(|m| *m == chosen).unwrap()];
    for m in better {
        let s = pw["skipped"].as_array().unwrap().iter().find(|s| s["mechanism"] == *m).expect("skipped entry");
        let reason = s["reason"].as_str().unwrap();
        assert!(!reason.starts_with("not needed") && !reason.starts_with("skipped:"), "{m}: {reason}");
    }
    if chosen == "tracepoint" {
        assert_eq!(pw["chosen"]["label"], "derived");
    } else {
        assert_eq!(pw["chosen"]["label"], "exact");
    }
    // The copy routines are never probed directly: their entry says why.
    let c = probe(&v, "copy_routines");
    assert!(c["skipped"].as_array().unwrap().iter().any(|s| s["mechanism"] == "fentry"));
    assert_eq!(c["chosen"]["label"], "sampled");
}

#[test]
fn kernel_probes_overrides_are_honoured() {
    if !require_root("kernel_probes_overrides_are_honoured") {
        return;
    }
    let v = probes(&["--tier", "tracepoint"]);
    let pw = probe(&v, "pipe_write");
    assert_eq!(pw["chosen"]["mechanism"], "tracepoint");
    assert!(pw["skipped"].as_array().unwrap().iter().any(|s| s["reason"] == "skipped: --tier tracepoint"));
    let v = probes(&["--no-fentry"]);
    let pw = probe(&v, "pipe_write");
    assert!(
        pw["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["mechanism"] == "fentry" && s["reason"] == "skipped: --no-fentry")
    );
    let v = probes(&["--tier", "sampling"]);
    assert!(probe(&v, "pipe_write")["chosen"].is_null());
    assert_eq!(probe(&v, "cpu_sample")["chosen"]["mechanism"], "perf_event");
    // A run needs the pipe probes: without them it is a runtime failure with one line.
    let out = ipctrace(&["run", "--tier", "sampling", "--total", "1MiB"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no probe tier could attach pipe_write"));
}

/// `--events`: every counted event reaches the file or the loss counter, exactly. A tiny ring
/// buffer loses events (and says how many); a large one loses none.
#[test]
fn kernel_probes_event_stream_loss_is_counted_exactly() {
    if !require_root("kernel_probes_event_stream_loss_is_counted_exactly") {
        return;
    }
    for (buffer, expect_loss) in [("4KiB", true), ("64MiB", false)] {
        let file = std::env::temp_dir().join(format!("ipctrace-events-{}-{buffer}.jsonl", std::process::id()));
        let (code, r, stderr) = run_json(&[
            "--total",
            "8MiB",
            "--msg-size",
            "64",
            "--events",
            file.to_str().unwrap(),
            "--events-buffer",
            buffer,
        ]);
        assert_eq!(code, 0, "{stderr}");
        let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
        std::fs::remove_file(&file).unwrap();
        let s = &r["event_stream"];
        assert_eq!(s["written"].as_u64().unwrap(), lines);
        let lost = s["lost"].as_u64().unwrap();
        assert_eq!(r["loss"]["stream"].as_u64().unwrap(), lost);
        let counted = events_counted(&r);
        assert_eq!(lines + lost, counted, "buffer {buffer}: written + lost == events counted");
        assert_eq!(lost > 0, expect_loss, "buffer {buffer}: lost {lost}");
        assert_eq!(r["loss"]["events"], 0, "the aggregates lose nothing");
    }
}
