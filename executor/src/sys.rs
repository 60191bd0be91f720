//! Every system call the executor makes, its start-up glue and allocator, and the only `unsafe`
//! code in the crate.
//!
//! There is no libc: origin's `_start` enters the program (see [`start`]) and system calls go
//! through rustix's linux_raw backend. The few rustix has no stable interface for are made
//! directly, in [`raw`]: those it keeps for libc implementations (rt_sigaction,
//! rt_sigprocmask, execve, exit_group) and those it lacks (close_range, getresuid,
//! getresgid). Each wrapper is typed and returns `Result<_, Errno>`.
//!
//! File descriptors named by the spawn state travel as plain [`RawFd`] numbers: the executor owns
//! every fd in its process and its whole job is to renumber them, so a number is the honest
//! type. [`borrow`] is where such a number meets rustix's I/O-safe types. Fds the executor opens
//! itself come back as [`OwnedFd`] and close on drop.

use alloc::ffi::CString;
use alloc::vec::Vec;
use core::ffi::CStr;
use core::mem::ManuallyDrop;
use core::ptr;

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::FdFlags;
use rustix::process::{Resource, Rlimit};
use rustix::thread::{Gid, Uid};

pub use crate::errno::Errno;

/// Lends fd number `fd` to one rustix call.
///
/// Negative numbers are refused with the EBADF the kernel would give: `-1` cannot even be
/// represented as a [`BorrowedFd`].
fn borrow<'a>(fd: RawFd) -> Result<BorrowedFd<'a>, Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: `fd` is not -1. The executor is single-threaded and no Rust object of ours owns
    // the fds the spawn state names, so nothing can close or reuse the number while the one
    // call it is lent to runs. If no file is open under it, the call fails with EBADF, which is
    // the answer the caller wants.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// What [`fstat`] tells the reader of the spawn state.
pub struct FileInfo {
    pub size: u64,
    pub is_regular: bool,
}

pub fn fstat(fd: RawFd) -> Result<FileInfo, Errno> {
    let st = rustix::fs::fstat(borrow(fd)?)?;
    Ok(FileInfo {
        // A negative size does not exist for the files we accept; treat it as empty.
        size: u64::try_from(st.st_size).unwrap_or(0),
        is_regular: FileType::from_raw_mode(st.st_mode).is_file(),
    })
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    Ok(rustix::io::read(borrow(fd)?, buf)?)
}

pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    Ok(rustix::io::pread(borrow(fd)?, buf, offset)?)
}

pub fn write(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    Ok(rustix::io::write(borrow(fd)?, buf)?)
}

/// Writes all of `buf`, as std's `write_all` did for the executor's messages: a write cut short
/// continues, an interrupted one is retried, and one that writes nothing is an error.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

pub fn close(fd: RawFd) -> Result<(), Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: closing touches no memory. The executor closes only fds it received (the memfd, or
    // leftovers when close_range is missing), which no `OwnedFd` in this process owns, so
    // nothing will use or close the number after us.
    unsafe { rustix::io::try_close(fd) }?;
    Ok(())
}

/// Copies `fd` to the lowest free number `>= min`, close-on-exec.
pub fn dup_above(fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
    let copy = rustix::io::fcntl_dupfd_cloexec(borrow(fd)?, min)?;
    // The copy is one of the numbers placement tracks by hand; it must outlive this function.
    Ok(copy.into_raw_fd())
}

/// Makes `dst` a copy of `src` with FD_CLOEXEC clear (for `src != dst`).
pub fn dup2(src: RawFd, dst: RawFd) -> Result<(), Errno> {
    let src = borrow(src)?;
    if dst < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: rustix's dup2 takes the target as the `OwnedFd` it replaces. This one is never
    // dropped (ManuallyDrop), so it closes nothing; it only names `dst`, which is not -1.
    // Replacing whatever `dst` held is the point: every fd the executor places over belongs to
    // the spawn state, and no Rust object owns that number.
    let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(dst) });
    rustix::io::dup2(src, &mut target)?;
    Ok(())
}

/// Moves `src` to `dst` (replacing what `dst` held), close-on-exec.
pub fn move_cloexec(src: RawFd, dst: RawFd) -> Result<(), Errno> {
    let from = borrow(src)?;
    if dst < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: as in `dup2`: the target is never dropped, it only names `dst`, a number of the
    // spawn state that no Rust object owns.
    let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(dst) });
    rustix::io::dup3(from, &mut target, rustix::io::DupFlags::CLOEXEC)?;
    close(src)
}

pub fn set_cloexec(fd: RawFd, cloexec: bool) -> Result<(), Errno> {
    // FD_CLOEXEC is the only fd flag Linux defines, so setting the whole word loses nothing.
    let flags = if cloexec {
        FdFlags::CLOEXEC
    } else {
        FdFlags::empty()
    };
    rustix::io::fcntl_setfd(borrow(fd)?, flags)?;
    Ok(())
}

pub fn clear_nonblock(fd: RawFd) -> Result<(), Errno> {
    let fd = borrow(fd)?;
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if flags.contains(OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, flags - OFlags::NONBLOCK)?;
    }
    Ok(())
}

/// Receives one message on `socket` into `buf`, with the fds that came with it
/// (close-on-exec, in the order they were sent). `Ok(None)`: the other end closed without
/// sending. A message or fd list cut short by a buffer too small is refused whole (the fds
/// that did arrive close).
pub fn receive_with_fds(
    socket: RawFd,
    buf: &mut [u8],
) -> Result<Option<(usize, Vec<RawFd>)>, Errno> {
    use core::mem::MaybeUninit;
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let socket = borrow(socket)?;
    let mut space = [MaybeUninit::<u8>::uninit();
        rustix::cmsg_space!(ScmRights(steward_protocol::MAX_HANDOVER_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [rustix::io::IoSliceMut::new(buf)];
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights.map(IntoRawFd::into_raw_fd));
        }
    }
    if received
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
    {
        for fd in fds {
            let _ = close(fd);
        }
        return Err(Errno::EMSGSIZE);
    }
    if received.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((received.bytes, fds)))
}

/// What woke an armed executor's wait.
pub struct Woken {
    pub listener: bool,
    pub pool: bool,
}

/// An armed executor's listeners and pool socket in one epoll set, made once for all its
/// waits. Of the executors armed on one listener (accept mode), a connection wakes one
/// (EPOLLEXCLUSIVE), not every one of them.
pub struct ArmedWait {
    set: OwnedFd,
}

impl ArmedWait {
    pub fn new(listeners: &[RawFd], pool: RawFd) -> Result<ArmedWait, Errno> {
        use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
        let set = epoll::create(CreateFlags::CLOEXEC)?;
        let exclusive = EventFlags::IN | EventFlags::EXCLUSIVE;
        for &listener in listeners {
            epoll::add(&set, borrow(listener)?, EventData::new_u64(0), exclusive)?;
        }
        let hangup = EventFlags::IN | EventFlags::RDHUP;
        epoll::add(&set, borrow(pool)?, EventData::new_u64(1), hangup)?;
        Ok(ArmedWait { set })
    }

    /// Waits until a listener has a connection or the pool socket is readable or hung up.
    pub fn wait(&self) -> Result<Woken, Errno> {
        use rustix::event::epoll;
        let mut events = Vec::with_capacity(4);
        loop {
            match epoll::wait(&self.set, rustix::buffer::spare_capacity(&mut events), None) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let woke = |n: u64| events.iter().any(|e: &epoll::Event| e.data.u64() == n);
        Ok(Woken {
            listener: woke(0),
            pool: woke(1),
        })
    }
}

/// Accepts a connection on `listener`: close-on-exec, blocking, with the peer's address if it
/// is an IP one.
pub fn accept(listener: RawFd) -> Result<(RawFd, Option<core::net::SocketAddr>), Errno> {
    let (fd, addr) =
        rustix::net::acceptfrom_with(borrow(listener)?, rustix::net::SocketFlags::CLOEXEC)?;
    let inet = addr.and_then(|a| core::net::SocketAddr::try_from(a).ok());
    // Placed by number from here on, like every fd of the spawn state.
    Ok((fd.into_raw_fd(), inet))
}

/// Sends `bytes` on the socket `fd` as one message, without SIGPIPE if the peer is gone.
pub fn send(fd: RawFd, bytes: &[u8]) -> Result<(), Errno> {
    let sent = rustix::net::send(borrow(fd)?, bytes, rustix::net::SendFlags::NOSIGNAL)?;
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(Errno::EIO)
    }
}

/// A unix socket peer's pid, uid and gid (SO_PEERCRED); pid 0 when the peer is outside our pid
/// namespace.
pub fn peer_credentials(fd: RawFd) -> Result<(i32, u32, u32), Errno> {
    let fd = borrow(fd)?;
    // struct ucred: pid, uid, gid.
    let mut cred = [0u32; 3];
    let mut len: u32 = 12;
    // SAFETY: getsockopt writes at most `len` (12) bytes into `cred`, which has that many, and
    // the length back into `len`; both outlive the call. Plain integers hold any value it
    // writes (rustix's UCred would not: its pid cannot be 0).
    unsafe {
        raw::syscall5(
            raw::GETSOCKOPT,
            [
                fd.as_raw_fd() as usize,
                raw::SOL_SOCKET,
                raw::SO_PEERCRED,
                cred.as_mut_ptr() as usize,
                ptr::from_mut(&mut len) as usize,
            ],
        )
    }?;
    Ok((cred[0] as i32, cred[1], cred[2]))
}

/// Closes every fd in `first..=last`.
pub fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes integers (no flags) and touches no memory. The callers keep every
    // fd a Rust object of ours owns out of the range (none exist while it runs), so nothing is
    // closed behind an owner's back.
    unsafe { raw::syscall(raw::CLOSE_RANGE, [first as usize, last as usize, 0, 0]) }?;
    Ok(())
}

/// The open fd numbers of this process, for kernels without close_range (before 5.9).
pub fn open_fds() -> Result<Vec<RawFd>, Errno> {
    let dir = rustix::fs::open(
        c"/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut fds = Vec::new();
    for entry in rustix::fs::Dir::new(dir)? {
        let entry = entry?;
        // "." and ".." are not numbers.
        if let Some(fd) = entry.file_name().to_str().ok().and_then(|s| s.parse().ok()) {
            fds.push(fd);
        }
    }
    // The directory's own fd was in the listing and is closed now that the `Dir` is dropped;
    // closing that number again fails harmlessly with EBADF.
    Ok(fds)
}

/// The kernel's `struct sigaction` on x86_64 and aarch64. Only SIG_DFL or SIG_IGN is ever
/// passed, with no flags, no restorer and an empty mask, and the struct is as large as any
/// 64-signal architecture's, so one without a restorer field (riscv64) reads the same values.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

const SIG_DFL: usize = 0;

/// Sets `sig` to `handler`, SIG_DFL or SIG_IGN: never a function of ours.
fn set_disposition(sig: i32, handler: usize) -> Result<(), Errno> {
    let action = KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: the kernel reads one `struct sigaction` from `action`, which outlives the call, and
    // writes nothing (null old-action pointer). SIG_DFL and SIG_IGN run no code in signal
    // context. The kernel's call, not a libc's: there is no libc here whose internal signals
    // (32 and 33 on glibc) it could disturb, so they are set like any other.
    unsafe {
        raw::syscall(
            raw::RT_SIGACTION,
            [
                sig as usize,
                ptr::from_ref(&action) as usize,
                0,
                raw::SIGSET_SIZE,
            ],
        )
    }?;
    Ok(())
}

/// Sets signal `sig` to its default disposition.
pub fn reset_signal(sig: i32) -> Result<(), Errno> {
    set_disposition(sig, SIG_DFL)
}

/// Empties the signal mask.
pub fn unblock_all_signals() -> Result<(), Errno> {
    let empty: u64 = 0;
    // SAFETY: the kernel reads one 8-byte set from `empty`, which outlives the call, and writes
    // nothing (null old-set pointer). An empty mask only lets signals in; no code of ours relies
    // on one being blocked.
    unsafe {
        raw::syscall(
            raw::RT_SIGPROCMASK,
            [
                raw::SIG_SETMASK,
                ptr::from_ref(&empty) as usize,
                0,
                raw::SIGSET_SIZE,
            ],
        )
    }?;
    Ok(())
}

pub fn setsid() -> Result<(), Errno> {
    rustix::process::setsid()?;
    Ok(())
}

pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_pid()
}

/// The session id of this process.
pub fn getsid() -> Result<i32, Errno> {
    Ok(rustix::process::getsid(None)?.as_raw_pid())
}

/// Opens `path` close-on-exec.
pub fn open(path: &CStr, flags: OFlags, mode: u32) -> Result<OwnedFd, Errno> {
    Ok(rustix::fs::open(
        path,
        flags | OFlags::CLOEXEC,
        Mode::from_bits_retain(mode),
    )?)
}

pub fn isatty(fd: &OwnedFd) -> bool {
    rustix::termios::isatty(fd)
}

/// Makes the terminal `fd` the controlling terminal of this session.
pub fn set_controlling_terminal(fd: &OwnedFd) -> Result<(), Errno> {
    // rustix passes 0: do not steal the terminal from another session.
    rustix::process::ioctl_tiocsctty(fd)?;
    Ok(())
}

/// Every resource limit Linux has; a number outside them is refused with the kernel's EINVAL.
const RESOURCES: [Resource; 16] = [
    Resource::Cpu,
    Resource::Fsize,
    Resource::Data,
    Resource::Stack,
    Resource::Core,
    Resource::Rss,
    Resource::Nproc,
    Resource::Nofile,
    Resource::Memlock,
    Resource::As,
    Resource::Locks,
    Resource::Sigpending,
    Resource::Msgqueue,
    Resource::Nice,
    Resource::Rtprio,
    Resource::Rttime,
];

/// Sets both the soft and the hard limit of `resource` to `value` (`u64::MAX`: unlimited).
pub fn set_rlimit(resource: u32, value: u64) -> Result<(), Errno> {
    let resource = RESOURCES
        .into_iter()
        .find(|&r| r as u32 == resource)
        .ok_or(Errno::EINVAL)?;
    // rustix makes this prlimit64 on ourselves, whose values are 64-bit on every architecture;
    // `u64::MAX` is RLIM64_INFINITY as it is.
    let limit = Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    rustix::process::setrlimit(resource, limit)?;
    Ok(())
}

pub fn umask(mask: u32) {
    // The kernel keeps the permission bits of whatever it is given.
    rustix::process::umask(Mode::from_bits_retain(mask));
}

pub fn chdir(path: &CStr) -> Result<(), Errno> {
    rustix::process::chdir(path)?;
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

// The ids go to the kernel unchecked: rustix's checked constructors assert they are not -1,
// which the kernel reads as "leave unchanged"; the verification after the switch catches that.

/// Sets the supplementary groups. rustix calls it `set_thread_groups` because the system call
/// is per thread; the executor has one thread.
pub fn setgroups(groups: &[u32]) -> Result<(), Errno> {
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw_unchecked(g)).collect();
    rustix::thread::set_thread_groups(&groups)?;
    Ok(())
}

pub fn setresgid(gid: u32) -> Result<(), Errno> {
    let gid = Gid::from_raw_unchecked(gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    Ok(())
}

pub fn setresuid(uid: u32) -> Result<(), Errno> {
    let uid = Uid::from_raw_unchecked(uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    Ok(())
}

/// The real, effective and saved user ids.
pub fn getresuid() -> Result<[u32; 3], Errno> {
    let mut ids = [0u32; 3];
    let [r, e, s] = ids.each_mut().map(ptr::from_mut);
    // SAFETY: the kernel writes one uid through each pointer, into `ids`, which outlives the call.
    unsafe { raw::syscall(raw::GETRESUID, [r as usize, e as usize, s as usize, 0]) }?;
    Ok(ids)
}

/// The real, effective and saved group ids.
pub fn getresgid() -> Result<[u32; 3], Errno> {
    let mut ids = [0u32; 3];
    let [r, e, s] = ids.each_mut().map(ptr::from_mut);
    // SAFETY: the kernel writes one gid through each pointer, into `ids`, which outlives the call.
    unsafe { raw::syscall(raw::GETRESGID, [r as usize, e as usize, s as usize, 0]) }?;
    Ok(ids)
}

/// Replaces this process with `path`; returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
    let argv: Vec<*const core::ffi::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([ptr::null()])
        .collect();
    let envp: Vec<*const core::ffi::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([ptr::null()])
        .collect();
    // SAFETY: `path` and every string behind the two pointer arrays are NUL-terminated and are
    // borrowed for the whole call; both arrays end with the null pointer execve requires.
    let result = unsafe {
        raw::syscall(
            raw::EXECVE,
            [
                path.as_ptr() as usize,
                argv.as_ptr() as usize,
                envp.as_ptr() as usize,
                0,
            ],
        )
    };
    match result {
        Err(errno) => errno,
        // execve returns only to fail; a success here would be a kernel bug.
        Ok(_) => Errno::EIO,
    }
}

/// Ends the process at once: no destructors, no return into anyone's code.
pub fn exit(code: u8) -> ! {
    // SAFETY: exit_group takes an integer and ends every thread of the process (the only one),
    // so nothing of ours runs after it.
    let _ = unsafe { raw::syscall(raw::EXIT_GROUP, [usize::from(code), 0, 0, 0]) };
    unreachable!("exit_group returned")
}

/// The system calls made without rustix, directly. Numbers per architecture, from the kernel's
/// syscall tables (aarch64 and riscv64 share the generic one).
mod raw {
    use super::Errno;

    #[cfg(target_arch = "x86_64")]
    mod nr {
        pub const RT_SIGACTION: usize = 13;
        pub const RT_SIGPROCMASK: usize = 14;
        pub const EXECVE: usize = 59;
        pub const GETRESUID: usize = 118;
        pub const GETRESGID: usize = 120;
        pub const EXIT_GROUP: usize = 231;
        pub const GETSOCKOPT: usize = 55;
    }
    #[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
    mod nr {
        pub const EXIT_GROUP: usize = 94;
        pub const RT_SIGACTION: usize = 134;
        pub const RT_SIGPROCMASK: usize = 135;
        pub const GETRESUID: usize = 148;
        pub const GETRESGID: usize = 150;
        pub const EXECVE: usize = 221;
        pub const GETSOCKOPT: usize = 209;
    }
    pub use nr::*;
    /// The same everywhere: it came after the tables were unified.
    pub const CLOSE_RANGE: usize = 436;

    /// getsockopt's SOL_SOCKET and SO_PEERCRED, the same on every architecture we build for.
    pub const SOL_SOCKET: usize = 1;
    pub const SO_PEERCRED: usize = 17;

    /// rt_sigprocmask's `how`s.
    #[cfg(all(no_libc, not(test)))]
    pub const SIG_UNBLOCK: usize = 1;
    pub const SIG_SETMASK: usize = 2;
    /// The size of the kernel's signal set: 64 signals.
    pub const SIGSET_SIZE: usize = 8;

    /// System call `nr` with up to four arguments (unused ones 0). The kernel returns
    /// `-errno` on failure.
    ///
    /// # Safety
    ///
    /// The arguments must be valid for system call `nr`: any memory they point to must be
    /// valid for what the kernel does with it.
    pub unsafe fn syscall(nr: usize, args: [usize; 4]) -> Result<usize, Errno> {
        let [a0, a1, a2, a3] = args;
        // SAFETY: the caller's promise, with a fifth argument the call does not read.
        unsafe { syscall5(nr, [a0, a1, a2, a3, 0]) }
    }

    /// [`syscall`] with five arguments.
    ///
    /// # Safety
    ///
    /// As for [`syscall`].
    pub unsafe fn syscall5(nr: usize, args: [usize; 5]) -> Result<usize, Errno> {
        let [a0, a1, a2, a3, a4] = args;
        let ret: isize;
        // SAFETY: the caller vouches for the arguments; the block follows the architecture's
        // system call convention and declares every register the kernel clobbers.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a0,
                in("rsi") a1,
                in("rdx") a2,
                in("r10") a3,
                in("r8") a4,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, preserves_flags),
            );
        }
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") nr,
                inlateout("x0") a0 as isize => ret,
                in("x1") a1,
                in("x2") a2,
                in("x3") a3,
                in("x4") a4,
                options(nostack, preserves_flags),
            );
        }
        // SAFETY: as above.
        #[cfg(target_arch = "riscv64")]
        unsafe {
            core::arch::asm!(
                "ecall",
                in("a7") nr,
                inlateout("a0") a0 as isize => ret,
                in("a1") a1,
                in("a2") a2,
                in("a3") a3,
                in("a4") a4,
                options(nostack, preserves_flags),
            );
        }
        // -4095..=-1 are errors; everything else is a result.
        if (-4095..0).contains(&ret) {
            Err(Errno(-ret as i32))
        } else {
            Ok(ret as usize)
        }
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!("steward-executor supports x86_64, aarch64 and riscv64 Linux");

/// The libc-free build's entry, and what std's runtime did for the std build: start-up,
/// allocator, panic handler and abort.
#[cfg(all(no_libc, not(test)))]
mod start {
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::{Cell, UnsafeCell};
    use core::ffi::CStr;
    use core::fmt::Write;
    use core::ptr;

    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::fd::IntoRawFd;
    use rustix::fs::{Mode, OFlags};
    use rustix::process::Signal;

    use super::{Errno, SIG_DFL, borrow, raw, set_disposition};

    // Nothing else names origin; this links its `_start`, which calls `origin_main` below.
    extern crate origin;

    /// Called by origin's `_start` with the arguments the kernel put on the stack.
    ///
    /// # Safety
    ///
    /// `argv` points to `argc` NUL-terminated strings, as origin promises.
    // SAFETY: no other symbol in the program is named `origin_main`, and this one has exactly
    // the signature origin declares it with.
    #[unsafe(no_mangle)]
    unsafe fn origin_main(argc: usize, argv: *mut *mut u8, _envp: *mut *mut u8) -> i32 {
        prepare_like_std();
        // argv[0] is the program's name; the command line proper follows it.
        let args: Vec<&'static [u8]> = (1..argc)
            .map(|i| {
                // SAFETY: i < argc, so argv[i] is one of the kernel's NUL-terminated argument
                // strings, which stay in place for the life of the process.
                unsafe { CStr::from_ptr((*argv.add(i)).cast()) }.to_bytes()
            })
            .collect();
        crate::executor_main(&args)
    }

    /// What std's runtime did before `main` that the service or the manager could tell apart,
    /// kept so that the executor without it behaves the same.
    fn prepare_like_std() {
        // Fds 0, 1 and 2 that are not open are opened on /dev/null: a service with `inherit`
        // stdio gets /dev/null rather than a hole the first file it opens would fall into.
        if let Ok(closed) = closed_standard_fds() {
            for _ in closed.into_iter().filter(|&closed| closed) {
                // Not close-on-exec, and open takes the lowest free number: each fills a hole.
                match rustix::fs::open(c"/dev/null", OFlags::RDWR, Mode::empty()) {
                    Ok(fd) => {
                        let _ = fd.into_raw_fd();
                    }
                    Err(_) => abort(),
                }
            }
        }
        // Writes to a pipe nobody reads fail with EPIPE instead of killing the executor, so a
        // message or a status report to a vanished reader still ends in the intended exit
        // status. The signals step puts SIGPIPE back to its default before the service runs.
        const SIG_IGN: usize = 1;
        let _ = set_disposition(Signal::PIPE.as_raw(), SIG_IGN);
    }

    /// Which of fds 0, 1, 2 are not open: one poll, as std asks.
    fn closed_standard_fds() -> Result<[bool; 3], Errno> {
        let standard = [borrow(0)?, borrow(1)?, borrow(2)?];
        let mut polled = standard.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::empty()));
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match rustix::event::poll(&mut polled, Some(&now)) {
                Ok(_) => {
                    return Ok(polled
                        .each_ref()
                        .map(|fd| fd.revents().contains(PollFlags::NVAL)));
                }
                Err(rustix::io::Errno::INTR) => {}
                // As std does when poll is refused (a tiny RLIMIT_NOFILE, no memory): ask
                // each fd.
                Err(_) => {
                    return Ok(standard
                        .map(|fd| rustix::io::fcntl_getfd(fd) == Err(rustix::io::Errno::BADF)));
                }
            }
        }
    }

    /// A panic is a bug. Say where, as std did, then abort, as std's abort-on-panic release
    /// build did.
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        // std's wording: "thread 'main' panicked at FILE:LINE:COL:" and the message.
        let mut message = String::new();
        let _ = writeln!(message, "thread 'main' {info}");
        let _ = super::write_all(2, message.as_bytes());
        abort()
    }

    /// Dies of SIGABRT, as libc's `abort` does.
    fn abort() -> ! {
        // SIGABRT at its default disposition and unblocked, so the kill ends the process.
        // Errors are ignored: the exit after the kill covers every way this could fail.
        let _ = set_disposition(Signal::ABORT.as_raw(), SIG_DFL);
        let abrt: u64 = 1 << (Signal::ABORT.as_raw() - 1);
        // SAFETY: the kernel reads one 8-byte set from `abrt`, which outlives the call, and
        // writes nothing. Unblocking the signal the process is about to die of disturbs
        // nothing of ours.
        let _ = unsafe {
            raw::syscall(
                raw::RT_SIGPROCMASK,
                [
                    raw::SIG_UNBLOCK,
                    ptr::from_ref(&abrt) as usize,
                    0,
                    raw::SIGSET_SIZE,
                ],
            )
        };
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::ABORT);
        // The status a shell reports for death by SIGABRT.
        super::exit(134)
    }

    /// Memory served from `arena`, a static buffer, and then from anonymous mappings when that
    /// is used up; nothing is given back but the latest allocation. The executor lives for
    /// microseconds before exec discards the whole address space, and allocates a few KiB for a
    /// usual spawn state, so freeing would be work for nothing.
    struct Bump {
        arena: UnsafeCell<[u8; ARENA_SIZE]>,
        /// The next free byte and the end of the current region; null until the first
        /// allocation points them into `arena`.
        next: Cell<*mut u8>,
        end: Cell<*mut u8>,
        /// Where the latest allocation starts, which can grow, shrink and be freed in place.
        last: Cell<*mut u8>,
        /// The first byte of the current region never handed out: from there on the region is
        /// as the kernel gave it, zero, and a zeroed allocation need not write it. A pooled
        /// executor's 64 KiB receive buffer would otherwise fault in 16 pages it never reads.
        fresh: Cell<*mut u8>,
    }

    /// Served from .bss: pages the executor never touches cost nothing.
    const ARENA_SIZE: usize = 256 << 10;
    /// Mappings made past the arena are at least this large, so growth maps rarely.
    const MAP_SIZE: usize = 1 << 20;

    // SAFETY: the executor is single-threaded (origin's thread support is not built in, and it
    // never clones), so the cells are never accessed concurrently.
    unsafe impl Sync for Bump {}

    #[global_allocator]
    static ALLOCATOR: Bump = Bump {
        arena: UnsafeCell::new([0; ARENA_SIZE]),
        next: Cell::new(ptr::null_mut()),
        end: Cell::new(ptr::null_mut()),
        last: Cell::new(ptr::null_mut()),
        fresh: Cell::new(ptr::null_mut()),
    };

    impl Bump {
        /// Takes `layout` from the current region, if it fits there: the block, and how many of
        /// its first bytes were handed out before (the rest is zero).
        fn take(&self, layout: Layout) -> Option<(*mut u8, usize)> {
            if self.end.get().is_null() {
                let arena = self.arena.get().cast::<u8>();
                self.next.set(arena);
                self.fresh.set(arena);
                self.end.set(arena.wrapping_add(ARENA_SIZE));
            }
            let next = self.next.get();
            let room = self.end.get().addr() - next.addr();
            let skip = next.align_offset(layout.align());
            if skip.checked_add(layout.size())? > room {
                return None;
            }
            // In bounds of the region: `skip + size <= room`.
            let start = next.wrapping_add(skip);
            let used = self.fresh.get().addr().saturating_sub(start.addr());
            self.advance(start.wrapping_add(layout.size()));
            self.last.set(start);
            Some((start, used.min(layout.size())))
        }

        /// Moves the next free byte to `next`, in the current region.
        fn advance(&self, next: *mut u8) {
            self.next.set(next);
            if next.addr() > self.fresh.get().addr() {
                self.fresh.set(next);
            }
        }

        /// `take`, mapping a new region if the current one is full.
        fn take_or_map(&self, layout: Layout) -> Option<(*mut u8, usize)> {
            self.take(layout)
                .or_else(|| self.map(layout).and_then(|()| self.take(layout)))
        }

        /// Makes a new anonymous mapping the current region, large enough for `layout`.
        fn map(&self, layout: Layout) -> Option<()> {
            let len = layout.size().checked_add(layout.align())?.max(MAP_SIZE);
            // SAFETY: a fresh private anonymous mapping aliases nothing; it is never unmapped,
            // so it stays valid for every allocation handed out of it.
            let region = unsafe {
                rustix::mm::mmap_anonymous(
                    ptr::null_mut(),
                    len,
                    rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                    rustix::mm::MapFlags::PRIVATE,
                )
            }
            .ok()?
            .cast::<u8>();
            self.next.set(region);
            self.fresh.set(region);
            self.end.set(region.wrapping_add(len));
            // The latest block is in the old region, where it can no longer grow.
            self.last.set(ptr::null_mut());
            Some(())
        }
    }

    // SAFETY: every block handed out lies within `arena` or within a mapping that is never
    // unmapped, is aligned as asked, and overlaps no live block: `next` only moves forward,
    // except back over the latest block when it is freed or shrunk. A zeroed block is zero:
    // `fresh` only moves forward within a region, and nothing but a block handed out ever
    // wrote below it, so past it the region is still the kernel's zero-filled .bss or mapping.
    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.take_or_map(layout)
                .map_or(ptr::null_mut(), |(block, _)| block)
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let Some((block, used)) = self.take_or_map(layout) else {
                return ptr::null_mut();
            };
            // SAFETY: `block` is a fresh block of `layout.size()` bytes and `used` is at most
            // that; past `used` it is memory no block ever held, zero since the kernel gave it.
            unsafe { ptr::write_bytes(block, 0, used) };
            block
        }

        unsafe fn dealloc(&self, block: *mut u8, _layout: Layout) {
            if block == self.last.get() {
                self.next.set(block);
                self.last.set(ptr::null_mut());
            }
        }

        unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // The latest block grows or shrinks where it is, when its region has room.
            if block == self.last.get() && new_size <= self.end.get().addr() - block.addr() {
                self.advance(block.wrapping_add(new_size));
                return block;
            }
            // SAFETY: the caller guarantees that `layout.align()` is a power of two and that
            // `new_size`, rounded up to it, does not overflow isize.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: `new_layout` has a non-zero size, as the caller guarantees of `new_size`.
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are live and distinct, and both are at least this long.
                unsafe { ptr::copy_nonoverlapping(block, new, layout.size().min(new_size)) };
            }
            new
        }
    }
}
