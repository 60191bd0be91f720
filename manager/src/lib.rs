//! `steward`: the service manager. Reads the config, pins the executor, and supervises.
//!
//! The library is the whole manager; the `steward` binary is one call to [`main`]. The split
//! exists so the upgrade tests can build a second manager that reports another version (or
//! reads fewer state versions) from the same code, as a real newer or older release would.
#![deny(unsafe_code)]

mod cgroups;
mod config;
/// The config as written, for tools that write steward configs (`stewardctl import`): they
/// serialize these structs and check the text with [`check_config_text`].
pub use config::written;
pub use config::{Diagnostic, Origin, check as check_config_text};
mod control;
mod directories;
mod event_loop;
mod fd_store;
mod log;
mod logfile;
mod notify;
mod output;
mod pid1;
mod pid_map;
mod pool;
mod recovery;
mod registry;
mod sockets;
mod spawn;
mod supervisor;
mod sys;
mod unit;
mod users;
mod watchdog;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: steward [--config PATH] [--control PATH] [--executor PATH] [--check] [--version]

  --config PATH     a TOML file, or a directory of *.toml files (default /etc/steward)
  --control PATH    the control socket (default /run/steward/control)
  --executor PATH   the executor (default: steward-executor beside steward,
                    else ../libexec/steward-executor from steward's directory,
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
    /// The arguments as given, without the internal ones below: what a `reexec` passes on.
    given: Vec<OsString>,
    /// Internal, added by `reexec`: the memfd holding the previous manager's state.
    deserialize: Option<i32>,
    /// Internal: the previous binary, pinned, to go back to if we cannot take over.
    fallback: Option<i32>,
    /// Internal: why the state was handed over (`--reexec-failed WHY`, `--recovering WHAT`).
    came: event_loop::Came,
    /// Internal: CLOCK_MONOTONIC (ns) of the last recovery from a panic.
    panicked_at: Option<u64>,
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
        given: Vec::new(),
        deserialize: None,
        fallback: None,
        came: event_loop::Came::Upgrade,
        panicked_at: None,
    };
    let fd = |flag: &str, value: Option<OsString>| -> Result<i32, String> {
        value
            .and_then(|v| v.to_str().and_then(|v| v.parse().ok()))
            .filter(|&fd: &i32| fd >= 0)
            .ok_or_else(|| format!("{flag} needs an fd number"))
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--deserialize") => {
                parsed.deserialize = Some(fd("--deserialize", args.next())?);
                continue;
            }
            Some("--fallback") => {
                parsed.fallback = Some(fd("--fallback", args.next())?);
                continue;
            }
            Some("--reexec-failed") => {
                let why = args.next().ok_or("--reexec-failed needs a reason")?;
                parsed.came = event_loop::Came::FellBack(why.to_string_lossy().into_owned());
                continue;
            }
            Some("--recovering") => {
                let what = args.next().ok_or("--recovering needs the panic")?;
                parsed.came = event_loop::Came::Recovered(what.to_string_lossy().into_owned());
                continue;
            }
            Some("--panicked-at") => {
                let ns = args.next().and_then(|v| v.to_str()?.parse().ok());
                parsed.panicked_at = Some(ns.ok_or("--panicked-at needs a time in ns")?);
                continue;
            }
            _ => {}
        }
        parsed.given.push(arg.clone());
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
            "--config" | "--control" | "--executor" => {
                let path = value(&flag)?;
                if inline.is_none() {
                    parsed.given.push(path.clone().into_os_string());
                }
                match flag.as_str() {
                    "--config" => parsed.config = path,
                    "--control" => parsed.control = path,
                    _ => parsed.executor = Some(path),
                }
            }
            "--check" => parsed.check = true,
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Command::Run(parsed))
}

/// For the config fuzz target (`fuzz/`): parses `text` as a config file and checks what any
/// input must give: a config, or at least one error, each with a position inside the text.
#[doc(hidden)]
pub fn fuzz_config(text: &str) {
    let loaded = config::parse(vec![(PathBuf::from("fuzz.toml"), text.to_string())]);
    let errors = loaded.diagnostics.iter().filter(|d| !d.warning).count();
    assert!(
        loaded.config.is_some() != (errors > 0),
        "a config and errors, or neither"
    );
    let lines = text.lines().count().max(1) + 1;
    for d in &loaded.diagnostics {
        assert!(d.origin.line >= 1 && d.origin.line as usize <= lines, "{d}");
        assert!(d.origin.column >= 1, "{d}");
    }
}

/// For the notify fuzz target (`fuzz/`): any bytes as an sd_notify datagram.
#[doc(hidden)]
pub fn fuzz_notify(bytes: &[u8]) {
    notify::fuzz(bytes);
}

/// The first of [`executor_candidates`] that exists, else the system location.
fn default_executor() -> PathBuf {
    let exe = std::env::current_exe().ok();
    executor_candidates(exe.as_deref())
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/steward-executor"))
}

/// Where the executor of the steward binary at `exe` may be: beside it (a build directory),
/// then in `../libexec` (an install under a prefix: `PREFIX/sbin/steward` runs
/// `PREFIX/libexec/steward-executor`), then the system location.
fn executor_candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        candidates.push(dir.join("steward-executor"));
        if let Some(prefix) = dir.parent() {
            candidates.push(prefix.join("libexec/steward-executor"));
        }
    }
    candidates.push(PathBuf::from("/usr/libexec/steward-executor"));
    candidates
}

/// What distinguishes one build of the manager from another, as far as upgrades care.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    /// The version it reports.
    pub version: &'static str,
    /// The newest manager-state version it reads at a `reexec`.
    pub state_version: u32,
}

impl Build {
    /// This release.
    pub const RELEASE: Build = Build {
        version: env!("CARGO_PKG_VERSION"),
        state_version: steward_protocol::reexec::VERSION,
    };
}

static BUILD: std::sync::OnceLock<Build> = std::sync::OnceLock::new();

/// The build that is running.
fn build() -> Build {
    *BUILD.get_or_init(|| Build::RELEASE)
}

/// The version this manager reports.
fn version() -> &'static str {
    build().version
}

/// The whole `steward` program.
pub fn main(build: Build) -> ExitCode {
    let _ = BUILD.set(build);
    // First: the allocator's parameters apply to the blocks allocated after they are set.
    sys::fix_mmap_threshold();
    let init = pid1::is_init();
    // Before anything else as PID 1: the config and the executor are read through the
    // filesystems the kernel did not mount. (Not after a reexec: they are there already.)
    if init && !std::env::args_os().any(|a| a == "--deserialize") {
        pid1::early_setup();
    } else if init {
        log::nonblocking();
        pid1::kmsg();
    }
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("steward {}", version());
            return ExitCode::SUCCESS;
        }
        Err(e) if init => pid1::emergency(&format!("{e} (on the command line)")),
        Err(e) => {
            eprintln!("steward: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(pid1::Finish::Exit) if init => pid1::emergency("asked to exit"),
        Ok(pid1::Finish::Exit) => ExitCode::SUCCESS,
        Ok(finish) => {
            let e = pid1::finish(finish);
            pid1::emergency(&format!("reboot(2) failed: {e}"))
        }
        // The kernel panics when init exits: whatever went wrong, stay.
        Err(e) if init => pid1::emergency(&format!("{e:#}")),
        Err(e) => {
            eprintln!("steward: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<pid1::Finish> {
    if !args.check {
        if let Some(ns) = args.panicked_at {
            recovery::set_panicked_at(ns);
        }
        recovery::install_hook();
    }
    let executor = args.executor.clone().unwrap_or_else(default_executor);
    let paths = event_loop::Paths {
        config: &args.config,
        control: &args.control,
        executor: &executor,
    };
    if let Some(state_fd) = args.deserialize {
        let _ballast = ballast()?;
        let resume = event_loop::Resume {
            state_fd,
            fallback: args.fallback,
            came: args.came.clone(),
        };
        return event_loop::resume(resume, paths, args.given.clone());
    }
    if args.check {
        for s in &check_config(&args.config)?.services {
            println!("{}", summary(s));
        }
        return Ok(pid1::Finish::Exit);
    }
    let (config, sources) = boot_config(&args.config, pid1::is_init())?;
    let _ballast = ballast()?;
    // Where we were started from, for every later reexec (by then /proc/self/exe may name a
    // deleted file).
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot tell where the steward binary is: {e}"))?;
    let upgrade = event_loop::Upgrade::new(exe, args.given.clone());
    let watchdog = hardware_watchdog(&config.config.manager);
    let manager = event_loop::Manager::new(config, sources, paths, upgrade, watchdog)?;
    Ok(manager.run())
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

/// `[manager] watchdog_device`, opened right after the config was read: PID 1 only (a
/// manager that is not init has no machine to reset).
fn hardware_watchdog(settings: &config::ManagerSettings) -> Option<watchdog::Watchdog> {
    let device = settings.watchdog_device.as_deref()?;
    if !pid1::is_init() {
        log::manager(format_args!(
            "watchdog_device {} is for steward as PID 1; ignored",
            device.display()
        ));
        return None;
    }
    watchdog::Watchdog::open(device, settings.watchdog_timeout)
}

/// `--check`: the whole config, or every error of it.
fn check_config(path: &Path) -> anyhow::Result<config::Config> {
    let loaded = read_config(path)?;
    match loaded.config {
        Some(config) => Ok(config),
        None => anyhow::bail!("{} in the config {}", errors(&loaded), path.display()),
    }
}

/// What a boot starts: every service without an error of its own, the others refused with
/// their errors. Only a manager that is not PID 1 and has no valid service at all gives up.
fn boot_config(
    path: &Path,
    init: bool,
) -> anyhow::Result<(config::Confined, Vec<(PathBuf, String)>)> {
    let loaded = read_config(path)?;
    if loaded.config.is_none() {
        if !init && !loaded.confined.has_valid_service() {
            anyhow::bail!(
                "{} in the config {}, and no service without errors; nothing was started",
                errors(&loaded),
                path.display()
            );
        }
        let refused: Vec<&str> = loaded
            .confined
            .broken
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        log::manager(format_args!(
            "{} in the config {}: {}; everything else starts",
            errors(&loaded),
            path.display(),
            if refused.is_empty() {
                "what has them is left out".to_string()
            } else {
                format!("refused {}", refused.join(", "))
            }
        ));
    }
    Ok((loaded.confined, loaded.sources))
}

fn read_config(path: &Path) -> anyhow::Result<config::Loaded> {
    let loaded = config::load(path).map_err(|e| anyhow::anyhow!("cannot read the config: {e}"))?;
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    Ok(loaded)
}

/// `N error(s)`.
fn errors(loaded: &config::Loaded) -> String {
    let n = loaded.diagnostics.iter().filter(|d| !d.warning).count();
    format!("{n} error{}", if n == 1 { "" } else { "s" })
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
    format!("{}: {} ({mode})", s.name, s.exec)
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

    #[test]
    fn the_executor_is_looked_for_beside_steward_then_in_the_prefix_libexec() {
        let paths = |exe: Option<&str>| -> Vec<PathBuf> { executor_candidates(exe.map(Path::new)) };
        assert_eq!(
            paths(Some("/opt/st/sbin/steward")),
            [
                "/opt/st/sbin/steward-executor",
                "/opt/st/libexec/steward-executor",
                "/usr/libexec/steward-executor"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            paths(Some("/steward")),
            ["/steward-executor", "/usr/libexec/steward-executor"].map(PathBuf::from)
        );
        assert_eq!(
            paths(None),
            [PathBuf::from("/usr/libexec/steward-executor")]
        );
    }

    #[test]
    fn reexec_flags_are_kept_apart_from_the_command_line_passed_on() {
        let Ok(Command::Run(a)) = args(&[
            "--config",
            "/x",
            "--deserialize",
            "7",
            "--control=/c",
            "--fallback",
            "8",
            "--reexec-failed",
            "why",
        ]) else {
            panic!("should parse");
        };
        assert_eq!((a.deserialize, a.fallback), (Some(7), Some(8)));
        assert_eq!(a.came, event_loop::Came::FellBack("why".into()));
        let given: Vec<&str> = a.given.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(given, ["--config", "/x", "--control=/c"]);
        assert_eq!(
            args(&["--deserialize", "x"]).err().unwrap(),
            "--deserialize needs an fd number"
        );
    }
}
