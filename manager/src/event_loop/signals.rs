//! Signals, through the signalfd: SIGCHLD asks for a reap; the others call the same handlers
//! as their control commands (SIGHUP and `reload`, SIGTERM and `shutdown`, …). As PID 1 the
//! init signals mean what `pid1` says.

use steward_protocol::control::Reply;

use super::Manager;
use crate::config::Signal;
use crate::log;
use crate::pid1::{self, Finish, InitSignal};

impl Manager {
    /// Reads every pending signal and acts on it; returns whether a child exited.
    pub(super) fn on_signals(&mut self) -> bool {
        let mut reap = false;
        let init = pid1::is_init();
        // A read returns as many records as are pending and fit: a short one says there are
        // no more, so the common case (one SIGCHLD) costs one read, not a second for EAGAIN.
        const BATCH: usize = 8;
        let mut buf = [0u8; BATCH * crate::sys::SIGINFO_LEN];
        loop {
            let n = match rustix::io::read(&self.signals, &mut buf) {
                Ok(n) => n,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::manager(format_args!("reading the signalfd failed: {e}"));
                    break;
                }
            };
            for info in buf[..n].chunks_exact(crate::sys::SIGINFO_LEN) {
                match Signal(crate::sys::siginfo_signo(info)) {
                    Signal::CHLD => reap = true,
                    Signal(signo) if init => self.on_init_signal(signo),
                    Signal::TERM | Signal::INT => self.stop_all(Finish::Exit),
                    // The same handler as `stewardctl reload`; the outcome is logged there.
                    Signal::HUP => {
                        let _ = self.reload();
                    }
                    _ => {}
                }
            }
            if n < buf.len() {
                break;
            }
        }
        reap
    }

    /// What a signal means to PID 1 (see `pid1`).
    fn on_init_signal(&mut self, signo: i32) {
        match pid1::meaning(signo) {
            Some(InitSignal::Reload) => {
                let _ = self.reload();
            }
            Some(InitSignal::Reexec) => {
                if let Reply::Error { message } = self.reexec(None) {
                    log::manager(format_args!("reexec on SIGTERM: {message}"));
                }
            }
            Some(InitSignal::Stop(finish)) => self.stop_all(finish),
            None => log::manager(format_args!("ignoring signal {signo}")),
        }
    }
}
