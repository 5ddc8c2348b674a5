//! What an fd is, decided positively: an anonymous pipe, a FIFO, a shmem file, an AF_UNIX
//! stream/datagram/seqpacket socket, a POSIX message queue, an eventfd or a signalfd. Anything
//! else is `ChannelKind::Other` and no program counts it as a channel.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use ipctrace_common::{
    AF_UNIX, ChannelKind, EVENTFD_ID, MQUEUE_MAGIC, PIPEFS_MAGIC, S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK, TMPFS_MAGIC, loss,
};

use crate::{count_loss, file_ops, offsets, read_at};

/// The current task's `struct file *` for `fd` (null if none).
#[inline(always)]
unsafe fn file_of_fd(fd: u64) -> Result<*const u8, i32> {
    let o = offsets();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    unsafe {
        let files: *const u8 = read_at(task, o.task_files)?;
        if files.is_null() {
            return Ok(core::ptr::null());
        }
        let fdt: *const u8 = read_at(files, o.files_fdt)?;
        let max_fds: u32 = read_at(fdt, o.fdt_max_fds)?;
        if fd >= max_fds as u64 {
            return Ok(core::ptr::null());
        }
        let fd_array: *const u8 = read_at(fdt, o.fdt_fd)?;
        bpf_probe_read_kernel(fd_array.add(fd as usize * 8) as *const *const u8)
    }
}

/// An AF_UNIX socket's kind by its type; any other family is `Other`.
#[inline(always)]
unsafe fn socket_kind(file: *const u8) -> Result<ChannelKind, i32> {
    let o = offsets();
    unsafe {
        let sock: *const u8 = read_at(file, o.file_private_data)?;
        let ty: u16 = read_at(sock, o.socket_type)?;
        let sk: *const u8 = read_at(sock, o.socket_sk)?;
        let family: u16 = read_at(sk, o.sock_family)?;
        if family != AF_UNIX {
            return Ok(ChannelKind::Other);
        }
        Ok(unix_kind(ty))
    }
}

pub(crate) use ipctrace_common::unix_kind;

/// A file -> (inode number, kind), or None for a null file or a kind ipctrace does not trace.
#[inline(always)]
pub(crate) unsafe fn classify_file(file: *const u8) -> Result<Option<(u64, ChannelKind)>, i32> {
    if file.is_null() {
        return Ok(None);
    }
    let o = offsets();
    unsafe {
        let inode: *const u8 = read_at(file, o.file_inode)?;
        let mode: u16 = read_at(inode, o.inode_mode)?;
        let kind = match mode & S_IFMT {
            S_IFSOCK => socket_kind(file)?,
            _ => inode_kind(file, inode, mode)?,
        };
        Ok(match kind {
            ChannelKind::Other => None,
            k => Some((channel_id(file, inode, k)?, k)),
        })
    }
}

/// The kind of a file that is not a socket, from its inode.
#[inline(always)]
unsafe fn inode_kind(file: *const u8, inode: *const u8, mode: u16) -> Result<ChannelKind, i32> {
    let o = offsets();
    unsafe {
        if mode & S_IFMT == S_IFIFO {
            let pipe: u64 = read_at(inode, o.inode_pipe)?;
            if pipe == 0 {
                return Ok(ChannelKind::Other);
            }
            let sb: *const u8 = read_at(inode, o.inode_sb)?;
            let magic: u64 = read_at(sb, o.sb_magic)?;
            return Ok(if magic == PIPEFS_MAGIC { ChannelKind::AnonPipe } else { ChannelKind::Fifo });
        }
        let sb: *const u8 = read_at(inode, o.inode_sb)?;
        let magic: u64 = read_at(sb, o.sb_magic)?;
        Ok(if magic == MQUEUE_MAGIC {
            ChannelKind::MsgQueue
        } else if magic == TMPFS_MAGIC && mode & S_IFMT == S_IFREG {
            ChannelKind::Shm
        } else {
            // eventfd and signalfd share the anon inode: their read function tells them apart.
            let fops = file_ops();
            let f_op: *const u8 = read_at(file, o.file_f_op)?;
            let read_iter: u64 = read_at(f_op, o.fops_read_iter)?;
            if fops.eventfd != 0 && read_iter == fops.eventfd {
                ChannelKind::EventFd
            } else if fops.signalfd != 0 && read_iter == fops.signalfd {
                ChannelKind::SignalFd
            } else {
                ChannelKind::Other
            }
        })
    }
}

/// What a syscall's fd is, as its programs need it: a channel (`kind`, `ino`), or a socket by
/// its `struct sock *` (`sk`, whose channel depends on the direction: `sock::unix_channel`).
/// `open` 0: no file at that fd (or it could not be read), a state an open can change without
/// a close, so never cached. A plain struct, every field set: an enum with payloads here makes
/// LLVM store undefined registers, which the verifier refuses; and the fd cache keeps it as is.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Fd {
    pub kind: u16,
    pub open: u16,
    pub _pad: u32,
    pub ino: u64,
    pub sk: u64,
}

impl Fd {
    const ABSENT: Fd = Fd { kind: ChannelKind::Other as u16, open: 0, _pad: 0, ino: 0, sk: 0 };
    const UNTRACED: Fd = Fd { kind: ChannelKind::Other as u16, open: 1, _pad: 0, ino: 0, sk: 0 };

    /// The channel kind, if the fd is one (a socket is not: its channel needs a direction).
    #[inline(always)]
    pub fn channel(&self) -> Option<ChannelKind> {
        match ChannelKind::from_u16(self.kind) {
            Some(ChannelKind::Other) | None => None,
            k => k,
        }
    }
}

#[inline(always)]
unsafe fn fd_info(fd: u64) -> Result<Fd, i32> {
    let o = offsets();
    unsafe {
        let file = file_of_fd(fd)?;
        if file.is_null() {
            return Ok(Fd::ABSENT);
        }
        let inode: *const u8 = read_at(file, o.file_inode)?;
        let mode: u16 = read_at(inode, o.inode_mode)?;
        if mode & S_IFMT == S_IFSOCK {
            let sock: *const u8 = read_at(file, o.file_private_data)?;
            let sk: u64 = read_at(sock, o.socket_sk)?;
            return Ok(Fd { sk, ..Fd::UNTRACED });
        }
        let kind = inode_kind(file, inode, mode)?;
        if kind == ChannelKind::Other {
            return Ok(Fd::UNTRACED);
        }
        Ok(Fd { kind: kind as u16, ino: channel_id(file, inode, kind)?, ..Fd::UNTRACED })
    }
}

/// The id of a channel of `kind`: its inode number, but for an eventfd (every one has the
/// same anon inode) its context's id, tagged `EVENTFD_ID`.
#[inline(always)]
unsafe fn channel_id(file: *const u8, inode: *const u8, kind: ChannelKind) -> Result<u64, i32> {
    let o = offsets();
    unsafe {
        if kind == ChannelKind::EventFd && o.eventfd_id != u32::MAX {
            let ctx: *const u8 = read_at(file, o.file_private_data)?;
            let id: u32 = read_at(ctx, o.eventfd_id)?;
            return Ok(EVENTFD_ID | id as u64);
        }
        read_at(inode, o.inode_ino)
    }
}

/// fd of the current task -> `Fd`; a failed read is loss (and the fd counts as absent).
#[inline(always)]
pub(crate) fn fd_of_call(fd: u64) -> Fd {
    match unsafe { fd_info(fd) } {
        Ok(f) => f,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            Fd::ABSENT
        }
    }
}

/// fd of the current task -> (ino, kind), counting failed reads as loss.
#[inline(always)]
pub(crate) fn classify_fd(fd: u64) -> Option<(u64, ChannelKind)> {
    match unsafe { file_of_fd(fd).and_then(|f| classify_file(f)) } {
        Ok(c) => c,
        Err(_) => {
            count_loss(loss::READ_FAILED);
            None
        }
    }
}

/// A pipe or a FIFO: the kinds the pipe programs count.
#[inline(always)]
pub(crate) fn is_pipe(k: ChannelKind) -> bool {
    matches!(k, ChannelKind::AnonPipe | ChannelKind::Fifo)
}
