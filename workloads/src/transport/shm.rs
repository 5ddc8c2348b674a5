//! The shared-memory transports: a POSIX shm single-producer single-consumer ring (shm_open +
//! ftruncate + mmap MAP_SHARED, MADV_NOHUGEPAGE so faults stay per page), synchronized either
//! by FUTEX_WAIT / FUTEX_WAKE on two sequence words (`shm-futex`) or by two process-shared
//! POSIX semaphores (`shm-sem`), or by two eventfds the launcher makes and both sides inherit
//! (`shm-eventfd`: write to notify, poll + read to wait). After set-up no byte crosses the
//! kernel: the producer writes slots, the consumer verifies them in place. The launcher picks
//! the object's name (and makes the eventfds).

use std::{
    ffi::CString,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Channel, ChannelKind, Cleanup, RoleCtx, RoleFds, Spec, nothing_to_prepare};
use crate::{
    cleanup,
    eventfd::{self, EventfdWitness},
    futex::{FutexWitness, Waited},
    pattern::{PatternBuf, first_mismatch},
    peer::Peer,
    role::Role,
    spawn::{Launch, random_u64},
    stream::{RttRecorder, StreamOpts, witness},
    witness::Witness,
};

pub static SHM_FUTEX: Spec =
    Spec { name: "shm-futex", kind: ChannelKind::Shm, setup, prepare: nothing_to_prepare, run: run_futex };

pub static SHM_SEM: Spec =
    Spec { name: "shm-sem", kind: ChannelKind::Shm, setup, prepare: nothing_to_prepare, run: run_sem };

pub static SHM_EVENTFD: Spec = Spec {
    name: "shm-eventfd",
    kind: ChannelKind::Shm,
    setup: setup_eventfd,
    prepare: nothing_to_prepare,
    run: run_eventfd,
};

static SHM_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The object's name: the producer creates it. A random part, so another user cannot guess
/// the name and plant an object under it (the producer creates it with O_EXCL and mode 0600;
/// the consumer checks it before mapping).
fn setup(l: &Launch) -> Result<Channel> {
    let n = SHM_SEQ.fetch_add(1, SeqCst);
    let name = format!("/{}-{}-{n}-{:016x}", l.shm_prefix, std::process::id(), random_u64());
    Ok(Channel { path: Some(name.clone()), cleanup: Some(Cleanup::ShmName(name)), ..Default::default() })
}

/// The name, and two eventfds given to both roles: the consumer waits on the data one (fd
/// 4), the producer on the space one (fd 5).
fn setup_eventfd(l: &Launch) -> Result<Channel> {
    let mut ch = setup(l)?;
    let [data, space] = eventfd::pair()?;
    let fds = || -> Result<RoleFds> { Ok(RoleFds { data: Some(data.try_clone()?), ack: Some(space.try_clone()?) }) };
    ch.fds = [fds()?, fds()?];
    Ok(ch)
}

fn run_eventfd(c: &RoleCtx) -> Result<Witness> {
    run_role(c, SyncKind::Eventfd { data: c.args.data_fd, space: c.args.ack_fd })
}

fn run_futex(c: &RoleCtx) -> Result<Witness> {
    run_role(c, SyncKind::Futex { spin: c.args.ring.spin })
}

fn run_sem(c: &RoleCtx) -> Result<Witness> {
    run_role(c, SyncKind::Sem)
}

fn run_role(c: &RoleCtx, sync: SyncKind) -> Result<Witness> {
    let a = c.args;
    let slots = if a.shape.ping_pong { Some(1) } else { a.ring.slots.map(|s| s as usize) };
    let sa = ShmArgs {
        name: a.path.as_deref().context("--path is required for the shm transports")?,
        transport: a.transport.name(),
        stream: c.stream.clone(),
        geometry: Geometry::new(a.msg_size as usize, a.ring.slot_size.map(|s| s as usize), slots)?,
        sync,
        populate: a.ring.populate,
    };
    match a.role {
        Role::Producer => produce(&sa, c.peer),
        Role::Consumer => consume(&sa, c.peer),
    }
}

const PAGE: usize = 4096;
const HEADER: usize = PAGE;
const MAGIC: u64 = 0x6970_6374_7261_6365;
/// Waits time out this often so a dead peer is noticed.
const WAIT_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the consumer waits for the producer to create the object.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Ring geometry: `slots` slots of `slot_size` payload bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub slot_size: usize,
    pub slots: usize,
}

impl Geometry {
    /// Defaults: one message per slot, about 4 MiB of ring, 2 to 256 slots.
    pub fn new(msg_size: usize, slot_size: Option<usize>, slots: Option<usize>) -> Result<Self> {
        let slot_size = slot_size.unwrap_or(msg_size);
        if slot_size < msg_size {
            bail!("--slot-size ({slot_size}) must be at least --msg-size ({msg_size})");
        }
        let stride = Self::stride_of(slot_size);
        let slots = slots.unwrap_or_else(|| ((4 << 20) / stride).clamp(2, 256));
        if slots < 1 {
            bail!("--slots must be at least 1");
        }
        Ok(Self { slot_size, slots })
    }

    fn stride_of(slot_size: usize) -> usize {
        (8 + slot_size).div_ceil(64) * 64
    }

    pub fn stride(&self) -> usize {
        Self::stride_of(self.slot_size)
    }

    /// Bytes of the shm object: one header page plus the slots, rounded to pages.
    pub fn region_bytes(&self) -> usize {
        HEADER + (self.slots * self.stride()).div_ceil(PAGE) * PAGE
    }
}

/// How the two sides wait for each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// FUTEX_WAIT/FUTEX_WAKE, after spinning up to `spin` times.
    Futex { spin: u32 },
    /// sem_wait/sem_post on process-shared semaphores in the header.
    Sem,
    /// write / poll + read on two eventfds: `data` (the consumer waits there) and `space`
    /// (the producer waits there).
    Eventfd { data: i32, space: i32 },
}

/// Shared header at offset 0 of the object. Counters on their own cache lines.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    slot_size: AtomicU64,
    slots: AtomicU64,
    producer_pid: AtomicU32,
    consumer_pid: AtomicU32,
    _p0: [u8; 32],
    head: AtomicU64,
    _p1: [u8; 56],
    tail: AtomicU64,
    _p2: [u8; 56],
    /// Futex event counts (see `Waiter::wait_until`): the consumer waits on `data_seq`, the
    /// producer on `space_seq`.
    data_seq: AtomicU32,
    _p3: [u8; 60],
    space_seq: AtomicU32,
    _p4: [u8; 60],
    /// Time-bounded runs: the final head + 1, set once the producer has stopped (0 = running).
    final_head: AtomicU64,
    _p5: [u8; 56],
    items: libc::sem_t,
    spaces: libc::sem_t,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// Facts about the shared object, part of the witness.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmInfo {
    pub name: String,
    pub region_bytes: u64,
    pub pages: u64,
    pub slot_size: u64,
    pub slots: u64,
    pub populate: bool,
}

/// Semaphore calls made (user level: glibc does not say when they enter the kernel).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemWitness {
    pub wait_calls: u64,
    pub post_calls: u64,
}

/// A mapping of the object, unmapped on drop.
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl Region {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least one page, page-aligned, and zero-filled at creation.
        unsafe { &*(self.ptr as *const Header) }
    }

    fn slot(&self, g: &Geometry, i: u64) -> *mut u8 {
        let idx = (i % g.slots as u64) as usize;
        // SAFETY: HEADER + idx * stride + stride <= region_bytes.
        unsafe { self.ptr.add(HEADER + idx * g.stride()) }
    }
}

fn map_fd(fd: i32, len: usize, populate: bool) -> Result<Region> {
    let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
    // SAFETY: plain mmap of a shm fd we own.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        bail!("mmap of the shm object failed: {}", std::io::Error::last_os_error());
    }
    // Keep faults per 4 KiB page.
    // SAFETY: advising our own fresh mapping.
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    Ok(Region { ptr: p.cast(), len })
}

/// Producer: create the object (O_EXCL), size it, map it, initialize the header.
fn create(name: &str, g: &Geometry, sync: SyncKind, populate: bool) -> Result<Region> {
    let c = CString::new(name)?;
    cleanup::register_shm(name);
    // SAFETY: shm_open with a valid C string.
    let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600) };
    if fd < 0 {
        bail!("shm_open({name}) failed: {}", std::io::Error::last_os_error());
    }
    let len = g.region_bytes();
    // SAFETY: fd is ours.
    let r = (|| {
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            bail!("ftruncate of {name} failed: {}", std::io::Error::last_os_error());
        }
        map_fd(fd, len, populate)
    })();
    // SAFETY: closing our fd; the mapping keeps the object.
    unsafe { libc::close(fd) };
    let region = r?;
    let h = region.header();
    h.slot_size.store(g.slot_size as u64, SeqCst);
    h.slots.store(g.slots as u64, SeqCst);
    if sync == SyncKind::Sem {
        // SAFETY: process-shared semaphores inside the shared mapping, initialized once.
        unsafe {
            libc::sem_init(&h.items as *const _ as *mut _, 1, 0);
            libc::sem_init(&h.spaces as *const _ as *mut _, 1, g.slots as u32);
        }
    }
    h.producer_pid.store(std::process::id(), SeqCst);
    h.magic.store(MAGIC, SeqCst);
    Ok(region)
}

/// Is the object behind `fd` the one our producer made: ours, private, of the size our
/// geometry gives? `Ok(false)`: not sized yet (the producer is between shm_open and
/// ftruncate); `Err`: someone else's object, which is never mapped.
pub fn check_object(fd: i32, name: &str, expected_len: usize) -> Result<bool> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an open fd into a local.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        bail!("fstat of {name} failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != me {
        bail!("{name} belongs to uid {}, not to this user (uid {me}): refusing to map it", st.st_uid);
    }
    if st.st_mode & 0o077 != 0 {
        bail!("{name} has mode {:o}, open to other users: refusing to map it", st.st_mode & 0o7777);
    }
    if st.st_size == 0 {
        return Ok(false);
    }
    if st.st_size as usize != expected_len {
        bail!("{name} is {} bytes, not the {expected_len} of this ring: refusing to map it", st.st_size);
    }
    Ok(true)
}

/// Consumer: open the object once the producer made it, check it is ours (`check_object`),
/// map it, wait for the header, unlink the name.
fn open(name: &str, expected: &Geometry, peer: &Peer, populate: bool) -> Result<(Region, Geometry)> {
    let c = CString::new(name)?;
    cleanup::register_shm(name);
    let t0 = Instant::now();
    let len = expected.region_bytes();
    // The producer's liveness is read before each look: a producer that created the object,
    // filled the ring and exited between two looks is not a dead peer.
    let fd = loop {
        let gone = peer.check("producer").err();
        // SAFETY: shm_open with a valid C string.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_NOFOLLOW, 0) };
        if fd >= 0 {
            match check_object(fd, name, len) {
                Ok(true) => break fd,
                Ok(false) => {}
                Err(e) => {
                    // SAFETY: closing our fd; the name is not ours to unlink.
                    unsafe { libc::close(fd) };
                    cleanup::unregister_shm(name);
                    return Err(e);
                }
            }
            // SAFETY: closing our fd.
            unsafe { libc::close(fd) };
        }
        if let Some(e) = gone {
            return Err(e);
        }
        if t0.elapsed() > OPEN_TIMEOUT {
            bail!("the producer never created {name}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let r = map_fd(fd, len, populate);
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    let region = r?;
    let h = region.header();
    loop {
        let gone = peer.check("producer").err();
        if h.magic.load(SeqCst) == MAGIC {
            break;
        }
        if let Some(e) = gone {
            return Err(e);
        }
        if t0.elapsed() > OPEN_TIMEOUT {
            bail!("the producer never initialized {name}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    h.consumer_pid.store(std::process::id(), SeqCst);
    // Both sides have it mapped: the name can go.
    // SAFETY: valid C string.
    unsafe { libc::shm_unlink(c.as_ptr()) };
    cleanup::unregister_shm(name);
    let g = Geometry { slot_size: h.slot_size.load(SeqCst) as usize, slots: h.slots.load(SeqCst) as usize };
    if g != *expected {
        bail!(
            "{name} holds a ring of {} x {} bytes, not the {} x {} asked for",
            g.slots,
            g.slot_size,
            expected.slots,
            expected.slot_size
        );
    }
    Ok((region, g))
}

/// Everything a ring side needs.
pub struct ShmArgs<'a> {
    pub name: &'a str,
    pub transport: &'a str,
    pub stream: StreamOpts,
    pub geometry: Geometry,
    pub sync: SyncKind,
    pub populate: bool,
}

struct Waiter<'a> {
    sync: SyncKind,
    fx: FutexWitness,
    sem: SemWitness,
    efd: EventfdWitness,
    peer: &'a Peer,
    peer_name: &'static str,
    /// The header's `data_seq` (which eventfd a word goes with).
    data_seq: &'a AtomicU32,
}

impl<'a> Waiter<'a> {
    fn new(sync: SyncKind, peer: &'a Peer, peer_name: &'static str, data_seq: &'a AtomicU32) -> Self {
        Waiter {
            sync,
            fx: Default::default(),
            sem: Default::default(),
            efd: Default::default(),
            peer,
            peer_name,
            data_seq,
        }
    }

    /// Blocks until `ready()`. `seq` is this side's futex word, an event count: it rises by 2
    /// per notification and its low bit says "a waiter may sleep here" (set by the waiter
    /// with a CAS, cleared by the notifier that wakes it), so a wake is issued only when
    /// someone may sleep and no notification can be lost. `sem` is the semaphore (shm-sem).
    /// shm-eventfd uses the same bit and sleeps in poll on its eventfd instead of the word.
    fn wait_until(&mut self, ready: impl Fn() -> bool, seq: &AtomicU32, sem: &libc::sem_t) -> Result<()> {
        match self.sync {
            SyncKind::Futex { .. } | SyncKind::Eventfd { .. } => loop {
                if ready() {
                    return Ok(());
                }
                let spin = if let SyncKind::Futex { spin } = self.sync { spin } else { 0 };
                for _ in 0..spin {
                    std::hint::spin_loop();
                    if ready() {
                        return Ok(());
                    }
                }
                let v = seq.load(SeqCst);
                if v & 1 == 0 && seq.compare_exchange(v, v | 1, SeqCst, SeqCst).is_err() {
                    continue;
                }
                // Anything published before the bit was set is visible now.
                if ready() {
                    return Ok(());
                }
                // Sleep on the word (futex) or on its eventfd (poll, then read).
                let timed_out = match self.sync {
                    SyncKind::Eventfd { .. } => !self.efd.wait(self.eventfd_of(seq), WAIT_TIMEOUT),
                    _ => self.fx.wait(seq, v | 1, WAIT_TIMEOUT) == Waited::TimedOut,
                };
                if timed_out && let Err(e) = self.peer.check(self.peer_name) {
                    // What the peer published before it exited still counts.
                    if ready() {
                        return Ok(());
                    }
                    return Err(e);
                }
            },
            SyncKind::Sem => loop {
                self.sem.wait_calls += 1;
                let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
                // SAFETY: clock_gettime into a local; sem_timedwait on a semaphore in the live mapping.
                unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
                ts.tv_nsec += WAIT_TIMEOUT.as_nanos() as libc::c_long;
                if ts.tv_nsec >= 1_000_000_000 {
                    ts.tv_sec += 1;
                    ts.tv_nsec -= 1_000_000_000;
                }
                if unsafe { libc::sem_timedwait(sem as *const _ as *mut _, &ts) } == 0 {
                    return Ok(());
                }
                if let Err(e) = self.peer.check(self.peer_name) {
                    // What the peer posted before it exited still counts.
                    self.sem.wait_calls += 1;
                    // SAFETY: a semaphore in the live mapping.
                    if unsafe { libc::sem_trywait(sem as *const _ as *mut _) } == 0 {
                        return Ok(());
                    }
                    return Err(e);
                }
            },
        }
    }

    /// Tells the other side: bump its word and wake it if it may sleep, or post its semaphore.
    fn notify(&mut self, seq: &AtomicU32, sem: &libc::sem_t) {
        match self.sync {
            SyncKind::Futex { .. } | SyncKind::Eventfd { .. } => {
                if seq.fetch_add(2, SeqCst) & 1 != 0 {
                    seq.fetch_and(!1, SeqCst);
                    match self.sync {
                        SyncKind::Eventfd { .. } => {
                            let fd = self.eventfd_of(seq);
                            self.efd.notify(fd);
                        }
                        _ => self.fx.wake(seq),
                    }
                }
            }
            SyncKind::Sem => {
                self.sem.post_calls += 1;
                // SAFETY: a semaphore in the live mapping.
                unsafe { libc::sem_post(sem as *const _ as *mut _) };
            }
        }
    }

    /// The eventfd that goes with a sequence word: the consumer waits for data on `data_seq`.
    fn eventfd_of(&self, seq: &AtomicU32) -> i32 {
        let SyncKind::Eventfd { data, space } = self.sync else { return -1 };
        if std::ptr::eq(seq, self.data_seq) { data } else { space }
    }

    fn into_witness(self, w: &mut Witness) {
        match self.sync {
            SyncKind::Futex { .. } => w.futex = Some(self.fx),
            SyncKind::Sem => w.sem = Some(self.sem),
            SyncKind::Eventfd { .. } => {
                // The process's other polls: zero-timeout checks of the peer's pidfd.
                let mut e = self.efd;
                e.polls += self.peer.polls();
                e.polls_timedout += self.peer.polls();
                w.eventfd = Some(e);
            }
        }
    }
}

fn info(a: &ShmArgs<'_>, g: &Geometry) -> ShmInfo {
    ShmInfo {
        name: a.name.into(),
        region_bytes: g.region_bytes() as u64,
        pages: (g.region_bytes() / PAGE) as u64,
        slot_size: g.slot_size as u64,
        slots: g.slots as u64,
        populate: a.populate,
    }
}

pub fn produce(a: &ShmArgs<'_>, peer: &Peer) -> Result<Witness> {
    let mut w = witness("producer", a.transport);
    let start = Instant::now();
    let o = &a.stream;
    let g = a.geometry;
    let region = create(a.name, &g, a.sync, a.populate).context("setting up the shared ring")?;
    let h = region.header();
    let pat = PatternBuf::new(o.msg_size);
    let mut waiter = Waiter::new(a.sync, peer, "consumer", &h.data_seq);
    let mut rtt = RttRecorder::default();
    let (mut off, mut head) = (0u64, 0u64);
    let space = |head: u64| head - h.tail.load(SeqCst) < g.slots as u64;
    while let Some(len) = o.next_len(off, w.messages) {
        // In ping-pong mode the previous message's acknowledgement already secured the slot.
        if !(o.ping_pong && head > 0) {
            waiter.wait_until(|| space(head), &h.space_seq, &h.spaces)?;
        }
        let slot = region.slot(&g, head);
        let t0 = Instant::now();
        // SAFETY: the slot is ours until `head` is published; len <= slot_size.
        unsafe {
            (slot as *mut u64).write_volatile(len as u64);
            std::ptr::copy_nonoverlapping(pat.window(off, len).as_ptr(), slot.add(8), len);
            if let Some(c) = o.corrupt_at.filter(|c| (off..off + len as u64).contains(c)) {
                *slot.add(8 + (c - off) as usize) ^= 0xff;
            }
        }
        head += 1;
        h.head.store(head, SeqCst);
        waiter.notify(&h.data_seq, &h.items);
        off += len as u64;
        w.messages += 1;
        if o.ping_pong {
            // The consumer's release of the slot is the acknowledgement.
            waiter.wait_until(|| h.tail.load(SeqCst) == head, &h.space_seq, &h.spaces)?;
            rtt.record(t0.elapsed());
        }
    }
    h.final_head.store(head + 1, SeqCst);
    waiter.notify(&h.data_seq, &h.items);
    w.bytes = off;
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    w.shm = Some(info(a, &g));
    w.rtt = rtt.summary();
    waiter.into_witness(&mut w);
    Ok(w)
}

pub fn consume(a: &ShmArgs<'_>, peer: &Peer) -> Result<Witness> {
    let mut w = witness("consumer", a.transport);
    let start = Instant::now();
    let (region, g) = open(a.name, &a.geometry, peer, a.populate).context("attaching to the shared ring")?;
    let h = region.header();
    let pat = PatternBuf::new(g.slot_size);
    let mut waiter = Waiter::new(a.sync, peer, "producer", &h.data_seq);
    let (mut off, mut tail) = (0u64, 0u64);
    loop {
        waiter.wait_until(|| h.head.load(SeqCst) > tail || h.final_head.load(SeqCst) != 0, &h.data_seq, &h.items)?;
        if h.head.load(SeqCst) == tail {
            // The producer has stopped and everything it published is consumed.
            break;
        }
        let slot = region.slot(&g, tail);
        // SAFETY: published slot; the producer does not touch it until `tail` moves past it.
        let len = unsafe { (slot as *const u64).read_volatile() } as usize;
        if len > g.slot_size {
            bail!("corrupt ring: message length {len} exceeds the slot size");
        }
        let data = unsafe { std::slice::from_raw_parts(slot.add(8), len) };
        if w.first_mismatch.is_none() {
            w.first_mismatch = first_mismatch(&pat, off, data);
        }
        off += len as u64;
        tail += 1;
        h.tail.store(tail, SeqCst);
        waiter.notify(&h.space_seq, &h.spaces);
        w.messages += 1;
    }
    w.bytes = off;
    w.verified_bytes = Some(w.first_mismatch.unwrap_or(off));
    w.elapsed_ns = start.elapsed().as_nanos() as u64;
    w.shm = Some(info(a, &g));
    waiter.into_witness(&mut w);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object planted under the name a run would use is refused before it is mapped:
    /// wrong size always; another user's (as root: chowned to nobody) or a group/other
    /// readable one likewise.
    #[test]
    fn planted_objects_are_refused() {
        let name = format!("/ipctrace-test-planted-{}", std::process::id());
        let c = CString::new(name.clone()).unwrap();
        let g = Geometry::new(4096, None, Some(4)).unwrap();
        // SAFETY: shm_open/ftruncate/fchown/fchmod on our own fresh object.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600) };
        assert!(fd >= 0);
        assert!(!check_object(fd, &name, g.region_bytes()).unwrap(), "not yet sized: wait");
        unsafe { libc::ftruncate(fd, 12345) };
        let e = check_object(fd, &name, g.region_bytes()).unwrap_err().to_string();
        assert!(e.contains("12345 bytes") && e.contains("refusing"), "{e}");
        unsafe { libc::ftruncate(fd, g.region_bytes() as libc::off_t) };
        assert!(check_object(fd, &name, g.region_bytes()).unwrap(), "ours, private, right size");
        unsafe { libc::fchmod(fd, 0o644) };
        let e = check_object(fd, &name, g.region_bytes()).unwrap_err().to_string();
        assert!(e.contains("mode 644"), "{e}");
        unsafe { libc::fchmod(fd, 0o600) };
        if unsafe { libc::geteuid() } == 0 {
            unsafe { libc::fchown(fd, 65534, 65534) };
            let e = check_object(fd, &name, g.region_bytes()).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            // The consumer's open refuses it without mapping it (the maps stay as they were).
            let maps = || std::fs::read_to_string("/proc/self/maps").unwrap().matches(&name[1..]).count();
            let e = open(&name, &g, &Peer::new(None).unwrap(), false).err().expect("refused").to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            assert_eq!(maps(), 0, "never mapped");
        }
        unsafe {
            libc::close(fd);
            libc::shm_unlink(c.as_ptr());
        }
    }
}
