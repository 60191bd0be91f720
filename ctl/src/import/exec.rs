//! Command lines of `ExecStart=` and the other `Exec*=` directives (systemd.service(5),
//! "Command lines"): words by systemd's quoting, the `-@:+!` prefixes, `;` between commands,
//! specifiers in every word, and where `$VAR` / `${VAR}` will be substituted when it runs.

use std::fmt;
use std::ops::Range;

use super::specifiers::{SpecifierError, Specifiers};
use super::words::{self, Cursor, Rules, WordError};

/// The longest path and path component Linux takes (`PATH_MAX` less its NUL, `NAME_MAX`).
const PATH_MAX: usize = 4095;
const NAME_MAX: usize = 255;

/// How a command's credentials and sandbox apply (`+`, `!`, `!!`; at most one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privileges {
    /// No prefix: `User=`, `Group=` and the sandboxing apply.
    #[default]
    Sandboxed,
    /// `+`: full privileges, neither credentials nor sandboxing apply.
    Full,
    /// `!`: the sandboxing applies but the user and group are not changed.
    KeepCredentials,
    /// `!!`: like `!` on a kernel without ambient capabilities, no effect on one with them.
    KeepCredentialsWithoutAmbient,
}

/// The prefixes before the executable, in any order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prefixes {
    /// `-`: a failing exit is recorded but counts as success.
    pub ignore_failure: bool,
    /// `@`: the word after the executable is `argv[0]`.
    pub argv0: bool,
    /// `:`: no `$VAR` substitution.
    pub no_substitution: bool,
    /// `+`, `!`, `!!`.
    pub privileges: Privileges,
}

/// What a `$` reference is replaced by when the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// `$NAME` as a whole argument: the value split at blanks (quotes respected), zero or more
    /// arguments; none when the variable is not set.
    Words {
        /// The variable.
        name: String,
    },
    /// `${NAME}` anywhere in an argument: the value as it is, empty when not set.
    Value {
        /// The variable (as written: systemd looks up whatever is between the braces).
        name: String,
    },
    /// `$$`: a literal `$`.
    Dollar,
}

/// One `$` reference in an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitution {
    /// The index in [`Command::argv`].
    pub arg: usize,
    /// Where it is in that argument, in bytes.
    pub range: Range<usize>,
    /// What replaces it.
    pub expansion: Expansion,
}

/// One command of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The executable: an absolute path, or a bare name systemd looks up in its fixed search
    /// path (`/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin`, `/sbin:/bin` when split).
    pub path: String,
    /// The arguments, `argv[0]` first (the executable as written unless `@` gives another).
    pub argv: Vec<String>,
    /// The prefixes.
    pub prefixes: Prefixes,
    /// Every `$` reference that will be substituted, in order; none with the `:` prefix.
    pub substitutions: Vec<Substitution>,
    /// Whether an unknown escape sequence was kept as written (systemd warns about it).
    pub kept_escape: bool,
}

/// Why a command line is not valid; systemd refuses such a line (or, with `-`, ignores it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// It does not split into words.
    Syntax(WordError),
    /// A specifier in it cannot be resolved.
    Specifier(SpecifierError),
    /// Prefixes and nothing else.
    EmptyPath,
    /// `@` with no `argv[0]` after the executable.
    NoArgv0,
    /// An executable with quotes, backslashes or control characters.
    UnsafePath(String),
    /// An executable that ends in `/`.
    Directory(String),
    /// Neither an absolute path nor a file name (too long, `.`, `..`, a relative path).
    InvalidPath(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Syntax(e) => write!(f, "the command line has {e}"),
            ExecError::Specifier(e) => write!(f, "{e}"),
            ExecError::EmptyPath => write!(f, "the command line has prefixes but no executable"),
            ExecError::NoArgv0 => write!(f, "'@' needs an argv[0] after the executable"),
            ExecError::UnsafePath(p) => write!(
                f,
                "the executable {p:?} contains quotes, backslashes or control characters"
            ),
            ExecError::Directory(p) => write!(f, "the executable {p:?} is a directory"),
            ExecError::InvalidPath(p) => write!(
                f,
                "the executable {p:?} is neither an absolute path nor a file name"
            ),
        }
    }
}

impl std::error::Error for ExecError {}

impl From<WordError> for ExecError {
    fn from(e: WordError) -> ExecError {
        ExecError::Syntax(e)
    }
}

impl From<SpecifierError> for ExecError {
    fn from(e: SpecifierError) -> ExecError {
        ExecError::Specifier(e)
    }
}

/// The commands of one `Exec*=` value. Empty for an empty value (a reset). Commands are
/// separated by a lone `;` (deprecated in systemd's documentation since v257, still honoured);
/// `\;` is a literal `;` argument.
pub fn parse(value: &str, specifiers: &Specifiers) -> Result<Vec<Command>, ExecError> {
    let mut cursor = Cursor::new(value);
    let mut commands = Vec::new();
    while let Some(first) = cursor.next_word(Rules::KeepUnknownEscapes)? {
        // A lone ";" where a command would start separates nothing from the next one.
        if first.text == ";" {
            continue;
        }
        let mut kept_escape = first.kept_escape;
        let (prefixes, rest) = prefixes(&first.text);
        let written = specifiers.expand(rest)?;
        check_path(&written)?;
        let mut argv = Vec::new();
        if !prefixes.argv0 {
            argv.push(written.clone());
        }
        loop {
            let rest = cursor.rest();
            if is_token(rest, ";") {
                cursor.skip(1);
                break;
            }
            // Both are looked for in the raw text: a quoted ";", or one after a doubled
            // backslash, is an ordinary word.
            if is_token(rest, "\\;") {
                cursor.skip(2);
                argv.push(";".to_string());
                continue;
            }
            let Some(word) = cursor.next_word(Rules::KeepUnknownEscapes)? else {
                break;
            };
            kept_escape |= word.kept_escape;
            argv.push(specifiers.expand(&word.text)?);
        }
        if argv.is_empty() {
            return Err(ExecError::NoArgv0);
        }
        let substitutions = if prefixes.no_substitution {
            Vec::new()
        } else {
            substitutions(&argv)
        };
        commands.push(Command {
            path: simplify(&written),
            argv,
            prefixes,
            substitutions,
            kept_escape,
        });
    }
    Ok(commands)
}

/// Whether `rest` starts with `token` standing alone, followed by a blank or the end.
fn is_token(rest: &str, token: &str) -> bool {
    rest.strip_prefix(token)
        .is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t', '\n', '\r']))
}

/// Splits the prefixes off the first word, with systemd's rules: each at most once, and only
/// one of `+`, `!`, `!!` (a second `!` turns `!` into `!!`).
fn prefixes(word: &str) -> (Prefixes, &str) {
    let mut p = Prefixes::default();
    let mut rest = word;
    loop {
        let privileged = p.privileges != Privileges::Sandboxed;
        match rest.as_bytes().first() {
            Some(b'-') if !p.ignore_failure => p.ignore_failure = true,
            Some(b'@') if !p.argv0 => p.argv0 = true,
            Some(b':') if !p.no_substitution => p.no_substitution = true,
            Some(b'+') if !privileged => p.privileges = Privileges::Full,
            Some(b'!') if !privileged => p.privileges = Privileges::KeepCredentials,
            Some(b'!') if p.privileges == Privileges::KeepCredentials => {
                p.privileges = Privileges::KeepCredentialsWithoutAmbient;
            }
            _ => return (p, rest),
        }
        rest = &rest[1..];
    }
}

/// systemd's checks on the executable, after its specifiers are resolved.
fn check_path(path: &str) -> Result<(), ExecError> {
    if path.is_empty() {
        return Err(ExecError::EmptyPath);
    }
    if path
        .bytes()
        .any(|b| b < b' ' || matches!(b, 0x7f | b'"' | b'\'' | b'\\'))
    {
        return Err(ExecError::UnsafePath(path.to_string()));
    }
    if path.ends_with('/') {
        return Err(ExecError::Directory(path.to_string()));
    }
    let valid = if path.starts_with('/') {
        path.len() <= PATH_MAX && path.split('/').all(|part| part.len() <= NAME_MAX)
    } else {
        !path.contains('/') && path != "." && path != ".." && path.len() <= NAME_MAX
    };
    if !valid {
        return Err(ExecError::InvalidPath(path.to_string()));
    }
    Ok(())
}

/// The path with doubled slashes and `.` components removed, as systemd's `path_simplify`.
fn simplify(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Where `$` references are in the arguments, as systemd's `replace_env_argv` will find them.
fn substitutions(argv: &[String]) -> Vec<Substitution> {
    let mut out = Vec::new();
    for (arg, text) in argv.iter().enumerate() {
        let bytes = text.as_bytes();
        // A whole argument `$NAME` (not `${` or `$$`) is split into words.
        if bytes.first() == Some(&b'$') && !matches!(bytes.get(1), Some(b'{' | b'$')) {
            out.push(Substitution {
                arg,
                range: 0..text.len(),
                expansion: Expansion::Words {
                    name: text[1..].to_string(),
                },
            });
            continue;
        }
        let mut at = 0;
        while let Some(found) = text[at..].find('$') {
            let start = at + found;
            match bytes.get(start + 1) {
                Some(b'$') => {
                    out.push(Substitution {
                        arg,
                        range: start..start + 2,
                        expansion: Expansion::Dollar,
                    });
                    at = start + 2;
                }
                Some(b'{') => match text[start + 2..].find('}') {
                    Some(len) => {
                        let end = start + 2 + len;
                        out.push(Substitution {
                            arg,
                            range: start..end + 1,
                            expansion: Expansion::Value {
                                name: text[start + 2..end].to_string(),
                            },
                        });
                        at = end + 1;
                    }
                    // An unclosed `${` stays as written.
                    None => break,
                },
                _ => at = start + 1,
            }
        }
    }
    out
}

impl Command {
    /// The arguments as systemd will pass them, given the variables' values (`None`: not set).
    pub fn expand(&self, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut out = Vec::new();
        // The substitutions are in argument order: each argument takes the run that is its own.
        let mut rest = self.substitutions.as_slice();
        for (i, arg) in self.argv.iter().enumerate() {
            let count = rest.iter().take_while(|s| s.arg == i).count();
            let (subs, after) = rest.split_at(count);
            rest = after;
            if let [
                Substitution {
                    expansion: Expansion::Words { name },
                    ..
                },
            ] = subs
            {
                let value = lookup(name).unwrap_or_default();
                // Relaxed splitting cannot fail.
                let split = words::split(&value, Rules::Relaxed).unwrap_or_default();
                out.extend(split.into_iter().map(|w| w.text));
                continue;
            }
            let mut text = String::new();
            let mut at = 0;
            for sub in subs {
                text.push_str(&arg[at..sub.range.start]);
                match &sub.expansion {
                    Expansion::Dollar => text.push('$'),
                    Expansion::Value { name } | Expansion::Words { name } => {
                        text.push_str(&lookup(name).unwrap_or_default());
                    }
                }
                at = sub.range.end;
            }
            text.push_str(&arg[at..]);
            out.push(text);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::name::UnitName;

    fn specifiers() -> Specifiers {
        Specifiers::new(&UnitName::parse("getty@ttyS0.service").unwrap())
    }

    fn one(value: &str) -> Command {
        let mut commands = parse(value, &specifiers()).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(commands.len(), 1, "{value}");
        commands.remove(0)
    }

    fn err(value: &str) -> ExecError {
        parse(value, &specifiers()).unwrap_err()
    }

    #[test]
    fn real_command_lines() {
        let c = one(r"-/sbin/agetty -o '-p -- \\u' --noclear - $TERM");
        assert_eq!(c.path, "/sbin/agetty");
        assert_eq!(
            c.argv,
            ["/sbin/agetty", "-o", r"-p -- \u", "--noclear", "-", "$TERM"]
        );
        assert!(c.prefixes.ignore_failure);
        assert_eq!(
            c.substitutions,
            [Substitution {
                arg: 5,
                range: 0..5,
                expansion: Expansion::Words {
                    name: "TERM".into()
                }
            }]
        );
        let c = one("/usr/sbin/sshd -D $SSHD_OPTS");
        assert_eq!(c.prefixes, Prefixes::default());
        assert_eq!(c.argv, ["/usr/sbin/sshd", "-D", "$SSHD_OPTS"]);
    }

    #[test]
    fn every_prefix() {
        let p = |v: &str| one(v).prefixes;
        assert_eq!(p("+/bin/x").privileges, Privileges::Full);
        assert_eq!(p("!/bin/x").privileges, Privileges::KeepCredentials);
        assert_eq!(
            p("!!/bin/x").privileges,
            Privileges::KeepCredentialsWithoutAmbient
        );
        let all = p("-:!!/bin/x");
        assert!(all.ignore_failure && all.no_substitution);
        assert_eq!(all.privileges, Privileges::KeepCredentialsWithoutAmbient);
        let c = one("@-/bin/busybox sh -c true");
        assert!(c.prefixes.argv0 && c.prefixes.ignore_failure);
        assert_eq!(c.path, "/bin/busybox");
        assert_eq!(c.argv, ["sh", "-c", "true"]);
        // A repeated or second privilege prefix is not a prefix: it is part of the path.
        assert_eq!(err("--/bin/x"), ExecError::InvalidPath("-/bin/x".into()));
        assert_eq!(err("+!/bin/x"), ExecError::InvalidPath("!/bin/x".into()));
        assert_eq!(err("!!!/bin/x"), ExecError::InvalidPath("!/bin/x".into()));
    }

    #[test]
    fn the_man_page_semicolon_examples() {
        let commands = parse(r#"echo one ; echo "two two""#, &specifiers()).unwrap();
        let argvs: Vec<_> = commands.iter().map(|c| c.argv.clone()).collect();
        assert_eq!(argvs, [vec!["echo", "one"], vec!["echo", "two two"]]);
        assert_eq!(commands[0].path, "echo");
        // "echo / >/dev/null & \; \<newline> ls" after the continuation is joined.
        let c = one(r"echo / >/dev/null & \;   ls");
        assert_eq!(c.argv, ["echo", "/", ">/dev/null", "&", ";", "ls"]);
        // A quoted or doubled-backslash semicolon is an ordinary argument; so is one inside a
        // word.
        assert_eq!(one(r#"/bin/a ";" b;c"#).argv, ["/bin/a", ";", "b;c"]);
        assert_eq!(one(r"/bin/a \\;").argv, ["/bin/a", r"\;"]);
        // A leading, doubled or trailing separator is not a command.
        let commands = parse("; /bin/a ; ; /bin/b ;", &specifiers()).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(parse("", &specifiers()).unwrap(), []);
    }

    #[test]
    fn specifiers_in_every_word_after_unquoting() {
        let c = one("/sbin/agetty %I '%n' %%i");
        assert_eq!(
            c.argv,
            ["/sbin/agetty", "ttyS0", "getty@ttyS0.service", "%i"]
        );
        let c = one("/usr/lib/%p/helper");
        assert_eq!(c.path, "/usr/lib/getty/helper");
        assert!(matches!(
            err("/bin/x --host=%H"),
            ExecError::Specifier(SpecifierError::Unsupported { specifier: 'H', .. })
        ));
    }

    #[test]
    fn bad_executables() {
        assert_eq!(err("-"), ExecError::EmptyPath);
        assert_eq!(err("@/bin/x"), ExecError::NoArgv0);
        assert_eq!(err("/usr/bin/"), ExecError::Directory("/usr/bin/".into()));
        assert_eq!(err("bin/true"), ExecError::InvalidPath("bin/true".into()));
        assert_eq!(err(".."), ExecError::InvalidPath("..".into()));
        assert_eq!(
            err(r#"'/bin/a\"b'"#),
            ExecError::UnsafePath("/bin/a\"b".into())
        );
        assert_eq!(err(r"/bin/a\tb"), ExecError::UnsafePath("/bin/a\tb".into()));
        let long = format!("/{}", "a".repeat(NAME_MAX + 1));
        assert_eq!(err(&long), ExecError::InvalidPath(long.clone()));
        assert_eq!(
            err(r#"/bin/x "open"#),
            ExecError::Syntax(WordError::UnbalancedQuotes)
        );
    }

    #[test]
    fn paths_are_simplified_argv0_is_not() {
        let c = one("//usr//bin/./true x");
        assert_eq!(c.path, "/usr/bin/true");
        assert_eq!(c.argv[0], "//usr//bin/./true");
        assert_eq!(one("true").path, "true");
    }

    #[test]
    fn unknown_escapes_are_kept_and_flagged() {
        let c = one(r"/bin/grep \d+");
        assert_eq!(c.argv[1], r"\d+");
        assert!(c.kept_escape);
        assert!(!one(r"/bin/echo \t").kept_escape);
    }

    #[test]
    fn where_variables_are_substituted() {
        let c = one("/bin/echo $ONE ${TWO} a${X}b$$c $ --x=$Y ${open $$");
        let found: Vec<_> = c
            .substitutions
            .iter()
            .map(|s| (s.arg, s.range.clone(), s.expansion.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (1, 0..4, Expansion::Words { name: "ONE".into() }),
                (2, 0..6, Expansion::Value { name: "TWO".into() }),
                (3, 1..5, Expansion::Value { name: "X".into() }),
                (3, 6..8, Expansion::Dollar),
                (4, 0..1, Expansion::Words { name: "".into() }),
                (7, 0..2, Expansion::Dollar),
            ]
        );
        assert!(one(":/bin/echo $ONE ${TWO}").substitutions.is_empty());
    }

    #[test]
    fn expansion_as_the_man_page_shows_it() {
        // Environment="ONE=one" 'TWO=two two'; ExecStart=echo $ONE $TWO ${TWO}
        let env = |name: &str| match name {
            "ONE" => Some("one".to_string()),
            "TWO" => Some("two two".to_string()),
            _ => None,
        };
        assert_eq!(
            one("echo $ONE $TWO ${TWO}").expand(env),
            ["echo", "one", "two", "two", "two two"]
        );
        // Environment=ONE='one' "TWO='two two' too" THREE=
        let env = |name: &str| match name {
            "ONE" => Some("'one'".to_string()),
            "TWO" => Some("'two two' too".to_string()),
            "THREE" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            one("/bin/echo ${ONE} ${TWO} ${THREE}").expand(env),
            ["/bin/echo", "'one'", "'two two' too", ""]
        );
        assert_eq!(
            one("/bin/echo $ONE $TWO $THREE").expand(env),
            ["/bin/echo", "one", "two two", "too"]
        );
        assert_eq!(
            one("/bin/echo $UNSET ${UNSET}x 5$$").expand(env),
            ["/bin/echo", "x", "5$"]
        );
    }
}
