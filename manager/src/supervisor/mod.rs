//! The life of one service: its states, the events that move it, and what each move does.
//!
//! [`Supervisor::handle`] is the whole supervision policy, one exhaustive match over
//! (state, event); an accept-mode instance has its own small exhaustive match. Neither does
//! I/O: spawning, signalling, timers, the clock and logging go through the narrow parts of
//! [`Effects`], which the event loop implements with real syscalls and the tests with fakes.

pub mod effects;
mod instances;
pub mod save;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

use steward_protocol::{StatusReport, Step};
use thin_vec::ThinVec;

pub use instances::Instances;

pub use effects::Effects;

use crate::config::format_duration;
use crate::config::{self, InstanceLog, Ready, Signal, Span};
use crate::sockets::Listener;
use crate::spawn::SpawnError;

/// A process id, as the kernel gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(i32);

impl Pid {
    /// The pid `raw`; `None` for 0 or less, which name no single process.
    pub fn new(raw: i32) -> Option<Pid> {
        (raw > 0).then_some(Pid(raw))
    }

    /// The number.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How far a process has come from the executor to the service's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// The executor runs; the program is not exec'd yet.
    Pending,
    /// The executor reported a failed step; its exit (with systemd's status) is awaited.
    Failed(StatusReport),
    /// The service's program runs.
    Done,
}

/// A process of the service and how far it has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Its pid (the executor's, then the program's: the same).
    pub pid: Pid,
    /// Whether its program runs yet.
    pub exec: Exec,
}

impl Process {
    /// A process just spawned.
    fn spawned(pid: Pid) -> Process {
        Process {
            pid,
            exec: Exec::Pending,
        }
    }

    /// A process whose program runs.
    fn running(pid: Pid) -> Process {
        Process {
            pid,
            exec: Exec::Done,
        }
    }

    /// The executor reported on this process.
    fn report(&mut self, report: StatusReport) {
        if self.exec == Exec::Pending {
            self.exec = Exec::Failed(report);
        }
    }
}

/// Whether a listening service takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Its sockets are watched.
    Open,
    /// Accept mode: an instance could not be started (out of fds, say); the sockets are not
    /// watched until the back-off timer fires. Clients wait in the backlog.
    BackingOff,
    /// Accept mode: watched again after a back-off, but not every waiting client has been
    /// served yet (so a new failure is not logged again).
    Retrying,
}

/// What a running service has said about itself (sd_notify).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Ready, serving.
    Ready,
    /// Reloading its own configuration (`RELOADING=1`), until it says `READY=1` again.
    Reloading,
    /// Shutting down on its own (`STOPPING=1`).
    Stopping,
}

/// Why a service is `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Its own doing: a failed run, a start timeout.
    Own,
    /// Its start limit: it is started again after `start_limit_cooldown` (unless `"none"`).
    StartLimit,
    /// A service it requires failed; it starts again when that one recovers.
    Dependency(String),
    /// Its table in the config has errors: it cannot start until a reload fixes them.
    Config,
}

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started, or stopped.
    Inactive,
    /// Started, but waiting for the services it is `after` or `requires` to be ready (shown as
    /// `starting`, with no process).
    Waiting,
    /// Lazy or accept mode: a connection spawns the service (or, in accept mode, an instance;
    /// instances may be running).
    Listening {
        /// Whether its sockets are watched.
        intake: Intake,
    },
    /// Spawned, not ready yet: the executor runs, or the program runs and has not said it is
    /// ready (`ready` = notify, fd, exit).
    Starting {
        /// The process.
        main: Process,
    },
    /// The service's program runs, and is ready.
    Running {
        /// Its pid.
        pid: Pid,
        /// When it was exec'd.
        since: Instant,
        /// What it said about itself.
        serving: Serving,
    },
    /// Ran and exited successfully, and is not kept alive.
    Exited,
    /// Waiting `restart_delay` before a keep-alive restart.
    Restarting,
    /// Asked to stop; waiting for the process (and any accept instances) to exit.
    Stopping {
        /// The main process, if it is still there.
        main: Option<Process>,
        /// Whether SIGKILL was already sent.
        killed: bool,
        /// What to do once it exited.
        then: AfterStop,
    },
    /// Gave up: a one-shot that failed, the start limit was reached, or a service it requires
    /// failed.
    Failed(Cause),
    /// Removed from the config by a reload, and at rest: the registry lets it go.
    Retired,
}

/// How far a service is from ready, as the services that wait for it see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Ready: running, listening, or a setup task that exited 0.
    Up,
    /// On its way up: whoever waits for it waits.
    Pending,
    /// Not coming up (stopped, failed, or going): nobody waits for it.
    Settled,
}

impl State {
    /// The state's name as the operator sees it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Waiting | State::Starting { .. } => "starting",
            State::Listening { .. } => "listening",
            State::Running {
                serving: Serving::Ready,
                ..
            } => "running",
            State::Running {
                serving: Serving::Reloading,
                ..
            } => "reloading",
            State::Running {
                serving: Serving::Stopping,
                ..
            } => "stopping",
            State::Exited => "exited",
            State::Restarting => "restarting",
            State::Stopping { .. } => "stopping",
            State::Failed(_) => "failed",
            State::Retired => "removed",
        }
    }

    /// The main process, if any.
    pub fn pid(&self) -> Option<Pid> {
        match self {
            State::Starting { main } => Some(main.pid),
            State::Running { pid, .. } => Some(*pid),
            State::Stopping { main, .. } => main.map(|m| m.pid),
            State::Inactive
            | State::Waiting
            | State::Listening { .. }
            | State::Exited
            | State::Restarting
            | State::Failed(_)
            | State::Retired => None,
        }
    }

    /// How far from ready it is, for those that wait for it.
    pub fn readiness(&self) -> Readiness {
        match self {
            State::Listening { .. } | State::Exited => Readiness::Up,
            State::Running { serving, .. } => match serving {
                Serving::Ready | Serving::Reloading => Readiness::Up,
                Serving::Stopping => Readiness::Settled,
            },
            State::Waiting | State::Starting { .. } | State::Restarting => Readiness::Pending,
            State::Stopping { then, .. } => match then {
                AfterStop::Start => Readiness::Pending,
                AfterStop::Reconfigure(r) if r.then == Resume::Start => Readiness::Pending,
                AfterStop::Reconfigure(_)
                | AfterStop::Rest
                | AfterStop::Retire
                | AfterStop::Fail(_) => Readiness::Settled,
            },
            State::Inactive | State::Failed(_) | State::Retired => Readiness::Settled,
        }
    }

    /// No process, and nothing scheduled: a shutdown may finish, a reload's change may be
    /// made.
    pub fn at_rest(&self) -> bool {
        match self {
            State::Inactive | State::Exited | State::Failed(_) | State::Retired => true,
            State::Waiting
            | State::Listening { .. }
            | State::Starting { .. }
            | State::Running { .. }
            | State::Restarting
            | State::Stopping { .. } => false,
        }
    }
}

/// What a reload gives a service whose config changed.
#[derive(Debug)]
pub struct Replacement {
    /// The new config.
    pub config: config::Service,
    /// Its sockets, opened (or kept) when the reload was accepted.
    pub sockets: Vec<Listener>,
    /// Socket files of the old config to remove once its sockets close (those no new socket
    /// took over).
    pub stale: Vec<std::path::PathBuf>,
    /// What it does once the change is made.
    pub then: Resume,
}

/// What a service does once a reload's change is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Start.
    Start,
    /// Stay at rest.
    Rest,
    /// Stay `failed`: its table on disk now has these errors (a reexec re-reads the config
    /// as a boot does), so it is refused as at boot.
    Refuse(String),
}

impl PartialEq for Replacement {
    fn eq(&self, other: &Replacement) -> bool {
        // Sockets are fds: the same config means the same sockets were opened for it.
        self.config == other.config && self.then == other.then
    }
}

impl Eq for Replacement {}

impl Clone for Replacement {
    /// A replacement is moved, never copied: a clone carries the config without the fds.
    fn clone(&self) -> Replacement {
        Replacement {
            config: self.config.clone(),
            sockets: Vec::new(),
            stale: self.stale.clone(),
            then: self.then.clone(),
        }
    }
}

/// What a stopping service does once its processes are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay inactive.
    Rest,
    /// Start again (a restart by hand).
    Start,
    /// Go: a reload removed it.
    Retire,
    /// Take the new config a reload gave it.
    Reconfigure(Box<Replacement>),
    /// Handle it as a failed start (a start timeout), or as failed for a dependency.
    Fail(Cause),
}

impl AfterStop {
    /// After a `start` or `restart` by hand (`start`), or a `stop`: whether to start again
    /// once stopped. A reload's removal stays a removal.
    fn wanting(self, start: bool) -> AfterStop {
        match self {
            AfterStop::Rest | AfterStop::Start if start => AfterStop::Start,
            AfterStop::Rest | AfterStop::Start => AfterStop::Rest,
            AfterStop::Retire => AfterStop::Retire,
            // Failing was decided; a start by hand makes it start again afterwards.
            AfterStop::Fail(_) if start => AfterStop::Start,
            AfterStop::Fail(cause) => AfterStop::Fail(cause),
            AfterStop::Reconfigure(mut r) => {
                r.then = match r.then {
                    // Its errors are not fixed by asking.
                    Resume::Refuse(reason) => Resume::Refuse(reason),
                    Resume::Start | Resume::Rest if start => Resume::Start,
                    Resume::Start | Resume::Rest => Resume::Rest,
                };
                AfterStop::Reconfigure(r)
            }
        }
    }

    /// Whether a reload is still being applied to the service.
    pub fn is_reload_change(&self) -> bool {
        match self {
            AfterStop::Retire | AfterStop::Reconfigure(_) => true,
            AfterStop::Rest | AfterStop::Start | AfterStop::Fail(_) => false,
        }
    }
}

/// What a unit's timer is for. Each purpose is armed and cancelled on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// `restart_delay` before a keep-alive restart.
    RestartDelay,
    /// `stop_timeout` before SIGKILL.
    StopTimeout,
    /// Accept mode: the pause after an instance could not be started.
    Backoff,
    /// `start_timeout`: readiness must come by then.
    StartTimeout,
    /// `start_limit_cooldown`: a service failed at its start limit tries again then.
    Cooldown,
    /// `watchdog`: a ready service's last `WATCHDOG=1` must be younger than its interval. Set
    /// at readiness and, since pings only move [`Supervisor`]'s record of the last one, when it
    /// fires early (at most once an interval): a ping costs no timer syscall.
    Watchdog,
}

/// Something that happened to a process of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEvent {
    /// Its executor exec'd the program (the status pipe closed without a report).
    Execd,
    /// Its executor reported a failed step.
    StepFailed(StatusReport),
    /// It was reaped.
    Exited(Exit),
    /// It said it is ready (`READY=1`, or a line on its readiness fd).
    Ready,
    /// It said it is reloading (`RELOADING=1`).
    Reloading,
    /// It said it is shutting down (`STOPPING=1`).
    Stopping,
    /// It said its main process is now this one (`MAINPID=`, checked to be its own).
    MainPid(Pid),
    /// It asked for more time to become ready or to stop (`EXTEND_TIMEOUT_USEC=`).
    ExtendTimeout(Duration),
    /// `WATCHDOG=1`: alive.
    WatchdogPing,
    /// `WATCHDOG=trigger`: handle it as a missed ping, now.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=N`: a new interval for this run (zero: none).
    WatchdogInterval(Duration),
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start it: at boot, or by hand. Clears the restart counters.
    Start,
    /// Stop it.
    Stop,
    /// Stop it if it runs, then start it. Clears the restart counters.
    Restart,
    /// A watched socket became readable: a client is waiting.
    Connection,
    /// One of its timers expired.
    Timer(Timer),
    /// Something happened to the process with this pid (its main process or an instance;
    /// checked against both, and ignored when it is neither any more).
    Process(Pid, ProcessEvent),
    /// A reload removed it from the config.
    Retire,
    /// A reload changed its config.
    Reconfigure(Box<Replacement>),
    /// Waiting: everything it waits for is ready (or settled).
    Proceed,
    /// A service it requires failed.
    DependencyFailed(String),
}

/// A running accept-mode instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// Its number, shown as `NAME@N`.
    pub number: u32,
    /// When it was spawned.
    pub since: Instant,
    /// Whether its program runs yet.
    pub exec: Exec,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
    /// The kernel's OOM killer killed it: its cgroup reached `memory_max`.
    Oom,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "killed by {signal}"),
            Exit::Oom => write!(
                f,
                "killed by the kernel's OOM handling (memory_max reached)"
            ),
        }
    }
}

/// The last failure of a service, kept for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The executor step that failed, or `None` when the service itself failed.
    pub step: Option<Step>,
    /// What went wrong.
    pub reason: String,
    /// How the process ended.
    pub exit: Option<Exit>,
}

/// How often an accept-mode service retries after an instance could not be started.
const BACKOFF: Duration = Duration::from_millis(100);

/// A service's state machine and everything it remembers.
#[derive(Debug)]
pub struct Supervisor {
    config: config::Service,
    state: State,
    /// Automatic restarts since it was last started by hand or at boot.
    restarts: u32,
    /// Whether it was restarted by hand (`stewardctl restart`) since it was last started by
    /// hand or at boot: for its pool, that counts as a restart; for the start limit and
    /// `status`, not.
    restarted_by_hand: bool,
    /// When the automatic restarts inside the start-limit window happened.
    recent_restarts: ThinVec<Instant>,
    /// How its last process ended.
    last_exit: Option<Exit>,
    /// Its last failure. Boxed: most services never have one, and inline every unit would
    /// pay 32 bytes for it.
    last_failure: Option<Box<Failure>>,
    /// Accept mode: the running instances by pid.
    instances: Instances,
    /// Accept mode: the number the next instance gets.
    next_instance: u32,
    /// The watchdog of the current run.
    watchdog: Watchdog,
}

/// A run's watchdog: its interval (`watchdog`, or what the service set with `WATCHDOG_USEC=`)
/// and, once it is ready, when it last said it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// None configured, or the service turned it off (`WATCHDOG_USEC=0`).
    Off,
    /// An interval, not enforced yet: the service is not ready.
    Waiting(Duration),
    /// Enforced: a ping is due within `interval` of `last`.
    Watching {
        /// The interval.
        interval: Duration,
        /// The last ping (or readiness).
        last: Instant,
    },
}

impl Watchdog {
    /// The interval of a fresh run of `config`.
    fn of(config: &config::Service) -> Watchdog {
        config
            .watchdog
            .map_or(Watchdog::Off, |interval| Watchdog::Waiting(interval.get()))
    }

    /// The interval, if there is one.
    pub fn interval(self) -> Option<Duration> {
        match self {
            Watchdog::Off => None,
            Watchdog::Waiting(interval) | Watchdog::Watching { interval, .. } => Some(interval),
        }
    }
}

impl Supervisor {
    /// A service that has not started.
    pub fn new(config: config::Service) -> Supervisor {
        Supervisor {
            config,
            state: State::Inactive,
            restarts: 0,
            restarted_by_hand: false,
            recent_restarts: ThinVec::new(),
            last_exit: None,
            last_failure: None,
            instances: Instances::default(),
            next_instance: 1,
            watchdog: Watchdog::Off,
        }
    }

    /// A service refused for the errors in its table: `failed`, with them as its failure,
    /// until a reload (or a reexec) reads a table without errors.
    pub fn refused(broken: &config::Broken) -> Supervisor {
        let mut s = Supervisor::new(broken.service());
        s.state = State::Failed(Cause::Config);
        s.failed_with(Failure {
            step: None,
            reason: broken.reason(),
            exit: None,
        });
        s
    }

    /// Its config.
    pub fn config(&self) -> &config::Service {
        &self.config
    }

    /// Where it is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Automatic restarts since it was last started by hand or at boot.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// How its last process ended.
    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }

    /// Its last failure.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_deref()
    }

    fn failed_with(&mut self, failure: Failure) {
        self.last_failure = Some(Box::new(failure));
    }

    /// Accept mode: the running instances by pid.
    pub fn instances(&self) -> &Instances {
        &self.instances
    }

    /// Accept mode: how many instances it has started, reexecs included.
    pub fn instances_started(&self) -> Option<u32> {
        self.config
            .accept
            .then(|| self.next_instance.saturating_sub(1))
    }

    /// Whether it takes connections now: listening and not backing off.
    fn open_for_connections(&self) -> bool {
        match self.state {
            State::Listening {
                intake: Intake::Open | Intake::Retrying,
            } => true,
            State::Listening {
                intake: Intake::BackingOff,
            }
            | State::Inactive
            | State::Waiting
            | State::Starting { .. }
            | State::Running { .. }
            | State::Exited
            | State::Restarting
            | State::Stopping { .. }
            | State::Failed(_)
            | State::Retired => false,
        }
    }

    /// Whether its sockets should be watched for connections now: open for them and (accept
    /// mode) below `max_connections` (further clients wait in the backlog).
    pub fn wants_connections(&self) -> bool {
        self.open_for_connections()
            && (!self.config.accept || self.instances.len() < self.config.max_connections as usize)
    }

    /// How many idle executors it should have now: its `executor_pool` while it is open for
    /// the connection that spawns it (a lazy service at rest, an accept service at any time,
    /// even at `max_connections`: an instance ending makes room at once), or while an eager
    /// keep-alive service is up or restarting (its next process is a restart); none otherwise.
    pub fn wants_pool(&self) -> usize {
        let restarts_next = self.config.keep_alive
            && !self.config.lazy
            && match self.state {
                State::Starting { .. } | State::Running { .. } | State::Restarting => true,
                // Restarted by hand: the executor armed for the next process waits out the
                // stop.
                State::Stopping {
                    then: AfterStop::Start,
                    ..
                } => true,
                State::Inactive
                | State::Waiting
                | State::Listening { .. }
                | State::Exited
                | State::Stopping { .. }
                | State::Failed(_)
                | State::Retired => false,
            };
        if self.open_for_connections() || restarts_next {
            let restarted = self.restarts > 0 || self.restarted_by_hand;
            self.config.executor_pool.size(restarted)
        } else {
            0
        }
    }

    /// A refused service whose table still has errors: these, now.
    pub fn refuse_again(&mut self, reason: &str) {
        if self.state == State::Failed(Cause::Config) {
            self.failed_with(Failure {
                step: None,
                reason: reason.to_string(),
                exit: None,
            });
        }
    }

    /// Whether a reload's change is still waiting for the service to stop.
    pub fn settling_from_reload(&self) -> bool {
        matches!(&self.state, State::Stopping { then, .. } if then.is_reload_change())
    }

    /// Moves the service on by one event. Every (state, event) pair is decided here.
    pub fn handle(&mut self, event: Event, fx: &mut Effects<'_>) {
        use State::*;
        let event = match event {
            Event::Process(pid, what) if self.instances.contains(pid) => {
                return self.handle_instance(pid, what, fx);
            }
            // About a process that is neither its main one nor an instance (any more): a
            // report that arrived after the process was handled.
            Event::Process(pid, _) if self.state.pid() != Some(pid) => return,
            event => event,
        };
        if let Event::Reconfigure(r) = &event {
            if let Resume::Refuse(reason) = &r.then {
                // Known now, though the change waits for it to stop: `status` says why.
                fx.log
                    .log(&self.config.name, format_args!("refused: {reason}"));
                self.failed_with(Failure {
                    step: None,
                    reason: reason.clone(),
                    exit: None,
                });
            }
        }
        let state = std::mem::replace(&mut self.state, Inactive);
        self.state = match (state, event) {
            // Starting by hand or at boot.
            (s @ Failed(Cause::Config), Event::Start | Event::Restart) => {
                fx.log.log(
                    &self.config.name,
                    format_args!("cannot start: its config has errors (see `stewardctl status`)"),
                );
                s
            }
            (Failed(Cause::StartLimit), Event::Start | Event::Restart) => {
                fx.timers.cancel(Timer::Cooldown);
                self.reset_counters();
                self.start_or_wait(fx)
            }
            (
                Inactive | Exited | Failed(Cause::Own | Cause::Dependency(_)),
                Event::Start | Event::Restart,
            ) => {
                self.reset_counters();
                self.start_or_wait(fx)
            }
            (Restarting, Event::Start) => {
                fx.timers.cancel(Timer::RestartDelay);
                self.reset_counters();
                self.start_or_wait(fx)
            }
            (Restarting, Event::Restart) => {
                fx.timers.cancel(Timer::RestartDelay);
                self.reset_counters();
                self.restarted_by_hand = true;
                self.start_or_wait(fx)
            }
            (s @ (Waiting | Listening { .. } | Starting { .. } | Running { .. }), Event::Start) => {
                s
            }
            (Waiting, Event::Restart) => {
                self.reset_counters();
                Waiting
            }
            (Starting { main }, Event::Restart) => {
                self.reset_counters();
                self.restarted_by_hand = true;
                self.stop(Some(main), AfterStop::Start, fx)
            }
            (Running { pid, .. }, Event::Restart) => {
                self.reset_counters();
                self.restarted_by_hand = true;
                self.stop(Some(Process::running(pid)), AfterStop::Start, fx)
            }
            (Listening { .. }, Event::Restart) => {
                self.reset_counters();
                fx.timers.cancel(Timer::Backoff);
                self.stop(None, AfterStop::Start, fx)
            }
            (Stopping { main, killed, then }, event @ (Event::Start | Event::Restart)) => {
                self.restarted_by_hand |= event == Event::Restart;
                Stopping {
                    main,
                    killed,
                    then: then.wanting(true),
                }
            }

            // What it waits for is ready, or one it requires failed.
            (Waiting, Event::Proceed) => self.start(fx),
            (
                s @ (Inactive
                | Listening { .. }
                | Starting { .. }
                | Running { .. }
                | Exited
                | Restarting
                | Stopping { .. }
                | Failed(_)),
                Event::Proceed,
            ) => s,
            (Waiting | Restarting, Event::DependencyFailed(name)) => {
                fx.timers.cancel(Timer::RestartDelay);
                self.fail_for(&name, fx);
                Failed(Cause::Dependency(name))
            }
            (Listening { .. }, Event::DependencyFailed(name)) => {
                fx.timers.cancel(Timer::Backoff);
                self.fail_for(&name, fx);
                self.stop(None, AfterStop::Fail(Cause::Dependency(name)), fx)
            }
            (Starting { main }, Event::DependencyFailed(name)) => {
                self.fail_for(&name, fx);
                self.stop(Some(main), AfterStop::Fail(Cause::Dependency(name)), fx)
            }
            (Running { pid, .. }, Event::DependencyFailed(name)) => {
                self.fail_for(&name, fx);
                let main = Some(Process::running(pid));
                self.stop(main, AfterStop::Fail(Cause::Dependency(name)), fx)
            }
            (Stopping { main, killed, then }, Event::DependencyFailed(name)) => {
                let then = match then {
                    AfterStop::Retire => AfterStop::Retire,
                    _ => {
                        self.fail_for(&name, fx);
                        AfterStop::Fail(Cause::Dependency(name))
                    }
                };
                Stopping { main, killed, then }
            }
            // Not running: nothing to stop, and nothing it failed at.
            (s @ (Inactive | Exited | Failed(_)), Event::DependencyFailed(_)) => s,

            // Stopping.
            (Waiting, Event::Stop) => {
                fx.log.log(&self.config.name, format_args!("stopped"));
                Inactive
            }
            (Starting { main }, Event::Stop) => self.stop(Some(main), AfterStop::Rest, fx),
            (Running { pid, .. }, Event::Stop) => {
                self.stop(Some(Process::running(pid)), AfterStop::Rest, fx)
            }
            (Listening { .. }, Event::Stop) => {
                fx.timers.cancel(Timer::Backoff);
                self.stop(None, AfterStop::Rest, fx)
            }
            (Restarting, Event::Stop) => {
                fx.timers.cancel(Timer::RestartDelay);
                fx.log.log(&self.config.name, format_args!("stopped"));
                Inactive
            }
            (Stopping { main, killed, then }, Event::Stop) => Stopping {
                main,
                killed,
                then: then.wanting(false),
            },
            // A service failed at its start limit and stopped by hand stays failed, with no
            // retry pending.
            (s @ Failed(Cause::StartLimit), Event::Stop) => {
                fx.timers.cancel(Timer::Cooldown);
                s
            }
            (
                s @ (Inactive | Exited | Failed(Cause::Own | Cause::Dependency(_) | Cause::Config)),
                Event::Stop,
            ) => s,

            // A reload removed it.
            (Inactive | Exited | Failed(_) | Waiting, Event::Retire) => {
                fx.timers.cancel(Timer::Cooldown);
                Retired
            }
            (Restarting, Event::Retire) => {
                fx.timers.cancel(Timer::RestartDelay);
                fx.log.log(&self.config.name, format_args!("stopped"));
                Retired
            }
            (Listening { .. }, Event::Retire) => {
                fx.timers.cancel(Timer::Backoff);
                self.stop(None, AfterStop::Retire, fx)
            }
            (Starting { main }, Event::Retire) => self.stop(Some(main), AfterStop::Retire, fx),
            (Running { pid, .. }, Event::Retire) => {
                self.stop(Some(Process::running(pid)), AfterStop::Retire, fx)
            }
            (Stopping { main, killed, .. }, Event::Retire) => Stopping {
                main,
                killed,
                then: AfterStop::Retire,
            },

            // A reload changed it: made at once when at rest, else once it has stopped.
            (s @ (Inactive | Exited | Failed(_)), Event::Reconfigure(replacement)) => {
                fx.timers.cancel(Timer::Cooldown);
                self.reconfigure(s, *replacement, fx)
            }
            (Waiting, Event::Reconfigure(replacement)) => {
                self.reconfigure(Inactive, *replacement, fx)
            }
            (Restarting, Event::Reconfigure(replacement)) => {
                fx.timers.cancel(Timer::RestartDelay);
                fx.log.log(&self.config.name, format_args!("stopped"));
                self.reconfigure(Inactive, *replacement, fx)
            }
            (Listening { .. }, Event::Reconfigure(replacement)) => {
                fx.timers.cancel(Timer::Backoff);
                self.stop(None, AfterStop::Reconfigure(replacement), fx)
            }
            (Starting { main }, Event::Reconfigure(replacement)) => {
                self.stop(Some(main), AfterStop::Reconfigure(replacement), fx)
            }
            (Running { pid, .. }, Event::Reconfigure(replacement)) => self.stop(
                Some(Process::running(pid)),
                AfterStop::Reconfigure(replacement),
                fx,
            ),
            (Stopping { main, killed, .. }, Event::Reconfigure(replacement)) => Stopping {
                main,
                killed,
                then: AfterStop::Reconfigure(replacement),
            },

            // A client is waiting.
            (Listening { intake }, Event::Connection) => self.activate(intake, fx),
            // Readiness reported before the watch was dropped: nobody is listening for it now.
            (
                s @ (Inactive
                | Waiting
                | Starting { .. }
                | Running { .. }
                | Exited
                | Restarting
                | Stopping { .. }
                | Failed(_)),
                Event::Connection,
            ) => s,

            // The main process (the pid was checked above).
            (Starting { main }, Event::Process(_, what)) => self.starting(main, what, fx),
            (
                Running {
                    pid,
                    since,
                    serving,
                },
                Event::Process(_, what),
            ) => self.running(pid, since, serving, what, fx),
            (
                Stopping {
                    main: Some(main),
                    killed,
                    then,
                },
                Event::Process(_, what),
            ) => self.stopping(main, killed, then, what, fx),
            // No main process: the pid check above lets nothing through.
            (
                s @ (Inactive
                | Waiting
                | Listening { .. }
                | Exited
                | Restarting
                | Stopping { main: None, .. }
                | Failed(_)),
                Event::Process(..),
            ) => s,

            // Timers.
            (Restarting, Event::Timer(Timer::RestartDelay)) => self.spawn(fx),
            (Failed(Cause::StartLimit), Event::Timer(Timer::Cooldown)) => {
                fx.log.log(
                    &self.config.name,
                    format_args!(
                        "start_limit_cooldown is over: starting again with fresh counters"
                    ),
                );
                self.reset_counters();
                self.start_or_wait(fx)
            }
            (Listening { intake }, Event::Timer(Timer::Backoff)) => {
                // The back-off after a failed spawn is over. A connection may be parked
                // (accepted, not yet served), which no readiness would announce: try at once.
                let intake = match intake {
                    Intake::Open => Intake::Open,
                    Intake::BackingOff | Intake::Retrying => Intake::Retrying,
                };
                if self.config.accept {
                    self.activate(intake, fx)
                } else {
                    Listening { intake }
                }
            }
            (
                Running {
                    pid,
                    since,
                    serving,
                },
                Event::Timer(Timer::Watchdog),
            ) => self.watchdog_due(pid, since, serving, fx),
            (Starting { main }, Event::Timer(Timer::StartTimeout)) => {
                let waited = self
                    .config
                    .start_timeout
                    .map_or_else(|| "ever".into(), |t| format_duration(t.get()));
                let reason = format!("not ready within {waited} (start_timeout)");
                fx.log
                    .log(&self.config.name, format_args!("{reason}; stopping it"));
                self.failed_with(Failure {
                    step: None,
                    reason,
                    exit: None,
                });
                self.stop(Some(main), AfterStop::Fail(Cause::Own), fx)
            }
            (
                Stopping {
                    main,
                    killed: false,
                    then,
                },
                Event::Timer(Timer::StopTimeout),
            ) => {
                fx.log.log(
                    &self.config.name,
                    format_args!(
                        "still running {} after {}; sending SIGKILL",
                        format_duration(self.config.stop_timeout.get()),
                        self.config.stop_signal
                    ),
                );
                self.signal_all(main, Signal::KILL, fx);
                Stopping {
                    main,
                    killed: true,
                    then,
                }
            }
            // A timer of another state, fired before it could be cancelled.
            (
                s @ (Inactive
                | Waiting
                | Listening { .. }
                | Starting { .. }
                | Running { .. }
                | Exited
                | Restarting
                | Stopping { .. }
                | Failed(_)),
                Event::Timer(_),
            ) => s,

            // Gone: nothing reaches it any more.
            (Retired, _) => Retired,
        };
        // Only a running service is watched, whichever way it stopped running.
        if !matches!(self.state, Running { .. })
            && matches!(self.watchdog, Watchdog::Watching { .. })
        {
            fx.timers.cancel(Timer::Watchdog);
            self.watchdog = Watchdog::Off;
        }
    }

    /// What a process of a starting service did.
    fn starting(&mut self, mut main: Process, what: ProcessEvent, fx: &mut Effects<'_>) -> State {
        match what {
            ProcessEvent::Execd => {
                if main.exec == Exec::Pending {
                    main.exec = Exec::Done;
                }
                if self.config.ready == Ready::Exec {
                    return self.ready(main.pid, fx);
                }
                State::Starting { main }
            }
            ProcessEvent::StepFailed(report) => {
                self.log_step_failure(&self.config.name, report, fx);
                main.report(report);
                State::Starting { main }
            }
            ProcessEvent::Exited(exit) => {
                fx.timers.cancel(Timer::StartTimeout);
                self.after_exit(main.exec, exit, fx)
            }
            // Only the executor can have failed a step; a program that says it is ready runs.
            ProcessEvent::Ready if matches!(self.config.ready, Ready::Notify | Ready::Fd(_)) => {
                self.ready(main.pid, fx)
            }
            ProcessEvent::Ready | ProcessEvent::Reloading | ProcessEvent::Stopping => {
                State::Starting { main }
            }
            ProcessEvent::MainPid(pid) => State::Starting {
                main: Process::running(pid),
            },
            ProcessEvent::ExtendTimeout(by) => {
                fx.timers.extend(Timer::StartTimeout, by);
                State::Starting { main }
            }
            ProcessEvent::WatchdogInterval(interval) => {
                self.set_watchdog_interval(interval, false, fx);
                State::Starting { main }
            }
            // Not ready yet: `start_timeout` is what watches it.
            ProcessEvent::WatchdogPing | ProcessEvent::WatchdogTrigger => State::Starting { main },
        }
    }

    /// `WATCHDOG_USEC=N`: the interval of this run from now on (zero turns it off); when
    /// `watching`, the next ping is due that long from now.
    fn set_watchdog_interval(&mut self, interval: Duration, watching: bool, fx: &mut Effects<'_>) {
        self.watchdog = match (interval.is_zero(), watching) {
            (true, _) => {
                fx.timers.cancel(Timer::Watchdog);
                Watchdog::Off
            }
            (false, false) => Watchdog::Waiting(interval),
            (false, true) => {
                fx.timers.set(Timer::Watchdog, interval);
                Watchdog::Watching {
                    interval,
                    last: fx.clock.now(),
                }
            }
        };
    }

    /// The watchdog timer fired: early, when a ping came since it was set (set again for
    /// the rest), else a timeout.
    fn watchdog_due(
        &mut self,
        pid: Pid,
        since: Instant,
        serving: Serving,
        fx: &mut Effects<'_>,
    ) -> State {
        if let Watchdog::Watching { interval, last } = self.watchdog {
            let due = last + interval;
            let now = fx.clock.now();
            if due > now {
                fx.timers.set(Timer::Watchdog, due - now);
            } else {
                let missed = format!("no WATCHDOG=1 for {}", format_duration(interval));
                return self.watchdog_timeout(pid, &missed, fx);
            }
        }
        State::Running {
            pid,
            since,
            serving,
        }
    }

    /// A missed (or triggered) watchdog: `watchdog_signal`, SIGKILL after `stop_timeout`, and
    /// the exit handled as a crash.
    fn watchdog_timeout(&mut self, pid: Pid, why: &str, fx: &mut Effects<'_>) -> State {
        fx.timers.cancel(Timer::Watchdog);
        self.watchdog = Watchdog::Off;
        let signal = self.config.watchdog_signal;
        fx.log.log(
            &self.config.name,
            format_args!("watchdog timeout ({why}); sending {signal}"),
        );
        self.failed_with(Failure {
            step: None,
            reason: "watchdog timeout".into(),
            exit: None,
        });
        let main = Process::running(pid);
        self.signal_all(Some(main), signal, fx);
        fx.timers
            .set(Timer::StopTimeout, self.config.stop_timeout.get());
        State::Stopping {
            main: Some(main),
            killed: false,
            then: AfterStop::Fail(Cause::Own),
        }
    }

    /// Ready: running, and from now on watched.
    fn ready(&mut self, pid: Pid, fx: &mut Effects<'_>) -> State {
        fx.timers.cancel(Timer::StartTimeout);
        if let Some(interval) = self.watchdog.interval() {
            self.watchdog = Watchdog::Watching {
                interval,
                last: fx.clock.now(),
            };
            fx.timers.set(Timer::Watchdog, interval);
        }
        State::Running {
            pid,
            since: fx.clock.now(),
            serving: Serving::Ready,
        }
    }

    /// What the main process of a running service did.
    fn running(
        &mut self,
        pid: Pid,
        since: Instant,
        serving: Serving,
        what: ProcessEvent,
        fx: &mut Effects<'_>,
    ) -> State {
        let serving = match what {
            ProcessEvent::Exited(exit) => return self.after_exit(Exec::Done, exit, fx),
            ProcessEvent::MainPid(pid) => {
                return State::Running {
                    pid,
                    since,
                    serving,
                };
            }
            ProcessEvent::Ready => Serving::Ready,
            ProcessEvent::Reloading => Serving::Reloading,
            ProcessEvent::Stopping => Serving::Stopping,
            ProcessEvent::WatchdogPing => {
                if let Watchdog::Watching { last, .. } = &mut self.watchdog {
                    *last = fx.clock.now();
                }
                serving
            }
            ProcessEvent::WatchdogTrigger if self.watchdog != Watchdog::Off => {
                return self.watchdog_timeout(pid, "WATCHDOG=trigger", fx);
            }
            ProcessEvent::WatchdogInterval(interval) => {
                self.set_watchdog_interval(interval, true, fx);
                serving
            }
            ProcessEvent::Execd
            | ProcessEvent::StepFailed(_)
            | ProcessEvent::ExtendTimeout(_)
            | ProcessEvent::WatchdogTrigger => serving,
        };
        State::Running {
            pid,
            since,
            serving,
        }
    }

    /// What the main process of a stopping service did.
    fn stopping(
        &mut self,
        mut main: Process,
        killed: bool,
        then: AfterStop,
        what: ProcessEvent,
        fx: &mut Effects<'_>,
    ) -> State {
        match what {
            ProcessEvent::Execd => {
                if main.exec == Exec::Pending {
                    main.exec = Exec::Done;
                }
            }
            ProcessEvent::StepFailed(report) => {
                self.log_step_failure(&self.config.name, report, fx);
                main.report(report);
            }
            // Being stopped: no longer watched.
            ProcessEvent::WatchdogPing
            | ProcessEvent::WatchdogTrigger
            | ProcessEvent::WatchdogInterval(_) => {}
            ProcessEvent::Exited(exit) => {
                match then {
                    // The failure that made it stop is the one to remember.
                    AfterStop::Fail(_) => self.last_exit = Some(exit),
                    _ => {
                        self.record_exit(main.exec, exit);
                    }
                }
                fx.log.log(&self.config.name, format_args!("{exit}"));
                return self.stopped_or_wait(killed, then, fx);
            }
            ProcessEvent::MainPid(pid) => main = Process::running(pid),
            ProcessEvent::ExtendTimeout(by) if !killed => fx.timers.extend(Timer::StopTimeout, by),
            ProcessEvent::ExtendTimeout(_)
            | ProcessEvent::Ready
            | ProcessEvent::Reloading
            | ProcessEvent::Stopping => {}
        }
        State::Stopping {
            main: Some(main),
            killed,
            then,
        }
    }

    /// Records that a service it requires failed, for `status` and the log.
    fn fail_for(&mut self, dependency: &str, fx: &mut Effects<'_>) {
        let reason = format!("dependency {dependency} failed");
        fx.log.log(&self.config.name, format_args!("{reason}"));
        self.failed_with(Failure {
            step: None,
            reason,
            exit: None,
        });
    }

    /// An event about one of the accept-mode instances, a small machine of its own.
    fn handle_instance(&mut self, pid: Pid, what: ProcessEvent, fx: &mut Effects<'_>) {
        let Some(instance) = self.instances.get_mut(pid) else {
            return;
        };
        // Made only for a line: by default a connection that goes well has none.
        let number = instance.number;
        let name = || format!("{}@{number}", self.config.name);
        match (instance.exec, what) {
            (Exec::Pending, ProcessEvent::Execd) => instance.exec = Exec::Done,
            (Exec::Pending, ProcessEvent::StepFailed(report)) => {
                instance.exec = Exec::Failed(report);
                let message = self.describe_step_failure(report);
                fx.log.log(&name(), format_args!("{message}"));
            }
            (Exec::Done | Exec::Failed(_), ProcessEvent::Execd | ProcessEvent::StepFailed(_)) => {}
            // An instance is ready by being spawned, and is one connection: what it says
            // about itself changes nothing.
            (
                _,
                ProcessEvent::Ready
                | ProcessEvent::Reloading
                | ProcessEvent::Stopping
                | ProcessEvent::MainPid(_)
                | ProcessEvent::ExtendTimeout(_)
                | ProcessEvent::WatchdogPing
                | ProcessEvent::WatchdogTrigger
                | ProcessEvent::WatchdogInterval(_),
            ) => {}
            (exec, ProcessEvent::Exited(exit)) => {
                self.instances.remove(pid);
                match (self.config.log_instances, exit, exec) {
                    (InstanceLog::All, _, _) => fx.log.log(&name(), format_args!("{exit}")),
                    // Its failed step was told already; the exit that follows adds nothing.
                    (InstanceLog::Failures, Exit::Code(0), _)
                    | (InstanceLog::Failures, _, Exec::Failed(_)) => {}
                    // No line said which process it was.
                    (InstanceLog::Failures, _, Exec::Pending | Exec::Done) => {
                        fx.log.log(&name(), format_args!("{exit} (pid {pid})"))
                    }
                }
                let state = std::mem::replace(&mut self.state, State::Inactive);
                self.state = match state {
                    // Below the cap again: the next waiting client is taken (the watch
                    // follows from the state). After a failed start, the freed resources are
                    // worth a try at once.
                    State::Listening { intake } => State::Listening {
                        intake: match intake {
                            Intake::Open => Intake::Open,
                            Intake::BackingOff | Intake::Retrying => Intake::Retrying,
                        },
                    },
                    State::Stopping {
                        main: None,
                        killed,
                        then,
                    } => self.stopped_or_wait(killed, then, fx),
                    // Instances only run beside a listening or stopping service.
                    s @ (State::Stopping { main: Some(_), .. }
                    | State::Inactive
                    | State::Waiting
                    | State::Starting { .. }
                    | State::Running { .. }
                    | State::Exited
                    | State::Restarting
                    | State::Failed(_)
                    | State::Retired) => s,
                };
            }
        }
    }

    /// A start: at once, or once what it waits for is ready.
    fn start_or_wait(&mut self, fx: &mut Effects<'_>) -> State {
        if self.config.waits_for().next().is_some() {
            State::Waiting
        } else {
            self.start(fx)
        }
    }

    /// Starts the service as its mode says: spawned now, or its sockets watched.
    fn start(&mut self, fx: &mut Effects<'_>) -> State {
        if self.config.lazy {
            fx.log.log(&self.config.name, format_args!("listening"));
            State::Listening {
                intake: Intake::Open,
            }
        } else {
            self.spawn(fx)
        }
    }

    /// A client is waiting on a listening service.
    fn activate(&mut self, mut intake: Intake, fx: &mut Effects<'_>) -> State {
        if !self.config.accept {
            // The service accepts the connection itself; while it runs, the sockets are its.
            return self.spawn(fx);
        }
        let max = self.config.max_connections as usize;
        // At the cap, further clients wait in the backlog until an instance exits.
        while self.instances.len() < max {
            match fx.spawn.spawn_instance(&self.config) {
                Ok(Some(pid)) => {
                    let number = self.next_instance;
                    self.next_instance += 1;
                    let since = fx.clock.now();
                    let exec = Exec::Pending;
                    self.instances.insert(
                        pid,
                        Instance {
                            number,
                            since,
                            exec,
                        },
                    );
                    if self.config.log_instances == InstanceLog::All {
                        let name = format!("{}@{number}", self.config.name);
                        fx.log.log(&name, format_args!("started (pid {pid})"));
                    }
                }
                Ok(None) => {
                    // Nobody waits any more: the episode is over.
                    if intake == Intake::Retrying {
                        fx.log.log(
                            &self.config.name,
                            format_args!(
                                "every waiting client is served; starting instances again"
                            ),
                        );
                    }
                    intake = Intake::Open;
                    break;
                }
                Err(error) => {
                    // Back off rather than spin on a socket that stays readable (e.g. out of
                    // fds, or a user not created yet): the connection waits in the backlog,
                    // the timer re-arms the watch. Said once per episode: a storm must not
                    // flood the log.
                    if intake == Intake::Open {
                        let reason = match error.step() {
                            Some(step) => format!("failed at {}: {error}", step.name()),
                            None => error.to_string(),
                        };
                        fx.log.log(
                            &self.config.name,
                            format_args!(
                                "cannot start an instance: {reason}; clients wait in the backlog, retrying every 100ms"
                            ),
                        );
                    }
                    self.failed_with(spawn_failure(&error));
                    fx.timers.set(Timer::Backoff, BACKOFF);
                    intake = Intake::BackingOff;
                    break;
                }
            }
        }
        State::Listening { intake }
    }

    fn reset_counters(&mut self) {
        self.restarts = 0;
        self.restarted_by_hand = false;
        self.recent_restarts.clear();
    }

    fn spawn(&mut self, fx: &mut Effects<'_>) -> State {
        // A new run: the configured interval again, whatever the last one set.
        self.watchdog = Watchdog::of(&self.config);
        match fx.spawn.spawn(&self.config) {
            Ok(pid) => {
                fx.log
                    .log(&self.config.name, format_args!("started (pid {pid})"));
                if let Some(timeout) = self.config.start_timeout {
                    fx.timers.set(Timer::StartTimeout, timeout.get());
                }
                State::Starting {
                    main: Process::spawned(pid),
                }
            }
            Err(error) => {
                fx.log.log(
                    &self.config.name,
                    format_args!("{}", spawn_failure_text(&error)),
                );
                self.failed_with(spawn_failure(&error));
                self.restart_or_give_up(false, fx)
            }
        }
    }

    fn stop(&mut self, main: Option<Process>, then: AfterStop, fx: &mut Effects<'_>) -> State {
        fx.timers.cancel(Timer::StartTimeout);
        if main.is_none() && self.instances.is_empty() {
            fx.log.log(&self.config.name, format_args!("stopped"));
            return self.after_stop(then, fx);
        }
        let signal = self.config.stop_signal;
        fx.log
            .log(&self.config.name, format_args!("stopping ({signal})"));
        self.signal_all(main, signal, fx);
        fx.timers
            .set(Timer::StopTimeout, self.config.stop_timeout.get());
        State::Stopping {
            main,
            killed: false,
            then,
        }
    }

    fn signal_all(&self, main: Option<Process>, signal: Signal, fx: &mut Effects<'_>) {
        let pids: Vec<Pid> = main
            .map(|m| m.pid)
            .into_iter()
            .chain(self.instances.pids())
            .collect();
        fx.signals.signal(&self.config.name, &pids, signal);
    }

    /// The main process is gone (or there was none): done once no instance is left either.
    fn stopped_or_wait(&mut self, killed: bool, then: AfterStop, fx: &mut Effects<'_>) -> State {
        if !self.instances.is_empty() {
            return State::Stopping {
                main: None,
                killed,
                then,
            };
        }
        fx.timers.cancel(Timer::StopTimeout);
        fx.log.log(&self.config.name, format_args!("stopped"));
        self.after_stop(then, fx)
    }

    fn after_stop(&mut self, then: AfterStop, fx: &mut Effects<'_>) -> State {
        match then {
            AfterStop::Rest => State::Inactive,
            AfterStop::Start => self.start_or_wait(fx),
            AfterStop::Retire => State::Retired,
            AfterStop::Reconfigure(replacement) => {
                self.reconfigure(State::Inactive, *replacement, fx)
            }
            // Stopped for its own failure (a start timeout): as any failed run.
            AfterStop::Fail(Cause::Own) => self.restart_or_give_up(false, fx),
            AfterStop::Fail(cause @ (Cause::Dependency(_) | Cause::StartLimit | Cause::Config)) => {
                State::Failed(cause)
            }
        }
    }

    /// Takes a reload's new config while at rest (in `state`), then starts if asked to.
    fn reconfigure(
        &mut self,
        state: State,
        replacement: Replacement,
        fx: &mut Effects<'_>,
    ) -> State {
        let Replacement {
            config,
            sockets,
            stale,
            then,
        } = replacement;
        fx.spawn.replace_sockets(sockets, stale);
        self.config = config;
        match then {
            Resume::Start => {
                self.reset_counters();
                self.start_or_wait(fx)
            }
            // The errors that kept it from starting are gone.
            Resume::Rest if state == State::Failed(Cause::Config) => State::Inactive,
            Resume::Rest => state,
            Resume::Refuse(reason) => {
                // How its last run ended is not why it is failed.
                self.failed_with(Failure {
                    step: None,
                    reason,
                    exit: None,
                });
                State::Failed(Cause::Config)
            }
        }
    }

    /// Records how the main process ended; true when it was a success.
    fn record_exit(&mut self, exec: Exec, exit: Exit) -> bool {
        self.last_exit = Some(exit);
        match exec {
            Exec::Failed(report) => {
                self.failed_with(Failure {
                    step: Some(report.step),
                    reason: errno_text(report.errno),
                    exit: Some(exit),
                });
                false
            }
            Exec::Pending | Exec::Done if exit == Exit::Code(0) => true,
            Exec::Pending | Exec::Done => {
                self.failed_with(Failure {
                    step: None,
                    reason: exit.to_string(),
                    exit: Some(exit),
                });
                false
            }
        }
    }

    fn after_exit(&mut self, exec: Exec, exit: Exit, fx: &mut Effects<'_>) -> State {
        let success = self.record_exit(exec, exit);
        fx.log.log(&self.config.name, format_args!("{exit}"));
        self.restart_or_give_up(success, fx)
    }

    /// After a process is gone (or could not be made): keep it alive under the start limit, or
    /// settle in `exited` or `failed`.
    fn restart_or_give_up(&mut self, success: bool, fx: &mut Effects<'_>) -> State {
        if !self.config.keep_alive {
            // A lazy service's sockets stay open but unwatched: clients wait until a start.
            return if success {
                State::Exited
            } else {
                fx.log.log(&self.config.name, format_args!("failed"));
                State::Failed(Cause::Own)
            };
        }
        if self.config.lazy {
            // Re-armed at once: a client already waiting spawns it again on the next turn of
            // the loop. Only unsuccessful runs count against the start limit.
            if !success && self.start_limit_reached(fx) {
                return self.cool_down(fx);
            }
            self.restarts += 1;
            return State::Listening {
                intake: Intake::Open,
            };
        }
        if self.start_limit_reached(fx) {
            return self.cool_down(fx);
        }
        self.restarts += 1;
        let delay = self.config.restart_delay.get();
        if !delay.is_zero() {
            fx.log.log(
                &self.config.name,
                format_args!("restarting in {}", format_duration(delay)),
            );
        }
        fx.timers.set(Timer::RestartDelay, delay);
        State::Restarting
    }

    /// Failed at the start limit: tried again after `start_limit_cooldown`, unless `"none"`,
    /// so that an unattended board recovers.
    fn cool_down(&mut self, fx: &mut Effects<'_>) -> State {
        if let Some(cooldown) = self.config.start_limit_cooldown.map(Span::get) {
            fx.log.log(
                &self.config.name,
                format_args!(
                    "trying again in {} (start_limit_cooldown)",
                    format_duration(cooldown)
                ),
            );
            fx.timers.set(Timer::Cooldown, cooldown);
        }
        State::Failed(Cause::StartLimit)
    }

    /// Counts an automatic restart; true (and logged) when it would exceed the start limit.
    fn start_limit_reached(&mut self, fx: &mut Effects<'_>) -> bool {
        let now = fx.clock.now();
        let window = self.config.start_limit_interval.get();
        // In time order, so the restarts out of the window are a prefix. It goes once it is
        // half the list: a window of thousands (`start_limit_burst = 999999`) would otherwise
        // be shifted at every restart, and a ring would cost every unit 24 bytes more.
        let mut expired = self
            .recent_restarts
            .partition_point(|&t| now.duration_since(t) >= window);
        if expired * 2 >= self.recent_restarts.len() {
            self.recent_restarts.drain(..expired);
            expired = 0;
        }
        let burst = self.config.start_limit_burst;
        if self.recent_restarts.len() - expired >= burst as usize {
            fx.log.log(
                &self.config.name,
                format_args!(
                    "start limit reached ({burst} restarts within {}); failed",
                    format_duration(window)
                ),
            );
            return true;
        }
        self.recent_restarts.push(now);
        false
    }

    fn log_step_failure(&self, name: &str, report: StatusReport, fx: &mut Effects<'_>) {
        let message = self.describe_step_failure(report);
        fx.log.log(name, format_args!("{message}"));
    }

    fn describe_step_failure(&self, report: StatusReport) -> String {
        let c = &self.config;
        let subject = match report.step {
            Step::Exec => Some(c.exec.program().to_owned()),
            Step::Chdir => Some(c.working_directory.to_string()),
            // As written: the numbers a name had at that spawn are not kept.
            Step::User => c
                .credentials
                .as_ref()
                .and_then(|cr| cr.user.as_ref())
                .map(|u| written_id(&u.id, "uid", "user")),
            Step::Group => c
                .credentials
                .as_ref()
                .and_then(|cr| cr.group.as_ref())
                .map(|g| written_id(&g.id, "gid", "group")),
            Step::Stdin | Step::Stdout | Step::Stderr => match &c.stdio {
                config::StdioMode::Path(p) => Some(p.clone()),
                _ => None,
            },
            Step::Deserialize
            | Step::Fds
            | Step::Signals
            | Step::Setsid
            | Step::Limits
            | Step::Cgroup
            | Step::RuntimeDirectory
            | Step::StateDirectory
            | Step::CacheDirectory
            | Step::LogsDirectory => None,
        };
        let reason = errno_text(report.errno);
        match subject {
            Some(subject) => format!("failed at {}: {subject}: {reason}", report.step.name()),
            None => format!("failed at {}: {reason}", report.step.name()),
        }
    }
}

/// A user or group as the config wrote it, for a log line: `uid 1000`, `user "web"`.
fn written_id(id: &config::Id, number: &str, name: &str) -> String {
    match id {
        config::Id::Number(n) => format!("{number} {n}"),
        config::Id::Name(_) => format!("{name} {id}"),
    }
}

/// A spawn that failed in the manager, for `status`: at the executor's step when it stands
/// for one (the user or groups did not resolve; `status` shows that step's exit status), else
/// without a step.
fn spawn_failure(error: &SpawnError) -> Failure {
    Failure {
        step: error.step(),
        reason: error.to_string(),
        exit: None,
    }
}

/// The log line of a spawn that failed in the manager: `failed at STEP: REASON` as the
/// executor's failures read, or `cannot spawn: REASON`.
fn spawn_failure_text(error: &SpawnError) -> String {
    match error.step() {
        Some(step) => format!("failed at {}: {error}", step.name()),
        None => format!("cannot spawn: {error}"),
    }
}

/// The C library's text for an errno, without Rust's "(os error N)" suffix.
pub fn errno_text(errno: i32) -> String {
    crate::sys::errno_text(errno)
}
