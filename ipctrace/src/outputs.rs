//! Output files (`--save`, `--html`, `--folded`, `--flamegraph`, `--events`, `--perfetto`), opened before
//! any tracing so a bad path costs nothing. Never written through a symlink another user
//! controls, never truncating another user's file; a FIFO needs a reader. Files this run
//! created and never wrote are removed again.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::exit::{Code, fail};

/// How long `--events` (or any output) waits for a reader on a FIFO.
pub const FIFO_READER_TIMEOUT: Duration = Duration::from_secs(5);

/// One opened output.
pub struct OutFile {
    pub path: PathBuf,
    file: File,
    /// A regular file: truncated when written (not at open: a failed run keeps the old one).
    regular: bool,
    /// This run created it (and removes it if nothing gets written).
    created: bool,
    written: bool,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// May a symlink at `path` be followed? Only one that neither the link's owner nor anyone
/// else could have planted or swapped: owned by us or root, in a directory owned by us or
/// root that no group or other user can write.
fn symlink_trusted(path: &Path, link: &std::fs::Metadata) -> Result<(), String> {
    let me = euid();
    if link.uid() != me && link.uid() != 0 {
        return Err(format!("it is a symbolic link owned by uid {}", link.uid()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let d = std::fs::metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if (d.uid() != me && d.uid() != 0) || d.mode() & 0o022 != 0 {
        return Err(format!("it is a symbolic link in {}, a directory other users can change", dir.display()));
    }
    Ok(())
}

impl OutFile {
    /// Opens (creating if needed) an output file. Err: one line for exit code 2.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let refuse = |why: String| fail(Code::Usage, format!("will not write {}: {why}", path.display()));
        let mut follow = false;
        if let Ok(l) = std::fs::symlink_metadata(path)
            && l.file_type().is_symlink()
        {
            symlink_trusted(path, &l).map_err(refuse)?;
            follow = true;
        }
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        let mut created = true;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | nofollow)
            .open(path);
        if file.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists) {
            created = false;
            // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging here.
            let open = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | nofollow)
                    .open(path)
            };
            let t0 = Instant::now();
            file = open();
            while file.as_ref().is_err_and(|e| e.raw_os_error() == Some(libc::ENXIO)) {
                if t0.elapsed() > FIFO_READER_TIMEOUT {
                    return Err(refuse(format!(
                        "it is a FIFO and nothing opened it for reading within {} s",
                        FIFO_READER_TIMEOUT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
                file = open();
            }
        }
        let file = file.map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("it is a symbolic link (ipctrace does not write through links)".into()),
            _ => refuse(e.to_string()),
        })?;
        let md = file.metadata().map_err(|e| refuse(e.to_string()))?;
        let ft = md.file_type();
        if ft.is_file() && !created && md.uid() != euid() {
            return Err(refuse(format!("it belongs to uid {}, not to this user", md.uid())));
        }
        if ft.is_dir() {
            return Err(refuse("it is a directory".into()));
        }
        // Writes block normally from here on (the FIFO has its reader).
        // SAFETY: fcntl on our own open fd.
        unsafe {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        Ok(Self { path: path.to_path_buf(), file, regular: ft.is_file(), created, written: false })
    }

    /// Replaces the file's content with `data`.
    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.written = true;
        if self.regular {
            self.file.set_len(0)?;
        }
        self.file.write_all(data)?;
        self.file.flush()
    }

    /// The open file, for streaming (`--events`).
    pub fn stream(&mut self) -> std::io::Result<File> {
        self.written = true;
        if self.regular {
            self.file.set_len(0)?;
        }
        self.file.try_clone()
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        // A file this run created but never filled (the run failed first) is not left behind;
        // only if the name still points at the file we created.
        if self.created
            && !self.written
            && let (Ok(ours), Ok(now)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path))
            && ours.ino() == now.ino()
            && ours.dev() == now.dev()
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Every output a command asked for, opened.
#[derive(Default)]
pub struct Outputs {
    pub save: Option<OutFile>,
    pub html: Option<OutFile>,
    pub folded: Option<OutFile>,
    pub flamegraph: Option<OutFile>,
    pub events: Option<OutFile>,
    pub perfetto: Option<OutFile>,
}

impl Outputs {
    pub fn open(o: &crate::cli::OutputArgs, events: Option<&Path>, perfetto: Option<&Path>) -> anyhow::Result<Self> {
        let open = |p: Option<&Path>| p.map(OutFile::open).transpose();
        Ok(Self {
            save: open(o.save.as_deref())?,
            html: open(o.html.as_deref())?,
            folded: open(o.folded.as_deref())?,
            flamegraph: open(o.flamegraph.as_deref())?,
            events: open(events)?,
            perfetto: open(perfetto)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipctrace-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_writes_and_removes_unwritten_files() {
        let d = dir("basic");
        let p = d.join("a.json");
        let mut f = OutFile::open(&p).unwrap();
        f.write_all(b"long content").unwrap();
        drop(f);
        let mut f = OutFile::open(&p).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"x", "an existing file of ours is replaced");
        let q = d.join("never.json");
        drop(OutFile::open(&q).unwrap());
        assert!(!q.exists(), "a file created but never written is removed");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_symlinks_in_shared_directories_and_directories() {
        let d = dir("links");
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let target = d.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = OutFile::open(&link).err().expect("a link in a 0777 directory is refused").to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(OutFile::open(&d).is_err(), "a directory is refused");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn fifo_without_reader_is_refused_after_the_timeout() {
        let d = dir("fifo");
        let p = d.join("f");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t0 = Instant::now();
        let e = OutFile::open(&p).err().expect("no reader").to_string();
        assert!(e.contains("FIFO") && t0.elapsed() >= FIFO_READER_TIMEOUT, "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
