//! Phase two of `import`: the units [`super::load`] read become steward's config, in the
//! written form steward's own parser is tested against ([`steward::written`]). Every entry
//! of every unit is accounted for where it stood: carried over (a comment naming it, then the
//! key it became), dropped because steward has nothing it would mean (a target, a unit not in
//! the import; said so), or not imported (a `# not imported:` comment, and the exit status 1).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use steward::written::{Limit, ServiceTable, SocketTable};

use super::exec::{Command, Expansion, Privileges};
use super::syntax::parse_boolean;
use super::{Entry, Error, Import, Instance, Section, Unit, UnitName, read_environment_file};

/// Where a line goes in its table: the entry it is about (by unit and index), and within
/// one entry, its comment, then notes, then the key it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    unit: usize,
    entry: usize,
    part: u8,
}

impl Position {
    /// After every entry: for keys the import adds of itself.
    fn added(n: usize) -> Position {
        Position {
            unit: usize::MAX,
            entry: n,
            part: 0,
        }
    }
}

/// One line of a table's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `# text`.
    Comment(String),
    /// The key of that name, as the table's value has it.
    Key(&'static str),
}

/// A table's lines, placed; the renderer sorts them by position.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The lines.
    pub lines: Vec<(Position, Line)>,
}

impl Layout {
    fn comment(&mut self, at: Position, text: impl Into<String>) {
        self.lines.push((at, Line::Comment(text.into())));
    }

    fn key(&mut self, at: Position, key: &'static str) {
        self.lines.push((at, Line::Key(key)));
    }
}

/// One service of the output, with its sockets.
#[derive(Debug, Clone)]
pub struct MappedService {
    /// Its steward name.
    pub name: String,
    /// Comment lines above its header.
    pub header: Vec<String>,
    /// The table.
    pub table: ServiceTable,
    /// Where its keys and comments go.
    pub layout: Layout,
    /// Each socket's layout, in the order of `table.socket`.
    pub socket_layouts: Vec<Layout>,
    /// The unit file it was made from.
    pub source: std::path::PathBuf,
}

/// The whole import.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// Every service, setup tasks before the service that requires them.
    pub services: Vec<MappedService>,
    /// How many entries were not imported: the exit status is 1 when there is any.
    pub not_imported: usize,
}

/// What became of one entry.
enum Fate {
    /// Carried over into `key` (`None`: nothing to write, e.g. a default), with notes.
    Carried(Option<&'static str>, Vec<String>),
    /// steward has nothing it would mean; why.
    Dropped(String),
    /// Not imported; why (may be empty).
    NotImported(String),
}

use Fate::{Carried, Dropped, NotImported};

fn carried(key: &'static str) -> Fate {
    Carried(Some(key), Vec::new())
}

fn noted(key: Option<&'static str>, note: impl Into<String>) -> Fate {
    Carried(key, vec![note.into()])
}

fn not_imported(why: impl Into<String>) -> Fate {
    NotImported(why.into())
}

/// The steward name of a unit: its prefix, with `-INSTANCE` for an instance (`@` is not in
/// steward's names), other characters steward's names lack as `-`.
pub fn service_name(name: &UnitName) -> String {
    let raw = match name.instance() {
        // As `%I` reads it: `getty@ttyS0`, `serial@dev-ttyS0` without its escapes.
        Instance::Named(instance) => format!(
            "{}-{}",
            name.prefix(),
            super::name::unescape(instance).unwrap_or_else(|_| instance.clone())
        ),
        Instance::None | Instance::Template => name.prefix().to_string(),
    };
    let mut out: String = raw
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '-',
        })
        .collect();
    out.truncate(60);
    out
}

/// Maps every import of a request read under `root`.
pub fn map(imports: &[Import], root: &Path) -> Result<Mapped, Error> {
    // Which unit names became which service: a dependency on any of them (a service, its
    // alias, or one of its sockets) is a dependency on that service.
    let mut names: HashMap<String, String> = HashMap::new();
    for import in imports {
        let steward = service_name(&import.service.name);
        for unit in std::iter::once(&import.service).chain(&import.sockets) {
            for name in std::iter::once(&unit.name).chain(&unit.aliases) {
                names.insert(name.to_string(), steward.clone());
            }
        }
    }
    let mut services = Vec::new();
    let mut not_imported = 0;
    let mut before: Vec<(String, String)> = Vec::new();
    for import in imports {
        let mut m = Mapper {
            root,
            names: &names,
            import,
            own: service_name(&import.service.name),
            table: ServiceTable::default(),
            layout: Layout::default(),
            socket_layouts: Vec::new(),
            not_imported: 0,
            environment: Vec::new(),
            pre: Vec::new(),
            before: Vec::new(),
            added: 0,
        };
        m.service()?;
        m.sockets()?;
        m.finish();
        not_imported += m.not_imported;
        before.extend(m.before.iter().map(|b| (b.clone(), m.own.clone())));
        let header = vec![format!(
            "{}: imported by stewardctl import from {}",
            m.own,
            std::iter::once(&import.service)
                .chain(&import.sockets)
                .map(|u| u.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )];
        let tasks = std::mem::take(&mut m.pre);
        services.extend(tasks);
        services.push(MappedService {
            name: m.own,
            header,
            table: m.table,
            layout: m.layout,
            socket_layouts: m.socket_layouts,
            source: import.service.fragment.clone(),
        });
    }
    // `Before=X` is X's `After=` this one.
    for (target, this) in before {
        if let Some(s) = services.iter_mut().find(|s| s.name == target) {
            let after = s.table.after.get_or_insert_with(Vec::new);
            if !after.contains(&this) {
                after.push(this.clone());
            }
            s.layout.comment(
                Position::added(usize::MAX - 1),
                format!("after {this}: its Before={}", unit_of(&names, &target)),
            );
            s.layout.key(Position::added(usize::MAX), "after");
        }
    }
    Ok(Mapped {
        services,
        not_imported,
    })
}

/// A unit name that maps to `service`, for a comment.
fn unit_of(names: &HashMap<String, String>, service: &str) -> String {
    let mut all: Vec<&String> = names
        .iter()
        .filter(|(_, s)| *s == service)
        .map(|(n, _)| n)
        .collect();
    all.sort();
    all.first().map_or(service.to_string(), |n| n.to_string())
}

struct Mapper<'a> {
    root: &'a Path,
    names: &'a HashMap<String, String>,
    import: &'a Import,
    own: String,
    table: ServiceTable,
    layout: Layout,
    socket_layouts: Vec<Layout>,
    not_imported: usize,
    /// `Environment=` and `EnvironmentFile=` as they stand, for `$VAR` in command lines.
    environment: Vec<(String, String)>,
    /// The setup tasks made of `ExecStartPre=`.
    pre: Vec<MappedService>,
    /// Services whose `after` gets this one (`Before=`).
    before: Vec<String>,
    added: usize,
}

/// The position of an entry of unit `unit`.
fn at(unit: usize, entry: usize, part: u8) -> Position {
    Position { unit, entry, part }
}

/// `Key=value (FILE:LINE)`.
fn describe(entry: &Entry) -> String {
    format!("{}={} ({})", entry.key, entry.value, entry.origin)
}

/// The entries of a list directive that count: those after its last reset.
fn effective<'u>(unit: &'u Unit, section: &Section, key: &str) -> Vec<&'u Entry> {
    let all: Vec<&Entry> = unit.get(section, key).collect();
    let start = all.iter().rposition(|e| e.is_reset()).map_or(0, |i| i + 1);
    all[start..].to_vec()
}

impl Mapper<'_> {
    /// Writes what became of an entry of unit `u` into `layout` (the service's, or a
    /// socket's).
    fn record(&mut self, u: usize, index: usize, entry: &Entry, fate: Fate, socket: Option<usize>) {
        let layout = match socket {
            Some(i) => &mut self.socket_layouts[i],
            None => &mut self.layout,
        };
        match fate {
            Carried(key, notes) => {
                layout.comment(at(u, index, 0), describe(entry));
                for note in notes {
                    layout.comment(at(u, index, 1), note);
                }
                if let Some(key) = key {
                    layout.key(at(u, index, 2), key);
                }
            }
            Dropped(why) => {
                layout.comment(
                    at(u, index, 0),
                    format!("dropped: {}: {why}", describe(entry)),
                );
            }
            NotImported(why) => {
                self.not_imported += 1;
                let text = match why.is_empty() {
                    true => format!("not imported: {}", describe(entry)),
                    false => format!("not imported: {}: {why}", describe(entry)),
                };
                layout.comment(at(u, index, 0), text);
            }
        }
    }

    /// A key the import adds of itself, with why.
    fn add(&mut self, key: &'static str, why: impl Into<String>) {
        self.added += 1;
        self.layout.comment(Position::added(self.added), why);
        self.layout.key(
            Position {
                part: 2,
                ..Position::added(self.added)
            },
            key,
        );
    }

    fn service(&mut self) -> Result<(), Error> {
        let import = self.import;
        let unit = &import.service;
        self.read_environment(unit)?;
        // Before the command lines: a tty service's TERM is theirs to expand.
        self.stdio(unit);
        let env: Vec<(String, String)> = self
            .environment
            .iter()
            .filter(|(n, _)| !n.starts_with("LISTEN_") && n != "SOCKET_TAKEOVER")
            .cloned()
            .collect();
        if !env.is_empty() {
            self.table.environment = Some(env);
        }
        // Single-valued directives: the last one counts, earlier ones are overridden.
        let mut last: HashMap<(Section, &str), usize> = HashMap::new();
        for (i, e) in unit.entries.iter().enumerate() {
            last.insert((e.section.clone(), e.key.as_str()), i);
        }
        let ty = unit
            .last(&Section::Service, "Type")
            .map(|e| e.value.as_str())
            .unwrap_or(if unit.last(&Section::Service, "ExecStart").is_some() {
                "simple"
            } else {
                "oneshot"
            });
        for (i, entry) in unit.entries.iter().enumerate() {
            let overridden = last
                .get(&(entry.section.clone(), entry.key.as_str()))
                .is_some_and(|&l| l != i)
                && !is_list(&entry.key);
            let fate = if overridden {
                let by = &unit.entries[last[&(entry.section.clone(), entry.key.as_str())]];
                Carried(None, vec![format!("overridden by {}", by.origin)])
            } else {
                match entry.section {
                    Section::Unit => self.unit_entry(unit, entry),
                    Section::Service => self.service_entry(unit, entry, ty)?,
                    Section::Install => self.install_entry(entry),
                    Section::Socket => not_imported(""),
                    Section::Extension(_) => {
                        Dropped("an extension section, which systemd ignores too".into())
                    }
                }
            };
            self.record(0, i, entry, fate, None);
        }
        Ok(())
    }

    /// `Environment=` and `EnvironmentFile=` in force, for the `environment` key and `$VAR`:
    /// systemd applies the files' variables over `Environment=`'s.
    fn read_environment(&mut self, unit: &Unit) -> Result<(), Error> {
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        };
        for entry in effective(unit, &Section::Service, "Environment") {
            for var in unit.assignments(entry)?.vars {
                set(&mut env, var.name, var.value);
            }
        }
        for entry in effective(unit, &Section::Service, "EnvironmentFile") {
            if let Some(file) = unit.environment_file(entry)? {
                let contents = read_environment_file(self.root, &file, &entry.origin)?;
                for var in contents.vars {
                    set(&mut env, var.name, var.value);
                }
            }
        }
        self.environment = env;
        Ok(())
    }

    fn unit_entry(&mut self, unit: &Unit, entry: &Entry) -> Fate {
        match entry.key.as_str() {
            "Description" | "Documentation" => Carried(None, Vec::new()),
            "After" | "Requires" | "BindsTo" | "Wants" | "Before" => self.dependencies(unit, entry),
            "DefaultDependencies" => noted(None, "steward adds no implicit dependencies"),
            "StartLimitBurst" => self.integer(entry, "start_limit_burst", |t, n| {
                t.start_limit_burst = Some(n)
            }),
            "StartLimitIntervalSec" | "StartLimitInterval" => match timespan(&entry.value) {
                Some(Span::Finite(d)) => {
                    self.table.start_limit_interval = Some(duration(d));
                    carried("start_limit_interval")
                }
                _ => not_imported("not a time span steward takes"),
            },
            _ => not_imported(""),
        }
    }

    fn install_entry(&mut self, entry: &Entry) -> Fate {
        match entry.key.as_str() {
            "WantedBy" | "RequiredBy" => noted(
                None,
                "enabled in systemd: steward starts it at start (autostart)",
            ),
            "Also" => {
                let all_here = entry
                    .value
                    .split_ascii_whitespace()
                    .all(|n| self.names.contains_key(n));
                match all_here {
                    true => noted(None, "imported together"),
                    false => not_imported("import those units too"),
                }
            }
            "DefaultInstance" => match self.import.service.name.instance() {
                Instance::Named(_) | Instance::Template => {
                    noted(None, "this import names its instance")
                }
                Instance::None => not_imported(""),
            },
            _ => not_imported("steward has no aliases or enablement"),
        }
    }

    fn dependencies(&mut self, unit: &Unit, entry: &Entry) -> Fate {
        let Ok(value) = unit.expand(entry) else {
            return not_imported("its specifiers do not resolve");
        };
        let mut kept: Vec<String> = Vec::new();
        let mut dropped: Vec<String> = Vec::new();
        let mut own: Vec<String> = Vec::new();
        for word in value.split_ascii_whitespace() {
            match self.names.get(word) {
                Some(s) if *s == self.own => own.push(word.to_string()),
                Some(s) => kept.push(s.clone()),
                None => dropped.push(word.to_string()),
            }
        }
        let mut notes = Vec::new();
        if !own.is_empty() {
            notes.push(format!("{}: this service's own socket", own.join(" ")));
        }
        if !dropped.is_empty() {
            let what = if dropped.iter().all(|d| d.ends_with(".target")) {
                "steward has no targets"
            } else {
                "not in this import"
            };
            notes.push(format!("dropped {}: {what}", dropped.join(" ")));
        }
        if kept.is_empty() {
            return Carried(None, notes);
        }
        let key = match entry.key.as_str() {
            "Before" => {
                self.before.extend(kept);
                notes.push("the other service's `after`".into());
                return Carried(None, notes);
            }
            "After" => {
                extend(&mut self.table.after, kept);
                "after"
            }
            "Wants" => {
                notes.push("steward has no weak dependency: order only (`after`)".into());
                extend(&mut self.table.after, kept);
                "after"
            }
            "BindsTo" => {
                notes.push("as Requires=: stopping it stops this one".into());
                extend(&mut self.table.requires, kept);
                "requires"
            }
            _ => {
                extend(&mut self.table.requires, kept);
                "requires"
            }
        };
        Carried(Some(key), notes)
    }

    fn service_entry(&mut self, unit: &Unit, entry: &Entry, ty: &str) -> Result<Fate, Error> {
        let v = entry.value.as_str();
        Ok(match entry.key.as_str() {
            "Type" => match v {
                "simple" | "exec" => {
                    self.table.ready = Some("exec".into());
                    carried("ready")
                }
                "idle" => {
                    self.table.ready = Some("exec".into());
                    noted(Some("ready"), "steward does not hold idle services back")
                }
                "notify" | "notify-reload" => {
                    self.table.ready = Some("notify".into());
                    carried("ready")
                }
                "oneshot" => {
                    self.table.ready = Some("exit".into());
                    carried("ready")
                }
                "forking" => not_imported(
                    "steward supervises the process it starts: run the daemon in the foreground (its -f, -D or --nodaemon flag) with Type=simple, or have it send MAINPID= with ready = \"notify\"",
                ),
                _ => not_imported(""),
            },
            "ExecStart" => self.exec_start(unit, entry, ty)?,
            "ExecStartPre" => self.exec_start_pre(unit, entry)?,
            "Restart" => match v {
                "no" => carried_none(),
                "always" => {
                    self.table.keep_alive = Some(true);
                    carried("keep_alive")
                }
                "on-success" | "on-failure" | "on-abnormal" | "on-watchdog" | "on-abort" => {
                    self.table.keep_alive = Some(true);
                    noted(
                        Some("keep_alive"),
                        format!(
                            "steward restarts it whatever the exit status; Restart={v} restarts only some exits"
                        ),
                    )
                }
                _ => not_imported(""),
            },
            "RestartSec" => match timespan(v) {
                Some(Span::Finite(d)) => {
                    self.table.restart_delay = Some(duration(d));
                    carried("restart_delay")
                }
                _ => not_imported("not a time span steward takes"),
            },
            "StartLimitBurst" => self.integer(entry, "start_limit_burst", |t, n| {
                t.start_limit_burst = Some(n)
            }),
            "StartLimitIntervalSec" | "StartLimitInterval" => match timespan(v) {
                Some(Span::Finite(d)) => {
                    self.table.start_limit_interval = Some(duration(d));
                    carried("start_limit_interval")
                }
                _ => not_imported("not a time span steward takes"),
            },
            "TimeoutStartSec" => self.start_timeout(v),
            "TimeoutStopSec" => self.stop_timeout(v),
            "TimeoutSec" => {
                let start = self.start_timeout(v);
                match (start, self.stop_timeout(v)) {
                    (Carried(..), Carried(..)) => Carried(
                        Some("start_timeout"),
                        vec!["and stop_timeout, below".into()],
                    ),
                    (Carried(..), NotImported(why)) => {
                        not_imported(format!("start_timeout carried, not stop_timeout: {why}"))
                    }
                    (_, _) => not_imported("not a time span steward takes"),
                }
            }
            "KillSignal" => {
                self.table.stop_signal = Some(v.to_string());
                carried("stop_signal")
            }
            "WatchdogSignal" => {
                self.table.watchdog_signal = Some(v.to_string());
                carried("watchdog_signal")
            }
            "WatchdogSec" => match timespan(v) {
                Some(Span::Finite(d)) if d.is_zero() => carried_none(),
                Some(Span::Finite(d)) => {
                    self.table.watchdog = Some(duration(d));
                    carried("watchdog")
                }
                Some(Span::Infinity) => carried_none(),
                None => not_imported("not a time span steward takes"),
            },
            "NotifyAccess" => match v {
                "main" | "all" => {
                    self.table.notify_access = Some(v.to_string());
                    carried("notify_access")
                }
                "exec" => {
                    self.table.notify_access = Some("main".into());
                    noted(
                        Some("notify_access"),
                        "steward's \"main\": the main process",
                    )
                }
                _ => not_imported(""),
            },
            "FileDescriptorStoreMax" => {
                self.integer(entry, "fd_store", |t, n| t.fd_store = Some(n))
            }
            "User" => match unit.expand(entry) {
                Ok(user) => {
                    self.table.user = Some(user);
                    carried("user")
                }
                Err(_) => not_imported("its specifiers do not resolve"),
            },
            "Group" => match unit.expand(entry) {
                Ok(group) => {
                    self.table.group = Some(group);
                    carried("group")
                }
                Err(_) => not_imported("its specifiers do not resolve"),
            },
            "SupplementaryGroups" => {
                if entry.is_reset() {
                    self.table.supplementary_groups = None;
                    return Ok(noted(None, "forgets the groups before it"));
                }
                match unit.expand(entry) {
                    Ok(groups) => {
                        extend(
                            &mut self.table.supplementary_groups,
                            groups.split_ascii_whitespace().map(String::from).collect(),
                        );
                        carried("supplementary_groups")
                    }
                    Err(_) => not_imported("its specifiers do not resolve"),
                }
            }
            "WorkingDirectory" => {
                let dir = match unit.expand(entry) {
                    Ok(dir) => dir,
                    Err(_) => return Ok(not_imported("its specifiers do not resolve")),
                };
                let (dir, optional) = match dir.strip_prefix('-') {
                    Some(rest) => (rest.to_string(), true),
                    None => (dir, false),
                };
                if !dir.starts_with('/') {
                    return Ok(not_imported("steward takes an absolute path"));
                }
                self.table.working_directory = Some(dir);
                match optional {
                    true => noted(
                        Some("working_directory"),
                        "a missing directory fails the start (the `-` made it optional)",
                    ),
                    false => carried("working_directory"),
                }
            }
            "Environment" => match entry.is_reset() {
                true => noted(None, "forgets the assignments before it"),
                false => carried("environment"),
            },
            "EnvironmentFile" => self.environment_file(unit, entry)?,
            "UMask" => match u32::from_str_radix(v, 8) {
                Ok(mask) if mask <= 0o777 => {
                    self.table.umask = Some(format!("{mask:04o}"));
                    carried("umask")
                }
                _ => not_imported("not an octal mask"),
            },
            key if key.starts_with("Limit") => self.limit(entry),
            "MemoryMax" | "MemoryLimit" => match v {
                "infinity" => carried_none(),
                _ => match size(v) {
                    Some(text) => {
                        self.table.memory_max = Some(text);
                        carried("memory_max")
                    }
                    None => not_imported("steward takes bytes, or K, M or G"),
                },
            },
            "TasksMax" => match v {
                "infinity" => carried_none(),
                _ => match v.parse::<u64>() {
                    Ok(n) if n > 0 => {
                        self.table.tasks_max = Some(n);
                        carried("tasks_max")
                    }
                    _ => not_imported("steward takes a number"),
                },
            },
            "StandardInput" | "StandardOutput" | "StandardError" | "TTYPath" => {
                match self.table.stdio.is_some() || self.stdio_is_default(unit) {
                    true => Carried(self.table.stdio.is_some().then_some("stdio"), Vec::new()),
                    false => not_imported(
                        "steward's stdio is \"log\", \"null\", \"socket\" or one path for all three",
                    ),
                }
            }
            "RuntimeDirectory" | "StateDirectory" | "CacheDirectory" | "LogsDirectory" => {
                self.directory(unit, entry)
            }
            "RuntimeDirectoryMode"
            | "StateDirectoryMode"
            | "CacheDirectoryMode"
            | "LogsDirectoryMode" => match u32::from_str_radix(v, 8) {
                Ok(mode) if mode <= 0o7777 => {
                    let text = format!("{mode:04o}");
                    match &self.table.directory_mode {
                        Some(other) if *other != text => not_imported(format!(
                            "steward has one directory_mode for all of them, already {other}"
                        )),
                        _ => {
                            self.table.directory_mode = Some(text);
                            carried("directory_mode")
                        }
                    }
                }
                _ => not_imported("not an octal mode"),
            },
            "RuntimeDirectoryPreserve" if v == "no" || v == "false" => carried_none(),
            "KillMode" if v == "control-group" => {
                noted(None, "steward signals its process group and its cgroup")
            }
            "KillMode" => not_imported("steward signals the whole process group and cgroup"),
            "SendSIGKILL" if parse_boolean(v) == Some(true) => carried_none(),
            "SendSIGHUP" if parse_boolean(v) == Some(false) => carried_none(),
            "IgnoreSIGPIPE" if parse_boolean(v) == Some(false) => noted(
                None,
                "steward starts every service with every signal at its default",
            ),
            "UnsetEnvironment" => {
                let set: Vec<&str> = v
                    .split_ascii_whitespace()
                    .filter(|name| self.environment.iter().any(|(n, _)| n == name))
                    .collect();
                match set.is_empty() {
                    true => noted(None, "steward's base environment has none of these"),
                    false => not_imported(format!("the unit sets {}", set.join(" "))),
                }
            }
            "Sockets" => noted(None, "its sockets are imported with it"),
            _ => not_imported(""),
        })
    }

    fn integer(
        &mut self,
        entry: &Entry,
        key: &'static str,
        set: impl FnOnce(&mut ServiceTable, u32),
    ) -> Fate {
        match entry.value.parse::<u32>() {
            Ok(n) => {
                set(&mut self.table, n);
                carried(key)
            }
            Err(_) => not_imported("not a number steward takes"),
        }
    }

    fn start_timeout(&mut self, v: &str) -> Fate {
        match timespan(v) {
            Some(Span::Infinity) => {
                self.table.start_timeout = Some("infinity".into());
                carried("start_timeout")
            }
            // For systemd, 0 turns the timeout off.
            Some(Span::Finite(d)) if d.is_zero() => {
                self.table.start_timeout = Some("infinity".into());
                carried("start_timeout")
            }
            Some(Span::Finite(d)) => {
                self.table.start_timeout = Some(duration(d));
                carried("start_timeout")
            }
            None => not_imported("not a time span steward takes"),
        }
    }

    fn stop_timeout(&mut self, v: &str) -> Fate {
        match timespan(v) {
            Some(Span::Finite(d)) if !d.is_zero() => {
                self.table.stop_timeout = Some(duration(d));
                carried("stop_timeout")
            }
            _ => not_imported("steward always sends SIGKILL after stop_timeout"),
        }
    }

    fn environment_file(&mut self, unit: &Unit, entry: &Entry) -> Result<Fate, Error> {
        let Some(file) = unit.environment_file(entry)? else {
            return Ok(noted(None, "forgets the files before it"));
        };
        let contents = read_environment_file(self.root, &file, &entry.origin)?;
        let optional = if file.optional { "optional; " } else { "" };
        let note = if !contents.skipped.is_empty() && contents.vars.is_empty() {
            format!("{optional}missing at import: nothing read")
        } else {
            let names: Vec<&str> = contents.vars.iter().map(|v| v.name.as_str()).collect();
            format!(
                "{optional}read at import ({}): a later change to the file needs a new import",
                match names.is_empty() {
                    true => "no variables".to_string(),
                    false => names.join(" "),
                }
            )
        };
        let key = (!contents.vars.is_empty()).then_some("environment");
        Ok(Carried(key, vec![note]))
    }

    fn limit(&mut self, entry: &Entry) -> Fate {
        let name = entry.key["Limit".len()..].to_ascii_lowercase();
        const NAMES: [&str; 16] = [
            "cpu",
            "fsize",
            "data",
            "stack",
            "core",
            "rss",
            "nproc",
            "nofile",
            "memlock",
            "as",
            "locks",
            "sigpending",
            "msgqueue",
            "nice",
            "rtprio",
            "rttime",
        ];
        let Some(name) = NAMES.iter().find(|n| **n == name) else {
            return not_imported("");
        };
        let (soft, hard) = match entry.value.split_once(':') {
            Some((soft, hard)) => (soft, hard),
            None => (entry.value.as_str(), entry.value.as_str()),
        };
        if soft != hard {
            return not_imported("steward sets the soft and the hard limit to one value");
        }
        let limit = match soft {
            "infinity" => Limit::Infinity,
            text => match size(text).and_then(|s| bytes(&s)) {
                Some(n) if matches!(*name, "cpu" | "rttime" | "nice" | "rtprio") => {
                    if text.bytes().all(|b| b.is_ascii_digit()) {
                        Limit::Value(n)
                    } else {
                        return not_imported("steward takes a plain number");
                    }
                }
                Some(n) => Limit::Value(n),
                None => return not_imported("steward takes a number or infinity"),
            },
        };
        let limits = self.table.limits.get_or_insert_with(Vec::new);
        limits.retain(|(n, _)| n != name);
        limits.push((name.to_string(), limit));
        carried("limits")
    }

    fn directory(&mut self, unit: &Unit, entry: &Entry) -> Fate {
        let slot = match entry.key.as_str() {
            "RuntimeDirectory" => &mut self.table.runtime_directory,
            "StateDirectory" => &mut self.table.state_directory,
            "CacheDirectory" => &mut self.table.cache_directory,
            _ => &mut self.table.logs_directory,
        };
        let key: &'static str = match entry.key.as_str() {
            "RuntimeDirectory" => "runtime_directory",
            "StateDirectory" => "state_directory",
            "CacheDirectory" => "cache_directory",
            _ => "logs_directory",
        };
        if entry.is_reset() {
            *slot = None;
            return noted(None, "forgets the directories before it");
        }
        let Ok(value) = unit.expand(entry) else {
            return not_imported("its specifiers do not resolve");
        };
        let names: Vec<String> = value.split_ascii_whitespace().map(String::from).collect();
        // steward's rule: relative, plain components (no `..`, `.` or empty ones).
        if names
            .iter()
            .any(|n| n.contains(':') || n.split('/').any(|c| c.is_empty() || c == "." || c == ".."))
        {
            return not_imported("steward takes relative names of plain components");
        }
        extend(slot, names);
        carried(key)
    }

    /// Reads StandardInput/Output/Error and TTYPath together, as systemd does, into `stdio`
    /// when steward has a value that means the same.
    fn stdio(&mut self, unit: &Unit) {
        let get = |key: &str| unit.last(&Section::Service, key).map(|e| e.value.as_str());
        let input = get("StandardInput").unwrap_or("null");
        // Output follows a tty or socket input by default (systemd.exec(5)).
        let follows = input.starts_with("tty") || input == "socket";
        let output = get("StandardOutput").unwrap_or(if follows { "inherit" } else { "journal" });
        let error = get("StandardError").unwrap_or("inherit");
        let output = match output {
            "inherit" if input.starts_with("tty") => "tty",
            "inherit" if input == "socket" => "socket",
            other => other,
        };
        let error = if error == "inherit" { output } else { error };
        let logged = |s: &str| {
            matches!(
                s,
                "journal"
                    | "syslog"
                    | "kmsg"
                    | "journal+console"
                    | "syslog+console"
                    | "kmsg+console"
            )
        };
        let tty = unit
            .last(&Section::Service, "TTYPath")
            .and_then(|e| unit.expand(e).ok())
            .filter(|path| path.starts_with('/'))
            .unwrap_or_else(|| "/dev/console".into());
        self.table.stdio = match (input, output, error) {
            ("null", o, e) if logged(o) && logged(e) => None,
            ("null", "null", "null") => Some("null".into()),
            ("null", "null", e) if logged(e) => None,
            (i, "tty", "tty") if i.starts_with("tty") => Some(tty.clone()),
            ("socket", "socket", e) if logged(e) || e == "socket" => Some("socket".into()),
            _ => None,
        };
        // A tty service gets TERM from systemd: the console's and a VT's are "linux".
        if self.table.stdio.as_deref() == Some(tty.as_str())
            && !self.environment.iter().any(|(n, _)| n == "TERM")
        {
            let vt = tty
                .strip_prefix("/dev/tty")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let term = if vt || tty == "/dev/console" {
                "linux"
            } else {
                "vt220"
            };
            self.environment.push(("TERM".into(), term.into()));
            self.add_once(
                "environment",
                format!("TERM={term}: what systemd sets for a service on {tty}"),
            );
        }
    }

    /// Whether the unit's stdio is what steward's default `"log"` means.
    fn stdio_is_default(&self, unit: &Unit) -> bool {
        let get = |key: &str| unit.last(&Section::Service, key).map(|e| e.value.as_str());
        let logged = |s: Option<&str>| {
            s.is_none_or(|s| {
                matches!(
                    s,
                    "journal"
                        | "syslog"
                        | "kmsg"
                        | "inherit"
                        | "journal+console"
                        | "syslog+console"
                        | "kmsg+console"
                )
            })
        };
        get("StandardInput").is_none_or(|s| s == "null")
            && logged(get("StandardOutput"))
            && logged(get("StandardError"))
            && get("TTYPath").is_none()
    }

    fn add_once(&mut self, key: &'static str, why: String) {
        if !self
            .layout
            .lines
            .iter()
            .any(|(_, l)| *l == Line::Comment(why.clone()))
        {
            self.add(key, why);
        }
    }

    fn exec_start(&mut self, unit: &Unit, entry: &Entry, ty: &str) -> Result<Fate, Error> {
        let all = effective(unit, &Section::Service, "ExecStart");
        if entry.is_reset() {
            return Ok(noted(None, "forgets the command lines before it"));
        }
        // Only the last of several counts, except for a oneshot, where each runs in turn.
        let first = all.first().is_some_and(|e| std::ptr::eq(*e, entry));
        if ty == "oneshot" && all.len() > 1 {
            if !first {
                return Ok(noted(
                    Some("exec"),
                    "the next command of the chain in `exec`",
                ));
            }
            let mut commands = Vec::new();
            for e in &all {
                commands.extend(unit.commands(e)?);
            }
            let script: Vec<String> = commands.iter().map(|c| self.shell_command(c)).collect();
            self.table.exec = Some(vec!["/bin/sh".into(), "-c".into(), script.join(" && ")]);
            return Ok(noted(
                Some("exec"),
                "the oneshot's commands, one after the other, as one sh -c",
            ));
        }
        let Some(command) = unit.commands(entry)?.into_iter().next() else {
            return Ok(not_imported("no command"));
        };
        let (argv, notes, ok) = self.argv(&command);
        if !ok {
            return Ok(NotImported(notes.join("; ")));
        }
        self.table.exec = Some(argv);
        Ok(Carried(Some("exec"), notes))
    }

    fn exec_start_pre(&mut self, unit: &Unit, entry: &Entry) -> Result<Fate, Error> {
        if entry.is_reset() {
            self.pre.clear();
            return Ok(noted(None, "forgets the commands before it"));
        }
        let Some(command) = unit.commands(entry)?.into_iter().next() else {
            return Ok(not_imported("no command"));
        };
        let (argv, mut notes, ok) = self.argv(&command);
        if !ok {
            return Ok(NotImported(notes.join("; ")));
        }
        let name = format!(
            "{}-pre{}",
            self.own,
            match self.pre.len() {
                0 => String::new(),
                n => format!("-{}", n + 1),
            }
        );
        let mut task = ServiceTable {
            exec: Some(argv),
            ready: Some("exit".into()),
            ..ServiceTable::default()
        };
        if let Some(previous) = self.pre.last() {
            task.requires = Some(vec![previous.name.clone()]);
        }
        // `-`: a failure does not stop the service, which then only waits for it.
        let dependency = match command.prefixes.ignore_failure {
            true => {
                extend(&mut self.table.after, vec![name.clone()]);
                notes.push(format!(
                    "a setup task, {name}, that this service starts after (the `-` lets it fail)"
                ));
                "after"
            }
            false => {
                extend(&mut self.table.requires, vec![name.clone()]);
                notes.push(format!("a setup task, {name}, that this service requires"));
                "requires"
            }
        };
        notes.push("it runs when the service is started, not before each automatic restart".into());
        let mut layout = Layout::default();
        layout.comment(at(0, 0, 0), describe(entry));
        layout.key(at(0, 0, 2), "exec");
        layout.key(at(0, 0, 2), "ready");
        layout.key(at(0, 0, 2), "requires");
        layout.comment(
            at(0, 1, 0),
            format!("runs as {} does: its credentials, environment, directories and limits are copied in when the import ends", self.own),
        );
        self.pre.push(MappedService {
            name,
            header: vec![format!("{}'s ExecStartPre=, as a setup task", self.own)],
            table: task,
            layout,
            socket_layouts: Vec::new(),
            source: self.import.service.fragment.clone(),
        });
        Ok(Carried(Some(dependency), notes))
    }

    /// A command as steward's `exec`, with notes; `false` when it cannot be carried over.
    fn argv(&self, command: &Command) -> (Vec<String>, Vec<String>, bool) {
        let mut notes = Vec::new();
        match command.prefixes.privileges {
            Privileges::Sandboxed => {}
            Privileges::Full
            | Privileges::KeepCredentials
            | Privileges::KeepCredentialsWithoutAmbient => {
                return (
                    Vec::new(),
                    vec!["the `+`/`!` prefix: steward runs every command of a service with its credentials".into()],
                    false,
                );
            }
        }
        if command.prefixes.ignore_failure {
            notes.push("the `-` prefix: steward counts a non-zero exit as a failure".into());
        }
        if command.prefixes.argv0 {
            notes.push(format!(
                "the `@` prefix: steward passes the path as argv[0], not \"{}\"",
                command.argv[0]
            ));
        }
        let path = self.resolve(&command.path, &mut notes);
        let defined = |name: &str| self.environment.iter().any(|(n, _)| n == name);
        let undefined: Vec<&str> = command
            .substitutions
            .iter()
            .filter_map(|s| match &s.expansion {
                Expansion::Words { name } | Expansion::Value { name } if !defined(name) => {
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect();
        if undefined.is_empty() {
            let lookup = |name: &str| {
                self.environment
                    .iter()
                    .rfind(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let mut argv = command.expand(lookup);
            if !command.substitutions.is_empty() {
                notes.push("its variables expanded at import, from the unit's environment".into());
            }
            argv[0] = path;
            return (argv, notes, true);
        }
        let mut vars: Vec<String> = undefined.iter().map(|n| format!("${n}")).collect();
        vars.dedup();
        notes.push(format!(
            "{} not set by the unit: expanded by /bin/sh when the service starts",
            vars.join(" ")
        ));
        let mut resolved = command.clone();
        resolved.path = path;
        let script = format!("exec {}", self.shell_command(&resolved));
        (vec!["/bin/sh".into(), "-c".into(), script], notes, true)
    }

    /// A command as `sh` text: literal words quoted, `$VAR` left for the shell to split and
    /// `${VAR}` quoted, as systemd substitutes them.
    fn shell_command(&self, command: &Command) -> String {
        let mut words = Vec::new();
        for (i, arg) in command.argv.iter().enumerate() {
            let arg = if i == 0 { &command.path } else { arg };
            let subs: Vec<_> = command
                .substitutions
                .iter()
                .filter(|s| s.arg == i)
                .collect();
            if i == 0 || subs.is_empty() {
                words.push(quote(arg));
                continue;
            }
            let mut word = String::new();
            let mut pos = 0;
            for sub in subs {
                if sub.range.start > pos {
                    word.push_str(&quote(&arg[pos..sub.range.start]));
                }
                match &sub.expansion {
                    Expansion::Words { name } => word.push_str(&format!("${name}")),
                    Expansion::Value { name } => word.push_str(&format!("\"${{{name}}}\"")),
                    Expansion::Dollar => word.push_str("'$'"),
                }
                pos = sub.range.end;
            }
            if pos < arg.len() {
                word.push_str(&quote(&arg[pos..]));
            }
            words.push(word);
        }
        words.join(" ")
    }

    /// An absolute path for a command systemd looks up in its fixed search path.
    fn resolve(&self, path: &str, notes: &mut Vec<String>) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        for dir in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            let candidate = format!("{dir}/{path}");
            if self.root.join(&candidate[1..]).exists() {
                notes.push(format!("{path} found as {candidate}"));
                return candidate;
            }
        }
        notes.push(format!(
            "{path} not found under the root: assumed /usr/bin/{path}"
        ));
        format!("/usr/bin/{path}")
    }

    fn sockets(&mut self) -> Result<(), Error> {
        let import = self.import;
        let service = &import.service;
        let asked_socket = import.sockets.first().is_some_and(|s| {
            import.requested == s.name.to_string()
                || import.requested.ends_with(&format!("/{}", s.name))
        });
        let enabled = service.get(&Section::Install, "WantedBy").next().is_some()
            || service
                .get(&Section::Install, "RequiredBy")
                .next()
                .is_some();
        let mut accept = false;
        // Accept mode hands each connection of one listener to an instance: steward's takes
        // exactly one stream or seqpacket socket.
        let mut accepting_taken = false;
        for (rank, socket) in import.sockets.iter().enumerate() {
            let accepting = socket
                .last(&Section::Socket, "Accept")
                .and_then(|e| parse_boolean(&e.value))
                == Some(true);
            let u = rank + 1;
            let first_table = self.table.socket.len();
            let mode = socket
                .last(&Section::Socket, "SocketMode")
                .and_then(|e| u32::from_str_radix(&e.value, 8).ok())
                .filter(|m| *m <= 0o777)
                .map(|m| format!("{m:04o}"));
            let user = socket
                .last(&Section::Socket, "SocketUser")
                .and_then(|e| socket.expand(e).ok());
            let group = socket
                .last(&Section::Socket, "SocketGroup")
                .and_then(|e| socket.expand(e).ok());
            let backlog = socket
                .last(&Section::Socket, "Backlog")
                .and_then(|e| e.value.parse::<u32>().ok());
            let fd_name = socket
                .last(&Section::Socket, "FileDescriptorName")
                .map(|e| e.value.clone())
                .unwrap_or_else(|| socket.name.to_string());
            // First the listeners: each is one table, the rest of the unit applies to all.
            let mut fates: Vec<(usize, Fate, Option<usize>)> = Vec::new();
            for (i, entry) in socket.entries.iter().enumerate() {
                let kind = match entry.key.as_str() {
                    "ListenStream" => "stream",
                    "ListenDatagram" => "datagram",
                    "ListenSequentialPacket" => "seqpacket",
                    _ => continue,
                };
                if entry.is_reset() {
                    continue;
                }
                let value = match socket.expand(entry) {
                    Ok(v) => v,
                    Err(_) => {
                        fates.push((i, not_imported("its specifiers do not resolve"), None));
                        continue;
                    }
                };
                let (address, notes) = match listen_address(&value) {
                    Some(a) => a,
                    None => {
                        fates.push((
                            i,
                            not_imported("steward listens on a path or ADDR:PORT"),
                            None,
                        ));
                        continue;
                    }
                };
                if kind == "seqpacket" && matches!(address, Address::Inet(_)) {
                    fates.push((i, not_imported("seqpacket is for unix sockets"), None));
                    continue;
                }
                if accepting || accepting_taken {
                    if accepting_taken || kind == "datagram" {
                        fates.push((
                            i,
                            not_imported("steward's accept mode takes exactly one stream or seqpacket socket"),
                            None,
                        ));
                        continue;
                    }
                    accepting_taken = true;
                }
                let mut table = SocketTable {
                    kind: (kind != "stream").then(|| kind.to_string()),
                    name: Some(fd_name.clone()),
                    backlog,
                    ..SocketTable::default()
                };
                let mut notes = notes;
                match address {
                    Address::Unix(path) => {
                        table.path = Some(path);
                        table.owner = user.clone();
                        table.group = group.clone();
                        table.mode = Some(mode.clone().unwrap_or_else(|| {
                            notes.push("mode 0666: systemd's default SocketMode".into());
                            "0666".into()
                        }));
                    }
                    Address::Inet(listen) => table.listen = Some(listen),
                }
                self.table.socket.push(table);
                self.socket_layouts.push(Layout::default());
                let n = self.table.socket.len() - 1;
                let key: &'static str = if self.table.socket[n].path.is_some() {
                    "path"
                } else {
                    "listen"
                };
                let layout = &mut self.socket_layouts[n];
                for k in ["type", "mode", "owner", "group", "backlog", "name"] {
                    layout.key(at(u, i, 3), k);
                }
                fates.push((i, Carried(Some(key), notes), Some(n)));
            }
            let tables = first_table..self.table.socket.len();
            let home = (!tables.is_empty()).then_some(tables.start);
            for (i, entry) in socket.entries.iter().enumerate() {
                if let Some(pos) = fates.iter().position(|(j, _, _)| *j == i) {
                    let (_, fate, table) = fates.remove(pos);
                    self.record(u, i, entry, fate, table.or(home));
                    continue;
                }
                let v = entry.value.as_str();
                let fate = match (&entry.section, entry.key.as_str()) {
                    (
                        Section::Socket,
                        "ListenStream" | "ListenDatagram" | "ListenSequentialPacket",
                    ) => noted(None, "forgets the listeners before it"),
                    (Section::Socket, "Accept") => match parse_boolean(v) {
                        Some(true) => {
                            accept = true;
                            self.table.accept = Some(true);
                            noted(Some("accept"), "accept in this socket's service")
                        }
                        Some(false) => carried_none(),
                        None => not_imported(""),
                    },
                    (Section::Socket, "MaxConnections") => match v.parse::<u32>() {
                        Ok(n) if n > 0 && n < 65_536 => {
                            self.table.max_connections = Some(n);
                            noted(
                                Some("max_connections"),
                                "max_connections in this socket's service",
                            )
                        }
                        _ => not_imported(""),
                    },
                    (Section::Socket, "SocketMode") if mode.is_some() => carried("mode"),
                    (Section::Socket, "SocketUser") if user.is_some() => carried("owner"),
                    (Section::Socket, "SocketGroup") if group.is_some() => carried("group"),
                    (Section::Socket, "Backlog") if backlog.is_some() => carried("backlog"),
                    (Section::Socket, "FileDescriptorName") => carried("name"),
                    (Section::Socket, "Service") => noted(None, "the service it is imported with"),
                    (Section::Unit, "Description" | "Documentation") => carried_none(),
                    (Section::Unit, "Before" | "After" | "Requires" | "Wants" | "BindsTo")
                        if v.split_ascii_whitespace().all(|w| w.ends_with(".target")) =>
                    {
                        Dropped("steward has no targets".into())
                    }
                    (Section::Unit, "DefaultDependencies") => {
                        noted(None, "steward adds no implicit dependencies")
                    }
                    (Section::Install, "WantedBy" | "RequiredBy") => {
                        noted(None, "enabled in systemd: steward listens at start")
                    }
                    _ => not_imported(""),
                };
                let into_service = matches!(entry.key.as_str(), "Accept" | "MaxConnections");
                self.record(u, i, entry, fate, if into_service { None } else { home });
            }
        }
        if self.table.socket.is_empty() {
            return Ok(());
        }
        if accept {
            // Accept mode is lazy by nature, and never kept alive.
            if self.table.keep_alive == Some(true) {
                self.table.keep_alive = None;
                self.add_once(
                    "accept",
                    "keep_alive left out: an accept service spawns per connection".into(),
                );
            }
        } else if asked_socket || !enabled {
            self.table.lazy = Some(true);
            self.add(
                "lazy",
                "lazy: the first connection to its socket starts it, as socket activation does",
            );
            if self.table.keep_alive != Some(true) {
                self.table.keep_alive = Some(true);
                self.add(
                    "keep_alive",
                    "keep_alive: after it exits its socket is watched again, as systemd's socket unit goes on listening",
                );
            }
        }
        Ok(())
    }

    /// Keys that steward refuses together, as the units combined them: the one steward
    /// cannot honour goes, said as not imported.
    fn rules(&mut self) {
        let refuse = |m: &mut Mapper, what: &str, why: &str| {
            m.not_imported += 1;
            m.added += 1;
            m.layout.comment(
                Position::added(m.added),
                format!("not imported: {what}: {why}"),
            );
        };
        let t = &self.table;
        let accept = t.accept == Some(true);
        let exit = t.ready.as_deref() == Some("exit");
        if exit && accept {
            self.table.accept = None;
            refuse(
                self,
                "accept = true",
                "a oneshot (ready = \"exit\") is not spawned per connection",
            );
        }
        if exit && self.table.lazy == Some(true) {
            self.table.lazy = None;
            refuse(
                self,
                "lazy = true",
                "a oneshot (ready = \"exit\") starts at start, not on a connection",
            );
        }
        if exit && self.table.keep_alive == Some(true) {
            self.table.keep_alive = None;
            refuse(
                self,
                "keep_alive = true",
                "steward does not restart a oneshot (ready = \"exit\")",
            );
        }
        let accept = self.table.accept == Some(true);
        if accept && self.table.watchdog.is_some() {
            self.table.watchdog = None;
            refuse(
                self,
                "watchdog",
                "an accept service has no main process to watch",
            );
        }
        if accept && self.table.fd_store.is_some_and(|n| n > 0) {
            self.table.fd_store = None;
            refuse(
                self,
                "fd_store",
                "an accept instance has no next process to hand fds to",
            );
        }
        let lazy = self.table.lazy == Some(true);
        if self.table.stdio.as_deref() == Some("socket")
            && !accept
            && !(lazy && self.table.socket.len() == 1)
        {
            self.table.stdio = None;
            refuse(
                self,
                "stdio = \"socket\"",
                "steward gives a socket as stdin only to an accept service, or a lazy one with exactly one socket",
            );
        }
    }

    /// Copies what the setup tasks share with their service (they run as it would).
    fn finish(&mut self) {
        self.rules();
        let t = &self.table;
        for task in &mut self.pre {
            let s = &mut task.table;
            s.user.clone_from(&t.user);
            s.group.clone_from(&t.group);
            s.supplementary_groups.clone_from(&t.supplementary_groups);
            s.working_directory.clone_from(&t.working_directory);
            s.environment.clone_from(&t.environment);
            s.umask.clone_from(&t.umask);
            s.limits.clone_from(&t.limits);
            s.runtime_directory.clone_from(&t.runtime_directory);
            s.state_directory.clone_from(&t.state_directory);
            s.cache_directory.clone_from(&t.cache_directory);
            s.logs_directory.clone_from(&t.logs_directory);
            s.directory_mode.clone_from(&t.directory_mode);
            if t.stdio.as_deref() == Some("null") {
                s.stdio = Some("null".into());
            }
            for key in [
                "user",
                "group",
                "supplementary_groups",
                "working_directory",
                "environment",
                "umask",
                "limits",
                "runtime_directory",
                "state_directory",
                "cache_directory",
                "logs_directory",
                "directory_mode",
                "stdio",
            ] {
                task.layout.key(at(0, 1, 2), key);
            }
        }
    }
}

fn carried_none() -> Fate {
    Carried(None, Vec::new())
}

/// Directives that add to a list rather than replace the value.
fn is_list(key: &str) -> bool {
    matches!(
        key,
        "ExecStart"
            | "ExecStartPre"
            | "ExecStartPost"
            | "ExecStop"
            | "ExecStopPost"
            | "ExecReload"
            | "ExecCondition"
            | "Environment"
            | "EnvironmentFile"
            | "After"
            | "Before"
            | "Requires"
            | "Wants"
            | "BindsTo"
            | "Requisite"
            | "PartOf"
            | "Conflicts"
            | "Documentation"
            | "SupplementaryGroups"
            | "RuntimeDirectory"
            | "StateDirectory"
            | "CacheDirectory"
            | "LogsDirectory"
            | "ConfigurationDirectory"
            | "UnsetEnvironment"
            | "PassEnvironment"
            | "ReadWritePaths"
            | "ReadOnlyPaths"
            | "InaccessiblePaths"
            | "SystemCallFilter"
            | "WantedBy"
            | "RequiredBy"
            | "Alias"
            | "Also"
            | "ListenStream"
            | "ListenDatagram"
            | "ListenSequentialPacket"
            | "Sockets"
    ) || key.starts_with("Condition")
        || key.starts_with("Assert")
}

fn extend(slot: &mut Option<Vec<String>>, items: Vec<String>) {
    let list = slot.get_or_insert_with(Vec::new);
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// A word for `sh`: as it is when nothing in it is special, else single-quoted.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.=:,+@%".contains(&b));
    match plain {
        true => word.to_string(),
        false => format!("'{}'", word.replace('\'', "'\\''")),
    }
}

/// A systemd time span (systemd.time(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    Finite(Duration),
    Infinity,
}

fn timespan(text: &str) -> Option<Span> {
    let text = text.trim();
    if text == "infinity" {
        return Some(Span::Infinity);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let micros: u64 = match unit {
            "us" | "usec" | "µs" => 1,
            "ms" | "msec" => 1_000,
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000,
            "d" | "day" | "days" => 86_400_000_000,
            "w" | "week" | "weeks" => 604_800_000_000,
            _ => return None,
        };
        total += Duration::from_micros(n.checked_mul(micros)?);
        any = true;
    }
    any.then_some(Span::Finite(total))
}

/// A duration as steward writes it: the largest of h, m, s, ms that is exact.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".into();
    }
    for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A systemd size as steward's: bytes, or with K, M or G (powers of 1024, as both read them).
fn size(text: &str) -> Option<String> {
    let digits = text.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    match &text[digits..] {
        "" => Some(n.to_string()),
        "K" | "M" | "G" => Some(text.to_string()),
        "T" => Some(format!("{}G", n.checked_mul(1024)?)),
        _ => None,
    }
}

fn bytes(size: &str) -> Option<u64> {
    let digits = size.bytes().take_while(|b| b.is_ascii_digit()).count();
    let n: u64 = size[..digits].parse().ok()?;
    let per: u64 = match &size[digits..] {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(per)
}

enum Address {
    Unix(String),
    Inet(String),
}

/// A `Listen*=` value as a steward address, with notes.
fn listen_address(value: &str) -> Option<(Address, Vec<String>)> {
    if value.starts_with('/') {
        return Some((Address::Unix(value.to_string()), Vec::new()));
    }
    if let Ok(port) = value.parse::<u16>() {
        return Some((
            Address::Inet(format!("[::]:{port}")),
            vec!["a port alone: every address, IPv6 and IPv4, as systemd binds it".into()],
        ));
    }
    value
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| (Address::Inet(a.to_string()), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spans_read_as_systemd_reads_them() {
        let secs = |s| Some(Span::Finite(Duration::from_secs(s)));
        assert_eq!(timespan("5"), secs(5));
        assert_eq!(timespan("2min 30s"), secs(150));
        assert_eq!(timespan("1h"), secs(3600));
        assert_eq!(
            timespan("100ms"),
            Some(Span::Finite(Duration::from_millis(100)))
        );
        assert_eq!(timespan("infinity"), Some(Span::Infinity));
        assert_eq!(timespan("soon"), None);
        assert_eq!(duration(Duration::from_secs(150)), "150s");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0");
    }

    #[test]
    fn sizes_and_addresses() {
        assert_eq!(size("512M").as_deref(), Some("512M"));
        assert_eq!(size("2T").as_deref(), Some("2048G"));
        assert_eq!(size("10%"), None);
        assert!(matches!(listen_address("22"), Some((Address::Inet(a), _)) if a == "[::]:22"));
        assert!(
            matches!(listen_address("127.0.0.1:2222"), Some((Address::Inet(a), _)) if a == "127.0.0.1:2222")
        );
        assert!(
            matches!(listen_address("[::1]:80"), Some((Address::Inet(a), _)) if a == "[::1]:80")
        );
        assert!(matches!(listen_address("/run/x"), Some((Address::Unix(a), _)) if a == "/run/x"));
        assert!(listen_address("@abstract").is_none());
        assert!(listen_address("vsock:2:1234").is_none());
    }

    #[test]
    fn words_are_quoted_for_sh_only_when_needed() {
        assert_eq!(quote("/usr/sbin/cron"), "/usr/sbin/cron");
        assert_eq!(quote("-p -- \\u"), "'-p -- \\u'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
