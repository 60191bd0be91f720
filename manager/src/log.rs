//! The manager's own log (not the services' output, which is `output`): one line per event on
//! stderr, `steward: NAME: message`.

use std::fmt;
use std::io::Write;

/// Logs a line about a service.
pub fn service(name: &str, message: fmt::Arguments<'_>) {
    emit(format_args!("steward: {name}: {message}\n"));
}

/// Logs a line about the manager itself.
pub fn manager(message: fmt::Arguments<'_>) {
    emit(format_args!("steward: {message}\n"));
}

/// Echoes a line a service wrote: `NAME: line`, without the manager's prefix, so the two are
/// told apart at a glance.
pub fn output(name: &str, text: &str) {
    emit(format_args!("{name}: {text}\n"));
}

/// As PID 1: our own non-blocking open of whatever stderr is (a serial console, often).
static NONBLOCKING: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// From now on, log lines go through a non-blocking file description of stderr's file, so a
/// slow or stuck console can never stall init (a full console drops lines instead). The
/// description is our own: services that inherit fd 2 keep a blocking one.
pub fn nonblocking() {
    use rustix::fs::{Mode, OFlags};
    // O_APPEND: a log file as stderr is written at its end, not over from its start.
    let flags =
        OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open("/proc/self/fd/2", flags, Mode::empty()) {
        let _ = NONBLOCKING.set(std::fs::File::from(fd));
    }
}

/// Formats first and writes once, so a line is not interleaved with a service's output on the
/// same stderr. A closed or full stderr must not stop the manager, so errors are dropped.
fn emit(line: fmt::Arguments<'_>) {
    let line = line.to_string();
    match NONBLOCKING.get() {
        Some(mut file) => {
            let _ = file.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}
