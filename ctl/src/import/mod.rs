//! Reading systemd units for `stewardctl import` (SPEC §6): finds a `.service` or `.socket` on
//! the system under a root, with its drop-ins and its partner socket or service, and gives back
//! every directive with its file and line, for a mapper to carry over or report as not imported.
//!
//! What is here is systemd's reading of units, nothing of steward's config: syntax
//! ([`syntax`]), where units and drop-ins are found ([`lookup`]), `%` specifiers
//! ([`specifiers`]), command lines ([`exec`]) and environments ([`environment`]). A value is
//! kept as written in its [`Entry`]; the [`Unit`] methods read it the way systemd reads that
//! directive, so nothing is interpreted before a mapper asks.

pub mod environment;
mod error;
pub mod exec;
mod fs;
pub mod lookup;
pub mod map;
pub mod name;
pub mod render;
pub mod specifiers;
pub mod syntax;
pub mod words;

use std::path::PathBuf;

pub use environment::{
    Assignments, EnvironmentFile, EnvironmentFileContents, Var, read_environment_file,
};
pub use error::Error;
pub use exec::Command;
pub use lookup::Loader;
pub use name::{Instance, UnitKind, UnitName};
pub use specifiers::{Specifiers, UserSpecifiers};
pub use syntax::{Entry, Origin, Section};

/// What to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The root of the system the units belong to (`--root`); its unit directories are
    /// searched, its `/etc/passwd` and environment files read.
    pub root: PathBuf,
    /// Directories searched before the system's (`--unit-path`), as given (not under `root`).
    pub unit_path: Vec<PathBuf>,
    /// The units: names (`ssh.service`, `getty@ttyS0.service`; a bare `ssh` is a service) or
    /// paths to unit files (anything with a `/`).
    pub units: Vec<String>,
    /// What `%u` and `%h` stand for.
    pub user_specifiers: UserSpecifiers,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            root: PathBuf::from("/"),
            unit_path: Vec::new(),
            units: Vec::new(),
            user_specifiers: UserSpecifiers::default(),
        }
    }
}

/// Everything read for a request.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// One per service, in the order asked; a socket and its service asked for both are one.
    pub imports: Vec<Import>,
}

/// A service and the sockets that activate it.
#[derive(Debug, Clone)]
pub struct Import {
    /// The unit named in the request that led here.
    pub requested: String,
    /// The service; a template (`ssh@.service`) when an `Accept=yes` socket spawns it per
    /// connection.
    pub service: Unit,
    /// Its sockets (see [`Loader::sockets_for`]): the one asked for first, when a socket was.
    pub sockets: Vec<Unit>,
}

/// One unit as systemd would load it.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Its name: the one its file gives it (an alias resolved), with its instance.
    pub name: UnitName,
    /// Its other names: the one asked for when that was an alias, and the aliases linked to
    /// its file in the search path. Their drop-ins were read too.
    pub aliases: Vec<UnitName>,
    /// The unit file, symlinks resolved.
    pub fragment: PathBuf,
    /// The drop-ins, in the order they were read.
    pub dropins: Vec<PathBuf>,
    /// Every entry: the unit file's, then each drop-in's, in order. A later entry overrides an
    /// earlier one, or adds to it for a list directive, for which an empty value (a reset)
    /// forgets what came before; which applies is the directive's to say, as in systemd.
    pub entries: Vec<Entry>,
    /// What its `%` specifiers resolve to.
    pub specifiers: Specifiers,
    /// The units whose `.wants/` or `.requires/` link it: where it is enabled.
    pub wanted_by: Vec<String>,
}

impl Unit {
    /// The unit's type.
    pub fn kind(&self) -> UnitKind {
        self.name.kind()
    }

    /// The entries of `key` in `section`, in order.
    pub fn get<'a>(
        &'a self,
        section: &Section,
        key: &str,
    ) -> impl Iterator<Item = &'a Entry> + use<'a> {
        let (section, key) = (section.clone(), key.to_string());
        self.entries
            .iter()
            .filter(move |e| e.section == section && e.key == key)
    }

    /// The last entry of `key` in `section`: the one that counts for a single-valued directive.
    pub fn last(&self, section: &Section, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rfind(|e| e.section == *section && e.key == key)
    }

    /// An entry's value with its specifiers resolved, for directives that take them whole.
    pub fn expand(&self, entry: &Entry) -> Result<String, Error> {
        self.specifiers
            .expand(&entry.value)
            .map_err(|source| Error::Specifier {
                origin: entry.origin.clone(),
                source,
            })
    }

    /// An `Exec*=` entry's commands (none for a reset).
    pub fn commands(&self, entry: &Entry) -> Result<Vec<Command>, Error> {
        exec::parse(&entry.value, &self.specifiers).map_err(|source| Error::Command {
            origin: entry.origin.clone(),
            source,
        })
    }

    /// An `Environment=` entry's assignments (none for a reset).
    pub fn assignments(&self, entry: &Entry) -> Result<Assignments, Error> {
        environment::parse_assignments(&entry.value, &self.specifiers, &entry.origin).map_err(
            |source| Error::Environment {
                origin: entry.origin.clone(),
                source,
            },
        )
    }

    /// An `EnvironmentFile=` entry's file; `None` for a reset. Read it with
    /// [`read_environment_file`].
    pub fn environment_file(&self, entry: &Entry) -> Result<Option<EnvironmentFile>, Error> {
        environment::parse_environment_file(&entry.value, &self.specifiers).map_err(|source| {
            Error::Environment {
                origin: entry.origin.clone(),
                source,
            }
        })
    }
}

/// Reads every unit of `request` with its partners: for a service, the sockets that activate
/// it; for a socket, the service it activates and that service's other sockets.
pub fn load(request: &Request) -> Result<Loaded, Error> {
    let loader = Loader::new(&request.root, &request.unit_path, request.user_specifiers)?;
    let mut imports: Vec<Import> = Vec::new();
    for requested in &request.units {
        let unit = loader.unit(requested)?;
        let (service, sockets) = match unit.kind() {
            UnitKind::Service => {
                let sockets = loader.sockets_for(&unit)?;
                (unit, sockets)
            }
            UnitKind::Socket => {
                let service = loader.service_for(&unit)?;
                let mut sockets = loader.sockets_for(&service)?;
                sockets.retain(|s| s.name != unit.name);
                sockets.insert(0, unit);
                (service, sockets)
            }
        };
        if imports.iter().any(|i| i.service.name == service.name) {
            continue;
        }
        imports.push(Import {
            requested: requested.clone(),
            service,
            sockets,
        });
    }
    Ok(Loaded { imports })
}

/// What `stewardctl import` prints, and how many entries it could not carry over.
#[derive(Debug, Clone)]
pub struct Printed {
    /// The TOML document.
    pub text: String,
    /// Entries listed as `# not imported:` (the exit status is 1 when any).
    pub not_imported: usize,
}

/// Why an import did not print a config.
#[derive(Debug)]
pub enum ImportError {
    /// A unit could not be read: exit status 2.
    Unit(Error),
    /// A service without a command steward could run: no `ExecStart=`, or none carried over.
    NoExec {
        /// Its unit file.
        unit: PathBuf,
    },
    /// The config made does not check (a bug of the importer).
    Render(render::RenderError),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Unit(e) => write!(f, "{e}"),
            ImportError::NoExec { unit } => write!(
                f,
                "{}: no ExecStart= that steward can run (steward needs `exec`)",
                unit.display()
            ),
            ImportError::Render(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImportError::Unit(e) => Some(e),
            ImportError::NoExec { .. } => None,
            ImportError::Render(e) => Some(e),
        }
    }
}

/// Reads the units of `request`, maps them and prints the config: `stewardctl import`.
pub fn import(request: &Request) -> Result<Printed, ImportError> {
    let loaded = load(request).map_err(ImportError::Unit)?;
    let mapped = map::map(&loaded.imports, &request.root).map_err(ImportError::Unit)?;
    if let Some(s) = mapped.services.iter().find(|s| s.table.exec.is_none()) {
        return Err(ImportError::NoExec {
            unit: s.source.clone(),
        });
    }
    let text = render::render(&mapped).map_err(ImportError::Render)?;
    Ok(Printed {
        text,
        not_imported: mapped.not_imported,
    })
}
