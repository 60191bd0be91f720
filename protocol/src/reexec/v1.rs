//! Version 1 of the manager state, frozen: what steward 0.1 wrote. A newer manager reads it
//! and converts it ([`super::ManagerState::from`]); nothing writes it any more.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Everything a version-1 manager handed to the binary it re-executed into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerState {
    /// The package version of the manager that wrote it.
    pub version: String,
    /// The path the first manager was started from (bytes: a path need not be UTF-8): what
    /// every later `reexec` executes.
    pub exe: Vec<u8>,
    /// The config it runs: every file as it was read at the last successful load or reload,
    /// as (path, text). The new manager parses these to know what each service runs with,
    /// then applies whatever is on disk now as a reload.
    pub config: Vec<(Vec<u8>, String)>,
    /// CLOCK_MONOTONIC, in nanoseconds, just before the exec: how long the handover took.
    pub written_ns: u64,
    /// The listening control socket.
    pub control_fd: i32,
    /// The control connection waiting for the `reexec` reply, if any.
    pub client_fd: Option<i32>,
    /// Every service, in the manager's order.
    pub services: Vec<Service>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its name; the key into the config.
    pub name: String,
    /// Where it is.
    pub state: State,
    /// When it entered that state: nanoseconds since the epoch.
    pub since_unix_ns: u64,
    /// Automatic restarts since it was last started by hand or at boot.
    pub restarts: u32,
    /// The restarts inside the start-limit window, as ages in nanoseconds.
    pub recent_restart_ages_ns: Vec<u64>,
    /// A step failure the executor reported for a process not yet reaped: (step, errno).
    pub pending_report: Option<(u32, i32)>,
    /// How its last process ended.
    pub last_exit: Option<Exit>,
    /// Its last failure.
    pub last_failure: Option<Failure>,
    /// Accept mode: running instances.
    pub instances: Vec<Instance>,
    /// Accept mode: the number the next instance gets.
    pub next_instance: u32,
    /// Its open sockets: (index into the service's configured sockets, fd).
    pub sockets: Vec<(u32, i32)>,
    /// Whether the sockets are watched for connections.
    pub watched: bool,
    /// The cgroup's OOM-kill count at the last spawn.
    pub oom_baseline: Option<u64>,
    /// The kept log lines, oldest first.
    pub log: Vec<LogLine>,
    /// Lines dropped from the ring.
    pub log_dropped: u64,
    /// Read ends of its output pipes.
    pub pipes: Vec<Pipe>,
    /// The write ends passed to each spawn (stdout, stderr).
    pub writers: Option<[i32; 2]>,
    /// Status pipes of its executors that have not exec'd or reported yet: (pid, fd).
    pub status_pipes: Vec<(i32, i32)>,
    /// Time left on its timer, in nanoseconds.
    pub timer_ns: Option<u64>,
    /// Whether its cgroup still waits to be removed.
    pub cgroup_to_remove: bool,
    /// Accept mode: a connection accepted but not yet given an instance (out of fds, say).
    pub parked_fd: Option<i32>,
}

/// A service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Not started, or stopped.
    Inactive,
    /// Sockets watched, no process.
    Listening,
    /// The executor runs.
    Starting {
        /// Its pid.
        pid: i32,
    },
    /// The service runs.
    Running {
        /// Its pid.
        pid: i32,
        /// How long it has run, in nanoseconds.
        age_ns: u64,
    },
    /// Ran and exited, not kept alive.
    Exited,
    /// Waiting to restart.
    Restarting,
    /// Being stopped.
    Stopping {
        /// The main process, if still there.
        pid: Option<i32>,
        /// Whether SIGKILL was sent.
        killed: bool,
        /// Whether it starts again once stopped.
        then_start: bool,
    },
    /// Gave up.
    Failed,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// Exit status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by the OOM killer.
    Oom,
}

/// A service's last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The executor step (its number), or `None` when the service itself failed.
    pub step: Option<u32>,
    /// What went wrong.
    pub reason: String,
    /// How the process ended.
    pub exit: Option<Exit>,
}

/// An accept-mode instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its pid.
    pub pid: i32,
    /// Its number (`NAME@N`).
    pub number: u32,
    /// How long it has run, in nanoseconds.
    pub age_ns: u64,
    /// Its own output pipes.
    pub pipes: Vec<Pipe>,
}

/// The read end of an output pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipe {
    /// The fd.
    pub fd: i32,
    /// 0 for stdout, 1 for stderr.
    pub stream: u8,
    /// Bytes of a line not yet complete.
    pub partial: Vec<u8>,
}

/// A kept log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Microseconds since the epoch.
    pub time_us: u64,
    /// `NAME` or `NAME@N`.
    pub name: String,
    /// The writer's pid.
    pub pid: i32,
    /// 0 for stdout, 1 for stderr.
    pub stream: u8,
    /// The line.
    pub text: String,
}
