//! Faults and exhaustion through the real binaries: an accept storm with few fds, and the
//! manager's fds after thousands of spawns, accepts and reloads.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use steward_integration_tests::*;

/// A steward on `config` (`@DIR@`, `@PROBE@` replaced) with RLIMIT_NOFILE at `nofile`.
fn start_limited(config: &str, nofile: u64) -> Steward {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    let text = config
        .replace("@DIR@", dir.path().to_str().unwrap())
        .replace("@PROBE@", bin("steward-probe").to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    let mut cmd = Steward::command(&path, dir.path());
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and reads
    // only the local it is given.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let s = Steward::spawn(cmd, dir);
    s.wait_for("version");
    s
}

/// Connects, reads the instance's greeting line, holds the connection for `hold`, closes.
fn greeted(path: &Path, hold: Duration) -> Result<(), String> {
    let line = first_line(path, DEADLINE).map_err(|e| e.to_string())?;
    if !line.starts_with("instance pid ") {
        return Err(format!("no greeting, got {line:?}"));
    }
    std::thread::sleep(hold);
    Ok(())
}

const STORM: &str = r#"
[service.inst]
exec = ["@PROBE@", "connection"]
accept = true
stdio = "log"
[[service.inst.socket]]
path = "@DIR@/inst.sock"
backlog = 256
"#;

#[test]
fn an_accept_storm_with_few_fds_backs_off_and_serves_everyone() {
    // Each running instance holds two of the manager's fds (its output pipes): 60 at once
    // cannot fit in 48.
    let s = start_limited(STORM, 48);
    let path = s.dir.path().join("inst.sock");
    let clients: Vec<_> = (0..60)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || greeted(&path, Duration::from_millis(300)))
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .filter_map(|c| c.join().unwrap().err())
        .collect();
    assert!(failures.is_empty(), "clients not served: {failures:?}");
    // It ran out, said so once per episode (not once per retry), and came back.
    let out_of_fds = s.count("cannot start an instance");
    assert!(
        out_of_fds >= 1,
        "the limit was never reached:\n{}",
        s.lines().join("\n")
    );
    assert!(
        out_of_fds <= 5,
        "{out_of_fds} lines: the back-off is not logged once"
    );
    assert!(s.count("starting instances again") >= 1);
    // Still serving.
    greeted(&path, Duration::ZERO).unwrap();
    assert_eq!(s.service("inst")["state"], "listening");
}

/// The manager's open fds, by number and what they point at.
fn open_fds(pid: i32) -> Vec<(String, String)> {
    fd_table(pid)
        .into_iter()
        // Pipes and sockets are new inodes each time; their kind is what must match.
        .map(|(fd, target)| (fd, target.split(':').next().unwrap_or_default().to_string()))
        .collect()
}

/// The kinds of `fds`, sorted.
fn kinds(fds: &[(String, String)]) -> Vec<String> {
    let mut kinds: Vec<String> = fds.iter().map(|(_, kind)| kind.clone()).collect();
    kinds.sort();
    kinds
}

const CHURN: &str = r#"
[service.respawner]
exec = ["/bin/true"]
keep_alive = true
restart_delay = "0"
stdio = "null"
autostart = false
start_limit_burst = 999999
start_limit_interval = "1s"

[service.inst]
exec = ["@PROBE@", "connection"]
accept = true
[[service.inst.socket]]
path = "@DIR@/inst.sock"

[service.talker]
exec = ["/bin/sh", "-c", "echo hello; exec sleep 1000"]

# Started after the churn: what a service sees then.
[service.report]
exec = ["@PROBE@", "report", "@DIR@/report"]
autostart = false
"#;

#[test]
fn the_manager_holds_the_same_fds_after_10000_spawns_accepts_and_reloads() {
    let s = start_limited(CHURN, 1024);
    s.wait_for("talker: started");
    s.wait_for("hello");
    let pid = s.pid();
    // inst's armed executors (its pool of 2, the default for accept mode) hold one socket of
    // ours each: there before the count, and there again once everything is at rest.
    wait_until("inst's armed executors", || idle_executors(pid).len() == 2);
    let before = open_fds(pid);

    // Reloads: 1000 SIGHUPs, the same handler as `stewardctl reload`, one at a time (a
    // signal sent while the last is pending would merge with it).
    for n in 1..=1000 {
        send_signal(pid, libc::SIGHUP).unwrap();
        s.wait_for_nth("reloaded:", n);
    }
    // Accepts: 3000 connections, each an instance.
    let path = s.dir.path().join("inst.sock");
    for _ in 0..3000 {
        greeted(&path, Duration::ZERO).unwrap();
    }
    // Spawns: 6000 restarts of a service that exits at once.
    let (code, _, err) = s.ctl(&["start", "respawner"]);
    assert_eq!(code, 0, "{err}");
    for n in (1000..=6000).step_by(1000) {
        s.wait_for_nth("respawner: started", n);
    }
    let (code, _, err) = s.ctl(&["stop", "respawner"]);
    assert_eq!(code, 0, "{err}");
    wait_until("everything at rest", || {
        s.service("respawner")["state"] == "inactive"
            && s.service("inst")["instances"]
                .as_array()
                .is_some_and(|i| i.is_empty())
    });
    // The control connections of the checks above are closed by now, but one may still be
    // on its way out: compare once the manager has settled.
    // On a timeout the failure shows the last table. The pool's socket is a new one at
    // whatever number was free: kinds are compared, as a multiset, and the count with them.
    wait_for_value(
        &format!("the fd table to settle to {before:?}"),
        || open_fds(pid),
        |after| kinds(after) == kinds(&before),
    );
    assert_eq!(
        idle_executors(pid).len(),
        2,
        "two armed executors, as before"
    );

    // And a service started after all that is given fds 0, 1 and 2, and nothing else.
    let (code, _, err) = s.ctl(&["start", "report"]);
    assert_eq!(code, 0, "{err}");
    s.wait_for("report: exited with status 0");
    let report = std::fs::read_to_string(s.dir.path().join("report")).unwrap();
    let fds: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("fd="))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{report}");
}

#[test]
fn a_config_directory_that_disappears_changes_nothing() {
    let dir = temp_dir();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("a.toml"),
        "[service.a]\nexec = [\"/bin/sleep\", \"1000\"]\n",
    )
    .unwrap();
    let s = Steward::start_at(&conf, dir);
    let a = s.wait_state("a", "running");
    std::fs::remove_dir_all(&conf).unwrap();
    let (code, _, err) = s.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&conf.display().to_string()) && err.contains("No such file or directory"),
        "{err}"
    );
    s.wait_for("nothing was changed");
    assert_eq!(s.service("a")["pid"], a["pid"]);
}

#[test]
#[ignore = "needs root"]
fn a_full_filesystem_for_a_new_socket_refuses_the_reload_whole() {
    // A tmpfs with no free inode: binding a unix socket there fails with ENOSPC.
    let dir = temp_dir();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let (status, _, err) = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "nr_inodes=2,size=64k", "steward-test"])
        .arg(&full));
    assert!(status.success(), "cannot mount a tmpfs: {err}");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    // Use up the inodes (the root directory holds one).
    for i in 0.. {
        if std::fs::write(full.join(format!("f{i}")), "").is_err() {
            break;
        }
    }
    let config = dir.path().join("steward.toml");
    std::fs::write(&config, "[service.a]\nexec = [\"/bin/sleep\", \"1000\"]\n").unwrap();
    let s = Steward::start_at(&config, dir);
    let a = s.wait_state("a", "running");
    std::fs::write(
        &config,
        format!(
            "[service.a]\nexec = [\"/bin/sleep\", \"1000\"]\n\n[service.b]\nexec = [\"/bin/sleep\", \"1000\"]\nlazy = true\n[[service.b.socket]]\npath = \"{}/b.sock\"\n",
            full.display()
        ),
    )
    .unwrap();
    let (code, _, err) = s.ctl(&["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("b.sock") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(s.service("a")["pid"], a["pid"]);
    assert_eq!(s.status()["services"].as_array().unwrap().len(), 1);
}

#[test]
fn a_service_whose_executable_is_replaced_mid_run_keeps_running_then_fails_clearly() {
    let dir = temp_dir();
    let program = dir.path().join("svc");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[service.svc]\nexec = [\"{}\", \"1000\"]\nkeep_alive = true\nstart_limit_burst = 2\n\n[service.other]\nexec = [\"/bin/sleep\", \"1000\"]\n",
            program.display()
        ),
    )
    .unwrap();
    let s = Steward::start_at(&config, dir);
    let svc = s.wait_state("svc", "running");
    let other = s.wait_state("other", "running");
    // Replaced the way an upgrade gone wrong would: a new file renamed over the old one,
    // this one not a program at all.
    let staged = program.with_extension("new");
    std::fs::write(&staged, "not a program").unwrap();
    std::fs::rename(&staged, &program).unwrap();
    // The running process keeps its own inode.
    let pid = svc["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
    assert_eq!(s.service("svc")["state"], "running");
    // Its next start runs the new file, and says exactly why that fails.
    send_signal(pid, libc::SIGKILL).unwrap();
    s.wait_for(&format!(
        "svc: failed at exec: {}: Permission denied",
        program.display()
    ));
    s.wait_state("svc", "failed");
    assert_eq!(s.service("other")["pid"], other["pid"]);
}
