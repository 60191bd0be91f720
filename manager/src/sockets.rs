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
    pub problem: String,
}

fn describe(address: &SocketAddress) -> String {
    match address {
        SocketAddress::Unix(path) => path.display().to_string(),
        SocketAddress::Inet(addr) => addr.to_string(),
    }
}

/// Creates every socket of every service, in config order. On an error, the files of the
/// sockets already created are removed again and nothing is left behind.
pub fn open_all(services: &[config::Service]) -> Result<Vec<Vec<Listener>>, SocketError> {
    let mut all: Vec<Vec<Listener>> = Vec::with_capacity(services.len());
    for service in services {
        match open_service(service, &[]) {
            Ok(listeners) => all.push(listeners),
            Err(e) => {
                remove_files(all.iter().flatten());
                return Err(e);
            }
        }
    }
    Ok(all)
}

/// Creates the sockets of one service, reusing any of `keep` whose config is unchanged (a
/// reload: clients of an unchanged socket queue instead of being refused). On an error, the
/// files of the sockets it created are removed again.
pub fn open_service(
    service: &config::Service,
    keep: &[&Listener],
) -> Result<Vec<Listener>, SocketError> {
    let mut listeners: Vec<Listener> = Vec::with_capacity(service.sockets.len());
    let mut created: Vec<usize> = Vec::new();
    for socket in &service.sockets {
        if let Some(old) = keep.iter().find(|l| l.config == *socket) {
            match old.fd.try_clone() {
                Ok(fd) => {
                    listeners.push(Listener {
                        config: socket.clone(),
                        fd,
                    });
                    continue;
                }
                Err(e) => {
                    remove_files(created.iter().map(|&i| &listeners[i]));
                    return Err(SocketError {
                        service: service.name.clone(),
                        address: describe(&socket.address),
                        problem: format!("dup: {e}"),
                    });
                }
            }
        }
        match open(service, socket) {
            Ok(fd) => {
                created.push(listeners.len());
                listeners.push(Listener {
                    config: socket.clone(),
                    fd,
                });
            }
            Err(problem) => {
                remove_files(created.iter().map(|&i| &listeners[i]));
                return Err(SocketError {
                    service: service.name.clone(),
                    address: describe(&socket.address),
                    problem,
                });
            }
        }
    }
    Ok(listeners)
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

fn open(service: &config::Service, socket: &SocketConfig) -> Result<OwnedFd, String> {
    // The manager only ever accepts from accept-mode sockets, and must never block doing so.
    // Other sockets are shared with services, which expect them blocking (O_NONBLOCK lives on
    // the open file, so it cannot differ between the manager's fd and the service's).
    let flags = if service.accept {
        SocketFlags::NONBLOCK
    } else {
        SocketFlags::empty()
    };
    let owner = socket.owner.or(service.credentials.as_ref().map(|c| c.uid));
    let group = socket.group.or(service.credentials.as_ref().map(|c| c.gid));
    open_socket(socket, flags, owner, group)
}

/// Creates, binds and (but for datagram sockets) listens on a socket; a unix socket's file
/// gets its owner, and its exact mode last.
fn open_socket(
    socket: &SocketConfig,
    flags: SocketFlags,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<OwnedFd, String> {
    let sys = |what: &'static str| move |e: Errno| format!("{what}: {e}");
    let flags = SocketFlags::CLOEXEC | flags;
    let kind = socket_type(socket.kind);
    let fd = match &socket.address {
        SocketAddress::Unix(path) => {
            let fd = rustix::net::socket_with(AddressFamily::UNIX, kind, flags, None)
                .map_err(sys("socket"))?;
            bind_unix(&fd, path, kind)?;
            if owner.is_some() || group.is_some() {
                nix::unistd::chown(
                    path,
                    owner.map(nix::unistd::Uid::from_raw),
                    group.map(nix::unistd::Gid::from_raw),
                )
                .map_err(|e| format!("chown: {}", e.desc()))?;
            }
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
pub fn listen_unix(path: &Path, mode: u32, flags: SocketFlags) -> Result<OwnedFd, String> {
    let socket = SocketConfig {
        address: SocketAddress::Unix(path.to_path_buf()),
        kind: SocketKind::Stream,
        mode,
        owner: None,
        group: None,
        backlog: 128,
        name: "control".into(),
    };
    open_socket(&socket, flags, None, None)
}

/// Binds a unix socket at `path`: parent directories created, a stale socket file from an
/// earlier run replaced, but a live listener or a file that is not a socket left alone.
fn bind_unix(fd: &OwnedFd, path: &Path, kind: SocketType) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if live(path, kind)? {
                return Err("in use: something is listening there already".into());
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale socket: {e}"))?;
        }
        Ok(_) => return Err("exists and is not a socket (it is left alone)".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect: {e}")),
    }
    let addr = SocketAddrUnix::new(path).map_err(|e| format!("bad path: {e}"))?;
    // Bound under umask 0777 the file is born mode 0, so no client can connect before the
    // chmod to the configured mode; the manager is one thread, so the umask is ours alone.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777));
    let bound = rustix::net::bind(fd, &addr);
    rustix::process::umask(old);
    bound.map_err(|e| format!("bind: {e}"))
}

/// Whether a process listens on the unix socket at `path`: a connect that is not refused.
fn live(path: &Path, kind: SocketType) -> Result<bool, String> {
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        kind,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| format!("bad path: {e}"))?;
    match rustix::net::connect(&probe, &addr) {
        Err(Errno::CONNREFUSED) | Err(Errno::NOENT) => Ok(false),
        // Connected, or a full backlog (EAGAIN): someone is there.
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INPROGRESS) => Ok(true),
        Err(e) => Err(format!("cannot tell whether it is in use: {e}")),
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
