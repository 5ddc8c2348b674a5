//! fds passed over Unix sockets with SCM_RIGHTS. At sendmsg's entry the sender's control
//! messages are read from its memory (the 64-bit `struct user_msghdr` and `cmsghdr` layouts);
//! every passed fd that is a channel is recorded with the channel it went over (the receiving
//! socket's inode, as for a send) in `FD_PASSES`.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::map, maps::HashMap};
use ipctrace_common::FdPassKey;

use crate::{classify::classify_fd, sock::unix_channel};

#[map]
static FD_PASSES: HashMap<FdPassKey, u64> = HashMap::with_max_entries(4096, 0);

const SOL_SOCKET: u32 = 1;
const SCM_RIGHTS: u32 = 1;
/// `struct user_msghdr`: msg_control and msg_controllen.
const MSG_CONTROL: u64 = 32;
const MSG_CONTROLLEN: u64 = 40;
/// `struct cmsghdr`: len (8 bytes), level and type (4 each), then the data.
const CMSG_HDR: u64 = 16;
/// Control messages and fds per message looked at.
const MAX_CMSGS: usize = 2;
const MAX_FDS: u64 = 8;

#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// sendmsg(fd, msg, flags) of target `tgid` on AF_UNIX socket `sk`.
#[inline(always)]
pub(crate) fn sendmsg(tgid: u32, sk: *const u8, msg: u64) {
    let Some((via, _)) = (unsafe { unix_channel(sk, true) }) else { return };
    let (Some(mut cmsg), Some(clen)) = (user::<u64>(msg + MSG_CONTROL), user::<u64>(msg + MSG_CONTROLLEN)) else {
        return;
    };
    let end = cmsg.saturating_add(clen);
    for _ in 0..MAX_CMSGS {
        if cmsg == 0 || cmsg + CMSG_HDR > end {
            return;
        }
        let Some(hdr) = user::<[u32; 4]>(cmsg) else { return };
        let len = hdr[0] as u64 | (hdr[1] as u64) << 32;
        if len < CMSG_HDR {
            return;
        }
        if hdr[2] == SOL_SOCKET && hdr[3] == SCM_RIGHTS {
            let n = (len - CMSG_HDR) / 4;
            for i in 0..MAX_FDS {
                if i >= n {
                    break;
                }
                let Some(fd) = user::<i32>(cmsg + CMSG_HDR + 4 * i) else { break };
                if let Some((ino, kind)) = classify_fd(fd as u64) {
                    let key = FdPassKey { tgid, kind: kind as u16, _pad: 0, ino, via };
                    match FD_PASSES.get_ptr_mut(&key) {
                        Some(c) => unsafe { *c += 1 },
                        None => {
                            let _ = FD_PASSES.insert(&key, &1, 0);
                        }
                    }
                }
            }
        }
        // CMSG_NXTHDR: the next header at the 8-byte-aligned end of this one.
        cmsg += (len + 7) & !7;
    }
}
