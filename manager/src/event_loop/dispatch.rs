//! One event for one unit: the effects its state machine acts through, carried out for real,
//! and the bookkeeping after each transition that brings the kernel in step with the new state
//! (new processes registered, sockets watched or not, cgroups removed, retired units let go).

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use rustix::event::epoll;
use steward_protocol::control::Stream;

use super::Manager;
use super::data;
use super::timers::TimerSet;
use super::token::Token;
use crate::cgroups::{Cgroups, Limits};
use crate::config::{self, Signal, StdioMode};
use crate::log;
use crate::output::{self, Pipe};
use crate::pool::Filling;
use crate::registry::UnitId;
use crate::sockets::{self, Listener};
use crate::spawn::{Extras, Passing, SpawnError, Spawner};
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
        // An accept instance gets pipes of its own, so its lines carry its name.
        let mut instance_pipes = Vec::new();
        let mut instance_writers = Vec::new();
        let streams: &[Stream] = match (connection, &service.stdio) {
            (Some(_), StdioMode::Log) => &[Stream::Stdout, Stream::Stderr],
            // The connection is its stdout.
            (Some(_), StdioMode::Socket) => &[Stream::Stderr],
            _ => &[],
        };
        for &stream in streams {
            let (pipe, write) = output::pipe(stream).map_err(SpawnError::LogPipe)?;
            instance_pipes.push(pipe);
            instance_writers.push(write);
        }
        let log: Option<[BorrowedFd<'_>; 2]> = match (&instance_writers[..], &self.io.writers) {
            ([out, err], _) => Some([out.as_fd(), err.as_fd()]),
            // stdio = "socket": the spawn state names only the stderr pipe.
            ([err], _) => Some([err.as_fd(), err.as_fd()]),
            (_, Some([out, err])) if connection.is_none() => Some([out.as_fd(), err.as_fd()]),
            _ => None,
        };
        let passing = match connection {
            Some(connection) => Passing::Connection(connection),
            None => Passing::Sockets(&self.io.sockets),
        };
        // The main process's readiness pipe: its read end is ours, non-blocking.
        let ready = match (service.ready, connection) {
            (config::Ready::Fd(_), None) => Some(
                rustix::pipe::pipe_with(
                    rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
                )
                .map_err(SpawnError::Pipe)?,
            ),
            _ => None,
        };
        if let Some((_, write)) = &ready {
            // Only our end is non-blocking: the service writes one line and must not fail.
            rustix::fs::fcntl_setfl(write, rustix::fs::OFlags::empty())
                .map_err(SpawnError::Pipe)?;
        }
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

/// The service's cgroup directories: made once, and again only when a reload changed the
/// limits (an accept service spawns per connection and must not mkdir and write its limits
/// each time).
fn cgroup_dirs(
    cgroups: &Cgroups,
    io: &mut Io,
    service: &config::Service,
) -> Result<Rc<[PathBuf]>, SpawnError> {
    let limits = Limits {
        memory_max: service.memory_max,
        tasks_max: service.tasks_max,
    };
    match &io.cgroup {
        Cgroup::Made(prepared) if prepared.limits == limits => Ok(prepared.dirs.clone()),
        Cgroup::Absent | Cgroup::Made(_) | Cgroup::Lingering => {
            let prepared = cgroups
                .prepare(&service.name, limits)
                .map_err(SpawnError::Cgroup)?;
            let dirs = prepared.dirs.clone();
            io.cgroup = Cgroup::Made(prepared);
            Ok(dirs)
        }
    }
}

impl Spawn for UnitSpawn<'_> {
    fn spawn(&mut self, service: &config::Service) -> Result<Pid, SpawnError> {
        self.spawn_with(service, None)
    }

    fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, SpawnError> {
        // A connection accepted before a spawn failed (out of fds, say) goes first: once
        // accepted, a connection is never dropped for want of resources.
        let connection = match self.io.parked.take() {
            Some(connection) => connection,
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
                self.io.parked = Some(connection);
                Err(e)
            }
        }
    }

    fn replace_sockets(&mut self, sockets: Vec<Listener>, stale: Vec<PathBuf>) {
        // The old sockets close here; their files go unless a new socket took the path over.
        self.io.sockets = sockets;
        for path in stale {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Signals for one unit.
struct UnitSignals<'a> {
    cgroups: &'a Cgroups,
}

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
        self.cgroups.signal(name, signal, &[]);
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
            let mut spawn = UnitSpawn {
                spawner: &mut self.spawner,
                cgroups: &self.cgroups,
                io: &mut unit.io,
                spawned: &mut spawned,
            };
            let mut signals = UnitSignals {
                cgroups: &self.cgroups,
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
        // An accept instance's status is read when it is reaped, not watched: its exec only
        // moves it from pending to done, which nothing waits for, and a failed step ends it at
        // once. That saves every connection two epoll_ctl calls and a turn of the loop.
        let instance = self
            .registry
            .get(id)
            .is_some_and(|u| u.supervisor.instances().contains_key(&pid));
        let watched = instance || self.watch_fd(&status, Token::Status(id, pid));
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
        if let (Some(instance), false) = (
            unit.supervisor.instances().get(&pid),
            instance_pipes.is_empty(),
        ) {
            let tag = format!("{}@{}", unit.supervisor.config().name, instance.number);
            unit.io.instance_tags.insert(pid, tag);
        }
        for pipe in instance_pipes {
            unit.io.instance_pipes.insert((pid, pipe.stream), pipe);
        }
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
        let wants = unit.supervisor.wants_connections();
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
    }

    /// Fills every short pool.
    pub(super) fn fill_pools(&mut self) {
        for id in std::mem::take(&mut self.short_pools) {
            let Some(unit) = self.registry.get_mut(id) else {
                continue;
            };
            let wanted = unit.supervisor.wants_pool();
            let service = unit.supervisor.config();
            let filled = cgroup_dirs(&self.cgroups, &mut unit.io, service).and_then(|dirs| {
                let unified = self.cgroups.unified(&dirs);
                while unit.io.pool.len() < wanted {
                    self.spawner.fill(&mut unit.io.pool, unified)?;
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
                        format_args!(
                            "cannot start an idle executor ({e}); spawning each one fresh"
                        ),
                    );
                }
                (Err(_), Filling::Fails) => {}
            }
        }
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
        for pipe in unit.io.pipes.iter().chain(unit.io.instance_pipes.values()) {
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
