//! How a failed step ends the executor: one report on the status pipe, then `_exit`.

use rustix::fd::RawFd;
use steward_protocol::{StatusReport, Step};

use crate::sys::{self, Errno};

/// A step that failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub errno: Errno,
}

impl Failure {
    pub fn new(step: Step, errno: Errno) -> Failure {
        Failure { step, errno }
    }

    /// The exit status the manager sees: systemd's number for the step.
    pub fn exit_code(self) -> u8 {
        self.step.exit_code()
    }
}

/// Attaches the step to a syscall's error, so each stage names its step once.
pub trait AtStep<T> {
    fn at(self, step: Step) -> Result<T, Failure>;
}

impl<T> AtStep<T> for Result<T, Errno> {
    fn at(self, step: Step) -> Result<T, Failure> {
        self.map_err(|errno| Failure::new(step, errno))
    }
}

/// The write end of the status pipe. Its number changes once, when fd placement moves it out
/// of the way of the service's fds.
pub struct StatusPipe {
    pub fd: RawFd,
    /// Armed for a restart ([`steward_protocol::Start::OnWord`]), the manager's word still to
    /// come on this socket.
    pub word: Word,
}

/// Whether the manager may still send its word on the status socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    None,
    Awaited,
}

impl StatusPipe {
    /// A status pipe (or pool socket) at `fd` no word will come on.
    pub fn at(fd: RawFd) -> StatusPipe {
        StatusPipe {
            fd,
            word: Word::None,
        }
    }

    /// Reports `failure` to the manager and exits with its status.
    pub fn fail(&self, failure: Failure) -> ! {
        let report = StatusReport {
            step: failure.step,
            errno: failure.errno.0,
        };
        // Nothing is left to tell if the write fails: the exit status still names the step.
        let _ = sys::write(self.fd, &report.encode());
        if self.word == Word::Awaited {
            // A unix socket closed with a message unread resets the connection, and the
            // manager's read of our report would fail with ECONNRESET: its word (or its end of
            // file, once it has read the report) is taken first.
            let _ = crate::armed::wait_word(self.fd);
        }
        sys::exit(failure.exit_code())
    }
}
