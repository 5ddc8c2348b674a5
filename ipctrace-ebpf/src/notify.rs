//! Notifications through eventfds: a target's write(2) on an eventfd (the notification) and
//! read(2) (the wait for it), at the syscall tier (entered from `syscalls` with the classified
//! fd); the channel is the eventfd's inode, so writers and readers of one eventfd meet on it.

use ipctrace_common::{ChannelKind, ProbeId};

use crate::start_call;

/// A read (`read`) or write on an fd of `kind` with inode `ino`: counted if it is an eventfd.
#[inline(always)]
pub(crate) fn enter(ino: u64, kind: ChannelKind, read: bool) {
    if kind == ChannelKind::EventFd {
        start_call(ino, if read { ProbeId::EventfdRead } else { ProbeId::EventfdWrite }, kind);
    }
}
