//! `stewardctl`, the control client of steward: parses the command line, sends one request over
//! the control socket, prints the answer and exits with the status SPEC §6 promises.
#![forbid(unsafe_code)]

mod args;
mod client;
mod logfiles;
mod render;

use std::env;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use steward_protocol::control::Reply;

use crate::args::{Command, Invocation, Parsed};
use crate::client::Replies;

/// The client's own version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How stewardctl ends; the numbers are the contract of SPEC §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Done.
    Done = 0,
    /// Refused or failed: the manager said no, or talking to it broke.
    Failed = 1,
    /// The command line is wrong.
    Usage = 2,
    /// No manager at that control socket.
    NoManager = 3,
}

/// Why a command did not succeed.
#[derive(Debug)]
enum Failure {
    /// Connecting, sending or reading failed.
    Client(client::Error),
    /// The manager closed the connection without a word.
    NoReply(PathBuf),
    /// The manager refused or failed; its reason.
    Refused(String),
    /// `reload` found a broken config; every error, as `FILE:LINE:COL: message`.
    ReloadFailed(Vec<String>),
    /// A reply of the wrong kind for the request.
    Unexpected(&'static str),
    /// Writing our own output failed.
    Output(io::Error),
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Failure {
        Failure::Client(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

impl Failure {
    fn unexpected(reply: &Reply) -> Failure {
        Failure::Unexpected(match reply {
            Reply::Done { .. } => "done",
            Reply::Error { .. } => "error",
            Reply::Status(_) => "status",
            Reply::Logs { .. } => "logs",
            Reply::Reloaded { .. } => "reloaded",
            Reply::ReloadFailed { .. } => "reload failed",
            Reply::Version { .. } => "version",
            Reply::Reexeced { .. } => "reexeced",
            Reply::Settled { .. } => "settled",
        })
    }

    fn exit(&self) -> Exit {
        match self {
            Failure::Client(e) if e.is_no_manager() => Exit::NoManager,
            // Whoever read our output went away (`stewardctl logs -f | head`): like any
            // filter, stop quietly.
            Failure::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Done,
            Failure::Client(_)
            | Failure::NoReply(_)
            | Failure::Refused(_)
            | Failure::ReloadFailed(_)
            | Failure::Unexpected(_)
            | Failure::Output(_) => Exit::Failed,
        }
    }

    /// The lines for stderr.
    fn message(&self) -> Vec<String> {
        match self {
            Failure::Client(e) => vec![format!("stewardctl: {e}")],
            Failure::NoReply(path) => vec![format!(
                "stewardctl: steward on {} closed the connection without replying",
                path.display()
            )],
            Failure::Refused(reason) => vec![format!("stewardctl: {reason}")],
            Failure::ReloadFailed(errors) => {
                let mut lines = errors.clone();
                let n = errors.len();
                let noun = if n == 1 { "error" } else { "errors" };
                lines.push(format!(
                    "stewardctl: the config has {n} {noun}; nothing was changed"
                ));
                lines
            }
            Failure::Unexpected(kind) => vec![format!(
                "stewardctl: steward answered with a {kind} reply, which does not fit the request"
            )],
            Failure::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => vec![],
            Failure::Output(e) => vec![format!("stewardctl: writing the output: {e}")],
        }
    }

    fn report(self) -> Exit {
        for line in self.message() {
            eprintln!("{line}");
        }
        self.exit()
    }
}

fn main() -> ExitCode {
    let parsed = args::parse(env::args_os().skip(1), env::var_os("STEWARD_CONTROL"));
    let result = match parsed {
        Ok(Parsed::Run(invocation)) => run(&invocation),
        Ok(Parsed::List(invocation)) => list(&invocation),
        Ok(Parsed::Help(text)) => write_stdout(&text),
        Ok(Parsed::ClientVersion) => write_stdout(&format!("stewardctl {VERSION}\n")),
        Ok(Parsed::Import(request)) => return import(&request),
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let exit = match result {
        Ok(()) => Exit::Done,
        Err(failure) => failure.report(),
    };
    ExitCode::from(exit as u8)
}

/// `print!` panics on a closed stdout; this reports it instead.
fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `list`: every service's name, one a line (what the shell completions read), or a JSON
/// array of them.
fn list(invocation: &Invocation) -> Result<(), Failure> {
    let status = match ask(invocation)? {
        Reply::Status(status) => status,
        other => return Err(Failure::unexpected(&other)),
    };
    let names = status.services.iter().map(|s| s.name.as_str());
    if invocation.json {
        let mut out = io::stdout().lock();
        print_json(&mut out, &json!(names.collect::<Vec<_>>()))?;
        return Ok(out.flush()?);
    }
    write_stdout(&names.map(|name| format!("{name}\n")).collect::<String>())
}

/// Carries out a command, with stdout buffered and flushed before any error is reported, so
/// what was printed comes before the message about what failed.
fn run(invocation: &Invocation) -> Result<(), Failure> {
    let stdout = io::stdout();
    // Colour only for a person at a terminal, and never against their NO_COLOR.
    let colour = stdout.is_terminal() && env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut out = BufWriter::new(stdout.lock());
    let result = execute(invocation, &mut out, colour);
    let flushed = out.flush();
    result?;
    flushed?;
    Ok(())
}

fn execute(invocation: &Invocation, out: &mut impl Write, colour: bool) -> Result<(), Failure> {
    let json = invocation.json;
    match &invocation.command {
        Command::Status { names } => {
            let status = match ask(invocation)? {
                Reply::Status(status) => status,
                other => return Err(Failure::unexpected(&other)),
            };
            if json {
                return print_json(out, &render::status_json(&status));
            }
            out.write_all(render::status_table(&status, now(), colour).as_bytes())?;
            // The manager sends details only for services that were named.
            if !names.is_empty() {
                for service in &status.services {
                    out.write_all(render::status_details(service, now()).as_bytes())?;
                }
            }
            Ok(())
        }
        Command::Start { wait: true, .. }
        | Command::Stop { wait: true, .. }
        | Command::Restart { wait: true, .. } => settle(invocation, out),
        Command::Start { .. }
        | Command::Stop { .. }
        | Command::Restart { .. }
        | Command::Shutdown
        | Command::Poweroff
        | Command::Reboot
        | Command::Debug(_) => {
            let message = match ask(invocation)? {
                Reply::Done { message } => message,
                other => return Err(Failure::unexpected(&other)),
            };
            if json {
                print_json(out, &json!({"ok": true, "message": message}))
            } else if message.is_empty() {
                Ok(())
            } else {
                Ok(writeln!(out, "{message}")?)
            }
        }
        Command::Reexec => {
            let (old, new) = match ask(invocation)? {
                Reply::Reexeced { old, new } => (old, new),
                other => return Err(Failure::unexpected(&other)),
            };
            if json {
                print_json(out, &json!({"ok": true, "old": old, "new": new}))
            } else {
                Ok(writeln!(
                    out,
                    "re-executed: steward {old} -> steward {new}"
                )?)
            }
        }
        Command::Reload => {
            let (added, removed, restarted) = match ask(invocation)? {
                Reply::Reloaded {
                    added,
                    removed,
                    restarted,
                } => (added, removed, restarted),
                other => return Err(Failure::unexpected(&other)),
            };
            if json {
                print_json(out, &render::reloaded_json(&added, &removed, &restarted))
            } else {
                Ok(out.write_all(render::reloaded(&added, &removed, &restarted).as_bytes())?)
            }
        }
        Command::Logs { follow, .. } => logs(invocation, *follow, out),
        Command::Version => version(invocation, out),
    }
}

/// A waiting `start`, `stop` or `restart`: a line per service as it settles, then success, or
/// the first failure. With `--json`, one document at the end.
fn settle(invocation: &Invocation, out: &mut impl Write) -> Result<(), Failure> {
    let mut replies = client::send(&invocation.control, &invocation.command)?;
    let mut settled = Vec::new();
    loop {
        let reply = match replies.next_reply()? {
            Some(reply) => reply,
            None => return Err(Failure::NoReply(invocation.control.clone())),
        };
        match reply {
            Reply::Settled {
                name,
                state,
                failure,
            } => {
                if !invocation.json {
                    writeln!(
                        out,
                        "{}",
                        render::settled(&name, &state, failure.as_deref())
                    )?;
                    out.flush()?;
                }
                settled.push(json!({"name": name, "state": state, "failure": failure}));
            }
            Reply::Done { .. } => {
                if invocation.json {
                    print_json(out, &json!({"ok": true, "services": settled}))?;
                }
                return Ok(());
            }
            Reply::Error { message } => {
                if invocation.json {
                    print_json(out, &json!({"ok": false, "services": settled}))?;
                }
                return Err(Failure::Refused(message));
            }
            other => return Err(Failure::unexpected(&other)),
        }
    }
}

/// Prints the replies of `logs` as they come; with `-f` that is until the manager closes the
/// connection or the user interrupts us (SIGINT's default action ends the process). When the
/// manager's ring held fewer lines than `-n` asked for, its first reply names the parts of
/// its log files that hold the older ones: those are read here and printed first.
fn logs(invocation: &Invocation, follow: bool, out: &mut impl Write) -> Result<(), Failure> {
    let asked = match &invocation.command {
        Command::Logs { lines, .. } => *lines,
        _ => None,
    };
    let mut replies = client::send(&invocation.control, &invocation.command)?;
    let mut reply = Some(first_reply(&mut replies, invocation)?);
    let mut first = true;
    while let Some(current) = reply {
        let (lines, dropped, files) = match current {
            Reply::Logs {
                lines,
                dropped,
                files,
            } => (lines, dropped, files),
            Reply::Error { message } => return Err(Failure::Refused(message)),
            other => return Err(Failure::unexpected(&other)),
        };
        if first && dropped > 0 {
            eprintln!("{}", render::dropped_note(dropped));
        }
        if first && !files.is_empty() {
            let want = asked.map_or(0, |n| (n as usize).saturating_sub(lines.len()));
            let (older, error) = logfiles::last_lines(&files, want);
            if let Some(e) = error {
                eprintln!("stewardctl: {e}");
            }
            for text in &older {
                if invocation.json {
                    // A line that does not read back (written by hand?) is left out.
                    if let Some(line) = steward_protocol::control::LogLine::parse(text) {
                        writeln!(out, "{}", render::log_json(&line))?;
                    }
                } else {
                    writeln!(out, "{text}")?;
                }
            }
        }
        for line in &lines {
            if invocation.json {
                writeln!(out, "{}", render::log_json(line))?;
            } else {
                writeln!(out, "{}", render::log_line(line))?;
            }
        }
        // Lines show as they arrive, not when a buffer happens to fill.
        out.flush()?;
        if !follow {
            return Ok(());
        }
        first = false;
        reply = replies.next_reply()?;
    }
    Ok(())
}

/// The client line first: it is true even when no manager answers.
fn version(invocation: &Invocation, out: &mut impl Write) -> Result<(), Failure> {
    if !invocation.json {
        writeln!(out, "stewardctl {VERSION}")?;
    }
    match ask(invocation) {
        Ok(Reply::Version { version, protocol }) if invocation.json => print_json(
            out,
            &json!({"client": VERSION, "manager": version, "protocol": protocol}),
        ),
        Ok(Reply::Version { version, protocol }) => Ok(writeln!(
            out,
            "steward {version} (control protocol {protocol})"
        )?),
        Ok(other) => Err(Failure::unexpected(&other)),
        Err(Failure::Client(e)) if e.is_no_manager() && invocation.json => {
            print_json(
                out,
                &json!({"client": VERSION, "manager": null, "protocol": null}),
            )?;
            Err(Failure::Client(e))
        }
        Err(failure) => Err(failure),
    }
}

/// Sends the command and returns the manager's one reply; refusals become failures.
fn ask(invocation: &Invocation) -> Result<Reply, Failure> {
    let mut replies = client::send(&invocation.control, &invocation.command)?;
    first_reply(&mut replies, invocation)
}

fn first_reply(
    replies: &mut Replies<UnixStream>,
    invocation: &Invocation,
) -> Result<Reply, Failure> {
    match replies.next_reply()? {
        None => Err(Failure::NoReply(invocation.control.clone())),
        Some(Reply::Error { message }) => Err(Failure::Refused(message)),
        Some(Reply::ReloadFailed { errors }) => Err(Failure::ReloadFailed(errors)),
        Some(reply) => Ok(reply),
    }
}

/// One JSON document, pretty-printed (people read `--json` too), with a final newline.
fn print_json(out: &mut impl Write, value: &Value) -> Result<(), Failure> {
    Ok(writeln!(out, "{value:#}")?)
}

/// Seconds since the epoch, for uptimes; a clock before 1970 shows everything as just begun.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `stewardctl import`: the config on stdout; exit 1 when something was not imported, 2 when
/// a unit could not be read.
fn import(request: &stewardctl::import::Request) -> ExitCode {
    match stewardctl::import::import(request) {
        Ok(printed) => {
            if let Err(e) = write_stdout(&printed.text) {
                for line in e.message() {
                    eprintln!("{line}");
                }
                return ExitCode::from(e.exit() as u8);
            }
            if printed.not_imported > 0 {
                let n = printed.not_imported;
                let noun = if n == 1 {
                    "directive was"
                } else {
                    "directives were"
                };
                eprintln!(
                    "stewardctl: {n} {noun} not imported (see the `# not imported:` comments)"
                );
                return ExitCode::from(Exit::Failed as u8);
            }
            ExitCode::from(Exit::Done as u8)
        }
        Err(e) => {
            eprintln!("stewardctl: {e}");
            ExitCode::from(Exit::Usage as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_documented_exit_statuses() {
        let path = PathBuf::from("/run/x");
        let no_manager = Failure::Client(client::Error::NoManager {
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
        assert_eq!(no_manager.exit(), Exit::NoManager);
        let denied = Failure::Client(client::Error::PermissionDenied { path: path.clone() });
        assert_eq!(denied.exit(), Exit::Failed);
        assert_eq!(
            denied.message(),
            vec!["stewardctl: /run/x: permission denied".to_string()]
        );
        assert_eq!(Failure::NoReply(path).exit(), Exit::Failed);
        assert_eq!(Failure::Refused("no".into()).exit(), Exit::Failed);
        assert_eq!(Failure::Unexpected("status").exit(), Exit::Failed);
        assert_eq!(
            Failure::Output(io::Error::from(io::ErrorKind::BrokenPipe)).exit(),
            Exit::Done
        );
        assert_eq!(
            Failure::Output(io::Error::from(io::ErrorKind::StorageFull)).exit(),
            Exit::Failed
        );
    }

    #[test]
    fn a_failed_reload_lists_every_error_then_counts_them() {
        let failure =
            Failure::ReloadFailed(vec!["a.toml:1:1: bad".into(), "a.toml:2:1: worse".into()]);
        assert_eq!(failure.exit(), Exit::Failed);
        assert_eq!(
            failure.message(),
            vec![
                "a.toml:1:1: bad",
                "a.toml:2:1: worse",
                "stewardctl: the config has 2 errors; nothing was changed"
            ]
        );
        assert_eq!(
            Failure::ReloadFailed(vec!["x".into()]).message()[1],
            "stewardctl: the config has 1 error; nothing was changed"
        );
    }
}
