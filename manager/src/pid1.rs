//! Being PID 1: the filesystems nobody mounted yet, a console, the init signals, the final
//! power-off or reboot, and never exiting (the kernel panics when init does).
//!
//! Signals as PID 1 (the kernel delivers no signal to init that it has no handler for, so
//! every one listed is handled through the signalfd and every other is ignored):
//!
//! | signal | action |
//! | --- | --- |
//! | SIGHUP | reload |
//! | SIGINT (ctrl-alt-del, which steward asks the kernel to signal instead of rebooting) | reboot |
//! | SIGTERM | re-execute (as systemd does) in the machine's own pid namespace; power off as PID 1 of a child one (a container: what `docker stop` and `podman stop` send) |
//! | SIGUSR1, SIGRTMIN+3 | halt |
//! | SIGUSR2, SIGPWR, SIGRTMIN+4 | power off |
//! | SIGRTMIN+5 | reboot |
//!
//! In a child pid namespace the final reboot(2) ends the namespace instead of the machine,
//! which is what a container or the tests want.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags, mount, mount_remount, unmount};
use rustix::system::RebootCommand;

use crate::config::Signal;
use crate::log;

/// What the manager does once every service has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Exit 0 (not PID 1).
    Exit,
    /// Halt the machine.
    Halt,
    /// Power it off.
    Poweroff,
    /// Reboot it.
    Reboot,
}

impl Finish {
    /// For the log.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Exit => "exit",
            Finish::Halt => "halt",
            Finish::Poweroff => "power off",
            Finish::Reboot => "reboot",
        }
    }
}

/// Whether we are the init of our pid namespace.
pub fn is_init() -> bool {
    own_pid() == 1
}

/// Our pid, asked once: it never changes (the manager never forks, and a reexec keeps it),
/// and glibc no longer caches it, so every signal and log line would cost a system call.
pub fn own_pid() -> i32 {
    static PID: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *PID.get_or_init(|| std::process::id() as i32)
}

/// What a signal means to PID 1 (`None`: ignored). SIGCHLD is the loop's own business.
pub enum InitSignal {
    /// Reload the config.
    Reload,
    /// Re-execute.
    Reexec,
    /// Stop everything, then this.
    Stop(Finish),
}

/// The init meaning of signal `signo`.
pub fn meaning(signo: i32) -> Option<InitSignal> {
    let rt = crate::sys::sigrtmin();
    match Signal(signo) {
        Signal::HUP => Some(InitSignal::Reload),
        // `docker stop` and friends mean "stop": only a machine's own init re-executes.
        Signal::TERM if initial_namespace() => Some(InitSignal::Reexec),
        Signal::TERM => Some(InitSignal::Stop(Finish::Poweroff)),
        Signal::INT => Some(InitSignal::Stop(Finish::Reboot)),
        Signal::USR1 => Some(InitSignal::Stop(Finish::Halt)),
        Signal::USR2 | Signal::PWR => Some(InitSignal::Stop(Finish::Poweroff)),
        Signal(s) if s == rt + 3 => Some(InitSignal::Stop(Finish::Halt)),
        Signal(s) if s == rt + 4 => Some(InitSignal::Stop(Finish::Poweroff)),
        Signal(s) if s == rt + 5 => Some(InitSignal::Stop(Finish::Reboot)),
        _ => None,
    }
}

/// The signals PID 1 handles, beyond the ones every steward handles.
pub fn extra_signals() -> Vec<i32> {
    let rt = crate::sys::sigrtmin();
    vec![
        Signal::USR1.0,
        Signal::USR2.0,
        Signal::PWR.0,
        rt + 3,
        rt + 4,
        rt + 5,
    ]
}

const NOSUID: MountFlags = MountFlags::NOSUID;
const NOSUID_NODEV: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
const NOSUID_NODEV_NOEXEC: MountFlags = NOSUID_NODEV.union(MountFlags::NOEXEC);

/// The API filesystems, mounted where missing: (target, type, flags, options).
const API_MOUNTS: [(&str, &str, MountFlags, Option<&CStr>); 5] = [
    ("/proc", "proc", NOSUID_NODEV_NOEXEC, None),
    ("/sys", "sysfs", NOSUID_NODEV_NOEXEC, None),
    ("/dev", "devtmpfs", NOSUID, Some(c"mode=0755")),
    ("/run", "tmpfs", NOSUID_NODEV, Some(c"mode=0755")),
    ("/tmp", "tmpfs", NOSUID_NODEV, Some(c"mode=1777")),
];

/// Whether `target` is a mount point, from /proc/self/mountinfo (field 5).
fn mounted(target: &str) -> bool {
    if target == "/proc" {
        return Path::new("/proc/self/stat").exists();
    }
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|m| m == target))
    })
}

/// The unified cgroup hierarchy on /sys/fs/cgroup, where nothing is mounted yet (a kernel
/// booting straight into steward): every service gets its cgroup, and its limits. Asked for
/// with `favordynmods` (Linux 6.0+), which makes the migrations a service manager does all
/// day cheap at the price of a slightly slower fork; without it where the kernel is older.
fn mount_cgroup2() -> Option<String> {
    let target = "/sys/fs/cgroup";
    if !Path::new(target).is_dir() || mounted(target) {
        return None;
    }
    let flags = NOSUID_NODEV_NOEXEC;
    let result = mount(
        "cgroup2",
        target,
        "cgroup2",
        flags,
        c"nsdelegate,favordynmods",
    )
    .or_else(|_| mount("cgroup2", target, "cgroup2", flags, None));
    Some(match result {
        Ok(()) => format!("mounted cgroup2 on {target}"),
        Err(e) => format!("cannot mount cgroup2 on {target}: {e}"),
    })
}

/// Whether `dir` is missing or an empty directory: a filesystem mounted there hides nothing.
fn empty_or_missing(dir: &str) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// First thing as PID 1: /proc (the pinned executor is spawned through /proc/self/fd), /sys,
/// /dev, /run and /tmp where nothing is mounted yet; fds 0-2 on the console where closed;
/// ctrl-alt-del as SIGINT. Failures are logged, never fatal: init must come up. Nothing is
/// mounted over a directory that has files in it (in a container, or a test's pid namespace,
/// /tmp is the host's and holds what we are about to read).
pub fn early_setup() {
    // Said once there is a console to say it on: the kernel may have started us without one.
    let mut said = Vec::new();
    for (target, fstype, flags, data) in API_MOUNTS {
        // devtmpfs over a static /dev (an initramfs's /dev/console) is how it is meant to be.
        let scratch = matches!(target, "/run" | "/tmp");
        if mounted(target) || (scratch && !empty_or_missing(target)) {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        said.push(match mount(fstype, target, fstype, flags, data) {
            Err(e) => format!("cannot mount {fstype} on {target}: {e}"),
            Ok(()) => format!("mounted {fstype} on {target}"),
        });
    }
    console_on_closed_stdio();
    kmsg();
    said.extend(mount_cgroup2());
    for line in said {
        log::manager(format_args!("{line}"));
    }
    // The kernel would reboot at once on ctrl-alt-del; as init we stop the services first.
    // (In a child pid namespace this is refused, and there is no such key anyway.)
    let _ = rustix::system::reboot(RebootCommand::CadOff);
    log::nonblocking();
}

/// The machine's init logs to the kernel's log too (once /dev is there); a container's init
/// does not: it would write to its host's.
pub fn kmsg() {
    if initial_namespace() {
        log::kmsg();
    }
}

/// fds 0, 1 and 2 that are closed become /dev/console (or /dev/null without one).
fn console_on_closed_stdio() {
    for fd in 0..=2 {
        if crate::sys::fd_is_open(fd) {
            continue;
        }
        // open returns the lowest free number: this very fd, as every lower one is open.
        let opened: io::Result<OwnedFd> = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
            })
            .map(OwnedFd::from);
        if let Ok(file) = opened {
            if file.as_raw_fd() == fd {
                // std opens close-on-exec; fds 0-2 must reach the services that inherit them.
                let _ = rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty());
                // It must stay open for the life of the process: it is fd 0, 1 or 2 now.
                std::mem::forget(file);
            }
        }
    }
}

/// The inode the kernel gives the initial pid namespace (PROC_PID_INIT_INO).
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// The inode of our pid namespace when it is not the machine's own (a container's or a
/// test's); `None` in the initial one.
pub fn pid_namespace() -> Option<u64> {
    let ino = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(INITIAL_PID_NS);
    (ino != INITIAL_PID_NS).then_some(ino)
}

/// Whether we run in the machine's own pid namespace.
fn initial_namespace() -> bool {
    pid_namespace().is_none()
}

/// The end, once every service has stopped: sync, make the filesystems safe, reboot(2). In a
/// child pid namespace reboot(2) ends the namespace (the kernel kills us), and the mounts are
/// left alone: they may be the host's. Returns only if reboot(2) failed.
pub fn finish(how: Finish) -> io::Error {
    rustix::fs::sync();
    if initial_namespace() {
        unmount_all();
        rustix::fs::sync();
    }
    let command = match how {
        Finish::Halt => RebootCommand::Halt,
        Finish::Poweroff => RebootCommand::PowerOff,
        Finish::Reboot | Finish::Exit => RebootCommand::Restart,
    };
    log::manager(format_args!("{}", how.name()));
    match rustix::system::reboot(command) {
        // The kernel does not come back from a reboot it made.
        Ok(()) => io::Error::other("reboot(2) returned"),
        Err(e) => io::Error::from(e),
    }
}

/// Unmounts what can be, innermost first, and remounts read-only what cannot (the root, or a
/// filesystem still busy).
fn unmount_all() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let targets: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    for target in targets.iter().rev() {
        // The API filesystems go last, with the root: /proc is how we read the list.
        if ["/", "/proc", "/sys", "/dev"].contains(&target.as_str()) {
            continue;
        }
        if unmount(target.as_str(), UnmountFlags::empty()).is_err() {
            let _ = mount_remount(target.as_str(), MountFlags::RDONLY, "");
        }
    }
    let _ = mount_remount("/", MountFlags::RDONLY, "");
}

/// Where PID 1 goes when it cannot run: the shell named by `STEWARD_EMERGENCY_SHELL` (the
/// kernel passes `KEY=VALUE` words of its command line to init as environment), else an
/// endless loop that reaps orphans and says why once a minute. Never returns.
pub fn emergency(why: &str) -> ! {
    log::warning(format_args!("cannot go on as PID 1: {why}"));
    if let Some(shell) = std::env::var_os("STEWARD_EMERGENCY_SHELL") {
        log::manager(format_args!(
            "starting the emergency shell {}",
            Path::new(&shell).display()
        ));
        let shell =
            std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(shell.as_os_str()))
                .unwrap_or_else(|_| c"/bin/sh".into());
        let e = crate::sys::execv(&shell, &[shell.as_c_str()]);
        log::manager(format_args!("the emergency shell failed: {e}"));
    }
    log::manager(format_args!(
        "no emergency shell (set STEWARD_EMERGENCY_SHELL on the kernel command line); reaping orphans"
    ));
    let mut last = std::time::Instant::now();
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
        if last.elapsed() >= std::time::Duration::from_secs(60) {
            log::manager(format_args!("still in emergency mode: {why}"));
            last = std::time::Instant::now();
        }
    }
}
