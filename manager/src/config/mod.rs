//! The validated service table: what the config files say, checked. User and group names
//! stay names: they are looked up at load (for warnings and socket owners) and again at every
//! spawn ([`crate::users`]).
//!
//! Loading never stops at the first mistake: every error (and warning) is collected with the
//! file, line and column of the key or value it is about, so one `--check` shows them all.

#[cfg(test)]
mod man;
mod parse;
mod values;
pub mod written;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thin_vec::ThinVec;

use crate::users::UserDb;

pub use values::{Signal, Span, format_duration, parse_size};

/// Where a config item was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// The file: shared by everything read from it, as every service keeps its origin.
    pub file: Arc<Path>,
    /// 1-based line. (u32: every service keeps its origin, and no config has 4 billion lines.)
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
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
    /// The service whose table it is about; `None` for a whole file or `[manager]`.
    pub service: Option<String>,
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

/// The `[manager]` table. Each field's default is the one [`ManagerSettings::default`] sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerSettings {
    /// `log_buffer`, default `"64K"`: bytes kept per service in its log ring.
    pub log_buffer: u64,
    /// `log_dir`, default none: also write each service's captured lines (an accept
    /// instance's tagged `NAME@N`) to `DIR/NAME.log`, and the manager's own log to
    /// `DIR/steward.log`, in the line format of `stewardctl logs`; the directory is created
    /// 0755, the files 0640. A full, read-only or failing disk drops lines (counted, and said
    /// once) and never stalls the manager; writing resumes by itself.
    pub log_dir: Option<PathBuf>,
    /// `log_max_size`, default `"1M"`: a log file that a line would take past this size is
    /// fsynced and rotated first: `NAME.log` becomes `NAME.log.1`, `.1` becomes `.2`, and so
    /// on.
    pub log_max_size: u64,
    /// `log_keep`, default `5`: rotated files kept per log (`NAME.log.1` … `NAME.log.K`); the
    /// oldest is deleted. `0` keeps none.
    pub log_keep: u32,
    /// `watchdog_device`, default none: as PID 1, a hardware watchdog (`/dev/watchdog0`)
    /// opened at start, set to `watchdog_timeout` and pinged at half of it from the loop for
    /// as long as it runs, shutdown included, so that a manager that stops looping is reset.
    pub watchdog_device: Option<PathBuf>,
    /// `watchdog_timeout`, default `"30s"`: the hardware watchdog's timeout.
    pub watchdog_timeout: Duration,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            log_buffer: 64 * 1024,
            log_dir: None,
            log_max_size: 1024 * 1024,
            log_keep: 5,
            watchdog_device: None,
            watchdog_timeout: Duration::from_secs(30),
        }
    }
}

/// A command line: its arguments in one block, each ended by a NUL (which no argument
/// holds: the parser refuses it). Every service keeps one, and a list of strings cost three
/// heap blocks for the usual program and argument.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Argv(Box<str>);

impl Argv {
    /// The arguments, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split_terminator('\0')
    }

    /// The program: the first argument (empty for no arguments).
    pub fn program(&self) -> &str {
        self.iter().next().unwrap_or_default()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Argv {
    fn from_iter<I: IntoIterator<Item = S>>(args: I) -> Argv {
        let mut block = String::new();
        for arg in args {
            block.push_str(arg.as_ref());
            block.push('\0');
        }
        Argv(block.into_boxed_str())
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The arguments joined by spaces, as a log line shows a command.
impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(arg)?;
        }
        Ok(())
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Argv {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

/// One `[service.NAME]` table. Each field's default is the one [`Service::new`] sets; only
/// `exec` must be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The table's name: `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// Where the table's header is.
    pub origin: Origin,
    /// `exec`, required: argv; `exec[0]` is an absolute path.
    pub exec: Argv,
    /// `autostart`, default `true`: start (or, if lazy, start listening) when the manager
    /// starts.
    pub autostart: bool,
    /// `keep_alive`, default `false`: restart the service whenever its process exits, for any
    /// reason.
    pub keep_alive: bool,
    /// `lazy`, default `false`: wait for a client's connection before spawning. Needs at least
    /// one socket.
    pub lazy: bool,
    /// `accept`, default `false`: spawn one instance per accepted connection. Needs exactly one
    /// stream or seqpacket socket; implies `lazy`; excludes `keep_alive`.
    pub accept: bool,
    /// `max_connections`, default `64`: accept mode, how many instances may run at once.
    pub max_connections: u32,
    /// `log_instances`, default `"failures"`: accept mode, which instances get lines in the
    /// manager's log. `"failures"` logs only an instance that fails (a step, an exit status
    /// other than 0, a signal), so that a storm of connections does not flood the console;
    /// `status NAME` counts the instances started. `"all"` also logs each instance's start and
    /// clean exit.
    pub log_instances: InstanceLog,
    /// `executor_pool`, default `2` for an accept service and `1` for a lazy one without
    /// `tasks_max`; for a keep-alive service without `tasks_max`, none until its first
    /// restart (automatic, or `stewardctl restart`) and one from then on; else `0`: how many
    /// executors wait, exec'd already and in the service's cgroup, for the connection that
    /// spawns it, or for a keep-alive service's next restart (0 to 16). That spawn then costs one message to one of
    /// them instead of starting an executor. An accept service's are armed: each holds its
    /// instance's spawn state and accepts the connection itself, so that a client wakes only
    /// that process. A lazy service's first one is armed too: it holds the main process's spawn
    /// state and the sockets, and execs the service when a client waits, for the service to
    /// accept. A keep-alive service's first one is armed while the service runs, unless it has
    /// a `user` or `group` or a `stdio` path: it takes every step of the next main process at
    /// once (its fd store as it is, armed again when the store changes) and execs it on the
    /// manager's word at the restart. Each idle one is a process of about 176 KiB resident,
    /// 28 KiB of it its own (the rest is the executor's text, shared), counted in the
    /// service's `memory_max` and `tasks_max`. Only for lazy, accept and keep-alive services.
    pub executor_pool: ExecutorPool,
    /// `user`, `group`, `supplementary_groups`, default the manager's own: names or numbers,
    /// looked up in /etc/passwd and /etc/group (never NSS) at load and again at every spawn;
    /// `group` defaults to the user's primary group.
    // Boxed: most services have none, and inline it would cost every unit 150 bytes.
    pub credentials: Option<Box<Credentials>>,
    /// `working_directory`, default `"/"`.
    // The default borrowed: a copy of it would cost every unit a 32-byte block of heap.
    pub working_directory: Cow<'static, str>,
    /// `environment`, default none: added on top of the base environment, overriding it, in
    /// file order.
    pub environment: ThinVec<(String, String)>,
    /// `inherit_environment`, default `false`: whether the base environment is the manager's
    /// own instead of a minimal one.
    pub inherit_environment: bool,
    /// `stdio`, default `"log"`: where fds 0, 1 and 2 go.
    pub stdio: StdioMode,
    /// `umask`, default `"0022"`.
    pub umask: u32,
    /// `memory_max`, default none: the cgroup memory limit, in bytes or with K, M or G.
    pub memory_max: Option<u64>,
    /// `tasks_max`, default none: the cgroup pids limit.
    pub tasks_max: Option<u64>,
    /// `limits`, default none: resource limits, a table of name to value (`nofile`, `nproc`,
    /// `core`, `memlock`, …; `"infinity"` for no limit).
    pub limits: ThinVec<(u32, u64)>,
    /// `restart_delay`, default `"100ms"`: the wait before a keep-alive restart of an eager
    /// service.
    pub restart_delay: Span,
    /// `start_limit_burst`, default `5`: automatic restarts allowed within
    /// `start_limit_interval`.
    pub start_limit_burst: u32,
    /// `start_limit_interval`, default `"10s"`: the window the start limit counts restarts in.
    pub start_limit_interval: Span,
    /// `start_limit_cooldown`, default `"5m"`: a service failed at its start limit is started
    /// again (a lazy one: listens again) this long afterwards, with fresh counters; `"none"`
    /// leaves it failed until a start by hand.
    pub start_limit_cooldown: Option<Span>,
    /// `stop_signal`, default `"SIGTERM"`: the signal that asks the service to stop.
    pub stop_signal: Signal,
    /// `stop_timeout`, default `"5s"`: how long to wait after `stop_signal` before SIGKILL.
    pub stop_timeout: Span,
    /// `takeover_env`, default `"flag"`: how `SOCKET_TAKEOVER` is written.
    pub takeover_env: TakeoverEnv,
    /// `ready`, default `"exec"`: when a started service counts as ready.
    pub ready: Ready,
    /// `start_timeout`, default `"90s"`: readiness must come within this long of the spawn;
    /// `"infinity"` waits for ever.
    pub start_timeout: Option<Span>,
    /// `after`, default none: services this one starts after (order only).
    pub after: ThinVec<Dependency>,
    /// `requires`, default none: services this one needs; implies `after`.
    pub requires: ThinVec<Dependency>,
    /// `notify_access`, default `"main"`: whose sd_notify messages count.
    pub notify_access: NotifyAccess,
    /// `watchdog`, default none: once ready, the service must send `WATCHDOG=1` at least this
    /// often, or it is stopped with `watchdog_signal` and handled as crashed.
    pub watchdog: Option<Span>,
    /// `watchdog_signal`, default `"SIGABRT"`: what a missed watchdog sends.
    pub watchdog_signal: Signal,
    /// `fd_store`, default `0`: how many fds steward keeps for the service (sd_notify
    /// `FDSTORE=1`), across its restarts and steward's reexecs, and hands to its next process
    /// after its sockets; `stop` empties the store.
    pub fd_store: u32,
    /// `runtime_directory`, default `[]`: names (relative, no `..`) of directories made under
    /// /run before each spawn, owned by the service's user and group with `directory_mode`,
    /// and removed with what they hold when the service stops (not on a restart).
    pub runtime_directory: ThinVec<String>,
    /// `state_directory`, default `[]`: likewise under /var/lib; kept.
    pub state_directory: ThinVec<String>,
    /// `cache_directory`, default `[]`: likewise under /var/cache; kept.
    pub cache_directory: ThinVec<String>,
    /// `logs_directory`, default `[]`: likewise under /var/log; kept.
    pub logs_directory: ThinVec<String>,
    /// `directory_mode`, default `"0755"`: the mode of those directories.
    pub directory_mode: u32,
    /// `[[service.NAME.socket]]`, default none: the sockets, in order; they become fds 3, 4, …
    pub sockets: ThinVec<SocketConfig>,
}

impl Service {
    /// A service of that name with every default, and no `exec` yet.
    pub fn new(name: String, origin: Origin) -> Service {
        Service {
            name,
            origin,
            exec: Argv::default(),
            autostart: true,
            keep_alive: false,
            lazy: false,
            accept: false,
            max_connections: 64,
            log_instances: InstanceLog::Failures,
            executor_pool: ExecutorPool::Keep(0),
            credentials: None,
            working_directory: Cow::Borrowed("/"),
            environment: ThinVec::new(),
            inherit_environment: false,
            stdio: StdioMode::Log,
            umask: 0o022,
            memory_max: None,
            tasks_max: None,
            limits: ThinVec::new(),
            restart_delay: Span::from_millis(100),
            start_limit_burst: 5,
            start_limit_interval: Span::from_secs(10),
            start_limit_cooldown: Some(Span::from_secs(300)),
            stop_signal: Signal::TERM,
            stop_timeout: Span::from_secs(5),
            takeover_env: TakeoverEnv::Flag,
            ready: Ready::Exec,
            start_timeout: Some(Span::from_secs(90)),
            after: ThinVec::new(),
            requires: ThinVec::new(),
            notify_access: NotifyAccess::Main,
            watchdog: None,
            watchdog_signal: Signal::ABRT,
            fd_store: 0,
            runtime_directory: ThinVec::new(),
            state_directory: ThinVec::new(),
            cache_directory: ThinVec::new(),
            logs_directory: ThinVec::new(),
            directory_mode: 0o755,
            sockets: ThinVec::new(),
        }
    }

    /// Every service this one waits for at start: `after` and `requires`, each once.
    pub fn waits_for(&self) -> impl Iterator<Item = &str> {
        let after = self.after.iter().map(|d| d.name.as_str());
        let requires = self.requires.iter().map(|d| d.name.as_str());
        let mut seen = std::collections::HashSet::new();
        requires.chain(after).filter(move |name| seen.insert(*name))
    }

    /// Whether this service needs `NOTIFY_SOCKET`.
    pub fn notifies(&self) -> bool {
        self.ready == Ready::Notify || self.watchdog.is_some() || self.fd_store > 0
    }

    /// Whether `other` is the same service but for where it was written.
    pub fn same_as(&self, other: &Service) -> bool {
        let mut other = other.clone();
        other.origin = self.origin.clone();
        *self == other
    }
}

/// The `user`, `group` and `supplementary_groups` of a service, as written: names are looked
/// up in `/etc/passwd` and `/etc/group` at every spawn, so a user created after the config was
/// loaded works at the next spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `user`; not set: the manager's.
    pub user: Option<WrittenId>,
    /// `group`; not set: the user's primary group (or the manager's group, without `user`).
    pub group: Option<WrittenId>,
    /// `supplementary_groups`: the complete list; no others are kept.
    pub supplementary_groups: Vec<WrittenId>,
}

/// A user or group as the config writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    /// A number (an integer, or a string of digits): needs no entry.
    Number(u32),
    /// A name, looked up when used.
    Name(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Name(name) => write!(f, "\"{name}\""),
        }
    }
}

/// An [`Id`] with where it was written (for the warnings about it; two configs that name the
/// same id are the same wherever they wrote it).
#[derive(Debug, Clone, Eq)]
pub struct WrittenId {
    /// What was written.
    pub id: Id,
    /// Where.
    pub origin: Origin,
}

impl PartialEq for WrittenId {
    fn eq(&self, other: &WrittenId) -> bool {
        self.id == other.id
    }
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
    /// inetd style, stderr to the log: in accept mode (`nowait`) the connection is fds 0 and 1;
    /// on a lazy service with one socket (`wait`) the listening socket itself is.
    Socket,
    /// A file or tty opened read-write as 0, 1 and 2.
    Path(String),
}

/// The `executor_pool` key: how many idle executors a service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorPool {
    /// This many, as written, or the default of a socket service (or of one that has none).
    Keep(u32),
    /// A keep-alive service's default: none while it has not restarted since it was started
    /// (a service that never exits costs no idle process), one from its first restart on,
    /// automatic or by hand (the next one is likely to come, and it then costs one message
    /// and the exec).
    OnceRestarted,
}

impl ExecutorPool {
    /// How many, for a service that has `restarted` since it was started, or not.
    pub fn size(self, restarted: bool) -> usize {
        match self {
            ExecutorPool::Keep(n) => n as usize,
            ExecutorPool::OnceRestarted => usize::from(restarted),
        }
    }
}

/// The `log_instances` key: which accept instances the manager's log tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceLog {
    /// Each one's start and exit.
    All,
    /// Only those that fail.
    Failures,
}

/// The `ready` key: when a started service counts as ready (`starting` → `running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Once its program is exec'd.
    Exec,
    /// When it sends `READY=1` to `$NOTIFY_SOCKET`.
    Notify,
    /// When it writes a line to this fd (the s6 / dinit notification fd).
    Fd(u32),
    /// When it exits with status 0 (a setup task).
    Exit,
}

/// The `notify_access` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyAccess {
    /// Only the main process (as `MAINPID=` may change it).
    Main,
    /// Any process of the service's cgroup or process tree.
    All,
}

/// A name in `after` or `requires`, with where it was written (for the errors about it; two
/// configs that name the same services are the same wherever they wrote them).
#[derive(Debug, Clone, Eq)]
pub struct Dependency {
    /// The service named.
    pub name: String,
    /// Where.
    pub origin: Origin,
}

impl PartialEq for Dependency {
    fn eq(&self, other: &Dependency) -> bool {
        self.name == other.name
    }
}

/// The `takeover_env` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverEnv {
    /// `SOCKET_TAKEOVER=1`.
    Flag,
    /// `SOCKET_TAKEOVER=KEY:FD;KEY:FD`.
    Map,
}

/// One `[[service.NAME.socket]]` table. Each field's default is the one
/// [`SocketConfig::new`] sets; `path` or `listen` must be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// `path` (a unix socket) or `listen` (`ADDR:PORT`), required: where it listens.
    pub address: SocketAddress,
    /// `type`, default `"stream"`.
    pub kind: SocketKind,
    /// `mode`, default `"0600"`: file mode of a unix socket, exact.
    pub mode: u32,
    /// `owner`, default the service's user: owner of a unix socket file, resolved when the
    /// config is loaded (sockets are made then); `None` leaves the manager's, also when the
    /// name was unknown at load.
    pub owner: Option<u32>,
    /// `group`, default the service's group: group of a unix socket file, resolved likewise.
    pub group: Option<u32>,
    /// `backlog`, default `128`: the listen backlog.
    pub backlog: u32,
    /// `name`, default the service's name: its `LISTEN_FDNAMES` entry.
    pub name: String,
}

impl SocketConfig {
    /// A socket of `service` at `address` with every default.
    pub fn new(service: &str, address: SocketAddress) -> SocketConfig {
        SocketConfig {
            address,
            kind: SocketKind::Stream,
            mode: 0o600,
            owner: None,
            group: None,
            backlog: 128,
            name: service.to_string(),
        }
    }

    /// Whether `other` listens at the same address with the same type: the same socket, but
    /// for attributes that can be changed on it in place (mode, owner, backlog, name).
    pub fn same_endpoint(&self, other: &SocketConfig) -> bool {
        self.address == other.address && self.kind == other.kind
    }
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
    /// What boots when there were errors: each error stays with its service.
    pub confined: Confined,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The files as they were read: (path, text). A `reexec` hands them to the new manager,
    /// which parses them to know what the running services were started with.
    pub sources: Vec<(PathBuf, String)>,
}

/// A config with its errors confined to the services they are about: what a boot starts, so
/// that one typo in one table never keeps the rest of the board down.
#[derive(Debug, Clone)]
pub struct Confined {
    /// The `[manager]` table (its defaults where it had errors) and every service without an
    /// error of its own.
    pub config: Config,
    /// The services whose own table has errors, each once (a name defined twice is here,
    /// with both definitions refused).
    pub broken: Vec<Broken>,
}

/// A service refused for the errors in its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Its name.
    pub name: String,
    /// Where it is (first) defined.
    pub origin: Origin,
    /// Its errors, in file order.
    pub errors: Vec<Diagnostic>,
}

impl Broken {
    /// The failure it is listed with: `config: FILE:LINE:COL: message`, each error of it.
    pub fn reason(&self) -> String {
        let errors: Vec<String> = self.errors.iter().map(|d| format!("config: {d}")).collect();
        errors.join("; ")
    }

    /// The stand-in service it is known by: a name with nothing to run, no sockets and no
    /// dependencies, since nothing in the broken table can be trusted.
    pub fn service(&self) -> Service {
        Service::new(self.name.clone(), self.origin.clone())
    }
}

impl Confined {
    /// Whether there is any service at all, broken or not, to supervise.
    pub fn has_valid_service(&self) -> bool {
        !self.config.services.is_empty()
    }
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

/// Parses files already read, as (path, text), looking names up in the system's
/// `/etc/passwd` and `/etc/group`.
pub fn parse(sources: Vec<(PathBuf, String)>) -> Loaded {
    let mut loaded = parse::parse_files(&sources, &mut UserDb::system());
    loaded.sources = sources;
    loaded
}

/// Checks config files already read, as (path, text), as `steward --check` does: every error
/// and warning, in file order.
pub fn check(sources: Vec<(PathBuf, String)>) -> Vec<Diagnostic> {
    parse(sources).diagnostics
}

/// Parses config text as if it were the file `name`; for tests.
#[cfg(test)]
pub fn load_str(name: &str, text: &str) -> Loaded {
    parse::parse_files(
        &[(PathBuf::from(name), text.to_string())],
        &mut UserDb::system(),
    )
}

/// Parses config text as if it were the file `name`, with the user database under `root`;
/// for tests.
#[cfg(test)]
pub fn load_str_under(name: &str, text: &str, root: &Path) -> Loaded {
    parse::parse_files(
        &[(PathBuf::from(name), text.to_string())],
        &mut UserDb::under(root),
    )
}
