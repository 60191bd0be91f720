//! The spawn path: a service's config becomes a spawn state in a sealed memfd (its user and
//! groups resolved to numbers at that moment), and the pinned executor is spawned with it. The manager never forks: the executor is cloned with
//! CLONE_VM|CLONE_VFORK (clone3 straight into its cgroup, or glibc's posix_spawn on older
//! kernels), so no page of the manager is copied, however large it has grown.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use steward_protocol::{Credentials, Rlimit, SpawnState, Stdio, Step};

use crate::cgroups::CgroupError;
use crate::config::{self, StdioMode, TakeoverEnv};
use crate::fd_store::Stored;
use crate::sockets::{Connection, Listener, takeover_key};
use crate::supervisor::Pid;
use crate::users::{ResolveError, Resolved, UserDb};

/// What a spawn hands the service besides its config.
#[derive(Clone, Copy)]
pub enum Passing<'a> {
    /// The service's own sockets (an empty slice for a service without).
    Sockets(&'a [Listener]),
    /// An accept-mode instance's connection.
    Connection(&'a Connection),
}

/// The base `PATH` of a service that does not inherit the manager's environment.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a spawn failed before the executor ran.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Its user or groups do not resolve now (reported at the executor's step for them).
    #[error("{0}")]
    Credentials(#[source] ResolveError),
    /// A directory it asks for could not be made (reported at the step of its kind).
    #[error("{0}")]
    Directory(#[source] crate::directories::DirectoryError),
    /// The service's cgroup could not be made or its limits written.
    #[error("cannot set up its cgroup: {0}")]
    Cgroup(#[source] CgroupError),
    /// The status pipe could not be made.
    #[error("cannot create the status pipe: {0}")]
    Pipe(#[source] rustix::io::Errno),
    /// An accept instance's output pipes could not be made.
    #[error("pipe: {0}")]
    LogPipe(#[source] std::io::Error),
    /// Accept mode: accepting the waiting connection failed.
    #[error("accept: {0}")]
    Accept(#[source] rustix::io::Errno),
    /// Accept mode without a socket to accept on (a config the parser refuses).
    #[error("no socket to accept on")]
    NoSocket,
    /// The spawn state did not encode.
    #[error(transparent)]
    Encode(#[from] steward_protocol::EncodeError),
    /// The memfd could not be created, written or sealed.
    #[error("cannot prepare the spawn state memfd: {0}")]
    Memfd(#[source] std::io::Error),
    /// The clone (or posix_spawn) of the executor failed.
    #[error("spawning the executor failed: {0}")]
    Spawn(#[source] std::io::Error),
}

impl SpawnError {
    /// The executor step this failure stands for, when it is one: the manager resolves the
    /// user and groups for the executor, so failing to is failing at its `user` or `group`.
    pub fn step(&self) -> Option<Step> {
        match self {
            SpawnError::Credentials(e) => Some(e.step()),
            SpawnError::Directory(e) => Some(e.kind.step()),
            SpawnError::Cgroup(_)
            | SpawnError::Pipe(_)
            | SpawnError::LogPipe(_)
            | SpawnError::Accept(_)
            | SpawnError::NoSocket
            | SpawnError::Encode(_)
            | SpawnError::Memfd(_)
            | SpawnError::Spawn(_) => None,
        }
    }
}

/// Why the executor could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// It could not be opened or read.
    #[error("cannot open the executor {path}: {source}")]
    Open {
        /// Where it was looked for.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// It is not an executable regular file.
    #[error("the executor {path} is not an executable file")]
    NotExecutable {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// It is a binary that speaks another spawn protocol, or none we can see.
    #[error(
        "the executor {path} speaks spawn protocol {found}; this steward speaks {}",
        steward_protocol::VERSION
    )]
    Protocol {
        /// Where it is.
        path: PathBuf,
        /// What it says it speaks ("none" when it carries no marker).
        found: String,
    },
    /// The copy could not be made.
    #[error("cannot pin the executor {path}: {source}")]
    Copy {
        /// Where it is.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Spawns services through an executor pinned by content: the file is copied into a sealed
/// memfd at start, so that replacing, deleting or even overwriting it in place changes nothing
/// until the manager re-executes itself.
pub struct Spawner {
    /// The sealed copy (or, where memfds may not be executed, an O_PATH fd on the file).
    pinned: OwnedFd,
    /// `/proc/self/fd/N` for the pinned fd: what posix_spawn executes.
    exec_path: CString,
    /// `argv[0]` for the executor, for `ps`.
    argv0: CString,
    /// Lines for the log (how it was pinned, a fallback to posix_spawn), until the loop takes
    /// them.
    notes: Vec<String>,
    /// Whether spawning straight into a cgroup (clone3) works here; cleared at the first
    /// refusal.
    clone_into_cgroup: bool,
    /// The stack the clone3 child runs on.
    stack: crate::sys::ChildStack,
    /// The signals we ignore, which the executor must set back to their default (asked once:
    /// the manager never changes a disposition after start-up).
    ignored_signals: Vec<i32>,
    /// The sd_notify socket, for the services that talk to it.
    notify_socket: Option<PathBuf>,
    /// `/etc/passwd` and `/etc/group`, parsed again only when they change.
    users: UserDb,
    /// Where `runtime_directory` and the other directory keys are made.
    directories: crate::directories::Roots,
}

/// What a spawn hands over beyond the service's config and sockets.
#[derive(Clone, Copy, Default)]
pub struct Extras<'a> {
    /// The write ends of the service's stdout and stderr pipes to the manager's log.
    pub log: Option<[BorrowedFd<'a>; 2]>,
    /// `ready = "fd:N"`: the write end of the readiness pipe, for fd N.
    pub ready: Option<BorrowedFd<'a>>,
    /// The fd store, handed back after the sockets.
    pub stored: &'a [Stored],
}

impl Spawner {
    /// Copies the executor at `path` and keeps the copy.
    pub fn pin(path: &Path) -> Result<Spawner, PinError> {
        let open_err = |source: std::io::Error| PinError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let stat = rustix::fs::fstat(&file).map_err(|e| open_err(e.into()))?;
        let is_file = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
        let executable = rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok();
        if !is_file || !executable {
            return Err(PinError::NotExecutable {
                path: path.to_path_buf(),
            });
        }
        let mut bytes = Vec::with_capacity(stat.st_size as usize);
        (&file).read_to_end(&mut bytes).map_err(open_err)?;
        let mut note = None;
        if bytes.starts_with(b"\x7fELF") {
            match protocol_marker(&bytes) {
                Some(v) if v == steward_protocol::VERSION.to_string() => {}
                found => {
                    return Err(PinError::Protocol {
                        path: path.to_path_buf(),
                        found: found
                            .unwrap_or_else(|| "none (it carries no protocol marker)".into()),
                    });
                }
            }
        } else {
            // A script (a wrapper that runs the real executor under strace, say) cannot say
            // what it speaks; it is the operator's choice, so it is pinned with a warning.
            note = Some(format!(
                "the executor {} is not an ELF binary: its protocol version cannot be checked",
                path.display()
            ));
        }
        let copy_err = |source: std::io::Error| PinError::Copy {
            path: path.to_path_buf(),
            source,
        };
        let pinned: OwnedFd = match sealed_memfd("steward-executor", &bytes) {
            Ok(memfd) if executable_memfd(&memfd) => memfd.into(),
            Ok(_) => {
                // vm.memfd_noexec forbids executing memfds: pin the inode instead, which
                // survives deletion and replacement by rename, but not an in-place overwrite.
                note = Some("memfds may not be executed here (vm.memfd_noexec): the executor is pinned by inode, not by content".into());
                rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| copy_err(e.into()))?
            }
            Err(e) => return Err(copy_err(e)),
        };
        let exec_path = CString::new(format!("/proc/self/fd/{}", pinned.as_raw_fd()))
            .expect("no NUL in a number");
        Ok(Spawner {
            pinned,
            exec_path,
            argv0: CString::new("steward-executor").expect("no NUL"),
            notes: note.into_iter().collect(),
            clone_into_cgroup: true,
            stack: crate::sys::ChildStack::default(),
            ignored_signals: crate::sys::ignored_signals(),
            notify_socket: None,
            users: UserDb::system(),
            directories: crate::directories::Roots::system(),
        })
    }

    /// Where the directory keys' directories are made and removed.
    pub fn directories(&self) -> &crate::directories::Roots {
        &self.directories
    }

    /// Where services that speak sd_notify send their messages (`NOTIFY_SOCKET`).
    pub fn set_notify_socket(&mut self, path: PathBuf) {
        self.notify_socket = Some(path);
    }

    /// What is worth a log line since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Spawns the executor for `service` into the cgroup directories `cgroups` (of which
    /// `unified`, if any, is the v2 one); returns its pid and the read end of its status pipe
    /// (non-blocking, close-on-exec).
    pub fn spawn(
        &mut self,
        service: &config::Service,
        passing: Passing<'_>,
        cgroups: &[PathBuf],
        unified: Option<&Path>,
        extras: Extras<'_>,
    ) -> Result<(Pid, OwnedFd), SpawnError> {
        // Names are resolved now, not at load: a user created since works without a reload.
        let credentials = match &service.credentials {
            Some(written) => Some(
                self.users
                    .resolve(written)
                    .map_err(SpawnError::Credentials)?,
            ),
            None => None,
        };
        // Made at every spawn, so one removed meanwhile (by hand, or a runtime one at a stop)
        // is there again; owned by whom the service runs as at this spawn.
        let (uid, gid) = credentials.as_ref().map_or_else(
            || {
                (
                    rustix::process::getuid().as_raw(),
                    rustix::process::getgid().as_raw(),
                )
            },
            |c| (c.uid, c.gid),
        );
        crate::directories::prepare(&self.directories, service, uid, gid)
            .map_err(SpawnError::Directory)?;
        // Born in its v2 cgroup (CLONE_INTO_CGROUP) where the kernel can: then the executor
        // only joins the v1 hierarchies, if any.
        let into = unified.filter(|_| self.clone_into_cgroup).and_then(|dir| {
            rustix::fs::open(
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
            .map(|fd| (dir, fd))
        });
        let (status_read, status_write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(SpawnError::Pipe)?;
        // Only our end is non-blocking: the executor's single report write must not fail.
        rustix::fs::fcntl_setfl(&status_write, OFlags::empty()).map_err(SpawnError::Pipe)?;

        let notify = self.notify_socket.as_deref().filter(|_| service.notifies());
        let mut state = spawn_state(
            service,
            credentials.as_ref(),
            passing,
            status_write.as_fd(),
            extras,
            notify,
        );
        state.reset_signals.clone_from(&self.ignored_signals);
        if into.is_none() {
            // glibc's posix_spawn leaves its own internal signals (32 and 33) ignored in the
            // child; they survive exec, so the executor must set them back too.
            for internal in [32, 33] {
                if !state.reset_signals.contains(&internal) {
                    state.reset_signals.push(internal);
                }
            }
        }
        state.cgroups = cgroups
            .iter()
            .filter(|d| into.as_ref().is_none_or(|(dir, _)| d.as_path() != *dir))
            .map(|d| d.display().to_string())
            .collect();
        let memfd = sealed_memfd("steward-spawn-state", &steward_protocol::encode(&state)?)
            .map_err(SpawnError::Memfd)?;

        // Exactly these fds cross into the executor, at the numbers the spawn state names;
        // everything else the manager holds is close-on-exec. The pinned executor crosses too:
        // an interpreter started for a script executor opens it by its /proc/self/fd path
        // after the exec. The real executor closes it.
        let named: Vec<i32> = state
            .fds
            .iter()
            .copied()
            .chain(state.stdio.iter().filter_map(|s| match s {
                Stdio::Fd(fd) if *fd > 2 => Some(*fd),
                _ => None,
            }))
            .collect();
        let mut keep: Vec<BorrowedFd<'_>> =
            vec![memfd.as_fd(), status_write.as_fd(), self.pinned.as_fd()];
        keep.extend(passed_fds(passing, extras.log).filter(|fd| named.contains(&fd.as_raw_fd())));
        keep.extend(extras.ready);
        keep.extend(handed_back(service, extras).map(|s| s.fd.as_fd()));
        let fd_arg = CString::new(memfd.as_raw_fd().to_string()).expect("no NUL in a number");
        let argv: [&CStr; 3] = [self.argv0.as_c_str(), c"--deserialize", fd_arg.as_c_str()];
        if let Some((_, cgroup)) = &into {
            match crate::sys::spawn_into_cgroup(
                &self.exec_path,
                &argv,
                &keep,
                cgroup.as_fd(),
                &mut self.stack,
            ) {
                Ok(pid) => return Ok((new_pid(pid)?, status_read)),
                // A kernel without clone3 (before 5.3) or CLONE_INTO_CGROUP (before 5.7):
                // posix_spawn from now on, with the executor joining every cgroup.
                Err(e) if is_unsupported(&e) => {
                    self.clone_into_cgroup = false;
                    self.notes.push(format!(
                        "clone3 with CLONE_INTO_CGROUP is not available ({e}): services join their cgroups after they start"
                    ));
                    return self.spawn(service, passing, cgroups, None, extras);
                }
                Err(e) => return Err(SpawnError::Spawn(e)),
            }
        }
        let pid =
            crate::sys::posix_spawn(&self.exec_path, &argv, &keep).map_err(SpawnError::Spawn)?;
        Ok((new_pid(pid)?, status_read))
    }
}

/// The fds of the service itself that may cross: its sockets or connection, and its log pipes
/// (of which the spawn state names those it uses).
fn passed_fds<'a>(
    passing: Passing<'a>,
    log: Option<[BorrowedFd<'a>; 2]>,
) -> impl Iterator<Item = BorrowedFd<'a>> {
    let own: Vec<BorrowedFd<'a>> = match passing {
        Passing::Sockets(listeners) => listeners.iter().map(|l| l.fd.as_fd()).collect(),
        Passing::Connection(connection) => vec![connection.fd.as_fd()],
    };
    own.into_iter().chain(log.into_iter().flatten())
}

/// The errors of clone3 that say the kernel lacks it (or CLONE_INTO_CGROUP).
fn is_unsupported(e: &std::io::Error) -> bool {
    [
        rustix::io::Errno::NOSYS,
        rustix::io::Errno::TOOBIG,
        rustix::io::Errno::INVAL,
        rustix::io::Errno::OPNOTSUPP,
    ]
    .iter()
    .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

fn new_pid(raw: i32) -> Result<Pid, SpawnError> {
    Pid::new(raw).ok_or_else(|| SpawnError::Spawn(std::io::Error::other("no pid")))
}

/// A memfd holding `bytes`, sealed: whoever holds it can trust that what it reads is what we
/// wrote, and nobody can change it under them.
pub fn sealed_memfd(name: &str, bytes: &[u8]) -> std::io::Result<File> {
    let memfd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = File::from(memfd);
    file.write_all(bytes)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(file)
}

/// Whether the kernel lets us execute this memfd (vm.memfd_noexec may strip its x bits).
fn executable_memfd(memfd: &File) -> bool {
    let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    rustix::fs::access(path.as_str(), rustix::fs::Access::EXEC_OK).is_ok()
}

/// The spawn protocol an executor binary says it speaks: the digits after
/// [`steward_protocol::EXECUTOR_MARKER`] in its bytes.
fn protocol_marker(bytes: &[u8]) -> Option<String> {
    let prefix = steward_protocol::EXECUTOR_MARKER;
    let at = bytes.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let digits: Vec<u8> = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    (!digits.is_empty()).then(|| String::from_utf8(digits).expect("ASCII digits"))
}

/// Everything the executor needs for `service`, in numbers and paths: here the fds become
/// the numbers the executor will find them at. `credentials` are the service's, resolved for
/// this spawn (`None`: it has none and keeps the manager's). `notify` is the sd_notify
/// socket, for a service that talks to it.
pub fn spawn_state(
    service: &config::Service,
    credentials: Option<&Resolved>,
    passing: Passing<'_>,
    status_fd: BorrowedFd<'_>,
    extras: Extras<'_>,
    notify: Option<&Path>,
) -> SpawnState {
    let log = extras.log;
    // Without pipes (they could not be made), the manager's own stderr is the next best log.
    let [log_out, log_err] = log.map_or([Stdio::Fd(2), Stdio::Fd(2)], |[o, e]| {
        [Stdio::Fd(o.as_raw_fd()), Stdio::Fd(e.as_raw_fd())]
    });
    let mut stdio = match &service.stdio {
        StdioMode::Log => [Stdio::Null, log_out, log_err.clone()],
        StdioMode::Null => [Stdio::Null, Stdio::Null, Stdio::Null],
        StdioMode::Inherit => [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
        // The connection or the one socket goes to 0 and 1 below; /dev/null only when there is
        // no single one to place (a config the parser refuses), rather than the manager's own
        // stdio.
        StdioMode::Socket => [Stdio::Null, Stdio::Null, log_err.clone()],
        StdioMode::Path(p) => [
            Stdio::Path(p.clone()),
            Stdio::Path(p.clone()),
            Stdio::Path(p.clone()),
        ],
    };
    let mut fds = Vec::new();
    let mut passed = Vec::new();
    let mut remote = Vec::new();
    match passing {
        Passing::Sockets([listener]) if service.stdio == StdioMode::Socket => {
            // inetd `wait` style: the listening (or bound datagram) socket itself is stdin and
            // stdout, as accept mode places a connection; stderr still goes to the log. It is
            // not at fd 3 as well, so no LISTEN_* variable announces it.
            let fd = listener.fd.as_raw_fd();
            stdio = [Stdio::Fd(fd), Stdio::Fd(fd), log_err];
        }
        Passing::Sockets(listeners) => {
            for (i, l) in listeners.iter().enumerate() {
                fds.push(l.fd.as_raw_fd());
                let key = match service.takeover_env {
                    TakeoverEnv::Flag => String::new(),
                    TakeoverEnv::Map => format!("{}:{}", takeover_key(&l.config), 3 + i),
                };
                passed.push((l.config.name.clone(), key));
            }
        }
        Passing::Connection(conn) => {
            remote = conn.remote.env();
            if service.stdio == StdioMode::Socket {
                // inetd style: the connection is stdin and stdout, stderr still goes to the log.
                let fd = conn.fd.as_raw_fd();
                stdio = [Stdio::Fd(fd), Stdio::Fd(fd), log_err];
            } else {
                fds.push(conn.fd.as_raw_fd());
                passed.push(("connection".to_string(), String::new()));
            }
        }
    }
    // The stored fds follow the sockets, at fixed numbers: the executor places them without
    // touching their flags (they are the service's own, O_NONBLOCK or not).
    let mut fds_at = Vec::new();
    if let Passing::Sockets(_) = passing {
        let first = 3 + fds.len();
        for (i, stored) in handed_back(service, extras).enumerate() {
            let target = (first + i) as i32;
            fds_at.push(steward_protocol::FdAt {
                source: stored.fd.as_raw_fd(),
                target,
            });
            // In the map, a stored fd is keyed by its name: the map passes every fd that
            // LISTEN_FDS counts.
            let key = match service.takeover_env {
                TakeoverEnv::Flag => String::new(),
                TakeoverEnv::Map => format!("{}:{target}", stored.name),
            };
            passed.push((stored.name.clone(), key));
        }
    }
    let mut socket_env = socket_environment(service.takeover_env, &passed);
    if let Some(path) = notify {
        socket_env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    }
    if let (config::Ready::Fd(n), Some(fd)) = (service.ready, extras.ready) {
        fds_at.push(steward_protocol::FdAt {
            source: fd.as_raw_fd(),
            target: n as i32,
        });
    }
    SpawnState {
        name: service.name.clone(),
        path: service.exec[0].clone(),
        argv: service.exec.clone(),
        env: environment(
            service,
            credentials,
            std::env::vars_os(),
            &socket_env,
            &remote,
        ),
        pid_vars: pid_vars(service, !passed.is_empty()),
        stdio,
        fds,
        status_fd: status_fd.as_raw_fd(),
        working_directory: service.working_directory.clone(),
        umask: service.umask,
        credentials: credentials.map(|c| Credentials {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
        }),
        rlimits: service
            .limits
            .iter()
            .map(|&(resource, value)| Rlimit { resource, value })
            .collect(),
        cgroups: Vec::new(),
        fds_at,
        reset_signals: Vec::new(),
    }
}

/// The stored fds a spawn hands back: at most `fd_store` (a reload may have lowered it since
/// they were stored; the loop closes the rest).
fn handed_back<'a>(
    service: &config::Service,
    extras: Extras<'a>,
) -> impl Iterator<Item = &'a Stored> {
    extras.stored.iter().take(service.fd_store as usize)
}

/// `LISTEN_FDS`, `LISTEN_FDNAMES` and `SOCKET_TAKEOVER` for the passed fds, given as (name,
/// map entry: empty for a connection, which has none); nothing when there are none.
/// `LISTEN_PID` is the executor's to add.
fn socket_environment(form: TakeoverEnv, passed: &[(String, String)]) -> Vec<(String, String)> {
    if passed.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = passed.iter().map(|(name, _)| name.as_str()).collect();
    let takeover = match form {
        // An accept-mode connection has no map entry: it is always announced as the flag.
        TakeoverEnv::Map if passed.iter().all(|(_, key)| !key.is_empty()) => {
            let keys: Vec<&str> = passed.iter().map(|(_, key)| key.as_str()).collect();
            keys.join(";")
        }
        TakeoverEnv::Map | TakeoverEnv::Flag => "1".to_string(),
    };
    vec![
        ("LISTEN_FDS".into(), passed.len().to_string()),
        ("LISTEN_FDNAMES".into(), names.join(":")),
        ("SOCKET_TAKEOVER".into(), takeover),
    ]
}

/// The service's environment: the base (the manager's own, or a minimal one), the user's
/// variables (from its entry as this spawn found it), the socket and peer variables, then the
/// configured ones, each later one overriding an earlier one of that name.
fn environment(
    service: &config::Service,
    credentials: Option<&Resolved>,
    inherited: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    sockets: &[(String, String)],
    remote: &[(&str, String)],
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    };
    if service.inherit_environment {
        for (k, v) in inherited {
            // A variable that is not UTF-8 cannot go through the protocol's strings; passing
            // it mangled would be worse than leaving it out.
            // The manager's own socket variables (it may itself be socket-activated) are not
            // the service's.
            if let (Some(k), Some(v)) = (utf8(&k), utf8(&v)) {
                if !k.starts_with("LISTEN_")
                    && !k.starts_with("WATCHDOG_")
                    && k != "SOCKET_TAKEOVER"
                {
                    set(k, v);
                }
            }
        }
    } else {
        set("PATH", DEFAULT_PATH);
    }
    if let Some(user) = credentials.and_then(|c| c.user_env.as_ref()) {
        set("HOME", &user.home);
        set("USER", &user.name);
        set("LOGNAME", &user.name);
    }
    for (k, v) in sockets {
        set(k, v);
    }
    for (k, v) in remote {
        set(k, v);
    }
    if let Some(interval) = service.watchdog {
        set("WATCHDOG_USEC", &interval.as_micros().to_string());
    }
    for (k, v) in &service.environment {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The variables the executor sets to its own pid: `LISTEN_PID` for a service that gets fds,
/// `WATCHDOG_PID` for one with a watchdog.
fn pid_vars(service: &config::Service, fds: bool) -> Vec<String> {
    let mut vars = Vec::new();
    if fds {
        vars.push("LISTEN_PID".to_string());
    }
    if service.watchdog.is_some() {
        vars.push("WATCHDOG_PID".to_string());
    }
    vars
}

fn utf8(s: &OsStr) -> Option<&str> {
    std::str::from_utf8(s.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn service(text: &str) -> config::Service {
        let loaded = config::load_str("t.toml", &format!("[service.s]\n{text}"));
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        loaded.config.unwrap().services.remove(0)
    }

    #[test]
    fn minimal_environment_and_overrides() {
        let s = service("exec = [\"/bin/x\"]\nenvironment = { PATH = \"/opt/bin\", A = \"1\" }\n");
        let inherited = vec![(OsString::from("SECRET"), OsString::from("x"))];
        assert_eq!(
            environment(&s, None, inherited.into_iter(), &[], &[]),
            ["PATH=/opt/bin", "A=1"]
        );
    }

    #[test]
    fn inherited_environment() {
        let s = service(
            "exec = [\"/bin/x\"]\ninherit_environment = true\nenvironment = { B = \"2\" }\n",
        );
        let inherited = vec![
            (OsString::from("B"), OsString::from("1")),
            (OsString::from("C"), OsString::from("3")),
        ];
        assert_eq!(
            environment(&s, None, inherited.into_iter(), &[], &[]),
            ["B=2", "C=3"]
        );
    }

    #[test]
    fn state_carries_numbers() {
        let s = service(
            "exec = [\"/bin/x\", \"-v\"]\nworking_directory = \"/tmp\"\numask = \"0077\"\nlimits = { nofile = 64 }\nstdio = \"null\"\n",
        );
        let (_, status) = rustix::pipe::pipe().unwrap();
        let state = spawn_state(
            &s,
            None,
            Passing::Sockets(&[]),
            status.as_fd(),
            Extras::default(),
            None,
        );
        assert_eq!(state.path, "/bin/x");
        assert_eq!(state.argv, ["/bin/x", "-v"]);
        assert_eq!(state.status_fd, status.as_raw_fd());
        assert_eq!(state.umask, 0o077);
        assert_eq!(state.working_directory, "/tmp");
        assert_eq!(
            state.rlimits,
            [Rlimit {
                resource: 7,
                value: 64
            }]
        );
        assert_eq!(state.stdio, [Stdio::Null, Stdio::Null, Stdio::Null]);
        assert!(state.credentials.is_none());
        assert!(state.pid_vars.is_empty());
        assert!(!state.env.iter().any(|e| e.starts_with("LISTEN_")));
    }

    #[test]
    fn a_lazy_stdio_socket_service_gets_its_socket_as_stdin_and_stdout() {
        let s = service(
            "exec = [\"/bin/x\"]\nlazy = true\nkeep_alive = true\nstdio = \"socket\"\n[[service.s.socket]]\nlisten = \"127.0.0.1:69\"\ntype = \"datagram\"\n",
        );
        let (_, status) = rustix::pipe::pipe().unwrap();
        let (_, out) = rustix::pipe::pipe().unwrap();
        let (_, err) = rustix::pipe::pipe().unwrap();
        // Any fd stands in for the socket: the state carries only its number.
        let (socket, _) = rustix::pipe::pipe().unwrap();
        let listeners = [Listener {
            config: s.sockets[0].clone(),
            fd: socket,
            owner: (None, None),
        }];
        let extras = Extras {
            log: Some([out.as_fd(), err.as_fd()]),
            ready: None,
            stored: &[],
        };
        let state = spawn_state(
            &s,
            None,
            Passing::Sockets(&listeners),
            status.as_fd(),
            extras,
            None,
        );
        let fd = listeners[0].fd.as_raw_fd();
        assert_eq!(
            state.stdio,
            [Stdio::Fd(fd), Stdio::Fd(fd), Stdio::Fd(err.as_raw_fd())]
        );
        assert!(state.fds.is_empty(), "nothing at fd 3");
        assert!(state.pid_vars.is_empty());
        assert!(
            !state
                .env
                .iter()
                .any(|e| e.starts_with("LISTEN_") || e.starts_with("SOCKET_TAKEOVER=")),
            "{:?}",
            state.env
        );
    }

    #[test]
    fn stored_fds_follow_the_sockets_at_fixed_numbers_named_in_both_forms() {
        let config = |form: &str| {
            service(&format!(
                "exec = [\"/bin/x\"]\nfd_store = 2\ntakeover_env = \"{form}\"\n[[service.s.socket]]\npath = \"/run/s.sock\"\nname = \"web\"\n"
            ))
        };
        let (_, status) = rustix::pipe::pipe().unwrap();
        let (socket, _) = rustix::pipe::pipe().unwrap();
        let stored: Vec<Stored> = ["conn", "conn", "over"]
            .iter()
            .map(|name| Stored {
                name: name.to_string(),
                fd: rustix::pipe::pipe().unwrap().0,
                poll: crate::fd_store::Poll::Watched,
            })
            .collect();
        for (form, takeover) in [
            ("flag", "SOCKET_TAKEOVER=1".to_string()),
            (
                "map",
                "SOCKET_TAKEOVER=/run/s.sock:3;conn:4;conn:5".to_string(),
            ),
        ] {
            let s = config(form);
            let listeners = [Listener {
                config: s.sockets[0].clone(),
                fd: socket.try_clone().unwrap(),
                owner: (None, None),
            }];
            let extras = Extras {
                stored: &stored,
                ..Extras::default()
            };
            let state = spawn_state(
                &s,
                None,
                Passing::Sockets(&listeners),
                status.as_fd(),
                extras,
                None,
            );
            assert_eq!(state.fds, [listeners[0].fd.as_raw_fd()]);
            // At most fd_store of them (a reload may have lowered it), at 4 and 5, their
            // flags untouched (fds_at, not the socket list the executor makes blocking).
            let at: Vec<(i32, i32)> = state.fds_at.iter().map(|a| (a.source, a.target)).collect();
            assert_eq!(
                at,
                [(stored[0].fd.as_raw_fd(), 4), (stored[1].fd.as_raw_fd(), 5)]
            );
            for var in [
                "LISTEN_FDS=3",
                "LISTEN_FDNAMES=web:conn:conn",
                takeover.as_str(),
            ] {
                assert!(
                    state.env.iter().any(|e| e == var),
                    "{var} in {:?}",
                    state.env
                );
            }
            assert_eq!(state.pid_vars, ["LISTEN_PID"]);
        }
    }

    #[test]
    fn the_credentials_of_this_spawn_give_the_numbers_and_the_user_variables() {
        let s = service(
            "exec = [\"/bin/x\"]\nuser = 4242\ngroup = 4243\nenvironment = { HOME = \"/override\" }\n",
        );
        let resolved = Resolved {
            uid: 4242,
            gid: 4243,
            groups: vec![10],
            user_env: Some(crate::users::UserEnv {
                name: "late".into(),
                home: "/home/late".into(),
            }),
        };
        let (_, status) = rustix::pipe::pipe().unwrap();
        let state = spawn_state(
            &s,
            Some(&resolved),
            Passing::Sockets(&[]),
            status.as_fd(),
            Extras::default(),
            None,
        );
        assert_eq!(
            state.credentials,
            Some(Credentials {
                uid: 4242,
                gid: 4243,
                groups: vec![10]
            })
        );
        // USER and LOGNAME from the entry this spawn found; `environment` still wins.
        assert_eq!(
            state.env,
            [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/override",
                "USER=late",
                "LOGNAME=late"
            ]
        );
    }

    #[test]
    fn socket_variables_in_both_takeover_forms() {
        let passed = [
            ("web".to_string(), "/run/web:3".to_string()),
            ("admin".to_string(), "admin:4".to_string()),
        ];
        let flag = socket_environment(TakeoverEnv::Flag, &passed);
        let pairs = |v: Vec<(String, String)>| -> Vec<String> {
            v.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        assert_eq!(
            pairs(flag),
            [
                "LISTEN_FDS=2",
                "LISTEN_FDNAMES=web:admin",
                "SOCKET_TAKEOVER=1"
            ]
        );
        assert_eq!(
            pairs(socket_environment(TakeoverEnv::Map, &passed)),
            [
                "LISTEN_FDS=2",
                "LISTEN_FDNAMES=web:admin",
                "SOCKET_TAKEOVER=/run/web:3;admin:4"
            ]
        );
        let connection = [("connection".to_string(), String::new())];
        assert_eq!(
            pairs(socket_environment(TakeoverEnv::Map, &connection)),
            [
                "LISTEN_FDS=1",
                "LISTEN_FDNAMES=connection",
                "SOCKET_TAKEOVER=1"
            ]
        );
        assert!(socket_environment(TakeoverEnv::Flag, &[]).is_empty());
    }
}
