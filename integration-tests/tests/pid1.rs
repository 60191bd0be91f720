//! steward as PID 1 of a pid namespace (`unshare --pid --fork --mount-proc`): it reaps every
//! orphan, answers the init signals, and its power-off ends the namespace. Making the namespace
//! needs root (CAP_SYS_ADMIN), so these are ignored without it.

use steward_integration_tests::*;

/// A steward that is init of its own pid namespace. `unshare` is the child the harness
/// watches; on the way out it is SIGKILLed if still there (it ignores SIGTERM while it waits,
/// and `--kill-child` then takes the whole namespace down).
struct Init {
    s: Steward,
}

impl Init {
    fn start(config: &str) -> Init {
        let dir = temp_dir();
        let path = dir.path().join("steward.toml");
        std::fs::write(&path, config.replace("@DIR@", dir.path().to_str().unwrap())).unwrap();
        let cmd = Steward::command_under(PID_NAMESPACE, &bin("steward"), &path, dir.path());
        let s = Steward::spawn(cmd, dir);
        s.wait_for("version");
        Init { s }
    }

    /// steward's pid as the host sees it: unshare's only child.
    fn host_pid(&self) -> i32 {
        let unshare = self.s.pid();
        children(unshare)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("unshare {unshare} has no child"))
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if alive(self.s.pid()) {
            let _ = send_signal(self.s.pid(), libc::SIGKILL);
        }
    }
}

/// The children of `pid`, as (pid, state letter).
fn children_with_state(pid: i32) -> Vec<(i32, char)> {
    children(pid)
        .into_iter()
        .filter_map(|child| Some((child, process_state(child)?)))
        .collect()
}

const ORPHANS: &str = r#"
[service.sleeper]
exec = ["/bin/sleep", "1000"]

# Leaves 50 orphans behind: each inner shell exits at once, its sleep is reparented to init.
# The marker says they all exist.
[service.orphans]
exec = ["/bin/sh", "-c", "for i in $(seq 50); do sh -c 'sleep 0.3 &'; done; touch @DIR@/orphaned; exec sleep 1000"]
"#;

#[test]
#[ignore = "needs root"]
fn steward_is_pid_1_and_reaps_every_orphan() {
    let init = Init::start(ORPHANS);
    let s = &init.s;
    s.wait_for("orphans: started");
    let status = s.status();
    assert_eq!(status["manager"]["pid"], 1, "{status}");
    let steward = init.host_pid();
    // Only once they all exist can their being gone mean they were reaped.
    wait_until("the orphans to exist", || {
        s.dir.path().join("orphaned").exists()
    });
    // The 50 sleeps become steward's children, exit, and are reaped: what is left are the two
    // services' own processes, and no zombie.
    let mut last = Vec::new();
    wait_until("the orphans to be reaped", || {
        last = children_with_state(steward);
        last.len() == 2
    });
    assert!(last.iter().all(|&(_, state)| state != 'Z'), "{last:?}");
    assert_eq!(s.service("sleeper")["state"], "running");
}

const TWO: &str = r#"
[service.a]
exec = ["/bin/sleep", "1000"]

[service.b]
exec = ["/bin/sh", "-c", "trap '' TERM; exec sleep 1000"]
stop_timeout = "200ms"
"#;

#[test]
#[ignore = "needs root"]
fn a_power_off_signal_stops_everything_and_ends_the_namespace() {
    let mut init = Init::start(TWO);
    init.s.wait_for("b: started");
    let steward = init.host_pid();
    let services = children(steward);
    assert_eq!(services.len(), 2);
    send_signal(steward, libc::SIGRTMIN() + 4).unwrap();
    init.s.wait_exit();
    for line in [
        "shutting down to power off",
        "a: stopped",
        "b: stopped",
        "power off",
    ] {
        assert!(
            init.s.count(line) > 0,
            "no {line:?} in:\n{}",
            init.s.lines().join("\n")
        );
    }
    assert!(
        services.iter().all(|&p| !alive(p)),
        "a service outlived init"
    );
    assert!(!alive(steward));
}

#[test]
#[ignore = "needs root"]
fn stewardctl_poweroff_as_pid_1_ends_the_namespace() {
    let mut init = Init::start(TWO);
    init.s.wait_for("b: started");
    let (code, out, err) = init.s.ctl(&["poweroff"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "powering off");
    init.s.wait_exit();
    assert!(init.s.count("power off") > 0);
}

/// steward's own cgroup directories, as its log names them (`cgroups: v1 (…) at DIR; …`).
fn cgroup_bases(s: &Steward) -> Vec<std::path::PathBuf> {
    let line = s.wait_for("cgroups: ");
    let list = line.split_once("cgroups: ").unwrap().1;
    list.split("; ")
        .filter_map(|h| h.split_once(" at ").map(|(_, dir)| dir.trim().into()))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn sigterm_powers_a_container_off_and_leaves_no_cgroup_behind() {
    let mut init = Init::start(
        r#"
[service.a]
exec = ["/bin/sleep", "1000"]

[service.b]
exec = ["/bin/sh", "-c", "trap '' TERM; touch @DIR@/ignoring; exec sleep 1000"]
stop_timeout = "200ms"
"#,
    );
    // Only once b ignores SIGTERM can its SIGKILL be told apart.
    wait_until("b to ignore SIGTERM", || {
        init.s.dir.path().join("ignoring").exists()
    });
    let steward = init.host_pid();
    let services = children(steward);
    assert_eq!(services.len(), 2);
    let bases = cgroup_bases(&init.s);
    assert!(
        !bases.is_empty() && bases.iter().all(|b| b.is_dir()),
        "{bases:?}"
    );
    // What `docker stop` sends.
    send_signal(steward, libc::SIGTERM).unwrap();
    init.s.wait_exit();
    for line in [
        "shutting down to power off",
        "a: stopped",
        // b ignores SIGTERM: it is killed after its 200 ms stop_timeout.
        "b: still running",
        "sending SIGKILL",
        "b: stopped",
        "power off",
    ] {
        assert!(
            init.s.count(line) > 0,
            "no {line:?} in:\n{}",
            init.s.lines().join("\n")
        );
    }
    assert_eq!(init.s.count("re-executing"), 0);
    assert!(
        services.iter().all(|&p| !alive(p)),
        "a service outlived init"
    );
    assert!(!alive(steward));
    let left: Vec<_> = bases.iter().filter(|b| b.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
