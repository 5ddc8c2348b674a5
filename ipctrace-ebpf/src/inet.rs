//! TCP and UDP over loopback: not a transport ipctrace analyses, counted so that processes
//! talking over 127.0.0.1 or ::1 are named ("not analysed") rather than reported as no IPC. A
//! send or receive on a connected AF_INET/AF_INET6 socket whose peer address is loopback
//! starts a call (its return value is the bytes: derived); the channel id is the connection's two ports
//! (the lower in the high 16 bits), the same from both ends.

use ipctrace_common::{AF_INET, AF_INET6, ChannelKind, ProbeId, SOCK_DGRAM, SOCK_STREAM};

use crate::{offsets, read_at, start_call};

/// Is the socket's peer address a loopback one (127/8, ::1, ::ffff:127/104)?
#[inline(always)]
unsafe fn loopback(sk: *const u8, family: u16) -> Result<bool, i32> {
    let o = offsets();
    unsafe {
        if family == AF_INET {
            // Network order: the first octet is the lowest byte.
            let d: u32 = read_at(sk, o.sock_daddr)?;
            return Ok(d & 0xff == 127);
        }
        let a: [u8; 16] = read_at(sk, o.sock_v6_daddr)?;
        let head_zero = a[..10].iter().all(|b| *b == 0);
        Ok((head_zero && a[10] == 0 && a[11] == 0 && a[12..15].iter().all(|b| *b == 0) && a[15] == 1)
            || (head_zero && a[10] == 0xff && a[11] == 0xff && a[12] == 127))
    }
}

/// A send or receive (`probe`) on socket `sk`: a call on its loopback connection, if it is
/// an inet one.
#[inline(always)]
pub(crate) fn start(sk: *const u8, probe: ProbeId) {
    let o = offsets();
    let Ok(family) = (unsafe { read_at::<u16>(sk, o.sock_family) }) else { return };
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let id = unsafe {
        if !loopback(sk, family).unwrap_or(false) {
            return;
        }
        let kind = match read_at::<u16>(sk, o.sock_type) {
            Ok(SOCK_STREAM) => ChannelKind::TcpLoopback,
            Ok(SOCK_DGRAM) => ChannelKind::UdpLoopback,
            _ => return,
        };
        let (Ok(dport), Ok(local)) = (read_at::<u16>(sk, o.sock_dport), read_at::<u16>(sk, o.sock_num)) else {
            return;
        };
        let remote = u16::from_be(dport);
        if remote == 0 {
            return;
        }
        let (lo, hi) = if local < remote { (local, remote) } else { (remote, local) };
        (((lo as u64) << 16) | hi as u64, kind)
    };
    start_call(id.0, probe, id.1);
}
