//! Kernel tests (root) for reports of programs no one here wrote: a shell script with dozens
//! of channels is summarised first (the big channels near the top, exact against a witness
//! the test computes itself, the whole under 200 lines); samples go to the channel whose call
//! was in flight; every report kind re-renders byte for byte and no format prints inf or NaN.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ipctrace-ov-{}-{name}", std::process::id()))
}

/// A file of `n` lines, some of which match `needle`.
fn make_input(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let tag = if i % 7 == 0 { "needle" } else { "hay" };
        writeln!(f, "{tag} {} line {i}", (i * 7919) % 10007).unwrap();
    }
}

/// Rows of the channel table in a terminal report (`│ 12 ┆ ...`).
fn table_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.strip_prefix("│ ").and_then(|r| r.split(' ').next()).is_some_and(|id| id.parse::<u32>().is_ok()))
        .collect()
}

#[test]
fn kernel_overview_a_busy_script_is_summarised_first() {
    if !require_root("kernel_overview_a_busy_script_is_summarised_first") {
        return;
    }
    let input = tmp("input.txt");
    make_input(&input, 400_000);
    let script = tmp("script.sh");
    let saved = tmp("trace.json");
    std::fs::write(
        &script,
        format!(
            "set -e\nfor i in $(seq 1 40); do x=$(echo $i | cat); y=$(basename /a/b/$x); done\n\
             grep needle {f} | sort | uniq -c > /dev/null\nn=$(wc -l < {f})\n",
            f = input.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["trace", "--save", &saved.to_string_lossy(), "--", "sh", &script.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Witnesses computed here: what grep writes, and what sort writes (the same lines sorted).
    let grep_bytes = Command::new("sh")
        .args(["-c", &format!("grep needle {} | wc -c", input.display())])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().unwrap())
        .unwrap();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let rows = r["overview"]["channels"].as_array().unwrap();
    assert!(rows.len() > 40, "dozens of channels were traced: {}", rows.len());
    let named = |w: &str, rd: &str| {
        rows.iter()
            .find(|c| c["writer"]["comm"] == w && c["reader"]["comm"] == rd)
            .unwrap_or_else(|| panic!("no {w} -> {rd} channel"))
    };
    assert_eq!(named("grep", "sort")["bytes"], grep_bytes, "grep -> sort bytes == grep's own output");
    assert_eq!(named("sort", "uniq")["bytes"], grep_bytes, "sort -> uniq bytes == the same lines, sorted");
    // Both are at the top of the table, and the table is near the top of the output.
    let lines: Vec<&str> = text.lines().collect();
    for pair in ["grep", "sort"] {
        let at = lines.iter().position(|l| table_rows(l).len() == 1 && l.contains(&format!("{pair} "))).unwrap();
        assert!(at < 40, "the {pair} channel is at line {at} of the output:\n{text}");
    }
    assert!(lines.len() < 200, "the default output has {} lines", lines.len());
    assert!(text.contains("channels,") && text.contains("in all"), "the rest is summed in one line");
    // --all lists every channel (re-rendered from the saved report).
    let all = Command::new(BIN).arg("report").arg(&saved).arg("--all").output().unwrap();
    let all_text = String::from_utf8_lossy(&all.stdout);
    assert_eq!(table_rows(&all_text).len(), rows.len(), "--all prints one row per channel in the JSON");
    // The comparison never has one column per channel.
    let cols = r["comparison"]["columns"].as_array().unwrap();
    assert!(cols.len() <= 5, "{cols:?}");
    // A channel's figures are its own, not its processes' (sort reads one pipe and writes
    // another): its context switches are the blocks in calls on it, no CPU share is given
    // per channel, and channels carrying different payloads are not ranked by speed.
    let at = rows.iter().position(|c| c["writer"]["comm"] == "grep" && c["reader"]["comm"] == "sort").unwrap();
    let (run, ino) = (&r["runs"][at], rows[at]["ino"].as_u64().unwrap());
    let on_it = |probe: &str| -> u64 {
        run["processes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["observed"]["events"].as_array().unwrap())
            .filter(|e| e["probe"] == probe && e["channel"]["ino"].as_u64() == Some(ino))
            .map(|e| e["calls"].as_u64().unwrap())
            .sum()
    };
    let m = &run["path"]["metrics"];
    let mib = m["payload_bytes"].as_f64().unwrap() / (1u64 << 20) as f64;
    let cs = m["context_switches_per_mib"].as_f64().unwrap_or_else(|| panic!("1.4 MB moved: {m}"));
    assert_eq!((cs * mib).round() as u64, on_it("blocked"), "grep -> sort switches are its blocks: {m}");
    assert!(m.get("kernel_cpu_share").is_none(), "no per-channel CPU share: {m}");
    let verdict = r["verdict"].as_str().unwrap_or("");
    assert!(verdict.starts_with("busiest channel") && !verdict.contains("faster"), "{verdict}");
    for p in [input, script, saved] {
        let _ = std::fs::remove_file(p);
    }
}

/// A process that reads a busy pipe and now and then writes another: the samples of the pipe
/// it writes hold no frame of the pipe it reads.
#[test]
fn kernel_overview_samples_go_to_the_channel_in_flight() {
    if !require_root("kernel_overview_samples_go_to_the_channel_in_flight") {
        return;
    }
    let py = "import os\nfor i in range(60000):\n    os.read(0, 65536)\n    if i % 100 == 0:\n        os.write(1, b'x' * 100)\n";
    let saved = tmp("attr.json");
    let out = Command::new(BIN)
        .args(["trace", "--sample-hz", "999", "--save", &saved.to_string_lossy(), "--", "sh", "-c"])
        .arg(format!("yes | python3 -c \"{py}\" | cat > /dev/null"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let _ = std::fs::remove_file(&saved);
    let rows = r["overview"]["channels"].as_array().unwrap();
    let idx = |w: &str, rd: &str| {
        rows.iter()
            .position(|c| c["writer"]["comm"] == w && c["reader"]["comm"] == rd)
            .unwrap_or_else(|| panic!("no {w} -> {rd} channel: {rows:?}"))
    };
    let (read_ch, write_ch) = (idx("yes", "python3"), idx("python3", "cat"));
    // In the written channel's section, python3 (the producer) has only stacks of its writes.
    let w = &r["runs"][write_ch];
    let producer = process(w, "producer");
    let frames: Vec<String> = stacks(producer, "sample").into_iter().flat_map(|(f, _)| f).collect();
    assert!(
        !frames.iter().any(|f| f == "anon_pipe_read" || f == "pipe_read"),
        "the written pipe's samples hold a read of the other pipe: {frames:?}"
    );
    // ... while the read channel has the reads (python3 spends its time there).
    let rd = process(&r["runs"][read_ch], "consumer");
    let read_frames: Vec<String> = stacks(rd, "sample").into_iter().flat_map(|(f, _)| f).collect();
    assert!(read_frames.iter().any(|f| f == "anon_pipe_read"), "python3's reads were sampled on its input pipe");
}

/// No format of a report prints inf, NaN or an exponent.
fn assert_no_garbage(what: &str, text: &str) {
    for w in text.split(|c: char| !c.is_alphanumeric() && c != '+' && c != '.') {
        assert!(w != "inf" && w != "NaN" && w != "-inf", "{what} prints {w:?}");
        let b = w.as_bytes();
        let exp = b.windows(3).any(|x| x[0].is_ascii_digit() && x[1] == b'e' && (x[2] == b'+' || x[2] == b'-'));
        assert!(!exp, "{what} prints an exponent: {w:?}");
    }
}

/// Saves a report of each kind and re-renders it: identical JSON, no garbage in any format.
#[test]
fn kernel_overview_every_report_kind_round_trips() {
    if !require_root("kernel_overview_every_report_kind_round_trips") {
        return;
    }
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let sleeper_pid = sleeper.id().to_string();
    let kinds: Vec<(&str, Vec<String>)> = vec![
        ("run", vec!["run".into(), "--total".into(), "16MiB".into()]),
        (
            "partial",
            vec![
                "run".into(),
                "--transport".into(),
                "shm-futex".into(),
                "--total".into(),
                "64GiB".into(),
                "--duration".into(),
                "1s".into(),
            ],
        ),
        (
            "sweep",
            vec![
                "run".into(),
                "--sweep".into(),
                "--sweep-ms".into(),
                "100".into(),
                "--transport".into(),
                "pipe".into(),
            ],
        ),
        ("trace", vec!["trace".into(), "--".into(), "sh".into(), "-c".into(), "seq 1 1000 | sort > /dev/null".into()]),
        (
            "single-event",
            vec!["trace".into(), "--".into(), "sh".into(), "-c".into(), "echo hi | cat > /dev/null".into()],
        ),
        ("zero-payload", vec!["trace".into(), "--".into(), "sh".into(), "-c".into(), "true | cat".into()]),
        ("attach", vec!["attach".into(), "-p".into(), sleeper_pid, "--duration".into(), "300ms".into()]),
    ];
    for (kind, args) in kinds {
        let saved = tmp(&format!("{kind}.json"));
        let html = tmp(&format!("{kind}.html"));
        // Output options go before a traced command's `--`.
        let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
        let out = Command::new(BIN)
            .args(&args[..split])
            .args(["--format", "json", "--save"])
            .arg(&saved)
            .arg("--html")
            .arg(&html)
            .args(&args[split..])
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert!(code == 0 || code == 3, "{kind}: exit {code}: {}", String::from_utf8_lossy(&out.stderr));
        let original = std::fs::read(&saved).unwrap_or_else(|e| {
            panic!("{kind}: no saved report ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr))
        });
        // The JSON printed is the JSON saved; and `report` prints it again byte for byte.
        let printed = String::from_utf8_lossy(&out.stdout);
        let printed = &printed[printed.find('{').unwrap_or(0)..];
        assert_eq!(printed.as_bytes(), &original[..], "{kind}: the saved JSON is the printed JSON");
        let again = Command::new(BIN).arg("report").arg(&saved).args(["--format", "json"]).output().unwrap();
        assert_eq!(again.status.code(), Some(0), "{kind}");
        assert!(again.stdout == original, "{kind}: report re-renders the saved JSON byte for byte");
        for fmt in ["table", "markdown"] {
            let o = Command::new(BIN).arg("report").arg(&saved).args(["--format", fmt, "--all"]).output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{kind} {fmt}");
            assert_no_garbage(&format!("{kind} {fmt}"), &String::from_utf8_lossy(&o.stdout));
        }
        assert_no_garbage(&format!("{kind} json"), &String::from_utf8_lossy(&original));
        assert_no_garbage(&format!("{kind} html"), &std::fs::read_to_string(&html).unwrap());
        let r: Value = serde_json::from_slice(&original).unwrap();
        if kind == "partial" {
            // A partial shm run reports what moved until the stop, from the workloads' own account.
            assert_eq!(r["partial"], true);
            let m = &r["runs"][0]["path"]["metrics"];
            assert!(m["payload_bytes"].as_u64().unwrap() > 0, "partial payload: {m}");
            assert!(m["throughput_bytes_per_s"].as_f64().unwrap() > 0.0, "partial throughput: {m}");
            for a in r["runs"][0]["agreement"].as_array().unwrap() {
                assert_eq!(a["agrees"], true, "partial run, observed vs witness: {a}");
            }
        }
        let _ = std::fs::remove_file(saved);
        let _ = std::fs::remove_file(html);
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
