//! A panic never ends PID 1: the manager built with the cargo feature `fault-injection`
//! (`steward-faulty`, which `make build` makes) panics on `stewardctl debug panic`, and
//! re-executes itself from the snapshot of its state; its services, their sockets and their
//! clients never notice. A second panic within a minute goes to the emergency path instead
//! of looping. Any other build refuses the debug commands.

use std::time::{Duration, Instant};

use steward_integration_tests::*;

const SERVICES: &str = r#"
[service.eager]
exec = ["/bin/sleep", "1000"]
keep_alive = true

# Exits at once twice, then stays: two automatic restarts to carry across.
[service.flaky]
exec = ["/bin/sh", "-c", "n=$(cat @DIR@/count 2>/dev/null || echo 0); echo $((n+1)) > @DIR@/count; [ $n -ge 2 ] && exec sleep 1000; exit 1"]
keep_alive = true
restart_delay = "0"

[service.once]
exec = ["/bin/false"]

# Exits after every connection: the lazy path is exercised on every request.
[service.lazy]
exec = ["@PROBE@", "serve", "--exit-after-each"]
lazy = true
keep_alive = true
[[service.lazy.socket]]
path = "@DIR@/lazy.sock"

[service.inst]
exec = ["@PROBE@", "connection"]
accept = true
[[service.inst.socket]]
path = "@DIR@/inst.sock"
"#;

/// The fault-injection steward on `SERVICES`, run by `wrapper` (empty: by itself).
fn start(wrapper: &[&str]) -> Steward {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    let text = SERVICES
        .replace("@DIR@", dir.path().to_str().unwrap())
        .replace("@PROBE@", bin("steward-probe").to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    let faulty = bin("steward-faulty");
    assert!(
        faulty.exists(),
        "{} is missing: `make build` makes it",
        faulty.display()
    );
    let cmd = Steward::command_under(wrapper, &faulty, &path, dir.path());
    let s = Steward::spawn(cmd, dir);
    s.wait_for("version");
    s
}

/// Kills what a test started in a pid namespace (unshare takes the namespace down with it).
struct Reaper(i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = send_signal(self.0, libc::SIGKILL);
        }
    }
}

/// What `status` says of a service that does not change under client load.
fn settled(s: &Steward, name: &str) -> (String, String, String) {
    let v = s.service(name);
    (
        v["state"].to_string(),
        v["pid"].to_string(),
        v["restarts"].to_string(),
    )
}

fn wait_ready(s: &Steward) {
    s.wait_state("eager", "running");
    wait_until("flaky running after two restarts", || {
        let flaky = s.service("flaky");
        flaky["restarts"] == 2 && flaky["state"] == "running"
    });
    s.wait_state("once", "failed");
}

#[test]
#[ignore = "needs root"]
fn a_panic_as_pid_1_under_client_load_changes_nothing_a_client_or_service_sees() {
    let s = start(PID_NAMESPACE);
    let _reaper = Reaper(s.pid());
    wait_ready(&s);
    let before: Vec<_> = ["eager", "flaky", "once"]
        .iter()
        .map(|n| settled(&s, n))
        .collect();

    let load = Load::start(s.dir.path(), &LAZY_AND_ACCEPT);

    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = s.ctl(&["debug", "panic"]);
    assert_eq!((code, out.trim()), (0, "panicking"), "{err}");
    s.wait_for("recovered from a panic");
    // Load goes on for a while after the recovery too.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(began.elapsed()));
    let tallies = load.stop();

    let failed: Vec<&String> = tallies.iter().flat_map(|t| &t.failed).collect();
    let served: u64 = tallies.iter().map(|t| t.served).sum();
    eprintln!("served {served} connections across the panic");
    assert!(failed.is_empty(), "failed connections: {failed:?}");
    assert!(tallies.iter().all(|t| t.served > 0), "{tallies:?}");

    assert_eq!(s.status()["manager"]["pid"], 1, "still PID 1");
    let after: Vec<_> = ["eager", "flaky", "once"]
        .iter()
        .map(|n| settled(&s, n))
        .collect();
    assert_eq!(after, before, "state, pid and restarts of each service");
    assert_eq!(s.service("lazy")["failure"], serde_json::Value::Null);
    assert_eq!(s.service("inst")["failure"], serde_json::Value::Null);
    let log = s.lines().join("\n");
    assert!(
        log.contains("panic at ") && log.contains("stewardctl debug panic"),
        "{log}"
    );
    assert_eq!(s.count("recovered from a panic"), 1);
    // And it still supervises: the kept-alive service is restarted when killed.
    let eager = s.service("eager")["pid"].as_i64().unwrap();
    let host_eager = children(children(s.pid())[0])
        .into_iter()
        .find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .is_ok_and(|st| st.lines().any(|l| l == format!("NSpid:\t{p}\t{eager}")))
        })
        .expect("eager's host pid");
    send_signal(host_eager, libc::SIGKILL).unwrap();
    wait_until("eager restarted", || {
        let now = s.service("eager");
        now["state"] == "running" && now["pid"].as_i64() != Some(eager)
    });
}

#[test]
#[ignore = "needs root"]
fn two_panics_within_a_minute_go_to_the_emergency_path_not_a_loop() {
    let s = start(PID_NAMESPACE);
    let _reaper = Reaper(s.pid());
    wait_ready(&s);
    let (code, _, err) = s.ctl(&["debug", "panic"]);
    assert_eq!(code, 0, "{err}");
    s.wait_for("recovered from a panic");
    let steward = children(s.pid())[0];
    let (code, _, err) = s.ctl(&["debug", "panic"]);
    assert_eq!(code, 0, "{err}");
    s.wait_for("cannot go on as PID 1");
    s.wait_for("reaping orphans");
    let log = s.lines().join("\n");
    assert!(log.contains("the last recovery was only"), "{log}");
    assert_eq!(s.count("recovered from a panic"), 1, "no second recovery");
    assert!(alive(steward), "init is still there");
    assert_eq!(children(s.pid()), [steward], "the same process");
}

#[test]
fn a_panic_outside_pid_1_recovers_too() {
    let s = start(&[]);
    wait_ready(&s);
    let before: Vec<_> = ["eager", "flaky", "once"]
        .iter()
        .map(|n| settled(&s, n))
        .collect();
    let (code, _, err) = s.ctl(&["debug", "panic"]);
    assert_eq!(code, 0, "{err}");
    s.wait_for("recovered from a panic");
    assert_eq!(s.status()["manager"]["pid"], s.pid());
    let after: Vec<_> = ["eager", "flaky", "once"]
        .iter()
        .map(|n| settled(&s, n))
        .collect();
    assert_eq!(after, before);
    let line = first_line(&s.dir.path().join("inst.sock"), Duration::from_secs(10)).unwrap();
    assert!(line.starts_with("instance pid "), "{line}");
}

#[test]
fn debug_hang_stops_the_loop_without_exiting() {
    let s = start(&[]);
    s.wait_state("eager", "running");
    let (code, out, err) = s.ctl(&["debug", "hang"]);
    assert_eq!((code, out.trim()), (0, "hanging"), "{err}");
    // Nobody answers any more; the process is still there.
    let (status, _, _) = run(std::process::Command::new("timeout")
        .arg("1")
        .arg(bin("stewardctl"))
        .arg("--control")
        .arg(s.control())
        .arg("status"));
    assert_eq!(status.code(), Some(124), "timed out");
    assert!(alive(s.pid()));
    s.signal(libc::SIGKILL);
}

#[test]
fn a_build_without_fault_injection_refuses_the_debug_commands() {
    let s = Steward::start("[service.a]\nexec = [\"/bin/sleep\", \"1000\"]\n");
    s.wait_state("a", "running");
    for word in ["panic", "hang"] {
        let (code, out, err) = s.ctl(&["debug", word]);
        assert_eq!(code, 1, "{out}");
        assert!(err.contains("not built with fault-injection"), "{err}");
    }
    assert_eq!(s.service("a")["state"], "running");
    assert_eq!(s.count("panic"), 0);
}
