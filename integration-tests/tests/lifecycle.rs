//! The life of eager services through the real binaries: one-shot, keep-alive, the start
//! limit, exec failures, stopping, and shutdown.

use steward_integration_tests::*;

#[test]
fn one_shot_runs_once_and_ends_exited() {
    let mut s = Steward::start(
        r#"
[service.hello]
exec = ["/bin/sh", "-c", "echo $$ >> @DIR@/pids; echo hello from the service"]
"#,
    );
    s.wait_for("steward: hello: exited with status 0");
    s.wait_for("hello from the service");
    assert_eq!(read_pids(&s.dir.path().join("pids")).len(), 1);
    assert_eq!(s.count("hello: started"), 1);
    assert!(s.terminate().success());
    assert_eq!(
        s.count("hello: started"),
        1,
        "a one-shot is never restarted"
    );
}

#[test]
fn one_shot_that_fails_ends_failed() {
    let mut s = Steward::start(
        r#"
[service.oops]
exec = ["/bin/sh", "-c", "exit 3"]
"#,
    );
    s.wait_for("steward: oops: exited with status 3");
    s.wait_for("steward: oops: failed");
    assert!(s.terminate().success());
}

#[test]
fn keep_alive_restarts_with_a_new_pid() {
    let mut s = Steward::start(
        r#"
[service.again]
exec = ["/bin/sh", "-c", "echo $$ >> @DIR@/pids"]
keep_alive = true
restart_delay = "50ms"
start_limit_burst = 100
"#,
    );
    let first = started_pid(&s.wait_for_nth("again: started", 1));
    let third = started_pid(&s.wait_for_nth("again: started", 3));
    assert_ne!(first, third);
    s.wait_for("again: restarting in 50ms");
    let pids = read_pids(&s.dir.path().join("pids"));
    assert!(pids.len() >= 2, "the service ran at least twice: {pids:?}");
    // The pid steward reports is the service's own: the executor execs in place.
    assert_eq!(pids[0], first);
    assert!(s.terminate().success());
}

#[test]
fn start_limit_stops_a_crash_loop() {
    let mut s = Steward::start(
        r#"
[service.crashy]
exec = ["/bin/sh", "-c", "exit 1"]
keep_alive = true
restart_delay = "0"
start_limit_burst = 3
start_limit_interval = "1h"
"#,
    );
    s.wait_for("crashy: start limit reached (3 restarts within 1h); failed");
    // The first run plus three restarts, and not one more.
    assert_eq!(s.count("crashy: started"), 4, "{:#?}", s.lines());
    assert!(s.terminate().success());
    assert_eq!(s.count("crashy: started"), 4);
}

#[test]
fn exec_failure_names_the_step_and_exits_203() {
    let mut s = Steward::start(
        r#"
[service.nope]
exec = ["/bin/nope", "--flag"]
"#,
    );
    s.wait_for("steward: nope: failed at exec: /bin/nope: No such file or directory");
    s.wait_for("steward: nope: exited with status 203");
    s.wait_for("steward: nope: failed");
    assert!(s.terminate().success());
}

#[test]
fn exec_failure_of_a_keep_alive_service_is_retried_under_the_start_limit() {
    let mut s = Steward::start(
        r#"
[service.nope]
exec = ["/bin/nope"]
keep_alive = true
restart_delay = "0"
start_limit_burst = 2
"#,
    );
    s.wait_for("nope: start limit reached (2 restarts within 10s); failed");
    assert_eq!(s.count("failed at exec: /bin/nope"), 3);
    assert!(s.terminate().success());
}

#[test]
fn chdir_failure_exits_200() {
    let mut s = Steward::start(
        r#"
[service.lost]
exec = ["/bin/true"]
working_directory = "/nonexistent/steward-test"
"#,
    );
    s.wait_for("lost: failed at chdir: /nonexistent/steward-test: No such file or directory");
    s.wait_for("lost: exited with status 200");
    assert!(s.terminate().success());
}

#[test]
fn stop_timeout_escalates_to_sigkill() {
    // The shell ignores SIGTERM, and so does the sleep it runs (ignored dispositions survive
    // exec), so only SIGKILL ends it.
    let mut s = Steward::start(
        r#"
[service.stubborn]
exec = ["/bin/sh", "-c", "trap '' TERM; echo $$ > @DIR@/pid; echo ready; while :; do sleep 1; done"]
stop_timeout = "300ms"
"#,
    );
    s.wait_for("ready");
    let pid = read_pids(&s.dir.path().join("pid"))[0];
    s.signal(libc::SIGTERM);
    s.wait_for("stubborn: stopping (SIGTERM)");
    s.wait_for("stubborn: still running 300ms after SIGTERM; sending SIGKILL");
    s.wait_for("stubborn: killed by SIGKILL");
    assert!(s.wait_exit().success());
    assert!(!alive(pid));
}

#[test]
fn sigterm_shutdown_leaves_no_process_behind() {
    let mut s = Steward::start(
        r#"
[service.parent]
exec = ["/bin/sh", "-c", "sleep 1000 & echo $! >> @DIR@/pids; echo $$ >> @DIR@/pids; echo ready; wait"]
keep_alive = true

[service.plain]
exec = ["/bin/sleep", "1000"]

[service.restarting]
exec = ["/bin/sh", "-c", "exit 0"]
keep_alive = true
restart_delay = "1h"
"#,
    );
    s.wait_for("ready");
    let plain = started_pid(&s.wait_for("plain: started"));
    s.wait_for("restarting: restarting in 1h");
    let mut pids = read_pids(&s.dir.path().join("pids"));
    pids.push(plain);
    assert_eq!(pids.len(), 3);
    let status = s.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    s.wait_for("steward: all services stopped; exiting");
    for pid in pids {
        wait_until(&format!("pid {pid} is gone"), || !alive(pid));
    }
}

#[test]
fn sigint_also_shuts_down() {
    let mut s = Steward::start(
        r#"
[service.plain]
exec = ["/bin/sleep", "1000"]
"#,
    );
    let pid = started_pid(&s.wait_for("plain: started"));
    s.signal(libc::SIGINT);
    assert!(s.wait_exit().success());
    assert!(!alive(pid));
}

#[test]
fn autostart_false_is_not_started() {
    let mut s = Steward::start(
        r#"
[service.later]
exec = ["/bin/sleep", "1000"]
autostart = false

[service.now]
exec = ["/bin/true"]
"#,
    );
    s.wait_for("now: exited with status 0");
    assert!(s.terminate().success());
    assert_eq!(s.count("later:"), 0);
}

#[test]
fn service_environment_is_minimal_unless_inherited() {
    let mut s = Steward::start(
        r#"
[service.env]
exec = ["/bin/sh", "-c", "env > @DIR@/env"]
environment = { GREETING = "hi" }
"#,
    );
    s.wait_for("env: exited with status 0");
    let env = std::fs::read_to_string(s.dir.path().join("env")).unwrap();
    let mut vars: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            "GREETING=hi",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
    assert!(s.terminate().success());
}

/// A service that fails at once while `@DIR@/broken` exists, and otherwise runs `then`.
fn broken_while_marked(then: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", \"[ -e @DIR@/broken ] && exit 1; exec {then}\"]")
}

#[test]
fn an_eager_service_failed_at_its_start_limit_runs_again_after_the_cooldown() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("broken"), "").unwrap();
    let config = format!(
        "[service.eager]\nexec = {}\nkeep_alive = true\nrestart_delay = \"0\"\nstart_limit_burst = 2\nstart_limit_cooldown = \"2s\"\n\
         [service.stays]\nexec = {}\nkeep_alive = true\nrestart_delay = \"0\"\nstart_limit_burst = 2\nstart_limit_cooldown = \"none\"\n",
        broken_while_marked("sleep 1000"),
        broken_while_marked("sleep 1000"),
    )
    .replace("@DIR@", dir.path().to_str().unwrap());
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, config).unwrap();
    let s = Steward::start_at(&path, dir);
    let eager = s.wait_state("eager", "failed");
    let stays = s.wait_state("stays", "failed");
    assert!(eager["retry_at"].as_u64().is_some(), "{eager}");
    assert_eq!(stays["retry_at"], serde_json::Value::Null);
    let (_, out, _) = s.ctl(&["status", "eager"]);
    assert!(out.contains("next try: in "), "{out}");
    std::fs::remove_file(s.dir.path().join("broken")).unwrap();
    let again = s.wait_state("eager", "running");
    assert_eq!(again["restarts"], 0, "fresh counters");
    // The log line is read apart from the status reply: wait for it rather than count it.
    s.wait_for("eager: start_limit_cooldown is over");
    // "none": it stays failed for as long as the other one took, and longer.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(s.service("stays")["state"], "failed");
    let (code, _, err) = s.ctl(&["start", "stays"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.service("stays")["state"], "running");
}

#[test]
fn a_lazy_service_failed_at_its_start_limit_serves_again_after_the_cooldown() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("broken"), "").unwrap();
    let config = format!(
        "[service.lazy]\nexec = {}\nlazy = true\nkeep_alive = true\nstart_limit_burst = 2\nstart_limit_cooldown = \"2s\"\n\
         [[service.lazy.socket]]\npath = \"@DIR@/lazy.sock\"\n",
        broken_while_marked(&format!("{} serve", bin("steward-probe").display())),
    )
    .replace("@DIR@", dir.path().to_str().unwrap());
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, config).unwrap();
    let s = Steward::start_at(&path, dir);
    s.wait_state("lazy", "listening");
    // The first client makes it crash in a loop: it never accepts, so the client waits in the
    // backlog through the failure and the cooldown, and is served by the run after it.
    let socket = s.dir.path().join("lazy.sock");
    let client =
        std::thread::spawn(move || first_line(&socket, std::time::Duration::from_secs(30)));
    s.wait_state("lazy", "failed");
    std::fs::remove_file(s.dir.path().join("broken")).unwrap();
    let line = client.join().unwrap().expect("served after the cooldown");
    assert!(line.starts_with("pid "), "{line}");
    assert!(s.count("lazy: start_limit_cooldown is over") > 0);
    let line = first_line(
        &s.dir.path().join("lazy.sock"),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert!(line.starts_with("pid "), "{line}");
}

/// Whether idle executor `e` is armed for the restart of a service whose working directory is
/// /tmp: it has taken every step but the exec, that directory among them.
fn armed_in_tmp(e: i32) -> bool {
    std::fs::read_link(format!("/proc/{e}/cwd"))
        .is_ok_and(|cwd| cwd == std::path::Path::new("/tmp"))
}

#[test]
fn a_keep_alive_service_has_an_idle_executor_from_its_first_restart_on() {
    // `p` asks for one from the start: when its executor is armed, the loop has filled every
    // pool it was going to, `k`'s too had it wanted one.
    let s = Steward::start(
        r#"
[service.k]
exec = ["/bin/sleep", "1000"]
keep_alive = true
restart_delay = "0"
working_directory = "/tmp"

[service.p]
exec = ["/bin/sleep", "1000"]
keep_alive = true
executor_pool = 1
working_directory = "/tmp"
"#,
    );
    let main = s.wait_state("k", "running")["pid"].as_i64().unwrap() as i32;
    s.wait_state("p", "running");
    let mut idle = Vec::new();
    wait_until("p's idle executor, armed", || {
        idle = idle_executors(s.pid());
        idle.iter().copied().any(armed_in_tmp)
    });
    assert_eq!(
        idle.len(),
        1,
        "k has not restarted: no idle executor of its own"
    );
    let p_executor = idle[0];
    send_signal(main, libc::SIGKILL).unwrap();
    let restarted = s.wait_running_after("k", 1);
    wait_until("k's idle executor, armed", || {
        idle = idle_executors(s.pid());
        idle.len() == 2 && idle.iter().copied().all(armed_in_tmp)
    });
    let k_executor = *idle.iter().find(|&&e| e != p_executor).unwrap();

    send_signal(restarted, libc::SIGKILL).unwrap();
    assert_eq!(
        s.wait_running_after("k", 2),
        k_executor,
        "the second restart is k's idle executor"
    );
}

/// `stewardctl restart` counts as a restart for the pool (not for `status`'s count or the start
/// limit): from the first one on, an executor is armed, the stop's signals to the cgroup spare
/// it, and the next restart by hand is that executor; `stop` retires it.
#[test]
fn a_restart_by_hand_goes_through_the_executor_armed_since_the_last_one() {
    let s = Steward::start(
        r#"
[service.k]
exec = ["/bin/sleep", "1000"]
keep_alive = true
working_directory = "/tmp"
"#,
    );
    let first = s.wait_state("k", "running")["pid"].as_i64().unwrap() as i32;
    assert!(idle_executors(s.pid()).is_empty(), "k has not restarted");
    let (code, _, err) = s.ctl(&["restart", "k"]);
    assert_eq!(code, 0, "{err}");
    let second = s.wait_state("k", "running")["pid"].as_i64().unwrap() as i32;
    assert_ne!(second, first);
    let mut idle = Vec::new();
    wait_until("k's idle executor, armed", || {
        idle = idle_executors(s.pid());
        idle.len() == 1 && armed_in_tmp(idle[0])
    });
    for round in 0..2 {
        let (code, _, err) = s.ctl(&["restart", "k"]);
        assert_eq!(code, 0, "{err}");
        let now = s.wait_state("k", "running");
        assert_eq!(
            now["pid"].as_i64().unwrap() as i32,
            idle[0],
            "round {round}: the restart is the armed executor"
        );
        assert_eq!(now["restarts"], 0, "{now}");
        wait_until("k's next idle executor, armed", || {
            let next = idle_executors(s.pid());
            let armed = next.len() == 1 && next[0] != idle[0] && armed_in_tmp(next[0]);
            if armed {
                idle = next;
            }
            armed
        });
    }
    let (code, _, err) = s.ctl(&["stop", "k"]);
    assert_eq!(code, 0, "{err}");
    wait_until("k's idle executor retired", || {
        idle_executors(s.pid()).is_empty()
    });
    assert_eq!(s.count("left in its cgroup"), 0, "{:#?}", s.lines());
}

#[test]
fn a_keep_alive_service_restarts_through_its_idle_executor() {
    let s = Steward::start(
        r#"
[service.k]
exec = ["/bin/sleep", "1000"]
keep_alive = true
restart_delay = "0"
executor_pool = 1
working_directory = "/tmp"
"#,
    );
    let mut main = s.wait_state("k", "running")["pid"].as_i64().unwrap() as i32;
    for round in 1..=3 {
        let mut idle = Vec::new();
        // Armed for the restart: it has taken every step but the exec already, its working
        // directory among them.
        wait_until("k's idle executor, armed", || {
            idle = idle_executors(s.pid());
            idle.len() == 1 && armed_in_tmp(idle[0])
        });
        send_signal(main, libc::SIGKILL).unwrap();
        // The exit's cleanup of the cgroup spares the idle executor: it becomes the restart.
        let next = s.wait_running_after("k", round);
        assert_eq!(
            next, idle[0],
            "round {round}: the restart is the idle executor"
        );
        main = next;
    }
    assert_eq!(s.count("left in its cgroup"), 0, "{:#?}", s.lines());
}
