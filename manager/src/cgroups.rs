//! One cgroup per service, on cgroup v2, v1, or a mix of both (as on hosts that mount v1
//! controllers beside a v2 hierarchy without them). Limits are written before the executor
//! joins the cgroup, so the service never holds a page outside it; the cgroup is also how a
//! service's every process is found when it is stopped.
//!
//! Everything here works on paths under the hierarchies' roots, so tests run on a temporary
//! directory standing in for `/sys/fs/cgroup`.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{Mode, OFlags};

/// Which cgroup interface a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (or group of controllers).
    V1,
    /// The unified hierarchy.
    V2,
}

/// A mounted hierarchy, and the directory under which steward makes its services' cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its interface.
    pub version: Version,
    /// The controllers it offers to steward's cgroups (`memory`, `pids`, …).
    pub controllers: Vec<String>,
    /// `<mount>/<steward's own cgroup>/<steward's directory>`.
    pub base: PathBuf,
    /// The same directory as `/proc/PID/cgroup` names it (`/<own cgroup>/<directory>`).
    pub path: String,
}

/// The limits a service's cgroup carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory_max: Option<u64>,
    /// Maximum number of tasks.
    pub tasks_max: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory_max.is_some() || self.tasks_max.is_some()
    }
}

/// Why a service's cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Cgroups are not usable by this manager at all.
    #[error("cgroups are not available: {0}")]
    Unavailable(String),
    /// No mounted hierarchy offers the controller a limit needs.
    #[error("`{key}` needs the {controller} controller, which no mounted cgroup hierarchy offers")]
    NoController {
        /// The config key.
        key: &'static str,
        /// The controller.
        controller: &'static str,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup hierarchies steward uses.
#[derive(Debug)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    /// Why cgroups cannot be used, when they cannot.
    unavailable: Option<String>,
    /// What setting up found worth saying (a controller that could not be enabled): for the
    /// loop to log.
    notes: Vec<String>,
}

/// A service's cgroup as made: its limits, and whether its processes join it. The unit keeps
/// it, so that an accept service (which spawns per connection) does not mkdir and rewrite its
/// limits at every spawn. The directories are not kept: [`Cgroups::joined`] names them again
/// from the limits at each spawn, where keeping them cost a hundred bytes of heap a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The limits written.
    pub limits: Limits,
    joins: Joins,
    /// Its `cgroup.procs` in the tracking hierarchy, once opened for [`Cgroups::signal_kept`].
    /// Dropped with the rest when the cgroup is removed or made again, so that it never names
    /// a directory that is gone.
    procs: Kept,
    /// Its v2 directory (O_PATH), once opened for [`Cgroups::unified_kept`]; dropped as
    /// `procs` is.
    unified: Kept,
}

/// Whether a service's processes join its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joins {
    /// The directories its limits need, made.
    Made,
    /// None: they could not be made, and no limit needed them.
    Without,
}

/// An fd kept open for reading again. Equal when it is the same one.
#[derive(Debug, Clone, Default)]
struct Kept(Option<Rc<OwnedFd>>);

impl PartialEq for Kept {
    fn eq(&self, other: &Kept) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            (None, Some(_)) | (Some(_), None) => false,
        }
    }
}

impl Eq for Kept {}

impl Cgroups {
    /// Uses these hierarchies (their base directories must exist).
    #[cfg(test)]
    pub fn new(hierarchies: Vec<Hierarchy>) -> Cgroups {
        let unavailable = hierarchies
            .is_empty()
            .then(|| "no cgroup hierarchy is mounted".to_string());
        Cgroups {
            hierarchies,
            unavailable,
            notes: Vec::new(),
        }
    }

    /// Finds the mounted hierarchies and creates steward's directory `dir` in each, below the
    /// cgroup steward itself is in; on v2 it enables the controllers there, which may move
    /// steward itself into a leaf cgroup of its own (v2 allows no process in an inner node).
    /// Never fails: when cgroups cannot be used, services that ask for no limit still run, and
    /// those that do fail with the reason kept here.
    pub fn set_up(dir: &str) -> Cgroups {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let found = parse_hierarchies(&mountinfo, &own, dir);
        let mut usable = Vec::new();
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        for h in found {
            match setup_base(&h, &mut notes) {
                Ok(h) => usable.push(h),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let unavailable = if usable.is_empty() {
            Some(if problems.is_empty() {
                "no cgroup hierarchy is mounted".to_string()
            } else {
                problems.join("; ")
            })
        } else {
            None
        };
        Cgroups {
            hierarchies: usable,
            unavailable,
            notes,
        }
    }

    /// At a fresh start (not a reexec, whose services keep theirs): removes what an earlier
    /// manager of the same directory left behind when it was killed (a pid, or a container's
    /// pid namespace, is reused). rmdir removes only empty cgroups, so nothing running is
    /// touched.
    pub fn sweep(&self) {
        for h in &self.hierarchies {
            let Ok(entries) = fs::read_dir(&h.base) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name() != "manager" && entry.path().is_dir() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// What setting up found worth a log line, once.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// A one-line description for the log.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!("cgroups not available ({why}); services run without them");
        }
        let parts: Vec<String> = self
            .hierarchies
            .iter()
            .map(|h| {
                let v = match h.version {
                    Version::V1 => "v1",
                    Version::V2 => "v2",
                };
                let c = if h.controllers.is_empty() {
                    "no controllers".to_string()
                } else {
                    h.controllers.join(",")
                };
                format!("{v} ({c}) at {}", h.base.display())
            })
            .collect();
        format!("cgroups: {}", parts.join("; "))
    }

    fn with(&self, controller: &str) -> Option<&Hierarchy> {
        // v2 first: where both offer a controller, the unified hierarchy is the modern home.
        self.hierarchies
            .iter()
            .filter(|h| h.controllers.iter().any(|c| c == controller))
            .min_by_key(|h| h.version == Version::V1)
    }

    /// The hierarchy every process of every service is in (v2 where mounted), whatever else
    /// its limits make it join.
    fn tracking(&self) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .min_by_key(|h| h.version == Version::V1)
    }

    /// The directories of `name` in every hierarchy.
    fn dirs<'a>(&'a self, name: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
        self.hierarchies.iter().map(move |h| h.base.join(name))
    }

    /// Makes the cgroup of service `name` (if missing) in every hierarchy and writes its
    /// limits; returns the directories the executor must join. With no limit asked for, a
    /// failure here is not an error: the service runs without a cgroup (no directories).
    pub fn prepare(&self, name: &str, limits: Limits) -> Result<Prepared, CgroupError> {
        let joins = match self.try_prepare(name, limits) {
            Ok(()) => Joins::Made,
            Err(_) if !limits.any() => Joins::Without,
            Err(e) => return Err(e),
        };
        Ok(Prepared {
            limits,
            joins,
            procs: Kept::default(),
            unified: Kept::default(),
        })
    }

    /// The directories the processes of `name`, prepared as `prepared`, join: the tracking
    /// hierarchy's, and those of the hierarchies its limits need.
    pub fn joined(&self, name: &str, prepared: &Prepared) -> Vec<PathBuf> {
        match (prepared.joins, self.joins(prepared.limits)) {
            (Joins::Made, Ok(joined)) => joined.iter().map(|h| h.base.join(name)).collect(),
            (Joins::Made, Err(_)) | (Joins::Without, _) => Vec::new(),
        }
    }

    /// The hierarchies a service with `limits` joins: one to be tracked (v2 where mounted) and
    /// those its limits need. Every cgroup.procs write is a migration the kernel makes the
    /// spawn pay for.
    fn joins(&self, limits: Limits) -> Result<Vec<&Hierarchy>, CgroupError> {
        if let Some(why) = &self.unavailable {
            return Err(CgroupError::Unavailable(why.clone()));
        }
        let tracking = self.tracking().expect("available cgroups have a hierarchy");
        let mut joined: Vec<&Hierarchy> = vec![tracking];
        let needed = [
            limits.memory_max.map(|_| ("memory_max", "memory")),
            limits.tasks_max.map(|_| ("tasks_max", "pids")),
        ];
        for (key, controller) in needed.into_iter().flatten() {
            let h = self.need(key, controller)?;
            if !joined.iter().any(|j| j.base == h.base) {
                joined.push(h);
            }
        }
        Ok(joined)
    }

    fn try_prepare(&self, name: &str, limits: Limits) -> Result<(), CgroupError> {
        // Check before creating anything: a limit that cannot be enforced is refused whole.
        let joined = self.joins(limits)?;
        for dir in joined.iter().map(|h| h.base.join(name)) {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        if let Some(bytes) = limits.memory_max {
            let h = self.need("memory_max", "memory")?;
            let file = match h.version {
                Version::V2 => "memory.max",
                Version::V1 => "memory.limit_in_bytes",
            };
            write(&h.base.join(name).join(file), &bytes.to_string())?;
            // Without this, a service over its limit is swapped out instead of killed, unlike
            // on a board without swap: memory_max bounds RAM and swap together. (v1 wants
            // memsw >= the memory limit, hence the order.) Absent without swap accounting.
            let (swap_file, swap_value) = match h.version {
                Version::V2 => ("memory.swap.max", "0".to_string()),
                Version::V1 => ("memory.memsw.limit_in_bytes", bytes.to_string()),
            };
            let swap = h.base.join(name).join(swap_file);
            if swap.exists() {
                write(&swap, &swap_value)?;
            }
        }
        if let Some(n) = limits.tasks_max {
            let h = self.need("tasks_max", "pids")?;
            write(&h.base.join(name).join("pids.max"), &n.to_string())?;
        }
        Ok(())
    }

    fn need(&self, key: &'static str, controller: &'static str) -> Result<&Hierarchy, CgroupError> {
        self.with(controller)
            .ok_or(CgroupError::NoController { key, controller })
    }

    /// The directory among `dirs` (as `prepare` returned them) that is in the v2 hierarchy.
    pub fn unified<'a>(&self, dirs: &'a [PathBuf]) -> Option<&'a Path> {
        let v2 = self.hierarchies.iter().find(|h| h.version == Version::V2)?;
        dirs.iter()
            .map(PathBuf::as_path)
            .find(|d| d.parent() == Some(v2.base.as_path()))
    }

    /// Every process in the cgroup of `name`. Read in the tracking hierarchy alone: every
    /// process of the service joined it, and the others hold a subset of it. This is read at
    /// every exit of a main process, and on a hybrid host the hierarchies the service did not
    /// join would cost a failing path walk each.
    pub fn procs(&self, name: &str) -> Vec<i32> {
        let Some(tracking) = self.tracking() else {
            return Vec::new();
        };
        let text = read_text(&tracking.base.join(name).join("cgroup.procs")).unwrap_or_default();
        pid_list(&text)
    }

    /// Sends `signal` to every process in the cgroup of `name` but the `spared`; returns
    /// those it was sent to.
    pub fn signal(&self, name: &str, signal: crate::config::Signal, spared: &[i32]) -> Vec<i32> {
        kill_all_but(self.procs(name), signal, spared)
    }

    /// [`Cgroups::signal`], reading the list through an fd that `prepared` keeps open: for a
    /// service that restarts through an idle executor, whose exit's cleanup is on the way to
    /// its restart. Opening `cgroup.procs` by its path walks half a dozen kernfs directories
    /// (13 µs here); reading a kept one again from its start is one `pread` (under 1 µs).
    /// Falls back to the path when the fd cannot be opened or read.
    pub fn signal_kept(
        &self,
        prepared: &mut Prepared,
        name: &str,
        signal: crate::config::Signal,
        spared: &[i32],
    ) -> Vec<i32> {
        if prepared.procs.0.is_none() {
            prepared.procs.0 = self
                .tracking()
                .and_then(|h| open_read(&h.base.join(name).join("cgroup.procs")).ok())
                .map(Rc::new);
        }
        let pids = match prepared.procs.0.as_deref().map(read_from_start) {
            Some(Ok(text)) => pid_list(&text),
            Some(Err(_)) | None => self.procs(name),
        };
        kill_all_but(pids, signal, spared)
    }

    /// An O_PATH fd on the v2 directory of `name`, prepared as `prepared`, opened once and
    /// kept there: for a service whose idle executors are born in it (CLONE_INTO_CGROUP), one
    /// at each of its restarts or connections. Opening it by its path walks half a dozen
    /// kernfs directories at each; a service without idle executors holds no fd for it.
    /// None without a v2 directory to join, or when it cannot be opened.
    pub fn unified_kept(&self, prepared: &mut Prepared, name: &str) -> Option<Rc<OwnedFd>> {
        if prepared.joins == Joins::Without {
            return None;
        }
        if prepared.unified.0.is_none() {
            let v2 = self.hierarchies.iter().find(|h| h.version == Version::V2)?;
            prepared.unified.0 = open_dir_path(&v2.base.join(name)).ok().map(Rc::new);
        }
        prepared.unified.0.clone()
    }

    /// Removes the (empty) cgroup of `name`; false when a process is still in it.
    pub fn remove(&self, name: &str) -> bool {
        let mut all = true;
        for dir in self.dirs(name) {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => all = false,
            }
        }
        all
    }

    /// Removes steward's own directories (at shutdown, once every service cgroup is gone), so
    /// that a container's steward leaves nothing behind on the host. Where steward moved
    /// itself into a leaf of its own, it moves back to where it came from first; v2 refuses
    /// that when the parent has controllers enabled for its children, and then the leaf and
    /// the base stay (empty once the kernel has ended us). Returns what is left.
    pub fn remove_base(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for h in &self.hierarchies {
            let leaf = h.base.join("manager");
            if leaf.is_dir() {
                if let Some(parent) = h.base.parent() {
                    let _ = fs::write(parent.join("cgroup.procs"), std::process::id().to_string());
                }
                let _ = fs::remove_dir(&leaf);
            }
            match fs::remove_dir(&h.base) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => left.push(h.base.clone()),
                Ok(()) | Err(_) => {}
            }
        }
        left
    }

    /// The memory the cgroup of `name` uses now, when a memory hierarchy has it.
    pub fn memory_current(&self, name: &str) -> Option<u64> {
        let h = self.with("memory")?;
        let file = match h.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        };
        read_text(&h.base.join(name).join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The service whose cgroup holds process `pid`, by `/proc/PID/cgroup`: a process of a
    /// service is found even after it left the service's process tree.
    pub fn service_of(&self, pid: i32) -> Option<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        service_in(&self.hierarchies, &text)
    }

    /// How many processes of `name` the kernel's OOM killer has killed so far.
    pub fn oom_kills(&self, name: &str) -> Option<u64> {
        let h = self.with("memory")?;
        let (file, key) = match h.version {
            Version::V2 => ("memory.events", "oom_kill"),
            Version::V1 => ("memory.oom_control", "oom_kill"),
        };
        let text = read_text(&h.base.join(name).join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    }
}

/// The pids of a `cgroup.procs` text, sorted, each once.
fn pid_list(text: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Sends `signal` to `pids` but the `spared`; returns those it was sent to.
fn kill_all_but(mut pids: Vec<i32>, signal: crate::config::Signal, spared: &[i32]) -> Vec<i32> {
    pids.retain(|pid| !spared.contains(pid));
    for &pid in &pids {
        let _ = crate::sys::kill(pid, signal.0);
    }
    pids
}

fn open_read(path: &Path) -> io::Result<OwnedFd> {
    Ok(fs::File::open(path)?.into())
}

/// An O_PATH fd on the directory at `path`: what clone3 takes to be born in a v2 cgroup.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The whole of a file from its start, whatever was read of it before: a kernfs file is
/// generated afresh by a `pread` from offset 0 (seq_file starts over there), so a kept fd
/// serves every read.
fn read_from_start(fd: &OwnedFd) -> io::Result<String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match rustix::io::pread(fd, &mut chunk, bytes.len() as u64) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A cgroup file's text. Not `fs::read_to_string`: that asks the file's size first, and a
/// cgroup file has none; this is read at every exit of a main process.
fn read_text(path: &Path) -> io::Result<String> {
    read_from_start(&open_read(path)?)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err(path))
}

/// Makes the base directory and, on v2, enables the controllers it offers for the services'
/// cgroups below it.
fn setup_base(h: &Hierarchy, notes: &mut Vec<String>) -> Result<Hierarchy, CgroupError> {
    fs::create_dir_all(&h.base).map_err(io_err(&h.base))?;
    let mut h = h.clone();
    if h.version == Version::V2 && !h.controllers.is_empty() {
        let enable: String = h
            .controllers
            .iter()
            .map(|c| format!("+{c} "))
            .collect::<String>()
            .trim_end()
            .to_string();
        let parent = h.base.parent().unwrap_or(&h.base).to_path_buf();
        // The parent may hold processes (steward itself, outside PID 1): v2 then refuses to
        // enable controllers for its children. Moving steward into a leaf of its own first
        // makes the parent an inner node, as v2 wants.
        if write(&parent.join("cgroup.subtree_control"), &enable).is_err() {
            let leaf = h.base.join("manager");
            fs::create_dir_all(&leaf).map_err(io_err(&leaf))?;
            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            if let Err(e) = write(&parent.join("cgroup.subtree_control"), &enable) {
                // Tracking still works without controllers; only limits are unavailable.
                h.controllers.clear();
                notes.push(format!(
                    "cgroups: cannot enable {enable} below {}: {e}",
                    parent.display()
                ));
                return Ok(h);
            }
        }
        if let Err(e) = write(&h.base.join("cgroup.subtree_control"), &enable) {
            h.controllers.clear();
            notes.push(format!("cgroups: {e}"));
        }
    }
    Ok(h)
}

/// The hierarchies `mountinfo` shows, placed at steward's own cgroup (from `/proc/self/cgroup`)
/// with `dir` below it. Only v1 hierarchies with a controller steward uses are kept.
pub fn parse_hierarchies(mountinfo: &str, own: &str, dir: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTIONS"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let mountpoint = unescape(left[4]);
        let fstype = right[0];
        let (version, controllers, own_path) = match fstype {
            "cgroup2" => {
                let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
                    continue;
                };
                let controllers = fs::read_to_string(
                    Path::new(&mountpoint)
                        .join(path.trim_start_matches('/'))
                        .join("cgroup.controllers"),
                )
                .unwrap_or_default()
                .split_whitespace()
                .filter(|c| *c == "memory" || *c == "pids")
                .map(str::to_string)
                .collect();
                (Version::V2, controllers, path.to_string())
            }
            "cgroup" => {
                let options: Vec<&str> = right[2].split(',').collect();
                let controllers: Vec<String> = ["memory", "pids"]
                    .iter()
                    .filter(|c| options.contains(c))
                    .map(|c| c.to_string())
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                // The line of /proc/self/cgroup whose controller list names ours.
                let Some(path) = own.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
                    list.split(',')
                        .any(|c| controllers.iter().any(|ours| ours == c))
                        .then(|| path.to_string())
                }) else {
                    continue;
                };
                (Version::V1, controllers, path)
            }
            _ => continue,
        };
        // A bind mount of a subtree shows its root in field 4; our path is relative to it.
        let root = left[3];
        let relative = own_path
            .strip_prefix(root)
            .unwrap_or(&own_path)
            .trim_start_matches('/');
        let base = Path::new(&mountpoint).join(relative).join(dir);
        if out.iter().any(|h: &Hierarchy| h.base == base) {
            continue;
        }
        let path = format!("{}/{dir}", own_path.trim_end_matches('/'));
        out.push(Hierarchy {
            version,
            controllers,
            base,
            path,
        });
    }
    out
}

/// The service whose cgroup a `/proc/PID/cgroup` text names, below one of the hierarchies.
fn service_in(hierarchies: &[Hierarchy], cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(list), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        for h in hierarchies {
            let matches = match h.version {
                Version::V2 => id == "0" && list.is_empty(),
                Version::V1 => list
                    .split(',')
                    .any(|c| h.controllers.iter().any(|o| o == c)),
            };
            let below = path
                .strip_prefix(h.path.as_str())
                .and_then(|p| p.strip_prefix('/'));
            if let (true, Some(rest)) = (matches, below) {
                let name = rest.split('/').next().unwrap_or("");
                // The manager's own leaf is not a service.
                if !name.is_empty() && name != "manager" {
                    return Some(name.to_string());
                }
            }
        }
    }
    None
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
25 24 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
26 24 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 24 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
28 24 0:26 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";
    const OWN: &str = "\
8:pids:/
4:memory:/box/abc
1:cpu:/
0::/
";

    #[test]
    fn finds_mixed_v1_and_v2_hierarchies_at_our_own_cgroup() {
        let found = parse_hierarchies(MOUNTINFO, OWN, "steward-7");
        let bases: Vec<(Version, &Path)> = found
            .iter()
            .map(|h| (h.version, h.base.as_path()))
            .collect();
        assert_eq!(
            bases,
            [
                (Version::V2, Path::new("/sys/fs/cgroup/unified/steward-7")),
                (
                    Version::V1,
                    Path::new("/sys/fs/cgroup/memory/box/abc/steward-7")
                ),
                (Version::V1, Path::new("/sys/fs/cgroup/pids/steward-7")),
            ]
        );
        assert_eq!(found[1].controllers, ["memory"]);
        assert_eq!(found[2].controllers, ["pids"]);
    }

    #[test]
    fn pure_v2() {
        let mountinfo = "30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let found = parse_hierarchies(mountinfo, "0::/system.slice/steward.service\n", "steward");
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].base,
            Path::new("/sys/fs/cgroup/system.slice/steward.service/steward")
        );
    }

    /// Prepares the cgroup of `name`; the directories its processes join.
    fn prepared_dirs(cg: &Cgroups, name: &str, limits: Limits) -> Vec<PathBuf> {
        let prepared = cg.prepare(name, limits).unwrap();
        cg.joined(name, &prepared)
    }

    /// A fake root: each hierarchy is a plain directory whose control files are ordinary
    /// files, as youki tests its cgroup code.
    fn fake(versions: &[(Version, &[&str])]) -> (tempfile::TempDir, Cgroups) {
        let root = tempfile::tempdir().unwrap();
        let hierarchies = versions
            .iter()
            .enumerate()
            .map(|(i, (version, controllers))| {
                let base = root.path().join(format!("h{i}")).join("steward");
                fs::create_dir_all(&base).unwrap();
                Hierarchy {
                    version: *version,
                    controllers: controllers.iter().map(|c| c.to_string()).collect(),
                    base,
                    path: "/steward".into(),
                }
            })
            .collect();
        (root, Cgroups::new(hierarchies))
    }

    #[test]
    fn v2_limits_go_to_memory_max_and_pids_max() {
        let (_root, cg) = fake(&[(Version::V2, &["memory", "pids"])]);
        let limits = Limits {
            memory_max: Some(32 << 20),
            tasks_max: Some(5),
        };
        let dirs = prepared_dirs(&cg, "web", limits);
        assert_eq!(dirs.len(), 1);
        assert_eq!(
            fs::read_to_string(dirs[0].join("memory.max")).unwrap(),
            "33554432"
        );
        assert_eq!(fs::read_to_string(dirs[0].join("pids.max")).unwrap(), "5");
        // Preparing again finds the directory made.
        assert_eq!(prepared_dirs(&cg, "web", limits), dirs);
        // Other limits (a reload changed them) are written again.
        let fewer = Limits {
            tasks_max: Some(3),
            ..limits
        };
        cg.prepare("web", fewer).unwrap();
        assert_eq!(fs::read_to_string(dirs[0].join("pids.max")).unwrap(), "3");
        // Once removed, it is made anew.
        for f in ["memory.max", "pids.max", "memory.swap.max"] {
            let _ = fs::remove_file(dirs[0].join(f));
        }
        assert!(cg.remove("web"));
        assert!(!dirs[0].exists());
        cg.prepare("web", limits).unwrap();
        assert!(dirs[0].exists());
    }

    #[test]
    fn v1_limits_go_to_their_controllers_hierarchies() {
        let (_root, cg) = fake(&[
            (Version::V2, &[]),
            (Version::V1, &["memory"]),
            (Version::V1, &["pids"]),
        ]);
        let dirs = prepared_dirs(
            &cg,
            "web",
            Limits {
                memory_max: Some(1 << 20),
                tasks_max: Some(9),
            },
        );
        assert_eq!(dirs.len(), 3, "the service joins every hierarchy");
        assert_eq!(
            fs::read_to_string(dirs[1].join("memory.limit_in_bytes")).unwrap(),
            "1048576"
        );
        assert!(
            !dirs[1].join("memory.memsw.limit_in_bytes").exists(),
            "only where it exists"
        );
        assert_eq!(fs::read_to_string(dirs[2].join("pids.max")).unwrap(), "9");
        assert!(!dirs[0].join("memory.max").exists());
    }

    #[test]
    fn swap_is_bounded_with_memory_where_the_kernel_accounts_it() {
        let (_root, cg) = fake(&[(Version::V2, &["memory"]), (Version::V1, &["memory"])]);
        let v2 = cg.hierarchies[0].base.join("web");
        fs::create_dir(&v2).unwrap();
        fs::write(v2.join("memory.swap.max"), "max").unwrap();
        cg.prepare(
            "web",
            Limits {
                memory_max: Some(4096),
                tasks_max: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read_to_string(v2.join("memory.swap.max")).unwrap(), "0");

        let (_root, cg) = fake(&[(Version::V1, &["memory"])]);
        let v1 = cg.hierarchies[0].base.join("web");
        fs::create_dir(&v1).unwrap();
        fs::write(
            v1.join("memory.memsw.limit_in_bytes"),
            "9223372036854771712",
        )
        .unwrap();
        cg.prepare(
            "web",
            Limits {
                memory_max: Some(4096),
                tasks_max: None,
            },
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(v1.join("memory.memsw.limit_in_bytes")).unwrap(),
            "4096"
        );
    }

    #[test]
    fn a_service_without_limits_joins_only_the_tracking_hierarchy() {
        let (_root, cg) = fake(&[
            (Version::V1, &["memory"]),
            (Version::V2, &[]),
            (Version::V1, &["pids"]),
        ]);
        let dirs = prepared_dirs(&cg, "web", Limits::default());
        assert_eq!(dirs[..], [cg.hierarchies[1].base.join("web")]);
    }

    #[test]
    fn a_limit_without_its_controller_is_refused_before_anything_is_made() {
        let (_root, cg) = fake(&[(Version::V2, &["pids"])]);
        let err = cg
            .prepare(
                "web",
                Limits {
                    memory_max: Some(1),
                    tasks_max: None,
                },
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`memory_max` needs the memory controller, which no mounted cgroup hierarchy offers"
        );
        assert!(cg.procs("web").is_empty());
        assert!(!cg.hierarchies[0].base.join("web").exists());
    }

    #[test]
    fn without_cgroups_only_limited_services_fail() {
        let cg = Cgroups::new(Vec::new());
        assert_eq!(
            &prepared_dirs(&cg, "free", Limits::default())[..],
            &[] as &[PathBuf]
        );
        let err = cg
            .prepare(
                "tight",
                Limits {
                    memory_max: None,
                    tasks_max: Some(3),
                },
            )
            .unwrap_err();
        assert!(
            err.to_string().starts_with("cgroups are not available"),
            "{err}"
        );
    }

    #[test]
    fn procs_oom_kills_and_removal() {
        let (_root, cg) = fake(&[(Version::V2, &["memory"]), (Version::V1, &["pids"])]);
        let dirs = prepared_dirs(
            &cg,
            "web",
            Limits {
                memory_max: None,
                tasks_max: Some(10),
            },
        );
        // The v1 hierarchy holds a subset of the tracking one: what the limits made join it.
        fs::write(dirs[0].join("cgroup.procs"), "13\n12\n").unwrap();
        fs::write(dirs[1].join("cgroup.procs"), "13\n").unwrap();
        assert_eq!(cg.procs("web"), [12, 13]);
        fs::write(
            dirs[0].join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills("web"), Some(2));
        assert!(
            !cg.remove("web"),
            "not empty: the fake control files are still there"
        );
        for d in dirs.iter() {
            for f in fs::read_dir(d).unwrap() {
                fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        assert!(cg.remove("web"));
        assert!(!dirs[0].exists());
    }

    #[test]
    fn a_kept_procs_fd_is_read_again_from_its_start_each_time() {
        let (_root, cg) = fake(&[(Version::V2, &[])]);
        let mut prepared = cg.prepare("web", Limits::default()).unwrap();
        let procs = cg.joined("web", &prepared)[0].join("cgroup.procs");
        // Signal 0 only checks; no pid of these is alive (the last is past any pid_max).
        let probe = crate::config::Signal(0);
        let spared = [12, 13];
        fs::write(&procs, "13\n12\n").unwrap();
        assert!(
            cg.signal_kept(&mut prepared, "web", probe, &spared)
                .is_empty()
        );
        let kept = prepared.procs.clone();
        assert!(kept.0.is_some(), "opened once");
        // Rewritten in place, longer than a read: read whole, from the start, through the
        // same fd.
        let last = i32::MAX;
        fs::write(&procs, format!("{}{last}\n", "12\n".repeat(300))).unwrap();
        assert_eq!(cg.signal_kept(&mut prepared, "web", probe, &spared), [last]);
        assert_eq!(prepared.procs, kept, "the same fd");
        // Made again, it opens its own.
        let again = cg.prepare("web", Limits::default()).unwrap();
        assert_eq!(again.procs, Kept::default());
    }

    #[test]
    fn the_v2_directory_fd_is_opened_once_and_only_for_a_v2_directory() {
        use std::os::fd::AsRawFd;
        let (_root, cg) = fake(&[(Version::V1, &["pids"]), (Version::V2, &[])]);
        let mut prepared = cg.prepare("web", Limits::default()).unwrap();
        let fd = cg.unified_kept(&mut prepared, "web").expect("opened");
        let named = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(named, cg.hierarchies[1].base.join("web"));
        let again = cg.unified_kept(&mut prepared, "web").unwrap();
        assert!(Rc::ptr_eq(&fd, &again), "the same fd");
        // Made again, it opens its own.
        let remade = cg.prepare("web", Limits::default()).unwrap();
        assert_eq!(remade.unified, Kept::default());
        // Without a v2 hierarchy there is nothing to be born in.
        let (_root, v1) = fake(&[(Version::V1, &["pids"])]);
        let mut prepared = v1.prepare("web", Limits::default()).unwrap();
        assert!(v1.unified_kept(&mut prepared, "web").is_none());
        // Nor where the service runs without a cgroup.
        let none = Cgroups::new(Vec::new());
        let mut prepared = none.prepare("web", Limits::default()).unwrap();
        assert!(none.unified_kept(&mut prepared, "web").is_none());
    }

    #[test]
    fn a_process_is_found_by_its_cgroup() {
        let found = parse_hierarchies(MOUNTINFO, OWN, "steward-7");
        assert_eq!(found[0].path, "/steward-7");
        assert_eq!(found[1].path, "/box/abc/steward-7");
        let v2 = "8:pids:/\n4:memory:/box/abc\n0::/steward-7/web/child\n";
        assert_eq!(service_in(&found, v2).as_deref(), Some("web"));
        let v1 = "8:pids:/\n4:memory:/box/abc/steward-7/db\n0::/\n";
        assert_eq!(service_in(&found, v1).as_deref(), Some("db"));
        let outside = "4:memory:/box/abc\n0::/user.slice\n";
        assert_eq!(service_in(&found, outside), None);
        let own = "0::/steward-7/manager\n";
        assert_eq!(service_in(&found, own), None);
        let prefix_only = "0::/steward-77/web\n";
        assert_eq!(service_in(&found, prefix_only), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/mnt/my\040cgroups"), "/mnt/my cgroups");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
