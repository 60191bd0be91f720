//! The life of one service: its states, the events that move it, and what each move does.
//!
//! `Supervised::handle` is the whole supervision policy, one exhaustive match over
//! (state, event). It does no I/O itself: spawning, signalling, timers, the clock and logging
//! go through the narrow [`Effects`] trait, which the event loop implements with real syscalls
//! and the tests with a fake.

use std::collections::VecDeque;
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
    /// Asked to stop; waiting for the process to exit.
    Stopping {
        /// The process.
        pid: Pid,
        /// Whether SIGKILL was already sent.
        killed: bool,
        /// What to do once it exited.
        then: AfterStop,
    },
    /// Gave up: a one-shot that failed, or the start limit was reached.
    Failed,
}

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "read by `stewardctl status`, which comes with the control socket"
    )
)]
impl State {
    /// The state's name as the operator sees it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
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
            State::Starting { pid } | State::Running { pid, .. } | State::Stopping { pid, .. } => {
                Some(*pid)
            }
            State::Inactive | State::Exited | State::Restarting | State::Failed => None,
        }
    }

    /// No process, and nothing scheduled: a shutdown may finish.
    pub fn at_rest(&self) -> bool {
        match self {
            State::Inactive | State::Exited | State::Failed => true,
            State::Starting { .. }
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
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "sent by `stewardctl restart`, which comes with the control socket"
        )
    )]
    Restart,
    /// The executor exec'd the service (its status pipe closed without a report).
    ExecSucceeded,
    /// The executor reported a failed step.
    StepFailed(StatusReport),
    /// The process was reaped.
    Exited(Exit),
    /// The service's timer expired.
    Timer,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "killed by {signal}"),
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
    /// Spawns the service through the executor.
    fn spawn(&mut self, service: &config::Service) -> Result<Pid, String>;
    /// Sends a signal to the service's process group (or its process, before it has one).
    fn signal(&mut self, pid: Pid, signal: Signal);
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
    recent_restarts: VecDeque<Instant>,
    /// A failed step reported by the executor whose process has not been reaped yet.
    pending_report: Option<StatusReport>,
    /// How its last process ended.
    pub last_exit: Option<Exit>,
    /// Its last failure.
    pub last_failure: Option<Failure>,
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
        }
    }

    /// Moves the service on by one event. Every (state, event) pair is decided here.
    pub fn handle(&mut self, event: Event, fx: &mut impl Effects) {
        use State::*;
        let state = std::mem::replace(&mut self.state, Inactive);
        self.state = match (state, event) {
            // Starting by hand or at boot.
            (Inactive | Exited | Failed, Event::Start | Event::Restart) => {
                self.reset_counters();
                self.spawn(fx)
            }
            (Restarting, Event::Start | Event::Restart) => {
                fx.clear_timer();
                self.reset_counters();
                self.spawn(fx)
            }
            (s @ (Starting { .. } | Running { .. }), Event::Start) => s,
            (Starting { pid } | Running { pid, .. }, Event::Restart) => {
                self.reset_counters();
                self.stop(pid, AfterStop::Start, fx)
            }
            (Stopping { pid, killed, .. }, Event::Start | Event::Restart) => Stopping {
                pid,
                killed,
                then: AfterStop::Start,
            },

            // Stopping.
            (Starting { pid } | Running { pid, .. }, Event::Stop) => {
                self.stop(pid, AfterStop::Rest, fx)
            }
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

            // The executor's report.
            (Starting { pid }, Event::ExecSucceeded) => Running {
                pid,
                since: fx.now(),
            },
            (
                s @ (Inactive | Running { .. } | Exited | Restarting | Stopping { .. } | Failed),
                Event::ExecSucceeded,
            ) => s,
            (s @ (Starting { .. } | Stopping { .. }), Event::StepFailed(report)) => {
                fx.log(
                    &self.config.name,
                    format_args!("{}", self.describe_step_failure(report)),
                );
                self.pending_report = Some(report);
                s
            }
            (
                s @ (Inactive | Running { .. } | Exited | Restarting | Failed),
                Event::StepFailed(_),
            ) => s,

            // The process ended.
            (Starting { .. } | Running { .. }, Event::Exited(exit)) => self.after_exit(exit, fx),
            (Stopping { then, .. }, Event::Exited(exit)) => {
                fx.clear_timer();
                self.record_exit(exit);
                fx.log(&self.config.name, format_args!("{exit}"));
                fx.log(&self.config.name, format_args!("stopped"));
                match then {
                    AfterStop::Rest => Inactive,
                    AfterStop::Start => self.spawn(fx),
                }
            }
            (s @ (Inactive | Exited | Restarting | Failed), Event::Exited(_)) => s,

            // Timers.
            (Restarting, Event::Timer) => self.spawn(fx),
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
                fx.signal(pid, Signal::KILL);
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

    fn stop(&mut self, pid: Pid, then: AfterStop, fx: &mut impl Effects) -> State {
        let signal = self.config.stop_signal;
        fx.log(&self.config.name, format_args!("stopping ({signal})"));
        fx.signal(pid, signal);
        fx.set_timer(self.config.stop_timeout);
        State::Stopping {
            pid,
            killed: false,
            then,
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
            return if success {
                State::Exited
            } else {
                fx.log(&self.config.name, format_args!("failed"));
                State::Failed
            };
        }
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
            return State::Failed;
        }
        self.recent_restarts.push_back(now);
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
        fn signal(&mut self, pid: Pid, signal: Signal) {
            self.signals.push((pid.as_raw(), signal.0));
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
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        Supervised::new(loaded.config.unwrap().services.remove(0))
    }

    fn pid(s: &Supervised) -> Pid {
        s.state.pid().expect("a process")
    }

    #[test]
    fn one_shot_success_ends_exited() {
        let mut fx = Fake::new();
        let mut s = service("");
        s.handle(Event::Start, &mut fx);
        assert_eq!(s.state.name(), "starting");
        s.handle(Event::ExecSucceeded, &mut fx);
        assert_eq!(s.state.name(), "running");
        s.handle(Event::Exited(Exit::Code(0)), &mut fx);
        assert_eq!(s.state, State::Exited);
        assert_eq!(fx.log, ["started (pid 101)", "exited with status 0"]);
    }

    #[test]
    fn one_shot_failure_ends_failed() {
        let mut fx = Fake::new();
        let mut s = service("");
        s.handle(Event::Start, &mut fx);
        s.handle(Event::Exited(Exit::Signal(Signal(11))), &mut fx);
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
        s.handle(Event::Exited(Exit::Code(0)), &mut fx);
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
            s.handle(Event::Exited(Exit::Code(1)), &mut fx);
            assert_eq!(s.state, State::Restarting);
            s.handle(Event::Timer, &mut fx);
        }
        s.handle(Event::Exited(Exit::Code(1)), &mut fx);
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
            s.handle(Event::Exited(Exit::Code(1)), &mut fx);
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
        s.handle(Event::StepFailed(report), &mut fx);
        s.handle(Event::Exited(Exit::Code(203)), &mut fx);
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
        s.handle(Event::ExecSucceeded, &mut fx);
        let p = pid(&s).as_raw();
        s.handle(Event::Stop, &mut fx);
        assert_eq!(fx.signals, [(p, 10)]);
        assert_eq!(fx.timer, Some(Duration::from_secs(2)));
        s.handle(Event::Timer, &mut fx);
        assert_eq!(fx.signals, [(p, 10), (p, 9)]);
        s.handle(Event::Exited(Exit::Signal(Signal::KILL)), &mut fx);
        assert_eq!(s.state, State::Inactive);
        assert_eq!(fx.timer, None);
    }

    #[test]
    fn stopping_a_keep_alive_service_does_not_restart_it() {
        let mut fx = Fake::new();
        let mut s = service("keep_alive = true\n");
        s.handle(Event::Start, &mut fx);
        s.handle(Event::Stop, &mut fx);
        s.handle(Event::Exited(Exit::Signal(Signal::TERM)), &mut fx);
        assert_eq!(s.state, State::Inactive);
        assert_eq!(fx.spawns.get(), 1);
    }

    #[test]
    fn stop_while_restarting_cancels_the_restart() {
        let mut fx = Fake::new();
        let mut s = service("keep_alive = true\n");
        s.handle(Event::Start, &mut fx);
        s.handle(Event::Exited(Exit::Code(0)), &mut fx);
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
        s.handle(Event::Exited(Exit::Signal(Signal::TERM)), &mut fx);
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
