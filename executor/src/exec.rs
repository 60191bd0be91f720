//! The last step: the service's environment and the execve that replaces the executor.

use alloc::ffi::CString;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::convert::Infallible;

use steward_protocol::Step;

use crate::failure::Failure;
use crate::sys::{self, Errno};

/// The environment the service gets: the manager's, plus each of `pid_vars` (`LISTEN_PID`,
/// `WATCHDOG_PID`) set to `pid`, this process, which only the executor knows. A stale one (the
/// manager's own, when it was socket-activated itself) is dropped rather than shadowing ours.
pub fn environment(env: &[String], pid_vars: &[String], pid: i32) -> Vec<String> {
    let stale = |var: &String| {
        pid_vars.iter().any(|name| {
            var.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('='))
        })
    };
    env.iter()
        .filter(|var| !stale(var))
        .cloned()
        .chain(pid_vars.iter().map(|name| format!("{name}={pid}")))
        .collect()
}

/// Replaces the executor with the service. Returns only the reason it could not.
pub fn exec(path: &str, argv: &[String], env: &[String]) -> Result<Infallible, Failure> {
    let fail = |errno| Failure::new(Step::Exec, errno);
    let path = c_string(path).map_err(fail)?;
    let argv = argv
        .iter()
        .map(|a| c_string(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let env = env
        .iter()
        .map(|e| c_string(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    Err(fail(sys::execve(&path, &argv, &env)))
}

/// A string the kernel can take: an interior NUL would silently cut it, so it is refused.
fn c_string(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pid_variables_are_added_only_when_asked() {
        let env = strings(&["PATH=/bin", "LISTEN_FDS=1"]);
        assert_eq!(environment(&env, &[], 42), env);
        assert_eq!(
            environment(&env, &strings(&["LISTEN_PID", "WATCHDOG_PID"]), 42),
            strings(&[
                "PATH=/bin",
                "LISTEN_FDS=1",
                "LISTEN_PID=42",
                "WATCHDOG_PID=42"
            ])
        );
    }

    #[test]
    fn a_stale_pid_variable_is_replaced() {
        let env = strings(&["LISTEN_PID=1", "A=1", "LISTEN_PIDX=2", "WATCHDOG_PID=3"]);
        assert_eq!(
            environment(&env, &strings(&["LISTEN_PID", "WATCHDOG_PID"]), 7),
            strings(&["A=1", "LISTEN_PIDX=2", "LISTEN_PID=7", "WATCHDOG_PID=7"])
        );
    }

    #[test]
    fn interior_nul_is_an_exec_failure() {
        let err = exec("/bin/true", &strings(&["tr\0ue"]), &[]).unwrap_err();
        assert_eq!(err, Failure::new(Step::Exec, Errno::EINVAL));
    }
}
