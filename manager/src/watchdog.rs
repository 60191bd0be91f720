//! The hardware watchdog, as PID 1 (`[manager] watchdog_device`): opened right after the
//! config is read, set to `watchdog_timeout`, and pinged from the loop at half the timeout the
//! driver granted, for as long as the loop runs: through a `reexec` and a panic recovery (the
//! fd crosses the exec), and the whole shutdown, with a last ping just before reboot(2). It is
//! never closed the magic way (writing `V`), so a manager that stops running its loop, however
//! it stops (a hang, a kernel stuck in D state, the emergency path), is reset by the hardware.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use crate::log;
use crate::sys;

/// An open watchdog device and when it is to be pinged next.
#[derive(Debug)]
pub struct Watchdog {
    fd: OwnedFd,
    /// Half the timeout the driver granted.
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// Opens `device` and sets its timeout; `None`, logged, when it cannot be used: steward
    /// runs without it rather than not at all.
    pub fn open(device: &Path, timeout: Duration) -> Option<Watchdog> {
        let fd = match rustix::fs::open(device, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                log::manager(format_args!(
                    "hardware watchdog {}: {e}; running without it",
                    device.display()
                ));
                return None;
            }
        };
        let asked = timeout.as_secs().clamp(1, i32::MAX as u64) as i32;
        let granted = match sys::watchdog_set_timeout(fd.as_fd(), asked) {
            Ok(granted) if granted > 0 => granted,
            // A driver with a fixed timeout: run with whatever it has.
            Ok(_) | Err(_) => sys::watchdog_timeout(fd.as_fd()).unwrap_or(asked).max(1),
        };
        log::manager(format_args!(
            "hardware watchdog {}: timeout {granted}s (asked {asked}s), pinged every {}",
            device.display(),
            crate::config::format_duration(half(granted))
        ));
        Some(Watchdog::with(fd, granted))
    }

    /// The device a previous manager had open (handed over by fd).
    pub fn adopt(fd: OwnedFd) -> Watchdog {
        let timeout = sys::watchdog_timeout(fd.as_fd()).unwrap_or(1).max(1);
        Watchdog::with(fd, timeout)
    }

    fn with(fd: OwnedFd, timeout: i32) -> Watchdog {
        let mut watchdog = Watchdog {
            fd,
            every: half(timeout),
            next: Instant::now(),
        };
        watchdog.ping(Instant::now());
        watchdog
    }

    /// When the loop must ping next.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Pings when due.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next {
            self.ping(now);
        }
    }

    fn ping(&mut self, now: Instant) {
        if let Err(e) = sys::watchdog_keepalive(self.fd.as_fd()) {
            log::manager(format_args!("hardware watchdog: ping failed: {e}"));
        }
        self.next = now + self.every;
    }

    /// The fd, for the state a reexec or a panic recovery hands over.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Borrowed, for a reexec's list of fds to keep open.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The last ping, before reboot(2): the fd is left open (closing it is no magic close,
    /// but makes the kernel warn), and the timer runs on until the reboot.
    pub fn last_ping(mut self) {
        self.ping(Instant::now());
        std::mem::forget(self.fd);
    }
}

fn half(timeout: i32) -> Duration {
    Duration::from_millis(timeout.max(1) as u64 * 500)
}
