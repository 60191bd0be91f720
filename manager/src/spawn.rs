//! The spawn path: a service's config becomes a spawn state (its user and groups resolved to
//! numbers at that moment), handed to an idle executor of the service's pool in one message, or
//! written to a sealed memfd for a fresh executor. The manager never forks: a fresh executor is
//! cloned with CLONE_VM (clone3 straight into its cgroup, without waiting for its exec; or
//! glibc's posix_spawn on older kernels), so no page of the manager is copied, however large it
//! has grown.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use steward_protocol::{Credentials, Rlimit, SpawnState, Start, Stdio, Step};

use crate::cgroups::CgroupError;
use crate::config::{self, StdioMode, TakeoverEnv};
use crate::fd_store::Stored;
use crate::pool::{Birth, Pool, Pooled};
use crate::sockets::{Listener, Remote, takeover_key};
use crate::supervisor::Pid;
use crate::users::{ResolveError, Resolved, UserDb};

/// What a spawn hands the service besides its config.
#[derive(Clone, Copy)]
pub enum Passing<'a> {
    /// The service's own sockets (an empty slice for a service without).
    Sockets(&'a [Listener]),
    /// An accept-mode instance's connection and its `REMOTE_*` variables. For an armed
    /// executor ([`steward_protocol::Start::OnConnection`]) the fd is the listening socket it
    /// accepts the connection on, whose number the connection then takes, and the variables
    /// are placeholders it fills in.
    Instance {
        fd: BorrowedFd<'a>,
        remote: &'a [(&'static str, String)],
    },
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
    launcher: crate::sys::Launcher,
    /// The signals we ignore, which the executor must set back to their default (asked once:
    /// the manager never changes a disposition after start-up).
    ignored_signals: Vec<i32>,
    /// The sd_notify socket, for the services that talk to it.
    notify_socket: Option<std::rc::Rc<Path>>,
    /// `/etc/passwd` and `/etc/group`, parsed again only when they change.
    users: UserDb,
    /// Where `runtime_directory` and the other directory keys are made.
    directories: crate::directories::Roots,
    /// The manager's own uid and gid, which own the directories of a service without a user
    /// (asked once: the manager never changes them).
    own_ids: (u32, u32),
}

/// What an armed executor waits for a client for.
#[derive(Clone, Copy)]
pub enum Arm<'a> {
    /// An accept instance: it accepts the connection on this listener.
    Instance(&'a Listener),
    /// A lazy service's main process, on these sockets: it execs the service, which accepts.
    Main(&'a [Listener]),
    /// A keep-alive service's next main process, with these sockets: it execs the service on
    /// our word, at the restart.
    Restart(&'a [Listener]),
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
            launcher: crate::sys::Launcher::default(),
            ignored_signals: crate::sys::ignored_signals(),
            notify_socket: None,
            users: UserDb::system(),
            directories: crate::directories::Roots::system(),
            own_ids: (
                rustix::process::getuid().as_raw(),
                rustix::process::getgid().as_raw(),
            ),
        })
    }

    /// Where the directory keys' directories are made and removed.
    pub fn directories(&self) -> &crate::directories::Roots {
        &self.directories
    }

    /// Where services that speak sd_notify send their messages (`NOTIFY_SOCKET`).
    pub fn set_notify_socket(&mut self, path: PathBuf) {
        self.notify_socket = Some(path.into());
    }

    /// What is worth a log line since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Spawns the executor for `service` into the cgroup directories `cgroups` (of which
    /// `unified`, if any, is the v2 one), or hands the spawn to an idle executor of `pool`;
    /// returns its pid and the read end of its status pipe (non-blocking, close-on-exec).
    pub fn spawn(
        &mut self,
        service: &config::Service,
        passing: Passing<'_>,
        cgroups: &[PathBuf],
        unified: Option<&Path>,
        extras: Extras<'_>,
        pool: &mut Pool,
    ) -> Result<(Pid, OwnedFd), SpawnError> {
        let (credentials, notify) = self.resolve(service)?;
        let prepared = Prepared {
            service,
            credentials: credentials.as_ref(),
            passing,
            extras,
            notify: notify.as_deref(),
            cgroups,
            unified,
        };
        while let Some(pooled) = pool.take() {
            match self.hand_over(&prepared, pooled, &Start::Now) {
                Ok(spawned) => return Ok(spawned),
                // Too big for one message: a fresh executor takes this one, the idle one waits
                // for the next.
                Err(HandOver::Unfit(pooled)) => {
                    pool.put(pooled);
                    break;
                }
                // It is gone (killed while idle): the next one, or a fresh one.
                Err(HandOver::Gone) => {}
                Err(HandOver::Failed(e)) => return Err(e),
            }
        }
        self.spawn_fresh(&prepared)
    }

    /// Arms the idle executor `pooled` of `service` for its next process, `for_what`: it gets
    /// that process's spawn state and the listening sockets, and waits for a client itself.
    /// Gives the executor back, with its pid and socket, if it took the state.
    pub fn arm(
        &mut self,
        service: &config::Service,
        for_what: Arm<'_>,
        cgroups: &[PathBuf],
        unified: Option<&Path>,
        extras: Extras<'_>,
        pooled: Pooled,
    ) -> Result<Pooled, Unarmed> {
        let (credentials, notify) = match self.resolve(service) {
            Ok(resolved) => resolved,
            Err(_) => return Err(Unarmed::Idle(pooled)),
        };
        // Only the executor that accepts knows the peer.
        let remote = match for_what {
            Arm::Instance(listener) => Remote::placeholders(&listener.config.address),
            Arm::Main(_) | Arm::Restart(_) => Vec::new(),
        };
        let (passing, start) = match for_what {
            Arm::Instance(listener) => (
                Passing::Instance {
                    fd: listener.fd.as_fd(),
                    remote: &remote,
                },
                Start::OnConnection {
                    listener: listener.fd.as_raw_fd(),
                },
            ),
            Arm::Main(sockets) => (
                Passing::Sockets(sockets),
                Start::OnReadable {
                    listeners: sockets.iter().map(|l| l.fd.as_raw_fd()).collect(),
                },
            ),
            Arm::Restart(sockets) => (Passing::Sockets(sockets), Start::OnWord),
        };
        let prepared = Prepared {
            service,
            credentials: credentials.as_ref(),
            passing,
            extras,
            notify: notify.as_deref(),
            cgroups,
            unified,
        };
        let birth = pooled.birth;
        match self.hand_over(&prepared, pooled, &start) {
            Ok((pid, socket)) => Ok(Pooled { pid, socket, birth }),
            Err(HandOver::Unfit(pooled)) => Err(Unarmed::Idle(pooled)),
            // The spawn itself would fail: the client's own spawn says why, not this one.
            Err(HandOver::Failed(_)) => Err(Unarmed::Gone),
            Err(HandOver::Gone) => Err(Unarmed::Gone),
        }
    }

    /// Makes the directories of `service`, owned by whom it runs as (`credentials`, or the
    /// manager's own user): at every spawn, and again at a restart through an armed executor,
    /// whose spawn made them long before.
    pub fn make_directories(
        &self,
        service: &config::Service,
        credentials: Option<&Resolved>,
    ) -> Result<(), SpawnError> {
        let (uid, gid) = credentials.map_or(self.own_ids, |c| (c.uid, c.gid));
        crate::directories::prepare(&self.directories, service, uid, gid)
            .map_err(SpawnError::Directory)
    }

    /// What every spawn of `service` resolves first: its credentials (names are resolved now,
    /// not at load: a user created since works without a reload), its directories (made at
    /// every spawn, so one removed meanwhile is there again, owned by whom the service runs as
    /// now) and its notify socket.
    fn resolve(
        &mut self,
        service: &config::Service,
    ) -> Result<(Option<Resolved>, Option<std::rc::Rc<Path>>), SpawnError> {
        let credentials = match &service.credentials {
            Some(written) => Some(
                self.users
                    .resolve(written)
                    .map_err(SpawnError::Credentials)?,
            ),
            None => None,
        };
        self.make_directories(service, credentials.as_ref())?;
        // Shared, not borrowed: the spawn needs the spawner mutably.
        let notify = self.notify_socket.clone().filter(|_| service.notifies());
        Ok((credentials, notify))
    }

    /// The spawn state for `prepared`, reporting on `status`, for an executor born as `birth`.
    fn state(&self, prepared: &Prepared<'_>, status: BorrowedFd<'_>, birth: Birth) -> SpawnState {
        let mut state = spawn_state(
            prepared.service,
            prepared.credentials,
            prepared.passing,
            status,
            prepared.extras,
            prepared.notify,
        );
        state.reset_signals.clone_from(&self.ignored_signals);
        if birth == Birth::Spawned {
            // glibc's posix_spawn leaves its own internal signals (32 and 33) ignored in the
            // child; they survive exec, so the executor must set them back too.
            for internal in [32, 33] {
                if !state.reset_signals.contains(&internal) {
                    state.reset_signals.push(internal);
                }
            }
        }
        let born_in = match birth {
            Birth::InCgroup => prepared.unified,
            Birth::Spawned => None,
        };
        state.cgroups = prepared
            .cgroups
            .iter()
            .filter(|d| born_in.is_none_or(|dir| d.as_path() != dir))
            .map(|d| d.display().to_string())
            .collect();
        state
    }

    /// The fds of the service that cross into its executor, at the numbers its spawn state
    /// names them by.
    fn service_fds<'a>(prepared: &Prepared<'a>, state: &SpawnState) -> Vec<BorrowedFd<'a>> {
        let named: Vec<i32> = state
            .fds
            .iter()
            .copied()
            .chain(state.stdio.iter().filter_map(|s| match s {
                Stdio::Fd(fd) if *fd > 2 => Some(*fd),
                _ => None,
            }))
            .collect();
        let extras = prepared.extras;
        let mut fds: Vec<BorrowedFd<'a>> = passed_fds(prepared.passing, extras.log)
            .filter(|fd| named.contains(&fd.as_raw_fd()))
            .collect();
        fds.extend(extras.ready);
        fds.extend(handed_back(prepared.service, extras).map(|s| s.fd.as_fd()));
        fds
    }

    /// Sends an idle executor its spawn state and fds, to apply at `start`.
    fn hand_over(
        &self,
        prepared: &Prepared<'_>,
        pooled: Pooled,
        start: &Start,
    ) -> Result<(Pid, OwnedFd), HandOver> {
        // The executor reports on the pool socket: its end goes to the number of ours, which no
        // fd the state names can have.
        let state = self.state(prepared, pooled.socket.as_fd(), pooled.birth);
        let fds = Self::service_fds(prepared, &state);
        let encoded = steward_protocol::encode(&state)
            .map_err(|e| HandOver::Failed(SpawnError::Encode(e)))?;
        let numbers: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let message = steward_protocol::handover(&numbers, start, &encoded);
        if message.len() > steward_protocol::MAX_HANDOVER
            || fds.len() > steward_protocol::MAX_HANDOVER_FDS
        {
            return Err(HandOver::Unfit(pooled));
        }
        match send_with_fds(pooled.socket.as_fd(), &message, &fds) {
            Ok(()) => Ok((pooled.pid, pooled.socket)),
            Err(rustix::io::Errno::MSGSIZE | rustix::io::Errno::NOBUFS) => {
                Err(HandOver::Unfit(pooled))
            }
            Err(_) => Err(HandOver::Gone),
        }
    }

    /// Clones a fresh executor with its spawn state in a sealed memfd.
    fn spawn_fresh(&mut self, prepared: &Prepared<'_>) -> Result<(Pid, OwnedFd), SpawnError> {
        let into = self.cgroup_fd(prepared.unified);
        let (status_read, status_write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(SpawnError::Pipe)?;
        // The executor's end may stay non-blocking: its one report, a few bytes into an empty
        // pipe, cannot find it full, and the service never holds that end (close-on-exec).
        let birth = Birth::of(into.as_ref());
        let state = self.state(prepared, status_write.as_fd(), birth);
        let memfd = sealed_memfd("steward-spawn-state", &steward_protocol::encode(&state)?)
            .map_err(SpawnError::Memfd)?;

        // Exactly these fds cross into the executor, at the numbers the spawn state names;
        // everything else the manager holds is close-on-exec. The pinned executor crosses too:
        // an interpreter started for a script executor opens it by its /dev/fd path (or
        // /proc/self/fd, after posix_spawn) after the exec. The real executor closes it.
        let mut keep: Vec<BorrowedFd<'_>> =
            vec![memfd.as_fd(), status_write.as_fd(), self.pinned.as_fd()];
        keep.extend(Self::service_fds(prepared, &state));
        let fd_arg = CString::new(memfd.as_raw_fd().to_string()).expect("no NUL in a number");
        let argv: [&CStr; 3] = [self.argv0.as_c_str(), c"--deserialize", fd_arg.as_c_str()];
        match clone_executor(
            &self.exec_path,
            self.pinned.as_fd(),
            &mut self.launcher,
            &argv,
            &keep,
            into.as_ref().map(AsFd::as_fd),
        ) {
            Ok(pid) => Ok((pid, status_read)),
            // clone3 into a cgroup is not available: posix_spawn, as from now on.
            Err(Cloned::Unsupported(e)) => {
                drop(keep);
                self.unsupported(&e);
                self.spawn_fresh(prepared)
            }
            Err(Cloned::Failed(e)) => Err(SpawnError::Spawn(e)),
        }
    }

    /// An O_PATH fd on the v2 cgroup directory `unified`, to be born in (CLONE_INTO_CGROUP),
    /// where the kernel can: then the executor only joins the v1 hierarchies, if any.
    fn cgroup_fd(&self, unified: Option<&Path>) -> Option<OwnedFd> {
        unified
            .filter(|_| self.clone_into_cgroup)
            .and_then(|dir| crate::cgroups::open_dir_path(dir).ok())
    }

    /// clone3 with CLONE_INTO_CGROUP was refused for want of kernel support (`e`).
    fn unsupported(&mut self, e: &std::io::Error) {
        self.clone_into_cgroup = false;
        self.notes.push(format!(
            "clone3 with CLONE_INTO_CGROUP is not available ({e}): services join their cgroups after they start"
        ));
    }

    /// Whether executors are born in their v2 cgroup (CLONE_INTO_CGROUP): the kernel can, as
    /// far as is known yet.
    pub fn births_in_cgroups(&self) -> bool {
        self.clone_into_cgroup
    }

    /// Adds one idle executor to `pool`, born in the cgroup directory `born_in` (an O_PATH fd
    /// on the service's v2 one) where the kernel can.
    pub fn fill(
        &mut self,
        pool: &mut Pool,
        born_in: Option<BorrowedFd<'_>>,
    ) -> Result<(), SpawnError> {
        let into = born_in.filter(|_| self.clone_into_cgroup);
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(SpawnError::Pipe)?;
        // Ours only: the executor blocks on its end until its state comes.
        rustix::fs::fcntl_setfl(&ours, OFlags::NONBLOCK).map_err(SpawnError::Pipe)?;
        let birth = Birth::of(into.as_ref());
        let fd_arg = CString::new(theirs.as_raw_fd().to_string()).expect("no NUL in a number");
        let argv: [&CStr; 3] = [self.argv0.as_c_str(), c"--pooled", fd_arg.as_c_str()];
        let keep = [theirs.as_fd(), self.pinned.as_fd()];
        let pid = match clone_executor(
            &self.exec_path,
            self.pinned.as_fd(),
            &mut self.launcher,
            &argv,
            &keep,
            into,
        ) {
            Ok(pid) => pid,
            Err(Cloned::Unsupported(e)) => {
                self.unsupported(&e);
                return self.fill(pool, None);
            }
            Err(Cloned::Failed(e)) => return Err(SpawnError::Spawn(e)),
        };
        pool.put(Pooled {
            pid,
            socket: ours,
            birth,
        });
        Ok(())
    }
}

/// What a spawn knows before it picks an executor.
struct Prepared<'a> {
    service: &'a config::Service,
    credentials: Option<&'a Resolved>,
    passing: Passing<'a>,
    extras: Extras<'a>,
    notify: Option<&'a Path>,
    cgroups: &'a [PathBuf],
    unified: Option<&'a Path>,
}

/// Why an idle executor was not armed.
pub enum Unarmed {
    /// It is still idle, good for a spawn the manager hands it.
    Idle(Pooled),
    /// It is gone, or no spawn of the service can be made now.
    Gone,
}

/// Why an idle executor did not take a spawn.
enum HandOver {
    /// The state or its fds do not fit one message; the executor is still good.
    Unfit(Pooled),
    /// Its socket is closed: it died while idle.
    Gone,
    /// The spawn cannot be made by any executor.
    Failed(SpawnError),
}

/// Why cloning an executor failed.
enum Cloned {
    /// clone3 into a cgroup is not available here; the spawner uses posix_spawn from now on.
    Unsupported(std::io::Error),
    Failed(std::io::Error),
}

/// Clones the executor at `exec_path` with `argv`, passing `keep`: born in the cgroup `into`
/// (clone3, on one of `launcher`'s slots) if given, else by posix_spawn.
fn clone_executor(
    exec_path: &CStr,
    pinned: BorrowedFd<'_>,
    launcher: &mut crate::sys::Launcher,
    argv: &[&CStr],
    keep: &[BorrowedFd<'_>],
    into: Option<BorrowedFd<'_>>,
) -> Result<Pid, Cloned> {
    let pid = match into {
        Some(cgroup) => {
            match crate::sys::spawn_into_cgroup(pinned, argv, keep, cgroup, launcher) {
                Ok(pid) => pid,
                // A kernel without clone3 (before 5.3) or CLONE_INTO_CGROUP (before 5.7).
                Err(e) if is_unsupported(&e) => return Err(Cloned::Unsupported(e)),
                Err(e) => return Err(Cloned::Failed(e)),
            }
        }
        None => crate::sys::posix_spawn(exec_path, argv, keep).map_err(Cloned::Failed)?,
    };
    Pid::new(pid).ok_or_else(|| Cloned::Failed(no_pid()))
}

fn no_pid() -> std::io::Error {
    std::io::Error::other("no pid")
}

/// Sends `message` with `fds` on `socket` as one datagram, without blocking and without
/// SIGPIPE when the other end is gone.
fn send_with_fds(
    socket: BorrowedFd<'_>,
    message: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), rustix::io::Errno> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space =
        vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(rustix::io::Errno::NOBUFS);
    }
    let iov = [std::io::IoSlice::new(message)];
    loop {
        match rustix::net::sendmsg(
            socket,
            &iov,
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        ) {
            Ok(n) if n == message.len() => return Ok(()),
            // A datagram goes whole or not at all.
            Ok(_) => return Err(rustix::io::Errno::MSGSIZE),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
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
        Passing::Instance { fd, .. } => vec![fd],
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

/// A memfd holding `bytes`, sealed: whoever holds it can trust that what it reads is what we
/// wrote, and nobody can change it under them.
pub fn sealed_memfd(name: &str, bytes: &[u8]) -> std::io::Result<File> {
    let memfd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = File::from(memfd);
    file.write_all(bytes)?;
    let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL;
    // The write seal waits (up to ~150 ms) for every page to lose the references nobody but
    // the kernel holds, such as a CPU's batch of pages not yet on the LRU, and fails with EBUSY
    // if one still has one: under heavy load the batches of busy CPUs drain late. Nothing of
    // ours holds the pages, so trying again is enough (seen: the pin at start-up failing while
    // the test suite loaded both cores).
    let mut tries = 0;
    loop {
        match rustix::fs::fcntl_add_seals(&file, seals) {
            Err(rustix::io::Errno::BUSY) if tries < SEAL_TRIES => tries += 1,
            result => return result.map(|()| file).map_err(Into::into),
        }
    }
}

/// How often sealing is tried again after EBUSY.
const SEAL_TRIES: u32 = 10;

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
        Passing::Instance { fd, remote: vars } => {
            remote = vars.to_vec();
            let fd = fd.as_raw_fd();
            if service.stdio == StdioMode::Socket {
                // inetd style: the connection is stdin and stdout, stderr still goes to the log.
                stdio = [Stdio::Fd(fd), Stdio::Fd(fd), log_err];
            } else {
                fds.push(fd);
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
        path: service.exec.program().to_owned(),
        argv: service.exec.iter().map(String::from).collect(),
        env: environment(
            service,
            credentials,
            std::env::vars_os,
            &socket_env,
            &remote,
        ),
        pid_vars: pid_vars(service, !passed.is_empty()),
        stdio,
        fds,
        status_fd: status_fd.as_raw_fd(),
        working_directory: service.working_directory.to_string(),
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
/// `inherited` is called only for a service that inherits the manager's environment: std
/// copies every variable at the call, two allocations each, which every spawn would pay for.
fn environment<I: Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>>(
    service: &config::Service,
    credentials: Option<&Resolved>,
    inherited: impl FnOnce() -> I,
    sockets: &[(String, String)],
    remote: &[(&str, String)],
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    };
    if service.inherit_environment {
        for (k, v) in inherited() {
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
        set("WATCHDOG_USEC", &interval.get().as_micros().to_string());
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
            environment(&s, None, || inherited.into_iter(), &[], &[]),
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
            environment(&s, None, || inherited.into_iter(), &[], &[]),
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
