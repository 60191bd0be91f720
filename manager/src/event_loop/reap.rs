//! Children that exited, and what their executors reported first: each becomes an event for
//! the unit the pid belongs to. A pid nobody claims is an orphan reparented to us (we are a
//! subreaper, or PID 1): reaping it is all we owe it.

use rustix::process::{WaitOptions, WaitStatus};
use steward_protocol::StatusReport;

use super::Manager;
use crate::config::Signal;
use crate::log;
use crate::registry::UnitId;
use crate::supervisor::{Event, Exit, Pid, ProcessEvent};
use crate::unit::Cgroup;

/// How a reaped process ended, from its wait status.
fn exit_of(status: WaitStatus) -> Option<Exit> {
    if let Some(code) = status.exit_status() {
        return Some(Exit::Code(code));
    }
    status.terminating_signal().map(|s| Exit::Signal(Signal(s)))
}

/// How many children one turn of the loop reaps at most. Each exit may start a process (an
/// accept instance for the next connection waiting, a restart) that exits as soon: reaping
/// until none is left could go on for as long as clients keep coming, and every other event
/// would wait meanwhile (seen: a second of 32 clients without one `epoll_wait`, thousands of
/// instances' ended output pipes piling up unread).
const REAP_BATCH: usize = 32;

/// Whether children may be left to reap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reaping {
    /// None is: the next SIGCHLD says when one is.
    Done,
    /// The last turn stopped at [`REAP_BATCH`]: the next reaps on, though no signal comes (the
    /// one that stood for these was read already).
    More,
}

impl Manager {
    /// Reaps the children that have exited (SIGCHLD coalesces: one signal may stand for
    /// many), up to [`REAP_BATCH`]; [`Reaping::More`] when it stopped there.
    pub(super) fn reap(&mut self) {
        self.reaping = Reaping::Done;
        for reaped in 0.. {
            if reaped == REAP_BATCH {
                self.reaping = Reaping::More;
                break;
            }
            // Any child: `waitpid(None)` would mean our process group only, and every service leads
            // a session of its own.
            let (pid, status) = match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => (pid, status),
                Ok(None) | Err(rustix::io::Errno::CHILD) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::manager(format_args!("waitpid failed: {e}"));
                    break;
                }
            };
            let (Some(pid), Some(exit)) = (Pid::new(pid.as_raw_pid()), exit_of(status)) else {
                continue;
            };
            // An armed executor's report of a connection it accepted comes before its exit:
            // the instance it became is claimed first.
            if let Some(id) = self.armed_executors.get(&pid).copied() {
                self.on_armed(id, pid);
            }
            if let Some(id) = self.registry.release(pid) {
                self.reaped(id, pid, exit);
            }
        }
        // Cgroups that were still busy may be empty now that more processes are reaped.
        self.retry_cgroup_removal();
    }

    fn reaped(&mut self, id: UnitId, pid: Pid, exit: Exit) {
        // The executor's report, or the close that means it exec'd, happened before the exit:
        // deliver it first even if epoll has not told us yet.
        self.read_status(id, pid);
        let exit = self.oom_or(id, exit);
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        // The main process is gone, and with it the service: whatever it left in its cgroup
        // goes too, as systemd does for a service whose main process exited. (Not for accept
        // mode, whose instances share one cgroup.) Before the exit is handled: handling it
        // may spawn the next process into the same cgroup.
        let config = unit.supervisor.config();
        // Only the current main process's end: the first process of a service that named
        // another its main (`MAINPID=`, a forking daemon) leaves that one running.
        if !config.accept && unit.supervisor.state().pid() == Some(pid) {
            // The idle executors wait for the restart; they hold nothing of the service. Those
            // retired (at a stop, say) may still be on their way out: killed, not counted.
            let spared: Vec<i32> = unit.io.pool.pids().map(Pid::raw).collect();
            let retired = unit.io.pool.take_retired();
            // With an idle executor, it restarts through it, and this is on the way: read
            // through an fd kept for it. Not for every service: that would be one more fd
            // each, however still.
            let left = match &mut unit.io.cgroup {
                Cgroup::Made(prepared) if !spared.is_empty() => {
                    self.cgroups
                        .signal_kept(prepared, &config.name, Signal::KILL, &spared)
                }
                Cgroup::Made(_) | Cgroup::Absent | Cgroup::Lingering => {
                    self.cgroups.signal(&config.name, Signal::KILL, &spared)
                }
            }
            .into_iter()
            .filter(|&pid| !retired.iter().any(|r| r.raw() == pid))
            .count();
            if left > 0 {
                log::service(
                    &config.name,
                    format_args!("killed {left} process(es) it left in its cgroup"),
                );
            }
        }
        self.dispatch(id, Event::Process(pid, ProcessEvent::Exited(exit)));
    }

    /// Removes the cgroups of units at rest that were still busy.
    pub(super) fn retry_cgroup_removal(&mut self) {
        // Only the lingering ones are handed out to change: every unit would be saved again
        // for the panic-recovery snapshot at every reap.
        let lingering: Vec<UnitId> = self
            .registry
            .iter()
            .filter(|(_, u)| u.io.cgroup == Cgroup::Lingering && u.supervisor.state().at_rest())
            .map(|(id, _)| id)
            .collect();
        for id in lingering {
            let cgroups = &self.cgroups;
            if let Some(unit) = self.registry.get_mut(id) {
                if cgroups.remove(&unit.supervisor.config().name) {
                    unit.io.cgroup = Cgroup::Absent;
                }
            }
        }
    }

    /// After a panic recovery: a process the snapshot names that is no child of ours any more
    /// was reaped by the image that panicked, after the snapshot; its exit status is lost, so
    /// it is handled as killed.
    pub(super) fn forget_the_gone(&mut self) {
        let me = std::process::id().to_string();
        for (pid, id) in self.registry.processes() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4, after the parenthesised command (which may hold spaces).
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if parent == Some(me.as_str()) {
                continue;
            }
            self.registry.release(pid);
            if let Some(unit) = self.registry.get(id) {
                log::service(
                    unit.name(),
                    format_args!(
                        "pid {pid} ended before the recovery, its exit status lost; handled as killed"
                    ),
                );
            }
            self.dispatch(
                id,
                Event::Process(pid, ProcessEvent::Exited(Exit::Signal(Signal::KILL))),
            );
        }
    }

    /// Whether a unit at rest still waits for its cgroup to be removed.
    pub(super) fn cgroups_lingering(&self) -> impl Iterator<Item = &str> {
        self.registry
            .iter()
            .filter(|(_, u)| u.io.cgroup == Cgroup::Lingering)
            .map(|(_, u)| u.name())
    }

    /// A SIGKILL is the OOM killer's when the cgroup's OOM-kill count went up since the spawn.
    fn oom_or(&self, id: UnitId, exit: Exit) -> Exit {
        let Some(unit) = self.registry.get(id) else {
            return exit;
        };
        if exit != Exit::Signal(Signal::KILL) {
            return exit;
        }
        match (self.cgroups.oom_kills(unit.name()), unit.io.oom_baseline) {
            (Some(now), Some(then)) if now > then => Exit::Oom,
            _ => exit,
        }
    }

    pub(super) fn on_status(&mut self, id: UnitId, pid: Pid) {
        self.read_status(id, pid);
    }

    /// Reads an executor's status pipe: a report means a step failed; end-of-file without one
    /// means the service was exec'd.
    fn read_status(&mut self, id: UnitId, pid: Pid) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let Some(fd) = unit.io.status.get(pid) else {
            return;
        };
        let mut buf = [0u8; StatusReport::LEN + 1];
        let event = match rustix::io::read(fd, &mut buf) {
            Ok(0) => ProcessEvent::Execd,
            Ok(n) => match StatusReport::decode(&buf[..n]) {
                Ok(report) => ProcessEvent::StepFailed(report),
                Err(e) => {
                    log::service(
                        unit.name(),
                        format_args!("garbled report from the executor: {e}"),
                    );
                    ProcessEvent::Execd
                }
            },
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return,
            Err(e) => {
                log::service(
                    unit.name(),
                    format_args!("reading the executor's status failed: {e}"),
                );
                ProcessEvent::Execd
            }
        };
        let instance = unit.supervisor.instances().contains(pid);
        let status = self
            .registry
            .get_mut(id)
            .and_then(|u| u.io.status.remove(pid));
        // An accept instance's was never watched.
        if let Some(fd) = status.filter(|_| !instance) {
            self.unwatch_fd(&fd);
        }
        self.dispatch(id, Event::Process(pid, event));
    }
}
