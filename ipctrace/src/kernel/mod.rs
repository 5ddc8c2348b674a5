//! What ipctrace reads from the running kernel: struct offsets from BTF, tracefs, version,
//! Unix sockets (sock_diag).
//! Read-only queries plus the one private-namespace tracefs mount.

pub mod btf;
pub mod sockdiag;
pub mod symbols;
pub mod tracefs;

/// `uname -r` of the running kernel.
pub fn release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_else(|_| "unknown".into())
}
