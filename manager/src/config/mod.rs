//! The validated service table: what the config files say, checked and resolved to numbers.
//!
//! Loading never stops at the first mistake: every error (and warning) is collected with the
//! file, line and column of the key or value it is about, so one `--check` shows them all.

mod parse;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use values::{Signal, format_duration, parse_size};

/// Where a config item was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub origin: Origin,
    /// What, as a sentence fragment without the position.
    pub message: String,
    /// A warning does not make the config invalid.
    pub warning: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.warning { "warning: " } else { "" };
        write!(f, "{}: {kind}{}", self.origin, self.message)
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[manager]` table.
    pub manager: ManagerSettings,
    /// Every service, in the order the files define them (files in name order).
    pub services: Vec<Service>,
}

/// The `[manager]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerSettings {
    /// Bytes kept per service in its log ring.
    pub log_buffer: u64,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            log_buffer: 64 * 1024,
        }
    }
}

/// One `[service.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The table's name: `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// Where the table's header is.
    pub origin: Origin,
    /// argv; `exec[0]` is an absolute path.
    pub exec: Vec<String>,
    /// Whether to start (or, if lazy, start listening) when the manager starts.
    pub autostart: bool,
    /// Whether to restart the service whenever its process exits, for any reason.
    pub keep_alive: bool,
    /// Whether to wait for a client's connection before spawning. Needs at least one socket.
    pub lazy: bool,
    /// Whether to spawn one instance per accepted connection. Needs exactly one stream or
    /// seqpacket socket; implies `lazy`; excludes `keep_alive`.
    pub accept: bool,
    /// Accept mode: how many instances may run at once.
    pub max_connections: u32,
    /// Credentials, resolved to numbers; `None` keeps the manager's.
    pub credentials: Option<Credentials>,
    /// The working directory.
    pub working_directory: String,
    /// Added on top of the base environment, overriding it, in file order.
    pub environment: Vec<(String, String)>,
    /// Whether the base environment is the manager's own instead of a minimal one.
    pub inherit_environment: bool,
    /// Where fds 0, 1 and 2 go.
    pub stdio: StdioMode,
    /// The umask.
    pub umask: u32,
    /// cgroup memory limit in bytes.
    pub memory_max: Option<u64>,
    /// cgroup pids limit.
    pub tasks_max: Option<u64>,
    /// Resource limits: (`RLIMIT_*` number, value), value `u64::MAX` for infinity.
    pub limits: Vec<(u32, u64)>,
    /// Wait before a keep-alive restart of an eager service.
    pub restart_delay: Duration,
    /// Automatic restarts allowed within `start_limit_interval`.
    pub start_limit_burst: u32,
    /// The window the start limit counts restarts in.
    pub start_limit_interval: Duration,
    /// The signal that asks the service to stop.
    pub stop_signal: Signal,
    /// How long to wait after `stop_signal` before SIGKILL.
    pub stop_timeout: Duration,
    /// How `SOCKET_TAKEOVER` is written.
    pub takeover_env: TakeoverEnv,
    /// The sockets, in order: they become fds 3, 4, …
    pub sockets: Vec<SocketConfig>,
}

/// Numeric credentials of a service, and what its environment says about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The complete supplementary group list.
    pub groups: Vec<u32>,
    /// `USER`/`LOGNAME` and `HOME`, when `user` was set.
    pub user_env: Option<UserEnv>,
}

/// What the environment of a service with a `user` says about that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEnv {
    /// The user's name.
    pub name: String,
    /// The user's home directory.
    pub home: String,
}

/// The `stdio` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioMode {
    /// stdout and stderr to the manager's log, stdin from /dev/null.
    Log,
    /// All three to /dev/null.
    Null,
    /// The manager's own.
    Inherit,
    /// Accept mode, inetd style: the connection is fds 0 and 1.
    Socket,
    /// A file or tty opened read-write as 0, 1 and 2.
    Path(String),
}

/// The `takeover_env` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverEnv {
    /// `SOCKET_TAKEOVER=1`.
    Flag,
    /// `SOCKET_TAKEOVER=KEY:FD;KEY:FD`.
    Map,
}

/// One `[[service.NAME.socket]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Where it listens.
    pub address: SocketAddress,
    /// Its type.
    pub kind: SocketKind,
    /// File mode of a unix socket, exact.
    pub mode: u32,
    /// Owner of a unix socket file; `None` is the service's user.
    pub owner: Option<u32>,
    /// Group of a unix socket file; `None` is the service's group.
    pub group: Option<u32>,
    /// The listen backlog.
    pub backlog: u32,
    /// Its `LISTEN_FDNAMES` entry.
    pub name: String,
}

/// `path` or `listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP or UDP address.
    Inet(std::net::SocketAddr),
}

/// The `type` of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// SOCK_STREAM.
    Stream,
    /// SOCK_SEQPACKET.
    Seqpacket,
    /// SOCK_DGRAM.
    Datagram,
}

/// What loading produced: a config when there was no error, and every diagnostic either way.
#[derive(Debug)]
pub struct Loaded {
    /// `None` when any error was found.
    pub config: Option<Config>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The files as they were read: (path, text). A `reexec` hands them to the new manager,
    /// which parses them to know what the running services were started with.
    pub sources: Vec<(PathBuf, String)>,
}

/// Why the config could not even be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A directory without any `*.toml` file.
    #[error("{path}: no *.toml file in this directory")]
    Empty {
        /// The directory.
        path: PathBuf,
    },
}

/// Loads a config file, or every `*.toml` file of a directory in name order.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "toml") {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(LoadError::Empty {
                path: path.to_path_buf(),
            });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut sources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        sources.push((file, text));
    }
    Ok(parse(sources))
}

/// Parses files already read, as (path, text).
pub fn parse(sources: Vec<(PathBuf, String)>) -> Loaded {
    let mut loaded = parse::parse_files(&sources, &values::SystemUsers);
    loaded.sources = sources;
    loaded
}

/// Parses config text as if it were the file `name`; for tests.
#[cfg(test)]
pub fn load_str(name: &str, text: &str) -> Loaded {
    parse::parse_files(
        &[(PathBuf::from(name), text.to_string())],
        &values::SystemUsers,
    )
}
