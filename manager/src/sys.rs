//! The manager's only unsafe code: the syscalls no safe wrapper covers for every signal number,
//! and taking ownership of the fds a `reexec` hands over by number.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Whether `fd` is open in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the fd's flags and touches no memory; on a closed or invalid number
    // the kernel answers EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Takes ownership of an fd the previous manager left open across exec, after checking it is
/// open. The caller must name each fd once (`reexec` checks the state names none twice).
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if !fd_is_open(fd) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the fd is open, and nothing else in this process owns it: it was inherited
    // across execve, where no Rust object could own it, and the caller adopts each number once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` (any number 1..=64, real-time ones included) to a process, or to a process
/// group when `pid` is negative.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours; any values are safe to
    // pass, the kernel validates them.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
