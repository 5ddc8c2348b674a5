//! Kernel struct field offsets from `/sys/kernel/btf/vmlinux`, handed to the eBPF programs as
//! global data (aya-built Rust eBPF has no CO-RE relocations). Looks up; never guesses.

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use ipctrace_common::Offsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    let types = btf.resolve_types_by_name(name).with_context(|| format!("struct {name} not in kernel BTF"))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("struct {name} not in kernel BTF"))
}

/// Byte offset of `field` in `s`, looking through anonymous struct/union members.
fn member_offset(btf: &Btf, s: &btf_rs::Struct, field: &str) -> Result<Option<u32>> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            if m.bitfield_size().is_some_and(|b| b != 0) {
                bail!("{field} is a bitfield");
            }
            return Ok(Some(m.bit_offset() / 8));
        }
        if name.is_empty() {
            let mut t = btf.resolve_chained_type(m)?;
            // Skip qualifiers to the anonymous aggregate.
            while let Type::Const(_) | Type::Volatile(_) | Type::Typedef(_) = t {
                t = btf.resolve_chained_type(t.as_btf_type().unwrap())?;
            }
            if let Type::Struct(inner) | Type::Union(inner) = t
                && let Some(off) = member_offset(btf, &inner, field)?
            {
                return Ok(Some(m.bit_offset() / 8 + off));
            }
        }
    }
    Ok(None)
}

fn offset(btf: &Btf, st: &str, field: &str) -> Result<u32> {
    let s = find_struct(btf, st)?;
    member_offset(btf, &s, field)?.ok_or_else(|| anyhow!("field {st}.{field} not in kernel BTF"))
}

/// Offset of `struct sock.__sk_common.FIELD` (UNKNOWN if absent).
fn common(btf: &Btf, field: &str) -> u32 {
    offset(btf, "sock", "__sk_common").and_then(|c| Ok(c + offset(btf, "sock_common", field)?)).unwrap_or(u32::MAX)
}

/// Reads every offset the programs need.
pub fn offsets() -> Result<Offsets> {
    let btf = Btf::from_file(VMLINUX)
        .with_context(|| format!("reading {VMLINUX} (ipctrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)"))?;
    let percpu = percpu_vars(&btf, &["runqueues", "vm_event_states"]);
    let pgalloc = pgalloc_events(&btf);
    Ok(Offsets {
        task_files: offset(&btf, "task_struct", "files")?,
        files_fdt: offset(&btf, "files_struct", "fdt")?,
        fdt_max_fds: offset(&btf, "fdtable", "max_fds")?,
        fdt_fd: offset(&btf, "fdtable", "fd")?,
        file_inode: offset(&btf, "file", "f_inode")?,
        inode_mode: offset(&btf, "inode", "i_mode")?,
        inode_ino: offset(&btf, "inode", "i_ino")?,
        inode_pipe: offset(&btf, "inode", "i_pipe")?,
        inode_sb: offset(&btf, "inode", "i_sb")?,
        sb_magic: offset(&btf, "super_block", "s_magic")?,
        task_exit_code: offset(&btf, "task_struct", "exit_code").unwrap_or(u32::MAX),
        // Only the function tier needs these; a kernel without them just loses that tier.
        kiocb_filp: offset(&btf, "kiocb", "ki_filp").unwrap_or(u32::MAX),
        vma_file: offset(&btf, "vm_area_struct", "vm_file").unwrap_or(u32::MAX),
        vma_start: offset(&btf, "vm_area_struct", "vm_start").unwrap_or(u32::MAX),
        vma_end: offset(&btf, "vm_area_struct", "vm_end").unwrap_or(u32::MAX),
        // Sockets, eventfd and signalfd: a kernel without them just never reports those kinds.
        file_f_op: offset(&btf, "file", "f_op").unwrap_or(u32::MAX),
        fops_read_iter: offset(&btf, "file_operations", "read_iter").unwrap_or(u32::MAX),
        file_private_data: offset(&btf, "file", "private_data").unwrap_or(u32::MAX),
        socket_type: offset(&btf, "socket", "type").unwrap_or(u32::MAX),
        socket_sk: offset(&btf, "socket", "sk").unwrap_or(u32::MAX),
        sock_family: common(&btf, "skc_family"),
        sock_type: offset(&btf, "sock", "sk_type").unwrap_or(u32::MAX),
        sock_socket: offset(&btf, "sock", "sk_socket").unwrap_or(u32::MAX),
        unix_peer: offset(&btf, "unix_sock", "peer").unwrap_or(u32::MAX),
        socket_alloc_inode: offset(&btf, "socket_alloc", "vfs_inode").unwrap_or(u32::MAX),
        msghdr_flags: offset(&btf, "msghdr", "msg_flags").unwrap_or(u32::MAX),
        eventfd_id: offset(&btf, "eventfd_ctx", "id").unwrap_or(u32::MAX),
        regs_args: {
            let mut a = [u32::MAX; 6];
            for (i, f) in ["di", "si", "dx", "r10", "r8", "r9"].into_iter().enumerate() {
                a[i] = offset(&btf, "pt_regs", f)?;
            }
            a
        },
        regs_orig_ax: offset(&btf, "pt_regs", "orig_ax")?,
        task_pid: offset(&btf, "task_struct", "pid")?,
        task_tgid: offset(&btf, "task_struct", "tgid")?,
        task_state: offset(&btf, "task_struct", "__state").or_else(|_| offset(&btf, "task_struct", "state"))?,
        task_ti_status: offset(&btf, "task_struct", "thread_info")
            .and_then(|t| Ok(t + offset(&btf, "thread_info", "status")?))
            .unwrap_or(u32::MAX),
        switch_state_arg: u32::from(raw_tp_args(&btf, "sched_switch") == Some(4)),
        sock_daddr: common(&btf, "skc_daddr"),
        sock_dport: common(&btf, "skc_dport"),
        sock_num: common(&btf, "skc_num"),
        sock_v6_daddr: common(&btf, "skc_v6_daddr"),
        task_se_cfs_rq: offset(&btf, "task_struct", "se")
            .and_then(|se| Ok(se + offset(&btf, "sched_entity", "cfs_rq")?))
            .unwrap_or(u32::MAX),
        cfs_rq_rq: offset(&btf, "cfs_rq", "rq").unwrap_or(u32::MAX),
        percpu_runqueues: percpu.get("runqueues").copied().unwrap_or(u32::MAX),
        percpu_vm_events: percpu.get("vm_event_states").copied().unwrap_or(u32::MAX),
        pgalloc_first: pgalloc.map_or(u32::MAX, |(f, _)| f),
        pgalloc_count: pgalloc.map_or(0, |(_, n)| n),
    })
}

/// Offsets in the per-CPU section (DATASEC `.data..percpu`) of the variables named.
fn percpu_vars(btf: &Btf, names: &[&str]) -> std::collections::HashMap<String, u32> {
    let mut out = std::collections::HashMap::new();
    let Ok(types) = btf.resolve_types_by_name(".data..percpu") else { return out };
    for t in types {
        let Type::Datasec(ds) = t else { continue };
        for v in &ds.variables {
            let Ok(var) = btf.resolve_chained_type(v) else { continue };
            let Some(b) = var.as_btf_type() else { continue };
            if let Ok(name) = btf.resolve_name(b)
                && names.contains(&name.as_str())
            {
                out.insert(name, v.offset());
            }
        }
    }
    out
}

/// The first `PGALLOC_*` event of `enum vm_event_item` and how many there are, if they are
/// consecutive (one per zone: `FOR_ALL_ZONES(PGALLOC)`).
fn pgalloc_events(btf: &Btf) -> Option<(u32, u32)> {
    let types = btf.resolve_types_by_name("vm_event_item").ok()?;
    let e = types.into_iter().find_map(|t| match t {
        Type::Enum(e) => Some(e),
        _ => None,
    })?;
    let mut vals: Vec<u32> = e
        .members
        .iter()
        .filter(|m| btf.resolve_name(*m).is_ok_and(|n| n.starts_with("PGALLOC_")))
        .map(|m| m.val())
        .collect();
    vals.sort_unstable();
    let (first, last) = (*vals.first()?, *vals.last()?);
    (last - first + 1 == vals.len() as u32).then_some((first, vals.len() as u32))
}

/// How many arguments raw tracepoint `name` passes (its `btf_trace_NAME` typedef is a pointer
/// to a function whose first parameter is the program context); None if BTF does not say.
fn raw_tp_args(btf: &Btf, name: &str) -> Option<usize> {
    let mut t = btf.resolve_types_by_name(&format!("btf_trace_{name}")).ok()?.into_iter().next()?;
    for _ in 0..4 {
        match t {
            Type::FuncProto(f) => return Some(f.parameters.len().saturating_sub(1)),
            Type::Typedef(_) | Type::Ptr(_) | Type::Const(_) => {
                t = btf.resolve_chained_type(t.as_btf_type()?).ok()?;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs only a readable vmlinux BTF, not root.
    #[test]
    fn finds_offsets_in_running_kernel() {
        if !std::path::Path::new(VMLINUX).exists() {
            eprintln!("SKIPPED: no {VMLINUX}");
            return;
        }
        let o = offsets().expect("offsets");
        // i_mode is the first field of struct inode on every kernel since 2.6.
        assert_eq!(o.inode_mode, 0);
        assert!(o.inode_pipe > o.inode_mode && o.inode_pipe < 4096);
        assert!(o.task_files > 0);
        for (name, v) in [
            ("file.f_op", o.file_f_op),
            ("file_operations.read_iter", o.fops_read_iter),
            ("file.private_data", o.file_private_data),
            ("socket.type", o.socket_type),
            ("socket.sk", o.socket_sk),
            ("sock.__sk_common.skc_family", o.sock_family),
            ("sock.sk_type", o.sock_type),
            ("sock.sk_socket", o.sock_socket),
            ("unix_sock.peer", o.unix_peer),
            ("socket_alloc.vfs_inode", o.socket_alloc_inode),
            ("msghdr.msg_flags", o.msghdr_flags),
            ("eventfd_ctx.id", o.eventfd_id),
            ("task_struct.__state", o.task_state),
            ("sock_common.skc_daddr", o.sock_daddr),
            ("sock_common.skc_num", o.sock_num),
            ("sock_common.skc_v6_daddr", o.sock_v6_daddr),
        ] {
            assert!(v < 4096, "{name} found in BTF: {v}");
        }
        // sys_enter(regs, id); sched_switch(preempt, prev, next[, prev_state]).
        let btf = Btf::from_file(VMLINUX).unwrap();
        assert_eq!(raw_tp_args(&btf, "sys_enter"), Some(2));
        assert!(matches!(raw_tp_args(&btf, "sched_switch"), Some(3 | 4)));
        // Every kernel ipctrace is built and tested on has per-CPU variables in its BTF.
        assert!(o.page_counters(), "per-CPU page-allocation counters found: {o:?}");
    }
}
