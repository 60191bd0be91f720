//! Telling the service manager how the service is doing: the sd_notify protocol
//! (`READY=1`, `STATUS=…`), sent to the unix datagram socket `$NOTIFY_SOCKET` names; and its
//! fd store (`FDSTORE=1`): fds the manager keeps while the service restarts, and hands to its
//! next process among the passed sockets, under the name they were stored with.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;

use crate::sys;

/// The most fds one message carries (the kernel's SCM_MAX_FD).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `state` (`KEY=VALUE` lines, e.g. `"READY=1\nSTATUS=serving"`) to the service manager.
/// Returns `Ok(false)` when the manager asked for no messages (`NOTIFY_SOCKET` is not set):
/// then there is nobody to tell, which is not an error.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// Asks the service manager to keep `fds` under `name` (`FDSTORE=1` with `FDNAME=name`):
/// after the service restarts, its next process finds them among the passed fds
/// ([`Sockets::take_all`](crate::Sockets::take_all)). The manager drops a stored fd that
/// hangs up (a client closed its connection). Returns `Ok(false)` when there is no manager to
/// tell (`NOTIFY_SOCKET` is not set).
///
/// A name is printable ASCII without `:`, at most 255 bytes; at most
/// [`MAX_FDS_PER_MESSAGE`] fds go in one call. The manager keeps as many as its `fd_store`
/// bound allows, and one fd only once.
pub fn store(name: &str, fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
    store_with(name, fds, "")
}

/// [`store`], but the manager keeps the fds even when they hang up (`FDPOLL=0`): for fds
/// that are not connections, whose hang-up means nothing.
pub fn store_unpolled(name: &str, fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
    store_with(name, fds, "\nFDPOLL=0")
}

/// Asks the service manager to close every fd it keeps under `name` (`FDSTOREREMOVE=1`).
pub fn unstore(name: &str) -> io::Result<bool> {
    check_name(name)?;
    notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"))
}

fn store_with(name: &str, fds: &[BorrowedFd<'_>], extra: &str) -> io::Result<bool> {
    check_name(name)?;
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} fds in one message; the kernel carries at most {MAX_FDS_PER_MESSAGE}",
                fds.len()
            ),
        ));
    }
    let Some(socket) = connect(std::env::var_os("NOTIFY_SOCKET").as_deref())? else {
        return Ok(false);
    };
    let message = format!("FDSTORE=1\nFDNAME={name}{extra}");
    sys::send_with_fds(socket.as_fd(), message.as_bytes(), fds)?;
    Ok(true)
}

/// The rules of systemd's `FDNAME`, checked here so that a refusal is the caller's error,
/// not a line in the manager's log.
fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_graphic() && c != ':');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd name {name:?}: names are 1 to 255 printable ASCII characters, not ':'"),
        ))
    }
}

fn notify_to(path: Option<&std::ffi::OsStr>, state: &str) -> io::Result<bool> {
    let Some(socket) = connect(path)? else {
        return Ok(false);
    };
    socket.send(state.as_bytes())?;
    Ok(true)
}

/// A datagram socket connected to the manager's, or `None` without one.
fn connect(path: Option<&std::ffi::OsStr>) -> io::Result<Option<UnixDatagram>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // A leading `@` names a socket in the abstract namespace, as sd_notify(3) says.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.connect_addr(&addr)?;
    } else {
        socket.connect(path)?;
    }
    Ok(Some(socket))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("takeover-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(super::notify_to(Some(path.as_os_str()), "READY=1\nSTATUS=ok").unwrap());
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        assert!(!super::notify_to(None, "READY=1").unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
