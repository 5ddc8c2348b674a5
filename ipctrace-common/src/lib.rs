//! Types shared by ipctrace's eBPF programs and its userspace loader.
//! Everything here is `#[repr(C)]` plain data; no logic beyond constants and tiny helpers.
#![no_std]

/// Kernel struct field offsets (bytes), read from `/sys/kernel/btf/vmlinux` at start-up.
/// Rust eBPF built with aya has no CO-RE relocations, so the loader hands these over as
/// global data. A value of `u32::MAX` means "field not found".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_pipe: u32,
    pub inode_sb: u32,
    pub sb_magic: u32,
    /// `struct task_struct.exit_code` (read at sched_process_exit).
    pub task_exit_code: u32,
    /// `struct kiocb.ki_filp` (function tier: pipe_write/pipe_read's first argument).
    pub kiocb_filp: u32,
    /// `struct vm_area_struct.vm_file` (function tier: handle_mm_fault's first argument).
    pub vma_file: u32,
    /// `struct vm_area_struct.vm_start` and `.vm_end` (function tier: a shm mapping learnt at
    /// its first fault when its mmap was not seen).
    pub vma_start: u32,
    pub vma_end: u32,
    /// `struct file.f_op` and `.private_data` (sockets: the `struct socket *`);
    /// `struct file_operations.read_iter`.
    pub file_f_op: u32,
    pub fops_read_iter: u32,
    pub file_private_data: u32,
    /// `struct socket.type` and `.sk`; `struct sock.__sk_common.skc_family`.
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    /// `struct sock.sk_type` and `.sk_socket`; `struct unix_sock.peer`.
    pub sock_type: u32,
    pub sock_socket: u32,
    pub unix_peer: u32,
    /// `struct socket_alloc.vfs_inode`: the socket's inode, just after the socket.
    pub socket_alloc_inode: u32,
    /// `struct msghdr.msg_flags` (MSG_SPLICE_PAGES: a splice/sendfile into the socket).
    pub msghdr_flags: u32,
    /// `struct pt_regs`: the six syscall arguments (di, si, dx, r10, r8, r9) and `orig_ax`
    /// (the syscall number at sys_exit), for the raw syscall tracepoints.
    pub regs_args: [u32; 6],
    pub regs_orig_ax: u32,
    /// `struct task_struct.pid` and `.tgid` (raw scheduler tracepoints name tasks by pointer).
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `struct task_struct.__state` (`.state` before 5.14): sched_switch's prev_state on
    /// kernels whose raw tracepoint does not pass it (before 5.18).
    pub task_state: u32,
    /// `struct task_struct.thread_info.status` (x86: TS_COMPAT marks a 32-bit syscall, whose
    /// numbers differ); UNKNOWN elsewhere.
    pub task_ti_status: u32,
    /// 1 when sched_switch's raw tracepoint passes prev_state (5.18+); before, the programs
    /// read it from the task (`task_state`).
    pub switch_state_arg: u32,
    /// `struct sock.__sk_common`: `skc_daddr`, `skc_dport` (network order), `skc_num` (the
    /// local port), `skc_v6_daddr`: whether an inet socket talks over loopback, and its ports.
    pub sock_daddr: u32,
    pub sock_dport: u32,
    pub sock_num: u32,
    pub sock_v6_daddr: u32,
    /// `struct eventfd_ctx.id` (the `eventfd-id` of /proc/PID/fdinfo): every eventfd shares
    /// one anon inode, so this names the channel (`EVENTFD_ID`).
    pub eventfd_id: u32,
    /// The per-CPU page-allocation counters (`vm_event_states.event[PGALLOC_*]`), found from
    /// the current task's runqueue: `task_struct.se.cfs_rq`, `cfs_rq.rq`; the offsets of
    /// `runqueues` and `vm_event_states` in the per-CPU section; the first `PGALLOC_*` event
    /// and how many there are (one per zone). UNKNOWN (any of them): pipe buffer pages are
    /// counted at `kmem:mm_page_alloc` instead.
    pub task_se_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub percpu_runqueues: u32,
    pub percpu_vm_events: u32,
    pub pgalloc_first: u32,
    pub pgalloc_count: u32,
}

/// At most this many `PGALLOC_*` counters (zones) are summed.
pub const PGALLOC_MAX: u32 = 6;

/// An eventfd's channel id: this bit with its `eventfd-id`, apart from any inode number.
pub const EVENTFD_ID: u64 = 1 << 62;

/// The `eventfd-id` of an eventfd channel's id, if it is one.
pub const fn eventfd_id(ino: u64) -> Option<u64> {
    if ino & EVENTFD_ID != 0 { Some(ino & !EVENTFD_ID) } else { None }
}

/// An fd passed with SCM_RIGHTS: by whom, what (its kind and inode), over which channel (the
/// receiving socket's inode, as for a send).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdPassKey {
    pub tgid: u32,
    pub kind: u16,
    pub _pad: u16,
    pub ino: u64,
    pub via: u64,
}

/// Kernel addresses the classification compares `file->f_op->read_iter` with (from
/// /proc/kallsyms: `eventfd_read`, `signalfd_read_iter`; 0 = unknown, and the kind is then
/// never reported).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOps {
    pub eventfd: u64,
    pub signalfd: u64,
}

impl Offsets {
    pub const UNKNOWN: Self = Self {
        task_files: u32::MAX,
        files_fdt: u32::MAX,
        fdt_max_fds: u32::MAX,
        fdt_fd: u32::MAX,
        file_inode: u32::MAX,
        inode_mode: u32::MAX,
        inode_ino: u32::MAX,
        inode_pipe: u32::MAX,
        inode_sb: u32::MAX,
        sb_magic: u32::MAX,
        task_exit_code: u32::MAX,
        kiocb_filp: u32::MAX,
        vma_file: u32::MAX,
        vma_start: u32::MAX,
        vma_end: u32::MAX,
        file_f_op: u32::MAX,
        fops_read_iter: u32::MAX,
        file_private_data: u32::MAX,
        socket_type: u32::MAX,
        socket_sk: u32::MAX,
        sock_family: u32::MAX,
        sock_type: u32::MAX,
        sock_socket: u32::MAX,
        unix_peer: u32::MAX,
        socket_alloc_inode: u32::MAX,
        msghdr_flags: u32::MAX,
        regs_args: [u32::MAX; 6],
        regs_orig_ax: u32::MAX,
        task_pid: u32::MAX,
        task_tgid: u32::MAX,
        task_state: u32::MAX,
        task_ti_status: u32::MAX,
        switch_state_arg: 0,
        sock_daddr: u32::MAX,
        sock_dport: u32::MAX,
        sock_num: u32::MAX,
        sock_v6_daddr: u32::MAX,
        eventfd_id: u32::MAX,
        task_se_cfs_rq: u32::MAX,
        cfs_rq_rq: u32::MAX,
        percpu_runqueues: u32::MAX,
        percpu_vm_events: u32::MAX,
        pgalloc_first: u32::MAX,
        pgalloc_count: 0,
    };

    /// Can the programs read the per-CPU page-allocation counters?
    pub const fn page_counters(&self) -> bool {
        self.task_se_cfs_rq != u32::MAX
            && self.cfs_rq_rq != u32::MAX
            && self.percpu_runqueues != u32::MAX
            && self.percpu_vm_events != u32::MAX
            && self.pgalloc_first != u32::MAX
            && self.pgalloc_count > 0
            && self.pgalloc_count <= PGALLOC_MAX
    }
}

/// What the raw syscall dispatcher does for a syscall number (`SYSCALLS[nr]`, filled by the
/// loader): the low byte is the operation (`sysop::*`), the bits above it the probe-table rows
/// (`sysrow::*`) whose syscall tier was chosen and that want this operation. 0: not traced.
pub const SYSCALL_SLOTS: u32 = 1024;

/// Operations the syscall dispatcher knows, by what they do (the loader maps each to this
/// architecture's syscall number).
pub mod sysop {
    pub const WRITE: u32 = 1;
    pub const READ: u32 = 2;
    pub const SPLICE: u32 = 3;
    pub const VMSPLICE: u32 = 4;
    pub const OPENAT: u32 = 5;
    pub const UNLINK: u32 = 6;
    pub const FTRUNCATE: u32 = 7;
    pub const MMAP: u32 = 8;
    pub const MUNMAP: u32 = 9;
    pub const FUTEX: u32 = 10;
    pub const FUTEX_WAIT: u32 = 11;
    pub const FUTEX_WAKE: u32 = 12;
    /// sendto (sendmsg is `SENDMSG`: it can carry fds).
    pub const SEND: u32 = 13;
    pub const RECV: u32 = 14;
    pub const SENDFILE: u32 = 15;
    pub const OPEN: u32 = 16;
    /// What the fd cache must see: an fd closed (`close`), replaced (`dup2`/`dup3`: the new
    /// fd is the second argument), a range closed (`close_range`), fds changed behind the
    /// syscalls' back (`io_uring_setup`: the process is never cached).
    pub const CLOSE: u32 = 17;
    pub const DUP2: u32 = 18;
    pub const CLOSE_RANGE: u32 = 19;
    pub const IO_URING: u32 = 20;
    pub const SENDMSG: u32 = 21;
    pub const MQ_SEND: u32 = 22;
    pub const MQ_RECV: u32 = 23;
    pub const MSGSND: u32 = 24;
    pub const MSGRCV: u32 = 25;
    /// poll, ppoll, select, pselect6, epoll_wait, epoll_pwait, epoll_pwait2.
    pub const POLL: u32 = 26;
    pub const MASK: u32 = 0xff;
}

/// `TARGETS` values: bit flags in the low byte, the process's fd-cache generation above
/// (random, changed at exec and close_range, so a reused pid or fd table never meets an old
/// entry).
pub mod target {
    /// A target (what the loader inserts, with a generation).
    pub const IS: u32 = 1;
    /// Its syscalls' bitness was checked (the syscall dispatcher, at its first call).
    pub const CHECKED: u32 = 2;
    /// It makes 32-bit syscalls, whose numbers and arguments are not traced.
    pub const COMPAT: u32 = 4;
    /// Its fds are never cached (io_uring, or an fd table shared with another process).
    pub const NOCACHE: u32 = 8;
    /// The fd-cache generation (bits 8-31; a new one at exec and close_range).
    pub const GEN_SHIFT: u32 = 8;
    /// The value's high 32 bits: a random number drawn again at every close, dup2/dup3,
    /// close_range and exec, which a thread's memo of its last fd is checked against.
    pub const EPOCH_SHIFT: u32 = 32;
}

/// Probe-table rows served by the syscall dispatcher (bits above `sysop::MASK`).
pub mod sysrow {
    pub const PIPE_WRITE: u32 = 1 << 8;
    pub const PIPE_READ: u32 = 1 << 9;
    pub const PIPE_SPLICE: u32 = 1 << 10;
    pub const SHM_SETUP: u32 = 1 << 11;
    pub const FUTEX: u32 = 1 << 12;
    pub const UNIX_SEND: u32 = 1 << 13;
    pub const UNIX_RECV: u32 = 1 << 14;
    /// fds passed with SCM_RIGHTS in sendmsg.
    pub const FD_PASS: u32 = 1 << 15;
    /// Sends and receives on TCP/UDP loopback sockets.
    pub const INET: u32 = 1 << 16;
    /// POSIX and SysV message queues.
    pub const MQ: u32 = 1 << 17;
    /// Reads and writes on eventfds, reads on signalfds (notifications).
    pub const NOTIFY: u32 = 1 << 18;
    /// Poll-family waits, and the notification reads that follow them.
    pub const POLL: u32 = 1 << 19;
}

/// Defines a `#[repr(u16)]` id enum with its list, its decoder and its names, so a value
/// read back from the kernel is decoded in exactly one place and an unknown one is `None`.
macro_rules! ids {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal => $s:literal,)+ }) => {
        $(#[$m])*
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vm])* $v = $n,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            /// The id the kernel programs store, decoded; None for a value no variant has.
            pub const fn from_u16(v: u16) -> Option<Self> {
                match v {
                    $($n => Some($name::$v),)+
                    _ => None,
                }
            }

            /// The name in reports, JSON and `--events`.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            /// The name of a raw value, if it is a known id.
            pub fn name_of(v: u16) -> Option<&'static str> {
                Self::from_u16(v).map(Self::name)
            }
        }
    };
}

ids! {
    /// Logical probes: the `probe` part of aggregation and stack keys.
    ProbeId {
        /// write(2)/writev(2) on a pipe fd (syscall tier) or the pipe write function (function tier).
        PipeWrite = 1 => "pipe_write",
        /// read(2)/readv(2) on a pipe fd, or the pipe read function.
        PipeRead = 2 => "pipe_read",
        /// splice(2) with the pipe as source: pages leave the pipe without a copy to user space.
        SpliceOut = 3 => "splice_out",
        /// splice(2) into the pipe.
        SpliceIn = 4 => "splice_in",
        /// vmsplice(2) into the pipe.
        Vmsplice = 5 => "vmsplice",
        /// FUTEX_WAIT(_BITSET) / futex_wait on a word inside a traced shm mapping.
        FutexWait = 6 => "futex_wait",
        /// FUTEX_WAKE(_BITSET) / futex_wake on a word inside a traced shm mapping.
        FutexWake = 7 => "futex_wake",
        /// Page fault taken in user mode (`kind` = channel kind of the faulting address).
        FaultUser = 8 => "fault_user",
        /// Page fault on a user address taken in kernel mode (e.g. during copy_from_user).
        FaultKernel = 9 => "fault_kernel",
        /// Pages allocated (bytes = 4096 << order).
        PageAlloc = 10 => "page_alloc",
        /// The task left the CPU (`kind`: `sched::VOLUNTARY` = blocked, `sched::INVOLUNTARY`).
        SchedOut = 11 => "sched_out",
        /// The task was woken (`ino` = the waker's tgid).
        Wakeup = 12 => "wakeup",
        /// openat(2) of a /dev/shm path (shm_open).
        ShmOpen = 13 => "shm_open",
        /// ftruncate(2) of a shmem fd.
        ShmFtruncate = 14 => "shm_ftruncate",
        /// mmap(2) of a shmem fd (`bytes` = length mapped).
        ShmMmap = 15 => "shm_mmap",
        /// munmap(2) of a traced shm mapping.
        ShmMunmap = 16 => "shm_munmap",
        /// unlink(2) of a /dev/shm path (shm_unlink).
        ShmUnlink = 17 => "shm_unlink",
        /// cpu-clock sample (stack counts only).
        Sample = 18 => "sample",
        /// Time off the CPU after a voluntary switch (stack counts only).
        OffCpu = 19 => "offcpu",
        /// Function tier: handle_mm_fault on a shm mapping (`time_ns` = fault latency).
        MmFault = 20 => "mm_fault",
        /// A voluntary switch and its time off the CPU, by the call in flight
        /// (`kind` = `blocked_kind(probe, channel kind)`, `ino` = the channel).
        Blocked = 21 => "blocked",
        /// A send on an AF_UNIX socket (write/sendto/sendmsg, or unix_*_sendmsg); `ino` =
        /// the receiving socket's inode (the channel is the direction).
        SockSend = 22 => "sock_send",
        /// A receive on an AF_UNIX socket; `ino` = this socket's inode.
        SockRecv = 23 => "sock_recv",
        /// sendfile/splice into an AF_UNIX socket: page references move, no copy.
        SockSendfile = 24 => "sock_sendfile",
        /// sock:sock_send_length on an AF_UNIX socket: the socket layer's own byte count.
        SockSendBytes = 25 => "sock_send_bytes",
        /// sock:sock_recv_length on an AF_UNIX socket.
        SockRecvBytes = 26 => "sock_recv_bytes",
        /// sock:sk_data_ready during a send: an skb queued for the receiver, which is made readable.
        SkbQueued = 27 => "skb_queued",
        /// skb:skb_copy_datagram_iovec during a receive: bytes copied skb -> user.
        SkbCopyOut = 28 => "skb_copy_out",
        /// skb:consume_skb during a receive: skbs freed after their data was read.
        SkbFreed = 29 => "skb_freed",
        /// A send on a TCP or UDP socket connected over loopback (write/sendto/sendmsg; bytes
        /// = return values): counted so that such traffic is named, not analysed.
        InetSend = 30 => "inet_send",
        /// A receive on such a socket (read/recvfrom/recvmsg): names the receiving end.
        InetRecv = 31 => "inet_recv",
        /// mq_timedsend / msgsnd on a traced queue (bytes: the length asked, when it succeeded).
        MqSend = 32 => "mq_send",
        /// mq_timedreceive / msgrcv (bytes: the message's length).
        MqRecv = 33 => "mq_recv",
        /// A send that entered while a receive on the same queue was in flight (a receiver
        /// waiting: the kernel hands the message over).
        MqHandoff = 34 => "mq_handoff",
        /// A send that entered with no receive in flight: the message was queued.
        MqQueued = 35 => "mq_queued",
        /// A message sent, by priority (POSIX msg_prio; SysV mtype): `kind` packs the
        /// priority (x16, capped at 4095) and the channel kind, as for BLOCKED.
        MqPriority = 36 => "mq_priority",
        /// load_msg during a send: bytes copied user -> kernel message (function tier, exact).
        MqCopyIn = 37 => "mq_copy_in",
        /// store_msg during a receive: bytes copied kernel message -> user (function tier).
        MqCopyOut = 38 => "mq_copy_out",
        /// signal:signal_generate to a target: keyed by the receiver, `kind` = the signal number, `ino` = the sender's pid; the result (0
        /// delivered, 1 ignored, 2 already pending: coalesced, ...) in the event's value; the
        /// aggregate's bytes count the coalesced ones.
        Signal = 39 => "signal",
        /// write(2) on an eventfd of a target (the notification; channel = the eventfd inode).
        EventfdWrite = 40 => "eventfd_write",
        /// read(2) on an eventfd of a target (the wait for it).
        EventfdRead = 41 => "eventfd_read",
        /// read(2) on a signalfd of a target: signals taken as data (bytes: 128 per signal).
        SignalfdRead = 42 => "signalfd_read",
        /// A poll-family wait by a target (poll, ppoll, select, pselect6, epoll_wait,
        /// epoll_pwait, epoll_pwait2), with its result (> 0: something ready; 0: timed out).
        PollWait = 43 => "poll_wait",
        /// A poll-family wait that returned ready, followed by the same thread's next traced
        /// call being a read of an eventfd or signalfd: the wake-up is counted on that fd.
        PollWake = 44 => "poll_wake",
        /// Pages a pipe write allocated for the pipe's buffer (bytes = 4096 per page): added
        /// up in the write's own aggregate (`aux_probe`), counted at kmem:mm_page_alloc or
        /// from the per-CPU page-allocation counters.
        PipePage = 45 => "pipe_page",
    }
}

ids! {
    /// What an fd (or an address range) is, decided positively by the programs: anything not
    /// recognised is `Other` and is never counted as any channel.
    ChannelKind {
        /// Not a channel ipctrace recognises.
        Other = 0 => "other",
        /// Anonymous pipe (S_IFIFO inode on pipefs).
        AnonPipe = 1 => "anon_pipe",
        /// Named pipe (S_IFIFO with a pipe, on a real filesystem).
        Fifo = 2 => "fifo",
        /// Shared memory: a regular shmem file (POSIX shm in /dev/shm, memfd, SysV by range).
        Shm = 3 => "shm",
        /// AF_UNIX SOCK_STREAM socket.
        UnixStream = 4 => "unix_stream",
        /// AF_UNIX SOCK_DGRAM socket.
        UnixDgram = 5 => "unix_dgram",
        /// AF_UNIX SOCK_SEQPACKET socket.
        UnixSeqpacket = 6 => "unix_seqpacket",
        /// POSIX message queue (mqueue filesystem).
        MsgQueue = 7 => "mqueue",
        /// eventfd (anon inode with eventfd's file operations).
        EventFd = 8 => "eventfd",
        /// signalfd (anon inode with signalfd's file operations).
        SignalFd = 9 => "signalfd",
        /// A TCP connection over loopback between a target and anyone (`ino`: its two ports,
        /// the lower in the high 16 bits, so both ends name it alike). Counted, not analysed.
        TcpLoopback = 10 => "tcp_loopback",
        /// UDP over loopback from a connected socket (`ino` as for TCP).
        UdpLoopback = 11 => "udp_loopback",
        /// A SysV message queue (no fd: `ino` is its msqid).
        SysvMsg = 12 => "sysv_msg",
    }
}

/// `SchedOut` sub-keys (`AggKey.kind`).
pub mod sched {
    pub const VOLUNTARY: u16 = 1;
    pub const INVOLUNTARY: u16 = 2;
}

/// Filesystem magics (`include/uapi/linux/magic.h`) and socket constants the classification uses.
pub const MQUEUE_MAGIC: u64 = 0x1980_0202;
/// `S_IFSOCK`, `S_IFREG` from `include/uapi/linux/stat.h`.
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFREG: u16 = 0o100000;
/// A SysV message queue's channel id: its msqid with this bit (so msqid 0 is a channel).
pub const SYSV_MSG_ID: u64 = 1 << 32;
/// `AF_UNIX` and the socket types that matter here.
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;
pub const SOCK_SEQPACKET: u16 = 5;
/// `MSG_SPLICE_PAGES` (include/linux/socket.h, 6.5+): the pages are spliced, not copied.
/// An AF_UNIX socket's kind by its type (`Other` for a type ipctrace does not trace).
pub const fn unix_kind(ty: u16) -> ChannelKind {
    match ty {
        SOCK_STREAM => ChannelKind::UnixStream,
        SOCK_DGRAM => ChannelKind::UnixDgram,
        SOCK_SEQPACKET => ChannelKind::UnixSeqpacket,
        _ => ChannelKind::Other,
    }
}

pub const MSG_SPLICE_PAGES: u32 = 0x0800_0000;

/// `PIPEFS_MAGIC` and `TMPFS_MAGIC` from `include/uapi/linux/magic.h`.
pub const PIPEFS_MAGIC: u64 = 0x5049_5045;
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `S_IFMT` and `S_IFIFO` from `include/uapi/linux/stat.h`.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFIFO: u16 = 0o010000;

/// Substrings of the kernel frames that copy between user memory and the kernel (names differ
/// by CPU and kernel): the one list the report and the tests use.
pub const COPY_FRAME_PATTERNS: &[&str] = &[
    "copy_page_from_iter",
    "copy_page_to_iter",
    "_copy_from_iter",
    "_copy_to_iter",
    "copy_user",
    "rep_movs",
    "memcpy",
];

/// Number of log2 latency buckets (bucket i holds durations in [2^i, 2^(i+1)) ns).
pub const HIST_BUCKETS: usize = 32;

/// Result classes of failed calls (`AggVal::err`).
pub mod err {
    pub const EAGAIN: usize = 0;
    pub const ETIMEDOUT: usize = 1;
    pub const EINTR: usize = 2;
    pub const OTHER: usize = 3;
    pub const COUNT: usize = 4;
}

/// Aggregation key: one per (process, logical probe, sub-key, channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggKey {
    pub tgid: u32,
    pub probe: u16,
    /// Channel kind (`kind::*`) or a probe-specific sub-key.
    pub kind: u16,
    /// Channel inode, or a probe-specific value (WAKEUP: the waker's tgid).
    pub ino: u64,
}

/// Slots per CPU of the direct-mapped aggregate table (`AGG_CACHE`), at most: the loader
/// sizes it (a power of two) so that all CPUs' copies stay within `AGG_CACHE_BYTES`.
pub const AGG_SLOTS: u32 = 512;
pub const AGG_CACHE_BYTES: u64 = 16 << 20;

/// The slot count of the aggregate table for `cpus` possible CPUs (a power of two, 64 to
/// `AGG_SLOTS`).
pub const fn agg_slots_for(cpus: u64) -> u32 {
    let per_cpu = AGG_CACHE_BYTES / (core::mem::size_of::<AggSlot>() as u64 * if cpus == 0 { 1 } else { cpus });
    let mut n = AGG_SLOTS;
    while n > 64 && n as u64 > per_cpu {
        n /= 2;
    }
    n
}

/// One slot of the direct-mapped aggregate table: a key (tgid 0: free) and its values. A
/// key keeps its slot for the whole session (nothing is moved out, so the loader reading the
/// table meanwhile never sees a count twice or not at all); a key whose slot another holds
/// is counted in the `AGG` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggSlot {
    pub key: AggKey,
    pub val: AggVal,
}

/// The slot of `k` in the direct-mapped aggregate table of `slots` slots (a multiplicative
/// hash of its words).
#[inline(always)]
pub const fn agg_slot_index(k: &AggKey, slots: u32) -> u32 {
    let head = (k.tgid as u64) | ((k.probe as u64) << 32) | ((k.kind as u64) << 48);
    let h = head.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.ino.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    ((h >> 40) as u32) & (slots - 1)
}

/// Aggregated values for one key, per CPU; the loader sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggVal {
    /// Events or completed calls.
    pub calls: u64,
    /// Sum of positive return values (bytes moved, waiters woken) or bytes allocated/mapped.
    pub bytes: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls that returned 0 (EOF on read; woken on FUTEX_WAIT).
    pub zero: u64,
    /// Sum of entry->exit durations in ns.
    pub time_ns: u64,
    /// Failed calls by class (`err::*`).
    pub err: [u64; err::COUNT],
    /// log2 histogram of entry->exit durations.
    pub hist: [u64; HIST_BUCKETS],
    /// What the calls added up while in flight, counted in the same update as the call (one
    /// map update per call instead of two): pipe buffer pages allocated by a pipe write, as
    /// events and bytes (`aux_probe`: `PipePage`); skbs queued by a socket send (`SkbQueued`).
    pub aux_calls: u64,
    pub aux_bytes: u64,
    /// Bytes moved by the calls whose in-flight additions were measured (`PAGES_MEASURED`):
    /// equal to `bytes` when every call was; the loader scales `aux_*` by `bytes / aux_base`.
    pub aux_base: u64,
}

/// In a pipe write's `Pending::_pad` (its page count): its pages are measured. With the
/// per-CPU counters, a channel's first `PAGES_WARMUP` writes on a CPU are measured and then a
/// random one in `PAGES_EVERY` (four kernel reads each); the loader scales the measured pages
/// by bytes.
pub const PAGES_MEASURED: u32 = 1 << 31;

/// In a call's `Pending._pad`: the call was in flight when `attach` began (its start was not
/// seen): counted, not timed.
pub const CALL_UNTIMED: u32 = 1 << 30;
pub const PAGES_WARMUP: u32 = 64;
pub const PAGES_EVERY: u32 = 8;

/// `aux` (what measured calls added up) scaled to all calls: `aux * bytes / base`, where
/// `base` is the bytes the measured calls moved (all of them: `aux` itself; none measured or
/// no bytes: `aux` as it is).
pub fn scale_aux(aux: u64, bytes: u64, base: u64) -> u64 {
    if base == 0 || base >= bytes {
        return aux;
    }
    ((aux as u128 * bytes as u128 + base as u128 / 2) / base as u128) as u64
}

impl Default for AggVal {
    fn default() -> Self {
        Self {
            calls: 0,
            bytes: 0,
            errors: 0,
            zero: 0,
            time_ns: 0,
            err: [0; err::COUNT],
            hist: [0; HIST_BUCKETS],
            aux_calls: 0,
            aux_bytes: 0,
            aux_base: 0,
        }
    }
}

/// The probe under which what calls of `probe` add up while in flight (`AggVal::aux_*`) is
/// reported, if any.
pub fn aux_probe(probe: u16) -> Option<ProbeId> {
    match ProbeId::from_u16(probe)? {
        ProbeId::PipeWrite | ProbeId::SpliceIn | ProbeId::Vmsplice => Some(ProbeId::PipePage),
        ProbeId::SockSend | ProbeId::SockSendfile => Some(ProbeId::SkbQueued),
        _ => None,
    }
}

/// Key of a stack count: where (kernel and user stack ids) a probe fired for a process, and
/// the channel whose call was in flight on that thread (kind `Other`, ino 0: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub tgid: u32,
    pub probe: u16,
    /// The in-flight call's channel kind.
    pub kind: u16,
    /// Stack ids in the STACKS map; negative = not captured.
    pub kstack: i32,
    pub ustack: i32,
    /// The in-flight call's channel inode.
    pub ino: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackVal {
    pub count: u64,
    /// OFFCPU: total time off the CPU in ns.
    pub time_ns: u64,
}

/// A call in flight: a thread's call slot (`Thread::call`) between entry and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    pub ino: u64,
    pub start_ns: u64,
    /// mmap: length requested; mq send: the message's length.
    pub len: u64,
    pub probe: u16,
    pub kind: u16,
    pub _pad: u32,
}

/// What ipctrace keeps per thread of a target, by tid: the call in flight (`call.probe` 0:
/// none) and, from a block until the thread runs again, the block (`off.ts` 0: running). One
/// entry, so that a context switch finds both in one lookup. `tid` tags the entry in the
/// direct-mapped table the programs keep it in (0: a free slot); `_pad` is 1 in a slot some
/// thread spilled from (`ipctrace-ebpf`'s `threads`). The last wake-up of the thread is kept
/// until its block ends (`woke_at` 0: none since), when it is counted: a wake-up may come
/// before the switch that blocks (the waker runs on another CPU while the thread is still on
/// its way out), so it cannot be matched to a block when it happens.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Thread {
    pub call: Pending,
    pub off: OffCpu,
    pub memo: FdMemo,
    pub tid: u32,
    pub _pad: u32,
    /// `attach`: 1 from the entry's making (by a block, a wake-up, a fault) until the thread's
    /// first syscall entry is seen; a syscall exit then may end a call that began before
    /// tracing did.
    pub unentered: u32,
    pub _pad2: u32,
    /// When the last wake-up came (with `--events`; 1 otherwise), 0 for none.
    pub woke_at: u64,
    /// Who made it: the waker's process and thread.
    pub waker_tgid: u32,
    pub waker_tid: u32,
}

/// The last fd a thread's traced call named and what it is (`ipctrace-ebpf`'s fdcache): good
/// while its process's `TARGETS` value is still `t` (a close, dup2, close_range or exec draws
/// a new one) and `open` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FdMemo {
    pub t: u64,
    pub fd: u64,
    pub kind: u16,
    pub open: u16,
    pub _pad: u32,
    pub ino: u64,
    pub sk: u64,
}

/// One slot of the direct-mapped target filter (`TARGET_SLOTS`, slot = tgid mod
/// `TARGET_SLOT_COUNT`): the target holding it (0: free) and its `TARGETS` value. Whether a
/// target whose slot was taken went to the `TARGETS` hash map instead is marked apart, in
/// `TARGET_SPILLED` (a mark is only ever set, so setting it never undoes a value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSlot {
    pub tgid: u32,
    pub _pad: u32,
    pub t: u64,
}

/// Slots of the direct-mapped target filter (a power of two).
pub const TARGET_SLOT_COUNT: u32 = 8192;

/// Slots of the direct-mapped per-thread table (a power of two; slot = tid mod this).
pub const THREAD_SLOTS: u32 = 32768;

/// A thread that left the CPU after blocking.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpu {
    pub ts: u64,
    pub tgid: u32,
    /// Stack id if this block's stack was captured (sampled), else -1.
    pub kstack: i32,
    /// The call in flight when the thread blocked (`probe::*`, 0 = none) and its channel.
    pub probe: u16,
    pub kind: u16,
    pub _pad: u32,
    pub ino: u64,
}

/// A block explained by the call in flight has its stack captured once every this many
/// blocks per CPU (a stack walk at every context switch would dominate tracing a pipe: at 1
/// in 16 the walks were a fifth of the switch program's time); a block no call in flight
/// explains always has its stack captured. A 1 GiB pipe run still keeps ~250 stacks.
pub const BLOCK_STACK_EVERY: u64 = 64;

/// `AggKey.kind` of a BLOCKED aggregate: the in-flight probe and the channel kind, packed.
pub const fn blocked_kind(inflight_probe: u16, channel_kind: u16) -> u16 {
    inflight_probe * 16 + channel_kind
}

/// One traced shm mapping of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub ino: u64,
}

pub const RANGES_PER_PROCESS: usize = 16;

/// A shared anonymous mapping's channel id (mmap MAP_SHARED|MAP_ANONYMOUS seen by the
/// syscall dispatcher: its shmem file is not in the arguments): this bit, the mapping
/// process's pid (bits 32-60) and the page number of its address (bits 0-31). Children that
/// inherit the mapping inherit the range, and so the id.
pub const SHARED_ANON: u64 = 1 << 61;

/// (pid, address) of a shared anonymous mapping's channel id, if it is one.
pub const fn shared_anon(ino: u64) -> Option<(u32, u64)> {
    if ino & SHARED_ANON != 0 && ino & EVENTFD_ID == 0 {
        Some((((ino >> 32) & 0x1fff_ffff) as u32, (ino & 0xffff_ffff) << 12))
    } else {
        None
    }
}

/// The shm mappings of a process (filled at mmap exit, or by the loader for `attach`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    pub r: [Range; RANGES_PER_PROCESS],
}

/// Indexes into the per-CPU `LOSS` array: every event the programs had to drop.
pub mod loss {
    /// The per-thread table (its slot taken and the spill map full) at a call's entry: the call is not counted.
    pub const PENDING_FULL: u32 = 0;
    /// The aggregation map was full: the event is not counted.
    pub const AGG_FULL: u32 = 1;
    /// A kernel read (fd -> file -> inode) failed: the call could not be classified.
    pub const READ_FAILED: u32 = 2;
    /// bpf_get_stackid failed (stack map full or hash collision): the stack is missing.
    pub const STACK_FAILED: u32 = 3;
    /// The stack-count map was full: the stack sample is not counted.
    pub const STACK_COUNT_FULL: u32 = 4;
    /// The per-thread table (its slot taken and the spill map full) when a thread blocked: the block's duration
    /// is not measured.
    pub const OFFCPU_FULL: u32 = 5;
    /// A process already had RANGES_PER_PROCESS shm mappings: a new one is not traced.
    pub const RANGES_FULL: u32 = 6;
    /// `--events`: the ring buffer was full; the event is missing from the stream (the
    /// aggregates still count it).
    pub const RINGBUF_FULL: u32 = 7;
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; COUNT as usize] = [
        "in-flight map full",
        "aggregation map full",
        "kernel read failed",
        "stack capture failed",
        "stack-count map full",
        "off-cpu map full",
        "shm range table full",
        "event ring buffer full",
    ];
}

/// One event of the `--events` stream (every call or event the aggregates count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub tgid: u32,
    /// The thread in whose context the event was recorded (a wake-up: the waker; a blocked
    /// interval: the task that left the CPU as the blocked one came back).
    pub tid: u32,
    pub probe: u16,
    pub kind: u16,
    /// The thread the event is about when it is not `tid`: the woken thread of a wake-up,
    /// the blocked thread of a blocked interval; else 0.
    pub other: u32,
    pub ino: u64,
    /// Return value (calls) or bytes (events).
    pub value: i64,
    pub dur_ns: u64,
}

/// log2 bucket of a duration in ns, clamped to the histogram.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let b = 63 - v.leading_zeros() as usize;
    if b >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { b }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for FileOps {}
    unsafe impl aya::Pod for FdPassKey {}
    unsafe impl aya::Pod for AggKey {}
    unsafe impl aya::Pod for AggVal {}
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for StackVal {}
    unsafe impl aya::Pod for Pending {}
    unsafe impl aya::Pod for OffCpu {}
    unsafe impl aya::Pod for TargetSlot {}
    unsafe impl aya::Pod for AggSlot {}
    unsafe impl aya::Pod for Thread {}
    unsafe impl aya::Pod for Range {}
    unsafe impl aya::Pod for Ranges {}
    unsafe impl aya::Pod for Event {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn ids_decode_in_one_place() {
        for p in ProbeId::ALL {
            assert_eq!(ProbeId::from_u16(*p as u16), Some(*p));
        }
        for k in ChannelKind::ALL {
            assert_eq!(ChannelKind::from_u16(*k as u16), Some(*k));
            assert!((*k as u16) < 16, "blocked_kind packs the kind in 4 bits");
        }
        assert_eq!(ProbeId::from_u16(0), None);
        assert_eq!(ProbeId::from_u16(999), None);
        assert_eq!(ProbeId::name_of(1), Some("pipe_write"));
    }

    #[test]
    fn keys_have_no_padding_holes() {
        assert_eq!(core::mem::size_of::<AggKey>(), 16);
        assert_eq!(core::mem::size_of::<StackKey>(), 24);
        assert_eq!(core::mem::size_of::<Pending>(), 32);
    }
}
