//! Exit codes (the table in the README) and the error type that carries one to `main`.
//! Anything not wrapped in `Failure` is a runtime failure (code 1).

use std::fmt;

/// Process exit codes, identical for every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A report was printed (also after Ctrl-C, `--duration` or the targets exiting).
    Ok = 0,
    /// Runtime failure, e.g. no probe tier could be loaded or attached.
    Runtime = 1,
    /// Usage error (clap also exits with 2).
    Usage = 2,
    /// Target problem: unknown PID, kernel thread, no IPC observed, a workload that failed.
    Target = 3,
    /// Missing privileges.
    Privileges = 4,
    /// stdout was closed by its reader (e.g. `| head`): ended quietly, as if by SIGPIPE.
    ClosedStdout = 141,
}

/// An error that decides the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub msg: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

pub fn fail(code: Code, msg: impl Into<String>) -> anyhow::Error {
    Failure { code, msg: msg.into() }.into()
}

/// The exit code for any error reaching `main`.
pub fn code_of(e: &anyhow::Error) -> Code {
    e.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(Code::Runtime)
}
