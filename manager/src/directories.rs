//! The directories a service asks for (`runtime_directory`, `state_directory`,
//! `cache_directory`, `logs_directory`, as systemd's `RuntimeDirectory=` and friends): made
//! just before each spawn, owned by the user and group that spawn runs as, and the runtime
//! ones removed when the service comes to rest.
//!
//! The manager makes them, not the executor: the manager resolves the user and group for
//! each spawn already (and fails the spawn at a step when it cannot), it is the one that
//! removes runtime directories later, and the spawn protocol stays as it is. A few mkdir,
//! fchown and fchmod calls on local file systems cost the loop what reading /etc/passwd at
//! each spawn costs it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use steward_protocol::Step;

use crate::config::Service;

/// Which of the four kinds of directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `runtime_directory`, under /run: removed when the service stops.
    Runtime,
    /// `state_directory`, under /var/lib.
    State,
    /// `cache_directory`, under /var/cache.
    Cache,
    /// `logs_directory`, under /var/log.
    Logs,
}

impl Kind {
    /// The step a failure to make one is reported at (systemd's exit status for it).
    pub fn step(self) -> Step {
        match self {
            Kind::Runtime => Step::RuntimeDirectory,
            Kind::State => Step::StateDirectory,
            Kind::Cache => Step::CacheDirectory,
            Kind::Logs => Step::LogsDirectory,
        }
    }

    /// The service's names of this kind.
    fn names(self, service: &Service) -> &[String] {
        match self {
            Kind::Runtime => &service.runtime_directory,
            Kind::State => &service.state_directory,
            Kind::Cache => &service.cache_directory,
            Kind::Logs => &service.logs_directory,
        }
    }

    const ALL: [Kind; 4] = [Kind::Runtime, Kind::State, Kind::Cache, Kind::Logs];
}

/// Where the four kinds live: the system's /run, /var/lib, /var/cache and /var/log, or the
/// same under a test's directory.
#[derive(Debug, Clone)]
pub struct Roots {
    base: PathBuf,
}

impl Roots {
    /// The system's.
    pub fn system() -> Roots {
        Roots {
            base: PathBuf::from("/"),
        }
    }

    /// The same layout under `base`.
    #[cfg(test)]
    pub fn under(base: &Path) -> Roots {
        Roots {
            base: base.to_path_buf(),
        }
    }

    fn root(&self, kind: Kind) -> PathBuf {
        self.base.join(match kind {
            Kind::Runtime => "run",
            Kind::State => "var/lib",
            Kind::Cache => "var/cache",
            Kind::Logs => "var/log",
        })
    }
}

/// A directory could not be made or given to the service.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", path.display(), crate::sys::errno_text(source.raw_os_error()))]
pub struct DirectoryError {
    /// Which key it is of.
    pub kind: Kind,
    /// The directory.
    pub path: PathBuf,
    /// What the kernel said.
    #[source]
    pub source: Errno,
}

/// Makes every directory `service` asks for (those that exist are kept, with what they
/// hold), owned by `uid` and `gid` with the service's `directory_mode`.
pub fn prepare(roots: &Roots, service: &Service, uid: u32, gid: u32) -> Result<(), DirectoryError> {
    for kind in Kind::ALL {
        let root = roots.root(kind);
        for name in kind.names(service) {
            let path = root.join(name);
            make(&path, uid, gid, service.directory_mode).map_err(|source| DirectoryError {
                kind,
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Removes the service's runtime directories and what they hold; returns what could not be
/// removed, for the log.
pub fn remove_runtime(roots: &Roots, service: &Service) -> Vec<DirectoryError> {
    let root = roots.root(Kind::Runtime);
    let mut errors = Vec::new();
    for name in &service.runtime_directory {
        let path = root.join(name);
        // std's remove_dir_all walks by fd (openat, unlinkat) and never follows a symlink, so
        // a link the service left inside cannot make the manager delete elsewhere.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(DirectoryError {
                kind: Kind::Runtime,
                path,
                source: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            }),
        }
    }
    errors
}

/// One directory: its missing parents root's, 0755 (as systemd makes them; only the last
/// component is the service's), then itself, given to the service.
fn make(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), Errno> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    }
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    // By fd, and never through a symlink: whatever stands at the path (a link planted in a
    // service-owned parent, say) is refused rather than chowned.
    let dir: OwnedFd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    rustix::fs::fchown(&dir, Some(uid), Some(gid))?;
    // After the chown, which clears setuid and setgid bits; and exact, whatever the umask.
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::config::Origin;

    fn service() -> Service {
        let mut s = Service::new(
            "svc".into(),
            Origin {
                file: std::path::Path::new("t.toml").into(),
                line: 1,
                column: 1,
            },
        );
        s.exec = ["/bin/true"].into_iter().collect();
        s
    }

    fn ids() -> (u32, u32) {
        (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    }

    #[test]
    fn makes_each_kind_under_its_root_with_the_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = Roots::under(tmp.path());
        let mut s = service();
        s.runtime_directory = thin_vec::thin_vec!["svc".into(), "nested/deeper".into()];
        s.state_directory = thin_vec::thin_vec!["svc".into()];
        s.cache_directory = thin_vec::thin_vec!["svc".into()];
        s.logs_directory = thin_vec::thin_vec!["svc".into()];
        s.directory_mode = 0o750;
        let (uid, gid) = ids();
        prepare(&roots, &s, uid, gid).unwrap();
        for dir in [
            "run/svc",
            "run/nested/deeper",
            "var/lib/svc",
            "var/cache/svc",
            "var/log/svc",
        ] {
            let meta = std::fs::metadata(tmp.path().join(dir)).unwrap();
            assert!(meta.is_dir(), "{dir}");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o750, "{dir}");
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{dir}");
        }
        let parent = std::fs::metadata(tmp.path().join("run/nested")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o755);

        // Again, over what is there: kept, with its content, and its mode set again.
        std::fs::write(tmp.path().join("var/lib/svc/data"), "kept").unwrap();
        s.directory_mode = 0o700;
        prepare(&roots, &s, uid, gid).unwrap();
        let meta = std::fs::metadata(tmp.path().join("var/lib/svc")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert!(tmp.path().join("var/lib/svc/data").exists());

        // Only the runtime ones go, with what they hold.
        std::fs::write(tmp.path().join("run/svc/pid"), "1").unwrap();
        assert!(remove_runtime(&roots, &s).is_empty());
        assert!(!tmp.path().join("run/svc").exists());
        assert!(!tmp.path().join("run/nested/deeper").exists());
        assert!(tmp.path().join("var/lib/svc/data").exists());
        // Gone already is no error.
        assert!(remove_runtime(&roots, &s).is_empty());
    }

    #[test]
    fn a_symlink_or_a_file_in_the_way_fails_at_the_kinds_step() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = Roots::under(tmp.path());
        std::fs::create_dir_all(tmp.path().join("var/cache")).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(
            tmp.path().join("elsewhere"),
            tmp.path().join("var/cache/svc"),
        )
        .unwrap();
        let mut s = service();
        s.cache_directory = thin_vec::thin_vec!["svc".into()];
        let (uid, gid) = ids();
        let err = prepare(&roots, &s, uid, gid).unwrap_err();
        assert_eq!(err.kind.step(), Step::CacheDirectory);
        assert_eq!(err.kind.step().exit_code(), 239);
        assert_eq!(err.source, Errno::NOTDIR);

        std::fs::create_dir_all(tmp.path().join("var/log")).unwrap();
        std::fs::write(tmp.path().join("var/log/svc"), "a file").unwrap();
        let mut s = service();
        s.logs_directory = thin_vec::thin_vec!["svc".into()];
        let err = prepare(&roots, &s, uid, gid).unwrap_err();
        assert_eq!(err.kind.step().exit_code(), 240);
        assert_eq!(
            err.to_string(),
            format!(
                "{}: Not a directory",
                tmp.path().join("var/log/svc").display()
            )
        );
    }
}
