//! Files of the system being imported, which lives under a root directory: symlinks resolved
//! inside that root (an absolute link means root-relative, as systemd's `chase()` with a root
//! reads it), masks recognised, and reads bounded.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::Error;
use super::syntax::MAX_FILE;

/// How many symlinks one path may go through, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// What a path under the root leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chased {
    /// Something exists there; the path has no symlinks left.
    Found(PathBuf),
    /// A symlink to `/dev/null`: systemd's mask.
    Masked,
    /// Nothing (or a dangling symlink).
    Missing,
}

/// Resolves `path` (a host path) with symlinks taken relative to `root`: the root the path is
/// under, or `/` for a path outside it (a `--unit-path` directory elsewhere).
pub fn chase(root: &Path, path: &Path) -> Result<Chased, Error> {
    let (root, inside) = match path.strip_prefix(root) {
        Ok(inside) => (root, inside),
        Err(_) => (Path::new("/"), path.strip_prefix("/").unwrap_or(path)),
    };
    let mut todo: Vec<PathBuf> = components(inside);
    todo.reverse();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        let meta = match fs::symlink_metadata(&candidate) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Chased::Missing),
            // Under a file ("a/b" where a is a file): nothing there either.
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(Chased::Missing),
            Err(e) => return Err(Error::read(candidate, e)),
        };
        if !meta.file_type().is_symlink() {
            resolved.push(&part);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Error::SymlinkLoop {
                path: path.to_path_buf(),
            });
        }
        let target = fs::read_link(&candidate).map_err(|e| Error::read(&candidate, e))?;
        // Checked on the link itself: under another root, /dev/null may not exist.
        if target == Path::new("/dev/null") {
            return Ok(if todo.is_empty() {
                Chased::Masked
            } else {
                Chased::Missing
            });
        }
        if target.is_absolute() {
            resolved.clear();
        }
        let mut more = components(&target);
        more.reverse();
        todo.extend(more);
    }
    Ok(Chased::Found(root.join(resolved)))
}

/// The normal and `..` components of a path; `.` and the root are dropped.
fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(PathBuf::from(part)),
            Component::ParentDir => Some(PathBuf::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// The whole of a file, refused past [`MAX_FILE`] bytes without reading further.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, Error> {
    let file = fs::File::open(path).map_err(|e| Error::read(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::read(path, e))?;
    if bytes.len() > MAX_FILE {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A private directory for one test, removed at the end.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "stewardctl-import-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        /// Writes `text` at `path` under the directory, making its parents.
        pub fn write(&self, path: &str, text: &str) -> PathBuf {
            let full = self.0.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, text).unwrap();
            full
        }

        /// Makes `path` a symlink to `target`, making its parents.
        pub fn link(&self, path: &str, target: &str) {
            let full = self.0.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            symlink(target, full).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let dir = TempDir::new();
        let root = &dir.0;
        dir.write("usr/lib/systemd/system/ssh.service", "[Unit]\n");
        // Debian's merged /usr, written as an absolute link: under a root it must not escape.
        dir.link("lib", "/usr/lib");
        dir.link(
            "etc/systemd/system/sshd.service",
            "/lib/systemd/system/ssh.service",
        );
        dir.link(
            "etc/systemd/system/rel.service",
            "../../../usr/lib/systemd/system/ssh.service",
        );
        let real = root.join("usr/lib/systemd/system/ssh.service");
        for path in [
            "etc/systemd/system/sshd.service",
            "etc/systemd/system/rel.service",
        ] {
            assert_eq!(
                chase(root, &root.join(path)).unwrap(),
                Chased::Found(real.clone())
            );
        }
        // `..` stops at the root.
        dir.link(
            "etc/up.service",
            "../../../../../usr/lib/systemd/system/ssh.service",
        );
        assert_eq!(
            chase(root, &root.join("etc/up.service")).unwrap(),
            Chased::Found(real)
        );
    }

    #[test]
    fn masks_missing_files_and_loops() {
        let dir = TempDir::new();
        let root = &dir.0;
        dir.link("etc/masked.service", "/dev/null");
        dir.link("etc/dangling.service", "/nowhere");
        dir.link("etc/loop.service", "loop.service");
        dir.write("etc/file", "");
        let at = |p: &str| chase(root, &root.join(p));
        assert_eq!(at("etc/masked.service").unwrap(), Chased::Masked);
        assert_eq!(at("etc/dangling.service").unwrap(), Chased::Missing);
        assert_eq!(at("etc/none.service").unwrap(), Chased::Missing);
        assert_eq!(at("etc/file/below").unwrap(), Chased::Missing);
        assert!(matches!(
            at("etc/loop.service"),
            Err(Error::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn reads_are_bounded() {
        let dir = TempDir::new();
        let small = dir.write("small", "hello");
        assert_eq!(read_bounded(&small).unwrap(), b"hello");
        // /dev/zero never ends: the read stops at the limit.
        let e = read_bounded(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e.to_string(), "/dev/zero: larger than 4 MiB");
        let e = read_bounded(&dir.0.join("absent")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("/absent: No such file or directory"),
            "{e}"
        );
    }
}
