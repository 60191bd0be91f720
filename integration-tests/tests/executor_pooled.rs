//! The executor tests of executor.rs, each spawn made the way the manager uses an idle executor
//! of a service's `executor_pool`: `steward-executor --pooled FD` started ahead, then handed the
//! spawn state and its fds in one message. A pooled executor must leave the service exactly
//! what a fresh one leaves it.

/// Every spawn goes through a pooled executor.
const VIA: Via = Via::Pooled;

include!("executor/common.rs");

#[test]
fn a_pool_socket_closed_unused_ends_the_executor_quietly() {
    let (ours, theirs) = pool_pair();
    let child = start(
        &["--pooled", "40"],
        vec![(OwnedFd::from(theirs), 40)],
        false,
    );
    drop(ours);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn an_idle_executor_holds_little_memory_of_its_own() {
    let (ours, theirs) = pool_pair();
    let mut child = start(
        &["--pooled", "40"],
        vec![(OwnedFd::from(theirs), 40)],
        false,
    );
    let pid = child.id() as i32;
    // Asleep: its only wait is for the handover, its receive buffer made already.
    steward_integration_tests::wait_for_value(
        "the idle executor to wait for its spawn state",
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('S'))
        },
    );
    // Its stack, its data and the pages of its allocator it wrote: 28 KiB here. The 64 KiB
    // receive buffer, zero already in .bss, must not be written (it was: 84 KiB).
    let anon = steward_integration_tests::anon_rss_kib(pid);
    drop(ours);
    assert!(child.wait().unwrap().success());
    assert!(
        anon <= 48,
        "an idle executor has {anon} KiB of anonymous memory"
    );
}

#[test]
fn a_handover_whose_fds_do_not_match_is_refused_clearly() {
    let (ours, theirs) = pool_pair();
    let child = start(
        &["--pooled", "40"],
        vec![(OwnedFd::from(theirs), 40)],
        false,
    );
    let state = steward_protocol::encode(&state("/bin/true", &["true"])).unwrap();
    // Two fds announced, none sent.
    send_with_fds(
        &ours,
        &steward_protocol::handover(&[5, 6], &steward_protocol::Start::Now, &state),
        &[],
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the spawn state from fd 40: 2 fds announced, 0 received"),
        "{stderr}"
    );
}
