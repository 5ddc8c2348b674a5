//! Kernel tests (root) for the data-path pictures: headless Chromium renders the HTML report
//! with no console errors, and the numbers on the drawn arrows (read from the DOM Chromium
//! produced) equal the witnesses of the same run — the workloads' own counters and wait4
//! rusage — not the BPF figures they were drawn from. Controls: a populated shm mapping draws
//! no first-touch fault, a splicing consumer one copy and one page move, `--sample-hz 0` the
//! sampled figures as not observed. The terminal block fits 100 columns, names two copies for
//! the pipe and none for shared memory.

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
    let (html, saved) = (tmp("page.html"), tmp("report.json"));
    let mut full = vec!["run", "--html", html.to_str().unwrap(), "--save", saved.to_str().unwrap()];
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
