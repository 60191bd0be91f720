//! `%` specifiers in values (systemd.unit(5), "Specifiers"): the ones that follow from the
//! unit's name and user are resolved; any other is an error naming it and where it is, never a
//! guess about the machine the unit will run on. Also the `<root>/etc/passwd` lookup behind
//! `%h` and a unit's `User=`.

use std::fmt;
use std::path::Path;

use super::Error;
use super::name::{Instance, UnescapeError, UnitName, unescape};

/// What `%u` and `%h` stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSpecifiers {
    /// As systemd.unit(5) documents (systemd 252, Debian 12): the user running the service
    /// manager, which for system units is `root` with home `/root`, whatever `User=` says.
    #[default]
    Manager,
    /// As older systemd did: the unit's `User=` and its home from `<root>/etc/passwd`; `root`
    /// and `/root` when there is no `User=`.
    UnitUser,
}

/// What a unit's specifiers resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specifiers {
    name: UnitName,
    user: String,
    /// `None`: the user has no `/etc/passwd` entry under the root, so `%h` is an error.
    home: Option<String>,
}

/// Why a value's specifiers could not be resolved. `offset` is the byte offset of the `%` in
/// the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecifierError {
    /// One that depends on the machine or the manager (`%H`, `%t`, ...), or that systemd does
    /// not know at all.
    Unsupported {
        /// The letter after the `%`.
        specifier: char,
        /// Where the `%` is.
        offset: usize,
    },
    /// `%i` or `%I` in a template loaded for an `Accept=yes` socket: the instance is only
    /// known per connection.
    NoInstance {
        /// The letter after the `%`.
        specifier: char,
        /// Where the `%` is.
        offset: usize,
    },
    /// `%I` or `%P` of a name whose escapes do not undo.
    Unescape {
        /// The letter after the `%`.
        specifier: char,
        /// Where the `%` is.
        offset: usize,
        /// What is wrong with the name.
        reason: UnescapeError,
    },
    /// `%h` for a user that `<root>/etc/passwd` does not list.
    NoHome {
        /// The user.
        user: String,
        /// Where the `%` is.
        offset: usize,
    },
}

/// What systemd's other specifiers mean, for the message that says they are not resolved.
fn meaning(specifier: char) -> Option<&'static str> {
    Some(match specifier {
        'a' => "the architecture",
        'A' => "the OS image version",
        'b' => "the boot ID",
        'B' => "the OS build ID",
        'C' => "the cache directory",
        'd' => "the credentials directory",
        'E' => "the configuration directory",
        'f' => "the unescaped instance or prefix as a path",
        'g' => "the manager's group",
        'G' => "the manager's GID",
        'H' => "the host name",
        'j' => "the last component of the prefix",
        'J' => "the unescaped last component of the prefix",
        'l' => "the short host name",
        'L' => "the log directory",
        'm' => "the machine ID",
        'M' => "the OS image identifier",
        'o' => "the OS identifier",
        'q' => "the pretty host name",
        's' => "the user's shell",
        'S' => "the state directory",
        't' => "the runtime directory",
        'T' => "the temporary directory",
        'U' => "the user's UID",
        'v' => "the kernel release",
        'V' => "the directory for large temporary files",
        'w' => "the OS version ID",
        'W' => "the OS variant ID",
        'y' => "the unit file's path",
        'Y' => "the unit file's directory",
        _ => return None,
    })
}

impl fmt::Display for SpecifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecifierError::Unsupported { specifier, offset } => match meaning(*specifier) {
                Some(what) => write!(
                    f,
                    "%{specifier} ({what}, at byte {offset}) is not resolved by the import"
                ),
                None => write!(
                    f,
                    "%{specifier} (at byte {offset}) is not a specifier; write %% for a '%'"
                ),
            },
            SpecifierError::NoInstance { specifier, offset } => write!(
                f,
                "%{specifier} (at byte {offset}) is the instance, which for a service spawned per \
                 connection is only known when a connection comes"
            ),
            SpecifierError::Unescape {
                specifier,
                offset,
                reason,
            } => write!(
                f,
                "%{specifier} (at byte {offset}) cannot be unescaped: {reason}"
            ),
            SpecifierError::NoHome { user, offset } => write!(
                f,
                "%h (at byte {offset}) is the home of {user}, who has no entry in /etc/passwd"
            ),
        }
    }
}

impl std::error::Error for SpecifierError {}

impl Specifiers {
    /// The specifiers of a unit that runs as the manager's user: `root`, `/root`.
    pub fn new(name: &UnitName) -> Specifiers {
        Specifiers::with_user(name, "root", Some("/root".into()))
    }

    /// The specifiers of a unit whose `%u` is `user` with home `home` (`None`: not known).
    pub fn with_user(name: &UnitName, user: &str, home: Option<String>) -> Specifiers {
        Specifiers {
            name: name.clone(),
            user: user.to_string(),
            home,
        }
    }

    /// `text` with its specifiers replaced. A `%` at the very end stays, as in systemd.
    pub fn expand(&self, text: &str) -> Result<String, SpecifierError> {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.char_indices();
        while let Some((offset, c)) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some((_, specifier)) = chars.next() else {
                out.push('%');
                break;
            };
            let unescaped = |text: &str| {
                unescape(text).map_err(|reason| SpecifierError::Unescape {
                    specifier,
                    offset,
                    reason,
                })
            };
            match specifier {
                '%' => out.push('%'),
                'n' => out.push_str(&self.name.to_string()),
                'N' => out.push_str(&self.name.stem()),
                'p' => out.push_str(self.name.prefix()),
                'P' => out.push_str(&unescaped(self.name.prefix())?),
                'i' | 'I' => match self.name.instance() {
                    Instance::None => {}
                    Instance::Template => {
                        return Err(SpecifierError::NoInstance { specifier, offset });
                    }
                    Instance::Named(instance) if specifier == 'i' => out.push_str(instance),
                    Instance::Named(instance) => out.push_str(&unescaped(instance)?),
                },
                'u' => out.push_str(&self.user),
                'h' => match &self.home {
                    Some(home) => out.push_str(home),
                    None => {
                        return Err(SpecifierError::NoHome {
                            user: self.user.clone(),
                            offset,
                        });
                    }
                },
                other => {
                    return Err(SpecifierError::Unsupported {
                        specifier: other,
                        offset,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// An entry of `<root>/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name.
    pub name: String,
    /// The numeric user ID.
    pub uid: u32,
    /// The primary group ID.
    pub gid: u32,
    /// The home directory.
    pub home: String,
    /// The login shell.
    pub shell: String,
}

/// The account `user` (a name, or a numeric UID as `User=` allows) in `<root>/etc/passwd`.
/// `Ok(None)`: the file has no such entry, or there is no such file.
pub fn lookup_user(root: &Path, user: &str) -> Result<Option<Account>, Error> {
    let path = root.join("etc/passwd");
    let bytes = match super::fs::read_bounded(&path) {
        Ok(bytes) => bytes,
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let uid: Option<u32> = user.parse().ok();
    Ok(text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, account_uid, gid, _, home, shell] = fields[..] else {
            return None;
        };
        let account = Account {
            name: name.to_string(),
            uid: account_uid.parse().ok()?,
            gid: gid.parse().ok()?,
            home: home.to_string(),
            shell: shell.to_string(),
        };
        (account.name == user || uid == Some(account.uid)).then_some(account)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specifiers(name: &str) -> Specifiers {
        Specifiers::new(&UnitName::parse(name).unwrap())
    }

    #[test]
    fn every_resolved_specifier() {
        let s = specifiers("serial-getty@dev-ttyS0.service");
        assert_eq!(s.expand("%n").unwrap(), "serial-getty@dev-ttyS0.service");
        assert_eq!(s.expand("%N").unwrap(), "serial-getty@dev-ttyS0");
        assert_eq!(s.expand("%p").unwrap(), "serial-getty");
        assert_eq!(s.expand("%P").unwrap(), "serial/getty");
        assert_eq!(s.expand("%i").unwrap(), "dev-ttyS0");
        assert_eq!(s.expand("/dev/%I").unwrap(), "/dev/dev/ttyS0");
        assert_eq!(s.expand("%u:%h").unwrap(), "root:/root");
        assert_eq!(s.expand("100%% %%i").unwrap(), "100% %i");
        assert_eq!(s.expand("trailing %").unwrap(), "trailing %");
        assert_eq!(s.expand("é%i€").unwrap(), "édev-ttyS0€");
    }

    #[test]
    fn a_plain_unit_has_an_empty_instance() {
        let s = specifiers("cron.service");
        assert_eq!(s.expand("[%i][%I]").unwrap(), "[][]");
        assert_eq!(s.expand("%p %N").unwrap(), "cron cron");
    }

    #[test]
    fn a_template_has_no_instance_to_give() {
        let s = specifiers("ssh@.service");
        assert_eq!(s.expand("%n %p").unwrap(), "ssh@.service ssh");
        assert_eq!(
            s.expand("-x %i"),
            Err(SpecifierError::NoInstance {
                specifier: 'i',
                offset: 3
            })
        );
    }

    #[test]
    fn other_specifiers_are_reported_with_their_place() {
        let s = specifiers("a.service");
        assert_eq!(
            s.expand("%t/a.sock"),
            Err(SpecifierError::Unsupported {
                specifier: 't',
                offset: 0
            })
        );
        let e = s.expand("--host=%H").unwrap_err();
        assert_eq!(
            e.to_string(),
            "%H (the host name, at byte 7) is not resolved by the import"
        );
        let e = s.expand("50%z").unwrap_err();
        assert_eq!(
            e.to_string(),
            "%z (at byte 2) is not a specifier; write %% for a '%'"
        );
        let e = s.expand("ü%é").unwrap_err();
        assert_eq!(
            e,
            SpecifierError::Unsupported {
                specifier: 'é',
                offset: 2
            }
        );
    }

    #[test]
    fn unescaping_failures() {
        let s = specifiers("foo@bad\\x0g.service");
        assert!(matches!(
            s.expand("%I"),
            Err(SpecifierError::Unescape {
                specifier: 'I',
                reason: UnescapeError::BadEscape,
                ..
            })
        ));
        assert_eq!(s.expand("%i").unwrap(), "bad\\x0g");
    }

    #[test]
    fn a_user_without_home() {
        let name = UnitName::parse("a.service").unwrap();
        let s = Specifiers::with_user(&name, "nobody2", None);
        assert_eq!(s.expand("%u").unwrap(), "nobody2");
        assert_eq!(
            s.expand("x%h"),
            Err(SpecifierError::NoHome {
                user: "nobody2".into(),
                offset: 1
            })
        );
    }

    #[test]
    fn passwd_lookup_by_name_and_uid() {
        let root = std::env::temp_dir().join(format!("import-passwd-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nbroken line\n\
             uuidd:x:100:101::/run/uuidd:/usr/sbin/nologin\n",
        )
        .unwrap();
        let uuidd = lookup_user(&root, "uuidd").unwrap().unwrap();
        assert_eq!(uuidd.home, "/run/uuidd");
        assert_eq!((uuidd.uid, uuidd.gid), (100, 101));
        assert_eq!(lookup_user(&root, "100").unwrap().unwrap().name, "uuidd");
        assert_eq!(lookup_user(&root, "nobody").unwrap(), None);
        assert_eq!(lookup_user(&root.join("nothing"), "root").unwrap(), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
