//! Reading the spawn state from the memfd the manager passed, or, for a pooled executor, from
//! the one message the manager sends it.

use alloc::vec;
use core::fmt;

use rustix::fd::RawFd;
use steward_protocol::{DecodeError, HEADER_LEN, MAX_PAYLOAD, SpawnState};

use crate::sys::{self, Errno};

/// Why the spawn state could not be read. There is no status pipe to report on yet: the
/// executor says this on stderr and exits 1.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The `--deserialize` argument is not an fd number.
    NotAnFd,
    /// fstat or pread failed.
    Os(Errno),
    /// Not a memfd or regular file: nothing with a size to read from offset 0.
    NotAFile,
    /// Bigger than any state the manager may write.
    TooLarge { size: u64 },
    /// The file ended before its size said it would.
    ShortRead { size: u64, read: u64 },
    /// The bytes are not a spawn state of our protocol version.
    Decode(DecodeError),
    /// A handover's fds are not the ones its numbers announce.
    FdCount { announced: usize, received: usize },
    /// The received fds could not be put at their numbers.
    Renumber(Errno),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotAnFd => write!(f, "not a file descriptor number"),
            ReadError::Os(errno) => write!(f, "{errno}"),
            ReadError::NotAFile => write!(f, "not a memfd or regular file"),
            ReadError::TooLarge { size } => write!(
                f,
                "{size} bytes, more than the limit of {}",
                HEADER_LEN + MAX_PAYLOAD
            ),
            ReadError::ShortRead { size, read } => {
                write!(f, "ended after {read} of {size} bytes")
            }
            ReadError::Decode(e) => write!(f, "{e}"),
            ReadError::FdCount {
                announced,
                received,
            } => write!(f, "{announced} fds announced, {received} received"),
            ReadError::Renumber(errno) => write!(f, "renumbering the received fds: {errno}"),
        }
    }
}

/// Parses the fd argument of `--deserialize`.
pub fn parse_fd(arg: &str) -> Result<RawFd, ReadError> {
    // Digits only: `+3` or ` 3` is not what the manager writes.
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReadError::NotAnFd);
    }
    arg.parse().map_err(|_| ReadError::NotAnFd)
}

/// Reads and decodes the whole state from `fd`, from offset 0 whatever the file position.
pub fn read(fd: RawFd) -> Result<SpawnState, ReadError> {
    let info = sys::fstat(fd).map_err(ReadError::Os)?;
    if !info.is_regular {
        return Err(ReadError::NotAFile);
    }
    let size = info.size;
    let limit = (HEADER_LEN + MAX_PAYLOAD) as u64;
    if size > limit {
        return Err(ReadError::TooLarge { size });
    }
    // Bounded by `limit` just above, so it fits in memory and in usize.
    let mut bytes = vec![0u8; usize::try_from(size).map_err(|_| ReadError::TooLarge { size })?];
    let mut read = 0;
    while read < bytes.len() {
        match sys::pread(fd, &mut bytes[read..], read as u64) {
            Ok(0) => {
                return Err(ReadError::ShortRead {
                    size,
                    read: read as u64,
                });
            }
            Ok(n) => read += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(ReadError::Os(errno)),
        }
    }
    steward_protocol::decode(&bytes).map_err(ReadError::Decode)
}

/// What a pooled executor's wait ended with.
pub enum Handed {
    /// Its spawn state, with every fd it names at the manager's number for it, and when to
    /// apply it.
    State(alloc::boxed::Box<SpawnState>, steward_protocol::Start),
    /// The manager closed the pool socket without sending: this executor is not needed.
    Retired,
}

/// Waits on the pool socket `socket` for the manager's [`steward_protocol::handover`], then puts
/// each received fd at the number the manager had for it, and the socket itself at the status
/// fd's number: from here on, the process is what a fresh executor is after reading its memfd.
pub fn receive(socket: RawFd) -> Result<Handed, ReadError> {
    let mut buf = vec![0u8; steward_protocol::MAX_HANDOVER];
    let Some((len, received)) = sys::receive_with_fds(socket, &mut buf).map_err(ReadError::Os)?
    else {
        return Ok(Handed::Retired);
    };
    let parsed = steward_protocol::split_handover(&buf[..len])
        .map_err(ReadError::Decode)
        .and_then(|(numbers, start, encoded)| {
            let state = steward_protocol::decode(encoded).map_err(ReadError::Decode)?;
            if numbers.len() != received.len() {
                return Err(ReadError::FdCount {
                    announced: numbers.len(),
                    received: received.len(),
                });
            }
            Ok((numbers, start, state))
        });
    let (numbers, start, state) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            for fd in received {
                let _ = sys::close(fd);
            }
            return Err(e);
        }
    };
    let mut moves: alloc::vec::Vec<(RawFd, RawFd)> = received.into_iter().zip(numbers).collect();
    // The status reports go back on the pool socket: the manager watches its end as it would
    // a fresh executor's status pipe, and our end closes at the service's exec.
    moves.push((socket, state.status_fd));
    crate::fds::settle(&moves, &mut crate::fds::Kernel).map_err(ReadError::Renumber)?;
    Ok(Handed::State(alloc::boxed::Box::new(state), start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn file_with(bytes: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "steward-executor-state-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn fd_argument() {
        assert_eq!(parse_fd("7"), Ok(7));
        for bad in ["", "-1", "+3", " 3", "x", "99999999999"] {
            assert_eq!(parse_fd(bad), Err(ReadError::NotAnFd), "{bad:?}");
        }
    }

    #[test]
    fn reads_from_offset_zero() {
        let state = SpawnState {
            name: "t".into(),
            path: "/bin/true".into(),
            argv: vec!["true".into()],
            env: vec![],
            pid_vars: Vec::new(),
            stdio: [
                steward_protocol::Stdio::Inherit,
                steward_protocol::Stdio::Null,
                steward_protocol::Stdio::Fd(2),
            ],
            fds: vec![5],
            status_fd: 4,
            working_directory: "/".into(),
            umask: 0o022,
            credentials: None,
            rlimits: vec![],
            cgroups: vec![],
            fds_at: Vec::new(),
            reset_signals: Vec::new(),
        };
        // The writer's file position is at the end; pread does not care.
        let file = file_with(&steward_protocol::encode(&state).unwrap());
        assert_eq!(read(file.as_raw_fd()), Ok(state));
    }

    #[test]
    fn refusals() {
        let empty = file_with(b"");
        assert!(matches!(read(empty.as_raw_fd()), Err(ReadError::Decode(_))));
        let garbage = file_with(b"this is not a spawn state at all");
        assert_eq!(
            read(garbage.as_raw_fd()),
            Err(ReadError::Decode(DecodeError::BadMagic))
        );
        assert_eq!(read(-1), Err(ReadError::Os(Errno::EBADF)));
        let dir = std::fs::File::open("/").unwrap();
        assert_eq!(read(dir.as_raw_fd()), Err(ReadError::NotAFile));
    }
}
