//! The log files of `[manager] log_dir`: each service's captured lines in `DIR/NAME.log`, the
//! manager's own in `DIR/steward.log`, appended with plain `write`s on an O_APPEND fd, rotated
//! by size (`NAME.log.1` … `NAME.log.K`, the oldest deleted), fsynced at rotation and at
//! shutdown.
//!
//! A disk that fails a write (full, read-only, an I/O error) or stalls one never costs more
//! than that write: the file is closed, lines are dropped and counted for a while (an
//! episode: said once when it begins, and once with the count when writing works again), and
//! then the file is opened again by its path. A write that fails half-way is cut back, so a
//! file never holds a torn line.
//!
//! The manager never reads the files back. It keeps what `stewardctl logs -n` needs to read
//! them itself: each file's inode and length, and each line's position, counted in bytes
//! across the files (oldest first), so that the lines of the ring and those of the files can
//! be joined without a line lost or twice.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use steward_protocol::control::{LogFilePart, LogLine};

use crate::config::ManagerSettings;

/// After a failed write, how long lines are dropped before the file is tried again: a full
/// or read-only disk fails at once, so trying costs next to nothing.
const RETRY: Duration = Duration::from_secs(1);
/// A write (or the fsync of a rotation) that takes this long means a disk too slow for the
/// loop to wait on: lines are dropped for [`SLOW_RETRY`]. Wall-clock time, so it includes
/// being descheduled: on a busy machine a quarter of a second of that is no sign of a disk.
const SLOW: Duration = Duration::from_millis(500);
/// How long a slow disk is left alone.
const SLOW_RETRY: Duration = Duration::from_secs(10);

/// `[manager] log_dir`, `log_max_size`, `log_keep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The directory.
    pub dir: PathBuf,
    /// A file is rotated before a line would take it past this.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Settings {
    /// What the `[manager]` table says; `None` without `log_dir`.
    pub fn of(manager: &ManagerSettings) -> Option<Settings> {
        Some(Settings {
            dir: manager.log_dir.clone()?,
            max_size: manager.log_max_size,
            keep: manager.log_keep,
        })
    }

    /// The file of the service `name`. The manager's own log is `steward.log`, so a service
    /// of that name writes `steward.service.log`.
    pub fn service_file(&self, name: &str) -> LogFile {
        let file = if name == "steward" {
            "steward.service.log".to_string()
        } else {
            format!("{name}.log")
        };
        LogFile::new(self, &file)
    }

    /// The manager's own log file.
    pub fn manager_file(&self) -> LogFile {
        LogFile::new(self, "steward.log")
    }
}

/// Why lines are being dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// A write, an open or a rotation failed.
    Failed(Errno),
    /// A write took this long.
    Slow(Duration),
}

impl Trouble {
    /// How long lines are dropped before the file is tried again.
    fn retry(self) -> Duration {
        match self {
            Trouble::Failed(_) => RETRY,
            Trouble::Slow(_) => SLOW_RETRY,
        }
    }
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trouble::Failed(e) => write!(f, "{}", crate::sys::errno_text(e.raw_os_error())),
            Trouble::Slow(took) => write!(f, "a write took {} ms", took.as_millis()),
        }
    }
}

/// What an append has to say, once per episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Lines are dropped from now on.
    Dropping {
        /// The file.
        path: PathBuf,
        /// Why.
        trouble: Trouble,
    },
    /// Writing works again.
    Resumed {
        /// The file.
        path: PathBuf,
        /// Lines dropped meanwhile.
        dropped: u64,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Dropping { path, trouble } => write!(
                f,
                "log file {}: {trouble}; dropping lines until it can be written again",
                path.display()
            ),
            Note::Resumed { path, dropped } => write!(
                f,
                "log file {}: writing again; {dropped} line{} dropped",
                path.display(),
                if *dropped == 1 { " was" } else { "s were" }
            ),
        }
    }
}

/// One file of a log, as the manager last left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    ino: u64,
    /// Where it starts in the log's byte count.
    start: u64,
    len: u64,
}

/// Whether the file is being written.
#[derive(Debug)]
enum Disk {
    /// Opened at the next line.
    Closed,
    /// Appending.
    Open(OwnedFd),
    /// Dropping lines until `retry`, then opened again.
    Dropping {
        retry: Instant,
        /// Lines dropped in this episode.
        dropped: u64,
    },
}

/// One log: `NAME.log` and its rotated files.
#[derive(Debug)]
pub struct LogFile {
    /// `DIR/NAME.log`.
    path: PathBuf,
    max_size: u64,
    keep: u32,
    disk: Disk,
    /// The files, newest first (`[0]` is `NAME.log`), as far as they are known: filled when
    /// the file is opened, kept in step by each write and rotation.
    files: VecDeque<Segment>,
    /// Bytes in the log: where the next line goes, counted from the start of the oldest file
    /// as it was when first opened.
    end: u64,
}

/// The bytes a line takes in the file.
fn rendered(line: &LogLine) -> String {
    let mut text = line.render();
    text.push('\n');
    text
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

impl LogFile {
    fn new(settings: &Settings, file: &str) -> LogFile {
        LogFile {
            path: settings.dir.join(file),
            max_size: settings.max_size,
            keep: settings.keep,
            disk: Disk::Closed,
            files: VecDeque::new(),
            end: 0,
        }
    }

    /// `NAME.log.N` (`NAME.log` for 0).
    fn rotated(&self, n: u32) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut path = self.path.clone().into_os_string();
        path.push(format!(".{n}"));
        PathBuf::from(path)
    }

    /// Opens `NAME.log` for appending (its directory made if missing) and learns the files.
    fn open(&mut self) -> Result<OwnedFd, Errno> {
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(errno)?;
        }
        let fd = open_append(&self.path)?;
        let stat = rustix::fs::fstat(&fd)?;
        let mut files = vec![(stat.st_ino, stat.st_size as u64)];
        for n in 1..=self.keep {
            if let Ok(stat) = rustix::fs::stat(self.rotated(n)) {
                files.push((stat.st_ino, stat.st_size as u64));
            }
        }
        // Counted back from where the log ended as we knew it, so that the positions of the
        // lines already handed out still hold when nothing else touched the files.
        let total: u64 = files.iter().map(|&(_, len)| len).sum();
        let mut start = self.end.max(total);
        self.end = start;
        self.files = files
            .into_iter()
            .map(|(ino, len)| {
                start = start.saturating_sub(len);
                Segment { ino, start, len }
            })
            .collect();
        Ok(fd)
    }

    /// Appends `lines`; returns where each one starts in the log's byte count (a dropped one:
    /// where it would have), and what to say about the disk, if anything.
    pub fn append(&mut self, lines: &[LogLine], now: Instant) -> (Vec<u64>, Option<Note>) {
        // The lines dropped so far, when an episode is going on and it is time to try again.
        let episode = match &mut self.disk {
            Disk::Dropping { retry, dropped } if now < *retry => {
                *dropped += lines.len() as u64;
                return (vec![self.end; lines.len()], None);
            }
            Disk::Dropping { dropped, .. } => Some(*dropped),
            Disk::Closed | Disk::Open(_) => None,
        };
        if episode.is_some() {
            self.disk = Disk::Closed;
        }
        let mut at = Vec::with_capacity(lines.len());
        let result = self.write(lines, &mut at);
        let written = at.len();
        at.resize(lines.len(), self.end);
        let note = match (result, episode) {
            (Ok(()), None) => None,
            (Ok(()), Some(dropped)) => Some(Note::Resumed {
                path: self.path.clone(),
                dropped,
            }),
            (Err(trouble), episode) => {
                self.disk = Disk::Dropping {
                    retry: now + trouble.retry(),
                    dropped: episode.unwrap_or(0) + (lines.len() - written) as u64,
                };
                // A retry that fails too is the same episode, said once.
                episode.is_none().then(|| Note::Dropping {
                    path: self.path.clone(),
                    trouble,
                })
            }
        };
        (at, note)
    }

    /// Writes the lines, rotating as needed; pushes the position of each line written.
    fn write(&mut self, lines: &[LogLine], at: &mut Vec<u64>) -> Result<(), Trouble> {
        if let Disk::Closed = self.disk {
            let fd = self.open().map_err(Trouble::Failed)?;
            self.disk = Disk::Open(fd);
        }
        let mut buf = String::new();
        let mut pending = Vec::new();
        for line in lines {
            let text = rendered(line);
            let len = self.files.front().map_or(0, |f| f.len) + buf.len() as u64;
            if len > 0 && len + text.len() as u64 > self.max_size {
                self.flush(&buf, &mut pending, at)?;
                buf.clear();
                self.rotate()?;
            }
            pending.push(self.end + buf.len() as u64);
            buf.push_str(&text);
        }
        self.flush(&buf, &mut pending, at)
    }

    /// Writes `buf` at the end of `NAME.log`: all of it, or (cut back to where it was) none.
    fn flush(
        &mut self,
        buf: &str,
        pending: &mut Vec<u64>,
        at: &mut Vec<u64>,
    ) -> Result<(), Trouble> {
        if buf.is_empty() {
            return Ok(());
        }
        let Disk::Open(fd) = &self.disk else {
            return Err(Trouble::Failed(Errno::BADF));
        };
        let started = Instant::now();
        let mut rest = buf.as_bytes();
        let mut failed = None;
        while !rest.is_empty() {
            match rustix::io::write(fd, rest) {
                Ok(0) => {
                    failed = Some(Errno::NOSPC);
                    break;
                }
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let len = self.files.front().map_or(0, |f| f.len);
        if let Some(e) = failed {
            if rest.len() < buf.len() {
                let _ = rustix::fs::ftruncate(fd, len);
            }
            self.disk = Disk::Closed;
            return Err(Trouble::Failed(e));
        }
        if let Some(front) = self.files.front_mut() {
            front.len += buf.len() as u64;
        }
        self.end += buf.len() as u64;
        at.append(pending);
        let took = started.elapsed();
        if took >= SLOW {
            self.disk = Disk::Closed;
            return Err(Trouble::Slow(took));
        }
        Ok(())
    }

    /// `NAME.log` becomes `NAME.log.1` (fsynced first), each `.N` becomes `.N+1`, the one past
    /// `keep` goes, and a new `NAME.log` is opened.
    fn rotate(&mut self) -> Result<(), Trouble> {
        let Disk::Open(fd) = std::mem::replace(&mut self.disk, Disk::Closed) else {
            return Err(Trouble::Failed(Errno::BADF));
        };
        let started = Instant::now();
        rustix::fs::fdatasync(&fd).map_err(Trouble::Failed)?;
        drop(fd);
        let gone = |e: Errno| if e == Errno::NOENT { Ok(()) } else { Err(e) };
        let shift = || -> Result<(), Errno> {
            rustix::fs::unlink(self.rotated(self.keep)).or_else(gone)?;
            for n in (1..=self.keep).rev() {
                rustix::fs::rename(self.rotated(n - 1), self.rotated(n)).or_else(gone)?;
            }
            Ok(())
        };
        shift().map_err(Trouble::Failed)?;
        let fd = open_append(&self.path).map_err(Trouble::Failed)?;
        let ino = rustix::fs::fstat(&fd).map_err(Trouble::Failed)?.st_ino;
        self.files.push_front(Segment {
            ino,
            start: self.end,
            len: 0,
        });
        self.files.truncate(self.keep as usize + 1);
        self.disk = Disk::Open(fd);
        let took = started.elapsed();
        if took >= SLOW {
            self.disk = Disk::Closed;
            return Err(Trouble::Slow(took));
        }
        Ok(())
    }

    /// Opens the file if it was not (to learn what the files hold, for `logs -n` before any
    /// line was written); one that cannot be opened is tried again at the next line.
    pub fn learn(&mut self) {
        if let Disk::Closed = self.disk {
            if let Ok(fd) = self.open() {
                self.disk = Disk::Open(fd);
            }
        }
    }

    /// Where the next line goes in the log's byte count.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The parts of the files that hold what the log had before position `before`, oldest
    /// first (for `stewardctl logs -n` to read).
    pub fn parts_before(&self, before: u64) -> Vec<LogFilePart> {
        let mut parts: Vec<LogFilePart> = self
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.start < before && f.len > 0)
            .map(|(n, f)| LogFilePart {
                path: self.rotated(n as u32).to_string_lossy().into_owned(),
                inode: f.ino,
                len: f.len.min(before - f.start),
            })
            .collect();
        parts.reverse();
        parts
    }

    /// fsyncs what was written (at shutdown). A failure is for the caller to say.
    pub fn sync(&self) -> Result<(), Errno> {
        match &self.disk {
            Disk::Open(fd) => rustix::fs::fdatasync(fd),
            Disk::Closed | Disk::Dropping { .. } => Ok(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_append(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_raw_mode(0o640),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_protocol::control::Stream;

    fn line(text: &str) -> LogLine {
        LogLine {
            time_us: 1_790_000_000_000_000,
            name: "svc".into(),
            pid: 7,
            stream: Stream::Stdout,
            text: text.into(),
        }
    }

    fn settings(dir: &Path, max_size: u64, keep: u32) -> Settings {
        Settings {
            dir: dir.join("logs"),
            max_size,
            keep,
        }
    }

    fn read(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| LogLine::parse(l).unwrap().text)
            .collect()
    }

    #[test]
    fn files_rotate_by_size_and_the_oldest_goes() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 200, 2);
        let mut log = s.service_file("svc");
        let now = Instant::now();
        let lines: Vec<LogLine> = (0..40).map(|i| line(&format!("line {i:02}"))).collect();
        let (at, note) = log.append(&lines, now);
        assert_eq!(note, None);
        assert_eq!(at.len(), 40);
        assert!(at.windows(2).all(|w| w[0] < w[1]));
        let path = s.dir.join("svc.log");
        let mut kept = Vec::new();
        for n in (0..=2).rev() {
            let p = log.rotated(n);
            assert!(
                std::fs::metadata(&p).unwrap().len() <= 200,
                "{}",
                p.display()
            );
            kept.extend(read(&p));
        }
        assert!(!log.rotated(3).exists());
        assert_eq!(kept.last().unwrap(), "line 39");
        let first: usize = kept[0][5..].parse().unwrap();
        let expect: Vec<String> = (first..40).map(|i| format!("line {i:02}")).collect();
        assert_eq!(kept, expect);
        assert_eq!(log.path(), path);

        // The parts before a line's position hold exactly the lines before it.
        let i = 35;
        let parts = log.parts_before(at[i]);
        let mut before = Vec::new();
        for part in &parts {
            let bytes = std::fs::read(&part.path).unwrap();
            let text = String::from_utf8(bytes[..part.len as usize].to_vec()).unwrap();
            before.extend(text.lines().map(|l| LogLine::parse(l).unwrap().text));
        }
        assert_eq!(before, expect[..expect.len() - (40 - i)]);

        // Opened again (a reexec), the positions still hold.
        let mut again = s.service_file("svc");
        again.end = log.end;
        let (more, _) = again.append(&[line("after")], now);
        assert_eq!(more[0], log.end());
        assert_eq!(again.parts_before(at[i]), parts);
    }

    #[test]
    fn a_failing_disk_drops_lines_in_one_episode_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1);
        // A file where the directory should be: every open fails.
        std::fs::write(&s.dir, "").unwrap();
        let mut log = s.service_file("svc");
        let now = Instant::now();
        let (_, note) = log.append(&[line("a"), line("b")], now);
        assert!(matches!(note, Some(Note::Dropping { .. })), "{note:?}");
        assert_eq!(log.append(&[line("c")], now).1, None);
        // Retried after RETRY, still failing: the same episode, said once.
        assert_eq!(log.append(&[line("d")], now + RETRY).1, None);
        std::fs::remove_file(&s.dir).unwrap();
        let (_, note) = log.append(&[line("e")], now + RETRY * 3);
        let Some(Note::Resumed { dropped, .. }) = note else {
            panic!("{note:?}");
        };
        assert_eq!(dropped, 4);
        assert_eq!(read(&s.dir.join("svc.log")), ["e"]);
    }
}
