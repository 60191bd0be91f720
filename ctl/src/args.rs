//! The command line, parsed by hand: global options, a command and its arguments become an
//! [`Invocation`]; anything else is a [`UsageError`] (exit 2). The help texts live here too, in
//! one table, so the parser and the help cannot disagree about which commands exist.

#[cfg(test)]
mod man;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where the manager listens unless `--control` or `$STEWARD_CONTROL` says otherwise.
pub const DEFAULT_CONTROL: &str = "/run/steward/control";

/// The first line of every usage message.
const SYNOPSIS: &str = "usage: stewardctl [--control PATH] [--json] COMMAND [ARGS]";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Talk to the manager.
    Run(Invocation),
    /// `list`: ask for the status of every service (the invocation's command) and print only
    /// their names.
    List(Invocation),
    /// Print this text and exit 0.
    Help(String),
    /// `--version`: the client's own version, no manager needed.
    ClientVersion,
    /// `import`: read systemd units and print a config; no manager needed.
    Import(stewardctl::import::Request),
}

/// A command and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The manager's control socket.
    pub control: PathBuf,
    /// `--json`: print JSON instead of text.
    pub json: bool,
    /// What to ask.
    pub command: Command,
}

use steward_protocol::control::Fault;
/// One command with its arguments, already checked: exactly the request the manager gets, so
/// the client has no second description of the commands to keep in step.
pub use steward_protocol::control::Request as Command;

/// A command line we refuse: the reason, and the usage lines to print under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// What is wrong, for `stewardctl: MESSAGE`.
    pub message: String,
    /// The general synopsis, or the offending command's.
    pub usage: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stewardctl: {}\n{}", self.message, self.usage)
    }
}

impl UsageError {
    fn general(message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            usage: format!("{SYNOPSIS}\nRun 'stewardctl --help' for the list of commands."),
        }
    }

    fn command(kind: Kind, message: impl Into<String>) -> UsageError {
        let spec = spec(kind);
        UsageError {
            message: message.into(),
            usage: format!(
                "{}\nRun 'stewardctl {} --help' for more.",
                command_synopsis(spec),
                spec.name
            ),
        }
    }
}

/// The commands, without their arguments: what the help table is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Status,
    List,
    Start,
    Stop,
    Restart,
    Logs,
    Reload,
    Reexec,
    Shutdown,
    Poweroff,
    Reboot,
    Version,
    Import,
    Debug,
}

/// A command as the help shows it.
struct Spec {
    kind: Kind,
    name: &'static str,
    args: &'static str,
    /// One line for the command list.
    summary: &'static str,
    /// A paragraph for `stewardctl COMMAND --help`.
    details: &'static str,
    /// Its own options, as (flags, description).
    options: &'static [(&'static str, &'static str)],
}

const COMMANDS: &[Spec] = &[
    Spec {
        kind: Kind::Status,
        name: "status",
        args: "[NAME...]",
        summary: "show every service, or the named ones in detail",
        details: "A table of NAME STATE PID UPTIME RESTARTS MEMORY; accept instances show as \
                  NAME@N.\nFor named services also their sockets, the accept instances started, last \
                  exit, last failure and last log lines.\nRESTARTS counts automatic restarts since the service was last \
                  started by hand or at boot.",
        options: &[],
    },
    Spec {
        kind: Kind::List,
        name: "list",
        args: "",
        summary: "print the name of every service, one per line",
        details: "Print the name of every service the manager has, one per line in config \
                  order; with --json, a JSON array of them.\nCheap enough for shell completion.",
        options: &[],
    },
    Spec {
        kind: Kind::Start,
        name: "start",
        args: "[--no-block] NAME...",
        summary: "start services",
        details: "Start the named services and what they require; a stopped lazy service gets \
                  its sockets re-armed.\nWaits until each is ready, printing a line as each \
                  settles; exits 1 naming the first that failed.",
        options: &[("--no-block", "return at once, without waiting")],
    },
    Spec {
        kind: Kind::Stop,
        name: "stop",
        args: "[--no-block] NAME...",
        summary: "stop services",
        details: "Stop the named services, and first what requires them; a lazy service's \
                  sockets are disarmed too (connections wait in the backlog).\nWaits until \
                  each is at rest.",
        options: &[("--no-block", "return at once, without waiting")],
    },
    Spec {
        kind: Kind::Restart,
        name: "restart",
        args: "[--no-block] NAME...",
        summary: "restart services",
        details: "Stop, then start the named services; what requires them is restarted once \
                  they are ready again.\nWaits until each is ready again.",
        options: &[("--no-block", "return at once, without waiting")],
    },
    Spec {
        kind: Kind::Logs,
        name: "logs",
        args: "NAME [-n N] [-f]",
        summary: "show a service's captured output",
        details: "Print the lines the service wrote, oldest first, as\n  \
                  TIMESTAMP NAME[PID] stdout|stderr: text\nWith --json, one JSON object per line.",
        options: &[
            (
                "-n, --lines N",
                "only the last N lines; more than the manager keeps in memory are read from \
                 the files of log_dir",
            ),
            ("-f, --follow", "keep printing new lines until interrupted"),
        ],
    },
    Spec {
        kind: Kind::Reload,
        name: "reload",
        args: "",
        summary: "re-read the config and apply the changes",
        details: "New services start, removed ones stop, changed ones restart, unchanged ones \
                  are not touched.\nA broken config changes nothing; its errors are printed \
                  and the exit status is 1.",
        options: &[],
    },
    Spec {
        kind: Kind::Reexec,
        name: "reexec",
        args: "",
        summary: "replace the manager with the steward binary now on disk",
        details: "The manager re-executes itself, keeping every service, socket and counter.",
        options: &[],
    },
    Spec {
        kind: Kind::Shutdown,
        name: "shutdown",
        args: "",
        summary: "stop every service and make the manager exit",
        details: "Stop every service (SIGTERM, then SIGKILL after its stop_timeout), remove \
                  the socket files, and exit.",
        options: &[],
    },
    Spec {
        kind: Kind::Poweroff,
        name: "poweroff",
        args: "",
        summary: "as PID 1: stop everything and power off",
        details: "Stop every service, sync, and power off. Refused unless steward is PID 1.",
        options: &[],
    },
    Spec {
        kind: Kind::Reboot,
        name: "reboot",
        args: "",
        summary: "as PID 1: stop everything and reboot",
        details: "Stop every service, sync, and reboot. Refused unless steward is PID 1.",
        options: &[],
    },
    Spec {
        kind: Kind::Version,
        name: "version",
        args: "",
        summary: "show the client's and the manager's versions",
        details: "Print the client's version, then the manager's and its control protocol.",
        options: &[],
    },
    Spec {
        kind: Kind::Import,
        name: "import",
        args: "[--root DIR] [--unit-path DIR]... UNIT...",
        summary: "print a steward config for systemd unit files",
        details: "Read each UNIT (a name such as ssh.service, ssh.socket or getty@ttyS0.service, \
                  searched in /etc/systemd/system, /lib/systemd/system and \
                  /usr/lib/systemd/system under DIR; or a path) with its drop-ins and its \
                  socket or service, and print one steward config (TOML) for them on \
                  stdout.\nEvery directive appears as a comment naming its file and line, \
                  followed by the key it became; one that cannot be carried over is a \
                  `# not imported:` comment, and makes the exit status 1. An unreadable or \
                  malformed unit is an error naming the file and line: exit status 2. Needs no \
                  running manager.",
        options: &[
            ("--root DIR", "the system the units belong to (default /)"),
            (
                "--unit-path DIR",
                "also search DIR, before the system's directories (repeatable)",
            ),
        ],
    },
    Spec {
        kind: Kind::Debug,
        name: "debug",
        args: "panic|hang",
        summary: "for tests: make the manager panic, or stop its loop",
        details: "Only a manager built with the cargo feature fault-injection (never a release \
                  build) acts: `panic` panics in its loop (as PID 1 it recovers by re-executing \
                  itself), `hang` stops its loop for good without exiting. Any other manager \
                  refuses, and the exit status is 1.",
        options: &[],
    },
];

/// Options every command accepts.
const GLOBAL_OPTIONS: &[(&str, &str)] = &[
    (
        "--control PATH",
        "the manager's control socket (default: $STEWARD_CONTROL, else /run/steward/control)",
    ),
    ("--json", "print JSON instead of text"),
    ("-h, --help", "show help (after a command: that command's)"),
    ("--version", "show the client's version"),
];

fn spec(kind: Kind) -> &'static Spec {
    COMMANDS
        .iter()
        .find(|s| s.kind == kind)
        .expect("every kind has a spec")
}

fn command_synopsis(spec: &Spec) -> String {
    let line = format!("usage: stewardctl [--control PATH] [--json] {}", spec.name);
    if spec.args.is_empty() {
        line
    } else {
        format!("{line} {}", spec.args)
    }
}

/// Two-column lines, the second column aligned.
fn aligned(rows: &[(String, &str)]) -> String {
    let width = rows.iter().map(|(left, _)| left.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(left, right)| format!("  {left:width$}   {right}\n"))
        .collect()
}

/// `stewardctl --help`.
pub fn general_help() -> String {
    let mut commands: Vec<(String, &str)> = COMMANDS
        .iter()
        .map(|s| {
            (
                format!("{} {}", s.name, s.args).trim_end().to_string(),
                s.summary,
            )
        })
        .collect();
    commands.push(("help [COMMAND]".into(), "show this help, or a command's"));
    let options: Vec<(String, &str)> = GLOBAL_OPTIONS
        .iter()
        .map(|(flags, what)| (flags.to_string(), *what))
        .collect();
    format!(
        "stewardctl: control a running steward service manager\n\n{SYNOPSIS}\n\ncommands:\n{}\n\
         options:\n{}\nexit status: 0 done, 1 refused or failed, 2 usage error, \
         3 no manager at the control socket\n",
        aligned(&commands),
        aligned(&options)
    )
}

/// `stewardctl COMMAND --help`.
fn command_help(kind: Kind) -> String {
    let spec = spec(kind);
    let options: Vec<(String, &str)> = spec
        .options
        .iter()
        .chain(&GLOBAL_OPTIONS[..2])
        .chain(&[("-h, --help", "show this help")])
        .map(|(flags, what)| (flags.to_string(), *what))
        .collect();
    format!(
        "{}\n\n{}\n\noptions:\n{}",
        command_synopsis(spec),
        spec.details,
        aligned(&options)
    )
}

/// The parser's state: the arguments left, and the global options seen so far.
struct Parser<I> {
    args: I,
    control: Option<PathBuf>,
    json: bool,
}

impl<I: Iterator<Item = OsString>> Parser<I> {
    /// Takes a global option (`--json`, `--control PATH`, `--control=PATH`); false if `arg` is
    /// not one. They are accepted after the command too: `stewardctl status --json` is what
    /// people type. Raw bytes, because a socket path need not be UTF-8.
    fn global(&mut self, arg: &OsStr) -> Result<bool, UsageError> {
        let bytes = arg.as_bytes();
        let path = if bytes == b"--json" {
            self.json = true;
            return Ok(true);
        } else if bytes == b"--control" {
            self.args
                .next()
                .ok_or_else(|| UsageError::general("--control needs a path"))?
        } else if let Some(value) = bytes.strip_prefix(b"--control=") {
            OsStr::from_bytes(value).to_os_string()
        } else {
            return Ok(false);
        };
        if path.is_empty() {
            return Err(UsageError::general("--control needs a path"));
        }
        self.control = Some(PathBuf::from(path));
        Ok(true)
    }
}

fn utf8(arg: OsString) -> Result<String, UsageError> {
    arg.into_string().map_err(|arg| {
        UsageError::general(format!(
            "argument is not valid UTF-8: {}",
            arg.to_string_lossy()
        ))
    })
}

/// Parses the arguments after the program name. `env_control` is `$STEWARD_CONTROL`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env_control: Option<OsString>,
) -> Result<Parsed, UsageError> {
    let mut parser = Parser {
        args: args.into_iter(),
        control: None,
        json: false,
    };
    // Global options, up to the command word.
    let kind = loop {
        let Some(arg) = parser.args.next() else {
            return Err(UsageError::general("no command given"));
        };
        if parser.global(&arg)? {
            continue;
        }
        let arg = utf8(arg)?;
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help(general_help())),
            "--version" => return Ok(Parsed::ClientVersion),
            "help" => return help_command(parser.args),
            option if option.starts_with('-') => {
                return Err(UsageError::general(format!("unknown option: {option}")));
            }
            word => match COMMANDS.iter().find(|s| s.name == word) {
                Some(spec) => break spec.kind,
                None => return Err(UsageError::general(format!("unknown command: {word}"))),
            },
        }
    };

    if kind == Kind::Import {
        return import_arguments(parser.args);
    }

    // The command's own arguments; global options may still appear.
    let mut words = Vec::new();
    let mut lines = None;
    let mut follow = false;
    let mut wait = true;
    let mut only_words = false;
    while let Some(arg) = parser.args.next() {
        if !only_words && parser.global(&arg)? {
            continue;
        }
        let arg = utf8(arg)?;
        if only_words || arg == "-" || !arg.starts_with('-') {
            words.push(arg);
            continue;
        }
        match (kind, arg.as_str()) {
            (_, "--") => only_words = true,
            (_, "-h" | "--help") => return Ok(Parsed::Help(command_help(kind))),
            (Kind::Logs, "-f" | "--follow") => follow = true,
            (Kind::Start | Kind::Stop | Kind::Restart, "--no-block") => wait = false,
            (Kind::Logs, "-n" | "--lines") => {
                let value = parser
                    .args
                    .next()
                    .ok_or_else(|| UsageError::command(kind, format!("{arg} needs a number")))?;
                lines = Some(line_count(kind, &utf8(value)?)?);
            }
            (Kind::Logs, option) if option.starts_with("--lines=") => {
                lines = Some(line_count(kind, &option["--lines=".len()..])?);
            }
            (Kind::Logs, option) if option.starts_with("-n") => {
                lines = Some(line_count(kind, &option["-n".len()..])?);
            }
            (_, option) => {
                return Err(UsageError::command(
                    kind,
                    format!("unknown option for {}: {option}", spec(kind).name),
                ));
            }
        }
    }

    let command = match kind {
        Kind::Status => Command::Status { names: words },
        Kind::List => no_words(kind, words, Command::Status { names: vec![] })?,
        Kind::Start => Command::Start {
            names: some_names(kind, words)?,
            wait,
        },
        Kind::Stop => Command::Stop {
            names: some_names(kind, words)?,
            wait,
        },
        Kind::Restart => Command::Restart {
            names: some_names(kind, words)?,
            wait,
        },
        Kind::Logs => {
            let mut words = words.into_iter();
            let name = words
                .next()
                .ok_or_else(|| UsageError::command(kind, "logs needs a service name"))?;
            if let Some(extra) = words.next() {
                return Err(UsageError::command(
                    kind,
                    format!("logs takes one service name, not also {extra}"),
                ));
            }
            Command::Logs {
                name,
                lines,
                follow,
            }
        }
        Kind::Reload => no_words(kind, words, Command::Reload)?,
        Kind::Reexec => no_words(kind, words, Command::Reexec)?,
        Kind::Shutdown => no_words(kind, words, Command::Shutdown)?,
        Kind::Poweroff => no_words(kind, words, Command::Poweroff)?,
        Kind::Reboot => no_words(kind, words, Command::Reboot)?,
        Kind::Version => no_words(kind, words, Command::Version)?,
        Kind::Import => unreachable!("import's arguments are parsed above"),
        Kind::Debug => {
            let fault = match words.as_slice() {
                [word] if word == "panic" => Fault::Panic,
                [word] if word == "hang" => Fault::Hang,
                _ => {
                    return Err(UsageError::command(
                        kind,
                        "debug takes one word: panic or hang",
                    ));
                }
            };
            Command::Debug(fault)
        }
    };
    let control = parser
        .control
        .or_else(|| env_control.filter(|p| !p.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL));
    let invocation = Invocation {
        control,
        json: parser.json,
        command,
    };
    match kind {
        Kind::List => Ok(Parsed::List(invocation)),
        _ => Ok(Parsed::Run(invocation)),
    }
}

/// `import`'s arguments: its options and the units; no global option applies to it.
fn import_arguments(args: impl Iterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let kind = Kind::Import;
    let mut request = stewardctl::import::Request::default();
    let mut args = args.peekable();
    let mut only_units = false;
    while let Some(arg) = args.next() {
        let arg_text = arg.to_string_lossy().into_owned();
        if only_units || !arg_text.starts_with('-') || arg_text == "-" {
            request.units.push(utf8(arg)?);
            continue;
        }
        let (option, inline) = match arg_text.split_once('=') {
            Some((option, value)) => (option.to_string(), Some(OsString::from(value))),
            None => (arg_text.clone(), None),
        };
        match option.as_str() {
            "--" => only_units = true,
            "-h" | "--help" => return Ok(Parsed::Help(command_help(kind))),
            "--root" | "--unit-path" => {
                let value = match inline {
                    Some(v) => v,
                    None => args.next().ok_or_else(|| {
                        UsageError::command(kind, format!("{option} needs a directory"))
                    })?,
                };
                if value.is_empty() {
                    return Err(UsageError::command(
                        kind,
                        format!("{option} needs a directory"),
                    ));
                }
                match option.as_str() {
                    "--root" => request.root = PathBuf::from(value),
                    _ => request.unit_path.push(PathBuf::from(value)),
                }
            }
            _ => {
                return Err(UsageError::command(
                    kind,
                    format!("unknown option for import: {arg_text}"),
                ));
            }
        }
    }
    if request.units.is_empty() {
        return Err(UsageError::command(kind, "import needs at least one unit"));
    }
    Ok(Parsed::Import(request))
}

/// `stewardctl help [COMMAND]`.
fn help_command(mut args: impl Iterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let Some(word) = args.next() else {
        return Ok(Parsed::Help(general_help()));
    };
    let word = utf8(word)?;
    if let Some(extra) = args.next() {
        return Err(UsageError::general(format!(
            "help takes one command, not also {}",
            extra.to_string_lossy()
        )));
    }
    match COMMANDS.iter().find(|s| s.name == word) {
        Some(spec) => Ok(Parsed::Help(command_help(spec.kind))),
        None if word == "help" => Ok(Parsed::Help(general_help())),
        None => Err(UsageError::general(format!("unknown command: {word}"))),
    }
}

fn line_count(kind: Kind, value: &str) -> Result<u32, UsageError> {
    value.parse().map_err(|_| {
        UsageError::command(
            kind,
            format!(
                "-n needs a number of lines (0 to {}), not {value:?}",
                u32::MAX
            ),
        )
    })
}

fn some_names(kind: Kind, words: Vec<String>) -> Result<Vec<String>, UsageError> {
    if words.is_empty() {
        Err(UsageError::command(
            kind,
            format!("{} needs at least one service name", spec(kind).name),
        ))
    } else {
        Ok(words)
    }
}

fn no_words(kind: Kind, words: Vec<String>, command: Command) -> Result<Command, UsageError> {
    match words.first() {
        None => Ok(command),
        Some(word) => Err(UsageError::command(
            kind,
            format!("{} takes no arguments, got {word}", spec(kind).name),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: Option<&str>) -> Result<Parsed, UsageError> {
        parse(args.iter().map(OsString::from), env.map(OsString::from))
    }

    fn run(args: &[&str]) -> Invocation {
        match parse_with(args, None) {
            Ok(Parsed::Run(invocation)) => invocation,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn command(args: &[&str]) -> Command {
        run(args).command
    }

    fn usage_error(args: &[&str]) -> UsageError {
        match parse_with(args, None) {
            Err(e) => e,
            Ok(other) => panic!("{args:?} was accepted as {other:?}"),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn every_command() {
        assert_eq!(command(&["status"]), Command::Status { names: vec![] });
        assert_eq!(
            command(&["status", "web", "db"]),
            Command::Status {
                names: names(&["web", "db"])
            }
        );
        assert_eq!(
            command(&["start", "web"]),
            Command::Start {
                names: names(&["web"]),
                wait: true,
            }
        );
        assert_eq!(
            command(&["stop", "a", "--no-block", "b"]),
            Command::Stop {
                names: names(&["a", "b"]),
                wait: false,
            }
        );
        assert_eq!(
            command(&["restart", "--no-block", "web"]),
            Command::Restart {
                names: names(&["web"]),
                wait: false,
            }
        );
        assert_eq!(
            command(&["logs", "web"]),
            Command::Logs {
                name: "web".into(),
                lines: None,
                follow: false
            }
        );
        assert_eq!(command(&["reload"]), Command::Reload);
        assert_eq!(command(&["reexec"]), Command::Reexec);
        assert_eq!(command(&["shutdown"]), Command::Shutdown);
        assert_eq!(command(&["poweroff"]), Command::Poweroff);
        assert_eq!(command(&["reboot"]), Command::Reboot);
        assert_eq!(command(&["version"]), Command::Version);
        match parse_with(&["--json", "list"], Some("/env")) {
            Ok(Parsed::List(inv)) => {
                assert_eq!(inv.command, Command::Status { names: vec![] });
                assert_eq!(inv.control, PathBuf::from("/env"));
                assert!(inv.json);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn logs_options_in_every_spelling() {
        let expect = |lines, follow| Command::Logs {
            name: "web".into(),
            lines,
            follow,
        };
        assert_eq!(command(&["logs", "web", "-n", "5"]), expect(Some(5), false));
        assert_eq!(command(&["logs", "-n", "5", "web"]), expect(Some(5), false));
        assert_eq!(command(&["logs", "web", "-n5"]), expect(Some(5), false));
        assert_eq!(
            command(&["logs", "web", "--lines", "0"]),
            expect(Some(0), false)
        );
        assert_eq!(
            command(&["logs", "web", "--lines=7"]),
            expect(Some(7), false)
        );
        assert_eq!(command(&["logs", "web", "-f"]), expect(None, true));
        assert_eq!(
            command(&["logs", "-f", "web", "--follow", "-n", "2"]),
            expect(Some(2), true)
        );
        assert_eq!(
            command(&["logs", "--", "-odd"]),
            Command::Logs {
                name: "-odd".into(),
                lines: None,
                follow: false
            }
        );
    }

    #[test]
    fn global_options_before_and_after_the_command() {
        let inv = run(&["--control", "/tmp/c", "--json", "status"]);
        assert_eq!(inv.control, PathBuf::from("/tmp/c"));
        assert!(inv.json);
        let inv = run(&["--control=/tmp/d", "reload"]);
        assert_eq!(inv.control, PathBuf::from("/tmp/d"));
        assert!(!inv.json);
        let inv = run(&["status", "web", "--json", "--control", "/tmp/e"]);
        assert_eq!(inv.control, PathBuf::from("/tmp/e"));
        assert!(inv.json);
        assert_eq!(
            inv.command,
            Command::Status {
                names: names(&["web"])
            }
        );
    }

    #[test]
    fn control_defaults_to_the_environment_then_the_fixed_path() {
        let control = |args: &[&str], env| match parse_with(args, env) {
            Ok(Parsed::Run(inv)) => inv.control,
            other => panic!("{other:?}"),
        };
        assert_eq!(control(&["status"], None), PathBuf::from(DEFAULT_CONTROL));
        assert_eq!(
            control(&["status"], Some("")),
            PathBuf::from(DEFAULT_CONTROL)
        );
        assert_eq!(control(&["status"], Some("/env")), PathBuf::from("/env"));
        assert_eq!(
            control(&["--control", "/flag", "status"], Some("/env")),
            PathBuf::from("/flag")
        );
    }

    #[test]
    fn help_and_version() {
        for args in [&["--help"][..], &["-h"], &["help"], &["help", "help"]] {
            match parse_with(args, None) {
                Ok(Parsed::Help(text)) => {
                    for spec in COMMANDS {
                        assert!(text.contains(spec.name), "{args:?}: {text}");
                        assert!(text.contains(spec.summary), "{args:?}: {text}");
                    }
                    assert!(text.contains("--control PATH"));
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        for args in [
            &["logs", "--help"][..],
            &["help", "logs"],
            &["logs", "web", "-h"],
        ] {
            match parse_with(args, None) {
                Ok(Parsed::Help(text)) => {
                    assert!(text.starts_with("usage: stewardctl"), "{text}");
                    assert!(text.contains("logs NAME [-n N] [-f]"), "{text}");
                    assert!(text.contains("-n, --lines N"), "{text}");
                    assert!(text.contains("-f, --follow"), "{text}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        match parse_with(&["status", "--help"], None) {
            Ok(Parsed::Help(text)) => assert!(text.contains("status [NAME...]"), "{text}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_with(&["--version"], None), Ok(Parsed::ClientVersion));
    }

    #[test]
    fn usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["--json"], "no command given"),
            (&["frobnicate"], "unknown command: frobnicate"),
            (&["--frob", "status"], "unknown option: --frob"),
            (&["--control"], "--control needs a path"),
            (&["--control="], "--control needs a path"),
            (&["status", "-x"], "unknown option for status: -x"),
            (&["start"], "start needs at least one service name"),
            (&["stop"], "stop needs at least one service name"),
            (
                &["restart", "--json"],
                "restart needs at least one service name",
            ),
            (&["logs"], "logs needs a service name"),
            (&["logs", "-f"], "logs needs a service name"),
            (
                &["logs", "a", "b"],
                "logs takes one service name, not also b",
            ),
            (&["logs", "web", "-n"], "-n needs a number"),
            (&["logs", "web", "-n", "x"], "-n needs a number of lines"),
            (&["logs", "web", "-n", "-1"], "-n needs a number of lines"),
            (
                &["logs", "web", "-n", "99999999999"],
                "-n needs a number of lines",
            ),
            (&["logs", "web", "--lines="], "-n needs a number of lines"),
            (&["logs", "web", "-x"], "unknown option for logs: -x"),
            (&["start", "web", "-f"], "unknown option for start: -f"),
            (&["status", "-n", "3"], "unknown option for status: -n"),
            (&["reload", "now"], "reload takes no arguments, got now"),
            (&["reexec", "x"], "reexec takes no arguments"),
            (&["shutdown", "x"], "shutdown takes no arguments"),
            (&["poweroff", "x"], "poweroff takes no arguments"),
            (&["reboot", "x"], "reboot takes no arguments"),
            (&["version", "x"], "version takes no arguments"),
            (&["list", "x"], "list takes no arguments"),
            (&["help", "frob"], "unknown command: frob"),
            (&["help", "status", "logs"], "help takes one command"),
        ];
        for (args, expected) in cases {
            let e = usage_error(args);
            assert!(e.message.contains(expected), "{args:?}: {}", e.message);
            assert!(
                e.usage.starts_with("usage: stewardctl"),
                "{args:?}: {}",
                e.usage
            );
        }
        // A command's error shows that command's usage.
        assert!(
            usage_error(&["logs"])
                .usage
                .contains("logs NAME [-n N] [-f]")
        );
    }

    #[test]
    fn non_utf8_names_are_refused_but_paths_are_not() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'/', 0xff]);
        let parsed = parse(
            [
                OsString::from("--control"),
                odd.clone(),
                OsString::from("status"),
            ],
            None,
        );
        match parsed {
            Ok(Parsed::Run(inv)) => assert_eq!(inv.control, PathBuf::from(odd.clone())),
            other => panic!("{other:?}"),
        }
        let parsed = parse([OsString::from("start"), odd], None);
        assert!(parsed.unwrap_err().message.contains("not valid UTF-8"));
    }
}
