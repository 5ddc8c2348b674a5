//! Builds the C programs (c/pipe_pc.c, c/shm_pc.c from the seed, c/uds_pc.c, c/mq_pc.c) with the C
//! compiler the cc crate finds, warnings as errors and frame pointers on; their paths reach
//! Rust as `workloads::c_programs::{PIPE_PC, SHM_PC, UDS_PC, MQ_PC}`.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    for name in ["pipe_pc", "shm_pc", "uds_pc", "mq_pc"] {
        let src = PathBuf::from(format!("c/{name}.c"));
        println!("cargo::rerun-if-changed={}", src.display());
        let exe = out.join(name);
        let mut cmd: Command = compiler.to_command();
        cmd.args(["-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer", "-o"]).arg(&exe).arg(&src);
        let st = cmd.status().unwrap_or_else(|e| panic!("cannot run the C compiler for {name}: {e}"));
        assert!(st.success(), "compiling {} failed", src.display());
        println!("cargo::rustc-env=IPCTRACE_{}={}", name.to_uppercase(), exe.display());
    }
    println!("cargo::rerun-if-changed=c/common.h");
}
