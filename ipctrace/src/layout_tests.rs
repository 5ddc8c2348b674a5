//! Tests of the source layout itself (no root needed): transport names and channel-kind
//! decisions live only in the registries and in each transport's own modules, and the data
//! model depends on nothing above it.

use std::path::{Path, PathBuf};

use ipctrace_common::ChannelKind;
use workloads::transport::Transport;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file: comments dropped, and unit-test modules (from `#[cfg(test)]` on).
fn code(p: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(p).unwrap();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match l.find("//") {
            Some(c) if !l[..c].contains('"') => &l[..c],
            _ => l,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// Files allowed to name transports and decide by channel kind: the registries, the
/// transports' own modules, and where the kinds are defined and classified.
fn allowed(rel: &str) -> bool {
    rel.starts_with("ipctrace/src/transport/")
        || rel.starts_with("workloads/src/transport/")
        || rel == "ipctrace-common/src/lib.rs"
        // The eBPF crate: the classification (the kernel side of the registry) and each
        // transport's programs (`futex` is the shm transport's sync stage).
        || rel == "ipctrace-ebpf/src/classify.rs"
        || rel == "ipctrace-ebpf/src/pipe.rs"
        || rel == "ipctrace-ebpf/src/shm.rs"
        || rel == "ipctrace-ebpf/src/futex.rs"
        || rel == "ipctrace-ebpf/src/sock.rs"
        || rel == "ipctrace-ebpf/src/inet.rs"
        || rel == "ipctrace-ebpf/src/mq.rs"
        || rel == "ipctrace-ebpf/src/notify.rs"
        || rel == "ipctrace-ebpf/src/fdpass.rs"
        || rel == "ipctrace/src/layout_tests.rs"
}

#[test]
fn transport_names_and_kind_matches_stay_in_the_registries() {
    let mut names: Vec<String> = Transport::ALL.iter().map(|t| format!("\"{}\"", t.name())).collect();
    let mut variants = Vec::new();
    for k in ChannelKind::ALL.iter().filter(|k| **k != ChannelKind::Other) {
        names.push(format!("\"{}\"", k.name()));
        variants.push(format!("ChannelKind::{k:?}"));
    }
    for t in Transport::ALL {
        variants.push(format!("Transport::{t:?}"));
    }
    let mut files = Vec::new();
    for d in ["ipctrace/src", "workloads/src", "ipctrace-ebpf/src", "ipctrace-common/src"] {
        rust_files(&root().join(d), &mut files);
    }
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        if allowed(&rel) {
            continue;
        }
        for (n, l) in code(f) {
            for w in names.iter().chain(variants.iter()) {
                // A whole token: not `ChannelKind::ShmFoo` when looking for `ChannelKind::Shm`.
                let hit = l
                    .match_indices(w.as_str())
                    .any(|(i, _)| !l[i + w.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
                if hit {
                    found.push(format!("{rel}:{n}: {w} in `{}`", l.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "transport names or kind decisions outside the registries:\n{}", found.join("\n"));
}

/// The top-level modules named by every `crate::` path in `line` (grouped `crate::{a, b}`
/// imports included).
fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group (nested braces skipped).
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(item.trim().split("::").next().unwrap_or("").to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c != '{' {
                    item.push(c);
                }
            }
            if !item.trim().is_empty() {
                out.push(item.trim().split("::").next().unwrap_or("").to_string());
            }
        } else {
            let seg: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(seg);
        }
        rest = after;
    }
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

#[test]
fn the_model_depends_on_nothing_above_it() {
    let mut files = Vec::new();
    rust_files(&root().join("ipctrace/src/model"), &mut files);
    assert!(files.len() >= 4, "the model modules are found");
    let mut bad = Vec::new();
    for f in &files {
        // Multi-line `use crate::{...}` groups: join the file's code into one string per statement.
        let joined: String = code(f).into_iter().map(|(_, l)| l).collect::<Vec<_>>().join(" ");
        for m in crate_paths(&joined) {
            // The model itself, and `exit` (a leaf: the error a bad saved file gets).
            if m != "model" && m != "exit" {
                bad.push(format!("{}: crate::{m}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "the data model reaches above itself:\n{}", bad.join("\n"));
}

#[test]
fn crate_paths_are_parsed_inline_and_grouped() {
    assert_eq!(crate_paths("let x = crate::path::build(y);"), vec!["path"]);
    assert_eq!(crate_paths("use crate::{model::{A, B}, exit::fail, session};"), vec!["model", "exit", "session"]);
}
