//! A service's fd store (sd_notify `FDSTORE=1`, systemd's FILE_DESCRIPTOR_STORE): fds the
//! service hands steward to hold while it restarts, given back to its next process after its
//! sockets. What a message asks is decided here, as a pure function of the store, the message
//! and the bound ([`admit`]); the loop carries it out against epoll (event_loop/fd_store.rs).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The name of an fd sent without `FDNAME`, as in systemd.
pub const DEFAULT_NAME: &str = "stored";

/// systemd's FDNAME_MAX.
const NAME_MAX: usize = 255;

/// Whether the manager watches a stored fd for a hang-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// In the epoll set (for EPOLLHUP/EPOLLERR only, one shot): dropped when it reports one.
    Watched,
    /// Asked for, but the kernel cannot poll it (a regular file, a memfd): kept as it is.
    Unpollable,
    /// Sent with `FDPOLL=0`: never dropped for a hang-up.
    Off,
}

impl Poll {
    /// Whether the service asked for polling (what crosses a reexec: the new manager adds
    /// the fd to its own epoll set again).
    pub fn asked(self) -> bool {
        self != Poll::Off
    }
}

/// One stored fd.
#[derive(Debug)]
pub struct Stored {
    /// Its `FDNAME` (or [`DEFAULT_NAME`]).
    pub name: String,
    /// The fd (close-on-exec, as `recvmsg` installed it).
    pub fd: OwnedFd,
    /// Whether it is watched for a hang-up.
    pub poll: Poll,
}

/// Why an `FDNAME` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// Longer than systemd allows.
    #[error("longer than {NAME_MAX} bytes")]
    TooLong,
    /// A `:` (the separator of `LISTEN_FDNAMES`) or a byte that is not printable ASCII.
    #[error("it holds {0:?}, and names are printable ASCII without ':'")]
    BadChar(char),
}

/// The name an fd is stored under: `FDNAME` checked as systemd checks it (printable ASCII, no
/// `:`, at most 255 bytes); none, or an empty one, is [`DEFAULT_NAME`].
pub fn name(fd_name: Option<&str>) -> Result<String, BadName> {
    let name = match fd_name {
        None | Some("") => return Ok(DEFAULT_NAME.to_string()),
        Some(name) => name,
    };
    if name.len() > NAME_MAX {
        return Err(BadName::TooLong);
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || *c == ':') {
        return Err(BadName::BadChar(c));
    }
    Ok(name.to_string())
}

/// What becomes of the fds of one `FDSTORE=1` message.
#[derive(Debug, Default)]
pub struct Admitted {
    /// To store, in the order sent.
    pub keep: Vec<OwnedFd>,
    /// Already stored (or one of the service's own sockets): closed, nothing to say.
    pub duplicates: usize,
    /// Over the bound: closed, and worth a log line.
    pub excess: usize,
}

/// Splits the fds of a message: what fits under `bound` and is not already held goes in;
/// `same` says whether two fds are the same open file.
pub fn admit(
    held: &[BorrowedFd<'_>],
    stored: usize,
    bound: usize,
    fds: Vec<OwnedFd>,
    same: impl Fn(BorrowedFd<'_>, BorrowedFd<'_>) -> bool,
) -> Admitted {
    let mut admitted = Admitted::default();
    for fd in fds {
        let known = held.iter().any(|h| same(*h, fd.as_fd()))
            || admitted.keep.iter().any(|k| same(k.as_fd(), fd.as_fd()));
        if known {
            admitted.duplicates += 1;
        } else if stored + admitted.keep.len() < bound {
            admitted.keep.push(fd);
        } else {
            admitted.excess += 1;
        }
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| rustix::pipe::pipe().unwrap().0)
            .collect::<Vec<_>>()
    }

    fn by_number(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
        a.as_raw_fd() == b.as_raw_fd()
    }

    #[test]
    fn names_follow_systemd() {
        assert_eq!(name(None).unwrap(), "stored");
        assert_eq!(name(Some("")).unwrap(), "stored");
        assert_eq!(name(Some("conn-7")).unwrap(), "conn-7");
        assert_eq!(name(Some("a:b")), Err(BadName::BadChar(':')));
        assert_eq!(name(Some("a b")), Err(BadName::BadChar(' ')));
        assert_eq!(name(Some("é")), Err(BadName::BadChar('é')));
        assert_eq!(name(Some(&"x".repeat(256))), Err(BadName::TooLong));
        assert!(name(Some(&"x".repeat(255))).is_ok());
    }

    #[test]
    fn what_goes_over_the_bound_is_excess() {
        let a = admit(&[], 2, 4, fds(5), by_number);
        assert_eq!((a.keep.len(), a.duplicates, a.excess), (2, 0, 3));
        let none = admit(&[], 0, 0, fds(3), by_number);
        assert_eq!((none.keep.len(), none.excess), (0, 3));
    }

    #[test]
    fn an_fd_already_held_is_not_stored_twice_and_takes_no_room() {
        let held = fds(1);
        let again = rustix::io::dup(&held[0]).unwrap();
        let same_file = |a: BorrowedFd<'_>, b: BorrowedFd<'_>| {
            rustix::fs::fstat(a).unwrap().st_ino == rustix::fs::fstat(b).unwrap().st_ino
        };
        let mut sent = vec![again];
        sent.extend(fds(1));
        let a = admit(&[held[0].as_fd()], 1, 2, sent, same_file);
        assert_eq!((a.keep.len(), a.duplicates, a.excess), (1, 1, 0));
    }
}
