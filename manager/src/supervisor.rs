//! The life of one service: its states, the events that move it, and what each move does.
//!
//! `Supervised::handle` is the whole supervision policy, one exhaustive match over
//! (state, event). It does no I/O itself: spawning, signalling, timers, the clock and logging
//! go through the narrow [`Effects`] trait, which the event loop implements with real syscalls
//! and the tests with a fake.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use steward_protocol::{StatusReport, Step};

use crate::config::format_duration;
use crate::config::{self, Signal};

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started, or stopped.
    Inactive,
    /// Lazy or accept mode: the sockets are watched; a connection spawns the service (or, in
    /// accept mode, an instance; instances may be running).
    Listening,
    /// The executor runs and has not yet exec'd the service.
    Starting {
        /// The process (executor, then service: the same pid).
        pid: Pid,
    },
    /// The service's program runs.
    Running {
        /// Its pid.
        pid: Pid,
        /// When it was exec'd.
        since: Instant,
    },
    /// Ran and exited successfully, and is not kept alive.
    Exited,
    /// Waiting `restart_delay` before a keep-alive restart.
    Restarting,
    /// Asked to stop; waiting for the process (and any accept instances) to exit.
    Stopping {
        /// The main process, if it is still there.
        pid: Option<Pid>,
        /// Whether SIGKILL was already sent.
        killed: bool,
        /// What to do once it exited.
        then: AfterStop,
    },
    /// Gave up: a one-shot that failed, or the start limit was reached.
    Failed,
}

impl State {
    /// The state's name as the operator sees it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Listening => "listening",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Exited => "exited",
            State::Restarting => "restarting",
            State::Stopping { .. } => "stopping",
            State::Failed => "failed",
        }
    }

    /// The process the service has, if any.
    pub fn pid(&self) -> Option<Pid> {
        match self {
            State::Starting { pid } | State::Running { pid, .. } => Some(*pid),
            State::Stopping { pid, .. } => *pid,
            State::Inactive
            | State::Listening
            | State::Exited
            | State::Restarting
            | State::Failed => None,
        }
    }

    /// No process, and nothing scheduled: a shutdown may finish.
    pub fn at_rest(&self) -> bool {
        match self {
            State::Inactive | State::Exited | State::Failed => true,
            State::Listening
            | State::Starting { .. }
            | State::Running { .. }
            | State::Restarting
            | State::Stopping { .. } => false,
        }
    }
}

/// What a stopping service does once its process is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay inactive.
    Rest,
    /// Start again (a restart by hand).
    Start,
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
    /// The executor with this pid exec'd its program (its status pipe closed without a report).
    ExecSucceeded(Pid),
    /// The executor with this pid reported a failed step.
    StepFailed(Pid, StatusReport),
    /// The process with this pid was reaped.
    Exited(Pid, Exit),
    /// The service's timer expired.
    Timer,
}

impl Event {
    /// The process an event is about.
    fn pid(&self) -> Option<Pid> {
        match self {
            Event::ExecSucceeded(pid) | Event::StepFailed(pid, _) | Event::Exited(pid, _) => {
                Some(*pid)
            }
            Event::Start | Event::Stop | Event::Restart | Event::Connection | Event::Timer => None,
        }
    }
}

/// A running accept-mode instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// Its number, shown as `NAME@N`.
    pub number: u32,
    /// When it was spawned.
    pub since: Instant,
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

/// The world as the state machine needs it.
pub trait Effects {
    /// The monotonic clock.
    fn now(&self) -> Instant;
    /// Spawns the service through the executor, with its sockets.
    fn spawn(&mut self, service: &config::Service) -> Result<Pid, String>;
    /// Accept mode: accepts a waiting connection and spawns an instance for it; `Ok(None)`
    /// when no connection was waiting.
    fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, String>;
    /// Watches the service's sockets for connections, or stops watching them (connections
    /// then wait in the backlog). Idempotent.
    fn watch(&mut self, on: bool);
    /// Sends a signal to the service's processes (their process groups, and its cgroup).
    fn signal(&mut self, pids: &[Pid], signal: Signal);
    /// Arms this service's one timer (replacing any earlier one).
    fn set_timer(&mut self, after: Duration);
    /// Disarms this service's timer.
    fn clear_timer(&mut self);
    /// Logs a line about the service of that name.
    fn log(&mut self, service: &str, message: fmt::Arguments<'_>);
}

/// A service and everything the manager remembers about it.
#[derive(Debug)]
pub struct Supervised {
    /// Its configuration.
    pub config: config::Service,
    /// Where it is.
    pub state: State,
    /// Automatic restarts since it was last started by hand or at boot.
    pub restarts: u32,
    /// When the automatic restarts inside the start-limit window happened.
    pub(crate) recent_restarts: VecDeque<Instant>,
    /// A failed step reported by the executor whose process has not been reaped yet.
    pub(crate) pending_report: Option<StatusReport>,
    /// How its last process ended.
    pub last_exit: Option<Exit>,
    /// Its last failure.
    pub last_failure: Option<Failure>,
    /// Accept mode: the running instances by pid.
    pub instances: BTreeMap<Pid, Instance>,
    /// Accept mode: the number the next instance gets.
    pub(crate) next_instance: u32,
    /// Accept mode: instances cannot be started (out of fds, say); said once per episode.
    backing_off: bool,
}

impl Supervised {
    /// A service that has not started.
    pub fn new(config: config::Service) -> Supervised {
        Supervised {
            config,
            state: State::Inactive,
            restarts: 0,
            recent_restarts: VecDeque::new(),
            pending_report: None,
            last_exit: None,
            last_failure: None,
            instances: BTreeMap::new(),
            next_instance: 1,
            backing_off: false,
        }
    }

    /// Moves the service on by one event. Every (state, event) pair is decided here.
    pub fn handle(&mut self, event: Event, fx: &mut impl Effects) {
        if let Some(pid) = event.pid() {
            if self.instances.contains_key(&pid) {
                self.handle_instance(pid, event, fx);
                return;
            }
        }
        use State::*;
        let state = std::mem::replace(&mut self.state, Inactive);
        self.state = match (state, event) {
            // Starting by hand or at boot.
            (Inactive | Exited | Failed, Event::Start | Event::Restart) => {
                self.reset_counters();
                self.start(fx)
            }
            (Restarting, Event::Start | Event::Restart) => {
                fx.clear_timer();
                self.reset_counters();
                self.start(fx)
            }
            (s @ (Listening | Starting { .. } | Running { .. }), Event::Start) => s,
            (Starting { pid } | Running { pid, .. }, Event::Restart) => {
                self.reset_counters();
                self.stop(Some(pid), AfterStop::Start, fx)
            }
            (Listening, Event::Restart) => {
                self.reset_counters();
                self.stop(None, AfterStop::Start, fx)
            }
            (Stopping { pid, killed, .. }, Event::Start | Event::Restart) => Stopping {
                pid,
                killed,
                then: AfterStop::Start,
            },

            // Stopping.
            (Starting { pid } | Running { pid, .. }, Event::Stop) => {
                self.stop(Some(pid), AfterStop::Rest, fx)
            }
            (Listening, Event::Stop) => self.stop(None, AfterStop::Rest, fx),
            (Restarting, Event::Stop) => {
                fx.clear_timer();
                fx.log(&self.config.name, format_args!("stopped"));
                Inactive
            }
            (Stopping { pid, killed, .. }, Event::Stop) => Stopping {
                pid,
                killed,
                then: AfterStop::Rest,
            },
            (s @ (Inactive | Exited | Failed), Event::Stop) => s,

            // A client is waiting.
            (Listening, Event::Connection) => self.activate(fx),
            // Readiness reported before the watch was dropped: nobody is listening for it now.
            (
                s @ (Inactive
                | Starting { .. }
                | Running { .. }
                | Exited
                | Restarting
                | Stopping { .. }
                | Failed),
                Event::Connection,
            ) => s,

            // The executor's report.
            (Starting { pid }, Event::ExecSucceeded(_)) => Running {
                pid,
                since: fx.now(),
            },
            (
                s @ (Inactive
                | Listening
                | Running { .. }
                | Exited
                | Restarting
                | Stopping { .. }
                | Failed),
                Event::ExecSucceeded(_),
            ) => s,
            (s @ (Starting { .. } | Stopping { .. }), Event::StepFailed(_, report)) => {
                let message = self.describe_step_failure(report);
                fx.log(&self.config.name, format_args!("{message}"));
                self.pending_report = Some(report);
                s
            }
            (
                s @ (Inactive | Listening | Running { .. } | Exited | Restarting | Failed),
                Event::StepFailed(..),
            ) => s,

            // The process ended.
            (Starting { .. } | Running { .. }, Event::Exited(_, exit)) => self.after_exit(exit, fx),
            (Stopping { killed, then, .. }, Event::Exited(_, exit)) => {
                self.record_exit(exit);
                fx.log(&self.config.name, format_args!("{exit}"));
                self.stopped_or_wait(killed, then, fx)
            }
            (s @ (Inactive | Listening | Exited | Restarting | Failed), Event::Exited(..)) => s,

            // Timers.
            (Restarting, Event::Timer) => self.spawn(fx),
            (Listening, Event::Timer) => {
                // The back-off after a failed spawn is over. In accept mode a connection may
                // be parked (accepted, not yet served), which no readiness would announce: try
                // at once.
                fx.watch(true);
                if self.config.accept {
                    self.activate(fx)
                } else {
                    Listening
                }
            }
            (
                Stopping {
                    pid,
                    killed: false,
                    then,
                },
                Event::Timer,
            ) => {
                fx.log(
                    &self.config.name,
                    format_args!(
                        "still running {} after {}; sending SIGKILL",
                        format_duration(self.config.stop_timeout),
                        self.config.stop_signal
                    ),
                );
                self.signal_all(pid, Signal::KILL, fx);
                Stopping {
                    pid,
                    killed: true,
                    then,
                }
            }
            (s @ (Inactive | Starting { .. } | Running { .. } | Exited | Failed), Event::Timer) => {
                s
            }
            (s @ Stopping { killed: true, .. }, Event::Timer) => s,
        };
    }

    /// An event about one of the accept-mode instances.
    fn handle_instance(&mut self, pid: Pid, event: Event, fx: &mut impl Effects) {
        let Some(&Instance { number, .. }) = self.instances.get(&pid) else {
            return;
        };
        let name = format!("{}@{number}", self.config.name);
        match event {
            Event::ExecSucceeded(_) => {}
            Event::StepFailed(_, report) => {
                let message = self.describe_step_failure(report);
                fx.log(&name, format_args!("{message}"));
            }
            Event::Exited(_, exit) => {
                self.instances.remove(&pid);
                fx.log(&name, format_args!("{exit}"));
                let state = std::mem::replace(&mut self.state, State::Inactive);
                self.state = match state {
                    // Below the cap again: take the next waiting client.
                    State::Listening => {
                        fx.watch(true);
                        State::Listening
                    }
                    State::Stopping { pid, killed, then } if pid.is_none() => {
                        self.stopped_or_wait(killed, then, fx)
                    }
                    other => other,
                };
            }
            Event::Start | Event::Stop | Event::Restart | Event::Connection | Event::Timer => {}
        }
    }

    /// Starts the service as its mode says: spawned now, or its sockets watched.
    fn start(&mut self, fx: &mut impl Effects) -> State {
        if self.config.lazy {
            fx.watch(true);
            fx.log(&self.config.name, format_args!("listening"));
            State::Listening
        } else {
            self.spawn(fx)
        }
    }

    /// A client is waiting on a listening service.
    fn activate(&mut self, fx: &mut impl Effects) -> State {
        if !self.config.accept {
            // The service accepts the connection itself; while it runs, the sockets are its.
            fx.watch(false);
            return self.spawn(fx);
        }
        let max = self.config.max_connections as usize;
        loop {
            if self.instances.len() >= max {
                // Further clients wait in the backlog until an instance exits.
                fx.watch(false);
                break;
            }
            match fx.spawn_instance(&self.config) {
                Ok(Some(pid)) => {
                    let number = self.next_instance;
                    self.next_instance += 1;
                    let since = fx.now();
                    self.instances.insert(pid, Instance { number, since });
                    let name = format!("{}@{number}", self.config.name);
                    fx.log(&name, format_args!("started (pid {pid})"));
                }
                Ok(None) => {
                    // Nobody waits any more: the episode is over.
                    if std::mem::take(&mut self.backing_off) {
                        fx.log(
                            &self.config.name,
                            format_args!(
                                "every waiting client is served; starting instances again"
                            ),
                        );
                    }
                    break;
                }
                Err(reason) => {
                    // Back off rather than spin on a socket that stays readable (e.g. out of
                    // fds): the connection waits in the backlog, the timer re-arms the watch.
                    // Said once per episode: a storm must not flood the log.
                    if !std::mem::replace(&mut self.backing_off, true) {
                        fx.log(
                            &self.config.name,
                            format_args!(
                                "cannot start an instance: {reason}; clients wait in the backlog, retrying every 100ms"
                            ),
                        );
                    }
                    fx.watch(false);
                    fx.set_timer(Duration::from_millis(100));
                    break;
                }
            }
        }
        State::Listening
    }

    fn reset_counters(&mut self) {
        self.restarts = 0;
        self.recent_restarts.clear();
    }

    fn spawn(&mut self, fx: &mut impl Effects) -> State {
        self.pending_report = None;
        match fx.spawn(&self.config) {
            Ok(pid) => {
                fx.log(&self.config.name, format_args!("started (pid {pid})"));
                State::Starting { pid }
            }
            Err(reason) => {
                fx.log(&self.config.name, format_args!("cannot spawn: {reason}"));
                self.last_failure = Some(Failure {
                    step: None,
                    reason,
                    exit: None,
                });
                self.restart_or_give_up(false, fx)
            }
        }
    }

    fn stop(&mut self, pid: Option<Pid>, then: AfterStop, fx: &mut impl Effects) -> State {
        fx.watch(false);
        if pid.is_none() && self.instances.is_empty() {
            fx.log(&self.config.name, format_args!("stopped"));
            return self.after_stop(then, fx);
        }
        let signal = self.config.stop_signal;
        fx.log(&self.config.name, format_args!("stopping ({signal})"));
        self.signal_all(pid, signal, fx);
        fx.set_timer(self.config.stop_timeout);
        State::Stopping {
            pid,
            killed: false,
            then,
        }
    }

    fn signal_all(&self, pid: Option<Pid>, signal: Signal, fx: &mut impl Effects) {
        let pids: Vec<Pid> = pid
            .into_iter()
            .chain(self.instances.keys().copied())
            .collect();
        fx.signal(&pids, signal);
    }

    /// The main process is gone (or there was none): done once no instance is left either.
    fn stopped_or_wait(&mut self, killed: bool, then: AfterStop, fx: &mut impl Effects) -> State {
        if !self.instances.is_empty() {
            return State::Stopping {
                pid: None,
                killed,
                then,
            };
        }
        fx.clear_timer();
        fx.log(&self.config.name, format_args!("stopped"));
        self.after_stop(then, fx)
    }

    fn after_stop(&mut self, then: AfterStop, fx: &mut impl Effects) -> State {
        match then {
            AfterStop::Rest => State::Inactive,
            AfterStop::Start => self.start(fx),
        }
    }

    fn record_exit(&mut self, exit: Exit) -> bool {
        self.last_exit = Some(exit);
        match self.pending_report.take() {
            Some(report) => {
                self.last_failure = Some(Failure {
                    step: Some(report.step),
                    reason: errno_text(report.errno).to_string(),
                    exit: Some(exit),
                });
                false
            }
            None if exit == Exit::Code(0) => true,
            None => {
                self.last_failure = Some(Failure {
                    step: None,
                    reason: exit.to_string(),
                    exit: Some(exit),
                });
                false
            }
        }
    }

    fn after_exit(&mut self, exit: Exit, fx: &mut impl Effects) -> State {
        let success = self.record_exit(exit);
        fx.log(&self.config.name, format_args!("{exit}"));
        self.restart_or_give_up(success, fx)
    }

    /// After a process is gone (or could not be made): keep it alive under the start limit, or
    /// settle in `exited` or `failed`.
    fn restart_or_give_up(&mut self, success: bool, fx: &mut impl Effects) -> State {
        if !self.config.keep_alive {
            // A lazy service's sockets stay open but unwatched: clients wait until a start.
            return if success {
                State::Exited
            } else {
                fx.log(&self.config.name, format_args!("failed"));
                State::Failed
            };
        }
        if self.config.lazy {
            // Re-armed at once: a client already waiting spawns it again on the next turn of
            // the loop. Only unsuccessful runs count against the start limit.
            if !success && self.start_limit_reached(fx) {
                return State::Failed;
            }
            self.restarts += 1;
            fx.watch(true);
            return State::Listening;
        }
        if self.start_limit_reached(fx) {
            return State::Failed;
        }
        self.restarts += 1;
        let delay = self.config.restart_delay;
        if !delay.is_zero() {
            fx.log(
                &self.config.name,
                format_args!("restarting in {}", format_duration(delay)),
            );
        }
        fx.set_timer(delay);
        State::Restarting
    }

    /// Counts an automatic restart; true (and logged) when it would exceed the start limit.
    fn start_limit_reached(&mut self, fx: &mut impl Effects) -> bool {
        let now = fx.now();
        let window = self.config.start_limit_interval;
        while let Some(first) = self.recent_restarts.front() {
            if now.duration_since(*first) >= window {
                self.recent_restarts.pop_front();
            } else {
                break;
            }
        }
        let burst = self.config.start_limit_burst;
        if self.recent_restarts.len() >= burst as usize {
            fx.log(
                &self.config.name,
                format_args!(
                    "start limit reached ({burst} restarts within {}); failed",
                    format_duration(window)
                ),
            );
            return true;
        }
        self.recent_restarts.push_back(now);
        false
    }

    fn describe_step_failure(&self, report: StatusReport) -> String {
        let c = &self.config;
        let subject = match report.step {
            Step::Exec => Some(c.exec[0].clone()),
            Step::Chdir => Some(c.working_directory.clone()),
            Step::User => c.credentials.as_ref().map(|cr| format!("uid {}", cr.uid)),
            Step::Group => c.credentials.as_ref().map(|cr| format!("gid {}", cr.gid)),
            Step::Stdin | Step::Stdout | Step::Stderr => match &c.stdio {
                config::StdioMode::Path(p) => Some(p.clone()),
                _ => None,
            },
            Step::Deserialize
            | Step::Fds
            | Step::Signals
            | Step::Setsid
            | Step::Limits
            | Step::Cgroup => None,
        };
        let reason = errno_text(report.errno);
        match subject {
            Some(subject) => format!("failed at {}: {subject}: {reason}", report.step.name()),
            None => format!("failed at {}: {reason}", report.step.name()),
        }
    }
}

/// The C library's text for an errno, without Rust's "(os error N)" suffix.
pub fn errno_text(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A world where time is a number the test moves, and every effect is written down.
    struct Fake {
        now: Instant,
        next_pid: i32,
        fail_spawn: bool,
        log: Vec<String>,
        signals: Vec<(i32, i32)>,
        timer: Option<Duration>,
        spawns: Cell<u32>,
        watching: bool,
        /// Connections waiting in the backlog of an accept-mode socket.
        waiting: u32,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                now: Instant::now(),
                next_pid: 100,
                fail_spawn: false,
                log: Vec::new(),
                signals: Vec::new(),
                timer: None,
                spawns: Cell::new(0),
                watching: false,
                waiting: 0,
            }
        }
    }

    impl Effects for Fake {
        fn now(&self) -> Instant {
            self.now
        }
        fn spawn(&mut self, _: &config::Service) -> Result<Pid, String> {
            self.spawns.set(self.spawns.get() + 1);
            if self.fail_spawn {
                return Err("Resource temporarily unavailable".into());
            }
            self.next_pid += 1;
            Ok(Pid::from_raw(self.next_pid))
        }
        fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, String> {
            if self.waiting == 0 {
                return Ok(None);
            }
            self.waiting -= 1;
            self.spawn(service).map(Some)
        }
        fn watch(&mut self, on: bool) {
            self.watching = on;
        }
        fn signal(&mut self, pids: &[Pid], signal: Signal) {
            for pid in pids {
                self.signals.push((pid.as_raw(), signal.0));
            }
        }
        fn set_timer(&mut self, after: Duration) {
            self.timer = Some(after);
        }
        fn clear_timer(&mut self) {
            self.timer = None;
        }
        fn log(&mut self, _: &str, message: fmt::Arguments<'_>) {
            self.log.push(message.to_string());
        }
    }

    fn service(text: &str) -> Supervised {
        let loaded = config::load_str(
            "t.toml",
            &format!("[service.s]\nexec = [\"/bin/x\"]\n{text}"),
        );
        let config = loaded
            .config
            .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
        Supervised::new(config.services.into_iter().next().unwrap())
    }

    fn pid(s: &Supervised) -> Pid {
        s.state.pid().expect("a process")
    }

    /// The main process exits.
    fn exit(s: &mut Supervised, fx: &mut Fake, exit: Exit) {
        let p = pid(s);
        s.handle(Event::Exited(p, exit), fx);
    }

    fn exec_ok(s: &mut Supervised, fx: &mut Fake) {
        let p = pid(s);
        s.handle(Event::ExecSucceeded(p), fx);
    }

    const LAZY: &str = "lazy = true\n[[service.s.socket]]\npath = \"/run/s\"\n";

    #[test]
    fn lazy_service_waits_for_a_connection() {
        let mut fx = Fake::new();
        let mut s = service(&format!("keep_alive = true\n{LAZY}"));
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state, State::Listening);
        assert!(fx.watching);
        assert_eq!(fx.spawns.get(), 0);
        s.handle(Event::Connection, &mut fx);
        assert_eq!(s.state.name(), "starting");
        assert!(!fx.watching, "while it runs the service accepts, not us");
        exit(&mut s, &mut fx, Exit::Code(0));
        assert_eq!(
            s.state,
            State::Listening,
            "re-armed at once, no restart delay"
        );
        assert!(fx.watching);
        assert_eq!(fx.timer, None);
        assert_eq!(s.restarts, 1);
    }

    #[test]
    fn lazy_service_only_counts_failures_against_the_start_limit() {
        let mut fx = Fake::new();
        let mut s = service(&format!("keep_alive = true\nstart_limit_burst = 2\n{LAZY}"));
        s.handle(Event::Start, &mut fx);
        for _ in 0..10 {
            s.handle(Event::Connection, &mut fx);
            exit(&mut s, &mut fx, Exit::Code(0));
        }
        assert_eq!(s.state, State::Listening);
        for _ in 0..2 {
            s.handle(Event::Connection, &mut fx);
            exit(&mut s, &mut fx, Exit::Signal(Signal(6)));
            assert_eq!(s.state, State::Listening);
        }
        s.handle(Event::Connection, &mut fx);
        exit(&mut s, &mut fx, Exit::Signal(Signal(6)));
        assert_eq!(s.state, State::Failed);
        assert!(
            !fx.watching,
            "a failed service's clients wait in the backlog"
        );
    }

    #[test]
    fn lazy_service_without_keep_alive_is_not_rearmed() {
        let mut fx = Fake::new();
        let mut s = service(LAZY);
        s.handle(Event::Start, &mut fx);
        s.handle(Event::Connection, &mut fx);
        exit(&mut s, &mut fx, Exit::Code(0));
        assert_eq!(s.state, State::Exited);
        assert!(!fx.watching);
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state, State::Listening);
        assert!(fx.watching);
    }

    #[test]
    fn stopping_a_listening_service_disarms_its_sockets() {
        let mut fx = Fake::new();
        let mut s = service(&format!("keep_alive = true\n{LAZY}"));
        s.handle(Event::Start, &mut fx);
        s.handle(Event::Stop, &mut fx);
        assert_eq!(s.state, State::Inactive);
        assert!(!fx.watching);
    }

    const ACCEPT: &str =
        "accept = true\nmax_connections = 2\n[[service.s.socket]]\npath = \"/run/s\"\n";

    #[test]
    fn accept_mode_caps_running_instances() {
        let mut fx = Fake::new();
        let mut s = service(ACCEPT);
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state, State::Listening);
        fx.waiting = 3;
        s.handle(Event::Connection, &mut fx);
        assert_eq!(s.instances.len(), 2);
        assert!(
            !fx.watching,
            "at the cap, the third client waits in the backlog"
        );
        assert_eq!(fx.waiting, 1);
        let first = *s.instances.keys().next().unwrap();
        s.handle(Event::ExecSucceeded(first), &mut fx);
        s.handle(Event::Exited(first, Exit::Code(0)), &mut fx);
        assert!(fx.watching, "below the cap again");
        s.handle(Event::Connection, &mut fx);
        assert_eq!(s.instances.len(), 2);
        let numbers: Vec<u32> = s.instances.values().map(|i| i.number).collect();
        assert_eq!(numbers, [2, 3]);
        assert!(fx.log.contains(&"exited with status 0".to_string()));
        assert_eq!(
            s.state,
            State::Listening,
            "instances never change the service's state"
        );
    }

    #[test]
    fn stopping_an_accept_service_waits_for_its_instances() {
        let mut fx = Fake::new();
        let mut s = service(ACCEPT);
        s.handle(Event::Start, &mut fx);
        fx.waiting = 2;
        s.handle(Event::Connection, &mut fx);
        let pids: Vec<Pid> = s.instances.keys().copied().collect();
        s.handle(Event::Stop, &mut fx);
        assert_eq!(
            fx.signals,
            pids.iter().map(|p| (p.as_raw(), 15)).collect::<Vec<_>>()
        );
        s.handle(Event::Exited(pids[0], Exit::Signal(Signal::TERM)), &mut fx);
        assert_eq!(s.state.name(), "stopping");
        s.handle(Event::Exited(pids[1], Exit::Signal(Signal::TERM)), &mut fx);
        assert_eq!(s.state, State::Inactive);
        assert_eq!(fx.timer, None);
    }

    #[test]
    fn accept_failure_backs_off_instead_of_spinning() {
        let mut fx = Fake::new();
        let mut s = service(ACCEPT);
        s.handle(Event::Start, &mut fx);
        fx.waiting = 1;
        fx.fail_spawn = true;
        s.handle(Event::Connection, &mut fx);
        assert!(!fx.watching);
        assert_eq!(fx.timer, Some(Duration::from_millis(100)));
        s.handle(Event::Timer, &mut fx);
        assert!(fx.watching);
        assert_eq!(s.state, State::Listening);
    }

    #[test]
    fn one_shot_success_ends_exited() {
        let mut fx = Fake::new();
        let mut s = service("");
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state.name(), "starting");
        exec_ok(&mut s, &mut fx);
        assert_eq!(s.state.name(), "running");
        exit(&mut s, &mut fx, Exit::Code(0));
        assert_eq!(s.state, State::Exited);
        assert_eq!(fx.log, ["started (pid 101)", "exited with status 0"]);
    }

    #[test]
    fn one_shot_failure_ends_failed() {
        let mut fx = Fake::new();
        let mut s = service("");
        s.handle(Event::Start, &mut fx);
        exit(&mut s, &mut fx, Exit::Signal(Signal(11)));
        assert_eq!(s.state, State::Failed);
        assert_eq!(fx.log[1..], ["killed by SIGSEGV", "failed"]);
        assert_eq!(s.last_failure.as_ref().unwrap().reason, "killed by SIGSEGV");
    }

    #[test]
    fn keep_alive_restarts_after_delay_with_new_pid() {
        let mut fx = Fake::new();
        let mut s = service("keep_alive = true\nrestart_delay = \"250ms\"\n");
        s.handle(Event::Start, &mut fx);
        let first = pid(&s);
        exit(&mut s, &mut fx, Exit::Code(0));
        assert_eq!(s.state, State::Restarting);
        assert_eq!(fx.timer, Some(Duration::from_millis(250)));
        s.handle(Event::Timer, &mut fx);
        assert_ne!(pid(&s), first);
        assert_eq!(s.restarts, 1);
    }

    #[test]
    fn start_limit_allows_burst_restarts_then_fails() {
        let mut fx = Fake::new();
        let mut s = service("keep_alive = true\nstart_limit_burst = 3\nrestart_delay = \"0\"\n");
        s.handle(Event::Start, &mut fx);
        for _ in 0..3 {
            exit(&mut s, &mut fx, Exit::Code(1));
            assert_eq!(s.state, State::Restarting);
            s.handle(Event::Timer, &mut fx);
        }
        exit(&mut s, &mut fx, Exit::Code(1));
        assert_eq!(s.state, State::Failed);
        assert_eq!(fx.spawns.get(), 4, "the first run plus 3 restarts");
        assert!(
            fx.log
                .last()
                .unwrap()
                .starts_with("start limit reached (3 restarts within 10s)")
        );
        // By hand it starts again, with fresh counters.
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state.name(), "starting");
        assert_eq!(s.restarts, 0);
    }

    #[test]
    fn start_limit_window_slides() {
        let mut fx = Fake::new();
        let mut s = service(
            "keep_alive = true\nstart_limit_burst = 2\nstart_limit_interval = \"1s\"\nrestart_delay = \"0\"\n",
        );
        s.handle(Event::Start, &mut fx);
        for _ in 0..6 {
            exit(&mut s, &mut fx, Exit::Code(1));
            assert_eq!(s.state, State::Restarting);
            s.handle(Event::Timer, &mut fx);
            fx.now += Duration::from_millis(600);
        }
    }

    #[test]
    fn exec_failure_is_reported_with_its_step() {
        let mut fx = Fake::new();
        let mut s = service("");
        s.handle(Event::Start, &mut fx);
        let report = StatusReport {
            step: Step::Exec,
            errno: 2,
        };
        let p = pid(&s);
        s.handle(Event::StepFailed(p, report), &mut fx);
        exit(&mut s, &mut fx, Exit::Code(203));
        assert_eq!(s.state, State::Failed);
        assert_eq!(
            fx.log[1..],
            [
                "failed at exec: /bin/x: No such file or directory",
                "exited with status 203",
                "failed"
            ]
        );
        let failure = s.last_failure.unwrap();
        assert_eq!(failure.step, Some(Step::Exec));
        assert_eq!(failure.exit, Some(Exit::Code(203)));
    }

    #[test]
    fn stop_sends_signal_then_kill_after_timeout() {
        let mut fx = Fake::new();
        let mut s = service("stop_signal = \"SIGUSR1\"\nstop_timeout = \"2s\"\n");
        s.handle(Event::Start, &mut fx);
        exec_ok(&mut s, &mut fx);
        let p = pid(&s).as_raw();
        s.handle(Event::Stop, &mut fx);
        assert_eq!(fx.signals, [(p, 10)]);
        assert_eq!(fx.timer, Some(Duration::from_secs(2)));
        s.handle(Event::Timer, &mut fx);
        assert_eq!(fx.signals, [(p, 10), (p, 9)]);
        exit(&mut s, &mut fx, Exit::Signal(Signal::KILL));
        assert_eq!(s.state, State::Inactive);
        assert_eq!(fx.timer, None);
    }

    #[test]
    fn stopping_a_keep_alive_service_does_not_restart_it() {
        let mut fx = Fake::new();
        let mut s = service("keep_alive = true\n");
        s.handle(Event::Start, &mut fx);
        s.handle(Event::Stop, &mut fx);
        exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
        assert_eq!(s.state, State::Inactive);
        assert_eq!(fx.spawns.get(), 1);
    }

    #[test]
    fn stop_while_restarting_cancels_the_restart() {
        let mut fx = Fake::new();
        let mut s = service("keep_alive = true\n");
        s.handle(Event::Start, &mut fx);
        exit(&mut s, &mut fx, Exit::Code(0));
        assert!(fx.timer.is_some());
        s.handle(Event::Stop, &mut fx);
        assert_eq!(s.state, State::Inactive);
        assert_eq!(fx.timer, None);
    }

    #[test]
    fn restart_by_hand_stops_then_starts() {
        let mut fx = Fake::new();
        let mut s = service("");
        s.handle(Event::Start, &mut fx);
        let first = pid(&s);
        s.handle(Event::Restart, &mut fx);
        assert_eq!(s.state.name(), "stopping");
        exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
        assert_eq!(s.state.name(), "starting");
        assert_ne!(pid(&s), first);
    }

    #[test]
    fn spawn_failure_counts_against_the_start_limit() {
        let mut fx = Fake::new();
        fx.fail_spawn = true;
        let mut s = service("keep_alive = true\nstart_limit_burst = 2\n");
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state, State::Restarting);
        s.handle(Event::Timer, &mut fx);
        s.handle(Event::Timer, &mut fx);
        assert_eq!(s.state, State::Failed);
        assert_eq!(fx.spawns.get(), 3);
    }
}
