//! The user and group database behind `user`, `group`, `supplementary_groups` and a socket's
//! `owner` and `group`: `/etc/passwd` and `/etc/group`, read and parsed here, never through NSS
//! or libc's `getpw*`. PID 1 must never load NSS modules, which can block on services (a
//! directory server, a name service cache) that PID 1 itself has not started yet.
//!
//! Names are resolved when the config is loaded (for its warnings and the socket owners) and
//! again at every spawn, so that a user created by an earlier boot step works without a reload.
//! Spawning is on the hot path, so each file is parsed once and parsed again only when one stat
//! says it changed.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use steward_protocol::Step;

use crate::config::{Credentials, Id};

/// One entry of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One entry of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
}

/// What the environment of a service with a `user` says about that user (`USER`, `LOGNAME`,
/// `HOME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEnv {
    /// The user's name.
    pub name: String,
    /// The user's home directory.
    pub home: String,
}

/// A service's credentials as numbers, as they were at one spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The complete supplementary group list.
    pub groups: Vec<u32>,
    /// The user's name and home, when `user` is set and has an entry.
    pub user_env: Option<UserEnv>,
}

/// A file of the database could not be read (a missing file is no error: it has no entries).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// What the kernel said.
    #[source]
    pub source: std::io::Error,
}

/// Why a service's user or groups have no numbers right now.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `user` names a user `/etc/passwd` does not have.
    #[error("unknown user \"{0}\"")]
    UnknownUser(String),
    /// `group` or `supplementary_groups` names a group `/etc/group` does not have.
    #[error("unknown group \"{0}\"")]
    UnknownGroup(String),
    /// `user` is a number without an entry, and no `group` says which group to run as.
    #[error(
        "uid {0} has no entry in /etc/passwd to take its primary group from, and `group` is not set"
    )]
    NoPrimaryGroup(u32),
    /// `/etc/passwd` could not be read.
    #[error("{0}")]
    Passwd(#[source] ReadError),
    /// `/etc/group` could not be read.
    #[error("{0}")]
    Group(#[source] ReadError),
}

impl ResolveError {
    /// The spawn step this failure is reported at: `user` (217) for the user's own entry,
    /// `group` (216) for the groups.
    pub fn step(&self) -> Step {
        match self {
            ResolveError::UnknownUser(_) | ResolveError::Passwd(_) => Step::User,
            ResolveError::UnknownGroup(_)
            | ResolveError::NoPrimaryGroup(_)
            | ResolveError::Group(_) => Step::Group,
        }
    }
}

/// `/etc/passwd` and `/etc/group` as last parsed.
#[derive(Debug)]
pub struct UserDb {
    passwd: Table<UserEntry>,
    group: Table<GroupEntry>,
}

impl UserDb {
    /// The system's database: `/etc/passwd` and `/etc/group`.
    pub fn system() -> UserDb {
        UserDb::under(Path::new("/"))
    }

    /// `ROOT/etc/passwd` and `ROOT/etc/group` (tests give a temporary directory).
    pub fn under(root: &Path) -> UserDb {
        UserDb {
            passwd: Table::new(root.join("etc/passwd"), parse_passwd_line),
            group: Table::new(root.join("etc/group"), parse_group_line),
        }
    }

    /// The first entry of that name, as glibc's files module finds it.
    pub fn user_by_name(&mut self, name: &str) -> Result<Option<&UserEntry>, ReadError> {
        Ok(self.passwd.entries()?.iter().find(|u| u.name == name))
    }

    /// The first entry with that uid.
    pub fn user_by_id(&mut self, uid: u32) -> Result<Option<&UserEntry>, ReadError> {
        Ok(self.passwd.entries()?.iter().find(|u| u.uid == uid))
    }

    /// The gid of the first group of that name.
    pub fn group_by_name(&mut self, name: &str) -> Result<Option<u32>, ReadError> {
        let groups = self.group.entries()?;
        Ok(groups.iter().find(|g| g.name == name).map(|g| g.gid))
    }

    /// A user as written: its uid and, when it has one, its entry.
    pub fn user(&mut self, id: &Id) -> Result<(u32, Option<UserEntry>), ResolveError> {
        match id {
            Id::Number(uid) => {
                let entry = self.user_by_id(*uid).map_err(ResolveError::Passwd)?;
                Ok((*uid, entry.cloned()))
            }
            Id::Name(name) => match self.user_by_name(name).map_err(ResolveError::Passwd)? {
                Some(entry) => Ok((entry.uid, Some(entry.clone()))),
                None => Err(ResolveError::UnknownUser(name.clone())),
            },
        }
    }

    /// A group as written: its gid.
    pub fn group(&mut self, id: &Id) -> Result<u32, ResolveError> {
        match id {
            Id::Number(gid) => Ok(*gid),
            Id::Name(name) => self
                .group_by_name(name)
                .map_err(ResolveError::Group)?
                .ok_or_else(|| ResolveError::UnknownGroup(name.clone())),
        }
    }

    /// The numbers `credentials` stand for now. A key not set keeps the manager's own id;
    /// `group` defaults to the user's primary group.
    pub fn resolve(&mut self, credentials: &Credentials) -> Result<Resolved, ResolveError> {
        let user = match &credentials.user {
            Some(written) => Some(self.user(&written.id)?),
            None => None,
        };
        let gid = match (&credentials.group, &user) {
            (Some(written), _) => self.group(&written.id)?,
            (None, Some((_, Some(entry)))) => entry.gid,
            // Running a user's process as the manager's group (root's, usually) would hand
            // it rights nobody configured: no group at all is safer than a guessed one.
            (None, Some((uid, None))) => return Err(ResolveError::NoPrimaryGroup(*uid)),
            (None, None) => rustix::process::getgid().as_raw(),
        };
        let groups = credentials
            .supplementary_groups
            .iter()
            .map(|written| self.group(&written.id))
            .collect::<Result<Vec<u32>, ResolveError>>()?;
        let (uid, entry) = user.unwrap_or_else(|| (rustix::process::getuid().as_raw(), None));
        Ok(Resolved {
            uid,
            gid,
            groups,
            user_env: entry.map(|e| UserEnv {
                name: e.name,
                home: e.home,
            }),
        })
    }
}

/// How long after a file's last change its stamp is not yet trusted. File timestamps are
/// coarse (a jiffy on most file systems, up to 2 s on some), so two writes of the same size
/// within one tick leave the same stamp; a file changed that recently is read again at every
/// lookup until the window has passed (git's "racy git" rule).
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// What one stat tells of a file: if any of it differs, the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: i64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(stat: &rustix::fs::Stat) -> Stamp {
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        // The field types differ between rustix's backends; every value fits these.
        #[allow(clippy::unnecessary_cast)]
        Stamp {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            size: stat.st_size as i64,
            mtime_ns: ns(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime_ns: ns(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
        }
    }
}

/// Where a file's parse stands.
#[derive(Debug)]
enum Cache<T> {
    /// Not read yet.
    Unread,
    /// Parsed from the file as `stamp` describes it (`None`: there was no file).
    Parsed {
        stamp: Option<Stamp>,
        /// Whether an unchanged stamp proves an unchanged file (see [`RACY_WINDOW_NS`]).
        settled: bool,
        entries: Vec<T>,
    },
}

/// One file of the database and its cached parse.
#[derive(Debug)]
struct Table<T> {
    path: PathBuf,
    parse: fn(&str) -> Option<T>,
    cache: Cache<T>,
    /// [`RACY_WINDOW_NS`]; tests shorten it to see the cache at work without waiting.
    racy_window_ns: i128,
    /// How often the file was read, for the tests of the cache.
    #[cfg(test)]
    reads: usize,
}

impl<T> Table<T> {
    fn new(path: PathBuf, parse: fn(&str) -> Option<T>) -> Table<T> {
        Table {
            path,
            parse,
            cache: Cache::Unread,
            racy_window_ns: RACY_WINDOW_NS,
            #[cfg(test)]
            reads: 0,
        }
    }

    /// The file's entries: the cached ones while one stat shows the file as it was parsed,
    /// else those of a fresh read.
    fn entries(&mut self) -> Result<&[T], ReadError> {
        let fresh = match &self.cache {
            Cache::Parsed {
                stamp,
                settled: true,
                ..
            } => self.stat()? == *stamp,
            Cache::Parsed { settled: false, .. } | Cache::Unread => false,
        };
        if !fresh {
            self.cache = self.read()?;
        }
        match &self.cache {
            Cache::Parsed { entries, .. } => Ok(entries),
            Cache::Unread => Ok(&[]),
        }
    }

    fn error(&self, errno: Errno) -> ReadError {
        ReadError {
            path: self.path.clone(),
            source: errno.into(),
        }
    }

    fn stat(&self) -> Result<Option<Stamp>, ReadError> {
        match rustix::fs::stat(&self.path) {
            Ok(stat) => Ok(Some(Stamp::of(&stat))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    fn read(&mut self) -> Result<Cache<T>, ReadError> {
        #[cfg(test)]
        {
            self.reads += 1;
        }
        let fd = match rustix::fs::open(&self.path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        {
            Ok(fd) => fd,
            // A system without the file (a minimal container) has no entries: numbers work.
            Err(Errno::NOENT) => {
                return Ok(Cache::Parsed {
                    stamp: None,
                    settled: true,
                    entries: Vec::new(),
                });
            }
            Err(e) => return Err(self.error(e)),
        };
        // The stamp of what is read, from the open file itself: a change between a stat of
        // the path and the read would otherwise go unseen.
        let stamp = Stamp::of(&rustix::fs::fstat(&fd).map_err(|e| self.error(e))?);
        let mut bytes = Vec::with_capacity(usize::try_from(stamp.size).unwrap_or(0));
        File::from(fd)
            .read_to_end(&mut bytes)
            .map_err(|source| ReadError {
                path: self.path.clone(),
                source,
            })?;
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let now_ns = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
        let entries = bytes
            .split(|&b| b == b'\n')
            // A line that is not UTF-8 cannot name anything a config can write; the others
            // still count.
            .filter_map(|line| std::str::from_utf8(line).ok())
            .filter_map(self.parse)
            .collect();
        Ok(Cache::Parsed {
            stamp: Some(stamp),
            settled: now_ns - stamp.mtime_ns.max(stamp.ctime_ns) >= self.racy_window_ns,
            entries,
        })
    }
}

/// Whether a line is no entry: a comment, or NIS's `+`/`-` (no NIS without NSS).
fn skipped(line: &str) -> bool {
    line.starts_with(['#', '+', '-'])
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped.
fn parse_passwd_line(line: &str) -> Option<UserEntry> {
    if skipped(line) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 || fields[0].is_empty() {
        return None;
    }
    Some(UserEntry {
        name: fields[0].to_string(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
        home: fields[5].to_string(),
    })
}

/// `name:password:gid:members`; malformed lines are skipped.
fn parse_group_line(line: &str) -> Option<GroupEntry> {
    if skipped(line) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 3 || fields[0].is_empty() {
        return None;
    }
    Some(GroupEntry {
        name: fields[0].to_string(),
        gid: fields[2].parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, WrittenId};
    use std::io::Write;

    /// A root with `etc/passwd` and `etc/group`.
    fn root(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn written(id: Id) -> WrittenId {
        WrittenId {
            id,
            origin: Origin {
                file: std::path::Path::new("t.toml").into(),
                line: 1,
                column: 1,
            },
        }
    }

    fn name(n: &str) -> WrittenId {
        written(Id::Name(n.into()))
    }

    fn credentials(
        user: Option<WrittenId>,
        group: Option<WrittenId>,
        supplementary_groups: Vec<WrittenId>,
    ) -> Credentials {
        Credentials {
            user,
            group,
            supplementary_groups,
        }
    }

    #[test]
    fn reads_the_files_and_skips_what_is_not_an_entry() {
        let dir = root(
            "root:x:0:0:root:/root:/bin/bash\n# a comment\n+nis\nbroken:x:y:1:::\n\nweb:x:1000:100:The Web:/srv/web:/bin/false\nweb:x:1001:100::/second:/bin/false\n",
            "root:x:0:\nusers:x:100:web\nbad\n-nis:x:5:\n",
        );
        let mut db = UserDb::under(dir.path());
        let web = db.user_by_name("web").unwrap().unwrap().clone();
        // The first of two entries of one name wins, as with glibc.
        assert_eq!(
            (web.uid, web.gid, web.home.as_str()),
            (1000, 100, "/srv/web")
        );
        assert_eq!(db.user_by_id(0).unwrap().unwrap().name, "root");
        assert!(db.user_by_name("broken").unwrap().is_none());
        assert!(db.user_by_name("+nis").unwrap().is_none());
        assert_eq!(db.group_by_name("users").unwrap(), Some(100));
        assert_eq!(db.group_by_name("bad").unwrap(), None);
        assert_eq!(db.group_by_name("-nis").unwrap(), None);
    }

    #[test]
    fn missing_files_have_no_entries_and_numbers_still_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = UserDb::under(dir.path());
        assert!(db.user_by_name("root").unwrap().is_none());
        let c = credentials(
            Some(written(Id::Number(4242))),
            Some(written(Id::Number(4243))),
            vec![written(Id::Number(7))],
        );
        let resolved = db.resolve(&c).unwrap();
        assert_eq!(
            (resolved.uid, resolved.gid, resolved.groups),
            (4242, 4243, vec![7])
        );
        assert_eq!(resolved.user_env, None);
    }

    #[test]
    fn a_user_gets_its_primary_group_and_environment() {
        let dir = root(
            "web:x:1000:100:The Web:/srv/web:/bin/false\n",
            "users:x:100:\nwheel:x:10:\n",
        );
        let mut db = UserDb::under(dir.path());
        let resolved = db
            .resolve(&credentials(Some(name("web")), None, vec![name("wheel")]))
            .unwrap();
        assert_eq!(
            resolved,
            Resolved {
                uid: 1000,
                gid: 100,
                groups: vec![10],
                user_env: Some(UserEnv {
                    name: "web".into(),
                    home: "/srv/web".into()
                }),
            }
        );
        // A numeric user with an entry gets its environment too.
        let by_number = db
            .resolve(&credentials(Some(written(Id::Number(1000))), None, vec![]))
            .unwrap();
        assert_eq!(by_number.gid, 100);
        assert_eq!(by_number.user_env.unwrap().name, "web");
        // `group` overrides the primary group.
        let grouped = db
            .resolve(&credentials(Some(name("web")), Some(name("wheel")), vec![]))
            .unwrap();
        assert_eq!(grouped.gid, 10);
    }

    #[test]
    fn what_cannot_be_resolved_names_its_step() {
        let dir = root("web:x:1000:100::/srv/web:/bin/false\n", "users:x:100:\n");
        let mut db = UserDb::under(dir.path());
        let cases = [
            (
                credentials(Some(name("ghost")), None, vec![]),
                Step::User,
                "unknown user \"ghost\"",
            ),
            (
                credentials(Some(name("web")), Some(name("nogroup")), vec![]),
                Step::Group,
                "unknown group \"nogroup\"",
            ),
            (
                credentials(Some(name("web")), None, vec![name("users"), name("extra")]),
                Step::Group,
                "unknown group \"extra\"",
            ),
            (
                credentials(Some(written(Id::Number(4242))), None, vec![]),
                Step::Group,
                "uid 4242 has no entry in /etc/passwd to take its primary group from, and `group` is not set",
            ),
        ];
        for (c, step, text) in cases {
            let e = db.resolve(&c).unwrap_err();
            assert_eq!((e.step(), e.to_string().as_str()), (step, text), "{c:?}");
        }
    }

    #[test]
    fn an_entry_added_later_is_found_at_the_next_lookup() {
        let dir = root("root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");
        let passwd = dir.path().join("etc/passwd");
        let group = dir.path().join("etc/group");
        let mut db = UserDb::under(dir.path());
        let late = credentials(Some(name("late")), None, vec![name("lategrp")]);
        assert!(matches!(
            db.resolve(&late),
            Err(ResolveError::UnknownUser(_))
        ));
        // Appended in place, as `useradd` does not but an image's first-boot script may.
        append(&passwd, "late:x:4242:4243::/home/late:/bin/sh\n");
        assert!(matches!(
            db.resolve(&late),
            Err(ResolveError::UnknownGroup(_))
        ));
        append(&group, "lategrp:x:4243:\n");
        assert_eq!(db.resolve(&late).unwrap().groups, [4243]);
        // Replaced by rename, as `useradd` and `vipw` do: a new inode.
        let tmp = dir.path().join("etc/passwd+");
        std::fs::write(&tmp, "late:x:5000:4243::/home/late:/bin/sh\n").unwrap();
        std::fs::rename(&tmp, &passwd).unwrap();
        assert_eq!(db.resolve(&late).unwrap().uid, 5000);
    }

    #[test]
    fn an_unchanged_file_is_parsed_once() {
        let dir = root("web:x:1000:100::/srv/web:/bin/false\n", "");
        let mut db = UserDb::under(dir.path());
        // As if the file had been written long ago (its ctime cannot be set back).
        db.passwd.racy_window_ns = 0;
        for _ in 0..3 {
            assert!(db.user_by_name("web").unwrap().is_some());
        }
        assert_eq!(db.passwd.reads, 1);
        append(
            &dir.path().join("etc/passwd"),
            "db:x:1001:100::/srv/db:/bin/false\n",
        );
        assert!(db.user_by_name("db").unwrap().is_some());
        assert_eq!(db.passwd.reads, 2);
        // A spawn that needs no name never touches the files.
        let numbers = credentials(None, Some(written(Id::Number(5))), vec![]);
        assert_eq!(db.resolve(&numbers).unwrap().gid, 5);
        assert_eq!(db.group.reads, 0);
    }

    #[test]
    fn a_file_changed_within_the_racy_window_is_read_at_every_lookup() {
        let dir = root("web:x:1000:100::/srv/web:/bin/false\n", "");
        let passwd = dir.path().join("etc/passwd");
        let mut db = UserDb::under(dir.path());
        assert!(db.user_by_name("web").unwrap().is_some());
        assert!(matches!(
            db.passwd.cache,
            Cache::Parsed { settled: false, .. }
        ));
        // Rewritten in place within the same clock tick, with the same size and mtime: the
        // stamp may well be unchanged, and the new entry is found all the same.
        let modified = std::fs::metadata(&passwd).unwrap().modified().unwrap();
        let mut file = File::options().write(true).open(&passwd).unwrap();
        file.write_all(b"bob").unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        assert!(db.user_by_name("bob").unwrap().is_some());
        assert!(db.user_by_name("web").unwrap().is_none());
        assert_eq!(db.passwd.reads, 3);
    }

    #[test]
    fn an_unreadable_file_is_an_error_at_its_step() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: open works, read fails (EISDIR).
        std::fs::create_dir_all(dir.path().join("etc/passwd")).unwrap();
        let mut db = UserDb::under(dir.path());
        let e = db
            .resolve(&credentials(Some(name("web")), None, vec![]))
            .unwrap_err();
        assert_eq!(e.step(), Step::User);
        assert!(
            e.to_string().starts_with("cannot read ") && e.to_string().contains("etc/passwd"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
