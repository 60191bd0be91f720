//! The service side of socket passing: take over the sockets a service manager (steward,
//! systemd, SerenityOS's SystemServer) created and passed at exec.
//!
//! ```no_run
//! use std::io::Write;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing in main, before any thread is started.
//!     let mut sockets = takeover::take()?;
//!     let listener = sockets.unix_listener("echo")?;
//!     for conn in listener.incoming() {
//!         conn?.write_all(b"hello\n")?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! [`take`] accepts systemd's `LISTEN_PID` / `LISTEN_FDS` / `LISTEN_FDNAMES` and both forms of
//! `SOCKET_TAKEOVER` (the flag `1`, and SerenityOS's map `KEY:FD;KEY:FD`); see [`parse`] for the
//! exact rules. It refuses variables meant for another process and fds that are not open; the
//! typed getters refuse an fd that is not the socket asked for. (A passed fd need not be a
//! socket: what the service kept in the manager's fd store, [`store`], comes back among them,
//! and may be a pipe or a memfd.) Once it succeeded, every passed fd is close-on-exec (the
//! service's own children do not inherit it) and the four variables are gone from the
//! environment (they do not describe the children either).
//!
//! A service that must not lose its connections across a restart stores them:
//!
//! ```no_run
//! use std::os::fd::AsFd;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut passed = takeover::take()?;
//!     let listener = passed.tcp_listener("web")?;
//!     // The connections an earlier process of this service stored, if any.
//!     let mut clients: Vec<std::net::TcpStream> =
//!         passed.take_all("client").into_iter().map(Into::into).collect();
//!     let (client, _) = listener.accept()?;
//!     takeover::store("client", &[client.as_fd()])?;
//!     clients.push(client);
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
mod notify;
mod parse;
mod sockets;
mod sys;

pub use error::Error;
pub use notify::{MAX_FDS_PER_MESSAGE, notify, store, store_unpolled, unstore};
pub use parse::{FIRST_FD, UNKNOWN, parse};
pub use sockets::{Listener, Sockets, Stream};

/// Takes over the sockets passed to this process.
///
/// Returns them by name (an empty set when no variable is set), each with FD_CLOEXEC set, and
/// removes `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` and `SOCKET_TAKEOVER` from the
/// environment. On an error nothing changes: no fd is touched and the variables stay.
///
/// Call it once, first thing in `main`, **before the service starts any thread**: removing an
/// environment variable is only sound while no other thread reads or writes the environment.
/// It counts the threads in `/proc/self/task` and refuses ([`Error::Threads`]) when there is
/// more than one. The fd numbers it returns belong to the returned [`Sockets`] from then on: do
/// not use them through their raw numbers.
pub fn take() -> Result<Sockets, Error> {
    let get = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let passed = parse(get, std::process::id())?;
    if let Some(threads) = threads().filter(|&n| n > 1) {
        return Err(Error::Threads { threads });
    }
    let fds = sys::adopt(passed)?;
    sys::remove_variables(&parse::VARIABLES);
    Ok(Sockets::new(fds))
}

/// The number of threads of this process, if `/proc` tells.
fn threads() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::net::UnixStream;

    #[test]
    fn an_open_socket_passes_the_check() {
        let (a, _b) = UnixStream::pair().unwrap();
        sys::check("ok", a.as_raw_fd()).unwrap();
    }

    #[test]
    fn a_regular_file_passes_as_an_fd_but_not_as_a_socket() {
        let file = File::open(std::env::current_exe().unwrap()).unwrap();
        sys::check("file", file.as_raw_fd()).unwrap();
        let fd = file.as_raw_fd();
        let mut passed = Sockets::new(vec![("file".to_string(), file.into())]);
        let err = passed.unix_listener("file").unwrap_err();
        assert!(matches!(err, Error::NotSocket { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("fd {fd} (\"file\") was announced but is not a socket")
        );
        // Refused, it stays: the fd store may hand back any kind of fd.
        assert!(passed.take_fd("file").is_some());
    }

    #[test]
    fn a_closed_fd_is_not_open() {
        // Far above any fd limit: never open, whatever the other tests do meanwhile.
        let fd = 1_000_000_000;
        let err = sys::check("gone", fd).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotOpen {
                    fd: 1_000_000_000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "fd 1000000000 (\"gone\") was announced but is not open"
        );
    }

    #[test]
    fn adopting_checks_every_fd_before_touching_any() {
        let (a, _b) = UnixStream::pair().unwrap();
        let passed = vec![
            ("a".to_string(), a.as_raw_fd()),
            ("gone".to_string(), 1_000_000_000),
        ];
        let err = sys::adopt(passed).unwrap_err();
        assert!(matches!(err, Error::NotOpen { .. }), "{err:?}");
        // `a` was not adopted (it would have been closed twice by now) and is still usable.
        sys::check("a", a.as_raw_fd()).unwrap();
    }

    #[test]
    fn adopting_sets_cloexec() {
        let (a, _b) = UnixStream::pair().unwrap();
        // Hand the fd over as the manager does at exec: CLOEXEC clear, owned by nobody.
        sys::clear_cloexec(a.as_fd());
        assert!(!sys::cloexec(a.as_fd()));
        let raw = std::os::fd::IntoRawFd::into_raw_fd(a);
        let fds = sys::adopt(vec![("a".to_string(), raw)]).unwrap();
        assert_eq!(fds[0].1.as_raw_fd(), raw);
        assert!(sys::cloexec(fds[0].1.as_fd()));
    }

    #[test]
    fn adopting_refuses_a_duplicate() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let passed = vec![("a".to_string(), fd), ("b".to_string(), fd)];
        assert!(matches!(sys::adopt(passed), Err(Error::DuplicateFd { .. })));
    }
}
