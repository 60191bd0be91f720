//! Process-wide attributes the service inherits: signal state, session, resource limits, umask
//! and working directory.

use alloc::ffi::CString;

use steward_protocol::{Rlimit, Step};

use crate::failure::{AtStep, Failure};
use crate::sys::{self, Errno};

/// Every signal at its default disposition, then an empty mask.
///
/// exec already set every caught signal back to its default; what survives it is an ignored
/// one (the Rust runtime ignores SIGPIPE; a manager started under `nohup` ignores SIGHUP). The
/// manager names those in `signals`, so this costs a system call per ignored signal, not 64.
/// The order matters: unblocking first would deliver a pending signal to a disposition the
/// service never asked for.
pub fn reset_signals(signals: &[i32]) -> Result<(), Failure> {
    const SIGKILL: i32 = rustix::process::Signal::KILL.as_raw();
    const SIGSTOP: i32 = rustix::process::Signal::STOP.as_raw();
    for &sig in signals {
        // The kernel refuses to change these two, and they are always at their default.
        if sig == SIGKILL || sig == SIGSTOP || !(1..=64).contains(&sig) {
            continue;
        }
        sys::reset_signal(sig).at(Step::Signals)?;
    }
    sys::unblock_all_signals().at(Step::Signals)
}

/// A session of its own, so the service is no part of the manager's terminal or job control.
pub fn new_session() -> Result<(), Failure> {
    match sys::setsid() {
        Ok(()) => Ok(()),
        // EPERM means we lead a process group; if that group is our own session (the spawner
        // asked for POSIX_SPAWN_SETSID), there is nothing left to do.
        Err(Errno::EPERM) if sys::getsid() == Ok(sys::getpid()) => Ok(()),
        Err(errno) => Err(Failure::new(Step::Setsid, errno)),
    }
}

pub fn set_limits(limits: &[Rlimit]) -> Result<(), Failure> {
    for limit in limits {
        // Both values are the same: a service must not be able to raise its own soft limit
        // past what was configured. protocol's RLIM_INFINITY is the kernel's.
        sys::set_rlimit(limit.resource, limit.value).at(Step::Limits)?;
    }
    Ok(())
}

pub fn set_umask(umask: u32) {
    sys::umask(umask);
}

pub fn change_directory(dir: &str) -> Result<(), Failure> {
    let dir = CString::new(dir)
        .map_err(|_| Errno::EINVAL)
        .at(Step::Chdir)?;
    sys::chdir(&dir).at(Step::Chdir)
}
