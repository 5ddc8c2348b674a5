//! Kernel tests (root) for the data-path pictures: headless Chromium renders the HTML report
//! with no console errors, and the numbers on the drawn arrows (read from the DOM Chromium
//! produced) equal the witnesses of the same run — the workloads' own counters and wait4
//! rusage — not the BPF figures they were drawn from. Controls: a populated shm mapping draws
//! no first-touch fault, a splicing consumer one copy and one page move, `--sample-hz 0` the
//! sampled figures as not observed. The terminal block fits 100 columns, names two copies for
//! the pipe and none for shared memory. A segment with three mappers is drawn with three
//! processes, each fault arrow the faults that mapper measured itself, and the notifications
//! between them as arrows with the counts the processes kept.

mod common;

use std::{collections::HashMap, path::Path, process::Command};

use common::*;
use serde_json::Value;

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ipctrace-diagram-{}-{name}", std::process::id()))
}

/// Renders `html` in headless Chromium: the DOM it built, and what it logged.
fn chromium_dom(html: &Path) -> (String, String) {
    let profile = tmp("chromium-profile");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium is installed by `cargo xtask setup`");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Console messages of the page (Chromium logs them as `CONSOLE(...)` lines) and errors it
/// raised loading it.
fn page_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("ERR_FILE_NOT_FOUND"))
        .collect()
}

/// One drawn arrow, as the DOM has it.
#[derive(Debug)]
struct Drawn {
    kind: String,
    observed: bool,
    value: Option<u64>,
}

/// The arrows of each picture (in page order), by id.
fn pictures(dom: &str) -> Vec<HashMap<String, Drawn>> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        tag.split(&key).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
    };
    dom.split("<svg")
        .skip(1)
        .filter(|svg| svg.contains("class=\"diagram\""))
        .map(|svg| {
            svg.split("<g class=\"arrow\"")
                .skip(1)
                .map(|g| {
                    let tag = g.split('>').next().unwrap_or_default();
                    (
                        attr(tag, "data-id"),
                        Drawn {
                            kind: attr(tag, "data-kind"),
                            observed: attr(tag, "data-observed") == "true",
                            value: attr(tag, "data-value").parse().ok(),
                        },
                    )
                })
                .collect()
        })
        .collect()
}

/// `ipctrace run` with an HTML page and the saved report: (pictures, report, terminal text).
fn run_drawn(args: &[&str]) -> (Vec<HashMap<String, Drawn>>, Value, String) {
    drawn("run", args)
}

/// `ipctrace SUB` (run, trace) with an HTML page and the saved report, as `run_drawn`.
fn drawn(sub: &str, args: &[&str]) -> (Vec<HashMap<String, Drawn>>, Value, String) {
    let (html, saved) = (tmp("page.html"), tmp("report.json"));
    let mut full = vec![sub, "--html", html.to_str().unwrap(), "--save", saved.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = ipctrace(&full);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (dom, log) = chromium_dom(&html);
    assert!(page_errors(&log).is_empty(), "console errors: {:?}", page_errors(&log));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let _ = std::fs::remove_file(&html);
    let _ = std::fs::remove_file(&saved);
    (pictures(&dom), r, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn witness(run: &Value, role: &str, path: &[&str]) -> u64 {
    let mut v = &process(run, role)["witness"];
    for k in path {
        v = &v[*k];
    }
    v.as_u64().unwrap_or_else(|| panic!("witness {path:?} of the {role}"))
}

#[test]
fn kernel_diagram_numbers_on_the_arrows_are_the_witnesses() {
    if !require_root("kernel_diagram_numbers_on_the_arrows_are_the_witnesses") {
        return;
    }
    let (pics, r, text) = run_drawn(&["--transport", "pipe,shm-futex", "--total", "64MiB"]);
    assert_eq!(pics.len(), 2, "one picture per transport");
    let (pipe, shm) = (&pics[0], &pics[1]);
    let (prun, srun) = (&r["runs"][0], &r["runs"][1]);
    // The pipe: each copy is what that side's workload counted.
    assert_eq!(pipe["copy_in"].value, Some(witness(prun, "producer", &["bytes"])));
    assert_eq!(pipe["copy_out"].value, Some(witness(prun, "consumer", &["bytes"])));
    assert_eq!(pipe["copy_in"].kind, "copy");
    // A wake-up ends a voluntary sleep: never more than wait4 counted for the woken side.
    let nvcsw = |role: &str| process(prun, role)["exit"]["rusage"]["nvcsw"].as_u64().unwrap();
    let woke = pipe["wake_reader"].value.unwrap_or(0);
    assert!(woke > 0 && woke <= nvcsw("consumer"), "reader woken {woke}, consumer nvcsw {}", nvcsw("consumer"));
    // Shared memory: no copy arrow; the producer faulted in every page of its mapping.
    assert!(shm.values().all(|a| a.kind != "copy"), "{shm:?}");
    let pages = witness(srun, "producer", &["shm", "pages"]);
    let faults = shm["fault_producer"].value.unwrap_or(0);
    assert!(pages > 0 && faults.abs_diff(pages) * 50 <= pages, "faults {faults}, pages {pages}");
    // The terminal blocks: at most 100 columns; two copies for the pipe, none for shm.
    let block = |title: &str| -> Vec<&str> {
        let start = text.lines().position(|l| l.starts_with(title)).unwrap_or_else(|| panic!("{title} in {text}"));
        text.lines().skip(start + 1).take_while(|l| !l.starts_with('┌')).collect()
    };
    let (pb, sb) = (block("PIPE "), block("SHM-FUTEX "));
    for l in pb.iter().chain(&sb) {
        assert!(l.chars().count() <= 100, "{l}");
    }
    // A copy figure: "copy" then its size.
    let copies = |b: &[&str]| {
        b.iter()
            .map(|l| {
                l.match_indices("copy ").filter(|(i, _)| l[i + 5..].starts_with(|c: char| c.is_ascii_digit())).count()
            })
            .sum::<usize>()
    };
    assert_eq!(copies(&pb), 2, "{pb:#?}");
    assert_eq!(copies(&sb), 0, "{sb:#?}");
    assert!(sb.iter().any(|l| l.contains("no copy through the kernel")), "{sb:#?}");
}

#[test]
fn kernel_diagram_controls() {
    if !require_root("kernel_diagram_controls") {
        return;
    }
    // A populated mapping: no first-touch fault drawn.
    let (pics, _, _) = run_drawn(&["--transport", "shm-futex", "--total", "64MiB", "--populate"]);
    assert!(!pics[0]["fault_producer"].observed, "{:?}", pics[0]["fault_producer"]);
    // A splicing consumer: one copy (in) and one page move (out).
    let (pics, r, _) = run_drawn(&["--transport", "pipe", "--total", "64MiB", "--splice-consumer"]);
    let kinds = |k: &str| pics[0].values().filter(|a| a.kind == k && a.observed).count();
    assert_eq!(kinds("copy"), 1, "{:?}", pics[0]);
    assert_eq!(kinds("move"), 1, "{:?}", pics[0]);
    assert_eq!(pics[0]["copy_out"].value, Some(witness(&r["runs"][0], "consumer", &["bytes"])));
    // No sampling: the sampled figures are drawn as not observed.
    let (pics, _, _) = run_drawn(&["--transport", "pipe,shm-futex", "--total", "32MiB", "--sample-hz", "0"]);
    for p in &pics {
        let sampled: Vec<&Drawn> = p.values().filter(|a| a.kind == "cpu").collect();
        assert!(!sampled.is_empty() && sampled.iter().all(|a| !a.observed), "{p:?}");
    }
}

/// Three processes map one segment (tests/common/mappers.py): the picture has a process and a
/// fault arrow for each, the fault numbers are what each mapper's getrusage saw around its own
/// touches (2%), and the notifications between them are drawn with the counts the processes
/// kept.
#[test]
fn kernel_diagram_three_mappers_and_their_notifications() {
    if !require_root("kernel_diagram_three_mappers_and_their_notifications") {
        return;
    }
    let py = system_python();
    let (pics, r, out) = drawn("trace", &["--", &py, "-c", include_str!("common/mappers.py")]);
    let said: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let who = |role: &str| said.iter().find(|x| x["role"] == role).unwrap_or_else(|| panic!("{role}: {said:?}"));
    let (w, s, e) = (who("writer"), who("signalfd"), who("eventfd"));
    let pic = pics.iter().find(|p| p.contains_key("fault_mapper_2")).expect("a picture with a third mapper");
    // Which drawn process is which: the section's roles, in the picture's order.
    let row = r["overview"]["channels"].as_array().unwrap().iter().find(|c| c["kind"] == "shm").unwrap();
    let run = r["runs"].as_array().unwrap().iter().find(|x| x["data_channel_ino"] == row["ino"]).unwrap();
    let pid_of = |role: &str| process(run, role)["pid"].clone();
    for (arrow, role) in [("fault_producer", "producer"), ("fault_consumer", "consumer"), ("fault_mapper_2", "mapper")]
    {
        let me = [w, s, e].into_iter().find(|x| x["pid"] == pid_of(role)).expect("a mapper of the program");
        let own = me["faults"].as_u64().unwrap();
        let drawn = pic[arrow].value.unwrap_or(0);
        assert!(drawn.abs_diff(own) <= (own / 50).max(2), "{arrow}: drawn {drawn}, {me} measured itself");
    }
    let notes: Vec<&Drawn> = pic.values().filter(|d| d.kind == "notify").collect();
    assert_eq!(notes.len(), 4, "the four busiest notifications drawn: {pic:?}");
    let counts = [&w["signals"], &w["writes"], &s["reads"], &e["reads"]].map(|v| v.as_u64().unwrap());
    for n in notes {
        assert!(n.observed && counts.contains(&n.value.unwrap()), "{n:?} vs the processes' counts {counts:?}");
    }
}
