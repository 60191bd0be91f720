//! Why sockets could not be taken over: one variant per refusal, each naming the variable or fd.

use std::io;
use std::os::fd::RawFd;

/// A refusal of [`take`](crate::take) or of a typed getter of [`Sockets`](crate::Sockets).
///
/// When [`take`](crate::take) fails nothing has changed: the variables are still set and no fd
/// was touched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `LISTEN_PID` names another process: the variables were inherited, not passed to us.
    #[error(
        "LISTEN_PID={listen_pid} but this is pid {pid}: the sockets were passed to another process"
    )]
    ForeignPid {
        /// The value of `LISTEN_PID`.
        listen_pid: u32,
        /// This process's pid.
        pid: u32,
    },

    /// A variable that must hold a number (or a map entry's fd) holds something else.
    #[error("{variable}: {value:?} is not a valid {what}")]
    BadNumber {
        /// The variable it was read from.
        variable: &'static str,
        /// The text that is not a number.
        value: String,
        /// What the number was meant to be: "pid", "fd count", "fd".
        what: &'static str,
    },

    /// `LISTEN_FDNAMES` does not have one name per passed fd.
    #[error("LISTEN_FDNAMES has {names} name(s) for {fds} passed fd(s)")]
    NameCount {
        /// The number of names in `LISTEN_FDNAMES`.
        names: usize,
        /// The number of fds passed.
        fds: usize,
    },

    /// An entry of the `SOCKET_TAKEOVER` map is not `KEY:FD` with a non-empty key.
    #[error("SOCKET_TAKEOVER: entry {entry:?} is not KEY:FD")]
    BadEntry {
        /// The entry as written.
        entry: String,
    },

    /// The `SOCKET_TAKEOVER` map passes one fd under two keys.
    #[error("SOCKET_TAKEOVER passes fd {fd} twice")]
    DuplicateFd {
        /// The fd named twice.
        fd: RawFd,
    },

    /// `SOCKET_TAKEOVER` in map form and `LISTEN_FDS` name different fds.
    #[error(
        "SOCKET_TAKEOVER={map:?} does not pass the {listen_fds} fd(s) from 3 up that LISTEN_FDS={listen_fds} announces"
    )]
    Disagree {
        /// The value of `SOCKET_TAKEOVER`.
        map: String,
        /// The value of `LISTEN_FDS`.
        listen_fds: usize,
    },

    /// A passed fd is not open.
    #[error("fd {fd} ({name:?}) was announced but is not open")]
    NotOpen {
        /// The fd.
        fd: RawFd,
        /// The name it was passed under.
        name: String,
    },

    /// A passed fd is open but is not a socket.
    #[error("fd {fd} ({name:?}) was announced but is not a socket")]
    NotSocket {
        /// The fd.
        fd: RawFd,
        /// The name it was passed under.
        name: String,
    },

    /// A passed fd could not be inspected (`fstat`, `getsockopt` or `fcntl` failed).
    #[error("fd {fd} ({name:?}): {step} failed")]
    Inspect {
        /// The fd.
        fd: RawFd,
        /// The name it was passed under.
        name: String,
        /// The call that failed.
        step: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// [`take`](crate::take) was called while other threads run: it must edit the environment.
    #[error(
        "takeover::take() must run before the service starts threads ({threads} are running): it removes variables from the environment"
    )]
    Threads {
        /// The number of threads found in `/proc/self/task`.
        threads: usize,
    },

    /// No socket of that name was passed (or it was already taken).
    #[error("no socket named {name:?} was passed")]
    Missing {
        /// The name asked for.
        name: String,
    },

    /// The socket of that name is not of the kind asked for.
    #[error("socket {name:?} is {found}, not {expected}")]
    WrongKind {
        /// The name asked for.
        name: String,
        /// What the getter wanted, e.g. "a listening unix stream socket".
        expected: &'static str,
        /// What the socket is.
        found: String,
    },
}
