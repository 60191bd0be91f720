//! The executor tests of executor.rs, each spawn made the way the manager arms the idle
//! executor of a keep-alive service for its next restart: `steward-executor --pooled FD`
//! started ahead, handed the spawn state and its fds (`Start::OnWord`); it takes every step,
//! then waits for the manager's word and execs. The service must see exactly what a fresh
//! executor leaves it, and a failing step is reported as a fresh executor reports it.

/// Every spawn goes through an executor armed for a restart.
const VIA: Via = Via::Worded;

include!("executor/common.rs");

/// An executor armed for a restart with `state`: our end of the pool socket, and the executor.
fn armed_for_restart(state: SpawnState) -> (UnixDatagram, std::process::Child) {
    handed(state, &steward_protocol::Start::OnWord, &[], &[])
}

#[test]
fn an_executor_armed_for_a_restart_takes_every_step_then_execs_on_the_word() {
    let dir = TempDir::new("worded-steps");
    // As the kernel names it, which is what /proc and pwd say.
    let here = std::fs::canonicalize(dir.path("")).unwrap();
    let mut state = state("/bin/sh", &["sh", "-c", "pwd -P > out"]);
    state.working_directory = here.to_str().unwrap().into();
    let (ours, child) = armed_for_restart(state);
    let pid = child.id();
    // In its working directory and asleep, waiting for the word: every step is taken.
    steward_integration_tests::wait_for_value(
        "the armed executor to wait in its working directory",
        || {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let asleep = stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('S'));
            (cwd, asleep)
        },
        |(cwd, asleep)| *asleep && cwd.as_deref() == Some(here.as_path()),
    );
    assert!(!dir.path("out").exists(), "it exec'd before the word");
    ours.send(&steward_protocol::GO).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Its end of the pool socket closed at the exec, with nothing reported.
    let mut buf = [0u8; 16];
    assert_eq!(ours.recv(&mut buf).unwrap(), 0);
    let pwd = std::fs::read_to_string(dir.path("out")).unwrap();
    assert_eq!(std::path::Path::new(pwd.trim()), here.as_path());
}

#[test]
fn an_executor_armed_for_a_restart_disarmed_exits_quietly() {
    let dir = TempDir::new("worded-disarm");
    let mut state = state("/bin/sh", &["sh", "-c", "echo ran > out"]);
    state.working_directory = dir.path("").to_str().unwrap().into();
    let (ours, child) = armed_for_restart(state);
    disarm_quietly(&ours, child);
    assert!(
        !dir.path("out").exists(),
        "a disarmed executor ran the service"
    );
}
