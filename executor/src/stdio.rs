//! Fds 0, 1 and 2 of the service.

use alloc::ffi::CString;

use rustix::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use rustix::fs::OFlags;
use steward_protocol::{Stdio, Step};

use crate::failure::{AtStep, Failure};
use crate::fds::Placed;
use crate::sys::{self, Errno};

/// Each fd with the step that reports a failure to set it up.
const SLOTS: [(RawFd, Step); 3] = [(0, Step::Stdin), (1, Step::Stdout), (2, Step::Stderr)];

/// Sets up fds 0, 1, 2 as `stdio` says. Runs after setsid: a terminal opened here becomes the
/// controlling terminal of the service's new session.
pub fn apply(stdio: &[Stdio; 3], placed: &Placed) -> Result<(), Failure> {
    for (i, (how, (slot, step))) in stdio.iter().zip(SLOTS).enumerate() {
        // A path an earlier slot already opened is shared, as a shell's `>file 2>&1` would: one
        // open file, one offset, and a terminal made controlling once. /dev/null likewise, so
        // that it is opened once, not three times.
        let earlier = match how {
            Stdio::Path(_) | Stdio::Null => stdio[..i]
                .iter()
                .zip(SLOTS)
                .find(|(other, _)| *other == how)
                .map(|(_, (earlier, _))| earlier),
            Stdio::Inherit | Stdio::Fd(_) => None,
        };
        match earlier {
            Some(earlier) => sys::dup2(earlier, slot).at(step)?,
            None => place(slot, how, placed).at(step)?,
        }
    }
    Ok(())
}

fn place(slot: RawFd, how: &Stdio, placed: &Placed) -> Result<(), Errno> {
    match how {
        Stdio::Inherit => Ok(()),
        Stdio::Null => install(slot, sys::open(c"/dev/null", OFlags::RDWR, 0)?),
        // Placement lifted every source out of 0..3, so this dup2 never has src == dst and
        // always clears FD_CLOEXEC.
        Stdio::Fd(fd) => sys::dup2(placed.current(*fd), slot),
        Stdio::Path(path) => {
            let path = CString::new(path.as_str()).map_err(|_| Errno::EINVAL)?;
            // No O_NOCTTY: a terminal is meant to become the controlling one.
            let flags = OFlags::RDWR | OFlags::CREATE | OFlags::APPEND;
            let file = sys::open(&path, flags, 0o640)?;
            if sys::isatty(&file) {
                sys::set_controlling_terminal(&file)?;
            }
            install(slot, file)
        }
    }
}

/// Puts `file` at `slot`, crossing exec.
fn install(slot: RawFd, file: OwnedFd) -> Result<(), Errno> {
    if file.as_raw_fd() == slot {
        // The slot was closed, so open landed right on it, close-on-exec. Keep it open past
        // its owner and let it cross exec.
        sys::set_cloexec(slot, false)?;
        let _ = file.into_raw_fd();
        Ok(())
    } else {
        sys::dup2(file.as_raw_fd(), slot)
    }
}
