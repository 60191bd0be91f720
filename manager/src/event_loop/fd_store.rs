//! The fd store against the kernel: what `FDSTORE=1` and `FDSTOREREMOVE=1` messages ask,
//! the hang-ups of stored fds (each watched for EPOLLHUP/EPOLLERR only, one shot, so a dead
//! connection wakes the loop once), and emptying the store when the service is stopped.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use rustix::event::epoll;
use thin_vec::ThinVec;

use super::token::Token;
use super::{Manager, data};
use crate::fd_store::{self, Poll, Stored};
use crate::log;
use crate::notify::Message;
use crate::registry::UnitId;

impl Manager {
    /// The fd-store part of a message from unit `id`: its fds stored, or closed (they close
    /// when `fds` drops, unless kept).
    pub(super) fn store_message(&mut self, id: UnitId, message: &Message, fds: Vec<OwnedFd>) {
        let Some(name) = self.registry.get(id).map(|u| u.name().to_string()) else {
            return;
        };
        let name = name.as_str();
        if message.fd_store_remove {
            match message.fd_name.as_deref() {
                Some(fd_name) => {
                    self.unstore(id, |s| s.name == fd_name);
                }
                None => {
                    if self.notify.first(Some(id), "remove without name") {
                        log::service(
                            name,
                            format_args!("FDSTOREREMOVE=1 without FDNAME; ignored (said once)"),
                        );
                    }
                }
            }
        }
        if !message.fd_store || fds.is_empty() {
            return;
        }
        let fd_name = match fd_store::name(message.fd_name.as_deref()) {
            Ok(fd_name) => fd_name,
            Err(e) => {
                if self.notify.first(Some(id), "bad fd name") {
                    log::service(
                        name,
                        format_args!(
                            "FDNAME={:?} refused ({e}); its {} fd(s) are closed (said once)",
                            message.fd_name.as_deref().unwrap_or_default(),
                            fds.len()
                        ),
                    );
                }
                return;
            }
        };
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let bound = unit.supervisor.config().fd_store as usize;
        let held: Vec<_> = unit
            .io
            .stored
            .iter()
            .map(|s| s.fd.as_fd())
            .chain(unit.io.sockets.iter().map(|l| l.fd.as_fd()))
            .collect();
        let admitted = fd_store::admit(
            &held,
            unit.io.stored.len(),
            bound,
            fds,
            crate::sys::same_file,
        );
        if admitted.excess > 0 && self.notify.first(Some(id), "fd store full") {
            log::service(
                name,
                format_args!(
                    "the fd store is full (fd_store = {bound}): {} fd(s) sent as {fd_name:?} are closed (said once)",
                    admitted.excess
                ),
            );
        }
        let poll = message.fd_poll != Some(false);
        let stored: Vec<Stored> = admitted
            .keep
            .into_iter()
            .map(|fd| {
                let poll = if poll {
                    self.watch_stored(id, &fd)
                } else {
                    Poll::Off
                };
                Stored {
                    name: fd_name.clone(),
                    fd,
                    poll,
                }
            })
            .collect();
        if stored.is_empty() {
            return;
        }
        if let Some(unit) = self.registry.get_mut(id) {
            unit.io.stored.extend(stored);
        }
        self.store_changed(id);
    }

    /// The store of unit `id` changed. A lazy service's armed executor holds the store as it
    /// was when it was armed: it is disarmed, and another is armed with the store as it is.
    fn store_changed(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        if unit.supervisor.config().accept || unit.io.pool.armed() == 0 {
            return;
        }
        unit.io.pool.disarm(0);
        self.sync_pool(id);
    }

    /// Adds a stored fd to the epoll set, for a hang-up or error only.
    fn watch_stored(&self, id: UnitId, fd: &OwnedFd) -> Poll {
        let Some(token) = Token::stored(id, fd.as_raw_fd()) else {
            return Poll::Unpollable;
        };
        // No EPOLLIN: data a client sends while the service restarts waits for the service;
        // only EPOLLHUP and EPOLLERR, which epoll always reports.
        match epoll::add(&self.epoll, fd, data(token), epoll::EventFlags::ONESHOT) {
            Ok(()) => Poll::Watched,
            // A regular file or a memfd (EPERM), an epoll fd that would nest (ELOOP), …
            Err(_) => Poll::Unpollable,
        }
    }

    /// Closes the stored fds of unit `id` that `which` picks, out of the epoll set first (the
    /// service may hold another fd on the same open file, which would keep it there).
    fn unstore(&mut self, id: UnitId, which: impl Fn(&Stored) -> bool) -> usize {
        let Some(unit) = self.registry.get_mut(id) else {
            return 0;
        };
        let (gone, kept): (ThinVec<Stored>, ThinVec<Stored>) = std::mem::take(&mut unit.io.stored)
            .into_iter()
            .partition(which);
        unit.io.stored = kept;
        for stored in &gone {
            if stored.poll == Poll::Watched {
                self.unwatch_fd(&stored.fd);
            }
        }
        if !gone.is_empty() {
            self.store_changed(id);
        }
        gone.len()
    }

    /// Empties unit `id`'s store: it was stopped.
    pub(super) fn empty_store(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        if unit.io.stored.is_empty() {
            return;
        }
        let name = unit.name().to_string();
        let closed = self.unstore(id, |_| true);
        log::service(
            &name,
            format_args!("{closed} stored fd(s) closed: the service was stopped"),
        );
    }

    /// Closes what a reload's lower `fd_store` no longer holds (the newest first).
    pub(super) fn trim_store(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let bound = unit.supervisor.config().fd_store as usize;
        if unit.io.stored.len() <= bound {
            return;
        }
        let name = unit.name().to_string();
        let over = unit.io.stored.split_off(bound);
        for stored in &over {
            if stored.poll == Poll::Watched {
                self.unwatch_fd(&stored.fd);
            }
        }
        log::service(
            &name,
            format_args!(
                "{} stored fd(s) closed: fd_store is {bound} now",
                over.len()
            ),
        );
        self.store_changed(id);
    }

    /// A stored fd reported a hang-up or an error: dropped, if it still does (the number may
    /// have been closed and reused since the event was queued).
    pub(super) fn on_stored_hangup(&mut self, id: UnitId, raw: RawFd) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let Some(stored) = unit.io.stored.iter().find(|s| s.fd.as_raw_fd() == raw) else {
            return;
        };
        if stored.poll != Poll::Watched {
            return;
        }
        if !hung_up(&stored.fd) {
            // Not this fd's: watch it again (one shot).
            if let Some(token) = Token::stored(id, raw) {
                let _ = epoll::modify(
                    &self.epoll,
                    &stored.fd,
                    data(token),
                    epoll::EventFlags::ONESHOT,
                );
            }
            return;
        }
        let name = unit.name().to_string();
        let fd_name = stored.name.clone();
        self.unstore(id, |s| s.fd.as_raw_fd() == raw);
        log::service(
            &name,
            format_args!("stored fd {fd_name:?} hung up (its peer closed or reset); dropped"),
        );
    }

    /// After a reexec or a recovery: the stored fds that asked for it are watched again.
    pub(super) fn watch_store(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let polls: Vec<Poll> = unit
            .io
            .stored
            .iter()
            .map(|s| {
                if s.poll.asked() {
                    self.watch_stored(id, &s.fd)
                } else {
                    Poll::Off
                }
            })
            .collect();
        if let Some(unit) = self.registry.get_mut(id) {
            for (stored, poll) in unit.io.stored.iter_mut().zip(polls) {
                stored.poll = poll;
            }
        }
    }
}

/// Whether `fd` reports a hang-up or an error now.
fn hung_up(fd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        fd,
        rustix::event::PollFlags::empty(),
    )];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR)
}
