//! The crate's only unsafe code: checking raw fds, adopting the passed ones, socket options,
//! `poll`, and removing the takeover variables from the environment.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::Error;

/// Checks that `fd`, passed under `name`, is open.
pub(crate) fn check(name: &str, fd: RawFd) -> Result<(), Error> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` only writes a `struct stat` into the buffer it is given, which is valid
    // and large enough; any fd number is allowed (an fd that is not open gives EBADF).
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if rc == -1 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EBADF) => Error::NotOpen {
                fd,
                name: name.to_string(),
            },
            _ => Error::Inspect {
                fd,
                name: name.to_string(),
                step: "fstat",
                source: err,
            },
        });
    }
    Ok(())
}

/// Whether `fd` is a socket.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` only writes a `struct stat` into the buffer it is given, which is valid
    // and large enough; `fd` is borrowed, so open.
    if unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) } == -1 {
        return false;
    }
    // SAFETY: `fstat` returned 0, so it filled in the whole struct.
    let stat = unsafe { stat.assume_init() };
    stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// Sends one datagram on the connected `socket` with `fds` attached (SCM_RIGHTS).
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as libc::c_uint) } as usize;
    // u64s: aligned for a cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the fields we need are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(payload) bytes, room for one header
        // and the fd numbers; CMSG_FIRSTHDR of a buffer that size is not null.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as libc::c_uint) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` describes live buffers: `bytes` (only read, despite the mutable pointer
    // the iovec type wants) and `control`; the fds are borrowed, so open for the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of the passed fds, after checking that every one is a distinct open socket,
/// and sets FD_CLOEXEC on each so they do not leak into the service's own children. Checks
/// everything before touching anything: on an error no fd was changed or adopted.
pub(crate) fn adopt(passed: Vec<(String, RawFd)>) -> Result<Vec<(String, OwnedFd)>, Error> {
    let mut seen = HashSet::new();
    for (name, fd) in &passed {
        check(name, *fd)?;
        if !seen.insert(*fd) {
            return Err(Error::DuplicateFd { fd: *fd });
        }
    }
    let mut owned = Vec::with_capacity(passed.len());
    for (name, fd) in passed {
        // SAFETY: `fd` is open (just checked) and appears once in the list, so exactly one
        // `OwnedFd` is made for it. Nothing else in the process owns it: it was passed at exec
        // for the service to take, which is the documented contract of `take()` (call it once,
        // and do not use the passed fd numbers otherwise).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(&name, fd.as_raw_fd())?;
        owned.push((name, fd));
    }
    Ok(owned)
}

/// Sets FD_CLOEXEC on an fd this process owns. The manager cleared it on purpose so the fd would
/// cross `execve`; once taken over, it must not cross the service's own.
fn set_cloexec(name: &str, fd: RawFd) -> Result<(), Error> {
    let fail = |step| Error::Inspect {
        fd,
        name: name.to_string(),
        step,
        source: io::Error::last_os_error(),
    };
    // SAFETY: F_GETFD reads the fd's flags and touches no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(fail("fcntl(F_GETFD)"));
    }
    // SAFETY: F_SETFD sets the fd's flags from an integer and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1 {
        return Err(fail("fcntl(F_SETFD)"));
    }
    Ok(())
}

/// `getsockopt(fd, SOL_SOCKET, option)` for an integer option.
pub(crate) fn socket_option(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes, and `len` holds the size of `value`, so
    // the kernel writes at most that many bytes; `fd` is borrowed, so it is open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Waits until `fd` is readable (for a listening socket: a connection is waiting) or `timeout`
/// passed. Returns whether it is readable; an error or hangup counts as readable, so that the
/// next call reports it.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up, so that a wait of less than a millisecond does not spin.
        let ms = left.as_nanos().div_ceil(1_000_000);
        let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
        let mut pollfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` is one valid, writable `struct pollfd`, and we pass a count of 1.
        let rc = unsafe { libc::poll(&mut pollfd, 1, ms) };
        match rc {
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            0 if left.is_zero() || Instant::now() >= deadline => return Ok(false),
            0 => {}
            _ => return Ok(true),
        }
    }
}

/// Removes the takeover variables from the environment.
pub(crate) fn remove_variables(names: &[&str]) {
    for name in names {
        // SAFETY: removing a variable is only sound while no other thread reads or writes the
        // environment. `take()` documents that it must be called before the service starts
        // threads, and checks that only one thread runs (`/proc/self/task`) before it gets here.
        unsafe { std::env::remove_var(name) };
    }
}

/// Whether FD_CLOEXEC is set on `fd`.
#[cfg(test)]
pub(crate) fn cloexec(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFD reads the fd's flags and touches no memory; `fd` is borrowed, so open.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert_ne!(flags, -1, "{}", io::Error::last_os_error());
    flags & libc::FD_CLOEXEC != 0
}

/// Clears FD_CLOEXEC, as the manager does for the fds it passes.
#[cfg(test)]
pub(crate) fn clear_cloexec(fd: BorrowedFd<'_>) {
    // SAFETY: F_SETFD sets the fd's flags from an integer and touches no memory.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
    assert_ne!(rc, -1, "{}", io::Error::last_os_error());
}
