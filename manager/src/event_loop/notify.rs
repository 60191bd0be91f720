//! What services say about themselves: the sd_notify socket (`$NOTIFY_SOCKET`, one unix
//! datagram socket of the manager's) and the readiness pipes of `ready = "fd:N"`. A datagram is
//! attributed by the kernel's credentials of its sender, never by what it says; `notify_access`
//! decides whose count; what is refused is logged once per service and reason.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Manager, SetupError};
use crate::config::NotifyAccess;
use crate::log;
use crate::notify::{self, Message};
use crate::registry::UnitId;
use crate::supervisor::{Event, Pid, ProcessEvent};

/// How many datagrams one wake-up reads, so a flood cannot starve the loop (the socket stays
/// readable and is read again on the next turn).
const BUDGET: usize = 64;

/// The notify socket and what it has complained about.
pub struct NotifySocket {
    /// The socket: datagram, SO_PASSCRED, non-blocking, close-on-exec.
    pub fd: OwnedFd,
    /// Its path, as services get it.
    pub path: PathBuf,
    /// (service, reason) pairs already logged; `None` for senders no service claims.
    said: HashSet<(Option<UnitId>, &'static str)>,
    /// The buffers datagrams are read into, a batch at a time.
    batch: crate::sys::Batch,
}

impl NotifySocket {
    /// Creates the socket at `path`, writable by anyone: services run as other users, and only
    /// the kernel's credentials on each message are trusted.
    pub fn open(path: &Path) -> Result<NotifySocket, SetupError> {
        let fd = crate::sockets::bind_datagram(path, 0o666).map_err(|problem| SetupError::Sys {
            what: "the notify socket",
            source: std::io::Error::other(format!("{}: {problem}", path.display())),
        })?;
        rustix::net::sockopt::set_socket_passcred(&fd, true).map_err(|e| SetupError::Sys {
            what: "SO_PASSCRED on the notify socket",
            source: e.into(),
        })?;
        Ok(NotifySocket::adopt(fd, path))
    }

    /// The socket a previous manager handed over.
    pub fn adopt(fd: OwnedFd, path: &Path) -> NotifySocket {
        NotifySocket {
            fd,
            path: path.to_path_buf(),
            said: HashSet::new(),
            batch: crate::sys::Batch::new(notify::MAX_MESSAGE + 1),
        }
    }

    /// Whether this complaint is new (and so worth a log line).
    pub(super) fn first(&mut self, unit: Option<UnitId>, reason: &'static str) -> bool {
        self.said.insert((unit, reason))
    }
}

/// Walks up from `pid` through the parent links; whether `ancestor` is on the way.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    // Bounded: a pid chain is short, and a loop through reused pids must end.
    for _ in 0..4096 {
        if current == ancestor {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

/// The parent pid, from `/proc/PID/stat` (the field after the parenthesised name).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Manager {
    /// Reads what is waiting on the notify socket (up to the budget), a batch per syscall: a
    /// service pinging its watchdog hard costs one recvmmsg per batch, not a recvmsg per ping
    /// and one more to find the queue empty.
    pub(super) fn on_notify(&mut self) {
        // Lent out of `self.notify` while its datagrams are handled (which needs all of us).
        let mut batch = std::mem::take(&mut self.notify.batch);
        for _ in 0..BUDGET.div_ceil(crate::sys::BATCH) {
            match crate::sys::recv_datagrams(self.notify.fd.as_fd(), &mut batch) {
                Ok(datagrams) => {
                    let full = datagrams.len() == crate::sys::BATCH;
                    for (i, datagram) in datagrams.into_iter().enumerate() {
                        let bytes = batch.data(i, &datagram);
                        self.notified(datagram, bytes);
                    }
                    if !full {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.notify.first(None, "recvmsg") {
                        log::manager(format_args!("notify socket: {e}"));
                    }
                    break;
                }
            }
        }
        self.notify.batch = batch;
    }

    /// One datagram: attributed, checked, applied. Its fds close at the end unless the fd
    /// store takes them (which also makes a `BARRIER=1` fd close once all before it is done).
    fn notified(&mut self, datagram: crate::sys::Datagram, buf: &[u8]) {
        let Some(sender) = datagram.credentials.filter(|c| c.pid > 0) else {
            if self.notify.first(None, "no credentials") {
                log::manager(format_args!(
                    "notify socket: a message without its sender's credentials; ignored"
                ));
            }
            return;
        };
        let Some(id) = self.sender_unit(sender.pid) else {
            if self.notify.first(None, "unknown sender") {
                log::manager(format_args!(
                    "notify socket: a message from pid {}, which is no service's; ignored (said once)",
                    sender.pid
                ));
            }
            return;
        };
        // The name only for a complaint: a service pinging its watchdog hard must not cost an
        // allocation per ping.
        let complain = |m: &mut Manager, reason: &'static str, what: std::fmt::Arguments<'_>| {
            if m.notify.first(Some(id), reason) {
                let name = m.registry.get(id).map(|u| u.name()).unwrap_or_default();
                log::service(name, format_args!("{what} (said once)"));
            }
        };
        if datagram.truncated {
            complain(
                self,
                "too long",
                format_args!(
                    "a notify message longer than {} bytes; ignored",
                    notify::MAX_MESSAGE
                ),
            );
            return;
        }
        let message = match notify::parse(&buf[..datagram.len]) {
            Ok(message) => message,
            Err(e) => {
                complain(
                    self,
                    "malformed",
                    format_args!("a malformed notify message ({e}); ignored"),
                );
                return;
            }
        };
        if !self.may_notify(id, sender.pid) {
            complain(
                self,
                "access",
                format_args!(
                    "a notify message from pid {}, which is not its main process; ignored (notify_access = \"main\")",
                    sender.pid
                ),
            );
            return;
        }
        if datagram.fds_truncated {
            complain(
                self,
                "fds cut",
                format_args!(
                    "sent more fds than a message carries here; the kernel closed the rest"
                ),
            );
        }
        // BARRIER=1 carries the one fd whose closing is the answer (systemd-notify --ready
        // sends it after READY=1).
        if !datagram.fds.is_empty() && !message.fd_store && !message.barrier {
            complain(
                self,
                "stray fds",
                format_args!("sent fds without FDSTORE=1; they are closed"),
            );
        }
        if !datagram.fds.is_empty() || message.fd_store_remove {
            self.store_message(id, &message, datagram.fds);
        }
        self.apply_message(id, message);
    }

    /// The unit a sender belongs to: by its pid (a main process or an instance), else by its
    /// cgroup.
    fn sender_unit(&self, pid: i32) -> Option<UnitId> {
        let pid = Pid::new(pid)?;
        self.registry
            .owner(pid)
            .or_else(|| self.registry.find(&self.cgroups.service_of(pid.raw())?))
    }

    /// Whether `sender` may speak for unit `id`: its main process, or (`notify_access =
    /// "all"`) any process of its cgroup or process tree.
    fn may_notify(&self, id: UnitId, sender: i32) -> bool {
        let Some(unit) = self.registry.get(id) else {
            return false;
        };
        let main = unit.supervisor.state().pid();
        match unit.supervisor.config().notify_access {
            NotifyAccess::Main => main.is_some_and(|m| m.raw() == sender),
            NotifyAccess::All => {
                main.is_some_and(|m| descends_from(sender, m.raw()))
                    || self.cgroups.service_of(sender).as_deref() == Some(unit.name())
            }
        }
    }

    /// What a message says, to the unit's state machine and its status.
    fn apply_message(&mut self, id: UnitId, message: Message) {
        let ping = Message {
            watchdog: Some(notify::Watchdog::Ping),
            ..Message::default()
        };
        // A bare `WATCHDOG=1` changes nothing a snapshot carries.
        let quiet = message == ping && !self.registry.is_changed(id);
        if message.status.is_some() || message.errno.is_some() {
            let Some(unit) = self.registry.get_mut(id) else {
                return;
            };
            let said = unit.io.said.get_or_insert_default();
            if let Some(text) = message.status {
                said.status = Some(text);
            }
            if let Some(errno) = message.errno {
                said.errno = Some(errno);
            }
        }
        let Some(main) = self
            .registry
            .get(id)
            .and_then(|u| u.supervisor.state().pid())
        else {
            return;
        };
        let mut events = Vec::new();
        if let Some(new) = message.main_pid {
            match self.check_main_pid(id, main, new) {
                Ok(pid) => events.push(ProcessEvent::MainPid(pid)),
                Err(why) => {
                    if self.notify.first(Some(id), "main pid") {
                        let name = self.registry.get(id).map(|u| u.name()).unwrap_or_default();
                        log::service(
                            name,
                            format_args!("MAINPID={new} refused: {why} (said once)"),
                        );
                    }
                }
            }
        }
        if message.reloading {
            events.push(ProcessEvent::Reloading);
        }
        if message.ready {
            events.push(ProcessEvent::Ready);
        }
        if message.stopping {
            events.push(ProcessEvent::Stopping);
        }
        if let Some(usec) = message.extend_timeout_usec {
            events.push(ProcessEvent::ExtendTimeout(Duration::from_micros(usec)));
        }
        // A new interval first: `WATCHDOG_USEC=N` with `WATCHDOG=1` pings against it.
        if let Some(usec) = message.watchdog_usec {
            events.push(ProcessEvent::WatchdogInterval(Duration::from_micros(usec)));
        }
        match message.watchdog {
            Some(notify::Watchdog::Ping) => events.push(ProcessEvent::WatchdogPing),
            Some(notify::Watchdog::Trigger) => events.push(ProcessEvent::WatchdogTrigger),
            None => {}
        }
        let mut pid = main;
        for event in events {
            if let ProcessEvent::MainPid(new) = event {
                self.dispatch(id, Event::Process(pid, event));
                if self
                    .registry
                    .get(id)
                    .and_then(|u| u.supervisor.state().pid())
                    == Some(new)
                {
                    // Ours to reap from now on (a reparented orphan of the old main process).
                    self.registry.claim(new, id);
                    pid = new;
                }
                continue;
            }
            self.dispatch(id, Event::Process(pid, event));
        }
        if quiet {
            self.registry.unmark(id);
        }
    }

    /// A `MAINPID=` must name a process of the service (in its cgroup, or below its main
    /// process) and never steward itself.
    fn check_main_pid(&self, id: UnitId, main: Pid, new: i32) -> Result<Pid, &'static str> {
        let pid = Pid::new(new).ok_or("not a pid")?;
        if new as u32 == std::process::id() {
            return Err("that is steward itself");
        }
        if pid == main {
            return Ok(pid);
        }
        let name = self.registry.get(id).map(|u| u.name());
        let in_cgroup = self.cgroups.service_of(new).as_deref() == name;
        if in_cgroup || descends_from(new, main.raw()) {
            Ok(pid)
        } else {
            Err("not a process of the service")
        }
    }

    /// Reads a readiness pipe: the first newline means ready; its end without one means the
    /// service gave up saying so.
    pub(super) fn on_ready_pipe(&mut self, id: UnitId, pid: Pid) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let Some((owner, fd)) = &unit.io.ready_pipe else {
            return;
        };
        if *owner != pid {
            return;
        }
        let mut buf = [0u8; 512];
        let ready = match rustix::io::read(fd, &mut buf) {
            Ok(0) => false,
            Ok(n) if buf[..n].contains(&b'\n') => true,
            // Not a whole line yet, or nothing at all: wait for more.
            Ok(_) | Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return,
            Err(_) => false,
        };
        if let Some((_, fd)) = unit.io.ready_pipe.take() {
            self.unwatch_fd(&fd);
        }
        if ready {
            self.dispatch(id, Event::Process(pid, ProcessEvent::Ready));
        }
    }
}
