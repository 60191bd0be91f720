//! The manager's only unsafe code, and its only use of libc: what rustix (the manager's one
//! syscall layer) does not cover — the signal mask and signalfd, posix_spawn, clone3 into a
//! cgroup, execv, strerror, malloc_trim, madvise, mmap, signal numbers beyond rustix's named ones — and taking
//! ownership of the fds a `reexec` hands over by number.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// SIGRTMIN as the C library defines it (glibc keeps the first two real-time signals).
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// The signals this process ignores (SIG_IGN), by asking the kernel directly: glibc's
/// sigaction hides its internal 32 and 33.
pub fn ignored_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&sig| {
            // The kernel's struct sigaction starts with the handler on every architecture;
            // 32 bytes cover the whole struct, which the kernel writes into.
            let mut old = [0u64; 4];
            // SAFETY: rt_sigaction with a null new action only writes the old one into `old`,
            // a live buffer large enough for the kernel's struct; 8 is the kernel sigset size.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<u8>(),
                    old.as_mut_ptr(),
                    8usize,
                )
            };
            rc == 0 && old[0] == libc::SIG_IGN as u64
        })
        .collect()
}

/// Fixes glibc's mmap threshold at its default, 128 KiB. Left to itself, glibc raises it to
/// the size of every mmapped block freed: start-up frees a few large ones (the parsed config's
/// services, the units before they are registered), and from then on blocks up to that size
/// come from the heap, where the holes they leave when freed stay resident among the units
/// allocated meanwhile (100 KiB of the manager's heap with 1000 services). Fixed, every block
/// over 128 KiB is a mapping of its own, returned whole when freed.
pub fn fix_mmap_threshold() {
    // SAFETY: mallopt only sets a parameter of glibc's allocator, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the heap's free pages back to the kernel. Loading a config builds a whole document
/// tree that is freed at once; glibc keeps such pages resident, which on a small board is the
/// manager's memory for nothing.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state, under its own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps the pages of file mappings that start-up touched (the config parser, the first
/// spawns) and that hold nothing but the file's bytes: the manager's code and read-only data,
/// and those of the C library and the dynamic loader. The kernel maps a file's pages 64 KiB
/// around each fault, so by now nearly all of them are resident, and each counts against the
/// manager for as long as it stays mapped. The pages stay in the page cache: what the loop runs
/// is mapped again from there on first use, with no I/O. Then the same for the stack below
/// this frame: parsing the config went deeper than the loop ever does.
pub fn release_startup_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    // The stack first: once the code is dropped, whatever runs maps its page back, and what
    // runs after the loop below is only the loop.
    if let Some(bottom) = stack_bottom(&smaps) {
        release_dead_stack(bottom);
    }
    for mapping in pristine_file_mappings(&smaps) {
        #[cfg(feature = "page-profile")]
        one_page_mappings(&mapping);
        // SAFETY: `pristine_file_mappings` yields whole private file mappings that are not
        // writable and hold no anonymous (copied-on-write) page: every page they map is the
        // file's own, so MADV_DONTNEED only drops page table entries and the next access maps
        // the same bytes from the page cache again. Relocated data (RELRO) was written, so it
        // holds anonymous pages and is not among them. The code running this call is mapped
        // back as it returns.
        unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// Splits `mapping` into mappings of one page each, for `make hot-functions`: the kernel maps
/// pages around a fault only within the faulting mapping, so afterwards the pages mapped are
/// exactly the pages used. Neighbours must differ in a flag to stay apart; the readahead hints
/// alternate (they only steer reads from disk).
#[cfg(feature = "page-profile")]
fn one_page_mappings(mapping: &Range) {
    let Some(page) = page_size() else {
        return;
    };
    for (i, start) in (mapping.start..mapping.end).step_by(page).enumerate() {
        let hint = if i % 2 == 0 {
            libc::MADV_RANDOM
        } else {
            libc::MADV_SEQUENTIAL
        };
        // SAFETY: a page of a mapping of ours; the hint changes how the kernel reads ahead
        // for it, nothing of its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, page, hint);
        }
    }
}

/// The size of a page, from the C library (which has it from the kernel at start-up; rustix
/// has none in a process that re-executed itself).
fn page_size() -> Option<usize> {
    // SAFETY: sysconf reads a value and touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
}

/// Address range of one mapping.
#[derive(Debug, PartialEq)]
struct Range {
    start: usize,
    end: usize,
}

/// The private, read-only or executable, file-backed mappings of `smaps` (the text of
/// /proc/self/smaps) without a page copied on write, resident or swapped out.
fn pristine_file_mappings(smaps: &str) -> Vec<Range> {
    let mut found = Vec::new();
    // The mapping whose fields are being read, while it qualifies, and whether its count of
    // anonymous pages was read yet (a mapping is only taken on the kernel's word).
    let mut current: Option<(Range, bool)> = None;
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            found.extend(
                current
                    .take()
                    .filter(|&(_, counted)| counted)
                    .map(|(r, _)| r),
            );
            current = header.map(|range| (range, false));
            continue;
        }
        let (anonymous, value) = match (line.strip_prefix("Anonymous:"), line.strip_prefix("Swap:"))
        {
            (Some(value), _) => (true, value),
            (None, Some(value)) => (false, value),
            (None, None) => continue,
        };
        if value.trim().trim_end_matches("kB").trim() != "0" {
            current = None;
        } else if let Some((_, counted)) = current.as_mut() {
            *counted |= anonymous;
        }
    }
    found.extend(current.filter(|&(_, counted)| counted).map(|(r, _)| r));
    found
}

/// For a mapping's header line in smaps (start-end perms offset dev inode [path]): its range
/// if it is a private, not writable mapping of a file. None for a line of fields.
fn mapping_header(line: &str) -> Option<Option<Range>> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(inode)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    let (start, end) = range.split_once('-')?;
    let (Ok(start), Ok(end)) = (
        usize::from_str_radix(start, 16),
        usize::from_str_radix(end, 16),
    ) else {
        return None;
    };
    let private_read_only = perms.len() == 4 && perms.ends_with('p') && !perms.contains('w');
    let file = inode != "0";
    Some((private_read_only && file).then_some(Range { start, end }))
}

/// The lowest address of the main thread's stack mapping, from `smaps` (or `maps`).
fn stack_bottom(smaps: &str) -> Option<usize> {
    smaps
        .lines()
        .find(|line| line.ends_with("[stack]"))
        .and_then(|line| line.split_once('-'))
        .and_then(|(start, _)| usize::from_str_radix(start, 16).ok())
}

/// Drops the pages of the stack that starts at `bottom` below this function's frame: nothing
/// lives there once start-up has returned, and the kernel gives a zeroed page again to whatever
/// goes that deep later.
#[inline(never)]
fn release_dead_stack(bottom: usize) {
    let Some(page) = page_size() else {
        return;
    };
    let here = 0u8;
    // A page of room below this frame for the madvise call itself and its callees.
    let below = (std::ptr::addr_of!(here) as usize & !(page - 1)).saturating_sub(page);
    if below <= bottom {
        return;
    }
    // SAFETY: [bottom, below) is the stack of the manager's only thread below its live frames
    // and a page of room for the call below: what was stored there belongs to calls that have
    // returned (a signal handler's frame too, and std's run on a stack of their own), so
    // MADV_DONTNEED loses nothing live, and the kernel maps a zero page there again on the
    // next access.
    unsafe {
        libc::madvise(
            bottom as *mut libc::c_void,
            below - bottom,
            libc::MADV_DONTNEED,
        );
    }
}

/// A set of signals by number, real-time ones included.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set of `signos`; numbers the C library refuses are left out.
    pub fn of(signos: &[i32]) -> SignalSet {
        let mut raw = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given, a live local.
        let mut raw = unsafe {
            libc::sigemptyset(raw.as_mut_ptr());
            raw.assume_init()
        };
        for &signo in signos {
            // SAFETY: sigaddset writes into the set we own; an invalid number is refused.
            unsafe {
                libc::sigaddset(&mut raw, signo);
            }
        }
        SignalSet(raw)
    }

    /// Blocks the set in this thread (the manager's only one), so that its signals wait for
    /// the signalfd instead of running a default action.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: pthread_sigmask reads the set we own and writes no old set.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// A signalfd for the set: non-blocking, close-on-exec.
    pub fn signalfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: signalfd with -1 creates a new fd; it reads the set we own.
        let fd = unsafe { libc::signalfd(-1, &self.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this new fd, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// The size of one `struct signalfd_siginfo`, what each read of a signalfd returns.
pub const SIGINFO_LEN: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// The signal number of one `struct signalfd_siginfo` as read from a signalfd.
pub fn siginfo_signo(bytes: &[u8]) -> i32 {
    // `ssi_signo` is the struct's first field, a u32 in the machine's byte order.
    u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i32
}

/// The peer of a unix socket: (pid, uid, gid). The pid is 0 when the peer lives in a pid
/// namespace we cannot see (a client outside the namespace steward is init of), which
/// rustix's credentials type cannot represent.
pub fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<(i32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `cred`, a live local of that size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid, cred.gid))
}

/// Whether `fd` is open in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the fd's flags and touches no memory; on a closed or invalid number
    // the kernel answers EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Whether `fd` was inherited across the exec that started this image and is not adopted yet:
/// open, above stdio, and without FD_CLOEXEC. Every fd the manager opens is close-on-exec, and
/// a previous manager cleared the flag on exactly the fds it hands over, so such an fd can be
/// owned by nothing in this process.
pub fn inherited(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the fd's flags and touches no memory; on a closed or invalid number
    // the kernel answers EBADF.
    let flags = if fd > 2 {
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    } else {
        -1
    };
    flags >= 0 && flags & libc::FD_CLOEXEC == 0
}

/// `WDIOC_SETTIMEOUT`, `WDIOC_GETTIMEOUT` and `WDIOC_KEEPALIVE` of linux/watchdog.h:
/// `_IOWR('W', 6, int)`, `_IOR('W', 7, int)`, `_IOR('W', 5, int)`.
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;

/// Asks a watchdog device for a timeout of `secs`; returns what the driver granted.
pub fn watchdog_set_timeout(fd: BorrowedFd<'_>, secs: i32) -> io::Result<i32> {
    let mut value: libc::c_int = secs;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the pointer, which points
    // at a live local of that type for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), WDIOC_SETTIMEOUT, &mut value) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The timeout a watchdog device runs with.
pub fn watchdog_timeout(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    // SAFETY: WDIOC_GETTIMEOUT writes one int through the pointer, which points at a live
    // local of that type for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), WDIOC_GETTIMEOUT, &mut value) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Pings a watchdog device.
pub fn watchdog_keepalive(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut unused: libc::c_int = 0;
    // SAFETY: WDIOC_KEEPALIVE takes (and ignores) an int pointer, which points at a live
    // local of that type for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), WDIOC_KEEPALIVE, &mut unused) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `a` and `b` are the same open file (kcmp KCMP_FILE), as systemd asks before it
/// stores an fd twice. A kernel without kcmp says no: the fd is then stored again.
pub fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    let pid = std::process::id() as libc::c_long;
    // SAFETY: kcmp compares two fd numbers of our own process and touches no memory of ours;
    // both are open for the call (borrowed).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a.as_raw_fd() as libc::c_long,
            b.as_raw_fd() as libc::c_long,
        )
    };
    rc == 0
}

/// Clears FD_CLOEXEC on fd number `fd`, so that it crosses the next exec: the panic hook's way
/// of handing over the fds its snapshot names, which it knows by number only (the `OwnedFd`s
/// are out of its reach, somewhere up the panicking stack). A number that is not open is
/// EBADF and changes nothing.
pub fn inheritable(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD changes one flag of an fd table entry and touches no memory; the fd
    // stays owned by whoever owns it, and the exec that follows is the point.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of an fd a previous manager handed over across exec (see [`inherited`]),
/// and makes it close-on-exec again: ours alone, and never adoptable twice.
pub fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if !inherited(fd) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the fd is open and was inherited, not opened by this image (which opens
    // everything close-on-exec), and not adopted before (adopting sets the flag): nothing in
    // this process owns it. The manager is single-threaded, so nothing changes in between.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD changes one flag of an fd we now own and touches no memory.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        let e = io::Error::last_os_error();
        // Not ours after all: do not close what we could not mark.
        std::mem::forget(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Sends `signal` (any number 1..=64, real-time ones included, which rustix's `Signal` does not
/// name) to a process, or to a process group when `pid` is negative.
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

/// The C library's text for an errno, without Rust's "(os error N)" suffix.
pub fn errno_text(errno: i32) -> String {
    let mut buf = [0u8; 128];
    // SAFETY: the XSI strerror_r writes a NUL-terminated message of at most `buf.len()` bytes
    // into our buffer.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return format!("error {errno}");
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("error {errno}"))
}

/// A NULL-terminated array of pointers into `strings`, which must outlive its use.
fn pointers(strings: &[&CStr]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// execv(2): replaces this process image. Returns only on failure, with the error.
pub fn execv(path: &CStr, argv: &[&CStr]) -> io::Error {
    let argv = pointers(argv);
    // SAFETY: `path` and every argument are NUL-terminated strings that live across the call;
    // `argv` is NULL-terminated. On success the call does not return.
    unsafe {
        libc::execv(path.as_ptr(), argv.as_ptr());
    }
    io::Error::last_os_error()
}

/// glibc's posix_spawn (CLONE_VM|CLONE_VFORK) of `path` with an empty environment, passing on
/// exactly the fds in `keep` at their numbers (everything else the manager holds is
/// close-on-exec): the fallback for kernels without clone3's CLONE_INTO_CGROUP.
pub fn posix_spawn(path: &CStr, argv: &[&CStr], keep: &[BorrowedFd<'_>]) -> io::Result<i32> {
    let argv = pointers(argv);
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    // SAFETY: initialises the actions object in our local.
    let rc = unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: initialised just above.
    let mut actions = unsafe { actions.assume_init() };
    let mut result = Ok(0);
    for fd in keep {
        // A dup2 of an fd onto itself clears its FD_CLOEXEC in the child (Austin Group issue
        // 411, which glibc implements).
        // SAFETY: adds an action to the initialised object we own.
        let rc = unsafe {
            libc::posix_spawn_file_actions_adddup2(&mut actions, fd.as_raw_fd(), fd.as_raw_fd())
        };
        if rc != 0 {
            result = Err(io::Error::from_raw_os_error(rc));
            break;
        }
    }
    if result.is_ok() {
        let mut pid = 0;
        // SAFETY: every pointer is live for the call: the path, the NULL-terminated argv and
        // envp, the actions object; a null attribute means the defaults.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                std::ptr::null(),
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            )
        };
        result = if rc == 0 {
            Ok(pid)
        } else {
            Err(io::Error::from_raw_os_error(rc))
        };
    }
    // SAFETY: destroys the object initialised above, once.
    unsafe {
        libc::posix_spawn_file_actions_destroy(&mut actions);
    }
    result
}

/// What the child of [`spawn_into_cgroup`] needs, in memory it shares with the parent
/// (CLONE_VM): in its [`Slot`], which nothing touches until the child has exec'd or exited.
#[repr(C)]
struct ChildData {
    /// The executor to exec, by fd: no path walk through /proc (whose entries for the
    /// child's pid the kernel would then have to drop again at its reaping).
    exec_fd: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    keep: *const RawFd,
    keep_len: usize,
    /// Set by the child when it cannot exec.
    errno: i32,
}

/// A raw system call with up to three arguments, returning the kernel's result (-errno on
/// failure). The child of a clone shares our memory and our thread pointer, so it must not
/// touch libc's `errno` (our thread's): it calls the kernel through this alone.
///
/// # Safety
///
/// As for the system call `nr` with those arguments.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn raw_syscall(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
    // SAFETY: the caller vouches for the call; the kernel ignores the arguments it does not take.
    unsafe { raw_syscall5(nr, a, b, c, 0, 0) }
}

/// [`raw_syscall`] with five arguments.
///
/// # Safety
///
/// As for the system call `nr` with those arguments.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn raw_syscall5(
    nr: libc::c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call itself; the asm clobbers only what the kernel's
    // calling convention says it does.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            in("r8") e,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr as usize,
            inlateout("x0") a as isize => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            in("x4") e,
            options(nostack),
        );
    }
    ret
}

/// The child's whole life: clear close-on-exec on the fds it must pass on, exec. Runs on its
/// own stack in the parent's memory, with every signal blocked, while the parent goes on (or
/// is suspended, for a CLONE_VFORK child), so it makes raw system calls and nothing else: no
/// allocation, no locks, no `errno`, nothing that could touch state the parent relies on.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" fn child(data: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `data` is the `ChildData` of this child's slot (see `Slot`), which the parent
    // leaves alone until the kernel has told it the child exec'd or exited; the strings and
    // fds it points to live in the same slot (or the spawner, for the path).
    unsafe {
        let data = &mut *data.cast::<ChildData>();
        for i in 0..data.keep_len {
            let fd = *data.keep.add(i);
            let rc = raw_syscall(libc::SYS_fcntl, fd as usize, libc::F_SETFD as usize, 0);
            if rc < 0 {
                data.errno = -rc as i32;
                raw_syscall(libc::SYS_exit, 127, 0, 0);
            }
        }
        let rc = raw_syscall5(
            libc::SYS_execveat,
            data.exec_fd as usize,
            c"".as_ptr() as usize,
            data.argv as usize,
            data.envp as usize,
            libc::AT_EMPTY_PATH as usize,
        );
        data.errno = -rc as i32;
        raw_syscall(libc::SYS_exit, 127, 0, 0);
    }
    127
}

/// The kernel's `struct clone_args`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

// `clone3_call(args, size, f, arg)`: clone3, then in the child (now on the stack `args` names)
// `exit(f(arg))`; in the parent, the raw result (pid, or -errno). glibc offers no clone3
// wrapper, and a child on a new stack cannot return into Rust code, hence this trampoline.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".globl steward_clone3_call",
    ".type steward_clone3_call, @function",
    "steward_clone3_call:",
    "  mov r8, rdx",
    "  mov r9, rcx",
    "  mov eax, 435",
    "  syscall",
    "  test rax, rax",
    "  jz 2f",
    "  ret",
    "2:",
    "  xor ebp, ebp",
    "  mov rdi, r9",
    "  call r8",
    "  mov edi, eax",
    "  mov eax, 60",
    "  syscall",
    "  ud2",
);

#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".globl steward_clone3_call",
    ".type steward_clone3_call, %function",
    "steward_clone3_call:",
    "  mov x9, x2",
    "  mov x10, x3",
    "  mov x8, #435",
    "  svc #0",
    "  cbz x0, 2f",
    "  ret",
    "2:",
    "  mov x29, xzr",
    "  mov x0, x10",
    "  blr x9",
    "  mov x8, #93",
    "  svc #0",
    "  brk #0",
);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe extern "C" {
    fn steward_clone3_call(
        args: *const CloneArgs,
        size: usize,
        f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
    ) -> libc::c_long;
}

/// One child's stack and everything it reads, owned by the child from the clone until the
/// kernel zeroes `busy` (CLONE_CHILD_CLEARTID: at the child's exec, or its exit).
#[repr(C)]
struct Slot {
    busy: std::sync::atomic::AtomicU32,
    data: ChildData,
    argv: Vec<std::ffi::CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: [*const libc::c_char; 1],
    keep: Vec<RawFd>,
    stack: Pages,
}

impl Slot {
    fn new() -> Box<Slot> {
        Box::new(Slot {
            busy: std::sync::atomic::AtomicU32::new(0),
            data: ChildData {
                exec_fd: -1,
                argv: std::ptr::null(),
                envp: std::ptr::null(),
                keep: std::ptr::null(),
                keep_len: 0,
                errno: 0,
            },
            argv: Vec::new(),
            argv_ptrs: Vec::new(),
            envp: [std::ptr::null()],
            keep: Vec::new(),
            // 16 KiB: the child makes a few system calls and nothing else. A mapping of its
            // own: only the pages a child touches become resident (a heap block may lie where
            // start-up's freed blocks left every page resident). Page-aligned, as a stack
            // must be 16-byte aligned.
            stack: Pages::zeroed(16 * 1024 / 8),
        })
    }

    fn free(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::Acquire) == 0
    }
}

/// The clones in flight: children of [`spawn_into_cgroup`] that have not exec'd yet, each on
/// a slot of its own. At most [`Launcher::SLOTS`]; when all are taken, the next clone waits for
/// its exec (CLONE_VFORK) on the slot kept for that.
pub struct Launcher {
    /// Boxed: a child's kernel holds the address of its slot's `busy`, which must not move
    /// when the vector grows.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<Slot>>,
    vfork: Box<Slot>,
}

impl Default for Launcher {
    fn default() -> Self {
        Launcher {
            slots: Vec::new(),
            vfork: Slot::new(),
        }
    }
}

impl Launcher {
    const SLOTS: usize = 8;

    /// A free slot for a child that runs beside us; `None`: wait for this one's exec.
    fn free_slot(&mut self) -> Option<&mut Slot> {
        if let Some(i) = self.slots.iter().position(|slot| slot.free()) {
            return Some(&mut self.slots[i]);
        }
        if self.slots.len() < Self::SLOTS {
            self.slots.push(Slot::new());
            return self.slots.last_mut().map(|slot| &mut **slot);
        }
        None
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // A child still before its exec would have the kernel write into a freed slot when it
        // gets there: those slots are left to the process's end instead.
        for slot in std::mem::take(&mut self.slots) {
            if !slot.free() {
                std::mem::forget(slot);
            }
        }
    }
}

/// posix_spawn's CLONE_VM spawn (no page of ours is copied, however large we are), plus
/// CLONE_INTO_CGROUP: the child is born in the cgroup `cgroup` (a v2 directory), so nobody has
/// to migrate it there. (A migration takes the kernel's cgroup threadgroup lock for writing,
/// which can wait out an RCU grace period: many milliseconds.) Unlike posix_spawn, we do not
/// wait for the child's exec (no CLONE_VFORK) while a slot is free: the child execs on another
/// core while the loop goes on with the next event. `keep` are the fds that must survive the
/// exec (FD_CLOEXEC cleared in the child only). Returns the pid, or the errno of clone3 (or,
/// when it waited for the exec, of the child's execve; else a failed exec is the child's exit
/// status 127). An error from clone3 itself (ENOSYS before Linux 5.3, E2BIG/EINVAL before 5.7)
/// means: use posix_spawn.
pub fn spawn_into_cgroup(
    exec: BorrowedFd<'_>,
    argv: &[&CStr],
    keep: &[BorrowedFd<'_>],
    cgroup: BorrowedFd<'_>,
    launcher: &mut Launcher,
) -> io::Result<i32> {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (exec, argv, keep, cgroup, launcher);
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let (slot, waits) = match launcher.free_slot() {
            Some(slot) => (slot, false),
            None => (&mut *launcher.vfork, true),
        };
        slot.argv = argv.iter().map(|a| (*a).to_owned()).collect();
        slot.argv_ptrs = slot
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        slot.keep = keep.iter().map(|fd| fd.as_raw_fd()).collect();
        slot.data = ChildData {
            exec_fd: exec.as_raw_fd(),
            argv: slot.argv_ptrs.as_ptr(),
            envp: slot.envp.as_ptr(),
            keep: slot.keep.as_ptr(),
            keep_len: slot.keep.len(),
            errno: 0,
        };
        slot.busy.store(1, std::sync::atomic::Ordering::Release);
        let stack = slot.stack.words_mut();
        let stack_bytes = std::mem::size_of_val(stack);
        let vfork = if waits { libc::CLONE_VFORK as u64 } else { 0 };
        let args = CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_CHILD_CLEARTID) as u64 | vfork | CLONE_INTO_CGROUP,
            child_tid: slot.busy.as_ptr() as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.as_mut_ptr() as u64,
            stack_size: stack_bytes as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // Every signal blocked around the clone, as glibc's posix_spawn does: the child shares
        // our memory and must never run one of our handlers. It execs with them blocked; the
        // executor sets its own (empty) mask.
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and fills `old`, both
        // live locals.
        unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
        }
        let data: *mut ChildData = &mut slot.data;
        // SAFETY: `args` describes the slot's stack, which only this child uses: the slot is
        // not handed out again until the kernel clears `busy` at the child's exec or exit
        // (CLONE_CHILD_CLEARTID), and the launcher never frees a busy slot. `child` only makes
        // raw system calls on what the slot holds.
        let ret = unsafe {
            steward_clone3_call(&args, std::mem::size_of::<CloneArgs>(), child, data.cast())
        };
        // SAFETY: restores the mask saved above, initialised by the earlier call.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
        }
        if ret < 0 {
            slot.busy.store(0, std::sync::atomic::Ordering::Release);
            return Err(io::Error::from_raw_os_error(-ret as i32));
        }
        let pid = ret as i32;
        if waits {
            // The child is gone or exec'd by now (CLONE_VFORK); reading what it wrote is
            // ordered after its exit by the vfork completion.
            // SAFETY: the slot is ours again; volatile because the write came from the child.
            let errno = unsafe { std::ptr::read_volatile(&slot.data.errno) };
            if errno != 0 {
                let mut status = 0;
                // SAFETY: reaps our own failed child; `status` is a live local.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resident size in kB of the mapping that starts at `start`, from /proc/self/smaps.
    fn resident_kb(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            let Some((range, _)) = line.split_once(' ') else {
                continue;
            };
            let Some((from, _)) = range.split_once('-') else {
                continue;
            };
            if usize::from_str_radix(from, 16) != Ok(start) {
                continue;
            }
            for field in lines.by_ref() {
                if let Some(kb) = field.strip_prefix("Rss:") {
                    return kb.trim().trim_end_matches(" kB").parse().unwrap();
                }
            }
        }
        panic!("no mapping at {start:#x}");
    }

    #[test]
    fn pages_become_resident_only_where_written() {
        // 64 pages: with multi-size huge pages a write may bring in a 64 KiB folio, not
        // only its page.
        let words = 64 * 4096 / 8;
        let mut pages = Pages::zeroed(words);
        let Pages::Mapped { start, .. } = &pages else {
            panic!("not mapped");
        };
        let start = start.as_ptr() as usize;
        assert_eq!(pages.bytes().len(), 64 * 4096);
        assert_eq!(resident_kb(start), 0);
        pages.bytes_mut()[3 * 4096 + 5] = 7;
        pages.words_mut()[words - 1] = u64::MAX;
        let resident = resident_kb(start);
        assert!((8..=128).contains(&resident), "{resident} kB resident");
        assert_eq!(pages.bytes()[3 * 4096 + 5], 7);
        assert_eq!(pages.bytes().iter().filter(|&&b| b != 0).count(), 9);
        assert_eq!(Pages::zeroed(0).bytes().len(), 0);
    }

    #[test]
    fn only_private_unwritten_file_mappings_are_pristine() {
        let smaps = "\
55d0c0000000-55d0c0033000 r--p 00000000 fe:00 10010781                   /usr/sbin/steward
Rss:                 128 kB
Anonymous:             0 kB
55d0c0033000-55d0c011b000 r-xp 00032000 fe:00 10010781                   /usr/sbin/steward
Anonymous:             0 kB
55d0c011b000-55d0c0121000 r--p 0011a000 fe:00 10010781                   /usr/sbin/steward
Anonymous:            24 kB
55d0c0121000-55d0c0122000 rw-p 0011f000 fe:00 10010781                   /usr/sbin/steward
Anonymous:             4 kB
7efff0000000-7efff0001000 r--p 00001000 fe:00 77                         /usr/lib/libc.so.6
Anonymous:             0 kB
Swap:                  4 kB
7efff0001000-7efff0002000 r-xp 00002000 fe:00 77                         /usr/lib/libc.so.6
Rss:                   4 kB
7f0000000000-7f0000001000 r--s 00000000 fe:00 123                        /var/db/shared
Anonymous:             0 kB
7f0000001000-7f0000002000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7ffd00002000-7ffd00003000 rw-p 00000000 00:00 0                          [stack]
Anonymous:             4 kB
";
        assert_eq!(stack_bottom(smaps), Some(0x7ffd00002000));
        // The headers and constants, and the code; not RELRO (relocated: anonymous pages),
        // data, a mapping with a copy swapped out or none counted, a shared mapping, an
        // anonymous one or the vDSO.
        assert_eq!(
            pristine_file_mappings(smaps),
            [
                Range {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0033000
                },
                Range {
                    start: 0x55d0c0033000,
                    end: 0x55d0c011b000
                },
            ]
        );
    }

    #[test]
    fn errno_text_has_no_suffix() {
        assert_eq!(errno_text(2), "No such file or directory");
        assert_eq!(errno_text(13), "Permission denied");
    }

    #[test]
    fn datagrams_come_a_batch_at_a_time_with_their_senders_and_lengths() {
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixDatagram;
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        rustix::net::sockopt::set_socket_passcred(&ours, true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        // Past the queue's default 10 on a socketpair: send what fits, read, send the rest.
        let mut batch = Batch::new(8);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut sent = 0;
        while got.len() < BATCH + 4 {
            while sent < BATCH + 4 && theirs.send(format!("m{sent}").as_bytes()).is_ok() {
                sent += 1;
            }
            let datagrams = recv_datagrams(ours.as_fd(), &mut batch).unwrap();
            assert!(!datagrams.is_empty() && datagrams.len() <= BATCH);
            for (i, d) in datagrams.iter().enumerate() {
                assert_eq!(d.credentials.unwrap().pid, std::process::id() as i32);
                assert!(!d.truncated && d.fds.is_empty());
                got.push(batch.data(i, d).to_vec());
            }
        }
        let want: Vec<Vec<u8>> = (0..BATCH + 4)
            .map(|i| format!("m{i}").into_bytes())
            .collect();
        assert_eq!(got, want);
        theirs.send(b"0123456789").unwrap();
        let long = recv_datagrams(ours.as_fd(), &mut batch).unwrap();
        assert!(long[0].truncated && long[0].len == 8);
        let empty = recv_datagrams(ours.as_fd(), &mut batch).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }
}

/// The kernel's credentials of a datagram's sender (SCM_CREDENTIALS). The pid is 0 when the
/// sender lives in a pid namespace we cannot see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// The sender's pid, as our namespace sees it.
    pub pid: i32,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

/// One datagram received with its ancillary data.
#[derive(Debug)]
pub struct Datagram {
    /// How many bytes of the buffer it filled.
    pub len: usize,
    /// It was longer than the buffer (MSG_TRUNC).
    pub truncated: bool,
    /// Some of its fds did not fit (MSG_CTRUNC): the kernel closed those.
    pub fds_truncated: bool,
    /// The sender's credentials, when the kernel attached them.
    pub credentials: Option<Credentials>,
    /// The fds it carried, ours now (close-on-exec).
    pub fds: Vec<OwnedFd>,
}

/// How many datagrams one [`recv_datagrams`] takes at most.
pub const BATCH: usize = 16;

/// Room for the credentials and SCM_MAX_FD fds, in u64s (aligned for cmsghdr).
const CONTROL_WORDS: usize = 256;

/// The buffers of one [`recv_datagrams`], made once and reused: [`BATCH`] data buffers of
/// `len` bytes and their control buffers, in [`Pages`]: only the pages the kernel writes to
/// become resident (a ping fills a few bytes of one buffer). The default has no room (and
/// allocates nothing): a stand-in while the real one is lent out.
#[derive(Default)]
pub struct Batch {
    data: Pages,
    control: Pages,
    len: usize,
}

impl Batch {
    /// Buffers for datagrams of up to `len` bytes (a longer one is MSG_TRUNC).
    pub fn new(len: usize) -> Batch {
        Batch {
            data: Pages::zeroed((len * BATCH).div_ceil(8)),
            control: Pages::zeroed(CONTROL_WORDS * BATCH),
            len,
        }
    }

    /// The bytes of the `i`-th datagram of the last receive.
    pub fn data(&self, i: usize, datagram: &Datagram) -> &[u8] {
        &self.data.bytes()[i * self.len..][..datagram.len]
    }
}

/// Zeroed memory in a mapping of its own, so that a page of it becomes resident only once
/// written to. A heap block promises no such thing: calloc clears a block it reuses (touching
/// every page), and a reused block's pages are resident already. The notify socket's 96 KiB of
/// buffers were all resident from start-up that way, whether a service ever sent a datagram.
/// 16-byte aligned (page-aligned when mapped): fit for a stack.
pub enum Pages {
    /// Its own anonymous mapping of `pairs` u128s.
    Mapped {
        /// The mapping's start.
        start: std::ptr::NonNull<u128>,
        /// Its length in u128s.
        pairs: usize,
    },
    /// On the heap: what the kernel refused to map (or nothing), zeroed all the same.
    Heap(Box<[u128]>),
}

impl Default for Pages {
    fn default() -> Pages {
        Pages::Heap(Box::default())
    }
}

impl Pages {
    /// At least `words` zeroed u64s (an even number).
    pub fn zeroed(words: usize) -> Pages {
        let pairs = words.div_ceil(2);
        let bytes = pairs * std::mem::size_of::<u128>();
        if bytes == 0 {
            return Pages::default();
        }
        // SAFETY: a new private anonymous mapping, placed by the kernel: nothing else's memory
        // is touched.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(start.cast::<u128>()) {
            Some(start) if start.as_ptr().cast() != libc::MAP_FAILED => {
                Pages::Mapped { start, pairs }
            }
            _ => Pages::Heap(vec![0; pairs].into_boxed_slice()),
        }
    }

    /// Where the memory starts, and its length in u128s.
    fn raw(&self) -> (*const u128, usize) {
        match self {
            Pages::Mapped { start, pairs } => (start.as_ptr().cast_const(), *pairs),
            Pages::Heap(pairs) => (pairs.as_ptr(), pairs.len()),
        }
    }

    /// The same, to be written through.
    fn raw_mut(&mut self) -> (*mut u128, usize) {
        match self {
            Pages::Mapped { start, pairs } => (start.as_ptr(), *pairs),
            Pages::Heap(pairs) => (pairs.as_mut_ptr(), pairs.len()),
        }
    }

    /// The memory as u64s.
    pub fn words_mut(&mut self) -> &mut [u64] {
        let (start, pairs) = self.raw_mut();
        // SAFETY: `pairs` initialized u128s at `start` (zero-filled by the kernel or by vec!),
        // ours alone while `self` is borrowed exclusively; two u64s are a u128's bytes, at an
        // alignment above theirs.
        unsafe { std::slice::from_raw_parts_mut(start.cast::<u64>(), pairs * 2) }
    }

    /// The memory as bytes.
    pub fn bytes(&self) -> &[u8] {
        let (start, pairs) = self.raw();
        // SAFETY: `pairs` initialized u128s at `start`, live while `self` is borrowed; any
        // u128 is a valid run of 16 bytes, and bytes need no alignment.
        unsafe { std::slice::from_raw_parts(start.cast::<u8>(), pairs * 16) }
    }

    /// The memory as bytes, to be written.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (start, pairs) = self.raw_mut();
        // SAFETY: as for `words_mut`; any bytes written make valid u128s.
        unsafe { std::slice::from_raw_parts_mut(start.cast::<u8>(), pairs * 16) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if let Pages::Mapped { start, pairs } = self {
            // SAFETY: the mapping made in `zeroed`, of that length, unmapped once: nothing
            // borrows it any more.
            unsafe {
                libc::munmap(start.as_ptr().cast(), *pairs * 16);
            }
        }
    }
}

/// Receives up to [`BATCH`] datagrams without blocking, in one recvmmsg(2): their bytes into
/// `batch`, their fds and their senders' credentials (the socket has SO_PASSCRED). An empty
/// queue is WouldBlock. rustix's credentials type cannot hold the pid 0 the kernel gives for a
/// sender in another pid namespace, hence this.
pub fn recv_datagrams(fd: BorrowedFd<'_>, batch: &mut Batch) -> io::Result<Vec<Datagram>> {
    let len = batch.len;
    let mut iovs: Vec<libc::iovec> = batch
        .data
        .bytes_mut()
        .chunks_exact_mut(len)
        .take(BATCH)
        .map(|buf| libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(batch.control.words_mut().chunks_exact_mut(CONTROL_WORDS))
        .map(|(iov, control)| {
            // SAFETY: an all-zero msghdr is a valid empty one; the fields we need are set here.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(control) as _;
            libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            }
        })
        .collect();
    // SAFETY: each header describes one live data buffer of `len` bytes and one live control
    // buffer of the size it names, both inside `batch`, borrowed mutably for the call;
    // recvmmsg writes no more than that into each. MSG_CMSG_CLOEXEC makes every fd it installs
    // close-on-exec; a null timeout with MSG_DONTWAIT returns what is queued.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(headers[..n as usize]
        .iter()
        .map(|h| received(&h.msg_hdr, h.msg_len as usize, len))
        .collect())
}

/// What the kernel wrote into one message header: its length, flags, fds and credentials.
fn received(msg: &libc::msghdr, n: usize, capacity: usize) -> Datagram {
    let mut datagram = Datagram {
        len: n.min(capacity),
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        credentials: None,
        fds: Vec::new(),
    };
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen; each header's length was written by the kernel.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` points at a complete header inside the control buffer (CMSG_NXTHDR
        // checks).
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        // SAFETY: the payload starts right after the header, inside the control buffer.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: CMSG_LEN(0) is the header's own size: no memory is read.
        let header = unsafe { libc::CMSG_LEN(0) } as usize;
        let payload = len.saturating_sub(header);
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    // SAFETY: the kernel wrote `payload` bytes of fd numbers at `data`;
                    // read unaligned, as a cmsg payload need not be aligned for an int.
                    let raw = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                    // SAFETY: each number is an fd the kernel just installed for us, which
                    // nothing else owns.
                    datagram.fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                if payload >= std::mem::size_of::<libc::ucred>() =>
            {
                // SAFETY: the kernel wrote a whole ucred at `data`; read unaligned.
                let cred = unsafe { data.cast::<libc::ucred>().read_unaligned() };
                datagram.credentials = Some(Credentials {
                    pid: cred.pid,
                    uid: cred.uid,
                    gid: cred.gid,
                });
            }
            _ => {}
        }
        // SAFETY: advances within the buffer the msghdr describes, or returns null at its end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    datagram
}
