//! The state machine against fakes: time is a number the test moves, and every effect is
//! written down.

use std::fmt;
use std::time::{Duration, Instant};

use steward_protocol::{StatusReport, Step};

use super::effects::{Clock, Log, Signals, Spawn, Timers};
use super::*;
use crate::config;
use crate::sockets::Listener;
use crate::spawn::SpawnError;
use crate::supervisor::Readiness;

struct FakeClock(Instant);

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.0
    }
}

#[derive(Default)]
struct FakeSpawn {
    next_pid: i32,
    fail: bool,
    /// A user name that does not resolve at spawn.
    unknown_user: Option<&'static str>,
    spawns: u32,
    /// Connections waiting in the backlog of an accept-mode socket.
    waiting: u32,
    /// Socket sets a reload gave, by their count.
    replaced: Vec<usize>,
}

impl Spawn for FakeSpawn {
    fn spawn(&mut self, _: &config::Service) -> Result<Pid, SpawnError> {
        self.spawns += 1;
        if self.fail {
            return Err(SpawnError::Spawn(std::io::Error::from_raw_os_error(11)));
        }
        if let Some(name) = self.unknown_user {
            return Err(SpawnError::Credentials(
                crate::users::ResolveError::UnknownUser(name.into()),
            ));
        }
        self.next_pid += 1;
        Ok(Pid(100 + self.next_pid))
    }
    fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, SpawnError> {
        if self.waiting == 0 {
            return Ok(None);
        }
        self.waiting -= 1;
        self.spawn(service).map(Some)
    }
    fn replace_sockets(&mut self, sockets: Vec<Listener>, _: Vec<std::path::PathBuf>) {
        self.replaced.push(sockets.len());
    }
}

#[derive(Default)]
struct FakeSignals(Vec<(i32, i32)>);

impl Signals for FakeSignals {
    fn signal(&mut self, _: &str, pids: &[Pid], signal: config::Signal) {
        for pid in pids {
            self.0.push((pid.raw(), signal.0));
        }
    }
}

#[derive(Default)]
struct FakeTimers(std::collections::BTreeMap<Timer, Duration>);

impl Timers for FakeTimers {
    fn set(&mut self, timer: Timer, after: Duration) {
        self.0.insert(timer, after);
    }
    fn cancel(&mut self, timer: Timer) {
        self.0.remove(&timer);
    }
    fn extend(&mut self, timer: Timer, by: Duration) {
        if let Some(at) = self.0.get_mut(&timer) {
            *at = (*at).max(by);
        }
    }
}

#[derive(Default)]
struct FakeLog(Vec<String>);

impl Log for FakeLog {
    fn log(&mut self, _: &str, message: fmt::Arguments<'_>) {
        self.0.push(message.to_string());
    }
}

/// A world where every effect is written down.
struct Fake {
    clock: FakeClock,
    spawn: FakeSpawn,
    signals: FakeSignals,
    timers: FakeTimers,
    log: FakeLog,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            clock: FakeClock(Instant::now()),
            spawn: FakeSpawn::default(),
            signals: FakeSignals::default(),
            timers: FakeTimers::default(),
            log: FakeLog::default(),
        }
    }

    fn handle(&mut self, s: &mut Supervisor, event: Event) {
        let mut fx = Effects {
            clock: &self.clock,
            spawn: &mut self.spawn,
            signals: &mut self.signals,
            timers: &mut self.timers,
            log: &mut self.log,
        };
        s.handle(event, &mut fx);
    }

    fn timer(&self, timer: Timer) -> Option<Duration> {
        self.timers.0.get(&timer).copied()
    }
}

fn service(text: &str) -> Supervisor {
    let loaded = config::load_str(
        "t.toml",
        &format!("[service.s]\nexec = [\"/bin/x\"]\n{text}"),
    );
    let config = loaded
        .config
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    Supervisor::new(config.services.into_iter().next().unwrap())
}

fn pid(s: &Supervisor) -> Pid {
    s.state.pid().expect("a process")
}

/// The main process exits.
fn exit(s: &mut Supervisor, fx: &mut Fake, exit: Exit) {
    let p = pid(s);
    fx.handle(s, Event::Process(p, ProcessEvent::Exited(exit)));
}

fn exec_ok(s: &mut Supervisor, fx: &mut Fake) {
    let p = pid(s);
    fx.handle(s, Event::Process(p, ProcessEvent::Execd));
}

/// A second service, for the first to depend on.
const DB: &str = "[service.db]\nexec = [\"/bin/db\"]\n";

const LAZY: &str = "lazy = true\n[[service.s.socket]]\npath = \"/run/s\"\n";

#[test]
fn lazy_service_waits_for_a_connection() {
    let mut fx = Fake::new();
    let mut s = service(&format!("keep_alive = true\n{LAZY}"));
    fx.handle(&mut s, Event::Start);
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
    assert!(s.wants_connections());
    assert_eq!(fx.spawn.spawns, 0);
    fx.handle(&mut s, Event::Connection);
    assert_eq!(s.state.name(), "starting");
    assert!(
        !s.wants_connections(),
        "while it runs the service accepts, not us"
    );
    exit(&mut s, &mut fx, Exit::Code(0));
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        },
        "re-armed at once, no restart delay"
    );
    assert!(s.wants_connections());
    assert_eq!(fx.timers.0.len(), 0);
    assert_eq!(s.restarts, 1);
}

#[test]
fn lazy_service_only_counts_failures_against_the_start_limit() {
    let mut fx = Fake::new();
    let mut s = service(&format!("keep_alive = true\nstart_limit_burst = 2\n{LAZY}"));
    fx.handle(&mut s, Event::Start);
    for _ in 0..10 {
        fx.handle(&mut s, Event::Connection);
        exit(&mut s, &mut fx, Exit::Code(0));
    }
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
    for _ in 0..2 {
        fx.handle(&mut s, Event::Connection);
        exit(&mut s, &mut fx, Exit::Signal(Signal(6)));
        assert_eq!(
            s.state,
            State::Listening {
                intake: Intake::Open
            }
        );
    }
    fx.handle(&mut s, Event::Connection);
    exit(&mut s, &mut fx, Exit::Signal(Signal(6)));
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    assert!(
        !s.wants_connections(),
        "a failed service's clients wait in the backlog"
    );
}

#[test]
fn lazy_service_without_keep_alive_is_not_rearmed() {
    let mut fx = Fake::new();
    let mut s = service(LAZY);
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Connection);
    exit(&mut s, &mut fx, Exit::Code(0));
    assert_eq!(s.state, State::Exited);
    assert!(!s.wants_connections());
    fx.handle(&mut s, Event::Start);
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
    assert!(s.wants_connections());
}

#[test]
fn stopping_a_listening_service_disarms_its_sockets() {
    let mut fx = Fake::new();
    let mut s = service(&format!("keep_alive = true\n{LAZY}"));
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Stop);
    assert_eq!(s.state, State::Inactive);
    assert!(!s.wants_connections());
}

const ACCEPT: &str =
    "accept = true\nmax_connections = 2\n[[service.s.socket]]\npath = \"/run/s\"\n";

#[test]
fn accept_mode_caps_running_instances() {
    let mut fx = Fake::new();
    let mut s = service(ACCEPT);
    fx.handle(&mut s, Event::Start);
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
    fx.spawn.waiting = 3;
    fx.handle(&mut s, Event::Connection);
    assert_eq!(s.instances.len(), 2);
    assert!(
        !s.wants_connections(),
        "at the cap, the third client waits in the backlog"
    );
    assert_eq!(fx.spawn.waiting, 1);
    let first = s.instances.pids().next().unwrap();
    fx.handle(&mut s, Event::Process(first, ProcessEvent::Execd));
    fx.handle(
        &mut s,
        Event::Process(first, ProcessEvent::Exited(Exit::Code(0))),
    );
    assert!(s.wants_connections(), "below the cap again");
    fx.handle(&mut s, Event::Connection);
    assert_eq!(s.instances.len(), 2);
    let numbers: Vec<u32> = s.instances.iter().map(|(_, i)| i.number).collect();
    assert_eq!(numbers, [2, 3]);
    assert_eq!(s.instances_started(), Some(3));
    // By default only a failing instance is told, with the pid no start line gave.
    assert!(
        !fx.log
            .0
            .iter()
            .any(|l| l.starts_with("started") || l.starts_with("exited")),
        "{:?}",
        fx.log.0
    );
    let second = s.instances.pids().next().unwrap();
    fx.handle(&mut s, Event::Process(second, ProcessEvent::Execd));
    fx.handle(
        &mut s,
        Event::Process(second, ProcessEvent::Exited(Exit::Code(1))),
    );
    assert_eq!(
        fx.log.0.last().unwrap(),
        &format!("exited with status 1 (pid {second})")
    );
    fx.handle(&mut s, Event::Connection);
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        },
        "instances never change the service's state"
    );
}

#[test]
fn stopping_an_accept_service_waits_for_its_instances() {
    let mut fx = Fake::new();
    let mut s = service(ACCEPT);
    fx.handle(&mut s, Event::Start);
    fx.spawn.waiting = 2;
    fx.handle(&mut s, Event::Connection);
    let pids: Vec<Pid> = s.instances.pids().collect();
    fx.handle(&mut s, Event::Stop);
    assert_eq!(
        fx.signals.0,
        pids.iter().map(|p| (p.raw(), 15)).collect::<Vec<_>>()
    );
    fx.handle(
        &mut s,
        Event::Process(pids[0], ProcessEvent::Exited(Exit::Signal(Signal::TERM))),
    );
    assert_eq!(s.state.name(), "stopping");
    fx.handle(
        &mut s,
        Event::Process(pids[1], ProcessEvent::Exited(Exit::Signal(Signal::TERM))),
    );
    assert_eq!(s.state, State::Inactive);
    assert_eq!(fx.timers.0.len(), 0);
}

#[test]
fn accept_failure_backs_off_instead_of_spinning() {
    let mut fx = Fake::new();
    let mut s = service(ACCEPT);
    fx.handle(&mut s, Event::Start);
    fx.spawn.waiting = 1;
    fx.spawn.fail = true;
    fx.handle(&mut s, Event::Connection);
    assert!(!s.wants_connections());
    assert_eq!(fx.timer(Timer::Backoff), Some(Duration::from_millis(100)));
    fx.handle(&mut s, Event::Timer(Timer::Backoff));
    assert!(s.wants_connections());
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
}

#[test]
fn one_shot_success_ends_exited() {
    let mut fx = Fake::new();
    let mut s = service("");
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state.name(), "starting");
    exec_ok(&mut s, &mut fx);
    assert_eq!(s.state.name(), "running");
    exit(&mut s, &mut fx, Exit::Code(0));
    assert_eq!(s.state, State::Exited);
    assert_eq!(fx.log.0, ["started (pid 101)", "exited with status 0"]);
}

#[test]
fn one_shot_failure_ends_failed() {
    let mut fx = Fake::new();
    let mut s = service("");
    fx.handle(&mut s, Event::Start);
    exit(&mut s, &mut fx, Exit::Signal(Signal(11)));
    assert_eq!(s.state, State::Failed(Cause::Own));
    assert_eq!(fx.log.0[1..], ["killed by SIGSEGV", "failed"]);
    assert_eq!(s.last_failure.as_ref().unwrap().reason, "killed by SIGSEGV");
}

#[test]
fn keep_alive_restarts_after_delay_with_new_pid() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\nrestart_delay = \"250ms\"\n");
    fx.handle(&mut s, Event::Start);
    let first = pid(&s);
    exit(&mut s, &mut fx, Exit::Code(0));
    assert_eq!(s.state, State::Restarting);
    assert_eq!(
        fx.timer(Timer::RestartDelay),
        Some(Duration::from_millis(250))
    );
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    assert_ne!(pid(&s), first);
    assert_eq!(s.restarts, 1);
}

#[test]
fn a_keep_alive_service_wants_an_idle_executor_once_it_has_restarted() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    assert_eq!(
        s.wants_pool(),
        0,
        "a service that never exits costs no idle process"
    );
    exit(&mut s, &mut fx, Exit::Code(0));
    assert_eq!(s.state, State::Restarting);
    assert_eq!(s.wants_pool(), 1, "for the restart to come");
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    assert_eq!(s.wants_pool(), 1, "for the next one");
    fx.handle(&mut s, Event::Stop);
    assert_eq!(s.wants_pool(), 0, "stopping: no restart to come");
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state.name(), "starting");
    assert_eq!(
        s.wants_pool(),
        0,
        "started by hand: it has not restarted since"
    );
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(s.wants_pool(), 1);
}

#[test]
fn a_restart_by_hand_counts_for_the_pool_and_keeps_it_through_the_stop() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.wants_pool(), 0);
    fx.handle(&mut s, Event::Restart);
    assert_eq!(s.state.name(), "stopping");
    assert_eq!(s.wants_pool(), 1, "armed while the old process stops");
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state.name(), "starting");
    assert_eq!(s.wants_pool(), 1, "for the next restart");
    assert_eq!(s.restarts, 0, "not an automatic restart");
    fx.handle(&mut s, Event::Stop);
    assert_eq!(s.wants_pool(), 0, "stopping: no restart to come");
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    fx.handle(&mut s, Event::Start);
    assert_eq!(
        s.wants_pool(),
        0,
        "started by hand: it has not restarted since"
    );
}

#[test]
fn start_limit_allows_burst_restarts_then_fails() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\nstart_limit_burst = 3\nrestart_delay = \"0\"\n");
    fx.handle(&mut s, Event::Start);
    for _ in 0..3 {
        exit(&mut s, &mut fx, Exit::Code(1));
        assert_eq!(s.state, State::Restarting);
        fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    }
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    assert_eq!(fx.spawn.spawns, 4, "the first run plus 3 restarts");
    let log = &fx.log.0[fx.log.0.len() - 2..];
    assert!(log[0].starts_with("start limit reached (3 restarts within 10s)"));
    assert_eq!(log[1], "trying again in 5m (start_limit_cooldown)");
    // By hand it starts again, with fresh counters.
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state.name(), "starting");
    assert_eq!(s.restarts, 0);
}

#[test]
fn a_service_failed_at_its_start_limit_tries_again_after_the_cooldown() {
    let mut fx = Fake::new();
    let mut s = service(
        "keep_alive = true\nstart_limit_burst = 1\nrestart_delay = \"0\"\nstart_limit_cooldown = \"2s\"\n",
    );
    fx.handle(&mut s, Event::Start);
    exit(&mut s, &mut fx, Exit::Code(1));
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    assert_eq!(fx.timer(Timer::Cooldown), Some(Duration::from_secs(2)));
    fx.timers.0.remove(&Timer::Cooldown);
    fx.handle(&mut s, Event::Timer(Timer::Cooldown));
    assert_eq!(s.state.name(), "starting");
    assert_eq!(s.restarts, 0, "fresh counters");
    assert_eq!(fx.spawn.spawns, 3);
    // The counters are fresh: a full burst again before the next cooldown.
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(s.state, State::Restarting);
}

#[test]
fn a_lazy_service_failed_at_its_start_limit_listens_again_after_the_cooldown() {
    let mut fx = Fake::new();
    let mut s = service(&format!(
        "keep_alive = true\nstart_limit_burst = 1\nstart_limit_cooldown = \"2s\"\n{LAZY}"
    ));
    fx.handle(&mut s, Event::Start);
    for _ in 0..2 {
        fx.handle(&mut s, Event::Connection);
        exit(&mut s, &mut fx, Exit::Code(1));
    }
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    assert!(!s.wants_connections());
    fx.timers.0.remove(&Timer::Cooldown);
    fx.handle(&mut s, Event::Timer(Timer::Cooldown));
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
    assert!(s.wants_connections(), "its sockets are watched again");
}

#[test]
fn without_a_cooldown_the_start_limit_is_for_good_and_a_start_cancels_the_cooldown() {
    let mut fx = Fake::new();
    let mut s = service(
        "keep_alive = true\nstart_limit_burst = 1\nrestart_delay = \"0\"\nstart_limit_cooldown = \"none\"\n",
    );
    fx.handle(&mut s, Event::Start);
    exit(&mut s, &mut fx, Exit::Code(1));
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    assert_eq!(fx.timer(Timer::Cooldown), None);

    let mut s = service("keep_alive = true\nstart_limit_burst = 1\nrestart_delay = \"0\"\n");
    fx.handle(&mut s, Event::Start);
    exit(&mut s, &mut fx, Exit::Code(1));
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(
        fx.timer(Timer::Cooldown),
        Some(Duration::from_secs(300)),
        "five minutes by default"
    );
    fx.handle(&mut s, Event::Start);
    assert_eq!(fx.timer(Timer::Cooldown), None);
    assert_eq!(s.state.name(), "starting");
}

#[test]
fn start_limit_window_slides() {
    let mut fx = Fake::new();
    let mut s = service(
        "keep_alive = true\nstart_limit_burst = 2\nstart_limit_interval = \"1s\"\nrestart_delay = \"0\"\n",
    );
    fx.handle(&mut s, Event::Start);
    for _ in 0..6 {
        exit(&mut s, &mut fx, Exit::Code(1));
        assert_eq!(s.state, State::Restarting);
        fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
        fx.clock.0 += Duration::from_millis(600);
    }
}

#[test]
fn a_wide_start_limit_window_counts_only_the_restarts_inside_it() {
    let mut fx = Fake::new();
    let mut s = service(
        "keep_alive = true\nstart_limit_burst = 100\nstart_limit_interval = \"1s\"\nrestart_delay = \"0\"\n",
    );
    fx.handle(&mut s, Event::Start);
    // 67 restarts a second: under the limit for as long as it goes on, and the restarts out
    // of the window do not pile up.
    for _ in 0..500 {
        exit(&mut s, &mut fx, Exit::Code(1));
        assert_eq!(s.state, State::Restarting);
        fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
        fx.clock.0 += Duration::from_millis(15);
        assert!(
            s.recent_restarts.len() <= 2 * 67 + 1,
            "{}",
            s.recent_restarts.len()
        );
    }
    // 200 a second: the 101st inside one second is over it.
    let mut restarts = 0;
    while s.state != State::Failed(Cause::StartLimit) {
        exit(&mut s, &mut fx, Exit::Code(1));
        if s.state == State::Restarting {
            restarts += 1;
            fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
        }
        fx.clock.0 += Duration::from_millis(5);
        assert!(restarts <= 100, "never failed");
    }
    assert!(
        restarts > 30,
        "failed after {restarts}, with the older ones still in the window"
    );
}

#[test]
fn exec_failure_is_reported_with_its_step() {
    let mut fx = Fake::new();
    let mut s = service("");
    fx.handle(&mut s, Event::Start);
    let report = StatusReport {
        step: Step::Exec,
        errno: 2,
    };
    let p = pid(&s);
    fx.handle(&mut s, Event::Process(p, ProcessEvent::StepFailed(report)));
    exit(&mut s, &mut fx, Exit::Code(203));
    assert_eq!(s.state, State::Failed(Cause::Own));
    assert_eq!(
        fx.log.0[1..],
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
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    let p = pid(&s).raw();
    fx.handle(&mut s, Event::Stop);
    assert_eq!(fx.signals.0, [(p, 10)]);
    assert_eq!(fx.timer(Timer::StopTimeout), Some(Duration::from_secs(2)));
    fx.handle(&mut s, Event::Timer(Timer::StopTimeout));
    assert_eq!(fx.signals.0, [(p, 10), (p, 9)]);
    exit(&mut s, &mut fx, Exit::Signal(Signal::KILL));
    assert_eq!(s.state, State::Inactive);
    assert_eq!(fx.timers.0.len(), 0);
}

#[test]
fn stopping_a_keep_alive_service_does_not_restart_it() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Stop);
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state, State::Inactive);
    assert_eq!(fx.spawn.spawns, 1);
}

#[test]
fn stop_while_restarting_cancels_the_restart() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    exit(&mut s, &mut fx, Exit::Code(0));
    assert!(fx.timer(Timer::RestartDelay).is_some());
    fx.handle(&mut s, Event::Stop);
    assert_eq!(s.state, State::Inactive);
    assert_eq!(fx.timers.0.len(), 0);
}

#[test]
fn restart_by_hand_stops_then_starts() {
    let mut fx = Fake::new();
    let mut s = service("");
    fx.handle(&mut s, Event::Start);
    let first = pid(&s);
    fx.handle(&mut s, Event::Restart);
    assert_eq!(s.state.name(), "stopping");
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state.name(), "starting");
    assert_ne!(pid(&s), first);
}

#[test]
fn spawn_failure_counts_against_the_start_limit() {
    let mut fx = Fake::new();
    fx.spawn.fail = true;
    let mut s = service("keep_alive = true\nstart_limit_burst = 2\n");
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state, State::Restarting);
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    assert_eq!(fx.spawn.spawns, 3);
}

#[test]
fn an_unknown_user_at_spawn_fails_at_step_user_and_counts_against_the_start_limit() {
    let mut fx = Fake::new();
    fx.spawn.unknown_user = Some("late");
    let mut s = service("keep_alive = true\nstart_limit_burst = 1\n");
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state, State::Restarting);
    let failure = s.last_failure.clone().unwrap();
    assert_eq!(failure.step, Some(Step::User));
    assert_eq!(failure.reason, "unknown user \"late\"");
    assert_eq!(fx.log.0[0], "failed at user: unknown user \"late\"");
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    assert_eq!(s.state, State::Failed(Cause::StartLimit));
    // Created meanwhile: a start by hand spawns it.
    fx.spawn.unknown_user = None;
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state.name(), "starting");
}

#[test]
fn an_accept_instance_whose_user_is_unknown_waits_in_the_backlog() {
    let mut fx = Fake::new();
    let mut s = service(ACCEPT);
    fx.handle(&mut s, Event::Start);
    fx.spawn.waiting = 1;
    fx.spawn.unknown_user = Some("late");
    fx.handle(&mut s, Event::Connection);
    assert_eq!(fx.timer(Timer::Backoff), Some(Duration::from_millis(100)));
    assert!(
        fx.log
            .0
            .iter()
            .any(|l| l
                .starts_with("cannot start an instance: failed at user: unknown user \"late\"")),
        "{:?}",
        fx.log.0
    );
    assert_eq!(s.last_failure.as_ref().unwrap().step, Some(Step::User));
    // The user appears: the next try serves the client.
    fx.spawn.unknown_user = None;
    fx.spawn.waiting = 1;
    fx.handle(&mut s, Event::Timer(Timer::Backoff));
    fx.handle(&mut s, Event::Connection);
    assert_eq!(s.instances.len(), 1);
}

#[test]
fn a_report_about_a_process_that_is_gone_changes_nothing() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\nrestart_delay = \"0\"\n");
    fx.handle(&mut s, Event::Start);
    let first = pid(&s);
    exit(&mut s, &mut fx, Exit::Code(1));
    fx.handle(&mut s, Event::Timer(Timer::RestartDelay));
    let second = pid(&s);
    // The first process's late status pipe and exit, and a timer of another state.
    fx.handle(&mut s, Event::Process(first, ProcessEvent::Execd));
    fx.handle(
        &mut s,
        Event::Process(first, ProcessEvent::Exited(Exit::Code(0))),
    );
    fx.handle(&mut s, Event::Timer(Timer::StopTimeout));
    assert_eq!(
        s.state,
        State::Starting {
            main: Process::spawned(second)
        }
    );
    assert_eq!(s.restarts, 1);
}

#[test]
fn timers_of_different_purposes_are_armed_and_cancelled_apart() {
    let mut fx = Fake::new();
    let mut s = service(ACCEPT);
    fx.handle(&mut s, Event::Start);
    fx.spawn.waiting = 1;
    fx.spawn.fail = true;
    fx.handle(&mut s, Event::Connection);
    assert!(fx.timer(Timer::Backoff).is_some());
    // Stopping a backing-off service: its back-off goes, it has nothing to wait for.
    fx.handle(&mut s, Event::Stop);
    assert_eq!(s.state, State::Inactive);
    assert_eq!(fx.timers.0.len(), 0);

    let mut s = service("keep_alive = true\nrestart_delay = \"1s\"\nstop_timeout = \"3s\"\n");
    fx.spawn.fail = false;
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Stop);
    assert_eq!(fx.timer(Timer::StopTimeout), Some(Duration::from_secs(3)));
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(fx.timer(Timer::StopTimeout), None, "cancelled once stopped");
}

#[test]
fn a_reload_change_waits_for_the_stop_then_starts_the_new_config() {
    let mut fx = Fake::new();
    let mut s = service("");
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    let mut new = s.config.clone();
    new.exec = ["/bin/y"].into_iter().collect();
    let replacement = Replacement {
        config: new.clone(),
        sockets: Vec::new(),
        stale: Vec::new(),
        then: Resume::Start,
    };
    fx.handle(&mut s, Event::Reconfigure(Box::new(replacement)));
    assert!(s.settling_from_reload());
    assert!(fx.spawn.replaced.is_empty(), "not before it stopped");
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(fx.spawn.replaced, [0]);
    assert_eq!(s.config.exec, ["/bin/y"]);
    assert_eq!(s.state.name(), "starting");

    // At rest, and not to be started: the change is made and nothing runs.
    let mut s = service("");
    let replacement = Replacement {
        config: new,
        sockets: Vec::new(),
        stale: Vec::new(),
        then: Resume::Rest,
    };
    fx.handle(&mut s, Event::Reconfigure(Box::new(replacement)));
    assert_eq!(s.state, State::Inactive);
    assert_eq!(s.config.exec, ["/bin/y"]);
}

#[test]
fn a_removed_service_stops_then_retires_and_a_start_cannot_keep_it() {
    let mut fx = Fake::new();
    let mut s = service("keep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Retire);
    fx.handle(&mut s, Event::Start);
    assert!(s.settling_from_reload());
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state, State::Retired);
    assert!(s.state.at_rest());
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state, State::Retired);
}

#[test]
fn an_instance_step_failure_is_logged_with_its_name() {
    let mut fx = Fake::new();
    let mut s = service(ACCEPT);
    fx.handle(&mut s, Event::Start);
    fx.spawn.waiting = 1;
    fx.handle(&mut s, Event::Connection);
    let p = s.instances.pids().next().unwrap();
    let report = StatusReport {
        step: Step::Exec,
        errno: 13,
    };
    fx.handle(&mut s, Event::Process(p, ProcessEvent::StepFailed(report)));
    fx.handle(&mut s, Event::Process(p, ProcessEvent::StepFailed(report)));
    assert_eq!(
        fx.log
            .0
            .iter()
            .filter(|l| l.starts_with("failed at exec"))
            .count(),
        1,
        "{:?}",
        fx.log.0
    );
    fx.handle(
        &mut s,
        Event::Process(p, ProcessEvent::Exited(Exit::Code(203))),
    );
    assert!(s.instances.is_empty());
    assert_eq!(
        s.state,
        State::Listening {
            intake: Intake::Open
        }
    );
}

#[test]
fn a_notify_service_is_starting_until_it_says_ready() {
    let mut fx = Fake::new();
    let mut s = service("ready = \"notify\"\nstart_timeout = \"30s\"\n");
    fx.handle(&mut s, Event::Start);
    assert_eq!(fx.timer(Timer::StartTimeout), Some(Duration::from_secs(30)));
    exec_ok(&mut s, &mut fx);
    assert_eq!(s.state.name(), "starting", "exec'd is not ready");
    let p = pid(&s);
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Reloading));
    assert_eq!(s.state.name(), "starting");
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Ready));
    assert_eq!(s.state.name(), "running");
    assert_eq!(fx.timer(Timer::StartTimeout), None);
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Reloading));
    assert_eq!(s.state.name(), "reloading");
    assert_eq!(s.state.readiness(), Readiness::Up);
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Ready));
    assert_eq!(s.state.name(), "running");
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Stopping));
    assert_eq!(s.state.name(), "stopping");
}

#[test]
fn ready_before_the_exec_report_still_counts() {
    // The datagram may be read before the status pipe's end of file.
    let mut fx = Fake::new();
    let mut s = service("ready = \"notify\"\n");
    fx.handle(&mut s, Event::Start);
    let p = pid(&s);
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Ready));
    assert_eq!(s.state.name(), "running");
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Execd));
    assert_eq!(s.state.name(), "running");
}

#[test]
fn an_exec_service_ignores_ready() {
    let mut fx = Fake::new();
    let mut s = service("");
    fx.handle(&mut s, Event::Start);
    let p = pid(&s);
    fx.handle(&mut s, Event::Process(p, ProcessEvent::Ready));
    assert_eq!(s.state.name(), "starting");
    exec_ok(&mut s, &mut fx);
    assert_eq!(s.state.name(), "running");
}

#[test]
fn a_start_timeout_stops_it_and_fails_or_restarts_it() {
    let mut fx = Fake::new();
    let mut s = service("ready = \"notify\"\nstart_timeout = \"1s\"\n");
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    let p = pid(&s).raw();
    fx.handle(&mut s, Event::Timer(Timer::StartTimeout));
    assert_eq!(s.state.name(), "stopping");
    assert_eq!(fx.signals.0, [(p, 15)]);
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state, State::Failed(Cause::Own));
    assert_eq!(
        s.last_failure.as_ref().unwrap().reason,
        "not ready within 1s (start_timeout)"
    );

    let mut s = service("ready = \"notify\"\nstart_timeout = \"1s\"\nkeep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Timer(Timer::StartTimeout));
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(
        s.state,
        State::Restarting,
        "a failed start under the start limit"
    );
    assert_eq!(s.restarts, 1);
}

#[test]
fn extending_the_timeout_moves_it_later_only() {
    let mut fx = Fake::new();
    let mut s = service("ready = \"notify\"\nstart_timeout = \"10s\"\n");
    fx.handle(&mut s, Event::Start);
    let p = pid(&s);
    fx.handle(
        &mut s,
        Event::Process(p, ProcessEvent::ExtendTimeout(Duration::from_secs(60))),
    );
    assert_eq!(fx.timer(Timer::StartTimeout), Some(Duration::from_secs(60)));
    fx.handle(
        &mut s,
        Event::Process(p, ProcessEvent::ExtendTimeout(Duration::from_secs(5))),
    );
    assert_eq!(fx.timer(Timer::StartTimeout), Some(Duration::from_secs(60)));
}

#[test]
fn a_setup_task_is_ready_when_it_exits_0() {
    let mut fx = Fake::new();
    let mut s = service("ready = \"exit\"\n");
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    assert_eq!(s.state.readiness(), Readiness::Pending);
    exit(&mut s, &mut fx, Exit::Code(0));
    assert_eq!(s.state, State::Exited);
    assert_eq!(s.state.readiness(), Readiness::Up);
    assert_eq!(fx.timers.0.len(), 0);

    let mut s = service("ready = \"exit\"\n");
    fx.handle(&mut s, Event::Start);
    exit(&mut s, &mut fx, Exit::Code(1));
    assert_eq!(s.state, State::Failed(Cause::Own));
}

#[test]
fn a_new_main_pid_is_the_one_supervised() {
    let mut fx = Fake::new();
    let mut s = service("ready = \"notify\"\nkeep_alive = true\n");
    fx.handle(&mut s, Event::Start);
    let first = pid(&s);
    let daemon = Pid(999);
    fx.handle(&mut s, Event::Process(first, ProcessEvent::MainPid(daemon)));
    fx.handle(&mut s, Event::Process(daemon, ProcessEvent::Ready));
    assert_eq!(s.state.pid(), Some(daemon));
    assert_eq!(s.state.name(), "running");
    // The first process exiting (as a forking daemon's parent does) changes nothing.
    fx.handle(
        &mut s,
        Event::Process(first, ProcessEvent::Exited(Exit::Code(0))),
    );
    assert_eq!(s.state.name(), "running");
    fx.handle(
        &mut s,
        Event::Process(daemon, ProcessEvent::Exited(Exit::Code(1))),
    );
    assert_eq!(s.state, State::Restarting);
}

#[test]
fn a_service_with_dependencies_waits_then_proceeds() {
    let mut fx = Fake::new();
    let mut s = service(&format!("after = [\"db\"]\n{DB}"));
    fx.handle(&mut s, Event::Start);
    assert_eq!(s.state, State::Waiting);
    assert_eq!(s.state.name(), "starting");
    assert_eq!(s.state.pid(), None);
    assert_eq!(fx.spawn.spawns, 0);
    fx.handle(&mut s, Event::Proceed);
    assert_eq!(fx.spawn.spawns, 1);
    // A stop while waiting: nothing to signal.
    let mut s = service(&format!("after = [\"db\"]\n{DB}"));
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Stop);
    assert_eq!(s.state, State::Inactive);
}

#[test]
fn a_failed_dependency_fails_its_dependents_and_a_start_brings_them_back() {
    let mut fx = Fake::new();
    let mut s = service(&format!("requires = [\"db\"]\nkeep_alive = true\n{DB}"));
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::DependencyFailed("db".into()));
    assert_eq!(s.state, State::Failed(Cause::Dependency("db".into())));
    assert_eq!(
        s.last_failure.as_ref().unwrap().reason,
        "dependency db failed"
    );
    // Running when it fails: stopped first, then failed (not restarted, though keep_alive).
    fx.handle(&mut s, Event::Start);
    fx.handle(&mut s, Event::Proceed);
    exec_ok(&mut s, &mut fx);
    fx.handle(&mut s, Event::DependencyFailed("db".into()));
    assert_eq!(s.state.name(), "stopping");
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state, State::Failed(Cause::Dependency("db".into())));
    assert_eq!(
        s.last_failure.as_ref().unwrap().reason,
        "dependency db failed",
        "the reason it stopped, not how"
    );
}

/// The main process says something on the notify socket.
fn says(s: &mut Supervisor, fx: &mut Fake, what: ProcessEvent) {
    let p = pid(s);
    fx.handle(s, Event::Process(p, what));
}

#[test]
fn a_watchdog_is_enforced_from_readiness_and_pings_cost_no_timer() {
    let mut fx = Fake::new();
    let mut s = service(
        "keep_alive = true\nwatchdog = \"2s\"\nready = \"notify\"\nrestart_delay = \"0\"\n",
    );
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    // Not ready yet: start_timeout watches it, not the watchdog.
    says(&mut s, &mut fx, ProcessEvent::WatchdogPing);
    assert_eq!(fx.timer(Timer::Watchdog), None);
    says(&mut s, &mut fx, ProcessEvent::Ready);
    assert_eq!(fx.timer(Timer::Watchdog), Some(Duration::from_secs(2)));
    // Pings move nothing but the record of the last one.
    fx.timers.0.remove(&Timer::Watchdog);
    fx.clock.0 += Duration::from_millis(1500);
    says(&mut s, &mut fx, ProcessEvent::WatchdogPing);
    assert_eq!(fx.timer(Timer::Watchdog), None);
    // The timer fires at 2 s: the ping at 1.5 s makes it early, set again for the rest.
    fx.clock.0 += Duration::from_millis(500);
    fx.handle(&mut s, Event::Timer(Timer::Watchdog));
    assert_eq!(fx.timer(Timer::Watchdog), Some(Duration::from_millis(1500)));
    assert_eq!(s.state.name(), "running");
    // No ping since: at 3.5 s it is a timeout.
    let main = pid(&s);
    fx.clock.0 += Duration::from_millis(1500);
    fx.handle(&mut s, Event::Timer(Timer::Watchdog));
    assert_eq!(s.state.name(), "stopping");
    assert_eq!(fx.signals.0.last(), Some(&(main.raw(), 6)), "SIGABRT");
    assert_eq!(s.last_failure().unwrap().reason, "watchdog timeout");
    assert!(
        fx.log
            .0
            .iter()
            .any(|l| l.starts_with("watchdog timeout (no WATCHDOG=1 for 2s)"))
    );
    // Handled as a crash: restarted, and the failure stays.
    exit(&mut s, &mut fx, Exit::Signal(Signal(6)));
    assert_eq!(s.state, State::Restarting);
    assert_eq!(s.last_failure().unwrap().reason, "watchdog timeout");
    assert_eq!(fx.timer(Timer::Watchdog), None);
}

#[test]
fn watchdog_trigger_and_a_new_interval() {
    let mut fx = Fake::new();
    let mut s = service("watchdog = \"10s\"\nwatchdog_signal = \"SIGTERM\"\n");
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    assert_eq!(fx.timer(Timer::Watchdog), Some(Duration::from_secs(10)));
    says(
        &mut s,
        &mut fx,
        ProcessEvent::WatchdogInterval(Duration::from_secs(3)),
    );
    assert_eq!(fx.timer(Timer::Watchdog), Some(Duration::from_secs(3)));
    // Zero turns it off for this run.
    says(
        &mut s,
        &mut fx,
        ProcessEvent::WatchdogInterval(Duration::ZERO),
    );
    assert_eq!(fx.timer(Timer::Watchdog), None);
    says(&mut s, &mut fx, ProcessEvent::WatchdogTrigger);
    assert_eq!(s.state.name(), "running", "no watchdog, nothing to trigger");
    says(
        &mut s,
        &mut fx,
        ProcessEvent::WatchdogInterval(Duration::from_secs(3)),
    );
    let main = pid(&s);
    says(&mut s, &mut fx, ProcessEvent::WatchdogTrigger);
    assert_eq!(s.state.name(), "stopping");
    assert_eq!(fx.signals.0.last(), Some(&(main.raw(), 15)));
    // Not kept alive: a crash ends failed.
    exit(&mut s, &mut fx, Exit::Signal(Signal::TERM));
    assert_eq!(s.state, State::Failed(Cause::Own));
    // The next run has the configured interval again.
    fx.handle(&mut s, Event::Start);
    exec_ok(&mut s, &mut fx);
    assert_eq!(fx.timer(Timer::Watchdog), Some(Duration::from_secs(10)));
    // Stopped: no longer watched.
    fx.handle(&mut s, Event::Stop);
    assert_eq!(fx.timer(Timer::Watchdog), None);
}
