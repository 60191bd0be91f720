//! Reading the spawn state from the memfd the manager passed.

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
