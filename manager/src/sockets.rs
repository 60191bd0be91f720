//! The sockets steward owns on behalf of its services: created, all of them, before any service
//! is spawned, so no client can race a service's start; accepted from in accept mode; removed
//! at shutdown.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::Path;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::config::{self, SocketAddress, SocketConfig, SocketKind};

/// A socket steward created and holds.
#[derive(Debug)]
pub struct Listener {
    /// What the config says about it.
    pub config: SocketConfig,
    /// The socket: bound, listening (stream, seqpacket), close-on-exec.
    pub fd: OwnedFd,
    /// The owner and group of its file (a unix socket), as resolved when it was made.
    pub owner: (Option<u32>, Option<u32>),
}

impl Listener {
    /// A socket a previous manager handed over at a `reexec`.
    pub fn adopt(config: SocketConfig, fd: OwnedFd) -> Listener {
        let owner = owner_of(&config);
        Listener { config, fd, owner }
    }
}

/// Why a socket could not be created.
#[derive(Debug, thiserror::Error)]
#[error("service `{service}`: socket {address}: {problem}")]
pub struct SocketError {
    /// The service it belongs to.
    pub service: String,
    /// Its path or address.
    pub address: String,
    /// What went wrong.
    #[source]
    pub problem: Problem,
}

/// What went wrong creating one socket.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A system call failed.
    #[error("{call}: {errno}")]
    Sys {
        /// The call.
        call: &'static str,
        /// What the kernel said.
        #[source]
        errno: Errno,
    },
    /// Its parent directory could not be created.
    #[error("cannot create {}: {source}", dir.display())]
    Mkdir {
        /// The directory.
        dir: std::path::PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Something listens at the path already.
    #[error("in use: something is listening there already")]
    InUse,
    /// The path holds a file that is not a socket.
    #[error("exists and is not a socket (it is left alone)")]
    NotASocket,
    /// A stale socket file could not be removed.
    #[error("cannot remove the stale socket: {0}")]
    RemoveStale(#[source] std::io::Error),
    /// The path could not be inspected.
    #[error("cannot inspect: {0}")]
    Inspect(#[source] std::io::Error),
    /// Whether something listens at the path could not be told.
    #[error("cannot tell whether it is in use: {0}")]
    Probe(#[source] Errno),
    /// The path cannot be a unix socket address (too long, say).
    #[error("bad path: {0}")]
    BadPath(#[source] Errno),
}

fn sys(call: &'static str) -> impl FnOnce(Errno) -> Problem {
    move |errno| Problem::Sys { call, errno }
}

fn describe(address: &SocketAddress) -> String {
    match address {
        SocketAddress::Unix(path) => path.display().to_string(),
        SocketAddress::Inet(addr) => addr.to_string(),
    }
}

fn error(service: &config::Service, socket: &SocketConfig, problem: Problem) -> SocketError {
    SocketError {
        service: service.name.clone(),
        address: describe(&socket.address),
        problem,
    }
}

/// Creates every socket of every service, in config order. On an error, the files of the
/// sockets already created are removed again and nothing is left behind.
pub fn open_all(services: &[config::Service]) -> Result<Vec<Vec<Listener>>, SocketError> {
    let mut all: Vec<Vec<Listener>> = Vec::with_capacity(services.len());
    for service in services {
        match open_service(service) {
            Ok(listeners) => all.push(listeners),
            Err(e) => {
                remove_files(all.iter().flatten());
                return Err(e);
            }
        }
    }
    Ok(all)
}

/// Creates the sockets of one service. On an error, the files of the sockets it created are
/// removed again.
pub fn open_service(service: &config::Service) -> Result<Vec<Listener>, SocketError> {
    let mut staged = Staged::default();
    for socket in &service.sockets {
        if let Err(e) = staged.open(service, socket, &Held::default()) {
            staged.abandon();
            return Err(e);
        }
    }
    Ok(staged.commit())
}

/// The unix socket paths steward's own listeners are bound at: a reload may bind a new socket
/// there (a changed type, a path moved to another service), which replaces the old one's file
/// atomically once the reload is accepted.
#[derive(Debug, Default)]
pub struct Held(std::collections::HashSet<std::path::PathBuf>);

impl Held {
    /// The paths of `listeners`.
    pub fn of<'a>(listeners: impl Iterator<Item = &'a Listener>) -> Held {
        Held(
            listeners
                .filter_map(|l| match &l.config.address {
                    SocketAddress::Unix(path) => Some(path.clone()),
                    SocketAddress::Inet(_) => None,
                })
                .collect(),
        )
    }

    fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }

    /// Whether `address` is a unix socket path one of the listeners holds.
    pub fn has(&self, address: &SocketAddress) -> bool {
        match address {
            SocketAddress::Unix(path) => self.contains(path),
            SocketAddress::Inet(_) => false,
        }
    }
}

/// Sockets a reload has made (or kept) for a service, not yet in use: committing renames the
/// ones bound beside a path we hold over it and adjusts the kept ones; abandoning removes what
/// was made. So a reload that cannot make every socket changes nothing.
#[derive(Debug, Default)]
pub struct Staged {
    listeners: Vec<Listener>,
    /// (index into `listeners`, the temporary path it is bound at).
    renames: Vec<(usize, std::path::PathBuf)>,
    /// Indices of kept sockets whose mode, owner or backlog must be set.
    adjust: Vec<usize>,
    /// Indices of sockets this staging created (their files go when abandoned).
    created: Vec<usize>,
}

impl Staged {
    /// The sockets of `service` for a reload: those of `current` with the same config are
    /// kept as they are, those at the same address with the same type are kept and adjusted,
    /// the others are made. `held` are the paths all of steward's listeners hold now.
    pub fn for_service(
        service: &config::Service,
        current: &[Listener],
        held: &Held,
    ) -> Result<Staged, SocketError> {
        let mut staged = Staged::default();
        for socket in &service.sockets {
            let kept = current
                .iter()
                .find(|l| l.config == *socket)
                .or_else(|| current.iter().find(|l| l.config.same_endpoint(socket)));
            let result = match kept {
                Some(old) => staged.keep(service, socket, old),
                None => staged.open(service, socket, held),
            };
            if let Err(e) = result {
                staged.abandon();
                return Err(e);
            }
        }
        Ok(staged)
    }

    fn keep(
        &mut self,
        service: &config::Service,
        socket: &SocketConfig,
        old: &Listener,
    ) -> Result<(), SocketError> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&old.fd, 0)
            .map_err(|e| error(service, socket, sys("dup")(e)))?;
        if old.config != *socket {
            self.adjust.push(self.listeners.len());
        }
        self.listeners.push(Listener {
            config: socket.clone(),
            fd,
            owner: owner_of(socket),
        });
        Ok(())
    }

    fn open(
        &mut self,
        service: &config::Service,
        socket: &SocketConfig,
        held: &Held,
    ) -> Result<(), SocketError> {
        let flags = flags_for(service);
        let (uid, gid) = owner_of(socket);
        let fd = match &socket.address {
            SocketAddress::Unix(path) if held.contains(path) => {
                // Ours is bound there: bind beside it, and rename over it at commit.
                let beside = beside(path);
                let mut at = socket.clone();
                at.address = SocketAddress::Unix(beside.clone());
                let fd =
                    open_socket(&at, flags, uid, gid).map_err(|p| error(service, socket, p))?;
                self.renames.push((self.listeners.len(), beside));
                fd
            }
            _ => open_socket(socket, flags, uid, gid).map_err(|p| error(service, socket, p))?,
        };
        self.created.push(self.listeners.len());
        self.listeners.push(Listener {
            config: socket.clone(),
            fd,
            owner: (uid, gid),
        });
        Ok(())
    }

    /// Puts the sockets in place: renamed over the paths they replace, kept ones adjusted.
    /// Failures here (a rename in the directory we just bound in, a chmod of our own file)
    /// are not expected; one that happens leaves that socket as it is.
    pub fn commit(self) -> Vec<Listener> {
        let Staged {
            listeners,
            renames,
            adjust,
            ..
        } = self;
        for (i, from) in renames {
            if let SocketAddress::Unix(path) = &listeners[i].config.address {
                let _ = rustix::fs::rename(&from, path);
            }
        }
        for i in adjust {
            let l = &listeners[i];
            // Best effort, like the rename: the socket works whatever its attributes.
            let _ = adjust_socket(l);
        }
        listeners
    }

    /// Gives up: what was made is closed and its files removed.
    pub fn abandon(self) {
        // Those bound beside a path we hold have only their temporary file to remove.
        for (_, from) in &self.renames {
            let _ = std::fs::remove_file(from);
        }
        let renamed: Vec<usize> = self.renames.iter().map(|(i, _)| *i).collect();
        remove_files(
            self.created
                .iter()
                .filter(|i| !renamed.contains(i))
                .map(|&i| &self.listeners[i]),
        );
    }
}

/// A temporary path beside `path`, in the same directory (so a rename is atomic), short (a
/// unix socket path has at most 107 bytes).
fn beside(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!(".stw{}-{n}", std::process::id());
    path.parent().unwrap_or(Path::new("/")).join(name)
}

/// Mode, owner and backlog of a kept socket whose config changed in those.
fn adjust_socket(l: &Listener) -> Result<(), Errno> {
    if l.config.kind != SocketKind::Datagram {
        rustix::net::listen(&l.fd, l.config.backlog as i32)?;
    }
    if let SocketAddress::Unix(path) = &l.config.address {
        chown(path, l.owner)?;
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(l.config.mode))?;
    }
    Ok(())
}

/// Removes the files of unix sockets (at shutdown: the next start must find the path free).
pub fn remove_files<'a>(listeners: impl Iterator<Item = &'a Listener>) {
    for l in listeners {
        if let SocketAddress::Unix(path) = &l.config.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn socket_type(kind: SocketKind) -> SocketType {
    match kind {
        SocketKind::Stream => SocketType::STREAM,
        SocketKind::Seqpacket => SocketType::SEQPACKET,
        SocketKind::Datagram => SocketType::DGRAM,
    }
}

/// The manager only ever accepts from accept-mode sockets, and must never block doing so.
/// Other sockets are shared with services, which expect them blocking (O_NONBLOCK lives on
/// the open file, so it cannot differ between the manager's fd and the service's).
fn flags_for(service: &config::Service) -> SocketFlags {
    if service.accept {
        SocketFlags::NONBLOCK
    } else {
        SocketFlags::empty()
    }
}

/// The owner and group a unix socket's file gets: the socket's own, else the service's, as
/// the config resolved them when it was loaded.
fn owner_of(socket: &SocketConfig) -> (Option<u32>, Option<u32>) {
    (socket.owner, socket.group)
}

fn chown(path: &Path, (owner, group): (Option<u32>, Option<u32>)) -> Result<(), Errno> {
    if owner.is_none() && group.is_none() {
        return Ok(());
    }
    rustix::fs::chown(
        path,
        owner.map(rustix::fs::Uid::from_raw),
        group.map(rustix::fs::Gid::from_raw),
    )
}

/// Creates, binds and (but for datagram sockets) listens on a socket; a unix socket's file
/// gets its owner, and its exact mode last.
fn open_socket(
    socket: &SocketConfig,
    flags: SocketFlags,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<OwnedFd, Problem> {
    let flags = SocketFlags::CLOEXEC | flags;
    let kind = socket_type(socket.kind);
    let fd = match &socket.address {
        SocketAddress::Unix(path) => {
            let fd = rustix::net::socket_with(AddressFamily::UNIX, kind, flags, None)
                .map_err(sys("socket"))?;
            bind_unix(&fd, path, kind)?;
            chown(path, (owner, group)).map_err(sys("chown"))?;
            fd
        }
        SocketAddress::Inet(addr) => {
            let family = match addr {
                SocketAddr::V4(_) => AddressFamily::INET,
                SocketAddr::V6(_) => AddressFamily::INET6,
            };
            let fd = rustix::net::socket_with(family, kind, flags, None).map_err(sys("socket"))?;
            // A restarted steward must be able to bind again while old connections linger.
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true).map_err(sys("SO_REUSEADDR"))?;
            rustix::net::bind(&fd, addr).map_err(sys("bind"))?;
            fd
        }
    };
    if socket.kind != SocketKind::Datagram {
        rustix::net::listen(&fd, socket.backlog as i32).map_err(sys("listen"))?;
    }
    // Exactly `mode`, whatever the manager's umask; last, so that a client who may connect
    // never meets a socket that is not listening yet (bound under umask 0777, the file is
    // unreachable until then).
    if let SocketAddress::Unix(path) = &socket.address {
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(socket.mode))
            .map_err(sys("chmod"))?;
    }
    Ok(fd)
}

/// A listening unix stream socket at `path` with exactly `mode` (the control socket), with the
/// same care as a service's: parents created, a stale file replaced, a live one refused.
pub fn listen_unix(path: &Path, mode: u32, flags: SocketFlags) -> Result<OwnedFd, Problem> {
    let mut socket = SocketConfig::new("control", SocketAddress::Unix(path.to_path_buf()));
    socket.mode = mode;
    open_socket(&socket, flags, None, None)
}

/// A unix datagram socket bound at `path` with exactly `mode` (the notify socket):
/// non-blocking, close-on-exec, with the same care for the path as a service's socket.
pub fn bind_datagram(path: &Path, mode: u32) -> Result<OwnedFd, Problem> {
    let mut socket = SocketConfig::new("notify", SocketAddress::Unix(path.to_path_buf()));
    socket.mode = mode;
    socket.kind = SocketKind::Datagram;
    open_socket(&socket, SocketFlags::NONBLOCK, None, None)
}

/// Binds a unix socket at `path`: parent directories created, a stale socket file from an
/// earlier run replaced, but a live listener or a file that is not a socket left alone.
fn bind_unix(fd: &OwnedFd, path: &Path, kind: SocketType) -> Result<(), Problem> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|source| Problem::Mkdir {
                dir: parent.to_path_buf(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if live(path, kind)? {
                return Err(Problem::InUse);
            }
            std::fs::remove_file(path).map_err(Problem::RemoveStale)?;
        }
        Ok(_) => return Err(Problem::NotASocket),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Problem::Inspect(e)),
    }
    let addr = SocketAddrUnix::new(path).map_err(Problem::BadPath)?;
    // Bound under umask 0777 the file is born mode 0, so no client can connect before the
    // chmod to the configured mode; the manager is one thread, so the umask is ours alone.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777));
    let bound = rustix::net::bind(fd, &addr);
    rustix::process::umask(old);
    bound.map_err(sys("bind"))
}

/// Whether a process listens on the unix socket at `path`: a connect that is not refused.
fn live(path: &Path, kind: SocketType) -> Result<bool, Problem> {
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        kind,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(sys("socket"))?;
    let addr = SocketAddrUnix::new(path).map_err(Problem::BadPath)?;
    match rustix::net::connect(&probe, &addr) {
        Err(Errno::CONNREFUSED) | Err(Errno::NOENT) => Ok(false),
        // Connected, or a full backlog (EAGAIN): someone is there.
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INPROGRESS) => Ok(true),
        Err(e) => Err(Problem::Probe(e)),
    }
}

/// Who is at the other end of an accepted connection, for the instance's `REMOTE_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A TCP peer.
    Inet(SocketAddr),
    /// A unix peer's credentials (SO_PEERCRED).
    Unix {
        /// Its pid.
        pid: i32,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
    },
    /// Unknown (e.g. an unnamed peer whose credentials could not be read).
    Unknown,
}

impl Remote {
    /// The `REMOTE_*` variables a connection to a socket at `address` may get, each set to
    /// [`steward_protocol::REMOTE_PLACEHOLDER`], in the order of [`Remote::env`]: for the
    /// armed executor that accepts it to fill in.
    pub fn placeholders(address: &SocketAddress) -> Vec<(&'static str, String)> {
        let keys: &[&'static str] = match address {
            SocketAddress::Inet(_) => &["REMOTE_ADDR", "REMOTE_PORT"],
            SocketAddress::Unix(_) => &["REMOTE_PID", "REMOTE_UID", "REMOTE_GID"],
        };
        keys.iter()
            .map(|&k| (k, steward_protocol::REMOTE_PLACEHOLDER.to_string()))
            .collect()
    }

    /// The `REMOTE_*` variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Remote::Inet(addr) => vec![
                ("REMOTE_ADDR", addr.ip().to_string()),
                ("REMOTE_PORT", addr.port().to_string()),
            ],
            // Pid 0: the peer is outside our pid namespace, and has no pid we could name.
            Remote::Unix { pid, uid, gid } => [("REMOTE_PID", *pid)]
                .into_iter()
                .filter(|(_, pid)| *pid != 0)
                .map(|(k, pid)| (k, pid.to_string()))
                .chain([
                    ("REMOTE_UID", uid.to_string()),
                    ("REMOTE_GID", gid.to_string()),
                ])
                .collect(),
            Remote::Unknown => Vec::new(),
        }
    }
}

/// An accepted connection, for an accept-mode instance.
#[derive(Debug)]
pub struct Connection {
    /// The connection, close-on-exec and blocking.
    pub fd: OwnedFd,
    /// Its peer.
    pub remote: Remote,
}

/// Accepts one connection; `Ok(None)` when none is waiting.
pub fn accept(listener: BorrowedFd<'_>) -> Result<Option<Connection>, Errno> {
    let (fd, addr) = match rustix::net::acceptfrom_with(listener, SocketFlags::CLOEXEC) {
        Ok(accepted) => accepted,
        Err(Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e),
    };
    let remote = remote_of(fd.as_fd(), addr);
    Ok(Some(Connection { fd, remote }))
}

/// Who is at the other end: the address for TCP, the credentials for a unix peer.
fn remote_of(fd: BorrowedFd<'_>, addr: Option<rustix::net::SocketAddrAny>) -> Remote {
    match addr.map(SocketAddr::try_from) {
        Some(Ok(inet)) => Remote::Inet(inet),
        _ => match crate::sys::peer_credentials(fd) {
            Ok((pid, uid, gid)) => Remote::Unix { pid, uid, gid },
            Err(_) => Remote::Unknown,
        },
    }
}

impl Connection {
    /// A connection handed over by a previous manager (`reexec`): its peer is asked again.
    pub fn adopt(fd: OwnedFd) -> Connection {
        let addr = rustix::net::getpeername(&fd).ok().flatten();
        let remote = remote_of(fd.as_fd(), addr);
        Connection { fd, remote }
    }
}

/// The `SOCKET_TAKEOVER` map key of a socket: a unix socket's path, else its name.
pub fn takeover_key(socket: &SocketConfig) -> String {
    match &socket.address {
        SocketAddress::Unix(path) => path.display().to_string(),
        SocketAddress::Inet(_) => socket.name.clone(),
    }
}
