//! The manager's one thread: one epoll loop over signals (signalfd), timers (timerfd), the
//! executors' status pipes, the services' sockets and output pipes, and the control socket.
//! Its body is wait → dispatch → reap; every decision about a service is made by its state
//! machine in `supervisor`, fed through [`Manager::dispatch`].
//!
//! The data flows one way: an epoll token names its subject (a unit, a pid, a client); the
//! handler turns what it reads into an [`Event`] for one unit; the unit's supervisor decides,
//! through the narrow effects in `dispatch`; the loop then brings the kernel in step with the
//! new state (epoll interest, pids, status pipes, cgroups).

mod commands;
mod deps;
mod dispatch;
mod fd_store;
mod jobs;
mod notify;
mod pipes;
mod reap;
mod reexec;
mod reload;
mod shutdown;
mod signals;
mod snapshot;
mod timers;
mod token;

pub(crate) use reexec::c_string;
pub use reexec::{Came, Paths, Resume, Upgrade, resume};

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};

use crate::cgroups::Cgroups;
use crate::config;
use crate::control::Control;
use crate::log;
use crate::pid1::Finish;
use crate::registry::Registry;
use crate::sockets;
use crate::spawn::Spawner;
use crate::supervisor::Event;
use crate::unit::Unit;
use timers::TimerSet;

use crate::watchdog::Watchdog;
use token::Token;

/// Why the manager could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The executor could not be pinned.
    #[error(transparent)]
    Pin(#[from] crate::spawn::PinError),
    /// A socket could not be created.
    #[error(transparent)]
    Socket(#[from] crate::sockets::SocketError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// A kernel facility the loop needs failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being set up.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

fn sys_err<E: Into<std::io::Error>>(what: &'static str) -> impl FnOnce(E) -> SetupError {
    move |source| SetupError::Sys {
        what,
        source: source.into(),
    }
}

/// The manager's own life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Supervising.
    Running,
    /// Stopping every service, then `finish`.
    ShuttingDown {
        /// What happens once everything has stopped.
        finish: Finish,
        /// How far the shutdown has come.
        drain: Drain,
    },
}

/// How far a shutdown has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Services are stopping.
    Services,
    /// Every service is at rest; processes they left behind (killed, but not yet reaped)
    /// may still hold their cgroups, which are removed as they go, until then.
    Cgroups {
        /// When to give up on the rest.
        until: Instant,
    },
}

/// The loop's kernel objects.
struct LoopFds {
    epoll: OwnedFd,
    signals: OwnedFd,
    timerfd: OwnedFd,
}

/// Where the sd_notify socket goes: beside the control socket, as an absolute path (services
/// run in their own working directory).
fn notify_path(control: &Path) -> PathBuf {
    let path = control.with_file_name("notify");
    std::path::absolute(&path).unwrap_or(path)
}

/// The running manager.
pub struct Manager {
    /// Every unit.
    registry: Registry,
    spawner: Spawner,
    cgroups: Cgroups,
    epoll: OwnedFd,
    signals: OwnedFd,
    timerfd: OwnedFd,
    /// The deadline the timerfd is armed for.
    armed: Option<Instant>,
    /// Every unit's timers.
    timers: TimerSet,
    control: Control,
    /// Where the config was read from, for reloads.
    config_path: PathBuf,
    /// The config files as last loaded successfully, for a `reexec`; shared with the
    /// panic-recovery snapshot, which would otherwise keep a second copy of every file.
    config_sources: Rc<[(PathBuf, String)]>,
    /// The config sources changed since the panic-recovery snapshot was taken.
    head_changed: bool,
    /// `[manager] log_buffer` as last loaded.
    log_buffer: u64,
    /// `[manager] log_dir` and its companions as last loaded.
    log_files: Option<crate::logfile::Settings>,
    /// What a `reexec` needs.
    upgrade: Upgrade,
    /// The hardware watchdog, as PID 1 with `watchdog_device`.
    watchdog: Option<Watchdog>,
    phase: Phase,
    /// The sd_notify socket, with its path (given to services as `NOTIFY_SOCKET`).
    notify: notify::NotifySocket,
    /// Units whose state moved this turn: their consequences are applied at its end.
    moved: Vec<crate::registry::UnitId>,
    /// Units whose pool of idle executors is short, filled when the loop has nothing else to
    /// do: under a storm of connections each spawns fresh (an idle executor would only add a
    /// wakeup), between connections the next one finds an executor waiting.
    short_pools: std::collections::BTreeSet<crate::registry::UnitId>,
    /// Whether the last reap left children to reap.
    reaping: reap::Reaping,
    /// The armed executors (accept mode), by pid: children no unit claims yet, whose exit must
    /// first be checked for a connection they accepted.
    armed_executors: std::collections::BTreeMap<crate::supervisor::Pid, crate::registry::UnitId>,
    /// Stops waiting for what depends on their unit to stop first.
    stop_jobs: std::collections::BTreeMap<crate::registry::UnitId, jobs::Job>,
    /// Control clients waiting for services to settle.
    waiters: Vec<jobs::Waiter>,
}

/// How a manager that took over from another came to be.
pub struct Takeover {
    /// The version that ran before.
    pub old: String,
    /// Why we were handed the state.
    pub came: Came,
    /// From the old manager's exec to the new one being ready to serve.
    pub took: Duration,
    /// The control client waiting for the reply.
    pub client: Option<u64>,
}

/// The epoll set, with the signalfd and timerfd in it; signals blocked and, when not PID 1,
/// the subreaper bit set.
fn loop_fds() -> Result<LoopFds, SetupError> {
    // Blocked before any child exists, so no exit can slip past the signalfd. Children
    // inherit the mask; the executor clears it before exec. (After a reexec the mask was
    // inherited blocked, so exits during the exec wait as pending signals.)
    let signals = handled_signals();
    signals.block().map_err(sys_err("blocking signals"))?;
    let signalfd = signals.signalfd().map_err(sys_err("signalfd"))?;
    if !crate::pid1::is_init() {
        // Orphans of our services are reparented to us and reaped, as they would be by init.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
    }
    let timerfd = rustix::time::timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
    )
    .map_err(sys_err("timerfd"))?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(sys_err("epoll"))?;
    for (fd, token) in [(&signalfd, Token::Signals), (&timerfd, Token::Timer)] {
        epoll::add(&epoll, fd, data(token), epoll::EventFlags::IN).map_err(sys_err("epoll_ctl"))?;
    }
    Ok(LoopFds {
        epoll,
        signals: signalfd,
        timerfd,
    })
}

fn data(token: Token) -> epoll::EventData {
    epoll::EventData::new_u64(token.to_u64())
}

/// The manager's own directory in each cgroup hierarchy: `steward` as PID 1, else one per
/// manager, so several managers (tests, nested instances) never share a service's cgroup. The
/// pid survives a reexec, and so does the directory.
fn cgroup_dir() -> String {
    let pid = std::process::id();
    match (pid, crate::pid1::pid_namespace()) {
        (1, None) => "steward".to_string(),
        // Init of a container or a test's namespace: several may share the host's cgroups.
        (1, Some(ns)) => format!("steward-pidns-{ns}"),
        _ => format!("steward-{pid}"),
    }
}

/// The signals the manager handles through its signalfd; as PID 1, the init signals too.
fn handled_signals() -> crate::sys::SignalSet {
    use crate::config::Signal;
    let mut signals = vec![Signal::CHLD.0, Signal::TERM.0, Signal::INT.0, Signal::HUP.0];
    if crate::pid1::is_init() {
        signals.extend(crate::pid1::extra_signals());
    }
    crate::sys::SignalSet::of(&signals)
}

impl Manager {
    /// Pins the executor and sets up the loop. Errors here are fatal: nothing has started yet.
    pub fn new(
        confined: config::Confined,
        sources: Vec<(PathBuf, String)>,
        paths: Paths<'_>,
        upgrade: Upgrade,
        watchdog: Option<Watchdog>,
    ) -> Result<Manager, SetupError> {
        let config::Confined { config, broken } = confined;
        let spawner = Spawner::pin(paths.executor)?;
        // Every socket of every service exists before the first spawn, so a service may
        // connect to another's socket at its start, whatever the order.
        let sockets = sockets::open_all(&config.services)?;
        let control = match Control::open(paths.control) {
            Ok(control) => control,
            Err(e) => {
                sockets::remove_files(sockets.iter().flatten());
                return Err(e.into());
            }
        };
        let fds = loop_fds()?;
        let notify = match notify::NotifySocket::open(&notify_path(paths.control)) {
            Ok(notify) => notify,
            Err(e) => {
                sockets::remove_files(sockets.iter().flatten());
                control.remove_file();
                return Err(e);
            }
        };
        let mut registry = Registry::default();
        let log_buffer = config.manager.log_buffer;
        let mut units: Vec<(config::Origin, Unit)> = config
            .services
            .into_iter()
            .zip(sockets)
            .map(|(service, sockets)| {
                (
                    service.origin.clone(),
                    Unit::new(service, sockets, log_buffer),
                )
            })
            .collect();
        for b in &broken {
            log::service(&b.name, format_args!("not started: {}", b.reason()));
            units.push((b.origin.clone(), Unit::refused(b, log_buffer)));
        }
        // In the order the files define them, as `status` lists them.
        units.sort_by(|(a, _), (b, _)| a.cmp(b));
        for (_, unit) in units {
            registry.insert(unit);
        }
        let cgroups = Cgroups::set_up(&cgroup_dir());
        cgroups.sweep();
        let mut manager = Manager::assemble(
            registry,
            spawner,
            (fds, notify),
            cgroups,
            control,
            paths.config,
            sources,
            config.manager.log_buffer,
            upgrade,
            watchdog,
        )?;
        manager.set_log_files(crate::logfile::Settings::of(&config.manager));
        for id in manager.registry.ids() {
            manager.open_log_pipes(id);
        }
        Ok(manager)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        registry: Registry,
        mut spawner: Spawner,
        (fds, notify): (LoopFds, notify::NotifySocket),
        mut cgroups: Cgroups,
        control: Control,
        config_path: &Path,
        config_sources: Vec<(PathBuf, String)>,
        log_buffer: u64,
        upgrade: Upgrade,
        watchdog: Option<Watchdog>,
    ) -> Result<Manager, SetupError> {
        epoll::add(
            &fds.epoll,
            &control.listener,
            data(Token::Control),
            epoll::EventFlags::IN,
        )
        .map_err(sys_err("epoll_ctl"))?;
        epoll::add(
            &fds.epoll,
            &notify.fd,
            data(Token::Notify),
            epoll::EventFlags::IN,
        )
        .map_err(sys_err("epoll_ctl"))?;
        spawner.set_notify_socket(notify.path.clone());
        log::manager(format_args!("{}", cgroups.describe()));
        for note in cgroups.take_notes().into_iter().chain(spawner.take_notes()) {
            log::manager(format_args!("{note}"));
        }
        Ok(Manager {
            registry,
            spawner,
            cgroups,
            epoll: fds.epoll,
            signals: fds.signals,
            timerfd: fds.timerfd,
            armed: None,
            timers: TimerSet::default(),
            control,
            config_path: config_path.to_path_buf(),
            config_sources: config_sources.into(),
            head_changed: true,
            log_buffer,
            log_files: None,
            upgrade,
            watchdog,
            phase: Phase::Running,
            notify,
            moved: Vec::new(),
            short_pools: std::collections::BTreeSet::new(),
            reaping: reap::Reaping::Done,
            armed_executors: std::collections::BTreeMap::new(),
            stop_jobs: Default::default(),
            waiters: Vec::new(),
        })
    }

    /// Starts the autostart services and supervises until an orderly shutdown has finished;
    /// returns what to do then.
    pub fn run(self) -> Finish {
        self.serve(None)
    }

    /// Supervises until an orderly shutdown has finished: from boot (`None`: the autostart
    /// services start), or after taking over from a manager that re-executed.
    fn serve(mut self, takeover: Option<Takeover>) -> Finish {
        // From now on, we must not die: a failure of one service is logged and becomes a retry
        // or a `failed` state; a failed syscall of the loop is logged and the loop goes on.
        match takeover {
            None => self.boot(),
            Some(takeover) => self.took_over(takeover),
        }
        crate::sys::trim_heap();
        crate::sys::release_startup_pages();
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 32];
        self.settle();
        self.snapshot();
        while let Some(timeout) = self.next_wait() {
            // Children left to reap: what else is ready is seen to, without waiting, and the
            // reaping goes on after it.
            let reaping = self.reaping == reap::Reaping::More;
            let timeout = if reaping {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            let n = if self.short_pools.is_empty() {
                self.wait(&mut events, timeout)
            } else {
                match self.wait(&mut events, Some(Duration::ZERO)) {
                    0 => {
                        self.fill_pools();
                        self.wait(&mut events, timeout)
                    }
                    n => n,
                }
            };
            // Every turn, however busy: a loop that turns is a manager that is alive.
            if let Some(watchdog) = &mut self.watchdog {
                watchdog.tick(Instant::now());
            }
            let reap = self.dispatch_events(&events[..n]) || reaping;
            if reap {
                self.reap();
                self.snapshot();
            }
            self.settle();
            self.snapshot();
            // Timers that fell due in this turn (a `restart_delay` of 0) run now, not after a
            // trip through the timerfd and another epoll_wait; once per turn, so that a zero
            // delay that keeps failing cannot starve the other events.
            if self.fire_due_timers() {
                self.settle();
                self.snapshot();
            }
        }
        self.finish()
    }

    fn boot(&mut self) {
        log::manager(format_args!(
            "version {} starting (pid {}, {} services)",
            crate::version(),
            std::process::id(),
            self.registry.len()
        ));
        let autostart: Vec<_> = self
            .registry
            .iter()
            .filter(|(_, u)| u.supervisor.config().autostart)
            .map(|(id, _)| id)
            .collect();
        // What an autostart service requires starts with it, autostart or not; each one then
        // waits for what it is after.
        for id in deps::with_required(&self.registry, &autostart) {
            self.dispatch(id, Event::Start);
        }
    }

    /// Waits for events (at most `timeout`); returns how many arrived.
    fn wait(&mut self, events: &mut [epoll::Event; 32], timeout: Option<Duration>) -> usize {
        self.arm_timer();
        let timespec = timeout.map(|d| Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        });
        match epoll::wait(&self.epoll, &mut *events, timespec.as_ref()) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => 0,
            Err(e) => {
                log::manager(format_args!("epoll_wait failed: {e}"));
                0
            }
        }
    }

    /// Hands each event to its handler; says whether a child exited (SIGCHLD), so that the
    /// loop reaps once after all of them.
    fn dispatch_events(&mut self, events: &[epoll::Event]) -> bool {
        let mut reap = false;
        for event in events {
            match Token::from_u64(event.data.u64()) {
                Some(Token::Signals) => reap |= self.on_signals(),
                Some(Token::Timer) => self.on_timer(),
                Some(Token::Status(id, pid)) => self.on_status(id, pid),
                Some(Token::Socket(id)) => self.dispatch(id, Event::Connection),
                Some(Token::Notify) => self.on_notify(),
                Some(Token::Ready(id, pid)) => self.on_ready_pipe(id, pid),
                Some(Token::Stored(id, fd)) => self.on_stored_hangup(id, fd as i32),
                Some(Token::Armed(id, pid)) => self.on_armed(id, pid),
                Some(Token::Control) => self.on_control(),
                Some(Token::Client(id)) => self.on_client(id),
                Some(Token::Log(id, stream)) => self.on_log(id, stream),
                Some(Token::InstanceLog(id, pid, stream)) => self.on_instance_log(id, pid, stream),
                None => {}
            }
            // Each event on its own: a panic in the next one finds this one's changes.
            self.snapshot();
        }
        reap
    }

    fn on_timer(&mut self) {
        // Reading clears the readiness; the expiry count itself is not needed.
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.timerfd, &mut buf);
        self.armed = None;
        self.fire_due_timers();
        self.control_timers(Instant::now());
    }

    /// Dispatches every unit timer that is due; says whether there was one.
    fn fire_due_timers(&mut self) -> bool {
        let now = Instant::now();
        let mut fired = false;
        while let Some((id, timer)) = self.timers.pop_due(now) {
            self.dispatch(id, Event::Timer(timer));
            fired = true;
        }
        fired
    }

    fn arm_timer(&mut self) {
        let next = [
            self.timers.next(),
            self.control.next_deadline(),
            self.watchdog.as_ref().map(Watchdog::due),
        ]
        .into_iter()
        .flatten()
        .min();
        // Armed for the same time or earlier (a timer was cancelled since): left as it is. An
        // early expiry finds nothing due and arms for what is next then; a respawn or an exec
        // that cancels its timer at once costs no system call.
        match (self.armed, next) {
            (Some(armed), Some(next)) if armed <= next => return,
            (Some(_), None) | (None, None) => return,
            (Some(_) | None, Some(_)) => {}
        }
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = match next {
            // A zero expiration would disarm the timerfd, so a due timer fires in 1ns.
            Some(at) => {
                let after = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                Timespec {
                    tv_sec: after.as_secs() as _,
                    tv_nsec: after.subsec_nanos() as _,
                }
            }
            None => zero,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        match rustix::time::timerfd_settime(&self.timerfd, TimerfdTimerFlags::empty(), &spec) {
            Ok(_) => self.armed = next,
            Err(e) => log::manager(format_args!("arming the timerfd failed: {e}")),
        }
    }

    /// Adds `fd` to the epoll set for reading, with its token; false (and logged) when the
    /// kernel refuses.
    fn watch_fd(&self, fd: impl AsFd, token: Token) -> bool {
        match epoll::add(&self.epoll, fd, data(token), epoll::EventFlags::IN) {
            Ok(()) => true,
            Err(e) => {
                log::manager(format_args!("epoll_ctl failed: {e}"));
                false
            }
        }
    }

    /// Watches `fd`, in the epoll set already under another token, for reading with `token`:
    /// one epoll_ctl where taking it out and adding it again is two. Added afresh if it is not
    /// in the set after all.
    fn rewatch_fd(&self, fd: impl AsFd, token: Token) -> bool {
        match epoll::modify(&self.epoll, &fd, data(token), epoll::EventFlags::IN) {
            Ok(()) => true,
            Err(_) => self.watch_fd(fd, token),
        }
    }

    /// Writes the logs to the files `settings` names from now on (none: to no file). Every
    /// file is opened again by its path at its next line, as after a `reexec`: a reload
    /// also picks up a file that was moved away (logrotate) or a disk mounted since.
    fn set_log_files(&mut self, settings: Option<crate::logfile::Settings>) {
        for unit in self.registry.units_mut() {
            unit.io.disk = None;
            unit.io.output.forget_positions();
        }
        log::set_file(
            settings
                .as_ref()
                .map(crate::logfile::Settings::manager_file),
        );
        self.log_files = settings;
    }

    /// fsyncs every log file (at shutdown).
    fn sync_log_files(&self) {
        for (_, unit) in self.registry.iter() {
            if let Some(file) = &unit.io.disk {
                if let Err(e) = file.sync() {
                    log::warning(format_args!(
                        "fsync of {} failed: {e}",
                        file.path().display()
                    ));
                }
            }
        }
        log::sync();
    }

    /// Takes `fd` out of the epoll set (it is about to close, or must stop waking us).
    fn unwatch_fd(&self, fd: impl AsFd) {
        let _ = epoll::delete(&self.epoll, fd);
    }
}
