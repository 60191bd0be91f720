//! Every system call the executor makes, and the only `unsafe` code in the crate.
//!
//! Each wrapper is typed and returns `Result<_, Errno>`; [`cvt`] is the one place a `-1` turns
//! into an error. File descriptors named by the spawn state travel as plain [`RawFd`] numbers:
//! the executor owns every fd in its process and its whole job is to renumber them, so a number
//! is the honest type. Fds the executor opens itself come back as [`OwnedFd`] and close on drop.

use std::ffi::{CStr, CString, c_int};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// An `errno` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);

    fn last() -> Errno {
        // `EIO` stands in for the impossible case of a failed call that left no errno.
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

/// Return values that signal failure with `-1` and leave the reason in `errno`. Implemented for
/// the primitive types rather than `c_int`/`c_long`, which are the same type on 32-bit targets.
trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}

macro_rules! minus_one {
    ($($t:ty),*) => {$(
        impl MinusOne for $t {
            const MINUS_ONE: Self = -1;
        }
    )*};
}

minus_one!(i32, i64, isize);

fn cvt<T: MinusOne>(ret: T) -> Result<T, Errno> {
    if ret == T::MINUS_ONE {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// What [`fstat`] tells the reader of the spawn state.
pub struct FileInfo {
    pub size: u64,
    pub is_regular: bool,
}

pub fn fstat(fd: RawFd) -> Result<FileInfo, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a writable buffer of exactly `struct stat`; the kernel fills it on success
    // and we read it only then.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Ok(FileInfo {
        // A negative size does not exist for the files we accept; treat it as empty.
        size: u64::try_from(st.st_size).unwrap_or(0),
        is_regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
    })
}

pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow mutably
    // for the duration of the call.
    let n = cvt(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) })?;
    // cvt removed the only negative value.
    Ok(n.unsigned_abs())
}

pub fn write(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`, which outlives the call.
    let n = cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(n.unsigned_abs())
}

pub fn close(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: closing touches no memory. The executor closes only fds it received (the memfd, or
    // leftovers when close_range is missing), which no `OwnedFd` or `File` in this process owns,
    // so nothing will use or close the number after us.
    cvt(unsafe { libc::close(fd) })?;
    Ok(())
}

/// Copies `fd` to the lowest free number `>= min`, close-on-exec.
pub fn dup_above(fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and touches no memory; it allocates a
    // new, free fd number, so no existing fd is disturbed.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// Makes `dst` a copy of `src` with FD_CLOEXEC clear (for `src != dst`).
pub fn dup2(src: RawFd, dst: RawFd) -> Result<(), Errno> {
    // SAFETY: dup2 touches no memory. Replacing whatever `dst` held is the point: every fd the
    // executor places over belongs to the spawn state, and no Rust object owns that number.
    cvt(unsafe { libc::dup2(src, dst) })?;
    Ok(())
}

pub fn set_cloexec(fd: RawFd, cloexec: bool) -> Result<(), Errno> {
    let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD takes an integer argument and touches no memory. FD_CLOEXEC is the only
    // fd flag Linux defines, so setting the whole word loses nothing.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) })?;
    Ok(())
}

pub fn clear_nonblock(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: F_SETFL takes an integer argument and touches no memory.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// Closes every fd in `first..=last`.
pub fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes integers and touches no memory. The callers keep every fd a Rust
    // object of ours owns out of the range (none exist while it runs), so nothing is closed
    // behind an owner's back.
    cvt(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) })?;
    Ok(())
}

/// The open fd numbers of this process, for kernels without close_range (before 5.9).
pub fn open_fds() -> Result<Vec<RawFd>, Errno> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(io_errno)?;
    let mut fds = Vec::new();
    for entry in dir {
        let entry = entry.map_err(io_errno)?;
        if let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            fds.push(fd);
        }
    }
    // The directory's own fd was in the listing and is closed now that `dir` is dropped;
    // closing that number again fails harmlessly with EBADF.
    Ok(fds)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The kernel's `struct sigaction` on x86_64 and aarch64. Only an all-zero value is ever passed
/// (SIG_DFL is 0, no flags, no restorer, empty mask), and the struct is as large as any 64-signal
/// architecture's, so one without a restorer field (riscv) reads the same zeros.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The size of the kernel's signal set: 64 signals.
const KERNEL_SIGSET_SIZE: usize = 8;

/// Sets signal `sig` to its default disposition.
pub fn reset_signal(sig: c_int) -> Result<(), Errno> {
    let action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: the raw syscall because glibc's sigaction refuses its internal signals 32 and 33.
    // The kernel reads one `struct sigaction` from `action`, which lives across the call, and
    // writes nothing since the old-action pointer is null.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &action as *const KernelSigaction,
            ptr::null_mut::<KernelSigaction>(),
            KERNEL_SIGSET_SIZE,
        )
    })?;
    Ok(())
}

/// Empties the signal mask.
pub fn unblock_all_signals() -> Result<(), Errno> {
    let empty: u64 = 0;
    // SAFETY: raw like `reset_signal`, so no libc filtering of its internal signals sits between
    // us and the kernel's mask. The kernel reads one 8-byte set from `empty` and writes nothing (null old-set pointer).
    cvt(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            ptr::null_mut::<u64>(),
            KERNEL_SIGSET_SIZE,
        )
    })?;
    Ok(())
}

pub fn setsid() -> Result<(), Errno> {
    // SAFETY: setsid takes no arguments and touches no memory.
    cvt(unsafe { libc::setsid() })?;
    Ok(())
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail and touches no memory.
    unsafe { libc::getpid() }
}

/// The session id of this process.
pub fn getsid() -> Result<i32, Errno> {
    // SAFETY: getsid takes an integer and touches no memory.
    cvt(unsafe { libc::getsid(0) })
}

/// Opens `path` close-on-exec.
pub fn open(path: &CStr, flags: c_int, mode: u32) -> Result<OwnedFd, Errno> {
    let flags = flags | libc::O_CLOEXEC;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the kernel only reads it.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: open just returned this fd, so it is valid and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn isatty(fd: &OwnedFd) -> bool {
    // SAFETY: isatty takes an integer and touches no memory of ours.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// Makes the terminal `fd` the controlling terminal of this session.
pub fn set_controlling_terminal(fd: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal it from another session) and
    // touches no memory.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) })?;
    Ok(())
}

/// The kernel's `struct rlimit64`, the same on every architecture.
#[repr(C)]
struct KernelRlimit {
    cur: u64,
    max: u64,
}

/// Sets both the soft and the hard limit of `resource` to `value` (`u64::MAX`: unlimited).
pub fn set_rlimit(resource: u32, value: u64) -> Result<(), Errno> {
    let limit = KernelRlimit {
        cur: value,
        max: value,
    };
    // SAFETY: prlimit64 on ourselves (pid 0) rather than setrlimit, whose resource and value
    // types differ between libcs; its values are always 64-bit. The kernel reads one
    // `struct rlimit64` from `limit` and writes nothing (null old-limit pointer).
    cvt(unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::pid_t,
            resource,
            &limit as *const KernelRlimit,
            ptr::null_mut::<KernelRlimit>(),
        )
    })?;
    Ok(())
}

pub fn umask(mask: u32) {
    // SAFETY: umask takes an integer, cannot fail and touches no memory.
    unsafe { libc::umask(mask as libc::mode_t) };
}

pub fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the kernel only reads it.
    cvt(unsafe { libc::chdir(path.as_ptr()) })?;
    Ok(())
}

/// Writes all of `buf` in one write: files like `cgroup.procs` take a value per write, so a
/// short write is a failure, not something to continue.
pub fn write_whole(fd: &OwnedFd, buf: &[u8]) -> Result<(), Errno> {
    if write(fd.as_raw_fd(), buf)? == buf.len() {
        Ok(())
    } else {
        Err(Errno::EIO)
    }
}

pub fn setgroups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `groups.len()` gids from `groups`, which outlives the call.
    cvt(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    Ok(())
}

pub fn setresgid(gid: u32) -> Result<(), Errno> {
    // SAFETY: setresgid takes integers and touches no memory. The executor is single-threaded,
    // so there are no other threads whose ids could be left behind.
    cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
    Ok(())
}

pub fn setresuid(uid: u32) -> Result<(), Errno> {
    // SAFETY: as for `setresgid`.
    cvt(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

/// The real, effective and saved user ids.
pub fn getresuid() -> Result<[u32; 3], Errno> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the kernel writes one uid into each of the three locals, which outlive the call.
    cvt(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
    Ok([r, e, s])
}

/// The real, effective and saved group ids.
pub fn getresgid() -> Result<[u32; 3], Errno> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the kernel writes one gid into each of the three locals, which outlive the call.
    cvt(unsafe { libc::getresgid(&mut r, &mut e, &mut s) })?;
    Ok([r, e, s])
}

/// Replaces this process with `path`; returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
    let argv: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([ptr::null()])
        .collect();
    // SAFETY: `path` and every string behind the two pointer arrays are NUL-terminated and are
    // borrowed for the whole call; both arrays end with the null pointer execve requires.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last()
}

/// Ends the process at once: no destructors, no atexit handlers, no return into anyone's code.
pub fn exit(code: u8) -> ! {
    // SAFETY: _exit only ends the process; nothing of ours needs cleaning up.
    unsafe { libc::_exit(c_int::from(code)) }
}
