//! greeter: an accept-mode instance. It takes over its one connection (fd 3, `connection`),
//! greets the client with its own pid and the client's address or credentials, then echoes
//! lines until the client closes.
//!
//! Usage: `greeter` (no arguments; started by steward for each connection)

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use takeover::Stream;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("greeter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    if std::env::args().len() > 1 {
        bail!("takes no arguments (usage: greeter, as an accept-mode service)");
    }
    let mut sockets = takeover::take().context("taking over the connection")?;
    let stream = sockets
        .stream("connection")
        .context("an accept-mode instance gets its connection as fd 3")?;
    let pid = std::process::id();
    let remote = remote();
    eprintln!("greeter: instance pid {pid} serving {remote}");

    match greet_and_echo(
        stream,
        &format!("hello from instance pid {pid} (remote {remote})\n"),
    ) {
        Ok(()) => {}
        // The client hung up without closing its side first: it is gone all the same.
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
        Err(e) => return Err(e.into()),
    }
    eprintln!("greeter: instance pid {pid}: {remote} closed, exiting");
    Ok(())
}

/// Writes `greeting` (in one write, so the client reads it whole), then echoes lines until EOF.
fn greet_and_echo(stream: Stream, greeting: &str) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    writer.write_all(greeting.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        writer.write_all(&line)?;
        line.clear();
    }
    Ok(())
}

/// Who connected, from `REMOTE_ADDR`/`REMOTE_PORT` (TCP) or `REMOTE_PID`/`REMOTE_UID` (unix).
fn remote() -> String {
    let var = |name| std::env::var(name).ok();
    match (var("REMOTE_ADDR"), var("REMOTE_PORT"), var("REMOTE_PID")) {
        // An IPv6 address holds ':': bracket it, as in a URL.
        (Some(addr), Some(port), _) if addr.contains(':') => format!("[{addr}]:{port}"),
        (Some(addr), Some(port), _) => format!("{addr}:{port}"),
        (_, _, Some(pid)) => format!(
            "pid {pid} uid {}",
            var("REMOTE_UID").unwrap_or_else(|| "?".into())
        ),
        _ => "unknown".to_string(),
    }
}
