//! The Unix-socket transports, every tier. A channel is one direction: its id is the inode of
//! the socket that receives (a send is counted on the peer's inode, a receive on its own), so
//! both ends of a direction share it as a pipe's ends do. Syscall tier (entered from
//! `syscalls`): send/recv-family calls and read/write on AF_UNIX socket fds (bytes = return
//! values, derived), sendfile into a socket (moved, not copied; a splice between a pipe and a
//! socket is the pipe's call). Function tier: fentry/fexit, then kprobes, on
//! unix_{stream,dgram,seqpacket}_{send,recv}msg (exact). Socket-layer raw tracepoints, where
//! the kernel has them: sock_{send,recv}_length (exact bytes),
//! and during a call in flight sk_data_ready (an skb queued for the receiver),
//! skb_copy_datagram_iovec (bytes copied skb -> user) and consume_skb (skbs freed), added up in
//! the call and counted at its exit.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use ipctrace_common::{AF_UNIX, ChannelKind, MSG_SPLICE_PAGES, Pending, ProbeId, loss};

use crate::{agg_event, call_exit, count_loss, current, is_target, offsets, read_at, start_call};

/// Sockets sent to before they were accepted (their `struct sock` address), with the inode
/// they got once accepted (0 until then): userspace moves what was counted under the address
/// to the inode.
#[map]
static EMBRYOS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// The channel of a send (`send`) or receive on AF_UNIX socket `sk`: the receiving socket's
/// inode (or, before it is accepted, its address: `EMBRYOS`) and the kind; None for another
/// family or a socket being torn down.
#[inline(always)]
pub(crate) unsafe fn unix_channel(sk: *const u8, send: bool) -> Option<(u64, ChannelKind)> {
    let o = offsets();
    unsafe {
        let family: u16 = read_at(sk, o.sock_family).ok()?;
        if family != AF_UNIX {
            return None;
        }
        let ty: u16 = read_at(sk, o.sock_type).ok()?;
        let kind = match crate::classify::unix_kind(ty) {
            ChannelKind::Other => return None,
            k => k,
        };
        // A connected sender's data queues at its peer; an unconnected datagram's at the
        // address, which only the receive knows: counted on the sender's own socket then.
        let mut target = sk;
        if send {
            let peer: *const u8 = read_at(sk, o.unix_peer).unwrap_or(core::ptr::null());
            if !peer.is_null() {
                target = peer;
            }
        }
        if o.socket_alloc_inode == u32::MAX {
            return None;
        }
        let socket: *const u8 = read_at(target, o.sock_socket).ok()?;
        let key = target as u64;
        if socket.is_null() {
            // A client may send before the server accepts: the peer is an embryo with no
            // socket (and no inode) yet. Counted under its address until it has one.
            if send && target != sk {
                if EMBRYOS.get(&key).is_none() {
                    let _ = EMBRYOS.insert(&key, &0, 0);
                }
                return Some((key, kind));
            }
            return None;
        }
        let ino: u64 = read_at(socket.add(o.socket_alloc_inode as usize), o.inode_ino).ok()?;
        if crate::IGNORED.get(&ino).is_some() {
            return None;
        }
        // An accepted embryo: its address now names this inode.
        if let Some(v) = EMBRYOS.get_ptr_mut(&key)
            && *v == 0
        {
            *v = ino;
        }
        Some((ino, kind))
    }
}

/// A call on AF_UNIX socket `sk` (the syscall tier enters here from `syscalls` with the
/// fd's socket; the function tier with the function's).
#[inline(always)]
pub(crate) fn start(sk: *const u8, probe: ProbeId) {
    let send = probe != ProbeId::SockRecv;
    if let Some((ino, k)) = unsafe { unix_channel(sk, send) } {
        start_call(ino, probe, k);
    }
}

/// The thread's call in flight, if it is one of `probes`.
#[inline(always)]
fn inflight(probes: &[ProbeId]) -> Option<*mut Pending> {
    let p = crate::inflight()?;
    let probe = unsafe { (*p).probe };
    probes.iter().any(|x| *x as u16 == probe).then_some(p)
}

/// sock:sock_{send,recv}_length(sk, ret, flags): the socket layer's count.
#[inline(always)]
fn length(ctx: &RawTracePointContext, send: bool) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32;
    if ret <= 0 {
        return 0;
    }
    // Bytes spliced in by sendfile/splice are not copies: counted with that call, not here.
    if send && inflight(&[ProbeId::SockSendfile]).is_some() {
        return 0;
    }
    if let Some((ino, k)) = unsafe { unix_channel(sk, send) } {
        let probe = if send { ProbeId::SockSendBytes } else { ProbeId::SockRecvBytes };
        agg_event(tgid, probe as u16, k as u16, ino, ret as u64);
    }
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    length(&ctx, true)
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    length(&ctx, false)
}

/// sock:sk_data_ready(sk) in the sender's context: one skb queued for the receiver.
#[raw_tracepoint(tracepoint = "sk_data_ready")]
pub fn sk_data_ready(_ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    if let Some(p) = inflight(&[ProbeId::SockSend, ProbeId::SockSendfile]) {
        unsafe { (*p)._pad += 1 };
    }
    0
}

/// skb:skb_copy_datagram_iovec(skb, len) inside a receive: the bytes copied skb -> user.
#[raw_tracepoint(tracepoint = "skb_copy_datagram_iovec")]
pub fn skb_copy_datagram_iovec(ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    if let Some(p) = inflight(&[ProbeId::SockRecv]) {
        let len = ctx.arg::<u64>(1) as i32;
        if len > 0 {
            unsafe { (*p).len += len as u64 };
        }
    }
    0
}

/// skb:consume_skb(skb[, location]) inside a receive: an skb freed once read.
#[raw_tracepoint(tracepoint = "consume_skb")]
pub fn consume_skb(_ctx: RawTracePointContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    if let Some(p) = inflight(&[ProbeId::SockRecv]) {
        // A receive counts freed skbs in `_pad` (a send counts queued ones there).
        unsafe { (*p)._pad += 1 };
    }
    0
}

/// Does a send add up the skbs it queues (`_pad`), counted with the call (`AggVal::aux_calls`)?
#[inline(always)]
pub(crate) fn queues(probe: u16) -> bool {
    probe == ProbeId::SockSend as u16 || probe == ProbeId::SockSendfile as u16
}

/// What a socket receive added up while in flight, counted once at its exit (a send's skbs
/// go with the call's own update: `queues`).
#[inline(always)]
pub(crate) fn flush(tgid: u32, p: &Pending) {
    if p.probe == ProbeId::SockRecv as u16 {
        if p.len > 0 {
            crate::agg_add(tgid, ProbeId::SkbCopyOut as u16, p.kind, p.ino, 1, p.len);
        }
        if p._pad > 0 {
            crate::agg_add(tgid, ProbeId::SkbFreed as u16, p.kind, p.ino, p._pad as u64, 0);
        }
    }
}

/// Function tier: entry of unix_*_sendmsg(struct socket *, struct msghdr *, size_t) or
/// unix_*_recvmsg(struct socket *, struct msghdr *, size_t, int).
#[inline(always)]
fn fn_entry(sock: *const u8, msg: *const u8, send: bool) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    let o = offsets();
    let Ok(sk) = (unsafe { read_at::<*const u8>(sock, o.socket_sk) }) else {
        count_loss(loss::READ_FAILED);
        return 0;
    };
    let probe = if !send {
        ProbeId::SockRecv
    } else {
        // A splice or sendfile (6.5+) hands pages over: moved, not copied.
        let flags: u32 = unsafe { read_at(msg, o.msghdr_flags) }.unwrap_or(0);
        if flags & MSG_SPLICE_PAGES != 0 { ProbeId::SockSendfile } else { ProbeId::SockSend }
    };
    start(sk, probe);
    0
}

/// Before 6.5: unix_stream_sendpage(struct socket *, struct page *, int offset, size_t, int):
/// sendfile/splice into a stream socket, page references without a copy.
#[inline(always)]
fn sendpage_entry(sock: *const u8) -> u32 {
    if !is_target(current().0) {
        return 0;
    }
    match unsafe { read_at::<*const u8>(sock, offsets().socket_sk) } {
        Ok(sk) => start(sk, ProbeId::SockSendfile),
        Err(_) => count_loss(loss::READ_FAILED),
    }
    0
}

#[fentry(function = "unix_stream_sendpage")]
pub fn fentry_unix_stream_sendpage(ctx: FEntryContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    sendpage_entry(ctx.arg(0))
}

#[fexit(function = "unix_stream_sendpage")]
pub fn fexit_unix_stream_sendpage(ctx: FExitContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fn_exit(ctx.ret::<i64>().unwrap_or(-1))
}

#[kprobe]
pub fn kprobe_unix_stream_sendpage(ctx: ProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    sendpage_entry(ctx.arg(0).unwrap_or(core::ptr::null()))
}

/// The functions return int: sign-extend the low 32 bits.
#[inline(always)]
fn fn_exit(ret: i64) -> u32 {
    call_exit(ret as i32 as i64)
}

macro_rules! function_probes {
    ($fentry:ident, $fexit:ident, $kprobe:ident, $func:literal, $send:expr) => {
        #[fentry(function = $func)]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            if crate::floor() {
                return 0;
            }
            fn_entry(ctx.arg(0), ctx.arg(1), $send)
        }

        #[fexit(function = $func)]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            if crate::floor() {
                return 0;
            }
            fn_exit(ctx.ret::<i64>().unwrap_or(-1))
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            if crate::floor() {
                return 0;
            }
            fn_entry(ctx.arg(0).unwrap_or(core::ptr::null()), ctx.arg(1).unwrap_or(core::ptr::null()), $send)
        }
    };
}

function_probes!(fentry_unix_stream_send, fexit_unix_stream_send, kprobe_unix_stream_send, "unix_stream_sendmsg", true);
function_probes!(
    fentry_unix_stream_recv,
    fexit_unix_stream_recv,
    kprobe_unix_stream_recv,
    "unix_stream_recvmsg",
    false
);
function_probes!(fentry_unix_dgram_send, fexit_unix_dgram_send, kprobe_unix_dgram_send, "unix_dgram_sendmsg", true);
function_probes!(fentry_unix_dgram_recv, fexit_unix_dgram_recv, kprobe_unix_dgram_recv, "unix_dgram_recvmsg", false);
function_probes!(
    fentry_unix_seqpacket_send,
    fexit_unix_seqpacket_send,
    kprobe_unix_seqpacket_send,
    "unix_seqpacket_sendmsg",
    true
);
function_probes!(
    fentry_unix_seqpacket_recv,
    fexit_unix_seqpacket_recv,
    kprobe_unix_seqpacket_recv,
    "unix_seqpacket_recvmsg",
    false
);

#[kretprobe]
pub fn kretprobe_unix_sock(ctx: RetProbeContext) -> u32 {
    if crate::floor() {
        return 0;
    }
    fn_exit(ctx.ret::<i64>())
}
