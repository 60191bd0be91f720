//! Finding units on the system being imported, as systemd's loader does: the search path under
//! the root, the unit file (templates, aliases, masks), its drop-ins merged in systemd's order,
//! the targets it is enabled for, and the pairing of sockets with their services.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::{Chased, chase, read_bounded};
use super::name::{Instance, UnitKind, UnitName};
use super::specifiers::{Specifiers, UserSpecifiers, lookup_user};
use super::syntax::{self, Entry, Section, parse_boolean};
use super::{Error, Unit};

/// The system unit directories, highest priority first, relative to the root. systemd's own
/// list (systemd.unit(5), "Unit file load path") also has `/run/systemd/*` and the generator
/// directories: those describe the running boot (transient units, generated ones), not the
/// configuration to carry over, and are left out.
pub const SYSTEM_UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "usr/local/lib/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

/// Finds and reads units under one root.
#[derive(Debug, Clone)]
pub struct Loader {
    root: PathBuf,
    /// The search directories as configured (for messages), highest priority first.
    configured: Vec<PathBuf>,
    /// Those that exist, symlinks resolved, each once (on merged-/usr systems `/lib/systemd`
    /// and `/usr/lib/systemd` are one directory).
    dirs: Vec<PathBuf>,
    user_specifiers: UserSpecifiers,
}

/// A unit file found for a name.
struct Fragment {
    /// The name the file gives the unit: the name looked up, or the alias target it links to,
    /// with the instance applied.
    name: UnitName,
    /// The file, symlinks resolved.
    real: PathBuf,
}

impl Loader {
    /// A loader for the system under `root`; `unit_path` directories (host paths, as given)
    /// are searched before the system's.
    pub fn new(
        root: &Path,
        unit_path: &[PathBuf],
        user_specifiers: UserSpecifiers,
    ) -> Result<Loader, Error> {
        let mut configured = unit_path.to_vec();
        configured.extend(SYSTEM_UNIT_DIRS.iter().map(|dir| root.join(dir)));
        let mut dirs = Vec::new();
        for dir in &configured {
            if let Chased::Found(real) = chase(root, dir)? {
                if real.is_dir() && !dirs.contains(&real) {
                    dirs.push(real);
                }
            }
        }
        Ok(Loader {
            root: root.to_path_buf(),
            configured,
            dirs,
            user_specifiers,
        })
    }

    /// The root of the system being imported.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The search directories that exist, highest priority first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// A unit named on the command line: a path to its file (anything with a `/`), or a name
    /// searched for. A template must be named with an instance.
    pub fn unit(&self, arg: &str) -> Result<Unit, Error> {
        if !arg.contains('/') {
            return self.named(&parse_name(arg)?);
        }
        let path = std::path::absolute(arg).map_err(|e| Error::read(arg, e))?;
        let path = path.as_path();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = UnitName::parse_file_name(&file_name).map_err(|reason| Error::BadName {
            name: file_name.clone(),
            reason,
        })?;
        if name.instance() == &Instance::Template {
            return Err(Error::NeedsInstance { name: file_name });
        }
        // The unit's own directory comes first, for its file and its drop-ins.
        let dir = path.parent().unwrap_or(Path::new("."));
        let own = match chase(&self.root, dir)? {
            Chased::Found(real) => real,
            Chased::Masked | Chased::Missing => dir.to_path_buf(),
        };
        let mut dropin_dirs = vec![own.clone()];
        dropin_dirs.extend(self.dirs.iter().filter(|d| **d != own).cloned());
        self.load(&name, &[own], &[dir.to_path_buf()], &dropin_dirs)
    }

    /// A unit by name, searched for in the search path. A template must have an instance.
    pub fn named(&self, name: &UnitName) -> Result<Unit, Error> {
        if name.instance() == &Instance::Template {
            return Err(Error::NeedsInstance {
                name: name.to_string(),
            });
        }
        self.load(name, &self.dirs, &self.configured, &self.dirs)
    }

    /// A template itself, as an `Accept=yes` socket spawns it: `%i` is then an error.
    pub fn template(&self, name: &UnitName) -> Result<Unit, Error> {
        self.load(name, &self.dirs, &self.configured, &self.dirs)
    }

    fn load(
        &self,
        name: &UnitName,
        fragment_dirs: &[PathBuf],
        searched: &[PathBuf],
        dropin_dirs: &[PathBuf],
    ) -> Result<Unit, Error> {
        let fragment = self
            .fragment(name, fragment_dirs)?
            .ok_or_else(|| Error::NotFound {
                name: name.to_string(),
                searched: searched.to_vec(),
            })?;
        let mut names = vec![fragment.name.clone()];
        if *name != fragment.name {
            names.push(name.clone());
        }
        for alias in self.aliases_of(&fragment)? {
            if !names.contains(&alias) {
                names.push(alias);
            }
        }
        let kind = name.kind();
        let file: Arc<Path> = Arc::from(fragment.real.as_path());
        let mut entries = syntax::parse(&read_bounded(&fragment.real)?, &file, kind)?;
        let mut dropins = Vec::new();
        for path in self.dropins(dropin_dirs, &names, kind)? {
            let file: Arc<Path> = Arc::from(path.as_path());
            entries.extend(syntax::parse(&read_bounded(&path)?, &file, kind)?);
            dropins.push(path);
        }
        let specifiers = self.specifiers(&fragment.name, &entries)?;
        let wanted_by = self.wanted_by(&names)?;
        let mut names = names.into_iter();
        Ok(Unit {
            name: names.next().expect("the unit's own name is first"),
            aliases: names.collect(),
            fragment: fragment.real,
            dropins,
            entries,
            specifiers,
            wanted_by,
        })
    }

    /// The file for `name`: the name itself in every directory, then (for an instance) its
    /// template in every directory, as systemd looks.
    fn fragment(&self, name: &UnitName, dirs: &[PathBuf]) -> Result<Option<Fragment>, Error> {
        let template = name.template();
        for candidate in std::iter::once(name).chain(template.as_ref()) {
            for dir in dirs {
                let path = dir.join(candidate.to_string());
                let real = match chase(&self.root, &path)? {
                    Chased::Found(real) => real,
                    Chased::Masked => return Err(masked(name, path)),
                    Chased::Missing => continue,
                };
                let meta = fs::metadata(&real).map_err(|e| Error::read(&real, e))?;
                // Empty, or /dev/null reached by a relative link: masked too (systemd.unit(5)).
                if meta.file_type().is_char_device() || (meta.is_file() && meta.len() == 0) {
                    return Err(masked(name, path));
                }
                if !meta.is_file() {
                    return Err(Error::NotAFile { path: real });
                }
                let name = match self.alias_target(&path, &real, candidate)? {
                    None => name.clone(),
                    // A template's alias target is a template: give it our instance.
                    Some(target) if candidate != name => target.with_instance(name.instance()),
                    Some(target) => target,
                };
                return Ok(Some(Fragment { name, real }));
            }
        }
        Ok(None)
    }

    /// The unit a symlinked unit file makes `candidate` an alias of, if it is one: the link
    /// ends at a file of another name inside the search path. A link to a file elsewhere is a
    /// linked unit file, which keeps its own name (as in systemd's name map).
    fn alias_target(
        &self,
        path: &Path,
        real: &Path,
        candidate: &UnitName,
    ) -> Result<Option<UnitName>, Error> {
        let in_search_path = real
            .parent()
            .is_some_and(|p| self.dirs.iter().any(|d| d == p));
        let Some(target) = real.file_name().map(|n| n.to_string_lossy()) else {
            return Ok(None);
        };
        if !in_search_path || target == candidate.to_string() {
            return Ok(None);
        }
        match UnitName::parse_file_name(&target) {
            Ok(t) if t.kind() != candidate.kind() => Err(Error::AliasOfOtherType {
                path: path.to_path_buf(),
                target: target.into_owned(),
            }),
            Ok(t)
                if (t.instance() == &Instance::Template)
                    == (candidate.instance() == &Instance::Template) =>
            {
                Ok(Some(t))
            }
            // A file not named like a unit, or a template linked to an instance: not an alias.
            Ok(_) | Err(_) => Ok(None),
        }
    }

    /// The other names of a unit: symlinks in the search directories that lead to its file.
    /// Their drop-ins apply too (systemd.unit(5): "dropins for the aliased name and all
    /// aliases are loaded").
    fn aliases_of(&self, fragment: &Fragment) -> Result<Vec<UnitName>, Error> {
        let template = fragment.name.template();
        let own = template.as_ref().unwrap_or(&fragment.name);
        let mut aliases = Vec::new();
        for dir in &self.dirs {
            let entries = fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::read(dir, e))?;
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                let Some(name) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| UnitName::parse_file_name(n).ok())
                else {
                    continue;
                };
                let same_form = (name.instance() == &Instance::Template)
                    == (own.instance() == &Instance::Template);
                if !is_link || name.kind() != own.kind() || !same_form || name == *own {
                    continue;
                }
                if chase(&self.root, &entry.path())? == Chased::Found(fragment.real.clone()) {
                    aliases.push(name.with_instance(fragment.name.instance()));
                }
            }
        }
        Ok(aliases)
    }

    /// The drop-ins of a unit known by `names`, in the order systemd applies them. Directories:
    /// for each name and search directory, `NAME.d/`, its template's, and the dash-prefix ones
    /// (`foo-.service.d/`); then the type's `service.d/` in each. A file name is taken from the
    /// first directory that has it (a later one of the same name is masked by it; a mask
    /// itself, empty or linked to /dev/null, adds nothing); all are then read in name order.
    fn dropins(
        &self,
        dirs: &[PathBuf],
        names: &[UnitName],
        kind: UnitKind,
    ) -> Result<Vec<PathBuf>, Error> {
        let mut found = Vec::new();
        for name in names {
            for dir in dirs {
                self.find_dropin_dirs(dir, name, &mut found)?;
            }
        }
        for dir in dirs {
            self.add_dir(&dir.join(format!("{}.d", kind.suffix())), &mut found)?;
        }
        let mut files: BTreeMap<OsString, Option<PathBuf>> = BTreeMap::new();
        for dir in &found {
            let entries = fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::read(dir, e))?;
                let name = entry.file_name();
                let bytes = name.as_bytes();
                if !bytes.ends_with(b".conf")
                    || bytes.starts_with(b".")
                    || files.contains_key(&name)
                {
                    continue;
                }
                let file = match chase(&self.root, &entry.path())? {
                    Chased::Found(real) => {
                        let meta = fs::metadata(&real).map_err(|e| Error::read(&real, e))?;
                        if meta.is_dir() {
                            continue;
                        }
                        let mask = meta.file_type().is_char_device() || meta.len() == 0;
                        (!mask).then_some(real)
                    }
                    Chased::Masked => None,
                    Chased::Missing => continue,
                };
                files.insert(name, file);
            }
        }
        Ok(files.into_values().flatten().collect())
    }

    fn find_dropin_dirs(
        &self,
        dir: &Path,
        name: &UnitName,
        found: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        self.add_dir(&dir.join(format!("{name}.d")), found)?;
        if let Some(template) = name.template() {
            self.find_dropin_dirs(dir, &template, found)?;
        }
        if let Some(parent) = name.dash_parent() {
            self.find_dropin_dirs(dir, &parent, found)?;
        }
        Ok(())
    }

    fn add_dir(&self, path: &Path, found: &mut Vec<PathBuf>) -> Result<(), Error> {
        if let Chased::Found(real) = chase(&self.root, path)? {
            if real.is_dir() && !found.contains(&real) {
                found.push(real);
            }
        }
        Ok(())
    }

    /// The unit's specifiers; with [`UserSpecifiers::UnitUser`], `%u` and `%h` follow its
    /// last `User=`.
    fn specifiers(&self, name: &UnitName, entries: &[Entry]) -> Result<Specifiers, Error> {
        let manager = Specifiers::new(name);
        if self.user_specifiers == UserSpecifiers::Manager || name.kind() != UnitKind::Service {
            return Ok(manager);
        }
        let user = entries
            .iter()
            .rfind(|e| e.section == Section::Service && e.key == "User");
        let Some(entry) = user.filter(|e| !e.is_reset()) else {
            return Ok(manager);
        };
        let user = manager
            .expand(&entry.value)
            .map_err(|source| Error::Specifier {
                origin: entry.origin.clone(),
                source,
            })?;
        Ok(match lookup_user(&self.root, &user)? {
            Some(account) => Specifiers::with_user(name, &account.name, Some(account.home)),
            None => Specifiers::with_user(name, &user, None),
        })
    }

    /// The units whose `.wants/` or `.requires/` directory links one of `names`: what
    /// `systemctl enable` made of the unit's `[Install]` section.
    fn wanted_by(&self, names: &[UnitName]) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let entries = fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::read(dir, e))?;
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                let Some(owner) = file_name
                    .strip_suffix(".wants")
                    .or_else(|| file_name.strip_suffix(".requires"))
                else {
                    continue;
                };
                let links = names
                    .iter()
                    .any(|name| fs::symlink_metadata(entry.path().join(name.to_string())).is_ok());
                if links && !out.iter().any(|o| o == owner) {
                    out.push(owner.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The service a socket activates: `Service=`, else the socket's name with `.service`;
    /// with `Accept=yes` the template `NAME@.service`, which it instantiates per connection.
    pub fn service_for(&self, socket: &Unit) -> Result<Unit, Error> {
        let name = partner(socket)?;
        match name.instance() {
            Instance::Template => self.template(&name),
            Instance::None | Instance::Named(_) => self.named(&name),
        }
    }

    /// The sockets that pass their fds to a service: those its `Sockets=` names, the socket of
    /// the same name (as any of its names), and for an instance or template `NAME@….service`
    /// the `NAME.socket` with `Accept=yes`. A socket found by name counts only if it does
    /// activate this service (its `Service=` may point elsewhere); one that is missing or
    /// masked is not there. A socket of another name whose `Service=` points here is not
    /// searched for (that would read every socket of the system): it is found from its side,
    /// by [`Loader::service_for`].
    pub fn sockets_for(&self, service: &Unit) -> Result<Vec<Unit>, Error> {
        let mut sockets: Vec<Unit> = Vec::new();
        for entry in service.get(&Section::Service, "Sockets") {
            for word in service.expand(entry)?.split_ascii_whitespace() {
                let name = UnitName::parse_file_name(word)
                    .ok()
                    .filter(|n| n.kind() == UnitKind::Socket && n.instance() != &Instance::Template)
                    .ok_or_else(|| Error::WrongPartner {
                        origin: entry.origin.clone(),
                        name: word.to_string(),
                        expected: "a .socket unit",
                    })?;
                let socket = self.named(&name)?;
                if !sockets.iter().any(|s| s.name == socket.name) {
                    sockets.push(socket);
                }
            }
        }
        // By each of its names: syslog.socket activates syslog.service, Debian's alias of
        // rsyslog.service.
        let names: Vec<&UnitName> = std::iter::once(&service.name)
            .chain(&service.aliases)
            .collect();
        let mut candidates = Vec::new();
        for name in &names {
            if name.instance() != &Instance::Template {
                candidates.push(name.with_kind(UnitKind::Socket));
            }
            if name.instance() != &Instance::None {
                candidates.push(
                    name.with_kind(UnitKind::Socket)
                        .with_instance(&Instance::None),
                );
            }
        }
        let activates = |target: &UnitName| {
            names
                .iter()
                .any(|name| *name == target || name.template().as_ref() == Some(target))
        };
        for name in candidates {
            let socket = match self.named(&name) {
                Ok(socket) => socket,
                Err(Error::NotFound { .. } | Error::Masked { .. }) => continue,
                Err(e) => return Err(e),
            };
            if activates(&partner(&socket)?) && !sockets.iter().any(|s| s.name == socket.name) {
                sockets.push(socket);
            }
        }
        Ok(sockets)
    }
}

fn parse_name(name: &str) -> Result<UnitName, Error> {
    UnitName::parse(name).map_err(|reason| Error::BadName {
        name: name.to_string(),
        reason,
    })
}

fn masked(name: &UnitName, path: PathBuf) -> Error {
    Error::Masked {
        name: name.to_string(),
        path,
    }
}

/// The name of the service a socket activates (a template with `Accept=yes`), without
/// loading it.
fn partner(socket: &Unit) -> Result<UnitName, Error> {
    // systemd ignores an Accept= it cannot read, keeping the one before.
    let accept = socket
        .get(&Section::Socket, "Accept")
        .filter_map(|e| parse_boolean(&e.value))
        .last()
        .unwrap_or(false);
    let service = socket.last(&Section::Socket, "Service");
    match (accept, service) {
        (true, Some(entry)) => Err(Error::AcceptWithService {
            origin: entry.origin.clone(),
        }),
        (false, Some(entry)) => {
            let written = socket.expand(entry)?;
            UnitName::parse_file_name(&written)
                .ok()
                .filter(|n| n.kind() == UnitKind::Service && n.instance() != &Instance::Template)
                .ok_or_else(|| Error::WrongPartner {
                    origin: entry.origin.clone(),
                    name: written,
                    expected: "a .service unit",
                })
        }
        (true, None) => Ok(socket
            .name
            .with_kind(UnitKind::Service)
            .with_instance(&Instance::Template)),
        (false, None) => Ok(socket.name.with_kind(UnitKind::Service)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::fs::tests::TempDir;

    const LIB: &str = "usr/lib/systemd/system";
    const ETC: &str = "etc/systemd/system";

    /// A root with Debian's merged /usr: /lib is a link to usr/lib.
    fn root() -> TempDir {
        let dir = TempDir::new();
        fs::create_dir_all(dir.0.join(LIB)).unwrap();
        fs::create_dir_all(dir.0.join(ETC)).unwrap();
        dir.link("lib", "usr/lib");
        dir
    }

    fn loader(dir: &TempDir) -> Loader {
        Loader::new(&dir.0, &[], UserSpecifiers::Manager).unwrap()
    }

    /// `(key, value)` of every entry.
    fn values(unit: &Unit) -> Vec<(String, String)> {
        unit.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| {
                let parent = p.parent().unwrap().file_name().unwrap().to_string_lossy();
                format!("{parent}/{}", p.file_name().unwrap().to_string_lossy())
            })
            .collect()
    }

    #[test]
    fn search_order_and_merged_usr() {
        let dir = root();
        dir.write(&format!("{LIB}/a.service"), "[Service]\nFrom=lib\n");
        dir.write(&format!("{ETC}/a.service"), "[Service]\nFrom=etc\n");
        dir.write("extra/a.service", "[Service]\nFrom=extra\n");
        let l = loader(&dir);
        // /lib and /usr/lib are one directory, searched once.
        assert_eq!(l.dirs(), [dir.0.join(ETC), dir.0.join(LIB)]);
        assert_eq!(
            values(&l.unit("a.service").unwrap()),
            kv(&[("From", "etc")])
        );
        let extra = Loader::new(&dir.0, &[dir.0.join("extra")], UserSpecifiers::Manager).unwrap();
        assert_eq!(values(&extra.unit("a").unwrap()), kv(&[("From", "extra")]));
    }

    #[test]
    fn missing_masked_and_bad_names() {
        let dir = root();
        dir.write(&format!("{LIB}/m.service"), "[Service]\nA=1\n");
        dir.link(&format!("{ETC}/m.service"), "/dev/null");
        dir.write(&format!("{LIB}/empty.service"), "");
        fs::create_dir_all(dir.0.join(LIB).join("dir.service")).unwrap();
        let l = loader(&dir);
        let e = l.unit("m.service").unwrap_err();
        assert!(matches!(e, Error::Masked { .. }), "{e}");
        assert!(e.to_string().starts_with("m.service is masked ("), "{e}");
        assert!(matches!(l.unit("empty.service"), Err(Error::Masked { .. })));
        assert!(matches!(l.unit("dir.service"), Err(Error::NotAFile { .. })));
        let e = l.unit("none.service").unwrap_err().to_string();
        let searched = format!(
            "none.service: no such unit in {}, {}, {}, {}",
            dir.0.join(ETC).display(),
            dir.0.join("usr/local/lib/systemd/system").display(),
            dir.0.join("lib/systemd/system").display(),
            dir.0.join(LIB).display()
        );
        assert_eq!(e, searched);
        let e = l.unit("home.mount").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"home.mount\": not a unit name: .mount units cannot be imported, only .service and .socket"
        );
    }

    #[test]
    fn templates_and_instances() {
        let dir = root();
        dir.write(
            &format!("{LIB}/getty@.service"),
            "[Service]\nTTYPath=/dev/%I\n",
        );
        dir.write(
            &format!("{LIB}/getty@tty9.service"),
            "[Service]\nOwn=file\n",
        );
        let l = loader(&dir);
        let unit = l.unit("getty@ttyS0.service").unwrap();
        assert_eq!(unit.name.to_string(), "getty@ttyS0.service");
        assert_eq!(unit.fragment, dir.0.join(LIB).join("getty@.service"));
        assert_eq!(unit.expand(&unit.entries[0]).unwrap(), "/dev/ttyS0");
        // An instance's own file comes before its template.
        assert_eq!(
            values(&l.unit("getty@tty9.service").unwrap()),
            kv(&[("Own", "file")])
        );
        let e = l.unit("getty@.service").unwrap_err();
        assert_eq!(
            e.to_string(),
            "getty@.service is a template: name an instance of it, such as getty@INSTANCE.service"
        );
        // Loaded for an Accept=yes socket, a template is itself, without an instance.
        let template = l
            .template(&UnitName::parse("getty@.service").unwrap())
            .unwrap();
        assert!(template.expand(&template.entries[0]).is_err());
    }

    #[test]
    fn dropins_merge_in_name_order_across_directories() {
        let dir = root();
        dir.write(
            &format!("{LIB}/a.service"),
            "[Service]\nExecStart=/bin/a\nEnvironment=X=0\n",
        );
        dir.write(
            &format!("{LIB}/a.service.d/10-lib.conf"),
            "[Service]\nFrom=lib-10\n",
        );
        dir.write(
            &format!("{LIB}/a.service.d/30-lib.conf"),
            "[Service]\nFrom=lib-30\n",
        );
        dir.write(
            &format!("{ETC}/a.service.d/30-lib.conf"),
            "[Service]\nFrom=etc-30\n",
        );
        dir.write(
            &format!("{ETC}/a.service.d/20-etc.conf"),
            "[Service]\nExecStart=\nExecStart=/bin/b\n",
        );
        dir.write(
            &format!("{ETC}/a.service.d/.hidden.conf"),
            "[Service]\nFrom=hidden\n",
        );
        dir.write(
            &format!("{ETC}/a.service.d/notes.txt"),
            "[Service]\nFrom=txt\n",
        );
        dir.write(
            &format!("{LIB}/a.service.d/40-masked.conf"),
            "[Service]\nFrom=masked\n",
        );
        dir.link(&format!("{ETC}/a.service.d/40-masked.conf"), "/dev/null");
        dir.write(
            &format!("{LIB}/a.service.d/50-empty.conf"),
            "[Service]\nFrom=emptied\n",
        );
        dir.write(&format!("{ETC}/a.service.d/50-empty.conf"), "");
        let unit = loader(&dir).unit("a.service").unwrap();
        assert_eq!(
            values(&unit),
            kv(&[
                ("ExecStart", "/bin/a"),
                ("Environment", "X=0"),
                ("From", "lib-10"),
                ("ExecStart", ""),
                ("ExecStart", "/bin/b"),
                ("From", "etc-30"),
            ])
        );
        assert_eq!(
            file_names(&unit.dropins),
            [
                "a.service.d/10-lib.conf",
                "a.service.d/20-etc.conf",
                "a.service.d/30-lib.conf"
            ]
        );
        // Provenance: each entry names its own file and line.
        let reset = &unit.entries[3];
        assert_eq!(
            reset.origin.file.as_ref(),
            dir.0.join(ETC).join("a.service.d/20-etc.conf")
        );
        assert_eq!(reset.origin.line, 2);
    }

    #[test]
    fn template_dash_and_type_dropins() {
        let dir = root();
        dir.write(
            &format!("{LIB}/serial-getty@.service"),
            "[Service]\nA=unit\n",
        );
        dir.write(
            &format!("{ETC}/serial-getty@ttyS0.service.d/a.conf"),
            "[Service]\nA=instance\n",
        );
        dir.write(
            &format!("{LIB}/serial-getty@.service.d/b.conf"),
            "[Service]\nA=template\n",
        );
        dir.write(
            &format!("{LIB}/serial-.service.d/c.conf"),
            "[Service]\nA=dash\n",
        );
        dir.write(
            &format!("{LIB}/serial-@.service.d/d.conf"),
            "[Service]\nA=dash-template\n",
        );
        dir.write(&format!("{LIB}/service.d/e.conf"), "[Service]\nA=type\n");
        // The type-level directory loses to a same-named file of the unit's own.
        dir.write(&format!("{LIB}/service.d/a.conf"), "[Service]\nA=type-a\n");
        dir.write(
            &format!("{LIB}/socket.d/f.conf"),
            "[Socket]\nA=socket-type\n",
        );
        let unit = loader(&dir).unit("serial-getty@ttyS0.service").unwrap();
        assert_eq!(
            values(&unit),
            kv(&[
                ("A", "unit"),
                ("A", "instance"),
                ("A", "template"),
                ("A", "dash"),
                ("A", "dash-template"),
                ("A", "type"),
            ])
        );
    }

    #[test]
    fn aliases_both_ways() {
        let dir = root();
        dir.write(
            &format!("{LIB}/ssh.service"),
            "[Service]\nExecStart=/usr/sbin/sshd -D\n",
        );
        dir.link(
            &format!("{ETC}/sshd.service"),
            "/lib/systemd/system/ssh.service",
        );
        dir.write(
            &format!("{ETC}/sshd.service.d/x.conf"),
            "[Service]\nVia=alias\n",
        );
        dir.write(
            &format!("{ETC}/ssh.service.d/y.conf"),
            "[Service]\nVia=name\n",
        );
        let l = loader(&dir);
        for asked in ["sshd.service", "ssh.service"] {
            let unit = l.unit(asked).unwrap();
            assert_eq!(unit.name.to_string(), "ssh.service", "{asked}");
            assert_eq!(unit.aliases, [UnitName::parse("sshd.service").unwrap()]);
            assert_eq!(unit.fragment, dir.0.join(LIB).join("ssh.service"));
            assert_eq!(
                values(&unit),
                kv(&[
                    ("ExecStart", "/usr/sbin/sshd -D"),
                    ("Via", "alias"),
                    ("Via", "name")
                ]),
                "{asked}"
            );
            assert_eq!(unit.specifiers.expand("%n").unwrap(), "ssh.service");
        }

        dir.write(&format!("{LIB}/getty@.service"), "[Service]\nTTY=%i\n");
        dir.link(&format!("{LIB}/autovt@.service"), "getty@.service");
        dir.write(
            &format!("{ETC}/autovt@.service.d/z.conf"),
            "[Service]\nVia=autovt\n",
        );
        let unit = l.unit("autovt@tty1.service").unwrap();
        assert_eq!(unit.name.to_string(), "getty@tty1.service");
        assert_eq!(
            unit.aliases,
            [UnitName::parse("autovt@tty1.service").unwrap()]
        );
        assert_eq!(values(&unit), kv(&[("TTY", "%i"), ("Via", "autovt")]));
        assert_eq!(l.unit("getty@tty2.service").unwrap().dropins.len(), 1);

        dir.link(
            &format!("{ETC}/odd.service"),
            "/lib/systemd/system/dbus.socket",
        );
        dir.write(&format!("{LIB}/dbus.socket"), "[Socket]\n");
        assert!(matches!(
            l.unit("odd.service"),
            Err(Error::AliasOfOtherType { .. })
        ));
    }

    #[test]
    fn a_linked_unit_file_keeps_its_name() {
        let dir = root();
        dir.write(
            "opt/app/app-1.2.service",
            "[Service]\nExecStart=/opt/app/run\n",
        );
        dir.link(&format!("{ETC}/app.service"), "/opt/app/app-1.2.service");
        let unit = loader(&dir).unit("app.service").unwrap();
        assert_eq!(unit.name.to_string(), "app.service");
        assert!(unit.aliases.is_empty());
        assert_eq!(unit.fragment, dir.0.join("opt/app/app-1.2.service"));
    }

    #[test]
    fn a_unit_given_by_path() {
        let dir = root();
        let path = dir.write("work/web@blue.service", "[Service]\nColor=%i\n");
        dir.write("work/web@blue.service.d/own.conf", "[Service]\nFrom=own\n");
        dir.write(
            &format!("{ETC}/web@blue.service.d/sys.conf"),
            "[Service]\nFrom=system\n",
        );
        let l = loader(&dir);
        let unit = l.unit(path.to_str().unwrap()).unwrap();
        assert_eq!(unit.fragment, path);
        assert_eq!(
            values(&unit),
            kv(&[("Color", "%i"), ("From", "own"), ("From", "system")])
        );
        // A missing instance file falls back to its template in the same directory.
        dir.write("work/tpl@.service", "[Service]\nI=%i\n");
        let unit = l
            .unit(dir.0.join("work/tpl@x.service").to_str().unwrap())
            .unwrap();
        assert_eq!(unit.expand(&unit.entries[0]).unwrap(), "x");
        let template = dir.0.join("work/tpl@.service");
        assert!(matches!(
            l.unit(template.to_str().unwrap()),
            Err(Error::NeedsInstance { .. })
        ));
        let e = l
            .unit(dir.0.join("work/none.service").to_str().unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "none.service: no such unit in {}",
                dir.0.join("work").display()
            )
        );
    }

    #[test]
    fn user_specifiers_as_older_systemd() {
        let dir = root();
        dir.write(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n",
        );
        dir.write(
            &format!("{LIB}/a@.service"),
            "[Service]\nUser=%i\nHome=%u %h\n",
        );
        dir.write(
            &format!("{LIB}/b.service"),
            "[Service]\nUser=web\nUser=\nHome=%u %h\n",
        );
        dir.write(
            &format!("{LIB}/c.service"),
            "[Service]\nUser=ghost\nHome=%h\n",
        );
        let unit_user = Loader::new(&dir.0, &[], UserSpecifiers::UnitUser).unwrap();
        let home = |l: &Loader, name: &str| {
            let unit = l.unit(name).unwrap();
            let entry = unit.last(&Section::Service, "Home").unwrap().clone();
            unit.expand(&entry).map_err(|e| e.to_string())
        };
        assert_eq!(home(&unit_user, "a@web.service").unwrap(), "web /var/www");
        assert_eq!(home(&unit_user, "b.service").unwrap(), "root /root");
        let e = home(&unit_user, "c.service").unwrap_err();
        assert!(
            e.ends_with("%h (at byte 0) is the home of ghost, who has no entry in /etc/passwd"),
            "{e}"
        );
        // What systemd does today: the manager's user, whatever User= says.
        assert_eq!(home(&loader(&dir), "a@web.service").unwrap(), "root /root");
    }

    #[test]
    fn where_a_unit_is_enabled() {
        let dir = root();
        dir.write(&format!("{LIB}/a.service"), "[Service]\n");
        dir.link(
            &format!("{ETC}/multi-user.target.wants/a.service"),
            "/lib/systemd/system/a.service",
        );
        dir.link(
            &format!("{LIB}/sysinit.target.requires/a.service"),
            "../a.service",
        );
        let mut wanted_by = loader(&dir).unit("a.service").unwrap().wanted_by;
        wanted_by.sort();
        assert_eq!(wanted_by, ["multi-user.target", "sysinit.target"]);
    }

    fn names(units: &[Unit]) -> Vec<String> {
        units.iter().map(|u| u.name.to_string()).collect()
    }

    #[test]
    fn sockets_and_their_services() {
        let dir = root();
        dir.write(&format!("{LIB}/plain.socket"), "[Socket]\nListenStream=1\n");
        dir.write(
            &format!("{LIB}/plain.service"),
            "[Service]\nExecStart=/bin/p\n",
        );
        dir.write(
            &format!("{LIB}/named.socket"),
            "[Socket]\nService=other.service\n",
        );
        dir.write(
            &format!("{LIB}/other.service"),
            "[Service]\nSockets=plain.socket\n",
        );
        dir.write(
            &format!("{LIB}/inetd.socket"),
            "[Socket]\nAccept=no\nAccept=yes\n",
        );
        dir.write(
            &format!("{LIB}/inetd@.service"),
            "[Service]\nExecStart=/bin/i\n",
        );
        dir.write(
            &format!("{LIB}/bad.socket"),
            "[Socket]\nAccept=yes\nService=x.service\n",
        );
        dir.write(
            &format!("{LIB}/wrong.socket"),
            "[Socket]\nService=x.socket\n",
        );
        dir.write(&format!("{LIB}/lonely.socket"), "[Socket]\n");
        let l = loader(&dir);

        let service_of = |socket: &str| l.service_for(&l.unit(socket).unwrap());
        assert_eq!(
            service_of("plain.socket").unwrap().name.to_string(),
            "plain.service"
        );
        assert_eq!(
            service_of("named.socket").unwrap().name.to_string(),
            "other.service"
        );
        let template = service_of("inetd.socket").unwrap();
        assert_eq!(template.name.to_string(), "inetd@.service");
        let e = service_of("bad.socket").unwrap_err().to_string();
        assert!(e.ends_with(".socket:3: Service= is not allowed with Accept=yes (connections go to instances of the socket's NAME@.service)"), "{e}");
        let e = service_of("wrong.socket").unwrap_err().to_string();
        assert!(
            e.ends_with("wrong.socket:2: x.socket is not a .service unit"),
            "{e}"
        );
        assert!(matches!(
            service_of("lonely.socket"),
            Err(Error::NotFound { .. })
        ));

        let sockets_of = |service: &str| names(&l.sockets_for(&l.unit(service).unwrap()).unwrap());
        assert_eq!(sockets_of("plain.service"), ["plain.socket"]);
        // named.socket activates other.service, which also takes plain.socket by Sockets=.
        assert_eq!(sockets_of("other.service"), ["plain.socket"]);
        assert_eq!(sockets_of("inetd@conn1.service"), ["inetd.socket"]);
        assert_eq!(names(&l.sockets_for(&template).unwrap()), ["inetd.socket"]);
    }

    #[test]
    fn a_same_named_socket_for_another_service_is_not_paired() {
        let dir = root();
        dir.write(&format!("{LIB}/a.service"), "[Service]\n");
        dir.write(&format!("{LIB}/a.socket"), "[Socket]\nService=b.service\n");
        dir.write(
            &format!("{LIB}/c.service"),
            "[Service]\nSockets=nope.socket\n",
        );
        dir.write(
            &format!("{LIB}/d.service"),
            "[Service]\nSockets=d.service\n",
        );
        let l = loader(&dir);
        assert!(
            l.sockets_for(&l.unit("a.service").unwrap())
                .unwrap()
                .is_empty()
        );
        let e = l.sockets_for(&l.unit("c.service").unwrap()).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = l
            .sockets_for(&l.unit("d.service").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("d.service:2: d.service is not a .socket unit"),
            "{e}"
        );
    }
}
