//! The three formats that cross a process boundary: the spawn state the manager hands to
//! `steward-executor` (with the status report the executor sends back when a step fails), the
//! control protocol between `stewardctl` and the manager ([`control`]), and the manager state
//! a `reexec` hands to the next binary ([`reexec`]).
//!
//! The executor needs the spawn format alone: it depends on this crate without the default
//! features `control` and `reexec`, so a change to either of those does not rebuild it.
//!
//! The manager writes an encoded [`SpawnState`] into a sealed memfd; the executor decodes it,
//! applies it and execs the service. Everything in it is a number or a path: the executor does
//! no name lookups. The encoding is one serde schema for both directions, behind a small header
//! (magic, version, length) so that a stale or foreign executor fails loudly instead of
//! misreading the state.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(feature = "control")]
pub mod control;
#[cfg(feature = "reexec")]
pub mod reexec;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The first bytes of every encoded spawn state.
pub const MAGIC: [u8; 4] = *b"STWD";
/// Bumped whenever [`SpawnState`] or the [`handover`] changes shape; the executor refuses any
/// other.
pub const VERSION: u32 = 8;
/// magic + version + payload length.
pub const HEADER_LEN: usize = 12;

/// What an executor binary carries, followed by its [`VERSION`] in decimal, so that a manager
/// can tell which protocol a file speaks by reading it, without running it.
pub const EXECUTOR_MARKER: &[u8] = b"steward-executor-protocol=";

/// [`EXECUTOR_MARKER`], [`VERSION`] in decimal, then NULs: the executor embeds exactly this.
pub const EXECUTOR_MARKER_BYTES: [u8; 40] = executor_marker();

const fn executor_marker() -> [u8; 40] {
    let mut out = [0u8; 40];
    let mut i = 0;
    while i < EXECUTOR_MARKER.len() {
        out[i] = EXECUTOR_MARKER[i];
        i += 1;
    }
    let mut digits = [0u8; 10];
    let mut n = VERSION;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    while count > 0 {
        count -= 1;
        out[i] = digits[count];
        i += 1;
    }
    out
}
/// The largest payload either side accepts. A real state is a few KiB; the bound keeps a
/// corrupt length from making the executor allocate without limit.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Everything the executor needs to turn itself into a service process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnState {
    /// The service's name, used only in messages.
    pub name: String,
    /// The program to execute: an absolute path.
    pub path: String,
    /// The argument vector, `argv[0]` included.
    pub argv: Vec<String>,
    /// The complete environment as `KEY=VALUE`, except the variables in `pid_vars`.
    pub env: Vec<String>,
    /// Variables to set to the executor's own pid, which only it can know: `LISTEN_PID` (when
    /// the service gets sockets), `WATCHDOG_PID` (with a `watchdog`).
    pub pid_vars: Vec<String>,
    /// What fds 0, 1 and 2 become.
    pub stdio: [Stdio; 3],
    /// Executor fds to place at 3, 4, … in this order, with FD_CLOEXEC and O_NONBLOCK clear.
    pub fds: Vec<i32>,
    /// Executor fds to place at fixed numbers above those (the write end of a readiness pipe
    /// at the `N` of `ready = "fd:N"`), with FD_CLOEXEC clear. Every other fd is closed.
    pub fds_at: Vec<FdAt>,
    /// The write end of the status pipe (close-on-exec): a [`StatusReport`] is written here when a
    /// step fails; a successful exec closes it.
    pub status_fd: i32,
    /// The working directory of the service.
    pub working_directory: String,
    /// The umask of the service.
    pub umask: u32,
    /// Credentials to switch to; `None` keeps the manager's.
    pub credentials: Option<Credentials>,
    /// Resource limits; soft and hard are both set to the value.
    pub rlimits: Vec<Rlimit>,
    /// cgroup directories the executor moves itself into before exec (one per hierarchy:
    /// several on cgroup v1).
    pub cgroups: Vec<String>,
    /// Signals whose disposition the executor must set back to the default: those the manager
    /// ignores, which (unlike caught ones) stay ignored across exec. Every other signal is at
    /// its default already, so the executor spends no system call on it.
    pub reset_signals: Vec<i32>,
}

/// An fd to place at a fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdAt {
    /// The executor's fd.
    pub source: i32,
    /// Where the service finds it.
    pub target: i32,
}

/// What one of the fds 0, 1, 2 of the service becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdio {
    /// Left as the executor received it.
    Inherit,
    /// `/dev/null`, opened read-write.
    Null,
    /// A duplicate of this executor fd.
    Fd(i32),
    /// A file opened read-write (created 0640 and appended to if missing); a tty becomes the
    /// controlling terminal.
    Path(String),
}

/// Numeric credentials, resolved by the manager for this spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id.
    pub gid: u32,
    /// The complete supplementary group list.
    pub groups: Vec<u32>,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The `RLIMIT_*` number.
    pub resource: u32,
    /// Soft and hard limit; [`RLIM_INFINITY`] for none.
    pub value: u64,
}

/// The value of an unlimited [`Rlimit`].
pub const RLIM_INFINITY: u64 = u64::MAX;

/// A step of the executor, in the order it runs them. Each failing step has systemd's exit
/// status for it, so tools that know systemd's numbers read ours too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Reading and decoding the spawn state.
    Deserialize = 1,
    /// Placing the service's fds and closing all others.
    Fds,
    /// Resetting the signal mask and dispositions.
    Signals,
    /// Starting a new session.
    Setsid,
    /// Setting up fd 0.
    Stdin,
    /// Setting up fd 1.
    Stdout,
    /// Setting up fd 2.
    Stderr,
    /// Applying resource limits.
    Limits,
    /// Changing to the working directory.
    Chdir,
    /// Joining the service's cgroup.
    Cgroup,
    /// Setting the supplementary groups and group id.
    Group,
    /// Setting the user id.
    User,
    /// Executing the service.
    Exec,
    /// The manager's, just before the spawn: making the service's `runtime_directory`.
    RuntimeDirectory,
    /// The manager's: making its `state_directory`.
    StateDirectory,
    /// The manager's: making its `cache_directory`.
    CacheDirectory,
    /// The manager's: making its `logs_directory`.
    LogsDirectory,
}

impl Step {
    const ALL: [Step; 17] = [
        Step::Deserialize,
        Step::Fds,
        Step::Signals,
        Step::Setsid,
        Step::Stdin,
        Step::Stdout,
        Step::Stderr,
        Step::Limits,
        Step::Chdir,
        Step::Cgroup,
        Step::Group,
        Step::User,
        Step::Exec,
        Step::RuntimeDirectory,
        Step::StateDirectory,
        Step::CacheDirectory,
        Step::LogsDirectory,
    ];

    /// The exit status of an executor that failed at this step (systemd's `EXIT_*` numbers).
    pub fn exit_code(self) -> u8 {
        match self {
            Step::Deserialize => 1,
            Step::Chdir => 200,
            Step::Fds => 202,
            Step::Exec => 203,
            Step::Limits => 205,
            Step::Signals => 207,
            Step::Stdin => 208,
            Step::Stdout => 209,
            Step::Group => 216,
            Step::User => 217,
            Step::Cgroup => 219,
            Step::Setsid => 220,
            Step::Stderr => 222,
            Step::RuntimeDirectory => 233,
            Step::StateDirectory => 238,
            Step::CacheDirectory => 239,
            Step::LogsDirectory => 240,
        }
    }

    /// The name used in `failed at STEP` messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Deserialize => "deserialize",
            Step::Fds => "fds",
            Step::Signals => "signals",
            Step::Setsid => "setsid",
            Step::Stdin => "stdin",
            Step::Stdout => "stdout",
            Step::Stderr => "stderr",
            Step::Limits => "limits",
            Step::Chdir => "chdir",
            Step::Cgroup => "cgroup",
            Step::Group => "group",
            Step::User => "user",
            Step::Exec => "exec",
            Step::RuntimeDirectory => "runtime_directory",
            Step::StateDirectory => "state_directory",
            Step::CacheDirectory => "cache_directory",
            Step::LogsDirectory => "logs_directory",
        }
    }

    /// The step with this number (its systemd exit status), if there is one.
    pub fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }
}

/// What the executor writes to the status pipe when a step fails: the step and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusReport {
    /// The step that failed.
    pub step: Step,
    /// The `errno` it failed with.
    pub errno: i32,
}

impl StatusReport {
    /// The size of an encoded report: small enough for one atomic pipe write.
    pub const LEN: usize = 8;

    /// The report as written to the pipe.
    pub fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&(self.step as u32).to_le_bytes());
        out[4..].copy_from_slice(&self.errno.to_le_bytes());
        out
    }

    /// Reads a report; anything but exactly [`Self::LEN`] bytes naming a known step is refused.
    pub fn decode(bytes: &[u8]) -> Result<StatusReport, DecodeError> {
        let bytes: [u8; Self::LEN] = bytes.try_into().map_err(|_| DecodeError::Truncated {
            needed: Self::LEN,
            got: bytes.len(),
        })?;
        let step = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let errno = i32::from_le_bytes(bytes[4..].try_into().expect("4 bytes"));
        let step = Step::from_u32(step).ok_or(DecodeError::Malformed {
            reason: "unknown step number".to_string(),
        })?;
        Ok(StatusReport { step, errno })
    }
}

/// Why a spawn state could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The payload would exceed [`MAX_PAYLOAD`].
    #[error("spawn state is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The serializer failed.
    #[error("spawn state could not be encoded: {reason}")]
    Encode {
        /// The serializer's message.
        reason: String,
    },
}

/// Why bytes could not be decoded into a spawn state or status report.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or the header's length promise.
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The input does not start with [`MAGIC`].
    #[error("not a steward spawn state (bad magic)")]
    BadMagic,
    /// Written by a manager speaking another protocol version.
    #[error("protocol version {found}, this executor speaks {expected}")]
    Version {
        /// The version in the header.
        found: u32,
        /// [`VERSION`].
        expected: u32,
    },
    /// The header announces more than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes announced, more than the limit of {max}")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the announced payload, or after the decoded value inside it.
    #[error("{count} trailing bytes after the spawn state")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The payload does not decode as a spawn state.
    #[error("malformed spawn state: {reason}")]
    Malformed {
        /// The deserializer's message.
        reason: String,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Encodes a spawn state with its header.
pub fn encode(state: &SpawnState) -> Result<Vec<u8>, EncodeError> {
    let payload =
        bincode::serde::encode_to_vec(state, config()).map_err(|e| EncodeError::Encode {
            reason: e.to_string(),
        })?;
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::TooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(with_header(MAGIC, VERSION, &payload))
}

/// `magic`, `version` and the payload's length (all little-endian), then the payload: the
/// header both the spawn state and the manager state carry.
#[cfg_attr(not(feature = "reexec"), allow(dead_code))]
pub(crate) fn with_header(magic: [u8; 4], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The most fds one [`handover`] carries: the kernel passes at most 253 in one message
/// (`SCM_MAX_FD`).
pub const MAX_HANDOVER_FDS: usize = 250;

/// The largest [`handover`] message: it travels as one datagram of a socket pair, which the
/// socket's buffer must hold whole. A bigger spawn state goes to a fresh executor in a memfd.
pub const MAX_HANDOVER: usize = 64 * 1024;

/// When a pooled executor applies the spawn state it is handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At once.
    Now,
    /// Accept mode, armed: once it has accepted a connection on the listening socket at fd
    /// `listener` (a number of the spawn state), which it does itself, so that a connection
    /// wakes only the executor. It reports [`ACCEPTED`] on the pool socket first, and goes
    /// back to waiting if another process took the connection. The connection takes the
    /// listener's number, and fills the environment's `REMOTE_*` placeholders
    /// ([`REMOTE_PLACEHOLDER`]). The manager disarms it by shutting down its end for writing,
    /// upon which it exits 0 unless it has already reported.
    OnConnection {
        /// The listening socket's number in the spawn state.
        listener: i32,
    },
    /// A lazy service, armed: once a client is waiting on any of the listening sockets at
    /// `listeners` (numbers of the spawn state). It accepts nothing (the service does), reports
    /// [`READABLE`] on the pool socket first, and goes on as one started [`Start::Now`]. The
    /// manager disarms it as an [`Start::OnConnection`] one.
    OnReadable {
        /// The listening sockets' numbers in the spawn state.
        listeners: Vec<i32>,
    },
    /// A keep-alive service's next main process, armed: it takes every step but the exec at
    /// once (a failing one is reported then, as ever), then waits for the manager's [`GO`] on
    /// the pool socket and execs, so that a restart costs one message and one exec. The
    /// manager disarms it as an [`Start::OnConnection`] one; it reports nothing then.
    OnWord,
}

/// What the manager writes on an executor's pool socket to start the process it was armed for
/// with [`Start::OnWord`].
pub const GO: [u8; 2] = *b"GO";

/// What an armed lazy executor writes on the pool socket when a client is waiting, before
/// anything else: 8 bytes, as [`ACCEPTED`].
pub const READABLE: [u8; StatusReport::LEN] = *b"READABLE";

/// What an armed executor writes on the pool socket when it has accepted its connection,
/// before anything else: 8 bytes, like a [`StatusReport`], and never one (no step is numbered
/// so).
pub const ACCEPTED: [u8; StatusReport::LEN] = *b"ACCEPTED";

/// The value of a `REMOTE_*` variable whose peer only an armed executor knows: it replaces it
/// with the peer's address, port, pid, uid or gid, or drops the variable when the peer has
/// none to give. A NUL can reach no exec, so an unfilled one is never mistaken for a value.
pub const REMOTE_PLACEHOLDER: &str = "\0";

/// The one message a pooled executor (`steward-executor --pooled FD`) receives: the count and
/// the manager's numbers of the fds that come with it, in the order they travel, when to start
/// ([`Start`]: the listener's number; -1 for now; -2 for readable, followed by the count and
/// the numbers of the listeners; -3 on the word), then the encoded spawn state. The numbers
/// tell the executor where each received fd belongs, since the spawn state names fds by the
/// manager's numbers: after renumbering, the executor sees what a freshly spawned one would.
pub fn handover(numbers: &[i32], start: &Start, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 4 * numbers.len() + state.len());
    push_numbers(&mut out, numbers);
    match start {
        Start::Now => out.extend_from_slice(&(-1i32).to_le_bytes()),
        Start::OnConnection { listener } => out.extend_from_slice(&listener.to_le_bytes()),
        Start::OnReadable { listeners } => {
            out.extend_from_slice(&(-2i32).to_le_bytes());
            push_numbers(&mut out, listeners);
        }
        Start::OnWord => out.extend_from_slice(&(-3i32).to_le_bytes()),
    }
    out.extend_from_slice(state);
    out
}

/// The count of `numbers`, then each, as [`numbers_at`] reads them.
fn push_numbers(out: &mut Vec<u8>, numbers: &[i32]) {
    out.extend_from_slice(&(numbers.len() as u32).to_le_bytes());
    for n in numbers {
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// A count (at most [`MAX_HANDOVER_FDS`]) and that many numbers at `at` in `bytes`; the numbers
/// and where they end.
fn numbers_at(bytes: &[u8], at: usize) -> Result<(Vec<i32>, usize), DecodeError> {
    let truncated = |needed| DecodeError::Truncated {
        needed,
        got: bytes.len(),
    };
    let count = bytes.get(at..at + 4).ok_or(truncated(at + 4))?;
    let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
    if count > MAX_HANDOVER_FDS {
        return Err(DecodeError::Malformed {
            reason: alloc::format!("{count} fds announced, more than {MAX_HANDOVER_FDS}"),
        });
    }
    let end = at + 4 + 4 * count;
    let numbers = bytes.get(at + 4..end).ok_or(truncated(end))?;
    let numbers = numbers
        .chunks_exact(4)
        .map(|n| i32::from_le_bytes(n.try_into().expect("4 bytes")))
        .collect();
    Ok((numbers, end))
}

/// Splits a [`handover`] into the fd numbers, when to start and the encoded spawn state.
pub fn split_handover(bytes: &[u8]) -> Result<(Vec<i32>, Start, &[u8]), DecodeError> {
    let (numbers, end) = numbers_at(bytes, 0)?;
    let word = bytes.get(end..end + 4).ok_or(DecodeError::Truncated {
        needed: end + 4,
        got: bytes.len(),
    })?;
    let foreign = |n: i32| DecodeError::Malformed {
        reason: alloc::format!("listener {n} is none of the fds handed over"),
    };
    let (start, end) = match i32::from_le_bytes(word.try_into().expect("4 bytes")) {
        -1 => (Start::Now, end + 4),
        -3 => (Start::OnWord, end + 4),
        -2 => {
            let (listeners, end) = numbers_at(bytes, end + 4)?;
            if let Some(&n) = listeners.iter().find(|n| !numbers.contains(n)) {
                return Err(foreign(n));
            }
            (Start::OnReadable { listeners }, end)
        }
        listener if numbers.contains(&listener) => (Start::OnConnection { listener }, end + 4),
        other => return Err(foreign(other)),
    };
    Ok((numbers, start, &bytes[end..]))
}

/// Checks a header and returns the payload length it announces; the executor calls this on the
/// first [`HEADER_LEN`] bytes before reading the rest.
pub fn decode_header(header: &[u8]) -> Result<usize, DecodeError> {
    if header.len() < HEADER_LEN {
        // A short input that does not even start like a state is more usefully called foreign.
        if !MAGIC.starts_with(&header[..header.len().min(MAGIC.len())]) {
            return Err(DecodeError::BadMagic);
        }
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            got: header.len(),
        });
    }
    if header[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(DecodeError::Version {
            found: version,
            expected: VERSION,
        });
    }
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::Oversized {
            len,
            max: MAX_PAYLOAD,
        });
    }
    Ok(len)
}

/// Decodes a complete encoded spawn state: header, payload, and nothing after it.
pub fn decode(bytes: &[u8]) -> Result<SpawnState, DecodeError> {
    let len = decode_header(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() < len {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN + len,
            got: bytes.len(),
        });
    }
    if payload.len() > len {
        return Err(DecodeError::TrailingBytes {
            count: payload.len() - len,
        });
    }
    let (state, used): (SpawnState, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { .. } => DecodeError::Truncated {
            needed: HEADER_LEN + len + 1,
            got: bytes.len(),
        },
        other => DecodeError::Malformed {
            reason: other.to_string(),
        },
    })?;
    if used != len {
        return Err(DecodeError::TrailingBytes { count: len - used });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;

    fn sample() -> SpawnState {
        SpawnState {
            name: "echo".into(),
            path: "/usr/libexec/echo-server".into(),
            argv: vec!["/usr/libexec/echo-server".into(), "--verbose".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "LISTEN_FDS=2".into()],
            pid_vars: vec!["LISTEN_PID".into()],
            stdio: [Stdio::Null, Stdio::Fd(7), Stdio::Path("/dev/tty1".into())],
            fds: vec![9, 10],
            status_fd: 11,
            working_directory: "/var/empty".into(),
            umask: 0o027,
            credentials: Some(Credentials {
                uid: 65534,
                gid: 65534,
                groups: vec![20, 44],
            }),
            rlimits: vec![
                Rlimit {
                    resource: 7,
                    value: 1024,
                },
                Rlimit {
                    resource: 9,
                    value: RLIM_INFINITY,
                },
            ],
            cgroups: vec!["/sys/fs/cgroup/steward/echo".into()],
            fds_at: Vec::new(),
            reset_signals: vec![13],
        }
    }

    #[test]
    fn round_trip() {
        let state = sample();
        let bytes = encode(&state).unwrap();
        assert_eq!(decode(&bytes).unwrap(), state);
    }

    #[test]
    fn handover_round_trip_and_refusals() {
        let state = encode(&sample()).unwrap();
        let message = handover(&[7, 12, 40], &Start::Now, &state);
        let (numbers, start, rest) = split_handover(&message).unwrap();
        assert_eq!(numbers, [7, 12, 40]);
        assert_eq!(start, Start::Now);
        assert_eq!(decode(rest).unwrap(), sample());
        let armed = handover(&[7, 12], &Start::OnConnection { listener: 12 }, &state);
        let (_, start, rest) = split_handover(&armed).unwrap();
        assert_eq!(start, Start::OnConnection { listener: 12 });
        assert_eq!(decode(rest).unwrap(), sample());
        let lazy = Start::OnReadable {
            listeners: vec![7, 12],
        };
        let message = handover(&[7, 12, 3], &lazy, &state);
        let (numbers, start, rest) = split_handover(&message).unwrap();
        assert_eq!((numbers, start), (vec![7, 12, 3], lazy));
        assert_eq!(decode(rest).unwrap(), sample());
        let restart = handover(&[7], &Start::OnWord, &state);
        let (numbers, start, rest) = split_handover(&restart).unwrap();
        assert_eq!((numbers, start), (vec![7], Start::OnWord));
        assert_eq!(decode(rest).unwrap(), sample());
        for start in [
            Start::OnConnection { listener: 8 },
            Start::OnReadable {
                listeners: vec![7, 8],
            },
        ] {
            assert!(matches!(
                split_handover(&handover(&[7], &start, &state)),
                Err(DecodeError::Malformed { .. })
            ));
        }
        assert!(matches!(
            split_handover(&message[..6]),
            Err(DecodeError::Truncated { needed: 16, .. })
        ));
        assert!(matches!(
            split_handover(&message[..17]),
            Err(DecodeError::Truncated { needed: 20, .. })
        ));
        assert!(matches!(
            split_handover(&9999u32.to_le_bytes()),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            split_handover(b""),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn round_trip_minimal() {
        let state = SpawnState {
            name: "x".into(),
            path: "/bin/true".into(),
            argv: vec!["/bin/true".into()],
            env: vec![],
            pid_vars: Vec::new(),
            stdio: [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
            fds: vec![],
            status_fd: 3,
            working_directory: "/".into(),
            umask: 0o022,
            credentials: None,
            rlimits: vec![],
            cgroups: vec![],
            fds_at: Vec::new(),
            reset_signals: vec![],
        };
        assert_eq!(decode(&encode(&state).unwrap()).unwrap(), state);
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = b'X';
        assert_eq!(decode(&bytes), Err(DecodeError::BadMagic));
        assert_eq!(decode(b"garbage"), Err(DecodeError::BadMagic));
    }

    #[test]
    fn rejects_other_version() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[4..8].copy_from_slice(&(VERSION + 1).to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::Version {
                found: VERSION + 1,
                expected: VERSION
            })
        );
    }

    #[test]
    fn rejects_truncated() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&bytes[..6]),
            Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: 6
            })
        ));
        assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn rejects_oversized() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[8..12].copy_from_slice(&((MAX_PAYLOAD + 1) as u32).to_le_bytes());
        assert!(matches!(decode(&bytes), Err(DecodeError::Oversized { .. })));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.extend_from_slice(b"xyz");
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 3 }));
    }

    #[test]
    fn rejects_trailing_bytes_inside_payload() {
        // A header whose length covers more than the value: the extra bytes are not ignored.
        let mut bytes = encode(&sample()).unwrap();
        bytes.extend_from_slice(&[0, 0]);
        let len = (bytes.len() - HEADER_LEN) as u32;
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 2 }));
    }

    #[test]
    fn rejects_malformed_payload() {
        let mut bytes = encode(&sample()).unwrap();
        // The stdio enum's tag: out of range makes the payload undecodable.
        let payload = vec![0xff; 40];
        bytes.truncate(HEADER_LEN);
        bytes[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::Malformed { .. }) | Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn encode_refuses_too_large() {
        let mut state = sample();
        state.env = vec![String::from_utf8(vec![b'a'; MAX_PAYLOAD]).unwrap()];
        assert!(matches!(encode(&state), Err(EncodeError::TooLarge { .. })));
    }

    #[test]
    fn status_report_round_trip() {
        for step in Step::ALL {
            let report = StatusReport { step, errno: 2 };
            assert_eq!(StatusReport::decode(&report.encode()), Ok(report));
        }
        assert!(StatusReport::decode(&[1, 2, 3]).is_err());
        assert!(StatusReport::decode(&[99, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn exit_codes_are_systemds() {
        assert_eq!(Step::Chdir.exit_code(), 200);
        assert_eq!(Step::Exec.exit_code(), 203);
        assert_eq!(Step::Limits.exit_code(), 205);
        assert_eq!(Step::Group.exit_code(), 216);
        assert_eq!(Step::User.exit_code(), 217);
        assert_eq!(Step::Cgroup.exit_code(), 219);
        assert_eq!(Step::RuntimeDirectory.exit_code(), 233);
        assert_eq!(Step::StateDirectory.exit_code(), 238);
        assert_eq!(Step::CacheDirectory.exit_code(), 239);
        assert_eq!(Step::LogsDirectory.exit_code(), 240);
    }
}
