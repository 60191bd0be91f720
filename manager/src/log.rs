//! The manager's own log (not the services' output, which is `output`): one line per event on
//! stderr, `steward: NAME: message`; with `log_dir`, also in `steward.log` there; and as the
//! machine's PID 1, also in the kernel's log (`/dev/kmsg`, rate-limited), so that `dmesg`
//! shows it before any disk is mounted.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use steward_protocol::control::{LogLine, Stream};

use crate::logfile::{LogFile, Note};

/// How bad a line is, as syslog numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// LOG_WARNING.
    Warning = 4,
    /// LOG_INFO.
    Info = 6,
}

/// Logs a line about a service.
pub fn service(name: &str, message: fmt::Arguments<'_>) {
    emit(Level::Info, format_args!("{name}: {message}"));
}

/// Logs a line about the manager itself.
pub fn manager(message: fmt::Arguments<'_>) {
    emit(Level::Info, message);
}

/// Logs a warning about the manager itself.
pub fn warning(message: fmt::Arguments<'_>) {
    emit(Level::Warning, message);
}

/// Echoes a line a service wrote: `NAME: line`, without the manager's prefix, so the two are
/// told apart at a glance. Only to stderr: the service's own log file has it.
pub fn output(name: &str, text: &str) {
    write_stderr(&format!("{name}: {text}\n"));
}

/// As PID 1: our own non-blocking open of whatever stderr is (a serial console, often).
static NONBLOCKING: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// From now on, log lines go through a non-blocking file description of stderr's file, so a
/// slow or stuck console can never stall init (a full console drops lines instead). The
/// description is our own: services that inherit fd 2 keep a blocking one.
pub fn nonblocking() {
    use rustix::fs::{Mode, OFlags};
    // O_APPEND: a log file as stderr is written at its end, not over from its start.
    let flags =
        OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open("/proc/self/fd/2", flags, Mode::empty()) {
        let _ = NONBLOCKING.set(std::fs::File::from(fd));
    }
}

/// Lines kept until the log file is known (the config is read after the first lines).
const EARLY_LINES: usize = 256;
/// /dev/kmsg takes this many lines at once, then one per [`KMSG_REFILL`]: the kernel's own
/// limit for a writer of /dev/kmsg (10 lines per 5 s), so that what we send is what it keeps.
const KMSG_BURST: u32 = 10;
/// See [`KMSG_BURST`].
const KMSG_REFILL: Duration = Duration::from_millis(500);
/// The facility of our lines in the kernel's log (LOG_DAEMON), added to the level.
const LOG_DAEMON: u8 = 3 << 3;

/// The kernel's log, rate-limited.
struct Kmsg {
    fd: OwnedFd,
    tokens: u32,
    refilled: Instant,
    /// Lines not sent since the bucket ran dry.
    suppressed: u64,
}

impl Kmsg {
    fn send(&mut self, level: Level, text: &str, now: Instant) {
        let refills = (now.saturating_duration_since(self.refilled).as_millis()
            / KMSG_REFILL.as_millis()) as u32;
        if refills > 0 {
            self.tokens = (self.tokens + refills).min(KMSG_BURST);
            self.refilled = now;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 && self.tokens > 1 {
            let n = std::mem::take(&mut self.suppressed);
            self.write(
                Level::Warning,
                &format!("steward: {n} log lines were not sent to the kernel log (rate limit)"),
            );
        }
        self.write(level, text);
    }

    fn write(&mut self, level: Level, text: &str) {
        self.tokens = self.tokens.saturating_sub(1);
        // One write is one record; the kernel cuts what is too long for it.
        let record = format!("<{}>{text}", LOG_DAEMON + level as u8);
        let _ = rustix::io::write(&self.fd, record.as_bytes());
    }
}

/// Where the log goes besides stderr.
#[derive(Default)]
struct Sinks {
    file: Option<LogFile>,
    /// Until the log file is set: the first lines, for it.
    early: Option<VecDeque<LogLine>>,
    kmsg: Option<Kmsg>,
}

thread_local! {
    /// The manager is one thread; the log is beside it.
    static SINKS: RefCell<Sinks> = RefCell::new(Sinks {
        early: Some(VecDeque::new()),
        ..Sinks::default()
    });
}

/// As the machine's PID 1: from now on the log also goes to /dev/kmsg.
pub fn kmsg() {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::open("/dev/kmsg", flags, Mode::empty()) else {
        return;
    };
    SINKS.with(|sinks| {
        if let Ok(mut sinks) = sinks.try_borrow_mut() {
            sinks.kmsg = Some(Kmsg {
                fd,
                tokens: KMSG_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            });
        }
    });
}

/// From now on the log also goes to `file` (`None`: no more); the lines logged before the
/// first file was set go there first.
pub fn set_file(file: Option<LogFile>) {
    let early = SINKS.with(|sinks| {
        let mut sinks = sinks.try_borrow_mut().ok()?;
        sinks.file = file;
        let early = sinks.early.take()?;
        sinks.file.is_some().then_some(early)
    });
    if let Some(early) = early {
        let early: Vec<LogLine> = early.into();
        to_file(&early);
    }
}

/// fsyncs the log file (at shutdown).
pub fn sync() {
    SINKS.with(|sinks| {
        if let Ok(sinks) = sinks.try_borrow() {
            if let Some(file) = &sinks.file {
                let _ = file.sync();
            }
        }
    });
}

fn to_file(lines: &[LogLine]) {
    let note = SINKS.with(|sinks| {
        let mut sinks = sinks.try_borrow_mut().ok()?;
        let sinks = &mut *sinks;
        match (&mut sinks.file, &mut sinks.early) {
            (Some(file), _) => file.append(lines, Instant::now()).1,
            (None, Some(early)) => {
                early.extend(lines.iter().cloned());
                while early.len() > EARLY_LINES {
                    early.pop_front();
                }
                None
            }
            (None, None) => None,
        }
    });
    match note {
        // Said where it can be: the file cannot take it.
        Some(note @ Note::Dropping { .. }) => {
            let text = format!("steward: {note}");
            write_stderr(&format!("{text}\n"));
            to_kmsg(Level::Warning, &text);
        }
        Some(note @ Note::Resumed { .. }) => manager(format_args!("{note}")),
        None => {}
    }
}

fn to_kmsg(level: Level, text: &str) {
    SINKS.with(|sinks| {
        if let Ok(mut sinks) = sinks.try_borrow_mut() {
            if let Some(kmsg) = &mut sinks.kmsg {
                kmsg.send(level, text, Instant::now());
            }
        }
    });
}

/// Formats first and writes once, so a line is not interleaved with a service's output on the
/// same stderr. A closed or full stderr or disk must not stop the manager, so errors are
/// dropped (the log file counts what it drops).
fn emit(level: Level, message: fmt::Arguments<'_>) {
    let text = message.to_string();
    let line = format!("steward: {text}");
    write_stderr(&format!("{line}\n"));
    to_kmsg(level, &line);
    to_file(&[LogLine {
        time_us: crate::output::now_us(),
        name: "steward".into(),
        pid: crate::pid1::own_pid(),
        stream: Stream::Stderr,
        text,
    }]);
}

fn write_stderr(line: &str) {
    match NONBLOCKING.get() {
        Some(mut file) => {
            let _ = file.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_gets_level_prefixed_records_at_the_kernels_rate() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::NONBLOCK).unwrap();
        let start = Instant::now();
        let mut kmsg = Kmsg {
            fd: write,
            tokens: KMSG_BURST,
            refilled: start,
            suppressed: 0,
        };
        for i in 0..30 {
            kmsg.send(Level::Info, &format!("steward: line {i}"), start);
        }
        kmsg.send(
            Level::Warning,
            "steward: later",
            start + Duration::from_secs(1),
        );
        let mut buf = vec![0u8; 4096];
        let n = rustix::io::read(&read, &mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let records: Vec<&str> = text.split('<').skip(1).collect();
        assert_eq!(records.len(), 12, "{text}");
        assert_eq!(records[0], "30>steward: line 0");
        assert_eq!(records[9], "30>steward: line 9");
        assert_eq!(
            records[10],
            "28>steward: 20 log lines were not sent to the kernel log (rate limit)"
        );
        assert_eq!(records[11], "28>steward: later");
    }
}
