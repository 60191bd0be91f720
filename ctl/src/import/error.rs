//! Why reading units failed: one variant per failing step, each naming the file (and line) or
//! the unit it is about, so the message can be printed as it is.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::environment::EnvironmentError;
use super::exec::ExecError;
use super::name::{NameError, UnitKind};
use super::specifiers::SpecifierError;
use super::syntax::Origin;

/// How much of an offending line a message quotes.
const QUOTE_MAX: usize = 80;

/// Why a unit, or one of its values, could not be read.
#[derive(Debug)]
pub enum Error {
    /// A file or directory that exists could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A file larger than the reader takes.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A unit or drop-in that is a directory, a FIFO or some other non-file.
    NotAFile {
        /// What is there.
        path: PathBuf,
    },
    /// Symlinks that do not end (or end after more hops than the kernel would follow).
    SymlinkLoop {
        /// Where the chain starts.
        path: PathBuf,
    },
    /// A line (or continued line) of [`MAX_LINE`](super::syntax::MAX_LINE) bytes or more.
    LineTooLong {
        /// Where it starts.
        origin: Origin,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A NUL byte: the file is not text.
    Nul {
        /// The line holding it.
        origin: Origin,
    },
    /// A line that is not UTF-8.
    InvalidUtf8 {
        /// The line.
        origin: Origin,
    },
    /// `[Name` without its `]`.
    BadSectionHeader {
        /// The line.
        origin: Origin,
        /// What it says.
        text: String,
    },
    /// A section this unit type does not have (`[Socket]` in a service, a misspelling).
    UnknownSection {
        /// The header's line.
        origin: Origin,
        /// The name between the brackets.
        section: String,
        /// The unit's type.
        kind: UnitKind,
    },
    /// An assignment before the first section header.
    OutsideSection {
        /// The line.
        origin: Origin,
    },
    /// A line that is neither a section header, an assignment nor a comment.
    NotAnAssignment {
        /// The line.
        origin: Origin,
        /// What it says.
        text: String,
    },
    /// `=value` with no key.
    MissingKey {
        /// The line.
        origin: Origin,
    },
    /// A unit name that systemd would refuse, or of a type we do not import.
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: NameError,
    },
    /// No file for the unit in any search directory.
    NotFound {
        /// The unit.
        name: String,
        /// Where it was looked for, in order.
        searched: Vec<PathBuf>,
    },
    /// The unit is masked: its file links to `/dev/null` or is empty.
    Masked {
        /// The unit.
        name: String,
        /// The masking file.
        path: PathBuf,
    },
    /// A template (`getty@.service`) named without an instance.
    NeedsInstance {
        /// The template.
        name: String,
    },
    /// A symlink that makes a unit an alias of a unit of another type.
    AliasOfOtherType {
        /// The symlink.
        path: PathBuf,
        /// The name it leads to.
        target: String,
    },
    /// A `%` specifier that cannot be resolved.
    Specifier {
        /// The entry.
        origin: Origin,
        /// Which and why.
        source: SpecifierError,
    },
    /// An `Exec*=` value that is not a valid command line.
    Command {
        /// The entry.
        origin: Origin,
        /// What is wrong with it.
        source: ExecError,
    },
    /// An `Environment=` or `EnvironmentFile=` value, or an environment file, that cannot be
    /// read as one.
    Environment {
        /// The entry, or the line of the environment file.
        origin: Origin,
        /// What is wrong with it.
        source: EnvironmentError,
    },
    /// An environment file that is not there (an error unless `-` made it optional).
    MissingEnvironmentFile {
        /// The `EnvironmentFile=` entry.
        origin: Origin,
        /// The file, under the root.
        path: PathBuf,
    },
    /// A socket with `Accept=yes` that names its service with `Service=`, which systemd
    /// refuses: accepted connections always go to instances of `NAME@.service`.
    AcceptWithService {
        /// The `Service=` entry.
        origin: Origin,
    },
    /// A `Service=` or `Sockets=` name of the wrong unit type, or a template.
    WrongPartner {
        /// The entry.
        origin: Origin,
        /// The name it gives.
        name: String,
        /// What it must be.
        expected: &'static str,
    },
}

impl Error {
    /// Wraps an io::Error about `path`.
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Read {
            path: path.into(),
            source,
        }
    }
}

/// The start of a long quoted line, cut at a character boundary.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Sizes in the messages are round numbers of MiB.
fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { path, source } => write!(f, "{}: {}", path.display(), plain(source)),
            Error::TooLarge { path, limit } => {
                write!(f, "{}: larger than {}", path.display(), mib(*limit))
            }
            Error::NotAFile { path } => write!(f, "{}: not a regular file", path.display()),
            Error::SymlinkLoop { path } => {
                write!(f, "{}: too many levels of symbolic links", path.display())
            }
            Error::LineTooLong { origin, limit } => {
                write!(f, "{origin}: a line of {} or more", mib(*limit))
            }
            Error::Nul { origin } => write!(f, "{origin}: a NUL byte; this is not a text file"),
            Error::InvalidUtf8 { origin } => write!(f, "{origin}: not valid UTF-8"),
            Error::BadSectionHeader { origin, text } => write!(
                f,
                "{origin}: a section header without its closing ']': {}",
                quote(text)
            ),
            Error::UnknownSection {
                origin,
                section,
                kind,
            } => write!(
                f,
                "{origin}: unknown section [{section}] in a .{} unit",
                kind.suffix()
            ),
            Error::OutsideSection { origin } => {
                write!(f, "{origin}: an assignment before any [section]")
            }
            Error::NotAnAssignment { origin, text } => write!(
                f,
                "{origin}: not a section header, assignment or comment: {}",
                quote(text)
            ),
            Error::MissingKey { origin } => write!(f, "{origin}: an assignment without a key"),
            Error::BadName { name, reason } => write!(f, "{name:?}: not a unit name: {reason}"),
            Error::NotFound { name, searched } => {
                write!(f, "{name}: no such unit in")?;
                if searched.is_empty() {
                    return write!(f, " any search directory (none exists)");
                }
                for (i, dir) in searched.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{}", dir.display())?;
                }
                Ok(())
            }
            Error::Masked { name, path } => write!(
                f,
                "{name} is masked ({} is empty or links to /dev/null)",
                path.display()
            ),
            Error::NeedsInstance { name } => write!(
                f,
                "{name} is a template: name an instance of it, such as {}",
                name.replacen("@.", "@INSTANCE.", 1)
            ),
            Error::AliasOfOtherType { path, target } => write!(
                f,
                "{}: an alias of {target}, a unit of another type",
                path.display()
            ),
            Error::Specifier { origin, source } => write!(f, "{origin}: {source}"),
            Error::Command { origin, source } => write!(f, "{origin}: {source}"),
            Error::Environment { origin, source } => write!(f, "{origin}: {source}"),
            Error::MissingEnvironmentFile { origin, path } => write!(
                f,
                "{origin}: the environment file {} does not exist",
                path.display()
            ),
            Error::AcceptWithService { origin } => write!(
                f,
                "{origin}: Service= is not allowed with Accept=yes (connections go to instances \
                 of the socket's NAME@.service)"
            ),
            Error::WrongPartner {
                origin,
                name,
                expected,
            } => write!(f, "{origin}: {name} is not {expected}"),
        }
    }
}

// The messages already say what the sources said, so none is exposed to be printed twice.
impl std::error::Error for Error {}

/// An io::Error without Rust's " (os error N)" suffix: the user wants the words.
fn plain(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
