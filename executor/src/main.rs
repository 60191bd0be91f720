//! `steward-executor`: everything between the manager's posix_spawn and the service's execve.
//!
//! The manager starts it as `steward-executor --deserialize FD`. It reads the spawn state from
//! that memfd, applies it step by step, and execs the service. It never returns into anyone's
//! code: a failed step is reported on the status pipe and ends the process with systemd's exit
//! status for that step.
#![deny(unsafe_code)]

mod cgroup;
mod credentials;
mod exec;
mod failure;
mod fds;
mod process;
mod state;
mod stdio;
#[allow(unsafe_code)]
mod sys;

use std::convert::Infallible;
use std::io::Write;
use std::os::fd::RawFd;

use steward_protocol::{SpawnState, Step};

use crate::failure::{AtStep, Failure, StatusPipe};

/// Read (not run) by the manager when it pins this file, to check that we speak its spawn
/// protocol. `#[used]`: nothing in the program refers to it.
#[used]
static PROTOCOL_MARKER: [u8; 40] = steward_protocol::EXECUTOR_MARKER_BYTES;

const BY_HAND: &str =
    "steward-executor: this program is started by steward to spawn services; do not run it by hand";

/// What the command line asks for.
enum Command {
    Version,
    Deserialize(String),
    Usage,
}

fn parse_args(args: &[std::ffi::OsString]) -> Command {
    match args {
        [flag] if flag == "--version" => Command::Version,
        // Not yet checked as a number: a bad one gets the "cannot read" message, naming it.
        [flag, fd] if flag == "--deserialize" => {
            Command::Deserialize(fd.to_string_lossy().into_owned())
        }
        _ => Command::Usage,
    }
}

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    // Messages are written with errors ignored: a closed stderr must not turn into a panic.
    let fd_arg = match parse_args(&args) {
        Command::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "steward-executor {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                steward_protocol::VERSION
            );
            std::process::exit(0);
        }
        Command::Usage => {
            let _ = writeln!(std::io::stderr(), "{BY_HAND}");
            std::process::exit(1);
        }
        Command::Deserialize(fd) => fd,
    };
    let loaded = state::parse_fd(&fd_arg).and_then(|fd| state::read(fd).map(|state| (fd, state)));
    let (fd, state) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "steward-executor: cannot read the spawn state from fd {fd_arg}: {e}"
            );
            std::process::exit(1);
        }
    };
    // From here on every failure goes to the status pipe, never back through main.
    let mut status = StatusPipe {
        fd: state.status_fd,
    };
    let Err(failure) = run(&state, fd, &mut status);
    status.fail(failure)
}

/// The steps, in order. Returns only on failure, with the step and errno to report.
fn run(
    state: &SpawnState,
    state_fd: RawFd,
    status: &mut StatusPipe,
) -> Result<Infallible, Failure> {
    // The state is read; its memfd must not reach the service. Closing it here rather than
    // leaving it to placement also covers a memfd the manager put at 0, 1 or 2.
    sys::close(state_fd).at(Step::Fds)?;
    let mut table = fds::Kernel;
    let placed = fds::place(&fds::plan(state), &mut table, &mut status.fd).at(Step::Fds)?;
    process::reset_signals()?;
    process::new_session()?;
    stdio::apply(&state.stdio, &placed)?;
    placed
        .close_stdio_sources(&mut table, status.fd)
        .at(Step::Fds)?;
    process::set_limits(&state.rlimits)?;
    process::set_umask(state.umask);
    process::change_directory(&state.working_directory)?;
    let pid = sys::getpid();
    cgroup::join(&state.cgroups, pid)?;
    if let Some(credentials) = &state.credentials {
        credentials::switch(credentials)?;
    }
    let env = exec::environment(&state.env, state.listen_pid.then_some(pid));
    exec::exec(&state.path, &state.argv, &env)
}
