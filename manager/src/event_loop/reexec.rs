//! `reexec`: the manager replaces itself with the `steward` binary now on disk, keeping every
//! service, socket, process, counter, timer and log line.
//!
//! The old manager writes its state (`steward_protocol::reexec`) into a sealed memfd, clears
//! FD_CLOEXEC on exactly the fds the state names, and execs the binary at the path it was first
//! started from with `--deserialize FD`. Its processes stay its children across the exec (the
//! pid does not change), so the new manager reaps them; its listening sockets stay open, so
//! clients queue in the backlog for the few milliseconds it takes.
//!
//! If the exec itself fails, the old manager carries on and says why. If the new binary starts
//! but cannot take over (it cannot read the state, parse the running config, or pin the
//! executor), it has touched nothing yet: it execs the old binary back, pinned by fd for that
//! (`--fallback FD`), which takes its own state over again and answers the client with the
//! error. So a bad upgrade never costs a service.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::signalfd::SignalFd;
use nix::sys::timerfd::TimerFd;
use nix::unistd::Pid;
use rustix::fs::{Mode, OFlags};
use steward_protocol::control::{LogLine, Reply, Stream};
use steward_protocol::reexec as saved;
use steward_protocol::{StatusReport, Step};

use super::{InstancePipe, Manager, Token, Unit};
use crate::cgroups::Cgroups;
use crate::config::{self, Signal};
use crate::control::Control;
use crate::log;
use crate::logs::{Pipe, Ring, Splitter};
use crate::sockets::Listener;
use crate::spawn::{self, Spawner};
use crate::supervisor::{AfterStop, Exit, Failure, Instance, State, Supervised};
use crate::sys;

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
    /// Set when we are that previous binary, back after a failed upgrade: why it failed.
    pub failed: Option<String>,
}

/// The fds a state names, for the new manager to adopt (and the old one to keep across exec).
fn named_fds(state: &saved::ManagerState) -> Vec<RawFd> {
    let mut fds = vec![state.control_fd];
    fds.extend(state.client_fd);
    for s in &state.services {
        fds.extend(s.sockets.iter().map(|&(_, fd)| fd));
        fds.extend(s.pipes.iter().map(|p| p.fd));
        fds.extend(s.writers.iter().flatten());
        fds.extend(s.status_pipes.iter().map(|&(_, fd)| fd));
        fds.extend(s.parked_fd);
        for instance in &s.instances {
            fds.extend(instance.pipes.iter().map(|p| p.fd));
        }
    }
    fds
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn age(since: Instant) -> u64 {
    nanos(since.elapsed())
}

fn back(now: Instant, age_ns: u64) -> Instant {
    now.checked_sub(Duration::from_nanos(age_ns)).unwrap_or(now)
}

fn stream_code(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn stream_of(code: u8) -> Stream {
    if code == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    }
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

fn save_pipe(pipe: &Pipe) -> saved::Pipe {
    saved::Pipe {
        fd: pipe.fd.as_raw_fd(),
        stream: stream_code(pipe.stream),
        partial: pipe.splitter.partial().to_vec(),
    }
}

fn save_state(state: &State) -> saved::State {
    match state {
        State::Inactive => saved::State::Inactive,
        State::Listening => saved::State::Listening,
        State::Starting { pid } => saved::State::Starting { pid: pid.as_raw() },
        State::Running { pid, since } => saved::State::Running {
            pid: pid.as_raw(),
            age_ns: age(*since),
        },
        State::Exited => saved::State::Exited,
        State::Restarting => saved::State::Restarting,
        State::Stopping { pid, killed, then } => saved::State::Stopping {
            pid: pid.map(|p| p.as_raw()),
            killed: *killed,
            then_start: *then == AfterStop::Start,
        },
        State::Failed => saved::State::Failed,
    }
}

fn load_state(state: saved::State, now: Instant) -> State {
    match state {
        saved::State::Inactive => State::Inactive,
        saved::State::Listening => State::Listening,
        saved::State::Starting { pid } => State::Starting {
            pid: Pid::from_raw(pid),
        },
        saved::State::Running { pid, age_ns } => State::Running {
            pid: Pid::from_raw(pid),
            since: back(now, age_ns),
        },
        saved::State::Exited => State::Exited,
        saved::State::Restarting => State::Restarting,
        saved::State::Stopping {
            pid,
            killed,
            then_start,
        } => State::Stopping {
            pid: pid.map(Pid::from_raw),
            killed,
            then: if then_start {
                AfterStop::Start
            } else {
                AfterStop::Rest
            },
        },
        saved::State::Failed => State::Failed,
    }
}

impl Manager {
    /// Handles `stewardctl reexec` from client `client`. Returns only if the exec failed (or
    /// was refused), with the reply saying why; the old manager goes on as before.
    pub(super) fn reexec(&mut self, client: Option<u64>) -> Reply {
        let refuse = |message: String| Reply::Error { message };
        if self.shutting_down {
            return refuse("steward is shutting down".into());
        }
        let settling = self.units.iter().filter(|u| u.pending.is_some()).count();
        if settling > 0 {
            return refuse(format!(
                "a reload is still being applied ({settling} service(s) stopping); try again once they have stopped"
            ));
        }
        let exe = self.upgrade.exe.clone();
        if let Err(e) = rustix::fs::access(&exe, rustix::fs::Access::EXEC_OK) {
            return refuse(format!(
                "cannot re-execute {}: {e}; steward {} keeps running",
                exe.display(),
                crate::version()
            ));
        }
        let state = self.save(client);
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
        // `save` read every fd it names from `self`, which keeps them open through this call.
        let mut keep = named_fds(&state);
        keep.push(memfd.as_raw_fd());
        if let Some(pin) = &self.upgrade.pin {
            argv.push("--fallback".into());
            argv.push(pin.as_raw_fd().to_string().into());
            keep.push(pin.as_raw_fd());
        }
        let argv: Vec<CString> = argv
            .into_iter()
            .map(|a| CString::new(a.into_vec()).expect("arguments have no NUL"))
            .collect();
        let path = CString::new(exe.as_os_str().as_bytes()).expect("a path has no NUL");

        log::manager(format_args!(
            "re-executing {} ({} services)",
            exe.display(),
            self.units.iter().filter(|u| !u.retired).count()
        ));
        for &fd in &keep {
            if let Err(e) = sys::set_cloexec(fd, false) {
                restore_cloexec(&keep);
                return refuse(format!("cannot keep fd {fd} across exec: {e}"));
            }
        }
        // Only returns on failure; on success this process continues as the new binary. A file
        // just written may still be open for writing in some process for a moment (ETXTBSY:
        // a package manager's, or a forked child's copy of its fd); that passes, so try again,
        // briefly.
        let mut error = nix::unistd::execv(&path, &argv).unwrap_err();
        for _ in 0..20 {
            if error != nix::errno::Errno::ETXTBSY {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            error = nix::unistd::execv(&path, &argv).unwrap_err();
        }
        restore_cloexec(&keep);
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

    /// Everything the next manager needs, with `client` as the one waiting for the reply.
    fn save(&self, client: Option<u64>) -> saved::ManagerState {
        let mut instance_pipes: HashMap<Pid, Vec<saved::Pipe>> = HashMap::new();
        for (&(pid, _), entry) in &self.instance_pipes {
            instance_pipes
                .entry(pid)
                .or_default()
                .push(save_pipe(&entry.pipe));
        }
        let now = Instant::now();
        let services = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.retired)
            .map(|(id, unit)| {
                let s = &unit.service;
                let status_pipes = self
                    .status_pipes
                    .iter()
                    .filter(|(pid, _)| self.pids.get(pid) == Some(&id))
                    .map(|(pid, fd)| (pid.as_raw(), fd.as_raw_fd()))
                    .collect();
                saved::Service {
                    name: unit.name.clone(),
                    state: save_state(&s.state),
                    since_unix_ns: unit.since.duration_since(UNIX_EPOCH).map_or(0, nanos),
                    restarts: s.restarts,
                    recent_restart_ages_ns: s.recent_restarts.iter().map(|&t| age(t)).collect(),
                    pending_report: s.pending_report.map(|r| (r.step as u32, r.errno)),
                    last_exit: s.last_exit.map(save_exit),
                    last_failure: s.last_failure.as_ref().map(|f| saved::Failure {
                        step: f.step.map(|step| step as u32),
                        reason: f.reason.clone(),
                        exit: f.exit.map(save_exit),
                    }),
                    instances: s
                        .instances
                        .iter()
                        .map(|(pid, instance)| saved::Instance {
                            pid: pid.as_raw(),
                            number: instance.number,
                            age_ns: age(instance.since),
                            pipes: instance_pipes.remove(pid).unwrap_or_default(),
                        })
                        .collect(),
                    next_instance: s.next_instance,
                    sockets: unit
                        .sockets
                        .iter()
                        .filter_map(|l| {
                            let index = s.config.sockets.iter().position(|c| *c == l.config)?;
                            Some((index as u32, l.fd.as_raw_fd()))
                        })
                        .collect(),
                    watched: unit.watched,
                    oom_baseline: unit.oom_baseline,
                    log: unit
                        .log
                        .tail(None)
                        .into_iter()
                        .map(|l| saved::LogLine {
                            time_us: l.time_us,
                            name: l.name,
                            pid: l.pid,
                            stream: stream_code(l.stream),
                            text: l.text,
                        })
                        .collect(),
                    log_dropped: unit.log.dropped,
                    pipes: unit.pipes.iter().map(save_pipe).collect(),
                    writers: unit
                        .writers
                        .as_ref()
                        .map(|[o, e]| [o.as_raw_fd(), e.as_raw_fd()]),
                    status_pipes,
                    timer_ns: self
                        .timers
                        .deadlines
                        .get(&id)
                        .map(|&at| nanos(at.saturating_duration_since(now))),
                    cgroup_to_remove: self.cgroups_to_remove.contains(&id),
                    parked_fd: unit.parked.as_ref().map(|c| c.fd.as_raw_fd()),
                }
            })
            .collect();
        saved::ManagerState {
            version: crate::version().to_string(),
            exe: self.upgrade.exe.as_os_str().as_bytes().to_vec(),
            config: self
                .config_sources
                .iter()
                .map(|(path, text)| (path.as_os_str().as_bytes().to_vec(), text.clone()))
                .collect(),
            written_ns: monotonic_ns(),
            control_fd: self.control.listener.as_raw_fd(),
            client_fd: client
                .and_then(|id| self.control.clients.get(&id))
                .map(|c| c.fd.as_raw_fd()),
            services,
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the one clock both sides of the exec share.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn restore_cloexec(fds: &[RawFd]) {
    for &fd in fds {
        let _ = sys::set_cloexec(fd, true);
    }
}

/// What a new manager checked before touching anything it was handed.
struct Prepared {
    state: saved::ManagerState,
    config: config::Config,
    sources: Vec<(PathBuf, String)>,
    spawner: Spawner,
    fds: (Epoll, SignalFd, TimerFd),
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

/// Takes over from the manager that exec'd us, or, if we cannot, hands everything back to
/// the binary it ran (`--fallback`). Returns only on an error neither of us can recover from.
pub fn resume(
    resume: Resume,
    paths: Paths<'_>,
    args: Vec<OsString>,
) -> anyhow::Result<crate::pid1::Finish> {
    let state_fd = sys::adopt_fd(resume.state_fd)
        .map_err(|e| anyhow::anyhow!("--deserialize {}: {e}", resume.state_fd))?;
    let prepared = match prepare(&state_fd, &paths) {
        Ok(prepared) => prepared,
        Err(why) => {
            log::manager(format_args!("cannot take over: {why}"));
            let Some(fallback) = resume.fallback else {
                anyhow::bail!(
                    "cannot take over ({why}) and there is no previous binary to go back to"
                );
            };
            let error = fall_back(fallback, state_fd, &args, &why);
            anyhow::bail!("cannot take over ({why}), and going back failed too: {error}");
        }
    };
    // From here on nothing fails: the fds are checked and are ours.
    drop(state_fd);
    if let Some(fd) = resume.fallback {
        if let Ok(fd) = sys::adopt_fd(fd) {
            drop(fd);
        }
    }
    let old = prepared.state.version.clone();
    let written_ns = prepared.state.written_ns;
    let manager = Manager::adopt(prepared, paths, args)?;
    Ok(manager.serve(Some(super::Takeover {
        old,
        failed: resume.failed,
        took: Duration::from_nanos(monotonic_ns().saturating_sub(written_ns)),
    })))
}

/// Execs the previous binary with its own state and why we could not take it over.
fn fall_back(fallback: RawFd, state_fd: OwnedFd, args: &[OsString], why: &str) -> nix::Error {
    use std::os::fd::IntoRawFd;
    let state_fd = state_fd.into_raw_fd();
    let path = CString::new(format!("/proc/self/fd/{fallback}")).expect("no NUL in a number");
    let mut argv: Vec<CString> = vec![c"steward".into()];
    argv.extend(
        args.iter()
            .map(|a| CString::new(a.as_bytes()).expect("arguments have no NUL")),
    );
    argv.push(c"--deserialize".into());
    argv.push(CString::new(state_fd.to_string()).expect("no NUL in a number"));
    argv.push(c"--reexec-failed".into());
    argv.push(CString::new(why.replace('\0', " ")).expect("NULs replaced"));
    log::manager(format_args!("going back to the previous binary"));
    nix::unistd::execv(&path, &argv).unwrap_err()
}

/// Reads and checks everything, acquiring nothing that a fall-back would have to give back.
fn prepare(state_fd: &OwnedFd, paths: &Paths<'_>) -> Result<Prepared, String> {
    let bytes = read_all(state_fd).map_err(|e| format!("cannot read the manager state: {e}"))?;
    let state = saved::decode(&bytes, crate::build().state_version).map_err(|e| {
        format!(
            "steward {} cannot read the manager state: {e}",
            crate::version()
        )
    })?;
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
    let loaded = config::parse(sources.clone());
    let Some(config) = loaded.config else {
        let first = loaded
            .diagnostics
            .iter()
            .find(|d| !d.warning)
            .map_or(String::new(), |d| format!(": {d}"));
        return Err(format!(
            "steward {} cannot parse the config the running services were started with{first}",
            crate::version()
        ));
    };
    for service in &state.services {
        if !config.services.iter().any(|s| s.name == service.name) {
            return Err(format!(
                "the state names a service `{}` its config does not have",
                service.name
            ));
        }
    }
    let fds = named_fds(&state);
    let mut seen = HashSet::new();
    for &fd in &fds {
        if !seen.insert(fd) || fd < 0 {
            return Err(format!("the state names fd {fd} twice"));
        }
        if !sys::fd_is_open(fd) {
            return Err(format!("the state names fd {fd}, which is not open"));
        }
    }
    let spawner = Spawner::pin(paths.executor).map_err(|e| e.to_string())?;
    // Close-on-exec, like the executor's copy: a fall-back exec drops them by itself.
    let fds = super::loop_fds().map_err(|e| e.to_string())?;
    Ok(Prepared {
        state,
        config,
        sources,
        spawner,
        fds,
    })
}

fn read_all(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let file = std::fs::File::from(fd.try_clone()?);
    let len = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; len];
    // Positioned: the writer left the file offset at the end.
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

impl Manager {
    /// The manager a state describes, its fds adopted.
    fn adopt(prepared: Prepared, paths: Paths<'_>, args: Vec<OsString>) -> anyhow::Result<Manager> {
        let Prepared {
            state,
            config,
            sources,
            spawner,
            fds,
        } = prepared;
        let take = |fd: RawFd| -> OwnedFd {
            let fd = sys::adopt_fd(fd).expect("checked open by prepare");
            // Ours alone again: nothing but the explicit spawn actions passes it on.
            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
            fd
        };
        let control = Control::adopt(take(state.control_fd), paths.control);
        let cgroups = Cgroups::detect(&super::cgroup_dir());
        let upgrade = Upgrade::new(PathBuf::from(OsString::from_vec(state.exe.clone())), args);
        let mut manager = Manager::assemble(
            Vec::new(),
            spawner,
            fds,
            cgroups,
            control,
            paths.config,
            sources,
            config.manager.log_buffer,
            upgrade,
        )?;
        let now = Instant::now();
        for s in state.services {
            let service_config = config
                .services
                .iter()
                .find(|c| c.name == s.name)
                .expect("checked by prepare")
                .clone();
            let id = manager.units.len();
            let sockets = s
                .sockets
                .iter()
                .filter_map(|&(index, fd)| {
                    let fd = take(fd);
                    let config = service_config.sockets.get(index as usize)?.clone();
                    Some(Listener { config, fd })
                })
                .collect();
            let mut service = Supervised::new(service_config);
            service.state = load_state(s.state, now);
            service.restarts = s.restarts;
            service.recent_restarts = s
                .recent_restart_ages_ns
                .iter()
                .map(|&a| back(now, a))
                .collect::<VecDeque<_>>();
            service.pending_report = s.pending_report.and_then(|(step, errno)| {
                Step::from_u32(step).map(|step| StatusReport { step, errno })
            });
            service.last_exit = s.last_exit.map(load_exit);
            service.last_failure = s.last_failure.map(|f| Failure {
                step: f.step.and_then(Step::from_u32),
                reason: f.reason,
                exit: f.exit.map(load_exit),
            });
            service.next_instance = s.next_instance;
            let mut instances = BTreeMap::new();
            for instance in &s.instances {
                let pid = Pid::from_raw(instance.pid);
                instances.insert(
                    pid,
                    Instance {
                        number: instance.number,
                        since: back(now, instance.age_ns),
                    },
                );
                manager.pids.insert(pid, id);
                for p in &instance.pipes {
                    let pipe = load_pipe(p, take(p.fd));
                    let token = Token::InstanceLog(pid, pipe.stream).to_u64();
                    manager.watch_fd(&pipe.fd, token);
                    manager
                        .instance_pipes
                        .insert((pid, pipe.stream), InstancePipe { unit: id, pipe });
                }
            }
            service.instances = instances;
            if let Some(pid) = service.state.pid() {
                manager.pids.insert(pid, id);
            }
            let lines = s
                .log
                .into_iter()
                .map(|l| LogLine {
                    time_us: l.time_us,
                    name: l.name,
                    pid: l.pid,
                    stream: stream_of(l.stream),
                    text: l.text,
                })
                .collect();
            let mut unit = Unit::new(service.config.clone(), sockets, manager.log_buffer);
            unit.service = service;
            unit.log = Ring::restore(manager.log_buffer, lines, s.log_dropped);
            unit.oom_baseline = s.oom_baseline;
            unit.since = UNIX_EPOCH + Duration::from_nanos(s.since_unix_ns);
            for p in &s.pipes {
                let pipe = load_pipe(p, take(p.fd));
                manager.watch_fd(&pipe.fd, Token::Log(id, pipe.stream).to_u64());
                unit.pipes.push(pipe);
            }
            unit.writers = s.writers.map(|[o, e]| [take(o), take(e)]);
            unit.parked = s
                .parked_fd
                .map(|fd| crate::sockets::Connection::adopt(take(fd)));
            for &(pid, fd) in &s.status_pipes {
                let pid = Pid::from_raw(pid);
                let fd = take(fd);
                manager.watch_fd(&fd, Token::Status(pid).to_u64());
                manager.status_pipes.insert(pid, fd);
            }
            if let Some(left) = s.timer_ns {
                manager.timers.set(id, now + Duration::from_nanos(left));
            }
            if s.cgroup_to_remove {
                manager.cgroups_to_remove.push(id);
            }
            manager.units.push(unit);
            if s.watched {
                for listener in &manager.units[id].sockets {
                    manager.watch_fd(&listener.fd, Token::Socket(id).to_u64());
                }
                manager.units[id].watched = true;
            }
        }
        if let Some(fd) = state.client_fd {
            let id = manager.control.adopt_client(take(fd));
            if let Some(fd) = manager.control.fd(id) {
                let interest = EpollEvent::new(EpollFlags::EPOLLIN, Token::Client(id).to_u64());
                if manager.epoll.add(fd, interest).is_err() {
                    manager.control.clients.remove(&id);
                }
            }
            manager.waiting = Some(id);
        }
        Ok(manager)
    }

    fn watch_fd(&self, fd: &OwnedFd, token: u64) {
        if let Err(e) = self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            log::manager(format_args!("epoll_ctl on a handed-over fd failed: {e}"));
        }
    }
}

fn load_pipe(saved: &saved::Pipe, fd: OwnedFd) -> Pipe {
    Pipe {
        fd,
        stream: stream_of(saved.stream),
        splitter: Splitter::with_partial(saved.partial.clone()),
    }
}

impl Manager {
    /// The first turn after taking over: what happened during the exec, the reply the client
    /// waits for, and the config on disk.
    pub(super) fn took_over(&mut self, takeover: super::Takeover) {
        // Processes that exited while no manager was looking are zombies now, their SIGCHLD
        // pending in the inherited (blocked) mask: reap them before anything else.
        self.reap();
        let reply = match takeover.failed {
            Some(why) => {
                log::manager(format_args!(
                    "version {} is back (pid {}, {} services) after a failed reexec: {why}",
                    crate::version(),
                    std::process::id(),
                    self.units.len()
                ));
                Reply::Error {
                    message: format!(
                        "reexec failed: {why}; steward {} keeps running",
                        crate::version()
                    ),
                }
            }
            None => {
                log::manager(format_args!(
                    "version {} took over from version {} in {:.1} ms (pid {}, {} services)",
                    crate::version(),
                    takeover.old,
                    takeover.took.as_secs_f64() * 1000.0,
                    std::process::id(),
                    self.units.len()
                ));
                // The services run the config the old manager loaded; whatever is on disk now
                // is applied the way a reload would (a broken one changes nothing).
                let _ = self.reload();
                Reply::Reexeced {
                    old: takeover.old,
                    new: crate::version().to_string(),
                }
            }
        };
        if let Some(id) = self.waiting.take() {
            self.reply(id, reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_survives_the_crossing() {
        let now = Instant::now();
        let pid = Pid::from_raw(42);
        let states = [
            State::Inactive,
            State::Listening,
            State::Starting { pid },
            State::Running {
                pid,
                since: now - Duration::from_secs(3),
            },
            State::Exited,
            State::Restarting,
            State::Stopping {
                pid: Some(pid),
                killed: true,
                then: AfterStop::Start,
            },
            State::Stopping {
                pid: None,
                killed: false,
                then: AfterStop::Rest,
            },
            State::Failed,
        ];
        for state in states {
            let back = load_state(save_state(&state), Instant::now());
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
