//! Notifications through eventfds and signalfds, and the poll-family waits that sleep on
//! them, at the syscall tier (entered from `syscalls` with the classified fd): a target's
//! write(2) on an eventfd (the notification), read(2) of an eventfd or signalfd (taking it);
//! the channel is the fd's inode, so writers and readers of one eventfd meet on it. A
//! poll-family call that returns ready marks the thread (its call slot in `threads`, idle, with kind
//! `POLLED`); if its next traced call is such a read, the wake-up is counted on that fd.

use ipctrace_common::{ChannelKind, Pending, ProbeId};

use crate::{agg_event, call_slot, current, start_call};

/// The `kind` of an idle call slot whose last call was a poll-family wait that returned
/// ready (a real kind is below 16).
const POLLED: u16 = u16::MAX;

/// A read (`read`) or write on an fd of `kind` with inode `ino`: counted if it is an eventfd
/// (or, for a read, a signalfd).
#[inline(always)]
pub(crate) fn enter(ino: u64, kind: ChannelKind, read: bool) {
    let probe = match (kind, read) {
        (ChannelKind::EventFd, true) => ProbeId::EventfdRead,
        (ChannelKind::EventFd, false) => ProbeId::EventfdWrite,
        (ChannelKind::SignalFd, true) => ProbeId::SignalfdRead,
        _ => return,
    };
    if read && polled() {
        let (tgid, _) = current();
        agg_event(tgid, ProbeId::PollWake as u16, kind as u16, ino, 0);
    }
    start_call(ino, probe, kind);
}

/// Was the thread's last traced call a poll-family wait that returned ready?
#[inline(always)]
fn polled() -> bool {
    call_slot().is_some_and(|p| unsafe { (*p).probe == 0 && (*p).kind == POLLED })
}

/// A poll-family wait starts (no channel: what it waits for is only known by what follows).
#[inline(always)]
pub(crate) fn poll_enter() {
    start_call(0, ProbeId::PollWait, ChannelKind::Other);
}

/// A call ended (its slot idle again): a poll-family wait that returned ready marks it.
#[inline(always)]
pub(crate) fn exit(p: &Pending, ret: i64) {
    if p.probe == ProbeId::PollWait as u16 && ret > 0 {
        if let Some(slot) = call_slot() {
            unsafe { (*slot).kind = POLLED };
        }
    }
}
