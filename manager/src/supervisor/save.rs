//! A supervisor across a `reexec`: what it writes into the manager state, and how the next
//! manager rebuilds it. Instants cross as ages (CLOCK_MONOTONIC is shared across the exec, but
//! `Instant` is opaque).

use std::time::{Duration, Instant};

use steward_protocol::reexec as saved;
use steward_protocol::{StatusReport, Step};

use super::{
    AfterStop, Cause, Exec, Exit, Failure, Instance, Instances, Intake, Pid, Process, Resume,
    Serving, State, Supervisor, Timer, Watchdog,
};
use crate::config::{self, Signal, Span};

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn age(now: Instant, since: Instant) -> u64 {
    nanos(now.saturating_duration_since(since))
}

fn back(now: Instant, age_ns: u64) -> Instant {
    now.checked_sub(Duration::from_nanos(age_ns)).unwrap_or(now)
}

fn save_exit(exit: Exit) -> saved::Exit {
    match exit {
        Exit::Code(c) => saved::Exit::Code(c),
        Exit::Signal(s) => saved::Exit::Signal(s.0),
        Exit::Oom => saved::Exit::Oom,
    }
}

fn load_exit(exit: saved::Exit) -> Exit {
    match exit {
        saved::Exit::Code(c) => Exit::Code(c),
        saved::Exit::Signal(s) => Exit::Signal(Signal(s)),
        saved::Exit::Oom => Exit::Oom,
    }
}

fn save_exec(exec: Exec) -> saved::Exec {
    match exec {
        Exec::Pending => saved::Exec::Pending,
        Exec::Failed(r) => saved::Exec::Failed {
            step: r.step as u32,
            errno: r.errno,
        },
        Exec::Done => saved::Exec::Done,
    }
}

fn load_exec(exec: saved::Exec) -> Exec {
    match exec {
        saved::Exec::Pending => Exec::Pending,
        saved::Exec::Failed { step, errno } => Step::from_u32(step).map_or(Exec::Pending, |step| {
            Exec::Failed(StatusReport { step, errno })
        }),
        saved::Exec::Done => Exec::Done,
    }
}

fn save_serving(serving: Serving) -> saved::Serving {
    match serving {
        Serving::Ready => saved::Serving::Ready,
        Serving::Reloading => saved::Serving::Reloading,
        Serving::Stopping => saved::Serving::Stopping,
    }
}

fn load_serving(serving: saved::Serving) -> Serving {
    match serving {
        saved::Serving::Ready => Serving::Ready,
        saved::Serving::Reloading => Serving::Reloading,
        saved::Serving::Stopping => Serving::Stopping,
    }
}

fn save_cause(cause: &Cause) -> saved::Cause {
    match cause {
        Cause::Own => saved::Cause::Own,
        Cause::StartLimit => saved::Cause::StartLimit,
        Cause::Dependency(name) => saved::Cause::Dependency(name.clone()),
        Cause::Config => saved::Cause::Config,
    }
}

fn load_cause(cause: saved::Cause) -> Cause {
    match cause {
        saved::Cause::Own => Cause::Own,
        saved::Cause::StartLimit => Cause::StartLimit,
        saved::Cause::Dependency(name) => Cause::Dependency(name),
        saved::Cause::Config => Cause::Config,
    }
}

/// Whether a listening service's sockets were watched, and whether its back-off timer ran:
/// what the format keeps of its intake.
pub struct Listening {
    /// The sockets were in the epoll set.
    pub watched: bool,
    /// A back-off timer was armed.
    pub timer: bool,
}

impl Timer {
    /// Every purpose.
    pub const ALL: [Timer; 6] = [
        Timer::RestartDelay,
        Timer::StopTimeout,
        Timer::Backoff,
        Timer::StartTimeout,
        Timer::Cooldown,
        Timer::Watchdog,
    ];

    /// Its name in the manager state.
    pub fn name(self) -> &'static str {
        match self {
            Timer::RestartDelay => "restart_delay",
            Timer::StopTimeout => "stop_timeout",
            Timer::Backoff => "backoff",
            Timer::StartTimeout => "start_timeout",
            Timer::Cooldown => "cooldown",
            Timer::Watchdog => "watchdog",
        }
    }

    /// The timer of that name; `None` for one this build does not know.
    pub fn named(name: &str) -> Option<Timer> {
        Timer::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl Supervisor {
    /// Writes the supervisor's fields into `out` (the unit's resources write the rest), with
    /// at most the newest `history` of its recent restarts.
    pub fn save(&self, now: Instant, out: &mut saved::Service, history: usize) {
        out.name = self.config.name.clone();
        out.state = self.save_state(now);
        out.restarts = self.restarts;
        let skip = self.recent_restarts.len().saturating_sub(history);
        out.recent_restart_ages_ns = self
            .recent_restarts
            .iter()
            .skip(skip)
            .map(|&t| age(now, t))
            .collect();
        out.last_exit = self.last_exit.map(save_exit);
        out.last_failure = self.last_failure.as_ref().map(|f| saved::Failure {
            step: f.step.map(|step| step as u32),
            reason: f.reason.clone(),
            exit: f.exit.map(save_exit),
        });
        out.instances = self
            .instances
            .iter()
            .map(|(pid, instance)| saved::Instance {
                pid: pid.raw(),
                number: instance.number,
                age_ns: age(now, instance.since),
                pipes: Vec::new(),
            })
            .collect();
        out.next_instance = self.next_instance;
        // Only an interval the service set itself: the configured one is in the config.
        out.watchdog_usec = match self.watchdog.interval() {
            interval if interval == self.config.watchdog.map(Span::get) => None,
            interval => Some(interval.map_or(0, |i| i.as_micros().min(u64::MAX as u128) as u64)),
        };
    }

    fn save_state(&self, now: Instant) -> saved::State {
        match &self.state {
            // A retired service is gone before anything could save it.
            State::Inactive | State::Retired => saved::State::Inactive,
            State::Waiting => saved::State::Waiting,
            State::Listening { .. } => saved::State::Listening,
            State::Starting { main } => saved::State::Starting {
                pid: main.pid.raw(),
                exec: save_exec(main.exec),
            },
            State::Running {
                pid,
                since,
                serving,
            } => saved::State::Running {
                pid: pid.raw(),
                age_ns: age(now, *since),
                serving: save_serving(*serving),
            },
            State::Exited => saved::State::Exited,
            State::Restarting => saved::State::Restarting,
            State::Stopping { main, killed, then } => saved::State::Stopping {
                pid: main.map(|m| m.pid.raw()),
                exec: main.map_or(saved::Exec::Pending, |m| save_exec(m.exec)),
                killed: *killed,
                // A reexec waits for a reload's changes to be made, so neither crosses.
                then: match then {
                    AfterStop::Start => saved::Then::Start,
                    AfterStop::Reconfigure(r) => match r.then {
                        Resume::Start => saved::Then::Start,
                        Resume::Rest => saved::Then::Rest,
                        Resume::Refuse(_) => saved::Then::Fail(saved::Cause::Config),
                    },
                    AfterStop::Rest | AfterStop::Retire => saved::Then::Rest,
                    AfterStop::Fail(cause) => saved::Then::Fail(save_cause(cause)),
                },
            },
            State::Failed(cause) => saved::State::Failed(save_cause(cause)),
        }
    }

    /// The supervisor a saved service describes, with `config` (parsed from the config the
    /// saved manager ran).
    pub fn restore(
        config: config::Service,
        s: &saved::Service,
        listening: Listening,
        now: Instant,
    ) -> Supervisor {
        let state = load_state(&s.state, listening, now);
        let instances: Instances = s
            .instances
            .iter()
            .filter_map(|i| {
                Some((
                    Pid::new(i.pid)?,
                    Instance {
                        number: i.number,
                        since: back(now, i.age_ns),
                        // Its executor's report, if one is still to come, is awaited.
                        exec: Exec::Pending,
                    },
                ))
            })
            .collect();
        let watchdog = restored_watchdog(&config, s, &state, now);
        Supervisor {
            state,
            restarts: s.restarts,
            // Not in the saved state: after a reexec, a service restarted only by hand gets
            // its idle executor again at its next restart.
            restarted_by_hand: false,
            recent_restarts: s
                .recent_restart_ages_ns
                .iter()
                .map(|&a| back(now, a))
                .collect(),
            last_exit: s.last_exit.map(load_exit),
            last_failure: s.last_failure.as_ref().map(|f| {
                Box::new(Failure {
                    step: f.step.and_then(Step::from_u32),
                    reason: f.reason.clone(),
                    exit: f.exit.map(load_exit),
                })
            }),
            instances,
            next_instance: s.next_instance,
            watchdog,
            config,
        }
    }
}

/// The watchdog of a restored run: the interval it had; a running one is watched from now
/// (the ping it sent while no manager listened is not held against it).
fn restored_watchdog(
    config: &config::Service,
    s: &saved::Service,
    state: &State,
    now: Instant,
) -> Watchdog {
    let interval = match s.watchdog_usec {
        None => config.watchdog.map(Span::get),
        Some(0) => None,
        Some(usec) => Some(Duration::from_micros(usec)),
    };
    match (interval, state) {
        (None, _) => Watchdog::Off,
        (Some(interval), State::Running { .. }) => Watchdog::Watching {
            interval,
            last: now,
        },
        (Some(interval), _) => Watchdog::Waiting(interval),
    }
}

fn load_state(state: &saved::State, listening: Listening, now: Instant) -> State {
    match state.clone() {
        saved::State::Inactive => State::Inactive,
        saved::State::Waiting => State::Waiting,
        saved::State::Listening => State::Listening {
            intake: match (listening.watched, listening.timer) {
                (true, true) => Intake::Retrying,
                (false, true) => Intake::BackingOff,
                // Unwatched without a timer: an accept service at its cap.
                (true, false) | (false, false) => Intake::Open,
            },
        },
        saved::State::Starting { pid, exec } => match Pid::new(pid) {
            Some(pid) => State::Starting {
                main: Process {
                    pid,
                    exec: load_exec(exec),
                },
            },
            None => State::Inactive,
        },
        saved::State::Running {
            pid,
            age_ns,
            serving,
        } => match Pid::new(pid) {
            Some(pid) => State::Running {
                pid,
                since: back(now, age_ns),
                serving: load_serving(serving),
            },
            None => State::Inactive,
        },
        saved::State::Exited => State::Exited,
        saved::State::Restarting => State::Restarting,
        saved::State::Stopping {
            pid,
            exec,
            killed,
            then,
        } => State::Stopping {
            main: pid.and_then(Pid::new).map(|pid| Process {
                pid,
                exec: load_exec(exec),
            }),
            killed,
            then: match then {
                saved::Then::Rest => AfterStop::Rest,
                saved::Then::Start => AfterStop::Start,
                saved::Then::Fail(cause) => AfterStop::Fail(load_cause(cause)),
            },
        },
        saved::State::Failed(cause) => State::Failed(load_cause(cause)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> config::Service {
        let loaded = config::load_str("t.toml", "[service.s]\nexec = [\"/bin/x\"]\n");
        loaded.config.unwrap().services.remove(0)
    }

    fn crossing(state: State) -> State {
        let mut s = Supervisor::new(config());
        s.state = state;
        let now = Instant::now();
        let mut out = crate::unit::blank();
        s.save(now, &mut out, usize::MAX);
        let listening = Listening {
            watched: s.wants_connections(),
            timer: matches!(
                s.state,
                State::Listening {
                    intake: Intake::BackingOff | Intake::Retrying
                }
            ),
        };
        Supervisor::restore(config(), &out, listening, now).state
    }

    #[test]
    fn every_state_survives_the_crossing() {
        let now = Instant::now();
        let pid = Pid(42);
        let report = StatusReport {
            step: Step::Exec,
            errno: 2,
        };
        let states = [
            State::Inactive,
            State::Listening {
                intake: Intake::Open,
            },
            State::Listening {
                intake: Intake::BackingOff,
            },
            State::Listening {
                intake: Intake::Retrying,
            },
            State::Starting {
                main: Process::spawned(pid),
            },
            State::Starting {
                main: Process {
                    pid,
                    exec: Exec::Failed(report),
                },
            },
            State::Running {
                pid,
                since: now - Duration::from_secs(3),
                serving: Serving::Reloading,
            },
            State::Waiting,
            State::Failed(Cause::Dependency("db".into())),
            State::Failed(Cause::StartLimit),
            State::Failed(Cause::Config),
            State::Stopping {
                main: None,
                killed: true,
                then: AfterStop::Fail(Cause::Own),
            },
            State::Exited,
            State::Restarting,
            State::Stopping {
                main: Some(Process {
                    pid,
                    exec: Exec::Failed(report),
                }),
                killed: true,
                then: AfterStop::Start,
            },
            State::Stopping {
                main: None,
                killed: false,
                then: AfterStop::Rest,
            },
            State::Failed(Cause::Own),
        ];
        for state in states {
            let back = crossing(state.clone());
            match (&state, &back) {
                (State::Running { since: a, .. }, State::Running { since: b, .. }) => {
                    // The age is carried, not the instant: equal up to the time the test took.
                    assert!(b.duration_since(*a) < Duration::from_millis(100));
                }
                _ => assert_eq!(state, back),
            }
        }
        for exit in [Exit::Code(3), Exit::Signal(Signal::KILL), Exit::Oom] {
            assert_eq!(load_exit(save_exit(exit)), exit);
        }
    }
}
