//! The environment a unit sets (systemd.exec(5)): `Environment=` assignments,
//! `EnvironmentFile=` names, and the environment files themselves, read from under the root the
//! way systemd reads them when the service starts.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::Error;
use super::fs::{Chased, chase, read_bounded};
use super::specifiers::{SpecifierError, Specifiers};
use super::syntax::Origin;
use super::words::{self, Rules, WordError};

/// One variable a unit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
    /// The `Environment=` entry, or the line of the environment file, that sets it.
    pub origin: Origin,
}

/// What one `Environment=` value sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignments {
    /// The variables, in order (a later one overrides an earlier one of the same name).
    pub vars: Vec<Var>,
    /// Words that are not `NAME=value` with a valid name, which systemd ignores with a warning.
    pub invalid: Vec<String>,
}

/// An `EnvironmentFile=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    /// The absolute path (on the system being imported), which may hold `*`, `?` and `[...]`.
    pub path: String,
    /// `-` before it: a missing or unreadable file is skipped without a word.
    pub optional: bool,
}

/// What an `EnvironmentFile=` reads.
#[derive(Debug, Default)]
pub struct EnvironmentFileContents {
    /// The variables of every file it matches, in order, each with its file and line.
    pub vars: Vec<Var>,
    /// Assignments with names that are not valid variable names, which systemd drops.
    pub ignored: Vec<Var>,
    /// Why files of an optional `EnvironmentFile=` were skipped (systemd skips them silently).
    pub skipped: Vec<Error>,
}

/// Why an `Environment=` or `EnvironmentFile=` value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentError {
    /// It does not split into words.
    Syntax(WordError),
    /// A specifier in it cannot be resolved.
    Specifier(SpecifierError),
    /// An environment file that is not an absolute path.
    NotAbsolute(String),
}

impl fmt::Display for EnvironmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvironmentError::Syntax(e) => write!(f, "the assignments have {e}"),
            EnvironmentError::Specifier(e) => write!(f, "{e}"),
            EnvironmentError::NotAbsolute(path) => {
                write!(f, "the environment file {path:?} is not an absolute path")
            }
        }
    }
}

impl std::error::Error for EnvironmentError {}

/// A valid variable name: ASCII letters, digits and `_`, not starting with a digit.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The assignments of one `Environment=` value: words by the quoting rules (strictly: an
/// unknown escape makes systemd ignore the whole value), specifiers resolved in each.
pub fn parse_assignments(
    value: &str,
    specifiers: &Specifiers,
    origin: &Origin,
) -> Result<Assignments, EnvironmentError> {
    let mut out = Assignments::default();
    for word in words::split(value, Rules::Strict).map_err(EnvironmentError::Syntax)? {
        let word = specifiers
            .expand(&word.text)
            .map_err(EnvironmentError::Specifier)?;
        match word.split_once('=') {
            Some((name, value)) if is_valid_name(name) => out.vars.push(Var {
                name: name.to_string(),
                value: value.to_string(),
                origin: origin.clone(),
            }),
            _ => out.invalid.push(word),
        }
    }
    Ok(out)
}

/// An `EnvironmentFile=` value; `None` for the empty value, which forgets earlier ones.
pub fn parse_environment_file(
    value: &str,
    specifiers: &Specifiers,
) -> Result<Option<EnvironmentFile>, EnvironmentError> {
    if value.is_empty() {
        return Ok(None);
    }
    let value = specifiers
        .expand(value)
        .map_err(EnvironmentError::Specifier)?;
    let (optional, path) = match value.strip_prefix('-') {
        Some(path) => (true, path),
        None => (false, value.as_str()),
    };
    if !path.starts_with('/') {
        return Err(EnvironmentError::NotAbsolute(path.to_string()));
    }
    Ok(Some(EnvironmentFile {
        path: path.to_string(),
        optional,
    }))
}

/// Reads what `file` names on the system under `root`; `origin` is its `EnvironmentFile=`.
/// A pattern reads every match, in name order. A file that is missing or unreadable fails the
/// whole read, unless `file` is optional: then it is listed in `skipped`.
pub fn read_environment_file(
    root: &Path,
    file: &EnvironmentFile,
    origin: &Origin,
) -> Result<EnvironmentFileContents, Error> {
    let under_root = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let paths = if has_wildcard(&file.path) {
        glob(root, Path::new(&file.path))?
    } else {
        vec![PathBuf::from(&file.path)]
    };
    let mut contents = EnvironmentFileContents::default();
    if paths.is_empty() {
        let missing = Error::MissingEnvironmentFile {
            origin: origin.clone(),
            path: under_root(Path::new(&file.path)),
        };
        return match file.optional {
            true => {
                contents.skipped.push(missing);
                Ok(contents)
            }
            false => Err(missing),
        };
    }
    for path in paths {
        let host = under_root(&path);
        let read = match chase(root, &host) {
            Ok(Chased::Found(real)) => read_bounded(&real)
                .and_then(|bytes| parse_environment_text(&bytes, &Arc::from(real.as_path()))),
            // An environment file linked to /dev/null reads as empty.
            Ok(Chased::Masked) => Ok((Vec::new(), Vec::new())),
            Ok(Chased::Missing) => Err(Error::MissingEnvironmentFile {
                origin: origin.clone(),
                path: host,
            }),
            Err(e) => Err(e),
        };
        match read {
            Ok((vars, ignored)) => {
                contents.vars.extend(vars);
                contents.ignored.extend(ignored);
            }
            Err(e) if file.optional => contents.skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(contents)
}

/// The states of systemd's environment file reader (`parse_env_file_internal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuoted,
    DoubleQuoted,
    DoubleQuotedEscape,
    Comment,
}

/// The text of an environment file, as systemd reads it: `KEY=value` lines, `#` and `;`
/// comments, single quotes (literal), double quotes (shell escapes), backslash continuations;
/// blanks around keys and unquoted values dropped. Returns the assignments with valid names,
/// then those without.
pub fn parse_environment_text(
    bytes: &[u8],
    file: &Arc<Path>,
) -> Result<(Vec<Var>, Vec<Var>), Error> {
    let origin = |line| Origin {
        file: Arc::clone(file),
        line,
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(Error::InvalidUtf8 {
                origin: origin(line),
            });
        }
    };
    if let Some(at) = text.find('\0') {
        let line = 1 + text[..at].matches('\n').count();
        return Err(Error::Nul {
            origin: origin(line),
        });
    }
    let newline = |c: char| c == '\n' || c == '\r';
    let blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');

    let mut vars = Vec::new();
    let mut ignored = Vec::new();
    let mut push = |key: &str, value: &str, line: usize| {
        let var = Var {
            name: key.to_string(),
            value: value.to_string(),
            origin: origin(line),
        };
        if is_valid_name(key) {
            vars.push(var);
        } else {
            ignored.push(var);
        }
    };

    let mut state = State::PreKey;
    let mut key = String::new();
    let mut value = String::new();
    // Where trailing blanks of the key or unquoted value start, to cut them at the end.
    let mut key_blank: Option<usize> = None;
    let mut value_blank: Option<usize> = None;
    let mut line = 1;
    let mut key_line = 1;
    for c in text.chars() {
        match state {
            State::PreKey if c == '#' || c == ';' => state = State::Comment,
            State::PreKey if !blank(c) => {
                state = State::Key;
                key.clear();
                key.push(c);
                key_blank = None;
                key_line = line;
            }
            State::PreKey => {}
            // A line without `=` is not an assignment.
            State::Key if newline(c) => state = State::PreKey,
            State::Key if c == '=' => {
                state = State::PreValue;
                value.clear();
                value_blank = None;
            }
            State::Key => {
                if !blank(c) {
                    key_blank = None;
                } else if key_blank.is_none() {
                    key_blank = Some(key.len());
                }
                key.push(c);
            }
            State::PreValue if newline(c) => {
                push(cut(&key, key_blank), &value, key_line);
                state = State::PreKey;
            }
            State::PreValue if c == '\'' => state = State::SingleQuoted,
            State::PreValue if c == '"' => state = State::DoubleQuoted,
            State::PreValue if c == '\\' => state = State::ValueEscape,
            State::PreValue if !blank(c) => {
                state = State::Value;
                value.push(c);
            }
            State::PreValue => {}
            State::Value if newline(c) => {
                push(cut(&key, key_blank), cut(&value, value_blank), key_line);
                state = State::PreKey;
            }
            State::Value if c == '\\' => {
                state = State::ValueEscape;
                value_blank = None;
            }
            State::Value => {
                if !blank(c) {
                    value_blank = None;
                } else if value_blank.is_none() {
                    value_blank = Some(value.len());
                }
                value.push(c);
            }
            State::ValueEscape => {
                state = State::Value;
                // An escaped newline is a continuation: it disappears.
                if !newline(c) {
                    value.push(c);
                }
            }
            State::SingleQuoted if c == '\'' => state = State::PreValue,
            State::SingleQuoted => value.push(c),
            State::DoubleQuoted if c == '"' => state = State::PreValue,
            State::DoubleQuoted if c == '\\' => state = State::DoubleQuotedEscape,
            State::DoubleQuoted => value.push(c),
            State::DoubleQuotedEscape => {
                state = State::DoubleQuoted;
                // As in a shell: \" \\ \` \$ lose their backslash, others keep it.
                if matches!(c, '"' | '\\' | '`' | '$') {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
            }
            // systemd before v254 let a comment ending in a backslash swallow the next line
            // (systemd#27975); a comment ends at its line here, as it does since.
            State::Comment if newline(c) => state = State::PreKey,
            State::Comment => {}
        }
        if c == '\n' {
            line += 1;
        }
    }
    match state {
        State::Value => push(cut(&key, key_blank), cut(&value, value_blank), key_line),
        State::PreValue
        | State::ValueEscape
        | State::SingleQuoted
        | State::DoubleQuoted
        | State::DoubleQuotedEscape => push(cut(&key, key_blank), &value, key_line),
        State::PreKey | State::Key | State::Comment => {}
    }
    Ok((vars, ignored))
}

/// `text` without what starts at `blank`.
fn cut(text: &str, blank: Option<usize>) -> &str {
    &text[..blank.unwrap_or(text.len())]
}

/// Whether a path is a glob(3) pattern.
fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The paths under `root` that `pattern` (absolute, on the imported system) matches, sorted, as
/// the system's paths.
fn glob(root: &Path, pattern: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut found = vec![PathBuf::from("/")];
    for component in pattern.components() {
        let part = match component {
            Component::Normal(part) => part.to_string_lossy(),
            Component::ParentDir => "..".into(),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        if !has_wildcard(&part) {
            for path in &mut found {
                path.push(part.as_ref());
            }
            continue;
        }
        let mut next = Vec::new();
        for base in &found {
            let Chased::Found(dir) = chase(root, &root.join(base.strip_prefix("/").unwrap()))?
            else {
                continue;
            };
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::read(&dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                // As glob(3): a leading dot is only matched by a pattern that has one.
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if matches(&part, name) {
                    next.push(base.join(name));
                }
            }
        }
        next.sort();
        found = next;
    }
    Ok(found)
}

/// fnmatch(3) without flags: `*`, `?`, `[...]` (with `!` or `^` to negate, and ranges), and `\`
/// to quote the next character.
fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: the pattern position after it, and the name position
    // it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => match class(&pattern[p..], name[n]) {
                Some((hit, len)) => hit.then_some(len),
                None => ('[' == name[n]).then_some(1),
            },
            Some('\\') if p + 1 < pattern.len() => (pattern[p + 1] == name[n]).then_some(2),
            Some(&c) => (c == name[n]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(len), _) => {
                p += len;
                n += 1;
            }
            (None, Some((after, swallowed))) => {
                p = after;
                n = swallowed + 1;
                star = Some((after, swallowed + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches `c` against the bracket expression at the start of `pattern`: whether it matches
/// and the expression's length, or `None` for an unclosed `[` (which is an ordinary character).
fn class(pattern: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &start = pattern.get(i)?;
        // A `]` right after the `[` (or its `!`) is a member, not the end.
        if start == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&e| e != ']') {
            hit |= (start..=pattern[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= start == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::fs::tests::TempDir;
    use crate::import::name::UnitName;

    fn origin() -> Origin {
        Origin {
            file: Arc::from(Path::new("/u/a.service")),
            line: 7,
        }
    }

    fn specifiers() -> Specifiers {
        Specifiers::new(&UnitName::parse("web@blue.service").unwrap())
    }

    fn assignments(value: &str) -> Vec<(String, String)> {
        parse_assignments(value, &specifiers(), &origin())
            .unwrap_or_else(|e| panic!("{value}: {e}"))
            .vars
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_man_page_environment_example() {
        assert_eq!(
            assignments(r#""VAR1=word1 word2" VAR2=word3 "VAR3=$word 5 6""#),
            pairs(&[
                ("VAR1", "word1 word2"),
                ("VAR2", "word3"),
                ("VAR3", "$word 5 6")
            ])
        );
        assert_eq!(
            assignments(r#"ONE='one' "TWO='two two' too" THREE="#),
            pairs(&[("ONE", "one"), ("TWO", "'two two' too"), ("THREE", "")])
        );
    }

    #[test]
    fn specifiers_and_invalid_words() {
        assert_eq!(
            assignments("COLOR=%i UNIT=%n"),
            pairs(&[("COLOR", "blue"), ("UNIT", "web@blue.service")])
        );
        let a = parse_assignments("1X=a =b A-B=c plain OK=1", &specifiers(), &origin()).unwrap();
        assert_eq!(a.invalid, ["1X=a", "=b", "A-B=c", "plain"]);
        assert_eq!(a.vars.len(), 1);
        assert_eq!(a.vars[0].origin, origin());
        assert_eq!(
            parse_assignments(r"A=\q", &specifiers(), &origin()),
            Err(EnvironmentError::Syntax(WordError::BadEscape { offset: 2 }))
        );
        assert_eq!(
            parse_assignments(r#"A="x"#, &specifiers(), &origin()),
            Err(EnvironmentError::Syntax(WordError::UnbalancedQuotes))
        );
    }

    #[test]
    fn environment_file_values() {
        let s = specifiers();
        assert_eq!(parse_environment_file("", &s), Ok(None));
        assert_eq!(
            parse_environment_file("-/etc/default/ssh", &s),
            Ok(Some(EnvironmentFile {
                path: "/etc/default/ssh".into(),
                optional: true
            }))
        );
        assert_eq!(
            parse_environment_file("/etc/web/%i.env", &s)
                .unwrap()
                .unwrap()
                .path,
            "/etc/web/blue.env"
        );
        assert_eq!(
            parse_environment_file("-etc/x", &s),
            Err(EnvironmentError::NotAbsolute("etc/x".into()))
        );
    }

    fn text(input: &str) -> (Vec<(String, String, usize)>, Vec<String>) {
        let (vars, ignored) =
            parse_environment_text(input.as_bytes(), &Arc::from(Path::new("/env"))).unwrap();
        (
            vars.into_iter()
                .map(|v| (v.name, v.value, v.origin.line))
                .collect(),
            ignored.into_iter().map(|v| v.name).collect(),
        )
    }

    fn var(name: &str, value: &str, line: usize) -> (String, String, usize) {
        (name.into(), value.into(), line)
    }

    #[test]
    fn environment_files_as_systemd_reads_them() {
        let (vars, ignored) = text(
            "# comment\n; comment\n  SSHD_OPTS=  -o Foo  \nEMPTY=\nno equals sign\n\
             SINGLE='a \\n \"b\"\nc'\nDOUBLE=\"x \\\" \\$ \\q \\\nnext\"\n\
             CONT=one\\\ntwo\nMIXED=\"a\"'b'c d\nESC=\\ lead\n KEY  = spaced\n",
        );
        assert_eq!(
            vars,
            [
                var("SSHD_OPTS", "-o Foo", 3),
                var("EMPTY", "", 4),
                var("SINGLE", "a \\n \"b\"\nc", 6),
                var("DOUBLE", "x \" $ \\q next", 8),
                var("CONT", "onetwo", 10),
                var("MIXED", "abc d", 12),
                var("ESC", " lead", 13),
                var("KEY", "spaced", 14),
            ]
        );
        assert!(ignored.is_empty());
    }

    #[test]
    fn environment_file_edges() {
        // The end of the file ends the last assignment, quoted or not.
        assert_eq!(text("A=1").0, [var("A", "1", 1)]);
        assert_eq!(text("A='open").0, [var("A", "open", 1)]);
        // A comment ends at its line, even after a backslash.
        assert_eq!(text("# x \\\nA=1\n").0, [var("A", "1", 2)]);
        // CRLF line ends, and names systemd drops.
        let (vars, ignored) = text("A=1\r\nB-C=2\r\n2X=3\r\n\u{feff}D=4\r\n");
        assert_eq!(vars, [var("A", "1", 1)]);
        assert_eq!(ignored, ["B-C", "2X", "\u{feff}D"]);
    }

    #[test]
    fn bad_environment_files() {
        let file: Arc<Path> = Arc::from(Path::new("/etc/default/x"));
        let e = parse_environment_text(b"A=1\nB=\xff\n", &file).unwrap_err();
        assert_eq!(e.to_string(), "/etc/default/x:2: not valid UTF-8");
        let e = parse_environment_text(b"A=1\n\nB=\0\n", &file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/default/x:3: a NUL byte; this is not a text file"
        );
    }

    #[test]
    fn reading_files_under_the_root() {
        let dir = TempDir::new();
        let root = &dir.0;
        dir.write("etc/default/ssh", "SSHD_OPTS=-4\n");
        dir.write("etc/web.d/20-b.env", "B=2\n");
        dir.write("etc/web.d/10-a.env", "A=1\n");
        dir.write("etc/web.d/.hidden.env", "H=1\n");
        dir.write("etc/web.d/notes.txt", "N=1\n");
        dir.link("etc/masked.env", "/dev/null");
        let read = |path: &str, optional| {
            let file = EnvironmentFile {
                path: path.into(),
                optional,
            };
            read_environment_file(root, &file, &origin())
        };
        let names =
            |c: &EnvironmentFileContents| c.vars.iter().map(|v| v.name.clone()).collect::<Vec<_>>();

        let ssh = read("/etc/default/ssh", false).unwrap();
        assert_eq!(ssh.vars[0].value, "-4");
        assert_eq!(
            ssh.vars[0].origin.to_string(),
            format!("{}:1", root.join("etc/default/ssh").display())
        );
        assert_eq!(names(&read("/etc/web.d/*.env", false).unwrap()), ["A", "B"]);
        assert_eq!(
            names(&read("/etc/w[a-e]b.d/?0-[!b]*", false).unwrap()),
            ["A"]
        );
        assert!(read("/etc/masked.env", false).unwrap().vars.is_empty());

        // Missing: an error, or a skip when optional.
        let e = read("/etc/default/none", false).unwrap_err();
        assert!(matches!(e, Error::MissingEnvironmentFile { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("/u/a.service:7: the environment file "),
            "{e}"
        );
        let skipped = read("/etc/default/none", true).unwrap();
        assert!(skipped.vars.is_empty());
        assert!(matches!(
            skipped.skipped[..],
            [Error::MissingEnvironmentFile { .. }]
        ));
        assert_eq!(read("/etc/nothing/*", true).unwrap().skipped.len(), 1);
        assert!(read("/etc/nothing/*", false).is_err());
    }

    #[test]
    fn glob_matching() {
        for (pattern, name, expected) in [
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*.env", "x.env", true),
            ("*.env", "x.env.bak", false),
            ("?x", "ax", true),
            ("?x", "x", false),
            ("[abc]", "b", true),
            ("[!abc]", "b", false),
            ("[^a-c]z", "dz", true),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "", true),
            ("[ab", "[ab", true),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} {name}");
        }
    }
}
