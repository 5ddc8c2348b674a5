//! ipctrace's kernel-side programs. Every program first does the cheapest check that drops
//! what it does not want (a syscall number, a call in flight, a target process), then
//! classifies what it sees (`classify`: an fd's kind, positively) and aggregates into per-CPU
//! maps; stacks go to `STACKS` and are counted in `STACK_COUNTS`. Every dropped event is
//! counted in `LOSS`. The syscall tier of every transport is one pair of raw tracepoints
//! (`syscalls`); one module per transport holds what it does on entry and exit and its other
//! tiers (`pipe`, `shm`, `futex`, `sock`), plus the shared subjects (`sched`, `pages`,
//! `sample`); this file holds maps and helpers.
#![no_std]
#![no_main]

mod classify;
mod fdcache;
mod fdpass;
mod futex;
mod inet;
mod kmem;
mod mq;
mod notify;
mod pages;
mod pipe;
mod sample;
mod sched;
mod shm;
mod sock;
mod syscalls;
mod targets;
mod threads;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::tracing::StackIdContext,
};
use ipctrace_common::{
    AGG_SLOTS, AggKey, AggSlot, AggVal, Event, FileOps, HIST_BUCKETS, Offsets, Pending, ProbeId, Ranges, SYSCALL_SLOTS,
    StackKey, StackVal, agg_slot_index, log2_bucket, loss,
};

/// Filled by the loader from BTF before loading (global data). Mutable, so that LLVM neither
/// folds its initial value into the code nor copies the whole struct to read one field (a
/// volatile read of it did: 160 bytes of stack at every use).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata.offsets")]
static mut OFFSETS: Offsets = Offsets::UNKNOWN;

/// What the syscall dispatcher does per syscall number (`ipctrace_common::sysop`/`sysrow`);
/// filled by the loader as the probe table is walked. 0: the syscall is not looked at.
#[map]
static SYSCALLS: Array<u32> = Array::with_max_entries(SYSCALL_SLOTS, 0);

/// Filled by the loader from /proc/kallsyms (eventfd and signalfd file operations).
#[unsafe(no_mangle)]
static FILE_OPS: FileOps = FileOps { eventfd: 0, signalfd: 0 };

/// Process names of targets (set at fork and exec), for reports after they exited.
#[map]
static COMMS: HashMap<u32, [u8; 16]> = HashMap::with_max_entries(4096, 0);

/// Channels ipctrace itself uses with its targets (the workloads' control sockets, trace's
/// start gate), by inode: never counted.
#[map]
static IGNORED: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// The parent of every target forked while tracing (child tgid -> parent tgid).
#[map]
static PARENTS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Exit codes of targets (tgid -> task exit_code, wait(2) encoding).
#[map]
static EXITS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Aggregates per (tgid, probe, sub-key, channel), per CPU: first in a direct-mapped table
/// (slot `agg_slot_index(key)`, an inlined array lookup where a hash lookup costs ~90 ns on a
/// VM with return-thunk mitigations, and a traced pipe updates ~7 aggregates per message),
/// then, for a key whose slot another holds, in the `AGG` hash map. The loader sums both.
#[map]
static AGG_CACHE: PerCpuArray<AggSlot> = PerCpuArray::with_max_entries(AGG_SLOTS, 0);

/// `AGG_CACHE`'s slot count as the loader sized it (`ipctrace_common::agg_slots_for`).
#[unsafe(no_mangle)]
static AGG_CACHE_SLOTS: u32 = AGG_SLOTS;

#[map]
static AGG: PerCpuHashMap<AggKey, AggVal> = PerCpuHashMap::with_max_entries(8192, 0);

/// One all-zero `AggVal`, never written: what an aggregate is inserted from.
#[map]
static AGG_ZERO: Array<AggVal> = Array::with_max_entries(1, 0);

/// Kernel and user stacks.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// How often (and for off-CPU stacks how long) each stack was seen, per process and probe.
#[map]
static STACK_COUNTS: PerCpuHashMap<StackKey, StackVal> = PerCpuHashMap::with_max_entries(16384, 0);

/// Per-CPU tick for sampling block stacks (`BLOCK_STACK_EVERY`).
#[map]
static BLOCK_TICK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// shm mappings per process.
#[map]
static SHM_RANGES: HashMap<u32, Ranges> = HashMap::with_max_entries(4096, 0);

/// One all-zero `Ranges`, never written: what a process's first range is inserted into (a
/// `Ranges` is too large for the stack).
#[map]
static RANGES_ZERO: Array<Ranges> = Array::with_max_entries(1, 0);

/// `--events`: the per-event stream (resized by the loader; unused unless EVENTS_ON).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Set to 1 by the loader for `--events`.
#[unsafe(no_mangle)]
static EVENTS_ON: u8 = 0;

/// Set to 1 by the loader for the benchmark's floor: every program returns at once, so the
/// hooks' own cost can be measured apart from what the programs do.
#[unsafe(no_mangle)]
static FLOOR: u8 = 0;

/// `attach`: 1, so that a call a target thread was already in when tracing began is counted
/// at its exit (`syscalls::late_exit`); 0 for `run` and `trace`, whose targets start traced.
#[unsafe(no_mangle)]
static LATE_CALLS: u8 = 0;

#[inline(always)]
fn late_calls() -> bool {
    unsafe { core::ptr::read_volatile(&LATE_CALLS) != 0 }
}

/// Set to 0 by the loader for `--without block-stacks`.
#[unsafe(no_mangle)]
static BLOCK_STACKS: u8 = 1;

#[inline(always)]
fn events_on() -> bool {
    unsafe { core::ptr::read_volatile(&EVENTS_ON) != 0 }
}

#[inline(always)]
fn block_stacks() -> bool {
    unsafe { core::ptr::read_volatile(&BLOCK_STACKS) != 0 }
}

#[inline(always)]
fn floor() -> bool {
    unsafe { core::ptr::read_volatile(&FLOOR) != 0 }
}

/// Dropped-event counters, indexed by `ipctrace_common::loss::*`.
#[map]
static LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

/// `-EFAULT`: no stack to capture (e.g. a sample taken in user mode has no kernel stack).
const EFAULT: i32 = -14;

#[inline(always)]
fn count_loss(idx: u32) {
    if let Some(p) = LOSS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

use targets::is_target;

#[inline(always)]
fn offsets() -> &'static Offsets {
    // SAFETY: written only by the loader, before any program runs.
    unsafe { &*(&raw const OFFSETS) }
}

#[inline(always)]
fn file_ops() -> FileOps {
    unsafe { core::ptr::read_volatile(&FILE_OPS) }
}

#[inline(always)]
unsafe fn read_at<T>(base: *const u8, off: u32) -> Result<T, i32> {
    if off == u32::MAX || base.is_null() {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T) }
}

/// A field of a `struct task_struct` (null task or unknown offset: Err).
#[inline(always)]
fn task_field<T>(task: *const u8, off: u32) -> Result<T, i32> {
    unsafe { read_at(task, off) }
}

/// The traced shm mapping of `tgid` that holds `addr`, as its object's inode.
#[inline(always)]
fn shm_ino_of(tgid: u32, addr: u64) -> Option<u64> {
    let r = unsafe { SHM_RANGES.get(&tgid) }?;
    for x in r.r.iter() {
        if x.start != 0 && addr >= x.start && addr < x.end {
            return Some(x.ino);
        }
    }
    None
}

/// Are two aggregate keys the same? (Compared as two words: tgid|probe|kind, ino.)
#[inline(always)]
fn same_key(a: &AggKey, b: &AggKey) -> bool {
    let head = |k: &AggKey| (k.tgid as u64) | ((k.probe as u64) << 32) | ((k.kind as u64) << 48);
    a.ino == b.ino && head(a) == head(b)
}

/// The calls this CPU has counted under `key` so far (0: none), looked up without making an
/// entry (so a full table is not counted as a loss twice). A free slot means the key has no
/// entry anywhere: a key goes to `AGG` only when another holds its slot, and slots never free.
#[inline(always)]
pub(crate) fn agg_calls_here(key: &AggKey) -> u64 {
    let slots = unsafe { core::ptr::read_volatile(&AGG_CACHE_SLOTS) };
    if let Some(s) = AGG_CACHE.get_ptr_mut(agg_slot_index(key, slots)) {
        let k = unsafe { &(*s).key };
        if same_key(k, key) {
            return unsafe { (*s).val.calls };
        }
        if k.tgid == 0 {
            return 0;
        }
    }
    AGG.get_ptr_mut(key).map_or(0, |v| unsafe { (*v).calls })
}

#[inline(always)]
fn agg_slot(key: &AggKey) -> Option<&'static mut AggVal> {
    let slots = unsafe { core::ptr::read_volatile(&AGG_CACHE_SLOTS) };
    if let Some(s) = AGG_CACHE.get_ptr_mut(agg_slot_index(key, slots)) {
        // Compared as two words (tgid|probe|kind, ino). Per-CPU: only a program interrupting
        // this one on the same CPU (a wake-up from an interrupt) could write the slot
        // meanwhile, and only by claiming the same free slot at the same moment (the tag,
        // tgid, is written last).
        let k = unsafe { &mut (*s).key };
        if same_key(k, key) {
            return Some(unsafe { &mut (*s).val });
        }
        if k.tgid == 0 {
            k.ino = key.ino;
            k.probe = key.probe;
            k.kind = key.kind;
            k.tgid = key.tgid;
            return Some(unsafe { &mut (*s).val });
        }
    }
    if let Some(v) = AGG.get_ptr_mut(key) {
        return Some(unsafe { &mut *v });
    }
    // Inserted from a map's zero value: an `AggVal` on the stack would take 200 of its 512 bytes.
    let Some(zero) = AGG_ZERO.get(0) else { return None };
    if AGG.insert(key, zero, 0).is_err() {
        count_loss(loss::AGG_FULL);
        return None;
    }
    match AGG.get_ptr_mut(key) {
        Some(v) => Some(unsafe { &mut *v }),
        None => {
            count_loss(loss::AGG_FULL);
            None
        }
    }
}

/// `--events`: one record per counted call or event; a full ring buffer is counted as loss.
#[inline(always)]
fn emit(tgid: u32, probe: u16, k: u16, ino: u64, value: i64, dur_ns: u64, other: u32) {
    // Checked before the clock is read: a helper call is never optimised away.
    if events_on() {
        emit_at(now(), tgid, probe, k, ino, value, dur_ns, other)
    }
}

/// `emit` with its time given (a call's end: its start plus its duration, so the interval in
/// the stream is the one measured).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_at(ts_ns: u64, tgid: u32, probe: u16, k: u16, ino: u64, value: i64, dur_ns: u64, other: u32) {
    if !events_on() {
        return;
    }
    emit_as(ts_ns, tgid, bpf_get_current_pid_tgid() as u32, probe, k, ino, value, dur_ns, other)
}

/// `emit_at` of an event about thread `tid` (not necessarily the current one).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_as(ts_ns: u64, tgid: u32, tid: u32, probe: u16, k: u16, ino: u64, value: i64, dur_ns: u64, other: u32) {
    if !events_on() {
        return;
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut e) => {
            e.write(Event { ts_ns, tgid, tid, probe, kind: k, other, ino, value, dur_ns });
            e.submit(0);
        }
        None => count_loss(loss::RINGBUF_FULL),
    }
}

/// Adds `calls` events and `bytes` at once (batched counts; each event was emitted when it
/// happened).
#[inline(always)]
fn agg_add(tgid: u32, probe: u16, k: u16, ino: u64, calls: u64, bytes: u64) {
    if let Some(v) = agg_slot(&AggKey { tgid, probe, kind: k, ino }) {
        v.calls += calls;
        v.bytes += bytes;
    }
}

/// Counts one event (no return value, no duration).
#[inline(always)]
fn agg_event(tgid: u32, probe: u16, k: u16, ino: u64, bytes: u64) {
    emit(tgid, probe, k, ino, bytes as i64, 0, 0);
    if let Some(v) = agg_slot(&AggKey { tgid, probe, kind: k, ino }) {
        v.calls += 1;
        v.bytes += bytes;
    }
}

/// Counts one completed call with its return value and duration.
#[inline(always)]
fn agg_call(tgid: u32, p: &Pending, ret: i64, dt: u64) {
    // A blocked interval is closed by the scheduler in another task's context: `_pad` holds
    // the blocked thread.
    let other = if p.probe == ProbeId::Blocked as u16 { p._pad } else { 0 };
    emit_at(p.start_ns + dt, tgid, p.probe, p.kind, p.ino, ret, dt, other);
    // What the call added up while in flight (`ipctrace_common::aux_probe`), in this update.
    // A pipe write's pages count only if they were measured (`pages::start`); the bytes of
    // the measured writes are what the loader scales by.
    // An unmeasured write adds nothing (whatever a stale claim of its CPU's slot gave it).
    let measured = p._pad & ipctrace_common::PAGES_MEASURED != 0;
    let untimed = p._pad & ipctrace_common::CALL_UNTIMED != 0;
    let pad = p._pad & !(ipctrace_common::CALL_UNTIMED | ipctrace_common::PAGES_MEASURED);
    let (aux_calls, aux_bytes, aux_base) = if pipe::fills_pipe(p.probe) {
        if measured {
            let base = if ret > 0 { ret as u64 } else { 0 };
            (pad as u64, p.len, base)
        } else {
            (0, 0, 0)
        }
    } else if sock::queues(p.probe) {
        (pad as u64, 0, 0)
    } else {
        (0, 0, 0)
    };
    let Some(v) = agg_slot(&AggKey { tgid, probe: p.probe, kind: p.kind, ino: p.ino }) else { return };
    v.calls += 1;
    if ret > 0 {
        v.bytes += ret as u64;
    } else if ret == 0 {
        v.zero += 1;
    } else {
        v.errors += 1;
        // A signal shows at the syscall exit as one of the ERESTART* codes (512-516); its
        // handler then makes it EINTR or a restart. All are "interrupted" here.
        let class = match ret {
            -11 => ipctrace_common::err::EAGAIN,
            -110 => ipctrace_common::err::ETIMEDOUT,
            -4 | -516..=-512 => ipctrace_common::err::EINTR,
            _ => ipctrace_common::err::OTHER,
        };
        if class < v.err.len() {
            v.err[class] += 1;
        }
    }
    if !untimed {
        v.time_ns += dt;
        let b = log2_bucket(dt);
        if b < HIST_BUCKETS {
            v.hist[b] += 1;
        }
    }
    v.aux_calls += aux_calls;
    v.aux_bytes += aux_bytes;
    v.aux_base += aux_base;
}

/// The current thread's id (its tid).
#[inline(always)]
fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Records a call's start for the current thread.
#[inline(always)]
fn pending_start(p: Pending) {
    let (tgid, tid) = current();
    pending_start_of(tgid, tid, p)
}

/// Records a call's start for the current thread, `tid` of `tgid`.
#[inline(always)]
fn pending_start_of(tgid: u32, tid: u32, p: Pending) {
    let Some(t) = threads::get_or_make(tid, loss::PENDING_FULL) else { return };
    unsafe { (*t).call = p };
    if pipe::fills_pipe(p.probe) && pages::start(tgid, tid, &p) {
        unsafe { (*t).call._pad = ipctrace_common::PAGES_MEASURED };
    }
}

/// The current thread's call slot (in flight or idle), if it has one.
#[inline(always)]
fn call_slot() -> Option<*mut Pending> {
    let t = threads::get(tid())?;
    Some(unsafe { &raw mut (*t).call })
}

/// The current thread's call in flight, if any.
#[inline(always)]
fn inflight() -> Option<*mut Pending> {
    let p = call_slot()?;
    (unsafe { (*p).probe } != 0).then_some(p)
}

/// Ends the current thread's call with its return value: counts it, and what it added up
/// while in flight (pipe buffer pages, socket buffers). Every tier's exit ends here.
#[inline(always)]
fn call_exit(ret: i64) -> u32 {
    if let Some((tgid, tid, p)) = pending_take() {
        finish(tgid, tid, p, ret);
    }
    0
}

/// Ends call `p` of thread `tid` (the current one) of `tgid`.
#[inline(always)]
fn finish(tgid: u32, tid: u32, mut p: Pending, ret: i64) {
    if pipe::fills_pipe(p.probe) {
        pages::settle(&mut p, tid);
    }
    let ret = mq::exit(tgid, &p, ret);
    agg_call(tgid, &p, ret, now().saturating_sub(p.start_ns));
    sock::flush(tgid, &p);
    notify::exit(&p, ret);
}

/// Starts a call on a channel for the current thread.
#[inline(always)]
fn start_call(ino: u64, probe: ProbeId, kind: ipctrace_common::ChannelKind) {
    pending_start(Pending { ino, start_ns: now(), len: 0, probe: probe as u16, kind: kind as u16, _pad: 0 });
}

/// `start_call` for the current thread, `tid` of `tgid` (one helper call fewer).
#[inline(always)]
fn start_call_of(tgid: u32, tid: u32, ino: u64, probe: ProbeId, kind: ipctrace_common::ChannelKind) {
    let p = Pending { ino, start_ns: now(), len: 0, probe: probe as u16, kind: kind as u16, _pad: 0 };
    pending_start_of(tgid, tid, p);
}

/// Ends the current thread's call: (tgid, tid, pending) if one was started.
#[inline(always)]
fn pending_take() -> Option<(u32, u32, Pending)> {
    let id = bpf_get_current_pid_tgid();
    let t = threads::get(id as u32)?;
    let p = unsafe { (*t).call };
    if p.probe == 0 {
        return None;
    }
    unsafe { (*t).call.probe = 0 };
    Some(((id >> 32) as u32, id as u32, p))
}

#[inline(always)]
fn now() -> u64 {
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// Stack id, or -1 when there is none; failures other than "no stack" are loss.
#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64) -> i32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(e) => {
            if e != EFAULT {
                count_loss(loss::STACK_FAILED);
            }
            -1
        }
    }
}

#[inline(always)]
fn stack_add(key: &StackKey, time_ns: u64) {
    if let Some(v) = STACK_COUNTS.get_ptr_mut(key) {
        unsafe {
            (*v).count += 1;
            (*v).time_ns += time_ns;
        }
        return;
    }
    if STACK_COUNTS.insert(key, &StackVal { count: 1, time_ns }, 0).is_err() {
        count_loss(loss::STACK_COUNT_FULL);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
