//! The unit file format (systemd.syntax(7)): the bytes of one unit file or drop-in to its
//! entries, in order, each with the file and line it came from. Every malformed input is an
//! error naming FILE:LINE; nothing is guessed or skipped silently.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::Error;
use super::name::UnitKind;

/// The longest physical or continued line, as systemd's `LONG_LINE_MAX`.
pub const MAX_LINE: usize = 1 << 20;

/// The largest file read. systemd has no such limit, but unit files are a few KiB; this only
/// keeps a huge or endless file (a link to `/dev/zero`) from filling memory.
pub const MAX_FILE: usize = 4 << 20;

/// What systemd's `strstrip` removes around keys, values and lines.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// A `[section]` a unit of one type may have.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Section {
    /// `[Unit]`: description, dependencies, conditions.
    Unit,
    /// `[Service]`, in a `.service`.
    Service,
    /// `[Socket]`, in a `.socket`.
    Socket,
    /// `[Install]`: what `systemctl enable` does.
    Install,
    /// `[X-…]`: an extension section, which systemd itself ignores; the name includes `X-`.
    Extension(String),
}

impl Section {
    /// The section `[name]` opens in a unit of `kind`, if that unit type has one by that name.
    fn parse(name: &str, kind: UnitKind) -> Option<Section> {
        match (name, kind) {
            ("Unit", _) => Some(Section::Unit),
            ("Install", _) => Some(Section::Install),
            ("Service", UnitKind::Service) => Some(Section::Service),
            ("Socket", UnitKind::Socket) => Some(Section::Socket),
            (other, _) if other.starts_with("X-") => Some(Section::Extension(other.to_string())),
            _ => None,
        }
    }

    /// The name between the brackets.
    pub fn name(&self) -> &str {
        match self {
            Section::Unit => "Unit",
            Section::Service => "Service",
            Section::Socket => "Socket",
            Section::Install => "Install",
            Section::Extension(name) => name,
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.name())
    }
}

/// Where an entry (or an error) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, as found (the real file a symlink leads to).
    pub file: Arc<Path>,
    /// 1-based line; for a continued line, the line its key is on.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `Key=Value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The section it is in.
    pub section: Section,
    /// The key, as written (systemd keys are case-sensitive), without surrounding blanks.
    pub key: String,
    /// The value without surrounding blanks; continuations joined with a space each. Quotes,
    /// escapes and specifiers are left for the reader of that directive.
    pub value: String,
    /// Where it was written.
    pub origin: Origin,
}

impl Entry {
    /// `Key=` with nothing after it: for list directives, forget every earlier assignment.
    pub fn is_reset(&self) -> bool {
        self.value.is_empty()
    }
}

/// A boolean as systemd.syntax(7) spells it (`1 yes y true t on`, `0 no n false f off`, in
/// any case); `None` for anything else.
pub fn parse_boolean(value: &str) -> Option<bool> {
    const YES: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const NO: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if YES.iter().any(|y| y.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if NO.iter().any(|n| n.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

/// A file's physical lines: ends at `\n`, `\r\n` or a lone `\r` (systemd's `read_line` takes all
/// three), with 1-based numbers.
fn physical_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = bytes;
    let mut number = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        number += 1;
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let terminator = match rest[end..] {
            [b'\r', b'\n', ..] => 2,
            [_, ..] => 1,
            [] => 0,
        };
        rest = &rest[end + terminator..];
        Some((number, line))
    })
}

/// Whether a line ends in a backslash that is not itself escaped: a continuation.
fn continues(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Reads one unit file or drop-in of a unit of `kind`: its entries in file order.
pub fn parse(bytes: &[u8], file: &Arc<Path>, kind: UnitKind) -> Result<Vec<Entry>, Error> {
    let origin = |line| Origin {
        file: Arc::clone(file),
        line,
    };
    if bytes.len() > MAX_FILE {
        return Err(Error::TooLarge {
            path: file.to_path_buf(),
            limit: MAX_FILE,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = Reader {
        kind,
        section: None,
        entries: Vec::new(),
    };
    // A line that ends in a backslash, joined with those after it: where it began, and the text.
    let mut pending: Option<(usize, String)> = None;
    for (number, raw) in physical_lines(bytes) {
        if raw.len() >= MAX_LINE {
            return Err(Error::LineTooLong {
                origin: origin(number),
                limit: MAX_LINE,
            });
        }
        if raw.contains(&0) {
            return Err(Error::Nul {
                origin: origin(number),
            });
        }
        // Comment lines are skipped before anything else, inside a continuation too
        // (systemd.syntax(7)), and before the UTF-8 check: systemd reads a Latin-1 comment.
        let first = raw.iter().find(|&&b| !is_blank(b as char));
        if matches!(first, Some(b'#' | b';')) {
            continue;
        }
        let text = std::str::from_utf8(raw).map_err(|_| Error::InvalidUtf8 {
            origin: origin(number),
        })?;
        let (start, mut line) = match pending.take() {
            Some((start, mut joined)) => {
                if joined.len() + text.len() >= MAX_LINE {
                    return Err(Error::LineTooLong {
                        origin: origin(start),
                        limit: MAX_LINE,
                    });
                }
                joined.push_str(text);
                (start, joined)
            }
            None => (number, text.to_string()),
        };
        // The joined part ended in a space, so only this physical line can decide.
        if continues(text) {
            line.pop();
            line.push(' ');
            pending = Some((start, line));
            continue;
        }
        reader.line(&line, origin(start))?;
    }
    if let Some((start, line)) = pending {
        reader.line(&line, origin(start))?;
    }
    Ok(reader.entries)
}

/// The state between lines: the section we are in and what was read so far.
struct Reader {
    kind: UnitKind,
    section: Option<Section>,
    entries: Vec<Entry>,
}

impl Reader {
    /// One logical line: blank, a comment, a section header or an assignment.
    fn line(&mut self, line: &str, origin: Origin) -> Result<(), Error> {
        let line = line.trim_matches(is_blank);
        if line.is_empty() || line.starts_with(['#', ';']) {
            return Ok(());
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return Err(Error::BadSectionHeader {
                    origin,
                    text: line.to_string(),
                });
            };
            // systemd ignores an unknown section with a warning, and everything in it: an
            // import that dropped it silently would lose what the author meant.
            self.section =
                Some(
                    Section::parse(name, self.kind).ok_or_else(|| Error::UnknownSection {
                        origin,
                        section: name.to_string(),
                        kind: self.kind,
                    })?,
                );
            return Ok(());
        }
        let Some(section) = &self.section else {
            return Err(Error::OutsideSection { origin });
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::NotAnAssignment {
                origin,
                text: line.to_string(),
            });
        };
        let key = key.trim_matches(is_blank);
        if key.is_empty() {
            return Err(Error::MissingKey { origin });
        }
        self.entries.push(Entry {
            section: section.clone(),
            key: key.to_string(),
            value: value.trim_matches(is_blank).to_string(),
            origin,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<Path> {
        Arc::from(Path::new("/u/x.service"))
    }

    fn parse_ok(text: &str) -> Vec<(String, String, String, usize)> {
        parse(text.as_bytes(), &file(), UnitKind::Service)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| (e.section.name().to_string(), e.key, e.value, e.origin.line))
            .collect()
    }

    fn entry(
        section: &str,
        key: &str,
        value: &str,
        line: usize,
    ) -> (String, String, String, usize) {
        (section.into(), key.into(), value.into(), line)
    }

    fn parse_err(bytes: &[u8]) -> String {
        match parse(bytes, &file(), UnitKind::Service) {
            Ok(entries) => panic!("accepted: {entries:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sections_keys_values_and_comments() {
        let text = "# a comment\n; another\n\n[Unit]\nDescription = The thing  \n\
                    [Service]\n  ExecStart=/bin/true\t\nEnvironment=\n   # indented comment\n";
        assert_eq!(
            parse_ok(text),
            [
                entry("Unit", "Description", "The thing", 5),
                entry("Service", "ExecStart", "/bin/true", 7),
                entry("Service", "Environment", "", 8),
            ]
        );
    }

    #[test]
    fn the_first_equals_sign_splits() {
        assert_eq!(
            parse_ok("[Service]\nEnvironment=A=b=c\n"),
            [entry("Service", "Environment", "A=b=c", 2)]
        );
    }

    #[test]
    fn continuation_lines_as_the_syntax_page_shows_them() {
        // systemd.syntax(7)'s example: the backslash becomes a space, the next line is taken
        // as it is, comment lines in between are skipped.
        let text = "[Service]\nKeyTwo=value 2 \\\n       value 2 continued\n\n\
                    KeyThree=value 3\\\n# this line is ignored\n; this line is ignored too\n       value 3 continued\n";
        assert_eq!(
            parse_ok(text),
            [
                entry("Service", "KeyTwo", "value 2         value 2 continued", 2),
                entry("Service", "KeyThree", "value 3        value 3 continued", 5),
            ]
        );
    }

    #[test]
    fn an_escaped_backslash_does_not_continue() {
        assert_eq!(
            parse_ok("[Service]\nA=x\\\\\nB=y\n"),
            [
                entry("Service", "A", "x\\\\", 2),
                entry("Service", "B", "y", 3)
            ]
        );
        // An empty line ends a continuation; one at the end of the file is read as it is.
        assert_eq!(
            parse_ok("[Service]\nA=x\\\n\nB=y\\"),
            [entry("Service", "A", "x", 2), entry("Service", "B", "y", 4)]
        );
    }

    #[test]
    fn line_endings_and_bom() {
        assert_eq!(
            parse_ok("\u{feff}[Service]\r\nA=1\r\nB=2\rC=3"),
            [
                entry("Service", "A", "1", 2),
                entry("Service", "B", "2", 3),
                entry("Service", "C", "3", 4),
            ]
        );
    }

    #[test]
    fn extension_sections_are_kept() {
        assert_eq!(
            parse_ok("[X-Vendor]\nFoo=bar\n"),
            [entry("X-Vendor", "Foo", "bar", 2)]
        );
    }

    #[test]
    fn a_latin1_comment_is_only_a_comment() {
        let entries = parse(
            b"# Copyright J\xf6rg\n[Service]\nA=1\n",
            &file(),
            UnitKind::Service,
        );
        assert_eq!(entries.unwrap().len(), 1);
    }

    #[test]
    fn bad_lines_name_their_file_and_line() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"[Service]\nExecStart\n",
                "/u/x.service:2: not a section header, assignment or comment: ExecStart",
            ),
            (
                b"[Service]\n.include /etc/foo\n",
                "/u/x.service:2: not a section header",
            ),
            (
                b"A=1\n",
                "/u/x.service:1: an assignment before any [section]",
            ),
            (
                b"[Service\n",
                "/u/x.service:1: a section header without its closing ']'",
            ),
            (
                b"[Socket]\n",
                "/u/x.service:1: unknown section [Socket] in a .service unit",
            ),
            (b"[ Unit ]\n", "unknown section [ Unit ]"),
            (
                b"[Service]\n=x\n",
                "/u/x.service:2: an assignment without a key",
            ),
            (
                b"[Service]\nA=\xff\xfe\n",
                "/u/x.service:2: not valid UTF-8",
            ),
            (b"[Service]\nA=1\nB=\0\n", "/u/x.service:3: a NUL byte"),
        ];
        for (bytes, expected) in cases {
            let message = parse_err(bytes);
            assert!(message.contains(expected), "{bytes:?}: {message}");
        }
    }

    #[test]
    fn long_lines_and_files_are_refused() {
        let mut long = b"[Service]\nA=".to_vec();
        long.resize(long.len() + MAX_LINE, b'x');
        assert!(parse_err(&long).contains("/u/x.service:2: a line of 1 MiB or more"));

        // Each physical line is short; together they are too long.
        let mut joined = b"[Service]\nA=".to_vec();
        for _ in 0..(MAX_LINE / 1000 + 1) {
            joined.extend_from_slice(&[b'y'; 999]);
            joined.extend_from_slice(b"\\\n");
        }
        assert!(parse_err(&joined).contains("/u/x.service:2: a line of 1 MiB or more"));

        let huge = vec![b'#'; MAX_FILE + 1];
        assert!(parse_err(&huge).contains("/u/x.service: larger than 4 MiB"));
        // A huge line made only of a comment is still a huge line.
        let mut comment = vec![b'#'; MAX_LINE];
        comment.push(b'\n');
        assert!(parse_err(&comment).contains("x.service:1: a line of 1 MiB or more"));
    }

    #[test]
    fn booleans() {
        for yes in ["1", "yes", "Y", "true", "t", "ON"] {
            assert_eq!(parse_boolean(yes), Some(true), "{yes}");
        }
        for no in ["0", "No", "n", "FALSE", "f", "off"] {
            assert_eq!(parse_boolean(no), Some(false), "{no}");
        }
        for neither in ["", "2", "yess", "enable"] {
            assert_eq!(parse_boolean(neither), None, "{neither}");
        }
    }

    #[test]
    fn binary_garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let message = parse_err(&garbage);
        assert!(message.starts_with("/u/x.service:1:"), "{message}");
    }
}
