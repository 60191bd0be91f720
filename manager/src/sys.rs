//! The manager's only unsafe code: the syscalls no safe wrapper covers for every signal number.
#![allow(unsafe_code)]

use std::io;

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
