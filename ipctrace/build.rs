//! Builds the eBPF object (crate `ipctrace-ebpf`, target bpfel-unknown-none) into OUT_DIR so
//! that a plain `cargo build -p ipctrace` gives a working binary. Two routes, picked here:
//! rustup nightly + rust-src (`-Z build-std=core`, the standard aya route), or Debian's
//! `rustc-web` with its prebuilt bpf `core` (see README). Installing either is `cargo xtask setup`'s job.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, exit},
};

const TARGET: &str = "bpfel-unknown-none";
const SETUP_HINT: &str = "run `cargo xtask setup` first";

enum Route {
    /// rustup nightly with rust-src: `-Z build-std=core`.
    Nightly,
    /// Debian's rustc-web (+ cargo-web) with the prebuilt bpf core.
    Debian { cargo: PathBuf, rustc: PathBuf },
}

fn fail(msg: &str) -> ! {
    // One line that names the fix; cargo prints it under "error: failed to run custom build command".
    eprintln!("error: cannot build ipctrace's eBPF programs: {msg}; {SETUP_HINT}");
    println!("cargo::error=cannot build ipctrace's eBPF programs: {msg}; {SETUP_HINT}");
    exit(1);
}

/// The toolchain is there but the eBPF code does not compile: no set-up hint then.
fn fail_compile() -> ! {
    println!(
        "cargo::error=the eBPF crate (ipctrace-ebpf) failed to compile; its errors are in the build script's stderr below"
    );
    exit(1);
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH").map(|p| env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn nightly_has_rust_src() -> bool {
    let Ok(out) = Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot).join("lib/rustlib/src/rust/library/core").is_dir()
}

fn debian_route() -> Option<Route> {
    let rustc = PathBuf::from("/usr/bin/rustc");
    let cargo = PathBuf::from("/usr/bin/cargo");
    let core_dir = Path::new("/usr/lib/rustlib").join(TARGET).join("lib");
    let has_core = std::fs::read_dir(&core_dir)
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore")))
        .unwrap_or(false);
    (rustc.is_file() && cargo.is_file() && has_core).then_some(Route::Debian { cargo, rustc })
}

fn pick_route() -> Route {
    let forced = env::var("IPCTRACE_BPF_TOOLCHAIN").unwrap_or_default();
    match forced.as_str() {
        "nightly" => return Route::Nightly,
        "debian" => {
            return debian_route()
                .unwrap_or_else(|| fail("IPCTRACE_BPF_TOOLCHAIN=debian but rustc-web's bpf core is not installed"));
        }
        _ => {}
    }
    if nightly_has_rust_src() {
        return Route::Nightly;
    }
    debian_route().unwrap_or_else(|| {
        fail("no BPF-capable Rust toolchain found (neither rustup nightly with rust-src nor Debian's rustc-web with libstd-rust-web-dev-bpf)")
    })
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("ipctrace-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    for p in ["ipctrace-ebpf/src", "ipctrace-ebpf/Cargo.toml", "ipctrace-common/src", "ipctrace-common/Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo::rerun-if-env-changed=IPCTRACE_BPF_TOOLCHAIN");

    let Some(linker) = find_in_path("bpf-linker") else {
        fail("bpf-linker is not installed");
    };
    let route = pick_route();
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = match &route {
        Route::Nightly => {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core"]);
            c
        }
        Route::Debian { cargo, rustc } => {
            let mut c = Command::new(cargo);
            c.arg("build");
            c.env("RUSTC", rustc);
            // aya-ebpf needs `asm_experimental_arch`; scope the bootstrap to that crate only.
            c.env("RUSTC_BOOTSTRAP", "aya_ebpf");
            c
        }
    };
    cmd.current_dir(&ebpf_dir)
        .args(["--package", "ipctrace-ebpf", "--bins", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // Strip what the outer cargo (or clippy, or rustup) set for itself.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().to_string();
        let strip = (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || matches!(
                k.as_str(),
                "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTDOC"
                    | "RUSTUP_TOOLCHAIN"
                    | "CARGO"
                    | "RUSTC_LINKER"
            );
        if strip && !(k == "RUSTC" && matches!(route, Route::Debian { .. })) {
            cmd.env_remove(&k);
        }
    }
    if let Route::Debian { rustc, .. } = &route {
        cmd.env("RUSTC", rustc);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = vec![linker.parent().unwrap().to_path_buf()];
    paths.extend(env::split_paths(&path));
    cmd.env("PATH", env::join_paths(paths).unwrap());

    let status = cmd.status().unwrap_or_else(|e| fail(&format!("could not start the eBPF build: {e}")));
    if !status.success() {
        fail_compile();
    }
    let obj = target_dir.join(TARGET).join("release").join("ipctrace-ebpf");
    std::fs::copy(&obj, out_dir.join("ipctrace-ebpf.o"))
        .unwrap_or_else(|e| fail(&format!("eBPF object {} missing: {e}", obj.display())));
}
