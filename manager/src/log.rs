//! The manager's own log: one line per event on stderr, `steward: NAME: message`.

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

/// Formats first and writes once, so a line is not interleaved with a service's output on the
/// same stderr. A closed or full stderr must not stop the manager, so errors are dropped.
fn emit(line: fmt::Arguments<'_>) {
    let line = line.to_string();
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
