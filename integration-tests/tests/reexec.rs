//! `stewardctl reexec` through the real binaries: an upgrade under client load that loses no
//! connection, the executor pinned by content until the next reexec, a binary that is missing,
//! and one that cannot read the state and hands everything back.
//!
//! Each test works on copies of the binaries in its own temp bin dir, so it can replace and
//! delete them as a package upgrade would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use steward_integration_tests::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A steward started from copies of the binaries in `DIR/bin`.
fn start(config: &str) -> (Steward, PathBuf) {
    let dir = temp_dir();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for name in ["steward", "steward-executor"] {
        std::fs::copy(bin(name), bin_dir.join(name)).unwrap();
    }
    let path = dir.path().join("steward.toml");
    let text = config
        .replace("@DIR@", dir.path().to_str().unwrap())
        .replace("@PROBE@", bin("steward-probe").to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    let cmd = Steward::command_under(&[], &bin_dir.join("steward"), &path, dir.path());
    let steward = Steward::spawn(cmd, dir);
    steward.wait_for("version");
    (steward, bin_dir)
}

/// Replaces `to` with a copy of `from` the way package managers do: a new file renamed over
/// the old one (the running binary's inode is untouched).
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

const UPGRADE: &str = r#"
[service.eager]
exec = ["/bin/sleep", "1000"]
keep_alive = true

# Exits at once twice, then stays: two automatic restarts to carry across.
[service.flaky]
exec = ["/bin/sh", "-c", "n=$(cat @DIR@/count 2>/dev/null || echo 0); echo $((n+1)) > @DIR@/count; [ $n -ge 2 ] && exec sleep 1000; exit 1"]
keep_alive = true
restart_delay = "0"

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

#[test]
fn upgrade_under_load_loses_no_connection() {
    let (s, bin_dir) = start(UPGRADE);
    let dir = s.dir.path().to_path_buf();
    let eager = s.wait_state("eager", "running");
    let mut flaky = serde_json::Value::Null;
    wait_until("flaky running after two restarts", || {
        flaky = s.service("flaky");
        flaky["restarts"] == 2 && flaky["state"] == "running"
    });

    let load = Load::start(&dir, &LAZY_AND_ACCEPT);

    let began = Instant::now();
    let mut replies = Vec::new();
    for round in 1..=5u32 {
        // Spread over the 10 s of load: at 1, 3, 5, 7 and 9 s.
        let at = Duration::from_secs(u64::from(2 * round - 1));
        std::thread::sleep(at.saturating_sub(began.elapsed()));
        if round == 3 {
            install(&bin("steward-next"), &bin_dir.join("steward"));
        }
        let (code, out, err) = s.ctl(&["reexec"]);
        assert_eq!(
            code,
            0,
            "reexec {round} failed: {err}\n{}",
            s.lines().join("\n")
        );
        replies.push(out.trim().to_string());
    }
    std::thread::sleep(Duration::from_secs(10).saturating_sub(began.elapsed()));
    let tallies = load.stop();

    let next = format!("{VERSION}+next");
    let same = format!("re-executed: steward {VERSION} -> steward {VERSION}");
    let upgraded = format!("re-executed: steward {VERSION} -> steward {next}");
    let on_next = format!("re-executed: steward {next} -> steward {next}");
    assert_eq!(
        replies,
        vec![same.clone(), same, upgraded, on_next.clone(), on_next]
    );
    let failed: Vec<&String> = tallies.iter().flat_map(|t| &t.failed).collect();
    let served: u64 = tallies.iter().map(|t| t.served).sum();
    let slowest = tallies.iter().map(|t| t.slowest).max().unwrap();
    eprintln!("served {served} connections, slowest {slowest:?}");
    assert!(failed.is_empty(), "failed connections: {failed:?}");
    assert!(
        tallies.iter().all(|t| t.served > 0),
        "a client was never served: {tallies:?}"
    );

    // The same manager process, the same children, the same counters.
    assert!(alive(s.pid()));
    let all = s.status();
    assert_eq!(all["manager"]["pid"], s.pid());
    assert_eq!(all["manager"]["version"], next);
    let eager_now = s.service("eager");
    assert_eq!(eager_now["pid"], eager["pid"]);
    assert_eq!(eager_now["state"], "running");
    let flaky_now = s.service("flaky");
    assert_eq!(flaky_now["pid"], flaky["pid"]);
    assert_eq!(flaky_now["restarts"], 2);
    assert_eq!(s.count("took over from version"), 5);
}

const PINNED: &str = r#"
[service.inst]
exec = ["@PROBE@", "connection"]
accept = true
[[service.inst.socket]]
path = "@DIR@/inst.sock"
"#;

#[test]
fn executor_overwritten_in_place_is_used_only_after_reexec() {
    let (s, bin_dir) = start(PINNED);
    let dir = s.dir.path().to_path_buf();
    let sock = dir.join("inst.sock");
    let marker = dir.join("marker");
    // In place: the same inode, new content (an O_PATH pin would see it).
    let executor = bin_dir.join("steward-executor");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&executor)
        .unwrap();
    write!(
        file,
        "#!/bin/sh\necho \"$@\" > {}\nexit 1\n",
        marker.display()
    )
    .unwrap();
    drop(file);

    for _ in 0..3 {
        exchange(&sock, "instance pid ").unwrap();
    }
    assert!(
        !marker.exists(),
        "the overwritten executor ran before a reexec"
    );

    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{err}");
    s.wait_for("is not an ELF binary");
    // The next instance goes through the new file: it writes the marker and exits 1, so the
    // client sees its connection closed without an answer.
    assert!(exchange(&sock, "instance pid ").is_err());
    // The shell creates the file before echo writes the line: wait for the whole line.
    let mut args = String::new();
    wait_until("the marker", || {
        args = std::fs::read_to_string(&marker).unwrap_or_default();
        args.ends_with('\n')
    });
    // Fresh, or the idle executor the new manager started for the service's pool.
    assert!(
        args.starts_with("--deserialize ") || args.starts_with("--pooled "),
        "{args}"
    );
}

const SIMPLE: &str = r#"
[service.eager]
exec = ["/bin/sleep", "1000"]

[service.talker]
exec = ["/bin/sh", "-c", "echo before the reexec; exec sleep 1000"]
stdio = "log"
"#;

#[test]
fn reexec_into_a_missing_binary_is_refused_and_changes_nothing() {
    let (s, bin_dir) = start(SIMPLE);
    let eager = s.wait_state("eager", "running");
    std::fs::remove_file(bin_dir.join("steward")).unwrap();
    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "cannot re-execute {}",
            bin_dir.join("steward").display()
        )) && err.contains("keeps running"),
        "{err}"
    );
    assert_eq!(s.service("eager")["pid"], eager["pid"]);
    // Executable, but not a program this machine can run: execve itself fails.
    let steward = bin_dir.join("steward");
    std::fs::write(&steward, [0xde, 0xad, 0xbe, 0xef].repeat(64)).unwrap();
    std::fs::set_permissions(
        &steward,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot execute {}", steward.display()))
            && err.contains("keeps running"),
        "{err}"
    );
    assert_eq!(s.service("eager")["pid"], eager["pid"]);
    // Still serving, and still able to upgrade once the binary is back.
    install(&bin("steward"), &bin_dir.join("steward"));
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-executed"), "{out}");
    assert_eq!(s.service("eager")["pid"], eager["pid"]);
}

#[test]
fn a_binary_that_cannot_read_the_state_hands_everything_back() {
    let (s, bin_dir) = start(SIMPLE);
    let eager = s.wait_state("eager", "running");
    s.wait_for("before the reexec");
    install(&bin("steward-old"), &bin_dir.join("steward"));
    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("steward 0.0.1-old cannot read the manager state")
            && err.contains(&format!("steward {VERSION} keeps running")),
        "{err}"
    );
    s.wait_for("after a failed reexec");
    assert!(alive(s.pid()));
    let all = s.status();
    assert_eq!(all["manager"]["version"], VERSION);
    assert_eq!(all["manager"]["pid"], s.pid());
    assert_eq!(s.service("eager")["pid"], eager["pid"]);
    // The log ring came back too.
    let (code, out, _) = s.ctl(&["logs", "talker"]);
    assert_eq!(code, 0);
    assert!(out.contains("before the reexec"), "{out}");
}

#[test]
fn reexec_keeps_logs_and_applies_the_config_on_disk() {
    let (s, _bin_dir) = start(SIMPLE);
    let eager = s.wait_state("eager", "running");
    s.wait_for("before the reexec");
    // Changed on disk since the start: one service added, `talker` changed.
    let path = s.dir.path().join("steward.toml");
    let text = SIMPLE.replace("before the reexec", "after the reexec")
        + "\n[service.added]\nexec = [\"/bin/sleep\", \"1000\"]\n";
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-executed"), "{out}");
    s.wait_state("added", "running");
    s.wait_for("after the reexec");
    assert_eq!(s.service("eager")["pid"], eager["pid"]);
    let (_, out, _) = s.ctl(&["logs", "talker"]);
    assert!(
        out.contains("before the reexec") && out.contains("after the reexec"),
        "{out}"
    );
}

#[test]
fn a_shutdown_after_reexec_is_clean() {
    let (mut s, _bin_dir) = start(SIMPLE);
    let eager = s.wait_state("eager", "running");
    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{err}");
    let pid = eager["pid"].as_i64().unwrap() as i32;
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!alive(pid), "a service outlived the manager");
    assert!(!s.dir.path().join("control").exists());
}

#[test]
fn a_service_added_by_a_reload_survives_a_later_reexec() {
    let (s, _bin_dir) = start(SIMPLE);
    s.wait_state("eager", "running");
    // The reexec hands over the config the services run: the one the reload loaded, not the
    // one steward was started with.
    let path = s.dir.path().join("steward.toml");
    let text = format!("{SIMPLE}\n[service.added]\nexec = [\"/bin/sleep\", \"1000\"]\n");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = s.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    let added = s.wait_state("added", "running")["pid"].clone();
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-executed"), "{out}");
    assert_eq!(s.service("added")["pid"], added, "not restarted");
}

#[test]
fn services_still_starting_cross_a_reexec_and_become_ready_after_it() {
    let (s, _bin_dir) = start(
        r#"
[service.db]
exec = ["/bin/sh", "-c", "while [ ! -e @DIR@/go ]; do sleep 0.02; done; systemd-notify --ready --status=up; exec sleep 1000"]
ready = "notify"
notify_access = "all"

[service.app]
exec = ["/bin/sleep", "1000"]
requires = ["db"]
"#,
    );
    let db = s.wait_state("db", "starting")["pid"].clone();
    let app = s.service("app");
    assert_eq!(app["state"], "starting");
    assert_eq!(app["waiting_for"], serde_json::json!(["db"]));
    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.service("db")["pid"], db);
    assert_eq!(s.service("app")["waiting_for"], serde_json::json!(["db"]));
    std::fs::write(s.dir.path().join("go"), "").unwrap();
    assert_eq!(s.wait_state("db", "running")["status_text"], "up");
    s.wait_state("app", "running");
}

const ARMED: &str = r#"
[service.inst]
exec = ["@PROBE@", "connection"]
accept = true
[[service.inst.socket]]
path = "@DIR@/inst.sock"
"#;

#[test]
fn an_exec_that_fails_after_the_armed_executors_are_collected_arms_new_ones() {
    let (s, bin_dir) = start(ARMED);
    let pid = s.pid();
    let armed = |executor: &i32| is_armed(*executor);
    // The accept service's pool: 2 armed executors by default.
    wait_until("the armed executors", || {
        let now = idle_executors(pid);
        now.len() == 2 && now.iter().all(armed)
    });
    let before = idle_executors(pid);
    // Executable, but not a program this machine can run: execve itself fails, after the
    // armed executors were collected for it. Renamed over the running binary, which is busy.
    let garbage = bin_dir.join("garbage");
    std::fs::write(&garbage, [0xde, 0xad, 0xbe, 0xef].repeat(64)).unwrap();
    std::fs::set_permissions(
        &garbage,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::rename(&garbage, bin_dir.join("steward")).unwrap();
    let (code, _, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("keeps running"), "{err}");
    // Those collected for the exec are gone; two new ones are armed in their place.
    wait_until("new armed executors", || {
        let now = idle_executors(pid);
        now.len() == 2 && now.iter().all(|p| !before.contains(p) && armed(p))
    });
    let line = first_line(&s.dir.path().join("inst.sock"), DEADLINE).unwrap();
    assert!(line.starts_with("instance pid "), "{line}");
}
