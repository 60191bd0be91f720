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
//!
//! An accept service's idle executors are *armed* ([`Armed`]): each holds the spawn state of
//! the next instance and the listening socket, and accepts the connection itself, so that a
//! client wakes that executor alone; it tells the manager, which counts it as an instance from
//! then on. While one is armed the manager leaves the socket alone. One that is no longer
//! wanted is *disarmed*: our end is shut down for writing, and it exits unless it has already
//! accepted, which its report then says; it is never simply closed, which could lose a
//! connection it has just taken.
//!
//! A lazy service's idle executor is armed too, one at a time, while the service waits for its
//! first client: it holds the main process's spawn state and every socket, and execs the
//! service once a client waits on one of them. Its spawn state holds the fd store as it was at
//! arming, so a change to the store disarms it, and another is armed with the new store.
//!
//! A keep-alive service's idle executor is armed while the service runs, with the spawn state
//! of the next main process: it takes every step but the exec, and execs on our word when the
//! restart comes, so that the restart costs one message and the exec. Its store is kept as a
//! lazy service's is, and its directories are made again at the restart; a service with a
//! `user` or `group` is not armed, so that its names are looked up at the restart itself, nor
//! one with a `stdio` path, whose tty is the running process's.

use std::os::fd::OwnedFd;

use crate::output::Pipe;
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

/// Whether a service's idle executors are armed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arming {
    #[default]
    Works,
    /// An armed executor failed a step before its connection (its cgroup, say): every other
    /// would fail the same way, so none is armed until the service is reloaded.
    Fails,
    /// A reexec is collecting the armed executors' answers: none is armed meanwhile.
    Held,
}

/// An armed executor: waiting for a client with the spawn state of its process, whose pipes
/// are ours to watch once it has one: an accept instance's own output pipes, a lazy main
/// process's readiness pipe (`ready = "fd:N"`).
pub struct Armed {
    pub pooled: Pooled,
    pub pipes: Vec<Pipe>,
    pub ready: Option<OwnedFd>,
}

/// A service's idle executors.
#[derive(Default)]
pub struct Pool {
    /// Boxed, and only once one is put: most services never have one, and every service
    /// would pay for the lists inline (a hundred bytes each, a thousand services).
    lists: Option<Box<Lists>>,
    pub filling: Filling,
    pub arming: Arming,
}

#[derive(Default)]
struct Lists {
    idle: Vec<Pooled>,
    armed: Vec<Armed>,
    /// Disarmed, and not yet gone: each may still report a connection it accepted.
    disarming: Vec<Armed>,
    /// Those that have accepted, for the instance spawn that claims them.
    fired: Vec<Armed>,
    /// Pids of those retired since the service's main process last exited: they exit on
    /// their own, but may not have yet when that exit's cleanup kills what is left in the
    /// cgroup, and they are not what the service left there.
    retired: Vec<Pid>,
}

/// The lists of a pool that never had one: what a read sees.
static EMPTY: Lists = Lists {
    idle: Vec::new(),
    armed: Vec::new(),
    disarming: Vec::new(),
    fired: Vec::new(),
    retired: Vec::new(),
};

/// How many retired pids are remembered; a pool holds at most 16.
const RETIRED_KEPT: usize = 16;

impl Pool {
    fn lists(&self) -> &Lists {
        self.lists.as_deref().unwrap_or(&EMPTY)
    }

    fn lists_mut(&mut self) -> &mut Lists {
        self.lists.get_or_insert_with(Box::default)
    }

    /// How many wait, armed or not.
    pub fn len(&self) -> usize {
        self.lists().idle.len() + self.lists().armed.len()
    }

    /// How many are armed.
    pub fn armed(&self) -> usize {
        self.lists().armed.len()
    }

    /// One more armed.
    pub fn put_armed(&mut self, armed: Armed) {
        self.lists_mut().armed.push(armed);
    }

    /// Takes out the armed (or disarming) one with `pid`.
    pub fn take_armed(&mut self, pid: Pid) -> Option<Armed> {
        let lists = self.lists.as_deref_mut()?;
        for list in [&mut lists.armed, &mut lists.disarming] {
            if let Some(at) = list.iter().position(|a| a.pooled.pid == pid) {
                return Some(list.remove(at));
            }
        }
        None
    }

    /// The armed one that has waited longest: a keep-alive service's, for its restart.
    pub fn take_first_armed(&mut self) -> Option<Armed> {
        let armed = &mut self.lists.as_deref_mut()?.armed;
        (!armed.is_empty()).then(|| armed.remove(0))
    }

    /// `armed` has accepted a connection: the next instance spawn claims it.
    pub fn fire(&mut self, armed: Armed) {
        self.lists_mut().fired.push(armed);
    }

    /// How many have accepted and wait to be claimed.
    pub fn fired(&self) -> usize {
        self.lists().fired.len()
    }

    /// One that has accepted, for an instance.
    pub fn take_fired(&mut self) -> Option<Armed> {
        self.lists.as_deref_mut()?.fired.pop()
    }

    /// Remembers `pids` as retired, not the service's.
    pub fn retired(&mut self, pids: impl IntoIterator<Item = Pid>) {
        let retired = &mut self.lists_mut().retired;
        retired.extend(pids);
        let over = retired.len().saturating_sub(RETIRED_KEPT);
        retired.drain(..over);
    }

    /// The armed (or disarming) one with `pid`.
    pub fn get_armed(&self, pid: Pid) -> Option<&Armed> {
        let lists = self.lists();
        lists
            .armed
            .iter()
            .chain(&lists.disarming)
            .find(|a| a.pooled.pid == pid)
    }

    /// Disarms all but `keep` of the armed ones: shut down for writing, they exit unless they
    /// have a connection already.
    pub fn disarm(&mut self, keep: usize) {
        let Some(lists) = self.lists.as_deref_mut() else {
            return;
        };
        while lists.armed.len() > keep {
            let armed = lists.armed.pop().expect("longer than keep");
            let _ = rustix::net::shutdown(&armed.pooled.socket, rustix::net::Shutdown::Write);
            lists.disarming.push(armed);
        }
    }

    /// The pids of every armed or disarming one.
    pub fn armed_pids(&self) -> impl Iterator<Item = Pid> + '_ {
        let lists = self.lists();
        lists
            .armed
            .iter()
            .chain(&lists.disarming)
            .map(|a| a.pooled.pid)
    }

    /// The one that has waited longest.
    pub fn take(&mut self) -> Option<Pooled> {
        let idle = &mut self.lists.as_deref_mut()?.idle;
        (!idle.is_empty()).then(|| idle.remove(0))
    }

    /// One more, or one taken that could not be used for this spawn after all.
    pub fn put(&mut self, pooled: Pooled) {
        self.lists_mut().idle.push(pooled);
    }

    /// Their pids: processes of the service's cgroup that are not the service's yet.
    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.lists()
            .idle
            .iter()
            .map(|p| p.pid)
            .chain(self.armed_pids())
    }

    /// Retires all but `keep` of them, the armed ones last, by disarming.
    pub fn truncate(&mut self, keep: usize) {
        let armed = self.armed();
        let keep_idle = keep.saturating_sub(armed);
        if keep < armed {
            self.disarm(keep);
        }
        let Some(lists) = self.lists.as_deref_mut() else {
            return;
        };
        if lists.idle.len() > keep_idle {
            let pids: Vec<Pid> = lists.idle.drain(keep_idle..).map(|p| p.pid).collect();
            self.retired(pids);
        }
    }

    /// The pids retired since the last call.
    pub fn take_retired(&mut self) -> Vec<Pid> {
        match self.lists.as_deref_mut() {
            Some(lists) => std::mem::take(&mut lists.retired),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(raw: impl IntoIterator<Item = i32>) -> Vec<Pid> {
        raw.into_iter().map(|p| Pid::new(p).unwrap()).collect()
    }

    #[test]
    fn a_pool_that_never_had_an_executor_is_two_words_and_allocates_nothing() {
        assert!(std::mem::size_of::<Pool>() <= 2 * std::mem::size_of::<usize>());
        let mut pool = Pool::default();
        pool.disarm(0);
        pool.truncate(0);
        assert_eq!((pool.len(), pool.armed(), pool.fired()), (0, 0, 0));
        assert!(pool.take().is_none() && pool.take_first_armed().is_none());
        assert!(pool.take_retired().is_empty());
        assert!(pool.lists.is_none());
    }

    #[test]
    fn the_newest_retired_pids_are_kept_and_taken_once() {
        let mut pool = Pool::default();
        pool.retired(pids(1..=10));
        pool.retired(pids(11..=20));
        assert_eq!(pool.take_retired(), pids(5..=20));
        assert!(pool.take_retired().is_empty());
    }
}
