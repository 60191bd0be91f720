//! Control requests: who may ask, and what each command does. A command and its signal
//! equivalent call the same handler (`shutdown` and SIGTERM, `reload` and SIGHUP).

use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::sys::epoll::{EpollEvent, EpollFlags};
use steward_protocol::control::{
    ExitStatus, FailureStatus, InstanceStatus, Reply, Request, ServiceStatus, SocketStatus, Status,
    Stream,
};

use super::{Manager, Token};
use crate::config::SocketAddress;
use crate::control::Input;
use crate::log;
use crate::logs;
use crate::pid1::Finish;
use crate::supervisor::{Event, Exit};

impl Manager {
    /// Opens the output pipes of a service that logs to the manager (not accept mode: its
    /// instances get their own).
    pub(super) fn open_log_pipes(&mut self, id: usize) {
        let unit = &mut self.units[id];
        let config = &unit.service.config;
        if config.stdio != crate::config::StdioMode::Log || config.accept || unit.writers.is_some()
        {
            return;
        }
        let mut writers = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            match logs::pipe(stream) {
                Ok((pipe, write)) => {
                    let token = Token::Log(id, stream).to_u64();
                    if let Err(e) = self
                        .epoll
                        .add(&pipe.fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                    {
                        log::service(&unit.name, format_args!("cannot watch its log pipe: {e}"));
                        return;
                    }
                    unit.pipes.push(pipe);
                    writers.push(write);
                }
                Err(e) => {
                    log::service(&unit.name, format_args!("cannot make its log pipe: {e}"));
                    return;
                }
            }
        }
        unit.writers = <[_; 2]>::try_from(writers).ok();
    }

    pub(super) fn on_control(&mut self) {
        loop {
            match self.control.accept() {
                Ok(Some((id, refused))) => {
                    if std::mem::take(&mut self.control_backing_off) {
                        log::manager(format_args!("control: accepting again"));
                    }
                    if let Some(uid) = refused {
                        log::manager(format_args!(
                            "control: refused a client with uid {uid} (only root and uid {} may control steward)",
                            nix::unistd::geteuid()
                        ));
                    }
                    let Some(fd) = self.control.fd(id) else {
                        continue;
                    };
                    let interest = EpollEvent::new(EpollFlags::EPOLLIN, Token::Client(id).to_u64());
                    if self.epoll.add(fd, interest).is_err() {
                        self.control.clients.remove(&id);
                        continue;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // Out of fds, say: the client waits in the backlog. The listener stays
                    // readable, so it leaves the epoll set for a moment instead of spinning
                    // the loop; said once per episode.
                    if self.control_paused.is_none() && !self.control_backing_off {
                        log::manager(format_args!(
                            "control: accept failed: {e}; clients wait, retrying every 100ms"
                        ));
                    }
                    self.control_backing_off = true;
                    let _ = self.epoll.delete(&self.control.listener);
                    self.control_paused = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    pub(super) fn on_client(&mut self, id: u64) {
        if self.control.has_output(id) {
            self.flush_client(id);
        }
        if !self.control.clients.contains_key(&id) {
            return;
        }
        match self.control.read(id) {
            Input::Pending => {}
            Input::Request(request) => self.handle_request(id, request),
            Input::Refused => self.reply(
                id,
                Reply::Error {
                    message: "permission denied".into(),
                },
            ),
            Input::Close(why) => {
                if let Some(why) = why {
                    log::manager(format_args!("control: {why}; closing that connection"));
                }
                self.drop_client(id);
            }
        }
    }

    /// Writes what a client has waiting, and keeps its epoll interest in step.
    pub(super) fn flush_client(&mut self, id: u64) {
        if !self.control.flush(id) {
            self.drop_client(id);
            return;
        }
        let wants = self.control.has_output(id);
        let Some(client) = self.control.clients.get_mut(&id) else {
            return;
        };
        if client.wants_write != wants {
            client.wants_write = wants;
            let flags = if wants {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut event = EpollEvent::new(flags, Token::Client(id).to_u64());
            let _ = self.epoll.modify(&client.fd, &mut event);
        }
    }

    pub(super) fn drop_client(&mut self, id: u64) {
        if let Some(client) = self.control.clients.remove(&id) {
            let _ = self.epoll.delete(&client.fd);
        }
    }

    pub(super) fn reply(&mut self, id: u64, reply: Reply) {
        self.control.send(id, &reply, true);
        self.flush_client(id);
    }

    /// The units the names refer to, or the reply naming the unknown ones.
    fn lookup(&self, names: &[String]) -> Result<Vec<usize>, Reply> {
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match self.find(name) {
                Some(id) => ids.push(id),
                None => unknown.push(name.as_str()),
            }
        }
        if unknown.is_empty() {
            Ok(ids)
        } else {
            Err(Reply::Error {
                message: format!("unknown service: {}", unknown.join(", ")),
            })
        }
    }

    /// The live unit of that name.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.units.iter().position(|u| !u.retired && u.name == name)
    }

    fn handle_request(&mut self, id: u64, request: Request) {
        let reply = match request {
            Request::Status { names } => match self.lookup(&names) {
                Ok(ids) => Reply::Status(self.status(&ids)),
                Err(reply) => reply,
            },
            Request::Start { names } => self.each(&names, Event::Start),
            Request::Stop { names } => self.each(&names, Event::Stop),
            Request::Restart { names } => self.each(&names, Event::Restart),
            Request::Logs {
                name,
                lines,
                follow,
            } => match self.find(&name) {
                Some(unit) => {
                    let ring = &self.units[unit].log;
                    let reply = Reply::Logs {
                        lines: ring.tail(lines),
                        dropped: ring.dropped,
                    };
                    if follow {
                        if let Some(client) = self.control.clients.get_mut(&id) {
                            client.follow = Some(unit);
                        }
                        self.control.send(id, &reply, false);
                        self.flush_client(id);
                        return;
                    }
                    reply
                }
                None => Reply::Error {
                    message: format!("unknown service: {name}"),
                },
            },
            Request::Reload => self.reload(),
            Request::Reexec => self.reexec(Some(id)),
            // As PID 1 there is nothing to exit to: shutdown powers off.
            Request::Shutdown if crate::pid1::is_init() => {
                self.stop_all(Finish::Poweroff);
                Reply::Done {
                    message: "powering off".into(),
                }
            }
            Request::Shutdown => {
                self.stop_all(Finish::Exit);
                Reply::Done {
                    message: "shutting down".into(),
                }
            }
            Request::Poweroff | Request::Reboot if crate::pid1::is_init() => {
                let (finish, what) = if request == Request::Poweroff {
                    (Finish::Poweroff, "powering off")
                } else {
                    (Finish::Reboot, "rebooting")
                };
                self.stop_all(finish);
                Reply::Done {
                    message: what.into(),
                }
            }
            Request::Poweroff | Request::Reboot => {
                let what = if request == Request::Poweroff {
                    "poweroff"
                } else {
                    "reboot"
                };
                Reply::Error {
                    message: format!(
                        "{what} is only for steward running as PID 1 (this one is pid {}); use shutdown to stop it",
                        std::process::id()
                    ),
                }
            }
            Request::Version => Reply::Version {
                version: crate::version().into(),
                protocol: steward_protocol::control::CONTROL_VERSION,
            },
        };
        self.reply(id, reply);
    }

    /// Sends one event to each named service; the reply says where each one is now.
    fn each(&mut self, names: &[String], event: Event) -> Reply {
        if names.is_empty() {
            return Reply::Error {
                message: "name at least one service".into(),
            };
        }
        if self.shutting_down {
            return Reply::Error {
                message: "steward is shutting down".into(),
            };
        }
        let ids = match self.lookup(names) {
            Ok(ids) => ids,
            Err(reply) => return reply,
        };
        for &unit in &ids {
            self.dispatch(unit, event.clone());
        }
        let states: Vec<String> = ids
            .iter()
            .map(|&u| {
                format!(
                    "{}: {}",
                    self.units[u].name,
                    self.units[u].service.state.name()
                )
            })
            .collect();
        Reply::Done {
            message: states.join("\n"),
        }
    }

    fn status(&self, named: &[usize]) -> Status {
        let detailed = !named.is_empty();
        let ids: Vec<usize> = if detailed {
            named.to_vec()
        } else {
            (0..self.units.len())
                .filter(|&u| !self.units[u].retired)
                .collect()
        };
        let services = ids
            .into_iter()
            .map(|u| {
                let unit = &self.units[u];
                let s = &unit.service;
                ServiceStatus {
                    name: unit.name.clone(),
                    state: s.state.name().into(),
                    pid: s.state.pid().map(|p| p.as_raw()),
                    since: unit
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    restarts: s.restarts,
                    memory_bytes: self.cgroups.memory_current(&unit.name),
                    sockets: unit
                        .sockets
                        .iter()
                        .map(|l| SocketStatus {
                            name: l.config.name.clone(),
                            address: match &l.config.address {
                                SocketAddress::Unix(p) => p.display().to_string(),
                                SocketAddress::Inet(a) => a.to_string(),
                            },
                        })
                        .collect(),
                    instances: s
                        .instances
                        .iter()
                        .map(|(pid, i)| InstanceStatus {
                            name: format!("{}@{}", unit.name, i.number),
                            pid: pid.as_raw(),
                        })
                        .collect(),
                    last_exit: s.last_exit.map(exit_status),
                    failure: s.last_failure.as_ref().map(|f| FailureStatus {
                        step: f.step.map(|st| st.name().to_string()),
                        reason: f.reason.clone(),
                        status: match f.exit {
                            Some(Exit::Code(c)) => Some(c),
                            _ => None,
                        },
                    }),
                    log_tail: if detailed {
                        unit.log.tail(Some(10))
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        Status {
            manager_pid: std::process::id(),
            version: crate::version().into(),
            services,
        }
    }
}

fn exit_status(exit: Exit) -> ExitStatus {
    match exit {
        Exit::Code(c) => ExitStatus::Code(c),
        Exit::Signal(s) => ExitStatus::Signal(s.0),
        Exit::Oom => ExitStatus::Signal(libc::SIGKILL),
    }
}
