//! A supervisor across a `reexec`: what it writes into the manager state, and how the next
//! manager rebuilds it. Instants cross as ages (CLOCK_MONOTONIC is shared across the exec, but
//! `Instant` is opaque).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use steward_protocol::reexec as saved;
use steward_protocol::{StatusReport, Step};

use super::{AfterStop, Exec, Exit, Failure, Instance, Intake, Pid, Process, State, Supervisor};
use crate::config::{self, Signal};

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

fn report_of(exec: Exec) -> Option<(u32, i32)> {
    match exec {
        Exec::Failed(r) => Some((r.step as u32, r.errno)),
        Exec::Pending | Exec::Done => None,
    }
}

fn exec_of(report: Option<(u32, i32)>) -> Exec {
    report
        .and_then(|(step, errno)| Step::from_u32(step).map(|step| StatusReport { step, errno }))
        .map_or(Exec::Pending, Exec::Failed)
}

/// What the supervisor's part of a saved service says about the state, besides the state.
pub struct Saved {
    /// The state, in the format's terms.
    pub state: saved::State,
    /// The main process's report not yet followed by its exit.
    pub pending_report: Option<(u32, i32)>,
}

/// Whether a listening service's sockets were watched, and whether its back-off timer ran:
/// what the format keeps of its intake.
pub struct Listening {
    /// The sockets were in the epoll set.
    pub watched: bool,
    /// A back-off timer was armed.
    pub timer: bool,
}

impl Supervisor {
    /// Writes the supervisor's fields into `out` (the unit's resources write the rest).
    pub fn save(&self, now: Instant, out: &mut saved::Service) {
        let Saved {
            state,
            pending_report,
        } = self.save_state(now);
        out.name = self.config.name.clone();
        out.state = state;
        out.pending_report = pending_report;
        out.restarts = self.restarts;
        out.recent_restart_ages_ns = self.recent_restarts.iter().map(|&t| age(now, t)).collect();
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
    }

    fn save_state(&self, now: Instant) -> Saved {
        let (state, pending_report) = match &self.state {
            // A retired service is gone before anything could save it.
            State::Inactive | State::Retired => (saved::State::Inactive, None),
            State::Listening { .. } => (saved::State::Listening, None),
            State::Starting { main } => (
                saved::State::Starting {
                    pid: main.pid.raw(),
                },
                report_of(main.exec),
            ),
            State::Running { pid, since } => (
                saved::State::Running {
                    pid: pid.raw(),
                    age_ns: age(now, *since),
                },
                None,
            ),
            State::Exited => (saved::State::Exited, None),
            State::Restarting => (saved::State::Restarting, None),
            State::Stopping { main, killed, then } => (
                saved::State::Stopping {
                    pid: main.map(|m| m.pid.raw()),
                    killed: *killed,
                    // A reexec waits for a reload's changes to be made, so neither crosses.
                    then_start: match then {
                        AfterStop::Start => true,
                        AfterStop::Reconfigure(r) => r.start,
                        AfterStop::Rest | AfterStop::Retire => false,
                    },
                },
                main.and_then(|m| report_of(m.exec)),
            ),
            State::Failed => (saved::State::Failed, None),
        };
        Saved {
            state,
            pending_report,
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
        let pid = |raw: i32| Pid::new(raw);
        let state = match &s.state {
            saved::State::Inactive => State::Inactive,
            saved::State::Listening => State::Listening {
                intake: match (listening.watched, listening.timer) {
                    (true, true) => Intake::Retrying,
                    (false, true) => Intake::BackingOff,
                    // Unwatched without a timer: an accept service at its cap.
                    (true, false) | (false, false) => Intake::Open,
                },
            },
            saved::State::Starting { pid: raw } => match pid(*raw) {
                Some(pid) => State::Starting {
                    main: Process {
                        pid,
                        exec: exec_of(s.pending_report),
                    },
                },
                None => State::Inactive,
            },
            saved::State::Running { pid: raw, age_ns } => match pid(*raw) {
                Some(pid) => State::Running {
                    pid,
                    since: back(now, *age_ns),
                },
                None => State::Inactive,
            },
            saved::State::Exited => State::Exited,
            saved::State::Restarting => State::Restarting,
            saved::State::Stopping {
                pid: raw,
                killed,
                then_start,
            } => State::Stopping {
                main: raw.and_then(pid).map(|pid| Process {
                    pid,
                    exec: exec_of(s.pending_report),
                }),
                killed: *killed,
                then: if *then_start {
                    AfterStop::Start
                } else {
                    AfterStop::Rest
                },
            },
            saved::State::Failed => State::Failed,
        };
        let instances: BTreeMap<Pid, Instance> = s
            .instances
            .iter()
            .filter_map(|i| {
                Some((
                    pid(i.pid)?,
                    Instance {
                        number: i.number,
                        since: back(now, i.age_ns),
                        // Its executor's report, if one is still to come, is awaited.
                        exec: Exec::Pending,
                    },
                ))
            })
            .collect();
        Supervisor {
            config,
            state,
            restarts: s.restarts,
            recent_restarts: s
                .recent_restart_ages_ns
                .iter()
                .map(|&a| back(now, a))
                .collect::<VecDeque<_>>(),
            last_exit: s.last_exit.map(load_exit),
            last_failure: s.last_failure.as_ref().map(|f| Failure {
                step: f.step.and_then(Step::from_u32),
                reason: f.reason.clone(),
                exit: f.exit.map(load_exit),
            }),
            instances,
            next_instance: s.next_instance,
        }
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
        s.save(now, &mut out);
        let listening = Listening {
            watched: s.wants_connections(),
            timer: s.state_timer().is_some(),
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
            State::Failed,
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
