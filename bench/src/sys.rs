//! The benchmark's only unsafe code: fork, which the comparison needs and nothing else here
//! does.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid};

/// Whether a process we started is still there (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z')
    })
}

/// SIGTERM to a process we started.
pub fn terminate(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
}

/// fork, then in the child: `stdout` becomes fd 1 and `path` is exec'd with `argv`. What a
/// classic forking supervisor does per spawn.
pub fn fork_exec(path: &CString, argv: &[CString], stdout: &OwnedFd) -> nix::Result<Pid> {
    let fd = stdout.as_raw_fd();
    let envp: [CString; 0] = [];
    // SAFETY: between fork and exec the child calls only dup2, execve and _exit, which are
    // async-signal-safe, on data prepared before the fork; it never returns into Rust code that
    // could take a lock another thread held at the fork.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // SAFETY: async-signal-safe calls only, as above.
            unsafe {
                libc::dup2(fd, 1);
                let _ = nix::unistd::execve(path, argv, &envp);
                libc::_exit(127)
            }
        }
    }
}

/// fork a child that waits until the parent closes `gate_write`, then exits: the parent's
/// pages are shared copy-on-write while it lives.
pub fn fork_waiting(gate_read: &OwnedFd, gate_write: &OwnedFd) -> nix::Result<Pid> {
    let (read_fd, write_fd) = (gate_read.as_raw_fd(), gate_write.as_raw_fd());
    // SAFETY: the child only calls close, read and _exit (async-signal-safe) on a buffer on its
    // stack.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let mut byte = 0u8;
            // SAFETY: async-signal-safe calls on our own stack buffer. The child's copy of the
            // write end goes first, or the read would never see end-of-file.
            unsafe {
                libc::close(write_fd);
                libc::read(read_fd, (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0)
            }
        }
    }
}
