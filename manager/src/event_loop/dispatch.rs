//! One event for one unit: the effects its state machine acts through, carried out for real,
//! and the bookkeeping after each transition that brings the kernel in step with the new state
//! (new processes registered, sockets watched or not, cgroups removed, retired units let go).

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use rustix::event::epoll;
use steward_protocol::control::Stream;

use super::Manager;
use super::data;
use super::timers::TimerSet;
use super::token::Token;
use crate::cgroups::{Cgroups, Limits, Prepared};
use crate::config::{self, Signal, StdioMode};
use crate::log;
use crate::output::{self, Pipe};
use crate::pool::{Armed, Arming, Filling, Pooled};
use crate::registry::UnitId;
use crate::sockets::{self, Listener};
use crate::spawn::{Arm, Extras, Passing, SpawnError, Spawner, Unarmed};
use crate::supervisor::effects::{Clock, Log, Signals, Spawn, Timers};
use crate::supervisor::{Effects, Event, Pid, State, Timer};
use crate::unit::{Cgroup, Io};

/// The real clock.
struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A process spawned during one transition, for the bookkeeping after it.
struct Spawned {
    pid: Pid,
    /// The read end of its executor's status pipe.
    status: OwnedFd,
    /// An accept instance's own output pipes.
    pipes: Vec<Pipe>,
    /// `ready = "fd:N"`: the read end of its readiness pipe.
    ready: Option<OwnedFd>,
}

/// Spawning for one unit: the pinned executor, the unit's sockets and pipes, its cgroup.
struct UnitSpawn<'a> {
    spawner: &'a mut Spawner,
    cgroups: &'a Cgroups,
    /// Accept mode: the instances running before this transition.
    instances: usize,
    io: &'a mut Io,
    spawned: &'a mut Vec<Spawned>,
}

impl UnitSpawn<'_> {
    fn spawn_with(
        &mut self,
        service: &config::Service,
        connection: Option<&sockets::Connection>,
    ) -> Result<Pid, SpawnError> {
        let dirs = cgroup_dirs(self.cgroups, self.io, service)?;
        // Only a memory-limited service has a memory cgroup whose OOM kills can be counted.
        self.io.oom_baseline = service
            .memory_max
            .and_then(|_| self.cgroups.oom_kills(&service.name));
        let (instance_pipes, instance_writers) = match connection {
            Some(_) => instance_output(service)?,
            None => (Vec::new(), Vec::new()),
        };
        let log = match (instance_log(&instance_writers), &self.io.writers) {
            (Some(log), _) => Some(log),
            (None, Some([out, err])) if connection.is_none() => Some([out.as_fd(), err.as_fd()]),
            _ => None,
        };
        let remote = connection.map(|c| c.remote.env()).unwrap_or_default();
        let passing = match connection {
            Some(connection) => Passing::Instance {
                fd: connection.fd.as_fd(),
                remote: &remote,
            },
            None => Passing::Sockets(&self.io.sockets),
        };
        let ready = match connection {
            Some(_) => None,
            None => ready_pipe(service)?,
        };
        let unified = self.cgroups.unified(&dirs);
        let extras = Extras {
            log,
            ready: ready.as_ref().map(|(_, write)| write.as_fd()),
            // The main process gets the store back; an accept instance has none.
            stored: match connection {
                Some(_) => &[],
                None => &self.io.stored,
            },
        };
        let (pid, status) =
            self.spawner
                .spawn(service, passing, &dirs, unified, extras, &mut self.io.pool)?;
        // Our copies of the instance's write ends (and of the readiness pipe's) close here, so
        // those pipes end with the process.
        drop(instance_writers);
        self.spawned.push(Spawned {
            pid,
            status,
            pipes: instance_pipes,
            ready: ready.map(|(read, _)| read),
        });
        Ok(pid)
    }
}

/// The main process's readiness pipe (`ready = "fd:N"`): the read end, ours and non-blocking,
/// and the write end for it.
fn ready_pipe(service: &config::Service) -> Result<Option<(OwnedFd, OwnedFd)>, SpawnError> {
    let config::Ready::Fd(_) = service.ready else {
        return Ok(None);
    };
    let (read, write) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(SpawnError::Pipe)?;
    // Only our end is non-blocking: the service writes one line and must not fail.
    rustix::fs::fcntl_setfl(&write, rustix::fs::OFlags::empty()).map_err(SpawnError::Pipe)?;
    Ok(Some((read, write)))
}

/// An accept instance's own output pipes, so that its lines carry its name: ours, and the
/// write ends for it.
fn instance_output(service: &config::Service) -> Result<(Vec<Pipe>, Vec<OwnedFd>), SpawnError> {
    let streams: &[Stream] = match &service.stdio {
        StdioMode::Log => &[Stream::Stdout, Stream::Stderr],
        // The connection is its stdout.
        StdioMode::Socket => &[Stream::Stderr],
        _ => &[],
    };
    let mut pipes = Vec::new();
    let mut writers = Vec::new();
    for &stream in streams {
        let (pipe, write) = output::pipe(stream).map_err(SpawnError::LogPipe)?;
        pipes.push(pipe);
        writers.push(write);
    }
    Ok((pipes, writers))
}

/// The log fds an instance's spawn state names, from its [`instance_output`] write ends.
fn instance_log(writers: &[OwnedFd]) -> Option<[BorrowedFd<'_>; 2]> {
    match writers {
        [out, err] => Some([out.as_fd(), err.as_fd()]),
        // stdio = "socket": the spawn state names only the stderr pipe.
        [err] => Some([err.as_fd(), err.as_fd()]),
        _ => None,
    }
}

/// Arms the idle executor `pooled` of `service` for its next process: an accept service's
/// next instance, a lazy service's main process, a keep-alive service's next main process.
fn arm(
    spawner: &mut Spawner,
    cgroups: &Cgroups,
    io: &mut Io,
    service: &config::Service,
    pooled: Pooled,
) -> Result<Armed, Unarmed> {
    if io.sockets.is_empty() && (service.accept || service.lazy) {
        return Err(Unarmed::Idle(pooled));
    }
    let Ok(dirs) = cgroup_dirs(cgroups, io, service) else {
        return Err(Unarmed::Idle(pooled));
    };
    let unified = cgroups.unified(&dirs);
    if !service.accept {
        let Ok(ready) = ready_pipe(service) else {
            return Err(Unarmed::Idle(pooled));
        };
        let extras = Extras {
            log: io
                .writers
                .as_ref()
                .map(|[out, err]| [out.as_fd(), err.as_fd()]),
            ready: ready.as_ref().map(|(_, write)| write.as_fd()),
            stored: &io.stored,
        };
        let for_what = match service.lazy {
            true => Arm::Main(&io.sockets),
            false => Arm::Restart(&io.sockets),
        };
        // Our copy of the readiness pipe's write end closes when this returns.
        let pooled = spawner.arm(service, for_what, &dirs, unified, extras, pooled)?;
        let ready = ready.map(|(read, _)| read);
        let pipes = Vec::new();
        return Ok(Armed {
            pooled,
            pipes,
            ready,
        });
    }
    let Ok((pipes, writers)) = instance_output(service) else {
        return Err(Unarmed::Idle(pooled));
    };
    let extras = Extras {
        log: instance_log(&writers),
        ready: None,
        stored: &[],
    };
    // Our copies of the write ends close when this returns: the executor holds its own.
    let for_what = Arm::Instance(&io.sockets[0]);
    let pooled = spawner.arm(service, for_what, &dirs, unified, extras, pooled)?;
    let ready = None;
    Ok(Armed {
        pooled,
        pipes,
        ready,
    })
}

/// Whether `service`'s idle executor is armed for its next restart: a keep-alive service's,
/// unless it has a user or group (their names are looked up at each spawn, which arming would
/// move to long before the restart) or a stdio path (a tty there is the controlling terminal
/// of the running process until it exits).
fn arms_restarts(service: &config::Service) -> bool {
    service.keep_alive
        && !service.lazy
        && !service.accept
        && service.credentials.is_none()
        && !matches!(service.stdio, StdioMode::Path(_))
}

/// The service's cgroup directories, of a cgroup made by [`made_cgroup`].
fn cgroup_dirs(
    cgroups: &Cgroups,
    io: &mut Io,
    service: &config::Service,
) -> Result<Vec<PathBuf>, SpawnError> {
    let prepared = made_cgroup(cgroups, &mut io.cgroup, service)?;
    Ok(cgroups.joined(&service.name, prepared))
}

/// The service's cgroup: made once, and again only when a reload changed the limits (an
/// accept service spawns per connection and must not mkdir and write its limits each time).
fn made_cgroup<'a>(
    cgroups: &Cgroups,
    cgroup: &'a mut Cgroup,
    service: &config::Service,
) -> Result<&'a mut Prepared, SpawnError> {
    let limits = Limits {
        memory_max: service.memory_max,
        tasks_max: service.tasks_max,
    };
    if !matches!(cgroup, Cgroup::Made(prepared) if prepared.limits == limits) {
        let prepared = cgroups
            .prepare(&service.name, limits)
            .map_err(SpawnError::Cgroup)?;
        *cgroup = Cgroup::Made(prepared);
    }
    match cgroup {
        Cgroup::Made(prepared) => Ok(prepared),
        Cgroup::Absent | Cgroup::Lingering => unreachable!("made just above"),
    }
}

impl UnitSpawn<'_> {
    /// A keep-alive service's executor armed for this restart, told to exec: the process.
    /// None if there is none, or it is gone, or the directories it was armed with cannot be
    /// made again (a fresh spawn then says why).
    fn wake_armed(&mut self, service: &config::Service) -> Option<Pid> {
        // A lazy service's armed executor waits for a client, not for us.
        if !arms_restarts(service) {
            return None;
        }
        while let Some(armed) = self.io.pool.take_first_armed() {
            let pid = armed.pooled.pid;
            // Made at every spawn: one removed while the service ran is there again. Armed
            // services run as the manager's user.
            let told = self.spawner.make_directories(service, None).is_ok()
                && rustix::net::send(
                    &armed.pooled.socket,
                    &steward_protocol::GO,
                    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                ) == Ok(steward_protocol::GO.len());
            if !told {
                let _ = crate::sys::kill(pid.raw(), Signal::KILL.0);
                self.io.pool.retired([pid]);
                continue;
            }
            let Armed {
                pooled,
                pipes,
                ready,
            } = armed;
            self.spawned.push(Spawned {
                pid,
                status: pooled.socket,
                pipes,
                ready,
            });
            return Some(pid);
        }
        None
    }

    /// An armed executor that has its client: the process, spawned already.
    fn take_fired(&mut self) -> Option<Pid> {
        let Armed {
            pooled,
            pipes,
            ready,
        } = self.io.pool.take_fired()?;
        self.spawned.push(Spawned {
            pid: pooled.pid,
            status: pooled.socket,
            pipes,
            ready,
        });
        Some(pooled.pid)
    }
}

impl Spawn for UnitSpawn<'_> {
    fn spawn(&mut self, service: &config::Service) -> Result<Pid, SpawnError> {
        if let Some(pid) = self.take_fired().or_else(|| self.wake_armed(service)) {
            self.io.oom_baseline = service
                .memory_max
                .and_then(|_| self.cgroups.oom_kills(&service.name));
            return Ok(pid);
        }
        self.spawn_with(service, None)
    }

    fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, SpawnError> {
        if let Some(pid) = self.take_fired() {
            return Ok(Some(pid));
        }
        // The armed executors count as instances to be: were the manager to accept up to
        // max_connections without them, one could find the service full with a connection in
        // hand. Below that, it takes what the armed ones have not (clients arriving faster than
        // the armed executors are replaced).
        let taken = self.instances + self.spawned.len() + self.io.pool.armed();
        if self.io.parked.is_none() && taken >= service.max_connections as usize {
            return Ok(None);
        }
        // A connection accepted before a spawn failed (out of fds, say) goes first: once
        // accepted, a connection is never dropped for want of resources.
        let connection = match self.io.parked.take() {
            Some(connection) => *connection,
            None => {
                let listener = self.io.sockets.first().ok_or(SpawnError::NoSocket)?;
                match sockets::accept(listener.fd.as_fd()).map_err(SpawnError::Accept)? {
                    Some(connection) => connection,
                    None => return Ok(None),
                }
            }
        };
        // The instance has its copy now; ours closes when `connection` drops.
        match self.spawn_with(service, Some(&connection)) {
            Ok(pid) => Ok(Some(pid)),
            Err(e) => {
                self.io.parked = Some(Box::new(connection));
                Err(e)
            }
        }
    }

    fn replace_sockets(&mut self, sockets: Vec<Listener>, stale: Vec<PathBuf>) {
        // The old sockets close here; their files go unless a new socket took the path over.
        self.io.sockets = sockets.into();
        for path in stale {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Signals for one unit.
struct UnitSignals<'a> {
    cgroups: &'a Cgroups,
    /// The executors of a keep-alive service that wait for its next restart: they hold
    /// nothing of the service, and a restart by hand goes on through one.
    spared: &'a [i32],
}

/// How many idle executors a dispatch spares at most: a pool holds 16, and those still being
/// disarmed are few. One beyond is only signalled (its restart is then a fresh spawn).
const SPARED_MAX: usize = 32;

impl Signals for UnitSignals<'_> {
    fn signal(&mut self, name: &str, pids: &[Pid], signal: Signal) {
        for pid in pids {
            // Each process leads its own process group (the executor calls setsid), so the
            // group takes its helpers along. Before setsid the group does not exist yet.
            let pid = pid.raw();
            let sent =
                crate::sys::kill(-pid, signal.0).or_else(|_| crate::sys::kill(pid, signal.0));
            if sent.is_ok() && signal != Signal::KILL {
                // A stopped process would never act on the stop signal.
                let _ = crate::sys::kill(-pid, Signal::CONT.0);
            }
        }
        // The cgroup holds every process the service made, even those that left their process
        // group; once for the whole service, however many instances it has.
        self.cgroups.signal(name, signal, self.spared);
    }
}

/// One unit's timers in the loop's set.
struct UnitTimers<'a> {
    set: &'a mut TimerSet,
    id: UnitId,
}

impl Timers for UnitTimers<'_> {
    fn set(&mut self, timer: Timer, after: Duration) {
        self.set.set(self.id, timer, Instant::now() + after);
    }

    fn cancel(&mut self, timer: Timer) {
        self.set.cancel(self.id, timer);
    }

    fn extend(&mut self, timer: Timer, by: Duration) {
        if let Some(at) = self.set.deadline(self.id, timer) {
            self.set.set(self.id, timer, at.max(Instant::now() + by));
        }
    }
}

/// The manager's log.
struct ManagerLog;

impl Log for ManagerLog {
    fn log(&mut self, name: &str, message: fmt::Arguments<'_>) {
        log::service(name, message);
    }
}

impl Manager {
    /// Moves unit `id` on by one event, then brings the kernel in step with where it is.
    pub(super) fn dispatch(&mut self, id: UnitId, event: Event) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let before = unit.supervisor.state().name();
        let readiness = unit.supervisor.state().readiness();
        let was_at_rest = unit.supervisor.state().at_rest();
        // A reload's change may be made in this transition; the new config may log.
        let reconfiguring =
            matches!(event, Event::Reconfigure(_)) || unit.supervisor.settling_from_reload();
        let mut spawned = Vec::new();
        {
            // Copied out, as the pool is lent to the spawn effect: on the stack, as this is
            // every event's path and a signal is sent in few of them.
            let mut spared = [0; SPARED_MAX];
            let mut count = 0;
            if arms_restarts(unit.supervisor.config()) {
                for (slot, pid) in spared.iter_mut().zip(unit.io.pool.pids()) {
                    *slot = pid.raw();
                    count += 1;
                }
            }
            let mut spawn = UnitSpawn {
                spawner: &mut self.spawner,
                cgroups: &self.cgroups,
                instances: unit.supervisor.instances().len(),
                io: &mut unit.io,
                spawned: &mut spawned,
            };
            let mut signals = UnitSignals {
                cgroups: &self.cgroups,
                spared: &spared[..count],
            };
            let mut timers = UnitTimers {
                set: &mut self.timers,
                id,
            };
            let mut fx = Effects {
                clock: &SystemClock,
                spawn: &mut spawn,
                signals: &mut signals,
                timers: &mut timers,
                log: &mut ManagerLog,
            };
            unit.supervisor.handle(event, &mut fx);
        }
        if unit.supervisor.state().name() != before {
            unit.io.since = SystemTime::now();
        }
        if unit.supervisor.state().name() != before
            || unit.supervisor.state().readiness() != readiness
        {
            self.moved.push(id);
        }
        let at_rest = unit.supervisor.state().at_rest();
        for note in self.spawner.take_notes() {
            log::manager(format_args!("{note}"));
        }
        for process in spawned {
            self.register(id, process);
        }
        self.sync_watch(id);
        if reconfiguring {
            // Idle executors were made for the old config (its cgroup, its limits).
            if let Some(unit) = self.registry.get_mut(id) {
                unit.io.pool.truncate(0);
                unit.io.pool.arming = Arming::Works;
            }
        }
        self.sync_pool(id);
        if reconfiguring {
            self.open_log_pipes(id);
            self.trim_store(id);
        }
        // A stop (not a restart, which never passes through inactive) empties the store.
        if before != "inactive"
            && self
                .registry
                .get(id)
                .is_some_and(|u| *u.supervisor.state() == State::Inactive)
        {
            self.empty_store(id);
        }
        if at_rest && !was_at_rest {
            self.settled(id);
        }
    }

    /// A process spawned for unit `id`: its pid is the unit's, its status pipe and (accept
    /// mode) output pipes are watched.
    fn register(&mut self, id: UnitId, process: Spawned) {
        let Spawned {
            pid,
            status,
            pipes,
            ready,
        } = process;
        self.registry.claim(pid, id);
        // An executor armed for a restart and told to go: its pool socket, in the epoll set
        // already, is watched for its one report as its status pipe now.
        let armed = self.armed_executors.remove(&pid).is_some();
        // An accept instance's status is read when it is reaped, not watched: its exec only
        // moves it from pending to done, which nothing waits for, and a failed step ends it at
        // once. That saves every connection two epoll_ctl calls and a turn of the loop.
        let instance = self
            .registry
            .get(id)
            .is_some_and(|u| u.supervisor.instances().contains(pid));
        let token = Token::Status(id, pid);
        let watched = match (instance, armed) {
            (true, _) => true,
            (false, true) => self.rewatch_fd(&status, token),
            (false, false) => self.watch_fd(&status, token),
        };
        let ready = ready.filter(|fd| self.watch_fd(fd, Token::Ready(id, pid)));
        let mut instance_pipes = Vec::new();
        for pipe in pipes {
            if self.watch_fd(&pipe.fd, Token::InstanceLog(id, pid, pipe.stream)) {
                instance_pipes.push(pipe);
            }
        }
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let supervisor = &unit.supervisor;
        let tag = || {
            let instance = supervisor.instances().get(pid)?;
            Some(format!("{}@{}", supervisor.config().name, instance.number))
        };
        unit.io.instances.add(pid, tag, instance_pipes);
        if let Some(ready) = ready {
            // A pipe of an earlier process (held open by a child it left) is done with.
            if let Some((_, old)) = unit.io.ready_pipe.replace((pid, ready)) {
                let _ = epoll::delete(&self.epoll, &old);
            }
        }
        if watched {
            unit.io.status.insert(pid, status);
        } else {
            // Without the pipe the service still runs; it only stays `starting` until it exits.
            log::service(unit.name(), format_args!("cannot watch the status pipe"));
        }
    }

    /// Puts the unit's sockets in or out of the epoll set, as its state wants.
    pub(super) fn sync_watch(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        // An armed executor accepts the connections itself.
        let wants = unit.supervisor.wants_connections() && unit.io.pool.armed() == 0;
        if unit.io.watched == wants {
            return;
        }
        for listener in &unit.io.sockets {
            let result = if wants {
                epoll::add(
                    &self.epoll,
                    &listener.fd,
                    data(Token::Socket(id)),
                    epoll::EventFlags::IN,
                )
            } else {
                epoll::delete(&self.epoll, &listener.fd)
            };
            if let Err(e) = result {
                log::manager(format_args!("epoll_ctl on a socket failed: {e}"));
            }
        }
        unit.io.watched = wants;
    }

    /// Retires the unit's idle executors beyond what its state wants; notes a pool that is
    /// short, for the loop to fill when it is idle.
    pub(super) fn sync_pool(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            self.short_pools.remove(&id);
            return;
        };
        let wanted = unit.supervisor.wants_pool();
        unit.io.pool.truncate(wanted);
        if unit.io.pool.len() < wanted {
            self.short_pools.insert(id);
        } else {
            self.short_pools.remove(&id);
        }
        self.sync_armed(id);
    }

    /// Arms the idle executors of socket service `id` while it takes connections: an accept
    /// service's, as many as there is room for under its `max_connections`; a lazy service's,
    /// one. Disarms those beyond that.
    fn sync_armed(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let service = unit.supervisor.config();
        let restarts = arms_restarts(service);
        if !service.accept && !service.lazy && !restarts {
            return;
        }
        let room = if restarts {
            // One, for the next restart, while there is one to come.
            usize::from(unit.io.pool.arming == Arming::Works && unit.supervisor.wants_pool() > 0)
        } else if unit.supervisor.wants_connections() && unit.io.pool.arming == Arming::Works {
            let taken = unit.supervisor.instances().len() + unit.io.pool.fired();
            let most = if service.accept {
                service.max_connections as usize
            } else {
                1
            };
            most.saturating_sub(taken)
        } else {
            0
        };
        // Still watched: each says whether it took a connection after all.
        unit.io.pool.disarm(room);
        while unit.io.pool.armed() < room {
            let Some(pooled) = unit.io.pool.take() else {
                break;
            };
            match arm(
                &mut self.spawner,
                &self.cgroups,
                &mut unit.io,
                service,
                pooled,
            ) {
                Ok(armed) => {
                    let pid = armed.pooled.pid;
                    let token = data(Token::Armed(id, pid));
                    // One shot: its one report is all we read here; from then on its socket is
                    // an instance's status, read when it is reaped, and needs no epoll_ctl.
                    let flags = epoll::EventFlags::IN | epoll::EventFlags::ONESHOT;
                    if epoll::add(&self.epoll, &armed.pooled.socket, token, flags).is_err() {
                        // Unwatched, it could take a connection we never hear of: disarmed.
                        unit.io.pool.put_armed(armed);
                        unit.io.pool.disarm(0);
                        break;
                    }
                    self.armed_executors.insert(pid, id);
                    unit.io.pool.put_armed(armed);
                }
                // Left idle: the manager accepts, and hands it the connection's spawn.
                Err(Unarmed::Idle(pooled)) => {
                    unit.io.pool.put(pooled);
                    break;
                }
                Err(Unarmed::Gone) => {}
            }
        }
        self.sync_watch(id);
    }

    /// An armed executor's pool socket is readable: it has its client (an accept instance that
    /// accepted, a lazy service's main process), or it is gone (disarmed, killed, or it could
    /// not accept).
    pub(super) fn on_armed(&mut self, id: UnitId, pid: Pid) {
        let Some(unit) = self.registry.get_mut(id) else {
            self.armed_executors.remove(&pid);
            return;
        };
        let Some(armed) = unit.io.pool.get_armed(pid) else {
            self.armed_executors.remove(&pid);
            return;
        };
        let service = unit.supervisor.config();
        let lazy = !service.accept;
        // One armed for a restart has no word of its own: it waits for ours.
        let word = match (service.accept, service.lazy) {
            (true, _) => Some(steward_protocol::ACCEPTED),
            (false, true) => Some(steward_protocol::READABLE),
            (false, false) => None,
        };
        let without = match word {
            Some(_) => "its clients wake the manager",
            None => "its restarts start a fresh executor",
        };
        let mut buf = [0u8; steward_protocol::StatusReport::LEN + 1];
        let fired = match rustix::io::read(&armed.pooled.socket, &mut buf) {
            Ok(n) if word.is_some_and(|word| buf[..n] == word) => true,
            Ok(0) => false,
            Ok(n) => {
                let reason = match steward_protocol::StatusReport::decode(&buf[..n]) {
                    Ok(report) => format!(
                        "failed at {}: {}",
                        report.step.name(),
                        std::io::Error::from_raw_os_error(report.errno)
                    ),
                    Err(e) => format!("garbled report: {e}"),
                };
                unit.io.pool.arming = Arming::Fails;
                log::service(
                    unit.name(),
                    format_args!("an armed executor {reason}; {without} again, until a reload"),
                );
                false
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {
                // A one-shot watch that woke for nothing must be armed again.
                let token = data(Token::Armed(id, pid));
                let flags = epoll::EventFlags::IN | epoll::EventFlags::ONESHOT;
                let _ = epoll::modify(&self.epoll, &armed.pooled.socket, token, flags);
                return;
            }
            Err(_) => false,
        };
        let armed = unit.io.pool.take_armed(pid).expect("found just above");
        self.armed_executors.remove(&pid);
        if fired {
            let arming = unit.io.pool.arming;
            if lazy {
                // Its socket is the main process's status pipe now, watched as such.
                let _ = epoll::delete(&self.epoll, &armed.pooled.socket);
            }
            unit.io.pool.fire(armed);
            // The next one is armed before this one becomes an instance: the listener then
            // never goes back to the manager in between, and the next client finds an executor
            // that started while this one's service runs on the other core. (A lazy service's
            // pool is filled once the loop is idle: its sockets are the service's now.)
            if arming == Arming::Works && !lazy {
                self.fill_pool(id);
            }
            self.dispatch(id, Event::Connection);
            // Not claimed: the service stopped taking connections meanwhile. Its connection
            // goes with it, as one waiting in the backlog of a stopped service does.
            if let Some(unit) = self.registry.get_mut(id) {
                while let Some(left) = unit.io.pool.take_fired() {
                    let _ = crate::sys::kill(left.pooled.pid.raw(), Signal::KILL.0);
                    unit.io.pool.retired([left.pooled.pid]);
                }
            }
        }
        self.sync_pool(id);
    }

    /// Fills every short pool.
    pub(super) fn fill_pools(&mut self) {
        for id in std::mem::take(&mut self.short_pools) {
            self.fill_pool(id);
        }
    }

    /// Fills unit `id`'s pool, and arms what it should.
    fn fill_pool(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let wanted = unit.supervisor.wants_pool();
        let service = unit.supervisor.config();
        let filled =
            made_cgroup(&self.cgroups, &mut unit.io.cgroup, service).and_then(|prepared| {
                // Refilled at every restart or connection: born in the cgroup through an fd kept
                // for it, not one opened by its path each time.
                let born_in = match self.spawner.births_in_cgroups() {
                    true => self.cgroups.unified_kept(prepared, &service.name),
                    false => None,
                };
                while unit.io.pool.len() < wanted {
                    self.spawner
                        .fill(&mut unit.io.pool, born_in.as_deref().map(AsFd::as_fd))?;
                }
                Ok(())
            });
        let pool = &mut unit.io.pool;
        match (filled, pool.filling) {
            (Ok(()), _) => pool.filling = Filling::Works,
            (Err(e), Filling::Works) => {
                pool.filling = Filling::Fails;
                log::service(
                    unit.name(),
                    format_args!("cannot start an idle executor ({e}); spawning each one fresh"),
                );
            }
            (Err(_), Filling::Fails) => {}
        }
        self.sync_armed(id);
    }

    /// The unit came to rest: its cgroup goes (once the last of its processes is reaped), and
    /// a retired one leaves the registry.
    fn settled(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        // Not on a restart: that never comes to rest.
        for e in
            crate::directories::remove_runtime(self.spawner.directories(), unit.supervisor.config())
        {
            log::service(
                unit.name(),
                format_args!("cannot remove its runtime directory {e}"),
            );
        }
        if self.cgroups.remove(&unit.supervisor.config().name) {
            unit.io.cgroup = Cgroup::Absent;
        } else {
            unit.io.cgroup = Cgroup::Lingering;
        }
        if *unit.supervisor.state() == State::Retired {
            self.retire(id);
        }
    }

    /// Lets a unit a reload removed go: its sockets close (and their files, unless another
    /// unit's socket now holds the path), its pipes, timers and cgroup.
    fn retire(&mut self, id: UnitId) {
        let Some(unit) = self.registry.remove(id) else {
            return;
        };
        let held = sockets::Held::of(self.registry.iter().flat_map(|(_, u)| u.io.sockets.iter()));
        sockets::remove_files(
            unit.io
                .sockets
                .iter()
                .filter(|l| !held.has(&l.config.address)),
        );
        for pipe in unit
            .io
            .pipes
            .iter()
            .chain(unit.io.instances.iter().map(|(_, p)| p))
        {
            self.unwatch_fd(&pipe.fd);
        }
        for status in unit.io.status.values() {
            self.unwatch_fd(status);
        }
        if let Some((_, fd)) = &unit.io.ready_pipe {
            self.unwatch_fd(fd);
        }
        for stored in &unit.io.stored {
            if stored.poll == crate::fd_store::Poll::Watched {
                self.unwatch_fd(&stored.fd);
            }
        }
        if unit.io.watched {
            for listener in &unit.io.sockets {
                self.unwatch_fd(&listener.fd);
            }
        }
        self.timers.cancel_all(id);
        self.cgroups.remove(unit.name());
        log::service(unit.name(), format_args!("removed from the config"));
    }
}
