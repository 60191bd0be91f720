//! Control requests: who may ask, and what each command does. A command and its signal
//! equivalent call the same handler (`shutdown` and SIGTERM, `reload` and SIGHUP).

use std::time::{Duration, Instant, UNIX_EPOCH};

use rustix::event::epoll;
use steward_protocol::control::{
    ExitStatus, FailureStatus, Fault, InstanceStatus, Reply, Request, ServiceStatus, SocketStatus,
    Status,
};

use super::deps;
use super::jobs::{Goal, Job, Waiter};
use super::token::Token;
use super::{Manager, data};
use crate::config::{Signal, SocketAddress};
use crate::control::{Admission, Input};
use crate::log;
use crate::pid1::Finish;
use crate::registry::UnitId;
use crate::supervisor::{Event, Exit, State, Timer};
use crate::unit::Unit;

/// What `start`, `stop` and `restart` ask.
#[derive(Debug, Clone, Copy)]
enum Order {
    Start,
    Stop,
    Restart,
}

impl Manager {
    pub(super) fn on_control(&mut self) {
        loop {
            match self.control.accept() {
                Ok(Some((id, refused))) => {
                    if self.control.admission == Admission::Recovering {
                        self.control.admission = Admission::Open;
                        log::manager(format_args!("control: accepting again"));
                    }
                    if let Some(uid) = refused {
                        log::manager(format_args!(
                            "control: refused a client with uid {uid} (only root and uid {} may control steward)",
                            rustix::process::geteuid().as_raw()
                        ));
                    }
                    let Some(fd) = self.control.fd(id) else {
                        continue;
                    };
                    let added = epoll::add(
                        &self.epoll,
                        fd,
                        data(Token::Client(id)),
                        epoll::EventFlags::IN,
                    );
                    if added.is_err() {
                        self.control.clients.remove(&id);
                        continue;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // Out of fds, say: the client waits in the backlog. The listener stays
                    // readable, so it leaves the epoll set for a moment instead of spinning
                    // the loop; said once per episode.
                    if self.control.admission == Admission::Open {
                        log::manager(format_args!(
                            "control: accept failed: {e}; clients wait, retrying every 100ms"
                        ));
                    }
                    self.unwatch_fd(&self.control.listener);
                    self.control.admission = Admission::Paused {
                        until: Instant::now() + Duration::from_millis(100),
                    };
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
                epoll::EventFlags::IN | epoll::EventFlags::OUT
            } else {
                epoll::EventFlags::IN
            };
            let _ = epoll::modify(&self.epoll, &client.fd, data(Token::Client(id)), flags);
        }
    }

    pub(super) fn drop_client(&mut self, id: u64) {
        if let Some(client) = self.control.clients.remove(&id) {
            self.unwatch_fd(&client.fd);
        }
    }

    /// Control's own timers: a pause of the listener that is over, clients that sent no
    /// complete request in time.
    pub(super) fn control_timers(&mut self, now: Instant) {
        if let Admission::Paused { until } = self.control.admission {
            if until <= now {
                self.control.admission = Admission::Recovering;
                if !self.watch_fd(&self.control.listener, Token::Control) {
                    log::manager(format_args!("control: cannot watch the socket again"));
                }
            }
        }
        for cid in self.control.expired(now) {
            log::manager(format_args!(
                "control: a client sent no complete request in time"
            ));
            self.drop_client(cid);
        }
    }

    pub(super) fn reply(&mut self, id: u64, reply: Reply) {
        self.control.send(id, &reply, true);
        self.flush_client(id);
    }

    /// The units the names refer to, or the reply naming the unknown ones.
    fn lookup(&self, names: &[String]) -> Result<Vec<UnitId>, Reply> {
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match self.registry.find(name) {
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

    fn handle_request(&mut self, id: u64, request: Request) {
        let reply = match request {
            Request::Status { names } => match self.lookup(&names) {
                Ok(ids) => Reply::Status(self.status(&ids)),
                Err(reply) => reply,
            },
            Request::Start { names, wait } => match self.each(id, &names, Order::Start, wait) {
                Some(reply) => reply,
                None => return,
            },
            Request::Stop { names, wait } => match self.each(id, &names, Order::Stop, wait) {
                Some(reply) => reply,
                None => return,
            },
            Request::Restart { names, wait } => match self.each(id, &names, Order::Restart, wait) {
                Some(reply) => reply,
                None => return,
            },
            Request::Logs {
                name,
                lines,
                follow,
            } => match self.logs(id, &name, lines, follow) {
                Some(reply) => reply,
                // A follower's first lines are sent; the connection stays open for more.
                None => return,
            },
            Request::Reload => self.reload(),
            Request::Reexec => self.reexec(Some(id)),
            Request::Shutdown | Request::Poweroff | Request::Reboot => self.power(&request),
            Request::Version => Reply::Version {
                version: crate::version().into(),
                protocol: steward_protocol::control::CONTROL_VERSION,
            },
            Request::Debug(fault) => self.fault(id, fault),
        };
        self.reply(id, reply);
    }

    /// `debug panic|hang` in a `fault-injection` build: answered first, so that the client
    /// knows it was done, then done.
    #[cfg(feature = "fault-injection")]
    fn fault(&mut self, id: u64, fault: Fault) -> Reply {
        let what = match fault {
            Fault::Panic => "panicking",
            Fault::Hang => "hanging",
        };
        log::manager(format_args!(
            "debug: {what}, as a client asked (fault-injection build)"
        ));
        self.reply(
            id,
            Reply::Done {
                message: what.into(),
            },
        );
        match fault {
            Fault::Panic => panic!("stewardctl debug panic (fault-injection build)"),
            // The loop stops for good; only a signal the kernel delivers by itself ends us.
            Fault::Hang => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
        }
    }

    /// Any other build refuses.
    #[cfg(not(feature = "fault-injection"))]
    fn fault(&mut self, _: u64, _: Fault) -> Reply {
        Reply::Error {
            message: "not built with fault-injection".into(),
        }
    }

    /// `logs NAME`: the reply, or `None` when the client now follows the service. When more
    /// lines are asked for than the ring holds, the reply names the parts of the log files
    /// that hold the older ones, for the client to read.
    fn logs(&mut self, id: u64, name: &str, lines: Option<u32>, follow: bool) -> Option<Reply> {
        let Some((unit, found)) = self
            .registry
            .find(name)
            .and_then(|unit| Some((unit, self.registry.get_mut(unit)?)))
        else {
            return Some(Reply::Error {
                message: format!("unknown service: {name}"),
            });
        };
        let ring = &found.io.output;
        let short = lines.is_some_and(|n| ring.len() < n as usize);
        let reply = match &self.log_files {
            Some(settings) if short => {
                let file = found
                    .io
                    .disk
                    .get_or_insert_with(|| Box::new(settings.service_file(name)));
                file.learn();
                let (lines, from) = found.io.output.since_positioned();
                Reply::Logs {
                    lines,
                    dropped: 0,
                    files: file.parts_before(from.unwrap_or(file.end())),
                }
            }
            _ => Reply::Logs {
                lines: ring.tail(lines),
                dropped: ring.dropped,
                files: Vec::new(),
            },
        };
        if !follow {
            return Some(reply);
        }
        if let Some(client) = self.control.clients.get_mut(&id) {
            client.follow = Some(unit);
        }
        self.control.send(id, &reply, false);
        self.flush_client(id);
        None
    }

    /// `shutdown`, `poweroff`, `reboot`.
    fn power(&mut self, request: &Request) -> Reply {
        let init = crate::pid1::is_init();
        let (finish, done) = match request {
            // As PID 1 there is nothing to exit to: shutdown powers off.
            Request::Shutdown if init => (Finish::Poweroff, "powering off"),
            Request::Shutdown => (Finish::Exit, "shutting down"),
            Request::Poweroff if init => (Finish::Poweroff, "powering off"),
            Request::Reboot if init => (Finish::Reboot, "rebooting"),
            other => {
                let what = if *other == Request::Poweroff {
                    "poweroff"
                } else {
                    "reboot"
                };
                return Reply::Error {
                    message: format!(
                        "{what} is only for steward running as PID 1 (this one is pid {}); use shutdown to stop it",
                        std::process::id()
                    ),
                };
            }
        };
        self.stop_all(finish);
        Reply::Done {
            message: done.into(),
        }
    }

    /// Starts, stops or restarts the named services (with what they require, or what
    /// requires them). Without `wait` the reply says where each one is now; with it the client
    /// is answered as each settles, and this returns `None`.
    fn each(&mut self, client: u64, names: &[String], order: Order, wait: bool) -> Option<Reply> {
        if names.is_empty() {
            return Some(Reply::Error {
                message: "name at least one service".into(),
            });
        }
        if self.shutting_down() {
            return Some(Reply::Error {
                message: "steward is shutting down".into(),
            });
        }
        let named = match self.lookup(names) {
            Ok(ids) => ids,
            Err(reply) => return Some(reply),
        };
        let ids = match order {
            Order::Start => {
                let ids = deps::with_required(&self.registry, &named);
                for &id in &ids {
                    self.dispatch(id, Event::Start);
                }
                ids
            }
            Order::Stop => {
                let ids = deps::with_requiring(&self.registry, &named);
                self.queue(&ids, Job::Stop);
                ids
            }
            Order::Restart => {
                let ids = deps::with_requiring(&self.registry, &named);
                self.queue(&ids, Job::Restart);
                ids
            }
        };
        if wait {
            let goal = match order {
                Order::Start | Order::Restart => Goal::Ready,
                Order::Stop => Goal::AtRest,
            };
            self.waiters.push(Waiter {
                client,
                goal,
                pending: ids,
                failure: None,
            });
            self.settle();
            return None;
        }
        self.settle();
        let states: Vec<String> = named
            .iter()
            .filter_map(|&id| self.registry.get(id))
            .map(|u| format!("{}: {}", u.name(), u.supervisor.state().name()))
            .collect();
        Some(Reply::Done {
            message: states.join("\n"),
        })
    }

    fn status(&self, named: &[UnitId]) -> Status {
        let detailed = !named.is_empty();
        let ids: Vec<UnitId> = if detailed {
            named.to_vec()
        } else {
            self.registry.ids()
        };
        let services = ids
            .into_iter()
            .filter_map(|id| Some((id, self.registry.get(id)?)))
            .map(|(id, unit)| self.service_status(id, unit, detailed))
            .collect();
        Status {
            manager_pid: std::process::id(),
            version: crate::version().into(),
            services,
        }
    }

    /// When a service failed at its start limit is tried again, in seconds since the epoch.
    fn retry_at(&self, id: UnitId) -> Option<u64> {
        let at = self.timers.deadline(id, Timer::Cooldown)?;
        let left = at.saturating_duration_since(std::time::Instant::now());
        let wall = std::time::SystemTime::now() + left;
        Some(wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// One service's line of `status`, with its last log lines when `detailed`.
    fn service_status(&self, id: UnitId, unit: &Unit, detailed: bool) -> ServiceStatus {
        let s = &unit.supervisor;
        let name = unit.name();
        ServiceStatus {
            name: name.to_string(),
            state: s.state().name().into(),
            pid: s.state().pid().map(|p| p.raw()),
            since: unit
                .io
                .since
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            restarts: s.restarts(),
            memory_bytes: self.cgroups.memory_current(name),
            sockets: unit
                .io
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
                .instances()
                .iter()
                .map(|(pid, i)| InstanceStatus {
                    name: format!("{name}@{}", i.number),
                    pid: pid.raw(),
                })
                .collect(),
            instances_started: s.instances_started(),
            last_exit: s.last_exit().map(exit_status),
            failure: s.last_failure().map(|f| FailureStatus {
                step: f.step.map(|st| st.name().to_string()),
                reason: f.reason.clone(),
                // A step the manager failed for the executor (its user or groups did not
                // resolve) has no process to exit: it shows the status the step stands for.
                status: match (f.exit, f.step) {
                    (Some(Exit::Code(c)), _) => Some(c),
                    (None, Some(step)) => Some(i32::from(step.exit_code())),
                    (Some(Exit::Signal(_) | Exit::Oom), _) | (None, None) => None,
                },
            }),
            status_text: unit.io.status_text().map(str::to_string),
            retry_at: self.retry_at(id),
            stored_fds: unit.io.stored.iter().map(|s| s.name.clone()).collect(),
            waiting_for: match s.state() {
                State::Waiting => self
                    .blocking(id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|d| self.registry.get(d).map(|u| u.name().to_string()))
                    .collect(),
                _ => Vec::new(),
            },
            log_tail: if detailed {
                unit.io.output.tail(Some(10))
            } else {
                Vec::new()
            },
        }
    }
}

fn exit_status(exit: Exit) -> ExitStatus {
    match exit {
        Exit::Code(c) => ExitStatus::Code(c),
        Exit::Signal(s) => ExitStatus::Signal(s.0),
        Exit::Oom => ExitStatus::Signal(Signal::KILL.0),
    }
}
