//! Boot order and its consequences, applied after every turn of the loop ([`Manager::settle`]):
//! a waiting service starts once what it waits for is ready; a stop (or restart, or removal)
//! waits until what depends on the service has stopped; a failed service takes what requires
//! it along, and brings it back when it recovers; and the `stewardctl` clients waiting for
//! services to settle are told, one line per service.

use steward_protocol::control::Reply;

use super::Manager;
use super::deps::{self, Edge};
use crate::registry::UnitId;
use crate::supervisor::{Cause, Event, Readiness, State};

/// What a queued stop does once the services depending on it have stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Stop it.
    Stop,
    /// Restart it.
    Restart,
    /// A reload removed it.
    Retire,
}

impl Job {
    fn event(self) -> Event {
        match self {
            Job::Stop => Event::Stop,
            Job::Restart => Event::Restart,
            Job::Retire => Event::Retire,
        }
    }
}

/// What a waiting client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Every service ready (`start`, `restart`).
    Ready,
    /// Every service at rest (`stop`).
    AtRest,
}

/// A `stewardctl start/stop/restart` waiting for its services to settle.
#[derive(Debug)]
pub struct Waiter {
    /// The control client.
    pub client: u64,
    /// What it waits for.
    pub goal: Goal,
    /// The services not settled yet.
    pub pending: Vec<UnitId>,
    /// The first that failed, and why.
    pub failure: Option<String>,
}

/// How many rounds of consequences one turn may take: more than any graph needs, fewer than
/// would let a bug spin the loop.
const ROUNDS: usize = 10_000;

impl Manager {
    /// Queues stops (or restarts, or removals) of `ids`; each is made once what depends on it
    /// has stopped.
    pub(super) fn queue(&mut self, ids: &[UnitId], job: Job) {
        for &id in ids {
            self.stop_jobs.insert(id, job);
        }
        self.moved.extend_from_slice(ids);
    }

    /// Applies every consequence of what moved, until nothing more does.
    pub(super) fn settle(&mut self) {
        for _ in 0..ROUNDS {
            let moved = std::mem::take(&mut self.moved);
            for &id in &moved {
                self.consequences(id);
            }
            self.proceed_waiting();
            // A stop made may unblock the next even when nothing moved (a unit already at
            // rest takes its stop without a change): go round until none is made.
            let stopped = self.run_stop_jobs();
            if moved.is_empty() && !stopped && self.moved.is_empty() {
                break;
            }
        }
        self.report_waiters();
    }

    /// A failed unit takes what requires it along; a recovering one brings back what failed
    /// on its account.
    fn consequences(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let name = unit.name().to_string();
        let failed = matches!(unit.supervisor.state(), State::Failed(_));
        let recovering = matches!(
            unit.supervisor.state().readiness(),
            Readiness::Up | Readiness::Pending
        );
        for Edge {
            unit: other,
            required,
        } in deps::dependents(&self.registry, id)
        {
            let Some(dependent) = self.registry.get(other) else {
                continue;
            };
            let state = dependent.supervisor.state();
            if failed && required && !state.at_rest() && *state != State::Waiting {
                self.dispatch(other, Event::DependencyFailed(name.clone()));
            } else if recovering
                && !self.shutting_down()
                && *state == State::Failed(Cause::Dependency(name.clone()))
            {
                self.dispatch(other, Event::Start);
            }
        }
    }

    /// What a waiting unit still waits for: its dependencies on their way up (or queued to
    /// restart). `Err` names a required one that failed.
    pub(super) fn blocking(&self, id: UnitId) -> Result<Vec<UnitId>, String> {
        let mut blocking = Vec::new();
        for Edge { unit, required } in deps::waits_for(&self.registry, id) {
            let Some(dep) = self.registry.get(unit) else {
                continue;
            };
            if required && matches!(dep.supervisor.state(), State::Failed(_)) {
                return Err(dep.name().to_string());
            }
            let queued = matches!(self.stop_jobs.get(&unit), Some(Job::Restart));
            if queued || dep.supervisor.state().readiness() == Readiness::Pending {
                blocking.push(unit);
            }
        }
        Ok(blocking)
    }

    /// Waiting units whose dependencies are ready start; those whose required one failed fail.
    fn proceed_waiting(&mut self) {
        let waiting: Vec<UnitId> = self
            .registry
            .iter()
            .filter(|(_, u)| *u.supervisor.state() == State::Waiting)
            .map(|(id, _)| id)
            .collect();
        for id in waiting {
            match self.blocking(id) {
                Err(failed) => self.dispatch(id, Event::DependencyFailed(failed)),
                Ok(blocking) if blocking.is_empty() => self.dispatch(id, Event::Proceed),
                Ok(_) => {}
            }
        }
    }

    /// Queued stops whose dependents have stopped are made; says whether any was.
    fn run_stop_jobs(&mut self) -> bool {
        let registry = &self.registry;
        self.stop_jobs.retain(|&id, _| registry.get(id).is_some());
        let ready: Vec<(UnitId, Job)> =
            self.stop_jobs
                .iter()
                .filter(|&(&id, _)| {
                    deps::dependents(&self.registry, id).iter().all(|e| {
                        let stopping = self.registry.get(e.unit).is_some_and(|u| {
                            matches!(u.supervisor.state(), State::Stopping { .. })
                        });
                        !self.stop_jobs.contains_key(&e.unit) && !stopping
                    })
                })
                .map(|(&id, &job)| (id, job))
                .collect();
        let made = !ready.is_empty();
        for (id, job) in ready {
            self.stop_jobs.remove(&id);
            self.dispatch(id, job.event());
        }
        made
    }

    /// Whether unit `id` has settled for `goal`: `Ok(None)` ready (or at rest), `Ok(Some)`
    /// failed with that reason, `Err(())` not yet.
    fn settled_for(&self, id: UnitId, goal: Goal) -> Result<Option<String>, ()> {
        if self.stop_jobs.contains_key(&id) {
            return Err(());
        }
        let Some(unit) = self.registry.get(id) else {
            return match goal {
                Goal::AtRest => Ok(None),
                Goal::Ready => Ok(Some("removed from the config".into())),
            };
        };
        let state = unit.supervisor.state();
        let reason = || {
            unit.supervisor
                .last_failure()
                .map_or_else(|| "failed".to_string(), |f| f.reason.clone())
        };
        match goal {
            Goal::AtRest if state.at_rest() => Ok(None),
            Goal::AtRest => Err(()),
            Goal::Ready => match (state, state.readiness()) {
                (_, Readiness::Up) => Ok(None),
                (State::Failed(_), _) => Ok(Some(reason())),
                (State::Inactive, _) => Ok(Some("stopped".into())),
                _ => Err(()),
            },
        }
    }

    /// Tells waiting clients about every service that settled, and finishes those done.
    fn report_waiters(&mut self) {
        let mut waiters = std::mem::take(&mut self.waiters);
        let mut replies: Vec<(u64, Reply, bool)> = Vec::new();
        waiters.retain_mut(|w| {
            if !self.control.clients.contains_key(&w.client) {
                return false;
            }
            w.pending.retain(|&id| match self.settled_for(id, w.goal) {
                Err(()) => true,
                Ok(failure) => {
                    let (name, state) = self.registry.get(id).map_or_else(
                        || ("?".to_string(), "removed".to_string()),
                        |u| {
                            (
                                u.name().to_string(),
                                u.supervisor.state().name().to_string(),
                            )
                        },
                    );
                    if let (Some(reason), None) = (&failure, &w.failure) {
                        w.failure = Some(format!("{name} failed: {reason}"));
                    }
                    replies.push((
                        w.client,
                        Reply::Settled {
                            name,
                            state,
                            failure,
                        },
                        false,
                    ));
                    false
                }
            });
            if !w.pending.is_empty() {
                return true;
            }
            let last = match w.failure.take() {
                Some(message) => Reply::Error { message },
                None => Reply::Done {
                    message: String::new(),
                },
            };
            replies.push((w.client, last, true));
            false
        });
        self.waiters = waiters;
        for (client, reply, last) in replies {
            self.control.send(client, &reply, last);
            self.flush_client(client);
        }
    }
}
