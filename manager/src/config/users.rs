//! The user and group database behind `user`, `group` and `supplementary_groups`: read from
//! `/etc/passwd` and `/etc/group` only. PID 1 must never load NSS modules, which can block on
//! services (a directory server, a name service cache) that PID 1 itself has not started yet.

use std::path::PathBuf;

/// One entry of the user database.
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

/// The user and group database, behind a narrow trait so that tests can use a fake one.
pub trait Users {
    /// Looks a user up by name.
    fn user_by_name(&self, name: &str) -> Option<UserEntry>;
    /// Looks a user up by id.
    fn user_by_id(&self, uid: u32) -> Option<UserEntry>;
    /// Looks a group's id up by name.
    fn group_by_name(&self, name: &str) -> Option<u32>;
}

/// The system's database: `passwd` and `group` files, read afresh at every lookup (a user
/// added by an earlier boot step is found without a reload).
pub struct SystemUsers {
    passwd: PathBuf,
    group: PathBuf,
}

impl SystemUsers {
    /// `/etc/passwd` and `/etc/group`.
    pub fn new() -> SystemUsers {
        SystemUsers::at("/etc")
    }

    /// `DIR/passwd` and `DIR/group`.
    pub fn at(dir: impl Into<PathBuf>) -> SystemUsers {
        let dir = dir.into();
        SystemUsers {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
        }
    }

    fn users(&self) -> impl Iterator<Item = UserEntry> {
        let text = std::fs::read_to_string(&self.passwd).unwrap_or_default();
        text.lines()
            .filter_map(parse_passwd_line)
            .collect::<Vec<_>>()
            .into_iter()
    }
}

impl Default for SystemUsers {
    fn default() -> Self {
        SystemUsers::new()
    }
}

/// `name:password:uid:gid:gecos:home:shell`; comments, blank lines, NIS `+`/`-` entries and
/// malformed lines are skipped.
fn parse_passwd_line(line: &str) -> Option<UserEntry> {
    if line.starts_with(['#', '+', '-']) {
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

/// `name:password:gid:members`: (name, gid).
fn parse_group_line(line: &str) -> Option<(&str, u32)> {
    if line.starts_with(['#', '+', '-']) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 3 || fields[0].is_empty() {
        return None;
    }
    Some((fields[0], fields[2].parse().ok()?))
}

impl Users for SystemUsers {
    fn user_by_name(&self, name: &str) -> Option<UserEntry> {
        self.users().find(|u| u.name == name)
    }

    fn user_by_id(&self, uid: u32) -> Option<UserEntry> {
        self.users().find(|u| u.uid == uid)
    }

    fn group_by_name(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string(&self.group).ok()?;
        text.lines()
            .filter_map(parse_group_line)
            .find(|(n, _)| *n == name)
            .map(|(_, gid)| gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_files_and_skips_what_is_not_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# a comment\n+nis\nbroken:x:y:1:::\n\nweb:x:1000:100:The Web:/srv/web:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nusers:x:100:web\nbad\n",
        )
        .unwrap();
        let users = SystemUsers::at(dir.path());
        let web = users.user_by_name("web").unwrap();
        assert_eq!(
            (web.uid, web.gid, web.home.as_str()),
            (1000, 100, "/srv/web")
        );
        assert_eq!(users.user_by_id(0).unwrap().name, "root");
        assert!(users.user_by_name("broken").is_none());
        assert!(users.user_by_name("+nis").is_none());
        assert_eq!(users.group_by_name("users"), Some(100));
        assert_eq!(users.group_by_name("bad"), None);
        // Read again at every lookup: an entry added later is found.
        std::fs::write(
            dir.path().join("passwd"),
            "late:x:1001:100::/home/late:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(users.user_by_name("late").unwrap().uid, 1001);
    }
}
