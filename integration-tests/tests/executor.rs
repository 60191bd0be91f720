//! Runs the real `steward-executor` binary against the real kernel: what a service sees after it,
//! and what the manager sees when a step fails.
//!
//! Fds reach the executor the way the manager hands them over: at fixed numbers, without
//! FD_CLOEXEC. That is arranged in the forked child only (`pre_exec`), so no fd of one test
//! ever loses FD_CLOEXEC in the test process and leaks into another test's children.
//!
//! The same tests run through a pooled executor in executor_pooled.rs, and through an armed one
//! in executor_armed.rs; those about how a fresh
//! executor is started are here only.

/// Every spawn is a fresh executor reading its memfd.
const VIA: Via = Via::Fresh;

include!("executor/common.rs");

const BY_HAND: &str =
    "steward-executor: this program is started by steward to spawn services; do not run it by hand";

#[test]
fn refuses_to_run_by_hand() {
    for args in [
        &[][..],
        &["--help"],
        &["--deserialize"],
        &["--deserialize", "3", "x"],
    ] {
        let out = Command::new(bin("steward-executor"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            BY_HAND,
            "{args:?}"
        );
    }
}

#[test]
fn version() {
    let out = Command::new(bin("steward-executor"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!(
            "steward-executor {} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            steward_protocol::VERSION
        )
    );
}

#[test]
fn unreadable_states_are_refused_clearly() {
    let (pipe_read, pipe_write) = pipe();
    drop(pipe_read);
    let mut truncated = steward_protocol::encode(&state("/bin/true", &["true"])).unwrap();
    truncated.pop();
    let cases: Vec<(&str, Option<OwnedFd>, &str)> = vec![
        (
            "garbage",
            Some(memfd(b"not a spawn state, not at all")),
            "bad magic",
        ),
        ("empty", Some(memfd(b"")), "truncated"),
        ("truncated", Some(memfd(&truncated)), "truncated"),
        ("pipe", Some(pipe_write), "not a memfd or regular file"),
        ("closed", None, "Bad file descriptor"),
    ];
    for (what, fd, reason) in cases {
        let fds = fd.map(|fd| vec![(fd, 9)]).unwrap_or_default();
        let out = run(&["--deserialize", "9"], fds, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.starts_with("steward-executor: cannot read the spawn state from fd 9: "),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(reason), "{what}: {stderr}");
    }
    let out = run(&["--deserialize", "nine"], vec![], false);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "steward-executor: cannot read the spawn state from fd nine: not a file descriptor number"
    );
}
