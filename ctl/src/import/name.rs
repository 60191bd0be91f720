//! Unit names as systemd spells them, `PREFIX[@INSTANCE].TYPE`: parsing and validation, templates
//! and their instances, and the unescaping behind `%I` and `%P` (systemd.unit(5), "String
//! escaping for inclusion in unit names").

use std::fmt;

/// The longest unit name systemd accepts (`UNIT_NAME_MAX` less its terminating NUL).
pub const MAX_NAME: usize = 255;

/// The suffixes of every unit type systemd knows: a name ending in one of these is not given
/// `.service` the way a bare `ssh` is.
const KNOWN_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// The unit types that can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnitKind {
    /// `.service`: a process to supervise.
    Service,
    /// `.socket`: sockets whose traffic starts a service.
    Socket,
}

impl UnitKind {
    /// The type suffix, without its dot: `service`, `socket`. It also names the type-level
    /// drop-in directory (`service.d/`).
    pub fn suffix(self) -> &'static str {
        match self {
            UnitKind::Service => "service",
            UnitKind::Socket => "socket",
        }
    }
}

/// Whether a name is a plain unit, a template, or an instance of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instance {
    /// `cron.service`.
    None,
    /// `getty@.service`: loadable only as an instance, or as what an `Accept=yes` socket spawns.
    Template,
    /// `getty@ttyS0.service`: the instance string, still escaped.
    Named(String),
}

/// A valid unit name of an importable type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitName {
    prefix: String,
    instance: Instance,
    kind: UnitKind,
}

/// Why a string is not a unit name we can import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Longer than [`MAX_NAME`] bytes.
    TooLong,
    /// Nothing before the `@` or the type suffix.
    EmptyPrefix,
    /// A character systemd does not allow in unit names.
    BadCharacter(char),
    /// A unit type other than `.service` and `.socket`.
    UnsupportedType(String),
    /// A unit file whose name has no type suffix (only a name on the command line may omit
    /// it).
    NoType,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::TooLong => write!(f, "longer than {MAX_NAME} bytes"),
            NameError::EmptyPrefix => write!(f, "nothing before the '@' or the type suffix"),
            NameError::BadCharacter(c) => write!(f, "{c:?} is not allowed in a unit name"),
            NameError::UnsupportedType(t) => {
                write!(
                    f,
                    ".{t} units cannot be imported, only .service and .socket"
                )
            }
            NameError::NoType => write!(f, "a unit file's name ends in .service or .socket"),
        }
    }
}

/// Why `%I` or `%P` could not undo a name's escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnescapeError {
    /// A `\` not followed by `x` and two hex digits.
    BadEscape,
    /// `\x00`: a NUL cannot be part of a value.
    Nul,
    /// The bytes the escapes spell are not UTF-8.
    NotUtf8,
}

impl fmt::Display for UnescapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnescapeError::BadEscape => write!(f, "a '\\' not followed by 'x' and two hex digits"),
            UnescapeError::Nul => write!(f, "\\x00 spells a NUL byte"),
            UnescapeError::NotUtf8 => write!(f, "the unescaped bytes are not UTF-8"),
        }
    }
}

/// systemd's `VALID_CHARS`: what a prefix may hold. An instance may also hold `@`.
fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')
}

impl UnitName {
    /// Parses a full unit name. Only `.service` and `.socket` units are accepted; a name with
    /// no known type suffix is a service, as `systemctl` reads `ssh` as `ssh.service`.
    pub fn parse(name: &str) -> Result<UnitName, NameError> {
        let (stem, kind) = match name.rsplit_once('.') {
            Some((stem, "service")) => (stem, UnitKind::Service),
            Some((stem, "socket")) => (stem, UnitKind::Socket),
            Some((_, other)) if KNOWN_TYPES.contains(&other) => {
                return Err(NameError::UnsupportedType(other.to_string()));
            }
            _ => (name, UnitKind::Service),
        };
        let full_len = stem.len() + 1 + kind.suffix().len();
        if full_len > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let (prefix, instance) = match stem.split_once('@') {
            None => (stem, Instance::None),
            Some((prefix, "")) => (prefix, Instance::Template),
            Some((prefix, instance)) => (prefix, Instance::Named(instance.to_string())),
        };
        if prefix.is_empty() {
            return Err(NameError::EmptyPrefix);
        }
        if let Some(c) = prefix.chars().find(|&c| !valid_char(c)) {
            return Err(NameError::BadCharacter(c));
        }
        if let Instance::Named(instance) = &instance {
            if let Some(c) = instance.chars().find(|&c| !valid_char(c) && c != '@') {
                return Err(NameError::BadCharacter(c));
            }
        }
        Ok(UnitName {
            prefix: prefix.to_string(),
            instance,
            kind,
        })
    }

    /// Parses the name of a unit file, which must end in its type (`ssh` is no unit file).
    pub fn parse_file_name(name: &str) -> Result<UnitName, NameError> {
        let parsed = UnitName::parse(name)?;
        if parsed.to_string() != name {
            return Err(NameError::NoType);
        }
        Ok(parsed)
    }

    /// What comes before the `@` (or the suffix): `%p`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this is a plain unit, a template or an instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The unit's type.
    pub fn kind(&self) -> UnitKind {
        self.kind
    }

    /// The template an instance is made from: `getty@.service` for `getty@ttyS0.service`.
    pub fn template(&self) -> Option<UnitName> {
        match self.instance {
            Instance::Named(_) => Some(UnitName {
                instance: Instance::Template,
                ..self.clone()
            }),
            Instance::None | Instance::Template => None,
        }
    }

    /// The same name with another instance part: how an alias of a template names its
    /// instance (`autovt@.service` → `getty@.service` gives `getty@tty1.service`).
    pub fn with_instance(&self, instance: &Instance) -> UnitName {
        UnitName {
            instance: instance.clone(),
            ..self.clone()
        }
    }

    /// The same name with another type: the `.socket` of a `.service` and back.
    pub fn with_kind(&self, kind: UnitKind) -> UnitName {
        UnitName {
            kind,
            ..self.clone()
        }
    }

    /// The name without its type suffix: `%N`.
    pub fn stem(&self) -> String {
        match &self.instance {
            Instance::None => self.prefix.clone(),
            Instance::Template => format!("{}@", self.prefix),
            Instance::Named(instance) => format!("{}@{instance}", self.prefix),
        }
    }

    /// One step up the dash hierarchy of drop-in names, as systemd takes it:
    /// `foo-bar-baz.service` → `foo-bar-.service` → `foo-.service` → none. An instance keeps
    /// its instance (`serial-@ttyS0.service`); a template's parent is a plain name
    /// (`serial-getty@.service` → `serial-.service`), which is what systemd's own loop builds.
    pub fn dash_parent(&self) -> Option<UnitName> {
        Some(UnitName {
            prefix: chop_at_dash(&self.prefix)?,
            instance: match &self.instance {
                Instance::Named(i) => Instance::Named(i.clone()),
                Instance::None | Instance::Template => Instance::None,
            },
            kind: self.kind,
        })
    }
}

/// One step up the dash hierarchy: `foo-bar-baz` → `foo-bar-`, `foo-bar-` → `foo-`, `foo-` →
/// none. A leading dash ends the walk, as does a prefix without one.
fn chop_at_dash(prefix: &str) -> Option<String> {
    let mut text = prefix;
    let mut chopped = false;
    loop {
        let dash = text.rfind('-')?;
        if dash == 0 {
            return None;
        }
        if dash + 1 < text.len() || chopped {
            return Some(text[..=dash].to_string());
        }
        // A trailing dash: drop it and look for the one before, once.
        text = &text[..dash];
        chopped = true;
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stem(), self.kind.suffix())
    }
}

/// Undoes unit-name escaping as `%I` and `%P` do: `-` is `/`, `\xNN` is the byte NN, anything
/// else stands for itself.
pub fn unescape(text: &str) -> Result<String, UnescapeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' => out.push(b'/'),
            b'\\' => {
                let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
                let (Some(high), Some(low), Some(b'x')) =
                    (hex(i + 2), hex(i + 3), bytes.get(i + 1))
                else {
                    return Err(UnescapeError::BadEscape);
                };
                let byte = (high * 16 + low) as u8;
                if byte == 0 {
                    return Err(UnescapeError::Nul);
                }
                out.push(byte);
                i += 3;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| UnescapeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> UnitName {
        UnitName::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn plain_template_and_instance() {
        let cron = name("cron.service");
        assert_eq!(cron.prefix(), "cron");
        assert_eq!(cron.instance(), &Instance::None);
        assert_eq!(cron.kind(), UnitKind::Service);
        assert_eq!(cron.to_string(), "cron.service");

        let template = name("getty@.service");
        assert_eq!(template.instance(), &Instance::Template);
        assert_eq!(template.stem(), "getty@");
        assert_eq!(template.template(), None);

        let instance = name("serial-getty@ttyS0.service");
        assert_eq!(instance.prefix(), "serial-getty");
        assert_eq!(instance.instance(), &Instance::Named("ttyS0".into()));
        assert_eq!(instance.template(), Some(name("serial-getty@.service")));
        assert_eq!(instance.stem(), "serial-getty@ttyS0");

        let socket = name("ssh.socket");
        assert_eq!(socket.kind(), UnitKind::Socket);
        assert_eq!(socket.with_kind(UnitKind::Service), name("ssh.service"));
        assert_eq!(
            name("getty@.service").with_instance(&Instance::Named("tty1".into())),
            name("getty@tty1.service")
        );
    }

    #[test]
    fn an_instance_may_hold_an_at_and_escapes() {
        let n = name("foo@a@b.service");
        assert_eq!(n.instance(), &Instance::Named("a@b".into()));
        let n = name("systemd-fsck@dev-disk-by\\x2duuid-1234.service");
        assert_eq!(
            n.instance(),
            &Instance::Named("dev-disk-by\\x2duuid-1234".into())
        );
    }

    #[test]
    fn a_bare_name_is_a_service() {
        assert_eq!(name("ssh"), name("ssh.service"));
        assert_eq!(name("foo.bar").to_string(), "foo.bar.service");
    }

    #[test]
    fn a_file_name_has_a_type() {
        assert_eq!(UnitName::parse_file_name("ssh"), Err(NameError::NoType));
        assert_eq!(UnitName::parse_file_name("a.conf"), Err(NameError::NoType));
        assert_eq!(UnitName::parse_file_name("a.socket"), Ok(name("a.socket")));
    }

    #[test]
    fn bad_names() {
        assert_eq!(
            UnitName::parse("home.mount"),
            Err(NameError::UnsupportedType("mount".into()))
        );
        assert_eq!(UnitName::parse("@x.service"), Err(NameError::EmptyPrefix));
        assert_eq!(UnitName::parse(".service"), Err(NameError::EmptyPrefix));
        assert_eq!(
            UnitName::parse("a b.service"),
            Err(NameError::BadCharacter(' '))
        );
        assert_eq!(
            UnitName::parse("a@b/c.service"),
            Err(NameError::BadCharacter('/'))
        );
        let long = format!("{}.service", "a".repeat(MAX_NAME));
        assert_eq!(UnitName::parse(&long), Err(NameError::TooLong));
        let longest = format!("{}.service", "a".repeat(MAX_NAME - ".service".len()));
        assert!(UnitName::parse(&longest).is_ok());
    }

    #[test]
    fn dash_parents_as_systemd_walks_them() {
        let chain = |n: &str| {
            let mut out = Vec::new();
            let mut current = name(n);
            while let Some(parent) = current.dash_parent() {
                out.push(parent.to_string());
                current = parent;
            }
            out
        };
        assert_eq!(
            chain("foo-bar-baz.service"),
            ["foo-bar-.service", "foo-.service"]
        );
        assert_eq!(chain("foo-bar-.service"), ["foo-.service"]);
        assert_eq!(chain("foo.service"), Vec::<String>::new());
        assert_eq!(chain("-foo.service"), Vec::<String>::new());
        assert_eq!(
            chain("serial-getty@ttyS0.service"),
            ["serial-@ttyS0.service"]
        );
        assert_eq!(chain("serial-getty@.service"), ["serial-.service"]);
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape("ttyS0").unwrap(), "ttyS0");
        assert_eq!(unescape("dev-ttyS0").unwrap(), "dev/ttyS0");
        assert_eq!(unescape("foo\\x2dbar").unwrap(), "foo-bar");
        assert_eq!(unescape("caf\\xc3\\xa9").unwrap(), "café");
        assert_eq!(unescape("a\\x2"), Err(UnescapeError::BadEscape));
        assert_eq!(unescape("a\\y20"), Err(UnescapeError::BadEscape));
        assert_eq!(unescape("a\\"), Err(UnescapeError::BadEscape));
        assert_eq!(unescape("\\x00"), Err(UnescapeError::Nul));
        assert_eq!(unescape("\\xff"), Err(UnescapeError::NotUtf8));
    }
}
