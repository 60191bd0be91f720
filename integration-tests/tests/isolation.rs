//! Credentials, limits and cgroups through the real binaries and the real kernel. Most need
//! root: they are ignored without it, and `make test` run as root (as CI runs it) runs them.

use std::process::Command;

use steward_integration_tests::*;

fn probe() -> String {
    bin("steward-probe").display().to_string()
}

fn out(s: &Steward) -> String {
    std::fs::read_to_string(s.dir.path().join("out")).unwrap_or_default()
}

#[test]
#[ignore = "needs root"]
fn a_service_runs_as_its_user_with_only_its_groups() {
    let mut s = Steward::start(
        r#"
[service.who]
exec = ["/bin/sh", "-c", "id -u; id -g; id -G; echo $USER $LOGNAME $HOME"]
user = "nobody"
supplementary_groups = ["users"]
stdio = "@DIR@/out"
"#,
    );
    s.wait_for("who: exited with status 0");
    let nogroup = run(Command::new("id").args(["-g", "nobody"])).1;
    let users = run(Command::new("getent").args(["group", "users"])).1;
    let users_gid = users.split(':').nth(2).unwrap();
    assert_eq!(
        out(&s),
        format!(
            "65534\n{nogroup}{nogroup_t} {users_gid}\nnobody nobody /nonexistent\n",
            nogroup_t = nogroup.trim()
        )
    );
    assert!(s.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn working_directory_umask_and_rlimits_are_in_place() {
    let mut s = Steward::start(
        r#"
[service.env]
exec = ["/bin/sh", "-c", "pwd; umask; ulimit -n; ulimit -c"]
working_directory = "/tmp"
umask = "0077"
limits = { nofile = 123, core = 0 }
stdio = "@DIR@/out"
"#,
    );
    s.wait_for("env: exited with status 0");
    assert_eq!(out(&s), "/tmp\n0077\n123\n0\n");
    assert!(s.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn memory_max_kills_a_hog_and_lets_a_small_service_run() {
    let mut s = Steward::start(&format!(
        r#"
[service.hog]
exec = ["{probe}", "touch", "200"]
memory_max = "32M"
keep_alive = true
restart_delay = "0"
start_limit_burst = 1

[service.small]
exec = ["{probe}", "touch", "8"]
memory_max = "32M"
stdio = "@DIR@/out"
"#,
        probe = probe()
    ));
    s.wait_for("small: exited with status 0");
    assert!(out(&s).starts_with("touched 8 MiB"), "{}", out(&s));
    // Killed, restarted (keep_alive), killed again, then the start limit.
    s.wait_for_nth(
        "hog: killed by the kernel's OOM handling (memory_max reached)",
        2,
    );
    s.wait_for("hog: start limit reached (1 restarts within 10s); failed");
    assert!(s.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn tasks_max_stops_the_sixth_task() {
    let mut s = Steward::start(&format!(
        r#"
[service.forky]
exec = ["{probe}", "fork", "10"]
tasks_max = 5
stdio = "@DIR@/out"
"#,
        probe = probe()
    ));
    s.wait_for("forky: exited with status 0");
    // The probe itself and four children: five tasks.
    assert_eq!(out(&s), "forked 4 of 10\n");
    assert!(s.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn a_service_is_in_its_cgroup_from_its_first_instruction() {
    let mut s = Steward::start(&format!(
        r#"
[service.cg]
exec = ["{probe}", "report", "@DIR@/report"]
memory_max = "64M"
tasks_max = 100
"#,
        probe = probe()
    ));
    s.wait_for("cg: exited with status 0");
    let own = format!("/steward-{}/cg", s.pid());
    let report = std::fs::read_to_string(s.dir.path().join("report")).unwrap();
    let ours: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("cgroup="))
        .filter(|l| l.contains(":memory:") || l.contains(":pids:") || l.starts_with("0::"))
        .collect();
    assert!(!ours.is_empty(), "{report}");
    for line in &ours {
        assert!(line.ends_with(&own), "{line} should end with {own}");
    }
    assert!(s.terminate().success());
    // Empty cgroups are removed, steward's own directory with them.
    let v1 = std::path::Path::new("/sys/fs/cgroup/pids").join(format!("steward-{}", s.pid()));
    let v2 = std::path::Path::new("/sys/fs/cgroup/unified").join(format!("steward-{}", s.pid()));
    assert!(!v1.exists() && !v2.exists());
}

#[test]
#[ignore = "needs root"]
fn stopping_kills_every_process_in_the_cgroup() {
    // The helper leaves the service's session and process group: only the cgroup finds it.
    let mut s = Steward::start(
        r#"
[service.escaper]
exec = ["/bin/sh", "-c", "setsid sleep 1000 & echo $! > @DIR@/pid; echo ready; exec sleep 1000"]
"#,
    );
    s.wait_for("ready");
    wait_until("the helper wrote its pid", || {
        !read_pids(&s.dir.path().join("pid")).is_empty()
    });
    let helper = read_pids(&s.dir.path().join("pid"))[0];
    assert!(alive(helper));
    assert!(s.terminate().success());
    wait_until(&format!("the escaped helper {helper} is gone"), || {
        !alive(helper)
    });
    // steward waited for it to be reaped, so its cgroup could go.
    for h in ["pids", "unified"] {
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(h)
            .join(format!("steward-{}", s.pid()));
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}

#[test]
#[ignore = "needs root"]
fn a_large_manager_does_not_get_small_services_oom_killed() {
    // The fork trap, shown: a forked child of a 512 MiB manager would be charged for the
    // pages it touches before exec. Spawned through the executor, a 16M service starts every
    // time.
    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[service.small]
exec = ["{probe}", "touch", "1"]
memory_max = "16M"
keep_alive = true
restart_delay = "0"
start_limit_burst = 1000
stdio = "null"
"#,
            probe = probe()
        ),
    )
    .unwrap();
    let mut cmd = Steward::command(&config, dir.path());
    cmd.env("STEWARD_BENCH_BALLAST", "512M");
    let mut s = Steward::spawn(cmd, dir);
    s.wait_for("benchmark ballast: holding 512 MiB");
    s.wait_for_nth("small: exited with status 0", 30);
    assert_eq!(s.count("OOM"), 0, "{:#?}", s.lines());
    assert_eq!(s.count("killed"), 0, "{:#?}", s.lines());
    assert!(s.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn without_cgroup_permission_only_limited_services_fail() {
    // A world-readable config, and steward run as nobody, who may not create cgroups, from
    // copies of the binaries nobody can reach.
    let bins = shared_bins(&["steward", "steward-executor"]);
    let dir = shared_temp_dir();
    // nobody makes its control socket there.
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        r#"
[service.free]
exec = ["/bin/true"]

[service.limited]
exec = ["/bin/true"]
memory_max = "64M"
"#,
    )
    .unwrap();
    let cmd = Steward::command_under(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &bins.path().join("steward"),
        &config,
        dir.path(),
    );
    let mut s = Steward::spawn(cmd, dir);
    s.wait_for("cgroups not available (");
    s.wait_for("free: exited with status 0");
    let line =
        s.wait_for("limited: cannot spawn: cannot set up its cgroup: cgroups are not available");
    assert!(line.contains("Permission denied"), "{line}");
    s.wait_for("limited: failed");
    let pid = s
        .wait_for("version")
        .split("(pid ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    send_signal(pid, libc::SIGTERM).unwrap();
    assert!(s.wait_exit().success());
}

/// A pty: the master's fd and the slave's path.
fn open_pty() -> (std::fs::File, String) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt returns a new fd or -1; grantpt, unlockpt and ptsname_r only act on
    // that fd and write at most buf.len() bytes into buf.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut buf = [0u8; 64];
        assert_eq!(
            libc::ptsname_r(master, buf.as_mut_ptr().cast(), buf.len()),
            0
        );
        let len = buf.iter().position(|&b| b == 0).unwrap();
        let path = String::from_utf8(buf[..len].to_vec()).unwrap();
        (std::fs::File::from_raw_fd(master), path)
    }
}

#[test]
fn a_tty_stdio_becomes_the_controlling_terminal() {
    let (master, slave) = open_pty();
    let mut s = Steward::start(&format!(
        r#"
[service.console]
exec = ["/bin/sh", "-c", "tty; echo tty_nr=$(cut -d' ' -f7 /proc/$$/stat); echo done"]
stdio = "{slave}"
"#
    ));
    s.wait_for("console: exited with status 0");
    // Everything the service wrote is waiting in the master.
    let mut text = String::new();
    let mut reader = std::io::BufReader::new(master);
    while !text.contains("done") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
    }
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert_eq!(lines[0], slave, "{text:?}");
    // /proc's tty_nr is the kernel's encoding of the controlling terminal's device number:
    // it must be this pty, not merely some terminal.
    let tty_nr: u64 = lines[1].strip_prefix("tty_nr=").unwrap().parse().unwrap();
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&slave).unwrap());
    let (major, minor) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
    let expected = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    assert_eq!(
        tty_nr, expected,
        "the pty is the shell's controlling terminal: {text:?}"
    );
    assert!(s.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn what_a_main_process_leaves_in_its_cgroup_is_killed_before_each_restart() {
    // The first exit restarts it through a fresh executor; from then on it has an idle one,
    // spared by the cleanup, which reads the cgroup through an fd kept for it.
    let s = Steward::start(
        r#"
[service.forker]
exec = ["/bin/sh", "-c", "sleep 1000 & echo $! >> @DIR@/left; exec sleep 1000"]
keep_alive = true
restart_delay = "0"
"#,
    );
    let left = s.dir.path().join("left");
    for round in 1..=3 {
        let main = s.wait_running_after("forker", round - 1);
        wait_until("its child written", || {
            read_pids(&left).len() == round as usize
        });
        let child = read_pids(&left)[round as usize - 1];
        assert!(alive(child));
        send_signal(main, libc::SIGKILL).unwrap();
        s.wait_for_nth(
            "forker: killed 1 process(es) it left in its cgroup",
            round as usize,
        );
        wait_until("the child it left, killed", || !alive(child));
    }
}
