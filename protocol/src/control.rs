//! The control protocol between `stewardctl` and the manager: one request per connection, then
//! one reply (or, for `logs --follow`, a stream of replies until the client goes away).
//!
//! Each message is a frame: a little-endian `u32` length, then the bincode encoding of an
//! [`Envelope`] carrying [`CONTROL_VERSION`]. Frames larger than [`MAX_FRAME`] are refused, so a
//! garbage length cannot make either side allocate without bound.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// Bumped whenever [`Request`] or [`Reply`] changes shape.
pub const CONTROL_VERSION: u32 = 5;
/// The largest frame payload either side accepts.
pub const MAX_FRAME: usize = 4 << 20;

/// A versioned message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`CONTROL_VERSION`] of the sender.
    pub version: u32,
    /// The message.
    pub body: T,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The state of every service, or of the named ones (with details).
    Status {
        /// Services to show in detail; empty for all, in short.
        names: Vec<String>,
    },
    /// Start services (and what they require).
    Start {
        /// Their names.
        names: Vec<String>,
        /// Answer once each is ready or failed ([`Reply::Settled`] as each one settles),
        /// rather than at once.
        wait: bool,
    },
    /// Stop services (and what requires them).
    Stop {
        /// Their names.
        names: Vec<String>,
        /// Answer once each is at rest, rather than at once.
        wait: bool,
    },
    /// Restart services (and what requires them).
    Restart {
        /// Their names.
        names: Vec<String>,
        /// Answer once each is ready again or failed, rather than at once.
        wait: bool,
    },
    /// A service's captured output.
    Logs {
        /// The service.
        name: String,
        /// The last N lines; `None` for every kept line.
        lines: Option<u32>,
        /// Keep streaming new lines.
        follow: bool,
    },
    /// Re-read the config.
    Reload,
    /// Replace the manager with the binary now on disk.
    Reexec,
    /// Stop every service and exit.
    Shutdown,
    /// As PID 1: stop everything and power off.
    Poweroff,
    /// As PID 1: stop everything and reboot.
    Reboot,
    /// The manager's version.
    Version,
    /// For tests: a fault on purpose, which only a manager built with the `fault-injection`
    /// feature makes; any other refuses.
    Debug(Fault),
}

/// A fault a test asks a `fault-injection` manager for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Panic in the loop.
    Panic,
    /// Stop running the loop for good, without exiting.
    Hang,
}

/// What the manager answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done; a line for the user.
    Done {
        /// What was done.
        message: String,
    },
    /// Refused or failed (unknown service, not allowed, …).
    Error {
        /// Why.
        message: String,
    },
    /// The answer to [`Request::Status`].
    Status(Status),
    /// Log lines, oldest first. With `follow`, more of these come as lines arrive.
    Logs {
        /// The lines.
        lines: Vec<LogLine>,
        /// Lines dropped from the ring since the service started (oldest first).
        dropped: u64,
        /// When more lines were asked for than the ring holds, and `log_dir` has files: the
        /// parts of them that hold the older lines, oldest first, for the client to read
        /// itself (a slow disk then stalls the client, never the manager).
        files: Vec<LogFilePart>,
    },
    /// The config was re-read and applied.
    Reloaded {
        /// Services that are new.
        added: Vec<String>,
        /// Services that are gone.
        removed: Vec<String>,
        /// Services whose config changed, restarted.
        restarted: Vec<String>,
    },
    /// The new config is broken; nothing was changed.
    ReloadFailed {
        /// Every error, as `FILE:LINE:COL: message`.
        errors: Vec<String>,
    },
    /// The manager's version.
    Version {
        /// Its package version.
        version: String,
        /// Its [`CONTROL_VERSION`].
        protocol: u32,
    },
    /// A waiting `start`, `stop` or `restart`: one service has settled. More of these come,
    /// then a [`Reply::Done`] or, when one failed, a [`Reply::Error`] naming the first.
    Settled {
        /// The service.
        name: String,
        /// Where it settled.
        state: String,
        /// Why it failed, when it did.
        failure: Option<String>,
    },
    /// The manager re-executed and the new one serves.
    Reexeced {
        /// The version that was running.
        old: String,
        /// The version now running.
        new: String,
    },
}

/// The whole status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The manager's pid.
    pub manager_pid: u32,
    /// The manager's version.
    pub version: String,
    /// The services asked about, in config order.
    pub services: Vec<ServiceStatus>,
}

/// One service's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// `inactive`, `listening`, `starting`, `running`, `exited`, `restarting`, `stopping` or
    /// `failed`.
    pub state: String,
    /// Its main process.
    pub pid: Option<i32>,
    /// Seconds since the epoch when it entered its state.
    pub since: u64,
    /// Automatic restarts since it was last started by hand or at boot.
    pub restarts: u32,
    /// Its cgroup's memory use, when known.
    pub memory_bytes: Option<u64>,
    /// Its sockets.
    pub sockets: Vec<SocketStatus>,
    /// Accept mode: its running instances.
    pub instances: Vec<InstanceStatus>,
    /// Accept mode: how many instances were started since steward was (reexecs included).
    pub instances_started: Option<u32>,
    /// How its last process ended.
    pub last_exit: Option<ExitStatus>,
    /// Its last failure.
    pub failure: Option<FailureStatus>,
    /// What it last said with `STATUS=` (sd_notify).
    pub status_text: Option<String>,
    /// A `starting` service waiting for its dependencies: their names.
    pub waiting_for: Vec<String>,
    /// A service failed at its start limit: seconds since the epoch when it is tried again
    /// (`start_limit_cooldown`).
    pub retry_at: Option<u64>,
    /// Its fd store: the name of each stored fd, in the order they were stored.
    pub stored_fds: Vec<String>,
    /// The last log lines (only when the service was named).
    pub log_tail: Vec<LogLine>,
}

/// A socket of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStatus {
    /// Its `LISTEN_FDNAMES` name.
    pub name: String,
    /// Its path or address.
    pub address: String,
}

/// An accept-mode instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// `NAME@N`.
    pub name: String,
    /// Its pid.
    pub pid: i32,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// A service's last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureStatus {
    /// The executor step that failed, or `None` when the service itself failed.
    pub step: Option<String>,
    /// What went wrong.
    pub reason: String,
    /// The exit status, when the process exited.
    pub status: Option<i32>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line a service wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the manager read it: microseconds since the epoch.
    pub time_us: u64,
    /// `NAME`, or `NAME@N` for an accept instance.
    pub name: String,
    /// The process that wrote it, as far as the manager knows.
    pub pid: i32,
    /// Its stream.
    pub stream: Stream,
    /// The line, without its newline.
    pub text: String,
}

/// The start of one of the manager's log files, whose lines are all older than those sent
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilePart {
    /// The file's path when the reply was made (`NAME.log` or `NAME.log.N` in `log_dir`).
    pub path: String,
    /// Its inode: a rotation since the reply may have renamed it to a later `NAME.log.N`.
    pub inode: u64,
    /// How many bytes from its start hold those lines.
    pub len: u64,
}

impl LogLine {
    /// `TIMESTAMP NAME[PID] stdout|stderr: text`: as `stewardctl logs` prints it, and as the
    /// log files of `log_dir` hold it.
    pub fn render(&self) -> String {
        alloc::format!(
            "{} {}[{}] {}: {}",
            timestamp(self.time_us),
            self.name,
            self.pid,
            self.stream.name(),
            self.text
        )
    }

    /// Reads back a line [`LogLine::render`] wrote.
    pub fn parse(line: &str) -> Option<LogLine> {
        let (time, rest) = line.split_once(' ')?;
        let time_us = parse_timestamp(time)?;
        let (name, rest) = rest.split_once('[')?;
        let (pid, rest) = rest.split_once("] ")?;
        let (stream, text) = rest.split_once(": ")?;
        let stream = match stream {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => return None,
        };
        Some(LogLine {
            time_us,
            name: name.to_string(),
            pid: pid.parse().ok()?,
            stream,
            text: text.to_string(),
        })
    }
}

/// Days since 1970-01-01 as a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`: shift the year to start in March so the leap day is the last day of it,
/// then count 400-year eras (146097 days each), years within the era, and days within the year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`] (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmmmmZ`.
pub fn timestamp(time_us: u64) -> String {
    let secs = time_us / 1_000_000;
    let micros = time_us % 1_000_000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    alloc::format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Reads back a [`timestamp`].
fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 27 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'.' {
        return None;
    }
    let num = |range: core::ops::Range<usize>| -> Option<u64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, s, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !text.ends_with('Z') || !(1..=12).contains(&month) || day == 0 || day > 31 {
        return None;
    }
    let days = days_from_civil(year as i64, month as u32, day as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(secs * 1_000_000 + us)
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// A message as a frame: length, then the versioned payload.
pub fn encode_frame<T: Serialize>(body: &T) -> Vec<u8> {
    let envelope = Envelope {
        version: CONTROL_VERSION,
        body,
    };
    let payload = bincode::serde::encode_to_vec(&envelope, config()).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads one frame from the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// message and how many bytes it took.
pub fn decode_frame<T: serde::de::DeserializeOwned>(
    buf: &[u8],
) -> Result<Option<(T, usize)>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::Oversized {
            len,
            max: MAX_FRAME,
        });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let payload = &buf[4..4 + len];
    let (envelope, used): (Envelope<T>, usize) =
        bincode::serde::decode_from_slice(payload, config()).map_err(|e| {
            DecodeError::Malformed {
                reason: e.to_string(),
            }
        })?;
    if used != len {
        return Err(DecodeError::TrailingBytes { count: len - used });
    }
    if envelope.version != CONTROL_VERSION {
        return Err(DecodeError::Version {
            found: envelope.version,
            expected: CONTROL_VERSION,
        });
    }
    Ok(Some((envelope.body, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn requests_and_replies_round_trip() {
        let requests = vec![
            Request::Status { names: vec![] },
            Request::Logs {
                name: "web".into(),
                lines: Some(10),
                follow: true,
            },
            Request::Reload,
            Request::Version,
        ];
        for r in requests {
            let frame = encode_frame(&r);
            let (back, used): (Request, usize) = decode_frame(&frame).unwrap().unwrap();
            assert_eq!(back, r);
            assert_eq!(used, frame.len());
        }
        let reply = Reply::Reloaded {
            added: vec!["a".into()],
            removed: vec![],
            restarted: vec!["b".into()],
        };
        let frame = encode_frame(&reply);
        let (back, _): (Reply, usize) = decode_frame(&frame).unwrap().unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn log_lines_read_back_as_rendered() {
        let line = LogLine {
            time_us: 1_790_000_123_456_789,
            name: "echo@7".into(),
            pid: 412,
            stream: Stream::Stderr,
            text: "a: b [c] d".into(),
        };
        let text = line.render();
        assert_eq!(
            text,
            "2026-09-21T14:15:23.456789Z echo@7[412] stderr: a: b [c] d"
        );
        assert_eq!(LogLine::parse(&text), Some(line));
        for days in [-1, 0, 59, 11_016, 19_782, 47_541] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(LogLine::parse("not a line"), None);
        assert_eq!(
            LogLine::parse("2026-13-21T14:15:23.456789Z a[1] stdout: x"),
            None
        );
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let frame = encode_frame(&Request::Shutdown);
        for cut in 0..frame.len() {
            assert_eq!(decode_frame::<Request>(&frame[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(
            decode_frame::<Request>(&huge),
            Err(DecodeError::Oversized { .. })
        ));
        let mut garbage = vec![8, 0, 0, 0];
        garbage.extend_from_slice(&[0xff; 8]);
        assert!(decode_frame::<Request>(&garbage).is_err());
        let mut other = encode_frame(&Request::Version);
        other[4] = 99; // the version varint
        assert!(decode_frame::<Request>(&other).is_err());
    }
}
