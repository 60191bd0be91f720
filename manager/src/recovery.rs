//! A panic never ends PID 1.
//!
//! Whatever goes wrong inside the manager (a panic, an `expect` after "nothing fails") may
//! have left its state half-changed, so the panicking image is never resumed: it is replaced.
//! The loop keeps a snapshot of the manager state as it was after the last event it fully
//! handled (each unit saved again whenever the registry handed it out to change, see
//! [`crate::registry::Registry::take_changed`]; the output rings are left out, they change at
//! every line). The panic hook turns that snapshot into the state a `reexec` hands over,
//! clears FD_CLOEXEC on exactly the fds it names, and execs the running binary
//! (`/proc/self/exe`) with `--deserialize FD --recovering WHAT --panicked-at NS`. The new
//! image takes over as after a `reexec`: the same pid, every service and process, every
//! listening socket (clients wait in the backlog meanwhile, none is refused). What the
//! panicking event itself changed is lost; the new image checks that every process it was
//! told of still runs.
//!
//! It cannot loop: a panic within [`QUIET`] of the last recovery goes, as PID 1, to the
//! emergency path; outside PID 1 the manager then exits with the message. The hook works the
//! same under `panic = "abort"` (release) as under unwinding (debug): it runs before either.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use steward_protocol::reexec as saved;

use crate::event_loop::c_string;
use crate::log;
use crate::pid1;
use crate::registry::UnitId;
use crate::sys;

/// A panic this soon after the last recovery is not recovered from: it would likely repeat.
pub const QUIET: Duration = Duration::from_secs(60);

/// A unit in the snapshot, encoded ([`saved::encode_service`]). Its timers are in it as a
/// reexec writes them, but each counted from [`Snapshot::base`] to when it is due, not as the
/// time left (which changes while nothing else does): one allocation a unit, sized exactly,
/// where a list of deadlines beside it was another, freed and made again as timers come and go.
pub type SavedUnit = Box<[u8]>;

/// The manager state as of the last event fully handled.
pub struct Snapshot {
    /// Everything but the services and the config files (both lists are empty here).
    pub head: saved::ManagerState,
    /// The config files, shared with the manager.
    pub config: Rc<[(PathBuf, String)]>,
    /// Each unit as saved at its last change ([`saved::encode_service`]: encoded, a unit
    /// costs a tenth of its decoded size, which every unit would cost all the time for a
    /// panic that may never come).
    pub units: BTreeMap<UnitId, SavedUnit>,
    /// What the units' timers are counted from.
    pub base: Instant,
    /// What to execute (argv[0] too) and its command line, without the flags a takeover adds.
    pub exe: OsString,
    /// The command line.
    pub args: Vec<OsString>,
}

impl Snapshot {
    /// The state to hand over, its timers counted from `now`.
    fn state(&self, now: Instant) -> Result<saved::ManagerState, saved::DecodeError> {
        let mut state = self.head.clone();
        state.config = saved_config(&self.config);
        state.written_ns = monotonic_ns();
        state.services = self
            .units
            .values()
            .map(|service| {
                let mut service = saved::decode_service(service)?;
                for (_, ns) in &mut service.timers {
                    let due = self.base + Duration::from_nanos(*ns);
                    let left = due.saturating_duration_since(now);
                    *ns = left.as_nanos().min(u64::MAX as u128) as u64;
                }
                Ok(service)
            })
            .collect::<Result<_, _>>()?;
        Ok(state)
    }
}

/// The config files as a saved state holds them.
pub fn saved_config(sources: &[(PathBuf, String)]) -> Vec<(Vec<u8>, String)> {
    sources
        .iter()
        .map(|(path, text)| (path.as_os_str().as_bytes().to_vec(), text.clone()))
        .collect()
}

thread_local! {
    /// The manager is one thread: its snapshot lives beside it, for the hook to find.
    static SNAPSHOT: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

/// CLOCK_MONOTONIC (ns) of the last recovery, from `--panicked-at`.
static PANICKED_AT: OnceLock<u64> = OnceLock::new();

/// Records when the last recovery was (the `--panicked-at` of our command line).
pub fn set_panicked_at(ns: u64) {
    let _ = PANICKED_AT.set(ns);
}

/// When the last recovery was, for a `reexec` to pass on: the guard against a loop holds
/// across upgrades.
pub fn panicked_at() -> Option<u64> {
    PANICKED_AT.get().copied()
}

/// Changes the snapshot (the loop does, after each event).
pub fn update(change: impl FnOnce(&mut Option<Snapshot>)) {
    SNAPSHOT.with(|cell| {
        if let Ok(mut snapshot) = cell.try_borrow_mut() {
            change(&mut snapshot);
        }
    });
}

/// From now on a panic re-executes the manager (or, within [`QUIET`] of the last time, goes
/// to the emergency path as PID 1).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = match info.location() {
            Some(at) => format!("at {at}: {}", payload(info)),
            None => payload(info),
        };
        log::warning(format_args!("panic {what}"));
        let why = recover(&what);
        if pid1::is_init() {
            pid1::emergency(&format!("panicked ({what}) and cannot recover: {why}"));
        }
        log::manager(format_args!(
            "panicked and cannot recover: {why}; exiting (the services keep running, unsupervised)"
        ));
    }));
}

fn payload(info: &std::panic::PanicHookInfo<'_>) -> String {
    if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Execs the running binary on the snapshot; returns only on failure, with why.
fn recover(what: &str) -> String {
    let now = monotonic_ns();
    if let Some(at) = panicked_at() {
        let since = Duration::from_nanos(now.saturating_sub(at));
        if since < QUIET {
            return format!(
                "the last recovery was only {:.1}s ago (a loop is likelier than luck)",
                since.as_secs_f64()
            );
        }
    }
    let taken = SNAPSHOT.with(|cell| {
        let snapshot = cell.try_borrow().ok()?;
        let snapshot = snapshot.as_ref()?;
        Some((
            snapshot.state(Instant::now()),
            snapshot.exe.clone(),
            snapshot.args.clone(),
        ))
    });
    let Some((state, exe, args)) = taken else {
        return "no snapshot of the state (the panic came before the loop ran, or while the snapshot was being taken)".into();
    };
    let state = match state {
        Ok(state) => state,
        Err(e) => return format!("cannot decode the snapshot: {e}"),
    };
    let bytes = match saved::encode(&state) {
        Ok(bytes) => bytes,
        Err(e) => return format!("cannot encode the state: {e}"),
    };
    let memfd = match crate::spawn::sealed_memfd("steward-manager-state", &bytes) {
        Ok(memfd) => memfd,
        Err(e) => return format!("cannot write the state: {e}"),
    };
    let mut fds = vec![state.control_fd, memfd.as_raw_fd()];
    fds.extend(state.notify_fd);
    fds.extend(state.watchdog_fd);
    for s in &state.services {
        fds.extend(crate::unit::named_fds(s));
    }
    for fd in fds {
        // One the panicking event closed is missing; the new image copes with that.
        let _ = sys::inheritable(fd);
    }
    let mut argv: Vec<CString> = vec![c_string(exe.into_vec())];
    argv.extend(args.into_iter().map(|a| c_string(a.into_vec())));
    for word in [
        "--deserialize".to_string(),
        memfd.as_raw_fd().to_string(),
        "--recovering".to_string(),
        what.to_string(),
        "--panicked-at".to_string(),
        now.to_string(),
    ] {
        argv.push(c_string(word.into_bytes()));
    }
    let argv: Vec<&CStr> = argv.iter().map(CString::as_c_str).collect();
    log::manager(format_args!(
        "recovering: re-executing /proc/self/exe with the state of before the panic ({} services)",
        state.services.len()
    ));
    let error = sys::execv(c"/proc/self/exe", &argv);
    // Still here: the memfd closes with us, and nothing else was changed.
    format!(
        "cannot re-execute: {}",
        sys::errno_text(error.raw_os_error().unwrap_or(0))
    )
}

/// CLOCK_MONOTONIC in nanoseconds: shared by both sides of the exec.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_units_timers_are_handed_over_as_the_time_left_from_when_they_are_due() {
        let base = Instant::now();
        let mut service = crate::unit::blank();
        service.name = "a".into();
        // Saved as due 5 s and 1 s after the base.
        service.timers = vec![
            ("restart_delay".into(), 5_000_000_000),
            ("stop_timeout".into(), 1_000_000_000),
        ];
        let bytes = saved::encode_service(&service).unwrap().into_boxed_slice();
        let snapshot = Snapshot {
            head: saved::ManagerState {
                version: String::new(),
                exe: Vec::new(),
                config: Vec::new(),
                written_ns: 0,
                control_fd: 3,
                client_fd: None,
                notify_fd: None,
                watchdog_fd: None,
                stop_jobs: Vec::new(),
                services: Vec::new(),
            },
            config: Rc::from([]),
            units: BTreeMap::from([(UnitId::from_raw(1), bytes)]),
            base,
            exe: OsString::new(),
            args: Vec::new(),
        };
        // A panic 2 s after the base: 3 s left on the one, the other was due already.
        let state = snapshot.state(base + Duration::from_secs(2)).unwrap();
        assert_eq!(
            state.services[0].timers,
            [
                ("restart_delay".to_string(), 3_000_000_000),
                ("stop_timeout".to_string(), 0)
            ]
        );
    }
}
