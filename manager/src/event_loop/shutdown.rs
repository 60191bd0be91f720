//! An orderly shutdown: every service is stopped (in reverse dependency order: a service before
//! what it is `after` or `requires`), then the loop drains what they left behind, then the
//! manager cleans up and says what comes next.

use std::time::{Duration, Instant};

use super::jobs::Job;
use super::{Drain, Manager, Phase};
use crate::log;
use crate::pid1::Finish;
use crate::sockets;

/// How long a shutdown waits for killed leftovers to be reaped so their cgroups can go.
const DRAIN: Duration = Duration::from_secs(2);

impl Manager {
    /// Stops every service (in reverse dependency order), then `finish`.
    pub(super) fn stop_all(&mut self, finish: Finish) {
        if let Phase::ShuttingDown { .. } = self.phase {
            log::manager(format_args!("already shutting down"));
            return;
        }
        self.phase = Phase::ShuttingDown {
            finish,
            drain: Drain::Services,
        };
        match finish {
            Finish::Exit => log::manager(format_args!("shutting down")),
            other => log::manager(format_args!("shutting down to {}", other.name())),
        }
        // Each stops once what depends on it has; independent ones at once.
        let ids = self.registry.ids();
        self.queue(&ids, Job::Stop);
    }

    /// Whether the loop goes on, and how long it may wait: `None` once a shutdown is
    /// complete; `Some(None)` to wait for events alone.
    pub(super) fn next_wait(&mut self) -> Option<Option<Duration>> {
        let Phase::ShuttingDown { finish, drain } = self.phase else {
            return Some(None);
        };
        let until = match drain {
            Drain::Services => {
                if !self
                    .registry
                    .iter()
                    .all(|(_, u)| u.supervisor.state().at_rest())
                {
                    return Some(None);
                }
                if !self.any_cgroup_lingering() {
                    return None;
                }
                let until = Instant::now() + DRAIN;
                self.phase = Phase::ShuttingDown {
                    finish,
                    drain: Drain::Cgroups { until },
                };
                until
            }
            Drain::Cgroups { until } => until,
        };
        self.retry_cgroup_removal();
        if !self.any_cgroup_lingering() {
            return None;
        }
        if Instant::now() >= until {
            for name in self.cgroups_lingering() {
                log::service(name, format_args!("its cgroup is still busy; leaving it"));
            }
            return None;
        }
        // Polled: a leftover's exit wakes no fd once its unit is at rest.
        Some(Some(Duration::from_millis(50)))
    }

    /// After the loop: sockets, cgroups and the control socket go; what happens next.
    pub(super) fn finish(self) -> Finish {
        let finish = match self.phase {
            Phase::ShuttingDown { finish, .. } => finish,
            Phase::Running => Finish::Exit,
        };
        sockets::remove_files(self.registry.iter().flat_map(|(_, u)| u.io.sockets.iter()));
        for (_, unit) in self.registry.iter() {
            self.cgroups.remove(unit.name());
        }
        for dir in self.cgroups.remove_base() {
            log::manager(format_args!(
                "cannot remove {}: still in use",
                dir.display()
            ));
        }
        self.control.remove_file();
        self.sync_log_files();
        if let Some(watchdog) = self.watchdog {
            watchdog.last_ping();
        }
        if finish == Finish::Exit {
            log::manager(format_args!("all services stopped; exiting"));
        } else {
            log::manager(format_args!("all services stopped"));
        }
        // The last line too: PID 1 syncs everything before reboot(2), but a plain exit not.
        log::sync();
        finish
    }

    fn any_cgroup_lingering(&self) -> bool {
        self.cgroups_lingering().next().is_some()
    }

    /// Whether the manager is shutting down (commands that start things are refused).
    pub(super) fn shutting_down(&self) -> bool {
        matches!(self.phase, Phase::ShuttingDown { .. })
    }
}
