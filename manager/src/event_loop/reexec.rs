//! `reexec`: the manager replaces itself with the `steward` binary now on disk, keeping every
//! service, socket, process, counter, timer and log line.
//!
//! The old manager writes its state (`steward_protocol::reexec`; each unit saves itself, see
//! `unit` and `supervisor::save`) into a sealed memfd, clears FD_CLOEXEC on exactly the fds the
//! state names, and execs the binary at the path it was first started from with
//! `--deserialize FD`. Its processes stay its children across the exec (the pid does not
//! change), so the new manager reaps them; its listening sockets stay open, so clients queue in
//! the backlog for the few milliseconds it takes.
//!
//! If the exec itself fails, the old manager carries on and says why. If the new binary starts
//! but cannot take over (it cannot read the state, parse the running config, or pin the
//! executor), it has touched nothing yet: it execs the old binary back, pinned by fd for that
//! (`--fallback FD`), which takes its own state over again and answers the client with the
//! error. So a bad upgrade never costs a service.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::FdFlags;
use steward_protocol::control::Reply;
use steward_protocol::reexec as saved;

use super::jobs::Job;
use super::notify::NotifySocket;
use super::token::Token;
use super::{LoopFds, Manager, SetupError, Takeover};
use crate::cgroups::Cgroups;
use crate::config;
use crate::control::Control;
use crate::log;
use crate::pid1::Finish;
use crate::pool::Arming;
use crate::recovery;
use crate::registry::Registry;
use crate::spawn::{self, PinError, Spawner};
use crate::supervisor::Timer;
use crate::sys;
use crate::unit::{self, Unit};
use crate::watchdog::Watchdog;

/// What the manager keeps so that it can re-execute itself.
pub struct Upgrade {
    /// The path it was first started from: what every `reexec` executes.
    pub exe: PathBuf,
    /// Its command line, without the flags a `reexec` adds.
    pub args: Vec<OsString>,
    /// An O_PATH fd on the running binary, for a new one that cannot take over to exec back.
    pin: Option<OwnedFd>,
}

impl Upgrade {
    /// For a manager started from `exe` with `args`.
    pub fn new(exe: PathBuf, args: Vec<OsString>) -> Upgrade {
        let pin = rustix::fs::open("/proc/self/exe", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| log::manager(format_args!("cannot pin our own binary ({e}): a reexec into a binary that cannot take over will not be able to come back")))
            .ok();
        Upgrade { exe, args, pin }
    }
}

/// How the manager came to be running: what `--deserialize` and its companions say.
pub struct Resume {
    /// The memfd holding the state.
    pub state_fd: RawFd,
    /// The previous binary, to exec back if we cannot take over.
    pub fallback: Option<RawFd>,
    /// Why the state was handed over.
    pub came: Came,
}

/// Why a manager was handed the state of the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Came {
    /// A `reexec` (or SIGTERM as PID 1): an upgrade, or the same binary again.
    Upgrade,
    /// We are the previous binary, back after a failed upgrade: why it failed.
    FellBack(String),
    /// The previous image panicked (`crate::recovery`): where, and what it said.
    Recovered(String),
}

/// The paths the command line names.
pub struct Paths<'a> {
    /// `--config`.
    pub config: &'a Path,
    /// `--control`.
    pub control: &'a Path,
    /// The executor to pin.
    pub executor: &'a Path,
}

/// Why the new manager cannot take over the state it was handed.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// The memfd could not be read.
    #[error("cannot read the manager state: {0}")]
    Read(#[source] io::Error),
    /// The state is of a version or shape this build does not read.
    #[error("steward {version} cannot read the manager state: {0}", version = crate::version())]
    Decode(#[source] saved::DecodeError),
    /// The config the running services were started with does not parse here.
    #[error("steward {version} cannot parse the config the running services were started with{first}", version = crate::version())]
    Config {
        /// ": FILE:LINE:COL: message" of the first error, or nothing.
        first: String,
    },
    /// A service of the state is not in that config.
    #[error("the state names a service `{0}` its config does not have")]
    UnknownService(String),
    /// An fd is named twice (or is negative).
    #[error("the state names fd {0} twice")]
    FdTwice(RawFd),
    /// An fd the state names was not handed over (not open, or not left open across the exec).
    #[error("the state names fd {0}, which is not open")]
    FdClosed(RawFd),
    /// The executor on disk cannot be pinned.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// The loop's own fds cannot be made.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// The fds a state names, for the new manager to check before it adopts any.
fn named_fds(state: &saved::ManagerState) -> Vec<RawFd> {
    let mut fds = vec![state.control_fd];
    fds.extend(state.client_fd);
    fds.extend(state.notify_fd);
    fds.extend(state.watchdog_fd);
    for s in &state.services {
        fds.extend(unit::named_fds(s));
    }
    fds
}

/// Whether `fd` becomes readable (or hung up) within `timeout`.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// CLOCK_MONOTONIC in nanoseconds: the one clock both sides of the exec share.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn set_cloexec(fds: &[BorrowedFd<'_>], on: bool) -> rustix::io::Result<()> {
    let flags = if on {
        FdFlags::CLOEXEC
    } else {
        FdFlags::empty()
    };
    for fd in fds {
        rustix::io::fcntl_setfd(fd, flags)?;
    }
    Ok(())
}

/// execv, retried briefly on ETXTBSY: a file just written may still be open for writing in
/// some process for a moment (a package manager's, or a forked child's copy of its fd), and
/// that passes. Returns only on failure, with the error's text.
fn exec(path: &CStr, argv: &[&CStr]) -> String {
    let mut error = sys::execv(path, argv);
    for _ in 0..20 {
        if error.raw_os_error() != Some(rustix::io::Errno::TXTBSY.raw_os_error()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        error = sys::execv(path, argv);
    }
    sys::errno_text(error.raw_os_error().unwrap_or(0))
}

/// A C string of `bytes`, NULs dropped: arguments and paths from the kernel carry none, and
/// one that did could not be passed on.
pub(crate) fn c_string(bytes: Vec<u8>) -> CString {
    CString::new(bytes).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|&b| b != 0);
        CString::new(bytes).unwrap_or_default()
    })
}

impl Manager {
    /// Handles `stewardctl reexec` from client `client`. Returns only if the exec failed (or
    /// was refused), with the reply saying why; the old manager goes on as before.
    pub(super) fn reexec(&mut self, client: Option<u64>) -> Reply {
        let refuse = |message: String| Reply::Error { message };
        if let Some(why) = self.reexec_refusal() {
            return refuse(why);
        }
        self.collect_armed();
        let reply = self.exec_next(client);
        self.release_armed();
        reply
    }

    /// Saves the state and execs the next manager; returns only if that failed.
    fn exec_next(&mut self, client: Option<u64>) -> Reply {
        let refuse = |message: String| Reply::Error { message };
        let exe = self.upgrade.exe.clone();
        let mut keep = Vec::new();
        let state = self.save(client, &mut keep);
        let encoded = match saved::encode(&state) {
            Ok(bytes) => bytes,
            Err(e) => return refuse(format!("{e}; steward keeps running")),
        };
        let memfd = match spawn::sealed_memfd("steward-manager-state", &encoded) {
            Ok(memfd) => memfd,
            Err(e) => {
                return refuse(format!(
                    "cannot write the manager state: {e}; steward keeps running"
                ));
            }
        };
        let mut argv = vec![exe.clone().into_os_string()];
        argv.extend(self.upgrade.args.iter().cloned());
        argv.push("--deserialize".into());
        argv.push(memfd.as_raw_fd().to_string().into());
        keep.push(memfd.as_fd());
        // The guard against a panic loop holds across upgrades.
        if let Some(ns) = crate::recovery::panicked_at() {
            argv.push("--panicked-at".into());
            argv.push(ns.to_string().into());
        }
        if let Some(pin) = &self.upgrade.pin {
            argv.push("--fallback".into());
            argv.push(pin.as_raw_fd().to_string().into());
            keep.push(pin.as_fd());
        }
        let argv: Vec<CString> = argv.into_iter().map(|a| c_string(a.into_vec())).collect();
        let argv: Vec<&CStr> = argv.iter().map(CString::as_c_str).collect();
        let path = c_string(exe.as_os_str().as_bytes().to_vec());

        log::manager(format_args!(
            "re-executing {} ({} services)",
            exe.display(),
            self.registry.len()
        ));
        // The one place fds are made to cross an exec on purpose: exactly those the state names.
        if let Err(e) = set_cloexec(&keep, false) {
            let _ = set_cloexec(&keep, true);
            return refuse(format!("cannot keep an fd across exec: {e}"));
        }
        let error = exec(&path, &argv);
        let _ = set_cloexec(&keep, true);
        log::manager(format_args!(
            "re-executing {} failed: {error}; carrying on",
            exe.display()
        ));
        refuse(format!(
            "cannot execute {}: {error}; steward {} keeps running",
            exe.display(),
            crate::version()
        ))
    }

    /// Disarms every armed executor and waits for each to say whether it took a connection: one
    /// that did is an instance the next manager is told of; the others exit. None is armed
    /// meanwhile ([`Arming::Held`]); idle executors go with the exec (their sockets are
    /// close-on-exec).
    fn collect_armed(&mut self) {
        let ids: std::collections::BTreeSet<_> = self.armed_executors.values().copied().collect();
        for &id in &ids {
            if let Some(unit) = self.registry.get_mut(id) {
                unit.io.pool.arming = Arming::Held;
                unit.io.pool.truncate(0);
            }
        }
        // An executor answers within a few system calls; one that does not is killed.
        let deadline = Instant::now() + Duration::from_millis(500);
        let armed: Vec<_> = self.armed_executors.clone().into_iter().collect();
        for (pid, id) in armed {
            let answered = self
                .registry
                .get(id)
                .and_then(|u| u.io.pool.get_armed(pid))
                .is_some_and(|armed| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    wait_readable(armed.pooled.socket.as_fd(), left)
                });
            if !answered {
                let _ = crate::sys::kill(pid.raw(), crate::config::Signal::KILL.0);
            }
            self.on_armed(id, pid);
        }
    }

    /// After an exec that failed: what [`Self::collect_armed`] held is armed again.
    fn release_armed(&mut self) {
        let held: Vec<_> = self
            .registry
            .iter()
            .filter(|(_, u)| u.io.pool.arming == Arming::Held)
            .map(|(id, _)| id)
            .collect();
        for id in held {
            if let Some(unit) = self.registry.get_mut(id) {
                unit.io.pool.arming = Arming::Works;
            }
            self.sync_pool(id);
        }
    }

    /// Why a `reexec` cannot be made now, if it cannot.
    fn reexec_refusal(&self) -> Option<String> {
        if self.shutting_down() {
            return Some("steward is shutting down".into());
        }
        let settling = self
            .registry
            .iter()
            .filter(|(_, u)| u.supervisor.settling_from_reload())
            .count()
            + self
                .stop_jobs
                .values()
                .filter(|&&j| j == Job::Retire)
                .count();
        if settling > 0 {
            return Some(format!(
                "a reload is still being applied ({settling} service(s) stopping); try again once they have stopped"
            ));
        }
        let exe = &self.upgrade.exe;
        if let Err(e) = rustix::fs::access(exe, rustix::fs::Access::EXEC_OK) {
            return Some(format!(
                "cannot re-execute {}: {e}; steward {} keeps running",
                exe.display(),
                crate::version()
            ));
        }
        None
    }

    /// Everything the next manager needs, with `client` as the one waiting for the reply; the
    /// fds it names go into `keep`.
    fn save<'a>(
        &'a self,
        client: Option<u64>,
        keep: &mut Vec<BorrowedFd<'a>>,
    ) -> saved::ManagerState {
        let now = Instant::now();
        let mut state = self.head();
        state.services = self
            .registry
            .iter()
            .map(|(id, unit)| {
                let timers: Vec<_> = Timer::ALL
                    .into_iter()
                    .filter_map(|t| {
                        let at = self.timers.deadline(id, t)?;
                        Some((t, at.saturating_duration_since(now)))
                    })
                    .collect();
                unit.save(now, &timers, keep, unit::Output::With)
            })
            .collect();
        keep.push(self.control.listener.as_fd());
        keep.push(self.notify.fd.as_fd());
        keep.extend(self.watchdog.as_ref().map(|w| w.fd()));
        state.client_fd = client
            .and_then(|id| self.control.clients.get(&id))
            .map(|c| {
                keep.push(c.fd.as_fd());
                c.fd.as_raw_fd()
            });
        state
    }

    /// The state but for the services and the waiting client.
    pub(super) fn head(&self) -> saved::ManagerState {
        saved::ManagerState {
            config: recovery::saved_config(&self.config_sources),
            ..self.bare_head()
        }
    }

    /// The state but for the services, the waiting client and the config files.
    pub(super) fn bare_head(&self) -> saved::ManagerState {
        saved::ManagerState {
            version: crate::version().to_string(),
            exe: self.upgrade.exe.as_os_str().as_bytes().to_vec(),
            config: Vec::new(),
            written_ns: monotonic_ns(),
            control_fd: self.control.listener.as_raw_fd(),
            client_fd: None,
            notify_fd: Some(self.notify.fd.as_raw_fd()),
            watchdog_fd: self.watchdog.as_ref().map(|w| w.raw_fd()),
            stop_jobs: self.saved_stop_jobs(),
            services: Vec::new(),
        }
    }

    /// The stop jobs waiting for their turn, by service name (`true`: a restart).
    pub(super) fn saved_stop_jobs(&self) -> Vec<(String, bool)> {
        self.stop_jobs
            .iter()
            .filter_map(|(&id, &job)| {
                let name = self.registry.get(id)?.name().to_string();
                Some((name, job == Job::Restart))
            })
            .collect()
    }
}

/// What a new manager checked before touching anything it was handed.
struct Prepared {
    state: saved::ManagerState,
    config: config::Confined,
    sources: Vec<(PathBuf, String)>,
    spawner: Spawner,
    fds: LoopFds,
}

/// Takes over from the manager that exec'd us, or, if we cannot, hands everything back to
/// the binary it ran (`--fallback`). Returns only on an error neither of us can recover from.
pub fn resume(resume: Resume, paths: Paths<'_>, args: Vec<OsString>) -> anyhow::Result<Finish> {
    let state_fd = sys::adopt_inherited(resume.state_fd)
        .map_err(|e| anyhow::anyhow!("--deserialize {}: {e}", resume.state_fd))?;
    let prepared = match prepare(&state_fd, &paths, &resume.came) {
        Ok(prepared) => prepared,
        Err(why) => {
            log::manager(format_args!("cannot take over: {why}"));
            let Some(fallback) = resume.fallback else {
                anyhow::bail!(
                    "cannot take over ({why}) and there is no previous binary to go back to"
                );
            };
            let error = fall_back(fallback, state_fd, &args, &why.to_string());
            anyhow::bail!("cannot take over ({why}), and going back failed too: {error}");
        }
    };
    // From here on nothing fails: the fds are checked and are ours.
    drop(state_fd);
    if let Some(fd) = resume.fallback {
        drop(sys::adopt_inherited(fd));
    }
    let old = prepared.state.version.clone();
    let written_ns = prepared.state.written_ns;
    let (manager, client) = Manager::adopt(prepared, paths, args)?;
    Ok(manager.serve(Some(Takeover {
        old,
        came: resume.came,
        took: Duration::from_nanos(monotonic_ns().saturating_sub(written_ns)),
        client,
    })))
}

/// Execs the previous binary with its own state and why we could not take it over.
fn fall_back(fallback: RawFd, state_fd: OwnedFd, args: &[OsString], why: &str) -> io::Error {
    // The state crosses this exec too, as it crossed the one that started us.
    if let Err(e) = rustix::io::fcntl_setfd(&state_fd, FdFlags::empty()) {
        return e.into();
    }
    let state_fd = state_fd.into_raw_fd();
    let path = c_string(format!("/proc/self/fd/{fallback}").into_bytes());
    let mut argv: Vec<CString> = vec![c"steward".into()];
    argv.extend(args.iter().map(|a| c_string(a.as_bytes().to_vec())));
    argv.push(c"--deserialize".into());
    argv.push(c_string(state_fd.to_string().into_bytes()));
    argv.push(c"--reexec-failed".into());
    argv.push(c_string(why.replace('\0', " ").into_bytes()));
    let argv: Vec<&CStr> = argv.iter().map(CString::as_c_str).collect();
    log::manager(format_args!("going back to the previous binary"));
    sys::execv(&path, &argv)
}

/// Reads and checks everything, acquiring nothing that a fall-back would have to give back.
fn prepare(state_fd: &OwnedFd, paths: &Paths<'_>, came: &Came) -> Result<Prepared, TakeoverError> {
    let bytes = read_all(state_fd).map_err(TakeoverError::Read)?;
    let mut state =
        saved::decode(&bytes, crate::build().state_version).map_err(TakeoverError::Decode)?;
    if let Came::Recovered(_) = came {
        for fd in forget_closed(&mut state) {
            log::manager(format_args!(
                "fd {fd} of the snapshot was closed by the event that panicked; going on without it"
            ));
        }
    }
    let sources: Vec<(PathBuf, String)> = state
        .config
        .iter()
        .map(|(path, text)| {
            (
                PathBuf::from(OsString::from_vec(path.clone())),
                text.clone(),
            )
        })
        .collect();
    // Confined as at boot: a service refused then is refused again. One that runs must have
    // a table this build reads, or it could not be supervised.
    let config = config::parse(sources.clone()).confined;
    for service in &state.services {
        if let Some(broken) = config.broken.iter().find(|b| b.name == service.name) {
            if service.state != saved::State::Failed(saved::Cause::Config) {
                let first = broken
                    .errors
                    .first()
                    .map_or(String::new(), |d| format!(": {d}"));
                return Err(TakeoverError::Config { first });
            }
        } else if !config
            .config
            .services
            .iter()
            .any(|s| s.name == service.name)
        {
            return Err(TakeoverError::UnknownService(service.name.clone()));
        }
    }
    let mut seen = HashSet::new();
    for fd in named_fds(&state) {
        if !seen.insert(fd) || fd < 0 {
            return Err(TakeoverError::FdTwice(fd));
        }
        if !sys::inherited(fd) {
            return Err(TakeoverError::FdClosed(fd));
        }
    }
    let spawner = Spawner::pin(paths.executor)?;
    // Close-on-exec, like the executor's copy: a fall-back exec drops them by itself.
    let fds = super::loop_fds()?;
    Ok(Prepared {
        state,
        config,
        sources,
        spawner,
        fds,
    })
}

/// A panic snapshot names the fds as of the last event fully handled: the one that panicked
/// may have closed some. Each is dropped from the state (a pipe of a process gone, most
/// likely); returns their numbers.
fn forget_closed(state: &mut saved::ManagerState) -> Vec<RawFd> {
    let mut gone = Vec::new();
    let mut open = |fd: RawFd| {
        let ok = sys::inherited(fd);
        if !ok {
            gone.push(fd);
        }
        ok
    };
    if state.notify_fd.is_some_and(|fd| !open(fd)) {
        state.notify_fd = None;
    }
    if state.watchdog_fd.is_some_and(|fd| !open(fd)) {
        state.watchdog_fd = None;
    }
    for s in &mut state.services {
        s.sockets.retain(|&(_, fd)| open(fd));
        s.pipes.retain(|p| open(p.fd));
        if s.writers.is_some_and(|[o, e]| !open(o) | !open(e)) {
            s.writers = None;
        }
        s.status_pipes.retain(|&(_, fd)| open(fd));
        if s.parked_fd.is_some_and(|fd| !open(fd)) {
            s.parked_fd = None;
        }
        if s.ready_fd.is_some_and(|(_, fd)| !open(fd)) {
            s.ready_fd = None;
        }
        s.stored_fds.retain(|f| open(f.fd));
        for instance in &mut s.instances {
            instance.pipes.retain(|p| open(p.fd));
        }
    }
    gone
}

fn read_all(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let file = std::fs::File::from(fd.try_clone()?);
    let len = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; len];
    // Positioned: the writer left the file offset at the end.
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// Adopts an fd the state names (checked handed over, and named once, by `prepare`), making it
/// ours alone again: nothing but the explicit spawn actions passes it on.
fn take(fd: RawFd) -> OwnedFd {
    sys::adopt_inherited(fd).unwrap_or_else(|e| {
        // Checked a moment ago, in this single thread: only a broken kernel gets here.
        unreachable!("fd {fd} was checked to be handed over: {e}")
    })
}

impl Manager {
    /// The manager a state describes, its fds adopted; with the client waiting for the reply.
    fn adopt(
        prepared: Prepared,
        paths: Paths<'_>,
        args: Vec<OsString>,
    ) -> Result<(Manager, Option<u64>), SetupError> {
        let Prepared {
            state,
            config,
            sources,
            spawner,
            fds,
        } = prepared;
        let control = Control::adopt(take(state.control_fd), paths.control);
        let notify_path = super::notify_path(paths.control);
        let notify = match state.notify_fd {
            Some(fd) => NotifySocket::adopt(take(fd), &notify_path),
            // A manager from before the notify socket existed.
            None => NotifySocket::open(&notify_path)?,
        };
        let cgroups = Cgroups::set_up(&super::cgroup_dir());
        let upgrade = Upgrade::new(PathBuf::from(OsString::from_vec(state.exe.clone())), args);
        // Pinged again at once: the exec took some of its time.
        let watchdog = state.watchdog_fd.map(|fd| Watchdog::adopt(take(fd)));
        let log_buffer = config.config.manager.log_buffer;
        let mut manager = Manager::assemble(
            Registry::default(),
            spawner,
            (fds, notify),
            cgroups,
            control,
            paths.config,
            sources,
            log_buffer,
            upgrade,
            watchdog,
        )?;
        let now = Instant::now();
        for s in state.services {
            let valid = config.config.services.iter().find(|c| c.name == s.name);
            let service = match valid {
                Some(service) => service.clone(),
                None => match config.broken.iter().find(|b| b.name == s.name) {
                    Some(broken) => broken.service(),
                    None => continue,
                },
            };
            let timers = Unit::saved_timers(&s);
            let unit = Unit::restore(service, s, log_buffer, now, &mut take);
            let id = manager.registry.insert(unit);
            manager.adopted(id, &timers, now);
        }
        // The log files are opened again by their paths, not handed over: the old manager
        // wrote every line it read before it exec'd (plain writes, nothing buffered), what it
        // did not read is still in the pipes we were handed, and a half-read line crossed in
        // the state; so appending at the end of what the paths name now continues exactly
        // where it stopped, no line lost or twice. (A file someone moved away since is not
        // written behind their back, as a reload would not either.)
        manager.set_log_files(crate::logfile::Settings::of(&config.config.manager));
        for (name, restart) in state.stop_jobs {
            if let Some(id) = manager.registry.find(&name) {
                let job = if restart { Job::Restart } else { Job::Stop };
                manager.stop_jobs.insert(id, job);
            }
        }
        let client = state.client_fd.map(|fd| {
            let id = manager.control.adopt_client(take(fd));
            if let Some(fd) = manager.control.fd(id) {
                if !manager.watch_fd(fd, Token::Client(id)) {
                    manager.control.clients.remove(&id);
                }
            }
            id
        });
        Ok((manager, client))
    }

    /// Puts an adopted unit's processes, pipes and timers back where the loop finds them.
    fn adopted(&mut self, id: crate::registry::UnitId, timers: &[(Timer, Duration)], now: Instant) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let mut pids: Vec<_> = unit.supervisor.instances().pids().collect();
        pids.extend(unit.supervisor.state().pid());
        for pipe in &unit.io.pipes {
            self.watch_fd(&pipe.fd, Token::Log(id, pipe.stream));
        }
        for (pid, pipe) in unit.io.instances.iter() {
            self.watch_fd(&pipe.fd, Token::InstanceLog(id, pid, pipe.stream));
        }
        for (pid, fd) in unit.io.status.iter() {
            self.watch_fd(fd, Token::Status(id, pid));
        }
        if let Some((pid, fd)) = &unit.io.ready_pipe {
            self.watch_fd(fd, Token::Ready(id, *pid));
        }
        for pid in pids {
            self.registry.claim(pid, id);
        }
        for &(timer, left) in timers {
            self.timers.set(id, timer, now + left);
        }
        self.watch_store(id);
        self.sync_watch(id);
        self.sync_pool(id);
    }

    /// The first turn after taking over: what happened during the exec, the reply the client
    /// waits for, and the config on disk.
    pub(super) fn took_over(&mut self, takeover: Takeover) {
        // Processes that exited while no manager was looking are zombies now, their SIGCHLD
        // pending in the inherited (blocked) mask: reap them before anything else.
        self.reap();
        let reply = match takeover.came {
            Came::Recovered(what) => {
                log::manager(format_args!(
                    "version {} recovered from a panic ({what}) in {:.1} ms (pid {}, {} services); the services' last log lines were not kept",
                    crate::version(),
                    takeover.took.as_secs_f64() * 1000.0,
                    std::process::id(),
                    self.registry.len()
                ));
                self.forget_the_gone();
                // The config on disk is not re-read: nobody asked for a change.
                return;
            }
            Came::FellBack(why) => {
                log::manager(format_args!(
                    "version {} is back (pid {}, {} services) after a failed reexec: {why}",
                    crate::version(),
                    std::process::id(),
                    self.registry.len()
                ));
                Reply::Error {
                    message: format!(
                        "reexec failed: {why}; steward {} keeps running",
                        crate::version()
                    ),
                }
            }
            Came::Upgrade => {
                log::manager(format_args!(
                    "version {} took over from version {} in {:.1} ms (pid {}, {} services)",
                    crate::version(),
                    takeover.old,
                    takeover.took.as_secs_f64() * 1000.0,
                    std::process::id(),
                    self.registry.len()
                ));
                // The services run the config the old manager loaded; whatever is on disk now
                // is applied the way a boot would, each error confined to its service.
                self.reload_after_takeover();
                Reply::Reexeced {
                    old: takeover.old,
                    new: crate::version().to_string(),
                }
            }
        };
        if let Some(id) = takeover.client {
            self.reply(id, reply);
        }
    }
}
