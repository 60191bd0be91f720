//! Boot order: `after` and `requires` through the real manager. Services record their own time
//! stamps (CLOCK_REALTIME in microseconds, from `date +%s%6N`), and the test checks the order
//! from them: nothing starts before what it waits for is ready, independent ones are not
//! delayed, shutdown goes in reverse; a failed requirement takes its dependents along and its
//! recovery brings them back; `stewardctl start` waits.

use std::collections::HashMap;
use std::path::Path;

use steward_integration_tests::*;

/// Appends `EVENT NAME TIME` to the test's log of events: a shell fragment for a service.
fn mark(event: &str, name: &str) -> String {
    format!("echo {event} {name} $(date +%s%6N) >> @DIR@/events")
}

/// The recorded events: (event, service) → time in µs.
fn events(dir: &Path) -> HashMap<(String, String), u64> {
    std::fs::read_to_string(dir.join("events"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                (w.next()?.to_string(), w.next()?.to_string()),
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn at(events: &HashMap<(String, String), u64>, event: &str, name: &str) -> u64 {
    *events
        .get(&(event.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {event} of {name} in {events:?}"))
}

/// A long-running service: marks its start, and its stop when it gets SIGTERM.
fn daemon(name: &str, extra: &str) -> String {
    format!(
        "[service.{name}]\nexec = [\"/bin/sh\", \"-c\", \"trap '{stop}; exit 0' TERM; {start}; sleep 1000 & wait\"]\n{extra}\n",
        stop = mark("stop", name),
        start = mark("start", name),
    )
}

/// The boot graph of the issue: setup task → mount-like task → notify database → two apps
/// that require it; a lazy service one app is `after`; two independent services.
fn graph() -> String {
    let db = format!(
        "[service.db]\nexec = [\"/bin/sh\", \"-c\", \"trap '{stop}; exit 0' TERM; {start}; sleep 0.4; {ready}; systemd-notify --ready; sleep 1000 & wait\"]\nready = \"notify\"\nnotify_access = \"all\"\nrequires = [\"mount\"]\n",
        stop = mark("stop", "db"),
        start = mark("start", "db"),
        ready = mark("ready", "db"),
    );
    [
        format!(
            "[service.setup]\nexec = [\"/bin/sh\", \"-c\", \"{}; sleep 0.2; {}\"]\nready = \"exit\"\n",
            mark("start", "setup"),
            mark("done", "setup")
        ),
        format!(
            "[service.mount]\nexec = [\"/bin/sh\", \"-c\", \"{}; sleep 0.2; {}\"]\nready = \"exit\"\nafter = [\"setup\"]\n",
            mark("start", "mount"),
            mark("done", "mount")
        ),
        db,
        daemon("app1", "requires = [\"db\"]\nafter = [\"cache\"]"),
        daemon("app2", "requires = [\"db\"]"),
        "[service.cache]\nexec = [\"/bin/sleep\", \"1000\"]\nlazy = true\nkeep_alive = true\n[[service.cache.socket]]\npath = \"@DIR@/cache.sock\"\n".to_string(),
        daemon("solo1", ""),
        daemon("solo2", ""),
    ]
    .join("\n")
}

#[test]
fn a_boot_graph_starts_in_order_without_needless_waits_and_stops_in_reverse() {
    let mut s = Steward::start(&graph());
    for name in ["app1", "app2", "solo1", "solo2", "db"] {
        s.wait_state(name, "running");
    }
    s.wait_state("cache", "listening");
    let e = events(s.dir.path());
    assert!(at(&e, "start", "mount") >= at(&e, "done", "setup"));
    assert!(at(&e, "start", "db") >= at(&e, "done", "mount"));
    for app in ["app1", "app2"] {
        assert!(
            at(&e, "start", app) >= at(&e, "ready", "db"),
            "{app} started before db was ready: {e:?}"
        );
    }
    // The independent ones did not wait for the setup tasks or the database.
    for solo in ["solo1", "solo2"] {
        assert!(
            at(&e, "start", solo) < at(&e, "done", "setup"),
            "{solo} was delayed: {e:?}"
        );
    }
    // Shutdown in reverse: the apps before the database they require.
    assert!(s.terminate().success());
    let e = events(s.dir.path());
    for app in ["app1", "app2"] {
        assert!(
            at(&e, "stop", "db") >= at(&e, "stop", app),
            "db stopped before {app}: {e:?}"
        );
    }
}

#[test]
fn a_failed_requirement_fails_its_dependents_and_its_recovery_brings_them_back() {
    let s = Steward::start(&format!(
        "{}\n{}\n{}\n[service.db]\nexec = [\"/bin/sh\", \"-c\", \"test -e @DIR@/db-ok || exit 1; exec sleep 1000\"]\n",
        daemon("app1", "requires = [\"db\"]"),
        daemon("app2", "requires = [\"db\"]"),
        daemon("solo", ""),
    ));
    s.wait_state("db", "failed");
    for app in ["app1", "app2"] {
        let failed = s.wait_state(app, "failed");
        assert_eq!(
            failed["failure"]["reason"], "dependency db failed",
            "{failed}"
        );
        assert!(failed["pid"].is_null());
    }
    // Nothing else is touched.
    s.wait_state("solo", "running");
    assert_eq!(s.count("solo: stopping"), 0);

    // Recovery: db works now and is started by hand; its dependents start again.
    std::fs::write(s.dir.path().join("db-ok"), "").unwrap();
    let (code, out, err) = s.ctl(&["start", "db"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "db: running\n");
    s.wait_state("app1", "running");
    s.wait_state("app2", "running");

    // A failure while running stops them first.
    let db = s.service("db")["pid"].as_i64().unwrap() as i32;
    send_signal(db, libc::SIGKILL).unwrap();
    s.wait_for("app1: dependency db failed");
    for app in ["app1", "app2"] {
        let failed = s.wait_state(app, "failed");
        assert_eq!(failed["failure"]["reason"], "dependency db failed");
    }
    assert_eq!(s.service("solo")["state"], "running");
}

#[test]
fn stewardctl_start_waits_for_ready_and_says_what_failed() {
    let s = Steward::start(
        r#"
[service.slow]
exec = ["/bin/sh", "-c", "sleep 0.5; systemd-notify --ready; exec sleep 1000"]
ready = "notify"
notify_access = "all"
autostart = false

[service.app]
exec = ["/bin/sleep", "1000"]
requires = ["slow"]
autostart = false

[service.bad]
exec = ["/bin/sh", "-c", "exit 7"]
ready = "exit"
autostart = false

[service.never]
exec = ["/bin/sleep", "1000"]
ready = "notify"
start_timeout = "infinity"
autostart = false
"#,
    );
    s.wait_for("version");
    // `start app` starts what it requires too, and returns once both are ready.
    let started = std::time::Instant::now();
    let (code, out, err) = s.ctl(&["start", "app"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "did not wait"
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["app: running", "slow: running"]);

    let (code, out, err) = s.ctl(&["start", "bad"]);
    assert_eq!(code, 1);
    assert_eq!(out, "bad: failed: exited with status 7\n");
    assert_eq!(err, "stewardctl: bad failed: exited with status 7\n");

    // --no-block returns at once.
    let (code, out, _) = s.ctl(&["start", "--no-block", "never"]);
    assert_eq!(code, 0);
    assert_eq!(out, "never: starting\n");

    // `stop` waits until at rest; what requires it goes first.
    let (code, out, err) = s.ctl(&["stop", "slow"]);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["app: inactive", "slow: inactive"]);
    let stops: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.ends_with(": stopping (SIGTERM)"))
        .collect();
    assert_eq!(
        stops,
        [
            "steward: app: stopping (SIGTERM)",
            "steward: slow: stopping (SIGTERM)"
        ]
    );
}

/// The manager's ends of the connections accepted on the control socket at `control`, as
/// `/proc/<pid>/fd` names them: an accepted unix socket carries its listener's path.
fn control_connections(control: &Path) -> Vec<String> {
    let control = control.display().to_string();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected.
            (cols.len() == 8 && cols[5] == "03" && cols[7] == control)
                .then(|| format!("socket:[{}]", cols[6]))
        })
        .collect()
}

#[test]
fn a_client_killed_while_waiting_leaks_nothing() {
    let s = Steward::start(
        r#"
[service.never]
exec = ["/bin/sleep", "1000"]
ready = "notify"
start_timeout = "infinity"
autostart = false
"#,
    );
    // An answer from the loop, not the version line: after that line and before its first
    // wait, the manager still reads /proc/self/smaps (to drop its start-up pages) on an fd.
    assert_eq!(s.service("never")["state"], "inactive");
    // The manager may not have seen that answer's client hang up yet: its end of the
    // connection is no part of the baseline.
    let answered = control_connections(&s.control());
    let before: Vec<_> = fd_table(s.pid())
        .into_iter()
        .filter(|(_, target)| !answered.contains(target))
        .collect();
    for _ in 0..20 {
        let mut client = spawn_fresh(
            std::process::Command::new(bin("stewardctl"))
                .arg("--control")
                .arg(s.control())
                .args(["start", "never"])
                .stdout(std::process::Stdio::null()),
        );
        wait_until("the client to wait", || {
            s.service("never")["state"] == "starting"
        });
        client.kill().unwrap();
        client.wait().unwrap();
        let (code, _, _) = s.ctl(&["stop", "never"]);
        assert_eq!(code, 0);
    }
    wait_for_value(
        &format!("the fd table to settle to {before:?}"),
        || fd_table(s.pid()),
        |now| now.len() == before.len(),
    );
}

#[test]
fn a_cycle_and_an_unknown_name_are_errors_naming_the_services_at_their_positions() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(
        &path,
        "[service.a]\nexec = [\"/bin/true\"]\nafter = [\"b\"]\n\n[service.b]\nexec = [\"/bin/true\"]\nrequires = [\"a\", \"ghost\"]\n",
    )
    .unwrap();
    let (status, _, err) = run(std::process::Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&path));
    assert_eq!(status.code(), Some(1));
    let p = path.display();
    assert!(
        err.contains(&format!(
            "{p}:7:18: service `b`: `requires` names `ghost`, which no service has"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:3:10: dependency cycle: a -> b -> a")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:7:13: dependency cycle: a -> b -> a")),
        "{err}"
    );
}

#[test]
fn a_stop_through_services_already_at_rest_finishes() {
    let s = Steward::start(
        r#"
[service.setup]
exec = ["/bin/true"]
ready = "exit"

[service.mount]
exec = ["/bin/true"]
ready = "exit"
requires = ["setup"]

[service.db]
exec = ["/bin/sleep", "1000"]
requires = ["mount"]
"#,
    );
    s.wait_state("db", "running");
    // setup and mount exited already: their stops change nothing, and must not hold up
    // the one behind them.
    let (code, out, err) = s.ctl(&["stop", "setup"]);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["db: inactive", "mount: exited", "setup: exited"]);
}
