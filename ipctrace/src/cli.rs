//! The command line (clap derive). Help texts are the user's documentation: keep them true.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use workloads::{
    role::{RingArgs, RoleArgs},
    size::parse_size,
    transport::Transport,
};

use crate::{probes::Tier, render::Format};

#[derive(Parser, Debug)]
#[command(
    name = "ipctrace",
    version,
    about = "Shows, from real kernel events, the path data takes through the kernel between two processes",
    long_about = "ipctrace runs built-in producer/consumer workloads (or attaches to processes you already \
have), traces them with eBPF and prints the kernel data path of each transport, reconstructed from \
this run's events and stacks, beside the processes' own counters.\n\n\
Needs root, or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_SYSLOG.\n\
Exit codes: 0 report printed (also partial: Ctrl-C, --duration), 1 runtime failure, 2 usage error, \
3 target problem (a workload failed, unknown PID, kernel thread, no IPC observed), 4 missing privileges."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run built-in producer/consumer workloads under tracing and report their kernel data path.
    Run(RunArgs),
    /// Show which mechanism each logical probe uses on this kernel, and why the others were skipped.
    Probes(ProbesArgs),
    /// Attach to running processes by PID and report every IPC channel between them.
    Attach(AttachArgs),
    /// Run a command under tracing, follow its children, and report every channel between them.
    Trace(TraceArgs),
    /// Render a report saved with `--save` again, without tracing (no privileges needed).
    Report(ReportArgs),
    /// Print a shell completion script (e.g. `ipctrace completions bash > /etc/bash_completion.d/ipctrace`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from these definitions (used by the installers).
    #[command(name = "__manpage", hide = true)]
    Manpage,
    /// One side of a built-in workload (ipctrace re-executes itself with this; not for direct use).
    #[command(name = "__workload", hide = true)]
    Workload(RoleArgs),
    /// `trace`'s start gate: wait for one byte on fd 3, then exec the command (not for direct use).
    #[command(name = "__gate", hide = true)]
    Gate {
        #[arg(last = true, required = true)]
        cmd: Vec<std::ffi::OsString>,
    },
}

/// Which probe implementations may be used.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Best tier to try: function (fentry, then kprobe, then tracepoints), tracepoint, or
    /// sampling. Each logical probe falls back from there to what this kernel allows.
    #[arg(long, value_enum, default_value_t = Tier::Function)]
    pub tier: Tier,
    /// Never use fentry/fexit (kprobes are tried instead).
    #[arg(long)]
    pub no_fentry: bool,
    /// cpu-clock sampling frequency with kernel stacks, per CPU (0 disables sampling).
    #[arg(long, default_value_t = 999)]
    pub sample_hz: u64,
    /// Also stream every counted event (timestamp, pid, probe, channel, result, duration)
    /// into this JSON-lines file, through a ring buffer; events it has no room for are
    /// counted as lost (the aggregates still hold them).
    #[arg(long, value_name = "FILE.jsonl")]
    pub events: Option<std::path::PathBuf>,
    /// Also write a Perfetto trace (protobuf) of every counted event: a track per process
    /// and thread, slices for calls and blocked time, instants for faults, signals and
    /// wake-ups, flows from waker to woken, bytes in flight per channel. Open it at
    /// ui.perfetto.dev (the file is read in your browser; it stays on your machine).
    #[arg(long, value_name = "FILE.pftrace")]
    pub perfetto: Option<std::path::PathBuf>,
    /// Size of the --events ring buffer (rounded up to a power of two, 4 KiB to 256 MiB).
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    pub events_buffer: u64,
    /// Leave probe groups out, comma-separated (to see what each costs; the report then lacks
    /// their stages): sampling (= --sample-hz 0), page-alloc, block-stacks.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub without: Vec<ProbeGroup>,
    /// Benchmark floor: attach every program but let each return at once (no figures).
    #[arg(long, hide = true)]
    pub floor: bool,
}

/// Probe groups that can be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeGroup {
    /// cpu-clock sampling of kernel stacks.
    Sampling,
    /// Page allocations: pipe buffer pages (per-CPU counters or kmem:mm_page_alloc) and
    /// shmem page stacks (kmem:mm_page_alloc).
    PageAlloc,
    /// The kernel stacks of blocked time (the blocked-time call tree).
    BlockStacks,
}

impl ProbeArgs {
    /// The sampling frequency in effect (0 when sampling is left out).
    pub fn sampling_hz(&self) -> u64 {
        if self.without.contains(&ProbeGroup::Sampling) { 0 } else { self.sample_hz }
    }
}

/// Where and how the report goes.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also save the report as JSON (re-render it later with `ipctrace report FILE`).
    #[arg(long, value_name = "FILE")]
    pub save: Option<std::path::PathBuf>,
    /// Also write the sampled stacks as folded lines (for flame graph tools).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
    /// Also write a self-contained HTML page: path diagrams, latency histograms, comparison,
    /// and the message-size chart of a sweep.
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<std::path::PathBuf>,
    /// Also draw the sampled stacks as an SVG flame graph.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<std::path::PathBuf>,
    /// attach/trace: how many channels (the busiest) are shown in full after the overview.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub top: usize,
    /// attach/trace: show this channel in full (its # in the channel table, its inode, or
    /// `msq:ID` for a SysV message queue by its msqid); repeat for more.
    #[arg(long = "channel", value_name = "ID", value_parser = parse_channel)]
    pub channels: Vec<u64>,
    /// attach/trace: list every process and channel, and show every channel in full.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// A process to trace (all its threads, and children it forks); repeat for more. A thread
    /// id stands for its process.
    #[arg(short = 'p', long = "pid", required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// Stop after this long (e.g. 10s); by default at Ctrl-C or when every target has exited.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also trace the processes at the other end of the targets' Unix sockets (found through
    /// sock_diag and /proc while tracing, including peers that connect later); without it
    /// they are named in the report as external peers.
    #[arg(long)]
    pub follow_peers: bool,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Stop after this long; by default when the command exits and what it left running (a
    /// background job, a daemon) has ended too, as under `strace -f`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A report saved with `ipctrace run --save FILE`.
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ProbesArgs {
    #[command(flatten)]
    pub probes: ProbeArgs,
    /// Output format (markdown is not available here).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Transports to run, comma-separated, one after the other; `all` runs every built-in
    /// transport [default: pipe,shm-futex].
    #[arg(long, value_delimiter = ',', value_parser = transport_names())]
    pub transport: Vec<String>,
    /// Socket transports: a named socket at PATH (`@name` for the abstract namespace) instead
    /// of a socketpair. An existing path is refused; the file is removed however the run ends.
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<String>,
    /// mq: the POSIX queue's name (`/NAME`) instead of a random one. An existing name is
    /// refused; the name is removed as soon as both sides hold the queue.
    #[arg(long, value_name = "/NAME")]
    pub mq_name: Option<String>,
    /// mq: the queue's depth in messages [default: 10, or fs.mqueue.msg_max if lower]; at most
    /// fs.mqueue.msg_max without CAP_SYS_RESOURCE.
    #[arg(long, value_name = "N")]
    pub mq_depth: Option<u64>,
    /// Payload per transport. Units are binary: B, K or KiB (1024), M or MiB, G or GiB;
    /// decimal units (KB, MB) are refused.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    pub total: u64,
    /// Size of each write the producer makes (same units as --total).
    #[arg(long, value_parser = parse_size, default_value = "64KiB")]
    pub msg_size: u64,
    /// Stop after this long (e.g. 500ms, 10s, 2m) and print a partial report.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub ring: RingArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    /// Run every --transport at every message size (64 B, 4 KiB, 64 KiB, 1 MiB), each for
    /// --sweep-ms, traced, and show how the path metrics change and where shm overtakes the pipe.
    /// --duration bounds the whole sweep; Ctrl-C ends it with a partial report.
    #[arg(long)]
    pub sweep: bool,
    /// Length of each sweep point in milliseconds (1 to 600000).
    #[arg(long, default_value_t = 400)]
    pub sweep_ms: u64,
    /// pipe/fifo: the consumer drains with splice(2) into /dev/null (a zero-copy control: the
    /// report should show about 1 kernel copy per byte instead of 2; bytes are not verified).
    #[arg(long)]
    pub splice_consumer: bool,
    /// unix-stream: the producer sends with sendfile(2) from a memfd (a zero-copy control: page
    /// references enter the socket, so about 1 kernel copy per byte instead of 2).
    #[arg(long)]
    pub sendfile_producer: bool,
    /// mq, sysv-msg: send message i at priority i % N (1..=32; SysV: mtype N - priority);
    /// each message carries its sequence number, so it is verified in whatever order the
    /// queue delivers it, and the report counts messages per priority.
    #[arg(long, value_name = "N")]
    pub mq_priorities: Option<u64>,
    /// Test hook (unix-dgram, unix-seqpacket): the consumer reads datagrams into a buffer of
    /// this size with MSG_TRUNC.
    #[arg(long, hide = true, value_parser = parse_size)]
    pub recv_buffer: Option<u64>,
    /// Pin the producer and the consumer to these two CPUs (e.g. 0,1; 0,0 for the same CPU).
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "A,B", value_parser = clap::value_parser!(usize))]
    pub cpus: Option<Vec<usize>>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Test hook: the producer corrupts the byte at this stream offset.
    #[arg(long, hide = true)]
    pub corrupt_at: Option<u64>,
}

impl RunArgs {
    /// The transports to run (see --transport for the defaults). `all` leaves out, outside a
    /// sweep, the message transports that cannot carry `--msg-size` (`skipped` says which).
    pub fn transports(&self) -> Vec<Transport> {
        if self.transport.is_empty() {
            return Transport::DEFAULT.to_vec();
        }
        let mut v = Vec::new();
        for name in &self.transport {
            match Transport::from_name(name) {
                Some(t) => v.push(t),
                None => v.extend(Transport::ALL.into_iter().filter(|t| self.sweep || self.too_big(*t).is_none())),
            }
        }
        v
    }

    /// Why `t` cannot carry `--msg-size` here, if it cannot.
    pub fn too_big(&self, t: Transport) -> Option<String> {
        let (max, why) = t.max_message_with(self.mq_depth).filter(|(max, _)| self.msg_size > *max)?;
        Some(format!(
            "--msg-size {} is above the largest {t} message this machine carries ({max} bytes, set by {why})",
            workloads::size::format_size(self.msg_size)
        ))
    }

    /// Transports `all` left out (outside a sweep), with why.
    pub fn skipped(&self) -> Vec<(Transport, String)> {
        if self.sweep || !self.transport.iter().any(|n| Transport::from_name(n).is_none()) {
            return Vec::new();
        }
        Transport::ALL.into_iter().filter_map(|t| self.too_big(t).map(|why| (t, why))).collect()
    }

    /// `--cpus` as a (producer, consumer) pair (checked by `check`).
    pub fn cpus(&self) -> Option<[usize; 2]> {
        self.cpus.as_deref().and_then(|v| match v {
            [a, b] => Some([*a, *b]),
            _ => None,
        })
    }
}

/// `--channel`: a number (row # or inode), or `msq:ID` (a SysV queue's channel id).
fn parse_channel(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: a channel is its # in the table, its inode, or msq:ID");
    match s.strip_prefix("msq:") {
        Some(id) => id.parse::<u32>().map(|id| ipctrace_common::SYSV_MSG_ID | id as u64).map_err(|_| bad()),
        None => s.parse().map_err(|_| bad()),
    }
}

/// `--transport` values: every built-in transport's name, and `all`.
fn transport_names() -> clap::builder::PossibleValuesParser {
    let mut names: Vec<&'static str> = Transport::ALL.iter().map(|t| t.name()).collect();
    names.push("all");
    clap::builder::PossibleValuesParser::new(names)
}

/// Parses `250ms`, `10s`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}': use e.g. 500ms, 10s or 2m"))?;
    if n == 0 {
        return Err(format!("invalid duration '{s}': must be more than zero"));
    }
    Ok(Duration::from_millis(n * mult_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn transports_accept_a_list() {
        let first = Transport::ALL[0].name();
        let c = Cli::try_parse_from(["ipctrace", "run", "--transport", &format!("{first},{first}"), "--total", "1MiB"])
            .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.transports(), vec![Transport::ALL[0], Transport::ALL[0]]);
        assert_eq!(r.total, 1 << 20);
        assert!(Cli::try_parse_from(["ipctrace", "run", "--total", "1MB"]).is_err());
        // `all` at a size every transport takes is every transport; at 64 KiB (the default)
        // the message queues (limits of 8 KiB by default) are left out and named.
        let c = Cli::try_parse_from(["ipctrace", "run", "--transport", "all", "--msg-size", "1KiB"]).unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.transports(), Transport::ALL.to_vec());
        assert!(r.skipped().is_empty());
        let c = Cli::try_parse_from(["ipctrace", "run", "--transport", "all"]).unwrap();
        let Command::Run(r) = c.command else { panic!() };
        let left: Vec<Transport> = r.skipped().into_iter().map(|(t, _)| t).collect();
        let kept: Vec<Transport> = Transport::ALL.into_iter().filter(|t| !left.contains(t)).collect();
        assert_eq!(r.transports(), kept);
        assert!(left.iter().all(|t| t.max_message().is_some_and(|(m, _)| m < 65536)), "{left:?}");
        assert!(Cli::try_parse_from(["ipctrace", "run", "--transport", "carrier-pigeon"]).is_err());
    }
}
