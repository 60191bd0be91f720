//! `steward`: the service manager. Reads the config, pins the executor, and supervises.
#![deny(unsafe_code)]

mod cgroups;
mod config;
mod control;
mod event_loop;
mod log;
mod logs;
mod sockets;
mod spawn;
mod supervisor;
mod sys;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: steward [--config PATH] [--control PATH] [--executor PATH] [--check] [--version]

  --config PATH     a TOML file, or a directory of *.toml files (default /etc/steward)
  --control PATH    the control socket (default /run/steward/control)
  --executor PATH   the executor (default: steward-executor beside steward,
                    else /usr/libexec/steward-executor)
  --check           validate the config, print one line per service, start nothing
  --version         print the version";

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    config: PathBuf,
    control: PathBuf,
    executor: Option<PathBuf>,
    check: bool,
}

enum Command {
    Run(Args),
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut parsed = Args {
        config: PathBuf::from("/etc/steward"),
        control: PathBuf::from("/run/steward/control"),
        executor: None,
        check: false,
    };
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.into())),
            _ => (text.to_string(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            inline
                .clone()
                .map(|v: String| PathBuf::from(v))
                .or_else(|| args.next().map(PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| format!("{name} needs a path"))
        };
        match flag.as_str() {
            "--config" => parsed.config = value("--config")?,
            "--control" => parsed.control = value("--control")?,
            "--executor" => parsed.executor = Some(value("--executor")?),
            "--check" => parsed.check = true,
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Command::Run(parsed))
}

/// `steward-executor` beside the running binary, else the system location.
fn default_executor() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("steward-executor")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/steward-executor"))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("steward {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("steward: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steward: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = load_config(&args.config, args.check)?;
    if args.check {
        for s in &config.services {
            println!("{}", summary(s));
        }
        return Ok(());
    }
    let executor = args.executor.clone().unwrap_or_else(default_executor);
    let _ballast = ballast()?;
    let manager = event_loop::Manager::new(config, &args.config, &executor, &args.control)?;
    manager.run();
    Ok(())
}

/// A benchmark knob, not a feature: `STEWARD_BENCH_BALLAST=1G` makes the manager hold (and
/// touch, so it is really resident) that much memory, to show that a large manager neither
/// slows its spawns nor gets a service with a small `memory_max` OOM-killed at start, as a
/// fork-based manager would.
fn ballast() -> anyhow::Result<Option<Vec<u8>>> {
    let Some(text) = std::env::var_os("STEWARD_BENCH_BALLAST") else {
        return Ok(None);
    };
    let text = text.to_string_lossy();
    let Some(bytes) = config::parse_size(&text) else {
        anyhow::bail!("STEWARD_BENCH_BALLAST: bad size \"{text}\" (write e.g. \"512M\")");
    };
    let mut ballast = vec![0u8; bytes as usize];
    for page in ballast.chunks_mut(4096) {
        page[0] = 1;
    }
    log::manager(format_args!(
        "benchmark ballast: holding {} MiB of touched memory",
        bytes >> 20
    ));
    Ok(Some(ballast))
}

fn load_config(path: &Path, check: bool) -> anyhow::Result<config::Config> {
    let loaded = config::load(path).map_err(|e| anyhow::anyhow!("cannot read the config: {e}"))?;
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    let errors = loaded.diagnostics.iter().filter(|d| !d.warning).count();
    match loaded.config {
        Some(config) => Ok(config),
        None => {
            let what = if check { "" } else { "; nothing was started" };
            anyhow::bail!(
                "{errors} error{} in the config {}{what}",
                if errors == 1 { "" } else { "s" },
                path.display()
            )
        }
    }
}

/// One line per service for `--check`.
fn summary(s: &config::Service) -> String {
    let mut traits = Vec::new();
    if !s.autostart {
        traits.push("no autostart".to_string());
    }
    if s.accept {
        traits.push("accept".into());
    } else if s.lazy {
        traits.push("lazy".into());
    }
    if s.keep_alive {
        traits.push("keep_alive".into());
    }
    if !s.sockets.is_empty() {
        traits.push(format!("{} socket(s)", s.sockets.len()));
    }
    let mode = if traits.is_empty() {
        "one-shot".to_string()
    } else {
        traits.join(", ")
    };
    format!("{}: {} ({mode})", s.name, s.exec.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, String> {
        parse_args(list.iter().map(OsString::from))
    }

    #[test]
    fn command_line() {
        let Ok(Command::Run(a)) = args(&["--config", "/x", "--executor=/e", "--check"]) else {
            panic!("should parse");
        };
        assert_eq!(a.config, PathBuf::from("/x"));
        assert_eq!(a.executor, Some(PathBuf::from("/e")));
        assert!(a.check);
        assert!(matches!(args(&["--version"]), Ok(Command::Version)));
        assert_eq!(
            args(&["--bogus"]).err().unwrap(),
            "unknown argument '--bogus'"
        );
        assert_eq!(args(&["--config"]).err().unwrap(), "--config needs a path");
    }
}
