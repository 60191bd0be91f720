//! echo-server: a lazy service. It takes over its listening socket (unix or TCP), echoes every
//! line a client sends, one thread per connection, and with `--idle SECS` exits after SECS
//! seconds without an open connection; the manager starts it again for the next client.
//!
//! Usage: `echo-server [--idle SECS]`

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use takeover::Stream;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let idle = idle_option()?;
    // Before any thread: take() edits the environment.
    let mut sockets = takeover::take().context("taking over the sockets")?;
    eprintln!(
        "echo-server: took over {} socket(s) (pid {})",
        sockets.len(),
        std::process::id()
    );
    let name = match sockets.names().next() {
        Some(name) => name.to_string(),
        None => bail!("no socket was passed: run me under steward, with a socket"),
    };
    let listener = sockets.listener(&name)?;

    let connections = Arc::new(Mutex::new(Connections {
        open: 0,
        idle_since: Instant::now(),
    }));
    let mut served = 0u64;
    loop {
        let stream = match idle {
            None => listener.accept().context("accept")?,
            Some(idle) => {
                // With connections open, just look again after `idle`; without, wait for what
                // is left of it. A client arriving after we gave up waits in the backlog, and
                // steward starts us again for it.
                let wait = connections.lock().unwrap().idle_left(idle);
                match listener.accept_timeout(wait).context("accept")? {
                    Some(stream) => stream,
                    None if connections.lock().unwrap().idle_left(idle).is_zero() => {
                        eprintln!("echo-server: idle for {}s, exiting", idle.as_secs());
                        return Ok(());
                    }
                    None => continue,
                }
            }
        };
        served += 1;
        let n = served;
        let open = {
            let mut c = connections.lock().unwrap();
            c.open += 1;
            c.open
        };
        eprintln!("echo-server: connection {n} opened ({open} open)");
        let connections = Arc::clone(&connections);
        std::thread::spawn(move || {
            let result = echo(stream);
            let open = {
                let mut c = connections.lock().unwrap();
                c.open -= 1;
                c.idle_since = Instant::now();
                c.open
            };
            match result {
                Ok(lines) => eprintln!(
                    "echo-server: connection {n} closed after {lines} line(s) ({open} open)"
                ),
                Err(e) => eprintln!("echo-server: connection {n}: {e} ({open} open)"),
            }
        });
    }
}

/// The open connections, and since when there has been none.
struct Connections {
    open: usize,
    idle_since: Instant,
}

impl Connections {
    /// How long to wait before looking again: what is left of `idle` when no connection is
    /// open (zero: time to exit), else the whole of it.
    fn idle_left(&self, idle: Duration) -> Duration {
        if self.open > 0 {
            idle
        } else {
            idle.saturating_sub(self.idle_since.elapsed())
        }
    }
}

/// Echoes each line back until the client closes; returns the number of lines.
fn echo(stream: Stream) -> std::io::Result<u64> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut lines = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(lines);
        }
        writer.write_all(&line)?;
        lines += 1;
    }
}

/// `--idle SECS`, if given.
fn idle_option() -> anyhow::Result<Option<Duration>> {
    let mut args = std::env::args().skip(1);
    let mut idle = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--idle" => {
                let secs = args.next().context("--idle needs a number of seconds")?;
                let secs: u64 = secs
                    .parse()
                    .with_context(|| format!("--idle {secs:?}: not a number of seconds"))?;
                idle = Some(Duration::from_secs(secs));
            }
            other => bail!("unknown argument {other:?} (usage: echo-server [--idle SECS])"),
        }
    }
    Ok(idle)
}
