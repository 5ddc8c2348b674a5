//! Kernel tests (root) for the command-line contract, one table row per case: the exit code,
//! the `ipctrace:` line on stderr, no panic text, and nothing left behind (BPF programs,
//! /dev/shm objects, tracefs mounts, workload processes). Usage errors are exit 2 for every
//! user; output files are checked before tracing and never written through another user's
//! link or into another user's file; a closed stdout ends quietly with 141.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

type Check = Box<dyn Fn(&Path, &Output)>;

struct Case {
    what: &'static str,
    run: Box<dyn Fn(&Path) -> Output>,
    code: i32,
    /// Substring of the `ipctrace:` line on stderr ("" = stderr must be empty).
    says: &'static str,
    /// Further checks on the output and the case's directory.
    then: Check,
}

fn case(what: &'static str, code: i32, says: &'static str, run: impl Fn(&Path) -> Output + 'static) -> Case {
    Case { what, run: Box::new(run), code, says, then: Box::new(|_, _| {}) }
}

impl Case {
    fn then(mut self, f: impl Fn(&Path, &Output) + 'static) -> Self {
        self.then = Box::new(f);
        self
    }
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

fn out(mut c: Command) -> Output {
    c.output().expect("starting ipctrace")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no JSON report ({e})"))
}

/// The last `ipctrace:` line of stderr (workloads may print their own lines first).
fn ipctrace_line(o: &Output) -> String {
    first_err_line(o);
    String::from_utf8_lossy(&o.stderr).lines().rfind(|l| l.starts_with("ipctrace:")).unwrap_or("").to_string()
}

/// Spawns ipctrace, waits until it has loaded its programs plus `after`, sends `sig`.
fn signalled(args: &[&str], sig: i32, after: Duration) -> Output {
    let before = snapshot();
    let child = cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_attached(&before);
    std::thread::sleep(after);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    child.wait_with_output().unwrap()
}

fn dir_for(what: &str) -> PathBuf {
    let slug: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let d = std::env::temp_dir().join(format!("ipctrace-cli-{}-{slug}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cases() -> Vec<Case> {
    let offline_cpu = format!("{}", std::thread::available_parallelism().map_or(64, |n| n.get() + 5));
    vec![
        // Usage errors, as nobody: exit 2 before the privilege check.
        case("nobody: --total 0", 2, "--total", |_| as_nobody(&["run", "--total", "0"])),
        case("nobody: --msg-size 0", 2, "--msg-size", |_| as_nobody(&["run", "--msg-size", "0"])),
        case("nobody: --cpus 0", 2, "--cpus", |_| as_nobody(&["run", "--cpus", "0"])),
        case("nobody: bad size unit", 2, "", |_| as_nobody(&["run", "--total", "1MB"]))
            .then(|_, o| assert!(String::from_utf8_lossy(&o.stderr).contains("decimal units"), "clap's own message")),
        // Usage errors as root: limits of the machine and of the ring.
        case("--cpus beyond the online CPUs", 2, "not online", move |_| {
            out(cmd(&["run", "--cpus", &format!("{offline_cpu},{offline_cpu}")]))
        }),
        case("--slots 0", 2, "--slots", |_| out(cmd(&["run", "--slots", "0"]))),
        case("--slot-size 0", 2, "--slot-size", |_| out(cmd(&["run", "--slot-size", "0"]))),
        case("--slot-size 8GiB", 2, "limit", |_| out(cmd(&["run", "--slot-size", "8GiB"]))),
        case("--events-buffer 64GiB", 2, "--events-buffer", |_| out(cmd(&["run", "--events-buffer", "64GiB"]))),
        case("--sweep-ms 0", 2, "--sweep-ms", |_| out(cmd(&["run", "--sweep", "--sweep-ms", "0"]))),
        case("--sample-hz 0 with --flamegraph", 2, "--sample-hz 0", |d| {
            out(cmd(&["run", "--sample-hz", "0", "--flamegraph", &d.join("f.svg").to_string_lossy()]))
        }),
        // Output files: checked before tracing, never through another user's link or file.
        case("--html in a missing directory", 2, "will not write", |d| {
            out(cmd(&["run", "--html", &d.join("missing/x.html").to_string_lossy()]))
        })
        .then(|_, o| assert!(o.stdout.is_empty(), "refused before tracing: no report")),
        case("--events to a FIFO without a reader", 2, "FIFO", |d| {
            let f = d.join("events.fifo");
            nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            out(cmd(&["run", "--total", "1MiB", "--events", &f.to_string_lossy()]))
        }),
        case("--save through a link nobody planted in a 0777 directory", 2, "symbolic link", |d| {
            let shared = d.join("shared");
            std::fs::create_dir(&shared).unwrap();
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::fs::write(d.join("victim"), b"keep").unwrap();
            let ln = Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "ln", "-s"])
                .arg(d.join("victim"))
                .arg(shared.join("out.json"))
                .status()
                .unwrap();
            assert!(ln.success(), "nobody plants the link");
            out(cmd(&["run", "--total", "1MiB", "--save", &shared.join("out.json").to_string_lossy()]))
        })
        .then(|d, _| assert_eq!(std::fs::read(d.join("victim")).unwrap(), b"keep", "target untouched")),
        case("--save over another user's file", 2, "belongs to uid 65534", |d| {
            let f = d.join("theirs.json");
            std::fs::write(&f, b"theirs").unwrap();
            std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
            out(cmd(&["run", "--total", "1MiB", "--save", &f.to_string_lossy()]))
        })
        .then(|d, _| assert_eq!(std::fs::read(d.join("theirs.json")).unwrap(), b"theirs")),
        // stdout: a closed pipe ends quietly with 141; a full device is one line and exit 1.
        case("closed stdout", 141, "", |d| {
            let saved = saved_report(d);
            let (r, w) = nix::unistd::pipe().unwrap();
            drop(r);
            let mut c = cmd(&["report", &saved, "--format", "json"]);
            c.stdout(Stdio::from(w));
            out(c)
        }),
        case("stdout on /dev/full", 1, "writing the report to stdout failed", |d| {
            let saved = saved_report(d);
            let mut c = cmd(&["report", &saved]);
            c.stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap());
            out(c)
        }),
        // A command that cannot run: one line, before anything is traced (no report, no READY).
        case("trace of a missing command", 3, "cannot run /nonexistent/cmd: not an executable file", |_| {
            out(cmd(&["trace", "--", "/nonexistent/cmd"]))
        })
        .then(|_, o| {
            assert!(o.stdout.is_empty(), "no report: {}", String::from_utf8_lossy(&o.stdout));
            assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "one line");
        }),
        case("trace of a command not in PATH", 3, "cannot run no-such-command-here: not found in PATH", |_| {
            out(cmd(&["trace", "--", "no-such-command-here"]))
        }),
        // A --channel no row has: the report stands, and one line says so.
        case("report --channel of no channel", 0, "--channel 99: no such channel in this report", |d| {
            let saved = d.join("traced.json");
            let o = out(cmd(&["trace", "--save", &saved.to_string_lossy(), "--", "sh", "-c", "echo hi | cat"]));
            assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
            out(cmd(&["report", &saved.to_string_lossy(), "--channel", "99"]))
        }),
        case("report --channel of a run's report", 0, "this report has no channel table", |d| {
            let saved = saved_report(d);
            out(cmd(&["report", &saved, "--channel", "1"]))
        }),
        case("report of a file that is not a report", 2, "is not an ipctrace report", |d| {
            std::fs::write(d.join("x.json"), b"{\"a\": 1}").unwrap();
            out(cmd(&["report", &d.join("x.json").to_string_lossy()]))
        }),
        // Sweeps end on Ctrl-C and at --duration with what they measured.
        case("Ctrl-C during --sweep", 0, "", |_| {
            signalled(
                &["run", "--sweep", "--sweep-ms", "3000", "--format", "json"],
                libc::SIGINT,
                Duration::from_secs(4),
            )
        })
        .then(|_, o| {
            let r = json(o);
            assert_eq!((r["partial"].as_bool(), r["ended_by"].as_str()), (Some(true), Some("interrupted")));
            assert!(r["sweep"].as_array().unwrap().len() < 8);
        }),
        case("--duration bounds a --sweep", 0, "", |_| {
            out(cmd(&["run", "--sweep", "--sweep-ms", "1500", "--duration", "3s", "--format", "json"]))
        })
        .then(|_, o| {
            let r = json(o);
            assert_eq!((r["partial"].as_bool(), r["ended_by"].as_str()), (Some(true), Some("duration")));
            assert!(r["sweep"].as_array().unwrap().len() < 8);
        }),
        // trace: the command's exit status is reported; SIGTERM ends the whole tree.
        case("trace keeps the command's exit status", 0, "", |d| {
            let save = d.join("t.json");
            let mut c = cmd(&["trace", "--save", &save.to_string_lossy(), "--", "sh", "-c", "echo hi | cat; exit 7"]);
            c.stderr(Stdio::null());
            out(c)
        })
        .then(|d, _| {
            let r: Value = serde_json::from_str(&std::fs::read_to_string(d.join("t.json")).unwrap()).unwrap();
            assert_eq!(r["command_exit"]["exit_code"], 7, "{}", r["command_exit"]);
        }),
        case("SIGTERM to trace ends the command tree", 3, "no IPC observed", |_| {
            signalled(&["trace", "--", "sh", "-c", "sleep 31.5 & wait"], libc::SIGTERM, Duration::from_secs(1))
        })
        .then(|_, _| {
            std::thread::sleep(Duration::from_millis(300));
            let left = Command::new("pgrep").args(["-f", "sleep 31.5"]).output().unwrap();
            assert!(left.stdout.is_empty(), "sleep left behind: {}", String::from_utf8_lossy(&left.stdout));
        }),
        // attach by thread id traces the thread's process and says so.
        case("attach --pid TID", 3, "no IPC observed", |_| {
            let mut p = Command::new("python3")
                .args([
                    "-c",
                    "import threading,time; t=threading.Thread(target=time.sleep,args=(5,)); t.start(); t.join()",
                ])
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            let tid = std::fs::read_dir(format!("/proc/{}/task", p.id()))
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .find(|t| *t != p.id())
                .expect("a second thread");
            let o = out(cmd(&["attach", "-p", &tid.to_string(), "--duration", "1s"]));
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains(&format!("{tid} is a thread of process {}", p.id())), "{e}");
            assert!(e.contains(&format!("READY pids={} ", p.id())), "{e}");
            let _ = p.kill();
            let _ = p.wait();
            o
        }),
        // Failures name the process that failed and how.
        case("a SIGKILLed consumer", 3, "consumer", |_| {
            let before = snapshot();
            let child = cmd(&["run", "--transport", "pipe", "--total", "1024GiB"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_attached(&before);
            std::thread::sleep(Duration::from_millis(800));
            let k = Command::new("pkill").args(["-KILL", "-f", "__workload --transport pipe --role consumer"]).status();
            assert!(k.unwrap().success(), "the consumer was there to kill");
            child.wait_with_output().unwrap()
        })
        .then(|_, o| {
            let l = ipctrace_line(o);
            assert!(l.contains("pipe consumer") && l.contains("was killed by SIGKILL"), "{l}");
            assert!(l.find("consumer") < l.find("producer"), "the cause first: {l}");
        }),
        case("a full /dev/shm", 3, "/dev/shm has", |_| {
            // A private mount namespace with a 64 KiB /dev/shm.
            let script = format!(
                "mount -t tmpfs -o size=64k tmpfs /dev/shm && exec {BIN} run --transport shm-futex --total 1MiB"
            );
            out({
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c", &script]);
                c
            })
        }),
    ]
}

/// A small saved report in `d` (one traced run, made once per case that needs it).
fn saved_report(d: &Path) -> String {
    let f = d.join("saved.json");
    let o = out(cmd(&["run", "--transport", "pipe", "--total", "1MiB", "--save", &f.to_string_lossy()]));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    f.to_string_lossy().into_owned()
}

#[test]
fn kernel_cli_contract() {
    if !require_root("kernel_cli_contract") {
        return;
    }
    let mut failures = Vec::new();
    for c in cases() {
        let d = dir_for(c.what);
        let before = snapshot();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let o = (c.run)(&d);
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            assert_eq!(o.status.code(), Some(c.code), "exit code; stderr: {stderr}");
            if c.says.is_empty() {
                first_err_line(&o);
                assert!(
                    !stderr.lines().any(|l| l.starts_with("ipctrace:") && !l.contains("READY")),
                    "no error line: {stderr}"
                );
            } else {
                first_err_line(&o);
                assert!(
                    stderr.lines().any(|l| l.starts_with("ipctrace:") && l.contains(c.says)),
                    "an ipctrace: line should say {:?}: {stderr}",
                    c.says
                );
            }
            (c.then)(&d, &o);
            assert_nothing_left(&before, c.what);
        }));
        match result {
            Ok(()) => eprintln!("ok   {}", c.what),
            Err(e) => {
                let msg =
                    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                eprintln!("FAIL {}: {}", c.what, msg.clone().unwrap_or_default());
                failures.push(format!("{}: {}", c.what, msg.unwrap_or_default()));
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}
