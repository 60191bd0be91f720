//! Walks the spanned TOML document of each file and turns it into services, recording every
//! mistake with its position instead of stopping at the first.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::values::{RLIMITS, Signal, Span, parse_duration, parse_mode, parse_size, valid_name};
use super::{
    Broken, Config, Confined, Credentials, Dependency, Diagnostic, ExecutorPool, Id, InstanceLog,
    Loaded, ManagerSettings, NotifyAccess, Origin, Ready, Service, SocketAddress, SocketConfig,
    SocketKind, StdioMode, TakeoverEnv, WrittenId,
};
use crate::users::{ResolveError, UserDb, UserEntry};

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// The largest `fd_store`: each stored fd is one of the manager's, under its RLIMIT_NOFILE.
pub const FD_STORE_MAX: i64 = 4096;

/// The most idle executors one service may keep (`executor_pool`).
const EXECUTOR_POOL_MAX: i64 = 16;

const NAME_RULE: &str = "names are 1 to 64 characters of A-Z a-z 0-9 _ . -";

/// Parses every file and applies the rules that span files (unique names, one `[manager]`).
/// User and group names are looked up in `users`, once each, for the warnings about unknown
/// ones and for the owners of socket files.
pub fn parse_files(sources: &[(PathBuf, String)], users: &mut UserDb) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut services: Vec<Service> = Vec::new();
    let mut manager: Option<(ManagerSettings, Origin)> = None;
    for (path, text) in sources {
        let mut cx = Cx {
            file: Arc::from(path.as_path()),
            line_starts: line_starts(text),
            diagnostics: &mut diagnostics,
            users: &mut *users,
            service: None,
        };
        let (doc, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            // Syntax errors make whatever was recovered unreliable: report them alone rather
            // than follow-on errors about keys that were simply not understood.
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim_end().to_string();
                cx.error(span, message);
            }
            continue;
        }
        for (key, value) in doc.get_ref().iter() {
            match key.get_ref().as_ref() {
                "service" => match value.get_ref() {
                    DeValue::Table(table) => {
                        for (name, body) in table.iter() {
                            cx.service = Some(name.get_ref().as_ref().to_string());
                            services.push(cx.service(name, body));
                            cx.service = None;
                        }
                    }
                    _ => cx.error(
                        value.span(),
                        "`service` must be a table: write services as [service.NAME]",
                    ),
                },
                "manager" => {
                    let origin = cx.origin(key.span());
                    if let Some(settings) = cx.manager(value) {
                        if let Some((_, first)) = &manager {
                            let message = format!("[manager] is defined twice (also at {first})");
                            cx.error(key.span(), message);
                        } else {
                            manager = Some((settings, origin));
                        }
                    }
                }
                other => cx.error(
                    key.span(),
                    format!("unknown top-level key `{other}` (expected `service` or `manager`)"),
                ),
            }
        }
    }

    let mut seen: HashMap<&str, &Origin> = HashMap::new();
    let mut duplicates = Vec::new();
    for service in &services {
        if let Some(first) = seen.insert(&service.name, &service.origin) {
            // Which of the two was meant is anyone's guess: both are refused.
            for (at, other) in [(&service.origin, first), (first, &service.origin)] {
                duplicates.push(Diagnostic {
                    origin: at.clone(),
                    message: format!(
                        "service `{}` is defined twice (also at {other})",
                        service.name
                    ),
                    warning: false,
                    service: Some(service.name.clone()),
                });
            }
        }
    }
    diagnostics.extend(duplicates);
    diagnostics.extend(dependency_errors(&services));
    diagnostics.sort_by(|a, b| a.origin.cmp(&b.origin));

    let failed = diagnostics.iter().any(|d| !d.warning);
    let confined = confine(
        manager.map(|(m, _)| m).unwrap_or_default(),
        services,
        &diagnostics,
    );
    Loaded {
        config: (!failed).then(|| confined.config.clone()),
        confined,
        diagnostics,
        sources: Vec::new(),
    }
}

/// Splits the services into those without an error of their own and the broken ones.
fn confine(
    manager: ManagerSettings,
    services: Vec<Service>,
    diagnostics: &[Diagnostic],
) -> Confined {
    let mut broken: Vec<Broken> = Vec::new();
    for d in diagnostics.iter().filter(|d| !d.warning) {
        let Some(name) = &d.service else { continue };
        match broken.iter_mut().find(|b| b.name == *name) {
            Some(b) => b.errors.push(d.clone()),
            None => broken.push(Broken {
                name: name.clone(),
                origin: services
                    .iter()
                    .find(|s| s.name == *name)
                    .map_or_else(|| d.origin.clone(), |s| s.origin.clone()),
                errors: vec![d.clone()],
            }),
        }
    }
    let services = services
        .into_iter()
        .filter(|s| !broken.iter().any(|b| b.name == s.name))
        .collect();
    Confined {
        config: Config { manager, services },
        broken,
    }
}

/// Every name in `after` or `requires` that no service has, and every cycle through them: one
/// error per service in a cycle, at the name that leads on round it.
fn dependency_errors(services: &[Service]) -> Vec<Diagnostic> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut errors = Vec::new();
    for s in services {
        for (key, deps) in [("after", &s.after), ("requires", &s.requires)] {
            for d in deps.iter().filter(|d| !index.contains_key(d.name.as_str())) {
                errors.push(Diagnostic {
                    origin: d.origin.clone(),
                    message: format!(
                        "service `{}`: `{key}` names `{}`, which no service has",
                        s.name, d.name
                    ),
                    warning: false,
                    service: Some(s.name.clone()),
                });
            }
        }
    }
    let edges: Vec<Vec<(usize, &Dependency)>> = services
        .iter()
        .map(|s| {
            s.requires
                .iter()
                .chain(&s.after)
                .filter_map(|d| Some((*index.get(d.name.as_str())?, d)))
                .collect()
        })
        .collect();
    for cycle in cycles(&edges) {
        let names: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| services[i].name.as_str())
            .collect();
        let path = names.join(" -> ");
        for (k, &i) in cycle.iter().enumerate() {
            let next = cycle[(k + 1) % cycle.len()];
            let Some((_, edge)) = edges[i].iter().find(|(to, _)| *to == next) else {
                continue;
            };
            errors.push(Diagnostic {
                origin: edge.origin.clone(),
                message: format!("dependency cycle: {path}"),
                warning: false,
                service: Some(services[i].name.clone()),
            });
        }
    }
    errors
}

/// The cycles of a graph (each once, as the services in order, starting at the lowest index),
/// by a depth-first search that reports a cycle whenever it meets a node on its own path.
fn cycles(edges: &[Vec<(usize, &Dependency)>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        node: usize,
        edges: &[Vec<(usize, &Dependency)>],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        marks[node] = Mark::OnPath;
        path.push(node);
        for &(next, _) in &edges[node] {
            match marks[next] {
                Mark::New => visit(next, edges, marks, path, found),
                Mark::OnPath => {
                    let start = path.iter().position(|&n| n == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    // The same cycle found from another member reads the same once rotated.
                    let lowest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                    cycle.rotate_left(lowest);
                    if cycle.len() > 1 && !found.contains(&cycle) {
                        found.push(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[node] = Mark::Done;
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut found = Vec::new();
    for node in 0..edges.len() {
        if marks[node] == Mark::New {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The walk of one file.
struct Cx<'a> {
    file: Arc<Path>,
    line_starts: Vec<usize>,
    diagnostics: &'a mut Vec<Diagnostic>,
    users: &'a mut UserDb,
    /// The service whose table is being read: what its errors are about.
    service: Option<String>,
}

/// The uid and gid a service's socket files get when their own `owner` and `group` are not
/// set: the service's, as they resolve at load; `None` leaves the manager's.
#[derive(Clone, Copy, Default)]
struct SocketOwner {
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Cx<'_> {
    fn origin(&self, span: Range<usize>) -> Origin {
        let line = self
            .line_starts
            .partition_point(|&start| start <= span.start);
        let start = self.line_starts[line - 1];
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Origin {
            file: Arc::clone(&self.file),
            line: count(line),
            column: count(span.start - start + 1),
        }
    }

    fn push(&mut self, span: Range<usize>, message: String, warning: bool) {
        let origin = self.origin(span);
        self.diagnostics.push(Diagnostic {
            origin,
            message,
            warning,
            service: self.service.clone(),
        });
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span, message.into(), false);
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span, message.into(), true);
    }

    fn warn_at(&mut self, origin: &Origin, message: String) {
        self.diagnostics.push(Diagnostic {
            origin: origin.clone(),
            message,
            warning: true,
            service: self.service.clone(),
        });
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| !d.warning).count()
    }

    fn type_error(&mut self, key: &str, value: &Value, expected: &str) {
        let found = value.get_ref().type_str();
        self.error(
            value.span(),
            format!("`{key}` must be {expected}, not {found}"),
        );
    }

    fn string<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) if s.contains('\0') => {
                self.error(value.span(), format!("`{key}` contains a NUL character"));
                None
            }
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.type_error(key, value, "a string");
                None
            }
        }
    }

    fn bool(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(key, value, "true or false");
                None
            }
        }
    }

    fn integer(&mut self, key: &str, value: &Value, range: Range<i64>) -> Option<i64> {
        let DeValue::Integer(i) = value.get_ref() else {
            self.type_error(key, value, "an integer");
            return None;
        };
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let (lo, hi) = (range.start, range.end - 1);
                self.error(
                    value.span(),
                    format!("`{key}` must be between {lo} and {hi}"),
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: &Value) -> Option<Span> {
        let text = self.string(key, value)?;
        let parsed = parse_duration(text);
        if parsed.is_none() {
            self.error(
                value.span(),
                format!(
                    "`{key}`: bad duration \"{text}\": write an integer with ms, s, m or h (\"100ms\", \"5s\"), or \"0\""
                ),
            );
        }
        parsed
    }

    /// A duration that must not be zero (a watchdog that fires at once would be no use).
    fn positive_duration(&mut self, key: &str, value: &Value) -> Option<Span> {
        let d = self.duration(key, value)?;
        if d.get().is_zero() {
            self.error(value.span(), format!("`{key}` must be longer than 0"));
            return None;
        }
        Some(d)
    }

    fn absolute_path(&mut self, key: &str, value: &Value) -> Option<String> {
        let text = self.string(key, value)?;
        if !text.starts_with('/') {
            self.error(
                value.span(),
                format!("`{key}` must be an absolute path, not \"{text}\""),
            );
            return None;
        }
        Some(text.to_string())
    }

    /// A user or group as written: a number (an integer or a string of digits) or a name.
    fn id(&mut self, key: &str, value: &Value) -> Option<WrittenId> {
        let id = match value.get_ref() {
            DeValue::Integer(_) => self
                .integer(key, value, 0..u32::MAX as i64)
                .map(|n| Id::Number(n as u32))?,
            DeValue::String(_) => {
                let text = self.string(key, value)?;
                match text.parse::<u32>() {
                    Ok(n) => Id::Number(n),
                    Err(_) => Id::Name(text.to_string()),
                }
            }
            _ => {
                self.type_error(key, value, "a name or a number");
                return None;
            }
        };
        Some(WrittenId {
            id,
            origin: self.origin(value.span()),
        })
    }

    /// A service's user as it resolves now; what does not resolve is a warning, not an
    /// error: the spawn looks again (and fails at step `user` if it is still unknown).
    fn load_user(&mut self, user: &WrittenId) -> Option<(u32, Option<UserEntry>)> {
        match self.users.user(&user.id) {
            Ok(found) => Some(found),
            Err(e) => {
                self.warn_at(&user.origin, e.to_string());
                None
            }
        }
    }

    /// A service's group as it resolves now; warned about like [`Cx::load_user`].
    fn load_group(&mut self, group: &WrittenId) -> Option<u32> {
        match self.users.group(&group.id) {
            Ok(gid) => Some(gid),
            Err(e) => {
                self.warn_at(&group.origin, e.to_string());
                None
            }
        }
    }

    /// A socket's `owner` or `group`, for the file made at load: what does not resolve now
    /// leaves the manager's (nobody gets a right the config did not give), with a warning.
    fn socket_id(&mut self, key: &str, value: &Value) -> Option<u32> {
        let written = self.id(key, value)?;
        let (resolved, what) = match key {
            "owner" => (self.users.user(&written.id).map(|(uid, _)| uid), "user"),
            _ => (self.users.group(&written.id), "group"),
        };
        match resolved {
            Ok(id) => Some(id),
            Err(e) => {
                self.warn_at(
                    &written.origin,
                    format!("{e}: the socket file keeps the manager's {what} until a reload"),
                );
                None
            }
        }
    }

    fn array<'v>(&mut self, key: &str, value: &'v Value<'v>) -> Option<&'v [Value<'v>]> {
        match value.get_ref() {
            DeValue::Array(a) => Some(&a[..]),
            _ => {
                self.type_error(key, value, "an array");
                None
            }
        }
    }

    fn table<'v>(&mut self, key: &str, value: &'v Value<'v>) -> Option<&'v DeTable<'v>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.type_error(key, value, "a table");
                None
            }
        }
    }

    fn manager(&mut self, value: &Value) -> Option<ManagerSettings> {
        let table = self.table("manager", value)?;
        let before = self.error_count();
        let mut settings = ManagerSettings::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "log_buffer" => {
                    if let Some(size) = self.size("log_buffer", value) {
                        settings.log_buffer = size;
                    }
                }
                "log_dir" => {
                    if let Some(path) = self.absolute_path("log_dir", value) {
                        settings.log_dir = Some(PathBuf::from(path));
                    }
                }
                "log_max_size" => match self.size("log_max_size", value) {
                    Some(0) => self.error(value.span(), "`log_max_size` must be more than 0"),
                    Some(size) => settings.log_max_size = size,
                    None => {}
                },
                "log_keep" => {
                    if let Some(n) = self.integer("log_keep", value, 0..1001) {
                        settings.log_keep = n as u32;
                    }
                }
                "watchdog_device" => {
                    if let Some(path) = self.absolute_path("watchdog_device", value) {
                        settings.watchdog_device = Some(PathBuf::from(path));
                    }
                }
                "watchdog_timeout" => {
                    if let Some(d) = self.positive_duration("watchdog_timeout", value) {
                        settings.watchdog_timeout = d.get();
                    }
                }
                other => self.error(
                    key.span(),
                    format!(
                        "unknown key `{other}` in [manager] (known: log_buffer, log_dir, log_max_size, log_keep, watchdog_device, watchdog_timeout)"
                    ),
                ),
            }
        }
        (self.error_count() == before).then_some(settings)
    }

    fn size(&mut self, key: &str, value: &Value) -> Option<u64> {
        if let DeValue::Integer(_) = value.get_ref() {
            return self.integer(key, value, 0..i64::MAX).map(|n| n as u64);
        }
        let text = self.string(key, value)?;
        let size = parse_size(text);
        if size.is_none() {
            self.error(
                value.span(),
                format!(
                    "`{key}`: bad size \"{text}\": write bytes, or a number with K, M or G (\"64M\")"
                ),
            );
        }
        size
    }

    /// The service as far as its table could be read; its errors are in the diagnostics.
    fn service(&mut self, name: &Key, value: &Value) -> Service {
        let n = name.get_ref().as_ref().to_string();
        if !valid_name(&n) {
            self.error(
                name.span(),
                format!("bad service name \"{n}\": {NAME_RULE}"),
            );
        }
        let mut s = Service::new(n.clone(), self.origin(name.span()));
        let Some(table) = self.table(&format!("service.{n}"), value) else {
            return s;
        };
        let mut spans: HashMap<String, Range<usize>> = HashMap::new();
        let mut user = None;
        let mut group = None;
        let mut supplementary = None;
        let mut sockets = None;
        let mut pool = None;
        for (key, value) in table.iter() {
            let k = key.get_ref().as_ref();
            let known = match k {
                "exec" => {
                    if let Some(exec) = self.exec(value) {
                        s.exec = exec.into_iter().collect();
                    }
                    true
                }
                "autostart" => set(&mut s.autostart, self.bool(k, value)),
                "keep_alive" => set(&mut s.keep_alive, self.bool(k, value)),
                "lazy" => set(&mut s.lazy, self.bool(k, value)),
                "accept" => set(&mut s.accept, self.bool(k, value)),
                "max_connections" => set(
                    &mut s.max_connections,
                    self.integer(k, value, 1..65_536).map(|n| n as u32),
                ),
                "log_instances" => set(&mut s.log_instances, self.instance_log(value)),
                "executor_pool" => {
                    pool = self
                        .integer(k, value, 0..EXECUTOR_POOL_MAX + 1)
                        .map(|n| n as u32);
                    true
                }
                "user" => {
                    user = self.id(k, value);
                    true
                }
                "group" => {
                    group = self.id(k, value);
                    true
                }
                "supplementary_groups" => {
                    supplementary = self.groups(value);
                    true
                }
                "working_directory" => set(&mut s.working_directory, self.absolute_path(k, value)),
                "environment" => set(&mut s.environment, self.environment(value)),
                "inherit_environment" => set(&mut s.inherit_environment, self.bool(k, value)),
                "stdio" => set(&mut s.stdio, self.stdio(value)),
                "umask" => set(&mut s.umask, self.umask(value)),
                "memory_max" => {
                    s.memory_max = self.size(k, value);
                    true
                }
                "tasks_max" => {
                    s.tasks_max = self.integer(k, value, 1..i64::MAX).map(|n| n as u64);
                    true
                }
                "limits" => set(&mut s.limits, self.limits(value)),
                "restart_delay" => set(&mut s.restart_delay, self.duration(k, value)),
                "start_limit_burst" => set(
                    &mut s.start_limit_burst,
                    self.integer(k, value, 1..1_000_000).map(|n| n as u32),
                ),
                "start_limit_interval" => set(&mut s.start_limit_interval, self.duration(k, value)),
                "start_limit_cooldown" => {
                    set(&mut s.start_limit_cooldown, self.optional(k, value, "none"))
                }
                "stop_signal" => set(&mut s.stop_signal, self.signal(value)),
                "stop_timeout" => set(&mut s.stop_timeout, self.duration(k, value)),
                "takeover_env" => set(&mut s.takeover_env, self.takeover_env(value)),
                "ready" => set(&mut s.ready, self.ready(value)),
                "start_timeout" => set(&mut s.start_timeout, self.timeout(k, value)),
                "after" => set(&mut s.after, self.dependencies(k, value)),
                "requires" => set(&mut s.requires, self.dependencies(k, value)),
                "notify_access" => set(&mut s.notify_access, self.notify_access(value)),
                "watchdog" => {
                    s.watchdog = self.positive_duration(k, value);
                    true
                }
                "watchdog_signal" => set(&mut s.watchdog_signal, self.signal(value)),
                "fd_store" => set(
                    &mut s.fd_store,
                    self.integer(k, value, 0..FD_STORE_MAX + 1)
                        .map(|n| n as u32),
                ),
                "runtime_directory" => set(&mut s.runtime_directory, self.directories(k, value)),
                "state_directory" => set(&mut s.state_directory, self.directories(k, value)),
                "cache_directory" => set(&mut s.cache_directory, self.directories(k, value)),
                "logs_directory" => set(&mut s.logs_directory, self.directories(k, value)),
                "directory_mode" => set(&mut s.directory_mode, self.mode(k, value)),
                "socket" => {
                    sockets = Some(value);
                    true
                }
                _ => false,
            };
            if known {
                spans.insert(k.to_string(), key.span());
            } else {
                self.error(key.span(), format!("unknown key `{k}` in service `{n}`"));
            }
        }

        if !spans.contains_key("exec") {
            self.error(name.span(), format!("service `{n}` has no `exec`"));
        }

        s.credentials = self
            .credentials(user, group, supplementary, &spans)
            .map(Box::new);
        let owner = match &s.credentials {
            Some(credentials) => self.check_credentials(credentials),
            None => SocketOwner::default(),
        };
        if let Some(value) = sockets {
            s.sockets = self.sockets(&n, value, owner).into();
        }
        self.rules(&mut s, &spans);
        self.pool(&mut s, pool, &spans);
        s
    }

    /// `executor_pool`, once `lazy` is settled (accept mode implies it).
    fn pool(
        &mut self,
        s: &mut Service,
        written: Option<u32>,
        spans: &HashMap<String, Range<usize>>,
    ) {
        // A task limit is the operator's count of the service's processes: an idle executor
        // would take one of them unasked.
        // Accept mode keeps two: an armed executor takes each connection itself, and with
        // one only, a client that comes back at once would wait for its replacement to start.
        let default = match (s.tasks_max, s.lazy, s.accept, s.keep_alive) {
            (Some(_), ..) | (None, false, _, false) => ExecutorPool::Keep(0),
            (None, true, false, _) => ExecutorPool::Keep(1),
            (None, true, true, _) => ExecutorPool::Keep(2),
            (None, false, _, true) => ExecutorPool::OnceRestarted,
        };
        s.executor_pool = written.map_or(default, ExecutorPool::Keep);
        if written.is_some_and(|n| n > 0) && !s.lazy && !s.keep_alive {
            let at = spans.get("executor_pool").cloned().unwrap_or(0..0);
            self.error(
                at,
                format!(
                    "service `{}`: `executor_pool` needs `lazy`, `accept` or `keep_alive`: only a connection or a restart spawns ahead of time",
                    s.name
                ),
            );
        }
    }

    /// The rules that tie keys of one service together.
    fn rules(&mut self, s: &mut Service, spans: &HashMap<String, Range<usize>>) {
        let at = |key: &str| spans.get(key).cloned().unwrap_or(0..0);
        let n = s.name.clone();
        // An accept service has no main process to watch: its instances come and go.
        if s.accept && s.watchdog.is_some() {
            self.error(
                at("watchdog"),
                format!("service `{n}`: `watchdog` cannot be combined with `accept`"),
            );
        }
        // An accept instance serves one connection and is gone: there is no next process of it
        // to hand stored fds to.
        if s.accept && s.fd_store > 0 {
            self.error(
                at("fd_store"),
                format!("service `{n}`: `fd_store` cannot be combined with `accept`"),
            );
        }
        // Accept mode spawns per connection, so it is lazy by nature and never kept alive.
        if s.accept {
            s.lazy = true;
            if s.keep_alive {
                self.error(
                    at("keep_alive"),
                    format!("service `{n}`: `accept` cannot be combined with `keep_alive`"),
                );
            }
            let streamish = s
                .sockets
                .iter()
                .all(|k| matches!(k.kind, SocketKind::Stream | SocketKind::Seqpacket));
            if s.sockets.len() != 1 || !streamish {
                self.error(
                    at("accept"),
                    format!("service `{n}`: `accept` needs exactly one stream or seqpacket socket"),
                );
            }
        }
        // A lazy service is spawned by a connection, so it needs somewhere to connect.
        if s.lazy && s.sockets.is_empty() && !s.accept {
            self.error(
                at("lazy"),
                format!("service `{n}`: `lazy` needs at least one [[service.{n}.socket]]"),
            );
        }
        // inetd hands a `nowait` service its connection and a `wait` service its one socket as
        // stdin and stdout: an eager service has no socket to be given before a client comes,
        // and a lazy one with several could not say which one fds 0 and 1 are.
        if s.stdio == StdioMode::Socket && !s.accept {
            if !s.lazy {
                self.error(
                    at("stdio"),
                    format!(
                        "service `{n}`: stdio = \"socket\" needs `accept` (the connection is fds 0 and 1) or `lazy` with exactly one socket (the socket is fds 0 and 1)"
                    ),
                );
            } else if s.sockets.len() != 1 {
                self.error(
                    at("stdio"),
                    format!(
                        "service `{n}`: stdio = \"socket\" on a lazy service needs exactly one [[service.{n}.socket]], to be its fds 0 and 1; it has {}",
                        s.sockets.len()
                    ),
                );
            }
        }
        // With stdio = "socket" the socket is at 0 and 1, and nothing is at 3.
        let socket_fds = match s.stdio {
            StdioMode::Socket => 0,
            StdioMode::Log | StdioMode::Null | StdioMode::Inherit | StdioMode::Path(_) => {
                s.sockets.len()
            }
        };
        match s.ready {
            // A setup task runs once to its end; nothing would make it ready again.
            Ready::Exit if s.keep_alive || s.lazy => {
                let with = if s.keep_alive {
                    "keep_alive"
                } else if s.accept {
                    "accept"
                } else {
                    "lazy"
                };
                self.error(
                    at("ready"),
                    format!("service `{n}`: ready = \"exit\" cannot be combined with `{with}`"),
                );
            }
            // The sockets are fds 3 … 3+n-1: the readiness fd must not take one's place.
            Ready::Fd(fd) if (fd as usize) < 3 + socket_fds => {
                self.error(
                    at("ready"),
                    format!(
                        "service `{n}`: ready = \"fd:{fd}\" is one of its socket fds (3 to {}); pick {} or above",
                        2 + socket_fds,
                        3 + socket_fds
                    ),
                );
            }
            // Stored fds follow the sockets, up to `fd_store` of them.
            Ready::Fd(fd)
                if s.fd_store > 0 && (fd as usize) < 3 + socket_fds + s.fd_store as usize =>
            {
                self.error(
                    at("ready"),
                    format!(
                        "service `{n}`: ready = \"fd:{fd}\" is where its stored fds go (up to {}); pick {} or above",
                        2 + socket_fds + s.fd_store as usize,
                        3 + socket_fds + s.fd_store as usize
                    ),
                );
            }
            Ready::Exec | Ready::Notify | Ready::Exit | Ready::Fd(_) => {}
        }
        if s.requires.iter().chain(&s.after).any(|d| d.name == n) {
            self.error(
                at(if s.requires.iter().any(|d| d.name == n) {
                    "requires"
                } else {
                    "after"
                }),
                format!("service `{n}` cannot wait for itself"),
            );
        }
        if s.lazy && !s.accept && !s.keep_alive {
            self.warn(
                at("lazy"),
                format!(
                    "service `{n}` is lazy but not keep_alive: after it exits its sockets are not watched again, so clients wait until `stewardctl start {n}`"
                ),
            );
        }
    }

    fn exec(&mut self, value: &Value) -> Option<Vec<String>> {
        let items = self.array("exec", value)?;
        if items.is_empty() {
            self.error(
                value.span(),
                "`exec` must name a program: [\"/path/to/program\", \"arg\", …]",
            );
            return None;
        }
        let mut argv = Vec::with_capacity(items.len());
        for item in items {
            argv.push(self.string("exec", item)?.to_string());
        }
        if !argv[0].starts_with('/') {
            self.error(
                items[0].span(),
                format!("`exec[0]` must be an absolute path, not \"{}\"", argv[0]),
            );
            return None;
        }
        Some(argv)
    }

    /// A directory key: names relative to its root (/run, /var/lib, …), each of plain
    /// components, so that no name can reach outside it or name the root itself.
    fn directories(&mut self, key: &str, value: &Value) -> Option<Vec<String>> {
        let items = self.array(key, value)?;
        let mut names: Vec<String> = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(name) = self.string(key, item) else {
                ok = false;
                continue;
            };
            let problem = if name.starts_with('/') {
                Some("must be relative to its root, not absolute")
            } else if name.split('/').any(|c| c == "..") {
                Some("must not contain `..`")
            } else if name.split('/').any(|c| c.is_empty() || c == ".") {
                Some("must be names joined by single `/`, without `.` or empty parts")
            } else {
                None
            };
            match problem {
                Some(problem) => {
                    self.error(item.span(), format!("`{key}`: \"{name}\" {problem}"));
                    ok = false;
                }
                None if names.iter().any(|n| n == name) => {}
                None => names.push(name.to_string()),
            }
        }
        ok.then_some(names)
    }

    fn groups(&mut self, value: &Value) -> Option<Vec<WrittenId>> {
        let items = self.array("supplementary_groups", value)?;
        let mut groups = Vec::new();
        let mut ok = true;
        for item in items {
            match self.id("supplementary_groups", item) {
                Some(gid) => groups.push(gid),
                None => ok = false,
            }
        }
        ok.then_some(groups)
    }

    /// The credentials as written; `None` when none of the three keys is set, or one of them
    /// did not parse (already reported).
    fn credentials(
        &mut self,
        user: Option<WrittenId>,
        group: Option<WrittenId>,
        supplementary: Option<Vec<WrittenId>>,
        spans: &HashMap<String, Range<usize>>,
    ) -> Option<Credentials> {
        if (spans.contains_key("user") && user.is_none())
            || (spans.contains_key("group") && group.is_none())
            || (spans.contains_key("supplementary_groups") && supplementary.is_none())
        {
            return None;
        }
        if user.is_none() && group.is_none() && supplementary.is_none() {
            return None;
        }
        Some(Credentials {
            user,
            group,
            supplementary_groups: supplementary.unwrap_or_default(),
        })
    }

    /// Looks the names up once, as a spawn would now: each that does not resolve is a
    /// warning at its position. Returns the ids that resolved, the default owner of the
    /// service's socket files.
    fn check_credentials(&mut self, c: &Credentials) -> SocketOwner {
        let user = c.user.as_ref().and_then(|u| self.load_user(u));
        let group = c.group.as_ref().and_then(|g| self.load_group(g));
        for g in &c.supplementary_groups {
            self.load_group(g);
        }
        if let (Some((uid, None)), None, Some(written)) = (&user, &c.group, &c.user) {
            let e = ResolveError::NoPrimaryGroup(*uid);
            self.warn_at(
                &written.origin,
                format!("{e}: a spawn fails at step group unless the uid has an entry by then"),
            );
        }
        SocketOwner {
            uid: user.as_ref().map(|(uid, _)| *uid),
            gid: group.or(user.and_then(|(_, entry)| entry).map(|e| e.gid)),
        }
    }

    fn environment(&mut self, value: &Value) -> Option<Vec<(String, String)>> {
        let table = self.table("environment", value)?;
        let mut env = Vec::new();
        let mut ok = true;
        for (key, value) in table.iter() {
            let k = key.get_ref().as_ref();
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                self.error(
                    key.span(),
                    format!("`environment`: bad variable name \"{k}\""),
                );
                ok = false;
                continue;
            }
            if k.starts_with("LISTEN_") || k == "SOCKET_TAKEOVER" {
                self.error(
                    key.span(),
                    format!("`environment`: {k} is set by steward for the sockets it passes"),
                );
                ok = false;
                continue;
            }
            match self.string(&format!("environment.{k}"), value) {
                Some(v) => env.push((k.to_string(), v.to_string())),
                None => ok = false,
            }
        }
        ok.then_some(env)
    }

    fn stdio(&mut self, value: &Value) -> Option<StdioMode> {
        let text = self.string("stdio", value)?;
        Some(match text {
            "log" => StdioMode::Log,
            "null" => StdioMode::Null,
            "inherit" => StdioMode::Inherit,
            "socket" => StdioMode::Socket,
            path if path.starts_with('/') => StdioMode::Path(path.to_string()),
            other => {
                self.error(
                    value.span(),
                    format!(
                        "`stdio` must be \"log\", \"null\", \"inherit\", \"socket\" or an absolute path, not \"{other}\""
                    ),
                );
                return None;
            }
        })
    }

    fn instance_log(&mut self, value: &Value) -> Option<InstanceLog> {
        let text = self.string("log_instances", value)?;
        Some(match text {
            "all" => InstanceLog::All,
            "failures" => InstanceLog::Failures,
            other => {
                self.error(
                    value.span(),
                    format!("`log_instances` must be \"all\" or \"failures\", not \"{other}\""),
                );
                return None;
            }
        })
    }

    /// A directory's mode: octal, special bits allowed (a setgid directory is common).
    fn mode(&mut self, key: &str, value: &Value) -> Option<u32> {
        let text = self.string(key, value)?;
        let mode = parse_mode(text);
        if mode.is_none() {
            self.error(
                value.span(),
                format!("`{key}` must be octal like \"0755\", not \"{text}\""),
            );
        }
        mode
    }

    fn umask(&mut self, value: &Value) -> Option<u32> {
        match value.get_ref() {
            DeValue::Integer(_) => self.integer("umask", value, 0..0o1000).map(|n| n as u32),
            _ => {
                let text = self.string("umask", value)?;
                let mode = parse_mode(text).filter(|m| *m <= 0o777);
                if mode.is_none() {
                    self.error(
                        value.span(),
                        format!("`umask` must be octal like \"0022\", not \"{text}\""),
                    );
                }
                mode
            }
        }
    }

    fn limits(&mut self, value: &Value) -> Option<Vec<(u32, u64)>> {
        let table = self.table("limits", value)?;
        let mut limits = Vec::new();
        let mut ok = true;
        for (key, value) in table.iter() {
            let k = key.get_ref().as_ref();
            let Some((_, resource)) = RLIMITS.iter().find(|(name, _)| *name == k) else {
                let known: Vec<&str> = RLIMITS.iter().map(|(name, _)| *name).collect();
                self.error(
                    key.span(),
                    format!(
                        "`limits`: unknown limit `{k}` (known: {})",
                        known.join(", ")
                    ),
                );
                ok = false;
                continue;
            };
            let limit = match value.get_ref() {
                DeValue::String(s) if s == "infinity" || s == "unlimited" => Some(u64::MAX),
                DeValue::Integer(_) => self
                    .integer(&format!("limits.{k}"), value, 0..i64::MAX)
                    .map(|n| n as u64),
                _ => {
                    self.type_error(&format!("limits.{k}"), value, "an integer or \"infinity\"");
                    None
                }
            };
            match limit {
                Some(v) => limits.push((*resource, v)),
                None => ok = false,
            }
        }
        ok.then_some(limits)
    }

    fn signal(&mut self, value: &Value) -> Option<Signal> {
        match value.get_ref() {
            DeValue::Integer(_) => self
                .integer("stop_signal", value, 1..65)
                .and_then(Signal::from_number),
            _ => {
                let text = self.string("stop_signal", value)?;
                let signal = Signal::parse(text);
                if signal.is_none() {
                    self.error(
                        value.span(),
                        format!(
                            "`stop_signal`: unknown signal \"{text}\" (write \"SIGTERM\", \"TERM\" or a number)"
                        ),
                    );
                }
                signal
            }
        }
    }

    fn ready(&mut self, value: &Value) -> Option<Ready> {
        let text = self.string("ready", value)?;
        let ready = match text {
            "exec" => Some(Ready::Exec),
            "notify" => Some(Ready::Notify),
            "exit" => Some(Ready::Exit),
            other => other
                .strip_prefix("fd:")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| (3..=65_535).contains(&n))
                .map(Ready::Fd),
        };
        if ready.is_none() {
            self.error(
                value.span(),
                format!(
                    "`ready` must be \"exec\", \"notify\", \"exit\" or \"fd:N\" with N from 3 up, not \"{text}\""
                ),
            );
        }
        ready
    }

    /// A duration, or `"infinity"` (`None`).
    fn timeout(&mut self, key: &str, value: &Value) -> Option<Option<Span>> {
        self.optional(key, value, "infinity")
    }

    /// A duration, or the word that means "never" (`None`).
    fn optional(&mut self, key: &str, value: &Value, never: &str) -> Option<Option<Span>> {
        if let DeValue::String(s) = value.get_ref() {
            if s == never {
                return Some(None);
            }
        }
        self.duration(key, value).map(Some)
    }

    fn dependencies(&mut self, key: &str, value: &Value) -> Option<Vec<Dependency>> {
        let items = self.array(key, value)?;
        let mut names: Vec<Dependency> = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(name) = self.string(key, item) else {
                ok = false;
                continue;
            };
            if !valid_name(name) {
                self.error(
                    item.span(),
                    format!("`{key}`: bad service name \"{name}\": {NAME_RULE}"),
                );
                ok = false;
            } else if !names.iter().any(|d| d.name == name) {
                names.push(Dependency {
                    name: name.to_string(),
                    origin: self.origin(item.span()),
                });
            }
        }
        ok.then_some(names)
    }

    fn notify_access(&mut self, value: &Value) -> Option<NotifyAccess> {
        match self.string("notify_access", value)? {
            "main" => Some(NotifyAccess::Main),
            "all" => Some(NotifyAccess::All),
            other => {
                self.error(
                    value.span(),
                    format!("`notify_access` must be \"main\" or \"all\", not \"{other}\""),
                );
                None
            }
        }
    }

    fn takeover_env(&mut self, value: &Value) -> Option<TakeoverEnv> {
        match self.string("takeover_env", value)? {
            "flag" => Some(TakeoverEnv::Flag),
            "map" => Some(TakeoverEnv::Map),
            other => {
                self.error(
                    value.span(),
                    format!("`takeover_env` must be \"flag\" or \"map\", not \"{other}\""),
                );
                None
            }
        }
    }

    fn sockets(&mut self, service: &str, value: &Value, owner: SocketOwner) -> Vec<SocketConfig> {
        let Some(items) = self.array("socket", value) else {
            return Vec::new();
        };
        let mut sockets = Vec::new();
        for item in items {
            if let Some(socket) = self.socket(service, item, owner) {
                sockets.push(socket);
            }
        }
        sockets
    }

    fn socket(&mut self, service: &str, value: &Value, owner: SocketOwner) -> Option<SocketConfig> {
        let table = self.table("socket", value)?;
        let before = self.error_count();
        let mut address = None;
        let mut socket = SocketConfig::new(service, SocketAddress::Unix(PathBuf::new()));
        socket.owner = owner.uid;
        socket.group = owner.gid;
        for (key, value) in table.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "path" | "listen" => {
                    if address.is_some() {
                        self.error(
                            key.span(),
                            "a socket has exactly one of `path` and `listen`",
                        );
                        continue;
                    }
                    address = Some(match k {
                        "path" => self
                            .absolute_path(k, value)
                            .map(|p| SocketAddress::Unix(PathBuf::from(p))),
                        _ => self.string(k, value).and_then(|text| {
                            let parsed = text.parse().ok().map(SocketAddress::Inet);
                            if parsed.is_none() {
                                self.error(
                                    value.span(),
                                    format!(
                                        "`listen` must be ADDR:PORT (\"127.0.0.1:7000\", \"[::1]:80\"), not \"{text}\""
                                    ),
                                );
                            }
                            parsed
                        }),
                    });
                }
                "type" => {
                    let kind = match self.string(k, value) {
                        Some("stream") => Some(SocketKind::Stream),
                        Some("seqpacket") => Some(SocketKind::Seqpacket),
                        Some("datagram") => Some(SocketKind::Datagram),
                        Some(other) => {
                            self.error(
                                value.span(),
                                format!(
                                    "socket `type` must be \"stream\", \"seqpacket\" or \"datagram\", not \"{other}\""
                                ),
                            );
                            None
                        }
                        None => None,
                    };
                    set(&mut socket.kind, kind);
                }
                "mode" => {
                    let mode = self.string(k, value).and_then(|text| {
                        let mode = parse_mode(text).filter(|m| *m <= 0o777);
                        if mode.is_none() {
                            self.error(
                                value.span(),
                                format!(
                                    "socket `mode` must be octal like \"0660\", not \"{text}\""
                                ),
                            );
                        }
                        mode
                    });
                    set(&mut socket.mode, mode);
                }
                // Set, they replace the service's ids, even when they do not resolve.
                "owner" => socket.owner = self.socket_id(k, value),
                "group" => socket.group = self.socket_id(k, value),
                "backlog" => {
                    let backlog = self.integer(k, value, 1..65_536).map(|n| n as u32);
                    set(&mut socket.backlog, backlog);
                }
                "name" => {
                    let name = self.string(k, value).and_then(|text| {
                        if valid_name(text) {
                            Some(text.to_string())
                        } else {
                            self.error(
                                value.span(),
                                format!("bad socket name \"{text}\": {NAME_RULE}"),
                            );
                            None
                        }
                    });
                    set(&mut socket.name, name);
                }
                other => self.error(
                    key.span(),
                    format!("unknown key `{other}` in a socket of service `{service}`"),
                ),
            }
        }
        match address {
            Some(Some(SocketAddress::Inet(_))) if socket.kind == SocketKind::Seqpacket => {
                self.error(
                    value.span(),
                    format!(
                        "a socket of service `{service}`: seqpacket is only for unix sockets (`path`)"
                    ),
                );
            }
            Some(Some(a)) => socket.address = a,
            Some(None) => {}
            None => self.error(
                value.span(),
                format!("a socket of service `{service}` needs `path` or `listen`"),
            ),
        }
        (self.error_count() == before).then_some(socket)
    }
}

/// Stores a parsed value; a value that failed to parse was already reported.
fn set<T, V: Into<T>>(slot: &mut T, value: Option<V>) -> bool {
    if let Some(v) = value {
        *slot = v.into();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::{load_str, load_str_under};
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        load_str("t.toml", text)
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn minimal_service_gets_defaults() {
        let loaded = load_str("t.toml", "[service.a]\nexec = [\"/bin/true\"]\n");
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let s = &loaded.config.unwrap().services[0];
        assert_eq!(s.name, "a");
        assert_eq!(s.exec, ["/bin/true"]);
        assert!(s.autostart && !s.keep_alive);
        assert_eq!(s.restart_delay, Span::from_millis(100));
        assert_eq!(s.start_limit_burst, 5);
        assert_eq!(s.stop_signal, Signal::TERM);
        assert_eq!(s.stdio, StdioMode::Log);
        assert_eq!(s.origin.line, 1);
        assert_eq!(s.origin.column, 10);
    }

    #[test]
    fn executor_pool_defaults_by_mode() {
        let pool = |extra: &str| {
            let text = format!(
                "[service.a]\nexec = [\"/bin/true\"]\n{extra}[[service.a.socket]]\npath = \"/tmp/a.sock\"\n"
            );
            load_str("t.toml", &text).config.unwrap().services[0].executor_pool
        };
        // Accept mode arms two, so that a client coming back at once finds one ready.
        assert_eq!(pool("accept = true\n"), ExecutorPool::Keep(2));
        assert_eq!(pool("lazy = true\n"), ExecutorPool::Keep(1));
        assert_eq!(
            pool("accept = true\ntasks_max = 8\n"),
            ExecutorPool::Keep(0)
        );
        assert_eq!(
            pool("accept = true\nexecutor_pool = 1\n"),
            ExecutorPool::Keep(1)
        );
        assert_eq!(pool(""), ExecutorPool::Keep(0));
        // A keep-alive service gets one once it has restarted.
        assert_eq!(pool("keep_alive = true\n"), ExecutorPool::OnceRestarted);
        assert_eq!(
            pool("keep_alive = true\ntasks_max = 8\n"),
            ExecutorPool::Keep(0)
        );
        assert_eq!(
            pool("keep_alive = true\nexecutor_pool = 0\n"),
            ExecutorPool::Keep(0)
        );
        assert_eq!(
            pool("keep_alive = true\nlazy = true\n"),
            ExecutorPool::Keep(1)
        );
    }

    #[test]
    fn log_instances_is_all_or_failures() {
        let base = "[service.a]\nexec = [\"/bin/true\"]\naccept = true\n[[service.a.socket]]\npath = \"/tmp/a.sock\"\n";
        let loaded = load_str("t.toml", base);
        assert_eq!(
            loaded.config.unwrap().services[0].log_instances,
            InstanceLog::Failures
        );
        let all = base.replace(
            "accept = true\n",
            "accept = true\nlog_instances = \"all\"\n",
        );
        let loaded = load_str("t.toml", &all);
        assert_eq!(
            loaded.config.unwrap().services[0].log_instances,
            InstanceLog::All
        );
        let bad = base.replace(
            "accept = true\n",
            "accept = true\nlog_instances = \"some\"\n",
        );
        assert_eq!(
            errors(&bad),
            ["t.toml:4:17: `log_instances` must be \"all\" or \"failures\", not \"some\""]
        );
    }

    #[test]
    fn directory_keys_take_relative_names() {
        let loaded = load_str(
            "t.toml",
            "[service.a]\nexec = [\"/bin/true\"]\nruntime_directory = [\"sshd\", \"a/b\", \"sshd\"]\nstate_directory = [\"x\"]\ncache_directory = [\"y\"]\nlogs_directory = [\"z\"]\ndirectory_mode = \"2750\"\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let s = &loaded.config.unwrap().services[0];
        assert_eq!(s.runtime_directory, ["sshd", "a/b"]);
        assert_eq!(s.state_directory, ["x"]);
        assert_eq!(s.cache_directory, ["y"]);
        assert_eq!(s.logs_directory, ["z"]);
        assert_eq!(s.directory_mode, 0o2750);
        let defaults = load_str("t.toml", "[service.a]\nexec = [\"/bin/true\"]\n");
        assert_eq!(defaults.config.unwrap().services[0].directory_mode, 0o755);
    }

    #[test]
    fn directory_names_cannot_leave_their_root() {
        let text = "\
[service.a]
exec = [\"/bin/true\"]
runtime_directory = [\"/run/sshd\"]
state_directory = [\"../etc\"]
cache_directory = [\"a//b\", \"ok\", \"./c\"]
logs_directory = \"z\"
directory_mode = \"rwx\"
";
        assert_eq!(
            errors(text),
            [
                "t.toml:3:22: `runtime_directory`: \"/run/sshd\" must be relative to its root, not absolute",
                "t.toml:4:20: `state_directory`: \"../etc\" must not contain `..`",
                "t.toml:5:20: `cache_directory`: \"a//b\" must be names joined by single `/`, without `.` or empty parts",
                "t.toml:5:34: `cache_directory`: \"./c\" must be names joined by single `/`, without `.` or empty parts",
                "t.toml:6:18: `logs_directory` must be an array, not string",
                "t.toml:7:18: `directory_mode` must be octal like \"0755\", not \"rwx\"",
            ]
        );
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let text = "\
[service.a]
exec = [\"bin/true\"]
colour = \"blue\"
restart_delay = \"soon\"

[service.b]
keep_alive = \"yes\"
stop_signal = \"SIGNOPE\"
";
        let errs = errors(text);
        assert_eq!(
            errs,
            [
                "t.toml:2:9: `exec[0]` must be an absolute path, not \"bin/true\"",
                "t.toml:3:1: unknown key `colour` in service `a`",
                "t.toml:4:17: `restart_delay`: bad duration \"soon\": write an integer with ms, s, m or h (\"100ms\", \"5s\"), or \"0\"",
                "t.toml:6:10: service `b` has no `exec`",
                "t.toml:7:14: `keep_alive` must be true or false, not string",
                "t.toml:8:15: `stop_signal`: unknown signal \"SIGNOPE\" (write \"SIGTERM\", \"TERM\" or a number)",
            ]
        );
    }

    #[test]
    fn errors_are_confined_to_the_services_they_are_about() {
        let text = "\
[manager]
log_buffer = \"lots\"
[service.a]
exec = [\"/bin/a\"]
colour = \"blue\"
restart_delay = \"soon\"
[service.b]
exec = [\"/bin/b\"]
requires = [\"a\"]
[service.c]
exec = [\"/bin/c\"]
after = [\"nobody\"]
[service.d]
exec = [\"/bin/d\"]
[service.d2]
exec = [\"/bin/d\"]
";
        let loaded = load_str("t.toml", text);
        assert!(
            loaded.config.is_none(),
            "strict: any error refuses the whole"
        );
        let confined = &loaded.confined;
        let valid: Vec<&str> = confined
            .config
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            valid,
            ["b", "d", "d2"],
            "b only requires a broken one: not its own error"
        );
        assert_eq!(
            confined.config.manager.log_buffer,
            ManagerSettings::default().log_buffer
        );
        let broken: Vec<(&str, usize)> = confined
            .broken
            .iter()
            .map(|b| (b.name.as_str(), b.errors.len()))
            .collect();
        assert_eq!(broken, [("a", 2), ("c", 1)]);
        assert_eq!(
            confined.broken[0].reason(),
            "config: t.toml:5:1: unknown key `colour` in service `a`; config: t.toml:6:17: \
             `restart_delay`: bad duration \"soon\": write an integer with ms, s, m or h \
             (\"100ms\", \"5s\"), or \"0\""
        );
        assert_eq!(
            confined.broken[1].reason(),
            "config: t.toml:12:10: service `c`: `after` names `nobody`, which no service has"
        );
        // The stand-in a refused service is known by runs nothing and has no sockets.
        let stand_in = confined.broken[0].service();
        assert!(stand_in.exec == [] && stand_in.sockets.is_empty());
        assert!(stand_in.requires.is_empty());
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let errs = errors("[service.a]\nexec = [\"/bin/true\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("t.toml:"), "{errs:?}");
    }

    #[test]
    fn duplicate_names_across_files_name_both_places() {
        let a = (
            PathBuf::from("a.toml"),
            "[service.x]\nexec=[\"/bin/true\"]\n".into(),
        );
        let b = (
            PathBuf::from("b.toml"),
            "\n[service.x]\nexec=[\"/bin/true\"]\n".into(),
        );
        let loaded = parse_files(&[a, b], &mut UserDb::system());
        let errs: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            errs,
            [
                "a.toml:1:10: service `x` is defined twice (also at b.toml:2:10)",
                "b.toml:2:10: service `x` is defined twice (also at a.toml:1:10)"
            ]
        );
        assert!(loaded.config.is_none());
        assert!(
            loaded.confined.config.services.is_empty(),
            "both are refused"
        );
        assert_eq!(loaded.confined.broken[0].errors.len(), 2);
    }

    #[test]
    fn environment_rules() {
        let errs = errors(
            "[service.a]\nexec=[\"/bin/true\"]\nenvironment = { LISTEN_FDS = \"3\", OK = \"1\", N = 2 }\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("LISTEN_FDS is set by steward"));
        assert!(errs[1].contains("`environment.N` must be a string"));
    }

    #[test]
    fn bad_names_are_errors_and_unknown_users_warnings() {
        let errs = errors(
            "[service.\"a b\"]\nexec=[\"/bin/true\"]\n[service.c]\nexec=[\"/bin/true\"]\nuser = \"no-such-user-here\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("bad service name \"a b\""));
        assert_eq!(
            errs[1],
            "t.toml:5:8: warning: unknown user \"no-such-user-here\""
        );
    }

    /// A root for the user database with `web` (1000, group `users` 100) and `wheel` (10).
    fn users_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "web:x:1000:100:The Web:/srv/web:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "users:x:100:\nwheel:x:10:\n").unwrap();
        dir
    }

    #[test]
    fn names_are_kept_as_written_and_unknown_ones_are_warnings_at_their_positions() {
        let root = users_root();
        let loaded = load_str_under(
            "t.toml",
            "\
[service.a]
exec = [\"/bin/x\"]
user = \"ghost\"
group = \"nogroup\"
supplementary_groups = [\"wheel\", \"nope\", 7]

[service.b]
exec = [\"/bin/x\"]
user = 4242

[service.c]
exec = [\"/bin/x\"]
user = \"web\"
group = \"4243\"
",
            root.path(),
        );
        let rendered: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            rendered,
            [
                "t.toml:3:8: warning: unknown user \"ghost\"",
                "t.toml:4:9: warning: unknown group \"nogroup\"",
                "t.toml:5:34: warning: unknown group \"nope\"",
                "t.toml:9:8: warning: uid 4242 has no entry in /etc/passwd to take its primary group from, and `group` is not set: a spawn fails at step group unless the uid has an entry by then",
            ]
        );
        // Only warnings: the config is valid, and keeps the names for the spawns to resolve.
        let services = loaded.config.expect("a config with only warnings").services;
        let a = services[0].credentials.as_ref().unwrap();
        assert_eq!(a.user.as_ref().unwrap().id, Id::Name("ghost".into()));
        assert_eq!(a.user.as_ref().unwrap().origin.line, 3);
        let groups: Vec<&Id> = a.supplementary_groups.iter().map(|g| &g.id).collect();
        assert_eq!(
            groups,
            [
                &Id::Name("wheel".into()),
                &Id::Name("nope".into()),
                &Id::Number(7)
            ]
        );
        let b = services[1].credentials.as_ref().unwrap();
        assert_eq!(b.user.as_ref().unwrap().id, Id::Number(4242));
        assert_eq!(b.group, None);
        let c = services[2].credentials.as_ref().unwrap();
        assert_eq!(c.group.as_ref().unwrap().id, Id::Number(4243));
    }

    #[test]
    fn socket_files_are_owned_as_resolved_at_load() {
        let root = users_root();
        let loaded = load_str_under(
            "t.toml",
            "\
[service.web]
exec = [\"/bin/x\"]
user = \"web\"
[[service.web.socket]]
path = \"/run/web\"
[[service.web.socket]]
path = \"/run/web-admin\"
owner = \"stranger\"
group = \"wheel\"
[[service.web.socket]]
path = \"/run/web-n\"
owner = 5
group = \"nogroup\"

[service.late]
exec = [\"/bin/x\"]
user = \"late\"
[[service.late.socket]]
path = \"/run/late\"
",
            root.path(),
        );
        let rendered: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            rendered,
            [
                "t.toml:8:9: warning: unknown user \"stranger\": the socket file keeps the manager's user until a reload",
                "t.toml:13:9: warning: unknown group \"nogroup\": the socket file keeps the manager's group until a reload",
                "t.toml:17:8: warning: unknown user \"late\"",
            ]
        );
        let services = loaded.config.unwrap().services;
        let owners = |s: &Service| -> Vec<(Option<u32>, Option<u32>)> {
            s.sockets.iter().map(|k| (k.owner, k.group)).collect()
        };
        // The service's user and its primary group by default; an unknown name leaves the
        // manager's rather than guess.
        assert_eq!(
            owners(&services[0]),
            [(Some(1000), Some(100)), (None, Some(10)), (Some(5), None)]
        );
        assert_eq!(owners(&services[1]), [(None, None)]);
    }

    #[test]
    fn limits_umask_and_sizes() {
        let loaded = load_str(
            "t.toml",
            "[manager]\nlog_buffer = \"128K\"\n[service.a]\nexec=[\"/bin/true\"]\numask = \"0077\"\nlimits = { nofile = 1024, core = \"infinity\" }\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let config = loaded.config.unwrap();
        assert_eq!(config.manager.log_buffer, 128 * 1024);
        let s = &config.services[0];
        assert_eq!(s.umask, 0o077);
        assert_eq!(s.limits, [(7, 1024), (4, u64::MAX)]);
    }

    #[test]
    fn lazy_without_keep_alive_is_a_warning_not_an_error() {
        let loaded = load_str(
            "t.toml",
            "[service.a]\nexec=[\"/bin/true\"]\nlazy = true\n[[service.a.socket]]\npath = \"/run/a\"\n",
        );
        let warning = loaded
            .diagnostics
            .iter()
            .find(|d| d.warning)
            .expect("a warning");
        assert!(
            warning
                .to_string()
                .starts_with("t.toml:3:1: warning: service `a` is lazy but not keep_alive"),
            "{warning}"
        );
        assert_eq!(loaded.diagnostics.len(), 1);
        assert!(loaded.config.is_some());
    }

    #[test]
    fn accept_rules() {
        let errs = errors("[service.a]\nexec=[\"/bin/true\"]\naccept = true\nkeep_alive = true\n");
        assert!(
            errs.iter()
                .any(|e| e.contains("cannot be combined with `keep_alive`"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("exactly one stream or seqpacket socket"))
        );
    }

    #[test]
    fn readiness_and_dependencies() {
        let loaded = load_str(
            "t.toml",
            "[service.db]\nexec=[\"/bin/db\"]\nready = \"notify\"\nstart_timeout = \"infinity\"\nnotify_access = \"all\"\n\
             [service.app]\nexec=[\"/bin/app\"]\nrequires = [\"db\"]\nafter = [\"db\", \"db\"]\nready = \"fd:5\"\n\
             [service.setup]\nexec=[\"/bin/x\"]\nready = \"exit\"\nstart_timeout = \"2m\"\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let services = loaded.config.unwrap().services;
        assert_eq!(services[0].ready, Ready::Notify);
        assert_eq!(services[0].start_timeout, None);
        assert_eq!(services[0].notify_access, NotifyAccess::All);
        assert_eq!(services[1].ready, Ready::Fd(5));
        assert_eq!(services[1].waits_for().collect::<Vec<_>>(), ["db"]);
        assert_eq!(services[2].start_timeout, Some(Span::from_secs(120)));
        assert_eq!(
            Service::new("x".into(), services[0].origin.clone()).start_timeout,
            Some(Span::from_secs(90))
        );
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_errors_at_their_positions() {
        let errs = errors(
            "[service.a]\nexec=[\"/bin/x\"]\nrequires = [\"b\"]\n\
             [service.b]\nexec=[\"/bin/x\"]\nafter = [\"c\", \"ghost\"]\n\
             [service.c]\nexec=[\"/bin/x\"]\nrequires = [\"a\"]\n\
             [service.d]\nexec=[\"/bin/x\"]\nafter = [\"d\"]\n",
        );
        assert_eq!(
            errs,
            [
                "t.toml:3:13: dependency cycle: a -> b -> c -> a",
                "t.toml:6:10: dependency cycle: a -> b -> c -> a",
                "t.toml:6:15: service `b`: `after` names `ghost`, which no service has",
                "t.toml:9:13: dependency cycle: a -> b -> c -> a",
                "t.toml:12:1: service `d` cannot wait for itself",
            ]
        );
    }

    #[test]
    fn readiness_rules() {
        let errs = errors(
            "[service.a]\nexec=[\"/bin/x\"]\nready = \"exit\"\nkeep_alive = true\n\
             [service.b]\nexec=[\"/bin/x\"]\nready = \"fd:3\"\n[[service.b.socket]]\npath = \"/run/b\"\n\
             [service.c]\nexec=[\"/bin/x\"]\nready = \"sometime\"\n",
        );
        assert_eq!(
            errs,
            [
                "t.toml:3:1: service `a`: ready = \"exit\" cannot be combined with `keep_alive`",
                "t.toml:7:1: service `b`: ready = \"fd:3\" is one of its socket fds (3 to 3); pick 4 or above",
                "t.toml:12:9: `ready` must be \"exec\", \"notify\", \"exit\" or \"fd:N\" with N from 3 up, not \"sometime\"",
            ]
        );
    }

    #[test]
    fn fd_store_rules() {
        let good = load_str(
            "t.toml",
            "[service.a]\nexec=[\"/bin/x\"]\nfd_store = 16\nready = \"fd:20\"\n[[service.a.socket]]\npath = \"/run/a\"\n",
        );
        assert!(good.diagnostics.is_empty(), "{:?}", good.diagnostics);
        let services = good.config.unwrap().services;
        assert_eq!(services[0].fd_store, 16);
        assert!(services[0].notifies(), "FDSTORE=1 comes on NOTIFY_SOCKET");
        let errs = errors(
            "[service.a]\nexec=[\"/bin/x\"]\naccept = true\nfd_store = 4\n[[service.a.socket]]\npath = \"/run/a\"\n\
             [service.b]\nexec=[\"/bin/x\"]\nfd_store = 2\nready = \"fd:5\"\n[[service.b.socket]]\npath = \"/run/b\"\n\
             [service.c]\nexec=[\"/bin/x\"]\nfd_store = 5000\n",
        );
        assert_eq!(
            errs,
            [
                "t.toml:4:1: service `a`: `fd_store` cannot be combined with `accept`",
                "t.toml:10:1: service `b`: ready = \"fd:5\" is where its stored fds go (up to 5); pick 6 or above",
                "t.toml:15:12: `fd_store` must be between 0 and 4096",
            ]
        );
    }

    #[test]
    fn stdio_socket_is_for_accept_or_a_lazy_service_with_one_socket() {
        let good = load_str(
            "t.toml",
            "[service.each]\nexec=[\"/bin/x\"]\naccept = true\nstdio = \"socket\"\n\
             [[service.each.socket]]\npath = \"/run/each\"\n\
             [service.tftp]\nexec=[\"/bin/x\"]\nlazy = true\nkeep_alive = true\nstdio = \"socket\"\n\
             [[service.tftp.socket]]\nlisten = \"127.0.0.1:69\"\ntype = \"datagram\"\n",
        );
        assert!(good.diagnostics.is_empty(), "{:?}", good.diagnostics);
        let services = good.config.unwrap().services;
        assert!(services.iter().all(|s| s.stdio == StdioMode::Socket));

        let errs = errors(
            "[service.eager]\nexec=[\"/bin/x\"]\nstdio = \"socket\"\n\
             [[service.eager.socket]]\npath = \"/run/eager\"\n\
             [service.two]\nexec=[\"/bin/x\"]\nlazy = true\nkeep_alive = true\nstdio = \"socket\"\n\
             [[service.two.socket]]\npath = \"/run/two.a\"\n\
             [[service.two.socket]]\npath = \"/run/two.b\"\n\
             [service.none]\nexec=[\"/bin/x\"]\nlazy = true\nkeep_alive = true\nstdio = \"socket\"\n",
        );
        assert_eq!(
            errs,
            [
                "t.toml:3:1: service `eager`: stdio = \"socket\" needs `accept` (the connection is fds 0 and 1) or `lazy` with exactly one socket (the socket is fds 0 and 1)",
                "t.toml:10:1: service `two`: stdio = \"socket\" on a lazy service needs exactly one [[service.two.socket]], to be its fds 0 and 1; it has 2",
                "t.toml:17:1: service `none`: `lazy` needs at least one [[service.none.socket]]",
                "t.toml:19:1: service `none`: stdio = \"socket\" on a lazy service needs exactly one [[service.none.socket]], to be its fds 0 and 1; it has 0",
            ]
        );
    }

    #[test]
    fn with_stdio_socket_fd_3_is_free_for_readiness() {
        // The one socket is fds 0 and 1, so fd 3 is not a socket's.
        let loaded = load_str(
            "t.toml",
            "[service.a]\nexec=[\"/bin/x\"]\nlazy = true\nkeep_alive = true\nstdio = \"socket\"\nready = \"fd:3\"\n\
             [[service.a.socket]]\npath = \"/run/a\"\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    }
}
