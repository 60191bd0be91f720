//! The service watchdog through real sd_notify clients written by others (systemd-notify,
//! python3-systemd): a service that stops sending `WATCHDOG=1` is killed with its
//! `watchdog_signal` within its interval and restarted; one that keeps pinging is never
//! touched. (The hardware watchdog of PID 1 is `make vm-test`'s: it needs a device.)

use steward_integration_tests::*;

/// CLOCK_REALTIME in µs, as `date +%s%6N` writes it.
fn stamp(file: &std::path::Path) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_service_that_stops_pinging_is_killed_with_sigabrt_within_its_interval_and_restarted() {
    // systemd-notify pings three times (it is a child of the shell: notify_access = "all"),
    // then the service goes quiet. The shell records when it sent its last ping and when SIGABRT came.
    let s = Steward::start(
        r#"
[service.quiet]
exec = ["/bin/sh", "-c", "env > @DIR@/env.$$; trap 'date +%s%6N > @DIR@/k.$$; mv @DIR@/k.$$ @DIR@/killed.$$; exit 134' ABRT; systemd-notify --ready; for i in 1 2 3; do date +%s%6N > @DIR@/l.$$; mv @DIR@/l.$$ @DIR@/last.$$; systemd-notify WATCHDOG=1; sleep 0.2; done; sleep 1000 & wait"]
ready = "notify"
notify_access = "all"
watchdog = "1s"
keep_alive = true
restart_delay = "0"
"#,
    );
    let first = s.wait_state("quiet", "running")["pid"].as_i64().unwrap();
    let dir = s.dir.path();
    // Its own files (by pid, each written whole): the restarted process writes its own at once.
    let killed = dir.join(format!("killed.{first}"));
    wait_until("the SIGABRT", || killed.exists());
    let quiet = s.wait_for("quiet: watchdog timeout");
    assert!(
        quiet.contains("no WATCHDOG=1 for 1s") && quiet.contains("SIGABRT"),
        "{quiet}"
    );
    let waited = stamp(&killed) - stamp(&dir.join(format!("last.{first}")));
    // The interval after the last ping, and a little: the timer is checked on the loop's
    // one timerfd, no later than its deadline.
    assert!(
        (1_000_000..1_750_000).contains(&waited),
        "killed {waited} µs after the last ping"
    );
    let mut now = serde_json::Value::Null;
    wait_until("quiet restarted", || {
        now = s.service("quiet");
        now["restarts"] == 1 && now["pid"].as_i64() != Some(first)
    });
    assert_eq!(now["failure"]["reason"], "watchdog timeout", "{now}");
    let (_, out, _) = s.ctl(&["status", "quiet"]);
    assert!(out.contains("last failure: watchdog timeout"), "{out}");
    // What the service was told.
    let env = std::fs::read_to_string(dir.join(format!("env.{first}"))).unwrap();
    assert!(env.lines().any(|l| l == "WATCHDOG_USEC=1000000"), "{env}");
    assert!(
        env.lines().any(|l| l == format!("WATCHDOG_PID={first}")),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l.starts_with("NOTIFY_SOCKET=/")),
        "{env}"
    );
}

#[test]
fn a_service_that_keeps_pinging_for_five_intervals_is_never_touched() {
    // python3-systemd's notify, from the main process itself (notify_access = "main").
    let s = Steward::start(
        r#"
[service.pinger]
exec = ["/usr/bin/python3", "-c", "import time, pathlib; from systemd import daemon; daemon.notify('READY=1'); n = 0\nwhile True:\n    daemon.notify('WATCHDOG=1'); n += 1; pathlib.Path('@DIR@/pings').write_text(str(n)); time.sleep(0.1)"]
ready = "notify"
watchdog = "500ms"
"#,
    );
    let pid = s.wait_state("pinger", "running")["pid"].clone();
    let pings = s.dir.path().join("pings");
    // Five intervals of 500 ms at a ping every 100 ms.
    wait_until("25 pings", || {
        std::fs::read_to_string(&pings)
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 25)
    });
    let now = s.service("pinger");
    assert_eq!(now["state"], "running");
    assert_eq!(now["pid"], pid);
    assert_eq!(now["restarts"], 0);
    assert_eq!(s.count("watchdog timeout"), 0, "{}", s.lines().join("\n"));
}

#[test]
fn watchdog_trigger_and_a_new_interval_from_the_service() {
    let s = Steward::start(
        r#"
[service.trigger]
exec = ["/bin/sh", "-c", "mkfifo @DIR@/go && systemd-notify --ready; read go < @DIR@/go; systemd-notify WATCHDOG=trigger; sleep 1000 & wait"]
ready = "notify"
notify_access = "all"
watchdog = "1h"
watchdog_signal = "SIGTERM"

[service.stretch]
exec = ["/bin/sh", "-c", "systemd-notify --ready WATCHDOG_USEC=300000; sleep 1000 & wait"]
ready = "notify"
notify_access = "all"
watchdog = "1h"
"#,
    );
    // The service makes its fifo before it says it is ready: made here, it could come after
    // the service's open, which would then fail and trigger at once.
    s.wait_state("trigger", "running");
    let fifo = s.dir.path().join("go");
    // WATCHDOG_USEC=300000: an hour became 300 ms, and nobody pings.
    s.wait_for("stretch: watchdog timeout (no WATCHDOG=1 for 300ms)");
    std::fs::write(&fifo, "go\n").unwrap();
    let line = s.wait_for("trigger: watchdog timeout");
    assert!(
        line.contains("WATCHDOG=trigger") && line.contains("SIGTERM"),
        "{line}"
    );
    let failed = s.wait_state("trigger", "failed");
    assert_eq!(failed["failure"]["reason"], "watchdog timeout");
}

#[test]
fn a_watchdog_on_an_accept_service_is_a_config_error() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(
        &path,
        "[service.a]\nexec = [\"/bin/cat\"]\naccept = true\nwatchdog = \"1s\"\n[[service.a.socket]]\npath = \"/tmp/x.sock\"\n\
         [service.b]\nexec = [\"/bin/true\"]\nwatchdog = \"0\"\n",
    )
    .unwrap();
    let (status, _, err) = run(std::process::Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&path));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains(":4:1: service `a`: `watchdog` cannot be combined with `accept`"),
        "{err}"
    );
    assert!(
        err.contains(":9:12: `watchdog` must be longer than 0"),
        "{err}"
    );
}
