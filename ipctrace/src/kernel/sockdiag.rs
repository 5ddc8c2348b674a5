//! What the kernel says about Unix sockets that /proc does not: each socket's type, its peer
//! and the name it is bound to, from one `NETLINK_SOCK_DIAG` dump (`UDIAG_SHOW_PEER`,
//! `UDIAG_SHOW_NAME`) of the network namespace, through netlink-packet-sock-diag.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use ipctrace_common::ChannelKind;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    unix::{ShowFlags, StateFlags, UnixRequest, nlas::UnixDiagName},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// One Unix socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixSock {
    pub kind: ChannelKind,
    /// The connected peer's inode.
    pub peer: Option<u64>,
    /// The bound name: a path, or `@name` in the abstract namespace.
    pub name: Option<String>,
    pub listening: bool,
}

/// `TCP_LISTEN`, the state sock_diag gives a listening Unix socket.
const LISTEN: u8 = 10;

fn name_of(n: &UnixDiagName) -> String {
    match n {
        UnixDiagName::Pathname(p) => p.to_string_lossy().into_owned(),
        UnixDiagName::Abstract(a) => format!("@{}", String::from_utf8_lossy(a)),
    }
}

/// Every Unix socket of this network namespace, by inode.
pub fn unix_sockets() -> Result<BTreeMap<u64, UnixSock>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    socket.bind_auto().context("binding the sock_diag socket")?;
    socket.connect(&SocketAddr::new(0, 0)).context("connecting the sock_diag socket")?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: StateFlags::all(),
            inode: 0,
            show_flags: ShowFlags::PEER | ShowFlags::NAME,
            cookie: [0xff; 8],
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).context("sending the sock_diag request")?;
    let mut out = BTreeMap::new();
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0).context("reading sock_diag")?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                .map_err(|e| anyhow::anyhow!("decoding sock_diag: {e}"))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                    let kind = ipctrace_common::unix_kind(u16::from(r.header.kind));
                    out.insert(
                        u64::from(r.header.inode),
                        UnixSock {
                            kind,
                            peer: r.peer().filter(|p| *p != 0).map(u64::from),
                            name: r.name().map(name_of),
                            listening: r.header.state == LISTEN,
                        },
                    );
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => bail!("sock_diag refused the dump: {e:?}"),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socketpair is two sockets, each the other's peer (no root needed).
    #[test]
    fn a_socketpair_is_two_peers() {
        use std::os::{fd::AsRawFd, unix::fs::MetadataExt};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |fd: i32| std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let (ia, ib) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
        let all = unix_sockets().expect("sock_diag dump");
        assert_eq!(all[&ia].peer, Some(ib));
        assert_eq!(all[&ib].peer, Some(ia));
        assert_eq!(all[&ia].kind, ipctrace_common::unix_kind(libc::SOCK_STREAM as u16));
    }
}
