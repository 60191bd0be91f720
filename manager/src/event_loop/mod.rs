//! The manager's one thread: one epoll loop over signals (signalfd), timers (timerfd), the
//! executors' status pipes, the services' sockets and output pipes, and the control socket.
//! Its body is wait → dispatch → reap; every decision about a service is made by its state
//! machine in `supervisor`.

mod commands;
mod reexec;
mod reload;

pub use reexec::{Paths, Resume, Upgrade, resume};

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use steward_protocol::StatusReport;

use crate::cgroups::{Cgroups, Limits};
use crate::config::StdioMode;
use crate::config::{self, Signal};
use crate::control::Control;
use crate::log;
use crate::logs::{self, Pipe, Ring};
use crate::sockets::{self, Listener};
use crate::spawn::{Passing, Spawner};
use crate::supervisor::{Effects, Event, Exit, Supervised};
use crate::sys;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use steward_protocol::control::{Reply, Stream};

/// What an epoll event is about, packed into its 64-bit data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Signals,
    Timer,
    /// The status pipe of the executor with this pid.
    Status(Pid),
    /// One of the sockets of the service with this index.
    Socket(usize),
    /// The control socket.
    Control,
    /// A control connection.
    Client(u64),
    /// An output pipe of the service with this index.
    Log(usize, Stream),
    /// An output pipe of the accept instance with this pid.
    InstanceLog(Pid, Stream),
}

impl Token {
    const LOW: u64 = (1 << 56) - 1;

    fn stream_bit(stream: Stream) -> u64 {
        match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn stream(bit: u64) -> Stream {
        if bit & 1 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        }
    }

    /// The kind in the top byte, its subject below.
    fn to_u64(self) -> u64 {
        let (kind, low): (u64, u64) = match self {
            Token::Signals => (0, 0),
            Token::Timer => (0, 1),
            Token::Control => (0, 2),
            Token::Status(pid) => (1, pid.as_raw() as u32 as u64),
            Token::Socket(id) => (2, id as u64),
            Token::Client(id) => (3, id),
            Token::Log(id, s) => (4, (id as u64) << 1 | Self::stream_bit(s)),
            Token::InstanceLog(pid, s) => {
                (5, (pid.as_raw() as u32 as u64) << 1 | Self::stream_bit(s))
            }
        };
        kind << 56 | (low & Self::LOW)
    }

    fn from_u64(data: u64) -> Option<Token> {
        let low = data & Self::LOW;
        match data >> 56 {
            0 if low == 0 => Some(Token::Signals),
            0 if low == 1 => Some(Token::Timer),
            0 if low == 2 => Some(Token::Control),
            1 => Some(Token::Status(Pid::from_raw(low as i32))),
            2 => Some(Token::Socket(low as usize)),
            3 => Some(Token::Client(low)),
            4 => Some(Token::Log((low >> 1) as usize, Self::stream(low))),
            5 => Some(Token::InstanceLog(
                Pid::from_raw((low >> 1) as i32),
                Self::stream(low),
            )),
            _ => None,
        }
    }
}

/// Why the manager could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The executor could not be pinned.
    #[error(transparent)]
    Pin(#[from] crate::spawn::PinError),
    /// A socket could not be created.
    #[error(transparent)]
    Socket(#[from] crate::sockets::SocketError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// A kernel facility the loop needs failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being set up.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: Errno,
    },
}

fn sys_err(what: &'static str) -> impl FnOnce(Errno) -> SetupError {
    move |source| SetupError::Sys { what, source }
}

/// One timer per service, ordered by deadline.
#[derive(Default)]
struct Timers {
    queue: BTreeSet<(Instant, usize)>,
    deadlines: HashMap<usize, Instant>,
}

impl Timers {
    fn set(&mut self, id: usize, at: Instant) {
        self.clear(id);
        self.queue.insert((at, id));
        self.deadlines.insert(id, at);
    }

    fn clear(&mut self, id: usize) {
        if let Some(at) = self.deadlines.remove(&id) {
            self.queue.remove(&(at, id));
        }
    }

    fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let &(at, id) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.deadlines.remove(&id);
        Some(id)
    }
}

/// A service, with the sockets steward holds for it.
struct Unit {
    service: Supervised,
    /// Its name again, for the effects that run while `service` is borrowed.
    name: String,
    sockets: Vec<Listener>,
    /// Whether `sockets` are in the epoll set.
    watched: bool,
    /// The cgroup's OOM-kill count when the current process was spawned.
    oom_baseline: Option<u64>,
    /// Its captured output.
    log: Ring,
    /// Read ends of its stdout and stderr pipes (services that log, but not accept mode,
    /// whose instances get pipes of their own). Kept across restarts.
    pipes: Vec<Pipe>,
    /// The write ends of those pipes, passed to each spawn.
    writers: Option<[OwnedFd; 2]>,
    /// When it entered its current state.
    since: SystemTime,
    /// What a reload asked to do once it is at rest.
    pending: Option<reload::Pending>,
    /// Removed by a reload: kept only so its index stays valid.
    retired: bool,
    /// Accept mode: a connection accepted while its instance could not be spawned, served
    /// first when spawning works again.
    parked: Option<sockets::Connection>,
}

impl Unit {
    fn new(service: config::Service, sockets: Vec<Listener>, log_buffer: u64) -> Unit {
        Unit {
            name: service.name.clone(),
            service: Supervised::new(service),
            sockets,
            watched: false,
            oom_baseline: None,
            log: Ring::new(log_buffer),
            pipes: Vec::new(),
            writers: None,
            since: SystemTime::now(),
            pending: None,
            retired: false,
            parked: None,
        }
    }
}

/// An output pipe of an accept instance.
struct InstancePipe {
    unit: usize,
    pipe: Pipe,
}

/// The running manager.
pub struct Manager {
    units: Vec<Unit>,
    spawner: Spawner,
    epoll: Epoll,
    signals: SignalFd,
    timerfd: TimerFd,
    /// The deadline the timerfd is armed for.
    armed: Option<Instant>,
    timers: Timers,
    /// Which service each live process belongs to.
    pids: HashMap<Pid, usize>,
    /// Status pipes of executors that have not exec'd or reported yet.
    status_pipes: HashMap<Pid, OwnedFd>,
    cgroups: Cgroups,
    /// Services at rest whose cgroup could not be removed yet (a process was still dying).
    cgroups_to_remove: Vec<usize>,
    control: Control,
    /// Where the config was read from, for reloads.
    config_path: PathBuf,
    log_buffer: u64,
    instance_pipes: HashMap<(Pid, Stream), InstancePipe>,
    shutting_down: bool,
    /// The config files as last loaded successfully, for a `reexec`.
    config_sources: Vec<(PathBuf, String)>,
    /// What a `reexec` needs.
    upgrade: Upgrade,
    /// After a `reexec`: the client waiting for its reply.
    waiting: Option<u64>,
    /// What happens once a shutdown has stopped everything.
    finish: crate::pid1::Finish,
    /// The control listener is out of the epoll set until then (accept kept failing).
    control_paused: Option<Instant>,
    /// Accepting control connections failed and has not worked since (logged once).
    control_backing_off: bool,
}

/// How a manager that took over from another came to be.
pub struct Takeover {
    /// The version that ran before.
    pub old: String,
    /// Set when the upgrade failed and we are the old binary again: why.
    pub failed: Option<String>,
    /// From the old manager's exec to the new one being ready to serve.
    pub took: Duration,
}

/// The epoll set, with the signalfd and timerfd in it; signals blocked and, when not PID 1,
/// the subreaper bit set.
fn loop_fds() -> Result<(Epoll, SignalFd, TimerFd), SetupError> {
    // Blocked before any child exists, so no exit can slip past the signalfd. Children
    // inherit the mask; the executor clears it before exec. (After a reexec the mask was
    // inherited blocked, so exits during the exec wait as pending signals.)
    let signals = handled_signals();
    signals
        .thread_block()
        .map_err(sys_err("blocking signals"))?;
    let signalfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys_err("signalfd"))?;
    if nix::unistd::getpid().as_raw() != 1 {
        // Orphans of our services are reparented to us and reaped, as they would be by init.
        nix::sys::prctl::set_child_subreaper(true).map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
    }
    let timerfd = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
    )
    .map_err(sys_err("timerfd"))?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys_err("epoll"))?;
    epoll
        .add(
            &signalfd,
            EpollEvent::new(EpollFlags::EPOLLIN, Token::Signals.to_u64()),
        )
        .map_err(sys_err("epoll_ctl"))?;
    epoll
        .add(
            &timerfd,
            EpollEvent::new(EpollFlags::EPOLLIN, Token::Timer.to_u64()),
        )
        .map_err(sys_err("epoll_ctl"))?;
    Ok((epoll, signalfd, timerfd))
}

/// The manager's own directory in each cgroup hierarchy: `steward` as PID 1, else one per
/// manager, so several managers (tests, nested instances) never share a service's cgroup. The
/// pid survives a reexec, and so does the directory.
fn cgroup_dir() -> String {
    let pid = std::process::id();
    match (pid, crate::pid1::pid_namespace()) {
        (1, None) => "steward".to_string(),
        // Init of a container or a test's namespace: several may share the host's cgroups.
        (1, Some(ns)) => format!("steward-pidns-{ns}"),
        _ => format!("steward-{pid}"),
    }
}

/// The signals the manager handles through its signalfd; as PID 1, the init signals too.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        NixSignal::SIGCHLD,
        NixSignal::SIGTERM,
        NixSignal::SIGINT,
        NixSignal::SIGHUP,
    ] {
        set.add(s);
    }
    if crate::pid1::is_init() {
        return crate::sys::with_signals(&set, &crate::pid1::extra_signals());
    }
    set
}

impl Manager {
    /// Pins the executor and sets up the loop. Errors here are fatal: nothing has started yet.
    pub fn new(
        config: config::Config,
        sources: Vec<(PathBuf, String)>,
        paths: Paths<'_>,
        upgrade: Upgrade,
    ) -> Result<Manager, SetupError> {
        let spawner = Spawner::pin(paths.executor)?;
        // Every socket of every service exists before the first spawn, so a service may
        // connect to another's socket at its start, whatever the order.
        let sockets = sockets::open_all(&config.services)?;
        let control = match Control::open(paths.control) {
            Ok(control) => control,
            Err(e) => {
                sockets::remove_files(sockets.iter().flatten());
                return Err(e.into());
            }
        };
        let fds = loop_fds()?;
        let units = config
            .services
            .into_iter()
            .zip(sockets)
            .map(|(service, sockets)| Unit::new(service, sockets, config.manager.log_buffer))
            .collect();
        let cgroups = Cgroups::detect(&cgroup_dir());
        let mut manager = Manager::assemble(
            units,
            spawner,
            fds,
            cgroups,
            control,
            paths.config,
            sources,
            config.manager.log_buffer,
            upgrade,
        )?;
        for id in 0..manager.units.len() {
            manager.open_log_pipes(id);
        }
        Ok(manager)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        units: Vec<Unit>,
        spawner: Spawner,
        (epoll, signals, timerfd): (Epoll, SignalFd, TimerFd),
        cgroups: Cgroups,
        control: Control,
        config_path: &Path,
        config_sources: Vec<(PathBuf, String)>,
        log_buffer: u64,
        upgrade: Upgrade,
    ) -> Result<Manager, SetupError> {
        epoll
            .add(
                &control.listener,
                EpollEvent::new(EpollFlags::EPOLLIN, Token::Control.to_u64()),
            )
            .map_err(sys_err("epoll_ctl"))?;
        log::manager(format_args!("{}", cgroups.describe()));
        if let Some(note) = &spawner.note {
            log::manager(format_args!("{note}"));
        }
        Ok(Manager {
            units,
            spawner,
            epoll,
            signals,
            timerfd,
            armed: None,
            timers: Timers::default(),
            pids: HashMap::new(),
            status_pipes: HashMap::new(),
            cgroups,
            cgroups_to_remove: Vec::new(),
            control,
            config_path: config_path.to_path_buf(),
            log_buffer,
            instance_pipes: HashMap::new(),
            shutting_down: false,
            config_sources,
            upgrade,
            waiting: None,
            finish: crate::pid1::Finish::Exit,
            control_paused: None,
            control_backing_off: false,
        })
    }

    /// Starts the autostart services and supervises until an orderly shutdown has finished;
    /// returns what to do then.
    pub fn run(self) -> crate::pid1::Finish {
        self.serve(None)
    }

    /// Supervises until an orderly shutdown has finished: from boot (`None`: the autostart
    /// services start), or after taking over from a manager that re-executed.
    fn serve(mut self, takeover: Option<Takeover>) -> crate::pid1::Finish {
        // From now on, we must not die: a failure of one service is logged and becomes a retry
        // or a `failed` state; a failed syscall of the loop is logged and the loop goes on.
        match takeover {
            None => {
                log::manager(format_args!(
                    "version {} starting (pid {}, {} services)",
                    crate::version(),
                    std::process::id(),
                    self.units.len()
                ));
                for id in 0..self.units.len() {
                    if self.units[id].service.config.autostart {
                        self.dispatch(id, Event::Start);
                    }
                }
            }
            Some(takeover) => self.took_over(takeover),
        }
        sys::trim_heap();
        let mut events = [EpollEvent::empty(); 32];
        // Once every service is at rest, processes they left behind (killed, but not yet
        // reaped) may still hold their cgroups: wait a little for those, polling.
        let mut draining_until: Option<Instant> = None;
        loop {
            self.arm_timer();
            let mut timeout = EpollTimeout::NONE;
            if self.shutting_down && self.units.iter().all(|u| u.service.state.at_rest()) {
                if self.cgroups_to_remove.is_empty() {
                    break;
                }
                let until =
                    *draining_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                self.retry_cgroup_removal();
                if self.cgroups_to_remove.is_empty() {
                    break;
                }
                if Instant::now() >= until {
                    for &id in &self.cgroups_to_remove {
                        log::service(
                            &self.units[id].name,
                            format_args!("its cgroup is still busy; leaving it"),
                        );
                    }
                    break;
                }
                timeout = EpollTimeout::from(50u16);
            }
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::manager(format_args!("epoll_wait failed: {e}"));
                    continue;
                }
            };
            for event in &events[..n] {
                match Token::from_u64(event.data()) {
                    Some(Token::Signals) => self.on_signals(),
                    Some(Token::Timer) => self.on_timer(),
                    Some(Token::Status(pid)) => self.on_status(pid),
                    Some(Token::Socket(id)) => self.dispatch(id, Event::Connection),
                    Some(Token::Control) => self.on_control(),
                    Some(Token::Client(id)) => self.on_client(id),
                    Some(Token::Log(id, stream)) => self.on_log(id, stream),
                    Some(Token::InstanceLog(pid, stream)) => self.on_instance_log(pid, stream),
                    None => {}
                }
            }
        }
        sockets::remove_files(self.units.iter().flat_map(|u| u.sockets.iter()));
        for unit in &self.units {
            self.cgroups.remove(&unit.name);
        }
        self.cgroups.remove_base();
        self.control.remove_file();
        if self.finish == crate::pid1::Finish::Exit {
            log::manager(format_args!("all services stopped; exiting"));
        } else {
            log::manager(format_args!("all services stopped"));
        }
        self.finish
    }

    fn dispatch(&mut self, id: usize, event: Event) {
        let Manager {
            units,
            spawner,
            epoll,
            timers,
            pids,
            status_pipes,
            cgroups,
            instance_pipes,
            ..
        } = self;
        let Unit {
            service,
            name,
            sockets,
            watched,
            oom_baseline,
            writers,
            since,
            parked,
            ..
        } = &mut units[id];
        let before = service.state.name();
        let was_at_rest = service.state.at_rest();
        let mut world = World {
            id,
            name,
            spawner,
            epoll,
            timers,
            pids,
            status_pipes,
            sockets,
            watched,
            cgroups,
            oom_baseline,
            writers: writers
                .as_ref()
                .map(|[o, e]| [o.as_raw_fd(), e.as_raw_fd()]),
            instance_pipes,
            parked,
        };
        service.handle(event, &mut world);
        if service.state.name() != before {
            *since = SystemTime::now();
        }
        // Settled: its cgroup goes (once the last of its processes is reaped), and whatever a
        // reload was waiting for can happen now.
        if service.state.at_rest() && !was_at_rest && !cgroups.remove(name) {
            self.cgroups_to_remove.push(id);
        }
        if self.units[id].service.state.at_rest() && self.units[id].pending.is_some() {
            self.finish_pending(id);
        }
    }

    /// Reads what a service wrote to one of its pipes.
    fn on_log(&mut self, id: usize, stream: Stream) {
        let Some(unit) = self.units.get_mut(id) else {
            return;
        };
        let pid = unit.service.state.pid().map_or(0, |p| p.as_raw());
        let Some(pipe) = unit.pipes.iter_mut().find(|p| p.stream == stream) else {
            return;
        };
        let lines = read_lines(pipe, &unit.name, pid).0;
        self.keep_lines(id, lines);
    }

    /// Reads what an accept instance wrote; at its end of file the pipe goes.
    fn on_instance_log(&mut self, pid: Pid, stream: Stream) {
        let Some(entry) = self.instance_pipes.get_mut(&(pid, stream)) else {
            return;
        };
        let unit = &self.units[entry.unit];
        let number = unit.service.instances.get(&pid).map(|i| i.number);
        let name = match number {
            Some(n) => format!("{}@{n}", unit.name),
            None => unit.name.clone(),
        };
        let (lines, ended) = read_lines(&mut entry.pipe, &name, pid.as_raw());
        let id = entry.unit;
        if ended {
            if let Some(entry) = self.instance_pipes.remove(&(pid, stream)) {
                let _ = self.epoll.delete(&entry.pipe.fd);
            }
        }
        self.keep_lines(id, lines);
    }

    /// Keeps lines in the service's ring, echoes them, and sends them to its followers.
    fn keep_lines(&mut self, id: usize, lines: Vec<steward_protocol::control::LogLine>) {
        if lines.is_empty() {
            return;
        }
        let followers: Vec<u64> = self
            .control
            .clients
            .iter()
            .filter(|(_, c)| c.follow == Some(id))
            .map(|(cid, _)| *cid)
            .collect();
        if !followers.is_empty() {
            let reply = steward_protocol::control::Reply::Logs {
                lines: lines.clone(),
                dropped: 0,
            };
            for cid in followers {
                self.control.send(cid, &reply, false);
                self.flush_client(cid);
            }
        }
        let unit = &mut self.units[id];
        for line in lines {
            log::output(&line.name, &line.text);
            unit.log.push(line);
        }
    }

    fn on_signals(&mut self) {
        let mut reap = false;
        let init = crate::pid1::is_init();
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) if init && info.ssi_signo as i32 != libc::SIGCHLD => {
                    self.on_init_signal(info.ssi_signo as i32);
                }
                Ok(Some(info)) => match NixSignal::try_from(info.ssi_signo as i32) {
                    Ok(NixSignal::SIGCHLD) => reap = true,
                    Ok(NixSignal::SIGTERM | NixSignal::SIGINT) => {
                        self.stop_all(crate::pid1::Finish::Exit)
                    }
                    Ok(NixSignal::SIGHUP) => {
                        // The same handler as `stewardctl reload`; the outcome is logged there.
                        let _ = self.reload();
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::manager(format_args!("reading the signalfd failed: {e}"));
                    break;
                }
            }
        }
        // SIGCHLD coalesces: one signal may stand for many exits, so reap until none is left.
        if reap {
            self.reap();
        }
    }

    /// What a signal means to PID 1 (see `pid1`).
    fn on_init_signal(&mut self, signo: i32) {
        match crate::pid1::meaning(signo) {
            Some(crate::pid1::InitSignal::Reload) => {
                let _ = self.reload();
            }
            Some(crate::pid1::InitSignal::Reexec) => {
                if let Reply::Error { message } = self.reexec(None) {
                    log::manager(format_args!("reexec on SIGTERM: {message}"));
                }
            }
            Some(crate::pid1::InitSignal::Stop(finish)) => self.stop_all(finish),
            None => log::manager(format_args!("ignoring signal {signo}")),
        }
    }

    /// Stops every service (in reverse config order), then `finish`.
    fn stop_all(&mut self, finish: crate::pid1::Finish) {
        if self.shutting_down {
            log::manager(format_args!("already shutting down"));
            return;
        }
        self.shutting_down = true;
        self.finish = finish;
        match finish {
            crate::pid1::Finish::Exit => log::manager(format_args!("shutting down")),
            other => log::manager(format_args!("shutting down to {}", other.name())),
        }
        for id in (0..self.units.len()).rev() {
            self.dispatch(id, Event::Stop);
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, Exit::Signal(Signal(signal as i32)))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::manager(format_args!("waitpid failed: {e}"));
                    break;
                }
            };
            // A pid we do not know is an orphan reparented to us: reaping it is all we owe it.
            if let Some(id) = self.pids.remove(&pid) {
                // The executor's report, or the close that means it exec'd, happened before the
                // exit: deliver it first even if epoll has not told us yet.
                self.read_status(pid, id);
                let exit = self.oom_or(id, exit);
                // Before the exit is handled: handling it may spawn the next process into the
                // same cgroup.
                if !self.units[id].service.instances.contains_key(&pid) {
                    self.kill_leftovers(id);
                }
                self.dispatch(id, Event::Exited(pid, exit));
            }
        }
        // Cgroups that were still busy may be empty now that more processes are reaped.
        self.retry_cgroup_removal();
    }

    fn retry_cgroup_removal(&mut self) {
        let cgroups = &self.cgroups;
        let units = &self.units;
        self.cgroups_to_remove
            .retain(|&id| units[id].service.state.at_rest() && !cgroups.remove(&units[id].name));
    }

    /// A SIGKILL is the OOM killer's when the cgroup's OOM-kill count went up since the spawn.
    fn oom_or(&self, id: usize, exit: Exit) -> Exit {
        let unit = &self.units[id];
        if exit != Exit::Signal(Signal::KILL) {
            return exit;
        }
        match (self.cgroups.oom_kills(&unit.name), unit.oom_baseline) {
            (Some(now), Some(then)) if now > then => Exit::Oom,
            _ => exit,
        }
    }

    /// The main process is gone, and with it the service: whatever it left in its cgroup goes
    /// too, as systemd does for a service whose main process exited. (Not for accept mode,
    /// whose instances share one cgroup.)
    fn kill_leftovers(&mut self, id: usize) {
        let unit = &self.units[id];
        if unit.service.config.accept {
            return;
        }
        let left = self.cgroups.signal(&unit.name, libc::SIGKILL);
        if left > 0 {
            log::service(
                &unit.name,
                format_args!("killed {left} process(es) it left in its cgroup"),
            );
        }
    }

    fn on_status(&mut self, pid: Pid) {
        if let Some(&id) = self.pids.get(&pid) {
            self.read_status(pid, id);
        }
    }

    /// Reads an executor's status pipe: a report means a step failed; end-of-file without one
    /// means the service was exec'd.
    fn read_status(&mut self, pid: Pid, id: usize) {
        let Some(fd) = self.status_pipes.get(&pid) else {
            return;
        };
        let mut buf = [0u8; StatusReport::LEN + 1];
        let event = match nix::unistd::read(fd, &mut buf) {
            Ok(0) => Event::ExecSucceeded(pid),
            Ok(n) => match StatusReport::decode(&buf[..n]) {
                Ok(report) => Event::StepFailed(pid, report),
                Err(e) => {
                    let name = &self.units[id].service.config.name;
                    log::service(name, format_args!("garbled report from the executor: {e}"));
                    Event::ExecSucceeded(pid)
                }
            },
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(e) => {
                let name = &self.units[id].service.config.name;
                log::service(
                    name,
                    format_args!("reading the executor's status failed: {e}"),
                );
                Event::ExecSucceeded(pid)
            }
        };
        if let Some(fd) = self.status_pipes.remove(&pid) {
            let _ = self.epoll.delete(&fd);
        }
        self.dispatch(id, event);
    }

    fn on_timer(&mut self) {
        // Reading clears the readiness; the expiry count itself is not needed.
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(self.timerfd.as_fd(), &mut buf);
        self.armed = None;
        let now = Instant::now();
        while let Some(id) = self.timers.pop_due(now) {
            self.dispatch(id, Event::Timer);
        }
        if self.control_paused.is_some_and(|until| until <= now) {
            self.control_paused = None;
            let interest = EpollEvent::new(EpollFlags::EPOLLIN, Token::Control.to_u64());
            if let Err(e) = self.epoll.add(&self.control.listener, interest) {
                log::manager(format_args!("control: cannot watch the socket again: {e}"));
            }
        }
        for cid in self.control.expired(now) {
            log::manager(format_args!(
                "control: a client sent no complete request in time"
            ));
            self.drop_client(cid);
        }
    }

    fn arm_timer(&mut self) {
        let next = [
            self.timers.next(),
            self.control.next_deadline(),
            self.control_paused,
        ]
        .into_iter()
        .flatten()
        .min();
        if next == self.armed {
            return;
        }
        let result = match next {
            Some(at) => {
                // A zero expiration would disarm the timerfd, so a due timer fires in 1ns.
                let after = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.timerfd.set(
                    Expiration::OneShot(TimeSpec::from_duration(after)),
                    TimerSetTimeFlags::empty(),
                )
            }
            None => self.timerfd.unset(),
        };
        match result {
            Ok(()) => self.armed = next,
            Err(e) => log::manager(format_args!("arming the timerfd failed: {e}")),
        }
    }
}

/// The effects of one service's transition, carried out for real.
struct World<'a> {
    id: usize,
    spawner: &'a Spawner,
    epoll: &'a Epoll,
    timers: &'a mut Timers,
    pids: &'a mut HashMap<Pid, usize>,
    status_pipes: &'a mut HashMap<Pid, OwnedFd>,
    sockets: &'a [Listener],
    watched: &'a mut bool,
    name: &'a str,
    cgroups: &'a Cgroups,
    oom_baseline: &'a mut Option<u64>,
    /// The service's log pipe write ends.
    writers: Option<[i32; 2]>,
    instance_pipes: &'a mut HashMap<(Pid, Stream), InstancePipe>,
    /// An accepted connection whose instance could not be spawned yet.
    parked: &'a mut Option<sockets::Connection>,
}

impl World<'_> {
    fn spawn_with(
        &mut self,
        service: &config::Service,
        passing: Passing<'_>,
    ) -> Result<Pid, String> {
        let limits = Limits {
            memory_max: service.memory_max,
            tasks_max: service.tasks_max,
        };
        let cgroups = self
            .cgroups
            .prepare(self.name, limits)
            .map_err(|e| format!("cannot set up its cgroup: {e}"))?;
        // Only a memory-limited service has a memory cgroup whose OOM kills can be counted.
        *self.oom_baseline = service
            .memory_max
            .and_then(|_| self.cgroups.oom_kills(self.name));
        // An accept instance gets pipes of its own, so its lines carry its name.
        let mut instance_pipes = Vec::new();
        let log = match passing {
            Passing::Connection(_)
                if service.stdio == StdioMode::Log || service.stdio == StdioMode::Socket =>
            {
                let mut ends = Vec::new();
                for stream in [Stream::Stdout, Stream::Stderr] {
                    let (pipe, write) = logs::pipe(stream).map_err(|e| format!("pipe: {e}"))?;
                    instance_pipes.push(pipe);
                    ends.push(write);
                }
                Some(ends)
            }
            _ => None,
        };
        let log_fds = match &log {
            Some(ends) => Some([ends[0].as_raw_fd(), ends[1].as_raw_fd()]),
            None => self.writers,
        };
        let (pid, status) = self
            .spawner
            .spawn(
                service,
                passing,
                &cgroups,
                self.cgroups.unified(&cgroups),
                log_fds,
            )
            .map_err(|e| e.to_string())?;
        // Our copies of the instance's write ends close here, so its pipes end with it.
        drop(log);
        for pipe in instance_pipes {
            let token = Token::InstanceLog(pid, pipe.stream).to_u64();
            if self
                .epoll
                .add(&pipe.fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .is_ok()
            {
                let key = (pid, pipe.stream);
                self.instance_pipes.insert(
                    key,
                    InstancePipe {
                        unit: self.id,
                        pipe,
                    },
                );
            }
        }
        self.pids.insert(pid, self.id);
        let interest = EpollEvent::new(EpollFlags::EPOLLIN, Token::Status(pid).to_u64());
        match self.epoll.add(&status, interest) {
            Ok(()) => {
                self.status_pipes.insert(pid, status);
            }
            // Without the pipe the service still runs; it only stays `starting` until it exits.
            Err(e) => log::service(
                &service.name,
                format_args!("cannot watch the status pipe: {e}"),
            ),
        }
        Ok(pid)
    }
}

impl Effects for World<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn spawn(&mut self, service: &config::Service) -> Result<Pid, String> {
        self.spawn_with(service, Passing::Sockets(self.sockets))
    }

    fn spawn_instance(&mut self, service: &config::Service) -> Result<Option<Pid>, String> {
        let Some(listener) = self.sockets.first() else {
            return Err("no socket to accept on".into());
        };
        // A connection accepted before a spawn failed (out of fds, say) goes first: once
        // accepted, a connection is never dropped for want of resources.
        let connection = match self.parked.take() {
            Some(connection) => connection,
            None => {
                match sockets::accept(listener.fd.as_fd()).map_err(|e| format!("accept: {e}"))? {
                    Some(connection) => connection,
                    None => return Ok(None),
                }
            }
        };
        // The instance has its copy now; ours closes when `connection` drops.
        match self.spawn_with(service, Passing::Connection(&connection)) {
            Ok(pid) => Ok(Some(pid)),
            Err(e) => {
                *self.parked = Some(connection);
                Err(e)
            }
        }
    }

    fn watch(&mut self, on: bool) {
        if *self.watched == on {
            return;
        }
        for listener in self.sockets {
            let result = if on {
                let interest =
                    EpollEvent::new(EpollFlags::EPOLLIN, Token::Socket(self.id).to_u64());
                self.epoll.add(&listener.fd, interest)
            } else {
                self.epoll.delete(&listener.fd)
            };
            if let Err(e) = result {
                log::manager(format_args!("epoll_ctl on a socket failed: {e}"));
            }
        }
        *self.watched = on;
    }

    fn signal(&mut self, pids: &[Pid], signal: Signal) {
        for pid in pids {
            // Each process leads its own process group (the executor calls setsid), so the
            // group takes its helpers along. Before setsid the group does not exist yet.
            let sent =
                sys::kill(-pid.as_raw(), signal.0).or_else(|_| sys::kill(pid.as_raw(), signal.0));
            if sent.is_ok() && signal != Signal::KILL {
                // A stopped process would never act on the stop signal.
                let _ = sys::kill(-pid.as_raw(), libc::SIGCONT);
            }
        }
        // The cgroup holds every process the service made, even those that left their process
        // group; once for the whole service, however many instances it has.
        self.cgroups.signal(self.name, signal.0);
    }

    fn set_timer(&mut self, after: Duration) {
        self.timers.set(self.id, Instant::now() + after);
    }

    fn clear_timer(&mut self) {
        self.timers.clear(self.id);
    }

    fn log(&mut self, service: &str, message: fmt::Arguments<'_>) {
        log::service(service, message);
    }
}

/// Reads what is waiting in an output pipe (up to the read budget) and cuts it into lines;
/// also says whether the pipe reached its end.
fn read_lines(
    pipe: &mut Pipe,
    name: &str,
    pid: i32,
) -> (Vec<steward_protocol::control::LogLine>, bool) {
    let mut lines = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut budget = logs::READ_BUDGET;
    let mut ended = false;
    let time_us = logs::now_us();
    let stream = pipe.stream;
    let mut push = |text: &str| {
        lines.push(steward_protocol::control::LogLine {
            time_us,
            name: name.to_string(),
            pid,
            stream,
            text: text.to_string(),
        })
    };
    while budget > 0 {
        match rustix::io::read(&pipe.fd, &mut buf) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => {
                budget = budget.saturating_sub(n);
                pipe.splitter.feed(&buf[..n], &mut push);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    if ended {
        pipe.splitter.finish(&mut push);
    }
    (lines, ended)
}
