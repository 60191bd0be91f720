//! The world as the state machine needs it, in narrow parts: a clock, a spawner (which holds
//! the unit's sockets), signals, timers and a log. The event loop implements each with real
//! system calls; the tests implement each with a fake that writes down what was asked. Whether
//! a unit's sockets are watched is no effect at all: it follows from the state
//! ([`super::Supervisor::wants_connections`]), and the loop keeps epoll in step.

use std::fmt;
use std::time::{Duration, Instant};

use super::{Pid, Timer};
use crate::config::{self, Signal};
use crate::sockets::Listener;
use crate::spawn::SpawnError;

/// The monotonic clock.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// Starting processes for the service, with the sockets it holds for it.
pub trait Spawn {
    /// Spawns the service through the executor, with its sockets.
    fn spawn(&mut self, service: &config::Service) -> Result<Pid, SpawnError>;
    /// Accept mode: accepts a waiting connection and spawns an instance for it; `Ok(None)`
    /// when no connection was waiting.
    fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, SpawnError>;
    /// A reload changed the service: from now on its processes get these sockets (opened, or
    /// kept, when the reload was accepted), and the files of `stale` are removed once the old
    /// sockets close.
    fn replace_sockets(&mut self, sockets: Vec<Listener>, stale: Vec<std::path::PathBuf>);
}

/// Signalling the service's processes.
pub trait Signals {
    /// Sends a signal to these processes (their process groups) and to every process in the
    /// cgroup of the service `name`.
    fn signal(&mut self, name: &str, pids: &[Pid], signal: Signal);
}

/// This unit's timers, one per purpose, all behind the loop's one timerfd.
pub trait Timers {
    /// Arms `timer` to fire after `after`, replacing an earlier deadline of the same purpose.
    fn set(&mut self, timer: Timer, after: Duration);
    /// Disarms `timer`; nothing happens if it is not armed.
    fn cancel(&mut self, timer: Timer);
    /// Moves an armed `timer` to at least `by` from now (never earlier); nothing happens if it
    /// is not armed.
    fn extend(&mut self, timer: Timer, by: Duration);
}

/// The manager's log.
pub trait Log {
    /// Logs a line about the service (or instance) of that name.
    fn log(&mut self, name: &str, message: fmt::Arguments<'_>);
}

/// Everything one transition may touch.
pub struct Effects<'a> {
    /// The clock.
    pub clock: &'a dyn Clock,
    /// The spawner.
    pub spawn: &'a mut dyn Spawn,
    /// Signals.
    pub signals: &'a mut dyn Signals,
    /// This unit's timers.
    pub timers: &'a mut dyn Timers,
    /// The log.
    pub log: &'a mut dyn Log,
}
