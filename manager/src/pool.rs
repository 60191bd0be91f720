//! Executors spawned ahead of need (`executor_pool`): each is the pinned executor, exec'd
//! already and born in its service's cgroup, blocked reading its end of a socket pair. A spawn
//! then sends it the spawn state and the fds in one message instead of cloning and exec'ing an
//! executor on the way to the service, and the pool is filled again after the spawn, off the
//! client's path.
//!
//! An idle executor runs no code of the service and holds none of its fds: closing our end of
//! its socket (dropping its [`Pooled`]) is all it takes to retire it; it exits 0 and is reaped
//! like any child nobody claims. For the same reason it is spared when a keep-alive service's
//! main process exits and what it left in its cgroup is killed: it waits for the restart.

use std::os::fd::OwnedFd;

use crate::supervisor::Pid;

/// One idle executor.
pub struct Pooled {
    /// Its pid, the service's once it has its state.
    pub pid: Pid,
    /// Our end of its socket pair (non-blocking, close-on-exec). The spawn state goes out on
    /// it; then it is watched as a fresh executor's status pipe is: a report on failure, end of
    /// file at the service's exec.
    pub socket: OwnedFd,
    /// How it came to be, which decides what its spawn state must still ask of it.
    pub birth: Birth,
}

/// How an idle executor was spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Birth {
    /// clone3 into the service's v2 cgroup: it only joins v1 hierarchies, if any.
    InCgroup,
    /// posix_spawn: it joins every cgroup itself, and glibc's internal signals are still
    /// ignored in it.
    Spawned,
}

impl Birth {
    /// How an executor cloned with the cgroup fd `into` (none: by posix_spawn) is born.
    pub fn of<T>(into: Option<&T>) -> Birth {
        match into {
            Some(_) => Birth::InCgroup,
            None => Birth::Spawned,
        }
    }
}

/// Whether filling the pool works now, so that a pool that cannot be filled (the cgroup's
/// `tasks_max` reached, out of memory) says so once, not at every spawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Filling {
    #[default]
    Works,
    Fails,
}

/// A service's idle executors.
#[derive(Default)]
pub struct Pool {
    idle: Vec<Pooled>,
    /// Pids of those retired since the service's main process last exited: they exit on
    /// their own, but may not have yet when that exit's cleanup kills what is left in the
    /// cgroup, and they are not what the service left there.
    retired: Vec<Pid>,
    pub filling: Filling,
}

/// How many retired pids are remembered; a pool holds at most 16.
const RETIRED_KEPT: usize = 16;

impl Pool {
    /// How many wait.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// The one that has waited longest.
    pub fn take(&mut self) -> Option<Pooled> {
        (!self.idle.is_empty()).then(|| self.idle.remove(0))
    }

    /// One more, or one taken that could not be used for this spawn after all.
    pub fn put(&mut self, pooled: Pooled) {
        self.idle.push(pooled);
    }

    /// Their pids: processes of the service's cgroup that are not the service's yet.
    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.idle.iter().map(|p| p.pid)
    }

    /// Retires all but `keep` of them.
    pub fn truncate(&mut self, keep: usize) {
        if self.idle.len() > keep {
            self.retired.extend(self.idle.drain(keep..).map(|p| p.pid));
            let over = self.retired.len().saturating_sub(RETIRED_KEPT);
            self.retired.drain(..over);
        }
    }

    /// The pids retired since the last call.
    pub fn take_retired(&mut self) -> Vec<Pid> {
        std::mem::take(&mut self.retired)
    }
}
