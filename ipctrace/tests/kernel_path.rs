//! Kernel tests (root) for the reconstructed data path: copies per payload byte, the call
//! chains and copy frames seen in this run's stacks, and controls a template could not pass
//! (a splicing consumer, a pre-populated shm mapping, a FIFO counted once).

mod common;

use common::*;
use serde_json::Value;

fn any_stack(p: &Value, probes: &[&str], pred: impl Fn(&[String]) -> bool) -> bool {
    probes.iter().any(|pr| stacks(p, pr).iter().any(|(f, _)| pred(f)))
}

/// Does a call tree (JSON) hold `outer` directly above one of `inner`?
fn tree_has(roots: &Value, outer: &str, inner: &[&str]) -> bool {
    roots.as_array().unwrap().iter().any(|n| {
        let here = n["frame"] == outer
            && n["children"].as_array().unwrap().iter().any(|c| inner.contains(&c["frame"].as_str().unwrap()));
        here || tree_has(&n["children"], outer, inner)
    })
}

fn chain_has(frames: &[String], outer: &str, inner: &[&str]) -> bool {
    frames.windows(2).any(|w| w[0] == outer && inner.contains(&w[1].as_str()))
}

#[test]
fn kernel_path_pipe_copies_twice_and_shm_never() {
    if !require_root("kernel_path_pipe_copies_twice_and_shm_never") {
        return;
    }
    let (code, r, stderr) = run_json(&["--transport", "pipe,shm-futex", "--total", "1GiB", "--msg-size", "64KiB"]);
    assert_eq!(code, 0, "{stderr}");
    let pipe = &r["runs"][0];
    let shm = &r["runs"][1];
    let m = &pipe["path"]["metrics"];
    assert_eq!(m["kernel_copies_per_byte"], 2.0);
    assert!(["derived", "exact"].contains(&m["copies_label"].as_str().unwrap()));
    assert_eq!(shm["path"]["metrics"]["kernel_copies_per_byte"], 0.0);

    // This run's stacks hold the write-side and read-side chains.
    let prod = process(pipe, "producer");
    let cons = process(pipe, "consumer");
    let pw = ["anon_pipe_write", "pipe_write"];
    let pr = ["anon_pipe_read", "pipe_read"];
    assert!(
        any_stack(prod, &["offcpu", "sample"], |f| chain_has(f, "vfs_write", &pw)),
        "vfs_write -> pipe write in the producer's stacks"
    );
    assert!(
        any_stack(cons, &["offcpu", "sample"], |f| chain_has(f, "vfs_read", &pr)),
        "vfs_read -> pipe read in the consumer's stacks"
    );
    // The merged call trees of this run hold both chains.
    let trees = &pipe["call_trees"];
    assert!(
        tree_has(&trees["blocked"], "vfs_write", &pw) || tree_has(&trees["cpu"], "vfs_write", &pw),
        "call tree: vfs_write -> pipe write"
    );
    assert!(
        tree_has(&trees["blocked"], "vfs_read", &pr) || tree_has(&trees["cpu"], "vfs_read", &pr),
        "call tree: vfs_read -> pipe read"
    );
    assert!(
        tree_has(&shm["call_trees"]["page_alloc"], "__do_fault", &["shmem_fault"]),
        "shm call tree: __do_fault -> shmem_fault; loss {}; page_alloc stacks: {:?}",
        r["loss"],
        shm["processes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| stacks(p, "page_alloc"))
            .map(|(f, n)| format!("{n}x {}", f.join(" -> ")))
            .take(8)
            .collect::<Vec<_>>()
    );
    // Copy frames sampled under the pipe functions, on both sides.
    let copy_under = |p: &Value, fns: &[&str]| -> u64 {
        stacks(p, "sample")
            .iter()
            .filter(|(f, _)| {
                let u = f.iter().position(|x| fns.contains(&x.as_str()));
                let c = f.iter().rposition(|x| is_copy_frame(x));
                matches!((u, c), (Some(u), Some(c)) if c > u)
            })
            .map(|(_, n)| n)
            .sum()
    };
    assert!(copy_under(prod, &pw) > 0, "a copy frame sampled under the pipe write");
    assert!(copy_under(cons, &pr) > 0, "a copy frame sampled under the pipe read");
    // shm: the fault chain is in the stacks; no copy frame anywhere in its samples.
    let sp = process(shm, "producer");
    assert!(
        any_stack(sp, &["page_alloc"], |f| f.iter().any(|x| x == "handle_mm_fault")
            && f.iter().any(|x| x == "shmem_fault")),
        "handle_mm_fault -> shmem_fault in the shm producer's page allocations"
    );
    for p in shm["processes"].as_array().unwrap() {
        assert!(!any_stack(p, &["sample"], |f| f.iter().any(|x| is_copy_frame(x))), "no kernel copy in the shm run");
    }
    // Stages are built from this run: the shm first touch is observed, the pipe blocked stages carry stack evidence.
    let stage = |run: &Value, prefix: &str| -> Value {
        run["path"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().trim_start().starts_with(prefix))
            .cloned()
            .unwrap()
    };
    assert_eq!(stage(shm, "first touch")["observed"], true);
    assert_eq!(stage(pipe, "write(2)")["bytes"], 1u64 << 30);
}

#[test]
fn kernel_path_splice_consumer_copies_once() {
    if !require_root("kernel_path_splice_consumer_copies_once") {
        return;
    }
    let (code, r, stderr) = run_json(&["--transport", "pipe", "--total", "256MiB", "--splice-consumer"]);
    assert_eq!(code, 0, "{stderr}");
    let run = &r["runs"][0];
    let c = run["path"]["metrics"]["kernel_copies_per_byte"].as_f64().unwrap();
    assert!((c - 1.0).abs() < 0.01, "copies per byte with a splicing consumer: {c}");
    let cons = process(run, "consumer");
    assert_eq!(sum(cons, "splice_out", None)["bytes"], 256 << 20);
    assert_eq!(observed(cons, "read").1, 0);
}

#[test]
fn kernel_path_populated_mapping_has_no_first_touch() {
    if !require_root("kernel_path_populated_mapping_has_no_first_touch") {
        return;
    }
    for (populate, expect) in [(false, true), (true, false)] {
        let mut args = vec!["--transport", "shm-futex", "--total", "64MiB"];
        if populate {
            args.push("--populate");
        }
        let (code, r, stderr) = run_json(&args);
        assert_eq!(code, 0, "{stderr}");
        let stage = r["runs"][0]["path"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().starts_with("first touch"))
            .cloned()
            .unwrap();
        assert_eq!(stage["observed"], expect, "populate={populate}: {stage}");
    }
}

#[test]
fn kernel_path_fifo_is_counted_once() {
    if !require_root("kernel_path_fifo_is_counted_once") {
        return;
    }
    let total = 128u64 << 20;
    let (code, r, stderr) = run_json(&["--transport", "fifo", "--total", &total.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let run = &r["runs"][0];
    assert_eq!(run["channels"][0]["kind"], "fifo");
    assert_eq!(observed(process(run, "producer"), "write").1, total);
    assert_eq!(observed(process(run, "consumer"), "read").1, total);
    assert_eq!(run["path"]["metrics"]["kernel_copies_per_byte"], 2.0);
    for a in run["agreement"].as_array().unwrap() {
        assert_eq!(a["agrees"], true, "{a}");
    }
}
