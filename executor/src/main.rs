//! `steward-executor`: everything between the manager's posix_spawn and the service's execve.
//!
//! The manager starts it as `steward-executor --deserialize FD`. It reads the spawn state from
//! that memfd, applies it step by step, and execs the service. A pooled executor, started ahead
//! of need as `steward-executor --pooled FD`, waits on that socket for the one message that
//! carries its spawn state and fds, then goes on exactly as a fresh one. It never returns into anyone's
//! code: a failed step is reported on the status pipe and ends the process with systemd's exit
//! status for that step.
//!
//! The binary `make build` makes (`--cfg no_libc`) links no libc: origin starts the program,
//! rustix makes the system calls (see [`sys`]), and a static glibc's start-up and std's runtime
//! no longer cost every spawn a few hundred microseconds. Without that cfg, in plain cargo
//! builds and the unit tests, the same code is an ordinary std program. That keeps workspace
//! wide `cargo check`, `clippy` and `build` working: there other members turn on the std
//! features of shared dependencies (rustix, serde, thiserror), which would put a second panic
//! handler into a `no_std` binary, and the dev profile unwinds, which `no_std` cannot.
#![cfg_attr(all(no_libc, not(test)), no_std)]
#![cfg_attr(all(no_libc, not(test)), no_main)]
#![deny(unsafe_code)]

extern crate alloc;

mod armed;
mod cgroup;
mod credentials;
mod errno;
mod exec;
mod failure;
mod fds;
mod process;
mod state;
mod stdio;
#[allow(unsafe_code)]
mod sys;

use alloc::format;
use alloc::string::String;
use core::convert::Infallible;

use rustix::fd::RawFd;
use steward_protocol::{SpawnState, Step};

use crate::failure::{AtStep, Failure, StatusPipe, Word};

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
    Pooled(String),
    Usage,
}

/// `args` are the command line's bytes, without the program name.
fn parse_args(args: &[&[u8]]) -> Command {
    match args {
        [flag] if *flag == b"--version" => Command::Version,
        // Not yet checked as a number: a bad one gets the "cannot read" message, naming it.
        [flag, fd] if *flag == b"--deserialize" => {
            Command::Deserialize(String::from_utf8_lossy(fd).into_owned())
        }
        [flag, fd] if *flag == b"--pooled" => {
            Command::Pooled(String::from_utf8_lossy(fd).into_owned())
        }
        _ => Command::Usage,
    }
}

/// Prints `message` and a newline on `fd`, in one write. Errors are ignored: a closed stderr
/// must not change how the executor ends.
fn say(fd: RawFd, message: &str) {
    let _ = sys::write_all(fd, format!("{message}\n").as_bytes());
}

/// The std build's entry. std's runtime has done what the libc-free build's start-up in [`sys`]
/// does in its place.
#[cfg(not(all(no_libc, not(test))))]
fn main() {
    let args: alloc::vec::Vec<_> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_encoded_bytes())
        .collect();
    let args: alloc::vec::Vec<&[u8]> = args.iter().map(|arg| arg.as_slice()).collect();
    executor_main(&args)
}

/// Runs the executor on its command line, without the program name.
fn executor_main(args: &[&[u8]]) -> ! {
    let fd_arg = match parse_args(args) {
        Command::Version => {
            let version = format!(
                "steward-executor {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                steward_protocol::VERSION
            );
            say(1, &version);
            sys::exit(0);
        }
        Command::Usage => {
            say(2, BY_HAND);
            sys::exit(1);
        }
        Command::Deserialize(fd) => fd,
        Command::Pooled(fd) => pooled_main(&fd),
    };
    let loaded = state::parse_fd(&fd_arg).and_then(|fd| state::read(fd).map(|state| (fd, state)));
    let (fd, state) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => cannot_read(&fd_arg, &e),
    };
    // From here on every failure goes to the status pipe, never back through main.
    let mut status = StatusPipe::at(state.status_fd);
    let Err(failure) = run(&state, Some(fd), Ahead::Nothing, &mut status);
    status.fail(failure)
}

/// A pooled executor: waits for its spawn state on the socket `fd_arg`, then runs it.
fn pooled_main(fd_arg: &str) -> ! {
    // The session is the one step that needs nothing from the spawn state, and with the
    // kernel's autogroups on (sched_autogroup_enabled) a new session costs a scheduler group:
    // here, a few tens of microseconds taken off the connection's path. Failing here is not
    // final: the step is tried again once there is a status pipe to report on.
    let session = process::new_session();
    let handed = state::parse_fd(fd_arg).and_then(state::receive);
    let (mut state, start) = match handed {
        Ok(state::Handed::State(state, start)) => (state, start),
        // Retired unused (a reload, a stop, a reexec): nothing to say, nothing went wrong.
        Ok(state::Handed::Retired) => sys::exit(0),
        Err(e) => cannot_read(fd_arg, &e),
    };
    let ahead = match (start, session) {
        (steward_protocol::Start::Now, Ok(())) => Ahead::Session,
        (steward_protocol::Start::Now, Err(_)) => Ahead::Nothing,
        (steward_protocol::Start::OnConnection { listener }, session) => {
            prepare_armed(&state, session, Word::None);
            match armed::wait(listener, state.status_fd) {
                Ok(armed::Woken::Accepted(peer)) => armed::fill_remote(&mut state.env, &peer),
                // Disarmed (or the manager is gone): no connection was taken, nothing to say.
                Ok(armed::Woken::Disarmed) => sys::exit(0),
                // The manager sees the pool socket close without a report, and accepts the
                // connection itself, so that it is the one to report what fails.
                Err(_) => sys::exit(0),
            }
            Ahead::Armed
        }
        (steward_protocol::Start::OnReadable { listeners }, session) => {
            prepare_armed(&state, session, Word::None);
            match armed::wait_readable(&listeners, state.status_fd) {
                Ok(true) => {}
                // As above: the manager watches the sockets itself again.
                Ok(false) | Err(_) => sys::exit(0),
            }
            Ahead::Armed
        }
        // Every step is taken now; the word is waited for just before the exec.
        (steward_protocol::Start::OnWord, session) => {
            prepare_armed(&state, session, Word::Awaited);
            Ahead::AllButExec
        }
    };
    let mut status = StatusPipe::at(state.status_fd);
    if let Ahead::AllButExec = ahead {
        status.word = Word::Awaited;
    }
    let Err(failure) = run(&state, None, ahead, &mut status);
    status.fail(failure)
}

/// What an armed executor does before its client comes, so that the client then waits for the
/// fd placement and the exec alone: its session (`session`, made already), its signals and its
/// cgroups. A step that fails is reported now, and the manager stops arming executors for this
/// service.
fn prepare_armed(state: &SpawnState, session: Result<(), Failure>, word: Word) {
    let early = StatusPipe {
        fd: state.status_fd,
        word,
    };
    if let Err(failure) = session {
        early.fail(failure);
    }
    let pid = sys::getpid();
    let prepared = process::reset_signals(&state.reset_signals)
        .and_then(|()| cgroup::join(&state.cgroups, pid));
    if let Err(failure) = prepared {
        early.fail(failure);
    }
}

/// Before there is a status pipe to report on, a failure goes to stderr, exit status 1.
fn cannot_read(fd_arg: &str, e: &state::ReadError) -> ! {
    say(
        2,
        &format!("steward-executor: cannot read the spawn state from fd {fd_arg}: {e}"),
    );
    sys::exit(1)
}

/// The steps a pooled executor took before its spawn was due.
enum Ahead {
    /// None: a fresh executor, or a pooled one whose session could not be made early.
    Nothing,
    /// Its session, made while it waited for its spawn state.
    Session,
    /// Armed: its session, its signal state and its cgroups, before it accepted.
    Armed,
    /// Armed for a restart: as [`Ahead::Armed`], and every other step is taken before the
    /// manager's word, which the exec waits for.
    AllButExec,
}

/// The steps, in order. Returns only on failure, with the step and errno to report.
fn run(
    state: &SpawnState,
    state_fd: Option<RawFd>,
    ahead: Ahead,
    status: &mut StatusPipe,
) -> Result<Infallible, Failure> {
    // The state is read; its memfd must not reach the service. Closing it here rather than
    // leaving it to placement also covers a memfd the manager put at 0, 1 or 2.
    if let Some(state_fd) = state_fd {
        sys::close(state_fd).at(Step::Fds)?;
    }
    let mut table = fds::Kernel;
    let placed = fds::place(&fds::plan(state), &mut table, &mut status.fd).at(Step::Fds)?;
    match ahead {
        Ahead::Nothing => {
            process::reset_signals(&state.reset_signals)?;
            process::new_session()?;
        }
        Ahead::Session => process::reset_signals(&state.reset_signals)?,
        Ahead::Armed | Ahead::AllButExec => {}
    }
    stdio::apply(&state.stdio, &placed)?;
    placed
        .close_stdio_sources(&mut table, status.fd)
        .at(Step::Fds)?;
    process::set_limits(&state.rlimits)?;
    process::set_umask(state.umask);
    process::change_directory(&state.working_directory)?;
    let pid = sys::getpid();
    if !matches!(ahead, Ahead::Armed | Ahead::AllButExec) {
        cgroup::join(&state.cgroups, pid)?;
    }
    if let Some(credentials) = &state.credentials {
        credentials::switch(credentials)?;
    }
    let env = exec::environment(&state.env, &state.pid_vars, pid);
    if matches!(ahead, Ahead::AllButExec) {
        if !armed::wait_word(status.fd) {
            // Disarmed: the restart it was armed for is not coming.
            sys::exit(0);
        }
        status.word = Word::None;
    }
    exec::exec(&state.path, &state.argv, &env)
}
